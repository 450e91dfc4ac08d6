//! ElectLeaders (API 43), versions 0–2 (`kafka-leader-election.sh`, `Admin.electLeaders`).
//!
//! Any broker answers (Kafka's brokers forward it to the active controller; here the move is
//! made by each partition's current Raft leader, reached over the cluster RPC, see
//! `replication::leadership`).
//!
//! - **PREFERRED** (type 0; v0 has no type and means it): per partition, as KRaft's
//!   `electLeader`: UNKNOWN_TOPIC_OR_PARTITION for a partition that does not exist;
//!   ELECTION_NOT_NEEDED when the preferred replica (the first) leads; PREFERRED_LEADER_NOT_AVAILABLE
//!   when it is not live, not in sync with the leader, or the hand-over did not complete in
//!   time; success once this broker's metadata names it as leader.
//! - **UNCLEAN** (type 1): Kafka elects an out-of-sync live replica of a leaderless partition,
//!   accepting the loss of what it lacks. A Raft group cannot: a replica whose log is behind a
//!   majority's is refused every vote, and forcing it would break the rule that an acknowledged
//!   (committed) record survives. A group with a majority of live replicas elects an up-to-date
//!   one by itself; one without a majority cannot elect anyone. So a partition that has a live
//!   leader answers ELECTION_NOT_NEEDED (as Kafka) and a leaderless one
//!   ELIGIBLE_LEADERS_NOT_AVAILABLE, Kafka's answer when no replica may be elected.
//! - `topic_partitions` null means every partition; then, as KRaft, partitions answered
//!   ELECTION_NOT_NEEDED are left out of the response.
//! - An unknown election type is INVALID_REQUEST for the request and every partition (Kafka
//!   rejects the whole request).
//!
//! The request's `timeout_ms` bounds the whole request (at most [`ELECT_TIMEOUT_MAX`]); a
//! request naming more than [`ELECTIONS_PER_REQUEST_MAX`] partitions is refused with
//! INVALID_REQUEST before anything moves.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::replication::leadership::{self, TRANSFERS_IN_FLIGHT_MAX};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// The longest a request may wait for its elections (Kafka's default `timeout_ms` is 60 s).
pub const ELECT_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// Partitions one request may name (KRaft bounds the records of one user operation at
/// 10,000).
pub const ELECTIONS_PER_REQUEST_MAX: usize = 10_000;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(ctx: &Ctx, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let version = ctx.version();
    let election_type = if version >= 1 {
        request.election_type
    } else {
        PREFERRED
    };
    let all = request.topic_partitions.is_none();
    // (topic, partitions) in request order; null: every partition of every topic.
    let wanted: Vec<(TopicName, Vec<i32>)> = match request.topic_partitions {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic, t.partitions))
            .collect(),
        None => ctx
            .shard
            .topics
            .borrow()
            .all()
            .iter()
            .map(|meta| {
                (
                    TopicName(StrBytes::from_string(meta.name.clone())),
                    (0..meta.partitions).collect(),
                )
            })
            .collect(),
    };
    let count: usize = wanted.iter().map(|(_, p)| p.len()).sum();
    let refuse = |code: i16, message: String| {
        let results = wanted
            .iter()
            .map(|(topic, partitions)| {
                ReplicaElectionResult::default()
                    .with_topic(topic.clone())
                    .with_partition_result(
                        partitions
                            .iter()
                            .map(|p| {
                                PartitionResult::default()
                                    .with_partition_id(*p)
                                    .with_error_code(code)
                                    .with_error_message(Some(StrBytes::from_string(
                                        message.clone(),
                                    )))
                            })
                            .collect(),
                    )
            })
            .collect();
        let response = ElectLeadersResponse::default().with_replica_election_results(results);
        if version >= 1 {
            response.with_error_code(code)
        } else {
            response
        }
    };
    if election_type != PREFERRED && election_type != UNCLEAN {
        return refuse(
            ResponseError::InvalidRequest.code(),
            format!("Unknown election type {election_type}"),
        );
    }
    if count > ELECTIONS_PER_REQUEST_MAX {
        return refuse(
            ResponseError::InvalidRequest.code(),
            format!(
                "A request may elect leaders of at most {ELECTIONS_PER_REQUEST_MAX} partitions."
            ),
        );
    }
    let timeout = match request.timeout_ms {
        t if t > 0 => Duration::from_millis(t as u64).min(ELECT_TIMEOUT_MAX),
        _ => ELECT_TIMEOUT_MAX,
    };
    let deadline = Instant::now() + timeout;
    let jobs: Vec<(usize, String, i32)> = wanted
        .iter()
        .enumerate()
        .flat_map(|(t, (topic, partitions))| {
            partitions.iter().map(move |p| (t, topic.0.to_string(), *p))
        })
        .collect();
    let shard = &ctx.shard;
    let outcomes: Vec<(usize, i32, i16, Option<String>)> = futures::stream::iter(jobs)
        .map(|(t, topic, p)| async move {
            let (code, message) = if election_type == PREFERRED {
                leadership::elect_preferred(shard, &topic, p, deadline).await
            } else {
                unclean(shard, &topic, p)
            };
            (t, p, code, message)
        })
        .buffered(TRANSFERS_IN_FLIGHT_MAX)
        .collect()
        .await;
    let mut results: Vec<ReplicaElectionResult> = wanted
        .iter()
        .map(|(topic, _)| ReplicaElectionResult::default().with_topic(topic.clone()))
        .collect();
    for (t, p, code, message) in outcomes {
        if all && code == ResponseError::ElectionNotNeeded.code() {
            continue;
        }
        results[t].partition_result.push(
            PartitionResult::default()
                .with_partition_id(p)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// UNCLEAN election of one partition (see the module comment).
fn unclean(shard: &crate::shard::Shard, topic: &str, partition: i32) -> (i16, Option<String>) {
    let exists = shard
        .topics
        .borrow()
        .get(topic)
        .is_some_and(|meta| (0..meta.partitions).contains(&partition));
    if !exists {
        return (
            ResponseError::UnknownTopicOrPartition.code(),
            Some(format!("No such partition as {topic}-{partition}")),
        );
    }
    let has_leader = if !shard.replicates(topic) {
        let replicas = shard
            .topics
            .borrow()
            .get(topic)
            .and_then(|meta| meta.replicas.get(partition as usize).cloned())
            .unwrap_or_default();
        shard.view.borrow().leader(&replicas).is_some()
    } else {
        shard.current_leader(topic, partition).is_some()
    };
    if has_leader {
        (ResponseError::ElectionNotNeeded.code(), None)
    } else {
        (
            ResponseError::EligibleLeadersNotAvailable.code(),
            Some(format!(
                "{topic}-{partition} has no leader and a Raft group elects only a replica holding every committed record; it elects one by itself once a majority of its replicas is live"
            )),
        )
    }
}
