"""Cross-client matrix: every producer client x every compression codec, read back
byte-exactly by every consumer client, with the offsets the producer reported.

Producers/consumers: kcat (driven directly), confluent-kafka (librdkafka),
kafka-python, the Java client (kafka-clients 4.x, default producer settings, so
idempotent) and franz-go. Compression: none, gzip, snappy, lz4, zstd.

Each producer x compression pair gets its own 3-partition topic on one broker per
module. test_produce[P-C] produces the record set; test_consume[P-C-by-K] checks
that consumer K reads exactly what was produced: same partition, same offset,
same key/value/headers bytes (null distinct from empty), in offset order.

Known client limitations (the record set is adapted per producer, see adapt()):
  * kafka-python's KafkaProducer.send() rejects None header values and a record
    whose key and value are both None (asserts), so it skips those records.
  * kcat -P: headers (-H) and partition (-p) apply to a whole invocation, so it
    is run once per run of consecutive records sharing them; messages are split
    with -D/-K delimiters. It cannot express: a null key together with an
    empty or null value (an empty message line is skipped; -Z would turn an
    empty key null too), a null value with an empty key, keys/values containing
    the delimiters, header names containing '=', header values containing NUL
    bytes (argv). Records with partition=null get an explicit partition
    (index % 3). kcat prints no delivery reports, so its "reported" offsets are
    derived: the topic is fresh and invocations are sequential, so offsets are
    0,1,2... per partition in send order -- the consumers then verify that.
  * kcat -C: keys/values are read byte-exactly via %K/%S lengths; headers are
    only available as the "n=v,n=v" CSV of %h (null printed as NULL, values
    cut at NUL), so for kcat the rendered CSV is compared, and skipped for
    records whose header values contain NUL bytes.
"""
import base64
import hashlib
import json
import os
import subprocess
import time

import pytest

from conftest import helper_cmd, kcat_bin

PRODUCERS = ["kcat", "confluent", "kafka-python", "java", "franz-go"]
CONSUMERS = ["kcat", "confluent", "kafka-python", "java", "franz-go"]
COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
PROC_TIMEOUT = 120

KCAT_REC_DELIM = b"<<<SPOOL-REC>>>"
KCAT_KEY_DELIM = b"<<<SPOOL-KEY>>>"
KCAT_END = b"<<<SPOOL-END>>>\n"


# ---------------------------------------------------------------------------
# The record set
# ---------------------------------------------------------------------------
def _prng(n, seed=b"spool"):
    out = bytearray()
    h = seed
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:n])


def record_set():
    """Deterministic records: dicts with partition, key, value, headers (bytes/None)."""
    recs = []

    def add(p, k, v, h=()):
        recs.append({"partition": p, "key": k, "value": v, "headers": list(h)})

    for i in range(6):  # keyed, explicit partitions, one header each
        add(i % 3, f"key-{i}".encode(), f"value-{i}".encode(), [("idx", str(i).encode())])
    add(0, None, b"null key", [])
    add(1, b"tombstone", None, [("kind", b"tombstone")])
    add(2, b"empty-value", b"", [])
    add(0, b"", b"empty key", [])
    add(1, b"", b"", [("both", b"empty")])
    add(2, None, None, [])  # null key and null value
    add(0, bytes(range(256)), bytes(range(255, -1, -1)), [("bin", bytes(range(1, 256)))])
    add(1, b"nul-header", b"v", [("with-nul", b"a\x00b")])
    add(2, b"headers", b"v", [("dup", b"1"), ("dup", b"2"), ("empty", b""),
                              ("\u00fcn\u00efc\u00f6d\u00e9", "\u2603".encode())])
    add(0, b"null-header", b"v", [("null", None), ("after", b"x")])
    add(1, b"many-headers", b"x", [(f"h{i:02d}", bytes([65 + i]) * i) for i in range(20)])
    add(2, b"big-compressible", b"spool-" * 40000, [])  # 240 KB
    add(0, b"big-random", _prng(64 * 1024), [])
    add(1, "utf8-\u00e9\u6f22".encode(), "valu\u00e9 \u2603 \U0001F600".encode(), [])
    for i in range(8):  # client-side partitioning, keyed
        add(None, f"hashed-{i}".encode(), f"hv-{i}".encode(), [])
    for i in range(4):  # client-side partitioning, unkeyed
        add(None, None, f"unkeyed-{i}".encode(), [("u", str(i).encode())])
    add(None, b"hashed-tombstone", None, [])
    return recs


def kcat_can_produce(r):
    k, v = r["key"], r["value"]
    for b in (k, v):
        if b is not None and (KCAT_REC_DELIM in b or KCAT_KEY_DELIM in b):
            return False
    if k is None and not v:  # null key with empty/null value
        return False
    if v is None and k == b"":
        return False
    for name, hv in r["headers"]:
        if "=" in name or "\x00" in name:
            return False
        if hv is not None and b"\x00" in hv:
            return False
    return True


def adapt(producer, recs):
    """The record set as this producer can express it (see module docstring)."""
    out = []
    for i, r in enumerate(recs):
        r = dict(r)
        if producer == "kafka-python" and (any(v is None for _, v in r["headers"])
                                           or (r["key"] is None and r["value"] is None)):
            continue
        if producer == "kcat":
            if not kcat_can_produce(r):
                continue
            if r["partition"] is None:
                r["partition"] = i % PARTITIONS
        out.append(r)
    return out


def b64(b):
    return None if b is None else base64.b64encode(b).decode("ascii")


def unb64(s):
    return None if s is None else base64.b64decode(s)


# ---------------------------------------------------------------------------
# Producing
# ---------------------------------------------------------------------------
def create_topic(bootstrap, topic, partitions=PARTITIONS):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                             operation_timeout=30, request_timeout=30)
    for _, f in fs.items():
        f.result(timeout=60)
    # Wait (bounded) until metadata shows every partition with a leader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions and \
                all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} not ready: {md.topics.get(topic)}")


def run(cmd, what, timeout=PROC_TIMEOUT, input=None):
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{what}: timed out after {timeout}s: {cmd}\n"
                             f"stderr: {(e.stderr or b'').decode(errors='replace')[-3000:]}")
    if p.returncode != 0:
        raise AssertionError(f"{what}: exit {p.returncode}: {cmd}\n"
                             f"stdout: {p.stdout.decode(errors='replace')[-2000:]}\n"
                             f"stderr: {p.stderr.decode(errors='replace')[-3000:]}")
    return p


def produce_helper(client, bootstrap, topic, compression, recs, tmp_path, acks="all"):
    inp = tmp_path / f"{topic}.jsonl"
    with open(inp, "w") as f:
        for r in recs:
            f.write(json.dumps({"partition": r["partition"], "key": b64(r["key"]),
                                "value": b64(r["value"]),
                                "headers": [[n, b64(v)] for n, v in r["headers"]]}) + "\n")
    p = run(helper_cmd(client) + ["produce", "--bootstrap", bootstrap, "--topic", topic,
                                  "--compression", compression, "--acks", acks,
                                  "--input", str(inp)], f"{client} produce")
    acks_out = [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]
    assert len(acks_out) == len(recs), f"{client} reported {len(acks_out)} acks for {len(recs)} records"
    return [(a["partition"], a["offset"]) for a in acks_out]


def produce_kcat(bootstrap, topic, compression, recs):
    """One kcat -P per run of consecutive records sharing partition, headers and -Z mode.
    Returns derived (partition, offset) per record (fresh topic, sequential sends)."""
    kcat = kcat_bin()
    groups = []
    for r in recs:
        zmode = r["value"] is None
        sig = (r["partition"], tuple(r["headers"]), zmode)
        if groups and groups[-1][0] == sig:
            groups[-1][1].append(r)
        else:
            groups.append((sig, [r]))
    next_off = {}
    result = []
    for (part, headers, zmode), rs in groups:
        cmd = [kcat, "-b", bootstrap, "-P", "-t", topic, "-p", str(part), "-q",
               "-X", f"compression.codec={compression}", "-X", "acks=all",
               "-D", KCAT_REC_DELIM.decode(), "-K", KCAT_KEY_DELIM.decode()]
        if zmode:
            cmd.append("-Z")
        for name, hv in headers:
            arg = name.encode() if hv is None else name.encode() + b"=" + hv
            cmd += ["-H", arg]
        data = b""
        for r in rs:
            if r["key"] is None:
                data += r["value"]
            else:
                data += r["key"] + KCAT_KEY_DELIM + (r["value"] or b"")
            data += KCAT_REC_DELIM
        run(cmd, "kcat produce", input=data)
        for _ in rs:
            off = next_off.get(part, 0)
            next_off[part] = off + 1
            result.append((part, off))
    return result


# ---------------------------------------------------------------------------
# Consuming
# ---------------------------------------------------------------------------
def consume_helper(client, bootstrap, topic, count):
    p = run(helper_cmd(client) + ["consume", "--bootstrap", bootstrap, "--topic", topic,
                                  "--partitions", str(PARTITIONS), "--count", str(count),
                                  "--timeout-ms", "30000"], f"{client} consume")
    out = []
    for line in p.stdout.decode().splitlines():
        if not line.strip():
            continue
        j = json.loads(line)
        out.append({"partition": j["partition"], "offset": j["offset"],
                    "key": unb64(j["key"]), "value": unb64(j["value"]),
                    "headers": [(n, unb64(v)) for n, v in j["headers"]],
                    "timestamp": j["timestamp"]})
    return out


def consume_kcat(bootstrap, topic, count):
    fmt = "%p %o %T %K %S\\n%k%s%h" + KCAT_END.decode().replace("\n", "\\n")
    p = run([kcat_bin(), "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
             "-c", str(count), "-f", fmt], "kcat consume", timeout=60)
    buf, pos, out = p.stdout, 0, []
    while pos < len(buf):
        nl = buf.index(b"\n", pos)
        part, off, ts, klen, vlen = (int(x) for x in buf[pos:nl].split(b" "))
        pos = nl + 1
        key = None if klen < 0 else buf[pos:pos + klen]
        pos += max(klen, 0)
        value = None if vlen < 0 else buf[pos:pos + vlen]
        pos += max(vlen, 0)
        end = buf.index(KCAT_END, pos)
        out.append({"partition": part, "offset": off, "key": key, "value": value,
                    "headers_csv": buf[pos:end], "timestamp": ts})
        pos = end + len(KCAT_END)
    return out


def kcat_headers_csv(headers):
    return b",".join(n.encode() + b"=" + (b"NULL" if v is None else v) for n, v in headers)


# ---------------------------------------------------------------------------
# Fixtures and tests
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def produced(broker):
    """(producer, compression) -> dict(topic, expected=[records with partition/offset]) or
    an exception string if producing failed. Filled by test_produce, lazily."""
    return {}


def ensure_produced(produced, broker, producer, compression, tmp_path_factory):
    key = (producer, compression)
    if key in produced:
        v = produced[key]
        if isinstance(v, str):
            pytest.fail(f"producing with {producer}/{compression} failed earlier: {v}", pytrace=False)
        return v
    topic = f"xc-{producer}-{compression}"
    recs = adapt(producer, record_set())
    t0 = int(time.time() * 1000)
    try:
        create_topic(broker.bootstrap, topic)
        if producer == "kcat":
            acks = produce_kcat(broker.bootstrap, topic, compression, recs)
        else:
            acks = produce_helper(producer, broker.bootstrap, topic, compression, recs,
                                  tmp_path_factory.mktemp("produce"))
    except BaseException as e:  # noqa: BLE001
        produced[key] = f"{type(e).__name__}: {e}"
        raise
    t1 = int(time.time() * 1000)
    expected = []
    for r, (p, o) in zip(recs, acks):
        if r["partition"] is not None:
            assert p == r["partition"], f"record sent to partition {r['partition']} acked on {p}"
        assert 0 <= p < PARTITIONS
        expected.append(dict(r, partition=p, offset=o))
    v = {"topic": topic, "expected": expected, "t0": t0, "t1": t1}
    produced[key] = v
    return v


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("producer", PRODUCERS)
def test_produce(broker, produced, producer, compression, tmp_path_factory):
    v = ensure_produced(produced, broker, producer, compression, tmp_path_factory)
    exp = v["expected"]
    assert len(exp) >= 20
    # Offsets on a fresh topic are dense from 0 per partition and, for a single
    # in-order producer, follow send order within a partition.
    by_part = {}
    for r in exp:
        by_part.setdefault(r["partition"], []).append(r["offset"])
    for p, offs in by_part.items():
        assert offs == list(range(len(offs))), \
            f"{producer}/{compression}: partition {p} offsets in send order are {offs}"


def _fmt(r):
    def show(b):
        if b is None:
            return "null"
        return repr(b if len(b) <= 40 else b[:40] + b"...") + f"(len {len(b)})"
    return (f"p{r['partition']}@{r['offset']} key={show(r['key'])} value={show(r['value'])} "
            f"headers={[(n, show(v)) for n, v in r.get('headers', [])]}")


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("producer", PRODUCERS)
def test_consume(broker, produced, producer, compression, consumer, tmp_path_factory):
    v = ensure_produced(produced, broker, producer, compression, tmp_path_factory)
    topic, expected = v["topic"], v["expected"]
    if consumer == "kcat":
        got = consume_kcat(broker.bootstrap, topic, len(expected))
    else:
        got = consume_helper(consumer, broker.bootstrap, topic, len(expected))
    assert len(got) == len(expected), f"got {len(got)} records, expected {len(expected)}"

    exp_by_part, got_by_part = {}, {}
    for r in sorted(expected, key=lambda r: r["offset"]):
        exp_by_part.setdefault(r["partition"], []).append(r)
    for r in got:  # arrival order must already be offset order per partition
        got_by_part.setdefault(r["partition"], []).append(r)
    assert sorted(got_by_part) == sorted(exp_by_part), "partitions differ"
    for p in exp_by_part:
        e_list, g_list = exp_by_part[p], got_by_part[p]
        assert [g["offset"] for g in g_list] == [e["offset"] for e in e_list], \
            f"partition {p}: offsets read {[g['offset'] for g in g_list]}"
        for e, g in zip(e_list, g_list):
            where = f"partition {p} offset {e['offset']}:\n expected {_fmt(e)}\n got      {_fmt(g)}"
            assert g["key"] == e["key"], "key differs at " + where
            assert g["value"] == e["value"], "value differs at " + where
            if consumer == "kcat":
                if not any(hv is not None and b"\x00" in hv for _, hv in e["headers"]):
                    assert g["headers_csv"] == kcat_headers_csv(e["headers"]), \
                        f"headers differ at {where}\n kcat %h: {g['headers_csv']!r}"
            else:
                assert g["headers"] == e["headers"], "headers differ at " + where
            # CreateTime set by the producer: must be a plausible wall-clock ms.
            assert v["t0"] - 120_000 <= g["timestamp"] <= v["t1"] + 120_000, \
                f"implausible timestamp {g['timestamp']} at {where}"


@pytest.mark.parametrize("acks", ["1", "0"])
@pytest.mark.parametrize("producer", ["confluent", "kafka-python", "java", "franz-go"])
def test_produce_acks(broker, producer, acks, tmp_path):
    """acks=1 / acks=0 produce paths (the matrix above uses acks=all). With acks=1 the
    reported offsets must match; with acks=0 clients get no offsets, so the content per
    partition is checked in send order."""
    if producer == "kafka-python" and acks == "0":
        # Against Apache Kafka 4.3.1 none of kafka-python 2.3.3's acks=0 records are
        # ever appended (ProduceRequest v8, no error anywhere): not testable here.
        pytest.skip("kafka-python acks=0 loses every record even against Apache Kafka")
    topic = f"acks{acks}-{producer}"
    recs = adapt(producer, record_set())
    for i, r in enumerate(recs):  # explicit partitions so acks=0 results are checkable
        if r["partition"] is None:
            r["partition"] = i % PARTITIONS
    create_topic(broker.bootstrap, topic)
    reported = produce_helper(producer, broker.bootstrap, topic, "none", recs, tmp_path, acks=acks)
    got = consume_helper("confluent", broker.bootstrap, topic, len(recs))
    for p in range(PARTITIONS):
        sent = [(r, rep) for r, rep in zip(recs, reported) if r["partition"] == p]
        read = [g for g in got if g["partition"] == p]
        assert [g["offset"] for g in read] == list(range(len(sent)))
        for (r, (rp, ro)), g in zip(sent, read):
            assert rp == p
            if acks == "1":
                assert ro == g["offset"]
            assert (g["key"], g["value"], g["headers"]) == (r["key"], r["value"], r["headers"]), \
                f"partition {p} offset {g['offset']}: expected {_fmt(r)} got {_fmt(g)}"
