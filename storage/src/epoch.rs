//! Leader epoch cache: `(epoch, start offset)` for every epoch that appended to the log, like
//! Kafka's `leader-epoch-checkpoint` (same text format: version, count, `epoch offset` lines).
//!
//! Invariants: epochs and start offsets strictly increase. Entries never point at or past the
//! log end: truncation and failed flushes drop them together with the data.

/// Text format version of the checkpoint file (Kafka's).
const CHECKPOINT_VERSION: u32 = 0;
/// Entries a checkpoint may hold; more means the file is damaged.
const CHECKPOINT_ENTRIES_MAX: usize = 1_000_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than every known epoch.
    /// Returns whether the cache changed.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        if let Some(&(_, last_start)) = self.entries.last() {
            assert!(start_offset >= last_start);
            if start_offset == last_start {
                // The previous epoch appended nothing: it never owned any offset.
                self.entries.pop();
            }
        }
        self.entries.push((epoch, start_offset));
        true
    }

    /// OffsetForLeaderEpoch, exactly as Kafka's `LeaderEpochFileCache.endOffsetFor`: the latest
    /// epoch ends at the log end; an older one at the start of the next higher epoch, reported
    /// as the largest known epoch <= requested (or the requested epoch itself when it is below
    /// every known one); an epoch above every known one, or -1, is (-1, -1).
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i32, i64) {
        if epoch < 0 {
            return (-1, -1);
        }
        if self
            .entries
            .last()
            .is_some_and(|&(latest, _)| latest == epoch)
        {
            return (epoch, log_end_offset);
        }
        let after = self.entries.partition_point(|&(e, _)| e <= epoch);
        let Some(&(_, higher_start)) = self.entries.get(after) else {
            return (-1, -1);
        };
        match after.checked_sub(1) {
            Some(floor) => (self.entries[floor].0, higher_start),
            None => (epoch, higher_start),
        }
    }

    /// Epoch of the leader that appended `offset` (-1 if unknown).
    pub(crate) fn epoch_for_offset(&self, offset: i64) -> i32 {
        let after = self.entries.partition_point(|&(_, start)| start <= offset);
        after.checked_sub(1).map_or(-1, |i| self.entries[i].0)
    }

    /// Drops entries starting at or after `offset`. Returns whether the cache changed.
    pub(crate) fn truncate_from_end(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < offset);
        before != self.entries.len()
    }

    /// Drops entries entirely below the new log start; the one covering it moves up to it.
    pub(crate) fn truncate_from_start(&mut self, log_start_offset: i64) -> bool {
        let covering = self
            .entries
            .partition_point(|&(_, start)| start <= log_start_offset);
        if covering <= 1
            && self
                .entries
                .first()
                .is_none_or(|&(_, s)| s >= log_start_offset)
        {
            return false;
        }
        let keep_from = covering.saturating_sub(1);
        self.entries.drain(..keep_from);
        if let Some(first) = self.entries.first_mut() {
            first.1 = first.1.max(log_start_offset);
        }
        true
    }

    /// `(epoch, start offset)` pairs, oldest first.
    pub(crate) fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// A cache of `entries`; None unless epochs and start offsets strictly increase.
    pub(crate) fn from_entries(entries: &[(i32, i64)]) -> Option<EpochCache> {
        let increasing = entries
            .windows(2)
            .all(|pair| pair[1].0 > pair[0].0 && pair[1].1 > pair[0].1);
        let valid = entries
            .iter()
            .all(|&(epoch, start)| epoch >= 0 && start >= 0);
        (increasing && valid).then(|| EpochCache {
            entries: entries.to_vec(),
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        text.into_bytes()
    }

    /// None if the checkpoint is damaged.
    pub(crate) fn decode(bytes: &[u8]) -> Option<EpochCache> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim().parse::<u32>().ok()? != CHECKPOINT_VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        if count > CHECKPOINT_ENTRIES_MAX {
            return None;
        }
        let mut cache = EpochCache::default();
        for _ in 0..count {
            let mut fields = lines.next()?.split_whitespace();
            let epoch: i32 = fields.next()?.parse().ok()?;
            let start: i64 = fields.next()?.parse().ok()?;
            let increasing = cache
                .entries
                .last()
                .is_none_or(|&(e, s)| epoch > e && start > s);
            if !increasing {
                return None;
            }
            cache.entries.push((epoch, start));
        }
        Some(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_like_kafka() {
        let mut cache = EpochCache::default();
        assert_eq!(cache.end_offset_for(0, 10), (-1, -1));
        assert!(cache.assign(1, 0));
        assert!(!cache.assign(1, 5));
        assert!(cache.assign(3, 10));
        assert!(cache.assign(4, 20));
        let cases = [
            (-1, (-1, -1)),
            (0, (0, 0)),
            (1, (1, 10)),
            (2, (1, 10)),
            (3, (3, 20)),
            (4, (4, 30)),
        ];
        for (epoch, expected) in cases {
            assert_eq!(cache.end_offset_for(epoch, 30), expected, "epoch {epoch}");
        }
        assert_eq!(cache.end_offset_for(9, 30), (-1, -1));
        assert_eq!(cache.epoch_for_offset(15), 3);
        assert_eq!(EpochCache::decode(&cache.encode()), Some(cache.clone()));
        assert!(cache.truncate_from_end(20));
        assert_eq!(cache.end_offset_for(4, 20), (-1, -1));
        assert!(cache.truncate_from_start(12));
        assert_eq!(cache.end_offset_for(1, 20), (1, 12));
        assert_eq!(cache.end_offset_for(3, 20), (3, 20));
        assert_eq!(cache.epoch_for_offset(12), 3);
    }
}
