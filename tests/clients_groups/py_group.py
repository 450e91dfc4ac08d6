#!/usr/bin/env python3
"""Python consumer-group members for tests/test_groups.py (confluent-kafka or kafka-python).

    py_group.py --client {confluent,kafka-python} --bootstrap H:P --topic T --group G
                [--members N] [--name PREFIX] [--max-runtime-s S] [--prop k=v]...

N members (one thread each) in one group, subscribed to T, auto commit off: a member
commits synchronously after every poll that returned records and again when partitions
are revoked. On stdin "stop" (or EOF, or after --max-runtime-s) every member commits,
closes, and the process exits 0. stdout lines are those of GroupConsumer.java:
    own <member> <generation|-1> <p,p,...|->
    rec <member> <partition> <offset> <value>
    closed <member>
    error <member> <message>
"""
import argparse
import sys
import threading
import time

LOCK = threading.Lock()
STOP = threading.Event()


def out(line):
    with LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fmt(owned):
    return ",".join(str(p) for p in sorted(owned)) or "-"


def value_text(v):
    return "-" if v is None else v.decode("utf-8", "replace")


def run_confluent(member, args, props):
    from confluent_kafka import Consumer, KafkaException

    conf = {"bootstrap.servers": args.bootstrap, "group.id": args.group, "client.id": member,
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    conf.update(props)
    c = Consumer(conf)
    owned = set()

    def commit(what):
        try:
            c.commit(asynchronous=False)
        except KafkaException as e:
            if "NO_OFFSET" not in str(e):  # nothing consumed since the last commit
                out(f"error {member} {what} {e}")

    def on_assign(_c, parts):
        owned.update(p.partition for p in parts)
        out(f"own {member} -1 {fmt(owned)}")

    def on_revoke(_c, parts):
        commit("commit-on-revoke")
        owned.difference_update(p.partition for p in parts)
        out(f"own {member} -1 {fmt(owned)}")

    def on_lost(_c, parts):
        owned.difference_update(p.partition for p in parts)
        out(f"own {member} -1 {fmt(owned)}")

    c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    try:
        while not STOP.is_set():
            msgs = c.consume(num_messages=500, timeout=0.1)
            got = []
            for m in msgs:
                if m.error() is not None:
                    out(f"error {member} {m.error()}")
                    continue
                got.append(f"rec {member} {m.partition()} {m.offset()} {value_text(m.value())}")
            if got:
                out("\n".join(got))
                commit("commit")
        commit("final-commit")
    finally:
        c.close()
    out(f"closed {member}")


def run_kafka_python(member, args, props):
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    conf = dict(bootstrap_servers=args.bootstrap, group_id=args.group, client_id=member,
                enable_auto_commit=False, auto_offset_reset="earliest")
    for k, v in props.items():
        conf[k] = int(v) if v.isdigit() else v
    c = KafkaConsumer(**conf)
    owned = set()

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            try:
                c.commit()
            except Exception as e:  # noqa: BLE001
                out(f"error {member} commit-on-revoke {e!r}")
            owned.difference_update(tp.partition for tp in revoked)
            out(f"own {member} -1 {fmt(owned)}")

        def on_partitions_assigned(self, assigned):
            owned.update(tp.partition for tp in assigned)
            out(f"own {member} -1 {fmt(owned)}")

    c.subscribe(topics=[args.topic], listener=Listener())
    try:
        while not STOP.is_set():
            batches = c.poll(timeout_ms=100)
            got = [f"rec {member} {r.partition} {r.offset} {value_text(r.value)}"
                   for recs in batches.values() for r in recs]
            if got:
                out("\n".join(got))
                c.commit()
        c.commit()
    finally:
        c.close()
    out(f"closed {member}")


def member_main(run, member, args, props):
    try:
        run(member, args, props)
    except Exception as e:  # noqa: BLE001
        out(f"error {member} {e!r}")
        out(f"closed {member}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True, choices=["confluent", "kafka-python"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--name", default="py")
    ap.add_argument("--max-runtime-s", type=float, default=150)
    ap.add_argument("--prop", action="append", default=[])
    args = ap.parse_args()
    props = dict(kv.split("=", 1) for kv in args.prop)
    run = run_confluent if args.client == "confluent" else run_kafka_python
    names = [args.name] if args.members == 1 else [f"{args.name}-{i}" for i in range(args.members)]
    threads = [threading.Thread(target=member_main, args=(run, n, args, props), daemon=True)
               for n in names]
    for t in threads:
        t.start()

    def stdin_reader():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        STOP.set()

    threading.Thread(target=stdin_reader, daemon=True).start()
    deadline = time.monotonic() + args.max_runtime_s
    while not STOP.is_set() and time.monotonic() < deadline and any(t.is_alive() for t in threads):
        time.sleep(0.1)
    STOP.set()
    for t in threads:
        t.join(timeout=30)
    sys.exit(0)


if __name__ == "__main__":
    main()
