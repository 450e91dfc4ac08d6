//! Produce, versions 3–12 served (0–12 advertised, as Kafka 4 does; v0–2 are rejected).
//!
//! A request is split by owning shard. Appends happen before `dispatch` returns — locally, or by
//! handing each shard its parts over the mesh in request order — and the acknowledgements
//! (fsync-before-ack with group commit, for acks=1 and acks=-1) are awaited afterwards, so one
//! connection can have many produce requests in flight without reordering them.

use std::future::Future;
use std::pin::Pin;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::metadata::topic_is_internal;
use crate::runtime::LocalReceiver;
use crate::shard::mesh::{ProducePart, ProduceResult, Reply, Request};
use crate::shard::Shard;
use spool_protocol::batch;

pub const VERSIONS: VersionRange = VersionRange { min: 3, max: 12 };
pub const ADVERTISED: VersionRange = VersionRange { min: 0, max: 12 };

/// Partitions one Produce request may name.
pub const PARTITIONS_PER_REQUEST_MAX: usize = 100_000;

enum Slot {
    Done(ProduceResult),
    Local(usize),
    Remote { shard: usize, index: usize },
}

fn error(code: ResponseError) -> ProduceResult {
    ProduceResult {
        error_code: code.code(),
        base_offset: -1,
        log_append_time_ms: -1,
        log_start_offset: -1,
    }
}

pub async fn dispatch(
    ctx: &Ctx,
    request: ProduceRequest,
) -> Pin<Box<dyn Future<Output = ProduceResponse>>> {
    let shard = ctx.shard.clone();
    let acks = request.acks;
    let version = ctx.version();
    let total: usize = request
        .topic_data
        .iter()
        .map(|t| t.partition_data.len())
        .sum();
    let bad_acks = !matches!(acks, -1..=1);
    let too_many = total > PARTITIONS_PER_REQUEST_MAX;
    let has_transactional_id = request.transactional_id.is_some();
    // Set when a batch is transactional and the request names no transactional id.
    let mut anonymous_txn = false;

    // Sort parts by owner, remembering where each answer goes.
    let mut layout: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Slot)>)> = Vec::new();
    let mut local: Vec<ProducePart> = Vec::new();
    let mut remote: Vec<Vec<ProducePart>> = (0..shard.count).map(|_| Vec::new()).collect();
    // Kafka keys a produce request by topic-partition: a partition named twice is written once,
    // with the last data given for it, and answered once.
    let mut request = request;
    dedupe_partitions(&mut request);
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let (known, compacted) = shard
            .topics
            .borrow()
            .get(&name)
            .map(|m| {
                let compacted = match m.configs.get("cleanup.policy") {
                    Some(policy) => crate::shard::policy_compacts(policy),
                    None => shard.compacts_by_default(),
                };
                (Some(m.partitions), compacted)
            })
            .unwrap_or((None, false));
        let mut slots = Vec::with_capacity(topic.partition_data.len());
        for part in topic.partition_data {
            // One parse of the batch header serves every check below.
            let header = part
                .records
                .as_ref()
                .and_then(|r| batch::BatchHeader::parse(r).ok());
            anonymous_txn |= !has_transactional_id && header.is_some_and(|h| h.is_transactional());
            let slot = if bad_acks {
                Slot::Done(error(ResponseError::InvalidRequiredAcks))
            } else if too_many {
                Slot::Done(error(ResponseError::InvalidRequest))
            } else if !matches!(known, Some(n) if part.index >= 0 && part.index < n) {
                Slot::Done(error(ResponseError::UnknownTopicOrPartition))
            } else if topic_is_internal(&name) {
                Slot::Done(error(ResponseError::InvalidTopicException))
            } else if part
                .records
                .as_ref()
                .is_some_and(|r| batch::batches(r.clone()).count() != 1)
            {
                // Produce v3+ carries exactly one batch per partition; Kafka answers INVALID_RECORD.
                Slot::Done(error(ResponseError::InvalidRecord))
            } else if header
                .is_some_and(|h| h.is_control() || (h.has_producer_id() && h.base_sequence < 0))
            {
                // Control batches (transaction markers) and writes without a sequence come
                // only from coordinators.
                Slot::Done(error(ResponseError::InvalidRecord))
            } else if compacted
                && part.records.as_ref().is_some_and(|r| {
                    spool_protocol::compact::record_keys(r)
                        .is_ok_and(|records| records.iter().any(|k| k.key.is_none()))
                })
            {
                // Kafka's rule: a compacted topic cannot accept a record without a key.
                Slot::Done(error(ResponseError::InvalidRecord))
            } else if let Some(records) = part.records {
                let owner = shard.owner(&name, part.index);
                let p = ProducePart {
                    topic: name.clone(),
                    partition: part.index,
                    records,
                };
                if owner == shard.id {
                    local.push(p);
                    Slot::Local(local.len() - 1)
                } else {
                    remote[owner].push(p);
                    Slot::Remote {
                        shard: owner,
                        index: remote[owner].len() - 1,
                    }
                }
            } else {
                Slot::Done(error(ResponseError::CorruptMessage))
            };
            slots.push((part.index, slot));
        }
        layout.push((topic.name, slots));
    }
    if anonymous_txn {
        // Kafka's rule: transactional records need the request's transactional id, else the
        // whole request gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED and nothing is appended.
        local.clear();
        remote.iter_mut().for_each(Vec::clear);
        for (_, slots) in &mut layout {
            for (_, slot) in slots.iter_mut() {
                *slot = Slot::Done(error(ResponseError::TransactionalIdAuthorizationFailed));
            }
        }
    }

    let local_pending = shard.produce_local(acks, local);
    let mut remote_slots: Vec<Option<LocalReceiver<Reply>>> =
        (0..shard.count).map(|_| None).collect();
    for (to, parts) in remote.into_iter().enumerate() {
        if !parts.is_empty() {
            remote_slots[to] = Some(shard.mesh.send(to, Request::Produce { acks, parts }).await);
        }
    }

    Box::pin(async move {
        let local_results = Shard::finish_produce(local_pending).await;
        let shard = &shard;
        let mut remote_results: Vec<Vec<ProduceResult>> = Vec::with_capacity(remote_slots.len());
        for slot in remote_slots {
            let results = match slot {
                Some(rx) => match rx.recv().await {
                    Some(Reply::Produce(results)) => results,
                    _ => Vec::new(),
                },
                None => Vec::new(),
            };
            remote_results.push(results);
        }
        let mut leaders = std::collections::BTreeSet::new();
        let responses = layout
            .into_iter()
            .map(|(name, slots)| {
                let partitions = slots
                    .into_iter()
                    .map(|(index, slot)| {
                        let r = match slot {
                            Slot::Done(r) => r,
                            Slot::Local(i) => local_results[i],
                            Slot::Remote { shard, index } => remote_results[shard]
                                .get(index)
                                .copied()
                                .unwrap_or_else(|| error(ResponseError::RequestTimedOut)),
                        };
                        let mut response = PartitionProduceResponse::default()
                            .with_index(index)
                            .with_error_code(r.error_code)
                            .with_base_offset(r.base_offset)
                            .with_log_append_time_ms(r.log_append_time_ms);
                        // KIP-951: where the leader moved, say where to.
                        let moved = r.error_code == ResponseError::NotLeaderOrFollower.code()
                            || r.error_code == ResponseError::FencedLeaderEpoch.code();
                        if version >= 10 && moved {
                            if let Some((leader, epoch)) =
                                shard.current_leader(name.0.as_str(), index)
                            {
                                response = response.with_current_leader(
                                    LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(leader))
                                        .with_leader_epoch(epoch),
                                );
                                leaders.insert(leader);
                            }
                        }
                        if version >= 5 {
                            response.with_log_start_offset(r.log_start_offset)
                        } else {
                            response
                        }
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partitions)
            })
            .collect();
        let endpoints = shard
            .endpoints(leaders)
            .into_iter()
            .map(|(id, host, port, rack)| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(i32::from(port))
                    .with_rack(rack.map(StrBytes::from_string))
            })
            .collect();
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints)
    })
}

/// Keeps only the last entry of each topic-partition (Kafka's map semantics), and drops topics
/// left without partitions.
fn dedupe_partitions(request: &mut ProduceRequest) {
    let mut seen = std::collections::HashSet::new();
    for topic in request.topic_data.iter_mut().rev() {
        let mut kept = Vec::with_capacity(topic.partition_data.len());
        for part in topic.partition_data.drain(..).rev() {
            // StrBytes clones are reference-count bumps: no allocation per partition.
            if seen.insert((topic.name.0.clone(), part.index)) {
                kept.push(part);
            }
        }
        kept.reverse();
        topic.partition_data = kept;
    }
    request.topic_data.retain(|t| !t.partition_data.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn part(index: i32, data: &'static str) -> PartitionProduceData {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(Some(Bytes::from_static(data.as_bytes())))
    }

    fn topic(name: &'static str, parts: Vec<PartitionProduceData>) -> TopicProduceData {
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_partition_data(parts)
    }

    #[test]
    fn a_partition_named_twice_keeps_its_last_data() {
        let mut request = ProduceRequest::default().with_topic_data(vec![
            topic("a", vec![part(0, "a0-first"), part(1, "a1")]),
            topic("b", vec![part(0, "b0")]),
            topic("a", vec![part(0, "a0-last")]),
        ]);
        dedupe_partitions(&mut request);
        let flat: Vec<(String, i32, Bytes)> = request
            .topic_data
            .iter()
            .flat_map(|t| {
                t.partition_data.iter().map(|p| {
                    (
                        t.name.0.to_string(),
                        p.index,
                        p.records.clone().unwrap_or_default(),
                    )
                })
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                ("a".into(), 1, Bytes::from_static(b"a1")),
                ("b".into(), 0, Bytes::from_static(b"b0")),
                ("a".into(), 0, Bytes::from_static(b"a0-last")),
            ]
        );
    }
}
