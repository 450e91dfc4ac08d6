//! AlterPartitionReassignments (API 45), versions 0–1 (`kafka-reassign-partitions.sh
//! --execute`/`--cancel`, `Admin.alterPartitionReassignments`).
//!
//! Any broker answers: each partition's change goes to the active controller, which records
//! the target replica set in the metadata log (`MetadataRecord::PartitionReassign`); the
//! partition's Raft leader then carries the move out (`replication::reassign`). Errors are
//! KRaft's: UNKNOWN_TOPIC_OR_PARTITION for a partition that does not exist,
//! NO_REASSIGNMENT_IN_PROGRESS when cancelling (null replicas) with none pending,
//! INVALID_REPLICA_ASSIGNMENT for an empty list, duplicates or an unregistered broker, and (v1,
//! KIP-860) INVALID_REPLICATION_FACTOR when the count of replicas changes while
//! `allow_replication_factor_change` is false. A request naming more than
//! [`REASSIGNMENTS_PER_REQUEST_MAX`] partitions is refused with INVALID_REQUEST.

use futures::StreamExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::shard::mesh::AdminRequest;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// Partitions one request may name (KRaft bounds the records of one user operation at 10,000).
pub const REASSIGNMENTS_PER_REQUEST_MAX: usize = 10_000;

/// Partitions whose change is at the controller at once for one request.
pub const REASSIGNMENTS_IN_FLIGHT_MAX: usize = 16;

pub async fn handle(
    ctx: &Ctx,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let version = ctx.version();
    let allow_rf_change = version < 1 || request.allow_replication_factor_change;
    let count: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
    let response = AlterPartitionReassignmentsResponse::default();
    let response = if version >= 1 {
        response.with_allow_replication_factor_change(request.allow_replication_factor_change)
    } else {
        response
    };
    if count > REASSIGNMENTS_PER_REQUEST_MAX {
        let message =
            format!("A request may reassign at most {REASSIGNMENTS_PER_REQUEST_MAX} partitions.");
        return response
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(StrBytes::from_string(message)));
    }
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let current = ctx.shard.topics.borrow().get(&name).cloned();
        let answers: Vec<ReassignablePartitionResponse> =
            futures::stream::iter(topic.partitions.into_iter().map(|p| {
                let name = name.clone();
                let current = current.clone();
                async move {
                    let index = p.partition_index;
                    let target: Option<Vec<i32>> = p
                        .replicas
                        .map(|r| r.into_iter().map(|b| b.0).collect());
                    let answer =
                        ReassignablePartitionResponse::default().with_partition_index(index);
                    if let (false, Some(target), Some(meta)) =
                        (allow_rf_change, target.as_ref(), current.as_ref())
                    {
                        let now = usize::try_from(index)
                            .ok()
                            .and_then(|i| meta.replicas.get(i))
                            .map(Vec::len);
                        if let Some(now) = now.filter(|n| *n != target.len()) {
                            return answer
                                .with_error_code(ResponseError::InvalidReplicationFactor.code())
                                .with_error_message(Some(StrBytes::from_string(format!(
                                    "The replication factor is changed from {now} to {} but allowReplicationFactorChange is false",
                                    target.len()
                                ))));
                        }
                    }
                    let (code, message, _) = ctx
                        .shard
                        .admin_call(AdminRequest::AlterReassignment {
                            topic: name,
                            partition: index,
                            target,
                            timeout_ms: request.timeout_ms,
                        })
                        .await;
                    answer
                        .with_error_code(code)
                        .with_error_message(message.filter(|_| code != 0).map(StrBytes::from_string))
                }
            }))
            .buffered(REASSIGNMENTS_IN_FLIGHT_MAX)
            .collect()
            .await;
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(answers),
        );
    }
    response.with_responses(responses)
}
