package dev.spool.testclient;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * A Kafka Streams application with processing.guarantee=exactly_once_v2:
 *
 * <pre>
 *   streams-sum --bootstrap H:P --in T --out U --app-id A --state-dir D [--run-ms X]
 * </pre>
 *
 * Input records are "key:value" strings under any key; the topology re-keys them by the text
 * before the colon (a repartition topic), sums the values per key in a state store (a
 * changelog topic) and writes every new sum to U as key → sum. With the record cache off,
 * every input record yields exactly one output: the sums of a key's output are the prefix
 * sums of its inputs, each once, which is what the test checks after crashes. Runs until
 * killed, or for X ms.
 */
final class StreamsSum {
    private StreamsSum() {}

    static int run(Map<String, String> o) throws Exception {
        String in = Txn.req(o, "in");
        String out = Txn.req(o, "out");
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, Txn.req(o, "app-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, Txn.req(o, "bootstrap"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.STATE_DIR_CONFIG, Txn.req(o, "state-dir"));
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, Integer.parseInt(o.getOrDefault("rf", "1")));
        p.put(StreamsConfig.producerPrefix("transaction.timeout.ms"), 10000);
        Files.createDirectories(Path.of(Txn.req(o, "state-dir")));

        StreamsBuilder b = new StreamsBuilder();
        b.stream(in, Consumed.with(Serdes.String(), Serdes.String()))
                .map((k, v) -> {
                    int colon = v.indexOf(':');
                    return KeyValue.pair(v.substring(0, colon), Long.parseLong(v.substring(colon + 1)));
                })
                .groupByKey(Grouped.with("by-key", Serdes.String(), Serdes.Long()))
                .reduce(Long::sum, Materialized.as("sums"))
                .toStream()
                .mapValues(Object::toString)
                .to(out, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(b.build(), p);
        CountDownLatch died = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.err.println("streams: " + before + " -> " + now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                died.countDown();
            }
        });
        streams.start();
        long runMs = Long.parseLong(o.getOrDefault("run-ms", "600000"));
        boolean stopped = died.await(runMs, java.util.concurrent.TimeUnit.MILLISECONDS);
        streams.close(Duration.ofSeconds(20));
        return stopped ? 1 : 0;
    }
}
