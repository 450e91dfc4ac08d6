//! An in-memory Raft log and state machine, just enough to run groups over the real transport.
//! The state machine records every applied command; its snapshot is those commands, each
//! behind a u32 length.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use openraft::{EntryPayload, LogState, RaftLogReader, RaftSnapshotBuilder, StoredMembership};

use crate::{Command, TypeConfig};

#[derive(Clone, Default)]
pub(super) struct MemLog(Rc<RefCell<LogInner>>);

#[derive(Default)]
struct LogInner {
    vote: Option<VoteOf<TypeConfig>>,
    committed: Option<LogIdOf<TypeConfig>>,
    entries: BTreeMap<u64, EntryOf<TypeConfig>>,
    purged: Option<LogIdOf<TypeConfig>>,
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        Ok(self
            .0
            .borrow()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        Ok(self.0.borrow().vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.0.borrow();
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last.or(inner.purged),
        })
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        self.0.borrow_mut().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        self.0.borrow_mut().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self.0.borrow().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>>,
    {
        let mut inner = self.0.borrow_mut();
        for entry in entries {
            inner.entries.insert(entry.log_id.index, entry);
        }
        drop(inner);
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let keep_below = last_log_id.map_or(0, |l| l.index + 1);
        self.0.borrow_mut().entries.split_off(&keep_below);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        let mut inner = self.0.borrow_mut();
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.purged = Some(log_id);
        Ok(())
    }
}

#[derive(Clone, Default)]
pub(super) struct MemSm(Rc<RefCell<SmInner>>);

#[derive(Default)]
struct SmInner {
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    applied: Vec<Bytes>,
    snapshot: Option<SnapshotOf<TypeConfig, Bytes>>,
    installed: bool,
}

impl MemSm {
    /// Every command applied, in order (including those a snapshot brought).
    pub(super) fn applied(&self) -> Vec<Bytes> {
        self.0.borrow().applied.clone()
    }
}

impl MemSm {
    /// Whether a leader's snapshot was installed here.
    pub(super) fn installed_snapshot(&self) -> bool {
        self.0.borrow().installed
    }
}

impl RaftStateMachine<TypeConfig> for MemSm {
    type SnapshotData = Bytes;
    type SnapshotBuilder = MemSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let inner = self.0.borrow();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut inner = self.0.borrow_mut();
            inner.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Command::default(),
                EntryPayload::Normal(Command(bytes)) => {
                    inner.applied.push(bytes.clone());
                    Command(bytes)
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    Command::default()
                }
            };
            drop(inner);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Bytes,
    ) -> Result<(), io::Error> {
        let mut applied = Vec::new();
        let mut data = snapshot.clone();
        while data.remaining() >= 4 {
            let len = data.get_u32() as usize;
            if data.remaining() < len {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "short snapshot"));
            }
            applied.push(data.split_to(len));
        }
        let mut inner = self.0.borrow_mut();
        inner.applied = applied;
        inner.installed = true;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(SnapshotOf::<TypeConfig, Bytes> {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Bytes>>, io::Error> {
        Ok(self.0.borrow().snapshot.clone())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemSm {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Bytes>, io::Error> {
        let mut inner = self.0.borrow_mut();
        let mut data = BytesMut::new();
        for command in &inner.applied {
            data.put_u32(command.len() as u32);
            data.put_slice(command);
        }
        let snapshot = SnapshotOf::<TypeConfig, Bytes> {
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
            },
            snapshot: data.freeze(),
        };
        inner.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }
}
