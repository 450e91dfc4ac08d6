"""Compaction of `__consumer_offsets` by the log cleaner (Spool-only: Kafka's cleaner has
other timing and grouping, so this module skips under SPOOL_TEST_TARGET=kafka).

A broker with `offsets.topic.segment.bytes=1048576` and one offsets partition gets ~8 MiB of
offset commits for one group (4000-byte metadata), so `__consumer_offsets-0` rolls many
segments; the shard's log cleaner keeps each key's latest record (offsets preserved) and
merges the emptied segments until the directory holds at most 3 `.log` files. After a restart (SIGTERM) the last commit
(offset and metadata) is what OffsetFetch answers, and a group deleted (DeleteGroups) before
the compaction stays deleted; a transactional offset commit stays committed and an aborted
one never becomes an offset.
"""
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import TARGET, running_broker
from test_offsets import TunedBroker

pytestmark = pytest.mark.skipif(TARGET == "kafka", reason="Spool's offsets compaction")

SETTINGS = {"offsets.topic.segment.bytes": "1048576", "offsets.topic.num.partitions": "1",
            "log.cleaner.backoff.ms": "500"}
COMMITS = 2000
METADATA_BYTES = 4000
COMPACTION_WAIT_S = 60
LOG_FILES_MAX = 3


class CompactionBroker(TunedBroker):
    settings = SETTINGS


@pytest.fixture(scope="module")
def cbroker():
    yield from running_broker(CompactionBroker, "compaction")


def consumer(bootstrap, group):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False, "session.timeout.ms": 6000})


def commit(bootstrap, group, topic, offsets):
    """Commits (offset, metadata) pairs one request at a time, in order."""
    c = consumer(bootstrap, group)
    try:
        for offset, metadata in offsets:
            c.commit(offsets=[TopicPartition(topic, 0, offset, metadata=metadata)],
                     asynchronous=False)
    finally:
        c.close()


def committed(bootstrap, group, topic):
    c = consumer(bootstrap, group)
    try:
        tp = c.committed([TopicPartition(topic, 0)], timeout=30)[0]
        return tp.offset, tp.metadata
    finally:
        c.close()


def log_files(b):
    d = b.data_dir / "__consumer_offsets-0"
    return sorted(p.name for p in d.iterdir() if p.suffix == ".log")


def log_bytes(b):
    d = b.data_dir / "__consumer_offsets-0"
    return sum(p.stat().st_size for p in d.iterdir() if p.suffix == ".log")


def test_offsets_log_is_compacted_and_keeps_the_latest_values(cbroker):
    b = cbroker.bootstrap
    topic = f"compaction-{uuid.uuid4().hex[:6]}"
    live, gone = f"g-live-{uuid.uuid4().hex[:6]}", f"g-gone-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": b})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic] \
        .result(timeout=30)
    commit(b, gone, topic, [(7, "gone")])
    admin.delete_consumer_groups([gone], request_timeout=15)[gone].result(timeout=30)
    # Transactional commits (TxnOffsetCommit) before the flood: one committed, one aborted.
    # Compaction must keep the committed one and never turn the aborted one into an offset.
    txn_committed, txn_aborted = f"g-txn-{uuid.uuid4().hex[:6]}", f"g-abort-{uuid.uuid4().hex[:6]}"
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": b, "transactional.id": f"compaction-{topic}"})
    p.init_transactions(30)
    for group, offset, commit_it in ((txn_committed, 5, True), (txn_aborted, 9, False)):
        member = consumer(b, group)
        p.begin_transaction()
        p.send_offsets_to_transaction([TopicPartition(topic, 0, offset)],
                                      member.consumer_group_metadata(), 30)
        if commit_it:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
        member.close()

    def metadata(i):
        return f"{i:08d}" + "m" * (METADATA_BYTES - 8)

    commit(b, live, topic, ((i, metadata(i)) for i in range(1, COMMITS + 1)))
    deadline = time.monotonic() + COMPACTION_WAIT_S
    while len(log_files(cbroker)) > LOG_FILES_MAX:
        assert time.monotonic() < deadline, (
            f"still {log_files(cbroker)} after {COMPACTION_WAIT_S}s; log tail:\n"
            f"{cbroker.log_tail()}")
        time.sleep(0.5)
    # ~8 MiB written; what stays is the active segment plus a few live records.
    assert log_bytes(cbroker) < 3 * 1048576, log_bytes(cbroker)
    assert committed(b, live, topic) == (COMMITS, metadata(COMMITS))

    cbroker.restart()
    assert committed(b, live, topic) == (COMMITS, metadata(COMMITS))
    assert committed(b, txn_committed, topic)[0] == 5
    assert committed(b, txn_aborted, topic)[0] < 0, "an aborted transaction's offset is not one"
    assert committed(b, gone, topic)[0] < 0, "a deleted group's offset must stay deleted"
    admin = AdminClient({"bootstrap.servers": b})
    listed = admin.list_consumer_groups(request_timeout=15).result(timeout=30)
    ids = {g.group_id for g in listed.valid}
    assert live in ids and gone not in ids, ids
    try:
        admin.delete_consumer_groups([gone], request_timeout=15)[gone].result(timeout=30)
        deleted_again = True
    except KafkaException:
        deleted_again = False
    assert not deleted_again, "DeleteGroups must not find the deleted group after restart"
