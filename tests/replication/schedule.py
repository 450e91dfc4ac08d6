"""The fault schedule: cycles of (pick a fault and a node, inject, let the workload run, heal,
wait until writable and back in sync), from a seeded RNG, then the final reads and the checker.

Faults (one node at a time; the next cycle starts only once every replica is back in sync, so
at most one replica of any partition is ever missing data it acknowledged):
  kill9         SIGKILL; started again at heal
  sigstop       SIGSTOP (a paused process: timers, sockets and all); SIGCONT at heal
  restart       SIGTERM and start (clean restart) at injection
  torn          SIGKILL, cut 1..64 KiB from the logical end of the newest segment of each of
                the topic's partitions on the node (cluster.torn_restart); started at heal
  isolate       iptables drops between the node and the other nodes; clients still reach it
  isolate-all   the same, and clients cut off from it too
Not in the default list, deliberately unsafe, to show the checker catching real losses:
  torn-all      every node at once: SIGKILL and a torn tail (a correlated power loss that
                also takes acknowledged data from every replica); started again at heal
Targets: half the time the leader of a random partition, else a random node. Each fault stays
in place a random time in [hold/2, 2*hold] (seconds; default hold 2).
"""
import json
import os
import random
import time
from pathlib import Path

from .checker import check
from .workload import (History, Watermarks, Workload, final_read, load_replicas,
                       partition_state, wait_converged)

ALL_FAULTS = ["kill9", "sigstop", "restart", "torn", "isolate", "isolate-all"]


class Settings:
    def __init__(self, **kw):
        self.cycles = int(kw.get("cycles", 20))
        self.seed = kw.get("seed")
        self.partitions = int(kw.get("partitions", 3))
        # Replication factor of the topic: 3 (the point); 1 only to smoke-test the harness
        # against a build without replication (faults then make partitions unavailable).
        self.rf = int(kw.get("rf", 3))
        # Seconds a fault stays in place (the workload running): uniform in [hold/2, 2*hold].
        self.hold = float(kw.get("hold", 2.0))
        # Bound of the writability probe with the fault in place (default: the cycle's hold;
        # a longer one measures failover times, and makes the hold that long when needed).
        fp = kw.get("fault_probe")
        self.fault_probe = None if fp is None else float(fp)
        self.heal_bound = float(kw.get("heal_bound", 30.0))  # writable after heal within
        self.converge_bound = float(kw.get("converge_bound", 90.0))
        self.rate = float(kw.get("rate", 50.0))          # records/s per producer
        self.java_producers = int(kw.get("java_producers", 2))
        self.py_producers = int(kw.get("py_producers", 2))
        self.clients = tuple(kw.get("clients", ("java", "confluent")))
        self.faults = list(kw.get("faults", ALL_FAULTS))
        self.warmup = float(kw.get("warmup", 3.0))
        self.max_seconds = float(kw.get("max_seconds", 3600.0))
        self.workdir = kw.get("workdir")


def log(msg):
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def inject(cluster, fault, node, rng, topic):
    """Returns a description of what was done (torn: the cuts)."""
    if fault == "kill9":
        cluster.kill9(node)
    elif fault == "sigstop":
        cluster.sigstop(node)
    elif fault == "restart":
        cluster.restart(node)
    elif fault == "torn":
        cuts = cluster.torn_kill(node, rng, [topic])  # started again at heal
        return {"cuts": [(os.path.basename(os.path.dirname(f)), old, new)
                         for f, old, new in cuts]}
    elif fault == "torn-all":
        cuts = []
        for n in sorted(cluster.nodes):
            cuts += cluster.cut_kill(n, rng, [topic])
        return {"cuts": [(os.path.basename(os.path.dirname(f)), old, new)
                         for f, old, new in cuts]}
    elif fault == "isolate":
        cluster.isolate(node, clients=False)
    elif fault == "isolate-all":
        cluster.isolate(node, clients=True)
    else:
        raise ValueError(fault)
    return {}


def heal(cluster, fault, node):
    if fault in ("kill9", "torn"):
        cluster.start_node(node)
    elif fault == "torn-all":
        for n in sorted(cluster.nodes):
            cluster.start_node(n)
    elif fault == "sigstop":
        cluster.sigcont(node)
    elif fault in ("isolate", "isolate-all"):
        cluster.heal()


def run(cluster, settings, history=None):
    """Runs the whole schedule on a started cluster; returns (history, report)."""
    s = settings
    seed = s.seed if s.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    log(f"seed {seed} (replay: SPOOL_FAULT_SEED={seed}), target {cluster.kind}, "
        f"{s.cycles} cycles, faults {s.faults}")
    faults = [f for f in s.faults
              if cluster.net is not None or f not in ("isolate", "isolate-all")]
    if faults != s.faults:
        log(f"network faults unavailable (root, iptables, cgroup2 needed): using {faults}")
    topic = f"faults-{seed}"
    h = history or History()
    h.topic, h.partitions = topic, s.partitions
    h.seed = seed
    workdir = Path(s.workdir or cluster.workdir) / "workload"
    cluster.create_topic(topic, s.partitions, rf=s.rf, min_isr=min(2, s.rf))
    wm = Watermarks(cluster.bootstrap())
    w = Workload(h, cluster.bootstrap(), workdir, java_producers=s.java_producers,
                 py_producers=s.py_producers, rate=s.rate, max_seconds=s.max_seconds,
                 clients=s.clients)
    try:
        t = w.probe_writable(60)
        if t is None:
            raise RuntimeError(f"topic {topic} never writable:\n{cluster.tails()}")
        w.start()
        time.sleep(s.warmup)
        for cycle in range(s.cycles):
            fault = rng.choice(faults)
            try:
                state = partition_state(cluster, topic)
                leaders = {p: st[0] for p, st in state.items()}
            except Exception:  # noqa: BLE001
                leaders = {}
            nodes = sorted(cluster.nodes)
            if leaders and rng.random() < 0.5:
                node = leaders[rng.choice(sorted(leaders))]
                if node not in cluster.nodes:
                    node = rng.choice(nodes)
                why = "leader"
            else:
                node = rng.choice(nodes)
                why = "random"
            rec = {"cycle": cycle, "fault": fault, "node": node, "target": why,
                   "leaders": leaders}
            t0 = time.monotonic()
            hold = rng.uniform(0.5 * s.hold, 2.0 * s.hold)
            rec["hold_s"] = round(hold, 2)
            rec.update(inject(cluster, fault, node, rng, topic))
            # The workload runs with the fault in place; meanwhile, how long until every
            # partition takes an acks=all write again (bounded by the hold)?
            rec["writable_during_fault_s"] = w.probe_writable(
                s.fault_probe if s.fault_probe is not None else hold)
            rest = hold - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
            t1 = time.monotonic()
            heal(cluster, fault, node)
            rec["writable_after_heal_s"] = w.probe_writable(s.heal_bound)
            if fault in ("kill9", "torn", "restart", "torn-all"):
                try:
                    cluster.wait_brokers(timeout=s.converge_bound)
                except Exception as e:  # noqa: BLE001
                    h.notes.append(f"cycle {cycle}: node {node} did not rejoin: {e}")
            secs, reason = wait_converged(cluster, topic, s.partitions, s.converge_bound, wm,
                                          rf=s.rf)
            rec["converged_s"] = secs
            rec["cycle_s"] = round(time.monotonic() - t0, 2)
            rec["heal_to_sync_s"] = round(time.monotonic() - t1, 2)
            h.cycles.append(rec)
            log(f"cycle {cycle}: {fault} node {node} ({why}) "
                f"{rec.get('cuts', '')} writable during {fmt(rec['writable_during_fault_s'])} "
                f"after heal {fmt(rec['writable_after_heal_s'])} in sync {fmt(secs)} "
                f"acks {len(h.acks)} reads {sum(len(v) for v in h.reads.values())}")
            if secs is None:
                h.notes.append(f"cycle {cycle} ({fault} node {node}): not back in sync within "
                               f"{s.converge_bound}s: {reason}")
                log(f"not converged, stopping the schedule: {reason}")
                break
            dead = [n for n in cluster.nodes if not cluster.alive(n)]
            if dead:
                h.notes.append(f"cycle {cycle}: nodes {dead} exited")
                break
    finally:
        cluster.heal()
        for n in cluster.nodes:
            if not cluster.alive(n):
                try:
                    cluster.start_node(n)
                except Exception as e:  # noqa: BLE001
                    h.notes.append(f"node {n} could not be started for the final checks: {e}")
        log("stopping producers")
        stopped = w.stop_producers(timeout=120)
        if not all(stopped.values()):
            h.client_errors.append(("harness", f"producers did not stop cleanly: {stopped}"))
        stopped = w.stop_consumers(timeout=60)
        if not all(stopped.values()):
            h.client_errors.append(("harness", f"consumers did not stop cleanly: {stopped}"))
    # Final state: nothing is written any more; every replica must reach the same end.
    try:
        cluster.wait_brokers(timeout=s.converge_bound)
    except Exception as e:  # noqa: BLE001
        h.notes.append(f"final: not every broker back: {e}")
    secs, reason = wait_converged(cluster, topic, s.partitions, s.converge_bound, wm, exact=True,
                                  rf=s.rf)
    if secs is None:
        h.notes.append(f"final: replicas not in sync within {s.converge_bound}s: {reason}")
    h.hw = wm.get(topic, s.partitions, timeout=60)
    state = partition_state(cluster, topic)
    h.leaders = {p: st[0] for p, st in state.items()}
    h.final, h.final_info = final_read(cluster.bootstrap(), topic, s.partitions, h.hw)
    h.replicas, h.replica_tails = load_replicas(cluster, topic, s.partitions,
                                                {p: st[1] for p, st in state.items()})
    wm.close()
    report = check(h, unavailable_bound=s.heal_bound)
    save(h, report, workdir)
    return h, report


def fmt(t):
    return "-" if t is None else f"{t:.2f}s"


def save(h, report, workdir):
    """history.json and report.txt next to the client logs, for post-mortems."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "history.json", "w") as f:
        json.dump({"seed": getattr(h, "seed", None), "topic": h.topic,
                   "partitions": h.partitions, "acks": h.acks, "errors": h.errors,
                   "acks_no_offset": h.acks_no_offset,
                   "sent": h.sent, "reads": dict(h.reads), "client_errors": h.client_errors,
                   "final": h.final, "final_info": h.final_info, "hw": h.hw,
                   "leaders": h.leaders, "cycles": h.cycles, "notes": h.notes,
                   "replica_tails": h.replica_tails}, f, default=str)
    (workdir / "report.txt").write_text(report.summary(per_kind=50) + "\n")
