//! Fetch, versions 4–17: reads with long polling (`max_wait_ms`, `min_bytes`), response and
//! per-partition byte limits, and topic ids from v13. Incremental fetch sessions (KIP-227) are
//! declined by answering session id 0, which every client handles by sending full fetches.
//! READ_COMMITTED reads stop at the last stable offset and carry the aborted transactions of
//! the range read (the client drops their records, Kafka's contract).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::runtime;
use crate::shard::mesh::{FetchPart, FetchResult, Reply, Request};

pub const VERSIONS: VersionRange = VersionRange { min: 4, max: 17 };

/// Longest long poll honoured, whatever the client asks.
pub const MAX_WAIT_MS_MAX: u64 = 60_000;

struct Wanted {
    topic: Option<String>,
    partition: i32,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    read_committed: bool,
}

/// A Fetch response with its records kept out of it: `records[t][p]` are the batches of
/// partition `p` of topic `t`, written from their own buffers by
/// `spool_protocol::fetch_frame` rather than copied into the response.
pub struct FetchReply {
    pub response: FetchResponse,
    pub records: Vec<Vec<Vec<Bytes>>>,
}

pub async fn handle(ctx: &Ctx, request: FetchRequest) -> FetchReply {
    let shard = &ctx.shard;
    let by_id = ctx.version() >= 13;
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut topic_order: Vec<(Option<String>, uuid::Uuid, usize)> = Vec::new();
    for topic in &request.topics {
        let name = if by_id {
            shard
                .topics
                .borrow()
                .get_by_id(&topic.topic_id)
                .map(|m| m.name.clone())
        } else {
            Some(topic.topic.0.to_string())
        };
        topic_order.push((name.clone(), topic.topic_id, topic.partitions.len()));
        for p in &topic.partitions {
            wanted.push(Wanted {
                topic: name.clone(),
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: if ctx.version() >= 9 {
                    p.current_leader_epoch
                } else {
                    -1
                },
                read_committed: request.isolation_level == 1,
            });
        }
    }

    let max_wait = Duration::from_millis((request.max_wait_ms.max(0) as u64).min(MAX_WAIT_MS_MAX));
    let min_bytes = request.min_bytes.max(0) as usize;
    let response_max_bytes = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let deadline = Instant::now() + max_wait;

    let mut results = read_all(ctx, &wanted, response_max_bytes).await;
    loop {
        let bytes: usize = results
            .iter()
            .map(|r| r.batches.iter().map(Bytes::len).sum::<usize>())
            .sum();
        let any_error = results.iter().any(|r| r.error_code != 0);
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || any_error || now >= deadline || wanted.is_empty() {
            break;
        }
        wait_for_data(ctx, &wanted, &results, deadline - now).await;
        results = read_all(ctx, &wanted, response_max_bytes).await;
    }

    // Trim to the response limit in request order; the first non-empty partition always keeps
    // its data so a consumer can make progress past a batch larger than the limit (KIP-74).
    let mut budget = response_max_bytes;
    let mut first = true;
    for r in results.iter_mut() {
        let size: usize = r.batches.iter().map(Bytes::len).sum();
        if size == 0 {
            continue;
        }
        if first || size <= budget {
            budget = budget.saturating_sub(size);
            first = false;
        } else {
            r.batches.clear();
        }
    }

    let mut results = results.into_iter();
    let mut wanted_iter = wanted.iter();
    let mut responses = Vec::with_capacity(topic_order.len());
    let mut leaders = std::collections::BTreeSet::new();
    let mut records = Vec::with_capacity(topic_order.len());
    for (name, topic_id, count) in topic_order {
        let mut partitions = Vec::with_capacity(count);
        let mut topic_records = Vec::with_capacity(count);
        for _ in 0..count {
            let w = wanted_iter.next().expect("one wanted entry per partition");
            let r = results.next().expect("one result per partition");
            let mut data = PartitionData::default()
                .with_partition_index(w.partition)
                .with_error_code(r.error_code)
                .with_high_watermark(r.high_watermark)
                .with_last_stable_offset(r.last_stable_offset)
                .with_aborted_transactions(r.aborted.map(|list| {
                    list.into_iter()
                        .map(|(producer_id, first_offset)| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(producer_id))
                                .with_first_offset(first_offset)
                        })
                        .collect()
                }))
                .with_records(None);
            // KIP-951 (v12+ carries CurrentLeader, v16+ the leaders' endpoints), with either
            // error that sends the client to a newer leader.
            let moved = r.error_code == ResponseError::NotLeaderOrFollower.code()
                || r.error_code == ResponseError::FencedLeaderEpoch.code();
            if ctx.version() >= 12 && moved {
                if let Some((leader, epoch)) = w
                    .topic
                    .as_deref()
                    .and_then(|t| ctx.shard.current_leader(t, w.partition))
                {
                    data = data.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(leader))
                            .with_leader_epoch(epoch),
                    );
                    leaders.insert(leader);
                }
            }
            topic_records.push(r.batches);
            partitions.push(if ctx.version() >= 5 {
                data.with_log_start_offset(r.log_start_offset)
            } else {
                data
            });
        }
        records.push(topic_records);
        let topic = FetchableTopicResponse::default().with_partitions(partitions);
        responses.push(if by_id {
            topic.with_topic_id(topic_id)
        } else {
            topic.with_topic(TopicName(StrBytes::from_string(name.unwrap_or_default())))
        });
    }
    let endpoints = if ctx.version() >= 16 {
        ctx.shard
            .endpoints(leaders)
            .into_iter()
            .map(|(id, host, port, rack)| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(i32::from(port))
                    .with_rack(rack.map(StrBytes::from_string))
            })
            .collect()
    } else {
        Vec::new()
    };
    FetchReply {
        response: FetchResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints),
        records,
    }
}

/// Reads every wanted partition once, each on its owning shard, results in request order.
/// Each shard spends at most the response budget, so one poll pins at most
/// shards × `max_bytes` before the trim below.
async fn read_all(ctx: &Ctx, wanted: &[Wanted], budget: usize) -> Vec<FetchResult> {
    let shard = &ctx.shard;
    let unknown_code = if ctx.version() >= 13 {
        ResponseError::UnknownTopicId.code()
    } else {
        ResponseError::UnknownTopicOrPartition.code()
    };
    let mut results: Vec<FetchResult> = wanted
        .iter()
        .map(|_| FetchResult {
            error_code: unknown_code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            batches: Vec::new(),
            aborted: None,
        })
        .collect();
    let mut per_shard: Vec<Vec<(usize, FetchPart)>> =
        (0..shard.count).map(|_| Vec::new()).collect();
    for (i, w) in wanted.iter().enumerate() {
        let Some(topic) = &w.topic else { continue };
        if w.partition < 0 {
            continue;
        }
        let owner = shard.owner(topic, w.partition);
        per_shard[owner].push((
            i,
            FetchPart {
                topic: topic.clone(),
                partition: w.partition,
                fetch_offset: w.fetch_offset,
                max_bytes: w.max_bytes,
                current_leader_epoch: w.current_leader_epoch,
                read_committed: w.read_committed,
            },
        ));
    }
    let calls = per_shard
        .into_iter()
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(to, parts)| async move {
            let (indexes, parts): (Vec<usize>, Vec<FetchPart>) = parts.into_iter().unzip();
            let reply = ctx.shard.call(to, Request::Fetch { parts, budget }).await;
            (indexes, reply)
        });
    for (indexes, reply) in futures::future::join_all(calls).await {
        if let Some(Reply::Fetch(answers)) = reply {
            for (i, answer) in indexes.into_iter().zip(answers) {
                results[i] = answer;
            }
        }
    }
    results
}

/// Parks on every involved shard until one of them has new data, or the time is up.
async fn wait_for_data(ctx: &Ctx, wanted: &[Wanted], results: &[FetchResult], remaining: Duration) {
    let shard = &ctx.shard;
    let mut per_shard: Vec<Vec<(String, i32, i64)>> =
        (0..shard.count).map(|_| Vec::new()).collect();
    for (w, r) in wanted.iter().zip(results) {
        let Some(topic) = &w.topic else { continue };
        if r.error_code != 0 || w.partition < 0 {
            continue;
        }
        per_shard[shard.owner(topic, w.partition)].push((
            topic.clone(),
            w.partition,
            // Wake on a move of the high watermark past what this poll already saw, so a
            // response held back by min_bytes waits instead of spinning.
            w.fetch_offset.max(r.high_watermark),
        ));
    }
    let wait_ms = remaining.as_millis() as u64;
    let waits: Vec<_> = per_shard
        .into_iter()
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(to, parts)| Box::pin(ctx.shard.call(to, Request::WaitForData { parts, wait_ms })))
        .collect();
    if waits.is_empty() {
        runtime::sleep(remaining).await;
        return;
    }
    let _ = runtime::timeout(remaining, futures::future::select_all(waits)).await;
}
