//! DeleteTopics, versions 1–6: by name, or by topic id from v6. Deletion removes the topic from
//! every shard and deletes its partition directories before answering.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::shard::mesh::AdminRequest;

pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 6 };

pub async fn handle(ctx: &Ctx, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let timeout_ms = request.timeout_ms;
    let shard = &ctx.shard;
    let targets: Vec<(Option<String>, uuid::Uuid)> = if ctx.version() >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let resolved = match &name {
            Some(n) => shard.topics.borrow().get(n).map(|m| (m.name.clone(), m.id)),
            None => shard
                .topics
                .borrow()
                .get_by_id(&id)
                .map(|m| (m.name.clone(), m.id)),
        };
        let v6 = ctx.version() >= 6;
        let mut result = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(if v6 { id } else { uuid::Uuid::nil() });
        if v6 && name.is_some() && !id.is_nil() {
            responses.push(
                result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "You may not specify both topic name and topic id.",
                    ))),
            );
            continue;
        }
        match resolved {
            None => {
                let e = if name.is_some() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::UnknownTopicId
                };
                result = result.with_error_code(e.code());
            }
            Some((name, _)) if crate::metadata::topic_is_internal(&name) => {
                result = result
                    .with_error_code(ResponseError::InvalidTopicException.code())
                    .with_error_message(if ctx.version() >= 5 {
                        Some(StrBytes::from_string(format!(
                            "Cannot delete internal topic {name}."
                        )))
                    } else {
                        None
                    });
            }
            Some((name, topic_id)) => {
                let (code, message, _) = shard
                    .admin_call(AdminRequest::DeleteTopic {
                        name: name.clone(),
                        timeout_ms,
                    })
                    .await;
                result = result
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_topic_id(if v6 { topic_id } else { uuid::Uuid::nil() })
                    .with_error_code(code)
                    .with_error_message(if code != 0 && ctx.version() >= 5 {
                        message.map(StrBytes::from_string)
                    } else {
                        None
                    });
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
