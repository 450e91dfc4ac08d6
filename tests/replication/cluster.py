"""Three-node clusters the fault schedule acts on: Apache Kafka (KRaft, combined
broker+controller, from the Maven Central jars of deploy/kafka.sh) and Spool (the `Node`s of
tests/test_cluster.py).

Common interface (`FaultCluster`):
  nodes                  {node id: node}; node.data_dir is its log dir
  bootstrap()            "host:port,..." of every node
  kill9(n) sigstop(n) sigcont(n) restart(n) torn_restart(n, rng) isolate(n, clients) heal()
  start_node(n)          start a node that is down (after kill9)
  partition_dir(n, topic, p)
  close()
Only PIDs this object started are ever signalled. Every wait is bounded.
"""
import base64
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from conftest import DEPS, ROOT, free_port, port_open  # noqa: E402

from .netfault import NetFaults  # noqa: E402
from .records import parse_segment_bytes, segment_files  # noqa: E402

KAFKA_LIBS = Path(os.environ.get("KAFKA_LIBS", DEPS / "kafka-libs"))
START_TIMEOUT = 120.0
# librdkafka log level of the harness's own clients: connection failures to a node that is
# down are expected here and would flood stderr.
QUIET = 2



def torn_fragment(last_batch, rng, max_bytes):
    """A torn write of the batch after `last_batch`: a copy of it with the next base offset,
    cut short. The cut leaves out at least one non-zero byte: past the logical end a segment
    reads as zeros (the aligned writes' padding), so a fragment missing only zero bytes (a
    record's trailing header count) would read back whole, with a valid CRC, as a batch the
    node never wrote, carrying the last batch's leader epoch: a forged entry no crash can make,
    which Raft then takes for the cluster's own at that index and term (seen once as a replica
    mismatch)."""
    batch = bytearray(last_batch)
    batch[0:8] = (int.from_bytes(batch[0:8], "big") + 1).to_bytes(8, "big")
    last_nonzero = max(i for i, b in enumerate(batch) if b)
    keep_max = max(1, min(max_bytes, len(batch) - 1, last_nonzero))
    return bytes(batch[:rng.randint(1, keep_max)])

class ClusterError(RuntimeError):
    pass


class FaultCluster:
    kind = "?"
    # Bytes of a torn batch written at most past the logical end of a segment.
    TORN_MAX_BYTES = 64 * 1024

    def __init__(self):
        self.net = NetFaults() if NetFaults.available() else None
        self.nodes = {}
        self.stopped = set()  # SIGSTOPped node ids
        self.isolated = set()
        self.workdir = None

    # -- to provide ---------------------------------------------------------------------
    def _start(self, n):
        raise NotImplementedError

    def _proc(self, n):
        raise NotImplementedError

    def _forget(self, n):
        raise NotImplementedError

    def log_tail(self, n, lines=40):
        return ""

    # -- common ------------------------------------------------------------------------
    def bootstrap(self):
        return ",".join(node.bootstrap for node in self.nodes.values())

    def node_bootstrap(self, n):
        return self.nodes[n].bootstrap

    def pid(self, n):
        p = self._proc(n)
        return p.pid if p is not None and p.poll() is None else None

    def alive(self, n):
        return self.pid(n) is not None

    def _signal(self, n, sig):
        pid = self.pid(n)
        if pid is None:
            return False
        os.kill(pid, sig)
        return True

    def kill9(self, n):
        p = self._proc(n)
        if p is not None and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        self.stopped.discard(n)
        self._forget(n)

    def sigstop(self, n):
        if self._signal(n, signal.SIGSTOP):
            self.stopped.add(n)

    def sigcont(self, n):
        if self._signal(n, signal.SIGCONT):
            self.stopped.discard(n)

    def stop(self, n, timeout=60):
        """SIGTERM (after SIGCONT if paused), SIGKILL past the timeout."""
        p = self._proc(n)
        if p is not None and p.poll() is None:
            if n in self.stopped:
                os.kill(p.pid, signal.SIGCONT)
                self.stopped.discard(n)
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
        self._forget(n)

    def start_node(self, n):
        if self.alive(n):
            return
        # The old process's ports may linger a moment (TIME_WAIT does not block bind, but a
        # killed process's listener closes asynchronously).
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", self.nodes[n].kafka_port, 0.2) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        self._start(n)

    def restart(self, n):
        """Clean restart: SIGTERM, wait, start."""
        self.stop(n)
        self.start_node(n)

    def partition_dir(self, n, topic, p):
        return Path(self.nodes[n].data_dir) / f"{topic}-{p}"

    def torn_restart(self, n, rng, topics):
        """kill -9 with a torn, unflushed tail: after the kill, a partial record batch (a
        random-length prefix of a copy of the last batch, as a write cut short by the crash
        leaves it) is written at the logical end of the newest `.log` segment of each
        partition of `topics` on the node, then the node starts again. Returns
        [(file, logical end, bytes written)].

        Only the tail a broker never acknowledged is torn: both Spool and Kafka (with
        acks=all) acknowledge only what replicas hold, and a Raft replica that loses entries
        it fsynced and acknowledged may vote a stale candidate in, which no crash does. The
        metadata log is never touched."""
        cuts = self.torn_kill(n, rng, topics)
        self.start_node(n)
        return cuts

    def _newest_segments(self, n, topics):
        """The newest `.log` segment of each partition of `topics` on node n, with its bytes
        and parsed batches (partitions without a batch left out)."""
        data = Path(self.nodes[n].data_dir)
        for d in sorted(data.iterdir()) if data.is_dir() else []:
            if not d.is_dir() or not any(d.name.startswith(t + "-") and
                                         d.name[len(t) + 1:].isdigit() for t in topics):
                continue
            files = segment_files(d)
            if not files:
                continue
            f = files[-1]
            raw = f.read_bytes()
            scan = parse_segment_bytes(raw, f.name)
            if scan.batches:
                yield f, raw, scan

    def torn_kill(self, n, rng, topics):
        """torn_restart without the start: the node stays down."""
        self.kill9(n)
        cuts = []
        for f, raw, scan in self._newest_segments(n, topics):
            last = scan.batches[-1]
            logical = last.position + last.length
            torn = torn_fragment(raw[last.position:logical], rng, self.TORN_MAX_BYTES)
            with open(f, "r+b") as out:
                out.seek(logical)
                out.write(torn)
            cuts.append((str(f), logical, len(torn)))
        return cuts

    def cut_kill(self, n, rng, topics):
        """kill -9, then cut 1..64 KiB from the logical end of the newest segment of each
        partition: acknowledged, fsynced data lost (a disk failure, not a crash); only the
        deliberately unsafe `torn-all` fault uses it, to show the checker catching losses."""
        self.kill9(n)
        cuts = []
        for f, raw, scan in self._newest_segments(n, topics):
            logical = scan.batches[-1].position + scan.batches[-1].length
            cut = rng.randint(1, min(self.TORN_MAX_BYTES, logical))
            os.truncate(f, logical - cut)
            cuts.append((str(f), len(raw), logical - cut))
        return cuts

    def isolate(self, n, clients=False):
        if self.net is None:
            raise ClusterError("network faults unavailable (need root, iptables, cgroup2)")
        self.net.isolate(n, clients=clients)
        self.isolated.add(n)

    def heal(self):
        if self.net is not None:
            self.net.heal()
        self.isolated.clear()
        for n in list(self.stopped):
            self.sigcont(n)

    def admin(self, n=None, timeout=10):
        from confluent_kafka.admin import AdminClient
        servers = self.node_bootstrap(n) if n is not None else self.bootstrap()
        return AdminClient({"bootstrap.servers": servers, "log_level": QUIET,
                            "socket.timeout.ms": int(timeout * 1000)})

    def wait_brokers(self, count=None, timeout=START_TIMEOUT):
        """Until every live node's Metadata lists `count` brokers (default: all nodes)."""
        count = count or len(self.nodes)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                live = [n for n in self.nodes if self.alive(n)]
                seen = [len(self.admin(n, timeout=5).list_topics(timeout=5).brokers) for n in live]
                if seen and all(s == count for s in seen):
                    return
                last = seen
            except Exception as e:  # noqa: BLE001
                last = e
            for n in self.nodes:
                p = self._proc(n)
                if p is not None and p.poll() is not None:
                    raise ClusterError(f"node {n} exited ({p.returncode}):\n{self.log_tail(n)}")
            time.sleep(0.3)
        raise ClusterError(f"brokers never converged to {count}: {last}\n{self.tails()}")

    def create_topic(self, name, partitions, rf=3, min_isr=2, timeout=60):
        from confluent_kafka.admin import NewTopic
        cfg = {"min.insync.replicas": str(min_isr), "unclean.leader.election.enable": "false",
               "segment.bytes": str(1024 * 1024)}
        admin = self.admin()  # referenced until the future completes
        fut = admin.create_topics([NewTopic(name, partitions, rf, config=cfg)],
                                  operation_timeout=timeout, request_timeout=timeout + 5)
        fut[name].result(timeout=timeout + 10)

    def tails(self):
        return "\n".join(f"--- node {n} ---\n{self.log_tail(n)}" for n in self.nodes)

    def close(self, keep=False):
        for n in list(self.nodes):
            try:
                self.stop(n, timeout=30)
            except Exception:  # noqa: BLE001
                self.kill9(n)
        if self.net is not None:
            self.net.teardown()
        if self.workdir and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


# =========================================================================================
# Apache Kafka
# =========================================================================================
class KafkaNode:
    def __init__(self, workdir, node_id, kafka_port, controller_port):
        self.node_id = node_id
        self.dir = Path(workdir) / f"node-{node_id}"
        self.data_dir = self.dir / "data"
        self.kafka_port = kafka_port
        self.controller_port = controller_port
        self.bootstrap = f"127.0.0.1:{kafka_port}"
        self.proc = None


class KafkaCluster(FaultCluster):
    """Three KRaft nodes (process.roles=broker,controller) on 127.0.0.1, RF=3 defaults,
    min.insync.replicas=2, unclean leader election off. Timers shortened (heartbeat 500 ms,
    session 3 s, replica lag 5 s) so failovers fit in a short test; flushing left to the OS
    as Kafka's default (acks=all means in the page cache of every ISR member)."""
    kind = "kafka"

    def __init__(self, count=3, extra_props=""):
        super().__init__()
        self.workdir = tempfile.mkdtemp(prefix="spool-faults-kafka-")
        ids = list(range(1, count + 1))
        ports = {i: (free_port(), free_port()) for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{ports[i][1]}" for i in ids)
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.extra_props = extra_props or os.environ.get("KAFKA_EXTRA_PROPS", "")
        for i in ids:
            node = KafkaNode(self.workdir, i, *ports[i])
            node.voters = voters
            self.nodes[i] = node
            if self.net is not None:
                self.net.register(i, ports[i])

    def _props(self, node):
        return f"""process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={node.voters}
listeners=PLAINTEXT://127.0.0.1:{node.kafka_port},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{node.kafka_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={node.data_dir}
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.segment.bytes=1048576
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
replica.lag.time.max.ms=5000
controller.quorum.election.timeout.ms=1000
controller.quorum.fetch.timeout.ms=2000
num.network.threads=2
num.io.threads=4
num.replica.fetchers=1
background.threads=4
{self.extra_props}
"""

    def _java(self, node):
        heap = os.environ.get("KAFKA_HEAP", "512m")
        return ["java", "-Xms128m", f"-Xmx{heap}", "-XX:+UseSerialGC", "-Xshare:auto",
                "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={node.dir / 'log4j2.properties'}",
                "-cp", f"{KAFKA_LIBS}/*"]

    def _prepare(self, node):
        node.dir.mkdir(parents=True, exist_ok=True)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        (node.dir / "server.properties").write_text(self._props(node))
        (node.dir / "log4j2.properties").write_text(f"""status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {node.dir / 'server.log'}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {os.environ.get('KAFKA_LOG_LEVEL', 'INFO')}
rootLogger.appenderRef.file.ref = file
""")

    def _format(self, node):
        return subprocess.Popen(
            self._java(node) + ["kafka.tools.StorageTool", "format",
                                f"--cluster-id={self.cluster_id}",
                                "-c", str(node.dir / "server.properties"), "--ignore-formatted"],
            stdout=open(node.dir / "format.out", "wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)

    def start(self):
        if not (KAFKA_LIBS / "kafka-clients-4.3.1.jar").exists() and not list(
                KAFKA_LIBS.glob("kafka-server-*.jar")):
            out = subprocess.run([str(ROOT / "deploy" / "kafka.sh"), "fetch"],
                                 capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                raise ClusterError(f"deploy/kafka.sh fetch failed:\n{out.stderr[-3000:]}")
        if self.net is not None:
            self.net.setup()
        for node in self.nodes.values():
            self._prepare(node)
        formats = [self._format(node) for node in self.nodes.values()]
        for node, f in zip(self.nodes.values(), formats):
            if f.wait(timeout=180) != 0:
                raise ClusterError(f"format of node {node.node_id} failed:\n"
                                   f"{(node.dir / 'format.out').read_text()[-3000:]}")
        for n in self.nodes:
            self._start(n)
        self.wait_brokers()
        return self

    def _start(self, n):
        node = self.nodes[n]
        argv = self._java(node) + ["kafka.Kafka", str(node.dir / "server.properties")]
        if self.net is not None:
            argv = self.net.wrap(n, argv)
        out = open(node.dir / "kafka.out", "ab")
        out.write(("\n=== start: " + shlex.join(argv) + "\n").encode())
        out.flush()
        node.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=node.dir)
        out.close()

    def _proc(self, n):
        return self.nodes[n].proc

    def _forget(self, n):
        self.nodes[n].proc = None

    def log_tail(self, n, lines=40):
        node = self.nodes[n]
        out = []
        for name in ("kafka.out", "server.log"):
            try:
                text = (node.dir / name).read_text(errors="replace").splitlines()
            except OSError:
                continue
            if name == "server.log":
                text = [t for t in text if " WARN " in t or " ERROR " in t]
            out.append(f"[{name}]\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


# =========================================================================================
# Spool
# =========================================================================================
class SpoolCluster(FaultCluster):
    """Three combined nodes from tests/test_cluster.py (`Cluster`, `Node`): each node's command
    line is test_cluster's, run inside its cgroup for network faults. Extra `--set` settings:
    default.replication.factor=3 and log.segment.bytes=1 MiB, plus $SPOOL_FAULT_SET
    (space-separated key=value). Topics are created with RF=3 and min.insync.replicas=2."""
    kind = "spool"

    def __init__(self, extra=()):
        super().__init__()
        from test_cluster import Cluster  # the cluster test's nodes, reused as they are
        settings = ["default.replication.factor=3", "log.segment.bytes=1048576"]
        settings += shlex.split(os.environ.get("SPOOL_FAULT_SET", ""))
        settings += list(extra)
        self.inner = Cluster(controllers=3, extra=tuple(settings))
        self.workdir = self.inner.workdir
        for i, node in self.inner.nodes.items():
            self.nodes[i] = node
            if self.net is not None:
                self.net.register(i, (node.kafka_port, node.rpc_port))
                base = node.command  # bound method of test_cluster.Node
                node.command = (lambda base=base, i=i: self.net.wrap(i, base()))

    def start(self):
        from conftest import spool_bin
        if not spool_bin().exists():
            raise ClusterError(f"spool binary not found at {spool_bin()} (set SPOOL_BIN)")
        if self.net is not None:
            self.net.setup()
        for n in self.nodes:
            self._start(n)
        self.wait_brokers()
        return self

    def _start(self, n):
        self.nodes[n].start()

    def _proc(self, n):
        return self.nodes[n].proc

    def _forget(self, n):
        self.nodes[n].proc = None

    def log_tail(self, n, lines=40):
        return self.nodes[n].log_tail(lines)


def make_cluster(target):
    if target == "kafka":
        return KafkaCluster()
    if target == "spool":
        return SpoolCluster()
    raise ValueError(f"unknown target {target!r}")
