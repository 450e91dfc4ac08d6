"""KIP-890, transactions version 2, spoken over raw sockets.

Part 1: a partition leader verifies a producer's first transactional batch on a
partition with the transaction coordinator before it appends it, so no batch can open a
transaction its coordinator does not know (a "hanging" transaction, which would hold the last
stable offset back for ever).

Spoken over raw sockets, because the point is what a misbehaving or late producer sends (the
one-broker tests also pass against Apache Kafka 4.3.1, SPOOL_TEST_TARGET=kafka); the
usual clients' transactions through verification are the whole of test_transactions.py,
test_streams_eos.py and test_kgo.py. Here, on one broker and on three (where the coordinator
and the partition leader are different brokers, so the question goes over the cluster RPC):
- a transactional batch for a partition never added to the transaction is refused:
  INVALID_TXN_STATE for Produce v3-v10, TRANSACTION_ABORTABLE for v11;
- a batch of a committed transaction arriving late (same producer id and epoch, as
  transactions version 1 keeps them) is refused, and the last stable offset is not held;
- an older epoch is INVALID_PRODUCER_EPOCH;
- Produce v12 adds the partition to the transaction itself;
- AddPartitionsToTxn v4 (the brokers' batched form) answers VerifyOnly per partition;
- `transaction.partition.verification.enable=false`, set live, lets the late batch in (the
  hanging transaction verification exists to prevent), and `spool txn abort` ends it.
Part 2 (transactions version 2, which the Kafka 4 Java client and franz-go switch to once
ApiVersions finalizes `transaction.version` 2, as every test with them now does):
- ApiVersions v3/v4 finalize `transaction.version` at 2, with an epoch of at least 0;
- EndTxn v5 bumps the epoch at every end and answers it; a client that lost the answer and
  asks again with the epoch before gets the same answer; an abort with nothing open only
  bumps; the old epoch is fenced, on the coordinator and on a partition its marker reached;
- the next transaction's first batch starts at sequence 0 on the bumped epoch.
Every wait is bounded.
"""
import struct
import subprocess
import time

import pytest

from conftest import TARGET
from test_bad_input import (Reader, TRANSACTIONAL_BIT, array, call, connect, i8, i16, i32,
                            i64, record_batch, string, uvarint)
from test_cluster import cluster, create_topic, partition_leaders  # noqa: F401  (fixture)

INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, END_TXN, FIND_COORDINATOR = 22, 24, 26, 10
API_VERSIONS = 18
PRODUCE, LIST_OFFSETS = 0, 2

INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
CONCURRENT_TRANSACTIONS = 51
PRODUCER_FENCED = 90
TRANSACTION_ABORTABLE = 120
NOT_ENOUGH_REPLICAS = 19
NOT_LEADER = {5, 6}  # LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER
COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR = 14, 15, 16
RETRIABLE = {NOT_ENOUGH_REPLICAS, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
             NOT_COORDINATOR, CONCURRENT_TRANSACTIONS}



# ---- flexible versions: compact strings and arrays, tagged fields ----------------------------

def cstring(s):
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def carray(items):
    return uvarint(len(items) + 1) + b"".join(items)


def cbytes(b):
    return uvarint(len(b) + 1) + b


TAGS = uvarint(0)


def flex_call(sock, api_key, version, body, correlation_id=7):
    """Request header v2 (client id, tagged fields); returns a Reader after response header v1."""
    payload = i16(api_key) + i16(version) + i32(correlation_id) + string("spool-it") + TAGS + body
    sock.sendall(i32(len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv(sock, 4))
    r = Reader(_recv(sock, size))
    assert r.i32() == correlation_id
    skip_tags(r)
    return r


def _recv(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def skip_tags(r):
    for _ in range(r.uvarint()):
        r.uvarint()
        r.take(r.uvarint())


def r_cstring(r):
    n = r.uvarint()
    return None if n == 0 else r.take(n - 1).decode()


def r_carray(r, f):
    n = r.uvarint()
    return [] if n == 0 else [f(r) for _ in range(n - 1)]


# ---- the requests -------------------------------------------------------------------------

def until(what, f, timeout=45):
    """Calls f until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        got = f()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what} (last: {got!r})", pytrace=False)
        time.sleep(0.1)


def find_coordinator(bootstrap, txn_id):
    """FindCoordinator v1 for a transactional id: the coordinator's (host, port), once ready."""
    def ask():
        with connect(bootstrap) as s:
            r = call(s, FIND_COORDINATOR, 1, string(txn_id) + i8(1))
            r.i32()
            err = r.i16()
            r.string()
            r.i32()
            host = r.string()
            port = r.i32()
            return f"{host}:{port}" if err == 0 else None
    return until("the transaction coordinator", ask)


def at(coordinator):
    """A coordinator given as an address, or as a function that finds it now (it may move)."""
    return coordinator() if callable(coordinator) else coordinator


def init_producer_id(coordinator, txn_id):
    def ask():
        with connect(at(coordinator)) as s:
            r = call(s, INIT_PRODUCER_ID, 1, string(txn_id) + i32(60000))
            r.i32()
            err, pid, epoch = r.i16(), r.i64(), r.i16()
            if err in RETRIABLE:
                return None
            assert err == 0, err
            return pid, epoch
    return until("InitProducerId", ask)


def add_partitions(coordinator, txn_id, pid, epoch, topic, partitions):
    """AddPartitionsToTxn v1 (the client's form), retried while the coordinator is busy."""
    def ask():
        with connect(at(coordinator)) as s:
            r = call(s, ADD_PARTITIONS_TO_TXN, 1, string(txn_id) + i64(pid) + i16(epoch)
                     + array([string(topic) + array([i32(p) for p in partitions])]))
            r.i32()
            codes = [e for _, parts in r.array(lambda r: (r.string(), r.array(
                lambda r: (r.i32(), r.i16())))) for _, e in parts]
            if any(c in RETRIABLE for c in codes):
                return None
            assert set(codes) == {0}, codes
            return True
    until("AddPartitionsToTxn", ask)


def end_txn(coordinator, txn_id, pid, epoch, commit):
    def ask():
        with connect(at(coordinator)) as s:
            r = call(s, END_TXN, 1, string(txn_id) + i64(pid) + i16(epoch) + i8(int(commit)))
            r.i32()
            err = r.i16()
            if err in RETRIABLE:
                return None
            assert err == 0, err
            return True
    until("EndTxn", ask)


def produce(leader, version, txn_id, topic, partition, batch):
    """One batch; returns the partition's error code. v3-v8 plain, v9+ flexible."""
    with connect(leader) as s:
        if version < 9:
            body = (string(txn_id) + i16(-1) + i32(30000)
                    + array([string(topic) + array([i32(partition) + i32(len(batch)) + batch])]))
            r = call(s, PRODUCE, version, body)
            topics = r.array(lambda r: (r.string(), r.array(lambda r: (
                r.i32(), r.i16(), r.i64(), r.i64(), r.i64(),
                r.array(lambda r: (r.i32(), r.string())), r.string()))))
            return topics[0][1][0][1]
        body = (cstring(txn_id) + i16(-1) + i32(30000)
                + carray([cstring(topic) + carray([i32(partition) + cbytes(batch) + TAGS]) + TAGS])
                + TAGS)
        r = flex_call(s, PRODUCE, version, body)

        def part(r):
            index, err = r.i32(), r.i16()
            r.i64(), r.i64(), r.i64()
            r_carray(r, lambda r: (r.i32(), r_cstring(r), skip_tags(r)))
            r_cstring(r)
            skip_tags(r)
            return index, err

        def topic_(r):
            name = r_cstring(r)
            parts = r_carray(r, part)
            skip_tags(r)
            return name, parts
        topics = r_carray(r, topic_)
        return topics[0][1][0][1]


def verify_only(coordinator, txn_id, pid, epoch, topic, partitions):
    """AddPartitionsToTxn v4 with VerifyOnly: {partition: code}."""
    with connect(at(coordinator)) as s:
        body = carray([cstring(txn_id) + i64(pid) + i16(epoch) + i8(1)
                       + carray([cstring(topic) + carray([i32(p) for p in partitions]) + TAGS])
                       + TAGS]) + TAGS
        r = flex_call(s, ADD_PARTITIONS_TO_TXN, 4, body)
        r.i32()
        assert r.i16() == 0

        def result(r):
            name = r_cstring(r)
            topics = r_carray(r, lambda r: (r_cstring(r), r_carray(
                r, lambda r: (r.i32(), r.i16(), skip_tags(r))), skip_tags(r)))
            skip_tags(r)
            return name, topics
        results = r_carray(r, result)
        assert [n for n, _ in results] == [txn_id]
        return {p: e for _, parts, _ in results[0][1] for p, e, _ in parts}


def offsets(leader, topic, partition):
    """(high watermark, last stable offset) by ListOffsets v2 LATEST in both isolations."""
    got = []
    for isolation in (0, 1):
        with connect(leader) as s:
            r = call(s, LIST_OFFSETS, 2, i32(-1) + i8(isolation)
                     + array([string(topic) + array([i32(partition) + i64(-1)])]))
            r.i32()
            topics = r.array(lambda r: (r.string(), r.array(
                lambda r: (r.i32(), r.i16(), r.i64(), r.i64()))))
            _, err, _, offset = topics[0][1][0]
            if err in NOT_LEADER:
                return None
            assert err == 0, err
            got.append(offset)
    return tuple(got)


class Leaders:
    """partition -> the address of its leader now: a new topic's leaders may still move."""

    def __init__(self, lookup):
        self.lookup = lookup

    def __getitem__(self, partition):
        return self.lookup(partition)


def produce_to(leaders, version, txn_id, topic, partition, batch):
    """`produce` at the partition's current leader (a refusal as not the leader appends
    nothing, so it is simply sent again)."""
    return until("the partition's leader", lambda: (lambda e: [e] if e not in NOT_LEADER else None)(
        produce(leaders[partition], version, txn_id, topic, partition, batch)))[0]


def offsets_at(leaders, topic, partition):
    return until("the partition's leader", lambda: offsets(leaders[partition], topic, partition))


def txn_batch(pid, epoch, seq, value):
    return record_batch([value], attributes=TRANSACTIONAL_BIT, producer=(pid, epoch, seq))


# ---- the scenario, on one broker or three ---------------------------------------------------

def check_verification(bootstrap, leaders, topic, txn_id):
    """`leaders`: partition -> the bootstrap address of its leader (partitions 0-2)."""
    # Found again for each request: on a new cluster it may still move.
    def coordinator():
        return find_coordinator(bootstrap, txn_id)
    pid, epoch = init_producer_id(coordinator, txn_id)

    # Transaction 1 adds partition 0 only.
    add_partitions(coordinator, txn_id, pid, epoch, topic, [0])
    # Partition 1 was never added: refused, with the error each client generation knows.
    assert produce_to(leaders, 8, txn_id, topic, 1, txn_batch(pid, epoch, 0, b"p1")) \
        == INVALID_TXN_STATE
    assert produce_to(leaders, 11, txn_id, topic, 1, txn_batch(pid, epoch, 0, b"p1")) \
        == TRANSACTION_ABORTABLE
    # Partition 0 was: its first batch verifies, its second needs no question.
    assert produce_to(leaders, 8, txn_id, topic, 0, txn_batch(pid, epoch, 0, b"t1-a")) == 0
    assert produce_to(leaders, 11, txn_id, topic, 0, txn_batch(pid, epoch, 1, b"t1-b")) == 0

    # The brokers' form, on the Kafka port: verify only, per partition; other epochs and ids.
    assert verify_only(coordinator, txn_id, pid, epoch, topic, [0, 1, 2]) == \
        {0: 0, 1: TRANSACTION_ABORTABLE, 2: TRANSACTION_ABORTABLE}
    assert set(verify_only(coordinator, txn_id, pid, epoch + 1, topic, [0]).values()) \
        == {PRODUCER_FENCED}
    assert set(verify_only(coordinator, txn_id, pid + 1, epoch, topic, [0]).values()) \
        == {INVALID_PRODUCER_ID_MAPPING}
    assert set(verify_only(coordinator, txn_id + "-unknown", pid, epoch, topic, [0]).values()) \
        <= {INVALID_PRODUCER_ID_MAPPING, NOT_COORDINATOR}

    end_txn(coordinator, txn_id, pid, epoch, commit=True)
    hw, lso = until("transaction 1's marker", lambda: (lambda o: o if o[0] == o[1] else None)(
        offsets_at(leaders, topic, 0)))

    # A late batch of transaction 1 (same id and epoch, next sequence) after its commit: the
    # coordinator no longer has partition 0 in a transaction, so it is refused and the LSO is
    # not held back.
    # (NOT_ENOUGH_REPLICAS while the coordinator completes the commit, as Kafka's answers.)
    late = until("the coordinator's answer", lambda: (lambda e: e if e not in RETRIABLE else None)(
        produce_to(leaders, 8, txn_id, topic, 0, txn_batch(pid, epoch, 2, b"t1-late"))))
    assert late == INVALID_TXN_STATE, late
    assert offsets_at(leaders, topic, 0) == (hw, lso)

    # Produce v12: the leader adds the partition to the new transaction itself.
    got = until("an implicit add", lambda: (lambda e: [e] if e not in RETRIABLE else None)(
        produce_to(leaders, 12, txn_id, topic, 2, txn_batch(pid, epoch, 0, b"t2-v12"))))[0]
    assert got == 0, got
    assert verify_only(coordinator, txn_id, pid, epoch, topic, [2]) == {2: 0}
    end_txn(coordinator, txn_id, pid, epoch, commit=False)

    # A new InitProducerId bumps the epoch; the old epoch is refused before any question.
    _, new_epoch = init_producer_id(coordinator, txn_id)
    assert new_epoch > epoch
    add_partitions(coordinator, txn_id, pid, new_epoch, topic, [0])
    assert produce_to(leaders, 8, txn_id, topic, 0, txn_batch(pid, new_epoch, 0, b"t3")) == 0
    stale = produce_to(leaders, 8, txn_id, topic, 0, txn_batch(pid, epoch, 3, b"zombie"))
    assert stale == INVALID_PRODUCER_EPOCH, stale
    end_txn(coordinator, txn_id, pid, new_epoch, commit=True)
    return coordinator, pid, new_epoch


def test_one_broker_refuses_batches_outside_the_transaction(broker):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create_topic(admin, "verify-1", 3)
    leaders = {p: broker.bootstrap for p in range(3)}
    check_verification(broker.bootstrap, leaders, "verify-1", "verify-txn-1")


def test_disabling_verification_lets_a_late_batch_hang_until_aborted(broker):
    """Why verification exists: with it off (set live, as Kafka's dynamic config), the late
    batch is appended and holds the LSO; `spool txn abort` (kafka-transactions' abort) ends it."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigEntry, \
        AlterConfigOpType, ResourceType
    from test_transactions import spool_txn
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create_topic(admin, "verify-off", 1)
    txn_id = "verify-off-txn"
    here = {0: broker.bootstrap}
    coordinator = find_coordinator(broker.bootstrap, txn_id)
    pid, epoch = init_producer_id(coordinator, txn_id)
    add_partitions(coordinator, txn_id, pid, epoch, "verify-off", [0])
    assert produce_to(here, 8, txn_id, "verify-off", 0,
                   txn_batch(pid, epoch, 0, b"a")) == 0
    end_txn(coordinator, txn_id, pid, epoch, commit=True)
    hw, _ = until("the marker", lambda: (lambda o: o if o[0] == o[1] else None)(
        offsets(broker.bootstrap, "verify-off", 0)))

    def set_verification(value):
        # This broker's own value, as `kafka-configs --entity-name <id>`.
        node_id = str(next(iter(admin.list_topics(timeout=10).brokers)))
        resource = ConfigResource(ResourceType.BROKER, node_id, incremental_configs=[ConfigEntry(
            "transaction.partition.verification.enable", value,
            incremental_operation=AlterConfigOpType.SET)])
        futures = admin.incremental_alter_configs([resource])
        for f in futures.values():
            f.result(timeout=30)

    set_verification("false")
    try:
        late = until("the late batch appended", lambda: (lambda e: e == 0)(produce_to(here, 8, txn_id, "verify-off", 0, txn_batch(pid, epoch, 1, b"late"))))
        assert late
        hw2, lso2 = offsets(broker.bootstrap, "verify-off", 0)
        assert hw2 > hw and lso2 == hw, (hw, hw2, lso2)
        # Hanging: the coordinator knows nothing of it, so the LSO stays put.
        time.sleep(1)
        assert offsets(broker.bootstrap, "verify-off", 0)[1] == hw
        spool_txn(broker.bootstrap, "abort", "--topic", "verify-off", "--partition", "0",
                  "--start-offset", str(hw))
        until("the LSO past the aborted batch", lambda: (lambda o: o[1] == o[0] > hw)(
            offsets(broker.bootstrap, "verify-off", 0)))
    finally:
        set_verification("true")
    if TARGET != "spool":
        # Apache Kafka 4.3.1 went on appending this batch after the config was set back to
        # true (seen in this test; not understood yet): Spool's refusal is checked only here.
        return
    # Verification is back: a late batch is refused again.
    answers = []
    deadline = time.monotonic() + 45
    while INVALID_TXN_STATE not in answers and time.monotonic() < deadline:
        answers.append(produce_to(here, 8, txn_id, "verify-off", 0,
                                  txn_batch(pid, epoch, 2, b"late-2")))
        time.sleep(0.1)
    assert answers[-1] == INVALID_TXN_STATE and set(answers) <= {0, INVALID_TXN_STATE}, \
        answers[:5] + answers[-5:]


@pytest.mark.skipif(TARGET != "spool", reason="multi-node Spool clusters")
def test_three_brokers_verify_over_the_cluster_rpc(cluster):
    c = cluster(controllers=3)
    admin = c.admin()
    topic = "verify-3"
    create_topic(admin, topic, 3, rf=3)
    addr = {n.node_id: n.bootstrap for n in c.live()}
    leaders = until("partition leaders", lambda: (lambda ls: ls if all(
        v in addr for v in ls.values()) else None)(partition_leaders(admin, topic)))
    # Ids whose coordinator is not the leader of partitions 0 and 1 (a remote question).
    from test_transactions import txn_coordinator_node
    first = c.live()[0].bootstrap
    find_coordinator(first, "warm-up")
    def remote_id():
        for t in (f"verify-3-{i}" for i in range(200)):
            node = txn_coordinator_node(c, t)
            if node < 0:
                return None
            if node not in (leaders[0], leaders[1]):
                return t
        pytest.fail("no transactional id coordinated away from partitions 0 and 1")
    txn_id = until("a remote coordinator", remote_id)
    check_verification(first, Leaders(lambda p: addr.get(partition_leaders(admin, topic)[p],
                                                          first)), topic, txn_id)


# ---- transactions version 2 ------------------------------------------------------------------

def features(bootstrap, version):
    """ApiVersions v3/v4 (flexible request, response header v0): (supported, epoch, finalized)."""
    with connect(bootstrap) as s:
        body = cstring("spool-it") + cstring("1.0") + TAGS
        payload = i16(API_VERSIONS) + i16(version) + i32(9) + string("spool-it") + TAGS + body
        s.sendall(i32(len(payload)) + payload)
        (size,) = struct.unpack(">i", _recv(s, 4))
        r = Reader(_recv(s, size))
        assert r.i32() == 9
        assert r.i16() == 0
        r_carray(r, lambda r: (r.i16(), r.i16(), r.i16(), skip_tags(r)))
        r.i32()
        supported, epoch, finalized = {}, -1, {}
        for _ in range(r.uvarint()):
            tag, size = r.uvarint(), r.uvarint()
            field = Reader(r.take(size))
            if tag == 0:
                for name, lo, hi, _ in r_carray(field, lambda f: (
                        r_cstring(f), f.i16(), f.i16(), skip_tags(f))):
                    supported[name] = (lo, hi)
            elif tag == 1:
                epoch = field.i64()
            elif tag == 2:
                for name, hi, lo, _ in r_carray(field, lambda f: (
                        r_cstring(f), f.i16(), f.i16(), skip_tags(f))):
                    finalized[name] = (lo, hi)
        return supported, epoch, finalized


def end_txn_v5(coordinator, txn_id, pid, epoch, commit):
    """EndTxn v5, retried while the coordinator is busy: (error, producer id, epoch)."""
    def ask():
        with connect(at(coordinator)) as s:
            r = flex_call(s, END_TXN, 5, cstring(txn_id) + i64(pid) + i16(epoch)
                          + i8(int(commit)) + TAGS)
            r.i32()
            got = (r.i16(), r.i64(), r.i16())
            return None if got[0] in RETRIABLE else got
    return until("EndTxn v5", ask)


def test_transactions_version_2_bumps_the_epoch_at_every_end(broker):
    from confluent_kafka.admin import AdminClient
    create_topic(AdminClient({"bootstrap.servers": broker.bootstrap}), "tv2", 1)
    b = broker.bootstrap
    here = {0: b}
    for version in (3, 4):
        supported, epoch, finalized = features(b, version)
        assert finalized.get("transaction.version") == (2, 2), finalized
        assert epoch >= 0, epoch
        if version >= 4:
            assert supported.get("transaction.version") == (0, 2), supported

    txn_id = "tv2-txn"
    coordinator = find_coordinator(b, txn_id)
    pid, e = init_producer_id(coordinator, txn_id)
    # Transaction 1: Produce v12 adds the partition; EndTxn v5 commits and bumps.
    got = until("an implicit add", lambda: (lambda x: [x] if x not in RETRIABLE else None)(
        produce_to(here, 12, txn_id, "tv2", 0, txn_batch(pid, e, 0, b"one"))))[0]
    assert got == 0, got
    assert end_txn_v5(coordinator, txn_id, pid, e, commit=True) == (0, pid, e + 1)
    # The same EndTxn again (a lost answer): the same answer, no second bump.
    assert end_txn_v5(coordinator, txn_id, pid, e, commit=True) == (0, pid, e + 1)
    # A zombie batch at the old epoch, after the bumped marker reached the partition.
    until("the commit marker", lambda: (lambda o: o[0] == o[1] and o[0] >= 2)(
        offsets(b, "tv2", 0)))
    assert produce_to(here, 12, txn_id, "tv2", 0, txn_batch(pid, e, 1, b"zombie")) \
        == INVALID_PRODUCER_EPOCH
    # Transaction 2 at the bumped epoch starts at sequence 0, then aborts (another bump).
    got = until("an implicit add", lambda: (lambda x: [x] if x not in RETRIABLE else None)(
        produce_to(here, 12, txn_id, "tv2", 0, txn_batch(pid, e + 1, 0, b"two"))))[0]
    assert got == 0, got
    assert end_txn_v5(coordinator, txn_id, pid, e + 1, commit=False) == (0, pid, e + 2)
    # An abort with nothing open only bumps; the epoch before is fenced now.
    assert end_txn_v5(coordinator, txn_id, pid, e + 2, commit=False) == (0, pid, e + 3)
    assert end_txn_v5(coordinator, txn_id, pid, e + 1, commit=True)[0] == PRODUCER_FENCED
    assert end_txn_v5(coordinator, txn_id, pid, e + 3, commit=True)[0] == INVALID_TXN_STATE
    # What a read_committed reader gets: transaction 1 only.
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": b, "group.id": "tv2-check",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition("tv2", 0, 0)])
        seen, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline and len(seen) < 1:
            seen += [m.value() for m in c.consume(10, timeout=0.5) if m.error() is None]
        time.sleep(0.5)
        seen += [m.value() for m in c.consume(10, timeout=0.5) if m.error() is None]
        assert seen == [b"one"], seen
    finally:
        c.close()
