package dev.spool.testclient;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.PrintStream;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Transactions with the unmodified Kafka Java client (tests/test_transactions.py):
 *
 * <pre>
 *   txn-produce --bootstrap H:P --topic T --partitions N --transactions K --per-txn R
 *               --abort-every A --transactional-id ID [--prefix P]
 *       K transactions of R records "P-k-i" over partitions 0..N-1; every A-th is aborted
 *       (A = 0: none). stdout, per transaction once its outcome is known:
 *       {"txn": k, "outcome": "commit"|"abort"|"unknown", "values": [...]}
 *       ("unknown": commitTransaction failed, so the transaction may or may not have committed).
 *       stderr ends with elapsed_ms=T, the time from initTransactions' return to the last outcome.
 *   txn-consume --bootstrap H:P --topic T --partitions N --idle-ms X [--isolation I]
 *       reads from the beginning until nothing new arrives for X ms; stdout: one
 *       {"partition","offset","key","value"} per record.
 *   fence --bootstrap H:P --topic T --transactional-id ID
 *       a second producer with the same id fences the first mid-transaction; stdout
 *       {"fenced": true|false, "second_committed": bool}.
 *   txn-copy --bootstrap H:P --in T --out U --partitions N --group G --transactional-id ID
 *            --count C --per-txn R
 *       consume-transform-produce: copies C records of T to U in transactions of R records,
 *       committing the consumer's offsets in each transaction (sendOffsetsToTransaction).
 * </pre>
 */
final class Txn {
    private static final ObjectMapper M = new ObjectMapper();

    private Txn() {}

    static String req(Map<String, String> o, String k) {
        String v = o.get(k);
        if (v == null) {
            System.err.println("missing --" + k);
            System.exit(2);
        }
        return v;
    }

    static KafkaProducer<String, String> producer(String bootstrap, String id) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, id);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "20000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        return new KafkaProducer<>(p);
    }

    static int produce(Map<String, String> o, PrintStream out) {
        String bootstrap = req(o, "bootstrap");
        String topic = req(o, "topic");
        int parts = Integer.parseInt(req(o, "partitions"));
        int txns = Integer.parseInt(req(o, "transactions"));
        int perTxn = Integer.parseInt(req(o, "per-txn"));
        int abortEvery = Integer.parseInt(o.getOrDefault("abort-every", "0"));
        String prefix = o.getOrDefault("prefix", "v");
        String id = req(o, "transactional-id");
        KafkaProducer<String, String> prod = producer(bootstrap, id);
        prod.initTransactions();
        long started = System.nanoTime();
        int failures = 0;
        for (int k = 0; k < txns; k++) {
            boolean abort = abortEvery > 0 && k % abortEvery == abortEvery - 1;
            List<String> values = new ArrayList<>();
            String outcome;
            try {
                prod.beginTransaction();
                for (int i = 0; i < perTxn; i++) {
                    String v = prefix + "-" + k + "-" + i;
                    values.add(v);
                    prod.send(new ProducerRecord<>(topic, i % parts, null, v));
                }
                if (abort) {
                    prod.flush();
                    prod.abortTransaction();
                    outcome = "abort";
                } else {
                    prod.commitTransaction();
                    outcome = "commit";
                }
            } catch (ProducerFencedException e) {
                System.err.println("txn " + k + ": fenced: " + e);
                emit(out, k, "unknown", values);
                return 1;
            } catch (Exception e) {
                // The outcome is unknown to the client: the coordinator may have committed.
                System.err.println("txn " + k + ": " + e);
                failures++;
                emit(out, k, "unknown", values);
                try {
                    prod.close(Duration.ofSeconds(5));
                } catch (Exception ignored) {
                    // a new producer takes over below
                }
                if (failures > 20) {
                    return 1;
                }
                prod = producer(bootstrap, id);
                prod.initTransactions();
                continue;
            }
            emit(out, k, outcome, values);
        }
        long elapsedMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started);
        prod.close(Duration.ofSeconds(10));
        System.err.println("elapsed_ms=" + elapsedMs);
        return 0;
    }

    private static void emit(PrintStream out, int k, String outcome, List<String> values) {
        ObjectNode on = M.createObjectNode();
        on.put("txn", k);
        on.put("outcome", outcome);
        ArrayNode vs = on.putArray("values");
        values.forEach(vs::add);
        out.println(on.toString());
        out.flush();
    }

    static int consume(Map<String, String> o, PrintStream out) {
        String topic = req(o, "topic");
        int parts = Integer.parseInt(req(o, "partitions"));
        long idleMs = Long.parseLong(o.getOrDefault("idle-ms", "5000"));
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, req(o, "bootstrap"));
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, o.getOrDefault("isolation", "read_committed"));
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < parts; i++) {
            tps.add(new TopicPartition(topic, i));
        }
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            long lastNew = System.nanoTime();
            while (TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - lastNew) < idleMs) {
                ConsumerRecords<String, String> rs = c.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> r : rs) {
                    ObjectNode on = M.createObjectNode();
                    on.put("partition", r.partition());
                    on.put("offset", r.offset());
                    on.put("key", r.key());
                    on.put("value", r.value());
                    out.println(on.toString());
                    lastNew = System.nanoTime();
                }
            }
        }
        return 0;
    }

    static int fence(Map<String, String> o, PrintStream out) throws Exception {
        String bootstrap = req(o, "bootstrap");
        String topic = req(o, "topic");
        String id = req(o, "transactional-id");
        boolean fenced = false;
        boolean secondCommitted = false;
        try (KafkaProducer<String, String> first = producer(bootstrap, id)) {
            first.initTransactions();
            first.beginTransaction();
            first.send(new ProducerRecord<>(topic, 0, null, "zombie-1")).get(30, TimeUnit.SECONDS);
            try (KafkaProducer<String, String> second = producer(bootstrap, id)) {
                // Fences the first: its open transaction is aborted by the coordinator.
                second.initTransactions();
                try {
                    first.send(new ProducerRecord<>(topic, 0, null, "zombie-2")).get(30, TimeUnit.SECONDS);
                    first.commitTransaction();
                } catch (Exception e) {
                    Throwable cause = e.getCause() == null ? e : e.getCause();
                    fenced = e instanceof ProducerFencedException
                            || cause instanceof ProducerFencedException
                            || cause instanceof org.apache.kafka.common.errors.InvalidProducerEpochException;
                    System.err.println("first producer: " + e);
                }
                second.beginTransaction();
                second.send(new ProducerRecord<>(topic, 0, null, "second-1"));
                second.commitTransaction();
                secondCommitted = true;
            }
        } catch (ProducerFencedException e) {
            fenced = true;
        }
        ObjectNode on = M.createObjectNode();
        on.put("fenced", fenced);
        on.put("second_committed", secondCommitted);
        out.println(on.toString());
        return 0;
    }

    static int copy(Map<String, String> o, PrintStream out) throws Exception {
        String bootstrap = req(o, "bootstrap");
        String in = req(o, "in");
        String outTopic = req(o, "out");
        int parts = Integer.parseInt(req(o, "partitions"));
        String group = req(o, "group");
        long count = Long.parseLong(req(o, "count"));
        int perTxn = Integer.parseInt(req(o, "per-txn"));
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, Integer.toString(perTxn));
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        long copied = 0;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp);
                KafkaProducer<String, String> prod = producer(bootstrap, req(o, "transactional-id"))) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < parts; i++) {
                tps.add(new TopicPartition(in, i));
            }
            c.assign(tps);
            prod.initTransactions();
            while (copied < count) {
                if (System.nanoTime() > deadline) {
                    System.err.println("timeout: copied " + copied + " of " + count);
                    return 1;
                }
                ConsumerRecords<String, String> rs = c.poll(Duration.ofMillis(500));
                if (rs.isEmpty()) {
                    continue;
                }
                prod.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<String, String> r : rs) {
                    if (copied >= count) {
                        break;
                    }
                    prod.send(new ProducerRecord<>(outTopic, r.partition(), null, r.value()));
                    offsets.put(new TopicPartition(in, r.partition()), new OffsetAndMetadata(r.offset() + 1));
                    copied++;
                }
                prod.sendOffsetsToTransaction(offsets, c.groupMetadata());
                prod.commitTransaction();
            }
        }
        ObjectNode on = M.createObjectNode();
        on.put("copied", copied);
        out.println(on.toString());
        return 0;
    }
}
