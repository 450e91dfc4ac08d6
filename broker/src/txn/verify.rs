//! KIP-890 part 1: a partition leader makes sure a producer's first transactional batch on a
//! partition belongs to an ongoing transaction before it appends it, so a batch that arrives
//! late (after its transaction's marker) can never open a transaction no coordinator knows, a
//! "hanging" transaction that would hold the last stable offset back for ever.
//!
//! Two halves, after Kafka 4.3's `AddPartitionsToTxnManager` and `VerificationGuard`:
//! - **The question** ([`ask_coordinator`]): the Produce handler asks the transactional id's
//!   coordinator, on this node over the mesh or on another over one cluster RPC per node
//!   (requests of a shard queue while one is in flight to that node, and go together next).
//!   The coordinator answers per partition without changing its state (or, for Produce
//!   v12+, adds the partition, the broker's form of AddPartitionsToTxn).
//! - **The guard** ([`PartitionGuards`], on the partition's leader shard): verification
//!   starts by taking a token for the producer; the append must carry the token that is still
//!   current. A marker of that producer clears it, so a verified batch delayed past its
//!   transaction's end is refused (INVALID_TXN_STATE) instead of appended after the marker.
//!   Tokens live on the leader only: a new term clears them and the next batch verifies again.
//!
//! Order: the connection's Produce handler awaits verification before it appends (or hands
//! the parts to their shards), and a connection's requests are dispatched one after another,
//! so batches of one producer on one connection keep their order. A batch whose verification
//! failed is retried by its client; a later batch that verified meanwhile must not overtake
//! it while the log does not know the producer yet (any first sequence is accepted then):
//! the guard remembers the lowest sequence that started verifying and a higher one gets
//! OUT_OF_ORDER_SEQUENCE_NUMBER (retriable), Kafka's `lowestSequence` rule.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use kafka_protocol::error::ResponseError;
use rkyv::{Archive, Deserialize, Serialize};
use spool_protocol::batch::BatchHeader;

use super::{txn_partition, TxnCall, TxnReply, TXN_TOPIC};
use crate::cluster::rpc::{ControllerRequest, ControllerResponse};
use crate::runtime::{self, LocalSender};
use crate::shard::partition::Partition;
use crate::shard::Shard;

/// Producers one partition keeps a guard for at most (verifying, or in a transaction the log
/// has not got yet); past it a new verification gets NOT_ENOUGH_REPLICAS (retriable) rather
/// than memory growing without bound.
pub const TXN_VERIFY_ENTRIES_MAX: usize = 65_536;
/// Verifications one shard has queued for one coordinator node at most (besides the request
/// in flight); past it NOT_ENOUGH_REPLICAS, which clients retry.
pub const TXN_VERIFY_QUEUED_MAX: usize = 4_096;
/// How long a coordinator node may take to answer a verification RPC (Kafka uses the
/// broker's `request.timeout.ms`, 30 s).
const VERIFY_RPC_TTL: Duration = Duration::from_secs(30);
/// A verification started this long ago and never appended may be dropped to make room.
const VERIFY_STALE_MS: i64 = 120_000;

// ---- the partition's guards --------------------------------------------------------------

thread_local! {
    /// Tokens are compared only within one partition, which lives on one shard: a counter
    /// per thread makes them unique without a shared cache line.
    static NEXT_TOKEN: Cell<u64> = const { Cell::new(1) };
}

fn next_token() -> u64 {
    NEXT_TOKEN.with(|n| {
        let token = n.get();
        n.set(token.wrapping_add(1).max(1));
        token
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Verification started: an append must carry `token`, and no sequence above
    /// `lowest_seq` may start the transaction here.
    Verifying {
        token: u64,
        epoch: i16,
        lowest_seq: i32,
        since_ms: i64,
    },
    /// A transactional batch of this epoch was accepted by this leader: the transaction is
    /// open here although the log may not have the batch yet (a replicated partition's
    /// proposal in flight).
    Started { epoch: i16 },
}

/// One partition's verification state, on its leader shard.
#[derive(Debug, Default)]
pub struct PartitionGuards {
    /// The term the guards belong to (0: an unreplicated partition).
    term: u64,
    guards: AHashMap<i64, Guard>,
    /// Markers of each producer proposed and not yet answered: until the marker is in the
    /// log, the log still shows the transaction open, and it must not count as open.
    markers_in_flight: AHashMap<i64, u32>,
}

/// This replica's term as leader (0 unreplicated), or None when it does not lead.
fn leader_term(p: &Partition) -> Option<u64> {
    match p.replicated() {
        Some(group) => group.leadership(),
        None => Some(0),
    }
}

impl PartitionGuards {
    fn follow_term(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.guards.clear();
        }
    }

    fn ongoing(&self, p: &Partition, producer_id: i64, epoch: i16) -> bool {
        if self.markers_in_flight.contains_key(&producer_id) {
            return false;
        }
        if self.guards.get(&producer_id) == Some(&Guard::Started { epoch }) {
            return true;
        }
        p.log.producer_txn(producer_id) == Some((epoch, true))
    }

    /// The newest epoch this leader knows for the producer.
    fn known_epoch(&self, p: &Partition, producer_id: i64) -> Option<i16> {
        let logged = p.log.producer_txn(producer_id).map(|(epoch, _)| epoch);
        let started = match self.guards.get(&producer_id) {
            Some(Guard::Started { epoch }) => Some(*epoch),
            _ => None,
        };
        logged.max(started)
    }

    /// Makes room for one more guard: drops stale verifications and `Started` marks the log
    /// has caught up with. False if none could go.
    fn make_room(&mut self, p: &Partition, now_ms: i64) -> bool {
        if self.guards.len() < TXN_VERIFY_ENTRIES_MAX {
            return true;
        }
        self.guards.retain(|&producer_id, guard| match *guard {
            Guard::Verifying { since_ms, .. } => now_ms.saturating_sub(since_ms) < VERIFY_STALE_MS,
            Guard::Started { epoch } => p.log.producer_txn(producer_id) != Some((epoch, true)),
        });
        self.guards.len() < TXN_VERIFY_ENTRIES_MAX
    }
}

/// Starts verifying a transactional batch of `(producer_id, epoch)` whose first sequence is
/// `base_sequence`: 0 when the producer's transaction is already open here (no question to
/// ask), else the token its append must carry. An older epoch than the partition knows is
/// INVALID_PRODUCER_EPOCH at once, with no round trip (Kafka's KAFKA-18042).
pub fn begin(
    p: &Partition,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    now_ms: i64,
) -> Result<u64, i16> {
    let Some(term) = leader_term(p) else {
        return Err(ResponseError::NotLeaderOrFollower.code());
    };
    let mut g = p.txn_guards.borrow_mut();
    g.follow_term(term);
    if g.known_epoch(p, producer_id)
        .is_some_and(|known| known > epoch)
    {
        return Err(ResponseError::InvalidProducerEpoch.code());
    }
    if g.ongoing(p, producer_id, epoch) {
        return Ok(0);
    }
    if let Some(Guard::Verifying {
        token,
        epoch: guard_epoch,
        lowest_seq,
        ..
    }) = g.guards.get_mut(&producer_id)
    {
        // Requests of one producer share the token until its first append (Kafka's rule).
        if epoch == *guard_epoch {
            *lowest_seq = (*lowest_seq).min(base_sequence);
        } else if epoch > *guard_epoch {
            *guard_epoch = epoch;
            *lowest_seq = base_sequence;
        }
        return Ok(*token);
    }
    if !g.make_room(p, now_ms) {
        return Err(ResponseError::NotEnoughReplicas.code());
    }
    let token = next_token();
    g.guards.insert(
        producer_id,
        Guard::Verifying {
            token,
            epoch,
            lowest_seq: base_sequence,
            since_ms: now_ms,
        },
    );
    Ok(token)
}

/// At append, for a transactional data batch while verification is on: Ok if the producer's
/// transaction is open here or the batch carries the current token (and does not start the
/// transaction above a lower sequence still verifying), else the error the client gets.
pub fn check_append(p: &Partition, header: &BatchHeader, token: u64) -> Result<(), i16> {
    let Some(term) = leader_term(p) else {
        // The append path refuses it as not the leader.
        return Ok(());
    };
    let mut g = p.txn_guards.borrow_mut();
    g.follow_term(term);
    let producer_id = header.producer_id;
    let epoch = header.producer_epoch;
    if g.ongoing(p, producer_id, epoch)
        || g.known_epoch(p, producer_id)
            .is_some_and(|known| known > epoch)
    {
        // Open (the usual sequence checks follow), or fenced: the log's epoch check answers.
        return Ok(());
    }
    match g.guards.get(&producer_id) {
        Some(&Guard::Verifying {
            token: current,
            lowest_seq,
            ..
        }) if token != 0 && token == current => {
            if header.base_sequence > lowest_seq {
                Err(ResponseError::OutOfOrderSequenceNumber.code())
            } else {
                Ok(())
            }
        }
        _ => Err(ResponseError::InvalidTxnState.code()),
    }
}

/// A transactional data batch was appended (or proposed, on a replicated partition): its
/// producer's transaction is open here, and the verification that led to it is over.
pub fn appended(p: &Partition, header: &BatchHeader) {
    let mut g = p.txn_guards.borrow_mut();
    if g.known_epoch(p, header.producer_id)
        .is_some_and(|known| known > header.producer_epoch)
    {
        // A zombie's batch, which the log refuses: it opens nothing.
        return;
    }
    if p.replicated().is_some() {
        g.guards.insert(
            header.producer_id,
            Guard::Started {
                epoch: header.producer_epoch,
            },
        );
    } else {
        // The log itself shows the transaction open from now on.
        g.guards.remove(&header.producer_id);
    }
}

/// A marker of `producer_id` is about to be appended or proposed: every token and mark of the
/// producer goes, so a batch verified before the marker cannot follow it into the log.
pub fn marker_started(p: &Partition, producer_id: i64) {
    let mut g = p.txn_guards.borrow_mut();
    g.guards.remove(&producer_id);
    if p.replicated().is_some() {
        *g.markers_in_flight.entry(producer_id).or_insert(0) += 1;
    }
}

/// The marker [`marker_started`] announced was answered (in the log, or refused).
pub fn marker_finished(p: &Partition, producer_id: i64) {
    let mut g = p.txn_guards.borrow_mut();
    if let Some(n) = g.markers_in_flight.get_mut(&producer_id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            g.markers_in_flight.remove(&producer_id);
        }
    }
}

/// A transactional batch about to verify, sent to its partition's shard.
#[derive(Debug, Clone)]
pub struct VerifyBegin {
    pub topic: String,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// [`begin`] for each part, on the partitions' shard.
pub fn begin_local(shard: &Shard, parts: &[VerifyBegin]) -> Vec<Result<u64, i16>> {
    let now = crate::shard::now_ms();
    parts
        .iter()
        .map(|part| match shard.partition(&part.topic, part.partition) {
            None => Err(shard.missing_partition_code(&part.topic, part.partition)),
            Some(p) => begin(
                &p,
                part.producer_id,
                part.producer_epoch,
                part.base_sequence,
                now,
            ),
        })
        .collect()
}

// ---- the question to the coordinator -----------------------------------------------------

/// One transaction's partitions to verify (or add) at its coordinator.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VerifyEntry {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Add the partitions (Produce v12+, transactions version 2) instead of only checking.
    pub add: bool,
    pub partitions: Vec<(String, i32)>,
}

/// Asks the coordinator of `entry.transactional_id`; one error code per partition, as the
/// coordinator answered (NETWORK_EXCEPTION when it could not be reached).
pub async fn ask_coordinator(shard: &Rc<Shard>, entry: VerifyEntry) -> Vec<i16> {
    let count = entry.partitions.len();
    let failed = |code: ResponseError| vec![code.code(); count];
    if count == 0 {
        return Vec::new();
    }
    let index = txn_partition(shard, &entry.transactional_id);
    if shard.topics.borrow().get(TXN_TOPIC).is_none() {
        return failed(ResponseError::CoordinatorNotAvailable);
    }
    let node = if shard.replicates(TXN_TOPIC) {
        match shard.current_leader(TXN_TOPIC, index) {
            Some((leader, _)) => leader,
            None => return failed(ResponseError::CoordinatorNotAvailable),
        }
    } else {
        shard.config.node_id
    };
    if node == shard.config.node_id {
        return serve_entry(shard, entry).await;
    }
    let (tx, rx) = runtime::oneshot();
    let start = {
        let mut nodes = shard.txn_verifier.nodes.borrow_mut();
        let queue = nodes.entry(node).or_default();
        if queue.queued.len() >= TXN_VERIFY_QUEUED_MAX {
            return failed(ResponseError::NotEnoughReplicas);
        }
        queue.queued.push((entry, tx));
        !std::mem::replace(&mut queue.busy, true)
    };
    if start {
        runtime::spawn_detached(drain(shard.clone(), node));
    }
    match rx.recv().await {
        Some(codes) if codes.len() == count => codes,
        _ => failed(ResponseError::NetworkException),
    }
}

/// A shard's verifications waiting for a coordinator node, one RPC in flight per node.
#[derive(Default)]
pub struct Verifier {
    nodes: RefCell<AHashMap<i32, NodeQueue>>,
}

#[derive(Default)]
struct NodeQueue {
    /// A request to this node is in flight (its task sends whatever queues meanwhile next).
    busy: bool,
    queued: Vec<(VerifyEntry, LocalSender<Vec<i16>>)>,
}

/// Sends what is queued for `node`, in one RPC at a time, until nothing is left.
async fn drain(shard: Rc<Shard>, node: i32) {
    loop {
        let batch = {
            let mut nodes = shard.txn_verifier.nodes.borrow_mut();
            let Some(queue) = nodes.get_mut(&node) else {
                return;
            };
            if queue.queued.is_empty() {
                nodes.remove(&node);
                return;
            }
            std::mem::take(&mut queue.queued)
        };
        let (entries, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let counts: Vec<usize> = entries.iter().map(|e| e.partitions.len()).collect();
        let total: usize = counts.iter().sum();
        let codes = send_to(&shard, node, entries, total).await;
        let mut codes = codes.into_iter();
        for (reply, n) in replies.into_iter().zip(counts) {
            let _ = reply.try_send(codes.by_ref().take(n).collect());
        }
    }
}

async fn send_to(
    shard: &Rc<Shard>,
    node: i32,
    entries: Vec<VerifyEntry>,
    total: usize,
) -> Vec<i16> {
    let request = ControllerRequest::VerifyTxn { entries };
    match shard.call_peer(node, &request, VERIFY_RPC_TTL).await {
        Ok(ControllerResponse::Codes(codes)) if codes.len() == total => codes,
        other => {
            tracing::debug!(node, "verification not answered: {other:?}");
            vec![ResponseError::NetworkException.code(); total]
        }
    }
}

/// Serves one entry on this node: the id's coordinator shard answers.
async fn serve_entry(shard: &Rc<Shard>, entry: VerifyEntry) -> Vec<i16> {
    let count = entry.partitions.len();
    let id = entry.transactional_id.clone();
    let call = if entry.add {
        TxnCall::AddPartitions {
            transactional_id: entry.transactional_id,
            producer_id: entry.producer_id,
            producer_epoch: entry.producer_epoch,
            partitions: entry.partitions,
            tv2: true,
        }
    } else {
        TxnCall::Verify {
            transactional_id: entry.transactional_id,
            producer_id: entry.producer_id,
            producer_epoch: entry.producer_epoch,
            partitions: entry.partitions,
        }
    };
    match super::call(shard, &id, call).await {
        Some(TxnReply::Code(code)) => vec![code; count],
        Some(TxnReply::Codes(codes)) if codes.len() == count => codes,
        _ => vec![ResponseError::CoordinatorNotAvailable.code(); count],
    }
}

/// Verifications (or adds) one RPC may carry at most, in partitions.
pub const TXN_VERIFY_PARTITIONS_PER_REQUEST_MAX: usize = 100_000;

/// Shard 0's RPC listener: serves another broker's `VerifyTxn`; None for every other message.
pub async fn serve_rpc(shard: &Rc<Shard>, payload: &[u8]) -> Option<Vec<u8>> {
    let Ok(ControllerRequest::VerifyTxn { entries }) = ControllerRequest::decode(payload) else {
        return None;
    };
    let total: usize = entries.iter().map(|e| e.partitions.len()).sum();
    let codes = if total > TXN_VERIFY_PARTITIONS_PER_REQUEST_MAX {
        vec![ResponseError::InvalidRequest.code(); total]
    } else {
        let answers =
            futures::future::join_all(entries.into_iter().map(|entry| serve_entry(shard, entry)))
                .await;
        answers.into_iter().flatten().collect()
    };
    Some(
        ControllerResponse::Codes(codes)
            .encode()
            .unwrap_or_default(),
    )
}

// ---- the Produce handler's step ----------------------------------------------------------

/// Verifies (Produce ≤ v11) or adds (v12+) the transactional batches of one Produce request
/// before anything of it is appended: per part, the token its append carries, or the error
/// its client gets. `owners[i]` is the shard of `parts[i]`.
pub async fn verify_produce(
    shard: &Rc<Shard>,
    version: i16,
    transactional_id: &str,
    parts: &[VerifyBegin],
    owners: &[usize],
) -> Vec<Result<u64, i16>> {
    let mut out: Vec<Result<u64, i16>> = vec![Ok(0); parts.len()];
    let add = version >= 12;
    if parts.is_empty() || !(add || shard.txn_verification_enabled()) {
        return out;
    }
    // Kafka's rule: one request, one producer.
    let first = (parts[0].producer_id, parts[0].producer_epoch);
    if parts
        .iter()
        .any(|p| (p.producer_id, p.producer_epoch) != first)
    {
        return vec![Err(ResponseError::InvalidProducerIdMapping.code()); parts.len()];
    }
    let started = std::time::Instant::now();
    let backoff = Duration::from_millis(shard.config.add_partitions_to_txn_retry_backoff_ms);
    let give_up = Duration::from_millis(shard.config.add_partitions_to_txn_retry_backoff_max_ms);
    let mut todo: Vec<usize> = (0..parts.len()).collect();
    loop {
        // Take (or find) each part's token on its shard.
        let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); shard.count];
        for &i in &todo {
            per_shard[owners[i]].push(i);
        }
        for (to, indexes) in per_shard.into_iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let asked: Vec<VerifyBegin> = indexes.iter().map(|&i| parts[i].clone()).collect();
            let answers = if to == shard.id {
                begin_local(shard, &asked)
            } else {
                match shard
                    .call(to, crate::shard::mesh::Request::TxnVerifyBegin(asked))
                    .await
                {
                    Some(crate::shard::mesh::Reply::TxnVerifyBegin(answers))
                        if answers.len() == indexes.len() =>
                    {
                        answers
                    }
                    _ => vec![Err(ResponseError::NotLeaderOrFollower.code()); indexes.len()],
                }
            };
            for (i, answer) in indexes.into_iter().zip(answers) {
                out[i] = answer;
            }
        }
        // Ask the coordinator about those that start a transaction here.
        let asking: Vec<usize> = todo
            .iter()
            .copied()
            .filter(|&i| matches!(out[i], Ok(token) if token != 0))
            .collect();
        if asking.is_empty() {
            return out;
        }
        let entry = VerifyEntry {
            transactional_id: transactional_id.to_string(),
            producer_id: first.0,
            producer_epoch: first.1,
            add,
            partitions: asking
                .iter()
                .map(|&i| (parts[i].topic.clone(), parts[i].partition))
                .collect(),
        };
        let codes = ask_coordinator(shard, entry).await;
        let concurrent = ResponseError::ConcurrentTransactions.code();
        let mut retry = Vec::new();
        for (&i, code) in asking.iter().zip(codes) {
            if code == 0 {
                continue;
            }
            if add && code == concurrent && started.elapsed() + backoff < give_up {
                // The previous transaction's markers are still going out: the leader retries
                // the add itself for a while, as Kafka's does.
                retry.push(i);
            }
            out[i] = Err(produce_error(code, version));
        }
        if retry.is_empty() {
            return out;
        }
        runtime::sleep(backoff).await;
        todo = retry;
    }
}

/// TxnOffsetCommit's step (Kafka's group coordinator does the same through its replica
/// manager): the group's offsets partition `partition` is checked with (v5+: added by) the
/// transaction's coordinator before the offsets are written; 0 or the error the client gets.
/// The offsets records carry no token: the group coordinator writes them itself.
pub async fn verify_offsets(
    shard: &Rc<Shard>,
    version: i16,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partition: i32,
) -> i16 {
    let add = version >= 5;
    if !(add || shard.txn_verification_enabled()) {
        return 0;
    }
    let started = std::time::Instant::now();
    let backoff = Duration::from_millis(shard.config.add_partitions_to_txn_retry_backoff_ms);
    let give_up = Duration::from_millis(shard.config.add_partitions_to_txn_retry_backoff_max_ms);
    loop {
        let entry = VerifyEntry {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            add,
            partitions: vec![(crate::group::OFFSETS_TOPIC.to_string(), partition)],
        };
        let code = ask_coordinator(shard, entry)
            .await
            .first()
            .copied()
            .unwrap_or(0);
        let concurrent = ResponseError::ConcurrentTransactions.code();
        if add && code == concurrent && started.elapsed() + backoff < give_up {
            runtime::sleep(backoff).await;
            continue;
        }
        return offsets_error(code, version);
    }
}

/// TxnOffsetCommit's error for a coordinator's answer, by the request's version: Kafka's
/// translation, then its group coordinator's normalisation.
pub fn offsets_error(code: i16, version: i16) -> i16 {
    use ResponseError as E;
    let Some(error) = ResponseError::try_from_code(code) else {
        return code;
    };
    match error {
        E::ProducerFenced => E::InvalidProducerEpoch.code(),
        E::TransactionAbortable if version <= 3 => E::InvalidTxnState.code(),
        E::NetworkException => E::CoordinatorLoadInProgress.code(),
        E::ConcurrentTransactions if version >= 5 => code,
        E::NotEnoughReplicas
        | E::RequestTimedOut
        | E::UnknownTopicOrPartition
        | E::ConcurrentTransactions
        | E::CoordinatorLoadInProgress
        | E::NotCoordinator => E::CoordinatorNotAvailable.code(),
        _ => code,
    }
}

// ---- what the producer hears -------------------------------------------------------------

/// The Produce error for a coordinator's answer, by the request's version (Kafka's
/// `AddPartitionsToTxnManager` and `ReplicaManager` translations; 0 = go ahead).
pub fn produce_error(code: i16, produce_version: i16) -> i16 {
    use ResponseError as E;
    let Some(error) = ResponseError::try_from_code(code) else {
        return code;
    };
    match error {
        E::ProducerFenced => E::InvalidProducerEpoch.code(),
        // A client before v11 does not know TRANSACTION_ABORTABLE.
        E::TransactionAbortable if produce_version <= 10 => E::InvalidTxnState.code(),
        // Unreachable, moving or loading coordinators: NOT_ENOUGH_REPLICAS makes old clients
        // retry without refreshing their metadata.
        E::NetworkException
        | E::CoordinatorLoadInProgress
        | E::CoordinatorNotAvailable
        | E::NotCoordinator
        | E::RequestTimedOut => E::NotEnoughReplicas.code(),
        // v12+ (the leader adds the partition) keeps it: its client retries the produce.
        E::ConcurrentTransactions if produce_version < 12 => E::NotEnoughReplicas.code(),
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition() -> Partition {
        let config = spool_storage::LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: i64::MAX / 2,
            retention_ms: -1,
            retention_bytes: -1,
            max_message_bytes: 100_000,
            index_interval_bytes: 4096,
            timestamp_type: spool_storage::TimestampType::CreateTime,
            tail_cache_bytes_max: 0,
            producer_id_expiration_ms: 86_400_000,
            compaction: Default::default(),
        };
        let log = futures_lite::future::block_on(spool_storage::PartitionLog::open(
            std::path::PathBuf::from("/t-0"),
            config,
            spool_storage::Backend::Memory(spool_storage::MemFs::new()),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let p = Partition::new("t".into(), 0, Rc::new(log), crate::config::FlushMode::Sync);
        Rc::try_unwrap(p).unwrap_or_else(|_| panic!("one owner"))
    }

    fn txn_header(producer_id: i64, epoch: i16, base_sequence: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 61,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0x10,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: 1,
        }
    }

    #[test]
    fn a_marker_voids_the_token_of_a_verification_started_before_it() {
        let p = partition();
        let header = txn_header(7, 0, 0);
        // Without a verification, a batch that would open a transaction is refused.
        assert_eq!(
            check_append(&p, &header, 0),
            Err(ResponseError::InvalidTxnState.code())
        );
        let token = begin(&p, 7, 0, 0, 1_000).expect("a token");
        assert_ne!(token, 0);
        // Requests of the producer share the token, and remember the lowest sequence.
        assert_eq!(begin(&p, 7, 0, 5, 1_000), Ok(token));
        assert_eq!(check_append(&p, &header, token), Ok(()));
        assert_eq!(
            check_append(&p, &txn_header(7, 0, 5), token),
            Err(ResponseError::OutOfOrderSequenceNumber.code())
        );
        // The race the guard closes: the transaction's marker lands between the
        // coordinator's answer and the append. The verified batch no longer gets in.
        marker_started(&p, 7);
        assert_eq!(
            check_append(&p, &header, token),
            Err(ResponseError::InvalidTxnState.code())
        );
        // A verification started after the marker has a token of its own.
        let again = begin(&p, 7, 0, 0, 1_001).expect("a token");
        assert_ne!(again, token);
        assert_eq!(check_append(&p, &header, again), Ok(()));
    }

    #[test]
    fn produce_errors_follow_the_request_version() {
        use ResponseError as E;
        let abortable = E::TransactionAbortable.code();
        assert_eq!(produce_error(abortable, 10), E::InvalidTxnState.code());
        assert_eq!(produce_error(abortable, 11), abortable);
        assert_eq!(
            produce_error(E::ProducerFenced.code(), 11),
            E::InvalidProducerEpoch.code()
        );
        assert_eq!(
            produce_error(E::NotCoordinator.code(), 9),
            E::NotEnoughReplicas.code()
        );
        let concurrent = E::ConcurrentTransactions.code();
        assert_eq!(produce_error(concurrent, 11), E::NotEnoughReplicas.code());
        assert_eq!(produce_error(concurrent, 12), concurrent);
        assert_eq!(
            produce_error(E::InvalidProducerIdMapping.code(), 9),
            E::InvalidProducerIdMapping.code()
        );
        assert_eq!(produce_error(0, 9), 0);
    }
}
