"""Durability across restarts and crashes, judged by what producers were told.

Fault model: the broker process stops cleanly (SIGTERM) or dies at an arbitrary
instruction (SIGKILL) while producers are writing; the machine itself does not
crash, so the OS page cache survives (as for Apache Kafka, whose acks=all does not
fsync either). Under that model:

  * every record whose delivery was ACKNOWLEDGED is in the log after the restart,
    exactly once, at the offset the acknowledgement named, byte for byte;
  * offsets of every partition are contiguous from 0 (recovery truncates a torn
    tail, it never leaves holes);
  * an idempotent producer whose acknowledgements were lost in the crash and who
    retries after the restart produces no duplicates (the broker recovered its
    producer-sequence state from the log).
"""
import os
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

from conftest import JAVA_JAR, ROOT, TARGET
from test_bad_input import create_topic

READ_TIMEOUT_S = 60


def read_all(bootstrap, topic, partitions, timeout=READ_TIMEOUT_S):
    """Every record of every partition, from offset 0 to the high watermark (bounded).
    Returns {partition: [(offset, key, value, headers, timestamp)]}."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"durability-{uuid.uuid4()}",
                  "enable.auto.commit": False, "auto.offset.reset": "error",
                  "fetch.max.bytes": 16 << 20})
    try:
        ends = {}
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            assert lo == 0, f"partition {p}: log start offset {lo}, expected 0"
            ends[p] = hi
        out = {p: [] for p in range(partitions)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions) if ends[p] > 0])
        deadline = time.monotonic() + timeout
        while any(len(out[p]) < ends[p] for p in out) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            out[m.partition()].append((m.offset(), m.key(), m.value(), m.headers(), m.timestamp()[1]))
        short = {p: (len(out[p]), ends[p]) for p in out if len(out[p]) != ends[p]}
        assert not short, f"read (got, high watermark) per partition: {short}"
        return out
    finally:
        c.close()


def assert_contiguous(records_by_partition):
    for p, recs in records_by_partition.items():
        offs = [r[0] for r in recs]
        assert offs == list(range(len(offs))), \
            f"partition {p}: offsets not contiguous from 0 (first gap near " \
            f"{next((i for i, o in enumerate(offs) if o != i), None)})"


# ---------------------------------------------------------------------------
# 1. Clean restart: byte-exact, same offsets
# ---------------------------------------------------------------------------
def test_restart_keeps_every_record_byte_exact(broker):
    topic, partitions, n = "durability-restart", 4, 4000
    create_topic(broker.bootstrap, topic, partitions=partitions)
    base_ts = int(time.time() * 1000) - 60_000
    sent = []
    for i in range(n):
        key = None if i % 7 == 0 else f"key-{i}".encode()
        value = b"" if i % 11 == 0 else os.urandom(1 + (i * 37) % 900)
        headers = [("h", f"{i}".encode()), ("empty", b"")] if i % 3 == 0 else None
        sent.append((i % partitions, key, value, headers, base_ts + i))
    acked = {}
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True, "message.timeout.ms": 60000})

    def cb(i):
        def f(err, msg):
            assert err is None, err
            acked[i] = (msg.partition(), msg.offset())
        return f

    for i, (part, key, value, headers, ts) in enumerate(sent):
        p.produce(topic, key=key, value=value, headers=headers, partition=part, timestamp=ts,
                  on_delivery=cb(i))
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert len(acked) == n

    old_pid = broker.pid
    broker.restart()  # SIGTERM, wait, start again on the same port and data dir
    assert broker.pid != old_pid

    got = read_all(broker.bootstrap, topic, partitions)
    assert_contiguous(got)
    assert sum(len(v) for v in got.values()) == n
    for i, (part, key, value, headers, ts) in enumerate(sent):
        ap, ao = acked[i]
        assert ap == part
        off, gk, gv, gh, gts = got[part][ao]
        assert (off, gk, gv, gts) == (ao, key, value, ts), \
            f"record {i} at {part}/{ao} differs after restart"
        assert (gh or []) == (headers or []), f"record {i}: headers {gh} != {headers}"


def produce_acked(bootstrap, topic, partitions, values):
    """Idempotent acks=all, value i to partition i % partitions: {value: (partition, offset)}."""
    acked, errors = {}, []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True, "message.timeout.ms": 60000})

    def done(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            errors.append(err)

    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % partitions, on_delivery=done)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors and len(acked) == len(values), errors[:5]
    return acked


@pytest.mark.skipif(TARGET != "spool", reason="Spool's clean-shutdown books")
def test_clean_stop_books_are_trusted_once_and_a_later_crash_keeps_newer_writes(broker):
    """A clean stop leaves one clean-shutdown book per shard (and no per-partition file); the
    next start takes them (renamed `.taken`) and opens every log from them. Records written
    after that start and then a kill -9: the start after the crash must not trust the old
    books (they describe shorter logs), so every acknowledged record is there."""
    topic, partitions = "books", 8
    create_topic(broker.bootstrap, topic, partitions=partitions)
    first = [f"first-{i}".encode() for i in range(400)]
    acked = produce_acked(broker.bootstrap, topic, partitions, first)

    broker.stop()
    data = broker.data_dir
    books = sorted(f.name for f in data.iterdir()
                   if f.name.startswith("clean-shutdown-shard-") and not f.name.endswith(".taken"))
    assert books, sorted(f.name for f in data.iterdir())
    # (The metadata log, on no shard's book, closes on its own.)
    beside = [f for f in data.glob("*/clean-shutdown") if f.parent.name != "__cluster_metadata-0"]
    assert not beside, f"per-partition records beside the books: {beside}"

    broker.start()
    names = sorted(f.name for f in data.iterdir() if f.name.startswith("clean-shutdown-shard-"))
    assert names == sorted(b + ".taken" for b in books), names
    second = [f"second-{i}".encode() for i in range(400)]
    acked.update(produce_acked(broker.bootstrap, topic, partitions, second))

    broker.kill9()
    broker.start()
    assert not [f for f in data.iterdir() if f.name.startswith("clean-shutdown-shard-")], \
        "the crashed run's taken books outlived the next start"
    got = read_all(broker.bootstrap, topic, partitions)
    assert_contiguous(got)
    seen = {value: (p, off) for p, recs in got.items() for off, _k, value, _h, _ts in recs}
    assert seen == acked, f"{len(seen)} records read, {len(acked)} acknowledged"


# ---------------------------------------------------------------------------
# 2. kill -9 under concurrent load
# ---------------------------------------------------------------------------
def test_kill9_under_load_keeps_acked_records_exactly_once(broker):
    """4 producer threads (confluent-kafka), 20 000 records in all, paced over ~6 s;
    the broker is kill -9'd when ~30% are acknowledged, then restarted.

    Producers run with retries disabled and no idempotence: every record is sent at
    most once, so the log can hold each id at most once (no producer retry can
    legitimately duplicate it), and one that was acknowledged must be there exactly
    once, at its acknowledged offset. (With retries and no idempotence a record whose
    ack was lost and that was re-sent may legitimately appear twice; with idempotence
    the broker's sequence recovery would be under test too: that is test 3.) Records
    in flight at the kill fail with a transport error and may or may not be present."""
    topic, partitions, producers, per_producer = "durability-kill9", 4, 4, 5000
    create_topic(broker.bootstrap, topic, partitions=partitions)
    lock = threading.Lock()
    acked = {}   # id -> (partition, offset)
    failed = {}  # id -> error string
    unresolved = []  # per producer: records with no delivery report after flush

    def run(pidx):
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                      "enable.idempotence": False, "retries": 0,
                      "message.timeout.ms": 60000, "socket.timeout.ms": 10000,
                      "reconnect.backoff.max.ms": 500})

        def cb(err, msg):
            rid = int(msg.value()[3:11])
            with lock:
                if err is None:
                    acked[rid] = (msg.partition(), msg.offset())
                else:
                    failed[rid] = str(err)

        start = time.monotonic()
        for j in range(per_producer):
            rid = pidx * per_producer + j
            value = b"id-%08d-" % rid + b"x" * (rid % 50)
            while True:
                try:
                    p.produce(topic, value=value, partition=rid % partitions, on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.05)
            # pace: ~830 records/s per producer
            ahead = start + j * 0.0012 - time.monotonic()
            if ahead > 0:
                p.poll(ahead)
            else:
                p.poll(0)
        p.flush(120)
        with lock:
            unresolved.append(len(p))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(producers)]
    for t in threads:
        t.start()
    total = producers * per_producer
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            done = len(acked)
        if done >= total * 0.3:
            break
        time.sleep(0.01)
    with lock:
        acked_at_kill = len(acked)
    assert 0 < acked_at_kill < total, f"load not running at the kill ({acked_at_kill}/{total} acked)"
    broker.kill9()
    broker.restart()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "producer threads did not finish"

    got = read_all(broker.bootstrap, topic, partitions)
    assert_contiguous(got)
    seen = {}
    dups = set()
    for part, recs in got.items():
        for off, _k, value, _h, _ts in recs:
            assert value.startswith(b"id-"), (part, off, value[:20])
            rid = int(value[3:11])
            assert value == b"id-%08d-" % rid + b"x" * (rid % 50), f"{part}/{off} corrupt value"
            assert rid % partitions == part, f"id {rid} in partition {part}"
            if rid in seen:
                dups.add(rid)
            seen[rid] = (part, off)
    lost = sorted(rid for rid in acked if rid not in seen)
    moved = sorted(rid for rid, pos in acked.items() if rid in seen and seen[rid] != pos)
    unacked_present = sum(1 for rid in seen if rid not in acked)
    print(f"\nkill -9 under load: sent {total}, acked {len(acked)} ({acked_at_kill} before the kill), "
          f"failed {len(failed)}, found {len(seen)} distinct / {sum(len(v) for v in got.values())} "
          f"records, lost {len(lost)}, duplicated {len(dups)}, acked-at-other-offset {len(moved)}, "
          f"unacked-but-present {unacked_present}")
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:10]}"
    assert not dups, f"{len(dups)} ids duplicated (sent once each), e.g. {sorted(dups)[:10]}"
    assert not moved, f"{len(moved)} acknowledged records at another offset, e.g. " \
                      f"{[(r, acked[r], seen[r]) for r in moved[:5]]}"
    assert unresolved == [0] * producers and len(acked) + len(failed) == total, \
        f"records without a delivery report: {unresolved}"
    assert len(acked) > acked_at_kill, "no record was acknowledged after the restart"


# ---------------------------------------------------------------------------
# 3. Idempotent Java producer across a crash
# ---------------------------------------------------------------------------
EXTRA_SRC = ROOT / "tests" / "clients_extra" / "PacedProducer.java"
EXTRA_OUT = ROOT / "tests" / ".deps" / "clients_extra"


def paced_producer_cmd():
    if not JAVA_JAR.exists():
        pytest.fail(f"{JAVA_JAR} missing: run deploy/install-test-deps.sh", pytrace=False)
    cls = EXTRA_OUT / "PacedProducer.class"
    if not cls.exists() or cls.stat().st_mtime < EXTRA_SRC.stat().st_mtime:
        EXTRA_OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["javac", "-d", str(EXTRA_OUT), "-cp", str(JAVA_JAR), str(EXTRA_SRC)],
                       check=True, capture_output=True, timeout=120)
    return ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1",
            "-cp", f"{JAVA_JAR}:{EXTRA_OUT}", "PacedProducer"]


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_idempotent_java_producer_across_restart(broker, how):
    """The Java client with its defaults (enable.idempotence=true, acks=all, retries
    unbounded within delivery.timeout.ms=120 s) sends 12 000 records at ~2 000/s to 3
    partitions; when ~1/3 are acknowledged the broker is stopped (SIGTERM, or kill -9)
    and restarted on the same port. Requests in flight lose their responses and are
    retried with the same producer id and sequence numbers. Afterwards: every record
    was acknowledged, each id is in the log exactly once, at its acknowledged offset."""
    topic, partitions, count, rate = f"durability-idem-{how}", 3, 12000, 2000
    create_topic(broker.bootstrap, topic, partitions=partitions)
    cmd = paced_producer_cmd() + [broker.bootstrap, topic, str(partitions), str(count), str(rate)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked, errors, lines = {}, [], []
    reader_done = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line)
            parts = line.split(maxsplit=3)
            if parts[0] == "ack":
                acked[int(parts[1])] = (int(parts[2]), int(parts[3]))
            elif parts[0] == "err":
                errors.append(line.strip())
        reader_done.set()

    threading.Thread(target=reader, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < count // 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        acked_at_stop = len(acked)
        assert count // 3 <= acked_at_stop < count, \
            f"producer not mid-stream at the stop ({acked_at_stop}/{count} acked, rc {proc.poll()})"
        if how == "kill9":
            broker.kill9()
        broker.restart()
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    reader_done.wait(timeout=10)
    stderr = proc.stderr.read()

    got = read_all(broker.bootstrap, topic, partitions)
    assert_contiguous(got)
    seen, dups = {}, {}
    for part, recs in got.items():
        for off, _k, value, _h, _ts in recs:
            rid = int(value[3:])
            assert value == b"id-%08d" % rid and rid % partitions == part, (part, off, value)
            if rid in seen:
                dups.setdefault(rid, [seen[rid]]).append((part, off))
            seen[rid] = (part, off)
    lost = sorted(r for r in acked if r not in seen)
    moved = sorted(r for r, pos in acked.items() if r in seen and r not in dups and seen[r] != pos)
    print(f"\nidempotent Java producer, {how}: sent {count}, acked {len(acked)} "
          f"({acked_at_stop} before the stop), errors {len(errors)}, found {len(seen)} distinct / "
          f"{sum(len(v) for v in got.values())} records, lost {len(lost)}, duplicated {len(dups)}")
    assert not dups, f"{len(dups)} duplicated ids, e.g. {sorted(dups.items())[:5]}"
    assert not lost, f"{len(lost)} acknowledged ids missing, e.g. {lost[:10]}"
    assert not moved, f"acknowledged at another offset: {[(r, acked[r], seen[r]) for r in moved[:5]]}"
    assert rc == 0 and not errors and len(acked) == count, \
        f"producer exit {rc}, {len(errors)} errors, {len(acked)}/{count} acked: {errors[:5]}\n{stderr[-2000:]}"
    assert len(seen) == count
