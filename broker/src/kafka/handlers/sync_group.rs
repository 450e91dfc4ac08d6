//! SyncGroup, versions 0–5, forwarded to the group's shard: the leader hands in the assignment,
//! every member gets its own.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub async fn handle(ctx: &Ctx, request: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = request.group_id.0.to_string();
    let call = GroupCall::Sync {
        version: ctx.version(),
        request,
    };
    match group::call(&ctx.shard, &group_id, call).await {
        Some(GroupReply::Sync(response)) => response,
        _ => SyncGroupResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}
