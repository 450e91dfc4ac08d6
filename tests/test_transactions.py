"""Transactions (issue 11) with unmodified clients: the Kafka Java client, confluent-kafka
(librdkafka) and, in test_kgo.py, franz-go's own TestTxnEtl.

One broker (the module's, also runnable against Apache Kafka with SPOOL_TEST_TARGET=kafka):
- commits and aborts interleaved over several partitions: a read_committed consumer gets
  exactly the committed records, a read_uncommitted one every record;
- zombie fencing: a second producer with the same transactional.id fences the first
  mid-transaction, whose records never become visible;
- consume-transform-produce with offsets committed in the transaction
  (sendOffsetsToTransaction), run twice: every input record copied exactly once;
- ListOffsets with read_committed stops at the open transaction (the LSO);
- kafka-transactions.sh lists and describes transactions, and aborts a hanging one.

Three brokers, RF=3 (multi-node Spool only): the same checks while the transaction
coordinator's broker and then a partition leader are killed with SIGKILL mid-run. The checker
proves: no record of an aborted transaction is ever returned to a read_committed consumer
(also one reading during the faults), every committed transaction is there exactly once, and a
transaction whose commit the client could not confirm is there entirely or not at all.
Every wait is bounded; processes are signalled only by their own PID.
"""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import TARGET, helper_cmd

from test_cluster import cluster, create_topic, kafka_tool  # noqa: F401  (fixture)


def java(*args, timeout=180, check=True):
    out = subprocess.run(helper_cmd("java") + list(args), capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        pytest.fail(f"java {' '.join(args[:1])} failed ({out.returncode}):\n{out.stderr[-3000:]}",
                    pytrace=False)
    return out


def lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def admin(bootstrap):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap})


def new_topic(bootstrap, name, partitions, rf=1):
    create_topic(admin(bootstrap), name, partitions, rf=rf)


def consume_committed(bootstrap, topic, partitions, isolation="read_committed", idle_ms=3000):
    out = java("txn-consume", "--bootstrap", bootstrap, "--topic", topic, "--partitions",
               str(partitions), "--idle-ms", str(idle_ms), "--isolation", isolation)
    return [r["value"] for r in lines(out.stdout)]


def check_transactions(outcomes, seen):
    """The checker: `outcomes` are the producer's per-transaction reports, `seen` the values a
    read_committed consumer got (in any order)."""
    produced = {}
    for o in outcomes:
        for v in o["values"]:
            produced[v] = o
    dupes = {v for v in seen if seen.count(v) > 1}
    assert not dupes, f"duplicates: {sorted(dupes)[:10]}"
    seen_set = set(seen)
    strangers = seen_set - produced.keys()
    assert not strangers, f"values nobody produced: {sorted(strangers)[:10]}"
    for o in outcomes:
        values = set(o["values"])
        present = values & seen_set
        if o["outcome"] == "commit":
            assert present == values, \
                f"committed txn {o['txn']} lost {sorted(values - present)[:5]}"
        elif o["outcome"] == "abort":
            assert not present, f"aborted txn {o['txn']} visible: {sorted(present)[:5]}"
        else:
            assert present in (set(), values), \
                f"txn {o['txn']} (outcome unknown) partly visible: {len(present)}/{len(values)}"


# ---- one broker ----------------------------------------------------------------------------


def test_java_commits_and_aborts_over_partitions(broker):
    b = broker.bootstrap
    new_topic(b, "txn-mixed", 4)
    out = java("txn-produce", "--bootstrap", b, "--topic", "txn-mixed", "--partitions", "4",
               "--transactions", "30", "--per-txn", "40", "--abort-every", "3",
               "--transactional-id", "mixed-1")
    outcomes = lines(out.stdout)
    assert [o["outcome"] for o in outcomes].count("abort") == 10
    assert [o["outcome"] for o in outcomes].count("commit") == 20
    seen = consume_committed(b, "txn-mixed", 4)
    check_transactions(outcomes, seen)
    assert len(seen) == 20 * 40
    everything = consume_committed(b, "txn-mixed", 4, isolation="read_uncommitted")
    assert sorted(everything) == sorted(v for o in outcomes for v in o["values"])


def test_zombie_producer_is_fenced(broker):
    b = broker.bootstrap
    new_topic(b, "txn-fence", 1)
    out = java("fence", "--bootstrap", b, "--topic", "txn-fence", "--transactional-id", "fence-1")
    result = lines(out.stdout)[-1]
    assert result == {"fenced": True, "second_committed": True}, out.stderr[-2000:]
    seen = consume_committed(b, "txn-fence", 1)
    assert seen == ["second-1"], seen


def test_read_process_write_copies_each_record_exactly_once(broker):
    b = broker.bootstrap
    new_topic(b, "txn-in", 3)
    new_topic(b, "txn-out", 3)
    java("txn-produce", "--bootstrap", b, "--topic", "txn-in", "--partitions", "3",
         "--transactions", "10", "--per-txn", "50", "--abort-every", "0",
         "--transactional-id", "copy-src")
    # Two runs of the copier: the second starts from the offsets the first committed in its
    # transactions, so together they copy every input record once.
    for count in (230, 270):
        out = java("txn-copy", "--bootstrap", b, "--in", "txn-in", "--out", "txn-out",
                   "--partitions", "3", "--group", "copier", "--transactional-id", "copy-1",
                   "--count", str(count), "--per-txn", "40")
        assert lines(out.stdout)[-1] == {"copied": count}
    copied = consume_committed(b, "txn-out", 3)
    source = consume_committed(b, "txn-in", 3)
    assert len(copied) == 500 and sorted(copied) == sorted(source)


def test_open_transaction_holds_the_last_stable_offset(broker):
    from confluent_kafka import Consumer, Producer, TopicPartition
    b = broker.bootstrap
    new_topic(b, "txn-lso", 1)
    plain = Producer({"bootstrap.servers": b})
    for i in range(5):
        plain.produce("txn-lso", value=f"plain-{i}".encode(), partition=0)
    plain.flush(10)
    p = Producer({"bootstrap.servers": b, "transactional.id": "lso-1"})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(7):
        p.produce("txn-lso", value=f"open-{i}".encode(), partition=0)
    p.flush(10)

    def end_offset(isolation):
        c = Consumer({"bootstrap.servers": b, "group.id": f"lso-{isolation}",
                      "isolation.level": isolation})
        try:
            return c.get_watermark_offsets(TopicPartition("txn-lso", 0), timeout=10,
                                           cached=False)[1]
        finally:
            c.close()

    # ListOffsets LATEST: the high watermark, or with read_committed the LSO (the open
    # transaction's first offset).
    assert end_offset("read_uncommitted") == 12
    assert end_offset("read_committed") == 5
    p.commit_transaction(30)
    assert end_offset("read_committed") == 13  # 12 records and the COMMIT marker


def test_kafka_transactions_tool_lists_describes_and_aborts(broker, tmp_path):
    """kafka-transactions.sh (Kafka's own tool): list and describe a transaction, find-hanging
    (which must not report a transaction its coordinator knows), and abort one at its partition
    (DescribeProducers, then WriteTxnMarkers with the producer's id and epoch)."""
    from confluent_kafka import Producer
    b = broker.bootstrap
    new_topic(b, "txn-tool", 1)
    p = Producer({"bootstrap.servers": b, "transactional.id": "tool-1"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("txn-tool", value=b"hanging", partition=0)
    p.flush(10)
    tool = "org.apache.kafka.tools.TransactionsCommand"
    listed = kafka_tool(tool, "--bootstrap-server", b, "list").stdout
    assert "tool-1" in listed and "Ongoing" in listed, listed
    described = kafka_tool(tool, "--bootstrap-server", b, "describe", "--transactional-id",
                           "tool-1").stdout
    assert "Ongoing" in described and "txn-tool-0" in described, described
    # find-hanging compares the partitions' open transactions (DescribeProducers) with the
    # coordinators' (ListTransactions, DescribeTransactions): this one's coordinator knows it,
    # so it is not hanging (it would time out).
    hanging = kafka_tool(tool, "--bootstrap-server", b, "find-hanging", "--broker-id",
                         str(broker_id(b)), "--max-transaction-timeout", "0").stdout
    assert "txn-tool" not in hanging, hanging
    # The producer goes away without ending it; the tool aborts it at the partition (the
    # WriteTxnMarkers an operator sends for a transaction its coordinator lost).
    del p
    kafka_tool(tool, "--bootstrap-server", b, "abort", "--topic", "txn-tool", "--partition",
               "0", "--start-offset", "0")
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": b, "group.id": "tool-check",
                  "isolation.level": "read_committed"})
    end = c.get_watermark_offsets(TopicPartition("txn-tool", 0), timeout=10, cached=False)[1]
    c.close()
    assert end == 2, "the ABORT marker moved the LSO past the hanging transaction"
    assert consume_committed(b, "txn-tool", 1, idle_ms=1500) == []


def spool_txn(bootstrap, *args):
    from conftest import spool_bin
    out = subprocess.run([str(spool_bin()), "txn", *args, "--bootstrap-server", bootstrap],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def test_spool_txn_cli_lists_describes_and_aborts(broker):
    """`spool txn` does what kafka-transactions.sh does above, through the same requests; the
    same commands work against Apache Kafka."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    b = broker.bootstrap
    new_topic(b, "txn-cli", 1)
    p = Producer({"bootstrap.servers": b, "transactional.id": "cli-1"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("txn-cli", value=b"hanging", partition=0)
    p.flush(10)
    listed = spool_txn(b, "list")
    row = next(line.split() for line in listed.splitlines() if line.startswith("cli-1 "))
    assert row[3] == "Ongoing", listed
    assert spool_txn(b, "list", "--state", "CompleteCommit").find("cli-1") < 0
    described = spool_txn(b, "describe", "cli-1")
    assert "Ongoing" in described and "txn-cli-0" in described, described
    header, values = [line.split() for line in described.splitlines()[:2]]
    fields = dict(zip(header, values))
    assert fields["ProducerId"] == row[2] and fields["TransactionalId"] == "cli-1", fields
    missing = subprocess.run([str(__import__("conftest").spool_bin()), "txn", "describe",
                              "no-such-id", "--bootstrap-server", b],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "TRANSACTIONAL_ID_NOT_FOUND" in missing.stderr, missing
    del p
    aborted = spool_txn(b, "abort", "--topic", "txn-cli", "--partition", "0",
                        "--start-offset", "0")
    assert "Aborted" in aborted, aborted
    c = Consumer({"bootstrap.servers": b, "group.id": "cli-check",
                  "isolation.level": "read_committed"})
    end = c.get_watermark_offsets(TopicPartition("txn-cli", 0), timeout=10, cached=False)[1]
    c.close()
    assert end == 2, "the ABORT marker moved the LSO past the hanging transaction"
    assert consume_committed(b, "txn-cli", 1, idle_ms=1500) == []


def broker_id(bootstrap):
    md = admin(bootstrap).list_topics(timeout=10)
    return next(iter(md.brokers))


def test_confluent_kafka_transactions(broker):
    from confluent_kafka import Producer
    b = broker.bootstrap
    new_topic(b, "txn-librdkafka", 3)
    p = Producer({"bootstrap.servers": b, "transactional.id": "rdk-1"})
    p.init_transactions(30)
    outcomes = librdkafka_transactions(
        p, 12, lambda k: [f"rdk-{k}-{i}" for i in range(25)],
        lambda i, v: p.produce("txn-librdkafka", value=v.encode(), partition=i % 3),
        abort=lambda k: k % 4 == 1)
    check_transactions(outcomes, consume_committed(b, "txn-librdkafka", 3))


def librdkafka_transactions(p, count, values_of, send, abort):
    """Runs `count` transactions on the confluent-kafka producer `p`: transaction k sends
    `values_of(k)` with `send(i, value)`, then aborts if `abort(k)`, else commits. Returns the
    outcomes `check_transactions` takes."""
    outcomes = []
    for k in range(count):
        p.begin_transaction()
        values = values_of(k)
        for i, v in enumerate(values):
            send(i, v)
        p.flush(10)
        if abort(k):
            p.abort_transaction(30)
            outcomes.append({"txn": k, "outcome": "abort", "values": values})
        else:
            p.commit_transaction(30)
            outcomes.append({"txn": k, "outcome": "commit", "values": values})
    return outcomes


def test_aborts_in_old_segments_stay_hidden_across_restarts(broker):
    """The aborted-transaction index per segment (`.txnindex`): aborts spread over several
    1 MiB segments (Kafka 4's smallest segment.bytes) are listed to read_committed readers from
    the sealed segments' index files, after a kill -9 and after a clean restart too."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic
    b = broker.bootstrap
    topic = "txn-segments"
    client = admin(b)
    futures = client.create_topics([NewTopic(topic, 1, 1, config={"segment.bytes": "1048576"})],
                                   operation_timeout=30, request_timeout=35)
    futures[topic].result(timeout=40)
    p = Producer({"bootstrap.servers": b, "transactional.id": "seg-1", "linger.ms": 5})
    p.init_transactions(30)
    pad = "x" * 8000
    # 40 × 12 × 8 KB: about 4 segments, an abort in each.
    outcomes = librdkafka_transactions(
        p, 40, lambda k: [f"seg-{k}-{i}" for i in range(12)],
        lambda _i, v: p.produce(topic, value=f"{v}|{pad}".encode(), partition=0),
        abort=lambda k: k % 3 == 1)

    def indexes():
        return [f for f in broker.data_dir.rglob("*.txnindex")
                if f.parent.name.startswith(topic) and f.stat().st_size > 0]

    def check():
        seen = [v.split("|")[0] for v in consume_committed(b, topic, 1)]
        check_transactions(outcomes, seen)
        assert len(seen) == 27 * 12

    assert len(indexes()) >= 2, "aborts in at least two sealed segments' index files"
    check()
    broker.kill9()
    broker.start()
    check()
    broker.restart()
    check()
    assert len(indexes()) >= 2


# ---- three brokers ------------------------------------------------------------------------


def txn_coordinator_node(c, transactional_id):
    """The broker leading the id's __transaction_state partition (FindCoordinator's answer)."""
    from confluent_kafka import Producer  # noqa: F401
    partitions = 50
    h = 0
    for ch in transactional_id.encode("utf-16-be").decode("utf-16-be"):
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    h = h - (1 << 32) if h >= 1 << 31 else h
    index = 0 if h == -(1 << 31) else abs(h) % partitions
    md = c.admin().list_topics(topic="__transaction_state", timeout=10)
    return md.topics["__transaction_state"].partitions[index].leader


@pytest.mark.skipif(TARGET != "spool", reason="multi-node Spool clusters")
def test_transactions_survive_kill9_of_coordinator_and_partition_leader(cluster, tmp_path):
    c = cluster(controllers=3)
    topic = "txn-faults"
    create_topic(c.admin(), topic, 3, rf=3)
    txn_id = "faults-1"
    out_path = tmp_path / "produce.out"
    err_path = tmp_path / "produce.err"
    bootstrap = c.bootstrap
    with open(out_path, "w") as out, open(err_path, "w") as err:
        producer = subprocess.Popen(
            helper_cmd("java") + ["txn-produce", "--bootstrap", bootstrap, "--topic", topic,
                                  "--partitions", "3", "--transactions", "150", "--per-txn",
                                  "20", "--abort-every", "4", "--transactional-id", txn_id],
            stdout=out, stderr=err)
    reader_out = tmp_path / "reader.out"
    with open(reader_out, "w") as rout:
        reader = subprocess.Popen(
            helper_cmd("java") + ["txn-consume", "--bootstrap", bootstrap, "--topic", topic,
                                  "--partitions", "3", "--idle-ms", "20000"],
            stdout=rout, stderr=subprocess.DEVNULL)
    try:
        def reported():
            return len(lines(out_path.read_text()))

        def wait_reports(n, timeout=90):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and reported() < n:
                if producer.poll() is not None:
                    break
                time.sleep(0.2)
            assert reported() >= n or producer.poll() is not None, \
                f"producer stalled at {reported()}:\n{err_path.read_text()[-2000:]}\n{c.tails()}"

        wait_reports(20)
        # The coordinator's broker dies mid-run.
        victim = c.nodes[txn_coordinator_node(c, txn_id)]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        wait_reports(reported() + 15)
        victim.start()
        victim.wait_listening()
        c.wait_brokers(3)
        # Then the leader of a data partition.
        leader = c.admin().list_topics(topic=topic, timeout=10).topics[topic].partitions[0].leader
        victim = c.nodes[leader]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        wait_reports(reported() + 15)
        victim.start()
        victim.wait_listening()
        c.wait_brokers(3)
        assert producer.wait(timeout=300) == 0, err_path.read_text()[-3000:]
    finally:
        for proc in (producer, reader):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    outcomes = lines(out_path.read_text())
    assert len({o["txn"] for o in outcomes}) == 150
    committed = sum(o["outcome"] == "commit" for o in outcomes)
    unknown = sum(o["outcome"] == "unknown" for o in outcomes)
    print(f"transactions: {committed} committed, {unknown} unknown, "
          f"{len(outcomes) - committed - unknown} aborted")
    assert committed >= 100, f"only {committed} committed"
    check_transactions(outcomes, consume_committed(c.bootstrap, topic, 3))
    # The reader that ran through the faults never saw an aborted record either (it may have
    # stopped before the end: check only what it got).
    aborted = {v for o in outcomes if o["outcome"] == "abort" for v in o["values"]}
    during = [json.loads(x)["value"] for x in reader_out.read_text().splitlines() if x.strip()]
    assert not aborted & set(during), sorted(aborted & set(during))[:5]
    assert len(during) == len(set(during)), "the reader saw a record twice"


def test_transactional_offsets_are_pending_until_commit(broker):
    """sendOffsetsToTransaction's offsets (TxnOffsetCommit) become the group's only at COMMIT;
    until then OffsetFetch with require_stable (librdkafka's read_committed consumer) answers
    UNSTABLE_OFFSET_COMMIT and a plain one sees the previous offset; an ABORT drops them."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    b = broker.bootstrap
    new_topic(b, "txn-offsets", 1)
    group = "stable-g"
    member = Consumer({"bootstrap.servers": b, "group.id": group})
    metadata = member.consumer_group_metadata()
    p = Producer({"bootstrap.servers": b, "transactional.id": "offsets-1"})
    p.init_transactions(30)

    def committed(isolation, timeout=10):
        c = Consumer({"bootstrap.servers": b, "group.id": group, "isolation.level": isolation})
        try:
            return c.committed([TopicPartition("txn-offsets", 0)], timeout=timeout)[0].offset
        finally:
            c.close()

    for offset, commit in ((42, True), (77, False), (90, True)):
        p.begin_transaction()
        p.send_offsets_to_transaction([TopicPartition("txn-offsets", 0, offset)], metadata, 30)
        before = 42 if offset > 42 else -1001
        assert committed("read_uncommitted") == before
        with pytest.raises(KafkaException):
            committed("read_committed", timeout=3)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
        assert committed("read_committed") == (offset if commit else 42)
    member.close()
