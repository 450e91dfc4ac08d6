//! ListPartitionReassignments (API 46), version 0 (`kafka-reassign-partitions.sh --verify`/
//! `--list`, `Admin.listPartitionReassignments`).
//!
//! Answered from this broker's copy of the metadata image (it applied every reassignment it
//! accepted before answering it): each partition with a target replica set shows, as KRaft,
//! `replicas` = the target followed by the replicas it removes, `adding_replicas` and
//! `removing_replicas`. Partitions with no reassignment in progress, and topics or partitions
//! that do not exist, are left out (KRaft skips unknown topics too). `topics` null lists every
//! partition; at most [`LISTED_PARTITIONS_MAX`] partitions are listed.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

/// Partitions one answer lists at most (an answer is one frame held in memory).
pub const LISTED_PARTITIONS_MAX: usize = 100_000;

fn ids(v: impl IntoIterator<Item = i32>) -> Vec<BrokerId> {
    v.into_iter().map(BrokerId).collect()
}

pub async fn handle(
    ctx: &Ctx,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let table = ctx.shard.topics.borrow();
    let wanted: Vec<(String, Option<Vec<i32>>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), Some(t.partition_indexes)))
            .collect(),
        None => table.all().iter().map(|m| (m.name.clone(), None)).collect(),
    };
    let mut listed = 0usize;
    let mut topics = Vec::new();
    for (name, indexes) in wanted {
        let Some(meta) = table.get(&name) else {
            continue;
        };
        let indexes = indexes.unwrap_or_else(|| (0..meta.partitions).collect());
        let mut partitions = Vec::new();
        for index in indexes {
            let Ok(i) = usize::try_from(index) else {
                continue;
            };
            let (Some(replicas), Some(Some(target))) = (meta.replicas.get(i), meta.targets.get(i))
            else {
                continue;
            };
            if listed >= LISTED_PARTITIONS_MAX {
                break;
            }
            listed += 1;
            let adding = target.iter().filter(|r| !replicas.contains(r)).copied();
            let removing: Vec<i32> = replicas
                .iter()
                .filter(|r| !target.contains(r))
                .copied()
                .collect();
            partitions.push(
                OngoingPartitionReassignment::default()
                    .with_partition_index(index)
                    .with_replicas(ids(target.iter().copied().chain(removing.iter().copied())))
                    .with_adding_replicas(ids(adding))
                    .with_removing_replicas(ids(removing)),
            );
        }
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
