//! One segment of a partition log: `<base offset, 20 digits>.log` plus its `.index`,
//! `.timeindex` and (when the log is entry-indexed) `.raftindex`, and the in-memory state
//! needed to append to it with O_DIRECT.
//!
//! Invariants:
//! - `durable_bytes <= size_bytes`; bytes below `durable_bytes` are written and fdatasynced,
//!   bytes above are in `pending` (in order) and nowhere on disk that recovery trusts.
//! - `tail_page` holds the durable bytes from the last aligned boundary up to `durable_bytes`:
//!   O_DIRECT writes whole blocks, so each flush rewrites that partial block with new bytes
//!   appended. The file may therefore hold zero padding past the logical end; a batch header
//!   that does not validate marks the end of the log.
//! - A sealed segment (not the last one) never changes except by truncation or deletion, and
//!   its file is truncated to exactly its logical size.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use spool_protocol::batch::{self, BatchHeader, HEADER_BYTES};

use crate::entry_index::{EntriesView, SegmentEntries};
use crate::fs::SegmentFile;
use crate::index::{OffsetIndex, TimeIndex};

/// Bytes read per I/O when scanning a segment batch by batch.
pub(crate) const SCAN_CHUNK_BYTES: usize = 1 << 20;

pub(crate) fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

/// Where retention moves a segment's log file before unlinking it; recovery removes these.
pub(crate) fn deleted_path(log_path: &Path) -> PathBuf {
    let mut name = log_path.as_os_str().to_owned();
    name.push(DELETED_SUFFIX);
    PathBuf::from(name)
}

pub(crate) const DELETED_SUFFIX: &str = ".deleted";

pub(crate) fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

pub(crate) fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

/// Parses `<20 digits>.<extension>`.
pub(crate) fn parse_file_name(name: &str, extension: &str) -> Option<i64> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The offset and time indexes of a segment, loaded lazily for sealed segments.
#[derive(Debug, Default, Clone)]
pub(crate) struct Indexes {
    pub offsets: OffsetIndex,
    pub times: TimeIndex,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    /// None until the first flush creates the file (appends are synchronous, creation is not).
    /// Shared so async I/O can use the file without borrowing the log's state; a segment
    /// detached by retention or truncation stays readable by whoever still holds it.
    pub file: Option<Rc<SegmentFile>>,
    /// Logical size including pending bytes.
    pub size_bytes: u64,
    pub durable_bytes: u64,
    /// Offset after the last batch (== base_offset when empty).
    pub next_offset: i64,
    pub durable_next_offset: i64,
    /// None for a sealed segment whose index files have not been read yet.
    pub indexes: RefCell<Option<Indexes>>,
    /// Largest batch maxTimestamp and the last offset of that batch (-1, -1 when unknown).
    pub max_timestamp: (i64, i64),
    pub durable_max_timestamp: (i64, i64),
    pub bytes_since_index: u64,
    /// When the segment got its first batch, for `segment.ms`.
    pub rolling_ms: Option<i64>,
    /// Appended batches not yet written.
    pub pending: Vec<Bytes>,
    pub tail_page: Vec<u8>,
    pub sealed: bool,
    /// A sealed segment whose index files and producer snapshot are still to be written.
    pub seal_pending: Option<SealWork>,
    /// Some when the log is entry-indexed (see `entry_index.rs`).
    pub entries: Option<SegmentEntries>,
    /// Whether the segment's aborted transactions are in its `.txnindex` file (only a
    /// durably sealed segment with at least one ABORT marker has one; see `txn_index.rs`).
    pub txn_index: bool,
    /// The first batch's max timestamp (Kafka's `getFirstBatchTimestamp`, which
    /// `max.compaction.lag.ms` is measured from); None while the segment is empty, or for a
    /// sealed segment opened from disk until the cleaner reads it.
    pub first_timestamp: Option<i64>,
}

/// What a roll leaves for the next flush to persist about the sealed segment.
#[derive(Debug, Clone)]
pub(crate) struct SealWork {
    /// Producer snapshot as of the sealed segment's end offset.
    pub producer_snapshot: Vec<u8>,
}

/// What async I/O on a segment needs, copied out of the log state under a short borrow.
#[derive(Debug, Clone)]
pub(crate) struct SegmentView {
    pub base_offset: i64,
    pub file: Option<Rc<SegmentFile>>,
    pub size_bytes: u64,
    pub durable_bytes: u64,
    pub durable_next_offset: i64,
    pub indexes: Option<Indexes>,
    pub entries: Option<EntriesView>,
}

impl SegmentView {
    pub(crate) fn relative(&self, offset: i64) -> u32 {
        relative(self.base_offset, offset)
    }
}

/// How much of a segment a flush makes durable: what it held when the flush was planned.
/// Appends that arrive while the flush awaits its I/O stay pending for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlushTarget {
    /// The first `batches` entries of `pending`.
    pub batches: usize,
    pub size_bytes: u64,
    pub next_offset: i64,
    pub max_timestamp: (i64, i64),
    /// The segment's entry count (0 without an entry index).
    pub entry_count: u64,
}

fn relative(base_offset: i64, offset: i64) -> u32 {
    let relative = offset - base_offset;
    assert!(
        (0..=i64::from(u32::MAX)).contains(&relative),
        "offset {offset} outside segment"
    );
    relative as u32
}

impl Segment {
    pub(crate) fn new(base_offset: i64, file: Option<SegmentFile>) -> Segment {
        Segment {
            base_offset,
            file: file.map(Rc::new),
            size_bytes: 0,
            durable_bytes: 0,
            next_offset: base_offset,
            durable_next_offset: base_offset,
            indexes: RefCell::new(Some(Indexes::default())),
            max_timestamp: (-1, -1),
            durable_max_timestamp: (-1, -1),
            bytes_since_index: 0,
            rolling_ms: None,
            pending: Vec::new(),
            tail_page: Vec::new(),
            sealed: false,
            seal_pending: None,
            entries: None,
            txn_index: false,
            first_timestamp: None,
        }
    }

    /// Makes the segment entry-indexed from `first` (it must hold no batch yet).
    pub(crate) fn with_entries(mut self, first: u64) -> Segment {
        assert!(self.is_empty());
        self.entries = Some(SegmentEntries::new(first));
        self
    }

    /// Whether retention may delete it: it has a file, all its data is durable and no seal
    /// work is pending.
    pub(crate) fn is_settled(&self) -> bool {
        self.file.is_some() && self.seal_pending.is_none() && self.durable_bytes == self.size_bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    pub(crate) fn relative(&self, offset: i64) -> u32 {
        relative(self.base_offset, offset)
    }

    pub(crate) fn view(&self) -> SegmentView {
        SegmentView {
            base_offset: self.base_offset,
            file: self.file.clone(),
            size_bytes: self.size_bytes,
            durable_bytes: self.durable_bytes,
            durable_next_offset: self.durable_next_offset,
            indexes: self.indexes.borrow().clone(),
            entries: self.entries.as_ref().map(SegmentEntries::view),
        }
    }

    /// Whether a flush has anything to do for this segment.
    pub(crate) fn needs_flush(&self) -> bool {
        self.file.is_none() || self.durable_bytes < self.size_bytes || self.seal_pending.is_some()
    }

    /// Everything appended so far: what a flush planned now makes durable.
    pub(crate) fn flush_target(&self) -> FlushTarget {
        FlushTarget {
            batches: self.pending.len(),
            size_bytes: self.size_bytes,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            entry_count: self.entries.as_ref().map_or(0, |entries| entries.count),
        }
    }

    /// Records a batch appended at `size_bytes` in the indexes and counters.
    pub(crate) fn track_batch(&mut self, header: &BatchHeader, index_interval_bytes: u64) {
        let position = self.size_bytes;
        let batch_bytes = header.total_bytes() as u64;
        if position == 0 {
            self.first_timestamp = Some(header.max_timestamp);
        }
        if header.max_timestamp > self.max_timestamp.0 {
            self.max_timestamp = (header.max_timestamp, header.last_offset());
        }
        let mut indexes = self.indexes.borrow_mut();
        let indexes = indexes.get_or_insert_with(Indexes::default);
        if position > 0 && self.bytes_since_index >= index_interval_bytes {
            let position = u32::try_from(position).expect("segment positions fit u32");
            indexes
                .offsets
                .push(self.relative(header.base_offset), position);
            let (max_ts, max_ts_offset) = self.max_timestamp;
            indexes
                .times
                .maybe_push(max_ts, self.relative(max_ts_offset));
            self.bytes_since_index = 0;
            // The entry index samples the same batches as the offset index.
            if let Some(entries) = &self.entries {
                let relative_index =
                    u32::try_from(entries.count).expect("entries per segment fit u32");
                entries
                    .sparse
                    .borrow_mut()
                    .get_or_insert_with(Default::default)
                    .push(relative_index, position);
            }
        }
        if let Some(entries) = &mut self.entries {
            entries.count += 1;
        }
        self.bytes_since_index += batch_bytes;
        self.size_bytes += batch_bytes;
        self.next_offset = header.last_offset() + 1;
    }

    /// Adds the final time index entry, so the last entry is the segment's max timestamp.
    pub(crate) fn finish_time_index(&self) {
        let (max_ts, max_ts_offset) = self.max_timestamp;
        if max_ts_offset >= self.base_offset {
            let mut indexes = self.indexes.borrow_mut();
            let indexes = indexes.get_or_insert_with(Indexes::default);
            indexes
                .times
                .maybe_push(max_ts, self.relative(max_ts_offset));
        }
    }

    /// The bytes a flush writes for `target` (tail page + its pending batches, zero padded),
    /// where, and the tail page that will follow once they are durable.
    pub(crate) fn flush_image(
        &self,
        file: &crate::fs::SegmentFile,
        target: &FlushTarget,
    ) -> (u64, crate::fs::WriteImage, Vec<u8>) {
        let alignment = file.alignment();
        assert!(target.batches <= self.pending.len());
        let start = self.durable_bytes - self.durable_bytes % alignment;
        assert_eq!(start + self.tail_page.len() as u64, self.durable_bytes);
        let len = (target.size_bytes - start) as usize;
        let parts = std::iter::once(&self.tail_page[..])
            .chain(self.pending[..target.batches].iter().map(|b| &b[..]));
        let image = file.image(parts.clone(), len);
        // The partial last block, kept in memory to rewrite with the next flush.
        let tail_start = (target.size_bytes - target.size_bytes % alignment - start) as usize;
        let mut tail = Vec::with_capacity(len - tail_start);
        let mut at = 0;
        for part in parts {
            let (from, to) = (at, at + part.len());
            if to > tail_start {
                tail.extend_from_slice(&part[tail_start.saturating_sub(from)..]);
            }
            at = to;
        }
        assert_eq!(start + at as u64, target.size_bytes);
        (start, image, tail)
    }

    /// After a successful write + fdatasync of `flush_image(target)`: the target is durable;
    /// batches appended after the flush was planned stay pending.
    pub(crate) fn mark_durable(
        &mut self,
        image_start: u64,
        tail_page: Vec<u8>,
        alignment: u64,
        target: &FlushTarget,
    ) {
        assert_eq!(
            image_start,
            self.durable_bytes - self.durable_bytes % alignment
        );
        assert!(target.size_bytes <= self.size_bytes && target.batches <= self.pending.len());
        assert_eq!(
            tail_page.len() as u64,
            target.size_bytes % alignment,
            "the kept tail is the partial last block"
        );
        self.tail_page = tail_page;
        self.pending.drain(..target.batches);
        self.durable_bytes = target.size_bytes;
        self.durable_next_offset = target.next_offset;
        self.durable_max_timestamp = target.max_timestamp;
        if let Some(entries) = &mut self.entries {
            assert!(target.entry_count <= entries.count);
            entries.durable_count = target.entry_count;
        }
    }

    /// Forgets everything appended after the durable point (a failed flush).
    pub(crate) fn rollback_to_durable(&mut self) {
        self.pending.clear();
        self.size_bytes = self.durable_bytes;
        self.next_offset = self.durable_next_offset;
        self.max_timestamp = self.durable_max_timestamp;
        let relative_end = self.relative(self.next_offset);
        if let Some(indexes) = self.indexes.borrow_mut().as_mut() {
            indexes.offsets.truncate_to_position(self.durable_bytes);
            indexes.times.truncate_to_offset(relative_end);
        }
        if let Some(entries) = &mut self.entries {
            entries.count = entries.durable_count;
            if let Some(sparse) = entries.sparse.borrow_mut().as_mut() {
                sparse.truncate_to_position(self.durable_bytes);
            }
        }
        if self.size_bytes == 0 {
            self.rolling_ms = None;
            self.first_timestamp = None;
        }
    }
}

/// How a scan of batches ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Position after the last valid batch visited.
    pub valid_bytes: u64,
    /// True if bytes at `valid_bytes` (below `end`) were not a valid batch.
    pub invalid_tail: bool,
}

/// Visits each valid batch in `file` from `start` to `end`, reading in large chunks. Stops at
/// the first batch that is torn, fails its CRC or does not continue the offsets (`next_offset`
/// of the previous batch, when `expect_offset` is given), or when `visit` returns false.
pub(crate) async fn scan_batches(
    file: &SegmentFile,
    start: u64,
    end: u64,
    mut expect_offset: Option<i64>,
    chunk_bytes: usize,
    mut visit: impl FnMut(u64, &BatchHeader, &Bytes) -> bool,
) -> std::io::Result<ScanEnd> {
    let invalid = |position| {
        Ok(ScanEnd {
            valid_bytes: position,
            invalid_tail: true,
        })
    };
    let mut position = start;
    let mut chunk = Bytes::new();
    let mut chunk_start = start;
    while position < end {
        let in_chunk = ((position - chunk_start) as usize).min(chunk.len());
        let available = chunk.len() - in_chunk;
        // The declared size is untrusted: it is only used once it fits below `end`.
        let needed = frame_hint(&chunk[in_chunk..]).max(HEADER_BYTES);
        if needed as u64 > end - position {
            return invalid(position);
        }
        if available < needed {
            let want = chunk_bytes.max(needed).min((end - position) as usize);
            chunk = file.read_at(position, want).await?;
            chunk_start = position;
            if chunk.len() < needed {
                return invalid(position);
            }
            continue;
        }
        let Ok(total) = batch::frame_length(&chunk[in_chunk..]) else {
            return invalid(position);
        };
        let bytes = chunk.slice(in_chunk..in_chunk + total);
        // Stored batches: a cleaning may have thinned them.
        let Ok(header) = batch::validate_stored(&bytes) else {
            return invalid(position);
        };
        let continues = expect_offset.is_none_or(|expected| expected == header.base_offset);
        // A batch may be empty: a cleaning of a Raft log keeps emptied batches as headers.
        if !continues {
            return invalid(position);
        }
        expect_offset = expect_offset.map(|_| header.last_offset() + 1);
        if !visit(position, &header, &bytes) {
            return Ok(ScanEnd {
                valid_bytes: position,
                invalid_tail: false,
            });
        }
        position += total as u64;
    }
    Ok(ScanEnd {
        valid_bytes: position,
        invalid_tail: false,
    })
}

/// Declared total size of the batch at the start of `available`, 0 if unknown or negative.
fn frame_hint(available: &[u8]) -> usize {
    if available.len() < batch::LOG_OVERHEAD_BYTES {
        return 0;
    }
    let length = i32::from_be_bytes([available[8], available[9], available[10], available[11]]);
    usize::try_from(length).map_or(0, |length| length + batch::LOG_OVERHEAD_BYTES)
}
