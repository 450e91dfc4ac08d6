//! ConsumerGroupDescribe, versions 0–1 (KIP-848): each consumer group described by its shard
//! (epochs, assignor, members with current and target assignments). A classic or unknown group
//! gets GROUP_ID_NOT_FOUND, as Kafka answers (the admin client then falls back to
//! DescribeGroups for a classic one).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

pub async fn handle(
    ctx: &Ctx,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let calls = request.group_ids.into_iter().map(|name| async move {
        let group = name.0.to_string();
        let call = GroupCall::ConsumerDescribe {
            group: group.clone(),
        };
        match group::call(&ctx.shard, &group, call).await {
            Some(GroupReply::ConsumerDescribe(described)) => described,
            _ => DescribedGroup::default()
                .with_group_id(name)
                .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
        }
    });
    let groups = futures::future::join_all(calls).await;
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
