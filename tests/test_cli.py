"""The `spool` admin and data command line (`spool topic|produce|consume`) end to end.

Drives the real binary against the module's broker (Spool, or Apache Kafka with
SPOOL_TEST_TARGET=kafka: the CLI is a plain Kafka client and must work against both).
Checks the output formats (kafka-topics.sh style), Kafka error names and exit codes,
keyed partitioning (murmur2, computed independently here), every compression codec,
and, with confluent-kafka as an independent client, that what the CLI writes is what
a real client reads (and vice versa).

The CLI binary is the one conftest picks for the broker (target/release/spool or
$SPOOL_BIN); every subprocess has a timeout.
"""
import subprocess
import time
import uuid

import pytest

from conftest import spool_bin

CLI_TIMEOUT = 60


def cli(broker, *args, stdin=None, timeout=CLI_TIMEOUT):
    """Runs `spool ARGS --bootstrap-server B`; returns CompletedProcess (text)."""
    cmd = [str(spool_bin()), *args, "--bootstrap-server", broker.bootstrap]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2, as a signed 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    i = 0
    while length - i >= 4:
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
        i += 4
    rest = length - i
    if rest >= 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_murmur2_reference_vectors():
    # Kafka's UtilsTest.testMurmur2: keeps this file's expectations honest.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"abc") == 479470107


def create(broker, name, partitions=3, *extra):
    out = ok(cli(broker, "topic", "create", name, "--partitions", str(partitions), *extra))
    assert out.stdout.strip() == f"Created topic {name}."


def test_topic_create_list_describe(broker):
    names = sorted([fresh("cli-b"), fresh("cli-a")])
    create(broker, names[0], 3, "--config", "retention.ms=123456789", "--config", "cleanup.policy=delete")
    create(broker, names[1], 1)

    # Kafka's brokers learn of new topics asynchronously from the controller: poll (bounded).
    deadline = time.monotonic() + 10
    while True:
        listed = ok(cli(broker, "topic", "list")).stdout.splitlines()
        if set(names) <= set(listed) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert listed == sorted(listed), "list is sorted"
    assert names[0] in listed and names[1] in listed

    lines = ok(cli(broker, "topic", "describe", names[0])).stdout.splitlines()
    head = dict(f.split(": ", 1) for f in lines[0].split("\t"))
    assert head["Topic"] == names[0]
    assert len(head["TopicId"]) == 22 and head["TopicId"] != "AAAAAAAAAAAAAAAAAAAAAA"
    assert head["PartitionCount"] == "3"
    assert head["ReplicationFactor"] == "1"
    configs = dict(kv.split("=", 1) for kv in head["Configs"].split(",") if kv)
    assert configs.get("retention.ms") == "123456789", lines[0]
    assert configs.get("cleanup.policy") == "delete", lines[0]
    parts = [dict(f.split(": ", 1) for f in l.strip().split("\t")) for l in lines[1:]]
    assert [p["Partition"] for p in parts] == ["0", "1", "2"]
    for p in parts:
        assert p["Topic"] == names[0]
        assert p["Leader"].isdigit()
        assert p["Replicas"] == p["Leader"] and p["Isr"] == p["Leader"]


def test_topic_errors_are_kafka_errors(broker):
    name = fresh("cli-dup")
    create(broker, name, 1)
    dup = cli(broker, "topic", "create", name)
    assert dup.returncode == 1
    assert "TOPIC_ALREADY_EXISTS" in dup.stderr

    bad = cli(broker, "topic", "create", fresh("cli-bad"), "--partitions", "0")
    assert bad.returncode == 1 and "INVALID_PARTITIONS" in bad.stderr, bad.stderr

    cfg = cli(broker, "topic", "create", fresh("cli-cfg"), "--config", "no.such.config=1")
    assert cfg.returncode == 1 and "INVALID_CONFIG" in cfg.stderr, cfg.stderr

    missing = fresh("cli-missing")
    for args in (["topic", "describe", missing], ["topic", "delete", missing]):
        p = cli(broker, *args)
        assert p.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in p.stderr, (args, p.stderr)

    unreachable = subprocess.run([str(spool_bin()), "topic", "list", "--bootstrap-server", "127.0.0.1:1"],
                                 capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert unreachable.returncode == 1 and "cannot connect" in unreachable.stderr


def test_topic_delete(broker):
    name = fresh("cli-del")
    create(broker, name, 2)
    assert ok(cli(broker, "topic", "delete", name)).stdout.strip() == f"Deleted topic {name}."
    deadline = time.monotonic() + 10
    while name in ok(cli(broker, "topic", "list")).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert name not in ok(cli(broker, "topic", "list")).stdout.split()


def parse_consumed(stdout):
    """`partition:offset<TAB>key<TAB>value` lines → list of (partition, offset, key, value)."""
    rows = []
    for line in stdout.splitlines():
        po, key, value = line.split("\t", 2)
        p, o = po.split(":")
        rows.append((int(p), int(o), key, value))
    return rows


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_round_trip(broker, compression):
    name = fresh(f"cli-rt-{compression}")
    create(broker, name, 3)
    # More than one 1000-record batch, keyed, so partitioning and batching both matter.
    n = 2500
    lines = [f"key-{i}|value {i} with | bars" for i in range(n)]
    prod = ok(cli(broker, "produce", name, "--key-separator", "|", "--compression", compression,
                  stdin="\n".join(lines) + "\n"))
    assert f"produced {n} records" in prod.stderr

    cons = ok(cli(broker, "consume", name, "--offset", "earliest", "--count", str(n),
                  "--print-key", "--print-offset"))
    rows = parse_consumed(cons.stdout)
    assert len(rows) == n
    assert sorted((k, v) for _, _, k, v in rows) == sorted(
        (f"key-{i}", f"value {i} with | bars") for i in range(n))
    by_partition = {}
    for p, o, k, _ in rows:
        assert p == kafka_partition(k.encode(), 3), f"{k} in partition {p}: not Kafka's default partitioner"
        by_partition.setdefault(p, []).append(o)
    for p, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {p} offsets not dense from 0"
    # Within a partition, records keep stdin order.
    for p in by_partition:
        seq = [int(k.split("-")[1]) for q, _, k, _ in rows if q == p]
        assert seq == sorted(seq)


def test_partition_flag_offsets_and_timeout(broker):
    name = fresh("cli-part")
    create(broker, name, 2)
    ok(cli(broker, "produce", name, "--partition", "1", stdin="a\nb\nc\n"))
    empty = ok(cli(broker, "consume", name, "--partition", "0", "--offset", "earliest", "--timeout-ms", "500"))
    assert empty.stdout == ""
    got = ok(cli(broker, "consume", name, "--partition", "1", "--offset", "1", "--timeout-ms", "1000",
                 "--print-offset"))
    assert got.stdout.splitlines() == ["1:1\tb", "1:2\tc"]
    oor = cli(broker, "consume", name, "--partition", "1", "--offset", "100", "--timeout-ms", "500")
    assert oor.returncode == 1 and "OFFSET_OUT_OF_RANGE" in oor.stderr, oor.stderr
    bad = cli(broker, "consume", name, "--partition", "7", "--timeout-ms", "500")
    assert bad.returncode == 1


def test_consume_from_latest_sees_only_new_records(broker):
    name = fresh("cli-latest")
    create(broker, name, 1)
    ok(cli(broker, "produce", name, stdin="old-1\nold-2\n"))
    cmd = [str(spool_bin()), "consume", name, "--offset", "latest", "--count", "2", "--timeout-ms", "20000",
           "--bootstrap-server", broker.bootstrap]
    consumer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # let it resolve `latest` before the new records exist
        ok(cli(broker, "produce", name, "--acks", "1", stdin="new-1\nnew-2\n"))
        out, err = consumer.communicate(timeout=CLI_TIMEOUT)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=10)
    assert consumer.returncode == 0, err
    assert out.splitlines() == ["new-1", "new-2"]


def test_acks_zero_and_headers_read_by_confluent_kafka(broker):
    """An independent client (librdkafka) reads what the CLI wrote, headers included."""
    from confluent_kafka import Consumer, TopicPartition

    name = fresh("cli-hdr")
    create(broker, name, 1)
    ok(cli(broker, "produce", name, "--key-separator", "=", "--header", "src=spool-cli",
           "--header", "n=1", "--compression", "zstd", stdin="k1=v1\nv2-no-key\n"))
    ok(cli(broker, "produce", name, "--acks", "0", stdin="fire-and-forget\n"))

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": fresh("g"),
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(name, 0, 0)])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            got.append((m.offset(), m.key(), m.value(), m.headers()))
    finally:
        c.close()
    assert got[0] == (0, b"k1", b"v1", [("src", b"spool-cli"), ("n", b"1")])
    assert got[1] == (1, None, b"v2-no-key", [("src", b"spool-cli"), ("n", b"1")])
    assert got[2][:3] == (2, None, b"fire-and-forget")


def test_cli_reads_what_confluent_kafka_wrote(broker):
    from confluent_kafka import Producer

    name = fresh("cli-read")
    create(broker, name, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "lz4", "linger.ms": 5})
    for i in range(50):
        p.produce(name, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0)
    assert p.flush(20) == 0
    out = ok(cli(broker, "consume", name, "--offset", "earliest", "--count", "50", "--print-key"))
    assert out.stdout.splitlines() == [f"k{i}\tv{i}" for i in range(50)]
