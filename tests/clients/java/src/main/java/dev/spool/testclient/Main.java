package dev.spool.testclient;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Kafka Java client helper for the cross-client tests. Same CLI as
 * tests/clients/clientcli.py:
 *
 * <pre>
 *   produce --bootstrap H:P --topic T --compression C --acks A --input records.jsonl
 *   consume --bootstrap H:P --topic T --partitions N --count C --timeout-ms X
 * </pre>
 *
 * The producer keeps the client's DEFAULT configuration (idempotence on, etc.)
 * apart from bootstrap, compression.type and acks.
 */
public final class Main {
    private static final ObjectMapper M = new ObjectMapper();
    private static final Base64.Decoder DEC = Base64.getDecoder();
    private static final Base64.Encoder ENC = Base64.getEncoder();

    public static void main(String[] args) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel",
                System.getProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn"));
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        if (args.length < 1) {
            usage();
        }
        Map<String, String> opts = new HashMap<>();
        for (int i = 1; i < args.length; i++) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                usage();
            }
            opts.put(args[i].substring(2), args[++i]);
        }
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        int rc;
        switch (args[0]) {
            case "produce" -> rc = produce(opts, out);
            case "consume" -> rc = consume(opts, out);
            case "txn-produce" -> rc = Txn.produce(opts, out);
            case "txn-consume" -> rc = Txn.consume(opts, out);
            case "fence" -> rc = Txn.fence(opts, out);
            case "txn-copy" -> rc = Txn.copy(opts, out);
            case "streams-sum" -> rc = StreamsSum.run(opts);
            default -> {
                usage();
                rc = 2;
            }
        }
        out.flush();
        System.exit(rc);
    }

    private static void usage() {
        System.err.println("usage: produce --bootstrap H:P --topic T --compression C --acks A --input F\n"
                + "       consume --bootstrap H:P --topic T --partitions N --count C --timeout-ms X");
        System.exit(2);
    }

    private static String req(Map<String, String> o, String k) {
        String v = o.get(k);
        if (v == null) {
            System.err.println("missing --" + k);
            System.exit(2);
        }
        return v;
    }

    private static byte[] b64(JsonNode n) {
        return (n == null || n.isNull()) ? null : DEC.decode(n.asText());
    }

    private static int produce(Map<String, String> o, PrintStream out) throws Exception {
        String topic = req(o, "topic");
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, req(o, "bootstrap"));
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, o.getOrDefault("compression", "none"));
        p.put(ProducerConfig.ACKS_CONFIG, o.getOrDefault("acks", "all"));
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        List<ProducerRecord<byte[], byte[]>> recs = new ArrayList<>();
        try (BufferedReader r = Files.newBufferedReader(Path.of(req(o, "input")), StandardCharsets.UTF_8)) {
            String line;
            while ((line = r.readLine()) != null) {
                if (line.isBlank()) {
                    continue;
                }
                JsonNode n = M.readTree(line);
                List<Header> hs = new ArrayList<>();
                JsonNode hn = n.get("headers");
                if (hn != null && hn.isArray()) {
                    for (JsonNode h : hn) {
                        hs.add(new RecordHeader(h.get(0).asText(), b64(h.get(1))));
                    }
                }
                JsonNode pn = n.get("partition");
                Integer part = (pn == null || pn.isNull()) ? null : pn.asInt();
                recs.add(new ProducerRecord<>(topic, part, null, b64(n.get("key")), b64(n.get("value")), hs));
            }
        }
        List<Future<RecordMetadata>> fs = new ArrayList<>();
        List<String> lines = new ArrayList<>();
        int failed = 0;
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            for (ProducerRecord<byte[], byte[]> rec : recs) {
                fs.add(prod.send(rec));
            }
            prod.flush();
            for (int i = 0; i < fs.size(); i++) {
                try {
                    RecordMetadata md = fs.get(i).get(60, TimeUnit.SECONDS);
                    ObjectNode on = M.createObjectNode();
                    on.put("partition", md.partition());
                    on.put("offset", md.offset());
                    lines.add(M.writeValueAsString(on));
                } catch (Exception e) {
                    failed++;
                    System.err.println("record " + i + ": " + e);
                }
            }
        }
        if (failed > 0) {
            return 1;
        }
        for (String l : lines) {
            out.println(l);
        }
        return 0;
    }

    private static int consume(Map<String, String> o, PrintStream out) throws Exception {
        String topic = req(o, "topic");
        int parts = Integer.parseInt(req(o, "partitions"));
        long count = Long.parseLong(req(o, "count"));
        long timeoutMs = Long.parseLong(o.getOrDefault("timeout-ms", "30000"));
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, req(o, "bootstrap"));
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // No group.id: manual assignment only, no group coordinator involved.
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < parts; i++) {
            tps.add(new TopicPartition(topic, i));
        }
        long got = 0;
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            while (got < count) {
                long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                if (left <= 0) {
                    out.flush();
                    System.err.println("timeout: got " + got + " of " + count + " records");
                    return 1;
                }
                ConsumerRecords<byte[], byte[]> rs = c.poll(Duration.ofMillis(Math.min(left, 500)));
                for (ConsumerRecord<byte[], byte[]> r : rs) {
                    ObjectNode on = M.createObjectNode();
                    on.put("partition", r.partition());
                    on.put("offset", r.offset());
                    on.put("key", r.key() == null ? null : ENC.encodeToString(r.key()));
                    on.put("value", r.value() == null ? null : ENC.encodeToString(r.value()));
                    ArrayNode hs = on.putArray("headers");
                    for (Header h : r.headers()) {
                        ArrayNode pair = hs.addArray();
                        pair.add(h.key());
                        if (h.value() == null) {
                            pair.addNull();
                        } else {
                            pair.add(ENC.encodeToString(h.value()));
                        }
                    }
                    on.put("timestamp", r.timestamp());
                    out.println(M.writeValueAsString(on));
                    got++;
                }
            }
        }
        return 0;
    }
}
