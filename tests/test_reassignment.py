"""Partition reassignment of replicated partitions on three real `spool` processes.

Checked with Kafka's own tool (kafka-reassign-partitions.sh, i.e.
org.apache.kafka.tools.reassign.ReassignPartitionsCommand) and real clients:
- AlterPartitionReassignments (sent by hand: Kafka 4.3's kafka-reassign-partitions.sh asks
  DescribeLogDirs for --generate and --execute, which Spool does not serve yet) moves an RF=2
  topic's replicas onto brokers 2 and 3 while an
  idempotent acks=all producer writes: every acknowledged record is read back exactly once at
  its acknowledged offset, the new replicas' logs are byte-identical below the high watermark,
  and the removed broker deleted its copy;
- `spool cluster decommission --broker 3` moves every replica off broker 3 and returns once
  ListPartitionReassignments is empty;
- --list shows a reassignment in progress (to a broker that is down, so it stays pending),
  --cancel reverts it, a second cancel finds nothing (NO_REASSIGNMENT_IN_PROGRESS), and a
  target naming an unregistered broker is refused (INVALID_REPLICA_ASSIGNMENT).
Every wait is bounded; processes are signalled only by their own PID.
"""
import json
import subprocess
import threading
import time

import pytest

from conftest import TARGET, spool_bin
from test_cluster import cluster, kafka_tool, pytest_runtest_makereport  # noqa: F401
from test_leadership import wait_until
from test_replication import (consume_all, high_watermarks, partition_state, read_batches,
                              wait_leaders)

pytestmark = pytest.mark.skipif(TARGET != "spool", reason="multi-node Spool clusters")

REASSIGN_TOOL = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"


def reassign(bootstrap, *args, check=True):
    return kafka_tool(REASSIGN_TOOL, "--bootstrap-server", bootstrap, *args, check=check)


def create_assigned(admin, name, assignment):
    from confluent_kafka.admin import NewTopic
    fs = admin.create_topics([NewTopic(name, len(assignment), replica_assignment=assignment)],
                             operation_timeout=30)
    fs[name].result(timeout=30)


class Producer:
    """A bounded idempotent acks=all producer in a thread: at most `count` records, paced."""

    def __init__(self, bootstrap, topic, count, every=0.005):
        from confluent_kafka import Producer as P
        self.p = P({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                    "linger.ms": 5, "message.timeout.ms": 60000,
                    "topic.metadata.refresh.interval.ms": 1000})
        self.topic, self.count, self.every = topic, count, every
        self.acked, self.errors = {}, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _done(self, err, msg):
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acked[msg.value().decode()] = (msg.partition(), msg.offset())

    def _run(self):
        for i in range(self.count):
            if self.stop.is_set():
                break
            while True:
                try:
                    self.p.produce(self.topic, f"r{i}".encode(), on_delivery=self._done)
                    break
                except BufferError:
                    self.p.poll(0.05)
            self.p.poll(0)
            time.sleep(self.every)
        self.p.flush(60)

    def start(self):
        self.thread.start()
        return self

    def finish(self):
        self.stop.set()
        self.thread.join(90)
        assert not self.thread.is_alive(), "producer did not finish"


def check_moved(c, topic, partitions, acked, replicas_of):
    seen = consume_all(c.bootstrap, topic, partitions, len(acked))
    values = [v for _, _, v in seen]
    assert len(values) == len(set(values)), "a record was read twice"
    assert set(values) == set(acked), f"{len(set(acked) - set(values))} acked records missing"
    for p, o, v in seen:
        assert acked[v] == (p, o), f"{v} read at {(p, o)}, acknowledged at {acked[v]}"
    hws = high_watermarks(c.bootstrap, topic, partitions)
    time.sleep(1.0)
    for p in range(partitions):
        copies = {}
        for i, node in c.nodes.items():
            d = node.data_dir / f"{topic}-{p}"
            if d.exists():
                copies[i] = [(b, body) for b, body in read_batches(str(d)) if b < hws[p]]
        assert sorted(copies) == sorted(replicas_of[p]), f"{topic}-{p} on {sorted(copies)}"
        first = next(iter(copies.values()))
        assert first, f"{topic}-{p} holds nothing below {hws[p]}"
        for i, batches in copies.items():
            assert batches == first, f"{topic}-{p}: replica on node {i} differs"


def test_alter_partition_reassignments_moves_replicas_under_load(cluster, tmp_path):
    c = cluster(controllers=3)
    create_assigned(c.admin(), "mv", [[1, 2], [2, 1]])
    wait_leaders(c, "mv", 2)
    producer = Producer(c.bootstrap, "mv", 4000).start()
    time.sleep(1.0)
    # The plan --generate would propose for --broker-list 2,3 (--generate itself asks
    # DescribeLogDirs, which Spool does not serve yet).
    plan = {0: [2, 3], 1: [3, 2]}
    for p, r in plan.items():
        assert alter_raw(c.bootstrap, "mv", p, r) == (0, None)

    def moved():
        state = partition_state(c.admin(), "mv")
        return {p: s[1] for p, s in state.items()} == plan, state

    wait_until("replicas moved", moved, 45, c)
    producer.finish()
    assert len(producer.acked) > 100, producer.errors[:5]
    state = partition_state(c.admin(), "mv")
    assert {p: s[1] for p, s in state.items()} == plan, state
    wait_leaders(c, "mv", 2)
    check_moved(c, "mv", 2, producer.acked, plan)


def test_cli_decommission_moves_every_replica_off_a_broker(cluster):
    c = cluster(controllers=3)
    create_assigned(c.admin(), "dec", [[3, 1], [2, 3], [1, 2]])
    wait_leaders(c, "dec", 3)
    producer = Producer(c.bootstrap, "dec", 600, every=0.002).start()
    producer.finish()
    out = subprocess.run([str(spool_bin()), "cluster", "decommission", "--broker", "3",
                          "--timeout-secs", "45", "--bootstrap-server", c.nodes[1].bootstrap],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr + c.tails()
    state = partition_state(c.admin(), "dec")
    assert all(3 not in s[1] and len(s[1]) == 2 for s in state.values()), state
    wait_leaders(c, "dec", 3)
    check_moved(c, "dec", 3, producer.acked, {p: s[1] for p, s in state.items()})


def test_list_cancel_and_refusals(cluster, tmp_path):
    c = cluster(controllers=3)
    create_assigned(c.admin(), "ls", [[1, 2]])
    wait_leaders(c, "ls", 1)
    # Broker 3 down: the new replica cannot catch up, so the move stays in progress.
    c.nodes[3].stop()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "ls", "partition": 0, "replicas": [1, 3], "log_dirs": ["any", "any"]}]}))
    assert alter_raw(c.bootstrap, "ls", 0, [1, 3]) == (0, None)
    listed = reassign(c.bootstrap, "--list").stdout
    assert "ls-0: replicas: 1,3,2. adding: 3. removing: 2." in listed, listed
    cancelled = reassign(c.bootstrap, "--cancel", "--preserve-throttles",
                         "--reassignment-json-file", str(plan))
    assert "ls-0" in cancelled.stdout, cancelled.stdout
    assert "Current partition reassignments" not in reassign(c.bootstrap, "--list").stdout \
        or "ls-0" not in reassign(c.bootstrap, "--list").stdout
    assert alter_raw(c.bootstrap, "ls", 0, None)[0] == 85  # NO_REASSIGNMENT_IN_PROGRESS
    assert partition_state(c.admin(), "ls")[0][1] == [1, 2]


def alter_raw(bootstrap, topic, partition, replicas):
    """AlterPartitionReassignments v0 by hand (Kafka's tool checks brokers and duplicates
    itself, so the broker's own checks are reached only this way): the partition's
    (error_code, error_message)."""
    import socket
    import struct

    def uvarint(v):
        out = b""
        while v >= 0x80:
            out += bytes([(v & 0x7F) | 0x80])
            v >>= 7
        return out + bytes([v])

    def cstr(s):
        b = s.encode()
        return uvarint(len(b) + 1) + b

    reps = b"\x00" if replicas is None else (
        uvarint(len(replicas) + 1) + b"".join(struct.pack(">i", r) for r in replicas))
    body = (struct.pack(">i", 30000) + uvarint(2) + cstr(topic) + uvarint(2)
            + struct.pack(">i", partition) + reps + b"\x00" + b"\x00" + b"\x00")
    header = struct.pack(">hhi", 45, 0, 7) + struct.pack(">h", 2) + b"it" + b"\x00"
    frame = header + body
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        data = b""
        while len(data) < size:
            data += s.recv(size - len(data))
    at = 4 + 1  # correlation id, header tags

    def read_uvarint():
        nonlocal at
        shift = v = 0
        while True:
            b = data[at]
            at += 1
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7

    def read_cstr():
        nonlocal at
        n = read_uvarint()
        if n == 0:
            return None
        s = data[at:at + n - 1].decode()
        at += n - 1
        return s

    at += 4  # throttle
    top = struct.unpack(">h", data[at:at + 2])[0]
    at += 2
    read_cstr()
    assert top == 0, top
    assert read_uvarint() == 2
    assert read_cstr() == topic
    assert read_uvarint() == 2
    at += 4
    code = struct.unpack(">h", data[at:at + 2])[0]
    at += 2
    return code, read_cstr()


def test_broker_refuses_bad_targets(cluster):
    c = cluster(controllers=3)
    create_assigned(c.admin(), "bad", [[1, 2]])
    wait_leaders(c, "bad", 1)
    INVALID_REPLICA_ASSIGNMENT, UNKNOWN_TOPIC_OR_PARTITION, NO_REASSIGNMENT = 39, 3, 85
    assert alter_raw(c.bootstrap, "bad", 0, [1, 9])[0] == INVALID_REPLICA_ASSIGNMENT
    assert alter_raw(c.bootstrap, "bad", 0, [1, 1])[0] == INVALID_REPLICA_ASSIGNMENT
    assert alter_raw(c.bootstrap, "bad", 0, [])[0] == INVALID_REPLICA_ASSIGNMENT
    assert alter_raw(c.bootstrap, "bad", 5, [1, 2])[0] == UNKNOWN_TOPIC_OR_PARTITION
    assert alter_raw(c.bootstrap, "nope", 0, [1, 2])[0] == UNKNOWN_TOPIC_OR_PARTITION
    assert alter_raw(c.bootstrap, "bad", 0, None)[0] == NO_REASSIGNMENT
    assert partition_state(c.admin(), "bad")[0][1] == [1, 2]
