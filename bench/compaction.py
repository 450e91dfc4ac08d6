#!/usr/bin/env python3
"""Log compaction throughput and memory (issue 11), Spool only.

A fresh Spool broker (defaults, fsync before ack) with `log.cleaner.dedupe.buffer.size` =
--map-mib (split between its --cores shards) and `log.cleaner.backoff.ms=1000`; one partition
of a topic with `cleanup.policy=compact` and `segment.bytes` = --segment-mib. A confluent-kafka
producer writes --mib MiB of uncompressed records (--value-bytes random values) over --keys
distinct keys, spread evenly (each key written about mib / (keys × value) times), then one
more record after `segment.ms` rolls the last segment. `min.compaction.lag.ms` holds every round
back until the input is written. The cleaner's own log lines ("cleaned":
bytes read and written, keys in the map, wall time of the round) give:
- throughput: bytes read / wall time, summed over the rounds (the rounds read the dirty
  range for the map and every cleaned segment for the rewrite, so a byte may be read twice);
- memory: the broker's peak RSS (VmHWM) before the first round and at the end; the map's
  bound is --map-mib / cores per shard; the rounds' key counts show when the map filled.
A benchmark, not a test: one run on a shared machine. Only the PID it started is signalled.

    SPOOL_BIN=target/release/spool python3 bench/compaction.py --out bench/compaction-results.md
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# No round starts before the whole input is written, so the RSS measured then is the
# broker's before any cleaning.
LAG_MS = 20_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_hwm_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cleaned_lines(log_path):
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if "cleaned" not in line or "dirty_start" not in line:
            continue
        fields = dict(re.findall(r"(\w+)=([0-9]+)", line))
        out.append({k: int(v) for k, v in fields.items()})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=200)
    ap.add_argument("--segment-mib", type=int, default=64)
    ap.add_argument("--map-mib", type=int, default=32)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    workdir = Path(tempfile.mkdtemp(prefix="spool-bench-compaction-"))
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    binary = os.environ.get("SPOOL_BIN", str(ROOT / "target" / "release" / "spool"))
    log_path = workdir / "spool.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [binary, "broker", "--listeners", f"PLAINTEXT://{bootstrap}",
         "--log-dirs", str(workdir / "data"), "--cores", str(args.cores),
         "--set", f"log.cleaner.dedupe.buffer.size={args.map_mib << 20}",
         "--set", "log.cleaner.backoff.ms=1000"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SPOOL_LOG": "info"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2).brokers:
                    break
            except Exception:  # noqa: BLE001
                pass
            assert time.monotonic() < deadline, "broker never became ready"
            time.sleep(0.2)
        topic = "compacted"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1, config={
            "cleanup.policy": "compact", "segment.bytes": str(args.segment_mib << 20),
            "segment.ms": "2000", "min.compaction.lag.ms": str(LAG_MS)})])[topic].result(
                timeout=30)
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                      "queue.buffering.max.kbytes": 1 << 20, "acks": "all"})
        rng = random.Random(7)
        pool = [rng.randbytes(args.value_bytes) for _ in range(1024)]
        total = args.mib << 20
        written = records = 0
        started = time.monotonic()
        while written < total:
            key = b"key-%09d" % (records % args.keys)
            value = pool[records % len(pool)]
            while True:
                try:
                    p.produce(topic, key=key, value=value)
                    break
                except BufferError:
                    p.poll(0.05)
            written += len(key) + len(value)
            records += 1
            if records % 10000 == 0:
                p.poll(0)
        assert p.flush(300) == 0
        produce_s = time.monotonic() - started
        time.sleep(2.5)
        p.produce(topic, key=b"roll", value=b"roll")
        assert p.flush(30) == 0
        hwm_before = rss_hwm_kib(proc.pid)
        # Rounds run until one finds nothing due; wait for the log to go quiet.
        quiet_since, seen = time.monotonic(), 0
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            lines = cleaned_lines(log_path)
            if len(lines) != seen:
                seen, quiet_since = len(lines), time.monotonic()
            elif seen and time.monotonic() - quiet_since > 20:
                break
            time.sleep(1)
        rounds = [r for r in cleaned_lines(log_path) if r.get("elapsed_ms") is not None]
        hwm_after = rss_hwm_kib(proc.pid)
        rss_after = rss_kib(proc.pid)
        read = sum(r["read"] for r in rounds)
        wrote = sum(r["written"] for r in rounds)
        wall_ms = sum(r["elapsed_ms"] for r in rounds)
        shard_map_mib = args.map_mib / args.cores
        rows = [
            "| round | dirty range | read MiB | written MiB | keys in map | s | MB/s |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for i, r in enumerate(rounds, 1):
            secs = max(r["elapsed_ms"], 1) / 1000
            rows.append(f"| {i} | {r['dirty_start']}..{r['dirty_end']} | "
                        f"{r['read'] / 2**20:.1f} | {r['written'] / 2**20:.1f} | {r['keys']:,} | "
                        f"{secs:.1f} | {r['read'] / 1e6 / secs:.0f} |")
        report = "\n".join([
            "# Log compaction: throughput and memory (bench/compaction.py)",
            "",
            f"`SPOOL_BIN=target/release/spool python3 bench/compaction.py --mib {args.mib} "
            f"--keys {args.keys} --value-bytes {args.value_bytes} --segment-mib "
            f"{args.segment_mib} --map-mib {args.map_mib} --cores {args.cores}`",
            "",
            f"Produced {written / 2**20:.0f} MiB ({records:,} records over {args.keys:,} keys) "
            f"in {produce_s:.1f} s. Offset map budget {shard_map_mib:.0f} MiB per shard "
            f"({int(shard_map_mib * 2**20) // 40:,} keys).",
            "",
            *rows,
            "",
            f"**Throughput**: {read / 2**20:.0f} MiB read and {wrote / 2**20:.0f} MiB written "
            f"in {wall_ms / 1000:.1f} s of rounds: **{read / 1e6 / max(wall_ms / 1000, 1e-3):.0f} "
            f"MB/s read** ({(read + wrote) / 1e6 / max(wall_ms / 1000, 1e-3):.0f} MB/s read + "
            f"written).",
            "",
            f"**Memory**: peak RSS {hwm_before / 1024:.0f} MiB after producing, before any "
            f"round; {hwm_after / 1024:.0f} MiB after the rounds (+{(hwm_after - hwm_before) / 1024:.0f} "
            f"MiB); RSS at the end {rss_after / 1024:.0f} MiB. The map's bound: "
            f"{shard_map_mib:.0f} MiB per shard.",
            "",
        ])
        print(report)
        if args.out:
            Path(args.out).write_text(report)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
