//! OffsetForLeaderEpoch, versions 2–4: the end offset of a leader epoch, from each log's epoch
//! cache. Consumers use it to detect log truncation after a leader change.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::shard::mesh::{EpochAnswer, EpochQuery, Reply, Request};

pub const VERSIONS: VersionRange = VersionRange { min: 2, max: 4 };

pub async fn handle(
    ctx: &Ctx,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let shard = &ctx.shard;
    let mut queries = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            queries.push(EpochQuery {
                topic: t.topic.0.to_string(),
                partition: p.partition,
                leader_epoch: p.leader_epoch,
                current_leader_epoch: p.current_leader_epoch,
            });
        }
    }
    let fail = |e: ResponseError| EpochAnswer {
        error_code: e.code(),
        leader_epoch: -1,
        end_offset: -1,
    };
    let mut answers: Vec<EpochAnswer> =
        vec![fail(ResponseError::UnknownTopicOrPartition); queries.len()];
    let mut per_shard: Vec<(Vec<usize>, Vec<EpochQuery>)> =
        (0..shard.count).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, q) in queries.into_iter().enumerate() {
        let known = shard.topics.borrow().get(&q.topic).map(|m| m.partitions);
        if !matches!(known, Some(n) if q.partition >= 0 && q.partition < n) {
            continue;
        }
        // The partition's shard checks `current_leader_epoch` against the epoch it leads in.
        let owner = shard.owner(&q.topic, q.partition);
        per_shard[owner].0.push(i);
        per_shard[owner].1.push(q);
    }
    let calls = per_shard
        .into_iter()
        .enumerate()
        .filter(|(_, (i, _))| !i.is_empty())
        .map(|(to, (indexes, parts))| async move {
            (
                indexes,
                ctx.shard.call(to, Request::EpochEndOffsets { parts }).await,
            )
        });
    for (indexes, reply) in futures::future::join_all(calls).await {
        if let Some(Reply::EpochEndOffsets(results)) = reply {
            for (i, a) in indexes.into_iter().zip(results) {
                answers[i] = a;
            }
        }
    }
    let mut answers = answers.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let a = answers.next().expect("one answer per partition");
                    EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_error_code(a.error_code)
                        .with_leader_epoch(a.leader_epoch)
                        .with_end_offset(a.end_offset)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
