//! Operations that remove data: suffix truncation (for Raft), restarting the log empty at an
//! offset (for Raft), retention, deleting the segments below an offset (compaction by
//! rewrite), and deleting the partition. Each works on whole batches and keeps indexes, producer state, the epoch cache
//! and the tail cache consistent with the remaining log.
//!
//! All but `delete` hold the log's flush gate (so no flush runs meanwhile) and follow plan /
//! run / commit without holding a state borrow across I/O (see `log.rs`). Retention holds it
//! only to detach segments and rename their log files to `*.deleted`; unlinking them (tens of
//! milliseconds for a large file) happens after, without the gate.
//!
//! Invariants:
//! - retention and `delete_segments_below` never delete the active segment, nor a segment with data that is not yet
//!   durable or whose seal is not yet persisted. It detaches segments from the state first,
//!   then deletes their files: a read already holding a detached segment finishes on the open
//!   file, later reads of those offsets get `OffsetOutOfRange`.
//! - `truncate_suffix` first flushes, then computes the truncated segment and the producer
//!   state at the new end from durable data, and cuts the in-memory log in one synchronous
//!   step before touching files. Appends that arrive while it runs are accepted and then
//!   discarded by the cut (as after a failed flush: their acks must fail); appends after the
//!   cut continue from the new end. Reads never fail because of it, except that offsets
//!   beyond the new end become out of range.

use std::path::PathBuf;
use std::rc::Rc;

use crate::entry_index::{self, EntrySparse, SegmentEntries};
use crate::epoch::EpochCache;
use crate::fs::SegmentFile;
use crate::index::OffsetIndex;
use crate::log::{close_shared, io_error, snapshot_path, LogState, PartitionLog};
use crate::producer::ProducerState;
use crate::recovery::{read_tail_page, Replay};
use crate::segment::{self, deleted_path, Indexes, Segment, SegmentView};
use crate::txn_index;
use crate::StorageError;

/// Files `retire_detached` lists per segment: log, offset index, time index, entry index,
/// aborted transaction index (unlinking a file that does not exist is not an error).
const RETIRED_FILES_PER_SEGMENT: usize = 5;

/// The state of the truncated segment, computed before the cut.
struct Cut {
    base_offset: i64,
    position: u64,
    new_end: i64,
    indexes: Indexes,
    max_timestamp: (i64, i64),
    bytes_since_index: u64,
    tail_page: Vec<u8>,
    producers: ProducerState,
    /// The cut segment's entry count and sparse entries, when entry-indexed.
    entries: Option<(u64, EntrySparse)>,
}

impl PartitionLog {
    /// Drops every batch at or after `offset`; a batch containing `offset` is dropped whole.
    /// See the module header for what concurrent appends see.
    pub async fn truncate_suffix(&self, offset: i64) -> Result<(), StorageError> {
        let _gate = self.gate.lock().await;
        if !self.state.borrow().check_truncation(offset)? {
            return Ok(());
        }
        // With everything durable, truncation only has to deal with files. The flush covers
        // the whole log as of now, so `offset` is durable below.
        self.flush_locked().await?;
        let view = {
            let state = self.state.borrow();
            state.segments[state.segment_index(offset)].view()
        };
        let cut = self.plan_cut(&view, offset).await?;
        let (position, new_end) = (cut.position, cut.new_end);
        let (detached, epochs) = self.state.borrow_mut().cut(cut);
        for segment in detached {
            self.remove_segment_files(segment).await?;
        }
        // The cut segment is active again: its aborts below the cut are listed in memory
        // (from the snapshot and the replay), so a file of an earlier seal must go.
        let txn_path = txn_index::txn_index_path(&self.dir, view.base_offset);
        self.backend
            .remove_file(&txn_path)
            .await
            .map_err(io_error(&txn_path))?;
        let path = segment::log_path(&self.dir, view.base_offset);
        if let Some(file) = view.file.as_ref() {
            file.truncate(position).await.map_err(io_error(&path))?;
            file.fdatasync().await.map_err(io_error(&path))?;
        }
        self.backend
            .sync_dir(&self.dir)
            .await
            .map_err(io_error(&self.dir))?;
        if let Some(epochs) = epochs {
            self.write_epochs(&epochs).await?;
        }
        tracing::debug!(new_end, "log truncated");
        Ok(())
    }

    /// Drops the whole log and restarts it empty at `offset`, as Kafka's
    /// `truncateFullyAndStartAt`: a Raft follower whose log is entirely below (or replaced by) a
    /// snapshot continues at the snapshot's next index. Appends made while this runs are
    /// dropped (their acks must fail); appends after the cut continue at `offset`.
    ///
    /// Crash safety: old segments are retired (renamed `*.deleted`) and the directory synced
    /// before the new segment's file is created, so a crash leaves the old log (possibly only
    /// its newest segments, as after retention), an empty log at 0, or the new log; never old
    /// segments beside the new one, which recovery would read as one log with a hole. A caller
    /// that must not see the old log again records `offset` durably first and re-applies it
    /// after opening (the Raft log store does, with its purge point).
    ///
    /// On an entry-indexed log the numbering goes on: the first entry appended afterwards
    /// gets the index the next entry had (`truncate_fully_and_start_at_entry` chooses it).
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), StorageError> {
        self.restart(offset, None).await
    }

    /// `truncate_fully_and_start_at`, restarting the entry numbering at `index` when given.
    pub(crate) async fn restart(
        &self,
        offset: i64,
        index: Option<u64>,
    ) -> Result<(), StorageError> {
        assert!(offset >= 0, "negative start offset {offset}");
        let doomed = {
            let _gate = self.gate.lock().await;
            let detached = self.state.borrow_mut().restart_at(offset, index);
            let mut doomed = Vec::with_capacity(RETIRED_FILES_PER_SEGMENT * detached.len());
            for segment in detached.into_iter().rev() {
                let base = segment.base_offset;
                let path = segment::log_path(&self.dir, base);
                // A segment without a file was never flushed: nothing of it is on disk.
                if let Some(file) = segment.file {
                    close_shared(file).await.map_err(io_error(&path))?;
                    let retired = deleted_path(&path);
                    self.backend
                        .rename(&path, &retired)
                        .map_err(io_error(&path))?;
                    doomed.push(retired);
                }
                doomed.push(segment::index_path(&self.dir, base));
                doomed.push(segment::time_index_path(&self.dir, base));
                doomed.push(entry_index::raft_index_path(&self.dir, base));
                doomed.push(txn_index::txn_index_path(&self.dir, base));
            }
            for snapshot in self.snapshot_offsets()? {
                doomed.push(snapshot_path(&self.dir, snapshot));
            }
            self.backend
                .sync_dir(&self.dir)
                .await
                .map_err(io_error(&self.dir))?;
            self.write_epochs(&EpochCache::default()).await?;
            // The log restarts at `offset`: that is its start now, whatever DeleteRecords set.
            if std::mem::take(&mut self.state.borrow_mut().start_floor) != 0 {
                self.write_start_floor(0).await?;
            }
            let first_entry = self.state.borrow().segments[0]
                .entries
                .as_ref()
                .map(|entries| entries.first);
            if let Some(first) = first_entry {
                // Before the log file, as at every segment's creation. Written after the
                // directory sync that retired the old segments, so a crash never pairs it
                // with them.
                let sidecar = entry_index::encode(first, 0, false, &Default::default());
                self.write_sidecar(offset, &sidecar).await?;
            }
            let path = segment::log_path(&self.dir, offset);
            let file = self
                .backend
                .open_file(&path)
                .await
                .map_err(io_error(&path))?;
            self.backend
                .sync_dir(&self.dir)
                .await
                .map_err(io_error(&self.dir))?;
            self.state.borrow_mut().restarted_file(offset, file);
            doomed
        };
        // Producer snapshots are unlinked with the segments: stale ones must not be loaded
        // for the new log, and nothing below `offset` can be replayed any more.
        for path in &doomed {
            self.backend
                .remove_file(path)
                .await
                .map_err(io_error(path))?;
        }
        tracing::debug!(offset, "log truncated fully");
        Ok(())
    }

    /// Everything the cut needs, read from durable data with no borrow held.
    async fn plan_cut(&self, view: &SegmentView, offset: i64) -> Result<Cut, StorageError> {
        let mut indexes = self.indexes_of(view).await?;
        let (position, new_end) = self.batch_start(view, &indexes.offsets, offset).await?;
        let path = segment::log_path(&self.dir, view.base_offset);
        let relative_end = view.relative(new_end);
        indexes.offsets.truncate_to_position(position);
        indexes.times.truncate_to_offset(relative_end);
        let max_timestamp = self.max_timestamp_below(view, &indexes, position).await?;
        let last_index_position = u64::from(indexes.offsets.lookup(u32::MAX));
        let tail_page = match view.file.as_ref() {
            Some(file) => read_tail_page(file, position, &path).await?,
            None => Vec::new(),
        };
        let log_start = self.log_start_offset();
        let (mut producers, producers_from) =
            self.load_producer_snapshot(log_start, new_end).await?;
        let replay = Replay {
            from: producers_from,
            end: new_end,
            epochs_from: i64::MAX,
            producers_from,
        };
        let mut unused = EpochCache::default();
        self.replay(replay, &mut producers, &mut unused).await?;
        let entries = match &view.entries {
            Some(_) => Some(self.entries_below(view, position).await?),
            None => None,
        };
        Ok(Cut {
            base_offset: view.base_offset,
            position,
            new_end,
            indexes,
            max_timestamp,
            bytes_since_index: position - last_index_position.min(position),
            tail_page,
            producers,
            entries,
        })
    }

    /// The entry count and sparse entries of the segment's batches below `position`: the
    /// sparse entries below it, then a scan from the last of them (the scan stays within
    /// `index.interval.bytes` plus one batch).
    async fn entries_below(
        &self,
        view: &SegmentView,
        position: u64,
    ) -> Result<(u64, EntrySparse), StorageError> {
        let mut sparse = self.entry_sparse_of(view).await?;
        sparse.truncate_to_position(position);
        let (mut count, from) = sparse.lookup_position(position);
        if let Some(file) = view.file.as_ref() {
            let path = segment::log_path(&self.dir, view.base_offset);
            let scan = segment::scan_batches(
                file,
                from,
                position,
                None,
                segment::SCAN_CHUNK_BYTES,
                |_, _, _| {
                    count += 1;
                    true
                },
            )
            .await
            .map_err(io_error(&path))?;
            if scan.valid_bytes != position {
                return Err(StorageError::CorruptEntryIndex {
                    path: entry_index::raft_index_path(&self.dir, view.base_offset),
                    reason: "sparse position is not a batch boundary",
                });
            }
        }
        Ok((count, sparse))
    }

    /// Position and base offset of the batch containing `offset` in the segment.
    async fn batch_start(
        &self,
        view: &SegmentView,
        offsets: &OffsetIndex,
        offset: i64,
    ) -> Result<(u64, i64), StorageError> {
        if offset == view.base_offset {
            return Ok((0, offset));
        }
        let from = u64::from(offsets.lookup(view.relative(offset)));
        let path = segment::log_path(&self.dir, view.base_offset);
        let Some(file) = view.file.as_ref() else {
            return Ok((0, view.base_offset));
        };
        let mut found = None;
        let scan = segment::scan_batches(
            file,
            from,
            view.durable_bytes,
            None,
            1 << 16,
            |position, header, _| {
                if header.last_offset() >= offset {
                    found = Some((position, header.base_offset));
                    return false;
                }
                true
            },
        )
        .await
        .map_err(io_error(&path))?;
        found.ok_or(StorageError::SegmentCorrupt {
            path,
            position: scan.valid_bytes,
        })
    }

    /// The max timestamp entry of the segment's batches below `position`. Batches before the
    /// last remaining time index entry have smaller timestamps, so the exact value only needs
    /// a scan from that entry on.
    async fn max_timestamp_below(
        &self,
        view: &SegmentView,
        indexes: &Indexes,
        position: u64,
    ) -> Result<(i64, i64), StorageError> {
        let mut max_timestamp = indexes.times.last().map_or((-1, -1), |(ts, relative)| {
            (ts, view.base_offset + i64::from(relative))
        });
        let scan_from = indexes
            .times
            .last()
            .map_or(0, |(_, relative)| indexes.offsets.lookup(relative));
        if let Some(file) = view.file.as_ref() {
            let path = segment::log_path(&self.dir, view.base_offset);
            segment::scan_batches(
                file,
                u64::from(scan_from),
                position,
                None,
                segment::SCAN_CHUNK_BYTES,
                |_, header, _| {
                    if header.max_timestamp > max_timestamp.0 {
                        max_timestamp = (header.max_timestamp, header.last_offset());
                    }
                    true
                },
            )
            .await
            .map_err(io_error(&path))?;
        }
        Ok(max_timestamp)
    }

    async fn remove_segment_files(&self, segment: Segment) -> Result<(), StorageError> {
        let base = segment.base_offset;
        if let Some(file) = segment.file {
            let path = segment::log_path(&self.dir, base);
            close_shared(file).await.map_err(io_error(&path))?;
        }
        // The log file first: index files without it are removed as leftovers on open.
        for path in [
            segment::log_path(&self.dir, base),
            segment::index_path(&self.dir, base),
            segment::time_index_path(&self.dir, base),
            entry_index::raft_index_path(&self.dir, base),
            txn_index::txn_index_path(&self.dir, base),
        ] {
            self.backend
                .remove_file(&path)
                .await
                .map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// Deletes whole old segments past `retention.ms` (by their max timestamp) or beyond
    /// `retention.bytes`, oldest first, never the active one. Returns how many were deleted.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let doomed = {
            let _gate = self.gate.lock().await;
            let (detached, epochs) = {
                let mut state = self.state.borrow_mut();
                let expiration_ms = state.config.producer_id_expiration_ms;
                state.producers.expire(now_ms, expiration_ms);
                state.detach_expired(now_ms)
            };
            self.retire_detached(detached, epochs).await?
        };
        self.unlink_retired(doomed).await
    }

    /// DeleteRecords: moves Kafka's log start offset up to `offset` (never back, never past the
    /// log end: the caller checks it against the high watermark), durably, before it returns. Records below it are no longer served
    /// (fetches get OFFSET_OUT_OF_RANGE); the segments wholly below it go at the next retention
    /// pass (`enforce_retention`, or a Raft log's snapshot and purge). Returns the new start.
    pub async fn advance_start(&self, offset: i64) -> Result<i64, StorageError> {
        let _gate = self.gate.lock().await;
        let (floor, start) = {
            let state = self.state.borrow();
            let end = state.log_end_offset;
            if offset < 0 || offset > end {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    start: state.visible_start_offset(),
                    end,
                });
            }
            (state.start_floor, state.visible_start_offset())
        };
        if offset <= start {
            return Ok(start);
        }
        self.write_start_floor(offset.max(floor)).await?;
        let mut state = self.state.borrow_mut();
        state.start_floor = offset.max(floor);
        let start = state.visible_start_offset();
        state.tail.drop_before(start);
        state.producers.prune_aborted(start);
        Ok(start)
    }

    pub(crate) async fn write_start_floor(&self, floor: i64) -> Result<(), StorageError> {
        let mut bytes = floor.to_be_bytes().to_vec();
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        self.write_side_file(crate::log::LOG_START_FILE, &bytes)
            .await
    }

    /// The log start DeleteRecords set, from its side file (0 if none). A damaged file is
    /// an error: serving records the user deleted is not an option.
    pub(crate) async fn read_start_floor(&self) -> Result<i64, StorageError> {
        let Some(bytes) = self.read_side_file(crate::log::LOG_START_FILE).await? else {
            return Ok(0);
        };
        let valid = bytes.len() == 12
            && crc32c::crc32c(&bytes[..8])
                == u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if !valid {
            return Err(StorageError::CorruptSnapshot {
                reason: "the log start offset file is damaged",
            });
        }
        Ok(i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")))
    }

    /// Deletes every whole segment whose records all lie below `offset`, oldest first, under
    /// the same rules as retention (never the active segment, nor one with non-durable data
    /// or pending seal work), moving the log start offset. Returns how many were deleted.
    /// Used to compact a log rewritten at or after `offset`.
    pub async fn delete_segments_below(&self, offset: i64) -> Result<usize, StorageError> {
        let doomed = {
            let _gate = self.gate.lock().await;
            let (detached, epochs) = {
                let mut state = self.state.borrow_mut();
                let expiration_ms = state.config.producer_id_expiration_ms;
                state.producers.expire_at_clock(expiration_ms);
                state.detach_below(offset)
            };
            self.retire_detached(detached, epochs).await?
        };
        self.unlink_retired(doomed).await
    }

    /// The gated step of retention, as Kafka does it: renames the detached segments' log
    /// files to `*.deleted` (recovery removes those, so they are gone from the log once the
    /// directory is synced), then writes the epoch checkpoint if the cache changed. Returns
    /// the files to unlink. Unlinking a 128 MiB segment takes tens of milliseconds; done under
    /// the gate it held back this partition's flushes, and so the acks of every produce
    /// request that touched it.
    async fn retire_detached(
        &self,
        detached: Vec<Segment>,
        epochs: Option<EpochCache>,
    ) -> Result<Vec<PathBuf>, StorageError> {
        let mut doomed = Vec::with_capacity(RETIRED_FILES_PER_SEGMENT * detached.len());
        for segment in detached {
            let base = segment.base_offset;
            let path = segment::log_path(&self.dir, base);
            if let Some(file) = segment.file {
                close_shared(file).await.map_err(io_error(&path))?;
            }
            let retired = deleted_path(&path);
            self.backend
                .rename(&path, &retired)
                .map_err(io_error(&path))?;
            // The log file first: index files without it are removed as leftovers on open.
            doomed.push(retired);
            doomed.push(segment::index_path(&self.dir, base));
            doomed.push(segment::time_index_path(&self.dir, base));
            doomed.push(entry_index::raft_index_path(&self.dir, base));
            doomed.push(txn_index::txn_index_path(&self.dir, base));
        }
        if !doomed.is_empty() {
            self.backend
                .sync_dir(&self.dir)
                .await
                .map_err(io_error(&self.dir))?;
        }
        if let Some(epochs) = epochs {
            self.write_epochs(&epochs).await?;
        }
        Ok(doomed)
    }

    /// The ungated step: unlinks retired files. Returns how many segments they were.
    async fn unlink_retired(&self, doomed: Vec<PathBuf>) -> Result<usize, StorageError> {
        for path in &doomed {
            self.backend
                .remove_file(path)
                .await
                .map_err(io_error(path))?;
        }
        Ok(doomed.len() / RETIRED_FILES_PER_SEGMENT)
    }

    /// Removes the partition directory and everything in it.
    pub async fn delete(self) -> Result<(), StorageError> {
        self.close_files().await?;
        self.backend
            .remove_dir_all(&self.dir)
            .await
            .map_err(io_error(&self.dir))
    }
}

impl LogState {
    /// Whether truncating at `offset` has anything to do; an error if it is below the start.
    fn check_truncation(&self, offset: i64) -> Result<bool, StorageError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset);
        if offset >= end {
            return Ok(false);
        }
        if offset < start {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        Ok(true)
    }

    /// Makes the cut segment the active one at `new_end`, detaching every later segment and
    /// dropping every later batch, also those appended while the truncation ran. Returns the
    /// detached segments and the epoch checkpoint to write, if the cache changed.
    fn cut(&mut self, cut: Cut) -> (Vec<Segment>, Option<EpochCache>) {
        let i = self
            .position_of(cut.base_offset)
            .expect("only gate holders remove segments");
        let detached = self.segments.split_off(i + 1);
        let segment = &mut self.segments[i];
        assert!(cut.position <= segment.durable_bytes);
        segment.pending.clear();
        segment.size_bytes = cut.position;
        segment.durable_bytes = cut.position;
        segment.next_offset = cut.new_end;
        segment.durable_next_offset = cut.new_end;
        segment.max_timestamp = cut.max_timestamp;
        segment.durable_max_timestamp = cut.max_timestamp;
        segment.bytes_since_index = cut.bytes_since_index;
        segment.tail_page = cut.tail_page;
        segment.sealed = false;
        segment.seal_pending = None;
        segment.txn_index = false;
        if cut.position == 0 {
            segment.rolling_ms = None;
            segment.first_timestamp = None;
        }
        *segment.indexes.borrow_mut() = Some(cut.indexes);
        if let Some(entries) = segment.entries.as_mut() {
            let (count, sparse) = cut.entries.expect("planned for an entry-indexed segment");
            assert!(count <= entries.count);
            entries.count = count;
            entries.durable_count = count;
            *entries.sparse.borrow_mut() = Some(sparse);
        }
        self.log_end_offset = cut.new_end;
        self.durable_end_offset = cut.new_end;
        self.tail.truncate_from(cut.new_end);
        self.entry_window.truncate_from_offset(cut.new_end);
        let clock_ms = self.producers.clock_ms();
        self.producers = cut.producers;
        self.producers.observe(clock_ms);
        // The sealed segments below the cut hold their aborts in their `.txnindex` files (the
        // truncation flushed first, so every seal is persisted); the snapshot and replay that
        // rebuilt the state may have listed some of them again.
        self.producers.prune_aborted(cut.base_offset);
        let epochs = self
            .epochs
            .truncate_from_end(cut.new_end)
            .then(|| self.epochs_below(i64::MAX));
        (detached, epochs)
    }

    /// Replaces every segment by one empty segment at `offset` (its file is created by the
    /// caller) and resets the state that described the old data. Returns the old segments.
    /// An entry-indexed log restarts its numbering at `index`, or goes on from its end.
    fn restart_at(&mut self, offset: i64, index: Option<u64>) -> Vec<Segment> {
        let mut restarted = Segment::new(offset, None);
        if self.entry_index {
            let next = self
                .active()
                .entries
                .as_ref()
                .map_or(0, SegmentEntries::end);
            restarted = restarted.with_entries(index.unwrap_or(next));
        }
        let detached = std::mem::replace(&mut self.segments, vec![restarted]);
        self.entry_window.clear();
        self.log_end_offset = offset;
        self.durable_end_offset = offset;
        self.tail.truncate_from(i64::MIN);
        let clock_ms = self.producers.clock_ms();
        self.producers = ProducerState::default();
        self.producers.observe(clock_ms);
        self.epochs = EpochCache::default();
        self.epochs_dirty = false;
        detached
    }

    /// Gives the restarted segment its file. Only gate holders remove segments, so the one
    /// starting at `offset` is still there (appends meanwhile may only have rolled past it).
    fn restarted_file(&mut self, offset: i64, file: SegmentFile) {
        let i = self
            .position_of(offset)
            .expect("only gate holders remove segments");
        let segment = &mut self.segments[i];
        assert!(segment.file.is_none());
        segment.file = Some(Rc::new(file));
    }

    /// Detaches the segments retention deletes, oldest first, and returns them with the epoch
    /// checkpoint to write if the cache changed.
    fn detach_expired(&mut self, now_ms: i64) -> (Vec<Segment>, Option<EpochCache>) {
        let mut rule = RetentionRule::new(self, now_ms);
        self.detach_front(|first, next| rule.deletes(first, next))
    }

    /// The log start retention would leave, deleting only settled segments whose records all
    /// lie below `limit`: the base offset of the first segment it keeps, None if it would
    /// delete nothing. Deletes nothing itself (a Raft log's retention goes through a snapshot
    /// and openraft's purge instead).
    pub(crate) fn retention_point(&self, now_ms: i64, limit: i64) -> Option<i64> {
        let mut rule = RetentionRule::new(self, now_ms);
        let mut keep_from = None;
        for pair in self.segments.windows(2) {
            let (first, next) = (&pair[0], &pair[1]);
            if !first.is_settled() || next.base_offset > limit || !rule.deletes(first, next) {
                break;
            }
            keep_from = Some(next.base_offset);
        }
        keep_from
    }

    /// Detaches the segments whose records all lie below `offset` (their successor starts at
    /// or below it), oldest first, like [`LogState::detach_expired`].
    fn detach_below(&mut self, offset: i64) -> (Vec<Segment>, Option<EpochCache>) {
        self.detach_front(|first, next| {
            let below = next.base_offset <= offset;
            if below {
                assert!(first.next_offset <= offset);
                tracing::debug!(
                    base = first.base_offset,
                    offset,
                    "compaction deletes segment"
                );
            }
            below
        })
    }

    /// Detaches segments from the front while `delete(first, second)` says so and the first
    /// is settled (has a file, all its data durable, no pending seal work), never the active
    /// one. Moves the log start: drops the tail cache below it and trims the epoch cache.
    /// Returns the detached segments and the epoch checkpoint to write if the cache changed.
    fn detach_front(
        &mut self,
        mut delete: impl FnMut(&Segment, &Segment) -> bool,
    ) -> (Vec<Segment>, Option<EpochCache>) {
        let mut detached = Vec::new();
        while self.segments.len() > 1 {
            let (first, next) = (&self.segments[0], &self.segments[1]);
            if !first.is_settled() || !delete(first, next) {
                break;
            }
            detached.push(self.segments.remove(0));
        }
        if detached.is_empty() {
            return (detached, None);
        }
        let log_start = self.log_start_offset();
        self.tail.drop_before(log_start);
        self.entry_window.drop_before_offset(log_start);
        self.producers.prune_aborted(log_start);
        if !self.epochs.truncate_from_start(log_start) {
            return (detached, None);
        }
        // The checkpoint covers durable offsets only; the next flush writes the rest.
        self.epochs_dirty = true;
        (detached, Some(self.epochs_below(self.durable_end_offset)))
    }
}

/// Kafka's retention rule, applied to segments oldest first: a segment goes when its newest
/// record is older than `retention.ms`, or while the log without it still holds at least
/// `retention.bytes`.
struct RetentionRule {
    /// Segments whose records all lie below it (DeleteRecords) go whatever their age.
    start_floor: i64,
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
    total_bytes: u64,
}

impl RetentionRule {
    fn new(state: &LogState, now_ms: i64) -> RetentionRule {
        // `cleanup.policy=compact` alone: old segments are cleaned, never deleted by age or size.
        let delete = state.config.compaction.delete;
        RetentionRule {
            start_floor: state.start_floor,
            now_ms,
            retention_ms: if delete {
                state.config.retention_ms
            } else {
                -1
            },
            retention_bytes: if delete {
                state.config.retention_bytes
            } else {
                -1
            },
            total_bytes: state
                .segments
                .iter()
                .map(|segment| segment.size_bytes)
                .sum(),
        }
    }

    /// Whether `first` (the oldest segment not yet deleted) goes; counts it gone if so.
    fn deletes(&mut self, first: &Segment, next: &Segment) -> bool {
        if next.base_offset <= self.start_floor {
            self.total_bytes -= first.size_bytes;
            tracing::debug!(base = first.base_offset, "deleted records: segment goes");
            return true;
        }
        let expired =
            self.retention_ms >= 0 && self.now_ms - first.max_timestamp.0 > self.retention_ms;
        let oversize = self.retention_bytes >= 0
            && self.total_bytes - first.size_bytes >= self.retention_bytes.unsigned_abs();
        if expired || oversize {
            self.total_bytes -= first.size_bytes;
            tracing::debug!(
                base = first.base_offset,
                expired,
                oversize,
                "retention deletes segment"
            );
        }
        expired || oversize
    }
}
