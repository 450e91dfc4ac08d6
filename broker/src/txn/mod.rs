//! Transactions (KIP-98, Kafka 4.x with KIP-890's verification and transactions version 2):
//! the transaction coordinator, the transaction markers and the partition leaders'
//! verification. ARCHITECTURE.md, "Transactions", has the design.
//!
//! Architecture invariant (placement, as groups): a transactional id lives on exactly one
//! shard of one broker, the leader of its `__transaction_state` partition
//! (`abs(hashCode) % transaction.state.log.num.partitions`, Kafka's formula), on the shard that
//! owns that partition. Handlers send the decoded request there as a [`TxnCall`]. The owner's
//! [`TxnCoordinator`] keeps each id's state, and every change of it is a record of its
//! partition, answered only once committed (durable, on a single node). Markers go to each
//! partition's leader (`markers.rs`), over the mesh on this broker and over the cluster RPC to
//! others, and are appended there through the partition's own Raft group.

pub mod coordinator;
pub mod markers;
pub mod records;
pub mod verify;

use std::rc::Rc;

pub use coordinator::TxnCoordinator;

use crate::shard::mesh::{Reply, Request};
use crate::shard::{routing, Shard};

/// The internal topic holding the transaction coordinators' state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// A transaction coordinator request, sent to the id's shard. Everything here is `Send`.
#[derive(Debug)]
pub enum TxnCall {
    /// InitProducerId with a transactional id; `producer_id`/`producer_epoch` are the
    /// client's current ones (KIP-360) or -1.
    InitProducerId {
        transactional_id: String,
        timeout_ms: i32,
        producer_id: i64,
        producer_epoch: i16,
    },
    /// AddPartitionsToTxn (v0-3) and AddOffsetsToTxn (the group's offsets partition).
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
        /// The leader's add for a transactions-version-2 client (AddPartitionsToTxn v4+
        /// without `VerifyOnly`, from Produce v12+ or TxnOffsetCommit v5+).
        tv2: bool,
    },
    /// KIP-890 verification (AddPartitionsToTxn v4+ with `VerifyOnly`): whether each partition
    /// is in the producer's ongoing transaction; changes nothing.
    Verify {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
    },
    EndTxn {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        /// EndTxn v5+: bump the epoch at every end (transactions version 2).
        tv2: bool,
    },
    Describe {
        transactional_id: String,
    },
    /// ListTransactions filters (empty = all; `duration_ms` < 0 = no filter).
    List {
        states: Vec<String>,
        producer_ids: Vec<i64>,
        duration_ms: i64,
    },
}

/// A transaction as DescribeTransactions and ListTransactions report it.
#[derive(Debug, Clone)]
pub struct DescribedTxn {
    pub error_code: i16,
    pub transactional_id: String,
    pub state: &'static str,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: Vec<(String, i32)>,
}

#[derive(Debug)]
pub enum TxnReply {
    /// InitProducerId's and EndTxn's answer: the producer id and epoch to go on with (-1 and
    /// -1 with an error).
    Producer {
        error_code: i16,
        producer_id: i64,
        producer_epoch: i16,
    },
    Code(i16),
    /// One code per partition of a `Verify`.
    Codes(Vec<i16>),
    Describe(DescribedTxn),
    List(Vec<DescribedTxn>),
}

impl TxnReply {
    pub fn producer(result: Result<(i64, i16), i16>) -> TxnReply {
        let (error_code, (producer_id, producer_epoch)) = match result {
            Ok(producer) => (0, producer),
            Err(error_code) => (error_code, (-1, -1)),
        };
        TxnReply::Producer {
            error_code,
            producer_id,
            producer_epoch,
        }
    }
}

/// Partitions of `__transaction_state`: the topic's, once it exists; the setting before.
pub fn txn_partitions(shard: &Shard) -> i32 {
    shard
        .topics
        .borrow()
        .get(TXN_TOPIC)
        .map(|m| m.partitions)
        .unwrap_or(shard.config.transaction_state_log_num_partitions)
}

/// The `__transaction_state` partition of a transactional id (the same formula as a group's).
pub fn txn_partition(shard: &Shard, transactional_id: &str) -> i32 {
    routing::group_partition(transactional_id, txn_partitions(shard))
}

/// Asks the controller for `__transaction_state` (Kafka creates it at the first
/// FindCoordinator for a transactional id), `transaction.state.log.replication.factor`
/// replicas capped by the live brokers, min ISR `transaction.state.log.min.isr` capped by that.
pub async fn ensure_txn_topic(shard: &Rc<Shard>) {
    let live = shard.view.borrow().live().count().max(1);
    let replication_factor = shard
        .config
        .transaction_state_log_replication_factor
        .min(i16::try_from(live).unwrap_or(i16::MAX));
    let min_isr = shard
        .config
        .transaction_state_log_min_isr
        .min(i32::from(replication_factor));
    crate::metadata::ensure_internal_topic(
        shard,
        TXN_TOPIC,
        shard.config.transaction_state_log_num_partitions,
        replication_factor,
        vec![
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "-1".to_string()),
            ("min.insync.replicas".to_string(), min_isr.to_string()),
            (
                "segment.bytes".to_string(),
                shard.config.transaction_state_log_segment_bytes.to_string(),
            ),
        ],
    )
    .await;
}

/// Whether this node holds the id's `__transaction_state` partition.
fn hosted_here(shard: &Shard, transactional_id: &str) -> bool {
    let topics = shard.topics.borrow();
    let Some(meta) = topics.get(TXN_TOPIC) else {
        return false;
    };
    let index = routing::group_partition(transactional_id, meta.partitions);
    shard.hosts(meta, index)
}

/// Serves `call` on the id's shard; `None` when that shard is gone (shutdown). An id this node
/// does not hold is NOT_COORDINATOR: its client looks the coordinator up again.
pub async fn call(shard: &Rc<Shard>, transactional_id: &str, call: TxnCall) -> Option<TxnReply> {
    use kafka_protocol::error::ResponseError;
    if !hosted_here(shard, transactional_id) {
        return Some(coordinator::error_reply(
            &call,
            ResponseError::NotCoordinator.code(),
        ));
    }
    let to = shard.owner(TXN_TOPIC, txn_partition(shard, transactional_id));
    call_shard(shard, to, call).await
}

/// Serves `call` on shard `to` (ListTransactions asks every shard).
pub async fn call_shard(shard: &Rc<Shard>, to: usize, call: TxnCall) -> Option<TxnReply> {
    match shard.call(to, Request::Txn(call)).await {
        Some(Reply::Txn(reply)) => Some(reply),
        _ => None,
    }
}
