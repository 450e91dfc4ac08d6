"""Kafka record batches (magic 2) as they lie in a partition's `.log` segment files.

Used by the checker to compare replicas byte for byte and to read what each replica holds,
without going through a broker. Handles Spool's active segment, which may end in zero padding
past its logical end (O_DIRECT pages): parsing stops at a zero batch length, at a batch that
does not fit in the file (torn tail) or at a magic other than 2.

Batch layout (Kafka's DefaultRecordBatch):
  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 |
  17 crc u32 (CRC-32C of bytes 21..end) | 21 attributes i16 | 23 lastOffsetDelta i32 |
  27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 |
  53 baseSequence i32 | 57 recordCount i32 | 61 records...
"""
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

HEADER = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength

ATTR_COMPRESSION_MASK = 0x07
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

# --- CRC-32C (Castagnoli), reflected polynomial 0x82F63B78 ---------------------------------
try:  # optional fast path
    import crc32c as _crc32c_mod  # type: ignore

    def crc32c(data: bytes) -> int:
        return _crc32c_mod.crc32c(data)
except ImportError:  # pure Python, table driven; a few MB/s, enough for test-sized logs
    _TABLE = []
    for _i in range(256):
        _c = _i
        for _ in range(8):
            _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
        _TABLE.append(_c)

    def crc32c(data: bytes) -> int:
        crc = 0xFFFFFFFF
        table = _TABLE
        for b in data:
            crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


# --- varints ----------------------------------------------------------------------------
def _read_varint(buf, pos):
    shift = 0
    raw = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint past the end")
        b = buf[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
    return (raw >> 1) ^ -(raw & 1), pos


def _write_varint(v):
    raw = (v << 1) ^ (v >> 63)
    raw &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = raw & 0x7F
        raw >>= 7
        if raw:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@dataclass
class Batch:
    base_offset: int
    raw: bytes  # the whole batch, baseOffset included
    file: str = ""
    position: int = 0

    @property
    def length(self):
        return len(self.raw)

    @property
    def leader_epoch(self):
        return struct.unpack_from(">i", self.raw, 12)[0]

    @property
    def magic(self):
        return self.raw[16]

    @property
    def stored_crc(self):
        return struct.unpack_from(">I", self.raw, 17)[0]

    @property
    def attributes(self):
        return struct.unpack_from(">h", self.raw, 21)[0]

    @property
    def last_offset(self):
        return self.base_offset + struct.unpack_from(">i", self.raw, 23)[0]

    @property
    def next_offset(self):
        return self.last_offset + 1

    @property
    def producer_id(self):
        return struct.unpack_from(">q", self.raw, 43)[0]

    @property
    def base_sequence(self):
        return struct.unpack_from(">i", self.raw, 53)[0]

    @property
    def record_count(self):
        return struct.unpack_from(">i", self.raw, 57)[0]

    @property
    def is_control(self):
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def compression(self):
        return self.attributes & ATTR_COMPRESSION_MASK

    def crc_ok(self):
        return crc32c(self.raw[21:]) == self.stored_crc

    def records(self):
        """[(offset, key, value)] of an uncompressed batch; None if compressed (not decoded)."""
        if self.compression != 0:
            return None
        out = []
        buf = self.raw
        pos = HEADER
        for _ in range(self.record_count):
            length, pos = _read_varint(buf, pos)
            end = pos + length
            pos += 1  # attributes
            _ts, pos = _read_varint(buf, pos)
            delta, pos = _read_varint(buf, pos)
            klen, pos = _read_varint(buf, pos)
            key = None if klen < 0 else bytes(buf[pos:pos + klen])
            pos += max(klen, 0)
            vlen, pos = _read_varint(buf, pos)
            value = None if vlen < 0 else bytes(buf[pos:pos + vlen])
            pos = end
            out.append((self.base_offset + delta, key, value))
        return out


@dataclass
class SegmentScan:
    batches: list = field(default_factory=list)
    # Why the scan of the last file stopped before its end: "" (clean end), "zero-padding",
    # "torn" (a batch runs past the end), "bad-magic", "bad-length".
    tail: str = ""
    tail_bytes: int = 0


def parse_segment_bytes(data, name="", scan=None):
    scan = scan or SegmentScan()
    pos = 0
    n = len(data)
    while pos + LOG_OVERHEAD <= n:
        base, blen = struct.unpack_from(">qi", data, pos)
        if blen == 0:
            scan.tail, scan.tail_bytes = "zero-padding", n - pos
            return scan
        if blen < HEADER - LOG_OVERHEAD:
            scan.tail, scan.tail_bytes = "bad-length", n - pos
            return scan
        end = pos + LOG_OVERHEAD + blen
        if end > n:
            scan.tail, scan.tail_bytes = "torn", n - pos
            return scan
        if data[pos + 16] != 2:
            scan.tail, scan.tail_bytes = "bad-magic", n - pos
            return scan
        scan.batches.append(Batch(base, bytes(data[pos:end]), name, pos))
        pos = end
    if pos < n:
        scan.tail, scan.tail_bytes = "torn", n - pos
    else:
        scan.tail, scan.tail_bytes = "", 0
    return scan


def segment_files(partition_dir):
    """The `.log` segment files of a partition directory, in base-offset order."""
    d = Path(partition_dir)
    if not d.is_dir():
        return []
    files = []
    for f in d.iterdir():
        if f.suffix == ".log" and f.stem.isdigit():
            files.append((int(f.stem), f))
    return [f for _, f in sorted(files)]


def read_partition_dir(partition_dir):
    """Every batch of every segment (a segment's scan stops at its logical end)."""
    scan = SegmentScan()
    for f in segment_files(partition_dir):
        try:
            data = f.read_bytes()
        except FileNotFoundError:  # rolled/deleted meanwhile
            continue
        parse_segment_bytes(data, f.name, scan)
    return scan


def log_end_offset(partition_dir):
    scan = read_partition_dir(partition_dir)
    return scan.batches[-1].next_offset if scan.batches else 0


# --- building batches (for the checker's unit tests) ---------------------------------------
def build_batch(base_offset, values, leader_epoch=0, producer_id=-1, producer_epoch=-1,
                base_sequence=-1, timestamp=0, control=False):
    recs = bytearray()
    for i, v in enumerate(values):
        body = bytearray()
        body.append(0)  # record attributes
        body += _write_varint(0)  # timestamp delta
        body += _write_varint(i)  # offset delta
        body += _write_varint(-1)  # key: null
        if v is None:
            body += _write_varint(-1)
        else:
            vb = v.encode() if isinstance(v, str) else bytes(v)
            body += _write_varint(len(vb)) + vb
        body += _write_varint(0)  # headers
        recs += _write_varint(len(body)) + body
    attributes = ATTR_CONTROL if control else 0
    after_crc = struct.pack(">hiqqqhii", attributes, len(values) - 1, timestamp, timestamp,
                            producer_id, producer_epoch, base_sequence, len(values)) + bytes(recs)
    crc = crc32c(after_crc)
    body = struct.pack(">ibI", leader_epoch, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(body)) + body


def write_segment(path, batches, padding=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for b in batches:
            f.write(b)
        f.write(b"\0" * padding)
