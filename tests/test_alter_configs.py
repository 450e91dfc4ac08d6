"""Topic config changes on a 3-node Spool cluster: IncrementalAlterConfigs (API 44) and
AlterConfigs (API 33), through the metadata quorum's controller.

Checked with Kafka's own kafka-configs.sh (kafka.admin.ConfigCommand), librdkafka's admin API
and raw requests (kafka-python's protocol classes, sent to one chosen broker):
- --add-config / --delete-config change a topic's overrides, and DescribeConfigs asked of EVERY
  broker shows them (source DYNAMIC_TOPIC_CONFIG) or their removal;
- an invalid value, an unknown config, APPEND to a non-list config and an unknown topic are
  refused with Kafka's errors and change nothing; validate_only changes nothing; list configs
  take APPEND/SUBTRACT; a resource named twice is refused; broker configs are refused;
- a change takes effect live on the partition's broker: a max.message.bytes override makes
  the leader refuse a larger record with MESSAGE_TOO_LARGE, and deleting it lets it through;
- the legacy AlterConfigs replaces the topic's whole set of overrides.
Every wait is bounded.
"""
import time

import pytest

from conftest import TARGET
# `cluster` is a fixture: importing it makes it available to this module's tests.
from test_cluster import cluster, create_topic, kafka_tool, partition_leaders  # noqa: F401

pytestmark = pytest.mark.skipif(TARGET != "spool", reason="multi-node Spool clusters")

CONFIG_COMMAND = "kafka.admin.ConfigCommand"
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
SOURCE_DYNAMIC_TOPIC = 1
INVALID_REQUEST = 42
INVALID_CONFIG = 40
UNKNOWN_TOPIC_OR_PARTITION = 3
APPLY_TIMEOUT = 15.0


def raw_admin(c):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=c.bootstrap, request_timeout_ms=30000)


def describe_on(admin, node_id, topic):
    """The topic's configs as broker `node_id` itself serves them: name -> (value, source);
    None while that broker does not know the topic yet."""
    from kafka.protocol.admin import DescribeConfigsRequest_v2
    response = admin.send_request(
        DescribeConfigsRequest_v2(resources=[(RESOURCE_TOPIC, topic, None)],
                                  include_synonyms=False),
        node_id=node_id)
    (error_code, error_message, _, _, entries), = response.resources
    if error_code == UNKNOWN_TOPIC_OR_PARTITION:
        return None
    assert error_code == 0, (node_id, error_code, error_message)
    return {e[0]: (e[1], e[3]) for e in entries}


def wait_every_broker(c, topic, check, timeout=APPLY_TIMEOUT):
    """Until `check(configs)` holds for the topic's configs on every broker. The broker that
    forwarded a change answers once it applied it; the others apply it moments later."""
    admin = raw_admin(c)
    try:
        deadline = time.monotonic() + timeout
        pending = set(c.nodes)
        seen = {}
        while pending and time.monotonic() < deadline:
            for node_id in sorted(pending):
                seen[node_id] = describe_on(admin, node_id, topic)
                if seen[node_id] is not None and check(seen[node_id]):
                    pending.discard(node_id)
            if pending:
                time.sleep(0.1)
        assert not pending, f"brokers {sorted(pending)} never showed the change: " \
                            f"{ {n: seen.get(n) for n in pending} }"
        return seen
    finally:
        admin.close()


def leader_of(c, topic, partition=0, timeout=APPLY_TIMEOUT):
    """The partition's leader once the client's metadata has it (a broker other than the one
    that created the topic may answer Metadata before it applied the creation)."""
    deadline = time.monotonic() + timeout
    leaders = {}
    while time.monotonic() < deadline:
        leaders = partition_leaders(c.admin(), topic)
        if leaders.get(partition, -1) in c.nodes:
            return leaders[partition]
        time.sleep(0.1)
    pytest.fail(f"no leader for {topic}-{partition}: {leaders}", pytrace=False)


def configs_tool(c, node, *args, check=True):
    return kafka_tool(CONFIG_COMMAND, "--bootstrap-server", node.bootstrap, *args, check=check)


def incremental(admin, topic, ops, validate_only=False):
    """librdkafka's IncrementalAlterConfigs of one topic; ops: (name, op, value)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    entries = [ConfigEntry(name, value, incremental_operation=getattr(AlterConfigOpType, op))
               for name, op, value in ops]
    resource = ConfigResource("topic", topic, incremental_configs=entries)
    futures = admin.incremental_alter_configs([resource], validate_only=validate_only,
                                              request_timeout=30)
    return futures[resource].result(timeout=40)


def refused(call):
    """The KafkaError a refused admin call raised."""
    from confluent_kafka import KafkaException
    with pytest.raises(KafkaException) as info:
        call()
    return info.value.args[0]


def overrides(configs):
    return {k: v for k, (v, source) in configs.items() if source == SOURCE_DYNAMIC_TOPIC}


# ---------------------------------------------------------------------------------------------


def test_kafka_configs_add_and_delete_reach_every_broker(cluster):
    c = cluster(controllers=3)
    create_topic(c.admin(), "cfg", 3)
    out = configs_tool(c, c.nodes[2], "--alter", "--entity-type", "topics", "--entity-name", "cfg",
                       "--add-config", "retention.ms=3600000,max.message.bytes=2048")
    assert "Completed updating config for topic cfg." in out.stdout, out.stdout
    wanted = {"retention.ms": "3600000", "max.message.bytes": "2048"}
    seen = wait_every_broker(c, "cfg", lambda cfg: overrides(cfg) == wanted)
    for node_id, configs in seen.items():
        assert configs["retention.ms"] == ("3600000", SOURCE_DYNAMIC_TOPIC), node_id
        # Untouched configs keep their defaults.
        assert configs["segment.ms"][1] != SOURCE_DYNAMIC_TOPIC, node_id

    # Kafka's tool describes the overrides through another broker.
    described = configs_tool(c, c.nodes[3], "--describe", "--entity-type", "topics",
                             "--entity-name", "cfg").stdout
    assert "retention.ms=3600000" in described and "max.message.bytes=2048" in described, described

    out = configs_tool(c, c.nodes[1], "--alter", "--entity-type", "topics", "--entity-name", "cfg",
                       "--delete-config", "retention.ms")
    assert "Completed updating config for topic cfg." in out.stdout, out.stdout
    seen = wait_every_broker(c, "cfg", lambda cfg: overrides(cfg) == {"max.message.bytes": "2048"})
    for node_id, configs in seen.items():
        value, source = configs["retention.ms"]
        assert value == "604800000" and source != SOURCE_DYNAMIC_TOPIC, (node_id, value, source)

    # Deleting a config that is not overridden is a no-op, as on Kafka's controller (the 4.x
    # tool no longer checks it first).
    configs_tool(c, c.nodes[3], "--alter", "--entity-type", "topics", "--entity-name", "cfg",
                 "--delete-config", "retention.ms")
    wait_every_broker(c, "cfg", lambda cfg: overrides(cfg) == {"max.message.bytes": "2048"})


def test_refusals_and_validate_only_change_nothing(cluster):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    c = cluster(controllers=3)
    create_topic(c.admin(), "strict", 2)
    admin = c.admin()
    incremental(admin, "strict", [("retention.ms", "SET", "3600000")])
    before = wait_every_broker(c, "strict",
                               lambda cfg: overrides(cfg) == {"retention.ms": "3600000"})

    err = refused(lambda: incremental(admin, "strict", [("retention.ms", "SET", "soon"),
                                                        ("segment.ms", "SET", "60000")]))
    assert err.code() == INVALID_CONFIG, err
    assert "Invalid value soon for configuration retention.ms" in err.str(), err
    err = refused(lambda: incremental(admin, "strict", [("no.such.config", "SET", "1")]))
    assert err.code() == INVALID_CONFIG and "Unknown topic config name: no.such.config" in err.str()
    err = refused(lambda: incremental(admin, "strict", [("retention.ms", "APPEND", "5")]))
    assert err.code() == INVALID_CONFIG, err
    assert "Can't APPEND to key retention.ms because its type is not LIST." in err.str(), err
    err = refused(lambda: incremental(admin, "no-such-topic", [("retention.ms", "SET", "5")]))
    assert err.code() == UNKNOWN_TOPIC_OR_PARTITION, err
    # Kafka's tool reports the broker's refusal and exits non-zero.
    out = configs_tool(c, c.nodes[3], "--alter", "--entity-type", "topics", "--entity-name",
                       "strict", "--add-config", "segment.bytes=12", check=False)
    assert out.returncode != 0 and "InvalidConfigurationException" in out.stdout + out.stderr, \
        out.stdout + out.stderr

    # validate_only: checked (an invalid value is still refused) but never written.
    incremental(admin, "strict", [("retention.ms", "SET", "1000"), ("segment.ms", "SET", "60000")],
                validate_only=True)
    err = refused(lambda: incremental(admin, "strict", [("retention.ms", "SET", "-7")],
                                      validate_only=True))
    assert err.code() == INVALID_CONFIG, err

    # A broker setting that cannot change at run time: refused for that resource only.
    broker = ConfigResource("broker", "1", incremental_configs=[
        ConfigEntry("num.io.threads", "8", incremental_operation=AlterConfigOpType.SET)])
    topic = ConfigResource("topic", "strict", incremental_configs=[
        ConfigEntry("min.insync.replicas", "1", incremental_operation=AlterConfigOpType.SET)])
    futures = admin.incremental_alter_configs([broker, topic], request_timeout=30)
    err = refused(lambda: futures[broker].result(timeout=40))
    assert err.code() == INVALID_REQUEST and "dynamically" in err.str(), err
    futures[topic].result(timeout=40)

    after = wait_every_broker(c, "strict", lambda cfg: overrides(cfg) == {
        "retention.ms": "3600000", "min.insync.replicas": "1"})
    for node_id in c.nodes:
        changed = {k for k in before[node_id] if before[node_id][k] != after[node_id][k]}
        assert changed == {"min.insync.replicas"}, (node_id, changed)


def test_list_configs_append_and_subtract(cluster):
    c = cluster(controllers=3)
    create_topic(c.admin(), "lists", 1)
    admin = c.admin()
    # From the default (`delete`): APPEND adds what is missing, once.
    incremental(admin, "lists", [("cleanup.policy", "APPEND", "compact,delete")])
    wait_every_broker(c, "lists", lambda cfg: overrides(cfg) == {"cleanup.policy": "delete,compact"})
    incremental(admin, "lists", [("cleanup.policy", "SUBTRACT", "delete")])
    wait_every_broker(c, "lists", lambda cfg: overrides(cfg) == {"cleanup.policy": "compact"})
    err = refused(lambda: incremental(admin, "lists", [("cleanup.policy", "APPEND", "forever")]))
    assert err.code() == INVALID_CONFIG, err
    incremental(admin, "lists", [("cleanup.policy", "DELETE", None)])
    wait_every_broker(c, "lists", lambda cfg: overrides(cfg) == {})


def test_duplicate_resources_are_refused(cluster):
    from kafka.protocol.admin import AlterConfigsRequest_v1
    c = cluster(controllers=3)
    create_topic(c.admin(), "dups", 1)
    create_topic(c.admin(), "single", 1)
    admin = raw_admin(c)
    try:
        request = AlterConfigsRequest_v1(resources=[
            (RESOURCE_TOPIC, "dups", [("retention.ms", "1000")]),
            (RESOURCE_TOPIC, "single", [("retention.ms", "2000")]),
            (RESOURCE_TOPIC, "dups", [("retention.ms", "3000")]),
            (RESOURCE_TOPIC, "single-keys", [("retention.ms", "1"), ("retention.ms", "2")]),
            (RESOURCE_BROKER, "1", [("log.retention.ms", "1000")]),
        ], validate_only=False)
        response = admin.send_request(request, node_id=1)
        codes = [(r[3], r[0], r[1]) for r in response.resources]
    finally:
        admin.close()
    assert codes[0] == ("dups", INVALID_REQUEST, "Each resource must appear at most once."), codes
    assert codes[2] == codes[0], codes
    assert codes[1] == ("single", 0, None), codes
    assert codes[3] == ("single-keys", INVALID_REQUEST, "Error due to duplicate config keys"), codes
    assert codes[4] == ("1", 0, None), codes
    wait_every_broker(c, "single", lambda cfg: overrides(cfg) == {"retention.ms": "2000"})
    wait_every_broker(c, "dups", lambda cfg: overrides(cfg) == {})


def test_max_message_bytes_override_is_enforced_by_the_leader_live(cluster):
    from confluent_kafka import KafkaError, Producer
    c = cluster(controllers=3)
    create_topic(c.admin(), "small", 1)
    leader = leader_of(c, "small")
    elsewhere = next(n for i, n in c.nodes.items() if i != leader)

    def produce(size):
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 0,
                      "compression.type": "none", "retries": 0})
        results = []
        p.produce("small", value=b"x" * size, partition=0,
                  on_delivery=lambda err, msg: results.append(err))
        assert p.flush(30) == 0
        assert len(results) == 1
        return results[0]

    assert produce(4000) is None
    # Changed through a broker that does not lead the partition: the leader must pick it up.
    configs_tool(c, elsewhere, "--alter", "--entity-type", "topics", "--entity-name", "small",
                 "--add-config", "max.message.bytes=1024")
    wait_every_broker(c, "small", lambda cfg: overrides(cfg) == {"max.message.bytes": "1024"})
    err = produce(4000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    assert produce(200) is None

    configs_tool(c, elsewhere, "--alter", "--entity-type", "topics", "--entity-name", "small",
                 "--delete-config", "max.message.bytes")
    wait_every_broker(c, "small", lambda cfg: overrides(cfg) == {})
    assert produce(4000) is None


# librdkafka marks its AlterConfigs deprecated; the API is what this test is about.
@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_legacy_alter_configs_replaces_the_whole_set(cluster):
    from confluent_kafka.admin import ConfigResource, NewTopic
    c = cluster(controllers=3)
    admin = c.admin()
    futures = admin.create_topics([NewTopic("legacy", 2, 1, config={
        "retention.ms": "3600000", "segment.ms": "7200000"})], operation_timeout=30)
    futures["legacy"].result(timeout=40)
    wait_every_broker(c, "legacy", lambda cfg: overrides(cfg) == {
        "retention.ms": "3600000", "segment.ms": "7200000"})

    resource = ConfigResource("topic", "legacy", set_config={"max.message.bytes": "4096",
                                                             "segment.ms": "7200000"})
    admin.alter_configs([resource], request_timeout=30)[resource].result(timeout=40)
    seen = wait_every_broker(c, "legacy", lambda cfg: overrides(cfg) == {
        "max.message.bytes": "4096", "segment.ms": "7200000"})
    for node_id, configs in seen.items():
        assert configs["retention.ms"] == ("604800000", configs["retention.ms"][1]), node_id
        assert configs["retention.ms"][1] != SOURCE_DYNAMIC_TOPIC, node_id

    # An invalid value refuses the whole replacement.
    bad = ConfigResource("topic", "legacy", set_config={"retention.ms": "never"})
    err = refused(lambda: admin.alter_configs([bad], request_timeout=30)[bad].result(timeout=40))
    assert err.code() == INVALID_CONFIG, err
    # validate_only replaces nothing.
    empty = ConfigResource("topic", "legacy", set_config={"retention.ms": "1000"})
    admin.alter_configs([empty], validate_only=True, request_timeout=30)[empty].result(timeout=40)
    # A write would have been applied by the answering broker already, by the others within
    # moments: give them those moments before checking that nothing changed.
    time.sleep(0.5)
    wait_every_broker(c, "legacy", lambda cfg: overrides(cfg) == {
        "max.message.bytes": "4096", "segment.ms": "7200000"})


def test_dynamic_broker_configs_reach_every_broker(cluster):
    """A cluster-default broker config set through one node is in the metadata log: every
    broker reports it (DynamicConfigs source DYNAMIC_DEFAULT_BROKER_CONFIG) and applies it to
    its topics' synonyms; one broker's own value wins on that broker only."""
    from confluent_kafka.admin import ConfigResource, ConfigSource
    c = cluster(controllers=3)
    create_topic(c.admin(), "dyn3", 1)
    configs_tool(c, c.nodes[3], "--alter", "--entity-type", "brokers", "--entity-default",
                 "--add-config", "log.retention.ms=123456")
    configs_tool(c, c.nodes[3], "--alter", "--entity-type", "brokers", "--entity-name", "2",
                 "--add-config", "log.retention.ms=654321")
    admin = c.admin()
    deadline = time.monotonic() + APPLY_TIMEOUT
    while True:
        seen = {}
        for node_id in c.nodes:
            resource = ConfigResource(ConfigResource.Type.BROKER, str(node_id))
            entry = admin.describe_configs([resource])[resource].result(timeout=30)[
                "log.retention.ms"]
            seen[node_id] = (entry.value, entry.source)
        want = {n: ("654321", ConfigSource.DYNAMIC_BROKER_CONFIG.value) if n == 2 else
                ("123456", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value) for n in c.nodes}
        if seen == want:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    every = wait_every_broker(c, "dyn3",
                              lambda cfg: cfg["retention.ms"][0] in ("123456", "654321"))
    assert {n: cfg["retention.ms"] for n, cfg in every.items()} == {
        n: ("654321", ConfigSource.DYNAMIC_BROKER_CONFIG.value) if n == 2 else
        ("123456", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value) for n in c.nodes}, every
