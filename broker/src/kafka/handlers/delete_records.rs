//! DeleteRecords, versions 0–2: moves a partition's log start offset up to the given offset
//! (-1: the high watermark), as `kafka-delete-records.sh` and Kafka Streams' repartition purge
//! ask. Served by the partition's leader: an unreplicated partition moves its start durably at
//! once; a replicated one proposes a DeleteRecords entry through its Raft group, which every
//! replica applies (so a new leader serves exactly what the old one did), and the answer comes
//! once it is committed. Records below the start are no longer served; the segments wholly below
//! it are deleted by the next retention pass. As Kafka: OFFSET_OUT_OF_RANGE past the high
//! watermark, POLICY_VIOLATION on a topic whose `cleanup.policy` lacks `delete`, and the answer's
//! low watermark is the leader's new log start offset.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::shard::mesh::{Reply, Request};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

pub async fn handle(ctx: &Ctx, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let shard = &ctx.shard;
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let name = t.name.0.to_string();
        let count = shard.topics.borrow().get(&name).map(|m| m.partitions);
        let mut results = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let result =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            if !matches!(count, Some(n) if p.partition_index >= 0 && p.partition_index < n) {
                results.push(
                    result
                        .with_low_watermark(-1)
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                );
                continue;
            }
            let owner = shard.owner(&name, p.partition_index);
            let reply = shard
                .call(
                    owner,
                    Request::DeleteRecords {
                        topic: name.clone(),
                        partition: p.partition_index,
                        offset: p.offset,
                    },
                )
                .await;
            let (error_code, low_watermark) = match reply {
                Some(Reply::DeleteRecords {
                    error_code,
                    low_watermark,
                }) => (error_code, low_watermark),
                _ => (ResponseError::UnknownServerError.code(), -1),
            };
            results.push(
                result
                    .with_low_watermark(low_watermark)
                    .with_error_code(error_code),
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(results),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
