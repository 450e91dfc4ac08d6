//! DescribeTransactions, version 0: each transactional id's state, timeout, start time,
//! producer id and epoch and partitions, from its coordinator (NOT_COORDINATOR from a broker
//! that is not; TRANSACTIONAL_ID_NOT_FOUND for an unknown id).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::txn::{self, DescribedTxn, TxnCall, TxnReply};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 0 };

pub async fn handle(
    ctx: &Ctx,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let id = id.0.to_string();
        let call = TxnCall::Describe {
            transactional_id: id.clone(),
        };
        let described = match txn::call(&ctx.shard, &id, call).await {
            Some(TxnReply::Describe(d)) => d,
            _ => DescribedTxn {
                error_code: ResponseError::CoordinatorNotAvailable.code(),
                transactional_id: id,
                state: "",
                timeout_ms: 0,
                start_ms: -1,
                producer_id: -1,
                producer_epoch: -1,
                partitions: Vec::new(),
            },
        };
        states.push(state(described));
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

fn state(d: DescribedTxn) -> TransactionState {
    let mut topics: Vec<TopicData> = Vec::new();
    for (topic, partition) in d.partitions {
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == topic => t.partitions.push(partition),
            _ => topics.push(
                TopicData::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    TransactionState::default()
        .with_error_code(d.error_code)
        .with_transactional_id(TransactionalId(StrBytes::from_string(d.transactional_id)))
        .with_transaction_state(StrBytes::from_static_str(d.state))
        .with_transaction_timeout_ms(d.timeout_ms)
        .with_transaction_start_time_ms(d.start_ms)
        .with_producer_id(ProducerId(d.producer_id))
        .with_producer_epoch(d.producer_epoch)
        .with_topics(topics)
}
