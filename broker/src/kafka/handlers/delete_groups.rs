//! DeleteGroups, versions 0–2: each group is deleted on its shard, only when it has no members
//! (NON_EMPTY_GROUP otherwise, GROUP_ID_NOT_FOUND when unknown); its offsets are tombstoned.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

pub async fn handle(ctx: &Ctx, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let calls = request.groups_names.into_iter().map(|name| async move {
        let group = name.0.to_string();
        let code = match group::call(
            &ctx.shard,
            &group,
            GroupCall::Delete {
                group: group.clone(),
            },
        )
        .await
        {
            Some(GroupReply::Delete(code)) => code,
            _ => ResponseError::CoordinatorNotAvailable.code(),
        };
        DeletableGroupResult::default()
            .with_group_id(name)
            .with_error_code(code)
    });
    let results = futures::future::join_all(calls).await;
    DeleteGroupsResponse::default().with_results(results)
}
