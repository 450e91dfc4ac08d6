"""The workload that runs while faults are injected, and the history it records.

- Producers: one Java process (FaultClient.java, kafka-clients) and one confluent-kafka
  process (py_client.py, librdkafka), each running several idempotent acks=all producers
  (labels j0.., c0..) that send unique values "<label>-<seq>" at a fixed rate to partition
  seq % partitions. Every ack (partition, offset) and every error is recorded.
- Consumers: one Java and one confluent-kafka consumer, assign() of every partition from
  offset 0, polling continuously; every (partition, offset, value) they are handed is recorded
  in order.
- Probes: single acks=all writes (label "probe") the schedule uses to time availability;
  their acks join the history like any other.
- At the end: a final full read (librdkafka) up to the high watermark, and every replica's
  on-disk segments (records.py) for the byte comparison.
Every loop is bounded: the client programs stop at stdin EOF or after max_seconds.
"""
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from conftest import DEPS, JAVA_JAR  # noqa: E402

from .records import read_partition_dir  # noqa: E402

JAVA_SRC = HERE / "FaultClient.java"
JAVA_OUT = DEPS / "replication"


@dataclass
class History:
    topic: str = ""
    partitions: int = 0
    acks: list = field(default_factory=list)      # (label, value, partition, offset)
    acks_no_offset: list = field(default_factory=list)  # (label, value, partition)
    errors: list = field(default_factory=list)    # (label, value, message)
    sent: dict = field(default_factory=dict)      # label -> values handed to the client
    reads: dict = field(default_factory=lambda: defaultdict(list))  # consumer -> [(p, o, v)]
    client_errors: list = field(default_factory=list)  # (label, message)
    final: dict = field(default_factory=dict)     # p -> [(offset, value)]
    final_info: dict = field(default_factory=dict)  # p -> {"hw", "position", "complete"}
    hw: dict = field(default_factory=dict)        # p -> high watermark at the end
    leaders: dict = field(default_factory=dict)   # p -> leader id at the end
    replicas: dict = field(default_factory=dict)  # p -> {node: [records.Batch]}
    replica_tails: dict = field(default_factory=dict)  # p -> {node: scan tail reason}
    cycles: list = field(default_factory=list)    # one dict per fault cycle
    notes: list = field(default_factory=list)     # liveness problems found by the harness
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_line(self, line):
        """One line of a client program. Never raises: the reader thread must keep draining
        the pipe (a dead reader blocks the client on a full pipe)."""
        try:
            self._add_line(line)
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.client_errors.append(("harness", f"unparsable line {line!r}: {e}"))

    def _add_line(self, line):
        parts = line.rstrip("\n").split(" ", 4)
        kind = parts[0]
        with self.lock:
            if kind == "ack" and len(parts) == 5:
                label, seq, p = parts[1], parts[2], int(parts[3])
                if parts[4] in ("None", "-1", "-1001"):
                    # Acknowledged without an offset (librdkafka does this for a retried
                    # batch the broker answers as a duplicate): stored once, somewhere.
                    self.acks_no_offset.append((label, f"{label}-{seq}", p))
                else:
                    self.acks.append((label, f"{label}-{seq}", p, int(parts[4])))
            elif kind == "err" and len(parts) >= 4:
                label, seq = parts[1], parts[2]
                self.errors.append((label, f"{label}-{seq}", " ".join(parts[3:])))
            elif kind == "sent" and len(parts) >= 3:
                self.sent[parts[1]] = int(parts[2])
            elif kind == "rec" and len(parts) == 5:
                self.reads[parts[1]].append((int(parts[2]), int(parts[3]), parts[4]))
            elif kind == "cerr":
                self.client_errors.append((parts[1] if len(parts) > 1 else "?",
                                           " ".join(parts[2:])))


def java_client_cmd():
    if not JAVA_JAR.exists():
        raise RuntimeError(f"{JAVA_JAR} missing: run deploy/install-test-deps.sh")
    cls = JAVA_OUT / "FaultClient.class"
    if not cls.exists() or cls.stat().st_mtime < JAVA_SRC.stat().st_mtime:
        JAVA_OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["javac", "-d", str(JAVA_OUT), "-cp", str(JAVA_JAR), str(JAVA_SRC)],
                       check=True, capture_output=True, timeout=180)
    return ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m",
            "-cp", f"{JAVA_JAR}:{JAVA_OUT}", "FaultClient"]


def python_client_cmd():
    return [sys.executable, str(HERE / "py_client.py")]


class ClientProc:
    """One client program; its stdout lines go into the history as they arrive."""

    def __init__(self, name, argv, history, workdir, label=None):
        self.name = name
        self.label = label
        self.history = history
        self.err_path = Path(workdir) / f"client-{name}.err"
        self.out_path = Path(workdir) / f"client-{name}.out"
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.err_path, "wb"), text=True, bufsize=1)
        self.done = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        with open(self.out_path, "w") as raw:
            for line in self.proc.stdout:
                raw.write(line)
                if line.startswith("done"):
                    self.done = True
                self.history.add_line(line)

    def stop(self, timeout):
        """Close stdin (the program's stop signal), wait for it to exit; SIGKILL past the
        timeout (our own child). Returns True if it exited by itself."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
            ok = True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            ok = False
        self.thread.join(timeout=10)
        return ok and self.done


class Workload:
    def __init__(self, history, bootstrap, workdir, java_producers=2, py_producers=2,
                 rate=50.0, max_seconds=3600.0, clients=("java", "confluent")):
        self.h = history
        self.bootstrap = bootstrap
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.java_producers = java_producers if "java" in clients else 0
        self.py_producers = py_producers if "confluent" in clients else 0
        self.clients = clients
        self.rate = rate
        self.max_seconds = max_seconds
        self.producers = []
        self.consumers = []
        self.probe_seq = 0

    def start(self):
        t, n = self.h.topic, str(self.h.partitions)
        ms = str(self.max_seconds)
        if "java" in self.clients:
            java = java_client_cmd()
            self.consumers.append(ClientProc("java-consumer", java + [
                "consume", self.bootstrap, t, n, "jr", "-", ms], self.h, self.workdir, "jr"))
            if self.java_producers:
                labels = ",".join(f"j{i}" for i in range(self.java_producers))
                self.producers.append(ClientProc("java-producer", java + [
                    "produce", self.bootstrap, t, n, labels, str(self.rate), ms], self.h,
                    self.workdir))
        if "confluent" in self.clients:
            py = python_client_cmd()
            self.consumers.append(ClientProc("confluent-consumer", py + [
                "consume", self.bootstrap, t, n, "cr", "-", ms], self.h, self.workdir, "cr"))
            if self.py_producers:
                labels = ",".join(f"c{i}" for i in range(self.py_producers))
                self.producers.append(ClientProc("confluent-producer", py + [
                    "produce", self.bootstrap, t, n, labels, str(self.rate), ms], self.h,
                    self.workdir))

    def running(self):
        return {c.name: c.proc.poll() is None for c in self.producers + self.consumers}

    def stop_producers(self, timeout=120):
        return {c.name: c.stop(timeout) for c in self.producers}

    def stop_consumers(self, timeout=30):
        """Let every consumer reach the last acknowledged offset of every partition (bounded),
        then stop them."""
        labels = [c.label for c in self.consumers]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.h.lock:
                last = {}
                for _label, _v, p, o in self.h.acks:
                    last[p] = max(last.get(p, -1), o)
                seen = {label: {} for label in labels}
                for label in labels:
                    for p, o, _v in self.h.reads.get(label, []):
                        seen[label][p] = max(seen[label].get(p, -1), o)
            if all(seen[label].get(p, -1) >= o for label in labels for p, o in last.items()):
                break
            time.sleep(0.5)
        return {c.name: c.stop(30) for c in self.consumers}

    # -- probes --------------------------------------------------------------------------
    def probe_writable(self, timeout):
        """One acks=all idempotent write per partition, retried until each is acknowledged;
        returns the seconds until the last partition took one, or None past the timeout."""
        from confluent_kafka import Producer
        start = time.monotonic()
        deadline = start + timeout
        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 0, "request.timeout.ms": 3000, "log_level": 2,
                      "message.timeout.ms": max(1000, int(timeout * 1000)),
                      "topic.metadata.refresh.interval.ms": 1000,
                      "retry.backoff.ms": 50, "retry.backoff.max.ms": 250})
        pending = set(range(self.h.partitions))
        outstanding = {}

        def report(err, msg, part=None, value=None):
            outstanding.pop(part, None)
            with self.h.lock:
                if err is None:
                    self.h.acks.append(("probe", value, msg.partition(), msg.offset()))
                    pending.discard(part)
                else:
                    self.h.errors.append(("probe", value, str(err)))

        try:
            while pending and time.monotonic() < deadline:
                for part in list(pending):
                    if part in outstanding:
                        continue
                    value = f"probe-{self.probe_seq}"
                    self.probe_seq += 1
                    outstanding[part] = value
                    p.produce(self.h.topic, value=value.encode(), partition=part,
                              on_delivery=lambda e, m, part=part, value=value:
                              report(e, m, part, value))
                p.poll(0.05)
            elapsed = time.monotonic() - start
            return None if pending else elapsed
        finally:
            # Let outstanding probes resolve (bounded) so their outcome is recorded too.
            p.flush(max(1.0, min(10.0, timeout)))
            with self.h.lock:
                self.h.sent["probe"] = self.probe_seq


# --- reading the cluster's state -------------------------------------------------------
class Watermarks:
    """High watermarks (ListOffsets latest from each partition's leader). librdkafka's consumer
    can keep a stale view of a topic across a failover ("Unknown partition"): on any error the
    consumer is replaced and the request retried, within the timeout."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.c = None

    def _consumer(self):
        from confluent_kafka import Consumer
        if self.c is None:
            self.c = Consumer({"bootstrap.servers": self.bootstrap,
                               "group.id": "fault-watermarks", "log_level": 2,
                               "enable.auto.commit": False, "socket.timeout.ms": 5000})
        return self.c

    def get(self, topic, partitions, timeout=5.0):
        from confluent_kafka import TopicPartition
        deadline = time.monotonic() + timeout
        while True:
            try:
                out = {}
                for p in range(partitions):
                    _low, high = self._consumer().get_watermark_offsets(
                        TopicPartition(topic, p), timeout=max(1.0, deadline - time.monotonic()),
                        cached=False)
                    out[p] = high
                return out
            except Exception:  # noqa: BLE001
                self.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def partition_state(cluster, topic, timeout=5.0):
    """{p: (leader, replicas, isr)} from Metadata, asked of any live node."""
    last = None
    for n in cluster.nodes:
        if not cluster.alive(n) or n in cluster.stopped or n in cluster.isolated:
            continue
        try:
            md = cluster.admin(n, timeout=timeout).list_topics(topic=topic, timeout=timeout)
            t = md.topics[topic]
            if t.error is not None:
                last = t.error
                continue
            return {p: (m.leader, list(m.replicas), list(m.isrs))
                    for p, m in t.partitions.items()}
        except Exception as e:  # noqa: BLE001
            last = e
    raise RuntimeError(f"no metadata for {topic}: {last}")


def replica_ends(cluster, topic, partitions, replicas_of):
    """{p: {node: on-disk log end offset}} for every replica."""
    from .records import read_partition_dir as scan_dir
    out = {}
    for p in range(partitions):
        out[p] = {}
        for n in replicas_of.get(p, cluster.nodes):
            scan = scan_dir(cluster.partition_dir(n, topic, p))
            out[p][n] = scan.batches[-1].next_offset if scan.batches else 0
    return out


def wait_converged(cluster, topic, partitions, timeout, watermarks, exact=False, rf=3):
    """Until every partition has a leader and its full replica set in sync (Metadata), and every
    replica's on-disk log reaches the high watermark read at the start of the wait (exact: equals
    the high watermark, which must then be stable: for the end, with no writes going on).
    Returns (seconds, None) or (None, reason)."""
    start = time.monotonic()
    deadline = start + timeout
    hw0 = None
    reason = "?"
    while time.monotonic() < deadline:
        try:
            state = partition_state(cluster, topic)
            bad = {p: s for p, s in state.items()
                   if s[0] < 0 or sorted(s[2]) != sorted(s[1]) or len(s[1]) < rf}
            if bad:
                reason = f"leader/ISR not complete: {bad}"
                time.sleep(0.3)
                continue
            hw = watermarks.get(topic, partitions)
            if hw0 is None:
                hw0 = hw
            replicas_of = {p: s[1] for p, s in state.items()}
            ends = replica_ends(cluster, topic, partitions, replicas_of)
            if exact:
                short = {p: (hw[p], e) for p, e in ends.items()
                         if any(v != hw[p] for v in e.values())}
            else:
                short = {p: (hw0[p], e) for p, e in ends.items()
                         if any(v < hw0[p] for v in e.values())}
            if not short:
                return time.monotonic() - start, None
            reason = f"replicas not at the high watermark (hw, ends): {short}"
        except Exception as e:  # noqa: BLE001
            reason = f"{type(e).__name__}: {e}"
        time.sleep(0.3)
    return None, reason


def final_read(bootstrap, topic, partitions, hw, timeout=60.0, idle=8.0):
    """Every record of every partition from offset 0 up to the high watermark (librdkafka).
    Done for a partition when its position reaches the high watermark or a record at hw-1
    arrives; a partition whose tail is control batches only (not handed to the application)
    ends by position. Returns ({p: [(offset, value)]}, {p: info})."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fault-final-{time.time_ns()}",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "auto.offset.reset": "error", "log_level": 2})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    done = {p: hw[p] == 0 for p in range(partitions)}
    errors = []
    deadline = time.monotonic() + timeout
    last_progress = time.monotonic()
    while not all(done.values()) and time.monotonic() < deadline:
        # A log whose tail is control batches (Spool's leader-change entries) may leave
        # librdkafka's position short of the high watermark: after `idle` seconds without a
        # record the read ends; the checker compares it with the leader's log anyway.
        if time.monotonic() - last_progress > idle:
            break
        for m in c.consume(1000, 0.5):
            last_progress = time.monotonic()
            if m.error():
                errors.append(str(m.error()))
                continue
            v = m.value()
            got[m.partition()].append((m.offset(), "<null>" if v is None else
                                       v.decode("utf-8", "replace")))
            if m.offset() >= hw[m.partition()] - 1:
                done[m.partition()] = True
        for tp in c.position([TopicPartition(topic, p) for p in range(partitions)]):
            if tp.offset >= 0 and tp.offset >= hw[tp.partition]:
                done[tp.partition] = True
    positions = {tp.partition: tp.offset for tp in
                 c.position([TopicPartition(topic, p) for p in range(partitions)])}
    c.close()
    info = {p: {"hw": hw[p], "position": positions.get(p), "complete": done[p],
                "errors": errors[:5]} for p in range(partitions)}
    return got, info


def load_replicas(cluster, topic, partitions, replicas_of):
    reps, tails = {}, {}
    for p in range(partitions):
        reps[p], tails[p] = {}, {}
        for n in replicas_of.get(p, cluster.nodes):
            scan = read_partition_dir(cluster.partition_dir(n, topic, p))
            reps[p][n] = scan.batches
            tails[p][n] = scan.tail
    return reps, tails
