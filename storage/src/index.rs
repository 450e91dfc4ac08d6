//! Sparse per-segment indexes, kept in memory and written whole as `.index` / `.timeindex`.
//!
//! - Offset index: entries `(relative base offset u32, byte position u32)`, big endian, one
//!   every `index.interval.bytes` of log. The batch at `position` starts at that offset.
//! - Time index: entries `(max timestamp so far i64, relative last offset u32)`, appended with
//!   the offset index entries when the segment's max timestamp grew, plus a final entry when
//!   the segment is sealed. So the last entry of a sealed segment is its max timestamp.
//!
//! Invariants: offsets, positions and timestamps strictly increase along each index. Decoding
//! checks them, so a damaged file is detected and rebuilt from the log instead of trusted.

/// Bytes per offset index entry.
pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes per time index entry.
pub(crate) const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Position of the last indexed batch starting at or before `relative_offset` (0 if none).
    pub(crate) fn lookup(&self, relative_offset: u32) -> u32 {
        let after = self
            .entries
            .partition_point(|&(offset, _)| offset <= relative_offset);
        if after == 0 {
            0
        } else {
            self.entries[after - 1].1
        }
    }

    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(relative_offset > last_offset && position > last_position);
        }
        self.entries.push((relative_offset, position));
    }

    /// Drops entries for batches at or beyond `position`.
    pub(crate) fn truncate_to_position(&mut self, position: u64) {
        self.entries
            .retain(|&(_, entry_position)| u64::from(entry_position) < position);
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(offset, position) in &self.entries {
            bytes.extend_from_slice(&offset.to_be_bytes());
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        bytes
    }

    /// None if the bytes are not a well-formed index for a log of `log_bytes`.
    pub(crate) fn decode(bytes: &[u8], log_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let offset = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let increasing = index
                .entries
                .last()
                .is_none_or(|&(o, p)| offset > o && position > p);
            if !increasing || u64::from(position) >= log_bytes {
                return None;
            }
            index.entries.push((offset, position));
        }
        Some(index)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Relative offset of the last entry whose timestamp is below `timestamp`: every batch up
    /// to and including that offset has a smaller max timestamp, so a search may start after it.
    pub(crate) fn lookup_before(&self, timestamp: i64) -> Option<u32> {
        let after = self.entries.partition_point(|&(ts, _)| ts < timestamp);
        after.checked_sub(1).map(|i| self.entries[i].1)
    }

    /// Appends `(timestamp, relative_offset)` if it raises the max timestamp.
    pub(crate) fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(last_ts, last_offset)) if timestamp <= last_ts => {
                assert!(relative_offset >= last_offset);
            }
            Some(&(_, last_offset)) => {
                assert!(relative_offset > last_offset);
                self.entries.push((timestamp, relative_offset));
            }
            None => self.entries.push((timestamp, relative_offset)),
        }
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// Drops entries for offsets at or beyond `relative_offset`.
    pub(crate) fn truncate_to_offset(&mut self, relative_offset: u32) {
        self.entries.retain(|&(_, offset)| offset < relative_offset);
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(timestamp, offset) in &self.entries {
            bytes.extend_from_slice(&timestamp.to_be_bytes());
            bytes.extend_from_slice(&offset.to_be_bytes());
        }
        bytes
    }

    /// None if the bytes are not a well-formed time index.
    pub(crate) fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let (ts, offset) = decode_time_entry(chunk);
            let increasing = index
                .entries
                .last()
                .is_none_or(|&(t, o)| ts > t && offset > o);
            if !increasing {
                return None;
            }
            index.entries.push((ts, offset));
        }
        Some(index)
    }
}

/// Decodes one 12-byte time index entry.
pub(crate) fn decode_time_entry(chunk: &[u8]) -> (i64, u32) {
    assert!(chunk.len() == TIME_ENTRY_BYTES);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&chunk[..8]);
    let offset = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
    (i64::from_be_bytes(ts), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_roundtrip() {
        let mut index = OffsetIndex::default();
        for (offset, position) in [(10, 4100), (25, 8300), (40, 12_500)] {
            index.push(offset, position);
        }
        let cases = [
            (0, 0),
            (9, 0),
            (10, 4100),
            (24, 4100),
            (25, 8300),
            (1000, 12_500),
        ];
        for (offset, position) in cases {
            assert_eq!(index.lookup(offset), position, "offset {offset}");
        }
        assert_eq!(
            OffsetIndex::decode(&index.encode(), 20_000),
            Some(index.clone())
        );
        assert_eq!(
            OffsetIndex::decode(&index.encode(), 12_000),
            None,
            "position past log"
        );
        assert_eq!(
            OffsetIndex::decode(&index.encode()[..7], 20_000),
            None,
            "torn entry"
        );
        index.truncate_to_position(8300);
        assert_eq!(index.lookup(1000), 4100);
    }

    #[test]
    fn time_index_lookup_and_roundtrip() {
        let mut index = TimeIndex::default();
        index.maybe_push(100, 0);
        index.maybe_push(90, 3); // does not raise the max: skipped
        index.maybe_push(200, 5);
        assert_eq!(index.lookup_before(100), None);
        assert_eq!(index.lookup_before(101), Some(0));
        assert_eq!(index.lookup_before(500), Some(5));
        assert_eq!(index.last(), Some((200, 5)));
        assert_eq!(TimeIndex::decode(&index.encode()), Some(index.clone()));
        let mut bytes = index.encode();
        bytes.extend_from_slice(&index.encode()[..12]); // timestamps go backwards
        assert_eq!(TimeIndex::decode(&bytes), None);
        index.truncate_to_offset(5);
        assert_eq!(index.last(), Some((100, 0)));
    }
}
