"""Partition reassignment of replicated partitions on three real `spool` processes.

Checked with Kafka's own tool (kafka-reassign-partitions.sh, i.e.
org.apache.kafka.tools.reassign.ReassignPartitionsCommand) and real clients:
- the tool's --generate (its current assignment names each replica's log dir, from
  DescribeLogDirs), --execute and --verify (until completed; it then clears the throttle
  configs) move an RF=2 topic's replicas onto brokers 2 and 3 while an idempotent acks=all
  producer writes: every acknowledged record is read back exactly once at its acknowledged
  offset, the new replicas' logs are byte-identical below the high watermark, and the removed
  broker deleted its copy;
- DescribeLogDirs, through kafka-log-dirs.sh (LogDirsCommand) and by hand at v4: one log dir
  per broker (its absolute path), every replica the broker holds and nothing else, sizes equal
  to the bytes of the replica's segment files and growing as records are written, the volume's
  total bytes as statvfs reports them;
- `spool cluster decommission --broker 3` moves every replica off broker 3 and returns once
  ListPartitionReassignments is empty;
- a leader killed (-9) in the middle of a move that removes it: the next leader finishes the
  move once the new replica's broker is back, the restarted broker drops its copy, and no
  acknowledged record is lost or duplicated;
- --list shows a reassignment in progress (to a broker that is down, so it stays pending),
  --cancel reverts it, a second cancel finds nothing (NO_REASSIGNMENT_IN_PROGRESS), and a
  target naming an unregistered broker is refused (INVALID_REPLICA_ASSIGNMENT).
Every wait is bounded; processes are signalled only by their own PID.
"""
import json
import os
import re
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


def tool_json(text, heading):
    """The JSON document printed after `heading` in a Kafka tool's output."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(heading))
    return json.loads(next(line for line in lines[at + 1:] if line.startswith("{")))


def test_reassign_tool_moves_replicas_under_load(cluster, tmp_path):
    c = cluster(controllers=3)
    create_assigned(c.admin(), "mv", [[1, 2], [2, 1]])
    wait_leaders(c, "mv", 2)
    producer = Producer(c.bootstrap, "mv", 4000).start()
    time.sleep(1.0)
    topics = tmp_path / "topics.json"
    topics.write_text(json.dumps({"version": 1, "topics": [{"topic": "mv"}]}))
    out = reassign(c.bootstrap, "--generate", "--topics-to-move-json-file", str(topics),
                   "--broker-list", "2,3").stdout
    # The current assignment names each replica's log dir, which the tool learns from
    # DescribeLogDirs on the replica's broker.
    current = tool_json(out, "Current partition replica assignment")
    for p in current["partitions"]:
        assert p["log_dirs"] == [str(c.nodes[b].data_dir) for b in p["replicas"]], p
    proposed = tool_json(out, "Proposed partition reassignment configuration")
    plan = {p["partition"]: p["replicas"] for p in proposed["partitions"]}
    assert sorted(plan) == [0, 1] and all(sorted(r) == [2, 3] for r in plan.values()), plan
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(proposed))
    out = reassign(c.bootstrap, "--execute", "--reassignment-json-file", str(plan_file)).stdout
    assert "Successfully started partition reassignment" in out and "mv-0" in out, out

    def verified():
        # Exits 0 also while in progress; once every move is done it clears the throttles
        # (deleting broker and topic configs), which must succeed as well.
        out = reassign(c.bootstrap, "--verify", "--reassignment-json-file", str(plan_file)).stdout
        return all(f"Reassignment of partition mv-{p} is completed." in out for p in plan), out

    out = wait_until("reassignment verified", verified, 60, c)
    assert "Clearing broker-level throttles on brokers 1,2,3" in out, out
    assert "Clearing topic-level throttles on topic mv" in out, out
    producer.finish()
    assert len(producer.acked) > 100, producer.errors[:5]
    state = partition_state(c.admin(), "mv")
    assert {p: s[1] for p, s in state.items()} == plan, state
    wait_leaders(c, "mv", 2)
    check_moved(c, "mv", 2, producer.acked, plan)


def test_leader_killed_mid_move_the_next_leader_finishes_it(cluster):
    """RF=3 on brokers 2,3,1 (2 leads) moving to 3,1,4 while broker 4 is down, so the move
    is in flight; kill -9 of the leader, which the move removes. A survivor leads, carries the
    move on once broker 4 is back (learner, catch-up, membership change), and the killed
    broker, restarted, finds itself removed and drops its copy. Nothing acknowledged is lost
    or duplicated, and the three new replicas are byte-identical."""
    c = cluster(controllers=3, brokers_only=1)
    create_assigned(c.admin(), "mid", [[2, 3, 1]])
    wait_leaders(c, "mid", 1)
    c.nodes[4].stop()
    producer = Producer(c.bootstrap, "mid", 3000).start()
    time.sleep(0.5)
    assert alter_raw(c.bootstrap, "mid", 0, [3, 1, 4]) == (0, None)

    def shown(want):
        def probe():
            state = partition_state(c.admin(), "mid")[0]
            return state[1] == want and state[0] in want, state
        return probe

    leader = wait_until("the move in flight in Metadata", shown([3, 1, 4, 2]), 15, c)[0]
    victim = c.nodes[leader]
    victim.kill9()
    time.sleep(1.0)
    c.nodes[4].start()
    c.nodes[4].wait_listening()
    wait_until("the move finished by the next leader", shown([3, 1, 4]), 60, c)
    assert "mid-0" not in reassign(c.bootstrap, "--list").stdout
    producer.finish()
    assert len(producer.acked) > 100, producer.errors[:5]
    victim.start()
    victim.wait_listening()
    c.wait_brokers(4)
    wait_leaders(c, "mid", 1)
    check_moved(c, "mid", 1, producer.acked, {0: [3, 1, 4]})


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
    # Metadata lists the same set while the move runs: the target, then the leaving replica.
    def shown():
        replicas = partition_state(c.admin(), "ls")[0][1]
        return replicas == [1, 3, 2], replicas
    wait_until("Metadata listing target and leaving replicas", shown, 15, c)
    cancelled = reassign(c.bootstrap, "--cancel", "--preserve-throttles",
                         "--reassignment-json-file", str(plan))
    assert "ls-0" in cancelled.stdout, cancelled.stdout
    assert "Current partition reassignments" not in reassign(c.bootstrap, "--list").stdout \
        or "ls-0" not in reassign(c.bootstrap, "--list").stdout
    assert alter_raw(c.bootstrap, "ls", 0, None)[0] == 85  # NO_REASSIGNMENT_IN_PROGRESS
    assert partition_state(c.admin(), "ls")[0][1] == [1, 2]


def uvarint(v):
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def cstr(s):
    """A flexible version's compact string."""
    b = s.encode()
    return uvarint(len(b) + 1) + b


def call_raw(host, port, api_key, version, body):
    """One flexible-version request (header v2, client id "it") on its own connection: a
    Reader over the response body after the correlation id and header tags."""
    import socket
    import struct
    frame = struct.pack(">hhi", api_key, version, 7) + struct.pack(">h", 2) + b"it" + b"\x00" + body
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        data = b""
        while len(data) < size:
            chunk = s.recv(size - len(data))
            assert chunk, "connection closed mid-response"
            data += chunk
    return Reader(data, 4 + 1)


class Reader:
    """Reads a flexible-version response."""

    def __init__(self, data, at):
        self.data, self.at = data, at

    def take(self, fmt):
        import struct
        v = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return v

    def uvarint(self):
        shift = v = 0
        while True:
            b = self.data[self.at]
            self.at += 1
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7

    def cstr(self):
        n = self.uvarint()
        if n == 0:
            return None
        s = self.data[self.at:self.at + n - 1].decode()
        self.at += n - 1
        return s

    def done(self):
        return self.at == len(self.data)


def alter_raw(bootstrap, topic, partition, replicas):
    """AlterPartitionReassignments v0 by hand (Kafka's tool checks brokers and duplicates
    itself, so the broker's own checks are reached only this way): the partition's
    (error_code, error_message)."""
    import struct
    reps = b"\x00" if replicas is None else (
        uvarint(len(replicas) + 1) + b"".join(struct.pack(">i", r) for r in replicas))
    body = (struct.pack(">i", 30000) + uvarint(2) + cstr(topic) + uvarint(2)
            + struct.pack(">i", partition) + reps + b"\x00" + b"\x00" + b"\x00")
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    r = call_raw(host, port, 45, 0, body)
    r.take(">i")  # throttle
    top = r.take(">h")
    r.cstr()
    assert top == 0, top
    assert r.uvarint() == 2
    assert r.cstr() == topic
    assert r.uvarint() == 2
    r.take(">i")
    code = r.take(">h")
    return code, r.cstr()


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


LOG_DIRS_TOOL = "org.apache.kafka.tools.LogDirsCommand"


def log_dirs_tool(c, topic):
    """kafka-log-dirs.sh --describe (the Java admin's describeLogDirs: DescribeLogDirs with a
    null topic list to every broker): {broker: {log dir: {partition: (size, lag, future)}}}."""
    out = kafka_tool(LOG_DIRS_TOOL, "--bootstrap-server", c.bootstrap, "--describe",
                     "--broker-list", ",".join(str(i) for i in c.nodes), "--topic-list", topic)
    doc = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))
    seen = {}
    for b in doc["brokers"]:
        dirs = seen.setdefault(b["broker"], {})
        for d in b["logDirs"]:
            assert d["error"] is None, d
            dirs[d["logDir"]] = {p["partition"]: (p["size"], p["offsetLag"], p["isFuture"])
                                 for p in d["partitions"]}
    return seen


def describe_log_dirs_raw(node, topics):
    """DescribeLogDirs v4 by hand to one broker (`topics`: [(name, [partitions])] or None for
    all): (top-level error, [(error, log dir, {(topic, partition): (size, lag, future)},
    total bytes, usable bytes)])."""
    import struct
    if topics is None:
        body = b"\x00"
    else:
        body = uvarint(len(topics) + 1) + b"".join(
            cstr(t) + uvarint(len(ps) + 1) + b"".join(struct.pack(">i", p) for p in ps) + b"\x00"
            for t, ps in topics)
    body += b"\x00"
    r = call_raw("127.0.0.1", node.kafka_port, 35, 4, body)
    r.take(">i")  # throttle
    top = r.take(">h")
    results = []
    for _ in range(r.uvarint() - 1):
        error, log_dir, parts = r.take(">h"), r.cstr(), {}
        for _ in range(r.uvarint() - 1):
            name = r.cstr()
            for _ in range(r.uvarint() - 1):
                p, size, lag, future = r.take(">i"), r.take(">q"), r.take(">q"), r.take(">?")
                parts[(name, p)] = (size, lag, future)
                assert r.uvarint() == 0
            assert r.uvarint() == 0
        total, usable = r.take(">q"), r.take(">q")
        assert r.uvarint() == 0
        results.append((error, log_dir, parts, total, usable))
    assert r.uvarint() == 0 and r.done(), (r.at, len(r.data))
    return top, results


def disk_bytes(node, topic, partition):
    """Bytes of the record batches in a replica's segment files (its logical log size)."""
    return sum(12 + len(body) for _, body in read_batches(str(node.data_dir / f"{topic}-{partition}")))


def test_describe_log_dirs_lists_every_replica_with_its_size(cluster):
    c = cluster(controllers=3)
    assignment = [[1, 2], [2, 3], [3, 1]]
    create_assigned(c.admin(), "ld", assignment)
    wait_leaders(c, "ld", 3)
    hosted = {b: {f"ld-{p}" for p, r in enumerate(assignment) if b in r} for b in c.nodes}
    before = log_dirs_tool(c, "ld")
    # One log dir per broker, its absolute path; every replica it holds, nothing else.
    assert {b: list(d) for b, d in before.items()} == {
        b: [str(n.data_dir)] for b, n in c.nodes.items()}, before
    for b, dirs in before.items():
        parts = dirs[str(c.nodes[b].data_dir)]
        assert set(parts) == hosted[b], (b, parts)
        assert all(lag == 0 and not future for _, lag, future in parts.values()), parts

    from confluent_kafka import Producer as P
    p = P({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(600):
        p.produce("ld", value=b"v" * 200, partition=i % 3)
    assert p.flush(30) == 0

    def grown():
        now = log_dirs_tool(c, "ld")
        sizes = {(b, name): now[b][str(n.data_dir)][name][0]
                 for b, n in c.nodes.items() for name in hosted[b]}
        # Each replica's size is the bytes of its segments' record batches, and grew by at
        # least the 200 records of 200 bytes written to its partition.
        ok = all(size == disk_bytes(c.nodes[b], "ld", int(name.split("-")[1]))
                 and size >= before[b][str(c.nodes[b].data_dir)][name][0] + 200 * 200
                 for (b, name), size in sizes.items())
        return ok, sizes

    wait_until("sizes grown", grown, 30, c)

    # The same on the wire at v4, for named partitions: unknown topics and partitions are left
    # out, a partition named twice is described once; the volume's size is statvfs's.
    node = c.nodes[1]
    top, results = describe_log_dirs_raw(node, [("ld", [0, 1, 2, 0, 7, -1]), ("nope", [0])])
    assert top == 0 and len(results) == 1, results
    error, log_dir, parts, total, usable = results[0]
    assert (error, log_dir) == (0, str(node.data_dir)), results
    assert sorted(parts) == [("ld", 0), ("ld", 2)], parts
    st = os.statvfs(node.data_dir)
    assert total == st.f_blocks * st.f_frsize and 0 < usable <= total, (total, usable)
    # A null list: every replica on the broker, __consumer_offsets' too once it exists.
    _, [(_, _, everything, _, _)] = describe_log_dirs_raw(node, None)
    assert {k for k in everything if k[0] == "ld"} == {("ld", 0), ("ld", 2)}, everything
    on_disk = {(m[1], int(m[2])) for m in (re.fullmatch(r"(.+)-(\d+)", d.name)
                                          for d in node.data_dir.iterdir() if d.is_dir())
               if m and m[1] != "__cluster_metadata"}
    assert set(everything) == on_disk, (everything, on_disk)
