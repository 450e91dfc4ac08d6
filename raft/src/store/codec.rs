//! On-disk encodings of the Raft log store: an entry as one Kafka record batch, a membership
//! config, and the state file (vote, committed and purged log ids).
//!
//! An entry is a magic-2 batch of one record, so the Raft log is an ordinary Spool partition
//! log that Kafka tooling could read: base offset = Raft index, partition leader epoch = term
//! (both stamped by `PartitionLog::append`), record key = `[KEY_VERSION, kind]` (with one
//! leader per term, the term alone names the entry's leader), record value = the payload (the command's bytes, an encoded membership, or null for a
//! blank entry).
//!
//! Fault model: everything decoded here may be damaged. Every length and count is checked
//! against the bytes that remain before it is used or allocated from, every format carries a
//! version that is checked, the batch CRC and the state file's CRC are verified, and trailing
//! bytes are an error. Decoding never panics.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use openraft::impls::leader_id_std::LeaderId;
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{EntryPayload, LogId, Membership};
use spool_protocol::batch::{self, HEADER_BYTES, MAGIC_V2, NO_PRODUCER_ID};

use super::StoreError;
use crate::{Command, NodeId, NodeInfo, TypeConfig};

pub(crate) type Entry = EntryOf<TypeConfig>;
pub(crate) type RaftLogId = LogIdOf<TypeConfig>;
pub(crate) type Vote = VoteOf<TypeConfig>;
pub(crate) type RaftMembership = Membership<NodeId, NodeInfo>;

/// Version of the record key layout (1 also held the leader's node id, for openraft's
/// advanced leader ids).
const KEY_VERSION: u8 = 2;
/// `[version u8][kind u8]`.
const KEY_BYTES: usize = 2;
const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

/// Version of the membership encoding in a membership entry's value.
const MEMBERSHIP_VERSION: u8 = 1;
/// Configs in a membership: one, or two during a joint change; a little slack for openraft.
pub(crate) const MEMBERSHIP_CONFIGS_MAX: usize = 8;
/// Node ids in one config, and nodes (voters and learners) in a membership.
pub(crate) const MEMBERSHIP_NODES_MAX: usize = 1024;
/// Bytes of one node's RPC address (`host:port`; a DNS name is at most 253).
pub(crate) const RPC_ADDR_BYTES_MAX: usize = 1024;

/// Largest varint the record format uses (a zigzag i64 in LEB128).
const VARINT_BYTES_MAX: usize = 10;

const STATE_MAGIC: &[u8; 4] = b"SPRS";
/// 1 held a leader node id in the committed and purged log ids too.
const STATE_VERSION: u8 = 2;
/// flags u8, vote (term, voted for), committed (term, index), purged (term, index).
const STATE_BODY_BYTES: usize = 1 + 16 + 16 + 16;
/// magic, version, body length u32, body, crc32c u32.
const STATE_FILE_BYTES: usize = 4 + 1 + 4 + STATE_BODY_BYTES + 4;
const FLAG_VOTE: u8 = 1;
const FLAG_VOTE_COMMITTED: u8 = 2;
const FLAG_COMMITTED: u8 = 4;
const FLAG_PURGED: u8 = 8;
const FLAGS_KNOWN: u8 = FLAG_VOTE | FLAG_VOTE_COMMITTED | FLAG_COMMITTED | FLAG_PURGED;

const CRC_FROM: usize = 21;

/// An entry as a record batch ready for `PartitionLog::append`, with the leader epoch to
/// stamp: the term.
pub(crate) fn encode_entry(entry: &Entry, now_ms: i64) -> Result<(Bytes, i32), StoreError> {
    let term = entry.log_id.leader_id.term;
    let epoch = i32::try_from(term).map_err(|_| StoreError::TermTooLarge { term })?;
    let (kind, value) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, None),
        EntryPayload::Normal(Command(bytes)) => (KIND_NORMAL, Some(bytes.clone())),
        EntryPayload::Membership(membership) => {
            (KIND_MEMBERSHIP, Some(encode_membership(membership)?))
        }
    };
    let mut key = [0u8; KEY_BYTES];
    key[0] = KEY_VERSION;
    key[1] = kind;
    Ok((
        encode_batch(&key, value.as_deref(), epoch, now_ms, 0),
        epoch,
    ))
}

/// Attribute bit of a control batch.
const ATTRIBUTE_CONTROL: i16 = 0x20;

/// A magic-2 batch holding one uncompressed record, as a non-idempotent producer writes it
/// (with `attributes`: 0, or a control batch).
pub(crate) fn encode_batch(
    key: &[u8],
    value: Option<&[u8]>,
    epoch: i32,
    now_ms: i64,
    attributes: i16,
) -> Bytes {
    let mut record = BytesMut::with_capacity(32 + key.len() + value.map_or(0, <[u8]>::len));
    record.put_i8(0); // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, key.len() as i64);
    record.put_slice(key);
    match value {
        Some(value) => {
            put_varint(&mut record, value.len() as i64);
            record.put_slice(value);
        }
        None => put_varint(&mut record, -1),
    }
    put_varint(&mut record, 0); // headers

    let mut out = BytesMut::with_capacity(HEADER_BYTES + VARINT_BYTES_MAX + record.len());
    out.put_i64(0); // base offset: stamped by the log
    out.put_i32(0); // batch length, set below
    out.put_i32(epoch);
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, set below
    out.put_i16(attributes); // no compression, CreateTime
    out.put_i32(0); // last offset delta
    out.put_i64(now_ms);
    out.put_i64(now_ms);
    out.put_i64(NO_PRODUCER_ID);
    out.put_i16(-1); // producer epoch
    out.put_i32(-1); // base sequence
    out.put_i32(1); // records
    assert_eq!(out.len(), HEADER_BYTES);
    put_varint(&mut out, record.len() as i64);
    out.put_slice(&record);
    let batch_length = i32::try_from(out.len() - 12).expect("an entry is far below 2 GiB");
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_FROM..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// The entry a stored batch holds. `index` is where the log says it is, for the error.
pub(crate) fn decode_entry(batch_bytes: &Bytes, index: u64) -> Result<Entry, StoreError> {
    let corrupt = |reason: &'static str| StoreError::CorruptEntry { index, reason };
    let header = batch::validate(batch_bytes).map_err(|_| corrupt("invalid record batch"))?;
    if header.records_count != 1 || header.last_offset_delta != 0 {
        return Err(corrupt("a Raft entry batch holds exactly one record"));
    }
    if header.compression() != 0 || header.is_control() || header.is_transactional() {
        return Err(corrupt("a Raft entry batch is plain and uncompressed"));
    }
    if u64::try_from(header.base_offset).ok() != Some(index) {
        return Err(corrupt("batch offset differs from the entry's index"));
    }
    let term = u64::try_from(header.partition_leader_epoch).map_err(|_| corrupt("no term"))?;
    let (key, value) =
        decode_record(batch_bytes.slice(HEADER_BYTES..)).ok_or(corrupt("undecodable record"))?;
    let key = key.ok_or(corrupt("record without a key"))?;
    if key.len() != KEY_BYTES || key[0] != KEY_VERSION {
        return Err(corrupt("unknown record key version"));
    }
    let payload = match (key[1], value) {
        (KIND_BLANK, None) => EntryPayload::Blank,
        (KIND_NORMAL, Some(value)) => EntryPayload::Normal(Command(value)),
        (KIND_MEMBERSHIP, Some(value)) => {
            EntryPayload::Membership(decode_membership(&value).map_err(corrupt)?)
        }
        _ => return Err(corrupt("unknown entry kind or missing value")),
    };
    Ok(Entry {
        log_id: LogId::new_term_index(term, index),
        payload,
    })
}

/// Key and value of the one record after a batch header; None if malformed.
pub(crate) fn decode_record(records: Bytes) -> Option<(Option<Bytes>, Option<Bytes>)> {
    let mut at = 0;
    let length = usize::try_from(get_varint(&records, &mut at)?).ok()?;
    if length != records.len() - at {
        return None;
    }
    let _attributes = *records.get(at)?;
    at += 1;
    let _timestamp_delta = get_varint(&records, &mut at)?;
    if get_varint(&records, &mut at)? != 0 {
        return None; // offset delta
    }
    let key = get_nullable(&records, &mut at)?;
    let value = get_nullable(&records, &mut at)?;
    if get_varint(&records, &mut at)? != 0 || at != records.len() {
        return None; // a Raft entry has no headers and nothing after them
    }
    Some((key, value))
}

/// A varint-length-prefixed byte string, -1 meaning null; the length is checked against the
/// bytes left before slicing.
fn get_nullable(buf: &Bytes, at: &mut usize) -> Option<Option<Bytes>> {
    let length = get_varint(buf, at)?;
    if length == -1 {
        return Some(None);
    }
    let length = usize::try_from(length).ok()?;
    if length > buf.len() - *at {
        return None;
    }
    let bytes = buf.slice(*at..*at + length);
    *at += length;
    Some(Some(bytes))
}

/// Appends `value` as a zigzag LEB128 varint (Kafka's varint and varlong alike).
fn put_varint(buf: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        buf.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    buf.put_u8(zigzag as u8);
}

/// Reads a zigzag LEB128 varint at `*at`; None if truncated or longer than 10 bytes.
fn get_varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut zigzag: u64 = 0;
    for i in 0..VARINT_BYTES_MAX {
        let byte = *buf.get(*at + i)?;
        zigzag |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *at += i + 1;
            return Some(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64));
        }
    }
    None
}

/// `[version u8][configs u8]{[voters u16][voter u64]..}[nodes u16]{[id u64][addr len u16][addr]}..`
pub(crate) fn encode_membership(membership: &RaftMembership) -> Result<Bytes, StoreError> {
    let too_large = || StoreError::MembershipTooLarge;
    let configs = membership.get_joint_config();
    let nodes: Vec<_> = membership.nodes().collect();
    if configs.len() > MEMBERSHIP_CONFIGS_MAX || nodes.len() > MEMBERSHIP_NODES_MAX {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    buf.put_u8(MEMBERSHIP_VERSION);
    buf.put_u8(configs.len() as u8);
    for config in configs {
        if config.len() > MEMBERSHIP_NODES_MAX {
            return Err(too_large());
        }
        buf.put_u16(config.len() as u16);
        config.iter().for_each(|id| buf.put_u64(*id));
    }
    buf.put_u16(nodes.len() as u16);
    for (id, node) in nodes {
        let addr = node.rpc_addr.as_bytes();
        if addr.len() > RPC_ADDR_BYTES_MAX {
            return Err(too_large());
        }
        buf.put_u64(*id);
        buf.put_u16(addr.len() as u16);
        buf.put_slice(addr);
    }
    Ok(buf.freeze())
}

pub(crate) fn decode_membership(bytes: &[u8]) -> Result<RaftMembership, &'static str> {
    let mut r = Reader { bytes, at: 0 };
    if r.u8()? != MEMBERSHIP_VERSION {
        return Err("unknown membership version");
    }
    let config_count = usize::from(r.u8()?);
    if config_count > MEMBERSHIP_CONFIGS_MAX {
        return Err("too many membership configs");
    }
    let mut configs = Vec::with_capacity(config_count);
    for _ in 0..config_count {
        let voters = r.count(8)?;
        let mut config = BTreeSet::new();
        for _ in 0..voters {
            config.insert(r.u64()?);
        }
        configs.push(config);
    }
    // id u64 + addr length u16 is the least a node takes.
    let node_count = r.count(10)?;
    let mut nodes = BTreeMap::new();
    for _ in 0..node_count {
        let id = r.u64()?;
        let addr_len = usize::from(r.u16()?);
        if addr_len > RPC_ADDR_BYTES_MAX {
            return Err("RPC address too long");
        }
        let addr = std::str::from_utf8(r.take(addr_len)?).map_err(|_| "RPC address not UTF-8")?;
        nodes.insert(
            id,
            NodeInfo {
                rpc_addr: addr.to_owned(),
            },
        );
    }
    if r.at != bytes.len() {
        return Err("trailing bytes after the membership");
    }
    Membership::new(configs, nodes).map_err(|_| "a voter without a node")
}

/// What the state file holds: the vote, and the committed and purged log ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PersistentState {
    pub(crate) vote: Option<Vote>,
    pub(crate) committed: Option<RaftLogId>,
    pub(crate) purged: Option<RaftLogId>,
}

impl PersistentState {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_FILE_BYTES);
        out.extend_from_slice(STATE_MAGIC);
        out.push(STATE_VERSION);
        out.extend_from_slice(&(STATE_BODY_BYTES as u32).to_be_bytes());
        let mut flags = 0;
        if let Some(vote) = &self.vote {
            flags |= FLAG_VOTE;
            if vote.committed {
                flags |= FLAG_VOTE_COMMITTED;
            }
        }
        if self.committed.is_some() {
            flags |= FLAG_COMMITTED;
        }
        if self.purged.is_some() {
            flags |= FLAG_PURGED;
        }
        out.push(flags);
        let (term, node) = self
            .vote
            .as_ref()
            .map_or((0, 0), |v| (v.leader_id.term, v.leader_id.voted_for));
        out.extend_from_slice(&term.to_be_bytes());
        out.extend_from_slice(&node.to_be_bytes());
        for log_id in [&self.committed, &self.purged] {
            let (term, index) = log_id
                .as_ref()
                .map_or((0, 0), |l| (l.leader_id.term, l.index));
            for value in [term, index] {
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(out.len(), STATE_FILE_BYTES);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<PersistentState, &'static str> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != STATE_MAGIC {
            return Err("not a Raft state file");
        }
        if r.u8()? != STATE_VERSION {
            return Err("unknown state file version");
        }
        let body_len = usize::try_from(r.u32()?).map_err(|_| "body length")?;
        // The length is checked against what is there before anything trusts it.
        if body_len.checked_add(4) != Some(bytes.len() - r.at) {
            return Err("body length disagrees with the file size");
        }
        if body_len != STATE_BODY_BYTES {
            return Err("body length wrong for this version");
        }
        let (covered, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_be_bytes(crc.try_into().map_err(|_| "crc")?);
        if crc32c::crc32c(covered) != stored {
            return Err("checksum mismatch");
        }
        let flags = r.u8()?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err("unknown flags");
        }
        let (term, node) = (r.u64()?, r.u64()?);
        let vote = (flags & FLAG_VOTE != 0).then_some(Vote {
            leader_id: LeaderId {
                term,
                voted_for: node,
            },
            committed: flags & FLAG_VOTE_COMMITTED != 0,
        });
        let mut log_id = |present: bool| -> Result<Option<RaftLogId>, &'static str> {
            let (term, index) = (r.u64()?, r.u64()?);
            Ok(present.then(|| LogId::new_term_index(term, index)))
        };
        let committed = log_id(flags & FLAG_COMMITTED != 0)?;
        let purged = log_id(flags & FLAG_PURGED != 0)?;
        Ok(PersistentState {
            vote,
            committed,
            purged,
        })
    }
}

/// A bounds-checked big-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.bytes.len() - self.at {
            return Err("truncated");
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        self.take(N)?.try_into().map_err(|_| "truncated")
    }

    /// A u16 count of items of at least `item_bytes` each, checked against the bytes left and
    /// against [`MEMBERSHIP_NODES_MAX`] before anything is allocated from it.
    fn count(&mut self, item_bytes: usize) -> Result<usize, &'static str> {
        let count = usize::from(self.u16()?);
        if count > MEMBERSHIP_NODES_MAX {
            return Err("too many nodes");
        }
        if count * item_bytes > self.bytes.len() - self.at {
            return Err("count exceeds the bytes left");
        }
        Ok(count)
    }
}

// ---- Partition groups: the entries of a data partition's Raft log ----------------------------

/// Control type of a new leader's blank entry: KRaft's LEADER_CHANGE.
pub(crate) const CONTROL_LEADER_CHANGE: i16 = 2;
/// Control type of a membership entry: private to Spool. Negative, so no future Kafka type
/// collides with it; clients map unknown types to "ignore" (Java `UNKNOWN`, librdkafka
/// "unsupported ctrl message type").
pub(crate) const CONTROL_SPOOL_MEMBERSHIP: i16 = -0x5350;
/// Control type of a DeleteRecords entry, private to Spool like the membership entry: its value
/// is the new log start offset (i64), which every replica sets when it applies the entry.
/// For openraft it is client data (`Normal`), proposed and committed as a produce is.
pub(crate) const CONTROL_SPOOL_LOG_START: i16 = -0x534c;
/// Version of a control record key; librdkafka fails a fetch whose control key is not
/// version 0 and exactly 4 bytes.
const CONTROL_KEY_VERSION: i16 = 0;

/// A partition entry that is not client data, as the control batch every replica writes for
/// it. Deterministic (no clock, no node id: with standard leader ids a log id names only the
/// term), so every replica re-encoding the entry it received stores the same bytes.
pub(crate) fn encode_partition_control(entry: &Entry) -> Result<Option<Bytes>, StoreError> {
    let term = entry.log_id.leader_id.term;
    let epoch = i32::try_from(term).map_err(|_| StoreError::TermTooLarge { term })?;
    let (control_type, value) = match &entry.payload {
        EntryPayload::Normal(_) => return Ok(None),
        EntryPayload::Blank => (CONTROL_LEADER_CHANGE, leader_change_value()),
        EntryPayload::Membership(membership) => {
            (CONTROL_SPOOL_MEMBERSHIP, encode_membership(membership)?)
        }
    };
    let mut key = [0u8; 4];
    key[..2].copy_from_slice(&CONTROL_KEY_VERSION.to_be_bytes());
    key[2..].copy_from_slice(&control_type.to_be_bytes());
    Ok(Some(encode_batch(
        &key,
        Some(&value),
        epoch,
        NO_TIMESTAMP,
        ATTRIBUTE_CONTROL,
    )))
}

/// Kafka's "no timestamp".
const NO_TIMESTAMP: i64 = -1;

/// The DeleteRecords entry moving a partition's log start to `offset`.
pub fn encode_log_start_entry(offset: i64, now_ms: i64) -> Bytes {
    let mut key = [0u8; 4];
    key[..2].copy_from_slice(&CONTROL_KEY_VERSION.to_be_bytes());
    key[2..].copy_from_slice(&CONTROL_SPOOL_LOG_START.to_be_bytes());
    encode_batch(
        &key,
        Some(&offset.to_be_bytes()),
        -1,
        now_ms,
        ATTRIBUTE_CONTROL,
    )
}

/// The log start a DeleteRecords entry sets, if `batch` is one.
pub fn decode_log_start_entry(batch_bytes: &Bytes) -> Option<i64> {
    let header = batch::BatchHeader::parse(batch_bytes).ok()?;
    if !header.is_control() || header.has_producer_id() {
        return None;
    }
    let (key, value) = decode_record(batch_bytes.slice(HEADER_BYTES..))?;
    let key = key?;
    if key.len() != 4 || i16::from_be_bytes([key[2], key[3]]) != CONTROL_SPOOL_LOG_START {
        return None;
    }
    Some(i64::from_be_bytes(value?.as_ref().try_into().ok()?))
}

/// A `LeaderChangeMessage` v0 (flexible) naming no leader and no voters: Version 0,
/// LeaderId -1, empty compact arrays Voters and GrantingVoters, no tagged fields. The entry's
/// epoch names the term; which node leads it is not in the log id openraft hands the store.
/// (The tests check these bytes against Kafka's own decoder.)
pub(crate) const LEADER_CHANGE_VALUE: [u8; 9] = [0, 0, 0xff, 0xff, 0xff, 0xff, 1, 1, 0];

fn leader_change_value() -> Bytes {
    Bytes::from_static(&LEADER_CHANGE_VALUE)
}

/// The entry a partition log's batch holds: its control batches are the blank and membership
/// entries, every other batch is client data (`Normal`, the batch's bytes). `index` is where
/// the log says it is; the term is the batch's partition leader epoch.
pub(crate) fn decode_partition_entry(batch_bytes: &Bytes, index: u64) -> Result<Entry, StoreError> {
    let corrupt = |reason: &'static str| StoreError::CorruptEntry { index, reason };
    let header =
        batch::BatchHeader::parse(batch_bytes).map_err(|_| corrupt("invalid record batch"))?;
    let term = u64::try_from(header.partition_leader_epoch).map_err(|_| corrupt("no term"))?;
    let payload = if header.is_control() && !header.has_producer_id() {
        let (key, value) = decode_record(batch_bytes.slice(HEADER_BYTES..))
            .ok_or(corrupt("undecodable control record"))?;
        let key = key.ok_or(corrupt("control record without a key"))?;
        if key.len() != 4 || key[..2] != CONTROL_KEY_VERSION.to_be_bytes() {
            return Err(corrupt("unknown control key version"));
        }
        match i16::from_be_bytes([key[2], key[3]]) {
            CONTROL_SPOOL_LOG_START => EntryPayload::Normal(Command(batch_bytes.clone())),
            CONTROL_LEADER_CHANGE => EntryPayload::Blank,
            CONTROL_SPOOL_MEMBERSHIP => {
                let value = value.ok_or(corrupt("membership entry without a value"))?;
                EntryPayload::Membership(decode_membership(&value).map_err(corrupt)?)
            }
            _ => return Err(corrupt("unknown control type in a partition log")),
        }
    } else {
        EntryPayload::Normal(Command(batch_bytes.clone()))
    };
    Ok(Entry {
        log_id: LogId::new_term_index(term, index),
        payload,
    })
}
