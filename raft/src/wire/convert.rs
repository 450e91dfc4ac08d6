//! Lossless conversions between openraft's messages (for [`TypeConfig`]) and the wire mirrors.
//!
//! Outbound: openraft → mirror (payloads are `Bytes` clones, no copy), then rkyv serializes.
//! Inbound: validated archived mirror → openraft, with payload and snapshot bytes sliced out of
//! the received frame (`Bytes::slice_ref`) instead of copied. Everything a hostile peer could get
//! wrong that validation cannot see (a voter without a node, a node listed twice) is a
//! [`WireError`], never a panic.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use openraft::impls::leader_id_std;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderError,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use openraft::{EntryPayload, Membership, StoredMembership};
use rkyv::option::ArchivedOption;

use super::messages::{self as m, ArchivedFailure};
use super::{Failure, Request, Response, WireError};
use crate::{Command, NodeId, NodeInfo, TypeConfig};

type RaftLeaderId = leader_id_std::LeaderId<u64, NodeId>;
type RaftMembership = Membership<NodeId, NodeInfo>;

// ---- openraft → mirror ----------------------------------------------------------------------

pub(super) fn request_to_wire(request: &Request) -> m::RequestBody {
    match request {
        Request::AppendEntries(r) => m::RequestBody::AppendEntries(append_to_wire(r)),
        Request::Vote(r) => m::RequestBody::Vote(vote_req_to_wire(r)),
        Request::PreVote(r) => m::RequestBody::PreVote(vote_req_to_wire(r)),
        Request::FullSnapshot { vote, snapshot } => {
            m::RequestBody::FullSnapshot(m::FullSnapshotRequest {
                vote: vote_to_wire(vote),
                meta: snapshot_meta_to_wire(&snapshot.meta),
                data: snapshot.snapshot.clone(),
            })
        }
        Request::TransferLeader(r) => m::RequestBody::TransferLeader(m::TransferLeaderRequest {
            from_leader: vote_to_wire(r.from_leader()),
            to_node_id: *r.to_node_id(),
            last_log_id: r.last_log_id().map(log_id_to_wire),
        }),
        Request::App(b) => m::RequestBody::App(b.clone()),
    }
}

pub(super) fn response_to_wire(response: &Response) -> m::ResponseBody {
    match response {
        Response::AppendEntries(r) => m::ResponseBody::AppendEntries(match r {
            AppendEntriesResponse::Success => m::AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(l) => {
                m::AppendEntriesResponse::PartialSuccess(l.as_ref().map(log_id_to_wire))
            }
            AppendEntriesResponse::Conflict => m::AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(v) => {
                m::AppendEntriesResponse::HigherVote(vote_to_wire(v))
            }
        }),
        Response::Vote(r) => m::ResponseBody::Vote(m::VoteResponse {
            vote: vote_to_wire(&r.vote),
            vote_granted: r.vote_granted,
            last_log_id: r.last_log_id.as_ref().map(log_id_to_wire),
        }),
        Response::FullSnapshot(r) => m::ResponseBody::FullSnapshot(m::SnapshotResponse {
            vote: vote_to_wire(&r.vote),
        }),
        Response::TransferLeader(r) => m::ResponseBody::TransferLeader(match r {
            Ok(()) => m::TransferLeaderResponse::Done,
            Err(TransferLeaderError::VoteChanged { expected, actual }) => {
                m::TransferLeaderResponse::VoteChanged {
                    expected: vote_to_wire(expected),
                    actual: vote_to_wire(actual),
                }
            }
            Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
                m::TransferLeaderResponse::LogNotFlushed {
                    expected: expected.as_ref().map(log_id_to_wire),
                    actual: actual.as_ref().map(log_id_to_wire),
                }
            }
        }),
        Response::Failed(f) => m::ResponseBody::Failed(*f),
        Response::App(b) => m::ResponseBody::App(b.clone()),
    }
}

fn append_to_wire(r: &AppendEntriesRequest<TypeConfig>) -> m::AppendEntriesRequest {
    m::AppendEntriesRequest {
        vote: vote_to_wire(&r.vote),
        prev_log_id: r.prev_log_id.as_ref().map(log_id_to_wire),
        entries: r.entries.iter().map(entry_to_wire).collect(),
        leader_commit: r.leader_commit.as_ref().map(log_id_to_wire),
    }
}

fn vote_req_to_wire(r: &VoteRequest<TypeConfig>) -> m::VoteRequest {
    m::VoteRequest {
        vote: vote_to_wire(&r.vote),
        last_log_id: r.last_log_id.as_ref().map(log_id_to_wire),
        leadership_transfer: r.leadership_transfer,
    }
}

fn leader_id_to_wire(l: &RaftLeaderId) -> m::LeaderId {
    m::LeaderId {
        term: l.term,
        voted_for: l.voted_for,
    }
}

fn vote_to_wire(v: &VoteOf<TypeConfig>) -> m::Vote {
    m::Vote {
        leader_id: leader_id_to_wire(&v.leader_id),
        committed: v.committed,
    }
}

fn log_id_to_wire(l: &LogIdOf<TypeConfig>) -> m::LogId {
    m::LogId {
        term: l.leader_id.term,
        index: l.index,
    }
}

fn entry_to_wire(e: &EntryOf<TypeConfig>) -> m::Entry {
    m::Entry {
        log_id: log_id_to_wire(&e.log_id),
        payload: match &e.payload {
            EntryPayload::Blank => m::Payload::Blank,
            EntryPayload::Normal(Command(bytes)) => m::Payload::Normal(bytes.clone()),
            EntryPayload::Membership(mem) => m::Payload::Membership(membership_to_wire(mem)),
        },
    }
}

fn membership_to_wire(mem: &RaftMembership) -> m::Membership {
    m::Membership {
        configs: mem
            .get_joint_config()
            .iter()
            .map(|c| c.iter().copied().collect())
            .collect(),
        nodes: mem
            .nodes()
            .map(|(id, n)| m::Node {
                id: *id,
                rpc_addr: n.rpc_addr.clone(),
            })
            .collect(),
    }
}

pub(super) fn snapshot_meta_from_wire(
    meta: &m::ArchivedSnapshotMeta,
) -> Result<SnapshotMetaOf<TypeConfig>, WireError> {
    Ok(SnapshotMetaOf::<TypeConfig> {
        last_log_id: opt_log_id_from_wire(&meta.last_log_id),
        last_membership: stored_membership_from_wire(&meta.last_membership)?,
    })
}

pub(super) fn snapshot_meta_to_wire(meta: &SnapshotMetaOf<TypeConfig>) -> m::SnapshotMeta {
    m::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(log_id_to_wire),
        last_membership: m::StoredMembership {
            log_id: meta.last_membership.log_id().as_ref().map(log_id_to_wire),
            membership: membership_to_wire(meta.last_membership.membership()),
        },
    }
}

// ---- archived mirror → openraft -------------------------------------------------------------

/// `frame` owns the bytes `body` was validated in; payloads become slices of it.
pub(super) fn request_from_wire(
    body: &m::ArchivedRequestBody,
    frame: &Bytes,
) -> Result<Request, WireError> {
    Ok(match body {
        m::ArchivedRequestBody::AppendEntries(r) => Request::AppendEntries(AppendEntriesRequest {
            vote: vote_from_wire(&r.vote),
            prev_log_id: opt_log_id_from_wire(&r.prev_log_id),
            entries: r
                .entries
                .iter()
                .map(|e| entry_from_wire(e, frame))
                .collect::<Result<_, _>>()?,
            leader_commit: opt_log_id_from_wire(&r.leader_commit),
        }),
        m::ArchivedRequestBody::Vote(r) => Request::Vote(vote_req_from_wire(r)),
        m::ArchivedRequestBody::PreVote(r) => Request::PreVote(vote_req_from_wire(r)),
        m::ArchivedRequestBody::FullSnapshot(r) => Request::FullSnapshot {
            vote: vote_from_wire(&r.vote),
            snapshot: SnapshotOf::<TypeConfig, Bytes> {
                meta: SnapshotMetaOf::<TypeConfig> {
                    last_log_id: opt_log_id_from_wire(&r.meta.last_log_id),
                    last_membership: stored_membership_from_wire(&r.meta.last_membership)?,
                },
                snapshot: frame.slice_ref(r.data.as_slice()),
            },
        },
        m::ArchivedRequestBody::TransferLeader(r) => {
            Request::TransferLeader(TransferLeaderRequest::new(
                vote_from_wire(&r.from_leader),
                r.to_node_id.to_native(),
                opt_log_id_from_wire(&r.last_log_id),
            ))
        }
        m::ArchivedRequestBody::App(b) => Request::App(frame.slice_ref(b.as_slice())),
    })
}

pub(super) fn response_from_wire(body: &m::ArchivedResponseBody) -> Response {
    match body {
        m::ArchivedResponseBody::AppendEntries(r) => Response::AppendEntries(match r {
            m::ArchivedAppendEntriesResponse::Success => AppendEntriesResponse::Success,
            m::ArchivedAppendEntriesResponse::PartialSuccess(l) => {
                AppendEntriesResponse::PartialSuccess(opt_log_id_from_wire(l))
            }
            m::ArchivedAppendEntriesResponse::Conflict => AppendEntriesResponse::Conflict,
            m::ArchivedAppendEntriesResponse::HigherVote(v) => {
                AppendEntriesResponse::HigherVote(vote_from_wire(v))
            }
        }),
        m::ArchivedResponseBody::Vote(r) => Response::Vote(VoteResponse {
            vote: vote_from_wire(&r.vote),
            vote_granted: r.vote_granted,
            last_log_id: opt_log_id_from_wire(&r.last_log_id),
        }),
        m::ArchivedResponseBody::FullSnapshot(r) => {
            Response::FullSnapshot(SnapshotResponse::new(vote_from_wire(&r.vote)))
        }
        m::ArchivedResponseBody::TransferLeader(r) => {
            Response::TransferLeader(transfer_from_wire(r))
        }
        m::ArchivedResponseBody::Failed(f) => Response::Failed(match f {
            ArchivedFailure::UnknownGroup => Failure::UnknownGroup,
            ArchivedFailure::GroupStopped => Failure::GroupStopped,
        }),
        m::ArchivedResponseBody::App(b) => Response::App(Bytes::copy_from_slice(b.as_slice())),
    }
}

fn transfer_from_wire(r: &m::ArchivedTransferLeaderResponse) -> TransferLeaderResponse<TypeConfig> {
    match r {
        m::ArchivedTransferLeaderResponse::Done => Ok(()),
        m::ArchivedTransferLeaderResponse::VoteChanged { expected, actual } => {
            Err(TransferLeaderError::VoteChanged {
                expected: vote_from_wire(expected),
                actual: vote_from_wire(actual),
            })
        }
        m::ArchivedTransferLeaderResponse::LogNotFlushed { expected, actual } => {
            Err(TransferLeaderError::LogNotFlushed {
                expected: opt_log_id_from_wire(expected),
                actual: opt_log_id_from_wire(actual),
            })
        }
    }
}

fn vote_req_from_wire(r: &m::ArchivedVoteRequest) -> VoteRequest<TypeConfig> {
    VoteRequest {
        vote: vote_from_wire(&r.vote),
        last_log_id: opt_log_id_from_wire(&r.last_log_id),
        leadership_transfer: r.leadership_transfer,
    }
}

fn leader_id_from_wire(l: &m::ArchivedLeaderId) -> RaftLeaderId {
    RaftLeaderId {
        term: l.term.to_native(),
        voted_for: l.voted_for.to_native(),
    }
}

fn vote_from_wire(v: &m::ArchivedVote) -> VoteOf<TypeConfig> {
    openraft::Vote {
        leader_id: leader_id_from_wire(&v.leader_id),
        committed: v.committed,
    }
}

fn log_id_from_wire(l: &m::ArchivedLogId) -> LogIdOf<TypeConfig> {
    openraft::LogId::new_term_index(l.term.to_native(), l.index.to_native())
}

fn opt_log_id_from_wire(l: &ArchivedOption<m::ArchivedLogId>) -> Option<LogIdOf<TypeConfig>> {
    l.as_ref().map(log_id_from_wire)
}

fn entry_from_wire(e: &m::ArchivedEntry, frame: &Bytes) -> Result<EntryOf<TypeConfig>, WireError> {
    let payload = match &e.payload {
        m::ArchivedPayload::Blank => EntryPayload::Blank,
        m::ArchivedPayload::Normal(bytes) => {
            EntryPayload::Normal(Command(frame.slice_ref(bytes.as_slice())))
        }
        m::ArchivedPayload::Membership(mem) => EntryPayload::Membership(membership_from_wire(mem)?),
    };
    Ok(openraft::Entry {
        log_id: log_id_from_wire(&e.log_id),
        payload,
    })
}

fn membership_from_wire(mem: &m::ArchivedMembership) -> Result<RaftMembership, WireError> {
    let mut configs = Vec::with_capacity(mem.configs.len());
    for config in mem.configs.iter() {
        let mut voters = BTreeSet::new();
        for id in config.iter() {
            if !voters.insert(id.to_native()) {
                return Err(WireError::Unconvertible {
                    reason: "a voter is listed twice in one config",
                });
            }
        }
        configs.push(voters);
    }
    let mut nodes = BTreeMap::new();
    for node in mem.nodes.iter() {
        let info = NodeInfo {
            rpc_addr: node.rpc_addr.as_str().to_owned(),
        };
        if nodes.insert(node.id.to_native(), info).is_some() {
            return Err(WireError::Unconvertible {
                reason: "a node is listed twice in a membership",
            });
        }
    }
    Ok(Membership::new(configs, nodes)?)
}

fn stored_membership_from_wire(
    s: &m::ArchivedStoredMembership,
) -> Result<StoredMembershipOf<TypeConfig>, WireError> {
    Ok(StoredMembership::new(
        opt_log_id_from_wire(&s.log_id),
        membership_from_wire(&s.membership)?,
    ))
}
