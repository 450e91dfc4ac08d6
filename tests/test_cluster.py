"""Multi-node Spool: real `spool` processes on 127.0.0.1 (distinct ports) forming one cluster.

Checked with real clients and Kafka's own tools (Maven Central jars, deploy/kafka.sh fetch):
- three combined broker+controller nodes form one cluster from a clean start, and
  kafka-topics.sh, kafka-metadata-quorum.sh, kafka-broker-api-versions.sh and librdkafka's admin
  see the same cluster from every broker; topics spread over all brokers;
- kill -9 of the quorum leader: a new leader within the election timeout, topic creation works
  again, no committed metadata lost; the old leader restarts and catches up (also from a
  snapshot after its log was purged); a majority down fails metadata writes with
  REQUEST_TIMED_OUT within the request's timeout, not a hang;
- every client produces to and consumes from the cluster; consumer groups work with
  coordinators on different brokers;
- three controllers plus two broker-only nodes, one knowing the quorum only by
  controller.quorum.bootstrap.servers;
- deploy/cluster.sh starts a working 3-node cluster and stops it.
Every wait is bounded; processes are signalled only by their own PID.
"""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import (DEPS, ROOT, TARGET, free_ports, helper_cmd, pid_alive, port_open, spool_bin)

pytestmark = pytest.mark.skipif(TARGET != "spool", reason="multi-node Spool clusters")

KAFKA_LIBS = Path(os.environ.get("KAFKA_LIBS", DEPS / "kafka-libs"))
START_TIMEOUT = 60.0


def kafka_libs():
    out = subprocess.run([str(ROOT / "deploy" / "kafka.sh"), "fetch"], capture_output=True,
                         text=True, timeout=900)
    if out.returncode != 0:
        pytest.fail(f"deploy/kafka.sh fetch failed:\n{out.stderr[-3000:]}", pytrace=False)
    return KAFKA_LIBS


def kafka_tool(main_class, *args, timeout=120, check=True):
    """Runs one of Kafka's own command-line tools (the classes behind bin/*.sh)."""
    cmd = ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs()}/*",
           main_class, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        pytest.fail(f"{main_class} {' '.join(args)} failed ({out.returncode}):\n"
                    f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}", pytrace=False)
    return out


# Logged by a node that installs a metadata snapshot sent by the quorum leader.
SNAPSHOT_INSTALLED = "installed a metadata snapshot from the quorum leader"


class Node:
    """One `spool broker` process of a cluster."""

    def __init__(self, workdir, node_id, roles, quorum, kafka_port, rpc_port, rack=None,
                 extra=()):
        self.workdir = Path(workdir)
        self.node_id = node_id
        self.roles = roles
        # "controller.quorum.voters=..." or "controller.quorum.bootstrap.servers=...".
        self.quorum = quorum
        self.kafka_port = kafka_port
        self.rpc_port = rpc_port
        self.rack = rack
        self.extra = list(extra)
        self.data_dir = self.workdir / f"node-{node_id}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"node-{node_id}.log"
        self.bootstrap = f"127.0.0.1:{kafka_port}"
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def command(self):
        cmd = [str(spool_bin()), "broker",
               "--listeners", f"PLAINTEXT://127.0.0.1:{self.kafka_port},CONTROLLER://127.0.0.1:{self.rpc_port}",
               "--advertised-listeners", f"PLAINTEXT://127.0.0.1:{self.kafka_port}",
               "--log-dirs", str(self.data_dir), "--node-id", str(self.node_id),
               "--cores", os.environ.get("SPOOL_TEST_CORES", "2"),
               "--set", f"process.roles={self.roles}",
               "--set", self.quorum,
               # Faster than Kafka's defaults so the fault tests stay short.
               "--set", "broker.heartbeat.interval.ms=500",
               "--set", "broker.session.timeout.ms=3000",
               "--set", "controller.quorum.election.timeout.ms=500"]
        if self.rack:
            cmd += ["--set", f"broker.rack={self.rack}"]
        for kv in self.extra:
            cmd += ["--set", kv]
        return cmd

    def start(self):
        log = open(self.log_path, "ab")
        log.write(("\n=== start: " + " ".join(self.command()) + "\n").encode())
        log.flush()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=self.workdir)
        log.close()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_listening(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"node {self.node_id} exited:\n{self.log_tail()}", pytrace=False)
            if port_open("127.0.0.1", self.kafka_port, timeout=0.3):
                return
            time.sleep(0.1)
        pytest.fail(f"node {self.node_id} not listening after {timeout}s:\n{self.log_tail()}",
                    pytrace=False)

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        # No wait for the ports: the next start waits out the killed process's listeners
        # itself (see conftest's `Broker.kill9`).

    def stop(self, timeout=30):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Cluster:
    def __init__(self, controllers=3, brokers_only=0, racks=None, extra=(),
                 bootstrap_only=()):
        """Nodes in `bootstrap_only` (broker-only ids) know the quorum only by
        controller.quorum.bootstrap.servers; the others by controller.quorum.voters."""
        self.workdir = tempfile.mkdtemp(prefix="spool-cluster-")
        ids = list(range(1, controllers + brokers_only + 1))
        picked = iter(free_ports(2 * len(ids)))
        ports = {i: (next(picked), next(picked)) for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{ports[i][1]}" for i in ids[:controllers])
        bootstrap = ",".join(f"127.0.0.1:{ports[i][1]}" for i in ids[:controllers])
        self.nodes = {}
        for n, i in enumerate(ids):
            roles = "broker,controller" if n < controllers else "broker"
            assert i not in bootstrap_only or n >= controllers
            quorum = (f"controller.quorum.bootstrap.servers={bootstrap}" if i in bootstrap_only
                      else f"controller.quorum.voters={voters}")
            rack = racks[n] if racks else None
            self.nodes[i] = Node(self.workdir, i, roles, quorum, ports[i][0], ports[i][1],
                                 rack=rack, extra=extra)

    def start(self):
        for node in self.nodes.values():
            node.start()
        for node in self.nodes.values():
            node.wait_listening()
        self.wait_brokers(len(self.nodes))
        return self

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes.values() if n.alive())

    def live(self):
        return [n for n in self.nodes.values() if n.alive()]

    def admin(self, node=None, timeout=10):
        from confluent_kafka.admin import AdminClient
        servers = node.bootstrap if node else self.bootstrap
        return AdminClient({"bootstrap.servers": servers, "socket.timeout.ms": int(timeout * 1000)})

    def wait_brokers(self, count, timeout=START_TIMEOUT):
        """Until every live node's Metadata lists `count` brokers."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                seen = [len(self.admin(n).list_topics(timeout=5).brokers) for n in self.live()]
                if all(s == count for s in seen):
                    return
                last = seen
            except Exception as e:  # noqa: BLE001
                last = e
            time.sleep(0.2)
        pytest.fail(f"brokers never converged to {count}: {last}\n{self.tails()}", pytrace=False)

    def quorum(self, node=None):
        """kafka-metadata-quorum.sh describe --status, parsed."""
        out = kafka_tool("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server",
                         (node or self.live()[0]).bootstrap, "describe", "--status")
        status = {}
        for line in out.stdout.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                status[k.strip()] = v.strip()
        return status

    def leader_id(self, timeout=30):
        """The quorum leader as the nodes report it (DescribeQuorum through a live broker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.live():
                try:
                    leader = describe_quorum_leader(node.bootstrap)
                except Exception:  # noqa: BLE001
                    leader = -1
                if leader >= 0:
                    return leader
            time.sleep(0.1)
        pytest.fail(f"no quorum leader:\n{self.tails()}", pytrace=False)

    def tails(self):
        return "\n".join(f"--- node {i} ---\n{n.log_tail()}" for i, n in self.nodes.items())

    def close(self, failed):
        # Broker-only nodes first, then the controllers, highest id first: the metadata quorum
        # stays up while the brokers leave, so each stop is a quick controlled shutdown rather
        # than one waiting out its bounds for a quorum that is gone.
        for node in reversed(list(self.nodes.values())):
            node.stop()
        if failed or os.environ.get("SPOOL_TEST_KEEP"):
            sys.stderr.write(f"[cluster workdir kept: {self.workdir}]\n{self.tails()}\n")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def describe_quorum_leader(bootstrap):
    """LeaderId from DescribeQuorum (API 55) sent by a minimal Kafka-protocol client: the
    quickest probe of the quorum's leader (no JVM start)."""
    out = subprocess.run([str(spool_bin()), "cluster", "status", "--bootstrap-server", bootstrap,
                          "--json"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return -1
    return json.loads(out.stdout)["leader"]


@pytest.fixture
def cluster(request):
    made = []

    def make(**kwargs):
        c = Cluster(**kwargs)
        made.append(c)
        return c.start()

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    for c in made:
        c.close(failed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def create_topic(admin, name, partitions, timeout=30, rf=1):
    from confluent_kafka.admin import NewTopic
    futures = admin.create_topics([NewTopic(name, partitions, rf)], operation_timeout=timeout,
                                  request_timeout=timeout + 5)
    futures[name].result(timeout=timeout + 10)


def partition_leaders(admin, topic):
    md = admin.list_topics(topic=topic, timeout=10)
    return {p: m.leader for p, m in md.topics[topic].partitions.items()}


# ---------------------------------------------------------------------------------------------


def test_three_nodes_form_one_cluster_seen_alike_from_every_broker(cluster):
    c = cluster(controllers=3)
    create_topic(c.admin(), "spread", 12)
    views = []
    for node in c.live():
        md = c.admin(node).list_topics(timeout=10)
        assert sorted(md.brokers) == [1, 2, 3]
        assert md.cluster_id and len(md.cluster_id) == 22
        views.append((md.cluster_id, partition_leaders(c.admin(node), "spread")))
    assert all(v == views[0] for v in views), views
    leaders = views[0][1]
    assert len(leaders) == 12
    counts = {b: list(leaders.values()).count(b) for b in (1, 2, 3)}
    assert counts == {1: 4, 2: 4, 3: 4}, counts

    # Kafka's own tools, through different brokers.
    described = kafka_tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                           c.nodes[2].bootstrap, "--describe", "--topic", "spread").stdout
    assert "PartitionCount: 12" in described, described
    assert len(re.findall(r"Leader: [123]\b", described)) == 12, described

    status = c.quorum(c.nodes[3])
    assert status["ClusterId"] == views[0][0]
    assert int(status["LeaderId"]) in (1, 2, 3)
    voters = json.loads(status["CurrentVoters"])
    assert sorted(v["id"] for v in voters) == [1, 2, 3]
    assert int(status["HighWatermark"]) > 0
    replication = kafka_tool("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server",
                             c.nodes[1].bootstrap, "describe", "--replication").stdout
    assert "Leader" in replication and replication.count("Follower") == 2, replication

    versions = kafka_tool("org.apache.kafka.tools.BrokerApiVersionsCommand", "--bootstrap-server",
                          c.nodes[1].bootstrap).stdout
    for node in c.nodes.values():
        assert f"127.0.0.1:{node.kafka_port} (id: {node.node_id}" in versions, versions
    assert "DescribeQuorum(55): 0 to 2" in versions


def test_every_client_produces_and_consumes_across_the_cluster(cluster, tmp_path):
    import base64
    c = cluster(controllers=3)
    create_topic(c.admin(), "clients", 6)
    assert set(partition_leaders(c.admin(), "clients").values()) == {1, 2, 3}
    # Each client's topic is replicated (RF=3): acks=all through one broker's bootstrap, read
    # back through another's, from leaders spread over the three brokers.
    for client in ("confluent", "kafka-python", "java", "franz-go"):
        topic = f"clients-{client}"
        create_topic(c.admin(), topic, 6, rf=3)
        md = c.admin().list_topics(topic=topic, timeout=10).topics[topic].partitions
        assert all(sorted(p.replicas) == [1, 2, 3] for p in md.values()), md
        records = tmp_path / f"{client}.jsonl"
        with open(records, "w") as f:
            for i in range(60):
                f.write(json.dumps({"partition": i % 6, "key": None,
                                    "value": base64.b64encode(f"{client}-{i}".encode()).decode(),
                                    "headers": []}) + "\n")
        out = subprocess.run(helper_cmd(client) + ["produce", "--bootstrap", c.nodes[1].bootstrap,
                             "--topic", topic, "--compression", "none", "--acks", "all",
                             "--input", str(records)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{client} produce: {out.stderr[-2000:]}"
        out = subprocess.run(helper_cmd(client) + ["consume", "--bootstrap", c.nodes[3].bootstrap,
                             "--topic", topic, "--partitions", "6", "--count", "60",
                             "--timeout-ms", "60000"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{client} consume: {out.stderr[-2000:]}"
        got = sorted(base64.b64decode(json.loads(l)["value"]).decode()
                     for l in out.stdout.splitlines() if l.strip())
        assert got == sorted(f"{client}-{i}" for i in range(60)), client


def test_consumer_groups_with_coordinators_on_different_brokers(cluster):
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
    c = cluster(controllers=3)
    create_topic(c.admin(), "groups", 3)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in range(30):
        p.produce("groups", value=f"v{i}".encode(), partition=i % 3)
    assert p.flush(30) == 0
    coordinators = set()
    for g in range(6):
        group = f"group-{g}"
        consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": group,
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe(["groups"])
        seen = []
        deadline = time.monotonic() + 60
        while len(seen) < 30 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                seen.append(m.value())
        assert len(seen) == 30, (group, len(seen))
        consumer.commit(asynchronous=False)
        # Offsets are not dense (each partition's first leader writes a control batch), so
        # the group has committed each partition's end, not a count.
        ends = {p: consumer.get_watermark_offsets(TopicPartition("groups", p), timeout=10)[1]
                for p in range(3)}
        consumer.close()
        # Keep the AdminClient referenced until its futures complete.
        admin = c.admin()
        desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
        coordinators.add(desc.coordinator.id)
        offsets = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)])[group].result(timeout=30)
        assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == ends
    assert len(coordinators) >= 2, coordinators


def test_quorum_leader_kill9_elects_new_leader_and_keeps_metadata(cluster):
    c = cluster(controllers=3, extra=("metadata.log.max.record.bytes.between.snapshots=4096",))
    for i in range(5):
        create_topic(c.admin(), f"before-{i}", 2)
    elections = []
    for round_ in range(3):
        leader = c.leader_id()
        victim = c.nodes[leader]
        killed = time.monotonic()
        victim.kill9()
        new_leader = -1
        while time.monotonic() - killed < 20:
            new_leader = c.leader_id()
            if new_leader != leader:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - killed
        assert new_leader not in (-1, leader)
        elections.append(elapsed)
        # Writable again with one node down; nothing committed before is lost.
        create_topic(c.admin(), f"during-{round_}", 2)
        names = set(c.admin().list_topics(timeout=10).topics)
        assert {f"before-{i}" for i in range(5)} <= names
        # Enough new metadata that the survivors snapshot and purge their logs, so the victim
        # catches up from a snapshot.
        for i in range(20):
            create_topic(c.admin(), f"r{round_}-{i}", 1)
        installed_before = victim.log_text().count(SNAPSHOT_INSTALLED)
        victim.start()
        victim.wait_listening()
        c.wait_brokers(3)
        names = set(c.admin(victim).list_topics(timeout=10).topics)
        assert {f"r{round_}-{i}" for i in range(20)} <= names
        assert victim.log_text().count(SNAPSHOT_INSTALLED) > installed_before, \
            f"node {victim.node_id} caught up without the leader's snapshot:\n{victim.log_tail()}"
    sys.stderr.write(f"[quorum leader election after kill -9: "
                     f"{', '.join(f'{e:.2f}' for e in elections)} s; "
                     f"median {statistics.median(elections):.2f} s]\n")
    # openraft's followers wait out the leader's lease (election_timeout_max = 2 x 500 ms) and
    # then a randomized election timeout (500-1000 ms): 1.5-2 s, plus slack for a busy
    # 2-core machine. (KRaft's defaults: controller.quorum.fetch.timeout.ms 2 s, then an
    # election of 1-2 s.)
    assert statistics.median(elections) < 3, elections
    assert max(elections) < 5, elections


def test_minority_down_writable_majority_down_times_out(cluster):
    from confluent_kafka.admin import NewTopic
    c = cluster(controllers=3)
    leader = c.leader_id()
    others = [n for i, n in c.nodes.items() if i != leader]
    others[0].kill9()
    create_topic(c.admin(), "minority-down", 1)
    others[1].kill9()
    started = time.monotonic()
    admin = c.admin(c.nodes[leader])
    futures = admin.create_topics([NewTopic("majority-down", 1, 1)], operation_timeout=3,
                                  request_timeout=20)
    with pytest.raises(Exception) as err:
        futures["majority-down"].result(timeout=30)
    # The broker's answer, after the request's own 3 s: not the client giving up at 20 s.
    assert time.monotonic() - started < 12
    assert "REQUEST_TIMED_OUT" in str(err.value), err.value
    for node in others:
        node.start()
    for node in others:
        node.wait_listening()
    c.wait_brokers(3)
    create_topic(c.admin(), "majority-back", 1)


def produce_and_count(c, topic):
    """One record to every partition of `topic` (acks=all), then all of them read back: every
    partition's broker serves produce and fetch."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    partitions = sorted(partition_leaders(c.admin(), topic))
    errors = []
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    for i in partitions:
        p.produce(topic, value=f"after-{i}".encode(), partition=i,
                  on_delivery=lambda err, _msg: err and errors.append(err))
    assert p.flush(30) == 0 and not errors, errors
    consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": f"count-{topic}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, i, 0) for i in partitions])
    seen = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not {f"after-{i}" for i in partitions} <= seen:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            seen.add(m.value().decode())
    consumer.close()
    assert {f"after-{i}" for i in partitions} <= seen, seen


def test_three_controllers_and_two_brokers(cluster):
    # Broker 5 knows the controllers only by controller.quorum.bootstrap.servers (KIP-853).
    c = cluster(controllers=3, brokers_only=2, racks=["a", "b", "c", "a", "b"],
                bootstrap_only=(5,))
    create_topic(c.admin(), "five", 10)
    # CreateTopics is answered once the answering broker applied it; node 5 follows the
    # metadata log on its own and may be a moment behind (as a Kafka broker may).
    deadline = time.monotonic() + 15
    leaders = {}
    while time.monotonic() < deadline:
        leaders = partition_leaders(c.admin(c.nodes[5]), "five")
        if len(leaders) == 10 and all(l >= 0 for l in leaders.values()):
            break
        time.sleep(0.2)
    assert set(leaders.values()) == {1, 2, 3, 4, 5}
    md = c.admin(c.nodes[4]).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3, 4, 5]
    status = c.quorum(c.nodes[5])
    assert sorted(v["id"] for v in json.loads(status["CurrentVoters"])) == [1, 2, 3]
    assert sorted(o["id"] for o in json.loads(status["CurrentObservers"])) == [4, 5]
    # A broker-only node that dies is fenced: Metadata stops listing it; restarted, it
    # finds the quorum again through the bootstrap servers and serves its partitions.
    c.nodes[5].kill9()
    c.wait_brokers(4, timeout=30)
    c.nodes[5].start()
    c.nodes[5].wait_listening()
    c.wait_brokers(5)
    produce_and_count(c, "five")


def test_deploy_cluster_script_starts_a_working_three_node_cluster(tmp_path):
    """deploy/cluster.sh, as the README shows it, run from a copy of deploy/ so its
    ./spool-cluster data stays out of the checkout (it uses its fixed ports 19092-39093)."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    shutil.copytree(ROOT / "deploy" / "cluster", tmp_path / "deploy" / "cluster")
    shutil.copy(ROOT / "deploy" / "cluster.sh", tmp_path / "deploy" / "cluster.sh")
    env = dict(os.environ, SPOOL_BIN=str(spool_bin()))
    script = [str(tmp_path / "deploy" / "cluster.sh")]
    pids = []
    try:
        out = subprocess.run(["bash", *script, "start"], capture_output=True, text=True,
                             timeout=180, env=env)
        pids = [int(p.read_text()) for p in (tmp_path / "spool-cluster").glob("node-*.pid")]
        assert out.returncode == 0, out.stdout + out.stderr
        assert len(pids) == 3
        status = json.loads(subprocess.run(
            [str(spool_bin()), "cluster", "status", "--bootstrap-server", "127.0.0.1:29092",
             "--json"], capture_output=True, text=True, timeout=30, check=True).stdout)
        assert status["leader"] in (1, 2, 3), status
        bootstrap = "127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i in range(30):
            p.produce("deploy-script", value=f"v{i}".encode())
        assert p.flush(60) == 0
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "deploy-script",
                      "auto.offset.reset": "earliest"})
        c.subscribe(["deploy-script"])
        got = set()
        deadline = time.monotonic() + 60
        while len(got) < 30 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.add(m.value().decode())
        c.close()
        assert got == {f"v{i}" for i in range(30)}
    finally:
        out = subprocess.run(["bash", *script, "stop"], capture_output=True, text=True,
                             timeout=120, env=env)
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not any(pid_alive(pid) for pid in pids)
