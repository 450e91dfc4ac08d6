"""Network partitions between processes that all listen on 127.0.0.1.

Every node we start runs in its own cgroup (v2) directory; `iptables` rules in a chain of our
own, jumped to from OUTPUT on `lo`, drop the packets a node's processes send to another node's
ports (`-m cgroup --path`, `-m multiport --dports`). Clients (this test process, the producer
and consumer helpers) stay in their own cgroup, so they still reach every node unless a fault
also cuts clients off. Drops are silent (no RST, no ICMP): TCP retransmits until the rules go
away, as across a real partition.

Why cgroups and not addresses: Kafka and Spool open their outgoing connections without
binding a source address, so on loopback every connection comes from 127.0.0.1 whatever
address the node listens on; a node's identity on the wire is only its process.

Needs root, the iptables binary (deploy/install-test-deps.sh installs Debian's package) and
a cgroup2 mount (hybrid or unified). `NetFaults.available()` says whether all are present;
without them the schedule leaves network faults out.
"""
import os
import shutil
import subprocess
import uuid
from pathlib import Path


def cgroup2_root():
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    return Path(parts[1])
    except OSError:
        pass
    return None


class NetFaults:
    def __init__(self):
        token = uuid.uuid4().hex[:8]
        self.chain = f"SPOOLF-{token}"
        self.root = cgroup2_root()
        self.rel = f"spool-faults-{token}"
        self.cg_dir = self.root / self.rel if self.root else None
        self.ports = {}  # node id -> [ports]
        self.rules = []  # currently installed rule argv tails
        self.ready = False

    @staticmethod
    def available():
        if os.geteuid() != 0 or not shutil.which("iptables"):
            return False
        root = cgroup2_root()
        return root is not None and os.access(root, os.W_OK)

    def _ipt(self, *args, check=True):
        out = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True,
                             timeout=30)
        if check and out.returncode != 0:
            raise RuntimeError(f"iptables {' '.join(args)}: {out.stderr.strip()}")
        return out

    def setup(self):
        if self.ready:
            return
        self.cg_dir.mkdir(parents=True, exist_ok=True)
        self._ipt("-N", self.chain)
        self._ipt("-I", "OUTPUT", "-o", "lo", "-j", self.chain)
        self.ready = True

    def register(self, node_id, ports):
        self.ports[node_id] = [int(p) for p in ports]
        if self.cg_dir is not None:
            (self.cg_dir / f"node-{node_id}").mkdir(parents=True, exist_ok=True)

    def cgroup_path(self, node_id):
        return f"{self.rel}/node-{node_id}"

    def wrap(self, node_id, argv):
        """argv run inside the node's cgroup: a shell moves itself there and execs argv, so
        the PID is the node's own and every socket it opens belongs to the cgroup."""
        if self.cg_dir is None:
            return list(argv)
        procs = self.cg_dir / f"node-{node_id}" / "cgroup.procs"
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *argv]

    def _add(self, *rule):
        self._ipt("-A", self.chain, *rule)
        self.rules.append(rule)

    def isolate(self, node_id, clients=False):
        """Drop everything between node_id and the other nodes; with clients=True also every
        connection from outside the node to its ports (clients and the test itself)."""
        self.setup()
        mine = ",".join(map(str, self.ports[node_id]))
        for other, ports in self.ports.items():
            if other == node_id:
                continue
            theirs = ",".join(map(str, ports))
            self._add("-p", "tcp", "-m", "cgroup", "--path", self.cgroup_path(node_id),
                      "-m", "multiport", "--dports", theirs, "-j", "DROP")
            self._add("-p", "tcp", "-m", "cgroup", "--path", self.cgroup_path(other),
                      "-m", "multiport", "--dports", mine, "-j", "DROP")
        if clients:
            self._add("-p", "tcp", "-m", "cgroup", "!", "--path", self.cgroup_path(node_id),
                      "-m", "multiport", "--dports", mine, "-j", "DROP")

    def heal(self):
        if self.ready:
            self._ipt("-F", self.chain)
        self.rules = []

    def teardown(self):
        if self.ready:
            self._ipt("-D", "OUTPUT", "-o", "lo", "-j", self.chain, check=False)
            self._ipt("-F", self.chain, check=False)
            self._ipt("-X", self.chain, check=False)
            self.ready = False
        if self.cg_dir is not None and self.cg_dir.exists():
            for d in self.cg_dir.iterdir():
                if d.is_dir():
                    try:
                        d.rmdir()  # fails while a process is still in it: left for the OS
                    except OSError:
                        pass
            try:
                self.cg_dir.rmdir()
            except OSError:
                pass
