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

pub fn encode_value(value: &TxnValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + value.partitions.len() * 8);
    buf.put_i16(0);
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
    buf.put_i32(i32::try_from(topics.len()).expect("bounded by TXN_PARTITIONS_MAX"));
    for (topic, partitions) in topics {
        put_str(&mut buf, topic);
        buf.put_i32(i32::try_from(partitions.len()).expect("bounded by TXN_PARTITIONS_MAX"));
        for p in partitions {
            buf.put_i32(p);
        }
    }
    buf.put_i64(value.last_update_ms);
    buf.put_i64(value.start_ms);
    buf.freeze()
}

pub fn decode_value(mut buf: Bytes) -> Result<TxnValue, RecordError> {
    need(&buf, 2 + 8 + 2 + 4 + 1 + 4)?;
    if buf.get_i16() != 0 {
        return Err(RecordError {
            reason: "transaction log value version 1 (transactions version 2) is not supported",
        });
    }
    let producer_id = buf.get_i64();
    let producer_epoch = buf.get_i16();
    let timeout_ms = buf.get_i32();
    let state = TxnState::from_id(buf.get_i8()).ok_or(RecordError {
        reason: "unknown transaction state",
    })?;
    let topics = buf.get_i32();
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = get_str(&mut buf)?;
        need(&buf, 4)?;
        let count = usize::try_from(buf.get_i32()).map_err(|_| RecordError {
            reason: "negative partition count",
        })?;
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
    }
    need(&buf, 16)?;
    let last_update_ms = buf.get_i64();
    let start_ms = buf.get_i64();
    Ok(TxnValue {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
    })
}

/// One batch of one record: the transactional id's new state, or its tombstone.
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
}
