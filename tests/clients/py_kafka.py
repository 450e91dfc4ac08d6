#!/usr/bin/env python3
"""kafka-python client helper. Interface: see clientcli.py."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clientcli  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402


def produce(a):
    records = clientcli.read_records(a.input)
    acks = {"0": 0, "1": 1, "all": "all", "-1": "all"}[a.acks]
    p = KafkaProducer(
        bootstrap_servers=a.bootstrap,
        compression_type=None if a.compression == "none" else a.compression,
        acks=acks,
        linger_ms=5,
        request_timeout_ms=30000,
    )
    futures = []
    for r in records:
        kw = {}
        if r["partition"] is not None:
            kw["partition"] = r["partition"]
        futures.append(p.send(a.topic, value=r["value"], key=r["key"],
                              headers=list(r["headers"]), **kw))
    p.flush(timeout=60)
    out, errors = [], []
    for i, f in enumerate(futures):
        try:
            md = f.get(timeout=30)
            out.append({"partition": md.partition, "offset": md.offset})
        except Exception as e:  # noqa: BLE001
            errors.append(f"record {i}: {e!r}")
    p.close(timeout=10)
    if errors:
        clientcli.die("\n".join(errors))
    for o in out:
        clientcli.emit(o)


def consume(a):
    c = KafkaConsumer(
        bootstrap_servers=a.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    tps = [TopicPartition(a.topic, p) for p in range(a.partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = 0
    deadline = time.monotonic() + a.timeout_ms / 1000.0
    try:
        while got < a.count:
            left = deadline - time.monotonic()
            if left <= 0:
                clientcli.die(f"timeout: got {got} of {a.count} records")
            batch = c.poll(timeout_ms=int(min(left, 0.5) * 1000))
            # poll() returns {tp: [records]}; keep per-partition order.
            for tp, recs in sorted(batch.items(), key=lambda kv: kv[0].partition):
                for m in recs:
                    clientcli.emit_record(m.partition, m.offset, m.key, m.value,
                                          m.headers, m.timestamp)
                    got += 1
    finally:
        c.close()


def main():
    a = clientcli.parse_args()
    {"produce": produce, "consume": consume}[a.cmd](a)


if __name__ == "__main__":
    main()
