//! Messages between shards, and the request/reply plumbing over glommio's channel mesh.
//!
//! Every pair of shards has one bounded FIFO channel (`mesh_channel_messages_max`). A shard's
//! receive loop never awaits a send, so replies always drain and the mesh cannot deadlock. Produce
//! requests are appended *in the receive loop*, before anything is awaited, which keeps the order
//! of one connection's produce requests to one partition intact across shards.

use std::cell::{Cell, RefCell};

use ahash::AHashMap;
use bytes::Bytes;
use glommio::channels::channel_mesh::Senders;

use crate::metadata::TopicMeta;
use crate::runtime::{self, LocalSender};

/// Capacity of each shard-to-shard channel.
pub const MESH_CHANNEL_MESSAGES_MAX: usize = 1024;

pub enum Envelope {
    Request {
        from: usize,
        id: u64,
        request: Request,
    },
    Reply {
        id: u64,
        reply: Reply,
    },
}

/// One partition's share of a Produce request.
pub struct ProducePart {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
    /// The KIP-890 verification token of a transactional batch (0: none; see `txn::verify`).
    pub txn_token: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ProduceResult {
    pub error_code: i16,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// One partition's share of a Fetch request.
#[derive(Debug, Clone)]
pub struct FetchPart {
    pub topic: String,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: usize,
    /// The epoch the client believes the leader has (-1: not checked; Fetch v9+).
    pub current_leader_epoch: i32,
    /// Isolation level READ_COMMITTED: read up to the last stable offset only.
    pub read_committed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FetchResult {
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub batches: Vec<Bytes>,
    /// READ_COMMITTED: (producer id, first offset) of the aborted transactions overlapping
    /// what was read.
    pub aborted: Option<Vec<(i64, i64)>>,
}

#[derive(Debug, Clone)]
pub struct OffsetQuery {
    pub topic: String,
    pub partition: i32,
    /// A timestamp, or -1 latest, -2 earliest, -3 max timestamp, -4 earliest local, -5 latest tiered.
    pub timestamp: i64,
    /// The epoch the client believes the leader has (-1: not checked; ListOffsets v4+).
    pub current_leader_epoch: i32,
    /// Isolation level READ_COMMITTED (ListOffsets v2+): LATEST is the last stable offset.
    pub read_committed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OffsetAnswer {
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone)]
pub struct EpochQuery {
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    /// The epoch the client believes the leader has (-1: not checked).
    pub current_leader_epoch: i32,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct EpochAnswer {
    pub error_code: i16,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

/// One replica's log as DescribeLogDirs reports it.
#[derive(Debug, Clone)]
pub struct LogDirPart {
    pub topic: String,
    pub partition: i32,
    /// Bytes of record data in the partition's segments.
    pub size_bytes: i64,
    /// Kafka's lag of a current (non-future) log: its high watermark minus its log end, at
    /// least 0.
    pub offset_lag: i64,
}

/// Requests a shard serves for another.
pub enum Request {
    Produce {
        acks: i16,
        parts: Vec<ProducePart>,
    },
    /// Reads in order, at most `budget` bytes in all beyond the first batch.
    Fetch {
        parts: Vec<FetchPart>,
        budget: usize,
    },
    /// Resolves when any of the partitions has data past the offset, or after `wait_ms`.
    WaitForData {
        parts: Vec<(String, i32, i64)>,
        wait_ms: u64,
    },
    ListOffsets {
        parts: Vec<OffsetQuery>,
    },
    EpochEndOffsets {
        parts: Vec<EpochQuery>,
    },
    /// The replicas this shard holds (DescribeLogDirs): those named (each owned by this shard),
    /// or all of them (`None`).
    LogDirs {
        parts: Option<Vec<(String, i32)>>,
    },
    /// From shard 0: the topic now looks like this; open logs for partitions you own.
    TopicUpsert {
        meta: TopicMeta,
    },
    /// From shard 0: drop the topic and delete your partitions' logs.
    TopicDelete {
        name: String,
    },
    /// From shard 0: this broker's dynamic broker configs changed; apply them.
    BrokerConfigs {
        configs: crate::dynamic_config::DynamicConfigs,
    },
    /// From shard 0: the cluster as it now is.
    ClusterView {
        view: crate::cluster::view::ClusterView,
    },
    /// To shard 0: the metadata quorum (DescribeQuorum).
    Quorum,
    /// To shard 0: metadata changes.
    Admin(AdminRequest),
    /// To a group's shard (`routing::group_shard`): a consumer-group request.
    Group(crate::group::GroupCall),
    /// To a transactional id's shard: a transaction coordinator request.
    Txn(crate::txn::TxnCall),
    /// To the partitions' shard: transaction markers to append (`txn::markers`).
    TxnMarkers(Vec<crate::txn::markers::MarkerPart>),
    /// To the partitions' shard: start KIP-890 verifications (`txn::verify::begin`).
    TxnVerifyBegin(Vec<crate::txn::verify::VerifyBegin>),
    /// To a partition's shard: DeleteRecords up to `offset` (-1: the high watermark).
    DeleteRecords {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// To a partition's shard: its producer state (DescribeProducers).
    Producers {
        topic: String,
        partition: i32,
    },
    /// To a partition's shard: hand the group's leadership to replica `to` if this replica
    /// leads (`replication::leadership::move_local`); answered with `Reply::Admin` (value: the
    /// leader this replica knows, -1 none).
    MoveLeader {
        topic: String,
        partition: i32,
        to: i32,
        wait_ms: u64,
    },
    /// From shard 0's RPC listener to the shard running a partition's Raft group.
    Raft {
        group: spool_raft::transport::GroupId,
        request: spool_raft::transport::Request,
    },
}

/// A metadata change, for the active controller. `timeout_ms` is the request's own (0: the
/// default), how long the broker looks for a controller before REQUEST_TIMED_OUT.
pub enum AdminRequest {
    /// `meta.replicas` empty: the controller places the partitions.
    CreateTopic {
        meta: TopicMeta,
        validate_only: bool,
        timeout_ms: i32,
    },
    DeleteTopic {
        name: String,
        timeout_ms: i32,
    },
    CreatePartitions {
        name: String,
        count: i32,
        /// Replicas of each new partition; empty: the controller places them.
        assignments: Vec<Vec<i32>>,
        validate_only: bool,
        timeout_ms: i32,
    },
    /// One topic's configs (IncrementalAlterConfigs; AlterConfigs with `replace`). The requests
    /// carry no timeout: the broker's default applies.
    AlterTopicConfigs {
        name: String,
        changes: Vec<crate::cluster::rpc::ConfigChange>,
        replace: bool,
        validate_only: bool,
    },
    /// Dynamic broker configs of `broker` (-1: the cluster default).
    AlterBrokerConfigs {
        broker: i32,
        changes: Vec<crate::cluster::rpc::ConfigChange>,
        replace: bool,
        validate_only: bool,
    },
    AllocateProducerId,
    /// This node leads these partitions' Raft groups: tell the controller.
    ReportLeaders {
        reports: Vec<crate::cluster::rpc::LeaderReport>,
    },
    /// AlterPartitionReassignments of one partition (`None`: cancel).
    AlterReassignment {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
        timeout_ms: i32,
    },
    /// A group this node leads changed its voters: tell the controller.
    ReportReassigned {
        topic: String,
        partition: i32,
        voters: Vec<i32>,
    },
    /// In-sync replicas of partitions this node leads changed: tell the controller.
    ReportIsr {
        changes: Vec<crate::cluster::rpc::IsrChange>,
    },
}

pub enum Reply {
    Produce(Vec<ProduceResult>),
    Fetch(Vec<FetchResult>),
    Waited,
    ListOffsets(Vec<OffsetAnswer>),
    EpochEndOffsets(Vec<EpochAnswer>),
    LogDirs(Vec<LogDirPart>),
    Done,
    /// Admin result: Kafka error code and message (0 = success), and a value where one is asked.
    Admin {
        error_code: i16,
        message: Option<String>,
        value: i64,
    },
    Group(crate::group::GroupReply),
    Txn(crate::txn::TxnReply),
    /// One error code per marker.
    TxnMarkers(Vec<i16>),
    /// Per part: its verification token (0: none needed) or an error code.
    TxnVerifyBegin(Vec<Result<u64, i16>>),
    /// DeleteRecords' answer: an error code and the new log start offset.
    DeleteRecords {
        error_code: i16,
        low_watermark: i64,
    },
    /// The partition's producers, or an error code.
    Producers(Result<Vec<spool_storage::ProducerInfo>, i16>),
    Quorum(Result<crate::cluster::rpc::QuorumState, i16>),
    Raft(spool_raft::transport::Response),
}

/// This shard's end of the mesh.
pub struct Mesh {
    pub shard_id: usize,
    senders: Option<Senders<Envelope>>,
    next_id: Cell<u64>,
    pending: RefCell<AHashMap<u64, LocalSender<Reply>>>,
}

impl Mesh {
    pub fn new(shard_id: usize, senders: Option<Senders<Envelope>>) -> Mesh {
        Mesh {
            shard_id,
            senders,
            next_id: Cell::new(0),
            pending: RefCell::new(AHashMap::new()),
        }
    }

    /// Sends `request` to another shard and returns the slot its reply will arrive in. Awaiting
    /// this only waits for room in the channel, so callers that must keep order (produce) await it
    /// in order and await the reply later.
    pub async fn send(&self, to: usize, request: Request) -> runtime::LocalReceiver<Reply> {
        assert_ne!(to, self.shard_id, "local requests are served directly");
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = runtime::oneshot();
        self.pending.borrow_mut().insert(id, tx);
        let senders = self
            .senders
            .as_ref()
            .expect("a mesh exists when there are several shards");
        let envelope = Envelope::Request {
            from: self.shard_id,
            id,
            request,
        };
        if senders.send_to(to, envelope).await.is_err() {
            // The peer is gone (shutdown): drop the slot so the caller sees a closed channel.
            self.pending.borrow_mut().remove(&id);
        }
        rx
    }

    /// Sends a reply back to the shard that asked.
    pub async fn reply(&self, to: usize, id: u64, reply: Reply) {
        if to == self.shard_id {
            self.complete(id, reply);
            return;
        }
        let senders = self
            .senders
            .as_ref()
            .expect("a mesh exists when there are several shards");
        // A closed peer means shutdown; nobody waits for the reply any more.
        let _ = senders.send_to(to, Envelope::Reply { id, reply }).await;
    }

    /// Delivers a reply to the task waiting for it.
    pub fn complete(&self, id: u64, reply: Reply) {
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            // The waiter may have given up (a timed-out long poll); that is fine.
            let _ = tx.try_send(reply);
        }
    }
}
