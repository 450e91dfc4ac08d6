//! EndTxn, versions 0–5: commits or aborts the producer's transaction. Answered once the
//! coordinator has committed its decision (`PrepareCommit`/`PrepareAbort`); the markers follow,
//! and until they are all written a new request for the id gets CONCURRENT_TRANSACTIONS.
//!
//! v5+ is transactions version 2 (KIP-890): every end bumps the producer epoch (the markers
//! carry the bumped one) and the answer names the producer id and epoch the client goes on
//! with. v0–4 keep the epoch.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::txn::{self, TxnCall, TxnReply};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub async fn handle(ctx: &Ctx, request: EndTxnRequest) -> EndTxnResponse {
    let transactional_id = request.transactional_id.0.to_string();
    let call = TxnCall::EndTxn {
        transactional_id: transactional_id.clone(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        commit: request.committed,
        tv2: ctx.version() >= 5,
    };
    let (code, producer_id, producer_epoch) =
        match txn::call(&ctx.shard, &transactional_id, call).await {
            Some(TxnReply::Producer {
                error_code,
                producer_id,
                producer_epoch,
            }) => (error_code, producer_id, producer_epoch),
            _ => (ResponseError::CoordinatorNotAvailable.code(), -1, -1),
        };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
}
