import org.apache.kafka.common.config.ConfigDef;
import java.util.*;
public class KafkaConfigNames {
    public static void main(String[] a) throws Exception {
        ConfigDef def = (ConfigDef) Class.forName("kafka.server.KafkaConfig").getMethod("configDef").invoke(null);
        TreeMap<String, ConfigDef.ConfigKey> keys = new TreeMap<>(def.configKeys());
        for (var e : keys.entrySet()) {
            Object d = e.getValue().hasDefault() ? e.getValue().defaultValue : null;
            System.out.println(e.getKey() + "\t" + e.getValue().type + "\t" + (d == null ? "" : ConfigDef.convertToString(d, e.getValue().type)).replace("\t"," ").replace("\n"," "));
        }
    }
}
