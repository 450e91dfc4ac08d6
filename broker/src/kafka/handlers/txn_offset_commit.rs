//! TxnOffsetCommit, versions 0–5: a transactional producer's offset commit for a group, served
//! by the group's coordinator, which writes the offsets as transactional records of the producer
//! and makes them the group's only when the COMMIT marker reaches the offsets partition (an
//! ABORT drops them). From v3 the member and generation are checked as OffsetCommit checks them.
//! The offsets partition is first checked with the transaction's coordinator (KIP-890): v0–4
//! must have added it (AddOffsetsToTxn), v5+ (transactions version 2) has it added here.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;
use crate::shard::routing;
use crate::txn::verify;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub async fn handle(ctx: &Ctx, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    if !group_id.is_empty() && group::coordinated_here(&ctx.shard, &group_id) {
        // KIP-890: the group's offsets partition must be in the transaction (v5+: is added).
        let partition = routing::group_partition(&group_id, group::offsets_partitions(&ctx.shard));
        let code = verify::verify_offsets(
            &ctx.shard,
            ctx.version(),
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            partition,
        )
        .await;
        if code != 0 {
            return failed(&request, code);
        }
    }
    let shape = request.clone();
    let call = GroupCall::TxnOffsetCommit {
        version: ctx.version(),
        request: Box::new(request),
    };
    match group::call(&ctx.shard, &group_id, call).await {
        Some(GroupReply::TxnOffsetCommit(response)) => response,
        _ => failed(&shape, ResponseError::CoordinatorNotAvailable.code()),
    }
}

/// The answer with `codes[t][p]` for partition `p` of topic `t` of the request.
pub fn answer(request: &TxnOffsetCommitRequest, codes: &[Vec<i16>]) -> TxnOffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .zip(codes)
        .map(|(t, row)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(row)
                        .map(|(p, &code)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Every partition of the request answered `code`.
pub fn failed(request: &TxnOffsetCommitRequest, code: i16) -> TxnOffsetCommitResponse {
    let codes: Vec<Vec<i16>> = request
        .topics
        .iter()
        .map(|t| vec![code; t.partitions.len()])
        .collect();
    answer(request, &codes)
}
