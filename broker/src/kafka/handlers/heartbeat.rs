//! Heartbeat, versions 0–4, forwarded to the group's shard: keeps the member's session alive and
//! tells it when to rejoin (REBALANCE_IN_PROGRESS).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

pub async fn handle(ctx: &Ctx, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    match group::call(&ctx.shard, &group_id, GroupCall::Heartbeat { request }).await {
        Some(GroupReply::Heartbeat(response)) => response,
        _ => HeartbeatResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}
