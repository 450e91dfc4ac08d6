//! Round trips of every message through a frame, and the ways a hostile frame is refused.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderError,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{EntryOf, LogIdOf, SnapshotOf, VoteOf};
use openraft::{EntryPayload, Membership, SnapshotMeta, StoredMembership};
use rkyv::util::AlignedVec;

use super::*;
use crate::{Command, NodeInfo};

fn vote(term: u64, node: u64, committed: bool) -> VoteOf<TypeConfig> {
    let mut v = openraft::Vote::new(term, node);
    v.committed = committed;
    v
}

fn log_id(term: u64, index: u64) -> LogIdOf<TypeConfig> {
    openraft::LogId::new_term_index(term, index)
}

fn node(port: u16) -> NodeInfo {
    NodeInfo {
        rpc_addr: format!("127.0.0.1:{port}"),
    }
}

/// A joint config {1,2,3} → {3,4,5} with learners 6 and 7.
fn joint_membership() -> Membership<u64, NodeInfo> {
    let configs = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])];
    let nodes: BTreeMap<u64, NodeInfo> = (1..=7).map(|id| (id, node(9000 + id as u16))).collect();
    let m = Membership::new(configs, nodes).expect("valid membership");
    assert_eq!(m.learner_ids().collect::<Vec<_>>(), vec![6, 7]);
    m
}

fn entries() -> Vec<EntryOf<TypeConfig>> {
    vec![
        openraft::Entry {
            log_id: log_id(3, 10),
            payload: EntryPayload::Blank,
        },
        openraft::Entry {
            log_id: log_id(3, 11),
            payload: EntryPayload::Normal(Command(Bytes::from_static(b"record batch"))),
        },
        openraft::Entry {
            log_id: log_id(3, 12),
            payload: EntryPayload::Normal(Command(Bytes::new())),
        },
        openraft::Entry {
            log_id: log_id(3, 13),
            payload: EntryPayload::Membership(joint_membership()),
        },
    ]
}

/// Strips the prefix and checks it, as the receiver's `read_frame` would.
fn payload_of(frame: &[u8]) -> AlignedVec {
    let (prefix, payload) = frame.split_at(FRAME_PREFIX_BYTES);
    let len = u32::from_be_bytes(prefix.try_into().expect("4-byte prefix")) as usize;
    assert_eq!(len, payload.len());
    let mut aligned = AlignedVec::new();
    aligned.extend_from_slice(payload);
    aligned
}

fn round_trip_request(request: &Request) -> Request {
    let frame = encode_request(77, 9, request).expect("encode");
    let got = decode_request(payload_of(&frame)).expect("decode");
    assert_eq!((got.correlation_id, got.group_id), (77, 9));
    got.request
}

fn round_trip_response(response: Response) {
    let frame = encode_response(u64::MAX, &response).expect("encode");
    let (correlation_id, got) = decode_response(payload_of(&frame)).expect("decode");
    assert_eq!(correlation_id, u64::MAX);
    assert_eq!(got, response);
}

fn assert_append_eq(
    got: &AppendEntriesRequest<TypeConfig>,
    want: &AppendEntriesRequest<TypeConfig>,
) {
    assert_eq!(got.vote, want.vote);
    assert_eq!(got.prev_log_id, want.prev_log_id);
    assert_eq!(got.entries, want.entries);
    assert_eq!(got.leader_commit, want.leader_commit);
}

#[test]
fn append_entries_round_trip() {
    let cases = [
        AppendEntriesRequest {
            vote: vote(3, 1, true),
            prev_log_id: Some(log_id(2, 9)),
            entries: entries(),
            leader_commit: Some(log_id(3, 10)),
        },
        // A heartbeat from a fresh leader: nothing before it, nothing committed.
        AppendEntriesRequest {
            vote: vote(1, 1, true),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        },
    ];
    for want in &cases {
        match round_trip_request(&Request::AppendEntries(want.clone())) {
            Request::AppendEntries(got) => assert_append_eq(&got, want),
            other => panic!("decoded as {other:?}"),
        }
    }
}

#[test]
fn vote_and_pre_vote_round_trip() {
    let cases = [
        VoteRequest {
            vote: vote(5, 2, false),
            last_log_id: Some(log_id(4, 100)),
            leadership_transfer: true,
        },
        VoteRequest::new(vote(1, 3, false), None),
    ];
    for want in cases {
        match round_trip_request(&Request::Vote(want.clone())) {
            Request::Vote(got) => assert_eq!(got, want),
            other => panic!("decoded as {other:?}"),
        }
        match round_trip_request(&Request::PreVote(want.clone())) {
            Request::PreVote(got) => assert_eq!(got, want),
            other => panic!("decoded as {other:?}"),
        }
    }
}

#[test]
fn full_snapshot_round_trip() {
    let cases = [
        SnapshotOf::<TypeConfig, Bytes> {
            meta: SnapshotMeta {
                last_log_id: Some(log_id(3, 13)),
                last_membership: StoredMembership::new(Some(log_id(3, 13)), joint_membership()),
            },
            snapshot: Bytes::from((0..=255u8).cycle().take(70_000).collect::<Vec<_>>()),
        },
        // An empty group's snapshot: no log id, the empty membership sentinel, no data.
        SnapshotOf::<TypeConfig, Bytes> {
            meta: SnapshotMeta::default(),
            snapshot: Bytes::new(),
        },
    ];
    for want in cases {
        let request = Request::FullSnapshot {
            vote: vote(3, 1, true),
            snapshot: want.clone(),
        };
        match round_trip_request(&request) {
            Request::FullSnapshot { vote: v, snapshot } => {
                assert_eq!(v, vote(3, 1, true));
                assert_eq!(snapshot.meta, want.meta);
                assert_eq!(snapshot.snapshot, want.snapshot);
            }
            other => panic!("decoded as {other:?}"),
        }
    }
}

#[test]
fn transfer_leader_round_trip() {
    let cases = [
        TransferLeaderRequest::new(vote(7, 1, true), 3, Some(log_id(7, 42))),
        TransferLeaderRequest::new(vote(1, 2, true), 1, None),
    ];
    for want in cases {
        match round_trip_request(&Request::TransferLeader(want.clone())) {
            Request::TransferLeader(got) => assert_eq!(got, want),
            other => panic!("decoded as {other:?}"),
        }
    }
}

#[test]
fn responses_round_trip() {
    let cases = [
        Response::AppendEntries(AppendEntriesResponse::Success),
        Response::AppendEntries(AppendEntriesResponse::PartialSuccess(Some(log_id(2, 5)))),
        Response::AppendEntries(AppendEntriesResponse::PartialSuccess(None)),
        Response::AppendEntries(AppendEntriesResponse::Conflict),
        Response::AppendEntries(AppendEntriesResponse::HigherVote(vote(9, 3, false))),
        Response::Vote(VoteResponse::new(
            vote(4, 2, false),
            Some(log_id(3, 8)),
            true,
        )),
        Response::Vote(VoteResponse::new(vote(4, 2, true), None, false)),
        Response::FullSnapshot(SnapshotResponse::new(vote(6, 1, true))),
        Response::TransferLeader(Ok(())),
        Response::TransferLeader(Err(TransferLeaderError::VoteChanged {
            expected: vote(2, 1, true),
            actual: vote(3, 2, true),
        })),
        Response::TransferLeader(Err(TransferLeaderError::LogNotFlushed {
            expected: Some(log_id(2, 10)),
            actual: None,
        })),
        Response::Failed(Failure::UnknownGroup),
        Response::Failed(Failure::GroupStopped),
    ];
    for response in cases {
        round_trip_response(response);
    }
}

/// Payloads are slices of the received frame, not copies.
#[test]
fn payloads_borrow_the_frame() {
    let request = Request::AppendEntries(AppendEntriesRequest {
        vote: vote(1, 1, true),
        prev_log_id: None,
        entries: entries(),
        leader_commit: None,
    });
    let payload = payload_of(&encode_request(1, 1, &request).expect("encode"));
    let range = payload.as_ptr_range();
    let Request::AppendEntries(got) = decode_request(payload).expect("decode").request else {
        panic!("not an append");
    };
    let EntryPayload::Normal(Command(bytes)) = &got.entries[1].payload else {
        panic!("not a normal entry");
    };
    assert!(range.contains(&bytes.as_ptr()));
}

#[test]
fn garbage_and_wrong_kind_fail_validation() {
    let mut garbage = AlignedVec::new();
    garbage.extend_from_slice(&[0xA5; 64]);
    assert!(matches!(
        decode_request(garbage),
        Err(WireError::Invalid(_))
    ));
    assert!(matches!(
        decode_request(AlignedVec::new()),
        Err(WireError::Invalid(_))
    ));

    // A response is not a request: the layouts differ and validation must notice (a bad enum
    // tag or out-of-bounds pointer), whatever the bytes happen to be.
    let response = encode_response(1, &Response::Failed(Failure::UnknownGroup)).expect("encode");
    assert!(decode_request(payload_of(&response)).is_err());
}

#[test]
fn invalid_membership_is_refused() {
    // Voter 4 has no node: a valid archive that openraft would not accept.
    let envelope = messages::RequestEnvelope {
        correlation_id: 1,
        group_id: 1,
        body: messages::RequestBody::AppendEntries(messages::AppendEntriesRequest {
            vote: messages::Vote {
                leader_id: messages::LeaderId {
                    term: 1,
                    voted_for: 1,
                },
                committed: true,
            },
            prev_log_id: None,
            entries: vec![messages::Entry {
                log_id: messages::LogId { term: 1, index: 1 },
                payload: messages::Payload::Membership(messages::Membership {
                    configs: vec![vec![1, 4]],
                    nodes: vec![messages::Node {
                        id: 1,
                        rpc_addr: "a".into(),
                    }],
                }),
            }],
            leader_commit: None,
        }),
    };
    let bytes = rkyv::to_bytes::<rancor::Error>(&envelope).expect("encode");
    assert!(matches!(
        decode_request(bytes),
        Err(WireError::Membership(_))
    ));
}

#[test]
fn truncated_and_oversized_frames_are_refused() {
    let frame = encode_request(
        1,
        1,
        &Request::Vote(VoteRequest::new(vote(1, 1, false), None)),
    )
    .expect("encode");
    let read = |bytes: Vec<u8>| {
        futures_lite::future::block_on(read_frame(&mut futures_lite::io::Cursor::new(bytes)))
    };
    assert!(read(frame.clone()).expect("whole frame").is_some());
    assert!(read(Vec::new()).expect("clean end").is_none());
    assert!(matches!(
        read(frame[..2].to_vec()),
        Err(WireError::Truncated)
    ));
    assert!(matches!(
        read(frame[..frame.len() - 1].to_vec()),
        Err(WireError::Truncated)
    ));
    let too_long = ((RPC_FRAME_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
    assert!(matches!(
        read(too_long),
        Err(WireError::FrameTooLong { .. })
    ));
}
