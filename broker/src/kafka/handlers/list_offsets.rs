//! ListOffsets, versions 1–10: earliest (-2), latest (-1), max timestamp (-3, v7+), earliest
//! local (-4) and latest tiered (-5, answered -1: nothing is tiered), and by timestamp. With
//! isolation READ_COMMITTED (v2+) every answer stops at the last stable offset, as Kafka's.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::shard::mesh::{OffsetAnswer, OffsetQuery, Reply, Request};

pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 10 };

pub async fn handle(ctx: &Ctx, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let shard = &ctx.shard;
    let version = ctx.version();
    let mut queries: Vec<OffsetQuery> = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            queries.push(OffsetQuery {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                timestamp: p.timestamp,
                current_leader_epoch: if version >= 4 {
                    p.current_leader_epoch
                } else {
                    -1
                },
                read_committed: version >= 2 && request.isolation_level == 1,
            });
        }
    }
    let unknown = OffsetAnswer {
        error_code: ResponseError::UnknownTopicOrPartition.code(),
        timestamp: -1,
        offset: -1,
        leader_epoch: -1,
    };
    let mut answers = vec![unknown; queries.len()];
    // A partition named twice gets INVALID_REQUEST in every place, as Kafka answers.
    let mut seen = std::collections::HashMap::new();
    for q in &queries {
        *seen.entry((q.topic.clone(), q.partition)).or_insert(0usize) += 1;
    }
    let mut per_shard: Vec<(Vec<usize>, Vec<OffsetQuery>)> =
        (0..shard.count).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, q) in queries.into_iter().enumerate() {
        if seen
            .get(&(q.topic.clone(), q.partition))
            .copied()
            .unwrap_or(0)
            > 1
        {
            answers[i].error_code = ResponseError::InvalidRequest.code();
            continue;
        }
        let known = shard.topics.borrow().get(&q.topic).map(|m| m.partitions);
        if !matches!(known, Some(n) if q.partition >= 0 && q.partition < n) {
            continue;
        }
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
                ctx.shard.call(to, Request::ListOffsets { parts }).await,
            )
        });
    for (indexes, reply) in futures::future::join_all(calls).await {
        if let Some(Reply::ListOffsets(results)) = reply {
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
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(a.error_code)
                        .with_timestamp(a.timestamp)
                        .with_offset(a.offset);
                    if version >= 4 {
                        r.with_leader_epoch(a.leader_epoch)
                    } else {
                        r
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
