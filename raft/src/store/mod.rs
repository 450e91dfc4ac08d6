//! The Raft log and vote of one group, on Spool's own storage: openraft's `RaftLogStorage`.
//!
//! The log *is* a Spool partition log (`spool_storage::PartitionLog`), not a second engine:
//! each entry is one Kafka record batch whose offset is the Raft index and whose partition
//! leader epoch is the term (encoding in `codec.rs`). The vote, the committed log id and the
//! purge point live in one small state file beside the segments (`raft-state`), replaced
//! atomically (temp file, fdatasync, rename, directory fsync).
//!
//! Durability: `append` calls its `IOFlushed` callback only after the log's fdatasync; `save_vote`,
//! `save_committed` and `purge` return only after the state file is durable; `truncate_after`
//! returns after the truncation is durable (`truncate_suffix`). Every write is awaited in the
//! call that makes it, so writes are applied in the order openraft issues them. Each append
//! costs one fdatasync and each vote, commit or purge record two fsyncs (file and directory):
//! cheap for the metadata group; partition groups will want a shard-wide group commit.
//!
//! Reads: `try_get_log_entries` returns the whole range it is asked for (openraft's contract);
//! `limited_get_log_entries`, which replication uses, stops at [`READ_ENTRIES_MAX`] entries or
//! [`READ_ENTRY_BYTES_MAX`] bytes.
//!
//! Purge: the purge point is recorded first, then whole segments below it are deleted; entries
//! at or below it that remain in a partly purged segment are hidden from readers. Purging past
//! the last entry (a snapshot beyond the log) restarts the log empty after the purge point, and
//! so does the first append into an empty log at another index. A crash between recording the
//! purge point and restarting the log is repaired when the store is opened.
//!
//! Owned by: the shard that runs the Raft group (`!Send`: `Rc`). The store and its readers share
//! one `PartitionLog`, whose methods are safe to interleave (see `storage/src/log.rs`).

mod codec;
mod partition;
#[cfg(test)]
mod partition_tests;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::rc::Rc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use spool_storage::{Backend, LogConfig, PartitionLog, StorageError, TimestampType};

use self::codec::{decode_entry, encode_entry, Entry, PersistentState, RaftLogId, Vote};
pub use self::codec::{decode_log_start_entry, encode_log_start_entry};
pub use self::partition::{
    DurableObserver, DurableProposal, PartitionLogReader, PartitionStore, PROPOSAL_BASE_OFFSET,
};
use crate::TypeConfig;

/// Name of the state file beside the segments.
const STATE_FILE: &str = "raft-state";
/// Bytes one storage read asks for while collecting entries.
const READ_CHUNK_BYTES_MAX: usize = 1 << 20;
/// Entries `limited_get_log_entries` returns at most (replication sends at most this many).
pub const READ_ENTRIES_MAX: usize = 4096;
/// Bytes of entries `limited_get_log_entries` returns at most (at least one entry).
pub const READ_ENTRY_BYTES_MAX: usize = 8 << 20;

/// Settings of a group's log.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Size at which a segment is rolled; purge deletes whole segments.
    pub segment_bytes: u64,
    /// Largest entry (as a record batch) accepted.
    pub entry_bytes_max: u32,
    /// Bytes of recent entries kept in memory for replication reads.
    pub tail_cache_bytes_max: usize,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            segment_bytes: 64 << 20,
            entry_bytes_max: 8 << 20,
            tail_cache_bytes_max: 1 << 20,
        }
    }
}

/// What can go wrong in the log store, besides storage I/O.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("Raft state file {path} is corrupt: {reason}")]
    CorruptState { path: PathBuf, reason: &'static str },
    #[error("Raft log entry {index} is corrupt: {reason}")]
    CorruptEntry { index: u64, reason: &'static str },
    #[error("Raft log entry {index} is missing from the log")]
    MissingEntry { index: u64 },
    #[error("append of entry {got} where the log expects {expected}")]
    NonContiguousAppend { expected: u64, got: u64 },
    #[error("term {term} does not fit a Kafka leader epoch (i32)")]
    TermTooLarge { term: u64 },
    #[error("log index {index} does not fit a Kafka offset (i64)")]
    IndexTooLarge { index: u64 },
    #[error("membership exceeds the encoding's bounds")]
    MembershipTooLarge,
}

impl From<StoreError> for io::Error {
    fn from(error: StoreError) -> io::Error {
        let kind = match &error {
            StoreError::Storage(StorageError::Io { source, .. }) => source.kind(),
            StoreError::CorruptState { .. }
            | StoreError::CorruptEntry { .. }
            | StoreError::MissingEntry { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

/// A group's Raft log store. Open one per group directory with [`LogStore::open`].
///
/// Owned by: the group's shard.
pub struct LogStore {
    shared: Rc<Shared>,
}

/// Closes a store's log cleanly once openraft has let go of it (after `Raft::shutdown`), so
/// the next open finds a clean-shutdown marker instead of recovering the log's tail.
///
/// Owned by: whoever shuts the group down.
pub struct StoreCloser {
    shared: Rc<Shared>,
}

impl StoreCloser {
    /// Closes the log if nothing else holds the store: true if it did. A store still held
    /// (a task openraft has not dropped yet) is left to recovery at the next open.
    pub async fn close(self) -> Result<bool, StoreError> {
        match Rc::try_unwrap(self.shared) {
            Ok(shared) => {
                shared.log.close().await?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

/// A reader of the store's log and vote, for openraft's replication tasks.
///
/// Owned by: the group's shard.
#[derive(Clone)]
pub struct LogReader {
    shared: Rc<Shared>,
}

struct Shared {
    log: PartitionLog,
    /// Only changed after the change is durable, and never borrowed across an `.await`.
    state: RefCell<PersistentState>,
    /// The last entry's log id, or the purge point if no entry is left.
    last: RefCell<Option<RaftLogId>>,
}

impl LogStore {
    /// Opens (creating if absent) the group's log in `dir` on `backend`, recovers it, and
    /// repairs a purge that a crash interrupted.
    pub async fn open(
        dir: PathBuf,
        backend: Backend,
        config: StoreConfig,
    ) -> Result<LogStore, StoreError> {
        let log = PartitionLog::open(dir.clone(), log_config(&config), backend).await?;
        let state_path = dir.join(STATE_FILE);
        let state = match log.read_side_file(STATE_FILE).await? {
            None => PersistentState::default(),
            Some(bytes) => {
                PersistentState::decode(&bytes).map_err(|reason| StoreError::CorruptState {
                    path: state_path.clone(),
                    reason,
                })?
            }
        };
        let shared = Shared {
            log,
            state: RefCell::new(state),
            last: RefCell::new(None),
        };
        shared.finish_interrupted_purge().await?;
        let last = shared.read_last_log_id().await?;
        *shared.last.borrow_mut() = last;
        Ok(LogStore {
            shared: Rc::new(shared),
        })
    }
}

impl LogStore {
    /// The handle that closes the log after openraft is done with it.
    pub fn closer(&self) -> StoreCloser {
        StoreCloser {
            shared: self.shared.clone(),
        }
    }
}

fn log_config(config: &StoreConfig) -> LogConfig {
    LogConfig {
        segment_bytes: config.segment_bytes,
        // Segments roll by size only: purge, not time, decides what is deleted.
        segment_ms: i64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        max_message_bytes: config.entry_bytes_max,
        index_interval_bytes: 4096,
        timestamp_type: TimestampType::CreateTime,
        tail_cache_bytes_max: config.tail_cache_bytes_max,
        producer_id_expiration_ms: -1,
        compaction: Default::default(),
    }
}

impl Shared {
    fn purged_index(&self) -> Option<u64> {
        self.state.borrow().purged.as_ref().map(|p| p.index)
    }

    /// The first index readers may see: above the purge point and in the log.
    fn first_index(&self) -> u64 {
        let start = offset_to_index(self.log.log_start_offset());
        self.purged_index().map_or(start, |p| start.max(p + 1))
    }

    fn end_index(&self) -> u64 {
        offset_to_index(self.log.log_end_offset())
    }

    /// A crash after the purge point was recorded but before the log was restarted past it
    /// leaves entries that are all purged (or an empty log at 0): restart the log now.
    async fn finish_interrupted_purge(&self) -> Result<(), StoreError> {
        let Some(purged) = self.purged_index() else {
            return Ok(());
        };
        let next = purged + 1;
        let (start, end) = (
            offset_to_index(self.log.log_start_offset()),
            self.end_index(),
        );
        if end <= next && (start, end) != (next, next) {
            tracing::info!(purged, start, end, "restarting a fully purged Raft log");
            self.log
                .truncate_fully_and_start_at(index_to_offset(next)?)
                .await?;
        }
        Ok(())
    }

    /// The last entry's log id, read from the log, or the purge point if there is none.
    async fn read_last_log_id(&self) -> Result<Option<RaftLogId>, StoreError> {
        let end = self.end_index();
        if end <= self.first_index() {
            return Ok(self.state.borrow().purged);
        }
        let entries = self
            .read_entries(end - 1, end, usize::MAX, usize::MAX)
            .await?;
        let last = entries
            .last()
            .ok_or(StoreError::MissingEntry { index: end - 1 })?;
        Ok(Some(last.log_id))
    }

    /// Replaces the state file, then the in-memory state.
    async fn write_state(&self, state: PersistentState) -> Result<(), StoreError> {
        self.log
            .write_side_file(STATE_FILE, &state.encode())
            .await?;
        *self.state.borrow_mut() = state;
        Ok(())
    }

    /// Entries `[from, to)` clipped to what the log holds, stopping early at `entries_max`
    /// entries or `bytes_max` bytes (but returning at least one).
    async fn read_entries(
        &self,
        from: u64,
        to: u64,
        entries_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let from = from.max(self.first_index());
        let to = to.min(self.end_index());
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        while next < to && entries.len() < entries_max && (entries.is_empty() || bytes < bytes_max)
        {
            let result = self
                .log
                .read(
                    index_to_offset(next)?,
                    READ_CHUNK_BYTES_MAX,
                    index_to_offset(to)?,
                )
                .await?;
            if result.batches.is_empty() {
                return Err(StoreError::MissingEntry { index: next });
            }
            for batch in &result.batches {
                if next >= to || entries.len() >= entries_max {
                    break;
                }
                entries.push(decode_entry(batch, next)?);
                bytes = bytes.saturating_add(batch.len());
                next += 1;
            }
        }
        Ok(entries)
    }

    async fn append(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let now_ms = wall_clock_ms();
        let mut appended = None;
        for entry in entries {
            let index = entry.log_id.index;
            if index != self.end_index() {
                self.restart_empty_log_at(index).await?;
            }
            let (batch, epoch) = encode_entry(&entry, now_ms)?;
            let info = self.log.append(batch, epoch, now_ms)?;
            assert_eq!(offset_to_index(info.base_offset), index);
            assert!(!info.duplicate, "a Raft entry has no producer id");
            appended = Some(entry.log_id);
        }
        let Some(last) = appended else {
            return Ok(());
        };
        // Readable from here on (the tail cache holds it); durable after the flush.
        *self.last.borrow_mut() = Some(last);
        if let Err(error) = self.log.flush().await {
            // The log dropped every entry that was not durable.
            if let Ok(last) = self.read_last_log_id().await {
                *self.last.borrow_mut() = last;
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// The log must continue where it ends; only a log without entries may start over at
    /// another index (after a snapshot, or the first entry a new follower is sent).
    async fn restart_empty_log_at(&self, index: u64) -> Result<(), StoreError> {
        let expected = self.end_index();
        let empty = self.log.log_start_offset() == self.log.log_end_offset();
        let above_purged = self.purged_index().is_none_or(|p| index > p);
        if !empty || !above_purged {
            return Err(StoreError::NonContiguousAppend {
                expected,
                got: index,
            });
        }
        self.log
            .truncate_fully_and_start_at(index_to_offset(index)?)
            .await?;
        Ok(())
    }

    async fn truncate_after(&self, last_kept: Option<RaftLogId>) -> Result<(), StoreError> {
        let new_end = last_kept.as_ref().map_or(0, |id| id.index + 1);
        if new_end >= self.end_index() {
            return Ok(());
        }
        let start = self.log.log_start_offset();
        let cut = index_to_offset(new_end)?.max(start);
        self.log.truncate_suffix(cut).await?;
        let last = if new_end > self.first_index() {
            last_kept
        } else {
            self.state.borrow().purged
        };
        *self.last.borrow_mut() = last;
        Ok(())
    }

    async fn purge(&self, log_id: RaftLogId) -> Result<(), StoreError> {
        let state = {
            let state = self.state.borrow();
            if state.purged.as_ref().is_some_and(|p| *p >= log_id) {
                return Ok(());
            }
            PersistentState {
                purged: Some(log_id),
                ..state.clone()
            }
        };
        // Recorded first: from here on the entries are gone for readers and for a restart.
        self.write_state(state).await?;
        let next = log_id.index + 1;
        if next >= self.end_index() {
            self.log
                .truncate_fully_and_start_at(index_to_offset(next)?)
                .await?;
        } else {
            self.log
                .delete_segments_below(index_to_offset(next)?)
                .await?;
        }
        let mut last = self.last.borrow_mut();
        if last.as_ref().is_none_or(|l| *l < log_id) {
            *last = Some(log_id);
        }
        Ok(())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(LogState {
            last_purged_log_id: self.shared.state.borrow().purged,
            last_log_id: *self.shared.last.borrow(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let state = PersistentState {
            vote: Some(*vote),
            ..self.shared.state.borrow().clone()
        };
        Ok(self.shared.write_state(state).await?)
    }

    async fn save_committed(&mut self, committed: Option<RaftLogId>) -> Result<(), io::Error> {
        let state = PersistentState {
            committed,
            ..self.shared.state.borrow().clone()
        };
        Ok(self.shared.write_state(state).await?)
    }

    async fn read_committed(&mut self) -> Result<Option<RaftLogId>, io::Error> {
        Ok(self.shared.state.borrow().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.shared.append(entries).await {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let error = io::Error::from(error);
                callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<RaftLogId>) -> Result<(), io::Error> {
        Ok(self.shared.truncate_after(last_log_id).await?)
    }

    async fn purge(&mut self, log_id: RaftLogId) -> Result<(), io::Error> {
        Ok(self.shared.purge(log_id).await?)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = index_range(&range);
        Ok(self
            .shared
            .read_entries(from, to, usize::MAX, usize::MAX)
            .await?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.state.borrow().vote)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .shared
            .read_entries(start, end, READ_ENTRIES_MAX, READ_ENTRY_BYTES_MAX)
            .await?)
    }
}

/// `[from, to)` of a range of indexes.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

fn index_to_offset(index: u64) -> Result<i64, StoreError> {
    i64::try_from(index).map_err(|_| StoreError::IndexTooLarge { index })
}

fn offset_to_index(offset: i64) -> u64 {
    u64::try_from(offset).expect("log offsets are never negative")
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}
