//! Partition log tests. Most run byte-exactly on the in-memory backend (crashes, torn writes,
//! ENOSPC, failure points); `dma_backend_roundtrip_and_recovery` runs on real O_DIRECT files.
//! The concurrency tests at the end park a flush, retention or truncation on a held `MemOp`
//! (or run it as a glommio task) and append, read and crash while it waits.
//! Batches are real Kafka batches built with kafka-protocol's encoder.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::future::{block_on, poll_once};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as KTimestampType,
};
use spool_protocol::batch::{self, BatchHeader};

use crate::fs::failpoints;
use crate::{
    Backend, LogConfig, MemFs, MemOp, PartitionLog, SequenceCheck, StorageError, TimestampType,
};

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
        producer_id_expiration_ms: 86_400_000,
        compaction: Default::default(),
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
fn fill(log: &PartitionLog, n: i64, ts: i64) {
    for i in 0..n {
        log.append(plain(3, ts + 10 * i), 1, ts + 10 * i).unwrap();
        block_on(log.flush()).unwrap();
    }
}

#[test]
fn append_read_roundtrip_across_segment_rolls() {
    let fs = MemFs::new();
    let log = open(&fs, config());
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
        let log = open(
            &fs,
            LogConfig {
                tail_cache_bytes_max,
                ..config()
            },
        );
        let start = log.log_end_offset();
        fill(&log, 10, 0);
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
    let log = open(
        &fs,
        LogConfig {
            segment_bytes: 100_000,
            ..config()
        },
    );
    fill(&log, 30, 0);
    block_on(log.close()).unwrap();
    let log = open(
        &fs,
        LogConfig {
            segment_bytes: 100_000,
            ..config()
        },
    );
    // The active segment's index came back from the clean-shutdown record.
    let entries = log
        .state
        .borrow()
        .active()
        .indexes
        .borrow()
        .as_ref()
        .map(|i| i.offsets.encode().len() / 8);
    assert!(
        entries >= Some(5),
        "one entry per index.interval.bytes: {entries:?}"
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
        let log = open(&fs, config());
        fill(&log, 5, 0);
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
        let log = open(&fs, config());
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
        fill(&log, 12, 500);
        assert_eq!(read_all(&log).len() as i64 * 3, log.log_end_offset());
    }
}

#[test]
fn torn_tail_is_truncated() {
    for prefix_bytes in [0, 100, 4096, 5000] {
        let fs = MemFs::new();
        let log = open(
            &fs,
            LogConfig {
                segment_bytes: 100_000,
                ..config()
            },
        );
        fill(&log, 10, 0);
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
    let log = open(
        &fs,
        LogConfig {
            segment_bytes: 100_000,
            ..config()
        },
    );
    fill(&log, 6, 0);
    let sizes: Vec<usize> = (0..6)
        .map(|i| block_on(log.read(i * 3, 1, i64::MAX)).unwrap().batches[0].len())
        .collect();
    drop(log); // a crash: no clean-shutdown marker
    let fourth = sizes[..3].iter().sum::<usize>() + 70;
    fs.corrupt(&dir().join(format!("{:020}.log", 0)), fourth, 0x01);
    fs.crash();
    let log = open(
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
    let log = open(&fs, config());
    fill(&log, 30, 0);
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
    let log = open(&fs, config());
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
    let log = open(&fs, config());
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
        let log = open(&fs, config());
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
        let log = open(&fs, config());
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
    let log = open(&fs, config());
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

fn expiring_config(producer_id_expiration_ms: i64) -> LogConfig {
    LogConfig {
        producer_id_expiration_ms,
        ..config()
    }
}

/// The time of a producer's last append as the log holds it.
fn producer_time(log: &PartitionLog, producer_id: i64) -> Option<i64> {
    let state = log.state.borrow();
    state
        .producers
        .get(producer_id)
        .map(|entry| entry.last_timestamp_ms)
}

#[test]
fn expired_producer_is_accepted_at_any_sequence() {
    let fs = MemFs::new();
    let log = open(&fs, expiring_config(100));
    log.append(batch_of(2, 7, 0, 0, 10), 1, 10).unwrap();
    let gap = log.append(batch_of(1, 7, 0, 9, 50), 1, 50);
    assert!(matches!(
        gap,
        Err(StorageError::OutOfOrderSequence {
            expected: 2,
            got: 9,
            ..
        })
    ));
    // 100 ms after its last append the producer is forgotten, then tracked again.
    let info = log.append(batch_of(1, 7, 0, 9, 110), 1, 110).unwrap();
    assert!(!info.duplicate);
    assert_eq!(info.base_offset, 2);
    assert!(
        log.append(batch_of(1, 7, 0, 9, 120), 1, 120)
            .unwrap()
            .duplicate
    );
    // The batch from before the expiry is no longer remembered as a duplicate.
    assert!(matches!(
        log.append(batch_of(2, 7, 0, 0, 120), 1, 120),
        Err(StorageError::OutOfOrderSequence { expected: 10, .. })
    ));
    log.append(batch_of(1, 8, 0, 0, 500), 1, 500).unwrap();
    block_on(log.flush()).unwrap();
    // Retention enforcement sweeps expired producers out of memory.
    block_on(log.enforce_retention(250)).unwrap();
    assert_eq!(log.state.borrow().producers.len(), 1);
    assert_eq!(producer_time(&log, 8), Some(500));
    // The snapshot written at close leaves out those expired by then (clock: 500).
    log.append(batch_of(1, 9, 0, 0, 300), 1, 300).unwrap();
    log.append(batch_of(1, 8, 0, 1, 1_000), 1, 1_000).unwrap();
    block_on(log.close()).unwrap();
    let log = open(&fs, expiring_config(100));
    assert_eq!(log.state.borrow().producers.len(), 1);
    assert_eq!(producer_time(&log, 8), Some(1_000));
    assert!(log.append(batch_of(1, 9, 0, 44, 1_010), 1, 1_010).is_ok());
}

#[test]
fn restart_keeps_unexpired_producers() {
    for clean in [true, false] {
        let fs = MemFs::new();
        let config = expiring_config(1_000);
        let log = open(&fs, config.clone());
        // Batch timestamps: 10, 11 and 900, 901; appended at now_ms 10 and 900.
        log.append(batch_of(2, 1, 0, 0, 10), 1, 10).unwrap();
        log.append(batch_of(2, 2, 0, 0, 900), 1, 900).unwrap();
        block_on(log.flush()).unwrap();
        if clean {
            block_on(log.close()).unwrap();
        } else {
            drop(log);
            fs.crash();
        }
        let log = open(&fs, config);
        // A snapshot keeps the append times; a replay has only the batches' max timestamps.
        let expected = if clean { (10, 900) } else { (11, 901) };
        assert_eq!(
            (producer_time(&log, 1), producer_time(&log, 2)),
            (Some(expected.0), Some(expected.1)),
            "clean={clean}"
        );
        // At 1500, producer 1 has expired and producer 2 has not.
        assert!(log.append(batch_of(1, 1, 0, 50, 1_500), 1, 1_500).is_ok());
        assert!(matches!(
            log.append(batch_of(1, 2, 0, 50, 1_500), 1, 1_500),
            Err(StorageError::OutOfOrderSequence { expected: 2, .. })
        ));
        assert!(
            log.append(batch_of(2, 2, 0, 0, 900), 1, 1_500)
                .unwrap()
                .duplicate
        );
    }
}

#[test]
fn version_1_producer_snapshot_still_loads() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    log.append(batch_of(2, 4, 0, 0, 10), 1, 10).unwrap();
    block_on(log.flush()).unwrap();
    // A version 1 snapshot at the end, then a crash: recovery loads it.
    let path = crate::log::snapshot_path(&dir(), 2);
    let backend = Backend::Memory(fs.clone());
    let v1 = log.state.borrow().producers.encode_v1();
    block_on(backend.write_file_atomic(&path, &v1)).unwrap();
    drop(log);
    fs.crash();
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let log = open(&fs, config());
    // The missing timestamp is the load time, so nothing expires at once.
    assert!(producer_time(&log, 4).unwrap() >= before_ms);
    assert!(
        log.append(batch_of(2, 4, 0, 0, 10), 1, 10)
            .unwrap()
            .duplicate
    );
    // The next snapshot (a segment's seal) is written in the current format.
    fill(&log, 30, 100);
    let newest = log.snapshot_offsets().unwrap().into_iter().max().unwrap();
    assert!(newest > 2);
    let bytes = block_on(backend.read_file(&crate::log::snapshot_path(&dir(), newest)))
        .unwrap()
        .unwrap();
    assert_eq!(&bytes[..4], b"SPP3");
}

#[test]
fn failed_flush_restores_producer_timestamps() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    log.append(batch_of(1, 5, 0, 0, 10), 1, 10).unwrap();
    block_on(log.flush()).unwrap();
    log.append(batch_of(1, 5, 0, 1, 10), 1, 70).unwrap();
    log.append(batch_of(1, 6, 0, 0, 10), 1, 80).unwrap();
    assert_eq!(producer_time(&log, 5), Some(70));
    fs.set_enospc(true);
    assert!(block_on(log.flush()).is_err());
    fs.set_enospc(false);
    assert_eq!(producer_time(&log, 5), Some(10));
    assert_eq!(producer_time(&log, 6), None);
    assert_eq!(
        log.state.borrow().producers.get(5).unwrap().batches.len(),
        1
    );
}

#[test]
fn retention_by_time_and_bytes() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    fill(&log, 40, 1_000);
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
    assert!(
        segment_files(&fs, "deleted").is_empty(),
        "retired files are unlinked"
    );
    let live: Vec<_> = segment_files(&fs, "log")
        .iter()
        .map(|p| p.file_stem().map(|s| s.to_owned()))
        .collect();
    assert!(
        segment_files(&fs, "index")
            .iter()
            .all(|p| live.contains(&p.file_stem().map(|s| s.to_owned()))),
        "with their indexes"
    );
    block_on(log.close()).unwrap();
    let log = open(&fs, config());
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.end_offset_for_epoch(1), (1, log.log_end_offset()));
}

#[test]
fn recovery_finishes_a_retention_interrupted_before_its_unlinks() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    fill(&log, 40, 1_000);
    block_on(log.close()).unwrap();
    let mut logs = segment_files(&fs, "log");
    logs.sort();
    assert!(logs.len() >= 3);
    // Retention renamed the oldest segment and synced the directory, then power was lost.
    let oldest = &logs[0];
    Backend::Memory(fs.clone())
        .rename(oldest, &crate::segment::deleted_path(oldest))
        .unwrap();
    let second_base: i64 = logs[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let log = open(&fs, config());
    assert_eq!(log.log_start_offset(), second_base);
    assert!(segment_files(&fs, "deleted").is_empty());
    let indexed: Vec<PathBuf> = segment_files(&fs, "index");
    assert!(
        indexed.iter().all(|p| p.file_stem() != oldest.file_stem()),
        "the retired segment's indexes are removed too: {indexed:?}"
    );
    read_all(&log);
}

#[test]
fn truncate_suffix_across_segments() {
    for clean in [true, false] {
        let fs = MemFs::new();
        let log = open(&fs, config());
        fill(&log, 20, 0);
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
        // Epoch 2 was truncated away: above every known epoch now.
        assert_eq!(log.end_offset_for_epoch(2), (-1, -1));
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
        let log = open(&fs, config());
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
        let log = open(
            &fs,
            LogConfig {
                tail_cache_bytes_max,
                ..config()
            },
        );
        assert_eq!(log.max_timestamp(), None);
        assert_eq!(block_on(log.offset_for_timestamp(0)).unwrap(), None);
        fill(&log, 30, 1_000); // batch i: offsets 3i..3i+2, timestamps 1000+10i ..+2
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
    let log = open(&fs, config());
    assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
    for (epoch, batches) in [(2, 5), (3, 10), (5, 4)] {
        for _ in 0..batches {
            log.append(plain(2, 0), epoch, 0).unwrap();
        }
        block_on(log.flush()).unwrap();
    }
    let check = |log: &PartitionLog| {
        // Below every known epoch: the requested epoch, ending where the first one starts.
        assert_eq!(log.end_offset_for_epoch(1), (1, 0));
        assert_eq!(log.end_offset_for_epoch(2), (2, 10));
        assert_eq!(log.end_offset_for_epoch(4), (3, 30));
        assert_eq!(log.end_offset_for_epoch(5), (5, 38));
        // Above every known epoch: unknown, as Kafka answers.
        assert_eq!(log.end_offset_for_epoch(9), (-1, -1));
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
    let log = open(
        &fs,
        LogConfig {
            tail_cache_bytes_max: 1 << 20,
            ..config()
        },
    );
    fill(&log, 12, 0);
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
    let log = open(
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
    let log = open(&fs, config);
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
    let log = open(
        &fs,
        LogConfig {
            tail_cache_bytes_max: 1_000,
            ..config()
        },
    );
    fill(&log, 30, 0);
    assert!(log.state.borrow().tail.covers(log.log_end_offset() - 1));
    assert!(!log.state.borrow().tail.covers(0));
    read_all(&log);
}

#[test]
fn tail_cache_bound_can_shrink_at_run_time() {
    let fs = MemFs::new();
    let log = open(
        &fs,
        LogConfig {
            tail_cache_bytes_max: 1 << 20,
            ..config()
        },
    );
    fill(&log, 30, 0);
    assert!(
        log.state.borrow().tail.covers(0),
        "1 MiB holds all 30 batches"
    );
    // A shard with more partitions gives each a smaller share: older batches leave the cache
    // (they are durable, so reads go to the segment files and still return everything).
    log.set_tail_cache_bytes_max(1_000);
    assert!(!log.state.borrow().tail.covers(0));
    assert!(log.state.borrow().tail.covers(log.log_end_offset() - 1));
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
            let log = PartitionLog::open(dir.clone(), config(), Backend::Dma)
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
            let log = PartitionLog::open(dir.clone(), config(), Backend::Dma)
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

// ---- Concurrency: appends, reads, retention and flushes interleaved at `.await` points. ----

/// Polls `operation` until it completes; each time it parks on a held `op`, runs `meanwhile`
/// and lets that one operation through. Returns the result and how many times it parked.
fn drive<T>(
    fs: &MemFs,
    op: MemOp,
    operation: impl std::future::Future<Output = T>,
    mut meanwhile: impl FnMut(),
) -> (T, usize) {
    let mut operation = pin!(operation);
    let mut parks = 0;
    loop {
        if let Some(result) = block_on(poll_once(&mut operation)) {
            return (result, parks);
        }
        assert_eq!(
            fs.parked(op),
            1,
            "the operation must wait on the held {op:?}"
        );
        parks += 1;
        meanwhile();
        fs.step(op);
    }
}

fn first_offset_of(log: &PartitionLog, offset: i64, upper_bound: i64) -> Option<i64> {
    let result = block_on(log.read(offset, 1, upper_bound)).unwrap();
    result
        .batches
        .first()
        .map(|bytes| batch::validate(bytes).unwrap().base_offset)
}

#[test]
fn appends_and_reads_during_flush_are_not_made_durable_by_it() {
    for second_flush in [false, true] {
        let fs = MemFs::new();
        let log = open(&fs, config());
        fill(&log, 2, 0); // offsets 0..6, durable and evicted from the cache
        log.append(plain(3, 100), 1, 100).unwrap(); // 6..9: the first flush plans these
        fs.hold(MemOp::Sync);
        let mut flush = Box::pin(log.flush());
        assert!(block_on(poll_once(&mut flush)).is_none());
        assert_eq!(fs.parked(MemOp::Sync), 1);

        // While the flush awaits its fdatasync:
        let info = log.append(plain(3, 200), 1, 200).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (9, 11));
        assert_eq!(log.durable_end_offset(), 6);
        assert_eq!(first_offset_of(&log, 0, i64::MAX), Some(0)); // from disk
        assert_eq!(first_offset_of(&log, 7, i64::MAX), Some(6)); // in flight, from the cache
        assert_eq!(first_offset_of(&log, 10, i64::MAX), Some(9)); // appended during the flush
        assert_eq!(first_offset_of(&log, 9, 9), None); // the caller's high watermark
        assert_eq!(
            block_on(log.offset_for_timestamp(200))
                .unwrap()
                .map(|t| t.0),
            Some(9)
        );
        assert_eq!(read_all(&log).len(), 4);
        // A second flush waits for the running one.
        let mut second = Box::pin(log.flush());
        assert!(block_on(poll_once(&mut second)).is_none());
        assert_eq!(fs.parked(MemOp::Sync), 1);

        fs.release(MemOp::Sync);
        block_on(&mut flush).unwrap();
        assert_eq!(log.durable_end_offset(), 9, "only what the flush planned");
        assert_eq!(log.log_end_offset(), 12);
        assert_eq!(read_all(&log).len(), 4);
        let expected_end = if second_flush {
            block_on(&mut second).unwrap();
            assert_eq!(log.durable_end_offset(), 12);
            12
        } else {
            9
        };
        drop((flush, second));
        drop(log);
        fs.crash();
        let log = open(&fs, config());
        assert_eq!(log.log_end_offset(), expected_end);
        assert_eq!(log.durable_end_offset(), expected_end);
        let headers = read_all(&log);
        assert_eq!(headers.last().unwrap().last_offset() + 1, expected_end);
        assert_eq!(headers.len() as i64, expected_end / 3);
    }
}

#[test]
fn reads_and_appends_at_every_step_of_a_flush_with_rolls() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    // Enough unflushed batches to roll twice: the flush has data, seal and create work.
    for i in 0..14 {
        log.append(plain(3, 10 * i), 1, 10 * i).unwrap();
    }
    let planned_end = log.log_end_offset();
    fs.hold(MemOp::Sync);
    let mut next_ts = 1_000;
    let (result, parks) = drive(&fs, MemOp::Sync, log.flush(), || {
        // Appends keep rolling segments the flush did not plan.
        log.append(plain(3, next_ts), 2, next_ts).unwrap();
        next_ts += 10;
        assert_eq!(log.durable_end_offset(), 0);
        let headers = read_all(&log);
        assert_eq!(headers.len() as i64 * 3, log.log_end_offset());
        assert_eq!(
            block_on(log.offset_for_timestamp(0)).unwrap().map(|t| t.0),
            Some(0)
        );
    });
    result.unwrap();
    assert!(
        parks > 6,
        "data, seal, index, snapshot and epoch syncs: {parks}"
    );
    assert_eq!(log.durable_end_offset(), planned_end);
    assert!(log.log_end_offset() > planned_end);
    fs.release(MemOp::Sync);
    block_on(log.flush()).unwrap();
    let end = log.log_end_offset();
    assert_eq!(log.durable_end_offset(), end);
    let headers = read_all(&log);
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log), headers);
    assert_eq!(log.end_offset_for_epoch(1), (1, planned_end));
}

#[test]
fn failed_flush_drops_appends_made_while_it_ran() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    fill(&log, 2, 0);
    log.append(plain(3, 100), 1, 100).unwrap();
    fs.hold(MemOp::Write);
    let mut flush = Box::pin(log.flush());
    assert!(block_on(poll_once(&mut flush)).is_none());
    log.append(plain(3, 200), 7, 200).unwrap();
    fs.set_enospc(true); // the parked write fails
    fs.release(MemOp::Write);
    assert!(block_on(&mut flush).is_err());
    fs.set_enospc(false);
    assert_eq!((log.log_end_offset(), log.durable_end_offset()), (6, 6));
    // Epoch 7 went with the failed flush: it is unknown again.
    assert_eq!(log.end_offset_for_epoch(7), (-1, -1));
    assert_eq!(log.end_offset_for_epoch(1), (1, 6));
    assert_eq!(read_all(&log).len(), 2);
    log.append(plain(3, 400), 1, 400).unwrap();
    block_on(log.flush()).unwrap();
    assert_eq!(log.durable_end_offset(), 9);
    drop(flush);
    drop(log);
    fs.crash();
    assert_eq!(read_all(&open(&fs, config())).len(), 3);
}

#[test]
fn reads_during_retention_never_panic() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    fill(&log, 30, 1_000);
    let start = log.log_start_offset();
    log.update_config(LogConfig {
        retention_bytes: 3_000,
        ..config()
    });

    // A read already on the disk when retention deletes its segment finishes on the open file.
    fs.hold(MemOp::Read);
    let mut read = pin!(log.read(start, 1, i64::MAX));
    assert!(block_on(poll_once(&mut read)).is_none());
    fs.release(MemOp::Read);
    fs.hold(MemOp::Sync);
    let mut deleted = None;
    let (result, parks) = drive(&fs, MemOp::Sync, log.enforce_retention(0), || {
        // Retention has detached the old segments and waits on the epoch checkpoint.
        let new_start = log.log_start_offset();
        assert!(new_start > start);
        assert!(matches!(
            block_on(log.read(start, 1, i64::MAX)),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(first_offset_of(&log, new_start, i64::MAX), Some(new_start));
        log.append(plain(3, 5_000), 1, 5_000).unwrap();
        deleted.get_or_insert(new_start);
    });
    fs.release(MemOp::Sync);
    assert!(result.unwrap() > 0);
    assert!(parks > 0);
    let batches = block_on(&mut read).unwrap().batches;
    assert_eq!(batch::validate(&batches[0]).unwrap().base_offset, start);
    assert_eq!(deleted, Some(log.log_start_offset()));
    block_on(log.flush()).unwrap();
    assert_eq!(
        read_all(&log).len() as i64 * 3,
        log.log_end_offset() - log.log_start_offset()
    );
}

#[test]
fn truncate_suffix_with_concurrent_appends_and_reads() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    fill(&log, 20, 0); // 60 offsets over several segments
    log.append(plain(3, 500), 1, 500).unwrap(); // the truncation's flush parks on it
    fs.hold(MemOp::Sync);
    let (result, parks) = drive(&fs, MemOp::Sync, log.truncate_suffix(31), || {
        // Accepted now, discarded by the cut if it has not happened yet.
        log.append(plain(3, 9_000), 3, 9_000).unwrap();
        let end = log.log_end_offset();
        let headers = read_all(&log);
        assert_eq!(headers.last().unwrap().last_offset() + 1, end);
    });
    fs.release(MemOp::Sync);
    result.unwrap();
    assert!(parks >= 2, "appends both before and after the cut: {parks}");
    // The cut kept the batches below 30 (31 is inside 30..=32); later appends continue there.
    assert_eq!(read_all(&log).len() as i64 * 3, log.log_end_offset());
    assert!(log.log_end_offset() >= 30);
    block_on(log.flush()).unwrap();
    let (end, headers) = (log.log_end_offset(), read_all(&log));
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log), headers);
    assert!(headers[..10].iter().all(|h| h.partition_leader_epoch == 1));
}

/// On the real runtime: a flush task and the caller interleave at the flush's I/O.
#[test]
fn concurrent_flush_on_the_glommio_executor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic-0");
    let handle = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            // O_DIRECT files: the flush task yields at its write and fdatasync.
            let log = Rc::new(
                PartitionLog::open(dir.clone(), config(), Backend::Dma)
                    .await
                    .unwrap(),
            );
            fill_async(&log, 10).await;
            log.append(plain(3, 500), 1, 500).unwrap();
            let planned = log.log_end_offset();
            let flush = glommio::spawn_local({
                let log = log.clone();
                async move { log.flush().await }
            });
            futures_lite::future::yield_now().await; // the flush task plans and submits
            let info = log.append(plain(3, 600), 1, 600).unwrap();
            assert_eq!(info.base_offset, planned);
            let batches = log.read(0, 1, i64::MAX).await.unwrap().batches;
            assert_eq!(batch::validate(&batches[0]).unwrap().base_offset, 0);
            let batches = log.read(planned, 1, i64::MAX).await.unwrap().batches;
            assert_eq!(batch::validate(&batches[0]).unwrap().base_offset, planned);
            flush.await.unwrap();
            assert_eq!(log.durable_end_offset(), planned);
            log.flush().await.unwrap();
            assert_eq!(log.durable_end_offset(), planned + 3);
            assert_eq!(read_all_async(&log).await.len(), 12);

            // Memory backend, parked by hand: wakers must resume the flush and a second one
            // queued behind it on the gate.
            let fs = MemFs::new();
            let log = Rc::new(
                PartitionLog::open(dir.clone(), config(), Backend::Memory(fs.clone()))
                    .await
                    .unwrap(),
            );
            fill_async(&log, 3).await;
            log.append(plain(3, 500), 1, 500).unwrap();
            fs.hold(MemOp::Sync);
            let first = glommio::spawn_local({
                let log = log.clone();
                async move { log.flush().await }
            });
            while fs.parked(MemOp::Sync) == 0 {
                futures_lite::future::yield_now().await;
            }
            log.append(plain(3, 600), 1, 600).unwrap();
            let second = glommio::spawn_local({
                let log = log.clone();
                async move { log.flush().await }
            });
            futures_lite::future::yield_now().await;
            assert_eq!(log.durable_end_offset(), 9);
            assert_eq!(read_all_async(&log).await.len(), 5);
            fs.release(MemOp::Sync);
            first.await.unwrap();
            assert!(log.durable_end_offset() >= 12);
            second.await.unwrap();
            assert_eq!(log.durable_end_offset(), 15);
        })
        .unwrap();
    handle.join().unwrap();
}

async fn fill_async(log: &PartitionLog, n: i64) {
    for i in 0..n {
        log.append(plain(3, 10 * i), 1, 10 * i).unwrap();
        log.flush().await.unwrap();
    }
}

#[test]
fn delete_segments_below_keeps_data_at_and_after_the_offset() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    fill(&log, 40, 1_000);
    let segments = segment_files(&fs, "log").len();
    assert!(segments >= 5);
    let end = log.log_end_offset();
    let cut = end / 2;
    // Not yet durable data is never deleted: the active segment keeps it.
    log.append(plain(3, 5_000), 1, 5_000).unwrap();
    let deleted = block_on(log.delete_segments_below(cut)).unwrap();
    assert!(deleted >= 1 && deleted < segments);
    let start = log.log_start_offset();
    assert!(start > 0 && start <= cut, "start {start}, cut {cut}");
    assert_eq!(segment_files(&fs, "log").len(), segments - deleted);
    assert!(matches!(
        block_on(log.read(0, 1, i64::MAX)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let headers = read_all(&log);
    assert_eq!(headers.first().map(|h| h.base_offset), Some(start));
    assert_eq!(log.log_end_offset(), end + 3);
    // Nothing at or after `cut` is gone; deleting again below the same offset is a no-op.
    assert_eq!(block_on(log.delete_segments_below(cut)).unwrap(), 0);
    assert_eq!(block_on(log.delete_segments_below(start)).unwrap(), 0);
    // Never the active segment, even with an offset past the end.
    block_on(log.flush()).unwrap();
    block_on(log.delete_segments_below(i64::MAX)).unwrap();
    assert_eq!(segment_files(&fs, "log").len(), 1);
    let start = log.log_start_offset();
    assert!(start <= end);
    let kept = read_all(&log);
    assert_eq!(kept.last().map(|h| h.last_offset()), Some(end + 2));
    fs.crash();
    let log = open(&fs, config());
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), end + 3);
    assert_eq!(read_all(&log), kept);
    assert_eq!(log.end_offset_for_epoch(1), (1, log.log_end_offset()));
}

#[test]
fn truncate_fully_and_start_at_restarts_the_log_durably() {
    for clean in [true, false] {
        let fs = MemFs::new();
        let log = open(&fs, config());
        fill(&log, 30, 1_000);
        // An idempotent producer, so rolls leave producer snapshots behind.
        for i in 0..10 {
            log.append(batch_of(1, 7, 0, i, 2_000 + i64::from(i)), 2, 2_000)
                .unwrap();
        }
        block_on(log.flush()).unwrap();
        assert!(segment_files(&fs, "log").len() > 3);
        assert!(!segment_files(&fs, "snapshot").is_empty());
        // Not yet durable: dropped with the rest.
        log.append(plain(3, 3_000), 2, 3_000).unwrap();

        block_on(log.truncate_fully_and_start_at(1_000)).unwrap();
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (1_000, 1_000)
        );
        assert_eq!(log.durable_end_offset(), 1_000);
        assert_eq!(
            segment_files(&fs, "log"),
            vec![dir().join("00000000000000001000.log")]
        );
        assert!(segment_files(&fs, "snapshot").is_empty());
        assert!(segment_files(&fs, "deleted").is_empty());
        assert!(segment_files(&fs, "index").is_empty());
        assert!(matches!(
            block_on(log.read(999, 1, i64::MAX)),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.end_offset_for_epoch(2), (-1, -1));
        // The producer is unknown in the new log: any sequence starts it.
        let info = log.append(batch_of(1, 7, 0, 500, 4_000), 3, 4_000).unwrap();
        assert_eq!(info.base_offset, 1_000);
        log.append(plain(2, 4_001), 3, 4_001).unwrap();
        block_on(log.flush()).unwrap();
        assert_eq!(log.end_offset_for_epoch(3), (3, 1_003));
        let kept = read_all(&log);
        if clean {
            block_on(log.close()).unwrap();
        } else {
            drop(log);
            fs.crash();
        }
        let log = open(&fs, config());
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (1_000, 1_003)
        );
        assert_eq!(read_all(&log), kept);
        assert_eq!(log.end_offset_for_epoch(3), (3, 1_003));
    }
}

#[test]
fn truncate_fully_and_start_at_an_empty_log_before_any_flush_survives_a_crash() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    block_on(log.truncate_fully_and_start_at(42)).unwrap();
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (42, 42));
    assert_eq!(log.append(plain(1, 1), 1, 1).unwrap().base_offset, 42);
}

#[test]
fn side_files_are_replaced_atomically_and_bounded() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    assert_eq!(block_on(log.read_side_file("raft-state")).unwrap(), None);
    block_on(log.write_side_file("raft-state", b"first")).unwrap();
    block_on(log.write_side_file("raft-state", b"second, longer")).unwrap();
    fs.crash_torn(3);
    assert_eq!(
        block_on(log.read_side_file("raft-state"))
            .unwrap()
            .as_deref(),
        Some(&b"second, longer"[..])
    );
    // Segments and side files do not mistake each other for their own.
    fill(&log, 3, 0);
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    assert_eq!(read_all(&log).len(), 3);
    assert_eq!(
        block_on(log.read_side_file("raft-state"))
            .unwrap()
            .as_deref(),
        Some(&b"second, longer"[..])
    );
    // A size no side file has is refused before it is read.
    let big = vec![0u8; crate::SIDE_FILE_BYTES_MAX + 1];
    let backend = Backend::Memory(fs.clone());
    block_on(backend.write_file_atomic(&dir().join("huge"), &big)).unwrap();
    assert!(matches!(
        block_on(log.read_side_file("huge")),
        Err(StorageError::SideFileTooLarge { .. })
    ));
}

#[test]
#[should_panic(expected = "invalid side file name")]
fn side_file_names_cannot_be_log_files() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    let _ = block_on(log.write_side_file("00000000000000000000.log", b"x"));
}

// ---- Entry index (Raft entry index ↔ batch) ----

fn open_entries(fs: &MemFs, config: LogConfig) -> PartitionLog {
    block_on(PartitionLog::open_entry_indexed(
        dir(),
        config,
        Backend::Memory(fs.clone()),
    ))
    .unwrap()
}

/// Appends `n` entries of 1..=4 records each (so offsets and indexes diverge), flushing
/// every `flush_every`; returns each entry's (index, base offset, last offset).
fn append_entries(log: &PartitionLog, n: u64, flush_every: u64) -> Vec<(u64, i64, i64)> {
    let mut out = Vec::new();
    for i in 0..n {
        let records = 1 + (log.next_entry_index() % 4) as i64;
        let (index, info) = log
            .append_entry(plain(records, 1_000 + i as i64), 3, 1_000)
            .unwrap();
        assert_eq!(info.last_offset - info.base_offset + 1, records);
        out.push((index, info.base_offset, info.last_offset));
        if (i + 1) % flush_every == 0 {
            block_on(log.flush()).unwrap();
        }
    }
    block_on(log.flush()).unwrap();
    out
}

/// Checks every entry by index and by offset, and a full read by index.
fn check_entries(log: &PartitionLog, expected: &[(u64, i64, i64)]) {
    let (first, next) = (log.first_entry_index(), log.next_entry_index());
    let held: Vec<_> = expected
        .iter()
        .filter(|(index, _, _)| (first..next).contains(index))
        .copied()
        .collect();
    assert_eq!(held.len() as u64, next - first, "indexes contiguous");
    for &(index, base, last) in &held {
        assert_eq!(
            block_on(log.offset_of_index(index)).unwrap(),
            Some((base, last)),
            "index {index}"
        );
        for offset in [base, last] {
            assert_eq!(
                block_on(log.index_of_offset(offset)).unwrap(),
                Some(index),
                "offset {offset}"
            );
        }
    }
    assert_eq!(block_on(log.offset_of_index(next)).unwrap(), None);
    assert_eq!(
        block_on(log.index_of_offset(log.log_end_offset())).unwrap(),
        None
    );
    let mut read = Vec::new();
    let mut from = first;
    while from < next {
        let batch = block_on(log.read_entries(from, next, 700)).unwrap();
        assert!(!batch.is_empty());
        for (index, bytes) in batch {
            assert_eq!(index, from);
            let header = batch::validate(&bytes).unwrap();
            read.push((index, header.base_offset, header.last_offset()));
            from += 1;
        }
    }
    assert_eq!(read, held);
}

#[test]
fn entries_across_segments_sealed_and_tail() {
    let fs = MemFs::new();
    let log = open_entries(&fs, config());
    assert_eq!((log.first_entry_index(), log.next_entry_index()), (0, 0));
    let expected = append_entries(&log, 60, 1);
    assert!(log.segment_count() > 3);
    assert_eq!(log.next_entry_index(), 60);
    assert!(log.log_end_offset() > 100, "batches span several offsets");
    check_entries(&log, &expected);
    // Every sealed segment has a sidecar.
    assert_eq!(
        segment_files(&fs, "raftindex").len(),
        segment_files(&fs, "log").len()
    );
    // Reads are clipped to the log and bounded in bytes; one entry always comes back.
    let one = block_on(log.read_entries(5, 1_000, 1)).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].0, 5);
    assert!(block_on(log.read_entries(70, 80, 1_000))
        .unwrap()
        .is_empty());
    let last = block_on(log.read_entries(58, 1_000, 1 << 20)).unwrap();
    assert_eq!(
        last.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![58, 59]
    );
    // An entry is one batch; a producer's duplicate cannot be an entry.
    let mut two = BytesMut::from(&plain(1, 1)[..]);
    two.extend_from_slice(&plain(1, 2));
    assert!(matches!(
        log.append_entry(two.freeze(), 3, 1),
        Err(StorageError::NotOneBatch)
    ));
    log.append_entry(batch_of(1, 9, 0, 0, 1), 3, 1).unwrap();
    assert!(matches!(
        log.append_entry(batch_of(1, 9, 0, 0, 1), 3, 1),
        Err(StorageError::DuplicateEntry { .. })
    ));
    assert_eq!(log.next_entry_index(), 61);
}

#[test]
fn entries_survive_clean_restart_and_sealed_lookups_after_reopen() {
    let fs = MemFs::new();
    let log = open_entries(&fs, config());
    let expected = append_entries(&log, 40, 3);
    block_on(log.close()).unwrap();
    let log = open_entries(&fs, config());
    // Nothing in the window now: every lookup goes to sidecars and scans.
    check_entries(&log, &expected);
    let more = append_entries(&log, 10, 1);
    assert_eq!(more[0].0, 40);
    assert_eq!(more[0].1, expected[39].2 + 1);
    let all: Vec<_> = expected.iter().chain(&more).copied().collect();
    check_entries(&log, &all);
}

#[test]
fn crash_drops_unflushed_entries_and_keeps_indexes_contiguous() {
    for torn in [None, Some(100)] {
        let fs = MemFs::new();
        let log = open_entries(&fs, config());
        let durable = append_entries(&log, 25, 1);
        for i in 0..3 {
            log.append_entry(plain(2, 5_000 + i), 3, 5_000).unwrap();
        }
        drop(log);
        match torn {
            None => fs.crash(),
            Some(bytes) => fs.crash_torn(bytes),
        }
        let log = open_entries(&fs, config());
        assert_eq!(log.next_entry_index(), 25, "torn: {torn:?}");
        check_entries(&log, &durable);
        let (index, info) = log.append_entry(plain(1, 9_000), 4, 9_000).unwrap();
        assert_eq!((index, info.base_offset), (25, durable[24].2 + 1));
    }
}

#[test]
fn truncate_entries_in_sealed_and_active_segments_then_append() {
    let fs = MemFs::new();
    let log = open_entries(&fs, config());
    let expected = append_entries(&log, 50, 1);
    let first_sealed_end = {
        // An index in the middle of the second segment (sealed).
        let second_base = segment_files(&fs, "log")[1].clone();
        let base: i64 = second_base
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        block_on(log.index_of_offset(base)).unwrap().unwrap()
    };
    for keep in [48, first_sealed_end + 2] {
        block_on(log.truncate_entries_after(Some(keep))).unwrap();
        assert_eq!(log.next_entry_index(), keep + 1);
        assert_eq!(log.log_end_offset(), expected[keep as usize].2 + 1);
        check_entries(&log, &expected[..=keep as usize]);
    }
    // New entries continue from the cut, also after a crash and a clean restart.
    let keep = first_sealed_end + 2;
    let (index, info) = log.append_entry(plain(2, 7_000), 5, 7_000).unwrap();
    assert_eq!(
        (index, info.base_offset),
        (keep + 1, expected[keep as usize].2 + 1)
    );
    block_on(log.flush()).unwrap();
    let mut now: Vec<_> = expected[..=keep as usize].to_vec();
    now.push((index, info.base_offset, info.last_offset));
    drop(log);
    fs.crash();
    let log = open_entries(&fs, config());
    check_entries(&log, &now);
    block_on(log.truncate_entries_after(None)).unwrap();
    assert_eq!((log.first_entry_index(), log.next_entry_index()), (0, 0));
    assert_eq!(log.log_end_offset(), 0);
    block_on(log.close()).unwrap();
    let log = open_entries(&fs, config());
    assert_eq!(log.next_entry_index(), 0);
    assert_eq!(log.append_entry(plain(1, 1), 6, 1).unwrap().0, 0);
}

#[test]
fn purge_and_restart_at_an_entry() {
    let fs = MemFs::new();
    let log = open_entries(&fs, config());
    let expected = append_entries(&log, 50, 1);
    let deleted = block_on(log.purge_entries_through(20)).unwrap();
    assert!(deleted > 0);
    let first = log.first_entry_index();
    assert!(first > 0 && first <= 21, "first {first}");
    assert_eq!(
        block_on(log.offset_of_index(first)).unwrap().map(|o| o.0),
        Some(log.log_start_offset())
    );
    check_entries(&log, &expected);
    assert_eq!(block_on(log.offset_of_index(first - 1)).unwrap(), None);
    block_on(log.close()).unwrap();
    let log = open_entries(&fs, config());
    assert_eq!(log.first_entry_index(), first);
    check_entries(&log, &expected);

    block_on(log.truncate_fully_and_start_at_entry(1_000, 5_000)).unwrap();
    assert_eq!(
        (log.first_entry_index(), log.next_entry_index()),
        (1_000, 1_000)
    );
    assert_eq!(segment_files(&fs, "raftindex").len(), 1);
    let (index, info) = log.append_entry(plain(3, 1), 7, 1).unwrap();
    assert_eq!((index, info.base_offset), (1_000, 5_000));
    block_on(log.flush()).unwrap();
    drop(log);
    fs.crash();
    let log = open_entries(&fs, config());
    assert_eq!(
        (log.first_entry_index(), log.next_entry_index()),
        (1_000, 1_001)
    );
    assert_eq!(block_on(log.index_of_offset(5_002)).unwrap(), Some(1_000));
    // The offset-only restart keeps numbering where it was.
    block_on(log.truncate_fully_and_start_at(9_000)).unwrap();
    assert_eq!(log.next_entry_index(), 1_001);
    drop(log);
    fs.crash();
    let log = open_entries(&fs, config());
    assert_eq!(
        (log.first_entry_index(), log.log_start_offset()),
        (1_001, 9_000)
    );
}

fn raftindex_of(fs: &MemFs, k: usize) -> PathBuf {
    segment_files(fs, "raftindex")[k].clone()
}

#[test]
fn deleted_or_damaged_sealed_sidecar_is_rebuilt() {
    for damage in ["delete", "header", "entries"] {
        let fs = MemFs::new();
        let log = open_entries(&fs, config());
        let expected = append_entries(&log, 40, 1);
        block_on(log.close()).unwrap();
        let path = raftindex_of(&fs, 1);
        let original = fs.read(&path).unwrap();
        match damage {
            "delete" => fs.remove(&path),
            "header" => fs.corrupt(&path, 9, 0xff),
            _ => fs.corrupt(&path, original.len() - 6, 0xff),
        }
        let log = open_entries(&fs, config());
        check_entries(&log, &expected);
        assert_eq!(
            fs.read(&path).unwrap(),
            original,
            "{damage}: rebuilt identically"
        );
    }
}

#[test]
fn first_sidecar_lost_is_anchored_on_the_next_one() {
    let fs = MemFs::new();
    let log = open_entries(&fs, config());
    let expected = append_entries(&log, 40, 1);
    block_on(log.purge_entries_through(10)).unwrap();
    let first = log.first_entry_index();
    block_on(log.close()).unwrap();
    fs.remove(&raftindex_of(&fs, 0));
    let log = open_entries(&fs, config());
    assert_eq!(log.first_entry_index(), first);
    check_entries(&log, &expected);
    block_on(log.close()).unwrap();
    // Both the first and the second lost, with other sidecars present: a clear error.
    fs.corrupt(&raftindex_of(&fs, 0), 2, 0xff);
    fs.corrupt(&raftindex_of(&fs, 1), 2, 0xff);
    let result = block_on(PartitionLog::open_entry_indexed(
        dir(),
        config(),
        Backend::Memory(fs.clone()),
    ));
    assert!(matches!(
        result,
        Err(StorageError::CorruptEntryIndex { .. })
    ));
}

#[test]
fn sidecar_that_does_not_continue_its_predecessor_is_an_error() {
    let fs = MemFs::new();
    let log = open_entries(&fs, config());
    append_entries(&log, 40, 1);
    block_on(log.close()).unwrap();
    // A CRC-valid sidecar for segment 2 claiming another first index.
    let path = raftindex_of(&fs, 2);
    let mut bytes = fs.read(&path).unwrap();
    bytes[15] ^= 1;
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_be_bytes());
    fs.overwrite(&path, &bytes);
    match block_on(PartitionLog::open_entry_indexed(
        dir(),
        config(),
        Backend::Memory(fs.clone()),
    )) {
        Err(StorageError::CorruptEntryIndex { path: at, reason }) => {
            assert_eq!(at, path);
            assert!(reason.contains("continue"), "{reason}");
        }
        other => panic!("expected a corrupt entry index, got {:?}", other.err()),
    }
}

#[test]
fn hostile_sidecar_bytes_never_panic() {
    let fs = MemFs::new();
    let log = open_entries(&fs, config());
    let expected = append_entries(&log, 40, 1);
    block_on(log.close()).unwrap();
    let path = raftindex_of(&fs, 1);
    let original = fs.read(&path).unwrap();
    let variants: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 7],
        vec![0; 32],
        original[..original.len() - 1].to_vec(),
        [original.clone(), vec![0; 9]].concat(),
        vec![0xab; 4096],
    ];
    for bytes in variants {
        fs.overwrite(&path, &bytes);
        let log = open_entries(&fs, config());
        check_entries(&log, &expected);
        block_on(log.close()).unwrap();
    }
}

#[test]
fn log_without_entry_index_writes_no_sidecar_and_upgrades_from_zero() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    fill(&log, 30, 0);
    let headers = read_all(&log);
    block_on(log.truncate_fully_and_start_at(headers[5].base_offset)).unwrap();
    fill(&log, 30, 0);
    let headers = read_all(&log);
    block_on(log.close()).unwrap();
    assert!(segment_files(&fs, "raftindex").is_empty());
    // The first entry-indexed open numbers the existing batches from 0.
    let log = open_entries(&fs, config());
    assert_eq!(log.next_entry_index(), headers.len() as u64);
    let expected: Vec<_> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| (i as u64, h.base_offset, h.last_offset()))
        .collect();
    check_entries(&log, &expected);
    assert_eq!(
        segment_files(&fs, "raftindex").len(),
        segment_files(&fs, "log").len() - 1,
        "sealed sidecars rebuilt at open; the active one is written at close"
    );
}

#[test]
fn entries_on_dma_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("topic-0");
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let log = PartitionLog::open_entry_indexed(path.clone(), config(), Backend::Dma)
                .await
                .unwrap();
            let mut expected = Vec::new();
            for i in 0..30 {
                let (index, info) = log.append_entry(plain(2, i), 1, i).unwrap();
                expected.push((index, info.base_offset));
                log.flush().await.unwrap();
            }
            log.close().await.unwrap();
            let log = PartitionLog::open_entry_indexed(path, config(), Backend::Dma)
                .await
                .unwrap();
            assert_eq!(log.next_entry_index(), 30);
            for (index, base) in expected {
                assert_eq!(
                    log.offset_of_index(index).await.unwrap().map(|o| o.0),
                    Some(base)
                );
            }
            let read = log.read_entries(0, 30, 1 << 20).await.unwrap();
            assert_eq!(read.len(), 30);
        })
        .unwrap()
        .join()
        .unwrap();
}

// ---- Raft snapshots: retention point, producer state at an offset, restart from one ----

#[test]
fn a_snapshot_at_the_retention_point_restarts_a_follower_with_the_producer_state() {
    let fs = MemFs::new();
    let mut cfg = config();
    cfg.retention_bytes = 4_000;
    let log = open_entries(&fs, cfg.clone());
    let now = wall_clock_ms_for_tests();
    // Producer 9 writes one batch per entry; every batch is ~250 bytes, segments 2,000.
    for seq in 0..60 {
        log.append_entry(batch_of(2, 9, 0, seq * 2, now), 3, now)
            .unwrap();
        block_on(log.flush()).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 4, "{segments} segments");
    // Nothing is deleted: the point is computed, only below the limit.
    assert_eq!(log.retention_point(now, 0), None);
    let keep_from = log
        .retention_point(now, log.log_end_offset())
        .expect("over retention");
    assert!(keep_from > 0);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.log_start_offset(), 0);
    let first_kept = block_on(log.index_of_offset(keep_from)).unwrap().unwrap();
    assert_eq!(
        block_on(log.offset_of_index(first_kept))
            .unwrap()
            .unwrap()
            .0,
        keep_from,
        "the point is a segment boundary"
    );

    let producers = block_on(log.producer_state_at(keep_from, None)).unwrap();
    assert!(crate::producer_snapshot_is_valid(&producers));
    let epochs = log.epochs_at(keep_from);
    assert_eq!(epochs, vec![(3, keep_from)]);
    // The same state from a base kept by the caller (here: the empty state at 0).
    let empty = crate::producer::ProducerState::default().encode();
    assert_eq!(
        block_on(log.producer_state_at(keep_from, Some((0, &empty)))).unwrap(),
        producers
    );

    // A follower with an unrelated log restarts at the snapshot.
    let follower_fs = MemFs::new();
    let follower = open_entries(&follower_fs, cfg.clone());
    follower.append_entry(plain(3, now), 1, now).unwrap();
    block_on(follower.flush()).unwrap();
    block_on(follower.restart_from_snapshot(first_kept, keep_from, &producers, &epochs)).unwrap();
    assert_eq!(follower.log_start_offset(), keep_from);
    assert_eq!(follower.log_end_offset(), keep_from);
    assert_eq!(follower.first_entry_index(), first_kept);
    assert_eq!(follower.next_entry_index(), first_kept);
    // The producer's batches below the snapshot are still known: the last one before it is
    // a duplicate, the one after it continues the sequence, a gap is refused.
    let below = block_on(log.offset_of_index(first_kept - 1))
        .unwrap()
        .unwrap();
    let dup = batch_of(2, 9, 0, ((first_kept - 1) * 2) as i32, now);
    assert!(matches!(
        follower.check_producer(&dup, now).unwrap(),
        SequenceCheck::Duplicate { base_offset, .. } if base_offset == below.0
    ));
    let next = batch_of(2, 9, 0, (first_kept * 2) as i32, now);
    assert_eq!(
        follower.check_producer(&next, now).unwrap(),
        SequenceCheck::Append
    );
    let gap = batch_of(2, 9, 0, (first_kept * 2 + 6) as i32, now);
    assert!(follower.check_producer(&gap, now).is_err());

    // After a crash the restarted log comes back with the state (the producer snapshot file
    // written at the restart offset).
    drop(follower);
    follower_fs.crash();
    let reopened = open_entries(&follower_fs, cfg);
    assert_eq!(reopened.log_start_offset(), keep_from);
    assert!(matches!(
        reopened.check_producer(&dup, now).unwrap(),
        SequenceCheck::Duplicate { .. }
    ));

    // Bad producer bytes or decreasing epochs change nothing.
    let before = (log.log_start_offset(), log.log_end_offset());
    assert!(matches!(
        block_on(log.restart_from_snapshot(1, 5, b"garbage", &[])),
        Err(StorageError::CorruptSnapshot { .. })
    ));
    assert!(matches!(
        block_on(log.restart_from_snapshot(1, 5, &producers, &[(4, 1), (3, 2)])),
        Err(StorageError::CorruptSnapshot { .. })
    ));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), before);
}

fn wall_clock_ms_for_tests() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn size_bytes_counts_segment_data_through_roll_retention_and_reopen() {
    let fs = MemFs::new();
    let log = open(
        &fs,
        LogConfig {
            retention_bytes: 4_000,
            ..config()
        },
    );
    assert_eq!(log.size_bytes(), 0);
    let batch_bytes = plain(3, 0).len() as u64;
    // Counted before any flush: Kafka's size includes what is only in the page cache.
    log.append(plain(3, 1_000), 1, 1_000).unwrap();
    assert_eq!(log.size_bytes(), batch_bytes);
    for i in 1..40 {
        log.append(plain(3, 1_000 + i), 1, 1_000 + i).unwrap();
    }
    block_on(log.flush()).unwrap();
    assert!(log.segment_count() > 3);
    assert_eq!(log.size_bytes(), 40 * batch_bytes);
    let deleted = block_on(log.enforce_retention(2_000)).unwrap();
    assert!(deleted > 0);
    let kept = (log.log_end_offset() - log.log_start_offset()) as u64 / 3;
    assert_eq!(log.size_bytes(), kept * batch_bytes);
    assert!(log.size_bytes() >= 4_000 && log.size_bytes() < 40 * batch_bytes);
    let before = log.size_bytes();
    block_on(log.close()).unwrap();
    let log = open(&fs, config());
    assert_eq!(log.size_bytes(), before);
}

/// A transactional batch of `count` records from `producer_id`.
fn txn_batch(count: i64, producer_id: i64, epoch: i16, base_seq: i32, ts: i64) -> Bytes {
    let mut bytes = BytesMut::from(&batch_of(count, producer_id, epoch, base_seq, ts)[..]);
    // Attributes (bit 4: transactional), then the CRC over everything after it.
    let attributes = i16::from_be_bytes([bytes[21], bytes[22]]) | 0x10;
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes.freeze()
}

fn marker(producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> Bytes {
    spool_protocol::control::encode_txn_marker(
        producer_id,
        epoch,
        spool_protocol::control::TxnMarker {
            commit,
            coordinator_epoch,
        },
        10,
    )
}

#[test]
fn transactions_hold_the_lso_and_aborts_are_listed() {
    for clean in [true, false] {
        let fs = MemFs::new();
        let log = open(&fs, config());
        // 0..2: plain; 2..5: producer 1's transaction; 5..7: producer 2's; 7: plain.
        log.append(plain(2, 10), 1, 10).unwrap();
        log.append(txn_batch(3, 1, 0, 0, 10), 1, 10).unwrap();
        log.append(txn_batch(2, 2, 0, 0, 10), 1, 10).unwrap();
        log.append(plain(1, 10), 1, 10).unwrap();
        block_on(log.flush()).unwrap();
        assert_eq!(log.last_stable_offset(8), 2);
        assert_eq!(log.last_stable_offset(1), 1, "capped by the high watermark");
        // Producer 1 aborts (marker at 8): the LSO moves to producer 2's first offset once
        // the high watermark passes the marker, not before.
        let abort = log.append(marker(1, 0, false, 3), 1, 10).unwrap();
        assert_eq!(abort.base_offset, 8);
        assert_eq!(log.last_stable_offset(8), 2);
        assert_eq!(log.last_stable_offset(9), 5);
        let aborted = block_on(log.aborted_txns(0, 9)).unwrap();
        assert_eq!(aborted.len(), 1);
        assert_eq!(
            (
                aborted[0].producer_id,
                aborted[0].first_offset,
                aborted[0].last_offset
            ),
            (1, 2, 8)
        );
        assert_eq!(aborted[0].last_stable_offset, 5, "producer 2 still open");
        assert!(block_on(log.aborted_txns(9, 20)).unwrap().is_empty());
        // A zombie marker (older coordinator epoch or producer epoch) is refused.
        assert!(matches!(
            log.append(marker(1, 0, true, 2), 1, 10),
            Err(StorageError::TransactionCoordinatorFenced { .. })
        ));
        // Producer 2 commits; then producer 1 starts again and stays open.
        log.append(marker(2, 0, true, 3), 1, 10).unwrap();
        log.append(txn_batch(1, 1, 0, 3, 10), 1, 10).unwrap();
        block_on(log.flush()).unwrap();
        assert_eq!(log.last_stable_offset(11), 10);
        assert!(matches!(
            log.append(txn_batch(1, 1, 0, 3, 10), 1, 10),
            Ok(info) if info.duplicate
        ));
        if clean {
            block_on(log.close()).unwrap();
        } else {
            drop(log);
            fs.crash();
        }
        let log = open(&fs, config());
        assert_eq!(log.last_stable_offset(11), 10, "clean={clean}");
        assert_eq!(
            block_on(log.aborted_txns(0, 11)).unwrap(),
            aborted,
            "clean={clean}"
        );
        // The transaction open across the restart ends with its marker.
        log.append(marker(1, 0, false, 3), 1, 10).unwrap();
        block_on(log.flush()).unwrap();
        assert_eq!(log.last_stable_offset(12), 12);
        let all = block_on(log.aborted_txns(0, 12)).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!((all[1].first_offset, all[1].last_offset), (10, 11));
        // A failed flush takes an appended marker back with its abort.
        log.append(txn_batch(1, 2, 0, 2, 10), 1, 10).unwrap();
        block_on(log.flush()).unwrap();
        log.append(marker(2, 0, false, 3), 1, 10).unwrap();
        assert_eq!(block_on(log.aborted_txns(0, 20)).unwrap().len(), 3);
        fs.set_enospc(true);
        assert!(block_on(log.flush()).is_err());
        fs.set_enospc(false);
        assert_eq!(block_on(log.aborted_txns(0, 20)).unwrap().len(), 2);
        assert_eq!(log.last_stable_offset(14), 12, "producer 2 is open again");
    }
}

fn txn_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    crate::txn_index::txn_index_path(dir, base_offset)
}

/// `(first offset, marker offset)` of each listed abort.
fn abort_spans(aborted: &[crate::AbortedTxn]) -> Vec<(i64, i64)> {
    aborted
        .iter()
        .map(|a| (a.first_offset, a.last_offset))
        .collect()
}

/// Producer 1 runs `count` transactions of 3 records from sequence `3 * from`, aborting the
/// even ones, one flush each; returns the aborts' spans.
fn alternate_aborts(log: &PartitionLog, from: i32, count: i32) -> Vec<(i64, i64)> {
    let mut aborts = Vec::new();
    for i in from..from + count {
        let first = log
            .append(txn_batch(3, 1, 0, 3 * i, 10), 1, 10)
            .unwrap()
            .base_offset;
        let abort = i % 2 == 0;
        let end = log.append(marker(1, 0, !abort, 3), 1, 10).unwrap();
        if abort {
            aborts.push((first, end.base_offset));
        }
        block_on(log.flush()).unwrap();
    }
    aborts
}

/// Each sealed segment has a `.txnindex` exactly when it holds an abort, and memory lists
/// only the active segment's aborts.
fn assert_txn_indexes(fs: &MemFs, log: &PartitionLog, aborts: &[(i64, i64)]) {
    let state = log.state.borrow();
    let active = state.active().base_offset;
    assert!(
        state.producers.aborted_in(i64::MIN, active).is_empty(),
        "a sealed segment's abort is still in memory"
    );
    for s in &state.segments[..state.segments.len() - 1] {
        let holds = aborts
            .iter()
            .any(|&(_, m)| (s.base_offset..s.next_offset).contains(&m));
        assert_eq!(s.txn_index, holds, "segment {}", s.base_offset);
        let file = fs.read(&txn_index_path(&dir(), s.base_offset));
        assert_eq!(file.is_some(), holds, "segment {}", s.base_offset);
    }
    assert!(fs.read(&txn_index_path(&dir(), active)).is_none());
}

/// `assert_txn_indexes`, and the whole log's listing is `aborts`.
fn assert_listed(fs: &MemFs, log: &PartitionLog, aborts: &[(i64, i64)]) {
    assert_txn_indexes(fs, log, aborts);
    let listed = block_on(log.aborted_txns(0, i64::MAX)).unwrap();
    assert_eq!(abort_spans(&listed), aborts);
}

#[test]
fn aborts_of_sealed_segments_are_read_from_their_txnindex() {
    for clean in [true, false] {
        let fs = MemFs::new();
        let log = open(&fs, config());
        let aborts = alternate_aborts(&log, 0, 16);
        assert!(log.state.borrow().segments.len() >= 3);
        assert_txn_indexes(&fs, &log, &aborts);
        let all = block_on(log.aborted_txns(0, i64::MAX)).unwrap();
        assert_eq!(abort_spans(&all), aborts);
        assert!(
            all.iter()
                .all(|a| a.last_stable_offset == a.last_offset + 1),
            "nothing else was open: the LSO is past each marker"
        );
        // A file's entries are 34 bytes each, as Kafka's.
        let first_file = fs.read(&txn_index_path(&dir(), 0)).unwrap();
        let in_first = aborts
            .iter()
            .filter(|&&(_, m)| m < log.state.borrow().segments[1].base_offset)
            .count();
        assert_eq!(first_file.len(), 34 * in_first);
        // A fetch from one marker up to just past it gets that abort only; one below the
        // second abort's start gets the first only.
        let (_, m) = aborts[2];
        let got = block_on(log.aborted_txns(m, m + 1)).unwrap();
        assert_eq!(abort_spans(&got), vec![aborts[2]]);
        let got = block_on(log.aborted_txns(0, aborts[1].0)).unwrap();
        assert_eq!(abort_spans(&got), vec![aborts[0]]);
        if clean {
            block_on(log.close()).unwrap();
        } else {
            drop(log);
            fs.crash();
        }
        let log = open(&fs, config());
        assert_txn_indexes(&fs, &log, &aborts);
        let after = block_on(log.aborted_txns(0, i64::MAX)).unwrap();
        assert_eq!(after, all, "clean={clean}");
        // More aborts across the restart keep to the same rules.
        let mut aborts = aborts;
        aborts.extend(alternate_aborts(&log, 16, 12));
        assert_listed(&fs, &log, &aborts);
    }
}

#[test]
fn truncation_into_a_sealed_segment_lists_its_aborts_in_memory_again() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    let aborts = alternate_aborts(&log, 0, 16);
    let (base, next) = {
        let state = log.state.borrow();
        (state.segments[1].base_offset, state.segments[1].next_offset)
    };
    let inside: Vec<_> = aborts
        .iter()
        .filter(|&&(_, m)| (base..next).contains(&m))
        .collect();
    assert!(inside.len() >= 2, "{inside:?}");
    // Cut at the second abort's marker in segment 1: its first abort stays, the rest go.
    let cut = inside[1].1;
    block_on(log.truncate_suffix(cut)).unwrap();
    let kept: Vec<_> = aborts.iter().copied().filter(|&(_, m)| m < cut).collect();
    assert_eq!(log.state.borrow().active().base_offset, base);
    assert!(fs.read(&txn_index_path(&dir(), base)).is_none());
    assert_txn_indexes(&fs, &log, &kept);
    let listed = block_on(log.aborted_txns(0, i64::MAX)).unwrap();
    assert_eq!(abort_spans(&listed), kept);
    // The transaction the cut reopened aborts now; more transactions roll the segment again,
    // and its new `.txnindex` holds its aborts from before and after the cut.
    let reopened = inside[1].0;
    let end = log.append(marker(1, 0, false, 3), 1, 10).unwrap();
    block_on(log.flush()).unwrap();
    let mut aborts = kept;
    aborts.push((reopened, end.base_offset));
    // Transaction i holds offsets 4i..=4i+3 (its marker last); producer 1 wrote batches of
    // transactions 0..=j, j = (cut - 3) / 4, so its next sequence is 3 × (j + 1).
    let written = i32::try_from((cut - 3) / 4 + 1).unwrap();
    aborts.extend(alternate_aborts(&log, written, 12));
    assert!(log.state.borrow().active().base_offset > base);
    assert_listed(&fs, &log, &aborts);
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    assert_listed(&fs, &log, &aborts);
}

#[test]
fn a_failure_at_each_point_of_a_rolling_flush_keeps_the_aborts_listed() {
    for point in failpoints::ALL
        .into_iter()
        .filter(|&p| p != failpoints::CLOSE_BEFORE_MARKER)
    {
        let fs = MemFs::new();
        let log = open(&fs, config());
        let mut all = alternate_aborts(&log, 0, 5);
        // Unflushed transactions that roll the segment; the flush fails at `point` (and the
        // power goes there).
        fs.arm(point);
        for i in 5..13 {
            let first = log.append(txn_batch(3, 1, 0, 3 * i, 10), 1, 10).unwrap();
            let end = log.append(marker(1, 0, i % 2 == 1, 3), 1, 10).unwrap();
            if i % 2 == 0 {
                all.push((first.base_offset, end.base_offset));
            }
        }
        assert!(log.state.borrow().segments.len() >= 3, "{point}");
        assert!(block_on(log.flush()).is_err(), "{point}");
        // What stayed is listed: data made durable before the failing step stays (its acks
        // fail), the rest is dropped.
        let below = |end: i64| -> Vec<(i64, i64)> {
            all.iter().copied().filter(|&(_, m)| m < end).collect()
        };
        let listed = block_on(log.aborted_txns(0, i64::MAX)).unwrap();
        assert_eq!(abort_spans(&listed), below(log.log_end_offset()), "{point}");
        drop(log);
        fs.crash();
        // Synced data may outlive the failed flush (never acknowledged, as Kafka).
        let log = open(&fs, config());
        let mut end = log.log_end_offset();
        let mut aborts = below(end);
        assert_listed(&fs, &log, &aborts);
        // Transaction i holds offsets 4i..=4i+3; one cut before its marker is aborted now.
        if end % 4 == 3 {
            let m = log.append(marker(1, 0, false, 3), 1, 10).unwrap();
            aborts.push((end - 3, m.base_offset));
            end += 1;
        }
        aborts.extend(alternate_aborts(&log, i32::try_from(end / 4).unwrap(), 12));
        assert_txn_indexes(&fs, &log, &aborts);
        drop(log);
        fs.crash();
        let log = open(&fs, config());
        assert_listed(&fs, &log, &aborts);
    }
}

#[test]
fn a_failed_flush_after_truncating_to_a_segment_boundary_keeps_the_aborts_before_it() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    let mut aborts = alternate_aborts(&log, 0, 16);
    // A segment that starts with a transaction's first batch (offset 4i).
    let boundary = {
        let state = log.state.borrow();
        let bases: Vec<i64> = state.segments.iter().map(|s| s.base_offset).collect();
        bases[2..bases.len() - 1]
            .iter()
            .copied()
            .find(|b| b % 4 == 0)
            .expect("a segment starting with a transaction")
    };
    block_on(log.truncate_suffix(boundary)).unwrap();
    aborts.retain(|&(_, m)| m < boundary);
    // The cut at a segment's first batch leaves that segment empty and active; a failed flush
    // of the next appends must not make the sealed segment before it active again.
    let first = log
        .append(txn_batch(3, 1, 0, 3 * (boundary / 4) as i32, 10), 1, 10)
        .unwrap();
    assert_eq!(first.base_offset, boundary);
    fs.set_enospc(true);
    assert!(block_on(log.flush()).is_err());
    fs.set_enospc(false);
    assert_eq!(
        abort_spans(&block_on(log.aborted_txns(0, i64::MAX)).unwrap()),
        aborts
    );
    aborts.extend(alternate_aborts(
        &log,
        i32::try_from(boundary / 4).unwrap(),
        12,
    ));
    assert_txn_indexes(&fs, &log, &aborts);
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    assert_listed(&fs, &log, &aborts);
}

#[test]
fn txnindex_goes_with_its_segment_and_damage_is_an_error() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    let aborts = alternate_aborts(&log, 0, 16);
    let bases: Vec<i64> = log
        .state
        .borrow()
        .segments
        .iter()
        .map(|s| s.base_offset)
        .collect();
    // Segments deleted below the third segment's base take their files along.
    assert_eq!(block_on(log.delete_segments_below(bases[2])).unwrap(), 2);
    for base in &bases[..2] {
        assert!(fs.read(&txn_index_path(&dir(), *base)).is_none());
    }
    let left: Vec<_> = aborts
        .iter()
        .copied()
        .filter(|&(_, m)| m >= bases[2])
        .collect();
    assert_eq!(
        abort_spans(&block_on(log.aborted_txns(bases[2], i64::MAX)).unwrap()),
        left
    );
    // The last sealed segment's file lost in a crash comes back from the producer snapshot at
    // its end, which still lists its aborts.
    let last_sealed = {
        let state = log.state.borrow();
        state.segments[state.segments.len() - 2].base_offset
    };
    assert!(left.iter().any(|&(_, m)| m >= last_sealed));
    drop(log);
    fs.remove(&txn_index_path(&dir(), last_sealed));
    fs.crash();
    let log = open(&fs, config());
    assert!(fs.read(&txn_index_path(&dir(), last_sealed)).is_some());
    assert_txn_indexes(&fs, &log, &left);
    assert_eq!(
        abort_spans(&block_on(log.aborted_txns(bases[2], i64::MAX)).unwrap()),
        left
    );
    // A damaged file is a storage error for the reader, not a panic and not a silent gap.
    fs.corrupt(&txn_index_path(&dir(), last_sealed), 1, 0x01);
    assert!(matches!(
        block_on(log.aborted_txns(bases[2], i64::MAX)),
        Err(StorageError::CorruptTxnIndex { .. })
    ));
    fs.overwrite(&txn_index_path(&dir(), last_sealed), &[0; 33]);
    assert!(matches!(
        block_on(log.aborted_txns(bases[2], i64::MAX)),
        Err(StorageError::CorruptTxnIndex { .. })
    ));
}

#[test]
fn delete_records_moves_the_start_durably_and_retention_frees_whole_segments() {
    let fs = MemFs::new();
    let log = open(&fs, config());
    fill(&log, 40, 10); // 3-record batches over several 2,000-byte segments
    let segments = log.segment_count();
    assert!(segments > 3);
    assert!(matches!(
        block_on(log.advance_start(log.log_end_offset() + 1)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(block_on(log.advance_start(50)).unwrap(), 50);
    assert_eq!(log.visible_start_offset(), 50);
    // Never back.
    assert_eq!(block_on(log.advance_start(20)).unwrap(), 50);
    // Only segments wholly below 50 go (retention itself is off in `config`).
    block_on(log.enforce_retention(i64::MAX / 4)).unwrap();
    assert!(log.segment_count() < segments);
    assert!(log.log_start_offset() <= 50);
    assert_eq!(log.visible_start_offset(), 50);
    block_on(log.close()).unwrap();
    let log = open(&fs, config());
    assert_eq!(log.visible_start_offset(), 50, "after a clean restart");
    drop(log);
    fs.crash();
    let log = open(&fs, config());
    assert_eq!(log.visible_start_offset(), 50, "after a crash");
    block_on(log.close()).unwrap();
    // A log restarted at an offset starts there.
    let log = open(&fs, config());
    block_on(log.truncate_fully_and_start_at(30)).unwrap();
    assert_eq!(log.visible_start_offset(), 30);
    block_on(log.close()).unwrap();
    assert_eq!(open(&fs, config()).visible_start_offset(), 30);
}

// ---- compaction (cleaner.rs) ----------------------------------------------------------------

fn compacting(delete_retention_ms: i64) -> LogConfig {
    LogConfig {
        segment_bytes: 1_000,
        compaction: crate::Compaction {
            compact: true,
            delete: false,
            min_cleanable_dirty_ratio: 0.0,
            delete_retention_ms,
            ..Default::default()
        },
        ..config()
    }
}

/// One record batch of `(key, value)` records (None value: a tombstone).
fn keyed(records: &[(&str, Option<String>)], producer_id: i64, ts: i64) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            timestamp_type: KTimestampType::Creation,
            offset: i as i64,
            sequence: if producer_id >= 0 { i as i32 } else { -1 },
            timestamp: ts + i as i64,
            key: Some(Bytes::from(key.to_string())),
            value: value.clone().map(Bytes::from),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::Lz4,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

/// Every record the log serves, `(offset, key, value, timestamp)`, reading over gaps.
fn records_of(log: &PartitionLog) -> Vec<(i64, String, Option<String>, i64)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let result = block_on(log.read(offset, 1 << 20, i64::MAX)).unwrap();
        assert!(!result.batches.is_empty(), "nothing served at {offset}");
        for bytes in &result.batches {
            let header = batch::validate_stored(bytes).unwrap();
            assert!(header.last_offset() >= offset, "batches go forward");
            offset = header.last_offset() + 1;
            if header.is_control() {
                continue;
            }
            let mut buf = bytes.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
            for r in set.records {
                out.push((
                    r.offset,
                    String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                    r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    r.timestamp,
                ));
            }
        }
    }
    out
}

/// Appends 300 single-record batches over keys k0..k9 (value `v<offset>`, timestamp 1000 +
/// offset); offset 253 is k3's tombstone and k3 never comes back.
fn fill_keyed(log: &PartitionLog) {
    for i in 0..300i64 {
        let key = format!("k{}", i % 10);
        let value = (i != 253).then(|| format!("v{i}"));
        if i > 253 && i % 10 == 3 {
            // k3 stays deleted: later k3 slots write k3x instead.
            log.append(
                keyed(&[("k3x", Some(format!("v{i}")))], -1, 1_000 + i),
                1,
                1_000 + i,
            )
            .unwrap();
        } else {
            log.append(keyed(&[(&key, value)], -1, 1_000 + i), 1, 1_000 + i)
                .unwrap();
        }
        if i % 7 == 0 {
            block_on(log.flush()).unwrap();
        }
    }
    block_on(log.flush()).unwrap();
}

/// Checks the compaction rule below `cleaned_to`: each key's last record below it is there, as
/// written (offset, value, timestamp), and no earlier one; everything at or above it is intact.
fn assert_compacted(
    records: &[(i64, String, Option<String>, i64)],
    cleaned_to: i64,
    tombstones_gone: bool,
) {
    let written = |offset: i64| -> (String, Option<String>) {
        if offset > 253 && offset % 10 == 3 {
            ("k3x".into(), Some(format!("v{offset}")))
        } else if offset == 253 {
            ("k3".into(), None)
        } else {
            (format!("k{}", offset % 10), Some(format!("v{offset}")))
        }
    };
    let mut last_below = std::collections::HashMap::new();
    for offset in 0..cleaned_to.min(300) {
        last_below.insert(written(offset).0, offset);
    }
    let mut seen = std::collections::HashSet::new();
    for (offset, key, value, ts) in records {
        assert_eq!(
            (key.clone(), value.clone()),
            written(*offset),
            "offset {offset}"
        );
        assert_eq!(*ts, 1_000 + offset, "timestamp of {offset}");
        seen.insert(*offset);
        if *offset < cleaned_to {
            assert_eq!(
                last_below[key], *offset,
                "{key} at {offset} is not its latest"
            );
        }
    }
    for (key, offset) in &last_below {
        let tombstone = written(*offset).1.is_none();
        if tombstone && tombstones_gone {
            assert!(
                !seen.contains(offset),
                "tombstone of {key} outlived its horizon"
            );
        } else {
            assert!(seen.contains(offset), "latest {key} at {offset} lost");
        }
    }
    for offset in cleaned_to..300 {
        assert!(seen.contains(&offset), "uncleaned offset {offset} lost");
    }
}

#[test]
fn a_paced_cleaning_keeps_to_its_rate_and_cleans_alike() {
    // `log.cleaner.io.max.bytes.per.second`: the round sleeps whenever it is ahead of the
    // rate, so it lasts at least (read + written) / rate, and cleans as an unpaced one does.
    let rate = 20_000.0;
    let outcome = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let fs = MemFs::new();
            let log = open(&fs, compacting(1_000));
            fill_keyed(&log);
            let mut map = crate::OffsetMap::new(1 << 20);
            let started = std::time::Instant::now();
            let stats = log
                .clean_paced(10_000, i64::MAX, &mut map, rate)
                .await
                .unwrap()
                .unwrap();
            (stats, started.elapsed(), records_of(&log), log.cleaned_to())
        })
        .unwrap()
        .join()
        .unwrap();
    let (stats, elapsed, records, cleaned_to) = outcome;
    let moved = (stats.bytes_read + stats.bytes_written) as f64;
    assert!(
        elapsed.as_secs_f64() >= moved / rate * 0.95,
        "{moved} bytes in {elapsed:?}"
    );
    assert_compacted(&records, cleaned_to, false);
}

#[test]
fn max_compaction_lag_counts_from_a_dirty_segments_first_batch() {
    let config = LogConfig {
        compaction: crate::Compaction {
            // Never due by the ratio (Kafka's rule is strictly above it).
            min_cleanable_dirty_ratio: 1.0,
            max_compaction_lag_ms: 5_000,
            ..compacting(1_000).compaction
        },
        ..compacting(1_000)
    };
    let fs = MemFs::new();
    let log = open(&fs, config.clone());
    let put = |log: &PartitionLog, i: i64, ts: i64| {
        let key = format!("k{}", i % 5);
        log.append(keyed(&[(&key, Some(format!("v{i}")))], -1, ts), 1, ts)
            .unwrap();
        block_on(log.flush()).unwrap();
    };
    // Records from 50 s to 64.5 s: the first segment starts at 50 s and ends later.
    for i in 0..30 {
        put(&log, i, 50_000 + i * 500);
    }
    assert!(log.segment_count() >= 3);
    let first_newest = log.state.borrow().segments[0].max_timestamp.0;
    assert!(first_newest > 50_500, "{first_newest}");
    let mut map = crate::OffsetMap::new(1 << 20);
    // Across a crash: the sealed segments' first timestamps are read back from disk.
    drop(log);
    fs.crash();
    let log = open(&fs, config);
    assert!(
        block_on(log.clean(54_000, i64::MAX, &mut map))
            .unwrap()
            .is_none(),
        "not due: the oldest dirty record is 4 s old"
    );
    // Due once the first dirty batch is older than the lag, though the first dirty segment's
    // newest record is not (Kafka's `maxCompactionDelay`).
    let stats = block_on(log.clean(55_500, i64::MAX, &mut map))
        .unwrap()
        .expect("due by max.compaction.lag.ms");
    assert!(stats.dirty_end > stats.dirty_start, "{stats:?}");
}

#[test]
fn compaction_keeps_each_keys_latest_record_at_its_offset() {
    let fs = MemFs::new();
    let log = open(&fs, compacting(1_000));
    fill_keyed(&log);
    let segments = log.segment_count();
    assert!(segments > 10, "{segments} segments");
    let mut map = crate::OffsetMap::new(1 << 20);
    let stats = block_on(log.clean(10_000, i64::MAX, &mut map))
        .unwrap()
        .unwrap();
    assert_eq!(stats.dirty_start, 0);
    assert!(stats.dirty_end > 250, "{stats:?}");
    assert!(stats.bytes_written < stats.bytes_read / 4, "{stats:?}");
    let cleaned_to = log.cleaned_to();
    assert_eq!(cleaned_to, stats.dirty_end);
    // The tombstone (k3 at 253) stays until its horizon, 1 s after this cleaning.
    assert_compacted(&records_of(&log), cleaned_to, false);
    // Reads that start in a gap get the next record.
    let result = block_on(log.read(1, 1, i64::MAX)).unwrap();
    assert!(
        batch::validate_stored(&result.batches[0])
            .unwrap()
            .base_offset
            > 1
    );
    // Nothing is due before the horizon; after it, the tombstone goes, also across a crash
    // (the cleaner checkpoint keeps the horizon: without it, the round would wait for new
    // dirty data).
    assert!(block_on(log.clean(10_500, i64::MAX, &mut map))
        .unwrap()
        .is_none());
    drop(log);
    fs.crash();
    let log = open(&fs, compacting(1_000));
    assert!(block_on(log.clean(10_500, i64::MAX, &mut map))
        .unwrap()
        .is_none());
    block_on(log.clean(11_001, i64::MAX, &mut map))
        .unwrap()
        .unwrap();
    assert_compacted(&records_of(&log), cleaned_to, true);
    // Groups are chosen by input size (as Kafka's), so the second round merges the shrunken
    // segments of the first.
    assert!(
        log.segment_count() < segments / 3,
        "{} of {segments}",
        log.segment_count()
    );
    let after = records_of(&log);
    block_on(log.close()).unwrap();
    let log = open(&fs, compacting(1_000));
    assert_eq!(records_of(&log), after, "after a clean restart");
    assert_eq!(log.cleaned_to(), cleaned_to);
    drop(log);
    fs.crash();
    let log = open(&fs, compacting(1_000));
    assert_eq!(records_of(&log), after, "after a crash");
    // Appends go on after the cleaned log.
    let end = log.log_end_offset();
    log.append(keyed(&[("k1", Some("new".into()))], -1, 5_000), 1, 5_000)
        .unwrap();
    block_on(log.flush()).unwrap();
    assert_eq!(log.log_end_offset(), end + 1);
}

#[test]
fn a_small_offset_map_cleans_in_several_rounds() {
    let fs = MemFs::new();
    let log = open(&fs, compacting(1_000));
    fill_keyed(&log);
    // Three keys per round.
    let mut map = crate::OffsetMap::new(3 * crate::OFFSET_MAP_ENTRY_BYTES);
    let mut rounds = 0;
    let mut now = 10_000;
    while let Some(stats) = block_on(log.clean(now, i64::MAX, &mut map)).unwrap() {
        assert!(stats.map_keys <= 3);
        rounds += 1;
        now += 10;
        assert!(rounds < 200, "cleaning never ends");
        if log.cleaned_to() >= 290 {
            break;
        }
    }
    assert!(rounds > 2, "{rounds} rounds");
    assert_compacted(&records_of(&log), log.cleaned_to(), false);
}

#[test]
fn an_interrupted_cleaning_is_undone_or_finished_on_open() {
    for (point, committed) in [
        (failpoints::CLEAN_BEFORE_SWAP, false),
        (failpoints::CLEAN_AFTER_SWAP_COMMIT, true),
    ] {
        let fs = MemFs::new();
        let log = open(&fs, compacting(1_000));
        fill_keyed(&log);
        let before = records_of(&log);
        fs.arm(point);
        let mut map = crate::OffsetMap::new(1 << 20);
        assert!(
            block_on(log.clean(10_000, i64::MAX, &mut map)).is_err(),
            "{point}"
        );
        drop(log);
        fs.crash();
        let log = open(&fs, compacting(1_000));
        let after = records_of(&log);
        if committed {
            // The first group's swap committed: its segments are cleaned, the rest intact.
            assert!(after.len() < before.len(), "{point}");
            let first_kept = after.iter().map(|r| r.0).collect::<Vec<_>>();
            assert!(first_kept.windows(2).all(|w| w[0] < w[1]));
        } else {
            assert_eq!(after, before, "{point}");
        }
        let leftovers: Vec<_> = fs
            .paths()
            .into_iter()
            .filter(|p| {
                let name = p.to_string_lossy();
                name.ends_with(".cleaned") || name.ends_with(".swap") || name.ends_with(".deleted")
            })
            .collect();
        assert!(leftovers.is_empty(), "{point}: {leftovers:?}");
        // A later cleaning completes the job.
        block_on(log.clean(10_000, i64::MAX, &mut map))
            .unwrap()
            .unwrap();
        assert_compacted(&records_of(&log), log.cleaned_to(), false);
    }
}

#[test]
fn compaction_drops_aborted_records_and_empty_markers_after_their_horizon() {
    let fs = MemFs::new();
    let log = open(&fs, compacting(1_000));
    let flush = |log: &PartitionLog| block_on(log.flush()).unwrap();
    // Producer 7 commits k1=a; producer 8 aborts k2=b; later k1 is overwritten by a plain write.
    let k = |key: &str, v: &str| keyed(&[(key, Some(v.to_string()))], -1, 1_000);
    let txn = |pid: i64, key: &str, v: &str| {
        let mut bytes = BytesMut::from(&keyed(&[(key, Some(v.to_string()))], pid, 1_000)[..]);
        let attributes = i16::from_be_bytes([bytes[21], bytes[22]]) | 0x10;
        bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes.freeze()
    };
    log.append(txn(7, "k1", "a"), 1, 1_000).unwrap(); // 0
    log.append(txn(8, "k2", "b"), 1, 1_000).unwrap(); // 1
    log.append(marker(7, 0, true, 1), 1, 1_000).unwrap(); // 2
    log.append(marker(8, 0, false, 1), 1, 1_000).unwrap(); // 3
    flush(&log);
    for i in 0..40 {
        log.append(k("k1", &format!("p{i}")), 1, 1_000).unwrap(); // 4..44
        flush(&log);
    }
    // An open transaction of producer 9 (offset 44) holds the cleanable range below it.
    log.append(txn(9, "k5", "open"), 1, 1_000).unwrap();
    flush(&log);
    for i in 0..30 {
        log.append(k("k6", &format!("q{i}")), 1, 1_000).unwrap();
        flush(&log);
    }
    assert_eq!(block_on(log.aborted_txns(0, i64::MAX)).unwrap().len(), 1);
    assert!(
        fs.read(&txn_index_path(&dir(), 0)).is_some(),
        "the abort at 3 is in the first segment's .txnindex"
    );
    let mut map = crate::OffsetMap::new(1 << 20);
    block_on(log.clean(10_000, i64::MAX, &mut map))
        .unwrap()
        .unwrap();
    let listing: Vec<_> = fs
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "txnindex"))
        .collect();
    assert!(
        listing
            .iter()
            .all(|p| fs.read(p).is_some_and(|b| b.is_empty())),
        "the cleaned segment lists no abort: its records are gone"
    );
    assert!(
        listing.contains(&txn_index_path(&dir(), 0)),
        "an empty index, so a snapshot's list is not taken for it"
    );
    assert!(log.cleaned_to() <= 44, "cleaned past the open transaction");
    assert!(
        block_on(log.aborted_txns(0, i64::MAX)).unwrap().is_empty(),
        "its records are gone: the aborted transaction is no longer listed"
    );
    let controls = |log: &PartitionLog| -> Vec<i64> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let result = block_on(log.read(offset, 1 << 20, i64::MAX)).unwrap();
            for bytes in &result.batches {
                let header = batch::validate_stored(bytes).unwrap();
                if header.is_control() {
                    out.push(header.base_offset);
                }
                offset = header.last_offset() + 1;
            }
        }
        out
    };
    let offsets: Vec<i64> = records_of(&log).iter().map(|r| r.0).collect();
    assert!(!offsets.contains(&1), "an aborted record survived");
    assert!(
        !offsets.contains(&0),
        "k1's committed value was overwritten later"
    );
    assert_eq!(
        controls(&log),
        vec![2, 3],
        "markers stay until their horizon"
    );
    assert!(
        offsets.contains(&44),
        "the open transaction's record is intact"
    );
    // After the horizon (10 s + 1 s) the empty markers go.
    block_on(log.clean(11_001, i64::MAX, &mut map))
        .unwrap()
        .unwrap();
    assert_eq!(controls(&log), Vec::<i64>::new());
}

#[test]
fn compaction_of_a_raft_log_keeps_every_entry_below_the_high_watermark() {
    let fs = MemFs::new();
    let log = open_entries(&fs, compacting(1_000));
    for i in 0..300i64 {
        let batch = keyed(
            &[(&format!("k{}", i % 10), Some(format!("v{i}")))],
            -1,
            1_000 + i,
        );
        log.append_entry(batch, 3, 1_000 + i).unwrap();
        if i % 7 == 0 {
            block_on(log.flush()).unwrap();
        }
    }
    block_on(log.flush()).unwrap();
    let next = log.next_entry_index();
    let before = block_on(log.read_entries(0, next, usize::MAX)).unwrap();
    assert_eq!(before.len() as u64, next);
    let mut map = crate::OffsetMap::new(1 << 20);
    // The high watermark at 200: nothing at or above it is touched.
    let stats = block_on(log.clean(10_000, 200, &mut map)).unwrap().unwrap();
    assert!(stats.dirty_end <= 200 && stats.dirty_end > 100, "{stats:?}");
    let check = |log: &PartitionLog| {
        let after = block_on(log.read_entries(0, next, usize::MAX)).unwrap();
        assert_eq!(after.len(), before.len(), "every entry stays");
        let mut emptied = 0;
        for ((i, old), (j, new)) in before.iter().zip(&after) {
            assert_eq!(i, j);
            let (old_h, new_h) = (
                batch::validate_stored(old).unwrap(),
                batch::validate_stored(new).unwrap(),
            );
            assert_eq!(
                (old_h.base_offset, old_h.last_offset()),
                (new_h.base_offset, new_h.last_offset())
            );
            if old_h.base_offset >= stats.dirty_end {
                assert_eq!(old, new, "entry {i} above the cleaning changed");
            }
            emptied += usize::from(new_h.records_count == 0);
        }
        assert!(emptied > 100, "{emptied} entries emptied");
        // Below the cleaning each key's last record is there, and nothing else.
        let records = records_of(log);
        let mut last = std::collections::HashMap::new();
        for offset in 0..stats.dirty_end {
            last.insert(format!("k{}", offset % 10), offset);
        }
        for (offset, key, value, _) in &records {
            assert_eq!(value.as_deref(), Some(format!("v{offset}").as_str()));
            if *offset < stats.dirty_end {
                assert_eq!(last[key], *offset);
            }
        }
    };
    check(&log);
    drop(log);
    fs.crash();
    let log = open_entries(&fs, compacting(1_000));
    assert_eq!(log.next_entry_index(), next);
    check(&log);
    // And it goes on as a Raft log.
    let (index, _) = log
        .append_entry(keyed(&[("k1", Some("new".into()))], -1, 9_000), 3, 9_000)
        .unwrap();
    assert_eq!(index, next);
}

// ---- Clean-shutdown records and shard books (`clean.rs`) ----

fn open_given(fs: &MemFs, entry_index: bool, record: Option<crate::CleanRecord>) -> PartitionLog {
    block_on(PartitionLog::open_with(
        dir(),
        config(),
        Backend::Memory(fs.clone()),
        entry_index,
        crate::CleanFrom::Given(record),
    ))
    .unwrap()
}

/// A log with sealed segments, an idempotent producer and an active segment holding
/// `active_batches` batches after its first; returns the active segment's file.
fn log_for_record(fs: &MemFs) -> (PartitionLog, PathBuf) {
    let log = open(fs, config());
    fill(&log, 30, 0);
    for seq in 0..3 {
        log.append(batch_of(2, 7, 0, 2 * seq, 900), 1, 900).unwrap();
    }
    block_on(log.flush()).unwrap();
    let base = log.state.borrow().active().base_offset;
    assert!(base > 0, "the log rolled");
    (log, crate::segment::log_path(&dir(), base))
}

/// Damages the last batch of the active segment (its logical end, not the O_DIRECT padding).
fn damage_last_batch(fs: &MemFs, log_size: u64, active: &Path) {
    fs.corrupt(active, log_size as usize - 3, 0x40);
}

fn active_size(log: &PartitionLog) -> u64 {
    log.state.borrow().active().size_bytes
}

#[test]
fn a_clean_record_reopens_the_log_without_scanning_it() {
    let fs = MemFs::new();
    let (log, active) = log_for_record(&fs);
    let end = log.log_end_offset();
    let size = active_size(&log);
    let headers = read_all(&log);
    let record = block_on(log.close_record()).unwrap();
    assert!(
        !fs.paths().iter().any(|p| p.ends_with("clean-shutdown")),
        "nothing in the dir"
    );
    // Damage the active segment's last batch: a scan would cut it off, a trusted record does
    // not look.
    damage_last_batch(&fs, size, &active);
    let log = open_given(&fs, false, Some(record));
    assert_eq!(
        log.log_end_offset(),
        end,
        "the record was trusted, the segment not scanned"
    );
    // Producer state came back: the last batch again is a duplicate.
    assert!(
        log.append(batch_of(2, 7, 0, 4, 900), 1, 900)
            .unwrap()
            .duplicate
    );
    assert_eq!(
        log.max_timestamp().map(|t| (t.0, t.1)),
        Some((end - 5, 901))
    );
    drop(log);

    // The same record without the damage, and the log reads back whole.
    let fs = MemFs::new();
    let (log, _) = log_for_record(&fs);
    let record = block_on(log.close_record()).unwrap();
    let log = open_given(&fs, false, Some(record));
    assert_eq!(read_all(&log), headers);
    assert_eq!(
        block_on(log.offset_for_timestamp(150))
            .unwrap()
            .map(|t| t.0),
        Some(45)
    );
}

#[test]
fn without_a_record_the_log_recovers_by_scanning_and_a_dir_marker_is_dropped() {
    let fs = MemFs::new();
    let (log, active) = log_for_record(&fs);
    let end = log.log_end_offset();
    let size = active_size(&log);
    // A log closed on its own leaves its record in its directory...
    block_on(log.close()).unwrap();
    assert!(fs.read(&dir().join("clean-shutdown")).is_some());
    damage_last_batch(&fs, size, &active);
    // ...which a shard's open (records from books only) removes and does not trust.
    let log = open_given(&fs, false, None);
    assert!(fs.read(&dir().join("clean-shutdown")).is_none());
    assert_eq!(
        log.log_end_offset(),
        end - 2,
        "the damaged last batch was cut off"
    );
    read_all(&log);
}

#[test]
fn a_damaged_record_is_not_trusted() {
    let fs = MemFs::new();
    let (log, active) = log_for_record(&fs);
    let end = log.log_end_offset();
    let size = active_size(&log);
    let record = block_on(log.close_record()).unwrap();
    for at in [0, 10, record.len() / 2, record.len() - 1] {
        let mut bytes = record.bytes().to_vec();
        bytes[at] ^= 1;
        assert!(
            crate::CleanRecord::from_bytes(bytes.into())
                .decode()
                .is_none(),
            "{at}"
        );
    }
    assert!(
        crate::CleanRecord::from_bytes(record.bytes().slice(..record.len() - 1))
            .decode()
            .is_none()
    );
    let mut bytes = record.bytes().to_vec();
    bytes[10] ^= 1;
    damage_last_batch(&fs, size, &active);
    let log = open_given(
        &fs,
        false,
        Some(crate::CleanRecord::from_bytes(bytes.into())),
    );
    assert_eq!(
        log.log_end_offset(),
        end - 2,
        "scanned: the damaged last batch was cut off"
    );
    read_all(&log);
}

#[test]
fn an_entry_indexed_log_reopens_from_its_record_with_the_same_entries() {
    let fs = MemFs::new();
    let log = open_entries(
        &fs,
        LogConfig {
            segment_bytes: 1_500,
            ..config()
        },
    );
    let expected = append_entries(&log, 60, 7);
    let range = (log.first_entry_index(), log.next_entry_index());
    let record = block_on(log.close_record()).unwrap();
    let log = open_given(&fs, true, Some(record));
    assert_eq!((log.first_entry_index(), log.next_entry_index()), range);
    check_entries(&log, &expected);
}

#[test]
fn a_book_hands_out_each_record_once_and_rejects_damage() {
    let fs = MemFs::new();
    let backend = Backend::Memory(fs.clone());
    let root = PathBuf::from("/data");
    let mut records = Vec::new();
    for name in ["a-0", "a-1", "b-0"] {
        let (log, _) = {
            let fs = MemFs::new();
            log_for_record(&fs)
        };
        records.push((name, block_on(log.close_record()).unwrap()));
    }
    let mut writer = crate::CleanBookWriter::new(root.clone(), 3);
    for (name, record) in &records {
        writer.add(&root.join(name), record.clone()).unwrap();
    }
    // Only directories directly under the root go in a book.
    assert!(writer
        .add(Path::new("/elsewhere/x-0"), records[0].1.clone())
        .is_err());
    assert_eq!(block_on(writer.finish(&backend)).unwrap(), 3);
    let path = root.join("clean-shutdown-shard-3");
    assert!(fs.read(&path).is_some());

    let keep = |dir: &Path| !dir.ends_with("b-0");
    let mut book = block_on(crate::CleanBook::load(
        &backend,
        std::slice::from_ref(&path),
        keep,
    ));
    assert_eq!(book.len(), 2);
    assert_eq!(book.take(&root.join("a-1")).as_ref(), Some(&records[1].1));
    assert_eq!(book.take(&root.join("a-1")), None, "once");
    assert_eq!(book.take(&root.join("b-0")), None, "not kept");
    assert_eq!(book.take(&root.join("a-0")).as_ref(), Some(&records[0].1));

    // Any flipped byte, a cut or an extra byte: the whole book is ignored.
    let bytes = fs.read(&path).unwrap();
    for damaged in [
        {
            let mut b = bytes.clone();
            b[40] ^= 0x10;
            b
        },
        bytes[..bytes.len() - 1].to_vec(),
        [bytes.as_slice(), &[0]].concat(),
        Vec::new(),
    ] {
        assert!(crate::clean::decode_book_for_test(&damaged).is_none());
        block_on(backend.write_file_atomic(&path, &damaged)).unwrap();
        let book = block_on(crate::CleanBook::load(
            &backend,
            std::slice::from_ref(&path),
            |_| true,
        ));
        assert!(book.is_empty());
    }
}

#[test]
fn a_book_entry_longer_than_its_book_is_refused_before_allocating() {
    let record = crate::CleanRecord::from_bytes(Bytes::from_static(b"not a record"));
    let good = crate::clean::book_bytes_for_test(&[("t-0", &record)]);
    assert_eq!(crate::clean::decode_book_for_test(&good).unwrap().len(), 1);
    // Claim a record of 4 GiB - 1 and a name of 65535 bytes, with a valid CRC each time.
    for (at, value) in [
        (4 + 2 + 3, [0xff, 0xff, 0xff, 0xfe]),
        (4, [0xff, 0xff, 0, 0]),
    ] {
        let mut body = good[..good.len() - 4].to_vec();
        let n = if at == 4 { 2 } else { 4 };
        body[at..at + n].copy_from_slice(&value[..n]);
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        assert!(crate::clean::decode_book_for_test(&body).is_none());
    }
}

#[test]
fn taking_books_consumes_the_last_stops_and_drops_earlier_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for name in [
        "clean-shutdown-shard-0",
        "clean-shutdown-shard-1",
        "clean-shutdown-shard-1.taken",
        "clean-shutdown-shard-2.tmp",
        "topic-0",
    ] {
        std::fs::write(root.join(name), name).unwrap();
    }
    let taken = crate::take_books(root).unwrap();
    assert_eq!(
        taken,
        vec![
            root.join("clean-shutdown-shard-0.taken"),
            root.join("clean-shutdown-shard-1.taken")
        ]
    );
    // The book taken by the previous start is gone, not read again.
    assert_eq!(
        std::fs::read_to_string(root.join("clean-shutdown-shard-1.taken")).unwrap(),
        "clean-shutdown-shard-1"
    );
    assert_eq!(
        files_in(root),
        [
            "clean-shutdown-shard-0.taken",
            "clean-shutdown-shard-1.taken",
            "topic-0"
        ]
    );
    // The next start deletes them unread.
    assert!(crate::take_books(root).unwrap().is_empty());
    assert_eq!(files_in(root), ["topic-0"]);
    assert!(crate::take_books(&root.join("missing")).unwrap().is_empty());
}

#[test]
fn a_relative_log_dir_opens_syncs_and_closes_on_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            std::env::set_current_dir(&base).unwrap();
            let dir = PathBuf::from("rel/topic-0");
            let log = PartitionLog::open(dir.clone(), config(), Backend::Dma)
                .await
                .unwrap();
            log.append(plain(3, 10), 1, 10).unwrap();
            log.flush().await.unwrap();
            log.close().await.unwrap();
            assert!(files_in(&dir).contains(&"clean-shutdown".to_string()));
            let log = PartitionLog::open(dir.clone(), config(), Backend::Dma)
                .await
                .unwrap();
            assert_eq!(log.log_end_offset(), 3);
            assert!(!files_in(&dir).contains(&"clean-shutdown".to_string()));
        })
        .unwrap()
        .join()
        .unwrap();
}

// ---- durability rounds ------------------------------------------------------------------------

/// Opens `n` logs on `backend` (under `root`) that make their appends durable in `rounds`.
async fn logs_in_rounds(
    root: &Path,
    backend: &Backend,
    rounds: &Rc<crate::SyncRounds>,
    n: usize,
) -> Vec<Rc<PartitionLog>> {
    let mut logs = Vec::new();
    for i in 0..n {
        let log = PartitionLog::open(root.join(format!("t-{i}")), config(), backend.clone())
            .await
            .unwrap();
        log.join_sync_rounds(rounds.clone()).unwrap();
        logs.push(Rc::new(log));
    }
    logs
}

/// Flushes every log side by side. The writes are parked until all are issued, then complete
/// together, as a shard's group commit's writes do when the device answers them in one turn.
async fn flush_all_at_once(fs: &MemFs, logs: &[Rc<PartitionLog>]) -> Vec<Result<(), StorageError>> {
    fs.hold(MemOp::Write);
    let flushes = glommio::spawn_local({
        let logs = logs.to_vec();
        async move { futures::future::join_all(logs.iter().map(|l| l.flush())).await }
    });
    while fs.parked(MemOp::Write) < logs.len() {
        futures_lite::future::yield_now().await;
    }
    fs.release(MemOp::Write);
    flushes.await
}

/// `n` logs on a fresh in-memory file system, in rounds of `scope`.
async fn memory_logs_in_rounds(
    scope: crate::SyncScope,
    n: usize,
) -> (MemFs, Rc<crate::SyncRounds>, Vec<Rc<PartitionLog>>) {
    let fs = MemFs::new();
    let backend = Backend::Memory(fs.clone());
    let rounds = crate::SyncRounds::start(backend.clone(), scope);
    let logs = logs_in_rounds(Path::new("/data"), &backend, &rounds, n).await;
    (fs, rounds, logs)
}

/// After a crash: the end offset of each of the `n` logs `memory_logs_in_rounds` made.
async fn ends_after_crash(fs: &MemFs, n: usize) -> Vec<i64> {
    fs.crash();
    let mut ends = Vec::new();
    for i in 0..n {
        let dir = Path::new("/data").join(format!("t-{i}"));
        let log = PartitionLog::open(dir, config(), Backend::Memory(fs.clone()))
            .await
            .unwrap();
        ends.push(log.log_end_offset());
    }
    ends
}

fn in_executor<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(test)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn the_logs_of_a_shard_become_durable_in_one_round_with_one_filesystem_sync() {
    in_executor(move || async move {
        let (fs, rounds, logs) = memory_logs_in_rounds(crate::SyncScope::Filesystem, 8).await;
        for log in &logs {
            log.append(plain(3, 1_000), 1, 1_000).unwrap();
        }
        let results = flush_all_at_once(&fs, &logs).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            rounds.stats(),
            crate::SyncStats {
                rounds: 1,
                members: 8,
                syncfs_calls: 1,
                fdatasync_calls: 0
            }
        );
        // A lone member is synced by its own file.
        logs[0].append(plain(1, 1_001), 1, 1_001).unwrap();
        logs[0].flush().await.unwrap();
        assert_eq!(rounds.stats().fdatasync_calls, 1);
        assert_eq!(rounds.stats().syncfs_calls, 1);
        drop(logs);
        assert_eq!(ends_after_crash(&fs, 8).await, [4, 3, 3, 3, 3, 3, 3, 3]);
    });
}

#[test]
fn with_the_file_scope_a_round_syncs_each_file() {
    in_executor(move || async move {
        let (fs, rounds, logs) = memory_logs_in_rounds(crate::SyncScope::File, 4).await;
        for log in &logs {
            log.append(plain(2, 1_000), 1, 1_000).unwrap();
        }
        let results = flush_all_at_once(&fs, &logs).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let stats = rounds.stats();
        assert_eq!((stats.rounds, stats.members), (1, 4));
        assert_eq!((stats.syncfs_calls, stats.fdatasync_calls), (0, 4));
        drop(logs);
        assert_eq!(ends_after_crash(&fs, 4).await, [2; 4]);
    });
}

#[test]
fn a_failed_round_fails_every_member_and_each_log_rolls_back() {
    in_executor(move || async move {
        let (fs, rounds, logs) = memory_logs_in_rounds(crate::SyncScope::Filesystem, 4).await;
        for log in &logs {
            log.append(plain(2, 1_000), 1, 1_000).unwrap();
        }
        let results = flush_all_at_once(&fs, &logs).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        for log in &logs {
            log.append(plain(5, 1_001), 1, 1_001).unwrap();
        }
        fs.arm(failpoints::SYNC_ROUND);
        let results = flush_all_at_once(&fs, &logs).await;
        assert!(results.iter().all(Result::is_err), "{results:?}");
        assert_eq!(rounds.stats().syncfs_calls, 2);
        for log in &logs {
            // Nothing of the failed round is readable: a reader never sees what may vanish.
            assert_eq!(log.log_end_offset(), 2);
            assert_eq!(read_all_async(log).await.len(), 1);
        }
        drop(logs);
        assert_eq!(ends_after_crash(&fs, 4).await, [2; 4]);
        // Each log takes new writes after the crash.
        for i in 0..4 {
            let dir = Path::new("/data").join(format!("t-{i}"));
            let log = PartitionLog::open(dir, config(), Backend::Memory(fs.clone()))
                .await
                .unwrap();
            log.append(plain(1, 1_002), 1, 1_002).unwrap();
            log.flush().await.unwrap();
            assert_eq!(log.log_end_offset(), 3);
        }
    });
}

#[test]
fn rounds_on_dma_files_use_one_syncfs_and_keep_every_append() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    in_executor(move || async move {
        let rounds = crate::SyncRounds::start(Backend::Dma, crate::SyncScope::Filesystem);
        let logs = logs_in_rounds(&root, &Backend::Dma, &rounds, 8).await;
        // Whether two writes complete in one reactor turn is up to the device: flush until a
        // round held several logs (bounded).
        let mut flushed = 0;
        while rounds.stats().syncfs_calls == 0 && flushed < 50 {
            for log in &logs {
                log.append(plain(2, 1_000 + flushed), 1, 1_000 + flushed)
                    .unwrap();
            }
            let flushes = futures::future::join_all(logs.iter().map(|l| l.flush())).await;
            assert!(flushes.iter().all(Result::is_ok), "{flushes:?}");
            flushed += 1;
        }
        let stats = rounds.stats();
        assert!(stats.syncfs_calls > 0, "{stats:?}");
        assert_eq!(stats.members, 8 * flushed as u64);
        for log in logs {
            Rc::into_inner(log).unwrap().close().await.unwrap();
        }
        for i in 0..8 {
            let log = PartitionLog::open(root.join(format!("t-{i}")), config(), Backend::Dma)
                .await
                .unwrap();
            assert_eq!(log.log_end_offset(), 2 * flushed);
            assert_eq!(read_all_async(&log).await.len(), flushed as usize);
        }
    });
}
