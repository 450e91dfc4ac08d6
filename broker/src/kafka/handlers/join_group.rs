//! JoinGroup, versions 0–9, forwarded to the group's shard (`group::coordinator`), where the
//! classic protocol's state machine answers once the rebalance completes. KIP-394 from v4: a first
//! join without member id gets one with MEMBER_ID_REQUIRED.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 9 };

pub async fn handle(ctx: &Ctx, request: JoinGroupRequest) -> JoinGroupResponse {
    let version = ctx.version();
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.clone();
    let client_id = ctx
        .header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let call = GroupCall::Join {
        version,
        client_id,
        client_host: ctx.client_host.to_string(),
        request,
    };
    match group::call(&ctx.shard, &group_id, call).await {
        Some(GroupReply::Join(response)) => response,
        _ => {
            let response = JoinGroupResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_generation_id(-1)
                .with_member_id(member_id);
            if version < 7 {
                response.with_protocol_name(Some(StrBytes::from_static_str("")))
            } else {
                response
            }
        }
    }
}
