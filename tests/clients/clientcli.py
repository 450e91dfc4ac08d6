"""Shared CLI plumbing for the Python client helpers (py_confluent.py, py_kafka.py).

Interface (identical for every client helper, see tests/clients/README.md):

  produce --bootstrap H:P --topic T --compression {none,gzip,snappy,lz4,zstd}
          --acks {0,1,all} --input records.jsonl
      input line: {"partition": int|null, "key": b64|null, "value": b64|null,
                   "headers": [[name, b64|null], ...]}
      stdout: one {"partition": p, "offset": o} per input record, in input order.
      exit != 0 on any delivery error.

  consume --bootstrap H:P --topic T --partitions N --count C --timeout-ms X
      manual assignment of partitions 0..N-1 from the beginning (no groups).
      stdout: one {"partition","offset","key","value","headers","timestamp"} per record.
      exit != 0 if fewer than C records arrived before the timeout.
"""
import argparse
import base64
import json
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("--bootstrap", required=True)
    pr.add_argument("--topic", required=True)
    pr.add_argument("--compression", default="none",
                    choices=["none", "gzip", "snappy", "lz4", "zstd"])
    pr.add_argument("--acks", default="all", choices=["0", "1", "all", "-1"])
    pr.add_argument("--input", required=True)
    co = sub.add_parser("consume")
    co.add_argument("--bootstrap", required=True)
    co.add_argument("--topic", required=True)
    co.add_argument("--partitions", type=int, required=True)
    co.add_argument("--count", type=int, required=True)
    co.add_argument("--timeout-ms", type=int, default=30000)
    return p.parse_args(argv)


def b64d(s):
    return None if s is None else base64.b64decode(s)


def b64e(b):
    return None if b is None else base64.b64encode(bytes(b)).decode("ascii")


def read_records(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            out.append({
                "partition": r.get("partition"),
                "key": b64d(r.get("key")),
                "value": b64d(r.get("value")),
                "headers": [(h[0], b64d(h[1])) for h in (r.get("headers") or [])],
            })
    return out


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")


def emit_record(partition, offset, key, value, headers, timestamp):
    emit({
        "partition": partition,
        "offset": offset,
        "key": b64e(key),
        "value": b64e(value),
        "headers": [[k, b64e(v)] for k, v in (headers or [])],
        "timestamp": timestamp,
    })


def die(msg):
    sys.stderr.write(msg.rstrip() + "\n")
    sys.stdout.flush()
    sys.exit(1)
