//! The records of `__transaction_state`, in Kafka's layouts so Kafka's tools can read them:
//!
//! ```text
//! key    i16 version=0, string transactional id                       (TransactionLogKey v0)
//! value  i16 version=0, i64 producer id, i16 producer epoch, i32 timeout ms, i8 state,
//!        nullable array of (string topic, array of i32 partition), i64 last update ms,
//!        i64 start ms                                                 (TransactionLogValue v0)
//! ```
//!
//! A null value is a tombstone (the transactional id expired). Version 1 of the value (KIP-890's
//! flexible layout with tagged previous/next producer ids) is what Kafka writes for clients of
//! transactions version 2, which this broker does not offer yet; reading one is an error.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use spool_protocol::record::plain_record;

use crate::group::records::{get_str, need, put_str, RecordError};

/// Partitions one transaction may hold; a request past it gets INVALID_REQUEST (Kafka has no
/// bound, but a record must fit a batch).
pub const TXN_PARTITIONS_MAX: usize = 10_000;

/// Kafka's `TransactionState` and its ids in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// A transactional id's state as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// KIP-890: the producer id before the last rotation (-1: none), the one the next
    /// transaction end moves to once the epoch is exhausted (-1: none), and the transactions
    /// version of the client's last transition (0 or 2).
    pub prev_producer_id: i64,
    pub next_producer_id: i64,
    pub client_tv: i16,
    /// The epoch before the last bump (-1: none), so a client that lost the answer to an
    /// InitProducerId or EndTxn can retry it (KIP-360). Kept in memory only, as Kafka 4.3
    /// does: -1 after a load.
    pub last_producer_epoch: i16,
}

impl TxnValue {
    /// A new id's first state.
    pub fn empty(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnValue {
        TxnValue {
            producer_id,
            producer_epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            start_ms: -1,
            prev_producer_id: -1,
            next_producer_id: -1,
            client_tv: 0,
            last_producer_epoch: -1,
        }
    }
}

/// Tags of the value's v1 tagged fields (`TransactionLogValue.json`).
const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;

fn put_uvarint(buf: &mut BytesMut, v: u32) {
    spool_protocol::varint::put_uvarint(buf, u64::from(v));
}

fn get_uvarint(buf: &mut Bytes) -> Result<u32, RecordError> {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        need(buf, 1)?;
        let b = buf.get_u8();
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(RecordError {
        reason: "varint too long",
    })
}

/// A compact array or string length (stored + 1; 0 = null): None for null.
fn get_compact_len(buf: &mut Bytes) -> Result<Option<usize>, RecordError> {
    match get_uvarint(buf)? {
        0 => Ok(None),
        n => Ok(Some(n as usize - 1)),
    }
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + transactional_id.len());
    buf.put_i16(0);
    put_str(&mut buf, transactional_id);
    buf.freeze()
}

pub fn decode_key(mut buf: Bytes) -> Result<String, RecordError> {
    need(&buf, 2)?;
    if buf.get_i16() != 0 {
        return Err(RecordError {
            reason: "unknown transaction log key version",
        });
    }
    get_str(&mut buf)
}

/// Value version 1 (flexible, transactions version 1 and up), as Kafka 4 writes it, with
/// the tagged producer ids Kafka 4.3 still leaves out (KAFKA-20310) written too.
pub fn encode_value(value: &TxnValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + value.partitions.len() * 8);
    buf.put_i16(1);
    buf.put_i64(value.producer_id);
    buf.put_i16(value.producer_epoch);
    buf.put_i32(value.timeout_ms);
    buf.put_i8(value.state.id());
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &value.partitions {
        match topics.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*partition),
            _ => topics.push((topic, vec![*partition])),
        }
    }
    let count = |n: usize| u32::try_from(n + 1).expect("bounded by TXN_PARTITIONS_MAX");
    put_uvarint(&mut buf, count(topics.len()));
    for (topic, partitions) in topics {
        put_uvarint(&mut buf, count(topic.len()));
        buf.put_slice(topic.as_bytes());
        put_uvarint(&mut buf, count(partitions.len()));
        for p in partitions {
            buf.put_i32(p);
        }
        put_uvarint(&mut buf, 0);
    }
    buf.put_i64(value.last_update_ms);
    buf.put_i64(value.start_ms);
    let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
    if value.prev_producer_id != -1 {
        tags.push((
            TAG_PREVIOUS_PRODUCER_ID,
            value.prev_producer_id.to_be_bytes().to_vec(),
        ));
    }
    if value.next_producer_id != -1 {
        tags.push((
            TAG_NEXT_PRODUCER_ID,
            value.next_producer_id.to_be_bytes().to_vec(),
        ));
    }
    if value.client_tv != 0 {
        tags.push((
            TAG_CLIENT_TRANSACTION_VERSION,
            value.client_tv.to_be_bytes().to_vec(),
        ));
    }
    put_uvarint(&mut buf, tags.len() as u32);
    for (tag, data) in tags {
        put_uvarint(&mut buf, tag);
        put_uvarint(&mut buf, data.len() as u32);
        buf.put_slice(&data);
    }
    buf.freeze()
}

/// Versions 0 (what Spool wrote before transactions version 2, and Kafka's TV0 clusters) and 1.
pub fn decode_value(mut buf: Bytes) -> Result<TxnValue, RecordError> {
    need(&buf, 2 + 8 + 2 + 4 + 1)?;
    let version = buf.get_i16();
    if !(0..=1).contains(&version) {
        return Err(RecordError {
            reason: "unknown transaction log value version",
        });
    }
    let flexible = version >= 1;
    let producer_id = buf.get_i64();
    let producer_epoch = buf.get_i16();
    let timeout_ms = buf.get_i32();
    let state = TxnState::from_id(buf.get_i8()).ok_or(RecordError {
        reason: "unknown transaction state",
    })?;
    let topics = if flexible {
        get_compact_len(&mut buf)?.unwrap_or(0)
    } else {
        need(&buf, 4)?;
        usize::try_from(buf.get_i32()).unwrap_or(0)
    };
    let mut partitions = BTreeSet::new();
    for _ in 0..topics {
        let topic = if flexible {
            let len = get_compact_len(&mut buf)?.ok_or(RecordError {
                reason: "null topic",
            })?;
            need(&buf, len)?;
            String::from_utf8(buf.split_to(len).to_vec()).map_err(|_| RecordError {
                reason: "topic not UTF-8",
            })?
        } else {
            get_str(&mut buf)?
        };
        let count = if flexible {
            get_compact_len(&mut buf)?.unwrap_or(0)
        } else {
            need(&buf, 4)?;
            usize::try_from(buf.get_i32()).map_err(|_| RecordError {
                reason: "negative partition count",
            })?
        };
        if count > TXN_PARTITIONS_MAX || count * 4 > buf.remaining() {
            return Err(RecordError {
                reason: "partition count beyond the record",
            });
        }
        for _ in 0..count {
            partitions.insert((topic.clone(), buf.get_i32()));
        }
        if partitions.len() > TXN_PARTITIONS_MAX {
            return Err(RecordError {
                reason: "too many partitions",
            });
        }
        if flexible {
            skip_tags(&mut buf)?;
        }
    }
    need(&buf, 16)?;
    let last_update_ms = buf.get_i64();
    let start_ms = buf.get_i64();
    let mut value = TxnValue {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
        prev_producer_id: -1,
        next_producer_id: -1,
        client_tv: 0,
        last_producer_epoch: -1,
    };
    if flexible {
        let tags = get_uvarint(&mut buf)?;
        for _ in 0..tags {
            let tag = get_uvarint(&mut buf)?;
            let len = get_uvarint(&mut buf)? as usize;
            need(&buf, len)?;
            let mut data = buf.split_to(len);
            match (tag, len) {
                (TAG_PREVIOUS_PRODUCER_ID, 8) => value.prev_producer_id = data.get_i64(),
                (TAG_NEXT_PRODUCER_ID, 8) => value.next_producer_id = data.get_i64(),
                (TAG_CLIENT_TRANSACTION_VERSION, 2) => value.client_tv = data.get_i16(),
                // Unknown tags (a newer writer's) are skipped, as tagged fields allow.
                _ => {}
            }
        }
    }
    Ok(value)
}

fn skip_tags(buf: &mut Bytes) -> Result<(), RecordError> {
    for _ in 0..get_uvarint(buf)? {
        get_uvarint(buf)?;
        let len = get_uvarint(buf)? as usize;
        need(buf, len)?;
        buf.advance(len);
    }
    Ok(())
}

pub fn encode_batch(transactional_id: &str, value: Option<&TxnValue>, now_ms: i64) -> Bytes {
    let record = plain_record(
        0,
        0,
        now_ms,
        Some(encode_key(transactional_id)),
        value.map(encode_value),
    );
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        std::iter::once(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("uncompressed batches always encode");
    buf.freeze()
}

/// The (transactional id, state or tombstone) records of a batch; control records and
/// undecodable ones are skipped (logged).
pub fn decode_batch(batch: &Bytes) -> Result<Vec<(String, Option<TxnValue>)>, RecordError> {
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|_| RecordError {
        reason: "undecodable batch",
    })?;
    let mut out = Vec::with_capacity(set.records.len());
    for record in set.records {
        if record.control {
            continue;
        }
        let Some(key) = record.key else { continue };
        let decoded = decode_key(key).and_then(|id| match record.value {
            None => Ok((id, None)),
            Some(v) => decode_value(v).map(|v| (id, Some(v))),
        });
        match decoded {
            Ok(entry) => out.push(entry),
            Err(e) => tracing::warn!(offset = record.offset, "skipping record: {e}"),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_damage_is_an_error() {
        let value = TxnValue {
            producer_id: 4_000,
            producer_epoch: 7,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 3),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 10,
            start_ms: 5,
            prev_producer_id: 3_999,
            next_producer_id: 4_001,
            client_tv: 2,
            last_producer_epoch: -1,
        };
        let bytes = encode_value(&value);
        assert_eq!(decode_value(bytes.clone()).unwrap(), value);
        for cut in 0..bytes.len() {
            assert!(decode_value(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let batch = encode_batch("tx-1", Some(&value), 99);
        let records = decode_batch(&batch).unwrap();
        assert_eq!(records, vec![("tx-1".to_string(), Some(value))]);
        let tombstone = encode_batch("tx-1", None, 99);
        assert_eq!(
            decode_batch(&tombstone).unwrap(),
            vec![("tx-1".to_string(), None)]
        );
    }

    #[test]
    fn version_0_values_still_load() {
        // What Spool wrote before transactions version 2 (and Kafka's TV0 clusters write).
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        buf.put_i64(77);
        buf.put_i16(3);
        buf.put_i32(1_000);
        buf.put_i8(TxnState::Ongoing.id());
        buf.put_i32(1);
        put_str(&mut buf, "t");
        buf.put_i32(2);
        buf.put_i32(0);
        buf.put_i32(4);
        buf.put_i64(20);
        buf.put_i64(10);
        let value = decode_value(buf.freeze()).unwrap();
        assert_eq!(
            value,
            TxnValue {
                producer_id: 77,
                producer_epoch: 3,
                state: TxnState::Ongoing,
                partitions: [("t".to_string(), 0), ("t".to_string(), 4)]
                    .into_iter()
                    .collect(),
                last_update_ms: 20,
                start_ms: 10,
                ..TxnValue::empty(77, 1_000, 20)
            }
        );
        // A v1 value without tagged fields (Kafka 4's common case) decodes to the defaults.
        let plain = TxnValue::empty(5, 60_000, 1);
        assert_eq!(decode_value(encode_value(&plain)).unwrap(), plain);
    }
}
