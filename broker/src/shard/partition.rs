//! A partition as its shard sees it: the log plus the tasks waiting on it.
//!
//! Owned by: the partition's shard (`routing::shard_for`). `!Send`: it never leaves its shard.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use kafka_protocol::error::ResponseError;
use spool_storage::PartitionLog;

use crate::config::FlushMode;
use crate::replication::ReplicaGroup;
use crate::runtime::{self, LocalReceiver, LocalSender};

/// Long-poll fetchers parked on one partition. Beyond this the oldest waiter is woken early
/// (it simply re-reads and finds nothing new), so memory stays bounded.
pub const DATA_WAITERS_MAX: usize = 4096;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// Shared with the partition's Raft store when the partition is replicated.
    pub log: Rc<PartitionLog>,
    /// The partition's Raft group, when it is replicated (a multi-node cluster's data
    /// partitions): it owns appends and the high watermark.
    pub group: RefCell<Option<Rc<ReplicaGroup>>>,
    flush_mode: FlushMode,
    /// Produce acks waiting for their last offset to become durable, in offset order.
    durable_waiters: RefCell<VecDeque<(i64, LocalSender<i16>)>>,
    /// Fetchers waiting for the high watermark to move.
    data_waiters: RefCell<VecDeque<Weak<DataWait>>>,
    /// Queued for the shard's next group commit.
    pub dirty: Cell<bool>,
    /// The topic was deleted: never flush again.
    pub deleted: Cell<bool>,
    /// A flush failed after consumers could see the data (interval mode): refuse writes.
    pub offline: Cell<bool>,
    /// KIP-890 verification tokens of producers starting a transaction here (leader only).
    pub txn_guards: RefCell<crate::txn::verify::PartitionGuards>,
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        log: Rc<PartitionLog>,
        flush_mode: FlushMode,
    ) -> Rc<Partition> {
        Rc::new(Partition {
            topic,
            index,
            log,
            group: RefCell::new(None),
            flush_mode,
            durable_waiters: RefCell::new(VecDeque::new()),
            data_waiters: RefCell::new(VecDeque::new()),
            dirty: Cell::new(false),
            deleted: Cell::new(false),
            offline: Cell::new(false),
            txn_guards: RefCell::new(Default::default()),
        })
    }

    /// Offsets below this are visible to consumers. With fsync-before-ack it is the durable end,
    /// so a consumer never sees a record that a crash could take back; a replicated partition's
    /// is its group's commit point, so no failover takes it back either.
    pub fn high_watermark(&self) -> i64 {
        if let Some(group) = self.group.borrow().as_ref() {
            return group.hw.offset.get();
        }
        match self.flush_mode {
            FlushMode::Sync => self.log.durable_end_offset(),
            FlushMode::Interval => self.log.log_end_offset(),
        }
    }

    /// A slot that receives an error code (0 = durable) once `last_offset` is on disk.
    pub fn wait_durable(&self, last_offset: i64) -> LocalReceiver<i16> {
        let (tx, rx) = runtime::oneshot();
        if self.log.durable_end_offset() > last_offset {
            let _ = tx.try_send(0);
        } else {
            self.durable_waiters
                .borrow_mut()
                .push_back((last_offset, tx));
        }
        rx
    }

    /// After a flush: acknowledge what is now durable, or fail everything still waiting.
    pub fn flushed(&self, error_code: i16) {
        let durable_end = self.log.durable_end_offset();
        let mut waiters = self.durable_waiters.borrow_mut();
        while let Some((last, _)) = waiters.front() {
            if error_code == 0 && *last >= durable_end {
                break;
            }
            let (_, tx) = waiters.pop_front().expect("front exists");
            let _ = tx.try_send(error_code);
        }
        drop(waiters);
        self.wake_fetchers();
    }

    /// A slot that fires when the high watermark moves; waiting ends when it is dropped.
    pub fn wait_for_data(&self) -> Rc<DataWait> {
        let (tx, rx) = runtime::oneshot();
        let wait = Rc::new(DataWait { tx, rx });
        let mut waiters = self.data_waiters.borrow_mut();
        if waiters.len() >= DATA_WAITERS_MAX {
            // Forget fetchers that stopped waiting (timed out) before touching live ones.
            waiters.retain(|w| w.strong_count() > 0);
        }
        if waiters.len() >= DATA_WAITERS_MAX {
            if let Some(oldest) = waiters.pop_front().and_then(|w| w.upgrade()) {
                let _ = oldest.tx.try_send(());
            }
        }
        waiters.push_back(Rc::downgrade(&wait));
        wait
    }

    /// The partition's Raft group, if it is replicated.
    pub fn replicated(&self) -> Option<Rc<ReplicaGroup>> {
        self.group.borrow().clone()
    }

    /// The epoch this replica leads in: its group's term (0 for an unreplicated partition;
    /// -1 for a follower).
    pub fn leader_epoch(&self) -> i32 {
        match self.group.borrow().as_ref() {
            None => 0,
            Some(g) => g
                .leadership()
                .map_or(-1, |term| i32::try_from(term).unwrap_or(i32::MAX)),
        }
    }

    /// Kafka's check of the client's idea of the leader epoch on the leader: older than the
    /// leader's is FENCED_LEADER_EPOCH, newer is UNKNOWN_LEADER_EPOCH (both retriable: the
    /// client refreshes its metadata); -1 is not checked. A follower answers
    /// NOT_LEADER_OR_FOLLOWER instead. An unreplicated partition's only epoch is 0.
    pub fn epoch_error(&self, current_leader_epoch: i32) -> Option<i16> {
        let epoch = self.leader_epoch();
        if current_leader_epoch < 0 || epoch < 0 || current_leader_epoch == epoch {
            return None;
        }
        Some(if current_leader_epoch < epoch {
            ResponseError::FencedLeaderEpoch.code()
        } else {
            ResponseError::UnknownLeaderEpoch.code()
        })
    }

    /// A replicated partition this replica does not lead: clients are sent to the leader.
    pub fn follows(&self) -> bool {
        self.group
            .borrow()
            .as_ref()
            .is_some_and(|g| g.leadership().is_none())
    }

    pub fn wake_fetchers(&self) {
        for wait in self.data_waiters.borrow_mut().drain(..) {
            if let Some(wait) = wait.upgrade() {
                let _ = wait.tx.try_send(());
            }
        }
    }
}

/// One parked long-poll fetch. The partition keeps only a weak reference, so a fetch that gives
/// up frees its place by dropping this.
pub struct DataWait {
    tx: LocalSender<()>,
    pub rx: LocalReceiver<()>,
}
