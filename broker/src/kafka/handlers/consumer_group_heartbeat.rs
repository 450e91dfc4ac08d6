//! ConsumerGroupHeartbeat, versions 0–1 (KIP-848), forwarded to the group's shard
//! (`group::consumer` holds the rules). v0: a joining member without id gets one from the
//! server; v1: the client generates it (an empty id is INVALID_REQUEST) and may subscribe by
//! regex.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

pub async fn handle(
    ctx: &Ctx,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    let client_id = ctx
        .header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let call = GroupCall::ConsumerHeartbeat {
        version: ctx.version(),
        client_id,
        client_host: ctx.client_host.to_string(),
        request: Box::new(request),
    };
    match group::call(&ctx.shard, &group_id, call).await {
        Some(GroupReply::ConsumerHeartbeat(response)) => response,
        _ => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}
