"""Hostile and malformed input on the Kafka port, spoken over raw sockets.

Fault model: a client may send anything — truncated frames, absurd size
prefixes, negative sizes, random bytes, unknown API keys, length fields that
claim 2^31-1 elements, API versions from the future, record batches with a bad
CRC or a size over the limit, unknown or invalid topic names. For each, the
broker must

  * answer with the Kafka error code where Kafka answers one (CORRUPT_MESSAGE,
    MESSAGE_TOO_LARGE, UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION,
    UNSUPPORTED_VERSION), and otherwise close only the offending connection;
  * never allocate what a length prefix claims (VmRSS stays small);
  * keep serving: a fresh connection still gets an ApiVersions answer, and a
    well-behaved connection opened BEFORE the bad one keeps working.

Frames are hand-encoded (the `wire` helpers below, also used by test_offsets.py)
so that every byte on the socket is the test's choice.
"""
import os
import random
import socket
import struct
import time

import pytest

TIMEOUT_S = 10.0

# Kafka error codes used here.
NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35

# API keys.
PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
API_VERSIONS, CREATE_TOPICS, OFFSET_FOR_LEADER_EPOCH = 18, 19, 23


# ---------------------------------------------------------------------------
# wire: a minimal Kafka encoder/decoder (non-flexible versions only, plus the
# ApiVersions response, whose header is never flexible).
# ---------------------------------------------------------------------------
def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def i64(v):
    return struct.pack(">q", v)


def string(s):
    if s is None:
        return i16(-1)
    b = s.encode() if isinstance(s, str) else s
    return i16(len(b)) + b


def nbytes(b):
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items):
    return i32(len(items)) + b"".join(items)


def uvarint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v):
    return uvarint((v << 1) ^ (v >> 63))


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def record_batch(values, base_timestamp=None, timestamps=None, corrupt_crc=False,
                 key_prefix=b"k", attributes=0, producer=(-1, -1, -1)):
    """A magic-2 record batch (no compression; no producer id unless `producer` gives
    (id, epoch, base sequence)) holding `values`.
    `timestamps` (one per value, ms) overrides base_timestamp + 0."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    if timestamps is None:
        timestamps = [base_timestamp] * len(values)
    base_ts = min(timestamps)
    recs = b""
    for delta, (v, ts) in enumerate(zip(values, timestamps)):
        key = key_prefix + str(delta).encode()
        body = (i8(0) + varint(ts - base_ts) + varint(delta) + varint(len(key)) + key
                + varint(len(v)) + v + varint(0))
        recs += varint(len(body)) + body
    producer_id, producer_epoch, base_sequence = producer
    after_crc = (i16(attributes) + i32(len(values) - 1) + i64(base_ts) + i64(max(timestamps))
                 + i64(producer_id) + i16(producer_epoch) + i32(base_sequence)
                 + i32(len(values)) + recs)
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_len = i32(0) + i8(2) + struct.pack(">I", crc) + after_crc  # leader epoch, magic, crc
    return i64(0) + i32(len(after_len)) + after_len


def request(api_key, version, correlation_id, body, client_id="spool-it"):
    """A complete frame with request header v1 (non-flexible)."""
    payload = i16(api_key) + i16(version) + i32(correlation_id) + string(client_id) + body
    return i32(len(payload)) + payload


class Reader:
    def __init__(self, data):
        self.b = data
        self.o = 0

    def take(self, n):
        assert self.o + n <= len(self.b), f"short response: need {n} at {self.o}/{len(self.b)}"
        v = self.b[self.o:self.o + n]
        self.o += n
        return v

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def bytes_(self):
        n = self.i32()
        return None if n < 0 else self.take(n)

    def uvarint(self):
        shift = v = 0
        while True:
            b = self.take(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7

    def array(self, f):
        n = self.i32()
        assert 0 <= n < 100_000, n
        return [f(self) for _ in range(n)]

    def done(self):
        return self.o == len(self.b)


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 0 <= size < 64 << 20, f"response size {size}"
    return recv_exact(sock, size)


def connect(bootstrap, timeout=TIMEOUT_S):
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def call(sock, api_key, version, body, correlation_id=None):
    """Send one request, return a Reader positioned after the response header
    (response header v0: correlation id only; every caller uses non-flexible versions)."""
    cid = correlation_id if correlation_id is not None else random.randint(1, 2**31 - 1)
    sock.sendall(request(api_key, version, cid, body))
    r = Reader(recv_frame(sock))
    got = r.i32()
    assert got == cid, f"correlation id {got} != {cid}"
    return r


def api_versions(sock, version=0):
    """ApiVersions v0..v2 round trip; returns (error_code, {api_key: (min, max)})."""
    r = call(sock, API_VERSIONS, version, b"")
    err = r.i16()
    apis = {k: (lo, hi) for k, lo, hi in r.array(lambda r: (r.i16(), r.i16(), r.i16()))}
    return err, apis


def create_topics_v4(sock, topics, timeout_ms=30000):
    """topics: [(name, partitions, {config: value})]. Returns [(name, error_code, message)]."""
    body = array([string(n) + i32(p) + i16(1) + array([])
                  + array([string(k) + string(v) for k, v in cfg.items()])
                  for n, p, cfg in topics]) + i32(timeout_ms) + i8(0)
    r = call(sock, CREATE_TOPICS, 4, body)
    r.i32()  # throttle
    return r.array(lambda r: (r.string(), r.i16(), r.string()))


def produce_v8(sock, topic, partition, batch, acks=-1):
    """One batch to one partition. Returns (error_code, base_offset, log_start_offset, error_message)."""
    body = (string(None) + i16(acks) + i32(30000)
            + array([string(topic) + array([i32(partition) + nbytes(batch)])]))
    r = call(sock, PRODUCE, 8, body)
    topics = r.array(lambda r: (r.string(), r.array(lambda r: (
        r.i32(), r.i16(), r.i64(), r.i64(), r.i64(),
        r.array(lambda r: (r.i32(), r.string())), r.string()))))
    assert len(topics) == 1 and topics[0][0] == topic, topics
    parts = topics[0][1]
    assert len(parts) == 1 and parts[0][0] == partition, parts
    _, err, base, _append_time, log_start, _rec_errs, msg = parts[0]
    return err, base, log_start, msg


def wait_topic(bootstrap, topic, partitions, timeout=30):
    """Bounded wait until metadata lists the topic with all partitions led."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if last is not None and last.error is None and len(last.partitions) == partitions and \
                all(p.leader >= 0 for p in last.partitions.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} not ready: {last}")


def create_topic(bootstrap, topic, partitions=1, config=None):
    with connect(bootstrap) as s:
        res = create_topics_v4(s, [(topic, partitions, config or {})])
    assert [(n, e) for n, e, _ in res] == [(topic, NONE)], res
    wait_topic(bootstrap, topic, partitions)


# ---------------------------------------------------------------------------
# Helpers for the hostile-input cases
# ---------------------------------------------------------------------------
def vm_rss_kib(pid):
    """Resident set size of pid in KiB (for Kafka: the JVM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def closed_by_peer(sock, timeout=TIMEOUT_S):
    """True if the peer closes (EOF or reset) within timeout without sending a frame."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return data == b""


def assert_healthy(broker, survivor):
    """The broker process lives, a fresh connection works, and `survivor`
    (opened before the bad input) still works."""
    assert broker.alive(), "broker process died"
    with connect(broker.bootstrap) as s:
        err, apis = api_versions(s)
        assert err == NONE and PRODUCE in apis and API_VERSIONS in apis, (err, apis)
    err, apis = api_versions(survivor)
    assert err == NONE and METADATA in apis, (err, apis)


@pytest.fixture
def survivor(broker):
    s = connect(broker.bootstrap)
    assert api_versions(s)[0] == NONE
    yield s
    s.close()


# ---------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------
def test_truncated_frame_then_close(broker, survivor):
    full = request(API_VERSIONS, 0, 7, b"")
    for cut in (1, 3, 4, 6, len(full) - 1):
        with connect(broker.bootstrap) as s:
            s.sendall(full[:cut])
        # closed by us mid-frame; now the size promises more than will ever come
    with connect(broker.bootstrap) as s:
        s.sendall(i32(1000) + b"\x00\x12\x00\x00")  # 1000 announced, 4 sent, then close
    assert_healthy(broker, survivor)


@pytest.mark.parametrize("size", [100 * 1024 * 1024 + 1, 1 << 30, 2**31 - 1])
def test_oversized_size_prefix_closes_without_allocating(broker, survivor, size):
    rss_before = vm_rss_kib(broker.pid)
    with connect(broker.bootstrap) as s:
        s.sendall(i32(size) + i16(API_VERSIONS) + i16(0) + i32(1) + string("x"))
        # Keep streaming (bounded: 32 MiB) as if the body followed. A broker that
        # buffered the announced size would grow by what it received.
        sent = 0
        chunk = b"\xab" * (1 << 20)
        s.settimeout(TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while sent < 32 << 20 and time.monotonic() < deadline:
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        assert closed_by_peer(s), f"connection not closed after a {size}-byte size prefix"
    time.sleep(0.5)
    rss_after = vm_rss_kib(broker.pid)
    grew_mib = (rss_after - rss_before) / 1024
    print(f"size prefix {size}: streamed {sent >> 20} MiB before close; "
          f"VmRSS {rss_before // 1024} -> {rss_after // 1024} MiB")
    assert grew_mib < 24, f"VmRSS grew by {grew_mib:.1f} MiB after a {size}-byte size prefix"
    assert_healthy(broker, survivor)


@pytest.mark.parametrize("size", [-1, -2**31, -100])
def test_negative_size_prefix_closes(broker, survivor, size):
    with connect(broker.bootstrap) as s:
        s.sendall(i32(size) + b"\x00" * 16)
        assert closed_by_peer(s), f"connection not closed after size prefix {size}"
    assert_healthy(broker, survivor)


def test_garbage_bytes(broker, survivor):
    rng = random.Random(0x5B001)
    for _ in range(20):
        with connect(broker.bootstrap) as s:
            try:
                s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2048))))
            except (BrokenPipeError, ConnectionResetError):
                pass
        # A frame with a sane size and a garbage body (random API key and version).
        with connect(broker.bootstrap) as s:
            body = bytes(rng.getrandbits(8) for _ in range(60))
            try:
                s.sendall(i32(len(body)) + body)
                s.settimeout(TIMEOUT_S)
                s.recv(65536)  # either closed or some error answer; only survival matters
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                pass
    assert_healthy(broker, survivor)


def test_unknown_api_key_closes_connection(broker, survivor):
    with connect(broker.bootstrap) as s:
        s.sendall(request(31999, 0, 42, b"\x00" * 8))
        # Kafka cannot encode a response for an API it does not know: it closes.
        assert closed_by_peer(s), "unknown API key: connection not closed"
    assert_healthy(broker, survivor)


def test_metadata_topic_array_claims_2_31_minus_1(broker, survivor):
    rss_before = vm_rss_kib(broker.pid)
    for version in (1, 4):
        body = i32(2**31 - 1) + string("t")  # claims 2^31-1 topics, carries one
        if version >= 4:
            body += i8(1)  # allow_auto_topic_creation
        with connect(broker.bootstrap) as s:
            s.sendall(request(METADATA, version, 9, body))
            assert closed_by_peer(s), f"Metadata v{version} with a lying array length: not closed"
    rss_after = vm_rss_kib(broker.pid)
    assert (rss_after - rss_before) / 1024 < 24, (rss_before, rss_after)
    assert_healthy(broker, survivor)


def test_api_versions_from_the_future_answers_v0_unsupported(broker, survivor):
    """KIP-511: a client opens with its newest ApiVersions; a broker that does not
    know that version answers in v0 layout with UNSUPPORTED_VERSION and its api list,
    so the client can retry with a version both know. Newer ApiVersions requests use
    request header v2 (client_id, then tagged fields), as librdkafka/Java send them."""
    with connect(broker.bootstrap) as s:
        cid = 0x1234567
        header = i16(API_VERSIONS) + i16(127) + i32(cid) + string("spool-it") + uvarint(0)
        body = uvarint(len("spool-it") + 1) + b"spool-it" + uvarint(2) + b"1" + uvarint(0)
        s.sendall(i32(len(header + body)) + header + body)
        r = Reader(recv_frame(s))
        assert r.i32() == cid
        err = r.i16()
        apis = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
        # v0 layout: nothing after the api list (no throttle_time_ms, no tagged fields)
        assert r.done(), f"trailing bytes after a v0 ApiVersions body: {r.b[r.o:]!r}"
        assert err == UNSUPPORTED_VERSION, err
        keys = {k: (lo, hi) for k, lo, hi in apis}
        # Kafka lists only ApiVersions itself here (enough for the client to pick a
        # version); listing every API is also fine.
        assert API_VERSIONS in keys, keys
        assert keys[API_VERSIONS][0] == 0 and keys[API_VERSIONS][1] >= 3, keys[API_VERSIONS]
        # the same connection keeps working with a supported version
        err, apis = api_versions(s)
        assert err == NONE and API_VERSIONS in apis
    assert_healthy(broker, survivor)


# ---------------------------------------------------------------------------
# Produce / CreateTopics answered with error codes
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def topic(broker):
    name = "bad-input"
    create_topic(broker.bootstrap, name, partitions=1, config={"max.message.bytes": "4096"})
    return name


def test_produce_good_batch_baseline(broker, topic):
    """The encoder itself is right: a valid batch is accepted (guards the cases below)."""
    with connect(broker.bootstrap) as s:
        err, base, _, msg = produce_v8(s, topic, 0, record_batch([b"hello", b"world"]))
        assert err == NONE, (err, msg)
        assert base >= 0


def test_produce_corrupt_crc(broker, survivor, topic):
    with connect(broker.bootstrap) as s:
        err, _, _, msg = produce_v8(s, topic, 0, record_batch([b"a" * 10, b"b"], corrupt_crc=True))
        assert err == CORRUPT_MESSAGE, (err, msg)
        # the connection stays usable after an error answer
        err, _, _, msg = produce_v8(s, topic, 0, record_batch([b"fine"]))
        assert err == NONE, (err, msg)
    assert_healthy(broker, survivor)


def test_produce_larger_than_max_message_bytes(broker, survivor, topic):
    batch = record_batch([os.urandom(3000), os.urandom(3000)])
    assert len(batch) > 4096
    with connect(broker.bootstrap) as s:
        err, _, _, msg = produce_v8(s, topic, 0, batch)
        assert err == MESSAGE_TOO_LARGE, (err, msg)
        err, _, _, msg = produce_v8(s, topic, 0, record_batch([b"small"]))
        assert err == NONE, (err, msg)
    assert_healthy(broker, survivor)


def test_produce_unknown_topic(broker, survivor):
    with connect(broker.bootstrap) as s:
        err, _, _, msg = produce_v8(s, "no-such-topic-xyz", 0, record_batch([b"x"]))
        assert err == UNKNOWN_TOPIC_OR_PARTITION, (err, msg)
    assert_healthy(broker, survivor)


def test_produce_unknown_partition(broker, survivor, topic):
    with connect(broker.bootstrap) as s:
        err, _, _, msg = produce_v8(s, topic, 7, record_batch([b"x"]))
        assert err == UNKNOWN_TOPIC_OR_PARTITION, (err, msg)


@pytest.mark.parametrize("name", ["bad name", "x/y", "..", ".", "", "a" * 250, "tab\there", "é"])
def test_create_topics_invalid_name(broker, survivor, name):
    with connect(broker.bootstrap) as s:
        res = create_topics_v4(s, [(name, 1, {})])
    assert len(res) == 1 and res[0][0] == name, res
    assert res[0][1] == INVALID_TOPIC_EXCEPTION, res
    assert_healthy(broker, survivor)


# ---------------------------------------------------------------------------
# Found in review: each of these once crashed, lost data or spun the broker.
# ---------------------------------------------------------------------------
INVALID_RECORD = 87


def with_producer(batch, producer_id, epoch, base_sequence):
    """`batch` with producer id, epoch and base sequence set and its CRC recomputed."""
    b = bytearray(batch)
    b[43:51] = i64(producer_id)
    b[51:53] = i16(epoch)
    b[53:57] = i32(base_sequence)
    b[17:21] = struct.pack(">I", crc32c(bytes(b[21:])))
    return bytes(b)


def fetch_v4(sock, topic, partition, offset, partition_max_bytes, max_wait_ms, min_bytes=1,
             max_bytes=50 << 20):
    """One partition. Returns (error_code, high_watermark, records bytes length)."""
    body = (i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(0)
            + array([string(topic) + array([i32(partition) + i64(offset) + i32(partition_max_bytes)])]))
    r = call(sock, FETCH, 4, body)
    r.i32()  # throttle
    def aborted(r):  # nullable array: -1 means none
        n = r.i32()
        return [(r.i64(), r.i64()) for _ in range(max(n, 0))]

    topics = r.array(lambda r: (r.string(), r.array(lambda r: (
        r.i32(), r.i16(), r.i64(), r.i64(), aborted(r), r.bytes_()))))
    (_, parts), = topics
    (_, err, hw, _lso, _aborted, records), = parts
    return err, hw, len(records or b"")


def test_produce_negative_sequence_with_producer_id(broker, survivor, topic):
    """A producer id with sequence -1 is INVALID_RECORD (Kafka's LogValidator), not a crash."""
    batch = with_producer(record_batch([b"x"]), producer_id=8, epoch=0, base_sequence=-1)
    with connect(broker.bootstrap) as s:
        err, _, _, msg = produce_v8(s, topic, 0, batch)
        assert err == INVALID_RECORD, (err, msg)
    assert_healthy(broker, survivor)


def test_produce_two_batches_for_one_partition(broker, survivor, topic):
    """Produce v3+ must carry exactly one batch per partition; Kafka answers INVALID_RECORD.
    Accepting two let an idempotent duplicate swallow the other batch while acknowledging it."""
    two = record_batch([b"first"]) + record_batch([b"second"])
    with connect(broker.bootstrap) as s:
        err, _, _, msg = produce_v8(s, topic, 0, two)
        assert err == INVALID_RECORD, (err, msg)
    assert_healthy(broker, survivor)


def test_produce_to_internal_topic_is_refused(broker, survivor):
    from conftest import TARGET
    if TARGET != "spool":
        pytest.skip("Kafka creates __consumer_offsets only when a group first needs it")
    with connect(broker.bootstrap) as s:
        err, _, _, msg = produce_v8(s, "__consumer_offsets", 0, record_batch([b"forged"]))
        assert err == INVALID_TOPIC_EXCEPTION, (err, msg)
    assert_healthy(broker, survivor)


def test_fetch_with_zero_partition_max_bytes_returns_a_batch(broker, survivor, topic):
    """partition_max_bytes=0 still returns the first batch (Kafka's minOneMessage); it once
    returned nothing and spun on the long poll until max_wait_ms."""
    with connect(broker.bootstrap) as s:
        err, base, _, msg = produce_v8(s, topic, 0, record_batch([b"for-zero-fetch"]))
        assert err == NONE, (err, msg)
        start = time.monotonic()
        err, hw, size = fetch_v4(s, topic, 0, base, partition_max_bytes=0, max_wait_ms=5000)
        elapsed = time.monotonic() - start
    assert err == NONE and hw > base and size > 0, (err, hw, size)
    assert elapsed < 2.5, f"fetch took {elapsed:.1f}s"
    assert_healthy(broker, survivor)


def test_fetch_min_bytes_unreachable_waits_quietly(broker, survivor, topic):
    """min_bytes above what exists: the broker waits max_wait_ms, then answers with what it has,
    without burning a core meanwhile."""
    with connect(broker.bootstrap) as s:
        err, base, _, msg = produce_v8(s, topic, 0, record_batch([b"small"]))
        assert err == NONE, (err, msg)
        cpu_before = broker_cpu_seconds(broker.pid)
        start = time.monotonic()
        err, _, size = fetch_v4(s, topic, 0, base, partition_max_bytes=1 << 20, max_wait_ms=1500,
                                min_bytes=10 << 20)
        elapsed = time.monotonic() - start
        cpu = broker_cpu_seconds(broker.pid) - cpu_before
    assert err == NONE and size > 0, (err, size)
    assert 1.2 < elapsed < 5, elapsed
    assert cpu < 0.5, f"broker used {cpu:.2f}s of CPU during a {elapsed:.1f}s long poll"


def broker_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20


def test_transactional_records_need_a_transactional_id(broker, survivor, topic):
    """Kafka's rule: transactional records in a request without a transactional id fail with
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED and nothing is appended; a control batch (a
    transaction marker) never comes from a client (INVALID_RECORD)."""
    with connect(broker.bootstrap) as s:
        txn = record_batch([b"zombie"], attributes=TRANSACTIONAL_BIT, producer=(4242, 0, 0))
        err, _, _, msg = produce_v8(s, topic, 0, txn)
        assert err == TRANSACTIONAL_ID_AUTHORIZATION_FAILED, (err, msg)
        # (A transactional marker would be refused for its transactional bit first.)
        marker = record_batch([b"x"], attributes=CONTROL_BIT)
        err, _, _, msg = produce_v8(s, topic, 0, marker)
        assert err == INVALID_RECORD, (err, msg)
        err, base, _, msg = produce_v8(s, topic, 0, record_batch([b"after"]))
        assert err == NONE, (err, msg)
    # Neither refused batch reached the log: reading from the start finds only plain records.
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bad-input-txn",
                  "isolation.level": "read_uncommitted", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (not seen or seen[-1] != b"after"):
            for m in c.consume(100, timeout=1):
                if m.error() is None:
                    seen.append(m.value())
        assert b"after" in seen and b"zombie" not in seen, seen
    finally:
        c.close()
    assert_healthy(broker, survivor)
