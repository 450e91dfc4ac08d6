"""Offsets as the log defines them: ListOffsets (earliest, latest, by timestamp,
max timestamp), OffsetForLeaderEpoch, segment rolling and time-based retention.

ListOffsets goes through a real client (librdkafka's AdminClient.list_offsets),
OffsetForLeaderEpoch is hand-encoded (tests/test_bad_input.py's wire helpers).
The segment and retention cases look at the partition directory itself
(`<log dir>/<topic>-<partition>/<20-digit base offset>.log`), the layout Kafka uses.

This module runs its own broker with `log.retention.check.interval.ms=500` (Spool:
`--set`, Kafka: server.properties) so retention acts within the test's time bound.
Kafka rejects a topic `segment.bytes` below 1 MiB, so segments here are 1 MiB.
"""
import os
import re
import shlex
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, OffsetSpec

from conftest import ROOT, Broker, running_broker
from test_bad_input import (NONE, OFFSET_FOR_LEADER_EPOCH, array, call, connect,
                            create_topic, i32, string)

BROKER_SETTINGS = {"log.retention.check.interval.ms": "500"}
SEGMENT_BYTES = 1 << 20
NOW_MS = int(time.time() * 1000)


# ---------------------------------------------------------------------------
# A broker with extra settings
# ---------------------------------------------------------------------------
class TunedBroker(Broker):
    """conftest.Broker plus broker settings: `--set k=v` for Spool; for Kafka the
    server.properties of deploy/kafka.sh plus the settings, started the same way."""

    settings = BROKER_SETTINGS

    def _start_spool(self):
        old = os.environ.get("SPOOL_TEST_ARGS")
        extra = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in self.settings.items())
        os.environ["SPOOL_TEST_ARGS"] = f"{old or ''} {extra}"
        try:
            super()._start_spool()
        finally:
            if old is None:
                del os.environ["SPOOL_TEST_ARGS"]
            else:
                os.environ["SPOOL_TEST_ARGS"] = old

    def _start_kafka(self):
        libs = os.environ.get("KAFKA_LIBS", str(ROOT / "tests" / ".deps" / "kafka-libs"))
        subprocess.run([str(ROOT / "deploy" / "kafka.sh"), "fetch"], check=True, timeout=600)
        d, host, port = self.workdir, self.host, self.port
        props = d / "server.properties"
        # The same settings as deploy/kafka.sh, then ours.
        props.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@{host}:{port + 1}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{port + 1}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir}", "num.partitions=1", "default.replication.factor=1",
            "min.insync.replicas=1", "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1", "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1", "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
        ] + [f"{k}={v}" for k, v in self.settings.items()]) + "\n")
        (d / "log4j2.properties").write_text(
            "status = warn\nappender.file.type = File\nappender.file.name = file\n"
            f"appender.file.fileName = {d}/server.log\nappender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\nrootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = file\n")
        java = ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={d}/log4j2.properties", "-cp", f"{libs}/*"]
        if not (self.data_dir / "meta.properties").exists():
            subprocess.run(java + ["kafka.tools.StorageTool", "format", "-t",
                                   uuid.uuid4().hex[:22], "-c", str(props), "--ignore-formatted"],
                           check=True, capture_output=True, timeout=120)
        out = open(self.log_path, "ab")
        self._proc = subprocess.Popen(java + ["kafka.Kafka", str(props)], stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=d)
        out.close()
        self.pid = self._proc.pid


@pytest.fixture(scope="module")
def tuned_broker():
    yield from running_broker(TunedBroker, "offsets")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def produce(bootstrap, topic, records, partition=0):
    """records: [(value, timestamp_ms)]. acks=all; returns the offsets in order."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True, "message.timeout.ms": 30000})
    offsets = [None] * len(records)

    def done(i):
        def cb(err, msg):
            assert err is None, err
            offsets[i] = msg.offset()
        return cb

    for i, (value, ts) in enumerate(records):
        p.produce(topic, value=value, partition=partition, timestamp=ts, on_delivery=done(i))
        if i % 1000 == 999:
            p.poll(0)
    assert p.flush(60) == 0, "produce did not finish in 60 s"
    assert None not in offsets
    return offsets


def read(bootstrap, topic, start, count, partition=0, timeout=30):
    """Read `count` records of one partition from `start` (bounded)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"offsets-{uuid.uuid4()}",
                  "enable.auto.commit": False, "auto.offset.reset": "error",
                  "fetch.max.bytes": 8 << 20})
    c.assign([TopicPartition(topic, partition, start)])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append((m.offset(), m.timestamp()[1], m.value()))
    finally:
        c.close()
    return got


def list_offset(bootstrap, topic, spec, partition=0):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, partition)
    res = admin.list_offsets({tp: spec}, request_timeout=15)[tp].result(timeout=30)
    return res.offset, res.timestamp


def offset_for_leader_epoch(bootstrap, topic, partition, epoch, version):
    """OffsetForLeaderEpoch v2/v3 (non-flexible). Returns (error, leader_epoch, end_offset)."""
    body = b"" if version < 3 else i32(-1)  # replica_id (v3+): a consumer
    body += array([string(topic) + array([i32(partition) + i32(-1) + i32(epoch)])])
    with connect(bootstrap) as s:
        r = call(s, OFFSET_FOR_LEADER_EPOCH, version, body)
    r.i32()  # throttle_time_ms (v2+)
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i16(), r.i32(), r.i32(), r.i64()))))
    assert len(topics) == 1 and topics[0][0] == topic and len(topics[0][1]) == 1, topics
    err, part, leader_epoch, end_offset = topics[0][1][0]
    assert part == partition
    return err, leader_epoch, end_offset


def log_files(data_dir, topic, partition=0):
    d = data_dir / f"{topic}-{partition}"
    names = sorted(f for f in os.listdir(d) if f.endswith(".log"))  # not .log.deleted
    for n in names:
        assert re.fullmatch(r"\d{20}\.log", n), n
    return names


# ---------------------------------------------------------------------------
# ListOffsets
# ---------------------------------------------------------------------------
TS_TOPIC = "offsets-ts"
# Ten records with distinct, non-monotonic timestamps; the largest is at offset 6.
BASE_TS = NOW_MS - 600_000
TS = [BASE_TS + d for d in (0, 1000, 2000, 3000, 4000, 5000, 90_000, 6000, 7000, 8000)]


@pytest.fixture(scope="module")
def ts_topic(tuned_broker):
    create_topic(tuned_broker.bootstrap, TS_TOPIC, partitions=1)
    offsets = produce(tuned_broker.bootstrap, TS_TOPIC, [(f"v{i}".encode(), ts) for i, ts in enumerate(TS)])
    assert offsets == list(range(10)), offsets
    return TS_TOPIC


def test_list_offsets_earliest_latest(tuned_broker, ts_topic):
    assert list_offset(tuned_broker.bootstrap, ts_topic, OffsetSpec.earliest())[0] == 0
    assert list_offset(tuned_broker.bootstrap, ts_topic, OffsetSpec.latest())[0] == 10


def test_list_offsets_by_timestamp(tuned_broker, ts_topic):
    b = tuned_broker.bootstrap
    # first offset whose timestamp >= the target
    cases = {TS[0] - 1: 0, TS[0]: 0, TS[3]: 3, TS[3] + 1: 4, TS[5] + 500: 6, TS[9]: 6,
             TS[6]: 6}
    for ts, want in cases.items():
        off, got_ts = list_offset(b, ts_topic, OffsetSpec.for_timestamp(ts))
        assert off == want, f"timestamp {ts - BASE_TS:+}: offset {off}, want {want}"
        assert got_ts == TS[want], f"timestamp {ts - BASE_TS:+}: returned ts {got_ts}, want {TS[want]}"
    # beyond every timestamp: no offset (-1)
    off, _ = list_offset(b, ts_topic, OffsetSpec.for_timestamp(TS[6] + 1))
    assert off == -1, off


def test_list_offsets_max_timestamp(tuned_broker, ts_topic):
    off, ts = list_offset(tuned_broker.bootstrap, ts_topic, OffsetSpec.max_timestamp())
    assert (off, ts) == (6, TS[6])


def test_records_keep_their_timestamps(tuned_broker, ts_topic):
    got = read(tuned_broker.bootstrap, ts_topic, OFFSET_BEGINNING, 10)
    assert got == [(i, TS[i], f"v{i}".encode()) for i in range(10)]


# ---------------------------------------------------------------------------
# OffsetForLeaderEpoch
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 3])
def test_offset_for_leader_epoch_zero_is_log_end(tuned_broker, ts_topic, version):
    err, epoch, end = offset_for_leader_epoch(tuned_broker.bootstrap, ts_topic, 0, 0, version)
    assert (err, epoch, end) == (NONE, 0, 10)


# ---------------------------------------------------------------------------
# Segments and retention
# ---------------------------------------------------------------------------
def test_segment_roll_keeps_all_data(tuned_broker):
    topic = "offsets-segments"
    b = tuned_broker.bootstrap
    create_topic(b, topic, partitions=1, config={"segment.bytes": str(SEGMENT_BYTES)})
    n, size = 2000, 2500  # ~5 MiB: at least 4 segments of 1 MiB
    values = [(f"{i:08d}".encode() + os.urandom(size - 8)) for i in range(n)]
    offsets = produce(b, topic, [(v, NOW_MS) for v in values])
    assert offsets == list(range(n))
    logs = log_files(tuned_broker.data_dir, topic)
    assert len(logs) >= 4, f"expected several segments, got {logs}"
    assert logs[0] == f"{0:020d}.log", logs
    bases = [int(x[:20]) for x in logs]
    assert bases == sorted(set(bases)) and all(0 <= o < n for o in bases), bases
    for f in logs[:-1]:  # closed segments are near segment.bytes, never above
        sz = (tuned_broker.data_dir / f"{topic}-0" / f).stat().st_size
        assert SEGMENT_BYTES // 2 < sz <= SEGMENT_BYTES, (f, sz)
    got = read(b, topic, OFFSET_BEGINNING, n)
    assert [o for o, _, _ in got] == list(range(n))
    assert [v for _, _, v in got] == values
    # reading from the middle of a later segment
    mid = bases[2] + 3
    got = read(b, topic, mid, 5)
    assert [(o, v) for o, _, v in got] == [(o, values[o]) for o in range(mid, mid + 5)]


def test_retention_deletes_old_segments(tuned_broker):
    topic = "offsets-retention"
    b = tuned_broker.bootstrap
    create_topic(b, topic, partitions=1, config={"segment.bytes": str(SEGMENT_BYTES),
                                                  "retention.ms": "1000"})
    # Old records (10 minutes ago) fill several segments, then the newest records
    # carry a timestamp 5 minutes ahead, so their segment is not yet expired.
    n_old, size = 1600, 2500
    produce(b, topic, [(os.urandom(size), NOW_MS - 600_000) for _ in range(n_old)])
    future = int(time.time() * 1000) + 300_000
    new_values = [f"new-{i}".encode() for i in range(20)]
    new_offsets = produce(b, topic, [(v, future) for v in new_values])
    assert new_offsets == list(range(n_old, n_old + 20))

    deadline = time.monotonic() + 60
    earliest = 0
    while time.monotonic() < deadline:
        earliest = list_offset(b, topic, OffsetSpec.earliest())[0]
        if earliest > 0 and len(log_files(tuned_broker.data_dir, topic)) == 1:
            break
        time.sleep(0.5)
    logs = log_files(tuned_broker.data_dir, topic)
    print(f"retention: earliest offset {earliest}, segments left {logs}")
    assert earliest > 0, "earliest offset never moved: no segment was deleted"
    assert earliest <= n_old, earliest
    assert len(logs) == 1 and int(logs[0][:20]) == earliest, (earliest, logs)
    assert list_offset(b, topic, OffsetSpec.latest())[0] == n_old + 20
    got = read(b, topic, OFFSET_BEGINNING, n_old + 20 - earliest)
    assert got[0][0] == earliest, got[:1]
    assert [(o, v) for o, _, v in got[-20:]] == list(zip(new_offsets, new_values))
