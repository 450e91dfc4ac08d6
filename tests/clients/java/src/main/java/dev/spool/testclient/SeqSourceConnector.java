package dev.spool.testclient;

import java.util.List;
import java.util.Map;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.source.SourceConnector;

/**
 * A source connector for tests/test_connect.py: one task writes the records 0..records-1 to
 * `topic` (key "k" + n % keys, value n), recording the next number as its source offset, so a
 * restarted worker must read its offset back from the (compacted) offsets topic to go on
 * where it stopped instead of starting over.
 */
public class SeqSourceConnector extends SourceConnector {
    private Map<String, String> props;

    @Override
    public void start(Map<String, String> props) {
        this.props = props;
    }

    @Override
    public Class<? extends Task> taskClass() {
        return SeqSourceTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        return List.of(props);
    }

    @Override
    public void stop() {}

    @Override
    public ConfigDef config() {
        return new ConfigDef()
            .define("topic", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "target topic")
            .define("records", ConfigDef.Type.LONG, ConfigDef.Importance.HIGH, "records to write")
            .define("keys", ConfigDef.Type.INT, 10, ConfigDef.Importance.LOW, "distinct keys")
            .define("per.poll", ConfigDef.Type.INT, 20, ConfigDef.Importance.LOW,
                "records per poll (each poll then sleeps 10 ms)");
    }

    @Override
    public String version() {
        return "1";
    }
}
