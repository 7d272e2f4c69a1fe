// What connect-mirror-client's MirrorClient sees on one cluster, the calls MirrorMaker 2's
// own integration tests make (MirrorConnectorsIntegrationBaseTest) after a failover:
//
//   java -cp "$(fetch.sh)" MirrorClientView.java <bootstrap> <remote cluster alias> <group>
//
// Prints one JSON object on stdout:
//   {"upstream_clusters": [...], "heartbeat_topics": [...], "checkpoint_topics": [...],
//    "remote_topics": [...], "replication_hops": N,
//    "offsets": {"<topic>/<partition>": offset, ...}}
// where replication_hops is MirrorClient.replicationHops(alias) (-1: not upstream) and offsets
// is MirrorClient.remoteConsumerOffsets(group, alias), read from `<alias>.checkpoints.internal`
// with the default replication policy (empty when that topic does not exist). Exit status 1 with the reason on stderr on failure.
// Java 17 single-file source launch: no build step.

import java.time.Duration;
import java.util.Collection;
import java.util.Map;
import java.util.StringJoiner;
import java.util.TreeMap;
import java.util.TreeSet;

import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.mirror.MirrorClient;

public class MirrorClientView {
    // Kafka topic names and cluster aliases of the tests hold only [a-zA-Z0-9._-]: no escaping.
    private static String names(Collection<String> names) {
        StringJoiner json = new StringJoiner(", ", "[", "]");
        new TreeSet<>(names).forEach(name -> json.add("\"" + name + "\""));
        return json.toString();
    }

    public static void main(String[] args) {
        if (args.length != 3) {
            System.err.println("usage: MirrorClientView.java <bootstrap> <remote cluster alias> <group>");
            System.exit(2);
        }
        Map<String, Object> props = Map.of("bootstrap.servers", args[0]);
        try (MirrorClient client = new MirrorClient(props)) {
            // remoteConsumerOffsets waits a minute for a checkpoints topic that does not exist;
            // none there means no checkpoints.
            Map<TopicPartition, OffsetAndMetadata> offsets = Map.of();
            if (client.checkpointTopics().contains(args[1] + ".checkpoints.internal")) {
                offsets = client.remoteConsumerOffsets(args[2], args[1], Duration.ofSeconds(20));
            }
            Map<String, Long> sorted = new TreeMap<>();
            offsets.forEach((tp, om) -> sorted.put(tp.topic() + "/" + tp.partition(), om.offset()));
            StringJoiner json = new StringJoiner(", ", "{", "}");
            sorted.forEach((key, offset) -> json.add("\"" + key + "\": " + offset));
            System.out.println("{\"upstream_clusters\": " + names(client.upstreamClusters())
                + ", \"heartbeat_topics\": " + names(client.heartbeatTopics())
                + ", \"checkpoint_topics\": " + names(client.checkpointTopics())
                + ", \"remote_topics\": " + names(client.remoteTopics())
                + ", \"replication_hops\": " + client.replicationHops(args[1])
                + ", \"offsets\": " + json + "}");
        } catch (Exception e) {
            System.err.println("MirrorClientView: " + e);
            System.exit(1);
        }
    }
}
