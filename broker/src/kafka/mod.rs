//! Kafka request dispatch: header → the handler for the API (one file each under `handlers/`) →
//! encoded response.
//!
//! Each handler declares the versions it serves in a `VERSIONS` constant; [`SUPPORTED`] collects
//! them and ApiVersions is derived from it, so the broker never advertises an API it does not
//! implement.

pub mod handlers;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Decodable, Encodable, VersionRange};
use spool_protocol::frame;

use crate::shard::Shard;
use handlers::*;

/// What serving a request produced.
pub enum Outcome {
    /// The encoded response frame.
    Send(Bytes),
    /// The encoded response frame in chunks, written back to back (Fetch: record data is
    /// written from the buffers it is stored in).
    SendChunks(Vec<Bytes>),
    /// No response (Produce with acks=0).
    Silent,
    /// The response could not be encoded (a handler bug): close the connection rather than
    /// leave the client waiting for an answer that will never come.
    Close,
}

/// A request being served.
pub type Pending = Pin<Box<dyn Future<Output = Outcome>>>;

/// A request that cannot be answered; the connection is closed, as Kafka does.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// (API, versions served, versions advertised). Advertised differs only where Kafka itself
/// advertises versions it rejects (Produce v0–2, KIP-896).
pub const SUPPORTED: &[(ApiKey, VersionRange, VersionRange)] = &[
    (ApiKey::Produce, produce::VERSIONS, produce::ADVERTISED),
    (ApiKey::Fetch, fetch::VERSIONS, fetch::VERSIONS),
    (
        ApiKey::ListOffsets,
        list_offsets::VERSIONS,
        list_offsets::VERSIONS,
    ),
    (ApiKey::Metadata, metadata::VERSIONS, metadata::VERSIONS),
    (
        ApiKey::DescribeTopicPartitions,
        describe_topic_partitions::VERSIONS,
        describe_topic_partitions::VERSIONS,
    ),
    (
        ApiKey::ApiVersions,
        api_versions::VERSIONS,
        api_versions::VERSIONS,
    ),
    (
        ApiKey::CreateTopics,
        create_topics::VERSIONS,
        create_topics::VERSIONS,
    ),
    (
        ApiKey::DeleteTopics,
        delete_topics::VERSIONS,
        delete_topics::VERSIONS,
    ),
    (
        ApiKey::DeleteRecords,
        delete_records::VERSIONS,
        delete_records::VERSIONS,
    ),
    (
        ApiKey::InitProducerId,
        init_producer_id::VERSIONS,
        init_producer_id::VERSIONS,
    ),
    (
        ApiKey::OffsetForLeaderEpoch,
        offset_for_leader_epoch::VERSIONS,
        offset_for_leader_epoch::VERSIONS,
    ),
    (
        ApiKey::DescribeConfigs,
        describe_configs::VERSIONS,
        describe_configs::VERSIONS,
    ),
    (
        ApiKey::AlterConfigs,
        alter_configs::VERSIONS,
        alter_configs::VERSIONS,
    ),
    (
        ApiKey::CreatePartitions,
        create_partitions::VERSIONS,
        create_partitions::VERSIONS,
    ),
    (
        ApiKey::IncrementalAlterConfigs,
        incremental_alter_configs::VERSIONS,
        incremental_alter_configs::VERSIONS,
    ),
    (
        ApiKey::DescribeCluster,
        describe_cluster::VERSIONS,
        describe_cluster::VERSIONS,
    ),
    (
        ApiKey::DescribeLogDirs,
        describe_log_dirs::VERSIONS,
        describe_log_dirs::VERSIONS,
    ),
    (
        ApiKey::ElectLeaders,
        elect_leaders::VERSIONS,
        elect_leaders::VERSIONS,
    ),
    (
        ApiKey::AlterPartitionReassignments,
        alter_partition_reassignments::VERSIONS,
        alter_partition_reassignments::VERSIONS,
    ),
    (
        ApiKey::ListPartitionReassignments,
        list_partition_reassignments::VERSIONS,
        list_partition_reassignments::VERSIONS,
    ),
    (
        ApiKey::DescribeQuorum,
        describe_quorum::VERSIONS,
        describe_quorum::VERSIONS,
    ), // Consumer groups (group/): forwarded to the group's shard.
    (
        ApiKey::FindCoordinator,
        find_coordinator::VERSIONS,
        find_coordinator::VERSIONS,
    ),
    (
        ApiKey::JoinGroup,
        join_group::VERSIONS,
        join_group::VERSIONS,
    ),
    (
        ApiKey::SyncGroup,
        sync_group::VERSIONS,
        sync_group::VERSIONS,
    ),
    (ApiKey::Heartbeat, heartbeat::VERSIONS, heartbeat::VERSIONS),
    (
        ApiKey::LeaveGroup,
        leave_group::VERSIONS,
        leave_group::VERSIONS,
    ),
    (
        ApiKey::OffsetCommit,
        offset_commit::VERSIONS,
        offset_commit::VERSIONS,
    ),
    (
        ApiKey::OffsetFetch,
        offset_fetch::VERSIONS,
        offset_fetch::VERSIONS,
    ),
    (
        ApiKey::OffsetDelete,
        offset_delete::VERSIONS,
        offset_delete::VERSIONS,
    ),
    (
        ApiKey::ListGroups,
        list_groups::VERSIONS,
        list_groups::VERSIONS,
    ),
    (
        ApiKey::DescribeGroups,
        describe_groups::VERSIONS,
        describe_groups::VERSIONS,
    ),
    (
        ApiKey::DeleteGroups,
        delete_groups::VERSIONS,
        delete_groups::VERSIONS,
    ),
    // Transactions (txn/).
    (
        ApiKey::AddPartitionsToTxn,
        add_partitions_to_txn::VERSIONS,
        add_partitions_to_txn::VERSIONS,
    ),
    (
        ApiKey::AddOffsetsToTxn,
        add_offsets_to_txn::VERSIONS,
        add_offsets_to_txn::VERSIONS,
    ),
    (ApiKey::EndTxn, end_txn::VERSIONS, end_txn::VERSIONS),
    (
        ApiKey::WriteTxnMarkers,
        write_txn_markers::VERSIONS,
        write_txn_markers::VERSIONS,
    ),
    (
        ApiKey::TxnOffsetCommit,
        txn_offset_commit::VERSIONS,
        txn_offset_commit::VERSIONS,
    ),
    (
        ApiKey::DescribeProducers,
        describe_producers::VERSIONS,
        describe_producers::VERSIONS,
    ),
    (
        ApiKey::DescribeTransactions,
        describe_transactions::VERSIONS,
        describe_transactions::VERSIONS,
    ),
    (
        ApiKey::ListTransactions,
        list_transactions::VERSIONS,
        list_transactions::VERSIONS,
    ),
    // KIP-848 consumer groups (group/consumer.rs).
    (
        ApiKey::ConsumerGroupHeartbeat,
        consumer_group_heartbeat::VERSIONS,
        consumer_group_heartbeat::VERSIONS,
    ),
    (
        ApiKey::ConsumerGroupDescribe,
        consumer_group_describe::VERSIONS,
        consumer_group_describe::VERSIONS,
    ),
];

pub fn served(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(key, range, _)| *key == api && version >= range.min && version <= range.max)
}

/// Everything a handler needs to know about the request besides its body.
pub struct Ctx {
    pub shard: Rc<Shard>,
    pub header: RequestHeader,
    /// The client's address as Kafka reports it in DescribeGroups (`/127.0.0.1`).
    pub client_host: Rc<str>,
}

impl Ctx {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }
}

fn encode<M: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &M) -> Outcome {
    match frame::encode_response(api, version, correlation_id, body) {
        Ok(bytes) => Outcome::Send(bytes),
        Err(e) => {
            // A field out of range for the version is a bug in the handler.
            tracing::error!("{api:?} v{version}: {e}; closing the connection");
            Outcome::Close
        }
    }
}

fn decode<T: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<T, DispatchError> {
    T::decode(body, version).map_err(|e| DispatchError::Malformed {
        api,
        version,
        reason: e.to_string(),
    })
}

/// Turns one request frame into the future that serves it.
///
/// Produce does its appends (or its in-order hand-off to other shards) before this returns, so
/// the order of one connection's produce requests is the order of its appends even though their
/// acknowledgements are awaited concurrently.
pub async fn dispatch(
    shard: &Rc<Shard>,
    client_host: &Rc<str>,
    mut frame_bytes: Bytes,
) -> Result<Pending, DispatchError> {
    let prefix = frame::peek_header_prefix(&frame_bytes)?;
    let api = ApiKey::try_from(prefix.api_key).map_err(|_| frame::FrameError::UnknownApiKey {
        api_key: prefix.api_key,
    })?;
    let version = prefix.api_version;
    if !served(api, version) {
        if api == ApiKey::ApiVersions {
            // Kafka answers an ApiVersions it cannot parse as v0 with UNSUPPORTED_VERSION and its
            // version list, so the client can pick a version both sides speak.
            let body = api_versions::unsupported_response();
            return Ok(ready(encode(api, 0, prefix.correlation_id, &body)));
        }
        return Err(DispatchError::UnsupportedVersion { api, version });
    }
    let header = frame::decode_request_header(&mut frame_bytes)?;
    let correlation_id = header.correlation_id;
    let ctx = Ctx {
        shard: shard.clone(),
        header,
        client_host: client_host.clone(),
    };
    let body = &mut frame_bytes;

    macro_rules! serve {
        ($module:ident, $request:ty) => {{
            let request: $request = decode(api, version, body)?;
            Ok(Box::pin(async move {
                let response = $module::handle(&ctx, request).await;
                encode(api, version, correlation_id, &response)
            }))
        }};
    }

    use kafka_protocol::messages as m;
    match api {
        ApiKey::Produce => {
            let request: m::ProduceRequest = decode(api, version, body)?;
            let acks = request.acks;
            let pending = produce::dispatch(&ctx, request).await;
            Ok(Box::pin(async move {
                let response = pending.await;
                if acks == 0 {
                    Outcome::Silent
                } else {
                    encode(api, version, correlation_id, &response)
                }
            }))
        }
        ApiKey::Fetch => {
            let request: m::FetchRequest = decode(api, version, body)?;
            Ok(Box::pin(async move {
                let reply = fetch::handle(&ctx, request).await;
                match spool_protocol::fetch_frame::encode_fetch_response(
                    version,
                    correlation_id,
                    &reply.response,
                    &reply.records,
                ) {
                    Ok(chunks) => Outcome::SendChunks(chunks),
                    Err(e) => {
                        tracing::error!("Fetch v{version}: {e}; closing the connection");
                        Outcome::Close
                    }
                }
            }))
        }
        ApiKey::ListOffsets => serve!(list_offsets, m::ListOffsetsRequest),
        ApiKey::Metadata => serve!(metadata, m::MetadataRequest),
        ApiKey::DescribeTopicPartitions => {
            serve!(describe_topic_partitions, m::DescribeTopicPartitionsRequest)
        }
        ApiKey::ApiVersions => serve!(api_versions, m::ApiVersionsRequest),
        ApiKey::CreateTopics => serve!(create_topics, m::CreateTopicsRequest),
        ApiKey::DeleteTopics => serve!(delete_topics, m::DeleteTopicsRequest),
        ApiKey::DeleteRecords => serve!(delete_records, m::DeleteRecordsRequest),
        ApiKey::InitProducerId => serve!(init_producer_id, m::InitProducerIdRequest),
        ApiKey::OffsetForLeaderEpoch => {
            serve!(offset_for_leader_epoch, m::OffsetForLeaderEpochRequest)
        }
        ApiKey::DescribeConfigs => serve!(describe_configs, m::DescribeConfigsRequest),
        ApiKey::AlterConfigs => serve!(alter_configs, m::AlterConfigsRequest),
        ApiKey::CreatePartitions => serve!(create_partitions, m::CreatePartitionsRequest),
        ApiKey::IncrementalAlterConfigs => {
            serve!(incremental_alter_configs, m::IncrementalAlterConfigsRequest)
        }
        ApiKey::DescribeCluster => serve!(describe_cluster, m::DescribeClusterRequest),
        ApiKey::DescribeLogDirs => serve!(describe_log_dirs, m::DescribeLogDirsRequest),
        ApiKey::DescribeQuorum => serve!(describe_quorum, m::DescribeQuorumRequest),
        ApiKey::ElectLeaders => serve!(elect_leaders, m::ElectLeadersRequest),
        ApiKey::AlterPartitionReassignments => serve!(
            alter_partition_reassignments,
            m::AlterPartitionReassignmentsRequest
        ),
        ApiKey::ListPartitionReassignments => serve!(
            list_partition_reassignments,
            m::ListPartitionReassignmentsRequest
        ),
        ApiKey::FindCoordinator => serve!(find_coordinator, m::FindCoordinatorRequest),
        ApiKey::JoinGroup => serve!(join_group, m::JoinGroupRequest),
        ApiKey::SyncGroup => serve!(sync_group, m::SyncGroupRequest),
        ApiKey::Heartbeat => serve!(heartbeat, m::HeartbeatRequest),
        ApiKey::LeaveGroup => serve!(leave_group, m::LeaveGroupRequest),
        ApiKey::OffsetCommit => serve!(offset_commit, m::OffsetCommitRequest),
        ApiKey::OffsetFetch => serve!(offset_fetch, m::OffsetFetchRequest),
        ApiKey::OffsetDelete => serve!(offset_delete, m::OffsetDeleteRequest),
        ApiKey::ListGroups => serve!(list_groups, m::ListGroupsRequest),
        ApiKey::DescribeGroups => serve!(describe_groups, m::DescribeGroupsRequest),
        ApiKey::DeleteGroups => serve!(delete_groups, m::DeleteGroupsRequest),
        ApiKey::ConsumerGroupHeartbeat => {
            serve!(consumer_group_heartbeat, m::ConsumerGroupHeartbeatRequest)
        }
        ApiKey::ConsumerGroupDescribe => {
            serve!(consumer_group_describe, m::ConsumerGroupDescribeRequest)
        }
        ApiKey::AddPartitionsToTxn => serve!(add_partitions_to_txn, m::AddPartitionsToTxnRequest),
        ApiKey::AddOffsetsToTxn => serve!(add_offsets_to_txn, m::AddOffsetsToTxnRequest),
        ApiKey::EndTxn => serve!(end_txn, m::EndTxnRequest),
        ApiKey::WriteTxnMarkers => serve!(write_txn_markers, m::WriteTxnMarkersRequest),
        ApiKey::TxnOffsetCommit => serve!(txn_offset_commit, m::TxnOffsetCommitRequest),
        ApiKey::DescribeProducers => serve!(describe_producers, m::DescribeProducersRequest),
        ApiKey::DescribeTransactions => {
            serve!(describe_transactions, m::DescribeTransactionsRequest)
        }
        ApiKey::ListTransactions => serve!(list_transactions, m::ListTransactionsRequest),
        other => Err(DispatchError::UnsupportedVersion {
            api: other,
            version,
        }),
    }
}

fn ready(response: Outcome) -> Pending {
    Box::pin(async move { response })
}
