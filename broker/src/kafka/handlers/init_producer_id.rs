//! InitProducerId, versions 0–5. Without a transactional id (idempotent producers): a producer
//! id never issued before (from this broker's block of the metadata log's ids), epoch 0 — also
//! when the client sends its current id and epoch (KIP-360), as Kafka does. With one: served by
//! the id's transaction coordinator (`txn/`): a new id gets a producer id at epoch 0, a known
//! one the next epoch (fencing the previous instance, whose open transaction is aborted first:
//! CONCURRENT_TRANSACTIONS until then), `transaction.timeout.ms` bounded by
//! `transaction.max.timeout.ms`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::shard::mesh::AdminRequest;
use crate::txn::{self, TxnCall, TxnReply};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

fn answer(error_code: i16, producer_id: i64, producer_epoch: i16) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error_code)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
}

pub async fn handle(ctx: &Ctx, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let fail = |code: i16| answer(code, -1, -1);
    if let Some(transactional_id) = request.transactional_id {
        let transactional_id = transactional_id.0.to_string();
        let (producer_id, producer_epoch) = if ctx.version() >= 3 {
            (request.producer_id.0, request.producer_epoch)
        } else {
            (-1, -1)
        };
        let call = TxnCall::InitProducerId {
            transactional_id: transactional_id.clone(),
            timeout_ms: request.transaction_timeout_ms,
            producer_id,
            producer_epoch,
        };
        return match txn::call(&ctx.shard, &transactional_id, call).await {
            Some(TxnReply::Producer {
                error_code,
                producer_id,
                producer_epoch,
            }) => answer(error_code, producer_id, producer_epoch),
            _ => fail(ResponseError::CoordinatorNotAvailable.code()),
        };
    }
    // Without a transactional id Kafka always hands out a fresh producer id, also when the client
    // sends its current id and epoch (KIP-360): bumping an id it never checked would let any
    // client fence another producer.
    let (code, _, id) = ctx.shard.admin_call(AdminRequest::AllocateProducerId).await;
    if code != 0 {
        return fail(code);
    }
    answer(0, id, 0)
}
