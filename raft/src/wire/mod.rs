//! The messages Raft nodes exchange, as rkyv archives in length-prefixed frames.
//!
//! A request frame is a [`messages::RequestEnvelope`] {correlation id, group id, body}; a
//! response frame a [`messages::ResponseEnvelope`] {correlation id, body}. [`Request`] and
//! [`Response`] are the same messages in openraft's own types, which is what the transport
//! hands to and takes from Raft.
//!
//! Fault model: every received frame is validated (`rkyv::access`, bytecheck) before any field
//! is read, then converted; a frame that is too long, fails validation or cannot be converted
//! is a [`WireError`], and the transport closes that one connection. Nothing here panics on
//! peer input.

mod convert;
mod frame;
pub mod messages;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use rkyv::rancor;
use rkyv::util::AlignedVec;

pub use self::frame::{read_frame, FRAME_PREFIX_BYTES, RPC_FRAME_BYTES_MAX};
pub use self::messages::Failure;
use self::messages::{ArchivedRequestEnvelope, ArchivedResponseEnvelope};
use crate::TypeConfig;

/// Raft group id, unique in the cluster (the metadata group, later one per partition).
pub type GroupId = u64;

/// A request in openraft's types.
#[derive(Debug, Clone)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    FullSnapshot {
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Bytes>,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// An application message, for the group registered to answer them (the controller).
    App(Bytes),
}

/// A response in openraft's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    /// The answer to Vote and to PreVote.
    Vote(VoteResponse<TypeConfig>),
    FullSnapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Failed(Failure),
    App(Bytes),
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes is over the limit of {max}")]
    FrameTooLong { len: usize, max: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame failed validation: {0}")]
    Invalid(#[source] rancor::Error),
    #[error("message cannot be converted: {reason}")]
    Unconvertible { reason: &'static str },
    #[error("message carries an invalid membership: {0}")]
    Membership(#[from] openraft::error::MembershipError<crate::NodeId>),
    #[error("message cannot be encoded: {0}")]
    Encode(#[source] rancor::Error),
}

/// A snapshot's meta (last log id, membership) as bytes, for snapshot files.
pub fn encode_snapshot_meta(
    meta: &openraft::type_config::alias::SnapshotMetaOf<TypeConfig>,
) -> Result<Vec<u8>, WireError> {
    let wire = convert::snapshot_meta_to_wire(meta);
    rkyv::to_bytes::<rancor::Error>(&wire)
        .map(|b| b.into_vec())
        .map_err(WireError::Encode)
}

/// The snapshot meta [`encode_snapshot_meta`] wrote, validated before use.
pub fn decode_snapshot_meta(
    bytes: &[u8],
) -> Result<openraft::type_config::alias::SnapshotMetaOf<TypeConfig>, WireError> {
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let archived = rkyv::access::<messages::ArchivedSnapshotMeta, rancor::Error>(&aligned)
        .map_err(WireError::Invalid)?;
    convert::snapshot_meta_from_wire(archived)
}

/// A whole request frame, length prefix included, ready to write.
pub fn encode_request(
    correlation_id: u64,
    group_id: GroupId,
    request: &Request,
) -> Result<Vec<u8>, WireError> {
    let envelope = messages::RequestEnvelope {
        correlation_id,
        group_id,
        body: convert::request_to_wire(request),
    };
    let writer =
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(&envelope, frame::FrameWriter::new())
            .map_err(WireError::Encode)?;
    writer.finish()
}

/// A whole response frame, length prefix included, ready to write.
pub fn encode_response(correlation_id: u64, response: &Response) -> Result<Vec<u8>, WireError> {
    let envelope = messages::ResponseEnvelope {
        correlation_id,
        body: convert::response_to_wire(response),
    };
    let writer =
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(&envelope, frame::FrameWriter::new())
            .map_err(WireError::Encode)?;
    writer.finish()
}

/// A decoded request frame: who asked, for which group, what.
#[derive(Debug)]
pub struct IncomingRequest {
    pub correlation_id: u64,
    pub group_id: GroupId,
    pub request: Request,
}

/// Validates and converts one request payload (as [`read_frame`] returns it). Entry payloads and
/// snapshot data are slices of `payload`, not copies.
pub fn decode_request(payload: AlignedVec) -> Result<IncomingRequest, WireError> {
    let frame = Bytes::from_owner(payload);
    let archived = rkyv::access::<ArchivedRequestEnvelope, rancor::Error>(&frame)
        .map_err(WireError::Invalid)?;
    Ok(IncomingRequest {
        correlation_id: archived.correlation_id.to_native(),
        group_id: archived.group_id.to_native(),
        request: convert::request_from_wire(&archived.body, &frame)?,
    })
}

/// Validates and converts one response payload; returns its correlation id and the response.
pub fn decode_response(payload: AlignedVec) -> Result<(u64, Response), WireError> {
    let archived = rkyv::access::<ArchivedResponseEnvelope, rancor::Error>(&payload)
        .map_err(WireError::Invalid)?;
    Ok((
        archived.correlation_id.to_native(),
        convert::response_from_wire(&archived.body),
    ))
}
