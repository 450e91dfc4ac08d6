package dev.spool.testclient;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

/** The task of {@link SeqSourceConnector}. */
public class SeqSourceTask extends SourceTask {
    private static final Map<String, String> PARTITION = Map.of("seq", "0");
    private String topic;
    private long records;
    private int keys;
    private int perPoll;
    private long next;

    @Override
    public void start(Map<String, String> props) {
        topic = props.get("topic");
        records = Long.parseLong(props.get("records"));
        keys = Integer.parseInt(props.getOrDefault("keys", "10"));
        perPoll = Integer.parseInt(props.getOrDefault("per.poll", "20"));
        Map<String, Object> offset = context.offsetStorageReader().offset(PARTITION);
        next = offset == null ? 0 : ((Number) offset.get("next")).longValue();
    }

    @Override
    public List<SourceRecord> poll() throws InterruptedException {
        Thread.sleep(10);
        if (next >= records) {
            return null;
        }
        List<SourceRecord> out = new ArrayList<>();
        for (int i = 0; i < perPoll && next < records; i++, next++) {
            out.add(new SourceRecord(PARTITION, Map.of("next", next + 1), topic, null,
                Schema.STRING_SCHEMA, "k" + (next % keys), Schema.STRING_SCHEMA,
                Long.toString(next)));
        }
        return out;
    }

    @Override
    public void stop() {}

    @Override
    public String version() {
        return "1";
    }
}
