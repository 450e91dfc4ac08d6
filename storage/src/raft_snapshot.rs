//! What a Raft snapshot of a partition log carries and how a log restarts from one (see
//! ARCHITECTURE.md, "Replicated partitions": snapshots are metadata only, they exist to
//! purge). The snapshot's data is the state the log's records imply at an offset: the
//! idempotent-producer state (storage's own snapshot encoding, CRC-checked) and the leader
//! epoch cache. A follower whose log fell behind the leader's purge point restarts empty at
//! the snapshot's offset with that state, as a Kafka follower does with
//! `truncateFullyAndStartAt` when its fetch offset fell below the leader's log start.

use crate::epoch::EpochCache;
use crate::log::{io_error, snapshot_path, PartitionLog};
use crate::producer::ProducerState;
use crate::recovery::Replay;
use crate::StorageError;

/// Whether `bytes` is a producer state this crate can load (a snapshot received from a peer is
/// checked before anything is changed).
pub fn producer_snapshot_is_valid(bytes: &[u8]) -> bool {
    ProducerState::decode(bytes, 0).is_some()
}

impl PartitionLog {
    /// The log start retention would leave (Kafka's `retention.ms` / `retention.bytes` on
    /// whole segments, never the active one), deleting only segments whose records all lie
    /// below `limit` (a Raft log: the applied point). None if nothing would go. Deletes
    /// nothing: a Raft log's retention goes through a snapshot and openraft's purge.
    pub fn retention_point(&self, now_ms: i64, limit: i64) -> Option<i64> {
        self.state.borrow().retention_point(now_ms, limit)
    }

    /// The idempotent-producer state as of `offset` (a batch boundary of the durable log),
    /// encoded: the newest of the on-disk producer snapshots at or below `offset` and `base`
    /// (a state the caller kept, at its offset), plus a replay of the batches after it.
    pub async fn producer_state_at(
        &self,
        offset: i64,
        base: Option<(i64, &[u8])>,
    ) -> Result<Vec<u8>, StorageError> {
        let (start, end) = {
            let state = self.state.borrow();
            (state.log_start_offset(), state.durable_end_offset)
        };
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        let mut best: Option<(i64, ProducerState)> = None;
        let mut on_disk = self.snapshot_offsets()?;
        on_disk.retain(|&at| at <= offset);
        on_disk.sort_unstable_by(|a, b| b.cmp(a));
        for at in on_disk {
            let path = snapshot_path(&self.dir, at);
            let bytes = self
                .backend
                .read_file(&path)
                .await
                .map_err(io_error(&path))?;
            if let Some(state) = bytes.and_then(|b| ProducerState::decode(&b, 0)) {
                best = Some((at, state));
                break;
            }
        }
        if let Some((at, bytes)) = base.filter(|&(at, _)| at <= offset) {
            if best.as_ref().is_none_or(|(found, _)| at > *found) {
                let state =
                    ProducerState::decode(bytes, 0).ok_or(StorageError::CorruptSnapshot {
                        reason: "the base producer state is undecodable",
                    })?;
                best = Some((at, state));
            }
        }
        let (at, mut producers) = best.unwrap_or((start, ProducerState::default()));
        // Below the log start nothing can be replayed any more (recovery's rule too).
        let from = at.max(start);
        let replay = Replay {
            from,
            end: offset,
            epochs_from: i64::MAX,
            producers_from: from,
        };
        let mut unused = EpochCache::default();
        self.replay(replay, &mut producers, &mut unused).await?;
        // A snapshot is of committed entries: no transaction ended below it holds the LSO.
        producers.advance_stable(offset);
        Ok(producers.encode())
    }

    /// The leader epoch cache as it is for a log starting at `offset`: the epochs that
    /// appended below it, the one covering it moved up to it (Kafka's cache after the log
    /// start moves).
    pub fn epochs_at(&self, offset: i64) -> Vec<(i32, i64)> {
        let mut epochs = self.state.borrow().epochs_below(offset);
        epochs.truncate_from_start(offset);
        epochs.entries().to_vec()
    }

    /// Restarts the log empty at `offset` with entry `index` next
    /// (`truncate_fully_and_start_at_entry`), holding the producer state and epoch cache of
    /// a snapshot taken there. Both are checked before anything changes; the producer state
    /// is written as the producer snapshot at `offset`, so recovery loads it.
    pub async fn restart_from_snapshot(
        &self,
        index: u64,
        offset: i64,
        producers: &[u8],
        epochs: &[(i32, i64)],
    ) -> Result<(), StorageError> {
        let mut decoded =
            ProducerState::decode(producers, 0).ok_or(StorageError::CorruptSnapshot {
                reason: "undecodable producer state",
            })?;
        // The log restarts empty at `offset`: aborts below it have no records left to hide.
        decoded.prune_aborted(offset);
        let mut epochs = EpochCache::from_entries(epochs).ok_or(StorageError::CorruptSnapshot {
            reason: "epochs and start offsets do not increase",
        })?;
        if offset < 0 {
            return Err(StorageError::CorruptSnapshot {
                reason: "negative start offset",
            });
        }
        epochs.truncate_from_end(offset + 1);
        epochs.truncate_from_start(offset);
        self.truncate_fully_and_start_at_entry(index, offset)
            .await?;
        let path = snapshot_path(&self.dir, offset);
        self.backend
            .write_file_atomic(&path, &decoded.encode())
            .await
            .map_err(io_error(&path))?;
        self.write_epochs(&epochs).await?;
        let mut state = self.state.borrow_mut();
        let clock_ms = state.producers.clock_ms();
        state.producers = decoded;
        state.producers.observe(clock_ms);
        state.epochs = epochs;
        state.epochs_dirty = false;
        Ok(())
    }
}
