//! CreateTopics, versions 2–7: validates names, partition counts and configs here, then sends
//! the topic to the active controller (through shard 0), which checks the replication factor
//! against the live brokers and places the partitions (or takes explicit assignments).
//! `validate_only` checks without creating. From v5 the result carries the topic's configs
//! with their sources.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::metadata::{topic_name_valid, TopicMeta};
use crate::shard::mesh::AdminRequest;
use crate::topic_config;

pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 7 };

/// Partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 100_000;

pub async fn handle(ctx: &Ctx, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let shard = &ctx.shard;
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let fail = |e: ResponseError, msg: String| {
            result
                .clone()
                .with_error_code(e.code())
                .with_error_message(Some(StrBytes::from_string(msg)))
        };
        if duplicates.contains(&name) {
            results.push(fail(ResponseError::InvalidRequest, format!("Create topics request from client contains multiple entries for the topic {name}.")));
            continue;
        }
        if !topic_name_valid(&name) {
            results.push(fail(
                ResponseError::InvalidTopicException,
                format!("Topic name \"{name}\" is illegal."),
            ));
            continue;
        }
        if !topic.assignments.is_empty()
            && (topic.num_partitions != -1 || topic.replication_factor != -1)
        {
            results.push(fail(
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
            ));
            continue;
        }
        let partitions = if !topic.assignments.is_empty() {
            topic.assignments.len() as i32
        } else if topic.num_partitions == -1 {
            shard.config.num_partitions
        } else {
            topic.num_partitions
        };
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            results.push(fail(
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}."),
            ));
            continue;
        }
        let replication = if !topic.assignments.is_empty() {
            topic.assignments[0].broker_ids.len() as i16
        } else if topic.replication_factor == -1 {
            shard.config.default_replication_factor
        } else {
            topic.replication_factor
        };
        if replication < 1 && topic.assignments.is_empty() {
            results.push(fail(
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut bad_config = None;
        for c in &topic.configs {
            let Some(value) = &c.value else { continue };
            if let Err(msg) = topic_config::validate(&c.name, value) {
                bad_config = Some(msg);
                break;
            }
            configs.insert(c.name.to_string(), value.to_string());
        }
        if let Some(msg) = bad_config {
            results.push(fail(ResponseError::InvalidConfig, msg));
            continue;
        }
        let meta = TopicMeta {
            name: name.clone(),
            id: uuid::Uuid::new_v4(),
            partitions,
            replication_factor: replication,
            configs,
            replicas: topic
                .assignments
                .iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect(),
            leaders: Vec::new(),
            isr: Vec::new(),
            targets: Vec::new(),
        };
        let described = describe_configs(ctx, &meta);
        let (code, message, _) = shard
            .admin_call(AdminRequest::CreateTopic {
                meta: meta.clone(),
                validate_only: request.validate_only,
                timeout_ms: request.timeout_ms,
            })
            .await;
        if code != 0 {
            let e = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
            results.push(fail(e, message.unwrap_or_default()));
            continue;
        }
        let id = if request.validate_only || ctx.version() < 7 {
            uuid::Uuid::nil()
        } else {
            meta.id
        };
        let result = result.with_topic_id(id);
        results.push(if ctx.version() >= 5 {
            result
                .with_num_partitions(partitions)
                .with_replication_factor(replication)
                .with_configs(Some(described))
        } else {
            result
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn describe_configs(ctx: &Ctx, meta: &TopicMeta) -> Vec<CreatableTopicConfigs> {
    topic_config::TOPIC_CONFIGS
        .iter()
        .map(|spec| {
            let (value, source) = topic_config::resolve(
                spec,
                &meta.configs,
                &ctx.shard.config,
                &ctx.shard.dynamic.borrow(),
            );
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(spec.name))
                .with_value(Some(StrBytes::from_string(value)))
                .with_config_source(source)
        })
        .collect()
}
