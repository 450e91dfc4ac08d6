//! ListGroups, versions 0–5: every shard lists the groups it owns. States filter from v4, types
//! filter from v5: "classic", or "consumer" for KIP-848 groups (protocol type "consumer", states
//! Empty / Assigning / Reconciling / Stable, as Kafka).

use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub async fn handle(ctx: &Ctx, request: ListGroupsRequest) -> ListGroupsResponse {
    let version = ctx.version();
    let lower = |v: &[kafka_protocol::protocol::StrBytes]| -> Vec<String> {
        v.iter().map(|s| s.to_lowercase()).collect()
    };
    let states = if version >= 4 {
        lower(&request.states_filter)
    } else {
        Vec::new()
    };
    let types = if version >= 5 {
        lower(&request.types_filter)
    } else {
        Vec::new()
    };
    let calls = (0..ctx.shard.count).map(|to| {
        let call = GroupCall::List {
            states: states.clone(),
            types: types.clone(),
        };
        group::call_shard(&ctx.shard, to, call)
    });
    let mut groups = Vec::new();
    for reply in futures::future::join_all(calls).await {
        if let Some(GroupReply::List(listed)) = reply {
            groups.extend(listed);
        }
    }
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default().with_groups(groups)
}
