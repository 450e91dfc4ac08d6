//! AddPartitionsToTxn, versions 0–3 (the client's form): adds partitions to the producer's
//! transaction at its coordinator, which records them before it answers. A request naming a
//! partition that does not exist adds nothing: those partitions get UNKNOWN_TOPIC_OR_PARTITION
//! and the others OPERATION_NOT_ATTEMPTED, as Kafka answers. Versions 4–5 (the brokers' batched
//! form with verification, KIP-890) are not served yet.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::txn::{self, TxnCall, TxnReply};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 3 };

pub async fn handle(ctx: &Ctx, request: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let transactional_id = request.v3_and_below_transactional_id.0.to_string();
    let mut wanted: Vec<(String, i32)> = Vec::new();
    let mut unknown = false;
    for t in &request.v3_and_below_topics {
        let name = t.name.0.to_string();
        let count = ctx.shard.topics.borrow().get(&name).map(|m| m.partitions);
        for &p in &t.partitions {
            unknown |= !matches!(count, Some(n) if p >= 0 && p < n);
            wanted.push((name.clone(), p));
        }
    }
    let code_of = |topic: &str, partition: i32, code: i16| -> i16 {
        if !unknown {
            return code;
        }
        let known = ctx
            .shard
            .topics
            .borrow()
            .get(topic)
            .is_some_and(|m| partition >= 0 && partition < m.partitions);
        if known {
            ResponseError::OperationNotAttempted.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        }
    };
    let code = if unknown || wanted.is_empty() {
        0
    } else {
        let call = TxnCall::AddPartitions {
            transactional_id: transactional_id.clone(),
            producer_id: request.v3_and_below_producer_id.0,
            producer_epoch: request.v3_and_below_producer_epoch,
            partitions: wanted,
        };
        match txn::call(&ctx.shard, &transactional_id, call).await {
            Some(TxnReply::Code(code)) => code,
            _ => ResponseError::CoordinatorNotAvailable.code(),
        }
    };
    let results = request
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code_of(&name, p, code))
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}
