//! AddPartitionsToTxn, versions 0–5.
//!
//! - v0–3 (the client's form): adds partitions to the producer's transaction at its
//!   coordinator, which records them before it answers.
//! - v4–5 (the brokers' form, KIP-890): many transactions in one request; each one either
//!   only checked (`VerifyOnly`: is each partition in the ongoing transaction? no state
//!   change) or added. Spool's own leaders ask over the cluster RPC (`txn::verify`); this is
//!   the same service on the Kafka port. v5 only says the sender knows TRANSACTION_ABORTABLE.
//!
//! A transaction naming a partition that does not exist adds nothing: those partitions get
//! UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED, as Kafka answers.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::txn::{self, TxnCall, TxnReply};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

/// Transactions one v4+ request may carry (Kafka has no limit; its brokers batch what one
/// send cycle queued).
pub const TRANSACTIONS_PER_REQUEST_MAX: usize = 10_000;

pub async fn handle(ctx: &Ctx, request: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    if ctx.version() < 4 {
        let results = one_transaction(
            ctx,
            request.v3_and_below_transactional_id.0.to_string(),
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            false,
            &request.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    if request.transactions.len() > TRANSACTIONS_PER_REQUEST_MAX {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    }
    let answers = futures::future::join_all(request.transactions.iter().map(|t| async move {
        let results = one_transaction(
            ctx,
            t.transactional_id.0.to_string(),
            t.producer_id.0,
            t.producer_epoch,
            t.verify_only,
            &t.topics,
        )
        .await;
        AddPartitionsToTxnResult::default()
            .with_transactional_id(t.transactional_id.clone())
            .with_topic_results(results)
    }))
    .await;
    AddPartitionsToTxnResponse::default().with_results_by_transaction(answers)
}

/// Adds (or with `verify_only` checks) one transaction's partitions; the per-partition results.
async fn one_transaction(
    ctx: &Ctx,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let known = |topic: &str, partition: i32| {
        ctx.shard
            .topics
            .borrow()
            .get(topic)
            .is_some_and(|m| partition >= 0 && partition < m.partitions)
    };
    let wanted: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.name.0.to_string(), p)))
        .collect();
    let unknown = wanted.iter().any(|(t, p)| !known(t, *p));
    let codes: Vec<i16> = if unknown {
        wanted
            .iter()
            .map(|(t, p)| {
                if known(t, *p) {
                    ResponseError::OperationNotAttempted.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                }
            })
            .collect()
    } else if wanted.is_empty() {
        Vec::new()
    } else if transactional_id.is_empty() {
        vec![ResponseError::InvalidRequest.code(); wanted.len()]
    } else {
        let count = wanted.len();
        let call = if verify_only {
            TxnCall::Verify {
                transactional_id: transactional_id.clone(),
                producer_id,
                producer_epoch,
                partitions: wanted,
            }
        } else {
            TxnCall::AddPartitions {
                transactional_id: transactional_id.clone(),
                producer_id,
                producer_epoch,
                partitions: wanted,
                // The brokers' form (v4+) adds for a transactions-version-2 client.
                tv2: ctx.version() >= 4,
            }
        };
        match txn::call(&ctx.shard, &transactional_id, call).await {
            Some(TxnReply::Code(code)) => vec![code; count],
            Some(TxnReply::Codes(codes)) if codes.len() == count => codes,
            _ => vec![ResponseError::CoordinatorNotAvailable.code(); count],
        }
    };
    // Kafka's rule for v0–1 clients, which do not know PRODUCER_FENCED.
    let fenced = ResponseError::ProducerFenced.code();
    let old_client = ctx.version() < 2;
    let mut codes = codes.into_iter().map(|code| {
        if old_client && code == fenced {
            ResponseError::InvalidProducerEpoch.code()
        } else {
            code
        }
    });
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(codes.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect()
}
