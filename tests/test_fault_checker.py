"""The fault checker (tests/replication/checker.py) and segment parser (records.py) on
hand-made histories: a clean history passes, and each kind of violation is caught: a lost
ack, a duplicate, an offset holding two values, a read that vanished, offsets going backwards,
a replica whose bytes differ, a replica missing committed data, a corrupt batch, a phantom.
No broker needed (runs for either SPOOL_TEST_TARGET)."""
import copy

import pytest

from replication.checker import check
from replication.records import (build_batch, crc32c, parse_segment_bytes, read_partition_dir,
                                 write_segment)
from replication.workload import History


def batches_for(values_by_offset, epoch=0, per_batch=2):
    """[(raw batch)] holding values at consecutive offsets from 0 (per_batch per batch)."""
    out = []
    items = sorted(values_by_offset.items())
    for i in range(0, len(items), per_batch):
        chunk = items[i:i + per_batch]
        out.append(build_batch(chunk[0][0], [v for _o, v in chunk], leader_epoch=epoch))
    return out


def clean_history(tmp_path, pad_spool=True):
    """Two partitions, values p-side; three replicas each written as segment files and read
    back through the parser (one replica with Spool's zero padding and a leading control
    batch at offset 0)."""
    h = History(topic="t", partitions=2)
    values = {0: {1: "j0-0", 2: "j0-2", 3: "c0-0", 4: "c0-2"},
              1: {1: "j0-1", 2: "c0-1", 3: "j0-3"}}
    h.sent = {"j0": 4, "c0": 3}
    for p, recs in values.items():
        for o, v in recs.items():
            h.acks.append((v.split("-")[0], v, p, o))
        h.final[p] = sorted(recs.items())
        h.hw[p] = max(recs) + 1
        h.leaders[p] = 1
        # Consumers saw a prefix of each partition, in order.
        h.reads["jr"] += [(p, o, v) for o, v in sorted(recs.items())[:2]]
        h.reads["cr"] += [(p, o, v) for o, v in sorted(recs.items())]
    h.replicas = {}
    for p, recs in values.items():
        control = build_batch(0, [b"\0\0\0\0"], leader_epoch=1, control=True)
        raws = [control] + batches_for(recs)
        h.replicas[p] = {}
        for n in (1, 2, 3):
            path = tmp_path / f"n{n}" / f"t-{p}" / "00000000000000000000.log"
            write_segment(str(path), raws, padding=4096 if (pad_spool and n == 2) else 0)
            h.replicas[p][n] = read_partition_dir(path.parent).batches
    return h


def kinds(report):
    return set(report.counts())


def test_clean_history_passes(tmp_path):
    h = clean_history(tmp_path)
    r = check(h)
    assert r.ok, r.summary()
    assert r.stats["acked"] == 7


def test_lost_ack(tmp_path):
    h = clean_history(tmp_path)
    # Acknowledged at p0@4 but the final read and the log end at 4.
    h.acks.append(("c0", "c0-4", 0, 5))
    h.sent["c0"] = 5
    r = check(h)
    assert kinds(r) == {"lost-ack"}, r.summary()


def test_ack_without_offset(tmp_path):
    h = clean_history(tmp_path)
    h.acks_no_offset.append(("c0", "c0-0", 0))  # stored (p0@3): fine
    assert check(h).ok
    h.acks_no_offset.append(("c0", "c0-6", 1))  # never stored: lost
    h.sent["c0"] = 7
    r = check(h)
    assert kinds(r) == {"lost-ack"}, r.summary()
    h = clean_history(tmp_path)
    h.acks_no_offset.append(("c0", "c0-0", 1))  # stored in p0, acknowledged for p1
    assert kinds(check(h)) == {"ack-moved"}


def test_unparsable_client_line_is_reported(tmp_path):
    h = clean_history(tmp_path)
    h.add_line("ack j0 7 0 notanumber\n")
    r = check(h)
    assert kinds(r) == {"harness-error"}, r.summary()


def test_duplicate(tmp_path):
    h = clean_history(tmp_path)
    h.final[1].append((4, "j0-0"))  # stored a second time, in another partition
    r = check(h)
    assert "duplicate" in kinds(r), r.summary()


def with_p0_tail(tmp_path, tail):
    """clean_history whose p0 replicas all end with the batches `tail` (high watermark moved
    past them, final read extended), as if appended by the leader and replicated."""
    h = clean_history(tmp_path)
    for n in (1, 2, 3):
        h.replicas[0][n] = h.replicas[0][n] + [parse_segment_bytes(t).batches[0] for t in tail]
    for t in tail:
        for o, _k, v in parse_segment_bytes(t).batches[0].records():
            h.final[0].append((o, v.decode()))
    h.hw[0] = parse_segment_bytes(tail[-1]).batches[0].next_offset
    return h


def test_duplicate_in_one_producer_session_is_a_violation(tmp_path):
    # c0-5 stored twice by the same producer id and epoch: the broker failed to deduplicate.
    h = with_p0_tail(tmp_path, [
        build_batch(5, ["c0-5"], producer_id=7, producer_epoch=0, base_sequence=9),
        build_batch(6, ["c0-5"], producer_id=7, producer_epoch=0, base_sequence=10)])
    h.sent["c0"] = 6
    r = check(h)
    assert kinds(r) == {"duplicate"}, r.summary()
    assert not r.warnings


def test_duplicate_resent_in_a_new_producer_epoch_is_a_warning(tmp_path):
    # What librdkafka did against Kafka: the same value under epoch 0 and again, after its
    # epoch bump, under epoch 1 at sequence 0.
    h = with_p0_tail(tmp_path, [
        build_batch(5, ["c0-5"], producer_id=2, producer_epoch=0, base_sequence=9),
        build_batch(6, ["c0-5"], producer_id=2, producer_epoch=1, base_sequence=0)])
    h.sent["c0"] = 6
    h.acks.append(("c0", "c0-5", 0, 6))
    r = check(h)
    assert r.ok, r.summary()
    assert list(r.warnings) == ["duplicate-client-resend"], r.summary()


def test_offset_holding_two_values(tmp_path):
    h = clean_history(tmp_path)
    h.reads["jr"].append((1, 3, "c0-9"))  # a consumer saw another value at p1@3
    h.sent["c0"] = 10
    r = check(h)
    assert "offset-two-values" in kinds(r), r.summary()
    # ... and across two acks naming the same offset.
    h = clean_history(tmp_path)
    h.acks.append(("c0", "c0-5", 0, 2))
    h.sent["c0"] = 6
    r = check(h)
    assert "offset-two-values" in kinds(r), r.summary()


def test_vanished_read(tmp_path):
    h = clean_history(tmp_path)
    # A consumer read p0@5 (above what survived): the record later disappeared.
    h.reads["cr"].append((0, 5, "c0-4"))
    h.sent["c0"] = 5
    r = check(h)
    assert "vanished-read" in kinds(r), r.summary()


def test_offsets_going_backwards_for_one_consumer(tmp_path):
    h = clean_history(tmp_path)
    h.reads["jr"].append((0, 1, "j0-0"))  # re-read an offset it had passed
    r = check(h)
    assert kinds(r) == {"non-monotonic"}, r.summary()


def test_replica_byte_mismatch(tmp_path):
    h = clean_history(tmp_path)
    # Node 3's copy of p0's second batch has another leader epoch (same records, same offsets).
    b = h.replicas[0][3][1]
    raw = bytearray(b.raw)
    raw[12:16] = (7).to_bytes(4, "big")
    h.replicas[0][3][1] = copy.copy(b)
    h.replicas[0][3][1].raw = bytes(raw)
    r = check(h)
    assert "replica-mismatch" in kinds(r), r.summary()
    assert "partitionLeaderEpoch" in str(r.violations["replica-mismatch"])


def test_replica_with_other_value_below_hw(tmp_path):
    h = clean_history(tmp_path)
    # Node 2 holds another record at p1@3 (a batch rebuilt with a different value).
    h.replicas[1][2][-1] = parse_segment_bytes(build_batch(3, ["c0-7"])).batches[0]
    h.sent["c0"] = 8
    r = check(h)
    assert {"replica-mismatch", "offset-two-values"} <= kinds(r), r.summary()


def test_replica_missing_committed_data(tmp_path):
    h = clean_history(tmp_path)
    h.replicas[1][3] = h.replicas[1][3][:-1]  # ends below the high watermark
    r = check(h)
    assert "replica-missing" in kinds(r), r.summary()


def test_corrupt_batch_below_hw(tmp_path):
    h = clean_history(tmp_path)
    for n in (1, 2, 3):  # identical on every replica, but the CRC does not match
        b = h.replicas[0][n][1]
        raw = bytearray(b.raw)
        raw[-2] ^= 0xFF
        h.replicas[0][n][1] = copy.copy(b)
        h.replicas[0][n][1].raw = bytes(raw)
    r = check(h)
    assert "replica-crc" in kinds(r), r.summary()


def test_phantom_value(tmp_path):
    h = clean_history(tmp_path)
    h.final[0].append((5, "x9-1"))
    r = check(h)
    assert "phantom" in kinds(r), r.summary()


def test_unavailable_after_heal(tmp_path):
    h = clean_history(tmp_path)
    h.cycles = [{"cycle": 0, "fault": "kill9", "node": 1, "writable_after_heal_s": None},
                {"cycle": 1, "fault": "isolate", "node": 2, "writable_after_heal_s": 45.0}]
    r = check(h, unavailable_bound=30)
    assert kinds(r) == {"unavailable"} and len(r.violations["unavailable"]) == 2, r.summary()


def test_parser_stops_at_padding_torn_tail_and_bad_magic():
    a, b = build_batch(0, ["x", "y"]), build_batch(2, ["z"])
    s = parse_segment_bytes(a + b + b"\0" * 100)
    assert [x.base_offset for x in s.batches] == [0, 2] and s.tail == "zero-padding"
    s = parse_segment_bytes(a + b[:-3])
    assert [x.base_offset for x in s.batches] == [0] and s.tail == "torn"
    bad = bytearray(b)
    bad[16] = 1
    s = parse_segment_bytes(a + bytes(bad))
    assert [x.base_offset for x in s.batches] == [0] and s.tail == "bad-magic"
    assert s.batches[0].crc_ok() and s.batches[0].records()[1][2] == b"y"
    assert s.batches[0].last_offset == 1


@pytest.mark.parametrize("fields", ["records", "offsets"])
def test_two_segment_files_in_order(tmp_path, fields):
    d = tmp_path / "t-0"
    write_segment(str(d / "00000000000000000000.log"), [build_batch(0, ["a", "b"])])
    write_segment(str(d / "00000000000000000002.log"), [build_batch(2, ["c"])], padding=512)
    s = read_partition_dir(d)
    if fields == "offsets":
        assert [(x.base_offset, x.last_offset) for x in s.batches] == [(0, 1), (2, 2)]
    else:
        assert [r[2] for x in s.batches for r in x.records()] == [b"a", b"b", b"c"]


def test_torn_fragment_never_reads_back_as_a_batch():
    """The harness's torn write (cluster.torn_fragment) must stay torn when the bytes past it
    read as zeros, as a segment's padding does: a record ends in a zero header count, so a
    fragment cut one byte short used to read back as a whole batch the node never wrote."""
    import random

    from replication.cluster import torn_fragment

    last = build_batch(601, ["c1-549"], leader_epoch=2, producer_id=2000, producer_epoch=0,
                       base_sequence=183)
    assert last[-1] == 0, "the record's last byte (header count) is zero"
    rng = random.Random(7)
    for _ in range(2000):
        torn = torn_fragment(last, rng, 64 * 1024)
        assert 1 <= len(torn) < len(last)
        padded = bytes(last) + torn + bytes(4096)
        scan = parse_segment_bytes(padded, "00000000000000000601.log")
        # Recovery takes a batch whose CRC (over attributes onwards) holds.
        whole = [b for b in scan.batches
                 if crc32c(b.raw[21:]) == int.from_bytes(b.raw[17:21], "big")]
        assert [b.base_offset for b in whole] == [601], len(torn)
