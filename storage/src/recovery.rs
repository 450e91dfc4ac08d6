//! Opening a partition log: clean restart, crash recovery, and clean shutdown.
//!
//! Startup cost grows with the active segment (and the unflushed tail), never with total data:
//! - sealed segments are trusted. Opening one costs a stat and a 12-byte read of the last time
//!   index entry; its indexes are read lazily on first use, and rebuilt only if missing or
//!   damaged. (A flush makes a segment's data durable before the next segment's file exists,
//!   so only the last segment can have a torn tail.)
//! - after a clean shutdown, the clean-shutdown record (`clean.rs`: beside the log, or in a
//!   shard's book) holds the active segment's logical size, end offset and indexes, the
//!   producer state and the epochs: nothing is scanned. The record is consumed before the log
//!   accepts writes, so it never describes a log that changed after it was written.
//! - after a crash, the active segment is scanned batch by batch (CRC-checked, offsets must
//!   continue); the first torn or corrupt batch and everything after it are truncated.
//!   O_DIRECT zero padding past the logical end fails validation and is truncated likewise.
//! - otherwise producer state is loaded from the newest snapshot at or below the log end and
//!   the batches after it are replayed; the leader epoch cache from its checkpoint plus the
//!   active segment.
//!
//! `open` builds the segments and producer/epoch state in locals and stores them in the log's
//! state under short borrows; helpers shared with truncation (`load_producer_snapshot`,
//! `replay`) work on caller-owned state, so no borrow is held across their I/O.

use std::cell::{OnceCell, RefCell};
use std::path::PathBuf;

use spool_protocol::batch::BatchHeader;

use crate::clean::{CleanFrom, CleanRecord, CleanShutdown, CleanState};
use crate::entry_index::{self, EntryWindow};
use crate::epoch::EpochCache;
use crate::fs::{failpoints, Backend, SegmentFile};
use crate::index::{decode_time_entry, OffsetIndex, TimeIndex, TIME_ENTRY_BYTES};
use crate::log::{
    close_shared, io_error, snapshot_path, write_indexes_of, Gate, LogState, PartitionLog,
    EPOCH_CHECKPOINT_FILE,
};
use crate::producer::ProducerState;
use crate::segment::{self, Indexes, Segment};
use crate::tail::TailCache;
use crate::{LogConfig, StorageError};

impl PartitionLog {
    /// Opens (creating if absent) the partition directory and recovers it.
    pub async fn open(
        dir: PathBuf,
        config: LogConfig,
        backend: Backend,
    ) -> Result<PartitionLog, StorageError> {
        Self::open_with(dir, config, backend, false, CleanFrom::Dir).await
    }

    /// `open`, with the Raft entry index maintained when `entry_index` (see `entries.rs`), and
    /// the record of the last clean close taken from `clean` (see `clean.rs`).
    pub async fn open_with(
        dir: PathBuf,
        config: LogConfig,
        backend: Backend,
        entry_index: bool,
        clean: CleanFrom,
    ) -> Result<PartitionLog, StorageError> {
        backend.create_dir_all(&dir).map_err(io_error(&dir))?;
        backend
            .prime_iopoll_probe(&dir)
            .await
            .map_err(io_error(&dir))?;
        let mut names = backend.list_dir(&dir).map_err(io_error(&dir))?;
        if crate::cleaner::recover_swaps(&backend, &dir, &names).await? {
            names = backend.list_dir(&dir).map_err(io_error(&dir))?;
        }
        let mut bases: Vec<i64> = names
            .iter()
            .filter_map(|name| segment::parse_file_name(name, "log"))
            .collect();
        bases.sort_unstable();
        remove_leftovers(&backend, &dir, &names, &bases).await?;

        // Consumed before the log can change (a file in the directory is removed durably).
        let in_dir = CleanRecord::take_from(&backend, &dir).await?;
        let record = match clean {
            CleanFrom::Dir => in_dir,
            CleanFrom::Given(record) => record,
        };
        let clean = record.as_ref().and_then(CleanRecord::decode);
        if record.is_some() && clean.is_none() {
            tracing::warn!(dir = %dir.display(), "damaged clean-shutdown record; recovering as after a crash");
        }

        let log = PartitionLog {
            dir,
            backend,
            state: RefCell::new(LogState {
                config,
                segments: Vec::new(),
                log_end_offset: 0,
                durable_end_offset: 0,
                tail: TailCache::default(),
                producers: ProducerState::default(),
                epochs: EpochCache::default(),
                epochs_dirty: false,
                entry_index,
                entry_window: EntryWindow::default(),
                start_floor: 0,
                cleaned_to: 0,
                next_delete_horizon: None,
            }),
            gate: Gate::default(),
            sync_rounds: OnceCell::new(),
        };
        let mut segments = Vec::new();
        if bases.is_empty() {
            if entry_index {
                // Before the log file, as at every segment's creation.
                let sidecar = entry_index::encode(0, 0, false, &Default::default());
                log.write_sidecar(0, &sidecar).await?;
            }
            let path = segment::log_path(&log.dir, 0);
            let file = log
                .backend
                .open_file(&path)
                .await
                .map_err(io_error(&path))?;
            log.backend
                .sync_dir(&log.dir)
                .await
                .map_err(io_error(&log.dir))?;
            segments.push(Segment::new(0, Some(file)));
        }
        let mut trusted = false;
        for (k, &base_offset) in bases.iter().enumerate() {
            let path = segment::log_path(&log.dir, base_offset);
            let file = log
                .backend
                .open_file(&path)
                .await
                .map_err(io_error(&path))?;
            let segment = match bases.get(k + 1) {
                Some(&next_base) => log.open_sealed(base_offset, next_base, file).await?,
                None => {
                    let (segment, used) = log
                        .recover_active(base_offset, file, clean.as_ref())
                        .await?;
                    trusted = used;
                    segment
                }
            };
            segments.push(segment);
        }
        // Trusted only if it described the active segment as found.
        let clean = clean.filter(|_| trusted);
        if entry_index {
            let sidecar = clean.as_ref().and_then(|c| c.sidecar.clone());
            log.resolve_entries(&mut segments, sidecar).await?;
        }
        {
            let mut state = log.state.borrow_mut();
            state.segments = segments;
            state.log_end_offset = state.active().next_offset;
            state.durable_end_offset = state.log_end_offset;
        }
        let recorded = clean
            .as_ref()
            .map(|c| (c.epochs.clone(), c.producers.clone()));
        log.recover_epochs_and_producers(recorded).await?;
        log.settle_aborted(&names).await?;
        let floor = log.read_start_floor().await?;
        let (cleaned_to, delete_horizon) = log.read_cleaner_checkpoint().await?;
        {
            let mut state = log.state.borrow_mut();
            state.start_floor = floor;
            state.cleaned_to = cleaned_to;
            state.next_delete_horizon = delete_horizon;
            // Without Raft everything recovered is durable, so below the high watermark.
            if !state.entry_index {
                let end = state.durable_end_offset;
                state.producers.advance_stable(end);
            }
        }
        tracing::debug!(dir = %log.dir.display(), clean = trusted,
            start = log.log_start_offset(), end = log.log_end_offset(), "partition log opened");
        Ok(log)
    }

    /// A sealed segment: trusted as is; only its max timestamp is read now.
    async fn open_sealed(
        &self,
        base_offset: i64,
        next_base: i64,
        file: SegmentFile,
    ) -> Result<Segment, StorageError> {
        let path = segment::log_path(&self.dir, base_offset);
        let size = file.size().await.map_err(io_error(&path))?;
        let mut segment = Segment::new(base_offset, Some(file));
        segment.size_bytes = size;
        segment.next_offset = next_base;
        segment.sealed = true;
        segment.indexes = RefCell::new(None);
        segment.bytes_since_index = 0;
        let index_exists = self
            .backend
            .exists(&segment::index_path(&self.dir, base_offset));
        let last_time = if index_exists {
            self.last_time_entry(base_offset).await?
        } else {
            None
        };
        segment.max_timestamp = match last_time {
            Some(Some((ts, relative))) => (ts, base_offset + i64::from(relative)),
            Some(None) => (-1, -1),
            None => {
                segment.durable_bytes = size;
                let (indexes, max_timestamp) = self.rebuild_indexes(&segment.view()).await?;
                write_indexes_of(&self.backend, &self.dir, base_offset, &indexes).await?;
                *segment.indexes.borrow_mut() = Some(indexes);
                max_timestamp
            }
        };
        set_durable(&mut segment);
        Ok(segment)
    }

    /// The last `.timeindex` entry: Some(None) if the index is empty, None if missing or damaged.
    async fn last_time_entry(
        &self,
        base_offset: i64,
    ) -> Result<Option<Option<(i64, u32)>>, StorageError> {
        let path = segment::time_index_path(&self.dir, base_offset);
        if !self.backend.exists(&path) {
            return Ok(None);
        }
        let file = self
            .backend
            .open_file(&path)
            .await
            .map_err(io_error(&path))?;
        let size = file.size().await.map_err(io_error(&path))?;
        let entry = TIME_ENTRY_BYTES as u64;
        let result = if size % entry != 0 {
            None
        } else if size == 0 {
            Some(None)
        } else {
            let bytes = file
                .read_at(size - entry, TIME_ENTRY_BYTES)
                .await
                .map_err(io_error(&path))?;
            (bytes.len() == TIME_ENTRY_BYTES).then(|| Some(decode_time_entry(&bytes)))
        };
        file.close().await.map_err(io_error(&path))?;
        Ok(result)
    }

    /// The last segment: trusted from the clean-shutdown record if it describes this segment
    /// (then the bool is true), scanned otherwise.
    async fn recover_active(
        &self,
        base_offset: i64,
        file: SegmentFile,
        clean: Option<&CleanState>,
    ) -> Result<(Segment, bool), StorageError> {
        let path = segment::log_path(&self.dir, base_offset);
        let file_size = file.size().await.map_err(io_error(&path))?;
        let clean = clean
            .filter(|c| c.marker.base_offset == base_offset && c.marker.size_bytes <= file_size);
        let mut segment = Segment::new(base_offset, Some(file));
        if let Some(clean) = clean {
            let marker = clean.marker;
            segment.size_bytes = marker.size_bytes;
            segment.next_offset = marker.next_offset;
            segment.rolling_ms = (marker.rolling_ms >= 0).then_some(marker.rolling_ms);
            segment.max_timestamp = marker.max_timestamp;
            segment.bytes_since_index = marker.bytes_since_index;
            set_durable(&mut segment);
            let view = segment.view();
            let recorded = clean.indexes.as_ref().and_then(|(offsets, times)| {
                let offsets = OffsetIndex::decode(offsets, view.size_bytes)?;
                let times = TimeIndex::decode(times)?;
                Some(Indexes { offsets, times })
            });
            let indexes = match recorded {
                Some(indexes) => indexes,
                None => self.rebuild_indexes(&view).await?.0,
            };
            *segment.indexes.borrow_mut() = Some(indexes);
        } else {
            segment = self.scan_active(segment, file_size).await?;
        }
        load_tail_page(&mut segment, &path).await?;
        Ok((segment, clean.is_some()))
    }

    /// Rebuilds the active segment's state by scanning it; truncates an invalid tail.
    async fn scan_active(&self, segment: Segment, file_size: u64) -> Result<Segment, StorageError> {
        let path = segment::log_path(&self.dir, segment.base_offset);
        let file = segment.file.expect("the active segment was opened");
        let mut tracker = Segment::new(segment.base_offset, None);
        if self.state.borrow().entry_index {
            // Counted from 0 here; `resolve_entries` sets the first index.
            tracker = tracker.with_entries(0);
        }
        let interval = u64::from(self.state.borrow().config.index_interval_bytes);
        let mut first_timestamp = None;
        let scan = segment::scan_batches(
            &file,
            0,
            file_size,
            Some(segment.base_offset),
            segment::SCAN_CHUNK_BYTES,
            |_, header, _| {
                tracker.track_batch(header, interval);
                first_timestamp.get_or_insert(header.max_timestamp);
                true
            },
        )
        .await
        .map_err(io_error(&path))?;
        if scan.valid_bytes < file_size {
            tracing::warn!(path = %path.display(), valid = scan.valid_bytes, file_size,
                "truncating the invalid tail of the active segment");
            file.truncate(scan.valid_bytes)
                .await
                .map_err(io_error(&path))?;
            file.fdatasync().await.map_err(io_error(&path))?;
        }
        tracker.file = Some(file);
        tracker.rolling_ms = first_timestamp;
        set_durable(&mut tracker);
        Ok(tracker)
    }

    /// `clean`: the leader epochs and producer state a clean close recorded at the log's end.
    async fn recover_epochs_and_producers(
        &self,
        clean: Option<(bytes::Bytes, bytes::Bytes)>,
    ) -> Result<(), StorageError> {
        let (log_start, log_end, active_base) = {
            let state = self.state.borrow();
            (
                state.log_start_offset(),
                state.log_end_offset,
                state.active().base_offset,
            )
        };
        let (clean_epochs, clean_producers) = match clean {
            Some((epochs, producers)) => (EpochCache::decode(&epochs), Some(producers)),
            None => (None, None),
        };
        let mut epochs_dirty = false;
        let (mut epochs, epochs_from) = match clean_epochs {
            Some(mut epochs) => {
                // Written by every flush that changed it, so normally equal: the checkpoint
                // follows the record from here on.
                epochs_dirty |= epochs.truncate_from_end(log_end);
                epochs_dirty |= self.read_epoch_checkpoint().await? != Some(epochs.clone());
                (epochs, log_end)
            }
            None => match self.read_epoch_checkpoint().await? {
                Some(mut epochs) => {
                    epochs_dirty |= epochs.truncate_from_end(log_end);
                    (epochs, active_base)
                }
                None => {
                    epochs_dirty = true;
                    (EpochCache::default(), log_start)
                }
            },
        };
        let recorded =
            clean_producers.and_then(|bytes| ProducerState::decode(&bytes, wall_clock_ms()));
        let (mut producers, producers_from) = match recorded {
            Some(producers) => (producers, log_end),
            None => self.load_producer_snapshot(log_start, log_end).await?,
        };
        let replay = Replay {
            from: epochs_from.min(producers_from),
            end: log_end,
            epochs_from,
            producers_from,
        };
        epochs_dirty |= self.replay(replay, &mut producers, &mut epochs).await?;
        if epochs_dirty {
            self.write_epochs(&epochs).await?;
        }
        let mut state = self.state.borrow_mut();
        state.producers = producers;
        state.epochs = epochs;
        state.epochs_dirty = false;
        Ok(())
    }

    /// Puts every listed abort of a sealed segment into that segment's `.txnindex` and removes
    /// the active segment's (the "Open" rules of `txn_index.rs`). `names` is the directory's
    /// listing, taken after leftovers were removed.
    async fn read_epoch_checkpoint(&self) -> Result<Option<EpochCache>, StorageError> {
        let path = self.dir.join(EPOCH_CHECKPOINT_FILE);
        let checkpoint = self
            .backend
            .read_file(&path)
            .await
            .map_err(io_error(&path))?;
        Ok(checkpoint.and_then(|bytes| EpochCache::decode(&bytes)))
    }

    async fn settle_aborted(&self, names: &[String]) -> Result<(), StorageError> {
        let with_file: std::collections::HashSet<i64> = names
            .iter()
            .filter_map(|name| segment::parse_file_name(name, "txnindex"))
            .collect();
        let (missing, active_base) = {
            let mut state = self.state.borrow_mut();
            let active_base = state.active().base_offset;
            let sealed = state.segments.len() - 1;
            for segment in &mut state.segments[..sealed] {
                segment.txn_index = with_file.contains(&segment.base_offset);
            }
            let log_start = state.log_start_offset();
            let below = state.producers.take_aborted_below(active_base);
            let mut missing: Vec<(i64, Vec<crate::AbortedTxn>)> = Vec::new();
            for txn in below.into_iter().filter(|t| t.last_offset >= log_start) {
                let segment = &state.segments[state.segment_index(txn.last_offset)];
                if segment.txn_index {
                    continue;
                }
                match missing.last_mut() {
                    Some((base, entries)) if *base == segment.base_offset => entries.push(txn),
                    _ => missing.push((segment.base_offset, vec![txn])),
                }
            }
            (missing, active_base)
        };
        if with_file.contains(&active_base) {
            let path = crate::txn_index::txn_index_path(&self.dir, active_base);
            self.backend
                .remove_file(&path)
                .await
                .map_err(io_error(&path))?;
        }
        for (base, entries) in missing {
            crate::txn_index::write(&self.backend, &self.dir, base, &entries).await?;
            let at = self.state.borrow().position_of(base);
            if let Some(i) = at {
                self.state.borrow_mut().segments[i].txn_index = true;
            }
        }
        Ok(())
    }

    /// Loads the newest valid snapshot at or below `log_end` (deleting newer ones) and
    /// returns it with the offset from which batches must be replayed.
    pub(crate) async fn load_producer_snapshot(
        &self,
        log_start: i64,
        log_end: i64,
    ) -> Result<(ProducerState, i64), StorageError> {
        let mut offsets = self.snapshot_offsets()?;
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        for offset in offsets {
            let path = snapshot_path(&self.dir, offset);
            if offset > log_end {
                self.backend
                    .remove_file(&path)
                    .await
                    .map_err(io_error(&path))?;
                continue;
            }
            let bytes = self
                .backend
                .read_file(&path)
                .await
                .map_err(io_error(&path))?;
            let decoded = bytes.and_then(|bytes| ProducerState::decode(&bytes, wall_clock_ms()));
            if let Some(state) = decoded {
                return Ok((state, offset.max(log_start)));
            }
        }
        Ok((ProducerState::default(), log_start))
    }

    /// Replays the durable batches in `[from, end)` into `epochs` (batches at or after
    /// `epochs_from`) and `producers` (at or after `producers_from`). Returns whether the
    /// epoch cache changed. Reads segment views, so the log may change meanwhile.
    pub(crate) async fn replay(
        &self,
        replay: Replay,
        producers: &mut ProducerState,
        epochs: &mut EpochCache,
    ) -> Result<bool, StorageError> {
        let Replay {
            from,
            end,
            epochs_from,
            producers_from,
        } = replay;
        if from >= end {
            return Ok(false);
        }
        let views: Vec<_> = {
            let state = self.state.borrow();
            let first = state.segment_index(from);
            state.segments[first..]
                .iter()
                .take_while(|segment| segment.base_offset < end)
                .map(Segment::view)
                .collect()
        };
        let mut epochs_changed = false;
        for (k, view) in views.iter().enumerate() {
            let Some(file) = view.file.as_ref() else {
                continue;
            };
            let position = if k == 0 {
                let indexes = self.indexes_of(view).await?;
                u64::from(indexes.offsets.lookup(view.relative(from)))
            } else {
                0
            };
            let path = segment::log_path(&self.dir, view.base_offset);
            let visit = |_: u64, header: &BatchHeader, batch: &bytes::Bytes| {
                if header.base_offset >= end {
                    return false;
                }
                if header.last_offset() >= from {
                    if header.base_offset >= producers_from {
                        producers.replay(header, crate::log::marker_of(header, batch));
                    }
                    if header.base_offset >= epochs_from {
                        epochs_changed |=
                            epochs.assign(header.partition_leader_epoch, header.base_offset);
                    }
                }
                true
            };
            segment::scan_batches(
                file,
                position,
                view.durable_bytes,
                None,
                segment::SCAN_CHUNK_BYTES,
                visit,
            )
            .await
            .map_err(io_error(&path))?;
        }
        Ok(epochs_changed)
    }

    /// Clean shutdown of this log on its own: [`Self::close_record`], written as the
    /// `clean-shutdown` file in the log's directory, so the next open scans nothing.
    pub async fn close(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        let backend = self.backend.clone();
        let record = self.close_record().await?;
        record.write_in(&backend, &dir).await
    }

    /// Clean shutdown: flushes, closes the files and returns what the next open needs to scan
    /// nothing (see `clean.rs`), for the caller to store: in the log's directory
    /// ([`CleanRecord::write_in`]) or in a shard's book. Until it is stored the log is closed
    /// as after a crash.
    pub async fn close_record(self) -> Result<CleanRecord, StorageError> {
        self.flush().await?;
        let clean = {
            let mut state = self.state.borrow_mut();
            let expiration_ms = state.config.producer_id_expiration_ms;
            state.producers.expire_at_clock(expiration_ms);
            let active = state.active();
            active.finish_time_index();
            let indexes = active.indexes.borrow().clone();
            let last_index_position = u64::from(
                indexes
                    .as_ref()
                    .map_or(0, |indexes| indexes.offsets.lookup(u32::MAX)),
            );
            let marker = CleanShutdown {
                base_offset: active.base_offset,
                size_bytes: active.size_bytes,
                next_offset: active.next_offset,
                rolling_ms: active.rolling_ms.unwrap_or(-1),
                max_timestamp: active.max_timestamp,
                bytes_since_index: active.size_bytes - last_index_position,
            };
            let sidecar = active.entries.as_ref().map(|entries| {
                let sparse = entries.sparse.borrow().clone().unwrap_or_default();
                entry_index::encode(entries.first, entries.count, false, &sparse).into()
            });
            CleanState {
                marker,
                indexes: indexes.map(|i| (i.offsets.encode().into(), i.times.encode().into())),
                sidecar,
                producers: state.producers.encode().into(),
                epochs: state.epochs_below(i64::MAX).encode().into(),
            }
        };
        let record = CleanRecord::encode(&clean);
        self.backend
            .failpoint(failpoints::CLOSE_BEFORE_MARKER)
            .map_err(io_error(&self.dir))?;
        self.close_files().await?;
        Ok(record)
    }

    /// Closes every segment file; the log is unusable afterwards (only `close` and `delete`,
    /// which consume it, call this).
    pub(crate) async fn close_files(&self) -> Result<(), StorageError> {
        let segments = std::mem::take(&mut self.state.borrow_mut().segments);
        for segment in segments {
            if let Some(file) = segment.file {
                let path = segment::log_path(&self.dir, segment.base_offset);
                close_shared(file).await.map_err(io_error(&path))?;
            }
        }
        Ok(())
    }
}

/// The range and the starting points of a [`PartitionLog::replay`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replay {
    pub from: i64,
    pub end: i64,
    pub epochs_from: i64,
    pub producers_from: i64,
}

fn set_durable(segment: &mut Segment) {
    segment.durable_bytes = segment.size_bytes;
    segment.durable_next_offset = segment.next_offset;
    segment.durable_max_timestamp = segment.max_timestamp;
}

/// Reads the partial last block of a segment, which every flush rewrites.
pub(crate) async fn load_tail_page(
    segment: &mut Segment,
    path: &std::path::Path,
) -> Result<(), StorageError> {
    if let Some(file) = segment.file.as_ref() {
        segment.tail_page = read_tail_page(file, segment.durable_bytes, path).await?;
    }
    Ok(())
}

/// The bytes from the last aligned boundary below `durable_bytes` up to it.
pub(crate) async fn read_tail_page(
    file: &SegmentFile,
    durable_bytes: u64,
    path: &std::path::Path,
) -> Result<Vec<u8>, StorageError> {
    let alignment = file.alignment();
    let start = durable_bytes - durable_bytes % alignment;
    let len = (durable_bytes - start) as usize;
    let bytes = file.read_at(start, len).await.map_err(io_error(path))?;
    if bytes.len() != len {
        let source = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "segment shorter than recorded",
        );
        return Err(StorageError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(bytes.to_vec())
}

/// Removes temporary files of interrupted atomic writes, segments retention had retired
/// (`*.deleted`) and index files without a segment.
async fn remove_leftovers(
    backend: &Backend,
    dir: &std::path::Path,
    names: &[String],
    bases: &[i64],
) -> Result<(), StorageError> {
    for name in names {
        let orphan_index =
            ["index", "timeindex", "raftindex", "txnindex"]
                .iter()
                .any(|extension| {
                    segment::parse_file_name(name, extension)
                        .is_some_and(|base| !bases.contains(&base))
                });
        if name.ends_with(".tmp") || name.ends_with(segment::DELETED_SUFFIX) || orphan_index {
            let path = dir.join(name);
            backend.remove_file(&path).await.map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch: the time given to producers loaded from a snapshot
/// without timestamps (the log's callers pass `now_ms` everywhere else).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}
