//! The entry API of a log used as a partition's Raft log: one record batch = one Raft entry,
//! numbered contiguously (openraft's indexes), located through the per-segment sidecars and
//! the in-memory window of `entry_index.rs`.
//!
//! Lookups go: window (the last `RAFT_TAIL_ENTRIES_MAX` entries and every non-durable one) →
//! the segment whose first index is the largest at or below the index → its sparse entries
//! (read lazily, rebuilt by a scan if damaged) → a scan of at most `index.interval.bytes` of
//! batch headers. Reads return the stored batch bytes through `read`, so the tail cache and
//! the disk path serve entries exactly as they serve fetches.
//!
//! Opening (`resolve_entries`) settles every segment's first index, in order, from the rule
//! "first = previous first + previous entry count":
//! - a sealed segment's sidecar header is trusted (count included) if its CRC holds, it is
//!   marked sealed and it continues the previous segment; a CRC-valid header that does not
//!   continue it is `CorruptEntryIndex` (two sources disagree, neither can be chosen);
//! - a missing or damaged sealed sidecar is rebuilt by scanning its segment, numbered from
//!   the previous segment's end;
//! - the first segment's first index is the log's recorded start: its own sidecar; if that
//!   is lost, the next segment's first index minus the first segment's scanned count; if that
//!   is lost too, `CorruptEntryIndex`. A directory without any sidecar is a log that never had
//!   an entry index (the upgrade): it is numbered from 0.
//! - the active segment is counted by the crash-recovery scan, or after a clean shutdown
//!   taken from the sidecar `close` wrote (rescanned if it does not fit the segment).
//!
//! A log must always be opened the same way: a run without the entry index neither writes
//! nor removes sidecars, so a later entry-indexed open would trust stale ones.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use spool_protocol::batch::{self, BatchHeader};

use crate::entry_index::{self, EntryInfo, EntrySparse, SegmentEntries, SidecarHeader};
use crate::log::{io_error, LogState, PartitionLog};
use crate::segment::{self, Segment, SegmentView};
use crate::{AppendInfo, Backend, LogConfig, StorageError};

/// Bytes read per I/O when a lookup scans from a sparse entry (about `index.interval.bytes`).
const ENTRY_SCAN_CHUNK_BYTES: usize = 64 * 1024;

type Sidecar = Option<Result<(SidecarHeader, EntrySparse), &'static str>>;

/// How a Raft entry's batch gets its offsets and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStamp {
    /// A leader's proposal: validated against the topic's limits, then stamped with the log
    /// end offset, the epoch and (LogAppendTime topics) the append time.
    Propose,
    /// A copy read from the leader's log: already stamped, so it must start at this log's end
    /// and carry the entry's epoch, and its bytes are kept exactly.
    Replicated,
}

impl PartitionLog {
    /// Opens the log as a Raft log: every batch is an entry, and the entry index is kept
    /// (and built, for a log that had none). Always open such a log this way.
    pub async fn open_entry_indexed(
        dir: PathBuf,
        config: LogConfig,
        backend: Backend,
    ) -> Result<PartitionLog, StorageError> {
        Self::open_with(dir, config, backend, true, crate::clean::CleanFrom::Dir).await
    }

    /// Appends one record batch as the next entry: openraft appends entries one by one and
    /// must know each one's index. Refused (nothing appended) if `batch` is not exactly one
    /// batch or repeats an idempotent producer's batch: a Raft store cannot drop an entry.
    pub fn append_entry(
        &self,
        batch: Bytes,
        epoch: i32,
        now_ms: i64,
    ) -> Result<(u64, AppendInfo), StorageError> {
        assert!(
            self.state.borrow().entry_index,
            "log opened without entries"
        );
        if batch::batches(batch.clone()).nth(1).is_some() {
            return Err(StorageError::NotOneBatch);
        }
        let index = self.next_entry_index();
        let info = self.append(batch, epoch, now_ms)?;
        if info.duplicate {
            return Err(StorageError::DuplicateEntry {
                base_offset: info.base_offset,
                last_offset: info.last_offset,
            });
        }
        assert_eq!(self.next_entry_index(), index + 1);
        Ok((index, info))
    }

    /// Appends one Raft entry (see [`EntryStamp`]); never refused for producer state.
    /// Returns its index and offsets.
    pub fn append_raft_entry(
        &self,
        batch: Bytes,
        epoch: i32,
        now_ms: i64,
        stamp: EntryStamp,
    ) -> Result<(u64, AppendInfo), StorageError> {
        assert!(
            self.state.borrow().entry_index,
            "log opened without entries"
        );
        let index = self.next_entry_index();
        let info = self
            .state
            .borrow_mut()
            .append_raft_entry(batch, epoch, now_ms, stamp)?;
        assert_eq!(self.next_entry_index(), index + 1);
        Ok((index, info))
    }

    /// Whether `records` (one batch) continues its producer's sequence, repeats one of its
    /// recent batches (with the original offsets), or is refused: what a partition leader
    /// asks before it proposes a batch, since the entry cannot be refused once proposed.
    pub fn check_producer(
        &self,
        records: &Bytes,
        now_ms: i64,
    ) -> Result<crate::SequenceCheck, StorageError> {
        self.state.borrow().check_producer(records, now_ms)
    }

    /// The oldest entry the log holds (== `next_entry_index` when empty); moves with
    /// purging and restarts, as the log start offset does.
    pub fn first_entry_index(&self) -> u64 {
        self.state.borrow().entry_range().0
    }

    /// The index the next appended entry gets: openraft's last log index + 1.
    pub fn next_entry_index(&self) -> u64 {
        self.state.borrow().entry_range().1
    }

    /// Where entry `index` is and what it covers; None outside the log. The common case (the
    /// recent entries) is answered from memory; older ones cost a sidecar read the first
    /// time and a short scan.
    pub async fn entry_position(&self, index: u64) -> Result<Option<EntryInfo>, StorageError> {
        let (view, relative) = {
            let state = self.state.borrow();
            let (first, next) = state.entry_range();
            if index < first || index >= next {
                return Ok(None);
            }
            if let Some(info) = state.entry_window.get(index) {
                return Ok(Some(info));
            }
            let after = state
                .segments
                .partition_point(|segment| entries(segment).first <= index);
            let segment = &state.segments[after - 1];
            (segment.view(), index - entries(segment).first)
        };
        let sparse = self.entry_sparse_of(&view).await?;
        let (from_relative, from_position) = sparse.lookup(relative);
        let found = self
            .scan_entries(&view, from_relative, from_position, |at, _| at == relative)
            .await?;
        if found.is_none() && index < self.next_entry_index() {
            // The segment is still in the log (or retention raced us; then the index is gone).
            let gone = index < self.first_entry_index();
            if !gone {
                return Err(StorageError::CorruptEntryIndex {
                    path: self.sidecar_path(view.base_offset),
                    reason: "the segment holds fewer batches than its entry count",
                });
            }
        }
        Ok(found)
    }

    /// (base offset, last offset) of entry `index`: what a follower's store checks a
    /// received batch's stamp against, and where a read by index starts.
    pub async fn offset_of_index(&self, index: u64) -> Result<Option<(i64, i64)>, StorageError> {
        let info = self.entry_position(index).await?;
        Ok(info.map(|info| (info.base_offset, info.last_offset)))
    }

    /// The entry whose batch holds `offset`, None outside the log: maps a Kafka position
    /// (a fetch offset, the high watermark) to the Raft log.
    pub async fn index_of_offset(&self, offset: i64) -> Result<Option<u64>, StorageError> {
        let view = {
            let state = self.state.borrow();
            assert!(state.entry_index, "log opened without entries");
            if offset < state.log_start_offset() || offset >= state.log_end_offset {
                return Ok(None);
            }
            if let Some(info) = state.entry_window.find_offset(offset) {
                return Ok(Some(info.index));
            }
            state.segments[state.segment_index(offset)].view()
        };
        // Sparse entries sit where the offset index's do: start from the offset index's
        // position, so the scan is at most one index interval.
        let indexes = self.indexes_of(&view).await?;
        let position = u64::from(indexes.offsets.lookup(view.relative(offset)));
        let sparse = self.entry_sparse_of(&view).await?;
        let (from_relative, from_position) = sparse.lookup_position(position);
        let found = self
            .scan_entries(&view, from_relative, from_position, |_, header| {
                header.last_offset() >= offset
            })
            .await?;
        Ok(found.map(|info| info.index))
    }

    /// Entries `[from_index, end_index)` clipped to the log, as `(index, batch)` with the
    /// exact stored bytes, in order: at least one if any, then more while the total stays
    /// within `bytes_max` (so a large entry still makes progress, as KIP-74 for fetches).
    pub async fn read_entries(
        &self,
        from_index: u64,
        end_index: u64,
        bytes_max: usize,
    ) -> Result<Vec<(u64, Bytes)>, StorageError> {
        let (first, next) = self.state.borrow().entry_range();
        let (from, end) = (from_index.max(first), end_index.min(next));
        let mut out = Vec::new();
        if from >= end {
            return Ok(out);
        }
        let Some(start) = self.entry_position(from).await? else {
            return Ok(out);
        };
        let (mut index, mut offset, mut total) = (from, start.base_offset, 0usize);
        // Each round returns at least one batch or ends the loop: at most `end - from` rounds.
        while index < end {
            let result = self
                .read(offset, bytes_max.saturating_sub(total), i64::MAX)
                .await?;
            if result.batches.is_empty() {
                break;
            }
            for bytes in result.batches {
                if index == end || (!out.is_empty() && total + bytes.len() > bytes_max) {
                    return Ok(out);
                }
                let header =
                    BatchHeader::parse(&bytes).map_err(|_| StorageError::CorruptBatch {
                        position: 0,
                        reason: "truncated batch",
                    })?;
                assert_eq!(
                    header.base_offset, offset,
                    "reads return contiguous batches"
                );
                total += bytes.len();
                out.push((index, bytes));
                index += 1;
                offset = header.last_offset() + 1;
            }
        }
        Ok(out)
    }

    /// Drops every entry after `last_kept` (None: every entry), with everything the log
    /// keeps about them (offset and time indexes, sidecar, epoch cache, producer state): a
    /// follower's conflicting uncommitted suffix (openraft's `truncate_after`).
    pub async fn truncate_entries_after(&self, last_kept: Option<u64>) -> Result<(), StorageError> {
        let (first, next) = self.state.borrow().entry_range();
        let keep_end = last_kept.map_or(first, |index| index.saturating_add(1));
        if keep_end >= next {
            return Ok(());
        }
        if keep_end < first {
            return Err(StorageError::EntryOutOfRange {
                index: keep_end - 1,
                first,
                next,
            });
        }
        let offset = match self.entry_position(keep_end).await? {
            Some(info) => info.base_offset,
            None => return Ok(()),
        };
        self.truncate_suffix(offset).await
    }

    /// Deletes the whole segments whose entries are all at or below `index` (never the active
    /// segment, as retention): openraft's `purge` after a snapshot. Entries above `index`
    /// stay; some at or below it may stay too, `first_entry_index` tells. Returns how many
    /// segments were deleted.
    pub async fn purge_entries_through(&self, index: u64) -> Result<usize, StorageError> {
        let (first, next) = self.state.borrow().entry_range();
        if index < first {
            return Ok(0);
        }
        let keep_from = match index.checked_add(1).filter(|&keep| keep < next) {
            Some(keep) => self
                .entry_position(keep)
                .await?
                .map(|info| info.base_offset),
            None => None,
        };
        let offset = keep_from.unwrap_or_else(|| self.log_end_offset());
        self.delete_segments_below(offset).await
    }

    /// `truncate_fully_and_start_at` for a Raft log: the log restarts empty at `offset`, and
    /// its next entry is `index` (a follower installing a snapshot whose last entry is
    /// `index - 1`).
    pub async fn truncate_fully_and_start_at_entry(
        &self,
        index: u64,
        offset: i64,
    ) -> Result<(), StorageError> {
        assert!(
            self.state.borrow().entry_index,
            "log opened without entries"
        );
        self.restart(offset, Some(index)).await
    }

    fn sidecar_path(&self, base_offset: i64) -> PathBuf {
        entry_index::raft_index_path(&self.dir, base_offset)
    }

    /// Scans batches from sparse entry `(relative, position)` until `stop(relative index,
    /// header)`; None if the durable part of the segment ends first.
    async fn scan_entries(
        &self,
        view: &SegmentView,
        from_relative: u64,
        from_position: u64,
        mut stop: impl FnMut(u64, &BatchHeader) -> bool,
    ) -> Result<Option<EntryInfo>, StorageError> {
        let Some(file) = view.file.as_ref() else {
            return Ok(None);
        };
        let first = view.entries.as_ref().expect("entry-indexed segment").first;
        let mut relative = from_relative;
        let mut found = None;
        let path = segment::log_path(&self.dir, view.base_offset);
        let scan = segment::scan_batches(
            file,
            from_position,
            view.durable_bytes,
            None,
            ENTRY_SCAN_CHUNK_BYTES,
            |position, header, _| {
                if stop(relative, header) {
                    found = Some(EntryInfo {
                        index: first + relative,
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        segment_base_offset: view.base_offset,
                        position,
                        epoch: header.partition_leader_epoch,
                    });
                    return false;
                }
                relative += 1;
                true
            },
        )
        .await
        .map_err(io_error(&path))?;
        if found.is_none() && scan.invalid_tail {
            if scan.valid_bytes == from_position && from_position > 0 {
                return Err(StorageError::CorruptEntryIndex {
                    path: self.sidecar_path(view.base_offset),
                    reason: "a sparse position is not a batch boundary",
                });
            }
            return Err(StorageError::SegmentCorrupt {
                path,
                position: scan.valid_bytes,
            });
        }
        Ok(found)
    }

    /// The segment's sparse entries, reading (or rebuilding) the sidecar on first use and
    /// keeping them if the segment is still in the log.
    pub(crate) async fn entry_sparse_of(
        &self,
        view: &SegmentView,
    ) -> Result<EntrySparse, StorageError> {
        let entries = view.entries.as_ref().expect("entry-indexed segment");
        if let Some(sparse) = &entries.sparse {
            return Ok(sparse.clone());
        }
        let path = self.sidecar_path(view.base_offset);
        let (sparse, from_file) = match self.read_sidecar(&path, view.size_bytes).await? {
            Some(Ok((header, sparse)))
                if header.sealed
                    && header.first == entries.first
                    && header.count == entries.count =>
            {
                (sparse, true)
            }
            Some(Ok(_)) => {
                return Err(StorageError::CorruptEntryIndex {
                    path,
                    reason: "disagrees with the header read at open",
                })
            }
            None | Some(Err(_)) => {
                let (count, sparse) = self.rebuild_entries(view).await?;
                if count != entries.count {
                    return Err(StorageError::CorruptEntryIndex {
                        path,
                        reason: "the segment holds another number of batches than recorded",
                    });
                }
                (sparse, false)
            }
        };
        let stored = {
            let state = self.state.borrow();
            match state
                .segment(view.base_offset)
                .and_then(|s| s.entries.as_ref())
            {
                Some(current) if current.sparse.borrow().is_none() => {
                    *current.sparse.borrow_mut() = Some(sparse.clone());
                    true
                }
                _ => false,
            }
        };
        // Only the loader that stored it writes the file, so two never race on it.
        if stored && !from_file {
            let bytes = entry_index::encode(entries.first, entries.count, true, &sparse);
            self.write_sidecar(view.base_offset, &bytes).await?;
        }
        Ok(sparse)
    }

    /// Counts a segment's batches and samples them as `track_batch` does.
    async fn rebuild_entries(
        &self,
        view: &SegmentView,
    ) -> Result<(u64, EntrySparse), StorageError> {
        let Some(file) = view.file.as_ref() else {
            return Ok((0, EntrySparse::default()));
        };
        let path = segment::log_path(&self.dir, view.base_offset);
        let mut tracker = Segment::new(view.base_offset, None).with_entries(0);
        self.retrack_segment(view, file, &mut tracker).await?;
        tracing::info!(path = %path.display(), "entry index rebuilt from the segment");
        let entries = tracker.entries.expect("tracker has entries");
        let sparse = entries.sparse.into_inner().unwrap_or_default();
        Ok((entries.count, sparse))
    }

    /// A sidecar's header: None if the file is missing, Err(reason) if damaged.
    async fn read_sidecar_header(
        &self,
        path: &Path,
    ) -> Result<Option<Result<SidecarHeader, &'static str>>, StorageError> {
        if !self.backend.exists(path) {
            return Ok(None);
        }
        let file = self.backend.open_file(path).await.map_err(io_error(path))?;
        let bytes = file
            .read_at(0, entry_index::RAFT_INDEX_HEADER_BYTES)
            .await
            .map_err(io_error(path));
        file.close().await.map_err(io_error(path))?;
        Ok(Some(entry_index::decode_header(&bytes?)))
    }

    /// A whole sidecar for a segment of `log_bytes`: None if missing, Err(reason) if damaged.
    /// Reads only as many bytes as the CRC-checked header declares, once the file is
    /// confirmed to hold exactly that many (the header bounds them).
    async fn read_sidecar(&self, path: &Path, log_bytes: u64) -> Result<Sidecar, StorageError> {
        let header = match self.read_sidecar_header(path).await? {
            None => return Ok(None),
            Some(Err(reason)) => return Ok(Some(Err(reason))),
            Some(Ok(header)) => header,
        };
        let expected = header.file_bytes();
        assert!(expected <= entry_index::RAFT_INDEX_BYTES_MAX);
        let file = self.backend.open_file(path).await.map_err(io_error(path))?;
        let size = file.size().await.map_err(io_error(path));
        let bytes = match size {
            Ok(size) if size == expected as u64 => {
                file.read_at(0, expected).await.map_err(io_error(path))
            }
            Ok(_) => Ok(Bytes::new()),
            Err(error) => Err(error),
        };
        file.close().await.map_err(io_error(path))?;
        let bytes = bytes?;
        if bytes.len() != expected {
            return Ok(Some(Err("size disagrees with the header")));
        }
        Ok(Some(entry_index::decode(&bytes, log_bytes)))
    }

    /// Settles every segment's entries at open (rules in the module header).
    /// `clean_sidecar`: the active segment's sidecar as a clean close recorded it (the file
    /// beside the segment holds only its first index then).
    pub(crate) async fn resolve_entries(
        &self,
        segments: &mut [Segment],
        clean_sidecar: Option<Bytes>,
    ) -> Result<(), StorageError> {
        let names = self
            .backend
            .list_dir(&self.dir)
            .map_err(io_error(&self.dir))?;
        let any_sidecar = names
            .iter()
            .any(|name| segment::parse_file_name(name, "raftindex").is_some());
        let mut expected: Option<u64> = None;
        let mut clean_sidecar = clean_sidecar;
        for k in 0..segments.len() {
            let base = segments[k].base_offset;
            let path = self.sidecar_path(base);
            let header = self.read_sidecar_header(&path).await?.and_then(Result::ok);
            let first = match (header, expected) {
                (Some(header), Some(expected)) if header.first != expected => {
                    return Err(StorageError::CorruptEntryIndex {
                        path,
                        reason: "its first index does not continue the previous segment",
                    })
                }
                (Some(header), _) => header.first,
                (None, Some(expected)) => expected,
                (None, None) => self.anchor_first(segments, any_sidecar).await?,
            };
            if k + 1 == segments.len() {
                self.resolve_active(&mut segments[k], first, clean_sidecar.take())
                    .await?;
            } else {
                self.resolve_sealed(&mut segments[k], first, header).await?;
            }
            expected = Some(entries(&segments[k]).end());
        }
        Ok(())
    }

    async fn resolve_sealed(
        &self,
        segment: &mut Segment,
        first: u64,
        header: Option<SidecarHeader>,
    ) -> Result<(), StorageError> {
        // A sealed segment is never empty (a roll needs a batch in the active segment).
        let trusted = header.filter(|h| h.sealed && (h.count == 0) == (segment.size_bytes == 0));
        let (count, sparse) = match trusted {
            Some(header) => (header.count, None),
            None => {
                let (count, sparse) = self.rebuild_entries(&segment.view()).await?;
                let bytes = entry_index::encode(first, count, true, &sparse);
                self.write_sidecar(segment.base_offset, &bytes).await?;
                (count, Some(sparse))
            }
        };
        segment.entries = Some(SegmentEntries {
            first,
            count,
            durable_count: count,
            sparse: RefCell::new(sparse),
        });
        Ok(())
    }

    /// The active segment: counted by the crash scan already, or (clean shutdown, new log)
    /// taken from its sidecar if that fits the segment, else scanned now.
    async fn resolve_active(
        &self,
        segment: &mut Segment,
        first: u64,
        clean_sidecar: Option<Bytes>,
    ) -> Result<(), StorageError> {
        if let Some(entries) = segment.entries.as_mut() {
            entries.first = first;
            return Ok(());
        }
        let path = self.sidecar_path(segment.base_offset);
        let view = segment.view();
        let sidecar = match clean_sidecar {
            Some(bytes) => Some(entry_index::decode(&bytes, view.size_bytes)),
            None => self.read_sidecar(&path, view.size_bytes).await?,
        };
        let fits = |header: &SidecarHeader| {
            header.first == first && (header.count == 0) == (view.size_bytes == 0)
        };
        let (count, sparse) = match sidecar {
            Some(Ok((header, sparse))) if fits(&header) => (header.count, sparse),
            _ => self.rebuild_entries(&view).await?,
        };
        segment.entries = Some(SegmentEntries {
            first,
            count,
            durable_count: count,
            sparse: RefCell::new(Some(sparse)),
        });
        Ok(())
    }

    /// The first segment's first index when its own sidecar is missing or damaged.
    async fn anchor_first(
        &self,
        segments: &[Segment],
        any_sidecar: bool,
    ) -> Result<u64, StorageError> {
        if !any_sidecar {
            tracing::info!(dir = %self.dir.display(), "no entry index yet: numbering entries from 0");
            return Ok(0);
        }
        let lost = StorageError::CorruptEntryIndex {
            path: self.sidecar_path(segments[0].base_offset),
            reason: "the log's first index is lost (first sidecar missing or damaged)",
        };
        let Some(next) = segments.get(1) else {
            return Err(lost);
        };
        let next_path = self.sidecar_path(next.base_offset);
        let Some(Ok(next_header)) = self.read_sidecar_header(&next_path).await? else {
            return Err(lost);
        };
        let (count, _) = self.rebuild_entries(&segments[0].view()).await?;
        next_header
            .first
            .checked_sub(count)
            .ok_or(StorageError::CorruptEntryIndex {
                path: next_path,
                reason: "its first index is below the previous segment's entry count",
            })
    }
}

impl LogState {
    /// `[first, next)` entry indexes of the log.
    pub(crate) fn entry_range(&self) -> (u64, u64) {
        assert!(self.entry_index, "log opened without entries");
        (
            entries(&self.segments[0]).first,
            entries(self.active()).end(),
        )
    }
}

fn entries(segment: &Segment) -> &SegmentEntries {
    segment
        .entries
        .as_ref()
        .expect("every segment of an entry-indexed log has entries")
}
