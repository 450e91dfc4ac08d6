//! DescribeGroups, versions 0–5: each group described by its shard (state names as Kafka's; an
//! unknown group is "Dead" with no error, as Kafka answers these versions). A consumer (KIP-848)
//! group is answered like an unknown one, as Kafka 4 does below v6: ConsumerGroupDescribe
//! describes it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub async fn handle(ctx: &Ctx, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let calls = request.groups.into_iter().map(|name| async move {
        let group = name.0.to_string();
        match group::call(
            &ctx.shard,
            &group,
            GroupCall::Describe {
                group: group.clone(),
            },
        )
        .await
        {
            Some(GroupReply::Describe(described)) => described,
            _ => DescribedGroup::default()
                .with_group_id(name)
                .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
        }
    });
    let groups = futures::future::join_all(calls).await;
    DescribeGroupsResponse::default().with_groups(groups)
}
