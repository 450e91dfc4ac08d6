//! WriteTxnMarkers, version 1 (Kafka 4.0's range): writes COMMIT or ABORT markers to
//! partitions this broker leads. Spool's coordinators send markers over the cluster RPC
//! (`txn::markers`); this API serves Kafka's admin client, whose `abortTransaction`
//! (kafka-transactions.sh abort) writes a hanging transaction's ABORT marker itself.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::txn::markers::{self, MarkerPart, TXN_MARKERS_PER_REQUEST_MAX};

pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 1 };

pub async fn handle(ctx: &Ctx, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut parts = Vec::new();
    for m in &request.markers {
        for t in &m.topics {
            for &p in &t.partition_indexes {
                parts.push(MarkerPart {
                    topic: t.name.0.to_string(),
                    partition: p,
                    producer_id: m.producer_id.0,
                    producer_epoch: m.producer_epoch,
                    coordinator_epoch: m.coordinator_epoch,
                    commit: m.transaction_result,
                    // v1 has no TransactionVersion: the lenient (version 0) epoch check.
                    transaction_version: 0,
                });
            }
        }
    }
    let codes = if parts.len() > TXN_MARKERS_PER_REQUEST_MAX {
        vec![ResponseError::InvalidRequest.code(); parts.len()]
    } else {
        let known: Vec<bool> = parts
            .iter()
            .map(|part| {
                ctx.shard
                    .topics
                    .borrow()
                    .get(&part.topic)
                    .is_some_and(|m| part.partition >= 0 && part.partition < m.partitions)
            })
            .collect();
        let here: Vec<MarkerPart> = parts
            .iter()
            .zip(&known)
            .filter(|(_, k)| **k)
            .map(|(p, _)| p.clone())
            .collect();
        let mut written = markers::write_here(&ctx.shard, here).await.into_iter();
        known
            .iter()
            .map(|&k| {
                if k {
                    written
                        .next()
                        .unwrap_or(ResponseError::UnknownServerError.code())
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                }
            })
            .collect()
    };
    let mut codes = codes.into_iter();
    let results = request
        .markers
        .iter()
        .map(|m| {
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(
                    m.topics
                        .iter()
                        .map(|t| {
                            WritableTxnMarkerTopicResult::default()
                                .with_name(t.name.clone())
                                .with_partitions(
                                    t.partition_indexes
                                        .iter()
                                        .map(|&p| {
                                            WritableTxnMarkerPartitionResult::default()
                                                .with_partition_index(p)
                                                .with_error_code(codes.next().unwrap_or(
                                                    ResponseError::UnknownServerError.code(),
                                                ))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(results)
}
