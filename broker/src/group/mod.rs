//! Consumer groups (the classic protocol and KIP-848's consumer protocol) and committed offsets.
//!
//! Architecture invariant (placement): a group lives on exactly one shard, the owner of its
//! `__consumer_offsets` partition, `routing::group_shard`. Handlers on the connection's shard
//! send the decoded request there as a [`GroupCall`] and return the [`GroupReply`]. The owner's
//! [`GroupCoordinator`] keeps the group state (`classic.rs`, a pure state machine) and writes
//! commits and group metadata to the group's offsets partition as Kafka record batches
//! (`records.rs`), acknowledging a commit only once it is durable (the shard's group-commit
//! flusher, as Produce).
//!
//! Start-up: shard 0 creates `__consumer_offsets` if missing; every shard then reads its offsets
//! partitions to the end (latest record per key wins) and answers COORDINATOR_LOAD_IN_PROGRESS
//! until it has. A classic group's members and assignments are in its metadata record, so a
//! loaded group is Stable with them and their heartbeats carry on; KIP-848 members are not
//! persisted yet (the group is Empty at its epoch until they rejoin).
//!
//! Multi-node clusters: `__consumer_offsets` is replicated like any topic; a group is served
//! only by its partition's Raft leader, which loads the partition's groups on becoming leader
//! and drops them on losing it (`coordinator::follow_leadership`), and writes go through the
//! partition's Raft group, answered once committed.
//!
//! KIP-848 (`consumer.rs`, `assignor.rs`): a group is either classic or consumer type. A consumer
//! group's committed offsets live in a classic `Group` entry of the same id (Empty, no members),
//! so OffsetFetch/OffsetDelete/expiry treat them exactly as classic offsets. Mixing is rejected:
//! a classic JoinGroup on a consumer group with members gets INCONSISTENT_GROUP_PROTOCOL, a
//! ConsumerGroupHeartbeat on a classic group with members GROUP_ID_NOT_FOUND; an empty group of
//! either type converts (Kafka's `group.consumer.migration.policy` is not implemented: no online
//! upgrade of a live group). Only the group epoch is persisted (key version 3); after a restart
//! a consumer group is Empty at its epoch and its members, answered UNKNOWN_MEMBER_ID, rejoin with
//! epoch 0.
//!
//! Memory: one entry per live group and committed partition; offsets of groups Empty for longer
//! than `offsets.retention.minutes` are tombstoned and dropped by [`GroupCoordinator::expire_loop`].
//! The internal log is a compacted topic like any other: the shard's log cleaner
//! (`shard/cleaner.rs`) keeps each key's latest record, which is what the load applies anyway
//! (a transactional commit counts at its record's offset, as in Kafka), on every replica.

pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod coordinator;
pub mod records;

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    SyncGroupRequest, SyncGroupResponse,
};

pub use coordinator::GroupCoordinator;

use crate::shard::mesh::{Reply, Request};
use crate::shard::{routing, Shard};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A group request, sent to the group's shard. Kafka request structs are `Send`.
pub enum GroupCall {
    Join {
        version: i16,
        client_id: String,
        client_host: String,
        request: JoinGroupRequest,
    },
    Sync {
        version: i16,
        request: SyncGroupRequest,
    },
    Heartbeat {
        request: HeartbeatRequest,
    },
    Leave {
        version: i16,
        request: LeaveGroupRequest,
    },
    OffsetCommit {
        version: i16,
        request: OffsetCommitRequest,
    },
    TxnOffsetCommit {
        version: i16,
        request: Box<kafka_protocol::messages::TxnOffsetCommitRequest>,
    },
    /// `topics`: None = every committed partition of the group. `member`: (member id, member
    /// epoch) of OffsetFetch v9, checked for consumer (KIP-848) groups.
    /// `require_stable` (v7+): a partition with a transactional commit pending answers
    /// UNSTABLE_OFFSET_COMMIT.
    OffsetFetch {
        group: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
        member: Option<(Option<String>, i32)>,
        require_stable: bool,
    },
    OffsetDelete {
        request: OffsetDeleteRequest,
    },
    /// ListGroups filters (lower-cased; empty = all).
    List {
        states: Vec<String>,
        types: Vec<String>,
    },
    Describe {
        group: String,
    },
    Delete {
        group: String,
    },
    /// KIP-848.
    ConsumerHeartbeat {
        version: i16,
        client_id: String,
        client_host: String,
        request: Box<ConsumerGroupHeartbeatRequest>,
    },
    ConsumerDescribe {
        group: String,
    },
}

/// One partition's committed offset as OffsetFetch reports it.
#[derive(Debug, Clone)]
pub struct FetchedOffset {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub error_code: i16,
}

/// A group's OffsetFetch answer: group error and offsets by topic.
#[derive(Debug, Clone, Default)]
pub struct FetchedOffsets {
    pub error_code: i16,
    pub topics: Vec<(String, Vec<FetchedOffset>)>,
}

pub enum GroupReply {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    TxnOffsetCommit(kafka_protocol::messages::TxnOffsetCommitResponse),
    OffsetFetch(FetchedOffsets),
    OffsetDelete(OffsetDeleteResponse),
    List(Vec<ListedGroup>),
    Describe(DescribedGroup),
    /// DeleteGroups: the group's error code.
    Delete(i16),
    ConsumerHeartbeat(ConsumerGroupHeartbeatResponse),
    ConsumerDescribe(kafka_protocol::messages::consumer_group_describe_response::DescribedGroup),
}

/// Partitions of `__consumer_offsets`: the topic's, once it exists; the setting before.
pub fn offsets_partitions(shard: &Shard) -> i32 {
    shard
        .topics
        .borrow()
        .get(OFFSETS_TOPIC)
        .map(|m| m.partitions)
        .unwrap_or(shard.config.offsets_topic_num_partitions)
}

/// The shard owning `group`.
pub fn owner(shard: &Shard, group: &str) -> usize {
    routing::group_shard(group, offsets_partitions(shard), shard.count)
}

/// Asks the controller for `__consumer_offsets` (Kafka creates it at the first FindCoordinator,
/// so it spreads over the brokers live by then), `offsets.topic.replication.factor` replicas
/// capped by the live brokers. Already existing is success.
pub async fn ensure_offsets_topic(shard: &Rc<Shard>) {
    let live = shard.view.borrow().live().count().max(1);
    let replication_factor = shard
        .config
        .offsets_topic_replication_factor
        .min(i16::try_from(live).unwrap_or(i16::MAX));
    crate::metadata::ensure_internal_topic(
        shard,
        OFFSETS_TOPIC,
        shard.config.offsets_topic_num_partitions,
        replication_factor,
        vec![
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "-1".to_string()),
            (
                "segment.bytes".to_string(),
                shard.config.offsets_topic_segment_bytes.to_string(),
            ),
        ],
    )
    .await;
}

/// Whether this node holds the group's `__consumer_offsets` partition, i.e. coordinates it.
pub fn coordinated_here(shard: &Shard, group: &str) -> bool {
    let topics = shard.topics.borrow();
    let Some(meta) = topics.get(OFFSETS_TOPIC) else {
        return false;
    };
    let index = routing::group_partition(group, meta.partitions);
    shard.hosts(meta, index)
}

/// Serves `call` on the group's shard; `None` when that shard is gone (shutdown). A group this
/// node does not coordinate is NOT_COORDINATOR: its client looks the coordinator up again.
pub async fn call(shard: &Rc<Shard>, group: &str, call: GroupCall) -> Option<GroupReply> {
    if !coordinated_here(shard, group) {
        return Some(coordinator::error_reply(
            call,
            kafka_protocol::error::ResponseError::NotCoordinator.code(),
        ));
    }
    let to = owner(shard, group);
    call_shard(shard, to, call).await
}

/// Serves `call` on shard `to` (ListGroups asks every shard).
pub async fn call_shard(shard: &Rc<Shard>, to: usize, call: GroupCall) -> Option<GroupReply> {
    match shard.call(to, Request::Group(call)).await {
        Some(Reply::Group(reply)) => Some(reply),
        _ => None,
    }
}
