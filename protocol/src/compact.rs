//! The record-level half of log compaction (ARCHITECTURE.md, "Compaction"): rewriting one
//! magic-2 record batch so that it keeps only the records a cleaning keeps, as Kafka's
//! `MemoryRecords.filterTo` does for v2 batches. The rewritten batch keeps its base offset and
//! last offset delta (so offsets, and a producer's sequence bookkeeping, are unchanged), its
//! producer id, epoch, base sequence, leader epoch and attributes (codec, transactional,
//! control, timestamp type); each kept record keeps its offset and timestamp deltas are
//! recomputed from the first kept record, as Kafka's builder does (LogAppendTime batches keep
//! their append time). Compressed batches are decompressed and recompressed with their codec.
//!
//! Not wired into the storage yet: the cleaner that drives it is the next step.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{self as codec, Compressor};
use kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::batch::{self, BatchError, BatchHeader, HEADER_BYTES};
use crate::varint::put_varint;

/// What filtering a batch left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retained {
    /// Every record stays: the original bytes serve as they are.
    All,
    /// No record stays.
    None,
    /// The rewritten batch.
    Some(Bytes),
}

/// `header`'s batch with no records left: the header alone (Kafka's `writeEmptyHeader`), with
/// its base offset, last offset delta, timestamps, producer fields and attributes (without a
/// codec: there is nothing to decompress; and a data batch without its transactional bit, so
/// replaying the log never takes an emptied batch for the start of a transaction whose marker
/// a cleaning may remove). A log whose batches are numbered entries (a Raft log) keeps one
/// where a cleaning removed every record, so the numbering stays whole.
pub fn empty_like(header: &BatchHeader) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_BYTES);
    out.put_i64(header.base_offset);
    out.put_i32((HEADER_BYTES - batch::LOG_OVERHEAD_BYTES) as i32);
    out.put_i32(header.partition_leader_epoch);
    out.put_i8(header.magic);
    out.put_u32(0); // crc, below
    let mut attributes = header.attributes & !COMPRESSION_BITS;
    if !header.is_control() {
        attributes &= !TRANSACTIONAL_BIT;
    }
    out.put_i16(attributes);
    out.put_i32(header.last_offset_delta);
    out.put_i64(header.base_timestamp);
    out.put_i64(header.max_timestamp);
    out.put_i64(header.producer_id);
    out.put_i16(header.producer_epoch);
    out.put_i32(header.base_sequence);
    out.put_i32(0);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

const COMPRESSION_BITS: i16 = 0x07;
const TRANSACTIONAL_BIT: i16 = 0x10;

/// What a cleaning's offset map needs of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    pub offset: i64,
    pub key: Option<Bytes>,
    /// A null value: the key's tombstone.
    pub tombstone: bool,
}

/// The offset, key and tombstone flag of every record of `batch` (a stored v2 batch),
/// decompressing it when needed.
pub fn record_keys(batch: &Bytes) -> Result<Vec<RecordKey>, BatchError> {
    batch::validate_stored(batch)?;
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| BatchError::UndecodableRecords {
        reason: e.to_string(),
    })?;
    Ok(set
        .records
        .into_iter()
        .map(|r| RecordKey {
            offset: r.offset,
            tombstone: r.value.is_none(),
            key: r.key,
        })
        .collect())
}

/// Keeps the records of `batch` for which `keep` is true (called once per record, in offset
/// order). A batch that does not decode is an error, never a panic.
pub fn retain(
    batch: &Bytes,
    mut keep: impl FnMut(&Record) -> bool,
) -> Result<Retained, BatchError> {
    // Stored batches: an earlier cleaning may have thinned this one already.
    let header = batch::validate_stored(batch)?;
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| BatchError::UndecodableRecords {
        reason: e.to_string(),
    })?;
    let total = set.records.len();
    let kept: Vec<Record> = set.records.into_iter().filter(|r| keep(r)).collect();
    if kept.len() == total {
        return Ok(Retained::All);
    }
    if kept.is_empty() {
        return Ok(Retained::None);
    }
    encode_like(&header, &kept, header.delete_horizon()).map(Retained::Some)
}

/// `batch` (already validated as stored) with its records as they are and `horizon_ms` as its
/// KIP-534 delete horizon: the attribute bit set and the base timestamp field holding the
/// horizon, record timestamps unchanged (their deltas count from the horizon, as Kafka's
/// builder writes them).
pub fn with_delete_horizon(batch: &Bytes, horizon_ms: i64) -> Result<Bytes, BatchError> {
    let header = batch::validate_stored(batch)?;
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| BatchError::UndecodableRecords {
        reason: e.to_string(),
    })?;
    encode_like(&header, &set.records, Some(horizon_ms))
}

/// A batch with `header`'s base offset, last offset delta and producer fields holding
/// `records` (a subset of the original's, in offset order).
/// With `delete_horizon`, the base timestamp field holds it (and the attribute bit says so)
/// and record timestamps are deltas from it.
fn encode_like(
    header: &BatchHeader,
    records: &[Record],
    delete_horizon: Option<i64>,
) -> Result<Bytes, BatchError> {
    let log_append_time = header.is_log_append_time();
    let (first_ts, max_ts) = if log_append_time {
        (
            header
                .delete_horizon()
                .map_or(header.base_timestamp, |_| header.max_timestamp),
            header.max_timestamp,
        )
    } else {
        let min = records
            .iter()
            .map(|r| r.timestamp)
            .min()
            .unwrap_or(header.base_timestamp);
        let max = records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(header.max_timestamp);
        (min, max)
    };
    let base_field = delete_horizon.unwrap_or(first_ts);
    let write_records = |out: &mut BytesMut| -> anyhow::Result<()> {
        for r in records {
            let mut body = BytesMut::new();
            body.put_i8(0); // record attributes: unused
            put_varint(
                &mut body,
                if log_append_time {
                    0
                } else {
                    r.timestamp - base_field
                },
            );
            put_varint(&mut body, r.offset - header.base_offset);
            put_bytes(&mut body, r.key.as_deref());
            put_bytes(&mut body, r.value.as_deref());
            put_varint(&mut body, r.headers.len() as i64);
            for (name, value) in &r.headers {
                put_bytes(&mut body, Some(name.as_bytes()));
                put_bytes(&mut body, value.as_deref());
            }
            put_varint(out, body.len() as i64);
            out.put_slice(&body);
        }
        Ok(())
    };
    let mut out = BytesMut::with_capacity(HEADER_BYTES + 64 * records.len());
    out.put_i64(header.base_offset);
    out.put_i32(0); // batch length, below
    out.put_i32(header.partition_leader_epoch);
    out.put_i8(header.magic);
    out.put_u32(0); // crc, below
    out.put_i16(match delete_horizon {
        Some(_) => header.attributes | batch::DELETE_HORIZON_BIT,
        None => header.attributes & !batch::DELETE_HORIZON_BIT,
    });
    out.put_i32(header.last_offset_delta);
    out.put_i64(base_field);
    out.put_i64(max_ts);
    out.put_i64(header.producer_id);
    out.put_i16(header.producer_epoch);
    out.put_i32(header.base_sequence);
    out.put_i32(
        i32::try_from(records.len()).map_err(|_| BatchError::UndecodableRecords {
            reason: "too many records".into(),
        })?,
    );
    let compressed = match header.compression() {
        0 => codec::None::compress(&mut out, write_records),
        1 => codec::Gzip::compress(&mut out, write_records),
        2 => codec::Snappy::compress(&mut out, write_records),
        3 => codec::Lz4::compress(&mut out, write_records),
        4 => codec::Zstd::compress(&mut out, write_records),
        other => {
            return Err(BatchError::UndecodableRecords {
                reason: format!("unknown compression codec {other}"),
            })
        }
    };
    compressed.map_err(|e| BatchError::UndecodableRecords {
        reason: e.to_string(),
    })?;
    let length = i32::try_from(out.len() - batch::LOG_OVERHEAD_BYTES).map_err(|_| {
        BatchError::UndecodableRecords {
            reason: "batch too large".into(),
        }
    })?;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

fn put_bytes(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(compression: Compression, base: i64) -> Bytes {
        let records: Vec<Record> = (0..6)
            .map(|i| {
                let mut headers = IndexMap::new();
                headers.insert(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from(vec![i as u8])),
                );
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 3,
                    producer_id: 77,
                    producer_epoch: 2,
                    timestamp_type: TimestampType::Creation,
                    offset: base + i,
                    sequence: 10 + i as i32,
                    timestamp: 1_000 + i * 10,
                    key: Some(Bytes::from(format!("k{}", i % 3))),
                    value: if i == 4 {
                        None
                    } else {
                        Some(Bytes::from(format!("v{i}")))
                    },
                    headers,
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn kept_records_keep_their_offsets_and_the_batch_its_frame() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let original = batch(compression, 500);
            let before = batch::validate(&original).unwrap();
            // Keep only the latest record of each key (k0: 3, k1: 4 tombstone, k2: 5), and
            // drop the first: the base offset must stay 500.
            let out = retain(&original, |r| r.offset >= 503).unwrap();
            let Retained::Some(bytes) = out else {
                panic!("{compression:?}: {out:?}")
            };
            let after = batch::validate_stored(&bytes).unwrap();
            assert!(
                batch::validate(&bytes).is_err(),
                "a client could not send it"
            );
            assert_eq!(after.base_offset, 500);
            assert_eq!(after.last_offset_delta, before.last_offset_delta);
            assert_eq!(after.records_count, 3);
            assert_eq!(after.compression(), before.compression());
            assert_eq!(
                (after.producer_id, after.producer_epoch, after.base_sequence),
                (77, 2, 10)
            );
            assert_eq!(after.partition_leader_epoch, 3);
            assert_eq!((after.base_timestamp, after.max_timestamp), (1_030, 1_050));
            // Kafka's own decoder reads the kept records at their offsets.
            let mut buf = bytes.clone();
            let set = RecordBatchDecoder::decode(&mut buf).unwrap();
            let got: Vec<(i64, Option<Bytes>, i64)> = set
                .records
                .iter()
                .map(|r| (r.offset, r.value.clone(), r.timestamp))
                .collect();
            assert_eq!(
                got,
                vec![
                    (503, Some(Bytes::from("v3")), 1_030),
                    (504, None, 1_040),
                    (505, Some(Bytes::from("v5")), 1_050)
                ]
            );
            assert_eq!(set.records[2].headers.len(), 1);
            assert_eq!(retain(&original, |_| true).unwrap(), Retained::All);
            assert_eq!(retain(&original, |_| false).unwrap(), Retained::None);
        }
        // Damage is an error.
        let mut bad = BytesMut::from(&batch(Compression::None, 0)[..]);
        bad[70] ^= 0xff;
        assert!(retain(&bad.freeze(), |_| true).is_err());
    }

    #[test]
    fn an_empty_batch_keeps_the_header_fields() {
        let original = batch(Compression::Lz4, 40);
        let header = batch::validate(&original).unwrap();
        let empty = empty_like(&header);
        let thin = batch::validate_stored(&empty).unwrap();
        assert_eq!(thin.records_count, 0);
        assert_eq!(thin.base_offset, 40);
        assert_eq!(thin.last_offset(), header.last_offset());
        assert_eq!(
            (thin.producer_id, thin.producer_epoch, thin.base_sequence),
            (77, 2, 10)
        );
        assert_eq!(thin.compression(), 0);
        assert_eq!(empty.len(), HEADER_BYTES);
        let mut buf = empty.clone();
        let set = RecordBatchDecoder::decode(&mut buf).unwrap();
        assert!(set.records.is_empty());
    }
}
