//! InitProducerId, versions 0–5, for idempotent producers: a producer id never issued before
//! (allocated on shard 0, reserved on disk in blocks), epoch 0 — also when the client sends its
//! current id and epoch (KIP-360), as Kafka does without a transactional id.
//! Transactional ids are refused until transactions exist.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::Ctx;
use crate::shard::mesh::AdminRequest;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 5 };

pub async fn handle(ctx: &Ctx, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let fail = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return fail(ResponseError::TransactionalIdAuthorizationFailed);
    }
    // Without a transactional id Kafka always hands out a fresh producer id, also when the client
    // sends its current id and epoch (KIP-360): bumping an id it never checked would let any
    // client fence another producer.
    let (code, _, id) = ctx.shard.admin_call(AdminRequest::AllocateProducerId).await;
    if code != 0 {
        return fail(
            ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError),
        );
    }
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(0)
}
