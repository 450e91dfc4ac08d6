"""The broker fixture itself: restart (SIGTERM) and kill -9 keep acknowledged data."""
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING

from test_clients import create_topic


def _produce(bootstrap, topic, n, tag):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": 30000})
    errs = []
    for i in range(n):
        p.produce(topic, key=f"{tag}-{i}".encode(), value=f"{tag}-value-{i}".encode(),
                  partition=i % 2, on_delivery=lambda e, m: e and errs.append(e))
    assert p.flush(60) == 0
    assert not errs, errs


def _read_all(bootstrap, topic, expect, partitions=2, timeout=30):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lifecycle-{time.time_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expect and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.append((m.partition(), m.offset(), m.key(), m.value()))
    finally:
        c.close()
    return got


def test_restart_keeps_data(broker):
    topic = "lifecycle-restart"
    create_topic(broker.bootstrap, topic, partitions=2)
    _produce(broker.bootstrap, topic, 20, "a")
    old_pid = broker.pid
    broker.restart()
    assert broker.pid != old_pid
    got = _read_all(broker.bootstrap, topic, 20)
    assert sorted(k for _, _, k, _ in got) == sorted(f"a-{i}".encode() for i in range(20))
    # A clean stop closes every log, the metadata log included: nothing to recover.
    if broker.kind == "spool":
        assert "truncating the invalid tail" not in broker.log_path.read_text(errors="replace")
    # and it still accepts writes, continuing the offsets
    _produce(broker.bootstrap, topic, 10, "b")
    got = _read_all(broker.bootstrap, topic, 30)
    assert len(got) == 30
    for p in (0, 1):
        offs = [o for q, o, _, _ in got if q == p]
        assert offs == list(range(15)), offs


def test_kill9_keeps_acked_data(broker):
    topic = "lifecycle-kill9"
    create_topic(broker.bootstrap, topic, partitions=2)
    _produce(broker.bootstrap, topic, 20, "k")
    broker.kill9()
    assert broker.pid is None
    broker.restart()
    got = _read_all(broker.bootstrap, topic, 20)
    assert sorted(k for _, _, k, _ in got) == sorted(f"k-{i}".encode() for i in range(20))
