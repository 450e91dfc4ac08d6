"""Consumer groups, judged by what real group consumers see.

Fault model and properties:

  * a group of N members over a P-partition topic splits the partitions (each
    member a non-empty share, no partition owned twice); with no failure, the
    members together consume every record exactly once (they commit after every
    poll and on revocation), and the committed offsets end at the log end offsets;
  * a member that dies without leaving (SIGKILL) loses its partitions to the
    survivors within session.timeout.ms plus a margin; nothing is lost
    (at-least-once: its uncommitted tail may be read again);
  * committed offsets and group state survive a broker kill -9;
  * a static member (group.instance.id) that restarts within the session timeout
    gets its partitions back without a rebalance;
  * bad group requests get Kafka's error codes and leave the group working;
  * the admin APIs (ListGroups, DescribeGroups, DeleteGroups, OffsetDelete) agree.

The members are real clients in helper processes that print one event per line
(tests/clients_groups/: GroupConsumer.java, py_group.py, go/main.go; built here and
cached under tests/.deps/). Raw frames use test_bad_input.py's wire helpers.

This module runs its own broker with `group.initial.rebalance.delay.ms=0` (Spool:
`--set`, Kafka: server.properties), so a group's first rebalance does not wait 3 s.
"""
import collections
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             ConsumerGroupType, KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, OffsetSpec

from conftest import DEPS, JAVA_JAR, TESTS, running_broker
from test_bad_input import (NONE, UNKNOWN_TOPIC_OR_PARTITION, Reader, array, call, connect,
                            recv_frame, request,
                            create_topic, i8, i16, i32, i64, nbytes, string)
from test_offsets import TunedBroker

WAIT_S = 60          # bound of every "until the group converges / everything is consumed" wait
SRC = TESTS / "clients_groups"

# Kafka error codes used here.
OFFSET_METADATA_TOO_LARGE = 12
COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR = 14, 15, 16
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
GROUP_SUBSCRIBED_TO_TOPIC = 86

# API keys.
OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR, JOIN_GROUP = 8, 9, 10, 11
HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, OFFSET_DELETE = 12, 13, 14, 47


# ---------------------------------------------------------------------------
# A broker with group.initial.rebalance.delay.ms=0
# ---------------------------------------------------------------------------
class GroupBroker(TunedBroker):
    settings = {"group.initial.rebalance.delay.ms": "0"}


@pytest.fixture(scope="module")
def gbroker():
    yield from running_broker(GroupBroker, "groups")


# ---------------------------------------------------------------------------
# Group member helper programs
# ---------------------------------------------------------------------------
JAVA_OUT = DEPS / "clients_groups"
GO_BIN = DEPS / "bin" / "spool-group-go"


def java_cmd():
    if not JAVA_JAR.exists():
        pytest.fail(f"{JAVA_JAR} missing: run deploy/install-test-deps.sh", pytrace=False)
    src = SRC / "GroupConsumer.java"
    cls = JAVA_OUT / "GroupConsumer.class"
    if not cls.exists() or cls.stat().st_mtime < src.stat().st_mtime:
        JAVA_OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["javac", "-d", str(JAVA_OUT), "-cp", str(JAVA_JAR), str(src)],
                       check=True, capture_output=True, timeout=120)
    return ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-Xmx256m",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp", f"{JAVA_JAR}:{JAVA_OUT}", "GroupConsumer"]


def go_cmd():
    srcs = [SRC / "go" / n for n in ("main.go", "go.mod", "go.sum")]
    if not GO_BIN.exists() or GO_BIN.stat().st_mtime < max(s.stat().st_mtime for s in srcs):
        GO_BIN.parent.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["go", "build", "-o", f"{GO_BIN}.tmp", "."], cwd=SRC / "go",
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"go build failed:\n{out.stderr}"
        os.replace(f"{GO_BIN}.tmp", GO_BIN)
    return [str(GO_BIN)]


def py_cmd(client):
    return [sys.executable, str(SRC / "py_group.py"), "--client", client]


def member_cmd(client, bootstrap, topic, group, members=1, name=None, props=None, extra=()):
    """argv for `members` group members of one client in one helper process."""
    if client == "java":
        base = java_cmd()
    elif client in ("confluent", "kafka-python"):
        base = py_cmd(client)
    elif client == "franz-go":
        base = go_cmd()
    else:
        raise ValueError(client)
    cmd = base + ["--bootstrap", bootstrap, "--topic", topic, "--group", group,
                  "--members", str(members), "--name", name or client]
    for k, v in (props or {}).items():
        cmd += ["--prop", f"{k}={v}"]
    return cmd + list(extra)


class Members:
    """One helper process and what its members reported (parsed by a reader thread)."""

    def __init__(self, cmd):
        self.cmd = cmd
        self.lock = threading.Lock()
        self.recs = []            # (member, partition, offset, value)
        self.own = {}             # member -> frozenset(partitions), latest report
        self.gen = {}             # member -> latest generation (Java, franz-go)
        self.events = []          # (monotonic time, member, kind, payload)
        self.closed = set()
        self.errors = []
        self.stderr = collections.deque(maxlen=80)
        self.killed = False
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            parts = line.split()
            if not parts:
                continue
            now = time.monotonic()
            with self.lock:
                kind = parts[0]
                if kind == "rec" and len(parts) >= 5:
                    self.recs.append((parts[1], int(parts[2]), int(parts[3]), parts[4]))
                elif kind == "own":
                    ps = frozenset() if parts[3] == "-" else frozenset(int(p) for p in parts[3].split(","))
                    self.own[parts[1]] = ps
                    self.gen[parts[1]] = int(parts[2])
                    self.events.append((now, parts[1], "own", (int(parts[2]), ps)))
                elif kind == "gen":
                    self.gen[parts[1]] = int(parts[2])
                    self.events.append((now, parts[1], "gen", int(parts[2])))
                elif kind == "closed":
                    self.closed.add(parts[1])
                elif kind == "error":
                    self.errors.append(line.strip())

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    def live_own(self):
        """member -> partitions, for members still running."""
        if self.killed:
            return {}
        with self.lock:
            return {m: ps for m, ps in self.own.items() if m not in self.closed}

    def diag(self):
        with self.lock:
            return (f"{self.cmd[-12:]}: own={ {m: sorted(p) for m, p in self.own.items()} } "
                    f"recs={len(self.recs)} errors={self.errors[-5:]} rc={self.proc.poll()}\n"
                    + "\n".join(list(self.stderr)[-15:]))

    def stop(self, timeout=60):
        """Ask every member to commit and leave; bounded wait for a clean exit."""
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"members did not stop within {timeout}s: {self.diag()}")
        for t in self._threads:
            t.join(timeout=10)
        assert rc == 0, f"helper exited {rc}: {self.diag()}"

    def kill(self):
        """SIGKILL this helper process (by its PID): its members never leave."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.killed = True


@pytest.fixture
def spawn():
    """spawn(cmd) -> Members; every helper still running at teardown is killed (by PID)."""
    started = []

    def make(cmd):
        m = Members(cmd)
        started.append(m)
        return m

    yield make
    for m in started:
        if m.proc.poll() is None:
            m.kill()


def wait_until(pred, what, groups, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        if all(g.proc.poll() is not None for g in groups):
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out ({timeout}s) waiting for {what}\n"
                         + "\n".join(g.diag() for g in groups))


def owned(groups):
    out = {}
    for g in groups:
        out.update(g.live_own())
    return out


def balanced(groups, n_members, partitions):
    """n_members live members, each owning a non-empty, disjoint share of all partitions."""
    own = owned(groups)
    sets = [ps for ps in own.values() if ps]
    return (len(own) == n_members and len(sets) == n_members
            and sum(len(s) for s in sets) == partitions
            and frozenset().union(*sets) == frozenset(range(partitions)))


def records(groups):
    out = []
    for g in groups:
        with g.lock:
            out += g.recs
    return out


def distinct_values(groups):
    return {r[3] for r in records(groups)}


# ---------------------------------------------------------------------------
# Data and offsets
# ---------------------------------------------------------------------------
def value_of(i):
    return f"id-{i:06d}"


def produce(bootstrap, topic, ids, partitions):
    """Record i goes to partition i % partitions with value id-<i>; acks=all."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True, "message.timeout.ms": 30000})
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(err)

    for n, i in enumerate(ids):
        p.produce(topic, value=value_of(i).encode(), partition=i % partitions, on_delivery=cb)
        if n % 500 == 499:
            p.poll(0)
    assert p.flush(60) == 0, "produce did not finish in 60 s"
    assert not errors, errors[:5]


def log_end_offsets(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    req = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
    res = admin.list_offsets(req, request_timeout=15)
    return {tp.partition: f.result(timeout=30).offset for tp, f in res.items()}


def committed_offsets(bootstrap, group, topic, partitions):
    """partition -> (offset, metadata bytes) by a raw OffsetFetch v5; offset -1: none.
    (Raw: franz-go's KIP-848 members commit binary metadata, which confluent-kafka's
    AdminClient fails to decode.)"""
    err, topics = offset_fetch(bootstrap, group, {topic: list(range(partitions))})
    assert err == NONE, f"OffsetFetch {group}: error {err}"
    got = topics.get(topic, {})
    assert sorted(got) == list(range(partitions)), got
    for p, (_o, _md, perr) in got.items():
        assert perr == NONE, f"OffsetFetch {group} {topic}/{p}: error {perr}"
    return {p: (o, md) for p, (o, md, _e) in got.items()}


def assert_exactly_once(groups, n_ids, n_members):
    recs = records(groups)
    by_value = collections.Counter(r[3] for r in recs)
    want = {value_of(i) for i in range(n_ids)}
    missing = sorted(want - set(by_value))
    dups = sorted(v for v, c in by_value.items() if c > 1)
    extra = sorted(set(by_value) - want)
    assert not missing and not dups and not extra, \
        f"{len(missing)} missing (e.g. {missing[:5]}), {len(dups)} consumed twice " \
        f"(e.g. {dups[:5]}), {len(extra)} unexpected (e.g. {extra[:5]})"
    per_member = collections.Counter(r[0] for r in recs)
    assert len(per_member) == n_members and all(per_member.values()), \
        f"records per member {dict(per_member)}, expected {n_members} non-empty shares"
    return per_member


def run_group(broker, spawn, topic, partitions, cmds, n_members, n_ids, group, kip848=False):
    """Half the records before the members start, the rest once every member owns a
    share (so each member sees some). With kip848, ListGroups must show the group as a
    'consumer' (KIP-848) group: a client that fell back to the classic protocol fails.
    Bounded waits; returns the Members."""
    create_topic(broker.bootstrap, topic, partitions=partitions)
    half = n_ids // 2
    produce(broker.bootstrap, topic, range(half), partitions)
    t0 = time.monotonic()
    groups = [spawn(c) for c in cmds]
    t_bal = wait_until(lambda: balanced(groups, n_members, partitions),
                       f"{n_members} members to share {partitions} partitions", groups)
    listing = list_groups(broker.bootstrap).get(group)
    assert listing is not None and listing.state == ConsumerGroupState.STABLE, listing
    if kip848:
        assert listing.type == ConsumerGroupType.CONSUMER, \
            f"group type {listing.type}: the members did not use the KIP-848 protocol"
    else:
        assert listing.type in (ConsumerGroupType.CLASSIC, ConsumerGroupType.UNKNOWN), listing.type
    produce(broker.bootstrap, topic, range(half, n_ids), partitions)
    t_all = wait_until(lambda: len(distinct_values(groups)) >= n_ids,
                       f"all {n_ids} records consumed", groups)
    for g in groups:
        g.stop()
    for g in groups:
        assert not g.errors, g.errors[:5]
    print(f"\n{topic}: balanced after {t_bal - t0:.1f}s, all consumed after {t_all - t0:.1f}s; "
          f"shares {dict(collections.Counter(r[0] for r in records(groups)))}")
    return groups


def assert_partition_of_value(groups, partitions):
    for m, p, o, v in records(groups):
        assert int(v[3:]) % partitions == p, f"{m}: {v} read from partition {p} offset {o}"


def assert_committed_at_end(broker, group, topic, partitions):
    ends = log_end_offsets(broker.bootstrap, topic, partitions)
    committed = {p: o for p, (o, _md) in committed_offsets(broker.bootstrap, group, topic,
                                                           partitions).items()}
    assert committed == ends, f"committed {committed} != log end offsets {ends}"


# ---------------------------------------------------------------------------
# 1. Java consumers with every assignor, and KIP-848
# ---------------------------------------------------------------------------
JAVA_VARIANTS = {
    "range": {"partition.assignment.strategy": "org.apache.kafka.clients.consumer.RangeAssignor"},
    "roundrobin": {"partition.assignment.strategy":
                   "org.apache.kafka.clients.consumer.RoundRobinAssignor"},
    "sticky": {"partition.assignment.strategy": "org.apache.kafka.clients.consumer.StickyAssignor"},
    "cooperative-sticky": {"partition.assignment.strategy":
                           "org.apache.kafka.clients.consumer.CooperativeStickyAssignor"},
    "kip848": {"group.protocol": "consumer"},
}


@pytest.mark.parametrize("variant", list(JAVA_VARIANTS))
def test_java_group_assignors(gbroker, spawn, variant):
    """3 Java consumers (one JVM, one thread each) in one group over 12 partitions,
    3000 records: every record exactly once, each member a share, committed = log end."""
    topic, group, partitions, n = f"groups-java-{variant}", f"g-java-{variant}", 12, 3000
    props = dict(JAVA_VARIANTS[variant])
    if "group.protocol" not in props:
        props["heartbeat.interval.ms"] = "1000"
    cmd = member_cmd("java", gbroker.bootstrap, topic, group, members=3, props=props)
    groups = run_group(gbroker, spawn, topic, partitions, [cmd], 3, n, group,
                       kip848="group.protocol" in props)
    assert_exactly_once(groups, n, 3)
    assert_partition_of_value(groups, partitions)
    assert_committed_at_end(gbroker, group, topic, partitions)


# ---------------------------------------------------------------------------
# 2. confluent-kafka, kafka-python and franz-go groups
# ---------------------------------------------------------------------------
CLIENT_VARIANTS = {
    "confluent": ("confluent", {}, ()),
    "confluent-kip848": ("confluent", {"group.protocol": "consumer"}, ()),
    "kafka-python": ("kafka-python", {}, ()),
    "franz-go": ("franz-go", {}, ()),
    "franz-go-kip848": ("franz-go", {}, ("--server-side",)),
}


@pytest.mark.parametrize("variant", list(CLIENT_VARIANTS))
def test_client_groups(gbroker, spawn, variant):
    """2 members (one in each of two processes) over 6 partitions, 1200 records:
    every record exactly once, each member a share, committed = log end."""
    client, props, extra = CLIENT_VARIANTS[variant]
    topic, group, partitions, n = f"groups-{variant}", f"g-{variant}", 6, 1200
    cmds = [member_cmd(client, gbroker.bootstrap, topic, group, name=f"{variant}-{i}",
                       props=props, extra=extra) for i in range(2)]
    groups = run_group(gbroker, spawn, topic, partitions, cmds, 2, n, group,
                       kip848=variant.endswith("kip848"))
    assert_exactly_once(groups, n, 2)
    assert_partition_of_value(groups, partitions)
    assert_committed_at_end(gbroker, group, topic, partitions)


# ---------------------------------------------------------------------------
# 3. A member killed without leaving
# ---------------------------------------------------------------------------
KILL_SESSION_MS = 6000


def test_killed_member_partitions_move_to_survivors(gbroker, spawn):
    """3 Java members (separate JVMs, cooperative-sticky, session.timeout.ms=6000) over
    12 partitions; one is SIGKILLed. Its partitions go to the two survivors within the
    session timeout + 10 s, and every record is consumed at least once."""
    topic, group, partitions = "groups-kill", "g-kill", 12
    create_topic(gbroker.bootstrap, topic, partitions=partitions)
    produce(gbroker.bootstrap, topic, range(1200), partitions)
    props = {"session.timeout.ms": str(KILL_SESSION_MS), "heartbeat.interval.ms": "1000",
             "partition.assignment.strategy":
             "org.apache.kafka.clients.consumer.CooperativeStickyAssignor"}
    groups = [spawn(member_cmd("java", gbroker.bootstrap, topic, group, name=f"kill-{i}",
                               props=props)) for i in range(3)]
    wait_until(lambda: balanced(groups, 3, partitions), "3 members to share 12 partitions", groups)
    wait_until(lambda: len(distinct_values(groups)) >= 1200, "the first 1200 records", groups)
    victim, survivors = groups[1], [groups[0], groups[2]]
    victim_parts = sorted(victim.live_own()["kill-1"])

    t_kill = time.monotonic()
    victim.kill()
    produce(gbroker.bootstrap, topic, range(1200, 2400), partitions)
    t_moved = wait_until(lambda: balanced(survivors, 2, partitions),
                         "the survivors to own all 12 partitions", groups,
                         timeout=KILL_SESSION_MS / 1000 + 20)
    moved_s = t_moved - t_kill
    print(f"\nkilled member (partitions {victim_parts}): survivors own all {partitions} "
          f"partitions {moved_s:.2f}s after SIGKILL (session.timeout.ms={KILL_SESSION_MS})")
    assert moved_s <= KILL_SESSION_MS / 1000 + 10, \
        f"partitions moved {moved_s:.1f}s after the kill (session timeout {KILL_SESSION_MS} ms)"
    wait_until(lambda: len(distinct_values(groups)) >= 2400, "all 2400 records", groups)
    for g in survivors:
        g.stop()
        assert not g.errors, g.errors[:5]
    seen = distinct_values(groups)
    assert seen == {value_of(i) for i in range(2400)}, \
        f"{2400 - len(seen & {value_of(i) for i in range(2400)})} records never consumed"
    assert_partition_of_value(groups, partitions)
    # The survivors read every partition of the victim's, from its committed offset on.
    survivor_parts = {p for g in survivors for (_m, p, _o, _v) in g.recs}
    assert set(victim_parts) <= survivor_parts, (victim_parts, sorted(survivor_parts))
    assert_committed_at_end(gbroker, group, topic, partitions)


# ---------------------------------------------------------------------------
# 4. Committed offsets and group state across a broker kill -9
# ---------------------------------------------------------------------------
def consume_n(c, n, timeout=30, linger=0.0):
    """Poll until n records (then `linger` more seconds for any extra). Bounded."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None:
            assert m.error() is None, m.error()
            got.append((m.partition(), m.offset(), m.value().decode()))
    end = time.monotonic() + linger
    while time.monotonic() < end:
        m = c.poll(0.2)
        if m is not None:
            assert m.error() is None, m.error()
            got.append((m.partition(), m.offset(), m.value().decode()))
    return got


def list_groups(bootstrap, states=None):
    """{group_id: listing} through the AdminClient (ListGroups, with a state filter)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    kw = {"states": set(states)} if states else {}
    res = admin.list_consumer_groups(request_timeout=15, **kw).result(timeout=30)
    assert not res.errors, res.errors
    return {g.group_id: g for g in res.valid}


def describe_group(bootstrap, group):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)


def retry(fn, what, timeout=30):
    """fn() until it returns a true value or raises no exception (a loading coordinator
    answers COORDINATOR_LOAD_IN_PROGRESS for a moment after a restart). Bounded."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
            last = v
        except (KafkaException, AssertionError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{what}: last result {last!r}")


def test_offsets_and_group_survive_broker_kill9(gbroker):
    """A confluent-kafka member commits 200 of 300 records per partition (with metadata)
    and leaves; the broker is kill -9'd and restarted. The group is still listed and
    described, the committed offsets and metadata are unchanged, and a new member
    resumes exactly at them: it reads the uncommitted tail, nothing before it."""
    topic, group, partitions = "groups-kill9", "g-kill9", 4
    b = gbroker.bootstrap
    create_topic(b, topic, partitions=partitions)
    produce(b, topic, range(800), partitions)
    conf = {"bootstrap.servers": b, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}
    c1 = Consumer(conf)
    try:
        c1.subscribe([topic])
        first = consume_n(c1, 800)
        assert len(first) == 800
        commits = [TopicPartition(topic, p, 200, f"meta-{p}") for p in range(partitions)]
        c1.commit(offsets=commits, asynchronous=False)
        produce(b, topic, range(800, 1200), partitions)
        tail = consume_n(c1, 400)  # read, never committed
        assert len(tail) == 400
    finally:
        c1.close()
    want = committed_offsets(b, group, topic, partitions)
    # (confluent-kafka sends the metadata string with its terminating NUL byte)
    assert {p: (o, md.rstrip(b"\0")) for p, (o, md) in want.items()} == \
        {p: (200, f"meta-{p}".encode()) for p in range(partitions)}, want

    gbroker.kill9()
    gbroker.restart()

    listed = retry(lambda: list_groups(b).get(group), f"{group} listed after the restart")
    assert listed.state == ConsumerGroupState.EMPTY, listed.state
    desc = retry(lambda: describe_group(b, group), f"{group} described after the restart")
    assert desc.state == ConsumerGroupState.EMPTY and not desc.members, (desc.state, desc.members)
    assert retry(lambda: committed_offsets(b, group, topic, partitions) == want,
                 "committed offsets after the restart")

    c2 = Consumer(conf)
    try:
        c2.subscribe([topic])
        again = consume_n(c2, 400, linger=2.0)
    finally:
        c2.close()
    values = collections.Counter(v for _p, _o, v in again)
    assert set(values) == {value_of(i) for i in range(800, 1200)} and max(values.values()) == 1, \
        f"after the restart read {len(again)} records, {len(values)} distinct; " \
        f"first offsets {sorted({(p, min(o for q, o, _ in again if q == p)) for p, _, _ in again})}"
    for p in range(partitions):
        offs = sorted(o for q, o, _ in again if q == p)
        assert offs == list(range(200, 300)), f"partition {p}: read offsets {offs[:3]}..{offs[-3:]}"


# ---------------------------------------------------------------------------
# 5. Static membership
# ---------------------------------------------------------------------------
STATIC_SESSION_MS = 8000


def test_static_member_restart_does_not_rebalance(gbroker, spawn):
    """Two Java members with group.instance.id (range, session.timeout.ms=8000). One is
    SIGKILLed and restarted at once with the same instance id: it gets the same
    partitions at the same generation, and the other member sees no rebalance (no
    callback, same generation) until well past the session timeout."""
    topic, group, partitions = "groups-static", "g-static", 12
    b = gbroker.bootstrap
    create_topic(b, topic, partitions=partitions)
    produce(b, topic, range(600), partitions)
    props = {"session.timeout.ms": str(STATIC_SESSION_MS), "heartbeat.interval.ms": "1000",
             "partition.assignment.strategy": "org.apache.kafka.clients.consumer.RangeAssignor"}

    def start(name, inst):
        return spawn(member_cmd("java", b, topic, group, name=name, props=props,
                                extra=["--instance-id", inst]))

    a, bm = start("static-a", "inst-a"), start("static-b", "inst-b")
    wait_until(lambda: balanced([a, bm], 2, partitions), "2 static members to share 12 partitions",
               [a, bm])
    wait_until(lambda: len(distinct_values([a, bm])) >= 600, "the first 600 records", [a, bm])
    time.sleep(1.0)  # let any trailing rebalance settle before taking the baseline
    with a.lock, bm.lock:
        a_parts, a_gen = a.own["static-a"], a.gen["static-a"]
        b_parts, b_gen = bm.own["static-b"], bm.gen["static-b"]
        b_events = len(bm.events)
    assert a_gen == b_gen and a_gen > 0, (a_gen, b_gen)

    t_kill = time.monotonic()
    a.kill()
    a2 = start("static-a2", "inst-a")
    t_back = wait_until(lambda: a2.live_own().get("static-a2"), "the restarted static member's "
                        "assignment", [a2, bm], timeout=STATIC_SESSION_MS / 1000)
    with a2.lock:
        a2_parts, a2_gen = a2.own["static-a2"], a2.gen["static-a2"]
    print(f"\nstatic member back with partitions {sorted(a2_parts)} at generation {a2_gen} "
          f"{t_back - t_kill:.2f}s after SIGKILL")
    assert a2_parts == a_parts, f"restarted member got {sorted(a2_parts)}, had {sorted(a_parts)}"
    assert a2_gen == a_gen, f"generation {a_gen} -> {a2_gen}: the group rebalanced"
    d = describe_group(b, group)
    assert d.state == ConsumerGroupState.STABLE, d.state
    members = {m.group_instance_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
               for m in d.members}
    assert members == {"inst-a": sorted(a_parts), "inst-b": sorted(b_parts)}, members
    produce(b, topic, range(600, 1200), partitions)
    # Past the old member's session timeout: still no rebalance.
    time.sleep(max(0.0, t_kill + STATIC_SESSION_MS / 1000 + 3 - time.monotonic()))
    wait_until(lambda: len(distinct_values([a, a2, bm])) >= 1200, "all 1200 records", [a2, bm])
    with bm.lock:
        later = bm.events[b_events:]
        assert not later and bm.own["static-b"] == b_parts and bm.gen["static-b"] == b_gen, \
            f"the other member saw a rebalance: {later}"
    with a2.lock:
        assert a2.own["static-a2"] == a_parts and a2.gen["static-a2"] == a_gen, a2.events
        assert {p for _m, p, _o, _v in a2.recs} <= a_parts
    for g in (a2, bm):
        g.stop()
        assert not g.errors, g.errors[:5]
    assert distinct_values([a, a2, bm]) == {value_of(i) for i in range(1200)}


# ---------------------------------------------------------------------------
# Raw group protocol (non-flexible versions, hand-encoded)
# ---------------------------------------------------------------------------
RETRIABLE_COORDINATOR = (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR)


def nullable_bytes16(r):
    """A nullable STRING read as bytes (commit metadata need not be UTF-8)."""
    n = r.i16()
    return None if n < 0 else r.take(n)


def find_coordinator(sock, group):
    """FindCoordinator v2. Returns (error, node_id, host, port)."""
    r = call(sock, FIND_COORDINATOR, 2, string(group) + i8(0))
    r.i32()
    err = r.i16()
    r.string()
    return err, r.i32(), r.string(), r.i32()


def wait_coordinator(broker, sock, group, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        err, node, host, port = find_coordinator(sock, group)
        if err == NONE or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert err == NONE and (host, port) == (broker.host, broker.port), (err, node, host, port)


def subscription(topics):
    return i16(0) + array([string(t) for t in topics]) + nbytes(None)


def assignment(topic, parts):
    return i16(0) + array([string(topic) + array([i32(p) for p in parts])]) + nbytes(None)


def join_group(sock, group, member_id, topics, version=5, instance_id=None, session_ms=30000):
    """JoinGroup v4/v5 with one 'range' protocol. Returns a dict of the response."""
    body = string(group) + i32(session_ms) + i32(30000) + string(member_id)
    if version >= 5:
        body += string(instance_id)
    body += string("consumer") + array([string("range") + nbytes(subscription(topics))])
    r = call(sock, JOIN_GROUP, version, body)
    r.i32()
    res = {"error": r.i16(), "generation": r.i32(), "protocol": r.string(), "leader": r.string(),
           "member_id": r.string()}
    res["members"] = r.array(lambda r: (r.string(), r.string() if version >= 5 else None, r.bytes_()))
    assert r.done()
    return res


def sync_group(sock, group, generation, member_id, assignments):
    """SyncGroup v3. assignments: {member_id: bytes}. Returns (error, assignment bytes)."""
    body = (string(group) + i32(generation) + string(member_id) + string(None)
            + array([string(m) + nbytes(a) for m, a in assignments.items()]))
    r = call(sock, SYNC_GROUP, 3, body)
    r.i32()
    return r.i16(), r.bytes_()


def heartbeat(sock, group, generation, member_id):
    """Heartbeat v3. Returns the error code."""
    r = call(sock, HEARTBEAT, 3, string(group) + i32(generation) + string(member_id) + string(None))
    r.i32()
    return r.i16()


def leave_group(sock, group, member_id):
    """LeaveGroup v3. Returns (error, [(member_id, instance_id, error)])."""
    r = call(sock, LEAVE_GROUP, 3, string(group) + array([string(member_id) + string(None)]))
    r.i32()
    return r.i16(), r.array(lambda r: (r.string(), r.string(), r.i16()))


def offset_commit(sock, group, generation, member_id, offsets):
    """OffsetCommit v7. offsets: {topic: [(partition, offset, metadata)]}.
    Returns {topic: {partition: error}}."""
    body = (string(group) + i32(generation) + string(member_id) + string(None)
            + array([string(t) + array([i32(p) + i64(o) + i32(-1) + string(md)
                                        for p, o, md in parts])
                     for t, parts in offsets.items()]))
    r = call(sock, OFFSET_COMMIT, 7, body)
    r.i32()
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    return {t: dict(parts) for t, parts in topics}


def offset_fetch(bootstrap, group, topics, timeout=30):
    """OffsetFetch v5 on a fresh connection, retried while the coordinator loads.
    Returns (error, {topic: {partition: (offset, metadata bytes, error)}})."""
    body = string(group) + array([string(t) + array([i32(p) for p in ps])
                                  for t, ps in topics.items()])
    deadline = time.monotonic() + timeout
    while True:
        with connect(bootstrap) as s:
            r = call(s, OFFSET_FETCH, 5, body)
        r.i32()
        got = r.array(lambda r: (r.string(), r.array(lambda r: (
            r.i32(), r.i64(), r.i32(), nullable_bytes16(r), r.i16()))))
        err = r.i16()
        if err not in RETRIABLE_COORDINATOR or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return err, {t: {p: (o, md, e) for p, o, _ep, md, e in parts} for t, parts in got}


def offset_delete(sock, group, topics):
    """OffsetDelete v0. topics: {topic: [partition]}. Returns (error, {topic: {p: error}})."""
    body = string(group) + array([string(t) + array([i32(p) for p in ps])
                                  for t, ps in topics.items()])
    r = call(sock, OFFSET_DELETE, 0, body)
    err = r.i16()
    r.i32()
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16()))))
    return err, {t: dict(parts) for t, parts in topics}


class RawMember:
    """A well-behaved group member spoken over one raw connection."""

    def __init__(self, broker, group, topic, partitions):
        self.broker, self.group, self.topic, self.partitions = broker, group, topic, partitions
        self.sock = connect(broker.bootstrap)
        wait_coordinator(broker, self.sock, group)
        res = self._join("")
        assert res["error"] == MEMBER_ID_REQUIRED and res["member_id"], res
        self.member_id = res["member_id"]
        res = self._join(self.member_id)
        assert res["error"] == NONE, res
        assert res["member_id"] == self.member_id and res["leader"] == self.member_id, res
        assert res["protocol"] == "range" and res["generation"] >= 1, res
        assert [m for m, _i, _md in res["members"]] == [self.member_id], res["members"]
        self.generation = res["generation"]
        err, assigned = sync_group(self.sock, group, self.generation, self.member_id,
                                   {self.member_id: assignment(topic, range(partitions))})
        assert err == NONE and assigned == assignment(topic, range(partitions)), (err, assigned)
        self.next_offset = 1

    def _join(self, member_id):
        deadline = time.monotonic() + 30
        while True:
            res = join_group(self.sock, self.group, member_id, [self.topic])
            if res["error"] not in RETRIABLE_COORDINATOR or time.monotonic() > deadline:
                return res
            time.sleep(0.2)

    def assert_works(self):
        """Heartbeat succeeds at the current generation, and a commit sticks."""
        assert heartbeat(self.sock, self.group, self.generation, self.member_id) == NONE
        off = self.next_offset
        self.next_offset += 1
        res = offset_commit(self.sock, self.group, self.generation, self.member_id,
                            {self.topic: [(0, off, "ok")]})
        assert res == {self.topic: {0: NONE}}, res
        err, got = offset_fetch(self.broker.bootstrap, self.group, {self.topic: [0]})
        assert err == NONE and got[self.topic][0] == (off, b"ok", NONE), (err, got)

    def leave(self):
        err, members = leave_group(self.sock, self.group, self.member_id)
        assert err == NONE and [(m, e) for m, _i, e in members] == [(self.member_id, NONE)], \
            (err, members)
        self.sock.close()


RAW_TOPIC, RAW_PARTITIONS = "groups-raw", 2


@pytest.fixture
def raw_member(gbroker, request):
    """A fresh group with one raw member (joined with MEMBER_ID_REQUIRED, synced)
    owning both partitions of RAW_TOPIC (20 records in each)."""
    md = gbroker.bootstrap
    if RAW_TOPIC not in AdminClient({"bootstrap.servers": md}).list_topics(timeout=10).topics:
        create_topic(md, RAW_TOPIC, partitions=RAW_PARTITIONS)
        produce(md, RAW_TOPIC, range(40), RAW_PARTITIONS)
    m = RawMember(gbroker, f"g-raw-{request.node.name}-{uuid.uuid4().hex[:6]}", RAW_TOPIC,
                  RAW_PARTITIONS)
    m.assert_works()
    yield m
    m.leave()


# ---------------------------------------------------------------------------
# 6. Bad group requests
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", [4, 5])
def test_join_without_member_id_requires_one(gbroker, raw_member, version):
    """JoinGroup v4+ with an empty member id: MEMBER_ID_REQUIRED (79) and a member id;
    the pending member does not disturb the existing one."""
    with connect(gbroker.bootstrap) as s:
        res = join_group(s, raw_member.group, "", [RAW_TOPIC], version=version)
    assert res["error"] == MEMBER_ID_REQUIRED, res
    assert res["member_id"] and res["member_id"] != raw_member.member_id, res
    assert res["members"] == [], res
    raw_member.assert_works()


def test_join_with_unknown_member_id(gbroker, raw_member):
    """JoinGroup naming a member id the group never gave out: UNKNOWN_MEMBER_ID (25),
    for an existing group and for one that does not exist."""
    with connect(gbroker.bootstrap) as s:
        res = join_group(s, raw_member.group, "no-such-member", [RAW_TOPIC])
        assert res["error"] == UNKNOWN_MEMBER_ID, res
        res = join_group(s, f"g-raw-absent-{uuid.uuid4().hex[:6]}", "no-such-member", [RAW_TOPIC])
        assert res["error"] == UNKNOWN_MEMBER_ID, res
    assert heartbeat(raw_member.sock, raw_member.group, raw_member.generation,
                     "no-such-member") == UNKNOWN_MEMBER_ID
    raw_member.assert_works()


def test_stale_generation(gbroker, raw_member):
    """Heartbeat, SyncGroup and OffsetCommit at a generation other than the group's:
    ILLEGAL_GENERATION (22)."""
    m = raw_member
    for gen in (m.generation - 1, m.generation + 1):
        assert heartbeat(m.sock, m.group, gen, m.member_id) == ILLEGAL_GENERATION, gen
    err, _ = sync_group(m.sock, m.group, m.generation + 1, m.member_id, {})
    assert err == ILLEGAL_GENERATION, err
    res = offset_commit(m.sock, m.group, m.generation + 1, m.member_id, {RAW_TOPIC: [(0, 5, "")]})
    assert res == {RAW_TOPIC: {0: ILLEGAL_GENERATION}}, res
    m.assert_works()


def test_offset_commit_unknown_topic_or_partition(gbroker, raw_member):
    """OffsetCommit for a topic that does not exist, or a partition past the topic's
    count: UNKNOWN_TOPIC_OR_PARTITION (3) for those, success for the valid one."""
    m = raw_member
    res = offset_commit(m.sock, m.group, m.generation, m.member_id,
                        {"groups-no-such-topic": [(0, 1, "")],
                         RAW_TOPIC: [(1, 7, "seven"), (99, 1, "")]})
    assert res == {"groups-no-such-topic": {0: UNKNOWN_TOPIC_OR_PARTITION},
                   RAW_TOPIC: {1: NONE, 99: UNKNOWN_TOPIC_OR_PARTITION}}, res
    err, got = offset_fetch(gbroker.bootstrap, m.group, {RAW_TOPIC: [1]})
    assert err == NONE and got[RAW_TOPIC][1] == (7, b"seven", NONE), (err, got)
    m.assert_works()


def test_offset_metadata_too_large(gbroker, raw_member):
    """Commit metadata over offset.metadata.max.bytes (4096): OFFSET_METADATA_TOO_LARGE
    (12), nothing stored; exactly 4096 bytes is accepted."""
    m = raw_member
    res = offset_commit(m.sock, m.group, m.generation, m.member_id, {RAW_TOPIC: [(1, 3, "m" * 4096)]})
    assert res == {RAW_TOPIC: {1: NONE}}, res
    res = offset_commit(m.sock, m.group, m.generation, m.member_id, {RAW_TOPIC: [(1, 9, "x" * 4097)]})
    assert res == {RAW_TOPIC: {1: OFFSET_METADATA_TOO_LARGE}}, res
    err, got = offset_fetch(gbroker.bootstrap, m.group, {RAW_TOPIC: [1]})
    assert err == NONE and got[RAW_TOPIC][1] == (3, b"m" * 4096, NONE), (err, got[RAW_TOPIC][1][:1])
    m.assert_works()


# ---------------------------------------------------------------------------
# 7. Admin: ListGroups, DescribeGroups, DeleteGroups, OffsetDelete
# ---------------------------------------------------------------------------
def delete_group_error(bootstrap, group):
    """DeleteGroups through the AdminClient; returns the Kafka error code (0: deleted)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
        return NONE
    except KafkaException as e:
        return e.args[0].code()


def test_admin_list_describe_delete(gbroker):
    """An active group (one confluent-kafka member, roundrobin) and an empty one (offsets
    committed through the admin API): ListGroups filters by state, DescribeGroups shows
    member, assignment and assignor, DeleteGroups refuses the active group
    (NON_EMPTY_GROUP) and deletes it once its member left; OffsetDelete refuses a
    subscribed topic (GROUP_SUBSCRIBED_TO_TOPIC) and deletes from the empty group."""
    b = gbroker.bootstrap
    topic, partitions = "groups-admin", 3
    active, empty = f"g-admin-active-{uuid.uuid4().hex[:6]}", f"g-admin-empty-{uuid.uuid4().hex[:6]}"
    create_topic(b, topic, partitions=partitions)
    produce(b, topic, range(30), partitions)
    admin = AdminClient({"bootstrap.servers": b})
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        empty, [TopicPartition(topic, p, 10) for p in range(partitions)])])[empty].result(timeout=30)

    c = Consumer({"bootstrap.servers": b, "group.id": active, "client.id": "admin-member",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "partition.assignment.strategy": "roundrobin"})
    closed = False
    try:
        c.subscribe([topic])
        got = consume_n(c, 30)
        assert len(got) == 30
        assert len(c.assignment()) == partitions
        c.commit(offsets=[TopicPartition(topic, p, 4) for p in range(partitions)],
                 asynchronous=False)

        stable = list_groups(b, [ConsumerGroupState.STABLE])
        empties = list_groups(b, [ConsumerGroupState.EMPTY])
        everything = list_groups(b)
        assert active in stable and active not in empties, (sorted(stable), sorted(empties))
        assert empty in empties and empty not in stable, (sorted(stable), sorted(empties))
        assert {active, empty} <= set(everything)
        assert stable[active].state == ConsumerGroupState.STABLE
        assert not stable[active].is_simple_consumer_group

        d = describe_group(b, active)
        assert d.group_id == active and d.state == ConsumerGroupState.STABLE, d.state
        assert d.partition_assignor == "roundrobin", d.partition_assignor
        assert [m.client_id for m in d.members] == ["admin-member"], d.members
        assigned = sorted((tp.topic, tp.partition) for tp in d.members[0].assignment.topic_partitions)
        assert assigned == [(topic, p) for p in range(partitions)], assigned
        assert d.coordinator is not None and d.coordinator.port == gbroker.port
        de = describe_group(b, empty)
        assert de.state == ConsumerGroupState.EMPTY and not de.members, (de.state, de.members)

        assert delete_group_error(b, active) == NON_EMPTY_GROUP
        assert active in list_groups(b)
        with connect(b) as s:
            err, res = offset_delete(s, active, {topic: [0]})
            assert (err, res) == (NONE, {topic: {0: GROUP_SUBSCRIBED_TO_TOPIC}}), (err, res)
            err, res = offset_delete(s, empty, {topic: [0]})
            assert (err, res) == (NONE, {topic: {0: NONE}}), (err, res)
        assert {p: o for p, (o, _m) in committed_offsets(b, active, topic, partitions).items()} \
            == {0: 4, 1: 4, 2: 4}
        assert {p: o for p, (o, _m) in committed_offsets(b, empty, topic, partitions).items()} \
            == {0: -1, 1: 10, 2: 10}
        c.close()
        closed = True
    finally:
        if not closed:
            c.close()

    retry(lambda: describe_group(b, active).state == ConsumerGroupState.EMPTY,
          f"{active} empty after its member left", timeout=15)
    assert delete_group_error(b, active) == NONE
    assert delete_group_error(b, empty) == NONE
    everything = list_groups(b)
    assert active not in everything and empty not in everything, sorted(everything)
    for g in (active, empty):
        err, got = offset_fetch(b, g, {topic: list(range(partitions))})
        assert err in (NONE, GROUP_ID_NOT_FOUND), err
        if err == NONE:
            assert all(o == -1 for o, _md, _e in got[topic].values()), got
    assert delete_group_error(b, f"g-admin-never-{uuid.uuid4().hex[:6]}") == GROUP_ID_NOT_FOUND


# ---------------------------------------------------------------------------
# 8. Timers: the initial rebalance and session expiry (Kafka's GroupMetadataManager)
# ---------------------------------------------------------------------------
DESCRIBE_GROUPS = 15


def describe_group_raw(sock, group):
    """DescribeGroups v0. Returns (error, state, [member ids])."""
    r = call(sock, DESCRIBE_GROUPS, 0, array([string(group)]))
    groups = r.array(lambda r: (r.i16(), r.string(), r.string(), r.string(), r.string(),
                                r.array(lambda r: (r.string(), r.string(), r.string(),
                                                   r.bytes_(), r.bytes_()))))
    assert len(groups) == 1, groups
    err, _gid, state, _ptype, _proto, members = groups[0]
    return err, state, [m[0] for m in members]


def join_body(group, member_id, topics, session_ms=30000, rebalance_ms=30000):
    """A JoinGroup v5 body with one 'range' protocol."""
    return (string(group) + i32(session_ms) + i32(rebalance_ms) + string(member_id)
            + string(None) + string("consumer")
            + array([string("range") + nbytes(subscription(topics))]))


def read_join_v5(sock):
    r = Reader(recv_frame(sock))
    cid = r.i32()
    r.i32()
    res = {"cid": cid, "error": r.i16(), "generation": r.i32(), "protocol": r.string(),
           "leader": r.string(), "member_id": r.string()}
    res["members"] = r.array(lambda r: (r.string(), r.string(), r.bytes_()))
    return res


def ensure_raw_topic(bootstrap):
    if RAW_TOPIC not in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics:
        create_topic(bootstrap, RAW_TOPIC, partitions=RAW_PARTITIONS)


@pytest.mark.parametrize("members", [3])
def test_members_joining_together_share_generation_1(gbroker, members):
    """group.initial.rebalance.delay.ms=0, as Kafka: the first rebalance of an Empty group
    completes on its timer, never inside the first member's JoinGroup, so members whose
    joins arrive together all get generation 1 from one rebalance (before: the first
    member completed generation 1 alone and the others forced generation 2)."""
    ensure_raw_topic(gbroker.bootstrap)
    group = f"g-together-{uuid.uuid4().hex[:6]}"
    with connect(gbroker.bootstrap) as s:
        wait_coordinator(gbroker, s, group)
        ids = []
        for _ in range(members):
            res = join_group(s, group, "", [RAW_TOPIC])
            assert res["error"] == MEMBER_ID_REQUIRED and res["member_id"], res
            ids.append(res["member_id"])
        # All second joins pipelined on one connection, then every answer read.
        s.sendall(b"".join(request(JOIN_GROUP, 5, 100 + i, join_body(group, m, [RAW_TOPIC]))
                           for i, m in enumerate(ids)))
        answers = [read_join_v5(s) for _ in ids]
        assert [a["cid"] for a in answers] == [100 + i for i in range(members)], answers
        assert all(a["error"] == NONE for a in answers), answers
        assert [a["generation"] for a in answers] == [1] * members, answers
        assert [a["member_id"] for a in answers] == ids, answers
        leader = answers[0]["leader"]
        assert leader in ids and all(a["leader"] == leader for a in answers), answers
        by_id = {a["member_id"]: a for a in answers}
        assert sorted(m for m, _i, _md in by_id[leader]["members"]) == sorted(ids), \
            by_id[leader]["members"]
        assert all(not a["members"] for m, a in by_id.items() if m != leader), answers
        err, state, described = describe_group_raw(s, group)
        assert (err, state, sorted(described)) == (NONE, "CompletingRebalance", sorted(ids))
        # One rebalance: the leader's SyncGroup makes generation 1 Stable for everyone.
        err, _a = sync_group(s, group, 1, leader,
                             {m: assignment(RAW_TOPIC, [i]) for i, m in enumerate(ids)})
        assert err == NONE, err
        for m in ids:
            assert heartbeat(s, group, 1, m) == NONE
        assert describe_group_raw(s, group)[1] == "Stable"
        for m in ids:
            leave_group(s, group, m)


SESSION_MS = 6000    # group.min.session.timeout.ms's default, the shortest a member may ask


def test_member_expires_at_its_session_deadline(gbroker):
    """A member that stops heartbeating is gone at its session deadline itself: a request
    sent right after last heartbeat + session.timeout.ms no longer finds it (before: group
    timers ran on a 50 ms tick, so it was up to ~55 ms late); and the coordinator's timer
    fires at the deadline unprompted: another member's JoinGroup that waits for the expiry is
    answered right after it, not at the rebalance timeout."""
    ensure_raw_topic(gbroker.bootstrap)
    group = f"g-expiry-{uuid.uuid4().hex[:6]}"
    sa, sb = connect(gbroker.bootstrap), connect(gbroker.bootstrap)
    try:
        wait_coordinator(gbroker, sa, group)
        res = join_group(sa, group, "", [RAW_TOPIC], session_ms=SESSION_MS)
        a = res["member_id"]
        res = join_group(sa, group, a, [RAW_TOPIC], session_ms=SESSION_MS)
        assert res["error"] == NONE and res["generation"] == 1, res
        assert sync_group(sa, group, 1, a, {a: assignment(RAW_TOPIC, [0, 1])})[0] == NONE

        # 1. Exact expiry seen by a request (DescribeGroups).
        t_send = time.monotonic()
        assert heartbeat(sa, group, 1, a) == NONE
        t_recv = time.monotonic()
        time.sleep(max(0.0, t_send + SESSION_MS / 1000 - 0.2 - time.monotonic()))
        assert describe_group_raw(sb, group)[2] == [a], "expired before its deadline"
        time.sleep(max(0.0, t_recv + SESSION_MS / 1000 + 0.002 - time.monotonic()))
        err, state, described = describe_group_raw(sb, group)
        late = time.monotonic() - (t_recv + SESSION_MS / 1000)
        assert (err, described) == (NONE, []), \
            f"member still there {late * 1000:.1f} ms after its session deadline ({state})"
        assert state == "Empty", state

        # 2. The timer itself: a Stable group of A; B joins and waits for A, which never
        # rejoins; A's session expiry completes the rebalance and answers B.
        res = join_group(sa, group, "", [RAW_TOPIC], session_ms=SESSION_MS)
        a = res["member_id"]
        res = join_group(sa, group, a, [RAW_TOPIC], session_ms=SESSION_MS)
        assert res["error"] == NONE, res
        gen = res["generation"]
        assert sync_group(sa, group, gen, a, {a: assignment(RAW_TOPIC, [0, 1])})[0] == NONE
        res = join_group(sb, group, "", [RAW_TOPIC], session_ms=SESSION_MS)
        b = res["member_id"]
        t_send = time.monotonic()
        assert heartbeat(sa, group, gen, a) == NONE
        t_recv = time.monotonic()
        sb.sendall(request(JOIN_GROUP, 5, 7, join_body(group, b, [RAW_TOPIC],
                                                       session_ms=SESSION_MS)))
        sb.settimeout(SESSION_MS / 1000 + 10)
        answer = read_join_v5(sb)
        t_answer = time.monotonic()
        assert answer["error"] == NONE and answer["generation"] == gen + 1, answer
        assert [m for m, _i, _md in answer["members"]] == [b], answer
        assert t_answer >= t_send + SESSION_MS / 1000, "A expired before its deadline"
        late = t_answer - (t_recv + SESSION_MS / 1000)
        print(f"\nrebalance answered {late * 1000:.1f} ms after A's session deadline")
        # Without a timer of its own, the expiry would wait for the rebalance timeout (30 s) or
        # the next request. A bound in milliseconds is a latency target, which belongs in a
        # benchmark: CI's loaded 2 cores once answered 30 ms late. Part 1 pins the deadline
        # exactly, from the coordinator's own view.
        assert late < 1.0, f"A's expiry fired {late * 1000:.1f} ms after its deadline"
        leave_group(sb, group, b)
    finally:
        sa.close()
        sb.close()
