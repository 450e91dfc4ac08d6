"""Consumer groups on a three-node cluster whose `__consumer_offsets` is replicated.

`__consumer_offsets` is created with `offsets.topic.replication.factor` (default 3) replicas,
each partition a Raft group like any topic's; a group's coordinator is its offsets partition's
Raft leader (FindCoordinator names it; other brokers answer NOT_COORDINATOR), group and offset
records are committed through the group before they are acknowledged, and a new leader loads
the groups from the committed log.

Checked with real clients and Kafka's own tools:
- Metadata shows `__consumer_offsets` with three in-sync replicas per partition, and the
  coordinator DescribeGroups reports is the leader Metadata names for the group's partition;
- a confluent-kafka consumer commits everything it read; kill -9 of the coordinator's node:
  the same consumer carries on with a new coordinator, reads exactly the records produced
  after the kill (nothing it committed is read again, nothing is lost) and commits them;
  it stays the same member with the same partitions, no rebalance (the group's members are
  in its persisted metadata record, which the new coordinator loads, as in Kafka);
  the committed offsets are the log ends, through librdkafka's admin API and through
  `kafka-consumer-groups.sh --describe` (Java AdminClient);
- Kafka's console consumer (a Java group member) in the same group then reads exactly the
  records produced after that and no earlier one: it starts from the committed offsets;
- every replica of the group's offsets partition holds byte-identical batches below the
  high watermark once the killed node is back.
Every wait is bounded; processes are signalled only by their own PID.
"""
import sys
import time
import uuid

import pytest

from conftest import TARGET
from test_cluster import (Cluster, cluster, create_topic, kafka_tool,  # noqa: F401
                          pytest_runtest_makereport)
from test_replication import (check_replicas_identical, high_watermarks, partition_state,
                              produce, wait_leaders)

pytestmark = pytest.mark.skipif(TARGET != "spool", reason="multi-node Spool clusters")

OFFSETS = "__consumer_offsets"
OFFSETS_PARTITIONS = 3
TOPIC, PARTITIONS = "grp-rep", 3
SETTINGS = ("group.initial.rebalance.delay.ms=0",
            f"offsets.topic.num.partitions={OFFSETS_PARTITIONS}")
WAIT_S = 60


def java_hash_partition(group, partitions):
    """Kafka's partitionFor: Utils.abs(groupId.hashCode()) % partitions (ASCII ids)."""
    h = 0
    for ch in group:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    h = 0 if h == -(1 << 31) else abs(h)
    return h % partitions


def coordinator_of(c, group, timeout=WAIT_S):
    """The coordinator DescribeGroups (librdkafka: FindCoordinator) reports."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            admin = c.admin()  # referenced until its future completes
            d = admin.describe_consumer_groups([group], request_timeout=10)[group].result(
                timeout=15)
            if d.coordinator is not None:
                return d.coordinator.id, d
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.3)
    pytest.fail(f"no coordinator for {group}: {last!r}\n{c.tails()}", pytrace=False)


def committed(c, group, timeout=WAIT_S):
    """{partition: committed offset} through librdkafka's admin API (OffsetFetch)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            admin = c.admin()
            res = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)])[group].result(timeout=15)
            return {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == TOPIC}
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.3)
    pytest.fail(f"no committed offsets for {group}: {last!r}\n{c.tails()}", pytrace=False)


def poll_until(consumer, want, seen, timeout=WAIT_S):
    """Polls until `seen` holds `want` records (or the bound passes)."""
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        for m in consumer.consume(500, 0.5):
            if m.error():
                continue
            seen.append((m.partition(), m.offset(), m.value().decode()))


def poll_to_ends(consumer, bootstrap, timeout=WAIT_S):
    """Polls until the consumer's position on every partition is the log end, and returns the
    ends. A new leader's first entry is a control batch (Spool's Raft leader marker), which the
    consumer steps over only once it fetches from that leader, so after a failover the ends can
    be ahead of the last record read; the records themselves are checked by the caller."""
    from confluent_kafka import TopicPartition
    deadline = time.monotonic() + timeout
    while True:
        ends = high_watermarks(bootstrap, TOPIC, PARTITIONS)
        positions = {tp.partition: tp.offset for tp in consumer.position(
            [TopicPartition(TOPIC, p) for p in range(PARTITIONS)])}
        if positions == ends:
            return ends
        assert time.monotonic() < deadline, f"positions {positions} never reached ends {ends}"
        stray = [m for m in consumer.consume(500, 0.5) if not m.error()]
        assert not stray, f"records past the expected ones: {[m.value() for m in stray][:10]}"


def commit_sync(consumer, timeout=WAIT_S):
    """Commits the consumer's positions, retrying while the coordinator moves."""
    from confluent_kafka import KafkaException
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.commit(asynchronous=False)
        except KafkaException as e:
            if time.monotonic() > deadline:
                raise
            err = e.args[0]
            if err.code() == -168:  # _NO_OFFSET: nothing new to commit
                return None
            time.sleep(0.3)


def describe_tool(c, group):
    """kafka-consumer-groups.sh --describe: {partition: (CURRENT-OFFSET, LOG-END-OFFSET)}."""
    out = kafka_tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                     "--bootstrap-server", c.bootstrap, "--describe", "--group", group)
    rows = {}
    lines = [l for l in out.stdout.splitlines() if l.strip()]
    header = None
    for line in lines:
        cells = line.split()
        if cells[:2] == ["GROUP", "TOPIC"]:
            header = cells
            continue
        if header and len(cells) >= 5 and cells[1] == TOPIC:
            row = dict(zip(header, cells))
            rows[int(row["PARTITION"])] = (row["CURRENT-OFFSET"], row["LOG-END-OFFSET"])
    return rows, out.stdout


def test_offsets_topic_replicates_and_groups_survive_coordinator_kill9(cluster):
    from confluent_kafka import Consumer
    c = cluster(controllers=3, extra=SETTINGS)
    create_topic(c.admin(), TOPIC, PARTITIONS, rf=3)
    wait_leaders(c, TOPIC, PARTITIONS)
    group = f"rep-group-{uuid.uuid4().hex[:6]}"

    first = [f"a{i}" for i in range(300)]
    acked, errors = produce(c.bootstrap, TOPIC, first)
    assert set(acked) == set(first), errors[:5]

    consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
                         "topic.metadata.refresh.interval.ms": 1000})
    rebalances = []
    consumer.subscribe([TOPIC],
                       on_revoke=lambda _c, parts: rebalances.append(("revoked", len(parts))),
                       on_lost=lambda _c, parts: rebalances.append(("lost", len(parts))))
    try:
        seen = []
        poll_until(consumer, len(first), seen)
        assert sorted(v for _, _, v in seen) == sorted(first), f"read {len(seen)} of 300"
        ends = poll_to_ends(consumer, c.bootstrap)
        commit_sync(consumer)
        assert committed(c, group) == ends

        # The offsets topic: RF=3, every replica in sync; the coordinator leads the group's
        # partition.
        leaders = wait_leaders(c, OFFSETS, OFFSETS_PARTITIONS)
        state = partition_state(c.admin(), OFFSETS)
        for p, (_leader, replicas, isrs) in state.items():
            assert sorted(replicas) == [1, 2, 3] and sorted(isrs) == [1, 2, 3], state
        index = java_hash_partition(group, OFFSETS_PARTITIONS)
        coordinator, _ = coordinator_of(c, group)
        assert coordinator == leaders[index], (coordinator, leaders, index)

        member = consumer.memberid()
        assigned = sorted(tp.partition for tp in consumer.assignment())
        assert member and assigned == list(range(PARTITIONS)), (member, assigned)

        # kill -9 the coordinator's node.
        victim = c.nodes[coordinator]
        killed = time.monotonic()
        victim.kill9()
        new_leader = wait_leaders(c, OFFSETS, OFFSETS_PARTITIONS, exclude=(coordinator,))[index]
        failover = time.monotonic() - killed
        second = [f"b{i}" for i in range(300)]
        more, errors = produce(c.bootstrap, TOPIC, second)
        assert set(more) == set(second), errors[:5]

        # The same consumer carries on with the new coordinator: exactly the new records.
        after = []
        poll_until(consumer, len(second), after, timeout=WAIT_S * 2)
        values = [v for _, _, v in after]
        again = sorted(set(values) & set(first))
        assert not again, f"committed records read again after the failover: {again[:10]}"
        assert len(values) == len(set(values)), "a record was read twice"
        assert sorted(values) == sorted(second), f"read {len(values)} of the 300 new records"
        wait_leaders(c, TOPIC, PARTITIONS, exclude=(coordinator,))
        ends = poll_to_ends(consumer, c.bootstrap)
        commit_sync(consumer)
        new_coordinator, desc = coordinator_of(c, group)
        assert new_coordinator == new_leader and new_coordinator != coordinator
        # The new coordinator knows the member it never saw join: same id, same partitions,
        # and the client went through no rebalance.
        assert not rebalances, f"the coordinator failover cost a rebalance: {rebalances}"
        assert consumer.memberid() == member, (consumer.memberid(), member)
        assert [m.member_id for m in desc.members] == [member], desc.members
        got = sorted(tp.partition for tp in desc.members[0].assignment.topic_partitions)
        assert got == assigned, (got, assigned)
        assert committed(c, group) == ends
    finally:
        consumer.close()

    # kafka-consumer-groups.sh (Java AdminClient) sees the committed offsets, no lag.
    rows, out = describe_tool(c, group)
    assert rows == {p: (str(ends[p]), str(ends[p])) for p in range(PARTITIONS)}, out

    # A Java group member (kafka-console-consumer) starts from the committed offsets: it reads
    # exactly the records produced now.
    third = [f"c{i}" for i in range(60)]
    more, errors = produce(c.bootstrap, TOPIC, third)
    assert set(more) == set(third), errors[:5]
    out = kafka_tool("org.apache.kafka.tools.consumer.ConsoleConsumer",
                     "--bootstrap-server", c.bootstrap, "--topic", TOPIC, "--group", group,
                     "--max-messages", str(len(third)), "--timeout-ms", "60000",
                     timeout=120)
    got = [l for l in out.stdout.splitlines() if l.strip()]
    assert sorted(got) == sorted(third), f"console consumer read {got[:10]}..."

    # The killed node comes back and its offsets replica catches up byte for byte.
    victim.start()
    victim.wait_listening()
    c.wait_brokers(3)
    from confluent_kafka import KafkaException
    deadline = time.monotonic() + 30
    while True:
        try:
            # Leadership may still be settling after the restart (NOT_LEADER: ask again).
            hws = high_watermarks(c.bootstrap, OFFSETS, OFFSETS_PARTITIONS)
            check_replicas_identical(c, OFFSETS, OFFSETS_PARTITIONS, hws)
            break
        except (AssertionError, KafkaException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    sys.stderr.write(f"[offsets partition leader failover after kill -9: {failover:.2f} s]\n")


def test_non_leader_answers_not_coordinator(cluster):
    """A group request sent to a broker that holds a replica of the group's offsets partition
    but does not lead it: NOT_COORDINATOR (16), so the client looks the coordinator up."""
    from test_bad_input import connect
    from test_groups import NOT_COORDINATOR, heartbeat
    c = cluster(controllers=3, extra=SETTINGS)
    group = f"nc-group-{uuid.uuid4().hex[:6]}"
    coordinator, _ = coordinator_of(c, group)
    leaders = wait_leaders(c, OFFSETS, OFFSETS_PARTITIONS)
    assert coordinator == leaders[java_hash_partition(group, OFFSETS_PARTITIONS)]
    for node_id, node in c.nodes.items():
        if node_id == coordinator:
            continue
        with connect(node.bootstrap) as s:
            assert heartbeat(s, group, 1, "m") == NOT_COORDINATOR, node_id
    with connect(c.nodes[coordinator].bootstrap) as s:
        # The coordinator itself knows no such member.
        assert heartbeat(s, group, 1, "m") != NOT_COORDINATOR
