//! In-memory cache of the most recently appended batches, so caught-up consumers and followers
//! never touch the disk.
//!
//! Invariants: the cached batches are a contiguous suffix of the log ending at the log end.
//! Batches that are not yet durable are always cached (they exist nowhere else), so only
//! durable batches are evicted, oldest first, to stay under `tail_cache_bytes_max`.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub(crate) struct CachedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub leader_epoch: i32,
    pub bytes: Bytes,
}

#[derive(Debug, Default)]
pub(crate) struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
}

impl TailCache {
    pub(crate) fn push(&mut self, batch: CachedBatch) {
        if let Some(last) = self.batches.back() {
            assert_eq!(
                last.last_offset + 1,
                batch.base_offset,
                "tail cache must be contiguous"
            );
        }
        self.bytes += batch.bytes.len();
        self.batches.push_back(batch);
    }

    /// Whether `offset` lies in a cached batch (the cache reaches the log end).
    pub(crate) fn covers(&self, offset: i64) -> bool {
        self.batches
            .front()
            .is_some_and(|first| first.base_offset <= offset)
    }

    /// Evicts durable batches, oldest first, until at most `bytes_max` are cached.
    pub(crate) fn evict(&mut self, bytes_max: usize, durable_end_offset: i64) {
        while self.bytes > bytes_max {
            match self.batches.front() {
                Some(first) if first.last_offset < durable_end_offset => {
                    self.bytes -= first.bytes.len();
                    self.batches.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Drops batches at or after `offset` (their base offset).
    pub(crate) fn truncate_from(&mut self, offset: i64) {
        while self
            .batches
            .back()
            .is_some_and(|last| last.base_offset >= offset)
        {
            if let Some(last) = self.batches.pop_back() {
                self.bytes -= last.bytes.len();
            }
        }
    }

    /// Drops batches that end below the log start.
    pub(crate) fn drop_before(&mut self, log_start_offset: i64) {
        while self
            .batches
            .front()
            .is_some_and(|first| first.last_offset < log_start_offset)
        {
            if let Some(first) = self.batches.pop_front() {
                self.bytes -= first.bytes.len();
            }
        }
    }

    /// Whole batches from the one containing `offset`, KIP-74 style: at least one if it ends
    /// below `upper_bound`, then more while the total stays within `max_bytes`.
    pub(crate) fn read(&self, offset: i64, max_bytes: usize, upper_bound: i64) -> Vec<Bytes> {
        let first = self
            .batches
            .partition_point(|batch| batch.last_offset < offset);
        let mut total = 0usize;
        let mut out = Vec::new();
        for batch in self.batches.range(first..) {
            if batch.last_offset >= upper_bound {
                break;
            }
            if !out.is_empty() && total + batch.bytes.len() > max_bytes {
                break;
            }
            total += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        out
    }

    /// The first cached batch at or after `offset` whose max timestamp is >= `timestamp`.
    pub(crate) fn find_timestamp(&self, offset: i64, timestamp: i64) -> Option<&CachedBatch> {
        let first = self
            .batches
            .partition_point(|batch| batch.last_offset < offset);
        self.batches
            .range(first..)
            .find(|batch| batch.max_timestamp >= timestamp)
    }
}
