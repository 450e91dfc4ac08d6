//! The shard's log cleaner (ARCHITECTURE.md, "Compaction"): one task per shard walks the
//! shard's partitions whose `cleanup.policy` holds `compact` and runs a cleaning round on each
//! that is due (`PartitionLog::clean`). One offset map per shard, of
//! `log.cleaner.dedupe.buffer.size / shards` bytes, is reused for every round, so the cleaner's
//! memory is that budget plus a few MiB of buffers however large the logs are.
//!
//! Replicated partitions are cleaned below their high watermark, each replica on its own,
//! keeping every batch (emptied ones as headers) so the Raft entry numbering is unchanged.

use std::rc::Rc;
use std::time::Duration;

use spool_storage::OffsetMap;

use super::partition::Partition;
use super::{now_ms, Shard};
use crate::runtime;

/// Smallest pause between two passes, so a misconfigured backoff cannot spin the shard.
const CLEANER_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Runs until the shard shuts down; returns at once when `log.cleaner.enable` is false.
pub async fn cleaner_loop(shard: Rc<Shard>) {
    if !shard.config.log_cleaner_enable {
        return;
    }
    let budget = |shard: &Shard| {
        let total = shard.dynamic.borrow().num(
            "log.cleaner.dedupe.buffer.size",
            shard.config.log_cleaner_dedupe_buffer_size,
        );
        total / shard.count.max(1)
    };
    let mut map_bytes = budget(&shard);
    let mut map = OffsetMap::new(map_bytes);
    loop {
        // Both settings may change at run time (dynamic broker configs).
        let backoff_ms = shard.dynamic.borrow().num(
            "log.cleaner.backoff.ms",
            shard.config.log_cleaner_backoff_ms,
        );
        runtime::sleep(Duration::from_millis(backoff_ms).max(CLEANER_BACKOFF_MIN)).await;
        if budget(&shard) != map_bytes {
            map_bytes = budget(&shard);
            map = OffsetMap::new(map_bytes);
        }
        if shard.shutting_down.get() {
            return;
        }
        let parts: Vec<Rc<Partition>> = shard.partitions.borrow().values().cloned().collect();
        for p in parts {
            if shard.shutting_down.get() {
                return;
            }
            if p.deleted.get() || p.offline.get() {
                continue;
            }
            // Never at or above the high watermark: a replicated partition's is its Raft
            // commit point; an unreplicated one's is what is durable.
            let limit = match p.group.borrow().as_ref() {
                Some(group) => group.hw.offset.get(),
                None => p.log.durable_end_offset(),
            };
            // Kafka's limit is for all its cleaner threads together: each shard gets its share.
            let io_max = shard.dynamic.borrow().num(
                "log.cleaner.io.max.bytes.per.second",
                shard.config.log_cleaner_io_max_bytes_per_second,
            ) / shard.count.max(1) as f64;
            match p.log.clean_paced(now_ms(), limit, &mut map, io_max).await {
                Ok(None) => {}
                Ok(Some(stats)) => tracing::info!(
                    topic = %p.topic,
                    partition = p.index,
                    dirty_start = stats.dirty_start,
                    dirty_end = stats.dirty_end,
                    read = stats.bytes_read,
                    written = stats.bytes_written,
                    records = stats.records_read,
                    kept = stats.records_kept,
                    segments = stats.segments_before,
                    segments_after = stats.segments_after,
                    keys = stats.map_keys,
                    elapsed_ms = stats.elapsed_us / 1000,
                    "cleaned"
                ),
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, "cleaning failed: {e}")
                }
            }
        }
    }
}
