//! The rkyv mirror of every openraft message Spool nodes exchange.
//!
//! openraft's types are not rkyv types, so each message has a small owned mirror here; the
//! conversions live in `convert.rs`. Only the mirrors are ever serialized; received frames are
//! read through their validated archived form (`Archived*`) and converted straight into
//! openraft's types, so payload bytes stay slices of the received frame.
//!
//! *Compatibility*: the layout is rkyv's (little-endian, 32-bit relative pointers, aligned), the
//! same on every node of one build. Changing a field or reordering a variant changes the wire
//! format; there is no versioning yet (a cluster runs one build).

use bytes::Bytes;
use rkyv::{Archive, Serialize};

/// Standard Raft's leader id: a term and the candidate voted for in it.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderId {
    pub term: u64,
    pub voted_for: u64,
}

#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub leader_id: LeaderId,
    pub committed: bool,
}

/// A log id; with one leader per term the committed leader id is the term alone.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogId {
    pub term: u64,
    pub index: u64,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: u64,
    pub rpc_addr: String,
}

/// A (possibly joint) membership: each config is a voter set; a node in `nodes` and in no
/// config is a learner.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub configs: Vec<Vec<u64>>,
    pub nodes: Vec<Node>,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredMembership {
    pub log_id: Option<LogId>,
    pub membership: Membership,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Blank,
    Normal(Bytes),
    Membership(Membership),
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub log_id: LogId,
    pub payload: Payload,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct AppendEntriesRequest {
    pub vote: Vote,
    pub prev_log_id: Option<LogId>,
    pub entries: Vec<Entry>,
    pub leader_commit: Option<LogId>,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub enum AppendEntriesResponse {
    Success,
    PartialSuccess(Option<LogId>),
    Conflict,
    HigherVote(Vote),
}

/// Both Vote and PreVote.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct VoteRequest {
    pub vote: Vote,
    pub last_log_id: Option<LogId>,
    pub leadership_transfer: bool,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct VoteResponse {
    pub vote: Vote,
    pub vote_granted: bool,
    pub last_log_id: Option<LogId>,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub last_log_id: Option<LogId>,
    pub last_membership: StoredMembership,
}

/// A whole snapshot in one message (openraft's `full_snapshot`): it must fit in one frame.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct FullSnapshotRequest {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotResponse {
    pub vote: Vote,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TransferLeaderRequest {
    pub from_leader: Vote,
    pub to_node_id: u64,
    pub last_log_id: Option<LogId>,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub enum TransferLeaderResponse {
    Done,
    VoteChanged {
        expected: Vote,
        actual: Vote,
    },
    LogNotFlushed {
        expected: Option<LogId>,
        actual: Option<LogId>,
    },
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    AppendEntries(AppendEntriesRequest),
    Vote(VoteRequest),
    PreVote(VoteRequest),
    FullSnapshot(FullSnapshotRequest),
    TransferLeader(TransferLeaderRequest),
    /// An application message (the broker's controller RPCs), opaque to this crate.
    App(Bytes),
}

/// One request frame. The correlation id is the sender's, unique per connection; the response
/// carries it back so requests can be pipelined and answered out of order.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RequestEnvelope {
    pub correlation_id: u64,
    pub group_id: u64,
    pub body: RequestBody,
}

/// Why a request got no Raft answer. Both kinds are transient from the sender's point of view
/// (the group may be created or restarted on the target), so they map to `Unreachable`.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No group with this id is registered on the target shard.
    UnknownGroup,
    /// The group's Raft node has stopped (openraft `Fatal`).
    GroupStopped,
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    AppendEntries(AppendEntriesResponse),
    /// The answer to both Vote and PreVote.
    Vote(VoteResponse),
    FullSnapshot(SnapshotResponse),
    TransferLeader(TransferLeaderResponse),
    Failed(Failure),
    App(Bytes),
}

#[derive(Archive, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ResponseEnvelope {
    pub correlation_id: u64,
    pub body: ResponseBody,
}
