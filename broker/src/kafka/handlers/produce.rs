//! Produce, versions 3–12 served (0–12 advertised, as Kafka 4 does; v0–2 are rejected).
//!
//! Transactional batches are verified with their coordinator first (KIP-890, `txn::verify`):
//! v3–v11 only check that the partition is in the transaction (not: INVALID_TXN_STATE, or
//! TRANSACTION_ABORTABLE from v11); v12+ has the coordinator add it.
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
use crate::txn::verify::{self, VerifyBegin};
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

/// A part that passed the request's checks, on its way to its shard.
struct Accepted {
    /// (topic, partition) position in the response layout.
    at: (usize, usize),
    /// Its shard; `usize::MAX` once refused by verification.
    owner: usize,
    part: ProducePart,
    /// Set for a transactional batch: what verification needs to know.
    txn: Option<VerifyBegin>,
}

fn error(code: ResponseError) -> ProduceResult {
    error_code(code.code())
}

fn error_code(code: i16) -> ProduceResult {
    ProduceResult {
        error_code: code,
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
    let request_txn_id = request
        .transactional_id
        .as_ref()
        .map(|id| id.0.to_string())
        .filter(|id| !id.is_empty());
    let has_transactional_id = request.transactional_id.is_some();
    let mut accepted: Vec<Accepted> = Vec::new();
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
                let txn = header
                    .filter(|h| has_transactional_id && h.is_transactional())
                    .map(|h| VerifyBegin {
                        topic: name.clone(),
                        partition: part.index,
                        producer_id: h.producer_id,
                        producer_epoch: h.producer_epoch,
                        base_sequence: h.base_sequence,
                    });
                accepted.push(Accepted {
                    at: (layout.len(), slots.len()),
                    owner,
                    part: ProducePart {
                        topic: name.clone(),
                        partition: part.index,
                        records,
                        txn_token: 0,
                    },
                    txn,
                });
                // Replaced below, once verification has had its say.
                Slot::Done(error(ResponseError::UnknownServerError))
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
        accepted.clear();
        for (_, slots) in &mut layout {
            for (_, slot) in slots.iter_mut() {
                *slot = Slot::Done(error(ResponseError::TransactionalIdAuthorizationFailed));
            }
        }
    }
    // KIP-890: a transactional batch that would start its producer's transaction on a
    // partition is first checked with (v12+: added by) the coordinator. Awaited before any
    // append, so this connection's next request waits its turn and order is kept.
    let verifying: Vec<usize> = (0..accepted.len())
        .filter(|&i| accepted[i].txn.is_some())
        .collect();
    if let (false, Some(transactional_id)) = (verifying.is_empty(), &request_txn_id) {
        let parts: Vec<VerifyBegin> = verifying
            .iter()
            .filter_map(|&i| accepted[i].txn.clone())
            .collect();
        let owners: Vec<usize> = verifying.iter().map(|&i| accepted[i].owner).collect();
        let answers =
            verify::verify_produce(&shard, version, transactional_id, &parts, &owners).await;
        for (i, answer) in verifying.into_iter().zip(answers) {
            match answer {
                Ok(token) => accepted[i].part.txn_token = token,
                Err(code) => {
                    let (t, s) = accepted[i].at;
                    layout[t].1[s].1 = Slot::Done(error_code(code));
                    accepted[i].txn = None;
                    accepted[i].owner = usize::MAX;
                }
            }
        }
    }
    for a in accepted {
        if a.owner == usize::MAX {
            continue;
        }
        let (t, s) = a.at;
        layout[t].1[s].1 = if a.owner == shard.id {
            local.push(a.part);
            Slot::Local(local.len() - 1)
        } else {
            remote[a.owner].push(a.part);
            Slot::Remote {
                shard: a.owner,
                index: remote[a.owner].len() - 1,
            }
        };
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
