//! LeaveGroup, versions 0–5, forwarded to the group's shard; batched members (and static members
//! leaving by instance id) from v3.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub async fn handle(ctx: &Ctx, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let group_id = request.group_id.0.to_string();
    let call = GroupCall::Leave {
        version: ctx.version(),
        request,
    };
    match group::call(&ctx.shard, &group_id, call).await {
        Some(GroupReply::Leave(response)) => response,
        _ => LeaveGroupResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}
