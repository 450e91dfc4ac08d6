//! AddOffsetsToTxn, versions 0–4: adds the group's `__consumer_offsets` partition to the
//! producer's transaction (its TxnOffsetCommit records land there, and the marker must too).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::protocol::VersionRange;

use crate::group::{self, OFFSETS_TOPIC};
use crate::kafka::Ctx;
use crate::shard::routing;
use crate::txn::{self, TxnCall, TxnReply};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

pub async fn handle(ctx: &Ctx, request: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let transactional_id = request.transactional_id.0.to_string();
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code());
    }
    if ctx.shard.topics.borrow().get(OFFSETS_TOPIC).is_none() {
        group::ensure_offsets_topic(&ctx.shard).await;
    }
    let partition = routing::group_partition(&group_id, group::offsets_partitions(&ctx.shard));
    let call = TxnCall::AddPartitions {
        transactional_id: transactional_id.clone(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        partitions: vec![(OFFSETS_TOPIC.to_string(), partition)],
        tv2: false,
    };
    let code = match txn::call(&ctx.shard, &transactional_id, call).await {
        Some(TxnReply::Code(code)) => code,
        _ => ResponseError::CoordinatorNotAvailable.code(),
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
