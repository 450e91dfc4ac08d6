//! Metadata, versions 0–13: the live (unfenced) brokers, topics and partitions with their
//! leaders. Unknown topics are created when `auto.create.topics.enable` and the request allow
//! it (Kafka's defaults: both true). `controller_id` is the quorum leader when it is a live
//! broker, else this broker: any broker forwards admin writes to the quorum leader, which is
//! why Kafka's brokers name a random live broker there.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::cluster::view::ClusterView;
use crate::kafka::Ctx;
use crate::metadata::{topic_name_valid, TopicMeta};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 13 };

pub async fn handle(ctx: &Ctx, request: MetadataRequest) -> MetadataResponse {
    let shard = &ctx.shard;
    let node_id = shard.config.node_id;
    let view = shard.view.borrow().clone();
    // v0 has no null topic list: an empty list means all topics there.
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match request.topics {
        Some(t) if !(ctx.version() == 0 && t.is_empty()) => Some(
            t.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
        _ => None,
    };
    let auto_create = shard.config.auto_create_topics_enable
        && (ctx.version() < 4 || request.allow_auto_topic_creation);

    let mut topics = Vec::new();
    match wanted {
        None => {
            let all = shard.topics.borrow().all();
            for meta in all {
                topics.push(describe(
                    &meta,
                    &view,
                    ctx.version(),
                    ctx.shard.replicates(&meta.name),
                ));
            }
        }
        Some(list) => {
            for (name, id) in list {
                let name = match name {
                    Some(n) => n,
                    None => match shard.topics.borrow().get_by_id(&id) {
                        Some(meta) => meta.name.clone(),
                        None => {
                            topics.push(
                                MetadataResponseTopic::default()
                                    .with_error_code(ResponseError::UnknownTopicId.code())
                                    .with_topic_id(id),
                            );
                            // Only v10+ can name topics by id, and v10+ carries topic_id.
                            continue;
                        }
                    },
                };
                topics.push(topic_entry(ctx, &name, auto_create).await);
            }
        }
    }
    // Without an authorizer Kafka grants every operation a resource type supports, and says so
    // when asked (kafka-python's admin always asks, and cannot read Kafka's "not asked" value).
    if ctx.version() >= 8 && request.include_topic_authorized_operations {
        for topic in topics.iter_mut().filter(|t| t.error_code == 0) {
            topic.topic_authorized_operations = TOPIC_OPERATIONS;
        }
    }
    let brokers = view
        .live()
        .map(|b| {
            let broker = MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port));
            if ctx.version() >= 1 {
                broker.with_rack(b.rack.clone().map(StrBytes::from_string))
            } else {
                broker
            }
        })
        .collect();
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    let controller = view
        .controller
        .filter(|c| view.live().any(|b| b.id == *c))
        .unwrap_or(node_id);
    let response = if ctx.version() >= 1 {
        response.with_controller_id(BrokerId(controller))
    } else {
        response
    };
    let response =
        if (8..=10).contains(&ctx.version()) && request.include_cluster_authorized_operations {
            response.with_cluster_authorized_operations(CLUSTER_OPERATIONS)
        } else {
            response
        };
    if ctx.version() >= 2 {
        response.with_cluster_id(Some(StrBytes::from_string(view.cluster_id.clone())))
    } else {
        response
    }
}

/// Kafka's `AclOperation` codes as bits: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7,
/// DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
const fn operations(codes: &[u32]) -> i32 {
    let mut bits = 0i32;
    let mut i = 0;
    while i < codes.len() {
        bits |= 1 << codes[i];
        i += 1;
    }
    bits
}

/// What a topic supports (Kafka's `AclEntry.supportedOperations(TOPIC)`).
pub const TOPIC_OPERATIONS: i32 = operations(&[3, 4, 5, 6, 7, 8, 10, 11]);

/// What the cluster supports (Kafka's `AclEntry.supportedOperations(CLUSTER)`).
pub const CLUSTER_OPERATIONS: i32 = operations(&[5, 7, 8, 9, 10, 11, 12]);

async fn topic_entry(ctx: &Ctx, name: &str, auto_create: bool) -> MetadataResponseTopic {
    let version = ctx.version();
    let shard = &ctx.shard;
    let named = || {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
    };
    if !topic_name_valid(name) {
        return named().with_error_code(ResponseError::InvalidTopicException.code());
    }
    let existing = shard.topics.borrow().get(name).cloned();
    if let Some(meta) = existing {
        return describe(&meta, &shard.view.borrow(), version, shard.replicates(name));
    }
    if !auto_create {
        return named().with_error_code(ResponseError::UnknownTopicOrPartition.code());
    }
    let code = shard.auto_create(name).await;
    if code != 0 {
        return named().with_error_code(code);
    }
    // Kafka answers the creating request with LEADER_NOT_AVAILABLE; the client asks again.
    match shard.topics.borrow().get(name) {
        Some(meta) => describe(meta, &shard.view.borrow(), version, shard.replicates(name)),
        None => named().with_error_code(ResponseError::LeaderNotAvailable.code()),
    }
}

/// A replicated partition's leader is its Raft group's, as last reported to the controller
/// (none until the first report: LEADER_NOT_AVAILABLE, and the client asks again); an
/// unreplicated one's is its first replica.
pub(crate) fn describe(
    meta: &TopicMeta,
    view: &ClusterView,
    version: i16,
    replicated: bool,
) -> MetadataResponseTopic {
    let partitions = (0..meta.partitions)
        .map(|index| {
            let current = meta
                .replicas
                .get(index as usize)
                .cloned()
                .unwrap_or_default();
            // While a reassignment runs, Kafka lists the target replicas followed by the
            // current ones leaving (its `PartitionReassignmentReplicas` merge).
            let replicas = match meta.targets.get(index as usize) {
                Some(Some(target)) => target
                    .iter()
                    .chain(current.iter().filter(|r| !target.contains(r)))
                    .copied()
                    .collect(),
                _ => current,
            };
            let (leader, epoch) = if replicated {
                match meta.leaders.get(index as usize) {
                    Some(&(leader, epoch)) if leader >= 0 && view.is_live(leader) => {
                        (Some(leader), epoch)
                    }
                    _ => (None, -1),
                }
            } else {
                (view.leader(&replicas).map(|b| b.id), 0)
            };
            let offline: Vec<BrokerId> = replicas
                .iter()
                .filter(|r| view.broker(**r).is_none_or(|b| b.fenced))
                .map(|r| BrokerId(*r))
                .collect();
            // A replicated partition's ISR is its leader's last report (Kafka's controller
            // drops a fenced broker from every ISR at once, so an offline one is left out
            // here too); an unreplicated partition's is its live replicas.
            let reported = meta
                .isr
                .get(index as usize)
                .filter(|isr| replicated && !isr.is_empty());
            let in_sync: Vec<BrokerId> = reported
                .unwrap_or(&replicas)
                .iter()
                .filter(|r| !offline.contains(&BrokerId(**r)))
                .map(|r| BrokerId(*r))
                .collect();
            let partition = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(BrokerId(leader.unwrap_or(-1)))
                .with_leader_epoch(if version >= 7 { epoch } else { -1 })
                .with_replica_nodes(replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(in_sync);
            let partition = if version >= 5 {
                partition.with_offline_replicas(offline)
            } else {
                partition
            };
            if leader.is_none() {
                partition.with_error_code(ResponseError::LeaderNotAvailable.code())
            } else {
                partition
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(meta.name.clone()))))
        .with_topic_id(if version >= 10 {
            meta.id
        } else {
            uuid::Uuid::nil()
        })
        .with_partitions(partitions)
        .with_is_internal(crate::metadata::topic_is_internal(&meta.name))
}
