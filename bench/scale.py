#!/usr/bin/env python3
"""Start and stop time of one broker holding many partitions (issue 12: "10,000 partitions open
and serve within 3 s and stop cleanly within 3 s").

Starts one `spool broker` (its defaults: one shard per core, fsync before ack) on a fresh data
directory, creates one topic of --partitions partitions, writes --records records of 1 KiB to
every partition (so each has a segment, indexes and producer state to open), then --rounds
times: SIGTERM and time until the process exits ("stop s"), start it again and time until (1)
Metadata lists every partition with a leader ("metadata s") and (2) a record produced to the
topic's last partition is acknowledged and fetched back ("serve s"). Prints a markdown table
with each round and the medians (and writes it to --out).

A benchmark, not a test. Every wait is bounded; only the PID this script started is signalled.

    SPOOL_BIN=target/release/spool python3 bench/scale.py --partitions 10000 --out r.md
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 300.0
STOP_TIMEOUT = 300.0
POLL = 0.05


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spool_bin():
    env = os.environ.get("SPOOL_BIN")
    if env:
        return Path(env)
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "spool"


def conf(bootstrap, **extra):
    c = {"bootstrap.servers": bootstrap, "log_level": 2, "socket.timeout.ms": 5000}
    c.update(extra)
    return c


def all_led(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient
    try:
        md = AdminClient(conf(bootstrap)).list_topics(topic=topic, timeout=2)
    except Exception:  # noqa: BLE001 -- not up yet
        return False
    t = md.topics.get(topic)
    return (t is not None and t.error is None and len(t.partitions) == partitions
            and all(p.leader >= 0 for p in t.partitions.values()))


def produce(bootstrap, topic, partitions, records, value):
    """`records` records to each partition; raises unless every one is acknowledged."""
    from confluent_kafka import Producer
    failed = []
    p = Producer(conf(bootstrap, **{"linger.ms": 20, "acks": "all", "message.timeout.ms": 120000,
                                    "queue.buffering.max.messages": 1000000}))
    for _ in range(records):
        for i in range(partitions):
            while True:
                try:
                    p.produce(topic, value, partition=i,
                              on_delivery=lambda err, _m: err and failed.append(err))
                    break
                except BufferError:
                    p.poll(0.1)
    left = p.flush(180)
    if left or failed:
        raise RuntimeError(f"{left} records unsent, {len(failed)} failed: {failed[:3]}")


def fetch_one(bootstrap, topic, partition):
    from confluent_kafka import Consumer, TopicPartition, OFFSET_END
    c = Consumer(conf(bootstrap, **{"group.id": "scale-bench", "enable.auto.commit": False}))
    try:
        tp = TopicPartition(topic, partition, OFFSET_END)
        low, high = c.get_watermark_offsets(tp, timeout=10)
        c.assign([TopicPartition(topic, partition, high - 1)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                return True
        return False
    finally:
        c.close()


class Broker:
    def __init__(self, workdir, port, extra):
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.log_path = workdir / "spool.log"
        self.cmd = [str(spool_bin()), "broker", "--listeners", f"PLAINTEXT://{self.bootstrap}",
                    "--log-dirs", str(workdir / "data")]
        for kv in extra:
            self.cmd += ["--set", kv]
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    def stop(self):
        """SIGTERM; seconds until the process exited (SIGKILL after STOP_TIMEOUT)."""
        t0 = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            raise RuntimeError(f"no clean stop within {STOP_TIMEOUT} s")
        if rc != 0:
            raise RuntimeError(f"broker exited with {rc}")
        return time.monotonic() - t0

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def wait(what, cond, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(POLL)
    raise RuntimeError(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=10000)
    ap.add_argument("--records", type=int, default=1, help="1 KiB records per partition")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], dest="extra",
                    help="extra broker setting key=value (repeatable)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if not spool_bin().exists():
        sys.exit(f"spool binary not found at {spool_bin()} (set SPOOL_BIN)")
    from confluent_kafka.admin import AdminClient, NewTopic

    workdir = Path(tempfile.mkdtemp(prefix="spool-scale-"))
    broker = Broker(workdir, free_port(), args.extra)
    topic, n = "scale", args.partitions
    rows = []
    try:
        broker.start()
        wait("the broker", lambda: AdminClient(conf(broker.bootstrap)).list_topics(timeout=2)
             is not None)
        # Kept alive until the future resolves; creating many partitions takes a while.
        creator = AdminClient(conf(broker.bootstrap, **{"socket.timeout.ms": 300000}))
        fs = creator.create_topics(
            [NewTopic(topic, num_partitions=n, replication_factor=1)], request_timeout=300)
        t0 = time.monotonic()
        fs[topic].result(timeout=310)
        print(f"created {n} partitions in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        wait("every partition led", lambda: all_led(broker.bootstrap, topic, n))
        t0 = time.monotonic()
        produce(broker.bootstrap, topic, n, args.records, b"x" * 1024)
        print(f"wrote {args.records} x 1 KiB to each of {n} partitions in "
              f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
        for r in range(1, args.rounds + 1):
            stop_s = broker.stop()
            t0 = time.monotonic()
            broker.start()
            wait("Metadata of every partition", lambda: all_led(broker.bootstrap, topic, n))
            metadata_s = time.monotonic() - t0
            produce(broker.bootstrap, topic, 1, 1, b"y")
            if not fetch_one(broker.bootstrap, topic, 0):
                raise RuntimeError("the record just produced was not fetched back")
            serve_s = time.monotonic() - t0
            rows.append((stop_s, metadata_s, serve_s))
            print(f"round {r}: stop {stop_s:.2f} s, metadata {metadata_s:.2f} s, "
                  f"serve {serve_s:.2f} s", file=sys.stderr)
        broker.stop()
    except BaseException:
        sys.stderr.write(f"--- {broker.log_path} (tail) ---\n")
        try:
            sys.stderr.write("\n".join(broker.log_path.read_text(errors="replace")
                                       .splitlines()[-30:]) + "\n")
        except OSError:
            pass
        broker.kill()
        raise
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    med = [statistics.median(col) for col in zip(*rows)]
    lines = [f"`SPOOL_BIN={spool_bin()} python3 bench/scale.py --partitions {n} "
             f"--records {args.records} --rounds {args.rounds}`", "",
             "| round | stop s | metadata s | serve s |", "|---|---:|---:|---:|"]
    lines += [f"| {i} | {s:.2f} | {m:.2f} | {v:.2f} |" for i, (s, m, v) in enumerate(rows, 1)]
    lines.append(f"| median | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
