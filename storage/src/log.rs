//! `PartitionLog`: the append / flush / read path of one partition over its segments.
//!
//! Write path: `append` (synchronous) validates and stamps batches and keeps them in memory
//! (the active segment's pending list and the tail cache); `flush` writes every pending byte
//! with O_DIRECT and fdatasyncs, so one flush covers every append before it (group commit).
//! A roll decided in `append` is carried out by the next flush, in this order: old segment data
//! durable, old file trimmed to its logical size, its index files, the producer snapshot, then
//! the new segment's file. Recovery relies on that order (see `recovery.rs`).
//!
//! Invariants:
//! - `segments` is never empty, ordered, contiguous in offsets; the last one is active.
//! - `log_start_offset <= durable_end_offset <= log_end_offset`.
//! - A failed flush leaves the log as if the non-durable appends never happened.
//!
//! Owned by: the partition's shard (`!Send`).

use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use spool_protocol::batch::{self, BatchError, BatchHeader};

use crate::epoch::EpochCache;
use crate::fs::{failpoints, Backend};
use crate::index::{OffsetIndex, TimeIndex};
use crate::producer::{ProducerState, SequenceCheck};
use crate::segment::{self, Indexes, SealWork, Segment};
use crate::tail::{CachedBatch, TailCache};
use crate::{AppendInfo, LogConfig, ReadResult, StorageError, TimestampType};

/// Largest segment Spool writes: positions in the offset index are u32, and Kafka caps
/// `segment.bytes` at i32::MAX.
pub(crate) const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Producer snapshots kept on disk; older ones are deleted at each roll.
pub(crate) const SNAPSHOTS_KEPT_MAX: usize = 3;
/// Smallest read issued when serving a fetch from disk.
const READ_CHUNK_BYTES_MIN: usize = 64 * 1024;
/// Largest read-ahead issued when serving a fetch from disk.
const READ_CHUNK_BYTES_MAX: usize = 8 << 20;

pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
pub(crate) const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A partition's segmented log.
///
/// Owned by: the partition's shard.
pub struct PartitionLog {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) backend: Backend,
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_end_offset: i64,
    pub(crate) durable_end_offset: i64,
    pub(crate) tail: TailCache,
    pub(crate) producers: ProducerState,
    pub(crate) epochs: EpochCache,
    pub(crate) epochs_dirty: bool,
}

impl PartitionLog {
    /// Validates the producer's record batches, checks idempotent-producer state, assigns
    /// offsets, stamps `leader_epoch` (and LogAppendTime), and keeps them in memory until the
    /// next flush. A rejected request appends nothing.
    pub fn append(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let frames = self.validate_batches(&records)?;
        let log_append_time = self.config.timestamp_type == TimestampType::LogAppendTime;
        let mark = self.producers.undo_mark();
        let mut stamped = Vec::with_capacity(frames.len());
        let mut next_offset = self.log_end_offset;
        for (position, header) in frames {
            match self.producers.check(&header) {
                Ok(SequenceCheck::Append) => {}
                Ok(SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                }) => {
                    self.producers.rollback_to(mark);
                    return Ok(AppendInfo {
                        base_offset,
                        last_offset,
                        log_append_time_ms: -1,
                        duplicate: true,
                    });
                }
                Err(error) => {
                    self.producers.rollback_to(mark);
                    return Err(error);
                }
            }
            let mut header = header;
            header.base_offset = next_offset;
            header.partition_leader_epoch = leader_epoch;
            if log_append_time {
                header.max_timestamp = now_ms;
            }
            self.producers.apply(&header);
            next_offset = header.last_offset() + 1;
            stamped.push((position, header));
        }
        self.maybe_roll(records.len() as u64, next_offset, now_ms, mark);
        let base_offset = self.log_end_offset;
        self.append_stamped(&records, &stamped, log_append_time, now_ms);
        self.epochs_dirty |= self.epochs.assign(leader_epoch, base_offset);
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            duplicate: false,
        })
    }

    fn validate_batches(&self, records: &Bytes) -> Result<Vec<(usize, BatchHeader)>, StorageError> {
        let mut frames = Vec::new();
        for frame in batch::batches(records.clone()) {
            let (position, bytes) = frame.map_err(|error| corrupt(records.len(), &error))?;
            let header = batch::validate(&bytes).map_err(|error| corrupt(position, &error))?;
            if bytes.len() > self.config.max_message_bytes as usize {
                return Err(StorageError::MessageTooLarge {
                    size: bytes.len(),
                    max: self.config.max_message_bytes,
                });
            }
            if header.records_count == 0 {
                return Err(StorageError::CorruptBatch {
                    position,
                    reason: "empty batch",
                });
            }
            frames.push((position, header));
        }
        if frames.is_empty() {
            return Err(StorageError::CorruptBatch {
                position: 0,
                reason: "no record batch",
            });
        }
        Ok(frames)
    }

    /// Seals the active segment if this append would overflow it or it is old enough.
    fn maybe_roll(&mut self, append_bytes: u64, next_offset: i64, now_ms: i64, mark: usize) {
        let active = self.active();
        if active.is_empty() {
            return;
        }
        let segment_bytes = self.config.segment_bytes.min(SEGMENT_BYTES_MAX);
        let full = active.size_bytes + append_bytes > segment_bytes;
        let old = active
            .rolling_ms
            .is_some_and(|since| now_ms - since > self.config.segment_ms);
        let offsets_overflow = next_offset - active.base_offset > i64::from(u32::MAX);
        if !(full || old || offsets_overflow) {
            return;
        }
        // The snapshot must describe the state at the roll point, before this append.
        let producer_snapshot = self.producers.encode_at_mark(mark);
        let active = self.segments.last_mut().expect("segments is never empty");
        active.finish_time_index();
        active.sealed = true;
        active.seal_pending = Some(SealWork { producer_snapshot });
        self.segments.push(Segment::new(self.log_end_offset, None));
    }

    fn append_stamped(
        &mut self,
        records: &Bytes,
        stamped: &[(usize, BatchHeader)],
        log_append_time: bool,
        now_ms: i64,
    ) {
        // One copy of the request: the header rewrites need a private buffer.
        let mut buffer = BytesMut::from(&records[..]);
        for (position, header) in stamped {
            let bytes = &mut buffer[*position..*position + header.total_bytes()];
            batch::set_base_offset(bytes, header.base_offset);
            batch::set_partition_leader_epoch(bytes, header.partition_leader_epoch);
            if log_append_time {
                batch::set_log_append_time(bytes, now_ms);
            }
        }
        let buffer = buffer.freeze();
        let index_interval_bytes = u64::from(self.config.index_interval_bytes);
        let active = self.segments.last_mut().expect("segments is never empty");
        active.rolling_ms.get_or_insert(now_ms);
        for (position, header) in stamped {
            let bytes = buffer.slice(*position..*position + header.total_bytes());
            debug_assert!(batch::validate(&bytes).is_ok());
            active.track_batch(header, index_interval_bytes);
            active.pending.push(bytes.clone());
            self.tail.push(CachedBatch {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                max_timestamp: header.max_timestamp,
                leader_epoch: header.partition_leader_epoch,
                bytes,
            });
            self.log_end_offset = header.last_offset() + 1;
        }
        assert_eq!(self.log_end_offset, active.next_offset);
    }

    /// Writes every appended-but-unwritten byte and fdatasyncs. On error the non-durable
    /// suffix is dropped and the log stays readable.
    pub async fn flush(&mut self) -> Result<(), StorageError> {
        match self.flush_all().await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.rollback_to_durable().await;
                Err(error)
            }
        }
    }

    async fn flush_all(&mut self) -> Result<(), StorageError> {
        let first = self.segments.iter().position(|segment| {
            segment.file.is_none()
                || segment.durable_bytes < segment.size_bytes
                || segment.seal_pending.is_some()
        });
        if let Some(first) = first {
            for i in first..self.segments.len() {
                self.flush_segment(i).await?;
            }
        }
        if self.epochs_dirty {
            self.write_epoch_checkpoint(i64::MAX).await?;
            self.epochs_dirty = false;
        }
        self.durable_end_offset = self.log_end_offset;
        self.producers.commit();
        self.tail
            .evict(self.config.tail_cache_bytes_max, self.durable_end_offset);
        Ok(())
    }

    async fn flush_segment(&mut self, i: usize) -> Result<(), StorageError> {
        let backend = self.backend.clone();
        let segment = &mut self.segments[i];
        let path = segment::log_path(&self.dir, segment.base_offset);
        if segment.file.is_none() {
            let file = backend.open_file(&path).await.map_err(io_error(&path))?;
            segment.file = Some(file);
            backend.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
            backend
                .failpoint(failpoints::ROLL_AFTER_CREATE)
                .map_err(io_error(&path))?;
        }
        if segment.durable_bytes < segment.size_bytes {
            let file = segment.file.as_ref().expect("created above");
            let alignment = file.alignment();
            let (start, image) = segment.flush_image(alignment);
            file.write_at(start, &image)
                .await
                .map_err(io_error(&path))?;
            backend
                .failpoint(failpoints::FLUSH_AFTER_WRITE_BEFORE_SYNC)
                .map_err(io_error(&path))?;
            file.fdatasync().await.map_err(io_error(&path))?;
            backend
                .failpoint(failpoints::FLUSH_AFTER_SYNC)
                .map_err(io_error(&path))?;
            segment.mark_durable(start, &image, alignment);
        }
        if segment.seal_pending.is_some() {
            self.seal(i).await?;
            self.segments[i].seal_pending = None;
        }
        Ok(())
    }

    /// Persists what a sealed segment needs so recovery can trust it without a scan.
    async fn seal(&mut self, i: usize) -> Result<(), StorageError> {
        let segment = &self.segments[i];
        assert!(segment.sealed && segment.durable_bytes == segment.size_bytes);
        let path = segment::log_path(&self.dir, segment.base_offset);
        let file = segment.file.as_ref().expect("a sealed segment has a file");
        // Drop the O_DIRECT zero padding: a sealed file's size is its logical size.
        file.truncate(segment.size_bytes)
            .await
            .map_err(io_error(&path))?;
        file.fdatasync().await.map_err(io_error(&path))?;
        self.backend
            .failpoint(failpoints::ROLL_BEFORE_INDEX)
            .map_err(io_error(&path))?;
        write_indexes(&self.backend, &self.dir, segment).await?;
        self.backend
            .failpoint(failpoints::ROLL_BEFORE_SNAPSHOT)
            .map_err(io_error(&path))?;
        let end_offset = segment.next_offset;
        let work = segment
            .seal_pending
            .as_ref()
            .expect("seal called without work");
        let snapshot = snapshot_path(&self.dir, end_offset);
        self.backend
            .write_file_atomic(&snapshot, &work.producer_snapshot)
            .await
            .map_err(io_error(&snapshot))?;
        self.write_epoch_checkpoint(end_offset).await?;
        self.delete_old_snapshots()
    }

    /// Writes the epoch cache entries starting below `below_offset`.
    pub(crate) async fn write_epoch_checkpoint(
        &self,
        below_offset: i64,
    ) -> Result<(), StorageError> {
        let mut epochs = self.epochs.clone();
        epochs.truncate_from_end(below_offset);
        let path = self.dir.join(EPOCH_CHECKPOINT_FILE);
        self.backend
            .write_file_atomic(&path, &epochs.encode())
            .await
            .map_err(io_error(&path))
    }

    fn delete_old_snapshots(&self) -> Result<(), StorageError> {
        let mut offsets = self.snapshot_offsets()?;
        offsets.sort_unstable();
        let excess = offsets.len().saturating_sub(SNAPSHOTS_KEPT_MAX);
        for offset in &offsets[..excess] {
            let path = snapshot_path(&self.dir, *offset);
            self.backend.remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(())
    }

    pub(crate) fn snapshot_offsets(&self) -> Result<Vec<i64>, StorageError> {
        let names = self
            .backend
            .list_dir(&self.dir)
            .map_err(io_error(&self.dir))?;
        Ok(names
            .iter()
            .filter_map(|name| segment::parse_file_name(name, "snapshot"))
            .collect())
    }

    /// After a failed flush: forget every non-durable append, best-effort trim the files.
    async fn rollback_to_durable(&mut self) {
        for segment in &mut self.segments {
            segment.rollback_to_durable();
        }
        while self.segments.len() > 1 {
            let last = self.segments.last().expect("len > 1");
            if last.durable_bytes > 0 {
                break;
            }
            let Some(removed) = self.segments.pop() else {
                break;
            };
            if let Some(file) = removed.file {
                let _ = file.close().await;
                let path = segment::log_path(&self.dir, removed.base_offset);
                let _ = self.backend.remove_file(&path);
            }
        }
        let active = self.segments.last_mut().expect("segments is never empty");
        if active.sealed {
            // Its successor held nothing durable: it is the active segment again.
            active.sealed = false;
            active.seal_pending = None;
        }
        if let Some(file) = active.file.as_ref() {
            // A failed write may have landed partly; do not let a crash resurrect it.
            if file.truncate(active.durable_bytes).await.is_ok() {
                let _ = file.fdatasync().await;
            }
        }
        self.log_end_offset = active.next_offset;
        self.durable_end_offset = self.log_end_offset;
        self.producers.rollback_from_offset(self.log_end_offset);
        self.epochs_dirty |= self.epochs.truncate_from_end(self.log_end_offset);
        self.tail.truncate_from(self.log_end_offset);
    }

    pub fn log_start_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    pub fn durable_end_offset(&self) -> i64 {
        self.durable_end_offset
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments.last().expect("segments is never empty")
    }

    /// Whole batches from the one containing `offset`: at least one if it ends below
    /// `upper_bound`, more while within `max_bytes`; never past `upper_bound`.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<ReadResult, StorageError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset);
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        if offset == end || offset >= upper_bound {
            return Ok(ReadResult::default());
        }
        if self.tail.covers(offset) {
            return Ok(ReadResult {
                batches: self.tail.read(offset, max_bytes, upper_bound),
            });
        }
        let segment = &self.segments[self.segment_index(offset)];
        let batches = self
            .read_segment(segment, offset, max_bytes, upper_bound)
            .await?;
        Ok(ReadResult { batches })
    }

    /// Index of the segment holding `offset` (which must be in the log).
    pub(crate) fn segment_index(&self, offset: i64) -> usize {
        let after = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset);
        assert!(after > 0, "offset {offset} below the log start");
        after - 1
    }

    async fn read_segment(
        &self,
        segment: &Segment,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<Vec<Bytes>, StorageError> {
        let start = self.ensure_indexes(segment).await?;
        let position = u64::from(start.offsets.lookup(segment.relative(offset)));
        let Some(file) = segment.file.as_ref() else {
            return Ok(Vec::new());
        };
        let chunk_bytes = max_bytes
            .saturating_add(2 * self.config.index_interval_bytes as usize)
            .clamp(READ_CHUNK_BYTES_MIN, READ_CHUNK_BYTES_MAX);
        let mut batches = Vec::new();
        let mut total = 0usize;
        let path = segment::log_path(&self.dir, segment.base_offset);
        let scan = segment::scan_batches(
            file,
            position,
            segment.durable_bytes,
            None,
            chunk_bytes,
            |_, header, bytes| {
                if header.last_offset() < offset {
                    return true;
                }
                if header.last_offset() >= upper_bound
                    || (!batches.is_empty() && total + bytes.len() > max_bytes)
                {
                    return false;
                }
                total += bytes.len();
                batches.push(bytes.clone());
                true
            },
        )
        .await
        .map_err(io_error(&path))?;
        if scan.invalid_tail && batches.is_empty() {
            return Err(StorageError::SegmentCorrupt {
                path,
                position: scan.valid_bytes,
            });
        }
        Ok(batches)
    }

    /// The segment's indexes, reading (or rebuilding) them on first use.
    pub(crate) async fn ensure_indexes(&self, segment: &Segment) -> Result<Indexes, StorageError> {
        if let Some(indexes) = segment.indexes.borrow().as_ref() {
            return Ok(indexes.clone());
        }
        let indexes = match self.read_index_files(segment).await? {
            Some(indexes) => indexes,
            None => {
                let (indexes, _) = self.rebuild_indexes(segment).await?;
                write_indexes_of(&self.backend, &self.dir, segment.base_offset, &indexes).await?;
                indexes
            }
        };
        *segment.indexes.borrow_mut() = Some(indexes.clone());
        Ok(indexes)
    }

    /// Reads `.index` and `.timeindex`; None if either is missing or damaged.
    pub(crate) async fn read_index_files(
        &self,
        segment: &Segment,
    ) -> Result<Option<Indexes>, StorageError> {
        let index_path = segment::index_path(&self.dir, segment.base_offset);
        let time_path = segment::time_index_path(&self.dir, segment.base_offset);
        let index = self
            .backend
            .read_file(&index_path)
            .await
            .map_err(io_error(&index_path))?;
        let times = self
            .backend
            .read_file(&time_path)
            .await
            .map_err(io_error(&time_path))?;
        let (Some(index), Some(times)) = (index, times) else {
            return Ok(None);
        };
        let offsets = OffsetIndex::decode(&index, segment.size_bytes);
        let times = TimeIndex::decode(&times);
        Ok(offsets
            .zip(times)
            .map(|(offsets, times)| Indexes { offsets, times }))
    }

    /// Rebuilds a segment's indexes by scanning it; also returns its max timestamp entry.
    pub(crate) async fn rebuild_indexes(
        &self,
        segment: &Segment,
    ) -> Result<(Indexes, (i64, i64)), StorageError> {
        let path = segment::log_path(&self.dir, segment.base_offset);
        let Some(file) = segment.file.as_ref() else {
            return Ok((Indexes::default(), (-1, -1)));
        };
        let mut rebuilt = Segment::new(segment.base_offset, None);
        let interval = u64::from(self.config.index_interval_bytes);
        let scan = segment::scan_batches(
            file,
            0,
            segment.durable_bytes,
            Some(segment.base_offset),
            segment::SCAN_CHUNK_BYTES,
            |_, header, _| {
                rebuilt.track_batch(header, interval);
                true
            },
        )
        .await
        .map_err(io_error(&path))?;
        if scan.valid_bytes != segment.durable_bytes {
            return Err(StorageError::SegmentCorrupt {
                path,
                position: scan.valid_bytes,
            });
        }
        rebuilt.finish_time_index();
        let indexes = rebuilt.indexes.borrow().clone().unwrap_or_default();
        Ok((indexes, rebuilt.max_timestamp))
    }

    /// ListOffsets by timestamp: `(offset, timestamp, leader epoch)` of the first batch whose
    /// maxTimestamp is >= `timestamp`. The offset is the batch's base offset.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64, i32)>, StorageError> {
        let Some(segment) = self
            .segments
            .iter()
            .find(|s| s.max_timestamp.0 >= timestamp)
        else {
            return Ok(None);
        };
        let indexes = self.ensure_indexes(segment).await?;
        let from_offset = indexes
            .times
            .lookup_before(timestamp)
            .map_or(segment.base_offset, |relative| {
                segment.base_offset + i64::from(relative) + 1
            });
        if !self.tail.covers(from_offset) && from_offset < segment.durable_next_offset {
            let position = u64::from(indexes.offsets.lookup(segment.relative(from_offset)));
            let mut found = None;
            if let Some(file) = segment.file.as_ref() {
                let path = segment::log_path(&self.dir, segment.base_offset);
                segment::scan_batches(
                    file,
                    position,
                    segment.durable_bytes,
                    None,
                    READ_CHUNK_BYTES_MIN,
                    |_, header, _| {
                        if header.last_offset() >= from_offset && header.max_timestamp >= timestamp
                        {
                            found = Some((
                                header.base_offset,
                                header.max_timestamp,
                                header.partition_leader_epoch,
                            ));
                            return false;
                        }
                        true
                    },
                )
                .await
                .map_err(io_error(&path))?;
            }
            if found.is_some() {
                return Ok(found);
            }
        }
        let found = self.tail.find_timestamp(from_offset, timestamp);
        Ok(found.map(|batch| (batch.base_offset, batch.max_timestamp, batch.leader_epoch)))
    }

    /// ListOffsets MAX_TIMESTAMP: `(offset, timestamp, leader epoch)` of the batch with the
    /// largest timestamp (its last offset), the earliest one on ties.
    pub fn max_timestamp(&self) -> Option<(i64, i64, i32)> {
        let mut best: Option<(i64, i64)> = None;
        for segment in &self.segments {
            let (ts, offset) = segment.max_timestamp;
            if offset >= 0 && best.is_none_or(|(best_ts, _)| ts > best_ts) {
                best = Some((ts, offset));
            }
        }
        best.map(|(ts, offset)| (offset, ts, self.epochs.epoch_for_offset(offset)))
    }

    /// OffsetForLeaderEpoch: `(largest epoch <= epoch, its end offset)`, or (-1, -1).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset)
    }

    pub fn update_config(&mut self, config: LogConfig) {
        self.config = config;
        self.tail
            .evict(self.config.tail_cache_bytes_max, self.durable_end_offset);
    }
}

fn corrupt(position: usize, error: &BatchError) -> StorageError {
    let reason = match error {
        BatchError::Truncated { .. } => "truncated batch",
        BatchError::InvalidMagic { .. } => "unsupported magic",
        BatchError::LengthTooSmall { .. } => "batchLength below header size",
        BatchError::LengthMismatch { .. } => "batchLength mismatch",
        BatchError::CrcMismatch { .. } => "CRC mismatch",
        BatchError::NegativeRecordsCount { .. } => "negative recordsCount",
        BatchError::RecordsCountMismatch { .. } => "recordsCount inconsistent with lastOffsetDelta",
    };
    StorageError::CorruptBatch { position, reason }
}

/// Writes a segment's in-memory indexes to `.index` / `.timeindex`.
pub(crate) async fn write_indexes(
    backend: &Backend,
    dir: &Path,
    segment: &Segment,
) -> Result<(), StorageError> {
    let indexes = segment.indexes.borrow().clone();
    match indexes {
        Some(indexes) => write_indexes_of(backend, dir, segment.base_offset, &indexes).await,
        None => Ok(()), // never loaded, so the files on disk are still current
    }
}

pub(crate) async fn write_indexes_of(
    backend: &Backend,
    dir: &Path,
    base_offset: i64,
    indexes: &Indexes,
) -> Result<(), StorageError> {
    let index_path = segment::index_path(dir, base_offset);
    let time_path = segment::time_index_path(dir, base_offset);
    backend
        .write_file_atomic(&index_path, &indexes.offsets.encode())
        .await
        .map_err(io_error(&index_path))?;
    backend
        .write_file_atomic(&time_path, &indexes.times.encode())
        .await
        .map_err(io_error(&time_path))
}
