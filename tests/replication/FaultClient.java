/*
 * The Java client's side of the fault-test workload (tests/replication/workload.py).
 * Compiled at test time against the Java helper's fat jar (kafka-clients inside).
 *
 *   FaultClient produce BOOTSTRAP TOPIC PARTITIONS LABELS RATE MAX_SECONDS
 *       one KafkaProducer per comma-separated label (enable.idempotence=true, acks=all),
 *       each sending values "<label>-<seq>" at RATE records/s to partition seq % PARTITIONS
 *   FaultClient consume BOOTSTRAP TOPIC PARTITIONS LABEL MAX_SECONDS
 *       assign() every partition from the beginning (no group), poll continuously
 *
 * Both stop at stdin EOF or after MAX_SECONDS, whichever comes first; a producer then closes
 * with a bounded wait (records still unresolved get no line). Output, one line per event:
 *   ack <label> <seq> <partition> <offset>
 *   err <label> <seq> <exception>
 *   sent <label> <count>                  (at the end: how many were handed to send())
 *   rec <label> <partition> <offset> <value>
 *   cerr <label> <exception>              (consumer error; polling goes on)
 */
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetOutOfRangeException;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class FaultClient {
    static final PrintStream OUT = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    static final AtomicBoolean STOP = new AtomicBoolean();

    static void line(String s) {
        synchronized (OUT) {
            OUT.println(s);
        }
    }

    static void watchStdin(double maxSeconds) {
        Thread t = new Thread(() -> {
            try {
                InputStream in = System.in;
                byte[] buf = new byte[256];
                while (in.read(buf) >= 0) { }
            } catch (Exception e) { }
            STOP.set(true);
        });
        t.setDaemon(true);
        t.start();
        Thread timer = new Thread(() -> {
            try {
                Thread.sleep((long) (maxSeconds * 1000));
            } catch (InterruptedException e) { }
            STOP.set(true);
        });
        timer.setDaemon(true);
        timer.start();
    }

    static String oneLine(Exception e) {
        return e.toString().replace('\n', ' ');
    }

    public static void main(String[] args) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        if (args.length != 7) {
            System.err.println("usage: FaultClient produce|consume BOOTSTRAP TOPIC PARTITIONS LABELS RATE|- MAX_SECONDS");
            System.exit(2);
        }
        String mode = args[0], bootstrap = args[1], topic = args[2];
        int partitions = Integer.parseInt(args[3]);
        String labels = args[4];
        double maxSeconds = Double.parseDouble(args[6]);
        watchStdin(maxSeconds);
        if (mode.equals("produce")) {
            produce(bootstrap, topic, partitions, labels.split(","), Double.parseDouble(args[5]));
        } else {
            consume(bootstrap, topic, partitions, labels);
        }
        System.exit(0);
    }

    static void produce(String bootstrap, String topic, int partitions, String[] labels, double rate)
            throws Exception {
        List<KafkaProducer<byte[], byte[]>> producers = new ArrayList<>();
        for (String label : labels) {
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
            p.put(ProducerConfig.ACKS_CONFIG, "all");
            p.put(ProducerConfig.CLIENT_ID_CONFIG, "fault-" + label);
            p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
            // Shorter than the defaults (30 s / 120 s) so a request stuck on a paused or cut-off
            // leader is retried elsewhere within a fault cycle; unbounded retries inside that.
            p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
            p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
            p.put(ProducerConfig.METADATA_MAX_AGE_CONFIG, "5000");
            producers.add(new KafkaProducer<>(p));
        }
        long[] seqs = new long[labels.length];
        long start = System.nanoTime();
        long i = 0;
        while (!STOP.get()) {
            long due = start + (long) (i * 1e9 / (rate * labels.length));
            long wait = due - System.nanoTime();
            if (wait > 0) {
                Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
            }
            int k = (int) (i % labels.length);
            i++;
            final String label = labels[k];
            final long seq = seqs[k]++;
            int partition = (int) (seq % partitions);
            byte[] value = (label + "-" + seq).getBytes(StandardCharsets.UTF_8);
            try {
                producers.get(k).send(new ProducerRecord<>(topic, partition, null, value), (md, e) -> {
                    if (e == null) {
                        line("ack " + label + " " + seq + " " + md.partition() + " " + md.offset());
                    } else {
                        line("err " + label + " " + seq + " " + oneLine(e));
                    }
                });
            } catch (Exception e) {
                line("err " + label + " " + seq + " " + oneLine(e));
            }
        }
        for (int k = 0; k < labels.length; k++) {
            line("sent " + labels[k] + " " + seqs[k]);
        }
        for (KafkaProducer<byte[], byte[]> prod : producers) {
            prod.close(Duration.ofSeconds(60));
        }
        line("done");
    }

    static void consume(String bootstrap, String topic, int partitions, String label) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        // No silent reset: an out-of-range position is reported (cerr) and the position kept.
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "fault-" + label);
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "5000");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            c.assign(tps);
            Map<TopicPartition, Long> next = new HashMap<>();
            for (TopicPartition tp : tps) {
                c.seek(tp, 0L);
                next.put(tp, 0L);
            }
            while (!STOP.get()) {
                ConsumerRecords<byte[], byte[]> recs;
                try {
                    recs = c.poll(Duration.ofMillis(200));
                } catch (OffsetOutOfRangeException e) {
                    line("cerr " + label + " " + oneLine(e));
                    for (TopicPartition tp : e.partitions()) {
                        c.seek(tp, next.get(tp));
                    }
                    sleep(200);
                    continue;
                } catch (Exception e) {
                    line("cerr " + label + " " + oneLine(e));
                    sleep(200);
                    continue;
                }
                StringBuilder sb = new StringBuilder();
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    String v = r.value() == null ? "<null>" : new String(r.value(), StandardCharsets.UTF_8);
                    sb.append("rec ").append(label).append(' ').append(r.partition()).append(' ')
                      .append(r.offset()).append(' ').append(v).append('\n');
                    next.put(new TopicPartition(topic, r.partition()), r.offset() + 1);
                }
                if (sb.length() > 0) {
                    synchronized (OUT) {
                        OUT.print(sb);
                        OUT.flush();
                    }
                }
            }
        }
        line("done");
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) { }
    }
}
