//! A partition group's openraft state machine. It copies no data (the log is the partition's
//! log): applying an entry moves the high watermark to the entry's end offset, wakes long-poll
//! fetchers and answers the produce request waiting on it with the offsets the leader's store
//! stamped.
//!
//! "Applied" is not persisted: it is the committed log id the store keeps (an entry needs no
//! work to be applied, so every committed entry is as good as applied), which spares openraft
//! re-reading the whole log at start. Snapshots carry only the next offset (the log itself is
//! never rebuilt from one): a follower installing one restarts its log empty at that offset.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::EntryPayload;
use spool_protocol::batch::BatchHeader;
use spool_raft::{Command, TypeConfig};
use spool_storage::PartitionLog;

/// What a committed proposal answers: its offsets as the leader stamped them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time_ms: i64,
}

impl Appended {
    fn encode(self) -> Command {
        let mut buf = BytesMut::with_capacity(24);
        buf.put_i64(self.base_offset);
        buf.put_i64(self.last_offset);
        buf.put_i64(self.log_append_time_ms);
        Command(buf.freeze())
    }

    pub fn decode(command: &Command) -> Option<Appended> {
        let mut bytes = command.0.clone();
        if bytes.len() != 24 {
            return None;
        }
        Some(Appended {
            base_offset: bytes.get_i64(),
            last_offset: bytes.get_i64(),
            log_append_time_ms: bytes.get_i64(),
        })
    }
}

/// The high watermark, shared by the state machine (which moves it) and the partition
/// (which serves it), with what to do when it moves.
pub struct HighWatermark {
    pub offset: Cell<i64>,
    pub on_advance: RefCell<Option<Box<dyn Fn()>>>,
}

impl HighWatermark {
    pub fn new(offset: i64) -> Rc<HighWatermark> {
        Rc::new(HighWatermark {
            offset: Cell::new(offset),
            on_advance: RefCell::new(None),
        })
    }

    fn advance(&self, offset: i64) {
        if offset > self.offset.get() {
            self.offset.set(offset);
            if let Some(wake) = self.on_advance.borrow().as_ref() {
                wake();
            }
        }
    }
}

pub struct PartitionStateMachine {
    log: Rc<PartitionLog>,
    applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    hw: Rc<HighWatermark>,
    snapshot: Option<(SnapshotMetaOf<TypeConfig>, Bytes)>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl PartitionStateMachine {
    pub fn new(
        log: Rc<PartitionLog>,
        applied: Option<LogIdOf<TypeConfig>>,
        membership: StoredMembershipOf<TypeConfig>,
        hw: Rc<HighWatermark>,
    ) -> PartitionStateMachine {
        PartitionStateMachine {
            log,
            applied,
            membership,
            hw,
            snapshot: None,
        }
    }

    /// The end offset of entry `index`: the high watermark once it is applied.
    async fn end_of(&self, index: u64) -> io::Result<i64> {
        match self.log.offset_of_index(index).await.map_err(io_err)? {
            Some((_, last)) => Ok(last + 1),
            None => Ok(self.log.log_end_offset().min(self.hw.offset.get())),
        }
    }
}

impl RaftStateMachine<TypeConfig> for PartitionStateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<openraft::storage::EntryResponder<TypeConfig>, io::Error>>
            + Unpin,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            self.applied = Some(entry.log_id);
            let answer = match &entry.payload {
                EntryPayload::Normal(Command(batch)) => {
                    let header = BatchHeader::parse(batch).map_err(io_err)?;
                    self.hw.advance(header.last_offset() + 1);
                    Appended {
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        log_append_time_ms: -1,
                    }
                    .encode()
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembershipOf::<TypeConfig>::new(
                        Some(entry.log_id),
                        membership.clone(),
                    );
                    let end = self.end_of(entry.log_id.index).await?;
                    self.hw.advance(end);
                    Command::default()
                }
                EntryPayload::Blank => {
                    let end = self.end_of(entry.log_id.index).await?;
                    self.hw.advance(end);
                    Command::default()
                }
            };
            if let Some(responder) = responder {
                responder.send(answer);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
            },
            next_offset: self.hw.offset.get(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Bytes,
    ) -> Result<(), io::Error> {
        let mut data = snapshot.clone();
        if data.len() != 8 {
            return Err(io_err("a partition snapshot is one offset"));
        }
        let next_offset = data.get_i64();
        if let Some(last) = meta.last_log_id {
            self.log
                .truncate_fully_and_start_at_entry(last.index + 1, next_offset)
                .await
                .map_err(io_err)?;
        }
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.hw.advance(next_offset);
        self.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Bytes>>, io::Error> {
        Ok(self
            .snapshot
            .clone()
            .map(|(meta, snapshot)| openraft::storage::Snapshot { meta, snapshot }))
    }
}

pub struct SnapshotBuilder {
    meta: SnapshotMetaOf<TypeConfig>,
    next_offset: i64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Bytes>, io::Error> {
        let mut data = BytesMut::with_capacity(8);
        data.put_i64(self.next_offset);
        Ok(openraft::storage::Snapshot {
            meta: self.meta.clone(),
            snapshot: data.freeze(),
        })
    }
}
