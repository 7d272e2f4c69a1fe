// The independent reader of kferry's MM2-compatible checkpoints: Apache Kafka's own
// connect-mirror-client, called the way Java tooling calls it after a failover.
//
//   java -cp "$(fetch.sh)" TranslateOffsets.java <bootstrap> <source alias> <group>
//
// Runs RemoteClusterUtils.translateOffsets against the cluster at <bootstrap> (the target),
// which reads `<source alias>.checkpoints.internal` with the default replication policy, and
// prints the translated offsets of <group> as one JSON object on stdout:
// {"<topic>/<partition>": offset, ...}. Exit status 1 with the reason on stderr on failure.
// Java 17 single-file source launch: no build step.

import java.time.Duration;
import java.util.Map;
import java.util.StringJoiner;
import java.util.TreeMap;

import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.mirror.RemoteClusterUtils;

public class TranslateOffsets {
    public static void main(String[] args) {
        if (args.length != 3) {
            System.err.println("usage: TranslateOffsets.java <bootstrap> <source alias> <group>");
            System.exit(2);
        }
        try {
            Map<String, Object> props = Map.of("bootstrap.servers", args[0]);
            // The timeout bounds the read of the checkpoints topic; the caller bounds the process.
            Map<TopicPartition, OffsetAndMetadata> offsets =
                RemoteClusterUtils.translateOffsets(props, args[1], args[2], Duration.ofSeconds(20));
            Map<String, Long> sorted = new TreeMap<>();
            offsets.forEach((tp, om) -> sorted.put(tp.topic() + "/" + tp.partition(), om.offset()));
            // Kafka topic names hold only [a-zA-Z0-9._-], so the keys need no JSON escaping.
            StringJoiner json = new StringJoiner(", ", "{", "}");
            sorted.forEach((key, offset) -> json.add("\"" + key + "\": " + offset));
            System.out.println(json);
        } catch (Exception e) {
            System.err.println("TranslateOffsets: " + e);
            System.exit(1);
        }
    }
}
