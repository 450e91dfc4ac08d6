//! Retention of a replicated partition (see ARCHITECTURE.md, "Replicated partitions": the
//! Snapshots bullet). Each replica applies Kafka's `retention.ms` / `retention.bytes` to its
//! own log, as Kafka's replicas do, but never deletes segments behind openraft's back (a
//! lagging follower would find a hole): it picks the segments retention would delete below
//! the applied point (the high watermark), asks openraft for a snapshot ending at the last
//! entry of the last of them, then for a purge through that entry; the store's purge deletes
//! exactly those segments (`PartitionLog::purge_entries_through`). A follower whose log ends
//! below the leader's purge point is sent that snapshot and restarts its log at the leader's
//! new log start (`state_machine.rs`).
//!
//! Owned by: the partition's shard.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::ReplicaGroup;
use crate::runtime;

/// How long a retention pass waits for openraft to build the snapshot it asked for; past it
/// the pass gives up and the next one asks again.
pub const SNAPSHOT_WAIT_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("cannot read the log: {0}")]
    Storage(#[from] spool_storage::StorageError),
    #[error("the Raft group stopped: {0}")]
    Stopped(String),
    #[error("no snapshot through entry {0} within {SNAPSHOT_WAIT_MAX:?}")]
    SnapshotTimeout(u64),
}

impl ReplicaGroup {
    /// One retention pass over this replica's log: returns the entry it asked openraft to
    /// purge through, None if retention deletes nothing now. The purge itself may come later
    /// (a leader purges only entries no replication stream is still sending).
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<Option<u64>, RetentionError> {
        let limit = self.hw.offset.get();
        let Some(keep_from) = self.log.retention_point(now_ms, limit) else {
            return Ok(None);
        };
        let Some(first_kept) = self.log.index_of_offset(keep_from).await? else {
            return Ok(None);
        };
        let Some(upto) = first_kept.checked_sub(1) else {
            return Ok(None);
        };
        let mut metrics = self.raft.metrics();
        let (purged, snapshot) = {
            let m = metrics.borrow_watched();
            (m.purged.map(|id| id.index), m.snapshot.map(|id| id.index))
        };
        if purged.is_some_and(|p| p >= upto) {
            return Ok(None);
        }
        if snapshot.is_none_or(|s| s < upto) {
            self.snapshot_target.set(Some(upto));
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| RetentionError::Stopped(e.to_string()))?;
            let deadline = std::time::Instant::now() + SNAPSHOT_WAIT_MAX;
            loop {
                if metrics
                    .borrow_watched()
                    .snapshot
                    .is_some_and(|id| id.index >= upto)
                {
                    break;
                }
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(RetentionError::SnapshotTimeout(upto));
                }
                let changed = futures::future::select(
                    Box::pin(metrics.changed()),
                    Box::pin(runtime::sleep(deadline - now)),
                )
                .await;
                if let futures::future::Either::Left((Err(e), _)) = changed {
                    return Err(RetentionError::Stopped(e.to_string()));
                }
            }
        }
        self.raft
            .trigger()
            .purge_log(upto)
            .await
            .map_err(|e| RetentionError::Stopped(e.to_string()))?;
        tracing::debug!(
            topic = %self.topic,
            partition = self.partition,
            upto,
            keep_from,
            "retention purges through a snapshot"
        );
        Ok(Some(upto))
    }
}
