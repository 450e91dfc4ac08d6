//! EndTxn, versions 0–4 (transactions version 1): commits or aborts the producer's transaction.
//! Answered once the coordinator has committed its decision (`PrepareCommit`/`PrepareAbort`);
//! the markers follow, and until they are all written a new request for the id gets
//! CONCURRENT_TRANSACTIONS. Version 5 (KIP-890's epoch bump per transaction) is not served yet.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::txn::{self, TxnCall, TxnReply};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

pub async fn handle(ctx: &Ctx, request: EndTxnRequest) -> EndTxnResponse {
    let transactional_id = request.transactional_id.0.to_string();
    let call = TxnCall::EndTxn {
        transactional_id: transactional_id.clone(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        commit: request.committed,
    };
    let code = match txn::call(&ctx.shard, &transactional_id, call).await {
        Some(TxnReply::Code(code)) => code,
        _ => ResponseError::CoordinatorNotAvailable.code(),
    };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}
