//! Partition log tests. Most run byte-exactly on the in-memory backend (crashes, torn writes,
//! ENOSPC, failure points); `dma_backend_roundtrip_and_recovery` runs on real O_DIRECT files.
//! Batches are real Kafka batches built with kafka-protocol's encoder.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_lite::future::block_on;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as KTimestampType,
};
use spool_protocol::batch::{self, BatchHeader};

use crate::fs::failpoints;
use crate::{Backend, LogConfig, MemFs, PartitionLog, StorageError, TimestampType};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        segment_ms: i64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        max_message_bytes: 100_000,
        index_interval_bytes: 300,
        timestamp_type: TimestampType::CreateTime,
        tail_cache_bytes_max: 0,
    }
}

/// A batch of `count` records; idempotent when `producer_id >= 0`.
fn batch_of(count: i64, producer_id: i64, epoch: i16, base_seq: i32, ts: i64) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: KTimestampType::Creation,
            offset: i,
            sequence: base_seq.wrapping_add(i as i32),
            timestamp: ts + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'x'; 60])),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

fn plain(count: i64, ts: i64) -> Bytes {
    batch_of(count, -1, -1, -1, ts)
}

fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

fn open(fs: &MemFs, config: LogConfig) -> PartitionLog {
    block_on(PartitionLog::open(
        dir(),
        config,
        Backend::Memory(fs.clone()),
    ))
    .unwrap()
}

/// Reads the whole log one request at a time; checks batches are valid and contiguous.
fn read_all(log: &PartitionLog) -> Vec<BatchHeader> {
    let mut headers = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let result = block_on(log.read(offset, 1, i64::MAX)).unwrap();
        assert!(!result.batches.is_empty(), "no batch at {offset}");
        for bytes in &result.batches {
            let header = batch::validate(bytes).unwrap();
            assert_eq!(header.base_offset, offset);
            offset = header.last_offset() + 1;
            headers.push(header);
        }
    }
    headers
}

fn segment_files(fs: &MemFs, extension: &str) -> Vec<PathBuf> {
    fs.paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect()
}

/// Appends `n` plain 3-record batches with increasing timestamps, flushing after each.
fn fill(log: &mut PartitionLog, n: i64, ts: i64) {
    for i in 0..n {
        log.append(plain(3, ts + 10 * i), 1, ts + 10 * i).unwrap();
        block_on(log.flush()).unwrap();
    }
}

#[test]
fn append_read_roundtrip_across_segment_rolls() {
    let fs = MemFs::new();
    let mut log = open(&fs, config());
    for i in 0..40 {
        let info = log.append(plain(3, 1_000 + i), 5, 1_000 + i).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (3 * i, 3 * i + 2));
        assert_eq!(info.log_append_time_ms, -1);
        if i % 7 == 0 {
            block_on(log.flush()).unwrap();
        }
    }
    assert_eq!(log.log_end_offset(), 120);
    assert!(log.durable_end_offset() < 120);
    block_on(log.flush()).unwrap();
    assert_eq!(log.durable_end_offset(), 120);
    assert!(
        segment_files(&fs, "log").len() > 3,
        "segment.bytes must have rolled the log"
    );
    let headers = read_all(&log);
    assert_eq!(headers.len(), 40);
    assert!(headers.iter().all(|h| h.partition_leader_epoch == 5));
    // Reading by an offset inside a batch returns the whole batch containing it.
    for offset in [0, 1, 2, 61, 119] {
        let result = block_on(log.read(offset, 1, i64::MAX)).unwrap();
        let header = batch::validate(&result.batches[0]).unwrap();
        assert!(header.base_offset <= offset && offset <= header.last_offset());
    }
    block_on(log.close()).unwrap();
    let log = open(&fs, config());
    assert_eq!(log.log_end_offset(), 120);
    assert_eq!(read_all(&log), headers);
}

#[test]
fn read_limits_kip74_and_ranges() {
    let fs = MemFs::new();
    for tail_cache_bytes_max in [0, 1 << 20] {
        let mut log = open(
            &fs,
            LogConfig {
                tail_cache_bytes_max,
                ..config()
            },
        );
        let start = log.log_end_offset();
        fill(&mut log, 10, 0);
        let one = block_on(log.read(start, 1, i64::MAX)).unwrap();
        assert_eq!(
            one.batches.len(),
            1,
            "at least one whole batch even above max_bytes"
        );
        let size = one.batches[0].len();
        let three = block_on(log.read(start, 3 * size + 1, i64::MAX)).unwrap();
        assert_eq!(three.batches.len(), 3);
        let bounded = block_on(log.read(start, 1 << 20, start + 6)).unwrap();
        assert_eq!(bounded.batches.len(), 2, "never at or beyond upper_bound");
        let end = log.log_end_offset();
        assert!(block_on(log.read(end, 100, i64::MAX))
            .unwrap()
            .batches
            .is_empty());
        assert!(matches!(
            block_on(log.read(end + 1, 100, i64::MAX)),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        block_on(log.close()).unwrap();
    }
}

#[test]
fn index_is_sparse_and_used() {
    let fs = MemFs::new();
    let mut log = open(
        &fs,
        LogConfig {
            segment_bytes: 100_000,
            ..config()
        },
    );
    fill(&mut log, 30, 0);
    block_on(log.close()).unwrap();
    let index = fs.read(&dir().join(format!("{:020}.index", 0))).unwrap();
    assert!(index.len() >= 8 * 5, "one entry per index.interval.bytes");
    let log = open(
        &fs,
        LogConfig {
            segment_bytes: 100_000,
            ..config()
        },
    );
    for offset in (0..90).step_by(7) {
        let result = block_on(log.read(offset, 1, i64::MAX)).unwrap();
        let header = batch::validate(&result.batches[0]).unwrap();
        assert!(header.base_offset <= offset && offset <= header.last_offset());
    }
}

#[test]
fn recovery_after_crash_at_each_failure_point() {
    for point in failpoints::ALL {
        let fs = MemFs::new();
        let mut log = open(&fs, config());
        fill(&mut log, 5, 0);
        fs.arm(point);
        // Enough to roll at least once, so every roll failure point is reached.
        for i in 0..15 {
            log.append(plain(3, 100 + i), 1, 100 + i).unwrap();
        }
        let result = if point == failpoints::CLOSE_BEFORE_MARKER {
            block_on(log.flush()).unwrap();
            let end = log.log_end_offset();
            assert!(block_on(log.close()).is_err(), "{point}");
            end
        } else {
            assert!(block_on(log.flush()).is_err(), "{point}");
            // The log stays consistent and readable after the failure.
            assert_eq!(log.durable_end_offset(), log.log_end_offset());
            read_all(&log);
            log.log_end_offset()
        };
        fs.crash();
        let mut log = open(&fs, config());
        if point == failpoints::FLUSH_AFTER_SYNC {
            // Synced before the power went: durable though never acknowledged, like Kafka.
            assert!(log.log_end_offset() >= result, "{point}");
        } else {
            assert_eq!(log.log_end_offset(), result, "{point}");
        }
        assert!(
            log.log_end_offset() >= 15,
            "{point}: acknowledged data lost"
        );
        assert_eq!(read_all(&log).len() as i64 * 3, log.log_end_offset());
        fill(&mut log, 12, 500);
        assert_eq!(read_all(&log).len() as i64 * 3, log.log_end_offset());
    }
}

#[test]
fn torn_tail_is_truncated() {
    for prefix_bytes in [0, 100, 4096, 5000] {
        let fs = MemFs::new();
        let mut log = open(
            &fs,
            LogConfig {
                segment_bytes: 100_000,
                ..config()
            },
        );
        fill(&mut log, 10, 0);
        let durable = log.log_end_offset();
        fs.arm(failpoints::FLUSH_AFTER_WRITE_BEFORE_SYNC);
        for i in 0..10 {
            log.append(plain(3, 100 + i), 1, 100 + i).unwrap();
        }
        assert!(block_on(log.flush()).is_err());
        fs.crash_torn(prefix_bytes);
        let log = open(
            &fs,
            LogConfig {
                segment_bytes: 100_000,
                ..config()
            },
        );
        // Whole batches that made it are kept, the torn one and the rest are dropped.
        assert!(log.log_end_offset() >= durable, "prefix {prefix_bytes}");
        assert_eq!(read_all(&log).len() as i64 * 3, log.log_end_offset());
    }
}

#[test]
fn corrupt_crc_in_tail_is_truncated() {
    let fs = MemFs::new();
    let mut log = open(
        &fs,
        LogConfig {
            segment_bytes: 100_000,
            ..config()
        },
    );
    fill(&mut log, 6, 0);
    let sizes: Vec<usize> = (0..6)
        .map(|i| block_on(log.read(i * 3, 1, i64::MAX)).unwrap().batches[0].len())
        .collect();
    drop(log); // a crash: no clean-shutdown marker
    let fourth = sizes[..3].iter().sum::<usize>() + 70;
    fs.corrupt(&dir().join(format!("{:020}.log", 0)), fourth, 0x01);
    fs.crash();
    let mut log = open(
        &fs,
        LogConfig {
            segment_bytes: 100_000,
            ..config()
        },
    );
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(read_all(&log).len(), 3);
    log.append(plain(1, 5), 1, 5).unwrap();
    block_on(log.flush()).unwrap();
    assert_eq!(log.log_end_offset(), 10);
}

#[test]
fn deleted_or_damaged_index_is_rebuilt() {
    let fs = MemFs::new();
    let mut log = open(&fs, config());
    fill(&mut log, 30, 0);
    let headers = read_all(&log);
    block_on(log.close()).unwrap();
    let first_index = dir().join(format!("{:020}.index", 0));
    let first_time_index = dir().join(format!("{:020}.timeindex", 0));
    fs.remove(&first_index);
    let second_time_index = segment_files(&fs, "timeindex")[1].clone();
    fs.corrupt(&second_time_index, 3, 0xff);
    let log = open(&fs, config());
    assert!(
        fs.read(&first_index).is_some(),
        "missing index rebuilt on open"
    );
    assert!(fs.read(&first_time_index).is_some());
    assert_eq!(read_all(&log), headers);
    assert_eq!(
        block_on(log.offset_for_timestamp(0)).unwrap().map(|t| t.0),
        Some(0)
    );
}

#[test]
fn producer_duplicates_gaps_and_fencing() {
    let fs = MemFs::new();
    let mut log = open(&fs, config());
    let first = log.append(batch_of(2, 7, 0, 0, 10), 1, 10).unwrap();
    let second = log.append(batch_of(3, 7, 0, 2, 10), 1, 10).unwrap();
    assert_eq!((second.base_offset, second.last_offset), (2, 4));
    // A retry of either of the last 5 batches is a duplicate with the original offsets.
    for (retry, original) in [
        (batch_of(2, 7, 0, 0, 10), &first),
        (batch_of(3, 7, 0, 2, 10), &second),
    ] {
        let info = log.append(retry, 1, 10).unwrap();
        assert!(info.duplicate);
        assert_eq!(
            (info.base_offset, info.last_offset),
            (original.base_offset, original.last_offset)
        );
    }
    assert_eq!(log.log_end_offset(), 5, "duplicates append nothing");
    let gap = log.append(batch_of(1, 7, 0, 9, 10), 1, 10);
    assert!(matches!(
        gap,
        Err(StorageError::OutOfOrderSequence {
            expected: 5,
            got: 9,
            ..
        })
    ));
    // A new epoch must start at sequence 0; then the old epoch is fenced.
    let bad_bump = log.append(batch_of(1, 7, 1, 5, 10), 1, 10);
    assert!(matches!(
        bad_bump,
        Err(StorageError::OutOfOrderSequence { expected: 0, .. })
    ));
    log.append(batch_of(1, 7, 1, 0, 10), 1, 10).unwrap();
    let zombie = log.append(batch_of(1, 7, 0, 5, 10), 1, 10);
    assert!(matches!(
        zombie,
        Err(StorageError::InvalidProducerEpoch {
            epoch: 0,
            current: 1,
            ..
        })
    ));
    // Unknown producers are accepted at any sequence; non-idempotent batches skip all checks.
    log.append(batch_of(1, 8, 0, 42, 10), 1, 10).unwrap();
    log.append(plain(1, 10), 1, 10).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    // A multi-batch request with a gap in its second batch appends nothing.
    let mut request = BytesMut::new();
    request.extend_from_slice(&batch_of(1, 8, 0, 43, 10));
    request.extend_from_slice(&batch_of(1, 8, 0, 99, 10));
    assert!(log.append(request.freeze(), 1, 10).is_err());
    assert_eq!(log.log_end_offset(), 8);
    log.append(batch_of(1, 8, 0, 43, 10), 1, 10).unwrap();
    block_on(log.flush()).unwrap();
}

#[test]
fn producer_sequence_wraps() {
    let fs = MemFs::new();
    let mut log = open(&fs, config());
    log.append(batch_of(2, 3, 0, i32::MAX - 1, 10), 1, 10)
        .unwrap();
    log.append(batch_of(2, 3, 0, 0, 10), 1, 10).unwrap();
    assert!(
        log.append(batch_of(2, 3, 0, 0, 10), 1, 10)
            .unwrap()
            .duplicate
    );
}

#[test]
fn producer_state_survives_restart_clean_and_crash() {
    for clean in [true, false] {
        let fs = MemFs::new();
        let mut log = open(&fs, config());
        let mut seq = 0;
        let mut last = None;
        for i in 0..30 {
            last = Some(
                log.append(batch_of(2, 11, 2, seq, 10 + i), 1, 10 + i)
                    .unwrap(),
            );
            seq += 2;
            block_on(log.flush()).unwrap();
        }
        if clean {
            block_on(log.close()).unwrap();
        } else {
            drop(log);
            fs.crash();
        }
        let mut log = open(&fs, config());
        let retry = log.append(batch_of(2, 11, 2, seq - 2, 10), 1, 10).unwrap();
        assert!(retry.duplicate, "clean={clean}");
        assert_eq!(retry.base_offset, last.unwrap().base_offset);
        let gap = log.append(batch_of(2, 11, 2, seq + 4, 10), 1, 10);
        assert!(
            matches!(gap, Err(StorageError::OutOfOrderSequence { .. })),
            "clean={clean}"
        );
        let zombie = log.append(batch_of(2, 11, 1, 0, 10), 1, 10);
        assert!(matches!(
            zombie,
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
        log.append(batch_of(2, 11, 2, seq, 10), 1, 10).unwrap();
    }
}

#[test]
fn failed_flush_rolls_back_producer_state() {
    let fs = MemFs::new();
    let mut log = open(&fs, config());
    log.append(batch_of(1, 5, 0, 0, 10), 1, 10).unwrap();
    block_on(log.flush()).unwrap();
    log.append(batch_of(1, 5, 0, 1, 10), 1, 10).unwrap();
    fs.set_enospc(true);
    assert!(block_on(log.flush()).is_err());
    fs.set_enospc(false);
    // The lost batch was never acknowledged: the producer's retry appends it again.
    let retry = log.append(batch_of(1, 5, 0, 1, 10), 1, 10).unwrap();
    assert!(!retry.duplicate);
    assert_eq!(retry.base_offset, 1);
    block_on(log.flush()).unwrap();
}

#[test]
fn retention_by_time_and_bytes() {
    let fs = MemFs::new();
    let mut log = open(&fs, config());
    fill(&mut log, 40, 1_000);
    let segments = segment_files(&fs, "log").len();
    assert!(segments >= 5);
    assert_eq!(
        block_on(log.enforce_retention(10_000)).unwrap(),
        0,
        "unlimited by default"
    );
    // By time: segments whose max timestamp is older than now - retention.ms.
    log.update_config(LogConfig {
        retention_ms: 1_000,
        ..config()
    });
    let deleted = block_on(log.enforce_retention(2_200)).unwrap();
    assert!(deleted >= 1 && deleted < segments);
    assert!(log.log_start_offset() > 0);
    assert!(log.max_timestamp().is_some());
    let first = block_on(log.offset_for_timestamp(0)).unwrap();
    assert_eq!(first.map(|t| t.0), Some(log.log_start_offset()));
    assert!(matches!(
        block_on(log.read(0, 1, i64::MAX)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    read_all(&log);
    // By size: keep at most retention.bytes, never the active segment.
    log.update_config(LogConfig {
        retention_bytes: 1,
        ..config()
    });
    block_on(log.enforce_retention(0)).unwrap();
    assert_eq!(segment_files(&fs, "log").len(), 1);
    assert_eq!(
        read_all(&log).len() as i64 * 3,
        log.log_end_offset() - log.log_start_offset()
    );
    let start = log.log_start_offset();
    block_on(log.close()).unwrap();
    let log = open(&fs, config());
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.end_offset_for_epoch(1), (1, log.log_end_offset()));
}

#[test]
fn truncate_suffix_across_segments() {
    for clean in [true, false] {
        let fs = MemFs::new();
        let mut log = open(&fs, config());
        fill(&mut log, 20, 0);
        let epoch_two = log.log_end_offset();
        for i in 0..20 {
            log.append(batch_of(3, 4, 0, 3 * i as i32, 500 + i), 2, 500 + i)
                .unwrap();
        }
        block_on(log.flush()).unwrap();
        let segments = segment_files(&fs, "log").len();
        // Offset 31 is inside the batch [30, 32]: that batch goes too.
        block_on(log.truncate_suffix(31)).unwrap();
        assert_eq!(log.log_end_offset(), 30);
        assert!(segment_files(&fs, "log").len() < segments);
        assert_eq!(read_all(&log).len(), 10);
        assert_eq!(log.end_offset_for_epoch(2), (1, 30));
        assert_eq!(log.max_timestamp().map(|t| t.1), Some(92));
        log.append(plain(1, 1), 3, 1).unwrap();
        block_on(log.flush()).unwrap();
        assert_eq!(log.end_offset_for_epoch(2), (1, 30));
        assert_eq!(log.end_offset_for_epoch(3), (3, 31));
        assert!(epoch_two > 30);
        if clean {
            block_on(log.close()).unwrap();
        } else {
            drop(log);
            fs.crash();
        }
        let mut log = open(&fs, config());
        assert_eq!(log.log_end_offset(), 31);
        assert_eq!(read_all(&log).len(), 11);
        // Producer 4's batches were truncated: it is unknown again and starts anywhere.
        log.append(batch_of(1, 4, 0, 100, 1), 3, 1).unwrap();
        block_on(log.truncate_suffix(0)).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        assert_eq!(log.end_offset_for_epoch(3), (-1, -1));
    }
}

#[test]
fn offset_for_timestamp_and_max_timestamp() {
    for tail_cache_bytes_max in [0, 1 << 20] {
        let fs = MemFs::new();
        let mut log = open(
            &fs,
            LogConfig {
                tail_cache_bytes_max,
                ..config()
            },
        );
        assert_eq!(log.max_timestamp(), None);
        assert_eq!(block_on(log.offset_for_timestamp(0)).unwrap(), None);
        fill(&mut log, 30, 1_000); // batch i: offsets 3i..3i+2, timestamps 1000+10i ..+2
        let cases = [
            (0, Some(0)),
            (1_000, Some(0)),
            (1_003, Some(3)),
            (1_152, Some(45)),
            (1_292, Some(87)),
            (1_293, None),
        ];
        for (ts, expected) in cases {
            let found = block_on(log.offset_for_timestamp(ts)).unwrap();
            assert_eq!(found.map(|t| t.0), expected, "ts {ts}");
            if let Some((_, batch_ts, epoch)) = found {
                assert!(batch_ts >= ts);
                assert_eq!(epoch, 1);
            }
        }
        assert_eq!(log.max_timestamp(), Some((89, 1_292, 1)));
        block_on(log.close()).unwrap();
        let log = open(&fs, config());
        assert_eq!(log.max_timestamp(), Some((89, 1_292, 1)));
        assert_eq!(
            block_on(log.offset_for_timestamp(1_152))
                .unwrap()
                .map(|t| t.0),
            Some(45)
        );
    }
}

#[test]
fn end_offset_for_epoch_survives_restart() {
    let fs = MemFs::new();
    let mut log = open(&fs, config());
    assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
    for (epoch, batches) in [(2, 5), (3, 10), (5, 4)] {
        for _ in 0..batches {
            log.append(plain(2, 0), epoch, 0).unwrap();
        }
        block_on(log.flush()).unwrap();
    }
    let check = |log: &PartitionLog| {
        assert_eq!(log.end_offset_for_epoch(1), (-1, -1));
        assert_eq!(log.end_offset_for_epoch(2), (2, 10));
        assert_eq!(log.end_offset_for_epoch(4), (3, 30));
        assert_eq!(log.end_offset_for_epoch(5), (5, 38));
        assert_eq!(log.end_offset_for_epoch(9), (5, 38));
    };
    check(&log);
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    check(&log);
    block_on(log.close()).unwrap();
    fs.remove(&dir().join("leader-epoch-checkpoint"));
    let log = open(&fs, config());
    check(&log);
}

#[test]
fn enospc_on_flush_leaves_log_consistent() {
    let fs = MemFs::new();
    let mut log = open(
        &fs,
        LogConfig {
            tail_cache_bytes_max: 1 << 20,
            ..config()
        },
    );
    fill(&mut log, 12, 0);
    let durable = log.log_end_offset();
    let before = read_all(&log);
    fs.set_enospc(true);
    for i in 0..10 {
        log.append(plain(3, 100 + i), 1, 100 + i).unwrap();
    }
    assert!(matches!(
        block_on(log.flush()),
        Err(StorageError::Io { .. })
    ));
    assert_eq!(log.log_end_offset(), durable);
    assert_eq!(log.durable_end_offset(), durable);
    assert_eq!(read_all(&log), before);
    fs.set_enospc(false);
    let info = log.append(plain(3, 200), 1, 200).unwrap();
    assert_eq!(info.base_offset, durable);
    block_on(log.flush()).unwrap();
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    assert_eq!(log.log_end_offset(), durable + 3);
    assert_eq!(read_all(&log).len(), before.len() + 1);
}

#[test]
fn rejects_bad_requests_without_appending() {
    let fs = MemFs::new();
    let mut log = open(
        &fs,
        LogConfig {
            max_message_bytes: 400,
            ..config()
        },
    );
    let mut corrupt = plain(2, 0).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        log.append(Bytes::from(corrupt), 1, 0),
        Err(StorageError::CorruptBatch {
            reason: "CRC mismatch",
            ..
        })
    ));
    let good = plain(1, 0);
    assert!(matches!(
        log.append(good.slice(..good.len() - 3), 1, 0),
        Err(StorageError::CorruptBatch { .. })
    ));
    assert!(matches!(
        log.append(plain(20, 0), 1, 0),
        Err(StorageError::MessageTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn log_append_time_and_segment_ms() {
    let fs = MemFs::new();
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        segment_ms: 1_000,
        segment_bytes: 1 << 20,
        tail_cache_bytes_max: 1 << 20,
        ..config()
    };
    let mut log = open(&fs, config);
    let info = log.append(plain(2, 5), 1, 77_000).unwrap();
    assert_eq!(info.log_append_time_ms, 77_000);
    let read = block_on(log.read(0, 1, i64::MAX)).unwrap();
    let header = batch::validate(&read.batches[0]).unwrap();
    assert!(header.is_log_append_time());
    assert_eq!(header.max_timestamp, 77_000);
    log.append(plain(2, 5), 1, 77_500).unwrap();
    log.append(plain(2, 5), 1, 78_001).unwrap(); // more than segment.ms later: rolls
    block_on(log.flush()).unwrap();
    assert_eq!(segment_files(&fs, "log").len(), 2);
}

#[test]
fn tail_cache_stays_bounded() {
    let fs = MemFs::new();
    let mut log = open(
        &fs,
        LogConfig {
            tail_cache_bytes_max: 1_000,
            ..config()
        },
    );
    fill(&mut log, 30, 0);
    assert!(log.tail.covers(log.log_end_offset() - 1));
    assert!(!log.tail.covers(0));
    read_all(&log);
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn dma_backend_roundtrip_and_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic-0");
    let handle = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut log = PartitionLog::open(dir.clone(), config(), Backend::Dma)
                .await
                .unwrap();
            for i in 0..25 {
                log.append(plain(3, 1_000 + i), 1, 1_000 + i).unwrap();
                log.append(batch_of(1, 9, 0, i as i32, 1_000 + i), 1, 1_000 + i)
                    .unwrap();
                log.flush().await.unwrap();
            }
            assert_eq!(log.log_end_offset(), 100);
            let headers = read_all_async(&log).await;
            assert_eq!(headers.len(), 50);
            assert!(
                files_in(&dir)
                    .iter()
                    .filter(|n| n.ends_with(".log"))
                    .count()
                    > 2
            );
            // Crash-like reopen: no marker, the active segment holds O_DIRECT zero padding.
            drop(log);
            let mut log = PartitionLog::open(dir.clone(), config(), Backend::Dma)
                .await
                .unwrap();
            assert_eq!(log.log_end_offset(), 100);
            assert_eq!(read_all_async(&log).await, headers);
            assert!(
                log.append(batch_of(1, 9, 0, 24, 0), 1, 0)
                    .unwrap()
                    .duplicate
            );
            log.append(plain(1, 5_000), 2, 5_000).unwrap();
            log.close().await.unwrap();
            assert!(files_in(&dir).contains(&"clean-shutdown".to_string()));
            let log = PartitionLog::open(dir.clone(), config(), Backend::Dma)
                .await
                .unwrap();
            assert_eq!(log.log_end_offset(), 101);
            assert_eq!(read_all_async(&log).await.len(), 51);
            assert_eq!(log.end_offset_for_epoch(1), (1, 100));
            assert_eq!(log.max_timestamp().map(|t| t.0), Some(100));
            // Batch 8 (offsets 32..=34) has timestamps 1008..=1010.
            assert_eq!(
                log.offset_for_timestamp(1_010).await.unwrap().map(|t| t.0),
                Some(32)
            );
            log.delete().await.unwrap();
            assert!(!dir.exists());
        })
        .unwrap();
    handle.join().unwrap();
}

async fn read_all_async(log: &PartitionLog) -> Vec<BatchHeader> {
    let mut headers = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let result = log.read(offset, 1000, i64::MAX).await.unwrap();
        assert!(!result.batches.is_empty());
        for bytes in &result.batches {
            let header = batch::validate(bytes).unwrap();
            assert_eq!(header.base_offset, offset);
            offset = header.last_offset() + 1;
            headers.push(header);
        }
    }
    headers
}
