//! Kafka record batch (magic 2) header handling: parse, validate, split, and the few in-place
//! rewrites a broker makes (base offset, leader epoch, LogAppendTime). No I/O, no records
//! decoding, no decompression.
//!
//! Layout (big endian), 61 header bytes, then the records:
//!
//! ```text
//! 0  baseOffset i64        8  batchLength i32 (bytes after this field)
//! 12 partitionLeaderEpoch  16 magic i8 (= 2)     17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16        23 lastOffsetDelta    27 baseTimestamp i64   35 maxTimestamp i64
//! 43 producerId i64        51 producerEpoch i16  53 baseSequence i32    57 recordsCount i32
//! ```
//!
//! Invariants:
//! - Nothing here panics on untrusted input and nothing allocates from an untrusted length:
//!   every length is checked against the bytes actually present before it is used.
//! - baseOffset and partitionLeaderEpoch lie outside the CRC, so rewriting them never touches
//!   it; every other rewrite recomputes the CRC.

use bytes::Bytes;

/// Size of baseOffset + batchLength: the part of a batch not counted by batchLength.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Size of the whole v2 batch header, up to and including recordsCount.
pub const HEADER_BYTES: usize = 61;
/// The only record batch format Spool stores.
pub const MAGIC_V2: i8 = 2;
/// `producerId` of a batch sent without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
/// Attribute bit 6: the base timestamp is the batch's delete horizon (KIP-534).
pub const DELETE_HORIZON_BIT: i16 = 0x40;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const _: () = assert!(RECORDS_COUNT_AT + 4 == HEADER_BYTES);
const _: () = assert!(CRC_AT + 4 == ATTRIBUTES_AT);

const COMPRESSION_MASK: i16 = 0b111;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// Why a byte range is not a valid v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("unsupported magic {magic}, only 2 is supported")]
    InvalidMagic { magic: i8 },
    #[error("batchLength {length} is below the header size")]
    LengthTooSmall { length: i32 },
    #[error("batchLength says {declared} total bytes but the batch has {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("negative recordsCount {count}")]
    NegativeRecordsCount { count: i32 },
    #[error("recordsCount {count} inconsistent with lastOffsetDelta {last_offset_delta}")]
    RecordsCountMismatch { count: i32, last_offset_delta: i32 },
    #[error("records cannot be decoded: {reason}")]
    UndecodableRecords { reason: String },
}

/// The fixed 61-byte header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks only that the header bytes are present;
    /// use [`validate`] for a whole batch.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: buf.len(),
            });
        }
        Ok(BatchHeader {
            base_offset: read_i64(buf, BASE_OFFSET_AT),
            batch_length: read_i32(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: read_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: read_i32(buf, CRC_AT) as u32,
            attributes: read_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: read_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: read_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: read_i64(buf, PRODUCER_ID_AT),
            producer_epoch: read_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: read_i32(buf, BASE_SEQUENCE_AT),
            records_count: read_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Bytes the whole batch occupies, as declared by batchLength (0 if batchLength < 0).
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + usize::try_from(self.batch_length).unwrap_or(0)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// KIP-534's delete horizon: when a cleaning marked the batch, its base timestamp field
    /// holds the time after which its tombstones (or, for a marker, the marker itself) may go.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }

    /// Sequence number of the last record, wrapping at i32::MAX like Kafka.
    pub fn last_sequence(&self) -> i32 {
        sequence_add(self.base_sequence, self.last_offset_delta)
    }
}

/// `seq + increment` with Kafka's wrap-around: after i32::MAX comes 0. A negative sequence
/// (Kafka's NO_SEQUENCE, -1) has no successor and stays as it is: batches come from clients and
/// disks, so this must be total rather than assert.
pub fn sequence_add(seq: i32, increment: i32) -> i32 {
    if seq < 0 || increment < 0 {
        return seq;
    }
    if seq > i32::MAX - increment {
        increment - (i32::MAX - seq) - 1
    } else {
        seq + increment
    }
}

/// Checks that `batch` is exactly one well-formed v2 batch and returns its header.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(batch, false)
}

/// [`validate`] for a batch a cleaning may have rewritten: compaction keeps a batch's base
/// offset and last offset delta but not all of its records, so it may hold fewer records than
/// its offsets span (Kafka's v2 rule), never more.
pub fn validate_stored(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(batch, true)
}

fn validate_with(batch: &[u8], compacted: bool) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.magic != MAGIC_V2 {
        return Err(BatchError::InvalidMagic {
            magic: header.magic,
        });
    }
    if header.batch_length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Err(BatchError::LengthTooSmall {
            length: header.batch_length,
        });
    }
    if header.total_bytes() != batch.len() {
        return Err(BatchError::LengthMismatch {
            declared: header.total_bytes(),
            actual: batch.len(),
        });
    }
    let computed = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.records_count < 0 {
        return Err(BatchError::NegativeRecordsCount {
            count: header.records_count,
        });
    }
    let span = i64::from(header.last_offset_delta) + 1;
    let count = i64::from(header.records_count);
    let consistent = header.records_count == 0
        || (header.last_offset_delta >= 0 && (count == span || (compacted && count < span)));
    if !consistent {
        return Err(BatchError::RecordsCountMismatch {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Splits concatenated batches into whole batches without copying. Checks framing only
/// (lengths and header size); call [`validate`] on each batch for the rest.
pub fn batches(buf: Bytes) -> BatchIter {
    BatchIter {
        buf,
        position: 0,
        failed: false,
    }
}

/// Iterator returned by [`batches`]. Yields `(position, batch)`; after the first error it ends.
#[derive(Debug, Clone)]
pub struct BatchIter {
    buf: Bytes,
    position: usize,
    failed: bool,
}

impl BatchIter {
    /// Byte position of the next batch within the original buffer.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for BatchIter {
    type Item = Result<(usize, Bytes), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position == self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.position..];
        match frame_length(rest) {
            Ok(total) => {
                let batch = self.buf.slice(self.position..self.position + total);
                let position = self.position;
                self.position += total;
                Some(Ok((position, batch)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// Total length of the batch at the start of `buf`, checked against the bytes present.
pub fn frame_length(buf: &[u8]) -> Result<usize, BatchError> {
    if buf.len() < LOG_OVERHEAD_BYTES {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD_BYTES,
            available: buf.len(),
        });
    }
    let length = read_i32(buf, BATCH_LENGTH_AT);
    if length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Err(BatchError::LengthTooSmall { length });
    }
    // Non-negative and at most i32::MAX, so the sum cannot overflow usize.
    let total = LOG_OVERHEAD_BYTES + length as usize;
    if total > buf.len() {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    Ok(total)
}

/// Rewrites baseOffset (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "set_base_offset on a short batch"
    );
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites partitionLeaderEpoch (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "set_partition_leader_epoch on a short batch"
    );
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with maxTimestamp `now_ms`, as Kafka's broker does, and
/// recomputes the CRC. The batch must already be valid; the result is valid again.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    assert!(
        batch.len() >= HEADER_BYTES,
        "set_log_append_time on a short batch"
    );
    let attributes = read_i16(batch, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Offset and timestamp of every record in one stored batch, decompressing it if needed.
/// ListOffsets needs record precision: the first record at or after a timestamp, and the record
/// holding the largest one. With LogAppendTime every record carries the batch's maxTimestamp.
pub fn record_timestamps(batch: &Bytes) -> Result<Vec<(i64, i64)>, BatchError> {
    let header = validate(batch)?;
    let mut buf = batch.clone();
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).map_err(|e| {
        BatchError::UndecodableRecords {
            reason: e.to_string(),
        }
    })?;
    Ok(set
        .records
        .iter()
        .map(|r| {
            let ts = if header.is_log_append_time() {
                header.max_timestamp
            } else {
                r.timestamp
            };
            (r.offset, ts)
        })
        .collect())
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(bytes)
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn encode(count: i64, compression: Compression, producer_id: i64, base_seq: i32) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: if producer_id >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i,
                // The encoder splits batches where offset - sequence changes, so a
                // non-idempotent batch counts up from base sequence -1.
                sequence: base_seq + i as i32,
                timestamp: 1_000 + i,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'v'; 100])),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf.freeze()
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn real_batches_validate_with_every_codec() {
        for (codec_id, codec) in CODECS.into_iter().enumerate() {
            let batch = encode(5, codec, 7, 3);
            let header = validate(&batch).unwrap();
            assert_eq!(header.magic, 2);
            assert_eq!(header.compression() as usize, codec_id);
            assert_eq!(header.records_count, 5);
            assert_eq!(header.last_offset_delta, 4);
            assert_eq!(header.base_timestamp, 1_000);
            assert_eq!(header.max_timestamp, 1_004);
            assert_eq!(header.producer_id, 7);
            assert_eq!(header.base_sequence, 3);
            assert_eq!(header.last_sequence(), 7);
            assert_eq!(header.total_bytes(), batch.len());
            assert!(!header.is_log_append_time());
        }
    }

    #[test]
    fn iterator_splits_concatenated_batches_zero_copy() {
        let parts = [
            encode(1, Compression::None, -1, -1),
            encode(3, Compression::Lz4, -1, -1),
        ];
        let mut all = BytesMut::new();
        for part in &parts {
            all.extend_from_slice(part);
        }
        let all = all.freeze();
        let split: Vec<_> = batches(all.clone()).map(|r| r.unwrap()).collect();
        assert_eq!(split.len(), 2);
        assert_eq!(split[0].0, 0);
        assert_eq!(split[1].0, parts[0].len());
        assert_eq!(split[0].1, parts[0]);
        assert_eq!(split[1].1, parts[1]);
        // Zero-copy: the slices point into the original buffer.
        assert_eq!(split[1].1.as_ptr(), all[parts[0].len()..].as_ptr());
    }

    #[test]
    fn iterator_rejects_truncated_trailing_batch() {
        let one = encode(2, Compression::None, -1, -1);
        let mut all = BytesMut::new();
        all.extend_from_slice(&one);
        all.extend_from_slice(&one[..one.len() - 1]);
        let results: Vec<_> = batches(all.freeze()).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert_eq!(
            results[1],
            Err(BatchError::Truncated {
                needed: one.len(),
                available: one.len() - 1
            })
        );
        // A stub shorter than the length prefix, and an empty input.
        let results: Vec<_> = batches(Bytes::from_static(&[0; 5])).collect();
        assert_eq!(
            results,
            vec![Err(BatchError::Truncated {
                needed: 12,
                available: 5
            })]
        );
        assert_eq!(batches(Bytes::new()).count(), 0);
    }

    #[test]
    fn every_validation_error() {
        let good = encode(3, Compression::Gzip, 1, 0);
        let corrupt = |at: usize, value: &[u8]| {
            let mut bytes = good.to_vec();
            bytes[at..at + value.len()].copy_from_slice(value);
            bytes
        };
        let resign = |mut bytes: Vec<u8>| {
            let crc = crc32c::crc32c(&bytes[ATTRIBUTES_AT..]);
            bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
            bytes
        };
        let short = &good[..HEADER_BYTES - 1];
        let cases: Vec<(Vec<u8>, BatchError)> = vec![
            (
                short.to_vec(),
                BatchError::Truncated {
                    needed: 61,
                    available: 60,
                },
            ),
            (
                corrupt(MAGIC_AT, &[1]),
                BatchError::InvalidMagic { magic: 1 },
            ),
            (
                corrupt(BATCH_LENGTH_AT, &10i32.to_be_bytes()),
                BatchError::LengthTooSmall { length: 10 },
            ),
            (
                corrupt(BATCH_LENGTH_AT, &(good.len() as i32).to_be_bytes()),
                BatchError::LengthMismatch {
                    declared: good.len() + 12,
                    actual: good.len(),
                },
            ),
            (
                resign(corrupt(RECORDS_COUNT_AT, &(-1i32).to_be_bytes())),
                BatchError::NegativeRecordsCount { count: -1 },
            ),
            (
                resign(corrupt(RECORDS_COUNT_AT, &5i32.to_be_bytes())),
                BatchError::RecordsCountMismatch {
                    count: 5,
                    last_offset_delta: 2,
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(validate(&bytes), Err(expected));
        }
        // Any flipped bit inside the CRC-covered range is caught.
        for at in [
            ATTRIBUTES_AT,
            MAX_TIMESTAMP_AT,
            HEADER_BYTES,
            good.len() - 1,
        ] {
            let mut bytes = good.to_vec();
            bytes[at] ^= 0x40;
            assert!(
                matches!(validate(&bytes), Err(BatchError::CrcMismatch { .. })),
                "at {at}"
            );
        }
    }

    #[test]
    fn rewrites_keep_the_batch_valid() {
        for codec in CODECS {
            let mut bytes = encode(4, codec, -1, -1).to_vec();
            let crc_before = BatchHeader::parse(&bytes).unwrap().crc;
            set_base_offset(&mut bytes, 1_234_567);
            set_partition_leader_epoch(&mut bytes, 42);
            let header = validate(&bytes).unwrap();
            assert_eq!(header.base_offset, 1_234_567);
            assert_eq!(header.last_offset(), 1_234_570);
            assert_eq!(header.partition_leader_epoch, 42);
            assert_eq!(
                header.crc, crc_before,
                "offset and epoch are outside the CRC"
            );

            set_log_append_time(&mut bytes, 99_999);
            let header = validate(&bytes).unwrap();
            assert!(header.is_log_append_time());
            assert_eq!(header.max_timestamp, 99_999);
            assert_eq!(header.compression(), codec as u8);
        }
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        assert_eq!(sequence_add(5, 3), 8);
        assert_eq!(sequence_add(i32::MAX, 1), 0);
        assert_eq!(sequence_add(i32::MAX - 1, 3), 1);
        assert_eq!(sequence_add(i32::MAX, 0), i32::MAX);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let _ = validate(&bytes);
            let _ = batches(Bytes::from(bytes)).count();
        }
    }

    #[test]
    fn record_timestamps_are_per_record_for_every_codec() {
        for codec in CODECS {
            let batch = encode(4, codec, -1, -1);
            let mut stored = BytesMut::from(&batch[..]);
            set_base_offset(&mut stored, 100);
            let stored = stored.freeze();
            let got = record_timestamps(&stored).unwrap();
            assert_eq!(
                got,
                vec![(100, 1_000), (101, 1_001), (102, 1_002), (103, 1_003)]
            );
            let mut appended = BytesMut::from(&stored[..]);
            set_log_append_time(&mut appended, 5_000);
            let got = record_timestamps(&appended.freeze()).unwrap();
            assert!(got.iter().all(|&(_, ts)| ts == 5_000));
        }
    }
}
