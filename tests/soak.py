#!/usr/bin/env python3
"""Fault soak: many fault cycles against a 3-node cluster, then the safety checker; writes a
report (faults run, time to writable during faults and after heals: median/max, violations).

    python3 tests/soak.py --target kafka --cycles 300 --report soak-kafka.txt
    SPOOL_BIN=target/release/spool python3 tests/soak.py --target spool --cycles 300
    python3 tests/soak.py --target kafka --cycles 20 --seed 1234     # replay a seed

Cycles run in rounds (--round, default 100) on fresh clusters, so one long run is several
independent histories; each round's seed is printed and reported. Exit status 1 on any
violation. The work directories of rounds with violations are kept (path in the report).
Needs root for the network faults (iptables, cgroup2); without them they are left out.
"""
import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replication.cluster import make_cluster  # noqa: E402
from replication.schedule import ALL_FAULTS, Settings, run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--target", choices=("kafka", "spool"), default="spool")
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--round", type=int, default=100, help="cycles per fresh cluster")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rf", type=int, default=3,
                    help="replication factor (1: smoke-test the harness on a build without "
                         "replication)")
    ap.add_argument("--hold", type=float, default=2.0)
    ap.add_argument("--fault-probe", type=float, default=None,
                    help="bound of the writability probe during a fault (default: the cycle's hold)")
    ap.add_argument("--heal-bound", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=50.0, help="records/s per producer")
    ap.add_argument("--faults", default=",".join(ALL_FAULTS))
    ap.add_argument("--clients", default="java,confluent")
    ap.add_argument("--keep", action="store_true", help="keep every round's work dir")
    ap.add_argument("--report", default=None, help="also write the report to this file")
    a = ap.parse_args()

    master = random.Random(a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32))
    rounds = []
    left = a.cycles
    failed = False
    started = time.monotonic()
    while left > 0:
        n = min(a.round, left)
        left -= n
        seed = a.seed if (a.seed is not None and not rounds) else master.randrange(1 << 32)
        cluster = make_cluster(a.target)
        keep = a.keep
        try:
            cluster.start()
            s = Settings(cycles=n, seed=seed, partitions=a.partitions, rf=a.rf, hold=a.hold,
                         fault_probe=a.fault_probe,
                         heal_bound=a.heal_bound, rate=a.rate, faults=a.faults.split(","),
                         clients=a.clients.split(","),
                         max_seconds=max(600.0, n * 120.0))
            h, report = run(cluster, s)
            print(report.summary(), flush=True)
            rounds.append((seed, h, report, cluster.workdir))
            if not report.ok:
                failed = keep = True
        except Exception as e:  # noqa: BLE001
            failed = keep = True
            print(f"round with seed {seed} aborted: {type(e).__name__}: {e}\n{cluster.tails()}",
                  flush=True)
            rounds.append((seed, None, None, cluster.workdir))
        finally:
            cluster.close(keep=keep)
    text = report_text(a, rounds, time.monotonic() - started)
    print(text)
    if a.report:
        Path(a.report).write_text(text + "\n")
    sys.exit(1 if failed else 0)


def dist(values):
    if not values:
        return "-"
    return (f"median {statistics.median(values):.2f}s, max {max(values):.2f}s, "
            f"n={len(values)}")


def report_text(a, rounds, elapsed):
    cycles = [c for _s, h, _r, _w in rounds if h for c in h.cycles]
    lines = [f"# Fault soak: target {a.target}, {len(cycles)} cycles in {len(rounds)} round(s), "
             f"{elapsed / 60:.1f} min", ""]
    by_fault = {}
    for c in cycles:
        by_fault.setdefault(c["fault"], []).append(c)
    lines.append("| fault | cycles | writable during fault | writable after heal | back in sync |")
    lines.append("|---|---|---|---|---|")
    for f, cs in sorted(by_fault.items()):
        during = [c["writable_during_fault_s"] for c in cs if c["writable_during_fault_s"] is not None]
        after = [c["writable_after_heal_s"] for c in cs if c["writable_after_heal_s"] is not None]
        sync = [c["converged_s"] for c in cs if c.get("converged_s") is not None]
        lines.append(f"| {f} | {len(cs)} | {dist(during)} ({len(cs) - len(during)} not within "
                     f"the probe bound) | {dist(after)} | {dist(sync)} |")
    after = [c["writable_after_heal_s"] for c in cycles if c["writable_after_heal_s"] is not None]
    lines += ["", f"time to first acks=all write on every partition after heal: {dist(after)}"]
    lines.append("")
    total = {}
    for seed, h, r, workdir in rounds:
        if r is None:
            lines.append(f"- seed {seed}: ABORTED (work dir {workdir})")
            continue
        for k, v in r.counts().items():
            total[k] = total.get(k, 0) + v
        warn = {k: len(v) for k, v in r.warnings.items()}
        lines.append(f"- seed {seed}: {len(h.cycles)} cycles, {r.stats['acked']} acked, "
                     f"{'OK' if r.ok else 'VIOLATIONS ' + str(r.counts()) + ' work dir ' + str(workdir)}"
                     f"{', warnings ' + str(warn) if warn else ''}")
    lines += ["", f"violations: {total or 'none'}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
