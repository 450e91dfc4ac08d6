//! DescribeProducers, version 0: the producers a partition's leader tracks (id, epoch, last
//! sequence and timestamp, coordinator epoch of the last marker, first offset of the open
//! transaction or -1), read from the partition's producer state on its shard. A follower answers
//! NOT_LEADER_OR_FOLLOWER.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::shard::mesh::{Reply, Request};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

pub async fn handle(ctx: &Ctx, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let name = t.name.0.to_string();
        let count = ctx.shard.topics.borrow().get(&name).map(|m| m.partitions);
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for &p in &t.partition_indexes {
            let response = PartitionResponse::default().with_partition_index(p);
            if !matches!(count, Some(n) if p >= 0 && p < n) {
                partitions
                    .push(response.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            }
            let owner = ctx.shard.owner(&name, p);
            let reply = ctx
                .shard
                .call(
                    owner,
                    Request::Producers {
                        topic: name.clone(),
                        partition: p,
                    },
                )
                .await;
            partitions.push(match reply {
                Some(Reply::Producers(Ok(producers))) => response.with_active_producers(
                    producers
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp_ms)
                                .with_coordinator_epoch(p.coordinator_epoch)
                                .with_current_txn_start_offset(p.txn_first_offset.unwrap_or(-1))
                        })
                        .collect(),
                ),
                Some(Reply::Producers(Err(code))) => response.with_error_code(code),
                _ => response.with_error_code(ResponseError::UnknownServerError.code()),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
