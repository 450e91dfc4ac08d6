#!/usr/bin/env python3
"""confluent-kafka (librdkafka) client helper. Interface: see clientcli.py."""
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clientcli  # noqa: E402
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING  # noqa: E402


def produce(a):
    records = clientcli.read_records(a.input)
    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "compression.type": a.compression,
        "acks": a.acks,
        # Idempotence is what the Java client defaults to; keep librdkafka's
        # default (off) so the two clients exercise different paths.
        "message.timeout.ms": 30000,
        "linger.ms": 5,
    })
    results = [None] * len(records)
    errors = []

    def cb(i):
        def _cb(err, msg):
            if err is not None:
                errors.append(f"record {i}: {err}")
            else:
                results[i] = (msg.partition(), msg.offset())
        return _cb

    for i, r in enumerate(records):
        kw = {"headers": r["headers"]} if r["headers"] else {}
        if r["partition"] is not None:
            kw["partition"] = r["partition"]
        while True:
            try:
                p.produce(a.topic, value=r["value"], key=r["key"], on_delivery=cb(i), **kw)
                break
            except BufferError:
                p.poll(0.1)
    left = p.flush(60)
    if left:
        clientcli.die(f"{left} messages not delivered")
    if errors:
        clientcli.die("\n".join(errors))
    for part, off in results:
        clientcli.emit({"partition": part, "offset": off})


def consume(a):
    # The Python wrapper insists on group.id even for assign(); no subscribe()
    # and no commits happen, so no group protocol is used beyond librdkafka
    # possibly looking up the coordinator.
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": "spool-test-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    })
    c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in range(a.partitions)])
    got = 0
    deadline = time.monotonic() + a.timeout_ms / 1000.0
    try:
        while got < a.count:
            left = deadline - time.monotonic()
            if left <= 0:
                clientcli.die(f"timeout: got {got} of {a.count} records")
            msg = c.poll(min(left, 0.5))
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            _, ts = msg.timestamp()
            clientcli.emit_record(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                  msg.headers(), ts)
            got += 1
    finally:
        c.close()


def main():
    a = clientcli.parse_args()
    {"produce": produce, "consume": consume}[a.cmd](a)


if __name__ == "__main__":
    main()
