#!/usr/bin/env python3
"""Idle cost and failover time of many replicated partitions (issue 10, part 3).

Starts three combined `spool broker` processes on 127.0.0.1 (ports the OS picks), creates
N partitions at replication factor 3 (topics of at most --per-topic partitions), waits until
Metadata names a leader for every partition, lets the cluster settle, then samples each
process's CPU (utime+stime from /proc/<pid>/stat over --idle seconds), RSS, threads and open
file descriptors. Then it kill -9s one broker (not the active controller, so the figure is
partition failover, not controller failover) and polls Metadata until every partition has a
live leader other than the killed broker. Writes a markdown report (stdout and --out).

A benchmark, not a test: the machine is shared and noisy; quote medians of repeated runs.
Every wait is bounded. Only the PIDs this script started are ever signalled.

    SPOOL_BIN=target/release/spool python3 bench/idle.py --partitions 1000 --out r.md
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
START_TIMEOUT = 180.0
LEADERS_TIMEOUT = 900.0
RECOVERY_TIMEOUT = 300.0
POLL = 0.1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, timeout=0.3):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def spool_bin():
    env = os.environ.get("SPOOL_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "spool"


class Node:
    def __init__(self, workdir, node_id, voters, kafka_port, rpc_port, cores, extra):
        self.node_id = node_id
        self.kafka_port = kafka_port
        self.rpc_port = rpc_port
        self.data_dir = workdir / f"node-{node_id}"
        self.data_dir.mkdir(parents=True)
        self.log_path = workdir / f"node-{node_id}.log"
        self.cmd = [str(spool_bin()), "broker",
                    "--listeners",
                    f"PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{rpc_port}",
                    "--advertised-listeners", f"PLAINTEXT://127.0.0.1:{kafka_port}",
                    "--log-dirs", str(self.data_dir), "--node-id", str(node_id),
                    "--cores", str(cores),
                    "--set", "process.roles=broker,controller",
                    "--set", f"controller.quorum.voters={voters}",
                    "--set", "broker.heartbeat.interval.ms=500",
                    "--set", "broker.session.timeout.ms=3000"]
        for kv in extra:
            self.cmd += ["--set", kv]
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.kafka_port}"

    def start(self):
        with open(self.log_path, "ab") as log:
            log.write(("=== start: " + " ".join(self.cmd) + "\n").encode())
            log.flush()
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.data_dir.parent)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime 14, stime 15 (1-based).
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self):
        return int(Path(f"/proc/{self.proc.pid}/statm").read_text().split()[1]) * PAGE

    def threads(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return -1

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def tail(self, lines=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def admin(servers, timeout=10):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": servers, "socket.timeout.ms": int(timeout * 1000),
                        "log_level": 2})


def leaders(node, topics):
    """{(topic, partition): leader id} from one node's Metadata; -1 when none."""
    md = admin(node.bootstrap, 30).list_topics(timeout=30)
    out = {}
    for t in topics:
        tm = md.topics.get(t)
        if tm is None or tm.error is not None and not tm.partitions:
            continue
        for p, pm in tm.partitions.items():
            out[(t, p)] = pm.leader
    return out, md


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--per-topic", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=30.0, help="idle sampling window, seconds")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds between the last leader and the idle window")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], dest="extra",
                    help="extra broker setting key=value (repeatable)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--no-kill", action="store_true", help="idle figures only, no failover")
    ap.add_argument("--no-quiesce", action="store_true",
                    help="run the nodes with per-group ticks (SPOOL_PARTITION_QUIESCE=0; "
                         "by default this benchmark sets SPOOL_PARTITION_QUIESCE=1)")
    ap.add_argument("--perf", type=float, default=0.0,
                    help="also perf-record node 1 for this many idle seconds (perf.data kept)")
    args = ap.parse_args()

    os.environ["SPOOL_PARTITION_QUIESCE"] = "0" if args.no_quiesce else "1"
    if not spool_bin().exists():
        sys.exit(f"spool binary not found at {spool_bin()} (set SPOOL_BIN)")
    workdir = Path(tempfile.mkdtemp(prefix="spool-idle-"))
    ids = [1, 2, 3]
    ports = {i: (free_port(), free_port()) for i in ids}
    voters = ",".join(f"{i}@127.0.0.1:{ports[i][1]}" for i in ids)
    nodes = {i: Node(workdir, i, voters, ports[i][0], ports[i][1], args.cores, args.extra)
             for i in ids}
    result = {"partitions": args.partitions, "cores": args.cores, "idle_s": args.idle,
              "extra": args.extra, "bin": str(spool_bin()), "quiesce": not args.no_quiesce}
    try:
        t0 = time.monotonic()
        for n in nodes.values():
            n.start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                seen = [len(admin(n.bootstrap, 5).list_topics(timeout=5).brokers)
                        for n in nodes.values()]
                if all(s == 3 for s in seen):
                    break
            except ImportError:
                # confluent-kafka missing (deploy/install-test-deps.sh installs it): waiting
                # would only end in "not registered".
                raise
            except Exception:  # noqa: BLE001
                pass
            for n in nodes.values():
                if not n.alive():
                    raise RuntimeError(f"node {n.node_id} exited:\n{n.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError("brokers not registered in time")
            time.sleep(0.5)
        result["cluster_up_s"] = time.monotonic() - t0

        # Topics of at most --per-topic partitions.
        from confluent_kafka.admin import NewTopic
        topics = []
        left = args.partitions
        while left > 0:
            count = min(left, args.per_topic)
            topics.append((f"idle-{len(topics)}", count))
            left -= count
        names = [t for t, _ in topics]
        t0 = time.monotonic()
        a = admin(nodes[1].bootstrap, 120)
        for name, count in topics:
            futs = a.create_topics([NewTopic(name, count, 3)], request_timeout=300,
                                   operation_timeout=300)
            for f in futs.values():
                try:
                    f.result(timeout=330)
                except Exception as e:  # noqa: BLE001
                    # A timed-out CreateTopics may still create the topic: the leader wait
                    # below decides.
                    result.setdefault("create_errors", []).append(f"{name}: {e}")
        result["create_s"] = time.monotonic() - t0

        # Every partition led (Metadata leader >= 0), asked of every node.
        deadline = time.monotonic() + LEADERS_TIMEOUT
        last_note = time.monotonic()
        led = 0
        while True:
            ok = True
            # Every node, before any answer is judged: a node that died at start (its port
            # taken by another process's outgoing connection meanwhile) must fail the run,
            # not leave it waiting for partitions that cannot be created.
            for n in nodes.values():
                if not n.alive():
                    raise RuntimeError(f"node {n.node_id} exited:\n{n.tail()}")
            for n in nodes.values():
                try:
                    got, _ = leaders(n, names)
                except Exception:  # noqa: BLE001
                    ok = False
                    break
                led = sum(1 for v in got.values() if v >= 0)
                if led < args.partitions:
                    ok = False
                    break
            if ok:
                break
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                print(f"[{last_note - t0:.0f} s: node {n.node_id} names a leader for "
                      f"{led}/{args.partitions} partitions]", file=sys.stderr, flush=True)
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every partition led after {LEADERS_TIMEOUT}s "
                                   f"({led}/{args.partitions})")
            time.sleep(0.5)
        result["all_led_s"] = time.monotonic() - t0
        got, _ = leaders(nodes[1], names)
        result["leaders_per_node"] = {i: sum(1 for v in got.values() if v == i) for i in ids}

        time.sleep(args.settle)
        before = {i: n.cpu_seconds() for i, n in nodes.items()}
        w0 = time.monotonic()
        perf = None
        if args.perf > 0:
            perf = subprocess.Popen(["perf", "record", "-g", "-o", str(workdir / "perf.data"),
                                     "-p", str(nodes[1].proc.pid), "--", "sleep",
                                     str(args.perf)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        time.sleep(args.idle)
        after = {i: n.cpu_seconds() for i, n in nodes.items()}
        window = time.monotonic() - w0
        if perf is not None:
            perf.wait(timeout=args.perf + 60)
            result["perf_data"] = str(workdir / "perf.data")
        result["idle"] = {
            i: {"cpu_pct": 100.0 * (after[i] - before[i]) / window,
                "rss_mib": n.rss_bytes() / 2**20,
                "threads": n.threads(), "fds": n.fds()}
            for i, n in nodes.items()}

        if args.no_kill:
            return finish(result, args)
        # kill -9 of a broker that is not the active controller.
        controller = admin(nodes[1].bootstrap, 10).list_topics(timeout=10).controller_id
        victim = max(i for i in ids if i != controller)
        result["controller"] = controller
        result["killed"] = victim
        result["killed_led"] = result["leaders_per_node"][victim]
        survivors = [nodes[i] for i in ids if i != victim]
        nodes[victim].kill9()
        t0 = time.monotonic()
        deadline = t0 + RECOVERY_TIMEOUT
        cpu0 = {n.node_id: n.cpu_seconds() for n in survivors}
        first_change = None
        while True:
            # Asked of every survivor: each must name a live leader for every partition.
            done = True
            worst = 0
            for n in survivors:
                try:
                    got, _ = leaders(n, names)
                except Exception:  # noqa: BLE001
                    done = False
                    continue
                bad = sum(1 for v in got.values() if v < 0 or v == victim)
                bad += args.partitions - len(got)
                worst = max(worst, bad)
                if bad:
                    done = False
            if first_change is None and worst < result["killed_led"]:
                first_change = time.monotonic() - t0
            if done:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"leadership not recovered after {RECOVERY_TIMEOUT}s "
                                   f"({worst} partitions without a live leader)")
            time.sleep(POLL)
        result["recovery_s"] = time.monotonic() - t0
        result["first_moved_s"] = first_change
        result["recovery_cpu_s"] = {n.node_id: n.cpu_seconds() - cpu0[n.node_id]
                                    for n in survivors}
        got, _ = leaders(survivors[0], names)
        result["leaders_after"] = {i: sum(1 for v in got.values() if v == i) for i in ids}
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        result["error"] = str(e) or type(e).__name__
        for n in nodes.values():
            result.setdefault("tails", {})[n.node_id] = n.tail(15)
    finally:
        for n in nodes.values():
            if n.alive():
                n.stop()
        if not args.keep and "perf_data" not in result and "error" not in result:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            result["workdir"] = str(workdir)

    return finish(result, args)


def finish(result, args):
    report = render(result)
    print(report)
    print(json.dumps(result, indent=1, default=str), file=sys.stderr)
    if args.out:
        args.out.write_text(report + "\n<!-- " + json.dumps(result, default=str) + " -->\n")
    return 1 if "error" in result else 0


def render(r):
    lines = [f"### {r['partitions']} partitions, RF=3, 3 nodes x {r['cores']} shards",
             "", f"binary `{r['bin']}`, quiescent groups: {r.get('quiesce')}, extra settings "
             f"{r.get('extra') or 'none'}", ""]
    if "error" in r:
        lines += [f"**failed**: {r['error']}", ""]
        for n, t in r.get("tails", {}).items():
            lines += [f"node {n}:", "```", t, "```"]
    for e in r.get("create_errors", []):
        lines.append(f"- CreateTopics error: {e}")
    if "create_s" in r:
        lines.append(f"- topics created in {r['create_s']:.1f} s; every partition led "
                     f"{r.get('all_led_s', float('nan')):.1f} s after the first CreateTopics")
    if "idle" in r:
        idle = r["idle"]
        lines += ["", f"Idle window {r['idle_s']:.0f} s (CPU % of one core):", "",
                  "| node | leaders | idle CPU % | RSS MiB | threads | fds |",
                  "|---|---|---|---|---|---|"]
        for i, s in idle.items():
            lines.append(f"| {i} | {r['leaders_per_node'][i]} | {s['cpu_pct']:.1f} | "
                         f"{s['rss_mib']:.0f} | {s['threads']} | {s['fds']} |")
        cpus = [s["cpu_pct"] for s in idle.values()]
        rss = [s["rss_mib"] for s in idle.values()]
        lines.append(f"| median | | {statistics.median(cpus):.1f} | "
                     f"{statistics.median(rss):.0f} | | |")
    if "recovery_s" in r:
        lines += ["", f"kill -9 of node {r['killed']} (leading {r['killed_led']}; active "
                  f"controller {r['controller']}): every partition has a live leader again "
                  f"after **{r['recovery_s']:.2f} s** (first leader moved after "
                  f"{(r['first_moved_s'] or float('nan')):.2f} s); leaders after: "
                  f"{r['leaders_after']}; survivors' CPU seconds meanwhile: "
                  f"{ {k: round(v, 1) for k, v in r['recovery_cpu_s'].items()} }"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
