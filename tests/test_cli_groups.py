"""`spool group list|describe|delete|reset-offsets` end to end, against real consumer groups.

A confluent-kafka (librdkafka) Consumer with a group.id is the independent client: it joins,
consumes, commits and leaves; the CLI must then report what the coordinator knows (state,
members, assignments, committed offsets, lag) in kafka-consumer-groups.sh's layout, reset
offsets only while the group has no active members, and the consumer must resume from the
offsets the CLI committed. Runs against Spool or, with SPOOL_TEST_TARGET=kafka, Apache Kafka.

Every subprocess and every wait is bounded.
"""
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer

from conftest import spool_bin

CLI_TIMEOUT = 60
PARTITIONS = 3
RECORDS_PER_PARTITION = 10
CONSUME_TIMEOUT = 60
STATE_WAIT = 30
CLIENT_ID = "groups-test-client"


def cli(broker, *args, timeout=CLI_TIMEOUT):
    cmd = [str(spool_bin()), *args, "--bootstrap-server", broker.bootstrap]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tables(text):
    """The whitespace-aligned tables in text, keyed by their first two header cells, as lists of
    row dicts. Tables are separated by blank lines; other lines are skipped."""
    found = {}
    for section in text.strip().split("\n\n"):
        lines = [l for l in section.splitlines() if l.strip()]
        if not lines or not lines[0].startswith(("GROUP ", "CONSUMER-ID ")):
            continue
        header = lines[0].split()
        # The last column may hold spaces (the coordinator's "host:port (id)").
        cells = [l.split(None, len(header) - 1) for l in lines[1:]]
        rows = [dict(zip(header, c)) for c in cells if len(c) == len(header)]
        found[" ".join(header[:2])] = rows
    return found


def offsets_table(broker, group):
    out = ok(cli(broker, "group", "describe", group)).stdout
    rows = tables(out)["GROUP TOPIC"]
    return {int(r["PARTITION"]): r for r in rows}, out


def make_topic(broker):
    """A topic with RECORDS_PER_PARTITION records in each of PARTITIONS partitions."""
    topic = fresh("grp-topic")
    ok(cli(broker, "topic", "create", topic, "--partitions", str(PARTITIONS)))
    for p in range(PARTITIONS):
        lines = "".join(f"p{p}-{i}\n" for i in range(RECORDS_PER_PARTITION))
        proc = subprocess.run([str(spool_bin()), "produce", topic, "--partition", str(p),
                               "--bootstrap-server", broker.bootstrap],
                              input=lines, capture_output=True, text=True, timeout=CLI_TIMEOUT)
        ok(proc)
    return topic


def consumer(broker, group):
    return Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "client.id": CLIENT_ID,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 10000,
    })


def consume(c, topic, n):
    """Subscribes (if needed) and polls until n records arrived; returns them."""
    if not c.assignment():
        c.subscribe([topic])
    got = []
    deadline = time.monotonic() + CONSUME_TIMEOUT
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    assert len(got) == n, f"consumed {len(got)} of {n} records"
    return got


def consume_and_commit(broker, group, topic, n):
    c = consumer(broker, group)
    try:
        got = consume(c, topic, n)
        c.commit(asynchronous=False)
        return got
    finally:
        c.close()


def wait_state(broker, group, state):
    deadline = time.monotonic() + STATE_WAIT
    last = None
    while time.monotonic() < deadline:
        out = cli(broker, "group", "describe", group)
        if out.returncode == 0:
            last = tables(out.stdout)["GROUP STATE"][0]["STATE"]
            if last == state:
                return
        time.sleep(0.3)
    pytest.fail(f"group {group} did not reach {state} (last {last})")


@pytest.fixture
def topic(broker):
    """A fresh topic per test: tests append records and count them."""
    return make_topic(broker)


def test_list_and_describe_committed_offsets_and_lag(broker, topic):
    group = fresh("grp-describe")
    consume_and_commit(broker, group, topic, PARTITIONS * RECORDS_PER_PARTITION)

    listed = {r["GROUP"]: r for r in tables(ok(cli(broker, "group", "list")).stdout)["GROUP STATE"]}
    assert listed[group]["STATE"] == "Empty"
    assert listed[group]["PROTOCOL-TYPE"] == "consumer"

    rows, out = offsets_table(broker, group)
    assert "has no active members" in out
    assert sorted(rows) == list(range(PARTITIONS)), out
    for p, r in rows.items():
        assert r["TOPIC"] == topic
        assert r["CURRENT-OFFSET"] == str(RECORDS_PER_PARTITION), out
        assert r["LOG-END-OFFSET"] == str(RECORDS_PER_PARTITION), out
        assert r["LAG"] == "0", out
        assert r["CONSUMER-ID"] == "-", out

    # New records show up as lag on exactly their partition.
    ok(subprocess.run([str(spool_bin()), "produce", topic, "--partition", "1",
                       "--bootstrap-server", broker.bootstrap],
                      input="a\nb\nc\n", capture_output=True, text=True, timeout=CLI_TIMEOUT))
    rows, out = offsets_table(broker, group)
    assert rows[1]["LOG-END-OFFSET"] == str(RECORDS_PER_PARTITION + 3), out
    assert rows[1]["LAG"] == "3", out
    assert rows[0]["LAG"] == "0" and rows[2]["LAG"] == "0", out


def test_active_group_members_and_refusals(broker, topic):
    group = fresh("grp-active")
    c = consumer(broker, group)
    try:
        consume(c, topic, 5)
        c.commit(asynchronous=False)
        wait_state(broker, group, "Stable")
        out = ok(cli(broker, "group", "describe", group)).stdout
        t = tables(out)
        summary = t["GROUP STATE"][0]
        assert summary["PROTOCOL-TYPE"] == "consumer", out
        assert summary["MEMBERS"] == "1", out
        member = t["CONSUMER-ID CLIENT-ID"][0]
        assert member["CLIENT-ID"] == CLIENT_ID, out
        assert member["ASSIGNMENT"] == f"{topic}({','.join(map(str, range(PARTITIONS)))})", out
        rows = {int(r["PARTITION"]): r for r in t["GROUP TOPIC"]}
        assert sorted(rows) == list(range(PARTITIONS)), out
        assert all(r["CONSUMER-ID"] == member["CONSUMER-ID"] for r in rows.values()), out
        assert all(r["CLIENT-ID"] == CLIENT_ID for r in rows.values()), out

        stable = tables(ok(cli(broker, "group", "list", "--state", "Stable")).stdout)["GROUP STATE"]
        assert group in [r["GROUP"] for r in stable]
        empty = tables(ok(cli(broker, "group", "list", "--state", "Empty")).stdout)["GROUP STATE"]
        assert group not in [r["GROUP"] for r in empty]

        before = {p: r["CURRENT-OFFSET"] for p, r in rows.items()}
        refused = cli(broker, "group", "reset-offsets", group, "--topic", topic,
                      "--to-earliest", "--execute")
        assert refused.returncode == 1, refused
        assert "NON_EMPTY_GROUP" in refused.stderr, refused.stderr
        after, out = offsets_table(broker, group)
        assert {p: r["CURRENT-OFFSET"] for p, r in after.items()} == before, out

        refused = cli(broker, "group", "delete", group)
        assert refused.returncode == 1, refused
        assert "NON_EMPTY_GROUP" in refused.stdout + refused.stderr, refused
    finally:
        c.close()
    wait_state(broker, group, "Empty")


def test_reset_offsets_and_consumer_resumes_there(broker, topic):
    group = fresh("grp-reset")
    consume_and_commit(broker, group, topic, PARTITIONS * RECORDS_PER_PARTITION)
    ends = {p: int(r["LOG-END-OFFSET"]) for p, r in offsets_table(broker, group)[0].items()}

    # Without --execute: a plan only.
    plan = ok(cli(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest"))
    rows = tables(plan.stdout)["GROUP TOPIC"]
    assert {int(r["PARTITION"]): r["NEW-OFFSET"] for r in rows} == {p: "0" for p in range(PARTITIONS)}
    assert "--execute" in plan.stderr
    assert {p: int(r["CURRENT-OFFSET"]) for p, r in offsets_table(broker, group)[0].items()} == ends

    ok(cli(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute"))
    rows, out = offsets_table(broker, group)
    assert {p: r["CURRENT-OFFSET"] for p, r in rows.items()} == {p: "0" for p in range(PARTITIONS)}, out
    assert {p: int(r["LAG"]) for p, r in rows.items()} == ends, out

    ok(cli(broker, "group", "reset-offsets", group, "--topic", topic, "--partition", "1",
           "--to-offset", "4", "--execute"))
    # Beyond the log end is clamped to it.
    ok(cli(broker, "group", "reset-offsets", group, "--topic", topic, "--partition", "2",
           "--to-offset", "100000", "--execute"))
    rows, out = offsets_table(broker, group)
    assert rows[0]["CURRENT-OFFSET"] == "0", out
    assert rows[1]["CURRENT-OFFSET"] == "4", out
    assert rows[2]["CURRENT-OFFSET"] == str(ends[2]), out

    # By time: before every record is the log start, after every record the log end.
    past = ok(cli(broker, "group", "reset-offsets", group, "--topic", topic,
                  "--to-datetime", "2001-01-01T00:00:00Z"))
    assert {r["NEW-OFFSET"] for r in tables(past.stdout)["GROUP TOPIC"]} == {"0"}
    future = ok(cli(broker, "group", "reset-offsets", group, "--topic", topic,
                    "--to-datetime", "2999-01-01T00:00:00.000+02:00"))
    assert {int(r["PARTITION"]): int(r["NEW-OFFSET"]) for r in tables(future.stdout)["GROUP TOPIC"]} == ends

    # A real consumer of the group resumes from the committed positions.
    expected = (ends[0] - 0) + (ends[1] - 4)
    c = consumer(broker, group)
    try:
        got = consume(c, topic, expected)
        first = {}
        for m in got:
            first.setdefault(m.partition(), m.offset())
        assert first == {0: 0, 1: 4}, first
        extra = [m for m in (c.poll(0.5) for _ in range(4)) if m is not None and not m.error()]
        assert not extra, [(m.partition(), m.offset()) for m in extra]
    finally:
        c.close()


def test_reset_offsets_of_a_new_group_then_delete(broker, topic):
    group = fresh("grp-new")
    ok(cli(broker, "group", "reset-offsets", group, "--topic", topic, "--to-offset", "3", "--execute"))
    rows, out = offsets_table(broker, group)
    assert {p: r["CURRENT-OFFSET"] for p, r in rows.items()} == {p: "3" for p in range(PARTITIONS)}, out
    listed = tables(ok(cli(broker, "group", "list")).stdout)["GROUP STATE"]
    assert group in [r["GROUP"] for r in listed]

    deleted = ok(cli(broker, "group", "delete", group))
    assert f"Group '{group}' deleted." in deleted.stdout
    listed = tables(ok(cli(broker, "group", "list")).stdout).get("GROUP STATE", [])
    assert group not in [r["GROUP"] for r in listed]

    again = cli(broker, "group", "delete", group)
    assert again.returncode == 1
    assert "GROUP_ID_NOT_FOUND" in again.stdout, again
    missing = cli(broker, "group", "describe", group)
    assert missing.returncode == 1
    assert "GROUP_ID_NOT_FOUND" in missing.stderr, missing.stderr


def test_delete_reports_each_group(broker, topic):
    done, gone = fresh("grp-del"), fresh("grp-missing")
    consume_and_commit(broker, done, topic, 1)
    out = cli(broker, "group", "delete", done, gone)
    assert out.returncode == 1, out
    assert f"Group '{done}' deleted." in out.stdout, out.stdout
    assert f"Group '{gone}' could not be deleted: GROUP_ID_NOT_FOUND" in out.stdout, out.stdout


def test_usage_errors(broker, topic):
    group = fresh("grp-usage")
    both = cli(broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest", "--to-latest")
    assert both.returncode == 2
    none = cli(broker, "group", "reset-offsets", group, "--topic", topic)
    assert none.returncode == 2
    bad_time = cli(broker, "group", "reset-offsets", group, "--topic", topic, "--to-datetime", "noon")
    assert bad_time.returncode == 1 and "--to-datetime" in bad_time.stderr, bad_time.stderr
    bad_partition = cli(broker, "group", "reset-offsets", group, "--topic", topic,
                        "--partition", "99", "--to-latest")
    assert bad_partition.returncode == 1 and "no partition 99" in bad_partition.stderr
    no_topic = cli(broker, "group", "reset-offsets", group, "--topic", fresh("nope"), "--to-latest")
    assert no_topic.returncode == 1 and "does not exist" in no_topic.stderr
