//! Transaction markers on their way from a coordinator to the partitions of a transaction.
//!
//! The coordinator groups a transaction's partitions by leader: this broker's go over the mesh
//! to their shards, another broker's in one `WriteTxnMarkers` cluster RPC per broker (the same
//! content as Kafka's API 27, which the Kafka listener also serves, for kafka-transactions'
//! abort). On the partition's shard the marker is a control batch appended as any write: through
//! the partition's Raft group (answered once committed) or to its log (once durable). A marker
//! on a `__consumer_offsets` partition also settles the producer's pending transactional offset
//! commits in the group coordinator there.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use rkyv::{Archive, Deserialize, Serialize};
use spool_protocol::control::{encode_txn_marker, TxnMarker};

use super::verify;
use crate::cluster::rpc::{ControllerRequest, ControllerResponse};
use crate::config::FlushMode;
use crate::shard::mesh::{Reply, Request};
use crate::shard::{now_ms, storage_error_code, Shard};

/// Markers one RPC or mesh message carries at most; more are sent in several.
pub const TXN_MARKERS_PER_REQUEST_MAX: usize = 10_000;
/// How long a peer may take to answer a markers RPC.
const MARKERS_RPC_TTL: Duration = Duration::from_secs(30);

/// One marker for one partition.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MarkerPart {
    pub topic: String,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    /// The transaction's transactions version (WriteTxnMarkers v2's field): from 2 the
    /// marker's epoch must exceed the partition's, as Kafka 4.2+ checks (KIP-1228).
    pub transaction_version: i8,
}

/// One transaction's end, as its markers carry it.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    pub transaction_version: i8,
}

/// Whether a marker's answer says a newer producer epoch or a newer coordinator passed the
/// partition: Kafka's coordinator then stops sending this transaction's markers and does not
/// complete it (the newer coordinator, or the fencing epoch's abort, finishes it).
pub fn fenced(error_code: i16) -> bool {
    use ResponseError as E;
    matches!(
        ResponseError::try_from_code(error_code),
        Some(E::InvalidProducerEpoch | E::ProducerFenced | E::TransactionCoordinatorFenced)
    )
}

/// Writes the markers of one transaction on `partitions`; answers each partition's error code.
pub async fn send(
    shard: &Rc<Shard>,
    marker: Marker,
    partitions: Vec<(String, i32)>,
) -> Vec<((String, i32), i16)> {
    let me = shard.config.node_id;
    let mut out = Vec::with_capacity(partitions.len());
    let mut by_leader: std::collections::BTreeMap<i32, Vec<MarkerPart>> = Default::default();
    for (topic, partition) in partitions {
        let known = shard
            .topics
            .borrow()
            .get(&topic)
            .is_some_and(|m| partition >= 0 && partition < m.partitions);
        if !known {
            // Deleted (as this coordinator's metadata has it): nothing to mark, as Kafka skips
            // partitions of deleted topics. Any other failure is retried.
            out.push(((topic, partition), 0));
            continue;
        }
        let leader = if shard.replicates(&topic) {
            shard.current_leader(&topic, partition).map(|(l, _)| l)
        } else {
            Some(me)
        };
        let Some(leader) = leader else {
            out.push((
                (topic, partition),
                ResponseError::NotLeaderOrFollower.code(),
            ));
            continue;
        };
        by_leader.entry(leader).or_default().push(MarkerPart {
            topic,
            partition,
            producer_id: marker.producer_id,
            producer_epoch: marker.producer_epoch,
            coordinator_epoch: marker.coordinator_epoch,
            commit: marker.commit,
            transaction_version: marker.transaction_version,
        });
    }
    for (leader, parts) in by_leader {
        for chunk in parts.chunks(TXN_MARKERS_PER_REQUEST_MAX) {
            let codes = if leader == me {
                write_here(shard, chunk.to_vec()).await
            } else {
                send_to(shard, leader, chunk.to_vec()).await
            };
            for (part, error_code) in chunk.iter().zip(codes) {
                out.push(((part.topic.clone(), part.partition), error_code));
            }
        }
    }
    out
}

/// Writes markers for partitions this broker leads, each on its shard; one code per part.
pub async fn write_here(shard: &Rc<Shard>, parts: Vec<MarkerPart>) -> Vec<i16> {
    let mut codes = vec![ResponseError::UnknownServerError.code(); parts.len()];
    let mut per_shard: Vec<(Vec<usize>, Vec<MarkerPart>)> =
        (0..shard.count).map(|_| (Vec::new(), Vec::new())).collect();
    for (i, part) in parts.into_iter().enumerate() {
        if part.partition < 0 {
            codes[i] = ResponseError::UnknownTopicOrPartition.code();
            continue;
        }
        let owner = shard.owner(&part.topic, part.partition);
        per_shard[owner].0.push(i);
        per_shard[owner].1.push(part);
    }
    let calls = per_shard
        .into_iter()
        .enumerate()
        .filter(|(_, (indexes, _))| !indexes.is_empty())
        .map(|(to, (indexes, parts))| async move {
            let reply = shard.call(to, Request::TxnMarkers(parts)).await;
            (indexes, reply)
        });
    for (indexes, reply) in futures::future::join_all(calls).await {
        let answers = match reply {
            Some(Reply::TxnMarkers(answers)) => answers,
            _ => vec![ResponseError::NotLeaderOrFollower.code(); indexes.len()],
        };
        for (i, code) in indexes.into_iter().zip(answers) {
            codes[i] = code;
        }
    }
    codes
}

/// On the partitions' shard: appends each marker and waits until it is committed (durable on a
/// single node). A marker on `__consumer_offsets` then settles the producer's pending offsets.
pub async fn write_local(shard: &Rc<Shard>, parts: Vec<MarkerPart>) -> Vec<i16> {
    let waits: Vec<_> = parts
        .iter()
        .map(|part| async move { write_one(shard, part).await })
        .collect();
    futures::future::join_all(waits).await
}

async fn write_one(shard: &Rc<Shard>, part: &MarkerPart) -> i16 {
    let Some(p) = shard.partition(&part.topic, part.partition) else {
        // Not here (yet, or any more): the coordinator retries at the leader it learns next.
        return shard.missing_partition_code(&part.topic, part.partition);
    };
    let marker = TxnMarker {
        commit: part.commit,
        coordinator_epoch: part.coordinator_epoch,
    };
    if part.transaction_version >= 2 {
        // KIP-1228: under transactions version 2 every end bumps the epoch, so a marker no
        // newer than the partition's epoch is a late or repeated one. Repeated with nothing
        // open since (a coordinator's retry): done, nothing appended (KAFKA-19999). Else it
        // would end the producer's next transaction: refused.
        if let Some((epoch, open)) = p.log.producer_txn(part.producer_id) {
            if part.producer_epoch < epoch || (part.producer_epoch == epoch && open) {
                return ResponseError::InvalidProducerEpoch.code();
            }
            if part.producer_epoch == epoch {
                return 0;
            }
        }
    }
    let batch = encode_txn_marker(part.producer_id, part.producer_epoch, marker, now_ms());
    let replicated = p.replicated();
    let (result, offset) = if let Some(group) = &replicated {
        if group.leadership().is_none() {
            return ResponseError::NotLeaderOrFollower.code();
        }
        let lag_max = Duration::from_millis(shard.config.replica_lag_time_max_ms);
        // Before the proposal: a batch verified earlier must not follow the marker in.
        verify::marker_started(&p, part.producer_id);
        let answer = group.propose(batch, -1, 1, lag_max).recv().await;
        verify::marker_finished(&p, part.producer_id);
        match answer {
            Some(r) => (r.error_code, r.base_offset),
            None => (ResponseError::NotEnoughReplicas.code(), -1),
        }
    } else {
        verify::marker_started(&p, part.producer_id);
        match p.log.append(batch, 0, now_ms()) {
            Ok(info) => {
                shard.mark_dirty(&p);
                let code = if shard.config.flush_mode == FlushMode::Sync {
                    p.wait_durable(info.last_offset)
                        .recv()
                        .await
                        .unwrap_or(ResponseError::KafkaStorageError.code())
                } else {
                    p.wake_fetchers();
                    0
                };
                (code, info.base_offset)
            }
            Err(e) => (storage_error_code(&e), -1),
        }
    };
    if result == 0 && part.topic == crate::group::OFFSETS_TOPIC {
        shard.groups.marker_written(
            part.partition,
            replicated.is_some(),
            offset,
            part.producer_id,
            part.commit,
        );
    }
    result
}

/// Sends markers to broker `node` over the cluster RPC; one code per part.
async fn send_to(shard: &Rc<Shard>, node: i32, parts: Vec<MarkerPart>) -> Vec<i16> {
    let count = parts.len();
    let request = ControllerRequest::WriteTxnMarkers { markers: parts };
    match shard.call_peer(node, &request, MARKERS_RPC_TTL).await {
        Ok(ControllerResponse::Codes(codes)) if codes.len() == count => codes,
        other => {
            tracing::debug!(node, "markers not answered: {other:?}");
            vec![ResponseError::NotLeaderOrFollower.code(); count]
        }
    }
}

/// Shard 0's RPC listener: serves another broker's `WriteTxnMarkers`; None for every other
/// message.
pub async fn serve_rpc(shard: &Rc<Shard>, payload: &[u8]) -> Option<Vec<u8>> {
    let Ok(ControllerRequest::WriteTxnMarkers { markers }) = ControllerRequest::decode(payload)
    else {
        return None;
    };
    let codes = if markers.len() > TXN_MARKERS_PER_REQUEST_MAX {
        vec![ResponseError::InvalidRequest.code(); markers.len()]
    } else {
        write_here(shard, markers).await
    };
    Some(
        ControllerResponse::Codes(codes)
            .encode()
            .unwrap_or_default(),
    )
}
