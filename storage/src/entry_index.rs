//! The entry index of a log used as a Raft log: Raft entry index ↔ record batch.
//!
//! openraft numbers entries contiguously (i + 1 follows i) while a batch spans
//! `last_offset_delta + 1` offsets, so offsets cannot serve as indexes. Every batch of an
//! entry-indexed log is one entry; the entries of a segment are numbered from the segment's
//! *first index*, in log order, so entry `first + k` is the segment's k-th batch.
//!
//! Sidecar `<base offset, 20 digits>.raftindex`, one per segment, big endian:
//! ```text
//! header (32 bytes)  magic "SPRI" | version u8 = 1 | sealed u8 (0/1) | reserved u16 = 0
//!                    | first index u64 | entry count u64 | sparse entries u32 | CRC-32C u32
//!                    (the CRC covers the 28 bytes before it)
//! sparse entries     (relative index u32, file position u32) × sparse entries
//! CRC-32C u32        over the sparse entries' bytes
//! ```
//! Sparse entries are taken exactly where the `.index` takes its entries (same batch, same
//! position), so a lookup by offset can go from the offset index to the entry index without a
//! second search, and a lookup by index scans at most `index.interval.bytes` of batches.
//!
//! Invariants:
//! - A segment's sidecar is written before its log file is created (its first index then,
//!   with no entries), so a `.log` without a `.raftindex` only results from damage, or from a
//!   log that never had an entry index (the upgrade: numbered from 0).
//! - At seal the sidecar is rewritten whole with `sealed = 1` and the segment's entry count,
//!   before the next segment's files exist; a sealed sidecar is trusted as a sealed `.index`
//!   is. The count of an unsealed (active) sidecar is only trusted after a clean shutdown.
//! - A segment's first index is the previous segment's first index + entry count. The first
//!   segment's first index comes from its own sidecar: that is the log's recorded start,
//!   moved by purging (deleting whole segments) and by restarting the log at an index.
//! - Relative indexes and positions strictly increase; a relative index is below the entry
//!   count and a position below the segment's size. Decoding checks every length against the
//!   bytes present before using it, so damage is detected, never trusted or allocated from.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use spool_protocol::batch::HEADER_BYTES;

use crate::log::SEGMENT_BYTES_MAX;

const MAGIC: &[u8; 4] = b"SPRI";
const VERSION: u8 = 1;
pub(crate) const RAFT_INDEX_HEADER_BYTES: usize = 32;
const ENTRY_BYTES: usize = 8;
const CRC_BYTES: usize = 4;
/// Most sparse entries a sidecar can hold: one per batch, and a batch is at least a header.
pub(crate) const RAFT_INDEX_ENTRIES_MAX: usize = SEGMENT_BYTES_MAX as usize / HEADER_BYTES;
/// Largest well-formed sidecar; anything larger is damage.
pub(crate) const RAFT_INDEX_BYTES_MAX: usize =
    RAFT_INDEX_HEADER_BYTES + RAFT_INDEX_ENTRIES_MAX * ENTRY_BYTES + CRC_BYTES;
/// Entries whose location stays in memory (`EntryWindow`): replication, apply, truncation
/// and commit work near the log end, so they rarely need a sidecar or a scan.
pub const RAFT_TAIL_ENTRIES_MAX: usize = 4096;

pub(crate) fn raft_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.raftindex"))
}

/// Where one entry is, and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo {
    pub index: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The segment holding the batch, and the batch's byte position in it.
    pub segment_base_offset: i64,
    pub position: u64,
    /// The batch's partition leader epoch (the Raft term of its leader).
    pub epoch: i32,
}

/// A sidecar's header, CRC-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SidecarHeader {
    pub first: u64,
    pub count: u64,
    pub sealed: bool,
    sparse_count: u32,
}

impl SidecarHeader {
    /// The whole file's size implied by the header.
    pub(crate) fn file_bytes(&self) -> usize {
        RAFT_INDEX_HEADER_BYTES + self.sparse_count as usize * ENTRY_BYTES + CRC_BYTES
    }
}

/// The sparse (relative index, position) map of one segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EntrySparse {
    entries: Vec<(u32, u32)>,
}

impl EntrySparse {
    /// The last sparse entry at or before `relative_index`, (0, 0) if none: a scan starts there.
    pub(crate) fn lookup(&self, relative_index: u64) -> (u64, u64) {
        let after = self
            .entries
            .partition_point(|&(index, _)| u64::from(index) <= relative_index);
        self.at(after)
    }

    /// The last sparse entry at or before byte `position`, (0, 0) if none.
    pub(crate) fn lookup_position(&self, position: u64) -> (u64, u64) {
        let after = self
            .entries
            .partition_point(|&(_, at)| u64::from(at) <= position);
        self.at(after)
    }

    fn at(&self, after: usize) -> (u64, u64) {
        after.checked_sub(1).map_or((0, 0), |i| {
            let (index, position) = self.entries[i];
            (u64::from(index), u64::from(position))
        })
    }

    pub(crate) fn push(&mut self, relative_index: u32, position: u32) {
        if let Some(&(last_index, last_position)) = self.entries.last() {
            assert!(relative_index > last_index && position > last_position);
        }
        self.entries.push((relative_index, position));
    }

    /// Drops entries for batches at or beyond `position`.
    pub(crate) fn truncate_to_position(&mut self, position: u64) {
        self.entries.retain(|&(_, at)| u64::from(at) < position);
    }
}

/// Encodes a whole sidecar.
pub(crate) fn encode(first: u64, count: u64, sealed: bool, sparse: &EntrySparse) -> Vec<u8> {
    let sparse_count = u32::try_from(sparse.entries.len()).expect("bounded by segment size");
    let mut bytes = Vec::with_capacity(
        RAFT_INDEX_HEADER_BYTES + sparse.entries.len() * ENTRY_BYTES + CRC_BYTES,
    );
    bytes.extend_from_slice(MAGIC);
    bytes.push(VERSION);
    bytes.push(u8::from(sealed));
    bytes.extend_from_slice(&0u16.to_be_bytes());
    bytes.extend_from_slice(&first.to_be_bytes());
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes.extend_from_slice(&sparse_count.to_be_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    let entries_start = bytes.len();
    for &(index, position) in &sparse.entries {
        bytes.extend_from_slice(&index.to_be_bytes());
        bytes.extend_from_slice(&position.to_be_bytes());
    }
    let crc = crc32c::crc32c(&bytes[entries_start..]);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// Decodes and checks the 32-byte header at the start of `bytes`.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<SidecarHeader, &'static str> {
    let Some(header) = bytes.get(..RAFT_INDEX_HEADER_BYTES) else {
        return Err("shorter than its header");
    };
    if &header[..4] != MAGIC {
        return Err("bad magic");
    }
    if header[4] != VERSION {
        return Err("unknown version");
    }
    if header[5] > 1 || header[6..8] != [0, 0] {
        return Err("bad flags");
    }
    let crc = u32_at(header, 28);
    if crc32c::crc32c(&header[..28]) != crc {
        return Err("header CRC mismatch");
    }
    let parsed = SidecarHeader {
        first: u64_at(header, 8),
        count: u64_at(header, 16),
        sealed: header[5] == 1,
        sparse_count: u32_at(header, 24),
    };
    if parsed.sparse_count as usize > RAFT_INDEX_ENTRIES_MAX {
        return Err("more sparse entries than a segment can hold");
    }
    if parsed.count > u64::from(u32::MAX) + 1 || parsed.first.checked_add(parsed.count).is_none() {
        return Err("entry count out of range");
    }
    Ok(parsed)
}

/// Decodes a whole sidecar for a segment of `log_bytes` bytes.
pub(crate) fn decode(
    bytes: &[u8],
    log_bytes: u64,
) -> Result<(SidecarHeader, EntrySparse), &'static str> {
    let header = decode_header(bytes)?;
    if bytes.len() != header.file_bytes() {
        return Err("size disagrees with the header");
    }
    let entries_end = bytes.len() - CRC_BYTES;
    let entries = &bytes[RAFT_INDEX_HEADER_BYTES..entries_end];
    if crc32c::crc32c(entries) != u32_at(bytes, entries_end) {
        return Err("entries CRC mismatch");
    }
    let mut sparse = EntrySparse::default();
    for chunk in entries.chunks_exact(ENTRY_BYTES) {
        let (index, position) = (u32_at(chunk, 0), u32_at(chunk, 4));
        let increasing = sparse
            .entries
            .last()
            .is_none_or(|&(i, p)| index > i && position > p);
        if !increasing || u64::from(index) >= header.count || u64::from(position) >= log_bytes {
            return Err("sparse entry out of order or out of range");
        }
        sparse.entries.push((index, position));
    }
    Ok((header, sparse))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

/// A segment's entries.
#[derive(Debug)]
pub(crate) struct SegmentEntries {
    pub first: u64,
    /// Batches in the segment, pending ones included.
    pub count: u64,
    pub durable_count: u64,
    /// None for a sealed segment whose sidecar has not been read yet.
    pub sparse: std::cell::RefCell<Option<EntrySparse>>,
}

impl SegmentEntries {
    pub(crate) fn new(first: u64) -> SegmentEntries {
        SegmentEntries {
            first,
            count: 0,
            durable_count: 0,
            sparse: std::cell::RefCell::new(Some(EntrySparse::default())),
        }
    }

    pub(crate) fn end(&self) -> u64 {
        self.first + self.count
    }

    pub(crate) fn view(&self) -> EntriesView {
        EntriesView {
            first: self.first,
            count: self.count,
            sparse: self.sparse.borrow().clone(),
        }
    }
}

/// What async I/O on a segment's entries needs, copied under a short borrow.
#[derive(Debug, Clone)]
pub(crate) struct EntriesView {
    pub first: u64,
    pub count: u64,
    pub sparse: Option<EntrySparse>,
}

/// The location of the most recent entries: a contiguous suffix of the log's entries ending
/// at its end. Like the tail cache, it evicts only durable entries, so a non-durable entry
/// (which no sidecar or scan can find yet) is always here.
#[derive(Debug, Default)]
pub(crate) struct EntryWindow {
    entries: VecDeque<EntryInfo>,
}

impl EntryWindow {
    pub(crate) fn push(&mut self, info: EntryInfo, durable_end_offset: i64) {
        if let Some(last) = self.entries.back() {
            assert_eq!(
                last.index + 1,
                info.index,
                "entry window must be contiguous"
            );
            assert_eq!(last.last_offset + 1, info.base_offset);
        }
        self.entries.push_back(info);
        self.evict(durable_end_offset);
    }

    pub(crate) fn get(&self, index: u64) -> Option<EntryInfo> {
        let first = self.entries.front()?.index;
        let k = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(k).copied()
    }

    /// The entry whose batch holds `offset`.
    pub(crate) fn find_offset(&self, offset: i64) -> Option<EntryInfo> {
        let after = self.entries.partition_point(|e| e.last_offset < offset);
        self.entries
            .get(after)
            .filter(|e| e.base_offset <= offset)
            .copied()
    }

    /// Evicts durable entries, oldest first, down to `RAFT_TAIL_ENTRIES_MAX`.
    pub(crate) fn evict(&mut self, durable_end_offset: i64) {
        while self.entries.len() > RAFT_TAIL_ENTRIES_MAX
            && self
                .entries
                .front()
                .is_some_and(|e| e.last_offset < durable_end_offset)
        {
            self.entries.pop_front();
        }
    }

    /// Drops entries whose batch starts at or after `offset`.
    pub(crate) fn truncate_from_offset(&mut self, offset: i64) {
        while self.entries.back().is_some_and(|e| e.base_offset >= offset) {
            self.entries.pop_back();
        }
    }

    /// Drops entries that end below the log start.
    pub(crate) fn drop_before_offset(&mut self, offset: i64) {
        while self.entries.front().is_some_and(|e| e.last_offset < offset) {
            self.entries.pop_front();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (EntrySparse, Vec<u8>) {
        let mut sparse = EntrySparse::default();
        for (index, position) in [(3, 400), (7, 900), (12, 1500)] {
            sparse.push(index, position);
        }
        let bytes = encode(1_000, 20, true, &sparse);
        (sparse, bytes)
    }

    #[test]
    fn roundtrip_and_lookups() {
        let (sparse, bytes) = sample();
        let (header, decoded) = decode(&bytes, 2_000).expect("valid sidecar");
        assert_eq!(decoded, sparse);
        assert_eq!(
            (header.first, header.count, header.sealed),
            (1_000, 20, true)
        );
        assert_eq!(header.file_bytes(), bytes.len());
        let cases = [
            (0, (0, 0)),
            (2, (0, 0)),
            (3, (3, 400)),
            (11, (7, 900)),
            (19, (12, 1500)),
        ];
        for (relative, expected) in cases {
            assert_eq!(sparse.lookup(relative), expected, "index {relative}");
        }
        assert_eq!(sparse.lookup_position(899), (3, 400));
        assert_eq!(sparse.lookup_position(900), (7, 900));
        assert_eq!(
            decode(&bytes, 1_500).err(),
            Some("sparse entry out of order or out of range")
        );
    }

    /// Every truncation and every single-byte change of a valid sidecar is rejected without a
    /// panic; so are headers declaring huge entry counts.
    #[test]
    fn hostile_bytes_are_rejected() {
        let (_, bytes) = sample();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], 2_000).is_err(), "prefix {len}");
        }
        for at in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= mask;
                assert!(decode(&damaged, 2_000).is_err(), "byte {at} ^ {mask:#x}");
            }
        }
        // A CRC-valid header claiming u32::MAX sparse entries: refused before any allocation.
        let mut huge = bytes[..RAFT_INDEX_HEADER_BYTES].to_vec();
        huge[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&huge[..28]);
        huge[28..32].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            decode_header(&huge).err(),
            Some("more sparse entries than a segment can hold")
        );
        // Within the bound but more than the bytes present.
        huge[24..28].copy_from_slice(&1_000u32.to_be_bytes());
        let crc = crc32c::crc32c(&huge[..28]);
        huge[28..32].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            decode(&huge, 2_000).err(),
            Some("size disagrees with the header")
        );
    }

    #[test]
    fn window_is_a_bounded_contiguous_suffix() {
        let mut window = EntryWindow::default();
        let total = RAFT_TAIL_ENTRIES_MAX as u64 + 10;
        for i in 0..total {
            let info = EntryInfo {
                index: 100 + i,
                base_offset: 2 * i as i64,
                last_offset: 2 * i as i64 + 1,
                segment_base_offset: 0,
                position: 0,
                epoch: 1,
            };
            // Nothing durable: nothing may be evicted.
            window.push(info, 0);
        }
        assert!(window.get(100).is_some());
        window.evict(i64::MAX);
        assert!(window.get(100 + 9).is_none());
        assert_eq!(window.get(100 + 10).map(|e| e.base_offset), Some(20));
        assert_eq!(window.find_offset(21).map(|e| e.index), Some(110));
        window.truncate_from_offset(22);
        assert!(window.get(111).is_none());
    }
}
