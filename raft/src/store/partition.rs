//! The Raft log and vote of a data partition's group: openraft's `RaftLogStorage` on the
//! partition's own `PartitionLog`, opened entry-indexed (see ARCHITECTURE.md, "Replicated
//! partitions").
//!
//! Each entry is one record batch at the next Kafka offset; the Raft index ↔ offset mapping
//! is the log's entry index (`storage/src/entries.rs`). Client data is a `Normal` entry whose
//! payload is the batch itself: the leader's proposal is stamped with its log end offset and
//! the term as leader epoch when this store appends it ([`EntryStamp::Propose`]); a follower is
//! sent the bytes read back from the leader's log and keeps them exactly, after checking they
//! continue its log ([`EntryStamp::Replicated`]). Blank and membership entries are control
//! batches every replica encodes identically (`codec.rs`). So every replica holds the same
//! bytes at the same offsets.
//!
//! The vote, the committed log id and the purge point live in the `raft-state` file beside
//! the segments, as in the metadata store (`super::LogStore`), with the same durability rules:
//! `append` reports `IOFlushed` after the fdatasync; state changes return once durable.
//!
//! A log that restarts (empty) at another index takes its offset from where it can know it:
//! a replicated batch carries its own offset; anything else continues at the log end (a
//! snapshot install restarts the log at the snapshot's offset itself, before openraft purges).
//!
//! Owned by: the partition's shard (`!Send`). The broker's fetch path reads the same
//! `PartitionLog` (shared through `Rc`).

use std::cell::RefCell;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::rc::Rc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader};
use spool_storage::{EntryStamp, PartitionLog};

use super::codec::{
    decode_partition_entry, encode_partition_control, Entry, PersistentState, RaftLogId, Vote,
};
use super::{
    index_range, wall_clock_ms, StoreError, READ_CHUNK_BYTES_MAX, READ_ENTRIES_MAX,
    READ_ENTRY_BYTES_MAX, STATE_FILE,
};
use crate::{Command, TypeConfig};

/// The store of one partition group.
///
/// Owned by: the partition's shard.
pub struct PartitionStore {
    shared: Rc<Shared>,
}

/// A reader of the store, for openraft's replication and apply tasks.
#[derive(Clone)]
pub struct PartitionLogReader {
    shared: Rc<Shared>,
}

struct Shared {
    log: Rc<PartitionLog>,
    /// Only changed after the change is durable; never borrowed across an `.await`.
    state: RefCell<PersistentState>,
    /// The last entry's log id, or the purge point if no entry is left.
    last: RefCell<Option<RaftLogId>>,
    /// Told of this leader's proposals once they are durable here (acks=1 answers then).
    on_durable: RefCell<Option<DurableObserver>>,
}

/// A proposal of this replica's leader, durable in its own log (not yet committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableProposal {
    /// The partition leader epoch field the proposer wrote into the batch (its tag for the
    /// proposal; the store overwrites the field with the term).
    pub tag: i32,
    pub index: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time_ms: i64,
}

/// Called after each flush with the proposals it made durable, in log order.
pub type DurableObserver = Box<dyn Fn(&[DurableProposal])>;

impl PartitionStore {
    /// Wraps `log`, which must have been opened with `PartitionLog::open_entry_indexed`.
    pub async fn open(log: Rc<PartitionLog>) -> Result<PartitionStore, StoreError> {
        let state = match log.read_side_file(STATE_FILE).await? {
            None => PersistentState::default(),
            Some(bytes) => {
                PersistentState::decode(&bytes).map_err(|reason| StoreError::CorruptState {
                    path: std::path::PathBuf::from(STATE_FILE),
                    reason,
                })?
            }
        };
        let shared = Shared {
            log,
            state: RefCell::new(state),
            last: RefCell::new(None),
            on_durable: RefCell::new(None),
        };
        let last = shared.read_last_log_id().await?;
        *shared.last.borrow_mut() = last;
        Ok(PartitionStore {
            shared: Rc::new(shared),
        })
    }

    /// The log this store writes.
    pub fn log(&self) -> &Rc<PartitionLog> {
        &self.shared.log
    }

    /// Sets who is told of proposals made durable (a leader answering acks=1 requests).
    pub fn on_durable_proposals(&self, observer: DurableObserver) {
        *self.shared.on_durable.borrow_mut() = Some(observer);
    }
}

impl Shared {
    fn purged_index(&self) -> Option<u64> {
        self.state.borrow().purged.as_ref().map(|p| p.index)
    }

    /// The first index readers may see: in the log and above the purge point.
    fn first_index(&self) -> u64 {
        let first = self.log.first_entry_index();
        self.purged_index().map_or(first, |p| first.max(p + 1))
    }

    async fn read_last_log_id(&self) -> Result<Option<RaftLogId>, StoreError> {
        let next = self.log.next_entry_index();
        if next <= self.first_index() {
            return Ok(self.state.borrow().purged);
        }
        let entries = self.read_entries(next - 1, next, 1, usize::MAX).await?;
        let last = entries
            .last()
            .ok_or(StoreError::MissingEntry { index: next - 1 })?;
        Ok(Some(last.log_id))
    }

    async fn write_state(&self, state: PersistentState) -> Result<(), StoreError> {
        self.log
            .write_side_file(STATE_FILE, &state.encode())
            .await?;
        *self.state.borrow_mut() = state;
        Ok(())
    }

    /// Entries `[from, to)` clipped to the log, stopping early at `entries_max` entries or
    /// `bytes_max` bytes (but at least one).
    async fn read_entries(
        &self,
        from: u64,
        to: u64,
        entries_max: usize,
        bytes_max: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let from = from.max(self.first_index());
        let to = to.min(self.log.next_entry_index());
        let mut entries = Vec::new();
        let mut next = from;
        let mut bytes = 0usize;
        while next < to && entries.len() < entries_max && (entries.is_empty() || bytes < bytes_max)
        {
            let chunk = bytes_max
                .saturating_sub(bytes)
                .clamp(1, READ_CHUNK_BYTES_MAX);
            let read = self.log.read_entries(next, to, chunk).await?;
            if read.is_empty() {
                return Err(StoreError::MissingEntry { index: next });
            }
            for (index, batch) in read {
                if entries.len() >= entries_max {
                    break;
                }
                assert_eq!(index, next, "entries are read in order");
                bytes = bytes.saturating_add(batch.len());
                entries.push(decode_partition_entry(&batch, index)?);
                next += 1;
            }
        }
        Ok(entries)
    }

    async fn append(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let now_ms = wall_clock_ms();
        let mut appended = None;
        let mut proposals = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            let term = entry.log_id.leader_id.term;
            let epoch = i32::try_from(term).map_err(|_| StoreError::TermTooLarge { term })?;
            let mut tag = None;
            let (batch, stamp) = match &entry.payload {
                EntryPayload::Normal(Command(batch)) => {
                    // A proposal's base offset is unstamped (the producer's 0 or the
                    // leader's marker); a replicated copy carries the leader's offset.
                    let header =
                        spool_protocol::batch::BatchHeader::parse(batch).map_err(|_| {
                            StoreError::CorruptEntry {
                                index,
                                reason: "a normal entry is not a record batch",
                            }
                        })?;
                    let stamp = if header.base_offset == PROPOSAL_BASE_OFFSET {
                        tag = Some(header.partition_leader_epoch);
                        EntryStamp::Propose
                    } else {
                        EntryStamp::Replicated
                    };
                    (batch.clone(), stamp)
                }
                _ => (
                    encode_partition_control(&entry)?.expect("not a normal entry"),
                    EntryStamp::Propose,
                ),
            };
            if index != self.log.next_entry_index() {
                self.restart_empty_log_at(index, &batch, stamp).await?;
            }
            let (at, info) = self.log.append_raft_entry(batch, epoch, now_ms, stamp)?;
            assert_eq!(at, index);
            appended = Some(entry.log_id);
            if let Some(tag) = tag {
                proposals.push(DurableProposal {
                    tag,
                    index,
                    base_offset: info.base_offset,
                    last_offset: info.last_offset,
                    log_append_time_ms: info.log_append_time_ms,
                });
            }
        }
        let Some(last) = appended else {
            return Ok(());
        };
        *self.last.borrow_mut() = Some(last);
        if let Err(error) = self.log.flush().await {
            // The log dropped every entry that was not durable.
            if let Ok(last) = self.read_last_log_id().await {
                *self.last.borrow_mut() = last;
            }
            return Err(error.into());
        }
        if !proposals.is_empty() {
            if let Some(observer) = self.on_durable.borrow().as_ref() {
                observer(&proposals);
            }
        }
        Ok(())
    }

    /// Only a log without entries may start over at another index: a new follower's first
    /// entry, or the first entry after a snapshot.
    async fn restart_empty_log_at(
        &self,
        index: u64,
        batch: &bytes::Bytes,
        stamp: EntryStamp,
    ) -> Result<(), StoreError> {
        let expected = self.log.next_entry_index();
        let empty = self.log.first_entry_index() == expected;
        let above_purged = self.purged_index().is_none_or(|p| index > p);
        if !empty || !above_purged {
            return Err(StoreError::NonContiguousAppend {
                expected,
                got: index,
            });
        }
        let offset = match stamp {
            EntryStamp::Replicated => spool_protocol::batch::BatchHeader::parse(batch)
                .map(|h| h.base_offset)
                .unwrap_or_else(|_| self.log.log_end_offset()),
            EntryStamp::Propose => self.log.log_end_offset(),
        };
        self.log
            .truncate_fully_and_start_at_entry(index, offset)
            .await?;
        Ok(())
    }

    async fn truncate_after(&self, last_kept: Option<RaftLogId>) -> Result<(), StoreError> {
        let new_next = last_kept.as_ref().map_or(0, |id| id.index + 1);
        if new_next >= self.log.next_entry_index() {
            return Ok(());
        }
        self.log
            .truncate_entries_after(last_kept.map(|id| id.index))
            .await?;
        let last = if new_next > self.first_index() {
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
        self.write_state(state).await?;
        let next = log_id.index + 1;
        if next >= self.log.next_entry_index() && self.log.first_entry_index() != next {
            let offset = self.log.log_end_offset();
            self.log
                .truncate_fully_and_start_at_entry(next, offset)
                .await?;
        } else {
            self.log.purge_entries_through(log_id.index).await?;
        }
        let mut last = self.last.borrow_mut();
        if last.as_ref().is_none_or(|l| *l < log_id) {
            *last = Some(log_id);
        }
        Ok(())
    }
}

/// The base offset a leader's Kafka layer writes into a batch it proposes: no stored batch
/// has a negative offset, so the store can tell a proposal from a replicated copy.
pub const PROPOSAL_BASE_OFFSET: i64 = -1;

impl RaftLogStorage<TypeConfig> for PartitionStore {
    type LogReader = PartitionLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(LogState {
            last_purged_log_id: self.shared.state.borrow().purged,
            last_log_id: *self.shared.last.borrow(),
        })
    }

    async fn get_log_reader(&mut self) -> PartitionLogReader {
        PartitionLogReader {
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

    /// Never past the log's end: a replica whose log lost entries it had (a damaged disk;
    /// no crash loses fsynced entries) restarts as a lagging follower instead of failing to
    /// re-apply entries it no longer has.
    async fn read_committed(&mut self) -> Result<Option<RaftLogId>, io::Error> {
        let committed = self.shared.state.borrow().committed;
        let last = *self.shared.last.borrow();
        if committed > last {
            tracing::warn!(
                ?committed,
                ?last,
                "the partition log ends before its committed entry; catching up from the leader"
            );
            return Ok(last);
        }
        Ok(committed)
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

impl RaftLogReader<TypeConfig> for PartitionLogReader {
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
