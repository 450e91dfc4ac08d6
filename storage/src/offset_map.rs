//! The log cleaner's offset map (ARCHITECTURE.md, "Compaction"): for a dirty range of a
//! compacted log, each key's last offset, in a fixed memory budget (Kafka's `SkimpyOffsetMap`
//! under `log.cleaner.dedupe.buffer.size`). Keys are kept as 16-byte digests, as Kafka keeps
//! MD5s: two SipHash-1-3 hashes with different keys, so a collision that would drop a live
//! record is as unlikely as Kafka's.
//!
//! The cleaner (`cleaner.rs`) fills it from a round's dirty range and rewrites segments with
//! `spool_protocol::compact::retain`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

/// Bytes one entry costs: the digest, the offset, and the hash table's own share.
pub const OFFSET_MAP_ENTRY_BYTES: usize = 16 + 8 + 16;

/// Key digest → last offset, bounded by a byte budget.
#[derive(Debug)]
pub struct OffsetMap {
    entries: HashMap<[u8; 16], i64>,
    slots: usize,
    /// The largest offset put so far (the cleaning of this round reaches it).
    last_offset: i64,
}

impl OffsetMap {
    /// A map of at most `bytes_max / OFFSET_MAP_ENTRY_BYTES` keys (at least one).
    pub fn new(bytes_max: usize) -> OffsetMap {
        let slots = (bytes_max / OFFSET_MAP_ENTRY_BYTES).max(1);
        OffsetMap {
            entries: HashMap::new(),
            slots,
            last_offset: -1,
        }
    }

    /// Records `offset` as `key`'s latest. False (nothing recorded) when the map is full and
    /// `key` is new: the round's dirty range ends before this record (Kafka's rule).
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let digest = digest(key);
        if self.entries.len() >= self.slots && !self.entries.contains_key(&digest) {
            return false;
        }
        let slot = self.entries.entry(digest).or_insert(offset);
        *slot = (*slot).max(offset);
        self.last_offset = self.last_offset.max(offset);
        true
    }

    /// `key`'s latest offset, if the dirty range holds it.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        self.entries.get(&digest(key)).copied()
    }

    /// Whether a record of `key` at `offset` survives the cleaning: no later record of its key
    /// in the dirty range.
    pub fn keeps(&self, key: &[u8], offset: i64) -> bool {
        self.get(key).is_none_or(|latest| offset >= latest)
    }

    /// Empties it for the next round, keeping its memory (bounded by the budget).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.last_offset = -1;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The largest offset put, -1 if none.
    pub fn last_offset(&self) -> i64 {
        self.last_offset
    }

    /// Keys it may hold.
    pub fn slots(&self) -> usize {
        self.slots
    }
}

fn digest(key: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, seed) in [(0usize, 0x5350_4f4f_4c31u64), (8, 0x5350_4f4f_4c32u64)] {
        let mut hasher = DefaultHasher::new();
        hasher.write_u64(seed);
        hasher.write(key);
        out[half..half + 8].copy_from_slice(&hasher.finish().to_be_bytes());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_per_key_within_the_budget() {
        let mut map = OffsetMap::new(3 * OFFSET_MAP_ENTRY_BYTES);
        assert_eq!(map.slots(), 3);
        assert!(map.put(b"a", 1));
        assert!(map.put(b"b", 2));
        assert!(map.put(b"a", 5));
        assert!(map.put(b"c", 6));
        // Full: a new key is refused, a known one still moves.
        assert!(!map.put(b"d", 7));
        assert!(map.put(b"b", 8));
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(b"a"), Some(5));
        assert_eq!(map.get(b"d"), None);
        assert_eq!(map.last_offset(), 8);
        // Only each key's latest record survives; keys outside the map do.
        assert!(!map.keeps(b"a", 1) && map.keeps(b"a", 5));
        assert!(!map.keeps(b"b", 2) && map.keeps(b"b", 8));
        assert!(map.keeps(b"d", 7) && map.keeps(b"zzz", 0));
        // Offsets never go back.
        assert!(map.put(b"a", 3));
        assert_eq!(map.get(b"a"), Some(5));
    }

    #[test]
    fn digests_differ_for_keys_that_differ() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000u32 {
            assert!(seen.insert(digest(&i.to_be_bytes())));
        }
        assert_ne!(digest(b""), digest(b"\0"));
    }
}
