//! FindCoordinator, versions 0–6: a group's coordinator is the leader of its
//! `__consumer_offsets` partition (`abs(hashCode) % partitions`; in a multi-node cluster the
//! partition's Raft leader as the metadata names it, none yet = COORDINATOR_NOT_AVAILABLE), on
//! whichever broker that is; on that broker the group lives on the partition's shard. With no offsets topic yet, the
//! first lookup asks the controller to create it (spread over the brokers live then) and
//! answers COORDINATOR_NOT_AVAILABLE, as Kafka does; the client asks again. A transactional
//! id's coordinator is the leader of its `__transaction_state` partition, found and created the
//! same way. Batched keys from v4.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::group::OFFSETS_TOPIC;
use crate::kafka::Ctx;
use crate::runtime;
use crate::shard::routing;
use crate::txn::TXN_TOPIC;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 6 };

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(ctx: &Ctx, request: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let version = ctx.version();
    let keys = if version >= 4 {
        request.coordinator_keys
    } else {
        vec![request.key]
    };
    if request.key_type == KEY_TYPE_GROUP && ctx.shard.topics.borrow().get(OFFSETS_TOPIC).is_none()
    {
        let shard = ctx.shard.clone();
        runtime::spawn_detached(async move {
            crate::group::ensure_offsets_topic(&shard).await;
        });
    }
    if request.key_type == KEY_TYPE_TRANSACTION
        && ctx.shard.topics.borrow().get(TXN_TOPIC).is_none()
    {
        let shard = ctx.shard.clone();
        runtime::spawn_detached(async move {
            crate::txn::ensure_txn_topic(&shard).await;
        });
    }
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| coordinator(ctx, key, request.key_type))
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = coordinators.into_iter().next().expect("one key before v4");
    let response = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        response.with_error_message(c.error_message)
    } else {
        response
    }
}

fn coordinator(ctx: &Ctx, key: StrBytes, key_type: i8) -> Coordinator {
    let fail = |e: ResponseError, key: StrBytes| {
        Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::from_static_str(""))
            .with_port(-1)
            .with_error_code(e.code())
            .with_error_message(Some(StrBytes::from_string(e.to_string())))
    };
    let topic = match key_type {
        KEY_TYPE_GROUP => OFFSETS_TOPIC,
        KEY_TYPE_TRANSACTION => TXN_TOPIC,
        _ => return fail(ResponseError::InvalidRequest, key),
    };
    match key_type {
        _ if key.is_empty() => fail(ResponseError::InvalidRequest, key),
        _ => {
            let leader = {
                let topics = ctx.shard.topics.borrow();
                topics.get(topic).and_then(|meta| {
                    let index = routing::group_partition(&key, meta.partitions);
                    if ctx.shard.replicates(topic) {
                        // The partition's Raft leader, as last reported to the controller.
                        let (leader, _epoch) = ctx.shard.current_leader(topic, index)?;
                        return ctx.shard.view.borrow().broker(leader).cloned();
                    }
                    let replicas = meta.replicas.get(index as usize)?;
                    ctx.shard.view.borrow().leader(replicas).cloned()
                })
            };
            match leader {
                Some(b) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host))
                    .with_port(i32::from(b.port)),
                None => fail(ResponseError::CoordinatorNotAvailable, key),
            }
        }
    }
}
