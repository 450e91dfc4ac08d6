//! CreatePartitions, versions 0–3: grows a topic's partition count (never shrinks), with
//! `validate_only` and optional explicit assignments of the new partitions; the controller
//! places them otherwise.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::handlers::create_topics::PARTITIONS_PER_TOPIC_MAX;
use crate::kafka::Ctx;
use crate::shard::mesh::AdminRequest;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

pub async fn handle(ctx: &Ctx, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut seen = std::collections::HashMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_insert(0usize) += 1;
    }
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        if seen.get(&name).copied().unwrap_or(0) > 1 {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Duplicate topic in request.",
                    ))),
            );
            continue;
        }
        if topic.count > PARTITIONS_PER_TOPIC_MAX {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidPartitions.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "A topic may have at most {PARTITIONS_PER_TOPIC_MAX} partitions."
                    )))),
            );
            continue;
        }
        if crate::metadata::topic_is_internal(&name) {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidTopicException.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "Cannot change the partition count of internal topic {name}."
                    )))),
            );
            continue;
        }
        let (code, message, _) = ctx
            .shard
            .admin_call(AdminRequest::CreatePartitions {
                name,
                count: topic.count,
                assignments: topic
                    .assignments
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect())
                    .collect(),
                validate_only: request.validate_only,
                timeout_ms: request.timeout_ms,
            })
            .await;
        results.push(
            result
                .with_error_code(code)
                .with_error_message(if code != 0 {
                    message.map(StrBytes::from_string)
                } else {
                    None
                }),
        );
    }
    CreatePartitionsResponse::default().with_results(results)
}
