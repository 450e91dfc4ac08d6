/*
 * A paced Kafka Java producer for tests/test_durability.py: sends COUNT records
 * at about RATE records/s with the client's DEFAULT configuration (so idempotence
 * is on, acks=all, retries unbounded within delivery.timeout.ms), and reports
 * every delivery as it happens:
 *
 *   ack <id> <partition> <offset>
 *   err <id> <exception>
 *
 * Usage: PacedProducer BOOTSTRAP TOPIC PARTITIONS COUNT RATE
 * Record i goes to partition i % PARTITIONS with value "id-%08d" (key null).
 * Compiled at test time against the Java helper's fat jar (kafka-clients inside).
 */
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class PacedProducer {
    public static void main(String[] args) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        if (args.length != 5) {
            System.err.println("usage: PacedProducer BOOTSTRAP TOPIC PARTITIONS COUNT RATE");
            System.exit(2);
        }
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        int count = Integer.parseInt(args[3]);
        double rate = Double.parseDouble(args[4]);
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        AtomicLong errors = new AtomicLong();
        long start = System.nanoTime();
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            for (int i = 0; i < count; i++) {
                long due = start + (long) (i * 1e9 / rate);
                long wait = due - System.nanoTime();
                if (wait > 0) {
                    Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
                }
                final int id = i;
                byte[] value = String.format("id-%08d", i).getBytes(StandardCharsets.UTF_8);
                prod.send(new ProducerRecord<>(topic, i % partitions, null, value), (md, e) -> {
                    synchronized (out) {
                        if (e == null) {
                            out.println("ack " + id + " " + md.partition() + " " + md.offset());
                        } else {
                            errors.incrementAndGet();
                            out.println("err " + id + " " + e.toString().replace('\n', ' '));
                        }
                    }
                });
            }
            prod.flush();
        }
        out.flush();
        System.exit(errors.get() == 0 ? 0 : 1);
    }
}
