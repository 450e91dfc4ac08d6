//! DescribeQuorum (API 55), versions 0–2: the metadata quorum (`__cluster_metadata`, partition
//! 0) as its leader sees it, for `kafka-metadata-quorum.sh describe --status/--replication`.
//! Any broker answers: it asks the quorum leader over the cluster RPC, as Kafka's brokers
//! forward this request to the active controller. No leader within the request's time is
//! REQUEST_TIMED_OUT, as Kafka's forwarding answers.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::cluster::rpc::ReplicaProgress;
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub async fn handle(ctx: &Ctx, request: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let version = ctx.version();
    let asks_metadata_log = request.topics.len() == 1
        && request.topics[0].topic_name.0.as_str() == METADATA_TOPIC
        && request.topics[0].partitions.len() == 1
        && request.topics[0].partitions[0].partition_index == 0;
    if !asks_metadata_log {
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        PartitionData::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    })
                    .collect();
                TopicData::default()
                    .with_topic_name(t.topic_name)
                    .with_partitions(partitions)
            })
            .collect();
        return DescribeQuorumResponse::default().with_topics(topics);
    }
    let quorum = match ctx.shard.describe_quorum().await {
        Ok(q) => q,
        Err(e) => {
            let response = DescribeQuorumResponse::default().with_error_code(e.code());
            return if version >= 2 {
                response.with_error_message(Some(StrBytes::from_string(e.to_string())))
            } else {
                response
            };
        }
    };
    let state = |r: &ReplicaProgress| {
        let s = ReplicaState::default()
            .with_replica_id(BrokerId(r.id))
            .with_log_end_offset(r.log_end_offset);
        if version >= 1 {
            s.with_last_fetch_timestamp(r.last_fetch_ms)
                .with_last_caught_up_timestamp(r.last_caught_up_ms)
        } else {
            s
        }
    };
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(quorum.leader))
        .with_leader_epoch(quorum.epoch)
        .with_high_watermark(quorum.high_watermark)
        .with_current_voters(quorum.voters.iter().map(state).collect())
        .with_observers(quorum.observers.iter().map(state).collect());
    let response = DescribeQuorumResponse::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
        .with_partitions(vec![partition])]);
    if version < 2 {
        return response;
    }
    let nodes = quorum
        .endpoints
        .iter()
        .map(|(id, host, port)| {
            Node::default()
                .with_node_id(BrokerId(*id))
                .with_listeners(vec![Listener::default()
                    .with_name(StrBytes::from_string(
                        ctx.shard.config.controller_listener_name(),
                    ))
                    .with_host(StrBytes::from_string(host.clone()))
                    .with_port(*port)])
        })
        .collect();
    response.with_nodes(nodes)
}
