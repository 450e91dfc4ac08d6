#!/usr/bin/env python3
"""confluent-kafka (librdkafka) side of the fault-test workload; same CLI and output lines
as FaultClient.java:

  py_client.py produce BOOTSTRAP TOPIC PARTITIONS LABELS RATE MAX_SECONDS
  py_client.py consume BOOTSTRAP TOPIC PARTITIONS LABEL - MAX_SECONDS

  ack <label> <seq> <partition> <offset> | err <label> <seq> <error> | sent <label> <count>
  rec <label> <partition> <offset> <value> | cerr <label> <error> | done

Stops at stdin EOF or after MAX_SECONDS. A producer whose idempotence state becomes fatal
(librdkafka raises a fatal error) is replaced by a new instance under the same label: its
sequence numbers keep counting, so values stay unique.
"""
import sys
import threading
import time

import os

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

STOP = threading.Event()
OUT_LOCK = threading.Lock()


def line(s):
    with OUT_LOCK:
        sys.stdout.write(s + "\n")
        sys.stdout.flush()


def watch(max_seconds):
    def stdin_eof():
        try:
            while sys.stdin.buffer.read(256):
                pass
        except Exception:  # noqa: BLE001
            pass
        STOP.set()

    threading.Thread(target=stdin_eof, daemon=True).start()
    t = threading.Timer(max_seconds, STOP.set)
    t.daemon = True
    t.start()


def one_line(e):
    return str(e).replace("\n", " ")


def new_producer(bootstrap, label):
    fatal = []

    def on_error(err):
        if err.fatal():
            fatal.append(err)
            line(f"cerr {label} fatal producer error: {one_line(err)}")

    p = Producer({
        "bootstrap.servers": bootstrap,
        "client.id": f"fault-{label}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "request.timeout.ms": 5000,
        "topic.metadata.refresh.interval.ms": 5000,
        "error_cb": on_error,
        # SPOOL_FAULT_RDKAFKA_DEBUG=eos,msg: librdkafka's own account (stderr, kept in the
        # cluster's work dir) of which request failed how, when a loss needs explaining.
        **({"debug": os.environ["SPOOL_FAULT_RDKAFKA_DEBUG"]}
           if os.environ.get("SPOOL_FAULT_RDKAFKA_DEBUG") else {}),
    })
    return p, fatal


def produce(bootstrap, topic, partitions, labels, rate):
    state = []
    for label in labels:
        p, fatal = new_producer(bootstrap, label)
        state.append({"label": label, "p": p, "fatal": fatal, "seq": 0, "old": []})
    def poll(s, timeout=0):
        """poll() raises a fatal idempotence error (e.g. OUT_OF_ORDER_SEQUENCE_NUMBER): the
        instance is then retired (its unresolved records stay unresolved) and replaced."""
        try:
            s["p"].poll(timeout)
        except KafkaException as e:
            line(f"cerr {s['label']} {one_line(e)}")
            if not s["fatal"]:
                s["fatal"].append(e)

    start = time.monotonic()
    i = 0
    while not STOP.is_set():
        due = start + i / (rate * len(labels))
        wait = due - time.monotonic()
        if wait > 0:
            for s in state:
                poll(s)
            time.sleep(min(wait, 0.05))
            continue
        s = state[i % len(labels)]
        i += 1
        if s["fatal"]:
            s["old"].append(s["p"])
            s["p"], s["fatal"] = new_producer(bootstrap, s["label"])
        label, seq = s["label"], s["seq"]
        s["seq"] += 1

        def report(err, msg, label=label, seq=seq):
            if err is None:
                # offset() is None when librdkafka acknowledges without one (a retried batch
                # the broker answered as a duplicate): reported as -1.
                o = msg.offset()
                line(f"ack {label} {seq} {msg.partition()} {-1 if o is None else o}")
            else:
                line(f"err {label} {seq} {one_line(err)}")

        while True:
            try:
                s["p"].produce(topic, value=f"{label}-{seq}".encode(), partition=seq % partitions,
                               on_delivery=report)
                break
            except BufferError:
                poll(s, 0.1)
            except Exception as e:  # noqa: BLE001
                line(f"err {label} {seq} {one_line(e)}")
                break
        poll(s)
    for s in state:
        line(f"sent {s['label']} {s['seq']}")
    deadline = time.monotonic() + 60
    for s in state:
        for p in s["old"] + [s["p"]]:
            try:
                p.flush(max(0.0, deadline - time.monotonic()))
            except KafkaException as e:
                line(f"cerr {s['label']} {one_line(e)}")
    line("done")


def consume(bootstrap, topic, partitions, label):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"fault-{label}-{time.time_ns()}",  # never committed, needed for assign()
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",  # no silent reset: reported as cerr
        "client.id": f"fault-{label}",
        "topic.metadata.refresh.interval.ms": 5000,
        "socket.timeout.ms": 5000,
    })
    nxt = {p: 0 for p in range(partitions)}
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    while not STOP.is_set():
        try:
            msgs = c.consume(500, 0.2)
        except KafkaException as e:
            line(f"cerr {label} {one_line(e)}")
            time.sleep(0.2)
            continue
        out = []
        for m in msgs:
            if m.error():
                line(f"cerr {label} {one_line(m.error())}")
                if m.error().code() == KafkaError._AUTO_OFFSET_RESET and m.partition() is not None:
                    # Keep the position (no silent reset); a partition in an erroneous state
                    # refuses seek(), so then the whole assignment is renewed at the positions.
                    try:
                        c.seek(TopicPartition(topic, m.partition(), nxt[m.partition()]))
                    except KafkaException:
                        c.assign([TopicPartition(topic, p, o) for p, o in sorted(nxt.items())])
                    time.sleep(0.2)
                continue
            v = m.value()
            v = "<null>" if v is None else v.decode("utf-8", "replace")
            out.append(f"rec {label} {m.partition()} {m.offset()} {v}")
            nxt[m.partition()] = m.offset() + 1
        if out:
            with OUT_LOCK:
                sys.stdout.write("\n".join(out) + "\n")
                sys.stdout.flush()
    c.close()
    line("done")


def main():
    if len(sys.argv) != 8:
        sys.stderr.write(__doc__)
        sys.exit(2)
    mode, bootstrap, topic, partitions, labels, rate, max_seconds = sys.argv[1:]
    watch(float(max_seconds))
    code = 0
    try:
        if mode == "produce":
            produce(bootstrap, topic, int(partitions), labels.split(","), float(rate))
        else:
            consume(bootstrap, topic, int(partitions), labels)
    except BaseException as e:  # noqa: BLE001
        line(f"cerr {labels} client crashed: {type(e).__name__}: {one_line(e)}")
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: the stdin watcher may still be blocked in read(), and interpreter
    # finalization then aborts ("could not acquire lock for <stdin>").
    os._exit(code)


if __name__ == "__main__":
    main()
