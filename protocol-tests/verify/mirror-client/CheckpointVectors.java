// Prints the golden checkpoint records behind the test vectors in src/groups/checkpoint.rs,
// serialized by connect-mirror-client itself: Checkpoint.recordKey()/recordValue() are what
// MirrorCheckpointTask writes (package-private, hence reflection). Run once by hand:
//
//   java -cp "$(protocol-tests/verify/mirror-client/fetch.sh)" \
//       protocol-tests/verify/mirror-client/CheckpointVectors.java

import java.lang.reflect.Method;
import java.util.HexFormat;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.mirror.Checkpoint;

public class CheckpointVectors {
    public static void main(String[] args) throws Exception {
        Method key = Checkpoint.class.getDeclaredMethod("recordKey");
        Method value = Checkpoint.class.getDeclaredMethod("recordValue");
        key.setAccessible(true);
        value.setAccessible(true);
        Checkpoint[] cps = {
            new Checkpoint("orders-app", new TopicPartition("primary.orders", 3), 1234L, 1200L, "meta"),
            new Checkpoint("gruppe-\u00fc", new TopicPartition("t", 0), Long.MAX_VALUE, 0L, ""),
        };
        HexFormat hex = HexFormat.of();
        for (Checkpoint cp : cps) {
            System.out.println(cp);
            System.out.println("key   " + hex.formatHex((byte[]) key.invoke(cp)));
            System.out.println("value " + hex.formatHex((byte[]) value.invoke(cp)));
        }
    }
}
