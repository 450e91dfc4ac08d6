#!/usr/bin/env python3
"""Transactional throughput and LSO lag (issue 11), Spool and Apache Kafka in one run.

For each target: a fresh single broker (Spool with its defaults, fsync before ack; Kafka from
deploy/kafka.sh with its defaults), a topic of --partitions partitions, then the Kafka Java
client (tests/clients/java, `txn-produce`) runs --transactions transactions of --per-txn
records each, one after the other, committing every one. Reported:
- records/s: committed records / the time from initTransactions' return to the last commit;
- LSO lag: sampled every 50 ms during the run on partition 0, the high watermark minus the
  last stable offset (ListOffsets LATEST with read_uncommitted and read_committed), in records:
  how far a read_committed consumer trails an uncommitted one.
A benchmark, not a test: one run on a shared machine; quote it as such. Only the PIDs this
script started are ever signalled.

    SPOOL_BIN=target/release/spool python3 bench/txn.py --out bench/txn-results.md
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JAR = ROOT / "tests" / "clients" / "java" / "target" / "spool-java-client.jar"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(bootstrap, timeout=120):
    from confluent_kafka.admin import AdminClient
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2).brokers:
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.2)
    raise SystemExit(f"{bootstrap} never became ready")


def start_spool(workdir):
    port = free_port()
    binary = os.environ.get("SPOOL_BIN", str(ROOT / "target" / "release" / "spool"))
    log = open(workdir / "spool.log", "w")
    proc = subprocess.Popen([binary, "broker", "--listeners", f"PLAINTEXT://127.0.0.1:{port}",
                             "--log-dirs", str(workdir / "data")], stdout=log,
                            stderr=subprocess.STDOUT)
    return proc.pid, f"127.0.0.1:{port}", lambda: (proc.send_signal(signal.SIGTERM),
                                                    proc.wait(timeout=60))


def start_kafka(workdir):
    port = free_port()
    out = subprocess.run([str(ROOT / "deploy" / "kafka.sh"), "start", str(workdir / "kafka"),
                          str(port)], capture_output=True, text=True, timeout=400)
    if out.returncode != 0:
        raise SystemExit(f"kafka did not start:\n{out.stderr[-2000:]}")
    pid = int(out.stdout.split()[-1])
    stop = lambda: subprocess.run([str(ROOT / "deploy" / "kafka.sh"), "stop", str(pid)],  # noqa: E731
                                  timeout=120)
    return pid, f"127.0.0.1:{port}", stop


def lso_sampler(bootstrap, topic, stop, samples):
    from confluent_kafka import Consumer, TopicPartition
    tp = TopicPartition(topic, 0)
    plain = Consumer({"bootstrap.servers": bootstrap, "group.id": "lso-probe-u",
                      "isolation.level": "read_uncommitted"})
    committed = Consumer({"bootstrap.servers": bootstrap, "group.id": "lso-probe-c",
                          "isolation.level": "read_committed"})
    try:
        while not stop.is_set():
            try:
                hw = plain.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                lso = committed.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                samples.append(max(hw - lso, 0))
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.05)
    finally:
        plain.close()
        committed.close()


def run(target, args, workdir):
    from confluent_kafka.admin import AdminClient, NewTopic
    pid, bootstrap, stop = (start_spool if target == "spool" else start_kafka)(workdir)
    try:
        wait_ready(bootstrap)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("txn-bench", args.partitions, 1)])["txn-bench"] \
            .result(timeout=60)
        samples, done = [], threading.Event()
        sampler = threading.Thread(target=lso_sampler,
                                   args=(bootstrap, "txn-bench", done, samples))
        sampler.start()
        out = subprocess.run(["java", "-jar", str(JAR), "txn-produce", "--bootstrap", bootstrap,
                              "--topic", "txn-bench", "--partitions", str(args.partitions),
                              "--transactions", str(args.transactions), "--per-txn",
                              str(args.per_txn), "--abort-every", "0",
                              "--transactional-id", "bench-1", "--prefix", "x" * 90],
                             capture_output=True, text=True, timeout=1800)
        done.set()
        sampler.join(timeout=30)
        if out.returncode != 0:
            raise SystemExit(f"{target}: txn-produce failed:\n{out.stderr[-2000:]}")
        committed = out.stdout.count('"outcome":"commit"') * args.per_txn
        elapsed = [l for l in out.stderr.splitlines() if l.startswith("elapsed_ms=")]
        if not elapsed:
            raise SystemExit(f"{target}: no elapsed_ms in\n{out.stderr[-2000:]}")
        elapsed_ms = int(elapsed[-1].split("=")[1])
        print(f"{target}: {committed} records committed in {elapsed_ms} ms, "
              f"{len(samples)} LSO samples", file=sys.stderr)
        return {
            "records_per_s": committed * 1000 / max(elapsed_ms, 1),
            "txn_per_s": committed / args.per_txn * 1000 / max(elapsed_ms, 1),
            "lso_lag_median": statistics.median(samples) if samples else float("nan"),
            "lso_lag_max": max(samples) if samples else float("nan"),
            "samples": len(samples),
        }
    finally:
        stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--transactions", type=int, default=100)
    p.add_argument("--per-txn", type=int, default=1000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--targets", default="spool,kafka")
    p.add_argument("--out")
    args = p.parse_args()
    results = {}
    for target in args.targets.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"txn-bench-{target}-"))
        try:
            results[target] = run(target, args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    lines = [f"Transactions of {args.per_txn} records (~100 B values), {args.transactions} "
             f"committed one after another by one Java producer, {args.partitions} partitions, "
             "one broker each, defaults.", "",
             "| target | records/s | transactions/s | LSO lag median (records) | LSO lag max |",
             "|---|---:|---:|---:|---:|"]
    for target, r in results.items():
        lines.append(f"| {target} | {r['records_per_s']:,.0f} | {r['txn_per_s']:.1f} | "
                     f"{r['lso_lag_median']:.0f} | {r['lso_lag_max']:.0f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    sys.exit(main())
