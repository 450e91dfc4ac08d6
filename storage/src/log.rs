//! `PartitionLog`: the append / flush / read path of one partition over its segments.
//!
//! Write path: `append` (synchronous) validates and stamps batches and keeps them in memory
//! (the active segment's pending list and the tail cache); `flush` writes the pending bytes
//! with O_DIRECT and fdatasyncs, so one flush covers every append before it (group commit).
//! A roll decided in `append` is carried out by a later flush, in this order: old segment data
//! durable, old file trimmed to its logical size, its index files, the producer snapshot, then
//! the new segment's file. Recovery relies on that order (see `recovery.rs`).
//!
//! Concurrency. Every method takes `&self`; the shard calls `append`, `read`,
//! `offset_for_timestamp`, `flush`, `enforce_retention`, `delete_segments_below` and
//! `truncate_suffix` on one log
//! concurrently (interleaved at `.await` points, one thread). Mutable state lives in
//! `PartitionLog::state`, a `RefCell<LogState>`, and async operations follow *plan / run /
//! commit*: a synchronous step under a short borrow copies what the I/O needs (the segment's
//! `Rc<SegmentFile>`, a flush image, index snapshots), the I/O runs with no borrow held, and a
//! synchronous step re-borrows to apply the result, finding segments by base offset.
//!
//! Invariants:
//! - No `RefCell` borrow of the state is ever held across an `.await`, so no caller can find
//!   the state borrowed: `append` and the synchronous getters never wait and never panic.
//! - `segments` is never empty, ordered, contiguous in offsets; the last one is active.
//! - `log_start_offset <= durable_end_offset <= log_end_offset`.
//! - At most one of flush, retention (also `delete_segments_below`) and suffix truncation
//!   runs at a time (the `gate`); only they remove segments or change durable bytes, so a
//!   flush finds the segments it planned.
//! - A flush makes durable exactly what was appended when it was planned (per segment: a byte
//!   size, a count of pending batches, an end offset). Appends made while it awaits its I/O
//!   stay pending for the next flush; `durable_end_offset` advances only when a flush commits.
//! - A failed flush leaves the log as if the non-durable appends never happened, including the
//!   ones made while it was in flight (their acks must fail); the log stays readable.
//! - Non-durable batches are always in the tail cache, so a read that misses the cache only
//!   needs durable bytes, which no concurrent operation rewrites (retention may delete a whole
//!   segment: the reader's `Rc` keeps the file open).
//!
//! Owned by: the partition's shard (`!Send`).

use std::cell::{Cell, OnceCell, RefCell};
use std::future::poll_fn;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};
use spool_protocol::batch::{self, BatchError, BatchHeader};

use crate::entry_index::{self, EntryInfo, EntryWindow, SegmentEntries};
use crate::epoch::EpochCache;
use crate::fs::{failpoints, Backend, SegmentFile};
use crate::index::{OffsetIndex, TimeIndex};
use crate::producer::{AbortedTxn, ProducerState, SequenceCheck};
use crate::segment::{self, FlushTarget, Indexes, SealWork, Segment, SegmentView};
use crate::sync_rounds::{FsKey, SyncRounds};
use crate::tail::{CachedBatch, TailCache};
use crate::txn_index;
use crate::{AppendInfo, LogConfig, ReadResult, StorageError, TimestampType};
use spool_protocol::control::TxnMarker;

/// Largest segment Spool writes: positions in the offset index are u32, and Kafka caps
/// `segment.bytes` at i32::MAX.
pub(crate) const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Tries of a read_committed fetch's aborted list when a `.txnindex` it picked disappears
/// under it (a truncation, cleaning or retention in between).
const ABORTED_READ_ATTEMPTS_MAX: u32 = 3;
/// Producer snapshots kept on disk; older ones are deleted at each roll.
pub(crate) const SNAPSHOTS_KEPT_MAX: usize = 3;
/// Smallest read issued when serving a fetch from disk.
const READ_CHUNK_BYTES_MIN: usize = 64 * 1024;
/// Largest read-ahead issued when serving a fetch from disk.
const READ_CHUNK_BYTES_MAX: usize = 8 << 20;
/// Times `offset_for_timestamp` starts over when a flush evicted the cache under it.
const TIMESTAMP_LOOKUP_ATTEMPTS_MAX: usize = 4;

pub(crate) const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// The side file holding the log start offset DeleteRecords set (8 bytes, then CRC-32C).
pub(crate) const LOG_START_FILE: &str = "log-start-offset";

/// The transaction marker a batch holds (a control batch with a producer id).
pub(crate) fn marker_of(header: &BatchHeader, bytes: &[u8]) -> Option<TxnMarker> {
    if header.is_control() && header.has_producer_id() {
        spool_protocol::control::decode_txn_marker(bytes)
    } else {
        None
    }
}

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A partition's segmented log. See the module header for the concurrency rules.
///
/// Owned by: the partition's shard.
pub struct PartitionLog {
    pub(crate) dir: PathBuf,
    pub(crate) backend: Backend,
    /// Never borrowed across an `.await`.
    pub(crate) state: RefCell<LogState>,
    /// Serializes flush, retention and suffix truncation.
    pub(crate) gate: Gate,
    /// The shard's durability rounds, once joined ([`PartitionLog::join_sync_rounds`]);
    /// without them every flush syncs its own file.
    pub(crate) sync_rounds: OnceCell<(Rc<SyncRounds>, FsKey)>,
}

/// The mutable part of a [`PartitionLog`].
pub(crate) struct LogState {
    pub(crate) config: LogConfig,
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_end_offset: i64,
    pub(crate) durable_end_offset: i64,
    pub(crate) tail: TailCache,
    pub(crate) producers: ProducerState,
    pub(crate) epochs: EpochCache,
    pub(crate) epochs_dirty: bool,
    /// Whether every batch is also a numbered Raft entry (`open_entry_indexed`); then every
    /// segment has `entries`.
    pub(crate) entry_index: bool,
    /// The most recent entries' locations (empty without an entry index).
    pub(crate) entry_window: EntryWindow,
    /// Kafka's log start offset where DeleteRecords moved it past the first segment's base
    /// (`advance_start`); 0 when never moved. Persisted in [`LOG_START_FILE`].
    pub(crate) start_floor: i64,
    /// The cleaner checkpoint: where the last cleaning's dirty range ended.
    pub(crate) cleaned_to: i64,
    /// The earliest delete horizon the last cleaning left ahead (a round is due once it passes).
    pub(crate) next_delete_horizon: Option<i64>,
}

/// An async mutex without data: at most one holder, the others wait (woken on release).
#[derive(Default)]
pub(crate) struct Gate {
    held: Cell<bool>,
    /// One waker per waiting operation: bounded by the callers, who each wait at most once.
    waiters: RefCell<Vec<Waker>>,
}

pub(crate) struct GateGuard<'a> {
    gate: &'a Gate,
}

impl Gate {
    pub(crate) async fn lock(&self) -> GateGuard<'_> {
        poll_fn(|cx| {
            if self.held.get() {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            } else {
                self.held.set(true);
                Poll::Ready(())
            }
        })
        .await;
        GateGuard { gate: self }
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        assert!(self.gate.held.get());
        self.gate.held.set(false);
        let waiters = self.gate.waiters.take();
        waiters.into_iter().for_each(Waker::wake);
    }
}

/// What one flush does, decided under a short borrow before any I/O.
struct FlushPlan {
    /// The log end when planned: what the flush makes durable.
    end_offset: i64,
    segments: Vec<SegmentFlush>,
    /// The epoch checkpoint to write, if the cache changed.
    epochs: Option<EpochCache>,
}

struct SegmentFlush {
    base_offset: i64,
    create_file: bool,
    write: Option<FlushTarget>,
    seal: Option<SealPlan>,
}

/// A roll's seal work, copied out of the state.
struct SealPlan {
    size_bytes: u64,
    end_offset: i64,
    indexes: Option<Indexes>,
    work: SealWork,
    epochs: EpochCache,
    /// The sealed entry index sidecar, when the log is entry-indexed.
    entries: Option<Vec<u8>>,
    /// The segment's aborted transactions, for its `.txnindex`.
    aborted: Vec<AbortedTxn>,
}

/// After a failed flush: files to remove and the active file to trim.
struct Rollback {
    removed: Vec<Segment>,
    trim: Option<(Rc<SegmentFile>, u64)>,
}

impl PartitionLog {
    /// Validates the producer's record batches, checks idempotent-producer state, assigns
    /// offsets, stamps `leader_epoch` (and LogAppendTime), and keeps them in memory until a
    /// flush. A rejected request appends nothing. Never waits, also while a flush is in flight.
    pub fn append(
        &self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.state
            .borrow_mut()
            .append(records, leader_epoch, now_ms)
    }

    /// Writes every byte appended before the call and fdatasyncs. One flush runs at a time;
    /// a second caller waits for the running one, then flushes what is left. On error every
    /// non-durable append (also those made during the flush) is dropped and the log stays
    /// readable.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let _gate = self.gate.lock().await;
        self.flush_locked().await
    }

    /// `flush` for a caller that holds the gate.
    pub(crate) async fn flush_locked(&self) -> Result<(), StorageError> {
        let plan = self.state.borrow_mut().plan_flush();
        match self.run_flush(&plan).await {
            Ok(()) => {
                self.state.borrow_mut().commit_flush(&plan);
                Ok(())
            }
            Err(error) => {
                self.rollback_to_durable().await;
                Err(error)
            }
        }
    }

    async fn run_flush(&self, plan: &FlushPlan) -> Result<(), StorageError> {
        for segment in &plan.segments {
            self.flush_segment(segment).await?;
        }
        if let Some(epochs) = &plan.epochs {
            self.write_epochs(epochs).await?;
        }
        Ok(())
    }

    async fn flush_segment(&self, plan: &SegmentFlush) -> Result<(), StorageError> {
        let base = plan.base_offset;
        let path = segment::log_path(&self.dir, base);
        if plan.create_file {
            // The sidecar before the log file: a segment's first index must never be lost
            // (see `entry_index.rs`).
            let sidecar = self
                .state
                .borrow()
                .planned(base)
                .entries
                .as_ref()
                .map(|entries| entry_index::encode(entries.first, 0, false, &Default::default()));
            if let Some(sidecar) = sidecar {
                self.write_sidecar(base, &sidecar).await?;
            }
            let file = self
                .backend
                .open_file(&path)
                .await
                .map_err(io_error(&path))?;
            self.state.borrow_mut().planned_mut(base).file = Some(Rc::new(file));
            self.backend
                .sync_dir(&self.dir)
                .await
                .map_err(io_error(&self.dir))?;
            self.backend
                .failpoint(failpoints::ROLL_AFTER_CREATE)
                .map_err(io_error(&path))?;
        }
        if let Some(target) = &plan.write {
            let (file, start, image, tail) = {
                let state = self.state.borrow();
                let segment = state.planned(base);
                let file = segment.file.clone().expect("created above");
                let (start, image, tail) = segment.flush_image(&file, target);
                (file, start, image, tail)
            };
            file.write_image(start, image)
                .await
                .map_err(io_error(&path))?;
            self.backend
                .failpoint(failpoints::FLUSH_AFTER_WRITE_BEFORE_SYNC)
                .map_err(io_error(&path))?;
            self.sync_appended(&file).await.map_err(io_error(&path))?;
            self.backend
                .failpoint(failpoints::FLUSH_AFTER_SYNC)
                .map_err(io_error(&path))?;
            self.state.borrow_mut().planned_mut(base).mark_durable(
                start,
                tail,
                file.alignment(),
                target,
            );
        }
        if let Some(seal) = &plan.seal {
            self.seal(base, seal).await?;
            let mut state = self.state.borrow_mut();
            let segment = state.planned_mut(base);
            segment.seal_pending = None;
            // Persisted: its aborts are read from its `.txnindex` from now on, whatever
            // happens to the rest of this flush (a persisted seal is never undone: see
            // `LogState::rollback_to_durable`).
            segment.txn_index = !seal.aborted.is_empty();
            state.producers.remove_aborted_in(base, seal.end_offset);
        }
        Ok(())
    }

    /// From now on this log's flushes make their appends durable in the shard's rounds, with
    /// the other logs of the shard. Once per log; blocking (see [`SyncRounds::filesystem_of`]).
    pub fn join_sync_rounds(&self, rounds: Rc<SyncRounds>) -> io::Result<()> {
        let fs = rounds.filesystem_of(&self.dir)?;
        let joined = self.sync_rounds.set((rounds, fs)).is_ok();
        assert!(joined, "a log joins its shard's sync rounds once");
        Ok(())
    }

    /// Makes the completed appends to `file` durable.
    async fn sync_appended(&self, file: &Rc<SegmentFile>) -> io::Result<()> {
        match self.sync_rounds.get() {
            Some((rounds, fs)) => rounds.sync(file.clone(), *fs).await,
            None => file.fdatasync().await,
        }
    }

    /// Persists what a sealed segment needs so recovery can trust it without a scan.
    async fn seal(&self, base_offset: i64, seal: &SealPlan) -> Result<(), StorageError> {
        let file = {
            let state = self.state.borrow();
            let segment = state.planned(base_offset);
            assert!(segment.sealed && segment.durable_bytes == seal.size_bytes);
            assert_eq!(segment.size_bytes, seal.size_bytes);
            segment.file.clone().expect("a sealed segment has a file")
        };
        let path = segment::log_path(&self.dir, base_offset);
        // Drop the O_DIRECT zero padding: a sealed file's size is its logical size.
        file.truncate(seal.size_bytes)
            .await
            .map_err(io_error(&path))?;
        file.fdatasync().await.map_err(io_error(&path))?;
        self.backend
            .failpoint(failpoints::ROLL_BEFORE_INDEX)
            .map_err(io_error(&path))?;
        if let Some(indexes) = &seal.indexes {
            write_indexes_of(&self.backend, &self.dir, base_offset, indexes).await?;
        }
        if let Some(sidecar) = &seal.entries {
            self.write_sidecar(base_offset, sidecar).await?;
        }
        // Before the snapshot at the segment's end, which no longer lists these aborts once
        // loaded beside this file. Without aborts, a file left by an earlier seal of this
        // segment (undone by a failed flush or a truncation) must not outlive it.
        if seal.aborted.is_empty() {
            let path = txn_index::txn_index_path(&self.dir, base_offset);
            self.backend
                .remove_file(&path)
                .await
                .map_err(io_error(&path))?;
        } else {
            txn_index::write(&self.backend, &self.dir, base_offset, &seal.aborted).await?;
        }
        self.backend
            .failpoint(failpoints::ROLL_BEFORE_SNAPSHOT)
            .map_err(io_error(&path))?;
        let snapshot = snapshot_path(&self.dir, seal.end_offset);
        self.backend
            .write_file_atomic(&snapshot, &seal.work.producer_snapshot)
            .await
            .map_err(io_error(&snapshot))?;
        self.write_epochs(&seal.epochs).await?;
        self.delete_old_snapshots().await
    }

    /// Replaces a segment's entry index sidecar, durably.
    pub(crate) async fn write_sidecar(
        &self,
        base_offset: i64,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        let path = entry_index::raft_index_path(&self.dir, base_offset);
        self.backend
            .write_file_atomic(&path, bytes)
            .await
            .map_err(io_error(&path))
    }

    /// Writes `epochs` as the leader epoch checkpoint.
    pub(crate) async fn write_epochs(&self, epochs: &EpochCache) -> Result<(), StorageError> {
        let path = self.dir.join(EPOCH_CHECKPOINT_FILE);
        self.backend
            .write_file_atomic(&path, &epochs.encode())
            .await
            .map_err(io_error(&path))
    }

    async fn delete_old_snapshots(&self) -> Result<(), StorageError> {
        let mut offsets = self.snapshot_offsets()?;
        offsets.sort_unstable();
        let excess = offsets.len().saturating_sub(SNAPSHOTS_KEPT_MAX);
        for offset in &offsets[..excess] {
            let path = snapshot_path(&self.dir, *offset);
            self.backend
                .remove_file(&path)
                .await
                .map_err(io_error(&path))?;
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
    async fn rollback_to_durable(&self) {
        let rollback = self.state.borrow_mut().rollback_to_durable();
        for removed in rollback.removed {
            let path = segment::log_path(&self.dir, removed.base_offset);
            if let Some(file) = removed.file {
                let _ = close_shared(file).await;
                let _ = self.backend.remove_file(&path).await;
            }
        }
        if let Some((file, durable_bytes)) = rollback.trim {
            // A failed write may have landed partly; do not let a crash resurrect it.
            if file.truncate(durable_bytes).await.is_ok() {
                let _ = file.fdatasync().await;
            }
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.borrow().log_start_offset()
    }

    /// Kafka's log start offset, what clients are told and may read from: the first segment's
    /// base, or further where DeleteRecords moved it ([`PartitionLog::advance_start`]).
    /// [`PartitionLog::log_start_offset`] is where the stored data starts (what a Raft log and
    /// the broker's own readers use).
    pub fn visible_start_offset(&self) -> i64 {
        self.state.borrow().visible_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.state.borrow().log_end_offset
    }

    /// How many segments the log has, the active one included.
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Bytes of record data in the log's segments, the not yet flushed tail included (Kafka's
    /// `UnifiedLog.size`: the `.log` files' logical sizes, without O_DIRECT padding or indexes).
    pub fn size_bytes(&self) -> u64 {
        self.state
            .borrow()
            .segments
            .iter()
            .map(|segment| segment.size_bytes)
            .sum()
    }

    /// The end of what the last committed flush made durable.
    pub fn durable_end_offset(&self) -> i64 {
        self.state.borrow().durable_end_offset
    }

    /// Whole batches from the one containing `offset`: at least one if it ends below
    /// `upper_bound`, more while within `max_bytes`; never past `upper_bound`. Cache hits are
    /// answered without I/O; never waits for a flush.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<ReadResult, StorageError> {
        let mut offset = offset;
        let mut first = true;
        loop {
            let (view, chunk_bytes, next_segment) = {
                let state = self.state.borrow();
                let (start, end) = (state.log_start_offset(), state.log_end_offset);
                if first && (offset < start || offset > end) {
                    return Err(StorageError::OffsetOutOfRange { offset, start, end });
                }
                if offset >= end || offset >= upper_bound || offset < start {
                    return Ok(ReadResult::default());
                }
                if state.tail.covers(offset) {
                    return Ok(ReadResult {
                        batches: state.tail.read(offset, max_bytes, upper_bound),
                    });
                }
                let chunk_bytes = max_bytes
                    .saturating_add(2 * state.config.index_interval_bytes as usize)
                    .clamp(READ_CHUNK_BYTES_MIN, READ_CHUNK_BYTES_MAX);
                let at = state.segment_index(offset);
                let next_segment = state.segments.get(at + 1).map(|s| s.base_offset);
                (state.segments[at].view(), chunk_bytes, next_segment)
            };
            first = false;
            let indexes = self.indexes_of(&view).await?;
            let batches = self
                .read_segment(&view, &indexes, offset, max_bytes, upper_bound, chunk_bytes)
                .await?;
            // A cleaned segment may end in a gap (its last records removed): the answer is in
            // the next segment, as Kafka reads on past an exhausted one.
            match next_segment {
                Some(next) if batches.is_empty() && next > offset => offset = next,
                _ => return Ok(ReadResult { batches }),
            }
        }
    }

    async fn read_segment(
        &self,
        view: &SegmentView,
        indexes: &Indexes,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        chunk_bytes: usize,
    ) -> Result<Vec<Bytes>, StorageError> {
        let position = u64::from(indexes.offsets.lookup(view.relative(offset)));
        let Some(file) = view.file.as_ref() else {
            return Ok(Vec::new());
        };
        let mut batches = Vec::new();
        let mut total = 0usize;
        let path = segment::log_path(&self.dir, view.base_offset);
        let scan = segment::scan_batches(
            file,
            position,
            view.durable_bytes,
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

    /// The segment's indexes, reading (or rebuilding) them on first use. Loading holds no
    /// borrow; the result is stored back if the segment still exists and still lacks them.
    pub(crate) async fn indexes_of(&self, view: &SegmentView) -> Result<Indexes, StorageError> {
        if let Some(indexes) = &view.indexes {
            return Ok(indexes.clone());
        }
        let (indexes, from_files) = match self.read_index_files(view).await? {
            Some(indexes) => (indexes, true),
            None => (self.rebuild_indexes(view).await?.0, false),
        };
        let stored = {
            let state = self.state.borrow();
            match state.segment(view.base_offset) {
                Some(segment) if segment.indexes.borrow().is_none() => {
                    *segment.indexes.borrow_mut() = Some(indexes.clone());
                    true
                }
                _ => false,
            }
        };
        // Only the loader that stored them writes the files, so two never race on them.
        if stored && !from_files {
            write_indexes_of(&self.backend, &self.dir, view.base_offset, &indexes).await?;
        }
        Ok(indexes)
    }

    /// Reads `.index` and `.timeindex`; None if either is missing or damaged.
    pub(crate) async fn read_index_files(
        &self,
        view: &SegmentView,
    ) -> Result<Option<Indexes>, StorageError> {
        let index_path = segment::index_path(&self.dir, view.base_offset);
        let time_path = segment::time_index_path(&self.dir, view.base_offset);
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
        let offsets = OffsetIndex::decode(&index, view.size_bytes);
        let times = TimeIndex::decode(&times);
        Ok(offsets
            .zip(times)
            .map(|(offsets, times)| Indexes { offsets, times }))
    }

    /// Feeds every durable batch of a sealed segment to `tracker.track_batch`, as the appends
    /// did: the one scan behind rebuilding its offset/time indexes and its entry index.
    pub(crate) async fn retrack_segment(
        &self,
        view: &SegmentView,
        file: &SegmentFile,
        tracker: &mut Segment,
    ) -> Result<(), StorageError> {
        let path = segment::log_path(&self.dir, view.base_offset);
        let interval = u64::from(self.state.borrow().config.index_interval_bytes);
        // Offsets increase, with gaps where a cleaning removed records.
        let mut next = view.base_offset;
        let scan = segment::scan_batches(
            file,
            0,
            view.durable_bytes,
            None,
            segment::SCAN_CHUNK_BYTES,
            |_, header, _| {
                if header.base_offset < next
                    || header.last_offset() - view.base_offset > i64::from(u32::MAX)
                {
                    return false;
                }
                next = header.last_offset() + 1;
                tracker.track_batch(header, interval);
                true
            },
        )
        .await
        .map_err(io_error(&path))?;
        if scan.valid_bytes != view.durable_bytes {
            return Err(StorageError::SegmentCorrupt {
                path,
                position: scan.valid_bytes,
            });
        }
        Ok(())
    }

    /// Rebuilds a segment's indexes by scanning it; also returns its max timestamp entry.
    pub(crate) async fn rebuild_indexes(
        &self,
        view: &SegmentView,
    ) -> Result<(Indexes, (i64, i64)), StorageError> {
        let Some(file) = view.file.as_ref() else {
            return Ok((Indexes::default(), (-1, -1)));
        };
        let mut rebuilt = Segment::new(view.base_offset, None);
        self.retrack_segment(view, file, &mut rebuilt).await?;
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
        for _ in 0..TIMESTAMP_LOOKUP_ATTEMPTS_MAX {
            match self.try_offset_for_timestamp(timestamp).await? {
                Lookup::Done(found) => return Ok(found),
                Lookup::Retry => continue,
            }
        }
        Ok(None)
    }

    /// One attempt; `Retry` when a flush or retention changed what it was looking at.
    async fn try_offset_for_timestamp(&self, timestamp: i64) -> Result<Lookup, StorageError> {
        let view = {
            let state = self.state.borrow();
            let found = state
                .segments
                .iter()
                .find(|s| s.max_timestamp.0 >= timestamp);
            match found {
                Some(segment) => segment.view(),
                None => return Ok(Lookup::Done(None)),
            }
        };
        let indexes = self.indexes_of(&view).await?;
        let from_offset = indexes
            .times
            .lookup_before(timestamp)
            .map_or(view.base_offset, |relative| {
                view.base_offset + i64::from(relative) + 1
            });
        // Look at the segment and the cache at the same instant.
        let (view, tail_covers) = {
            let state = self.state.borrow();
            match state.segment(view.base_offset) {
                Some(segment) => (segment.view(), state.tail.covers(from_offset)),
                None => return Ok(Lookup::Retry),
            }
        };
        let mut cache_from = from_offset;
        if !tail_covers && from_offset < view.durable_next_offset {
            let found = self.scan_for_timestamp(&view, &indexes, from_offset, timestamp);
            if let Some(found) = found.await? {
                return Ok(Lookup::Done(Some(found)));
            }
            cache_from = view.durable_next_offset;
        }
        let state = self.state.borrow();
        if cache_from < state.log_end_offset && !state.tail.covers(cache_from) {
            return Ok(Lookup::Retry); // a flush evicted batches the scan did not see
        }
        let found = state.tail.find_timestamp(from_offset, timestamp);
        Ok(Lookup::Done(found.map(|batch| {
            (batch.base_offset, batch.max_timestamp, batch.leader_epoch)
        })))
    }

    async fn scan_for_timestamp(
        &self,
        view: &SegmentView,
        indexes: &Indexes,
        from_offset: i64,
        timestamp: i64,
    ) -> Result<Option<(i64, i64, i32)>, StorageError> {
        let Some(file) = view.file.as_ref() else {
            return Ok(None);
        };
        let position = u64::from(indexes.offsets.lookup(view.relative(from_offset)));
        let path = segment::log_path(&self.dir, view.base_offset);
        let mut found = None;
        segment::scan_batches(
            file,
            position,
            view.durable_bytes,
            None,
            READ_CHUNK_BYTES_MIN,
            |_, header, _| {
                if header.last_offset() >= from_offset && header.max_timestamp >= timestamp {
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
        Ok(found)
    }

    /// ListOffsets MAX_TIMESTAMP: `(offset, timestamp, leader epoch)` of the batch with the
    /// largest timestamp (its last offset), the earliest one on ties.
    pub fn max_timestamp(&self) -> Option<(i64, i64, i32)> {
        let state = self.state.borrow();
        let mut best: Option<(i64, i64)> = None;
        for segment in &state.segments {
            let (ts, offset) = segment.max_timestamp;
            if offset >= 0 && best.is_none_or(|(best_ts, _)| ts > best_ts) {
                best = Some((ts, offset));
            }
        }
        best.map(|(ts, offset)| (offset, ts, state.epochs.epoch_for_offset(offset)))
    }

    /// Kafka's last stable offset for a high watermark of `high_watermark`: read_committed
    /// readers stop below the first offset of the oldest transaction not yet decided below it.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.state
            .borrow_mut()
            .producers
            .last_stable_offset(high_watermark)
    }

    /// The high watermark moved to `high_watermark`: ended transactions below it no longer hold
    /// the LSO back (a replicated partition's state machine calls this as it applies).
    pub fn advance_stable(&self, high_watermark: i64) {
        self.state
            .borrow_mut()
            .producers
            .advance_stable(high_watermark);
    }

    /// The aborted transactions overlapping `[fetch_offset, upper_bound)` (read_committed),
    /// from the `.txnindex` files of the sealed segments from `fetch_offset` on, then the
    /// in-memory list (see `txn_index.rs`). No I/O when no sealed segment from `fetch_offset`
    /// on has an abort.
    pub async fn aborted_txns(
        &self,
        fetch_offset: i64,
        upper_bound: i64,
    ) -> Result<Vec<AbortedTxn>, StorageError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(found) = self
                .try_aborted_txns(
                    fetch_offset,
                    upper_bound,
                    attempts >= ABORTED_READ_ATTEMPTS_MAX,
                )
                .await?
            {
                return Ok(found);
            }
        }
    }

    /// One attempt of [`PartitionLog::aborted_txns`]: None if a file it picked is gone
    /// (unless `last`, when a missing file counts as empty: its segment is gone for good).
    async fn try_aborted_txns(
        &self,
        fetch_offset: i64,
        upper_bound: i64,
        last: bool,
    ) -> Result<Option<Vec<AbortedTxn>>, StorageError> {
        // The files and the list as of one instant: a seal persisted meanwhile moves entries
        // from the list into a file this read did not pick.
        let (files, listed) = {
            let state = self.state.borrow();
            let first = state
                .segments
                .partition_point(|s| s.next_offset <= fetch_offset);
            let files: Vec<_> = state.segments[first..]
                .iter()
                .filter(|s| s.txn_index)
                .map(|s| txn_index::SegmentRange {
                    base_offset: s.base_offset,
                    next_offset: s.next_offset,
                })
                .collect();
            let listed = state.producers.aborted_txns(fetch_offset, upper_bound);
            (files, listed)
        };
        let mut out = Vec::new();
        for range in files {
            let collected = txn_index::collect(
                &self.backend,
                &self.dir,
                range,
                fetch_offset,
                upper_bound,
                &mut out,
            )
            .await?;
            match collected {
                txn_index::Collected::Complete => return Ok(Some(out)),
                txn_index::Collected::Partial => {}
                // A suffix truncation may have moved its entries back to memory after the
                // list was copied: look again.
                txn_index::Collected::Missing if !last => return Ok(None),
                txn_index::Collected::Missing => {}
            }
        }
        out.extend(listed);
        Ok(Some(out))
    }

    /// A producer's epoch on this partition and whether it has a transaction open here at
    /// that epoch (Kafka's `hasOngoingTransaction`), or None when the log does not know it.
    pub fn producer_txn(&self, producer_id: i64) -> Option<(i16, bool)> {
        self.state.borrow().producers.txn_state(producer_id)
    }

    /// Every producer's state, for DescribeProducers.
    pub fn describe_producers(&self) -> Vec<crate::ProducerInfo> {
        self.state.borrow().producers.describe()
    }

    /// OffsetForLeaderEpoch: `(largest epoch <= epoch, its end offset)`, or (-1, -1).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let state = self.state.borrow();
        state.epochs.end_offset_for(epoch, state.log_end_offset)
    }

    /// Changes only the tail cache bound (the shard shares one budget among its partitions).
    pub fn set_tail_cache_bytes_max(&self, bytes: usize) {
        let mut state = self.state.borrow_mut();
        state.config.tail_cache_bytes_max = bytes;
        let durable_end = state.durable_end_offset;
        state.tail.evict(bytes, durable_end);
    }

    pub fn update_config(&self, config: LogConfig) {
        let mut state = self.state.borrow_mut();
        state.config = config;
        let (bytes_max, durable_end) =
            (state.config.tail_cache_bytes_max, state.durable_end_offset);
        state.tail.evict(bytes_max, durable_end);
    }
}

enum Lookup {
    Done(Option<(i64, i64, i32)>),
    Retry,
}

/// Closes a file if this is its last handle; otherwise the last holder's drop closes it.
pub(crate) async fn close_shared(file: Rc<SegmentFile>) -> io::Result<()> {
    match Rc::try_unwrap(file) {
        Ok(file) => file.close().await,
        Err(_) => Ok(()),
    }
}

impl LogState {
    pub(crate) fn log_start_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    /// Kafka's log start offset: the first segment's base, or further where DeleteRecords
    /// moved it (never past the log end).
    pub(crate) fn visible_start_offset(&self) -> i64 {
        self.log_start_offset()
            .max(self.start_floor.min(self.log_end_offset))
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments.last().expect("segments is never empty")
    }

    /// Index of the segment holding `offset` (which must be in the log).
    pub(crate) fn segment_index(&self, offset: i64) -> usize {
        let after = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset);
        assert!(after > 0, "offset {offset} below the log start");
        after - 1
    }

    /// Index of the segment starting at `base_offset`, if it is still in the log.
    pub(crate) fn position_of(&self, base_offset: i64) -> Option<usize> {
        self.segments
            .binary_search_by_key(&base_offset, |segment| segment.base_offset)
            .ok()
    }

    pub(crate) fn segment(&self, base_offset: i64) -> Option<&Segment> {
        self.position_of(base_offset).map(|i| &self.segments[i])
    }

    /// A segment the running flush planned: only gate holders remove segments.
    fn planned(&self, base_offset: i64) -> &Segment {
        self.segment(base_offset)
            .expect("a planned segment stays while the flush gate is held")
    }

    fn planned_mut(&mut self, base_offset: i64) -> &mut Segment {
        let i = self
            .position_of(base_offset)
            .expect("a planned segment stays while the flush gate is held");
        &mut self.segments[i]
    }

    /// The epoch cache without entries starting at or after `below_offset`.
    pub(crate) fn epochs_below(&self, below_offset: i64) -> EpochCache {
        let mut epochs = self.epochs.clone();
        epochs.truncate_from_end(below_offset);
        epochs
    }

    fn append(
        &mut self,
        records: Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let frames = self.validate_batches(&records)?;
        let log_append_time = self.config.timestamp_type == TimestampType::LogAppendTime;
        let expiration_ms = self.config.producer_id_expiration_ms;
        self.producers.maybe_expire(now_ms, expiration_ms);
        let mark = self.producers.undo_mark();
        let mut stamped = Vec::with_capacity(frames.len());
        let mut next_offset = self.log_end_offset;
        for (position, header, marker) in frames {
            match self.producers.check(&header, marker, now_ms, expiration_ms) {
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
            self.producers.apply(&header, marker, now_ms);
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

    /// A Raft entry's append (see `entries.rs`): never refused for producer state, which the
    /// leader's Kafka layer checked before proposing (a Raft store cannot drop an entry), and
    /// updated as an ordinary append so a failed flush rolls it back.
    pub(crate) fn append_raft_entry(
        &mut self,
        batch: Bytes,
        epoch: i32,
        now_ms: i64,
        stamp: crate::entries::EntryStamp,
    ) -> Result<AppendInfo, StorageError> {
        use crate::entries::EntryStamp;
        let (position, header, marker) = match stamp {
            EntryStamp::Propose => {
                let mut frames = self.validate_batches(&batch)?;
                if frames.len() != 1 {
                    return Err(StorageError::NotOneBatch);
                }
                frames.pop().expect("one frame")
            }
            EntryStamp::Replicated => {
                // The leader validated it against the topic's limits; a follower checks only
                // that the bytes are intact and continue its log (its config may lag).
                let header = batch::validate(&batch).map_err(|error| corrupt(0, &error))?;
                if header.total_bytes() != batch.len() {
                    return Err(StorageError::NotOneBatch);
                }
                if header.base_offset != self.log_end_offset
                    || header.partition_leader_epoch != epoch
                {
                    return Err(StorageError::MisplacedEntry {
                        base_offset: header.base_offset,
                        epoch: header.partition_leader_epoch,
                        expected_offset: self.log_end_offset,
                        expected_epoch: epoch,
                    });
                }
                (0, header, marker_of(&header, &batch))
            }
        };
        let log_append_time = matches!(stamp, EntryStamp::Propose)
            && self.config.timestamp_type == TimestampType::LogAppendTime;
        let mark = self.producers.undo_mark();
        let mut header = header;
        header.base_offset = self.log_end_offset;
        header.partition_leader_epoch = epoch;
        if log_append_time {
            header.max_timestamp = now_ms;
        }
        self.producers.apply(&header, marker, now_ms);
        let next_offset = header.last_offset() + 1;
        self.maybe_roll(batch.len() as u64, next_offset, now_ms, mark);
        let base_offset = self.log_end_offset;
        self.append_stamped(&batch, &[(position, header)], log_append_time, now_ms);
        self.epochs_dirty |= self.epochs.assign(epoch, base_offset);
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            duplicate: false,
        })
    }

    /// What appending `records` would do to the producer state, without appending: the
    /// leader's check before it proposes a batch.
    pub(crate) fn check_producer(
        &self,
        records: &Bytes,
        now_ms: i64,
    ) -> Result<SequenceCheck, StorageError> {
        let frames = self.validate_batches(records)?;
        if frames.len() != 1 {
            return Err(StorageError::NotOneBatch);
        }
        self.producers.check(
            &frames[0].1,
            frames[0].2,
            now_ms,
            self.config.producer_id_expiration_ms,
        )
    }

    fn validate_batches(
        &self,
        records: &Bytes,
    ) -> Result<Vec<(usize, BatchHeader, Option<TxnMarker>)>, StorageError> {
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
            // A transaction marker, or a coordinator's transactional write, carries no
            // sequence (Kafka's NO_SEQUENCE); the broker refuses such batches from clients.
            let sequence_ok = header.base_sequence >= 0 || header.is_transactional();
            if header.has_producer_id() && (!sequence_ok || header.producer_epoch < 0) {
                return Err(StorageError::InvalidRecord {
                    reason: "a batch with a producer id needs a sequence and an epoch",
                });
            }
            let marker = marker_of(&header, &bytes);
            frames.push((position, header, marker));
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
        self.producers
            .expire(now_ms, self.config.producer_id_expiration_ms);
        let producer_snapshot = self.producers.encode_at_mark(mark);
        let active = self.segments.last_mut().expect("segments is never empty");
        active.finish_time_index();
        active.sealed = true;
        active.seal_pending = Some(SealWork { producer_snapshot });
        let next_entry = active.entries.as_ref().map(SegmentEntries::end);
        let mut next = Segment::new(self.log_end_offset, None);
        if let Some(first) = next_entry {
            next = next.with_entries(first);
        }
        self.segments.push(next);
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
            let entry = active.entries.as_ref().map(|entries| EntryInfo {
                index: entries.end(),
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                segment_base_offset: active.base_offset,
                position: active.size_bytes,
                epoch: header.partition_leader_epoch,
            });
            if let Some(entry) = entry {
                self.entry_window.push(entry, self.durable_end_offset);
            }
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

    /// Decides what a flush does: every segment from the first with work, each up to what it
    /// holds now. Clears `epochs_dirty` (a failed flush sets it again).
    fn plan_flush(&mut self) -> FlushPlan {
        let first = self.segments.iter().position(Segment::needs_flush);
        let segments = match first {
            None => Vec::new(),
            Some(first) => self.segments[first..]
                .iter()
                .map(|segment| self.plan_segment(segment))
                .collect(),
        };
        let epochs = self
            .epochs_dirty
            .then(|| self.epochs_below(self.log_end_offset));
        self.epochs_dirty = false;
        FlushPlan {
            end_offset: self.log_end_offset,
            segments,
            epochs,
        }
    }

    fn plan_segment(&self, segment: &Segment) -> SegmentFlush {
        let write = (segment.durable_bytes < segment.size_bytes).then(|| segment.flush_target());
        let seal = segment.seal_pending.as_ref().map(|work| SealPlan {
            size_bytes: segment.size_bytes,
            end_offset: segment.next_offset,
            indexes: segment.indexes.borrow().clone(),
            work: work.clone(),
            epochs: self.epochs_below(segment.next_offset),
            entries: segment.entries.as_ref().map(|entries| {
                let sparse = entries.sparse.borrow().clone().unwrap_or_default();
                entry_index::encode(entries.first, entries.count, true, &sparse)
            }),
            aborted: self
                .producers
                .aborted_in(segment.base_offset, segment.next_offset),
        });
        SegmentFlush {
            base_offset: segment.base_offset,
            create_file: segment.file.is_none(),
            write,
            seal,
        }
    }

    /// After every planned write, sync and seal succeeded.
    fn commit_flush(&mut self, plan: &FlushPlan) {
        assert!(self.durable_end_offset <= plan.end_offset);
        assert!(plan.end_offset <= self.log_end_offset);
        for planned in &plan.segments {
            let segment = self.planned(planned.base_offset);
            assert!(segment.file.is_some());
            assert!(planned.seal.is_none() || segment.seal_pending.is_none());
            if let Some(target) = &planned.write {
                assert_eq!(segment.durable_next_offset, target.next_offset);
            }
        }
        self.durable_end_offset = plan.end_offset;
        self.producers.commit_below(plan.end_offset);
        // Without Raft the durable end is the high watermark; a Raft log's moves at apply
        // (`PartitionLog::advance_stable`).
        if !self.entry_index {
            self.producers.advance_stable(plan.end_offset);
        }
        self.tail
            .evict(self.config.tail_cache_bytes_max, self.durable_end_offset);
        self.entry_window.evict(self.durable_end_offset);
    }

    /// Forgets every non-durable append (also those made during the failed flush) and returns
    /// the file work that goes with it.
    fn rollback_to_durable(&mut self) -> Rollback {
        for segment in &mut self.segments {
            segment.rollback_to_durable();
        }
        let mut removed = Vec::new();
        // An empty successor goes only while the seal before it is still pending: a persisted
        // seal (its `.txnindex` written, its aborts gone from memory, its snapshot on disk)
        // stays, with an empty active segment after it (whose file the next flush creates).
        while self.segments.len() > 1
            && self.active().durable_bytes == 0
            && self.segments[self.segments.len() - 2]
                .seal_pending
                .is_some()
        {
            removed.extend(self.segments.pop());
        }
        let active = self.segments.last_mut().expect("segments is never empty");
        if active.sealed {
            // Its successor held nothing durable and its seal was not persisted: it is the
            // active segment again, and its aborts are still listed in memory.
            assert!(!active.txn_index, "a persisted seal undone");
            active.sealed = false;
            active.seal_pending = None;
        }
        let trim = active.file.clone().map(|file| (file, active.durable_bytes));
        self.log_end_offset = active.next_offset;
        self.durable_end_offset = self.log_end_offset;
        self.producers.rollback_from_offset(self.log_end_offset);
        self.epochs.truncate_from_end(self.log_end_offset);
        // The planned checkpoint may not have been written.
        self.epochs_dirty = true;
        self.tail.truncate_from(self.log_end_offset);
        self.entry_window.truncate_from_offset(self.log_end_offset);
        Rollback { removed, trim }
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
        BatchError::UndecodableRecords { .. } => "undecodable records",
    };
    StorageError::CorruptBatch { position, reason }
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
