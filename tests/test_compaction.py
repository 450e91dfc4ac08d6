"""Log compaction of user topics (`cleanup.policy=compact`), driven by confluent-kafka
(librdkafka). Spool-only: Kafka's cleaner groups segments and schedules rounds differently, so
the timing here is Spool's (the semantics checked are Kafka's).

One partition, segments rolled by `segment.ms`, 12 rounds over 200 keys (idempotent
producer, uncompressed: the storage unit tests cover every codec); the last round deletes k0..k19 with tombstones. The checks:
- while the cleaner runs, a reader going over the whole log again and again only ever sees
  records exactly as they were produced at their offsets, in increasing offset order;
- once cleaned, each live key has exactly one record: its last value, at its original offset;
  the tombstones are there until `delete.retention.ms` after the cleaning that kept them, then
  gone with every older record of their keys;
- the result survives a restart, and the partition's `.log` bytes shrank accordingly;
- a record without a key is refused with INVALID_RECORD, as Kafka refuses it.
"""
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import TARGET, running_broker
from test_cluster import cluster, pytest_runtest_makereport  # noqa: F401
from test_offsets import TunedBroker

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="Spool's cleaner timing")

ROUNDS = 12
KEYS = 200
DELETED = 20
VALUE_PAD = 200
ROLL_MS = 300
DELETE_RETENTION_MS = 3000
WAIT_S = 60


class CleanerBroker(TunedBroker):
    settings = {"log.cleaner.backoff.ms": "200"}


@pytest.fixture(scope="module")
def cbroker():
    yield from running_broker(CleanerBroker, "cleaner")


def read_all(bootstrap, topic):
    """Every record of partition 0 from its start to its high watermark: [(offset, key, value)]."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=15)
        c.assign([TopicPartition(topic, 0, low)])
        out = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if c.position([TopicPartition(topic, 0)])[0].offset >= high:
                break
            for m in c.consume(500, timeout=1):
                assert m.error() is None, m.error()
                if m.offset() >= high:
                    continue
                out.append((m.offset(), m.key().decode() if m.key() else None,
                            m.value().decode() if m.value() is not None else None))
        return out
    finally:
        c.close()


def log_bytes(b, topic):
    d = b.data_dir / f"{topic}-0"
    return sum(p.stat().st_size for p in d.iterdir() if p.suffix == ".log")


def test_compacted_topic_keeps_latest_values_and_drops_tombstones(cbroker):
    b = cbroker.bootstrap
    topic = f"compact-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": b})
    configs = {"cleanup.policy": "compact", "segment.ms": str(ROLL_MS),
               "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0",
               "delete.retention.ms": str(DELETE_RETENTION_MS)}
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                  config=configs)])[topic].result(timeout=30)

    produced = {}  # offset -> (key, value)
    failures = []

    def delivered(err, msg):
        if err is not None:
            failures.append(err)
        else:
            produced[msg.offset()] = (msg.key().decode(),
                                      msg.value().decode() if msg.value() is not None else None)

    p = Producer({"bootstrap.servers": b, "enable.idempotence": True, "linger.ms": 5})
    for r in range(ROUNDS):
        for k in range(KEYS):
            deleted = r == ROUNDS - 1 and k < DELETED
            value = None if deleted else f"{r}:k{k}:" + "x" * VALUE_PAD
            p.produce(topic, key=f"k{k}", value=value, on_delivery=delivered)
        assert p.flush(30) == 0
        time.sleep(ROLL_MS * 1.5 / 1000)
    # Roll the last round into a sealed segment (the active one is never cleaned).
    for i in range(2):
        p.produce(topic, key="end", value=f"end{i}", on_delivery=delivered)
        assert p.flush(30) == 0
        time.sleep(ROLL_MS * 1.5 / 1000)
    assert not failures, failures
    written = sum(len(k) + len(v or "") for k, v in produced.values())

    # A reader going over the log while the cleaner works: every record as produced.
    stop = threading.Event()
    seen_passes, reader_errors = [], []

    def reader():
        while not stop.is_set():
            try:
                records = read_all(b, topic)
                offsets = [o for o, _, _ in records]
                assert offsets == sorted(set(offsets)), "offsets must increase"
                for o, key, value in records:
                    assert produced[o] == (key, value), (o, key, value, produced[o])
                seen_passes.append(len(records))
            except Exception as e:  # reported below, on the main thread
                reader_errors.append(repr(e))
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def live_state():
        records = read_all(b, topic)
        by_key = {}
        for o, key, value in records:
            by_key.setdefault(key, []).append((o, value))
        return records, by_key

    last = {}
    for o, (key, value) in produced.items():
        if key not in last or last[key][0] < o:
            last[key] = (o, value)

    deadline = time.monotonic() + WAIT_S
    while True:
        records, by_key = live_state()
        if all(len(v) == 1 for k, v in by_key.items() if k != "end"):
            break
        assert time.monotonic() < deadline, (
            f"not compacted after {WAIT_S}s: {sum(len(v) for v in by_key.values())} records; "
            f"log tail:\n{cbroker.log_tail()}")
        time.sleep(0.5)
    for key, versions in by_key.items():
        if key == "end":
            continue
        assert versions == [last[key]], (key, versions, last[key])

    # The tombstones go once delete.retention.ms passed after the cleaning that kept them.
    deadline = time.monotonic() + WAIT_S
    while True:
        records, by_key = live_state()
        if not any(f"k{k}" in by_key for k in range(DELETED)):
            break
        assert time.monotonic() < deadline, f"tombstones still there after {WAIT_S}s"
        time.sleep(0.5)
    stop.set()
    t.join(timeout=60)
    assert not reader_errors, reader_errors
    assert len(seen_passes) >= 2, seen_passes
    expected = sorted((o, k, v) for k, (o, v) in last.items()
                      if v is not None or k == "end")
    live = sorted(r for r in records if r[1] != "end" or r[0] == last["end"][0])
    assert live == expected
    assert log_bytes(cbroker, topic) < written / 4, (log_bytes(cbroker, topic), written)

    cbroker.restart()
    assert read_all(b, topic) == records, "the cleaned log survives a restart"

    # Kafka's rule: a compacted topic refuses records without a key.
    errors = []
    p = Producer({"bootstrap.servers": b, "enable.idempotence": False, "retries": 0})
    p.produce(topic, value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]


def test_replicated_compacted_topic_compacts_every_replica_and_fails_over(cluster):
    """RF=3 on three nodes: each replica cleans its own Raft log below the high watermark,
    keeping every batch (emptied ones as headers) so entry numbering holds; after kill -9 of
    the leader the new one serves each key's last value at its original offset."""
    import glob
    import os
    import struct

    from test_replication import wait_leaders

    c = cluster(controllers=3, extra=("log.cleaner.backoff.ms=200",))
    topic = "compact-rf3"
    configs = {"cleanup.policy": "compact", "segment.ms": str(ROLL_MS),
               "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0"}
    admin = c.admin()  # kept alive until its future resolves
    admin.create_topics([NewTopic(topic, 1, 3, config=configs)])[topic].result(timeout=30)
    leader = wait_leaders(c, topic, 1)[0]

    produced = {}

    def delivered(err, msg):
        assert err is None, err
        produced[msg.offset()] = (msg.key().decode(), msg.value().decode())

    p = Producer({"bootstrap.servers": c.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5})
    keys, rounds = 50, 8
    for r in range(rounds):
        for k in range(keys):
            p.produce(topic, key=f"k{k}", value=f"{r}:k{k}", partition=0, on_delivery=delivered)
        assert p.flush(30) == 0
        time.sleep(ROLL_MS * 1.5 / 1000)
    for i in range(2):
        p.produce(topic, key="end", value=f"end{i}", partition=0, on_delivery=delivered)
        assert p.flush(30) == 0
        time.sleep(ROLL_MS * 1.5 / 1000)
    last = {}
    for o, (key, value) in produced.items():
        if key not in last or last[key][0] < o:
            last[key] = (o, value)

    def emptied_batches(node):
        count = 0
        for path in glob.glob(os.path.join(str(node.data_dir / f"{topic}-0"), "*.log")):
            data = open(path, "rb").read()
            at = 0
            while at + 61 <= len(data):
                _, length = struct.unpack(">qi", data[at:at + 12])
                if length <= 0 or at + 12 + length > len(data):
                    break
                count += struct.unpack(">i", data[at + 57:at + 61])[0] == 0
                at += 12 + length
        return count

    def compacted(bootstrap):
        records, _ = read_all_records(bootstrap)
        by_key = {}
        for o, key, value in records:
            by_key.setdefault(key, []).append((o, value))
        return all(len(v) == 1 for k, v in by_key.items() if k != "end"), by_key

    deadline = time.monotonic() + WAIT_S
    while True:
        done, by_key = compacted(c.bootstrap)
        # Each round is one batch (one partition, linger): every round but the last is
        # superseded whole, and each replica keeps those as empty batches.
        if done and all(emptied_batches(n) >= rounds - 1 for n in c.nodes.values()):
            break
        assert time.monotonic() < deadline, (
            {i: emptied_batches(n) for i, n in c.nodes.items()}, c.tails())
        time.sleep(0.5)
    for key, versions in by_key.items():
        if key != "end":
            assert versions == [last[key]], (key, versions)

    c.nodes[leader].kill9()
    wait_leaders(c, topic, 1, exclude=(leader,))
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            done, by_key = compacted(c.bootstrap)
        except Exception:  # noqa: BLE001 - the new leader may still be taking over
            done = False
        if done:
            break
        assert time.monotonic() < deadline, c.tails()
        time.sleep(0.5)
    for key, versions in by_key.items():
        if key != "end":
            assert versions == [last[key]], ("after failover", key, versions)


def read_all_records(bootstrap, topic="compact-rf3"):
    records = read_all(bootstrap, topic)
    return records, len(records)
