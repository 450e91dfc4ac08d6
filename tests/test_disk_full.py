"""Disk full: writes fail with KAFKA_STORAGE_ERROR, reads keep working, nothing written is
damaged, and writes succeed again once space is freed.

The broker's log.dirs is a small ext4 file system on a loop device made for this test (needs
root, as CI runs). Apache Kafka takes a full log dir offline and stops serving it, so this test
is Spool's behaviour only and is skipped with SPOOL_TEST_TARGET=kafka.
"""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import TARGET, Broker, api_round_trip

IMAGE_MB = 24
FILLER_MB = 6
VALUE_BYTES = 64 * 1024
PRODUCE_MAX = 600  # 600 x 64 KiB = 37.5 MiB: more than the file system holds


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


@pytest.fixture()
def small_disk_broker():
    if TARGET != "spool":
        pytest.skip("Apache Kafka takes a full log dir offline; this is Spool's behaviour")
    if os.geteuid() != 0:
        pytest.fail("needs root to mount a loop file system", pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="spool-diskfull-"))
    image = workdir / "disk.img"
    with open(image, "wb") as f:
        f.truncate(IMAGE_MB << 20)
    sh("mkfs.ext4", "-q", "-F", str(image))
    broker = Broker("spool", workdir)
    sh("mount", "-o", "loop", str(image), str(broker.data_dir))
    try:
        filler = broker.data_dir / "filler"
        with open(filler, "wb") as f:
            f.write(b"\xab" * (FILLER_MB << 20))
            os.fsync(f.fileno())
        broker.start()
        yield broker, filler
    finally:
        broker.stop()
        subprocess.run(["umount", str(broker.data_dir)], capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


def produce(bootstrap, topic, start, count):
    """Produces values tagged start..start+count; returns (acked ids, error codes seen)."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0,
                  "enable.idempotence": False, "linger.ms": 0, "message.timeout.ms": 15000,
                  "max.in.flight.requests.per.connection": 1})
    acked, errors = [], []

    def on_delivery(err, msg):
        if err is None:
            acked.append(int(msg.value()[:8]))
        else:
            errors.append(err.code())

    for i in range(start, start + count):
        value = b"%08d" % i + bytes([i % 251]) * (VALUE_BYTES - 8)
        p.produce(topic, value=value, partition=0, on_delivery=on_delivery)
        p.flush(15)
        if errors:
            break
    p.flush(15)
    return acked, errors


def consume_all(bootstrap, topic, expected):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "diskfull-reader",
                  "enable.auto.commit": False, "fetch.max.bytes": 4 << 20})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < expected and time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is None or msg.error():
            continue
        got.append((msg.offset(), msg.value()))
    c.close()
    return got


def test_disk_full_fails_writes_keeps_reads(small_disk_broker):
    broker, filler = small_disk_broker
    topic = "fills-the-disk"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)

    acked, errors = produce(broker.bootstrap, topic, 0, PRODUCE_MAX)
    assert errors, f"the disk never filled after {len(acked)} records"
    assert errors[0] == KafkaError.KAFKA_STORAGE_ERROR, errors
    assert len(acked) > 10, "the file system should hold some records before it fills"
    print(f"disk full after {len(acked)} acked records of {VALUE_BYTES} bytes")
    assert acked == list(range(len(acked)))

    # The broker is alive and serves other requests.
    assert broker.alive()
    api_round_trip(broker.bootstrap)

    # Everything acknowledged is there, intact and in order.
    got = consume_all(broker.bootstrap, topic, len(acked))
    assert [o for o, _ in got] == list(range(len(acked)))
    for offset, value in got:
        assert value == b"%08d" % offset + bytes([offset % 251]) * (VALUE_BYTES - 8)

    # Free space: writes work again and continue the offsets.
    filler.unlink()
    more, errors = produce(broker.bootstrap, topic, len(acked), 20)
    assert not errors, errors
    assert more == list(range(len(acked), len(acked) + 20))
    got = consume_all(broker.bootstrap, topic, len(acked) + 20)
    assert [o for o, _ in got] == list(range(len(acked) + 20))

    # And it all survives a restart.
    broker.restart()
    got = consume_all(broker.bootstrap, topic, len(acked) + 20)
    assert [o for o, _ in got] == list(range(len(acked) + 20))
