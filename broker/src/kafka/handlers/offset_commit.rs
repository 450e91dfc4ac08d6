//! OffsetCommit, versions 2–9, forwarded to the group's shard. Generation and member are checked
//! as Kafka does (commits with generation -1 and no member only for groups without members; for a
//! KIP-848 group the field is the member epoch: STALE_MEMBER_EPOCH, UNKNOWN_MEMBER_ID, and
//! UNSUPPORTED_VERSION below v9); the answer comes once the offset records are durable in
//! `__consumer_offsets`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 9 };

pub async fn handle(ctx: &Ctx, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let shape: Vec<_> = request
        .topics
        .iter()
        .map(|t| {
            let parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            (t.name.clone(), parts)
        })
        .collect();
    let call = GroupCall::OffsetCommit {
        version: ctx.version(),
        request,
    };
    match group::call(&ctx.shard, &group_id, call).await {
        Some(GroupReply::OffsetCommit(response)) => response,
        _ => {
            let code = ResponseError::CoordinatorNotAvailable.code();
            let topics = shape
                .into_iter()
                .map(|(name, parts)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetCommitResponse::default().with_topics(topics)
        }
    }
}
