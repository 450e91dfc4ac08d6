"""Replicated partitions: RF=3 topics on three real `spool` processes, each partition a Raft
group whose log is the partition log.

Checked with real clients and Kafka's own tools:
- Metadata names each partition's Raft leader and its epoch (the term), with all three
  replicas in sync; acks=all produce is answered with offsets every replica holds;
  the first record of a new partition is at offset 1 (after the first leader's LEADER_CHANGE
  control batch), and consumers skip the control batches;
- every replica's partition directory holds byte-identical batches below the high watermark;
- on the wire (franz-go's kmsg, the newest versions both sides know): a Produce or Fetch to a
  follower gets NOT_LEADER_OR_FOLLOWER naming the current leader, its epoch and its endpoint
  (KIP-951); a Fetch to the leader with an older epoch gets FENCED_LEADER_EPOCH (naming the
  leader too), with a newer one UNKNOWN_LEADER_EPOCH;
- kill -9 of a partition leader: a follower takes over, Metadata names it with a higher epoch,
  idempotent acks=all producers carry on, and every acknowledged record is read back exactly
  once at its acknowledged offset; OffsetForLeaderEpoch answers each epoch's end from the
  terms in the log.
Every wait is bounded; processes are signalled only by their own PID.
"""
import glob
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import pytest

from conftest import TARGET, helper_cmd
from test_cluster import Cluster, cluster, create_topic, pytest_runtest_makereport  # noqa: F401

pytestmark = pytest.mark.skipif(TARGET != "spool", reason="multi-node Spool clusters")


def partition_state(admin, topic):
    """{partition: (leader, replicas, isrs)} from librdkafka's Metadata."""
    md = admin.list_topics(topic=topic, timeout=10)
    return {p: (m.leader, list(m.replicas), list(m.isrs))
            for p, m in md.topics[topic].partitions.items()}


def wait_leaders(c, topic, partitions, exclude=(), timeout=30):
    """Until Metadata names a live leader (not in `exclude`) for every partition."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            state = partition_state(c.admin(), topic)
            leaders = {p: s[0] for p, s in state.items()}
            if len(leaders) == partitions and all(l >= 0 and l not in exclude
                                                   for l in leaders.values()):
                return leaders
            last = state
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.1)
    pytest.fail(f"no leaders for {topic}: {last}\n{c.tails()}", pytrace=False)


def produce(bootstrap, topic, values, partition=None, timeout=60):
    """Idempotent acks=all producer; returns {value: (partition, offset)} of every ack and the
    errors seen."""
    from confluent_kafka import Producer
    acked, errors = {}, []
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, "message.timeout.ms": int(timeout * 1000),
                  "topic.metadata.refresh.interval.ms": 1000})

    def done(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked[msg.value().decode()] = (msg.partition(), msg.offset())

    for v in values:
        while True:
            try:
                if partition is None:
                    p.produce(topic, v.encode(), on_delivery=done)
                else:
                    p.produce(topic, v.encode(), partition=partition, on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0, f"{left} records never acknowledged"
    return acked, errors


def consume_all(bootstrap, topic, partitions, expect, timeout=60):
    """Every record from the beginning of each partition: [(partition, offset, value)]."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = []
    deadline = time.monotonic() + timeout
    while len(seen) < expect and time.monotonic() < deadline:
        for m in c.consume(500, 0.5):
            if m.error():
                continue
            seen.append((m.partition(), m.offset(), m.value().decode()))
    c.close()
    return seen


def read_batches(partition_dir):
    """Record batches of every `.log` segment in a partition directory, in offset order, as
    (base offset, bytes from the partition leader epoch on). Stops at zero padding or a torn
    tail."""
    out = []
    for path in sorted(glob.glob(os.path.join(partition_dir, "*.log"))):
        data = open(path, "rb").read()
        at = 0
        while at + 12 <= len(data):
            base, length = struct.unpack(">qi", data[at:at + 12])
            if length <= 0 or at + 12 + length > len(data):
                break
            out.append((base, data[at + 12:at + 12 + length]))
            at += 12 + length
    return out


def check_replicas_identical(c, topic, partitions, hws):
    for p in range(partitions):
        copies = {}
        for i, node in c.nodes.items():
            d = node.data_dir / f"{topic}-{p}"
            if d.exists():
                copies[i] = [(base, body) for base, body in read_batches(str(d)) if base < hws[p]]
        assert len(copies) == 3, f"{topic}-{p} on {sorted(copies)}"
        first = next(iter(copies.values()))
        assert first, f"{topic}-{p} holds nothing below the high watermark {hws[p]}"
        for i, batches in copies.items():
            assert batches == first, f"{topic}-{p}: replica on node {i} differs"


def high_watermarks(bootstrap, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "hw"})
    hws = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
           for p in range(partitions)}
    c.close()
    return hws


def test_rf3_topic_replicates_with_leaders_offsets_and_identical_replicas(cluster):
    c = cluster(controllers=3)
    create_topic(c.admin(), "rep", 3, rf=3)
    leaders = wait_leaders(c, "rep", 3)
    state = partition_state(c.admin(), "rep")
    for p, (leader, replicas, isrs) in state.items():
        assert sorted(replicas) == [1, 2, 3] and sorted(isrs) == [1, 2, 3], state
        assert leader == leaders[p]

    values = [f"v{i}" for i in range(300)]
    acked, errors = produce(c.bootstrap, "rep", values)
    assert set(acked) == set(values), f"missing acks; errors {errors[:5]}"
    # A new partition's first record follows its first leader's control batch.
    by_partition = {}
    for v, (p, o) in acked.items():
        by_partition.setdefault(p, []).append(o)
    for p, offsets in by_partition.items():
        assert min(offsets) >= 1, (p, min(offsets))
        assert len(set(offsets)) == len(offsets)

    seen = consume_all(c.bootstrap, "rep", 3, len(values))
    assert sorted(v for _, _, v in seen) == sorted(values), "consumers saw other records"
    for p, o, v in seen:
        assert acked[v] == (p, o), f"{v} read at {(p, o)}, acknowledged at {acked[v]}"

    hws = high_watermarks(c.bootstrap, "rep", 3)
    # Followers learn the commit point with the next replication round.
    time.sleep(1.0)
    check_replicas_identical(c, "rep", 3, hws)

    out = subprocess.run(helper_cmd("franz-go") + ["leader-errors", "--bootstrap", c.bootstrap,
                         "--topic", "rep", "--partition", "0"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    sys.stderr.write(f"[leader errors on the wire: {out.stdout.strip()}]\n")
    not_leader, fenced, unknown_epoch = 6, 74, 75
    # Metadata's epoch is the leader's own: the leader takes a Fetch at it and fences one below.
    assert r["leader"] == leaders[0] and r["leader_epoch"] >= 1, r
    for key, kip951_from in (("produce_to_follower", 10), ("fetch_from_follower", 16)):
        a = r[key]
        assert a["version"] >= kip951_from, r
        assert a["error_code"] == not_leader, r
        assert (a["current_leader"], a["current_leader_epoch"]) == (r["leader"], r["leader_epoch"]), r
        assert a["endpoints"] == [r["leader"]], r
    stale = r["fetch_stale_epoch"]
    assert stale["error_code"] == fenced, r
    # KIP-951 names the leader with FENCED_LEADER_EPOCH too: here the broker asked itself.
    assert (stale["current_leader"], stale["current_leader_epoch"]) == (r["leader"], r["leader_epoch"]), r
    assert stale["endpoints"] == [r["leader"]], r
    assert r["fetch_future_epoch"]["error_code"] == unknown_epoch, r
    assert r["fetch_right_epoch"]["error_code"] == 0, r


def test_partition_leader_kill9_fails_over_without_losing_acknowledged_records(cluster):
    c = cluster(controllers=3)
    create_topic(c.admin(), "failover", 1, rf=3)
    leader = wait_leaders(c, "failover", 1)[0]
    first = [f"a{i}" for i in range(200)]
    acked, errors = produce(c.bootstrap, "failover", first, partition=0)
    assert set(acked) == set(first), errors[:5]

    victim = c.nodes[leader]
    killed = time.monotonic()
    victim.kill9()
    new_leader = wait_leaders(c, "failover", 1, exclude=(leader,))[0]
    failover = time.monotonic() - killed
    assert new_leader != leader

    second = [f"b{i}" for i in range(200)]
    more, errors = produce(c.bootstrap, "failover", second, partition=0)
    assert set(more) == set(second), errors[:5]
    acked.update(more)

    victim.start()
    victim.wait_listening()
    c.wait_brokers(3)
    third = [f"c{i}" for i in range(100)]
    more, errors = produce(c.bootstrap, "failover", third, partition=0)
    assert set(more) == set(third), errors[:5]
    acked.update(more)

    seen = consume_all(c.bootstrap, "failover", 1, len(acked))
    values = [v for _, _, v in seen]
    assert len(values) == len(set(values)), "a record was read twice"
    assert set(values) == set(acked), f"lost: {sorted(set(acked) - set(values))[:10]}"
    for p, o, v in seen:
        assert acked[v] == (p, o), f"{v} read at {(p, o)}, acknowledged at {acked[v]}"
    # The restarted replica caught up byte for byte.
    hws = high_watermarks(c.bootstrap, "failover", 1)
    deadline = time.monotonic() + 20
    while True:
        try:
            check_replicas_identical(c, "failover", 1, hws)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    # OffsetForLeaderEpoch answers from the Raft terms the log holds (how clients detect a
    # truncation after a failover): for each epoch, the largest epoch at or below it and where
    # that epoch's entries end, which is where the next epoch's first batch starts.
    from test_offsets import offset_for_leader_epoch
    leader_now = wait_leaders(c, "failover", 1)[0]
    starts = {}
    for base, body in read_batches(str(c.nodes[leader_now].data_dir / "failover-0")):
        if base < hws[0]:
            starts.setdefault(struct.unpack(">i", body[:4])[0], base)
    epochs = sorted(starts)
    assert len(epochs) >= 2, f"one leader epoch across a failover: {starts}"
    for asked in range(epochs[0], epochs[-1] + 1):
        have = max(e for e in epochs if e <= asked)
        later = [starts[e] for e in epochs if e > have]
        end = later[0] if later else hws[0]
        got = offset_for_leader_epoch(c.nodes[leader_now].bootstrap, "failover", 0, asked, 3)
        assert got == (0, have, end), f"epoch {asked}: {got}, expected {(0, have, end)} ({starts})"
    sys.stderr.write(f"[partition leader failover after kill -9: {failover:.2f} s; "
                     f"epochs start at {starts}]\n")


def produce_one(bootstrap, topic, value, acks, timeout=15):
    """One record to partition 0 with no retries: (error code or 0, offset)."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "enable.idempotence": False,
                  "retries": 0, "linger.ms": 0, "message.timeout.ms": int(timeout * 1000),
                  "topic.metadata.refresh.interval.ms": 1000})
    out = []
    p.produce(topic, value.encode(), partition=0,
              on_delivery=lambda err, msg: out.append((err.code() if err else 0, msg.offset())))
    p.flush(timeout + 5)
    assert out, f"{value}: no delivery report"
    return out[0]


def wait_isr(c, topic, want, timeout=20):
    """Until Metadata's ISR of partition 0 is `want` (sorted)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = sorted(partition_state(c.admin(), topic)[0][2])
            if last == sorted(want):
                return
        except Exception as e:  # noqa: BLE001
            last = e
        time.sleep(0.2)
    pytest.fail(f"ISR of {topic}-0 never became {sorted(want)}: last {last}\n{c.tails()}",
                pytrace=False)


def offline_replicas(c, topic):
    """Metadata v5+'s offline replicas of partition 0 (kafka-python reads them)."""
    from kafka.admin import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=c.bootstrap, request_timeout_ms=10000)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    return sorted(described[0]["partitions"][0]["offline_replicas"])


def test_isr_min_insync_replicas_and_acks(cluster):
    """ISR follows the followers (replica.lag.time.max.ms), min.insync.replicas refuses acks=all
    writes with NOT_ENOUGH_REPLICAS (acks=1 ones it does not), an acks=all write waiting for
    min.insync.replicas=3 gets
    NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrinks under it, and every acknowledged
    record is read back at its offset."""
    from confluent_kafka.admin import NewTopic, ConfigResource, ConfigEntry, AlterConfigOpType
    from confluent_kafka import KafkaError
    c = cluster(controllers=3, extra=("replica.lag.time.max.ms=2000",))
    admin = c.admin()
    admin.create_topics([NewTopic("isr", 1, 3, config={"min.insync.replicas": "2"})],
                        operation_timeout=30)["isr"].result(timeout=40)
    leader = wait_leaders(c, "isr", 1)[0]
    f1, f2 = [i for i in c.nodes if i != leader]
    wait_isr(c, "isr", [1, 2, 3])
    acked = {}

    def ok(value, acks):
        code, offset = produce_one(c.bootstrap, "isr", value, acks)
        assert code == 0, f"{value} (acks={acks}): error {code}\n{c.tails()}"
        acked[value] = offset

    ok("all-3", "all")
    c.nodes[f1].kill9()
    wait_isr(c, "isr", [leader, f2])
    deadline = time.monotonic() + 15  # offline once the controller fences it
    while offline_replicas(c, "isr") != [f1] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert offline_replicas(c, "isr") == [f1]
    ok("all-2", "all")

    # min.insync.replicas=3 with two in sync: acks=all is refused before anything is appended;
    # acks=1 does not look at the ISR.
    admin = c.admin()  # the first one may still name the killed node as controller
    admin.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, "isr",
        incremental_configs=[ConfigEntry("min.insync.replicas", "3",
                                         incremental_operation=AlterConfigOpType.SET)])],
        request_timeout=30,
    )[ConfigResource(ConfigResource.Type.TOPIC, "isr")].result(timeout=40)
    deadline = time.monotonic() + 15
    while True:
        code, offset = produce_one(c.bootstrap, "isr", "refused-3", "all")
        if code != 0 or time.monotonic() > deadline:
            break
        acked["refused-3"] = offset  # taken before the new setting reached the leader
        time.sleep(0.3)
    assert code == KafkaError.NOT_ENOUGH_REPLICAS, code
    ok("one-1", "1")

    # One replica left: the leader's own ISR (the metadata quorum lost its majority too, so
    # Metadata keeps the last ISR it committed) refuses acks=all at once. (A Raft leader that
    # has heard from no majority for its lease refuses every write, acks=1 included:
    # NOT_LEADER_OR_FOLLOWER, as it may no longer lead.)
    c.nodes[f2].kill9()
    time.sleep(2.5)  # replica.lag.time.max.ms, and a sweep
    started = time.monotonic()
    code, _ = produce_one(c.bootstrap, "isr", "refused", "all", timeout=5)
    assert code == KafkaError.NOT_ENOUGH_REPLICAS, code
    assert time.monotonic() - started < 3, "refused only after waiting"

    for f in (f1, f2):
        c.nodes[f].start()
    for f in (f1, f2):
        c.nodes[f].wait_listening()
    wait_isr(c, "isr", [1, 2, 3], timeout=30)
    ok("all-min3", "all")

    # A follower stops answering while an acks=all write waits for all three: the write
    # commits on two, and once the silent follower's lag runs out the answer is
    # NOT_ENOUGH_REPLICAS_AFTER_APPEND (written, not acknowledged).
    os.kill(c.nodes[f2].pid, signal.SIGSTOP)
    try:
        code, _ = produce_one(c.bootstrap, "isr", "after-append", "all")
        assert code == KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, code
    finally:
        os.kill(c.nodes[f2].pid, signal.SIGCONT)
    wait_isr(c, "isr", [1, 2, 3], timeout=30)

    seen = consume_all(c.bootstrap, "isr", 1, len(acked) + 1, timeout=30)
    values = [v for _, _, v in seen]
    assert len(values) == len(set(values)), "a record was read twice"
    assert "refused" not in values
    for v, offset in acked.items():
        assert (0, offset, v) in seen, f"{v} acknowledged at {offset}, read: {seen}"


def test_nodes_stopped_one_by_one_hand_leaderships_only_to_live_brokers(cluster):
    """A cluster stopped one node at a time (an operator's rolling stop, every test's teardown):
    a stopping broker hands each leadership to a follower that is still up, never to one that
    stopped a moment ago and still looks in sync (that transfer would wait out its bound and
    leave the partition to an election), and the last node, with no metadata quorum left, does
    not wait for a fence it cannot get."""
    c = cluster(controllers=3)
    create_topic(c.admin(), "handover", 6, rf=3)
    wait_leaders(c, "handover", 6)
    # acks=all to every partition: every follower has caught up and answered its leader, so
    # each leadership has an in-sync follower to go to (a group created a moment ago may not
    # have heard from its followers yet, and then rightly keeps its leader).
    for p in range(6):
        values = [f"h{p}-{i}" for i in range(10)]
        acked, errors = produce(c.bootstrap, "handover", values, partition=p)
        assert set(acked) == set(values), errors[:5]
    nodes = list(c.nodes.values())
    for node in nodes:
        node.stop()
    first, second, last = (n.log_text() for n in nodes)
    moves = []
    for node_id, text in ((1, first), (2, second)):
        for moved, total in re.findall(r"controlled shutdown: moved (\d+) of (\d+) leaderships",
                                       text):
            assert moved == total, f"node {node_id} moved {moved} of {total}:\n{text[-4000:]}"
            moves.append(int(total))
    assert sum(moves) > 0, "the first two nodes led nothing to hand over"
    assert "no metadata quorum to fence this stopping broker" in last, last[-4000:]
    assert "did not fence this stopping broker" not in last, last[-4000:]
