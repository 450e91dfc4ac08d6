//! DescribeTopicPartitions, version 0 (KIP-966; what Kafka 4's admin client and kafka-topics
//! --describe use): topics with their partitions' leader, epoch, replicas, ISR and offline
//! replicas, as Metadata reports them, paginated. No names = every topic. Topics are answered in
//! name order; at most `min(ResponsePartitionLimit, max.request.partition.size.limit)`
//! partitions per response, and `NextCursor` names where the next request starts. Eligible
//! leader replicas (KIP-966's ELR) are not kept: both lists are empty, as on a Kafka cluster
//! with ELR disabled (its default).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::handlers::metadata::{describe, TOPIC_OPERATIONS};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// Kafka's `max.request.partition.size.limit` default: partitions in one response at most.
pub const PARTITIONS_PER_RESPONSE_MAX: i32 = 2000;

pub async fn handle(
    ctx: &Ctx,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let shard = &ctx.shard;
    let mut names: Vec<String> = if request.topics.is_empty() {
        shard
            .topics
            .borrow()
            .all()
            .iter()
            .map(|m| m.name.clone())
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &request.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    if let Some(t) = &cursor_topic {
        // Kafka refuses a cursor outside the topics asked for.
        if !request.topics.is_empty() && !names.contains(t) {
            return DescribeTopicPartitionsResponse::default().with_topics(vec![
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_name(Some(TopicName(StrBytes::from_string(t.clone())))),
            ]);
        }
    }
    let limit = if request.response_partition_limit > 0 {
        request
            .response_partition_limit
            .min(PARTITIONS_PER_RESPONSE_MAX)
    } else {
        PARTITIONS_PER_RESPONSE_MAX
    };
    let view = shard.view.borrow().clone();
    let mut left = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names
        .into_iter()
        .filter(|n| cursor_topic.as_ref().is_none_or(|c| n >= c))
    {
        let first = if cursor_topic.as_deref() == Some(name.as_str()) {
            cursor_partition
        } else {
            0
        };
        let Some(meta) = shard.topics.borrow().get(&name).cloned() else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_name(Some(TopicName(StrBytes::from_string(name)))),
            );
            continue;
        };
        if left == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index(first),
            );
            break;
        }
        let described = describe(&meta, &view, 13, shard.replicates(&name));
        let mut partitions = Vec::new();
        for p in described.partitions.into_iter().skip(first as usize) {
            if left == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_partition_index(p.partition_index),
                );
                break;
            }
            left -= 1;
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(p.error_code)
                    .with_partition_index(p.partition_index)
                    .with_leader_id(p.leader_id)
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replica_nodes)
                    .with_isr_nodes(p.isr_nodes)
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(p.offline_replicas),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_topic_id(meta.id)
                .with_is_internal(crate::metadata::topic_is_internal(&meta.name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(TOPIC_OPERATIONS),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
