// GroupConsumer: Java consumer-group members for tests/test_groups.py.
//
//   java -cp spool-java-client.jar:. GroupConsumer --bootstrap H:P --topic T --group G
//        [--members N] [--name PREFIX] [--instance-id ID] [--max-runtime-s S] [--prop k=v]...
//
// Runs N KafkaConsumer members (one thread each) in one group, subscribed to T,
// auto commit off: after every poll that returned records the member commits
// synchronously, and it commits again in onPartitionsRevoked. On stdin "stop" (or
// EOF, or after --max-runtime-s) every member commits, closes and the process exits 0.
//
// stdout, one event per line (the test parses these):
//   own <member> <generation> <p,p,...|->   the member's partitions after a callback
//   gen <member> <generation>              generation (member epoch) changed
//   rec <member> <partition> <offset> <value>
//   closed <member>
//   error <member> <message>
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Collectors;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class GroupConsumer {
    static final AtomicBoolean STOP = new AtomicBoolean(false);

    static synchronized void out(String line) {
        System.out.println(line);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = null, topic = null, group = null, name = "java", instanceId = null;
        int members = 1;
        long maxRuntimeS = 150;
        List<String[]> props = new ArrayList<>();
        for (int i = 0; i < args.length; i += 2) {
            String v = args[i + 1];
            switch (args[i]) {
                case "--bootstrap": bootstrap = v; break;
                case "--topic": topic = v; break;
                case "--group": group = v; break;
                case "--members": members = Integer.parseInt(v); break;
                case "--name": name = v; break;
                case "--instance-id": instanceId = v; break;
                case "--max-runtime-s": maxRuntimeS = Long.parseLong(v); break;
                case "--prop": props.add(v.split("=", 2)); break;
                default: throw new IllegalArgumentException("unknown flag " + args[i]);
            }
        }
        List<Thread> threads = new ArrayList<>();
        for (int m = 0; m < members; m++) {
            Properties p = new Properties();
            p.put("bootstrap.servers", bootstrap);
            p.put("group.id", group);
            p.put("enable.auto.commit", "false");
            p.put("auto.offset.reset", "earliest");
            p.put("key.deserializer", ByteArrayDeserializer.class.getName());
            p.put("value.deserializer", ByteArrayDeserializer.class.getName());
            String member = members == 1 ? name : name + "-" + m;
            p.put("client.id", member);
            if (instanceId != null) {
                p.put("group.instance.id", members == 1 ? instanceId : instanceId + "-" + m);
            }
            for (String[] kv : props) {
                p.put(kv[0], kv[1]);
            }
            final String t = topic;
            Thread th = new Thread(() -> runMember(member, t, p), member);
            th.start();
            threads.add(th);
        }
        Thread stdin = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.trim().equals("stop")) {
                        break;
                    }
                }
            } catch (Exception e) {
                // EOF or error: stop as well
            }
            STOP.set(true);
        });
        stdin.setDaemon(true);
        stdin.start();
        long deadline = System.nanoTime() + maxRuntimeS * 1_000_000_000L;
        for (Thread th : threads) {
            long left = Math.max(1, (deadline - System.nanoTime()) / 1_000_000L);
            th.join(left);
            if (System.nanoTime() >= deadline) {
                STOP.set(true);
                th.join(30_000);
            }
        }
        System.exit(0);
    }

    static String fmt(Collection<TopicPartition> tps) {
        if (tps.isEmpty()) {
            return "-";
        }
        return tps.stream().map(TopicPartition::partition).sorted()
                .map(String::valueOf).collect(Collectors.joining(","));
    }

    static void runMember(String member, String topic, Properties p) {
        TreeSet<Integer> owned = new TreeSet<>();
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            int[] lastGen = {Integer.MIN_VALUE};
            ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
                void report() {
                    int g = c.groupMetadata().generationId();
                    String parts = owned.isEmpty() ? "-" : owned.stream().map(String::valueOf)
                            .collect(Collectors.joining(","));
                    out("own " + member + " " + g + " " + parts);
                }

                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> tps) {
                    try {
                        c.commitSync(Duration.ofSeconds(15));
                    } catch (Exception e) {
                        out("error " + member + " commit-on-revoke " + e.toString().replace('\n', ' '));
                    }
                    tps.forEach(tp -> owned.remove(tp.partition()));
                    report();
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> tps) {
                    tps.forEach(tp -> owned.remove(tp.partition()));
                    report();
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> tps) {
                    tps.forEach(tp -> owned.add(tp.partition()));
                    report();
                }
            };
            c.subscribe(List.of(topic), listener);
            while (!STOP.get()) {
                ConsumerRecords<byte[], byte[]> recs = c.poll(Duration.ofMillis(100));
                int g = c.groupMetadata().generationId();
                if (g != lastGen[0]) {
                    lastGen[0] = g;
                    out("gen " + member + " " + g);
                }
                if (recs.isEmpty()) {
                    continue;
                }
                StringBuilder sb = new StringBuilder();
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    String v = r.value() == null ? "-" : new String(r.value(), StandardCharsets.UTF_8);
                    sb.append("rec ").append(member).append(' ').append(r.partition()).append(' ')
                      .append(r.offset()).append(' ').append(v).append('\n');
                }
                synchronized (GroupConsumer.class) {
                    System.out.print(sb);
                    System.out.flush();
                }
                try {
                    c.commitSync(Duration.ofSeconds(15));
                } catch (Exception e) {
                    out("error " + member + " commit " + e.toString().replace('\n', ' '));
                }
            }
            try {
                c.commitSync(Duration.ofSeconds(15));
            } catch (Exception e) {
                out("error " + member + " final-commit " + e.toString().replace('\n', ' '));
            }
        } catch (Exception e) {
            out("error " + member + " " + e.toString().replace('\n', ' '));
        }
        out("closed " + member);
    }
}
