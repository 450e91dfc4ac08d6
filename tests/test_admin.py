"""Admin APIs (issue 11) driven by Kafka's own tools and the Java admin client:
- DescribeTopicPartitions (API 75, what kafka-topics --describe uses in Kafka 4): every
  partition of several topics, also when the answer is cut into pages of a few partitions;
- DeleteRecords (kafka-delete-records.sh, librdkafka): the log start moves, records below it
  are gone for readers and ListOffsets, it survives a restart, old segments are freed, a
  compacted topic refuses it; on 3 brokers (RF=3) the start is the same on the new leader after
  kill -9 of the old one.
Every wait is bounded.
"""
import json
import re
import signal
import time

import pytest

from conftest import TARGET, helper_cmd
from test_cluster import cluster, create_topic, kafka_tool  # noqa: F401  (fixture)
from test_transactions import admin, consume_committed, new_topic


def test_kafka_topics_describe_pages_through_describe_topic_partitions(broker):
    b = broker.bootstrap
    new_topic(b, "dtp-a", 23)
    new_topic(b, "dtp-b", 3)
    for limit in ("5", "2000"):
        out = kafka_tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", b,
                         "--describe", "--topic", "dtp-.*",
                         "--partition-size-limit-per-response", limit).stdout
        rows = re.findall(r"Topic: (dtp-\w)\s+Partition: (\d+)\s+Leader: (\d+)", out)
        got = sorted((t, int(p)) for t, p, _ in rows)
        want = sorted([("dtp-a", p) for p in range(23)] + [("dtp-b", p) for p in range(3)])
        assert got == want, f"limit {limit}:\n{out}"
        assert all(int(leader) >= 0 for _, _, leader in rows)
    # On the wire (franz-go's kmsg, no fallback to Metadata): pages of 5 partitions follow
    # NextCursor through both topics, in order, each partition once; an unknown topic is named.
    import subprocess
    out = subprocess.run(helper_cmd("franz-go") + [
        "describe-topic-partitions", "--bootstrap", b, "--limit", "5",
        "--topics", "dtp-b,dtp-a,dtp-missing"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    listed = [(p["topic"], p["partition"]) for p in answer["partitions"]]
    assert listed == [("dtp-a", p) for p in range(23)] + [("dtp-b", p) for p in range(3)]
    assert answer["pages"] == 6, answer["pages"]
    assert all(p["leader"] >= 0 and p["error_code"] == 0 for p in answer["partitions"])
    assert answer["topic_errors"] == {"dtp-missing": 3}, answer["topic_errors"]


def produce_values(bootstrap, topic, partition, values, keyed=False):
    """Produces `values` in order (each its own key when `keyed`: compacted topics refuse
    records without one); returns their offsets (a replicated partition's log also holds
    control entries, so offsets need not start at 0)."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    offsets = {}

    def delivered(err, msg):
        assert err is None, err
        offsets[msg.value().decode()] = msg.offset()

    for v in values:
        p.produce(topic, value=v.encode(), key=v.encode() if keyed else None,
                  partition=partition, on_delivery=delivered)
        p.poll(0)
    assert p.flush(30) == 0
    return [offsets[v] for v in values]


def earliest_latest(bootstrap, topic, partition):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets-probe"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                       cached=False)
    finally:
        c.close()


def delete_records(bootstrap, topic, partition, offset):
    from confluent_kafka import TopicPartition
    client = admin(bootstrap)  # kept alive until the answer: its requests die with it
    futures = client.delete_records([TopicPartition(topic, partition, offset)],
                                    request_timeout=30)
    return list(futures.values())[0].result(timeout=40)


def test_delete_records_moves_the_log_start(broker, tmp_path):
    b = broker.bootstrap
    new_topic(b, "dr-a", 2)
    produce_values(b, "dr-a", 0, [f"a{i}" for i in range(100)])
    produce_values(b, "dr-a", 1, [f"b{i}" for i in range(10)])
    # Kafka's own tool: a JSON file of partitions and offsets.
    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "dr-a", "partition": 0, "offset": 60},
        {"topic": "dr-a", "partition": 1, "offset": -1}]}))
    out = kafka_tool("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", b,
                     "--offset-json-file", str(spec)).stdout
    assert "low_watermark: 60" in out and "low_watermark: 10" in out, out
    assert earliest_latest(b, "dr-a", 0) == (60, 100)
    assert earliest_latest(b, "dr-a", 1) == (10, 10)
    values = consume_committed(b, "dr-a", 2, isolation="read_uncommitted", idle_ms=1500)
    assert sorted(values) == sorted(f"a{i}" for i in range(60, 100)), values[:5]
    # ListOffsets by timestamp never answers below the log start (Kafka starts its lookup at
    # max(found, logStartOffset)): the oldest timestamp now maps to offset 60.
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": b, "group.id": "dr-times"})
    try:
        found = c.offsets_for_times([TopicPartition("dr-a", 0, 0)], timeout=15)[0]
        assert (found.error, found.offset) == (None, 60), found
    finally:
        c.close()
    # librdkafka's admin: never backwards, past the high watermark refused.
    assert delete_records(b, "dr-a", 0, 30).low_watermark == 60
    from confluent_kafka import KafkaException
    with pytest.raises(KafkaException, match="OFFSET_OUT_OF_RANGE"):
        delete_records(b, "dr-a", 0, 101)
    new_topic(b, "dr-compact", 1)
    kafka_tool("kafka.admin.ConfigCommand", "--bootstrap-server", b, "--alter",
               "--entity-type", "topics", "--entity-name", "dr-compact", "--add-config",
               "cleanup.policy=compact")
    produce_values(b, "dr-compact", 0, ["x", "y", "z"], keyed=True)
    with pytest.raises(KafkaException, match="POLICY_VIOLATION"):
        delete_records(b, "dr-compact", 0, 2)
    if TARGET == "spool":
        broker.restart()
        assert earliest_latest(b, "dr-a", 0) == (60, 100)


@pytest.mark.skipif(TARGET != "spool", reason="multi-node Spool clusters")
def test_delete_records_is_replicated_to_the_next_leader(cluster):
    c = cluster(controllers=3)
    create_topic(c.admin(), "dr-rep", 1, rf=3)
    offsets = produce_values(c.bootstrap, "dr-rep", 0, [f"r{i}" for i in range(200)])
    start = offsets[150]
    assert delete_records(c.bootstrap, "dr-rep", 0, start).low_watermark == start
    leader = c.admin().list_topics(topic="dr-rep", timeout=10).topics["dr-rep"].partitions[0].leader
    old = c.nodes[leader]
    old.proc.send_signal(signal.SIGKILL)
    old.proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = c.admin().list_topics(topic="dr-rep", timeout=10)
        new = md.topics["dr-rep"].partitions[0].leader
        if new >= 0 and new != leader:
            break
        time.sleep(0.2)
    assert new != leader
    # The end counts the control entries too (the DeleteRecords entry, new leaders' blanks).
    earliest, latest = earliest_latest(c.nodes[new].bootstrap, "dr-rep", 0)
    assert earliest == start and latest > offsets[-1]
    values = consume_committed(c.bootstrap, "dr-rep", 1, isolation="read_uncommitted",
                               idle_ms=1500)
    assert sorted(values, key=lambda v: int(v[1:])) == [f"r{i}" for i in range(150, 200)]


# Every topic config Apache Kafka 4.3.1 reports in DescribeConfigs for a topic (asked of a
# real 4.3.1 broker with Kafka's AdminClient).
KAFKA_TOPIC_CONFIGS = {
    "cleanup.policy", "compression.gzip.level", "compression.lz4.level", "compression.type",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages",
    "flush.ms", "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms", "message.timestamp.type", "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms", "min.insync.replicas", "preallocate", "remote.log.copy.disable",
    "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
}


def test_describe_configs_lists_every_kafka_topic_config(broker):
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic
    b = broker.bootstrap
    admin = AdminClient({"bootstrap.servers": b})
    admin.create_topics([NewTopic("dc-all", 1, 1, config={
        "cleanup.policy": "compact", "compression.zstd.level": "7"})])["dc-all"].result(timeout=30)
    resource = ConfigResource(ConfigResource.Type.TOPIC, "dc-all")
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    assert set(entries) == KAFKA_TOPIC_CONFIGS, set(entries) ^ KAFKA_TOPIC_CONFIGS
    for name, value in (("cleanup.policy", "compact"), ("compression.zstd.level", "7")):
        assert entries[name].value == value, entries[name]
        assert entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, entries[name]
    for name, value in (("min.cleanable.dirty.ratio", "0.5"), ("compression.lz4.level", "9"),
                        ("delete.retention.ms", "86400000"), ("min.compaction.lag.ms", "0")):
        assert entries[name].value == value, entries[name]
        assert entries[name].source == ConfigSource.DEFAULT_CONFIG.value, entries[name]
    # Kafka's validation: out-of-range compaction settings are refused.
    from confluent_kafka import KafkaException
    with pytest.raises(KafkaException, match="INVALID_CONFIG|Invalid value"):
        admin.create_topics([NewTopic("dc-bad", 1, 1, config={
            "min.cleanable.dirty.ratio": "1.5"})])["dc-bad"].result(timeout=30)
