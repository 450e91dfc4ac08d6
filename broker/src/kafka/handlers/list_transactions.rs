//! ListTransactions, versions 0–1: the transactions this broker coordinates (every shard),
//! filtered by state, producer id and (v1) how long they have been open. Unknown state names
//! are reported back, as Kafka does.

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::txn::{self, TxnCall, TxnReply};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

const STATES: [&str; 8] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

pub async fn handle(ctx: &Ctx, request: ListTransactionsRequest) -> ListTransactionsResponse {
    let states: Vec<String> = request
        .state_filters
        .iter()
        .map(|s| s.to_string())
        .collect();
    let unknown: Vec<StrBytes> = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let producer_ids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let duration_ms = if ctx.version() >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let mut listed = Vec::new();
    for to in 0..ctx.shard.count {
        let call = TxnCall::List {
            states: states.clone(),
            producer_ids: producer_ids.clone(),
            duration_ms,
        };
        if let Some(TxnReply::List(found)) = txn::call_shard(&ctx.shard, to, call).await {
            listed.extend(found);
        }
    }
    listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    let transaction_states = listed
        .into_iter()
        .map(|d| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(d.transactional_id)))
                .with_producer_id(ProducerId(d.producer_id))
                .with_transaction_state(StrBytes::from_static_str(d.state))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(transaction_states)
}
