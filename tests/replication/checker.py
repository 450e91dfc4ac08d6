"""Safety checker for a replicated-partition fault run (ARCHITECTURE.md, "Crash and failover").

Input: a workload.History (acks, errors, every consumer's reads in order, the final full read,
the high watermarks, every replica's on-disk batches, availability per fault cycle).
Output: a Report listing violations by kind, with statistics.

Properties (each violation kind names one):
  lost-ack            an acknowledged record is not in the final read at its acknowledged offset
  ack-moved           ... it is there, but at another partition/offset
  duplicate           a value is stored at more than one offset, two of the copies under the
                      same producer id and epoch (the broker's deduplication failed). Copies
                      each under another producer id/epoch are a warning instead
                      (duplicate-client-resend): the client re-sent the record in a new
                      idempotence session (librdkafka bumps the epoch after a "possibly
                      persisted" failure and re-sends; confluentinc/librdkafka#4953), which
                      no broker can deduplicate
  offset-two-values   one (partition, offset) holds two different values across everything
                      observed: acks, every consumer's reads, the final read, every replica's
                      records below the high watermark
  vanished-read       a consumer was handed a record that the final read does not hold there
  non-monotonic       one consumer saw offsets of a partition not strictly increasing
  phantom             a value no producer sent
  replica-missing     a replica's log ends below the high watermark
  replica-mismatch    a replica's batches below the high watermark are not byte-identical to the
                      leader's (or in another order / with other base offsets)
  replica-order       a replica's batches overlap or go backwards
  replica-crc         a batch below the high watermark fails its CRC-32C
  final-incomplete    a record stored below the high watermark was not served by the final read
  final-not-on-disk   the final read served an offset the leader's log does not hold
  unavailable         not writable (acks=all) within the bound after a heal
  not-converged       replicas did not get back in sync within the bound (liveness)
  harness-error       a client line the harness could not parse, or a client program crashed
                      (the history is incomplete)
Acks without an offset (librdkafka reports a retried batch that the broker answered with
DUPLICATE_SEQUENCE_NUMBER as delivered, offset unknown) are checked to be stored exactly once in
their partition.
"""
from collections import Counter, defaultdict
from dataclasses import dataclass, field

KINDS = ["lost-ack", "ack-moved", "duplicate", "offset-two-values", "vanished-read",
         "non-monotonic", "phantom", "replica-missing", "replica-mismatch", "replica-order",
         "replica-crc", "final-incomplete", "final-not-on-disk", "unavailable", "not-converged",
         "harness-error"]

# Fields of a record batch, by byte position, to name where two replicas' batches differ.
_FIELDS = [(0, "baseOffset"), (8, "batchLength"), (12, "partitionLeaderEpoch"), (16, "magic"),
           (17, "crc"), (21, "attributes"), (23, "lastOffsetDelta"), (27, "baseTimestamp"),
           (35, "maxTimestamp"), (43, "producerId"), (51, "producerEpoch"),
           (53, "baseSequence"), (57, "recordCount"), (61, "records")]


def _field_at(pos):
    name = "?"
    for start, n in _FIELDS:
        if pos >= start:
            name = n
    return name


@dataclass
class Report:
    violations: dict = field(default_factory=lambda: defaultdict(list))
    # Findings that are not the broker's fault (client behaviour), reported but not failing.
    warnings: dict = field(default_factory=lambda: defaultdict(list))
    stats: dict = field(default_factory=dict)

    def add(self, kind, detail):
        assert kind in KINDS, kind
        self.violations[kind].append(detail)

    def warn(self, kind, detail):
        self.warnings[kind].append(detail)

    @property
    def ok(self):
        return not any(self.violations.values())

    def counts(self):
        return {k: len(v) for k, v in self.violations.items() if v}

    def summary(self, per_kind=5):
        lines = [f"checker: {'OK' if self.ok else 'VIOLATIONS ' + str(self.counts())}"]
        for k, v in self.stats.items():
            lines.append(f"  {k}: {v}")
        for kind in KINDS:
            found = self.violations.get(kind)
            if found:
                lines.append(f"  [{kind}] {len(found)}:")
                for d in found[:per_kind]:
                    lines.append(f"    {d}")
        for kind, found in self.warnings.items():
            lines.append(f"  warning [{kind}] {len(found)} (client behaviour, not a broker "
                         f"violation):")
            for d in found[:per_kind]:
                lines.append(f"    {d}")
        return "\n".join(lines)


def _value_label_seq(value):
    label, sep, seq = value.rpartition("-")
    if not sep or not seq.isdigit():
        return None, None
    return label, int(seq)


def check(h, unavailable_bound=None):
    r = Report()
    parts = range(h.partitions)
    hw = h.hw

    # -- final read, as {(p, o): value} -------------------------------------------------
    final = {}
    for p, recs in h.final.items():
        for o, v in recs:
            if (p, o) in final and final[(p, o)] != v:
                r.add("offset-two-values", f"final read: p{p}@{o} = {final[(p, o)]!r} and {v!r}")
            final[(p, o)] = v

    # -- replicas: order, completeness, byte identity, CRC; the reference is the leader's ------
    disk = {}  # (p, o) -> value, from the reference replica below hw (uncompressed batches)
    disk_data_offsets = set()
    disk_producer = {}  # (p, o) -> (producer id, producer epoch, sequence)
    for p in parts:
        reps = h.replicas.get(p, {})
        if not reps:
            continue
        ref_node = h.leaders.get(p) if h.leaders.get(p) in reps else sorted(reps)[0]
        below = {}
        for n, batches in reps.items():
            prev_next = None
            for b in batches:
                if prev_next is not None and b.base_offset < prev_next:
                    r.add("replica-order", f"p{p} node {n}: batch at {b.base_offset} after one "
                                           f"ending at {prev_next - 1} ({b.file}@{b.position})")
                prev_next = b.next_offset
            end = batches[-1].next_offset if batches else 0
            if end < hw.get(p, 0):
                r.add("replica-missing", f"p{p} node {n}: log ends at {end}, below the high "
                                         f"watermark {hw.get(p)}")
            below[n] = [b for b in batches if b.base_offset < hw.get(p, 0)]
        ref = below[ref_node]
        crc_checked = set()
        for b in ref:
            if b.raw not in crc_checked:
                crc_checked.add(b.raw)
                if not b.crc_ok():
                    r.add("replica-crc", f"p{p} node {ref_node}: batch at {b.base_offset} "
                                         f"({b.file}@{b.position}) fails its CRC")
            recs = b.records()
            if recs is None or b.is_control:
                continue
            pepoch = int.from_bytes(b.raw[51:53], "big", signed=True)
            for o, _k, v in recs:
                value = "<null>" if v is None else v.decode("utf-8", "replace")
                disk[(p, o)] = value
                disk_data_offsets.add((p, o))
                seq = b.base_sequence + (o - b.base_offset) if b.base_sequence >= 0 else -1
                disk_producer[(p, o)] = (b.producer_id, pepoch, seq)
        for n, mine in below.items():
            if n == ref_node:
                continue
            for i in range(max(len(ref), len(mine))):
                a = ref[i] if i < len(ref) else None
                b = mine[i] if i < len(mine) else None
                if a is None or b is None:
                    if b is None and mine and mine[-1].next_offset < hw.get(p, 0):
                        break  # already reported as replica-missing
                    which = a or b
                    r.add("replica-mismatch",
                          f"p{p}: batch at {which.base_offset} only on node "
                          f"{ref_node if a else n} (vs node {n if a else ref_node})")
                    break
                if a.raw != b.raw:
                    pos = next((k for k in range(min(len(a.raw), len(b.raw)))
                                if a.raw[k] != b.raw[k]), min(len(a.raw), len(b.raw)))
                    r.add("replica-mismatch",
                          f"p{p}: batch #{i} differs between node {ref_node} (base "
                          f"{a.base_offset}, {a.length} B, {a.file}@{a.position}) and node {n} "
                          f"(base {b.base_offset}, {b.length} B, {b.file}@{b.position}) from "
                          f"byte {pos} ({_field_at(pos)})")
                    break
            # Records of every replica join the observations (two values at one offset).
            for b in mine:
                recs = b.records()
                if recs is None or b.is_control:
                    continue
                for o, _k, v in recs:
                    value = "<null>" if v is None else v.decode("utf-8", "replace")
                    if (p, o) in disk and disk[(p, o)] != value:
                        r.add("offset-two-values", f"p{p}@{o}: node {ref_node} holds "
                                                   f"{disk[(p, o)]!r}, node {n} {value!r}")

    # -- every observation of every offset must agree ---------------------------------
    seen = defaultdict(set)  # (p, o) -> {value}
    sources = defaultdict(list)
    for label, v, p, o in h.acks:
        seen[(p, o)].add(v)
        sources[(p, o)].append(f"ack {label}")
    for consumer, recs in h.reads.items():
        for p, o, v in recs:
            seen[(p, o)].add(v)
            sources[(p, o)].append(f"read {consumer}")
    for (p, o), v in final.items():
        seen[(p, o)].add(v)
        sources[(p, o)].append("final")
    for (p, o), v in disk.items():
        seen[(p, o)].add(v)
        sources[(p, o)].append("disk")
    for (p, o), vs in sorted(seen.items()):
        if len(vs) > 1:
            r.add("offset-two-values", f"p{p}@{o} held {sorted(vs)} "
                                       f"(seen by {sorted(set(sources[(p, o)]))})")

    # -- acks ------------------------------------------------------------------------
    where = defaultdict(set)  # value -> {(p, o)} in the stored data (final read + disk)
    for (p, o), v in final.items():
        where[v].add((p, o))
    for (p, o), v in disk.items():
        where[v].add((p, o))
    acked_values = set()
    for label, v, p, o in h.acks:
        acked_values.add(v)
        if (p, o) in where.get(v, ()):
            continue  # (if only on disk: reported as final-incomplete)
        if where.get(v):
            r.add("ack-moved", f"{v} acknowledged at p{p}@{o}, stored at {sorted(where[v])}")
        elif (p, o) not in final and (p, o) not in disk:
            r.add("lost-ack", f"{v} acknowledged at p{p}@{o} ({label}); hw p{p}="
                              f"{hw.get(p)}; neither read back nor in the leader's log")
        # else: another value at that offset (reported as offset-two-values)

    no_offset = set()
    for label, v, p in h.acks_no_offset:
        no_offset.add(v)
        if not where.get(v):
            r.add("lost-ack", f"{v} acknowledged (no offset given, p{p}, {label}); "
                              f"neither read back nor in the leader's log")
        elif any(loc[0] != p for loc in where[v]):
            r.add("ack-moved", f"{v} acknowledged in p{p}, stored at {sorted(where[v])}")

    for v, locs in where.items():
        if len(locs) > 1:
            ids = [disk_producer.get(loc) for loc in sorted(locs)]
            detail = (f"{v} stored at {sorted(locs)} (producer id, epoch, sequence: "
                      f"{ids})")
            sessions = [i[:2] for i in ids if i is not None]
            if None not in ids and len(set(sessions)) == len(sessions):
                # Every copy under another producer id or epoch: the client sent the record
                # again in a new idempotence session, which no broker can recognise.
                r.warn("duplicate-client-resend", detail)
            else:
                r.add("duplicate", detail)

    # -- reads -------------------------------------------------------------------------
    for consumer, recs in h.reads.items():
        last = {}
        for p, o, v in recs:
            if p in last and o <= last[p]:
                r.add("non-monotonic", f"consumer {consumer} p{p}: offset {o} after {last[p]}")
            last[p] = o
            if final.get((p, o)) != v and disk.get((p, o)) != v:
                r.add("vanished-read", f"consumer {consumer} read {v!r} at p{p}@{o}; final "
                                       f"read holds {final.get((p, o))!r} there")

    # -- phantoms ----------------------------------------------------------------------
    stored = set(final.values()) | set(disk.values())
    known = set(h.sent) | {a[0] for a in h.acks} | {e[0] for e in h.errors} | \
        {a[0] for a in h.acks_no_offset}
    for v in stored:
        label, seq = _value_label_seq(v)
        # A producer killed before reporting how many it sent: only its label is checked.
        if label is None or label not in known or (label in h.sent and seq >= h.sent[label]):
            if v not in acked_values and v not in no_offset:
                r.add("phantom", f"{v!r} stored but never sent (sent: {h.sent.get(label)})")

    # -- final read complete and backed by the log ------------------------------------
    if h.replicas:
        for key in sorted(disk_data_offsets - set(final)):
            p, o = key
            r.add("final-incomplete", f"p{p}@{o} ({disk[key]!r}) below hw {hw.get(p)} on disk "
                                      f"but not served by the final read")
        for key in sorted(set(final) - set(disk)):
            p, o = key
            if h.replicas.get(p):
                r.add("final-not-on-disk", f"p{p}@{o} ({final[key]!r}) served but not in the "
                                           f"leader's log below hw {hw.get(p)}")

    # -- liveness ----------------------------------------------------------------------
    heal_times = []
    for c in h.cycles:
        t = c.get("writable_after_heal_s")
        if t is None:
            r.add("unavailable", f"cycle {c.get('cycle')} ({c.get('fault')} node "
                                 f"{c.get('node')}): not writable within the bound after heal")
        else:
            heal_times.append(t)
            if unavailable_bound is not None and t > unavailable_bound:
                r.add("unavailable", f"cycle {c.get('cycle')}: writable only after {t:.1f}s")
    for note in h.notes:
        r.add("not-converged", note)
    for label, msg in h.client_errors:
        if label == "harness" or "client crashed" in msg:
            r.add("harness-error", f"{label}: {msg}")

    # -- statistics --------------------------------------------------------------------
    errored = {v for _l, v, _m in h.errors} - no_offset
    r.stats = {
        "acked": len(acked_values | no_offset),
        "acked_without_offset": len(no_offset),
        "errored": len(errored - acked_values),
        "unparsable_client_lines": sum(1 for l, _m in h.client_errors if l == "harness"),
        "errored_but_stored": len((errored - acked_values) & stored),
        "stored_records": len(stored),
        "consumer_reads": {k: len(v) for k, v in h.reads.items()},
        "high_watermarks": dict(hw),
        "replica_batches": {p: {n: len(b) for n, b in reps.items()}
                            for p, reps in h.replicas.items()},
        "client_errors": len(h.client_errors),
        "cycles": len(h.cycles),
        "faults": dict(Counter(c.get("fault") for c in h.cycles)),
    }
    if heal_times:
        s = sorted(heal_times)
        r.stats["writable_after_heal_s"] = {"median": round(s[len(s) // 2], 3),
                                            "max": round(s[-1], 3)}
    during = sorted(c["writable_during_fault_s"] for c in h.cycles
                    if c.get("writable_during_fault_s") is not None)
    if during:
        r.stats["writable_during_fault_s"] = {"median": round(during[len(during) // 2], 3),
                                              "max": round(during[-1], 3),
                                              "cycles": len(during)}
    return r
