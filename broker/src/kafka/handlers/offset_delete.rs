//! OffsetDelete, version 0, forwarded to the group's shard: GROUP_SUBSCRIBED_TO_TOPIC for topics a
//! member of a "consumer" group subscribes to, NON_EMPTY_GROUP for other non-empty groups.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

pub async fn handle(ctx: &Ctx, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    match group::call(&ctx.shard, &group_id, GroupCall::OffsetDelete { request }).await {
        Some(GroupReply::OffsetDelete(response)) => response,
        _ => OffsetDeleteResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}
