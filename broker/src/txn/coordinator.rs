//! One shard's transaction coordinator: the state of the transactional ids whose
//! `__transaction_state` partition this shard owns and (when replicated) leads.
//!
//! Every state change is first written to the id's partition and applied only once it is
//! committed (durable on a single node), so the in-memory map is always the fold of the
//! committed log and a new leader rebuilds exactly it. While a write for an id is in flight
//! (`busy`) other requests for it get CONCURRENT_TRANSACTIONS, as Kafka's pending state does.
//! After a `Prepare*` state is committed the markers go out (`markers.rs`), retried until every
//! partition has one, then `Complete*` is written; a coordinator that takes over a partition
//! finishes the `Prepare*` transactions it loads the same way.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use ahash::{AHashMap, AHashSet};
use kafka_protocol::error::ResponseError;

use super::records::{self, TxnState, TxnValue, TXN_PARTITIONS_MAX};
use super::{markers, txn_partition, txn_partitions, DescribedTxn, TxnCall, TxnReply, TXN_TOPIC};
use crate::config::{BrokerConfig, FlushMode};
use crate::replication::ReplicaGroup;
use crate::runtime;
use crate::shard::mesh::AdminRequest;
use crate::shard::{now_ms, storage_error_code, Shard};

/// The `transaction.version` feature this cluster finalizes (KIP-890's transactions version 2,
/// Kafka 4's default). Requests still choose their own behaviour by their version.
pub const CLUSTER_TRANSACTION_VERSION: i16 = 2;
/// Transactional ids one shard coordinates at most; past it a new id's InitProducerId gets
/// COORDINATOR_NOT_AVAILABLE rather than memory growing without bound.
pub const TXN_IDS_PER_SHARD_MAX: usize = 1_000_000;
/// Bytes read per step while loading a `__transaction_state` partition.
const LOAD_READ_BYTES: usize = 1 << 20;
/// Transactions whose markers one shard sends at once; the others wait their turn (a new
/// coordinator may resume up to `TXN_IDS_PER_SHARD_MAX` prepared transactions at once).
pub const TXN_MARKERS_IN_FLIGHT_MAX: u64 = 64;
/// Pause between rounds of markers that did not all succeed, doubling up to the maximum.
const MARKER_RETRY_MIN: Duration = Duration::from_millis(50);
const MARKER_RETRY_MAX: Duration = Duration::from_secs(1);

pub struct TxnCoordinator {
    /// Unreplicated partitions were read at start-up (partitions made later are empty).
    loaded: Cell<bool>,
    txns: RefCell<AHashMap<String, TxnValue>>,
    /// Replicated partitions whose ids are loaded: index → the term this shard leads them in.
    led: RefCell<AHashMap<i32, u64>>,
    /// Ids with a write in flight.
    busy: RefCell<AHashSet<String>>,
    max_timeout_ms: i32,
    expiration_ms: i64,
    /// Bounds the transactions sending markers at once ([`TXN_MARKERS_IN_FLIGHT_MAX`]).
    markers_in_flight: runtime::Semaphore,
}

/// Marks an id busy for the life of a write; the mark goes when this is dropped.
struct Busy<'a> {
    set: &'a RefCell<AHashSet<String>>,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set.borrow_mut().remove(&self.id);
    }
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

impl TxnCoordinator {
    pub fn new(config: &BrokerConfig) -> TxnCoordinator {
        TxnCoordinator {
            loaded: Cell::new(false),
            txns: RefCell::new(AHashMap::new()),
            led: RefCell::new(AHashMap::new()),
            busy: RefCell::new(AHashSet::new()),
            max_timeout_ms: config.transaction_max_timeout_ms,
            expiration_ms: config.transactional_id_expiration_ms,
            markers_in_flight: runtime::Semaphore::new(TXN_MARKERS_IN_FLIGHT_MAX),
        }
    }

    pub async fn serve(&self, shard: &Rc<Shard>, call: TxnCall) -> TxnReply {
        match call {
            TxnCall::InitProducerId {
                transactional_id,
                timeout_ms,
                producer_id,
                producer_epoch,
            } => TxnReply::producer(
                self.init_producer_id(
                    shard,
                    &transactional_id,
                    timeout_ms,
                    producer_id,
                    producer_epoch,
                )
                .await,
            ),
            TxnCall::AddPartitions {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                tv2,
            } => TxnReply::Code(
                self.add_partitions(
                    shard,
                    &transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions,
                    tv2,
                )
                .await
                .err()
                .unwrap_or(0),
            ),
            TxnCall::Verify {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
            } => TxnReply::Codes(self.verify(
                shard,
                &transactional_id,
                producer_id,
                producer_epoch,
                &partitions,
            )),
            TxnCall::EndTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                tv2,
            } => {
                let ended = if tv2 {
                    self.end_txn_v2(
                        shard,
                        &transactional_id,
                        producer_id,
                        producer_epoch,
                        commit,
                    )
                    .await
                } else {
                    self.end_txn(
                        shard,
                        &transactional_id,
                        producer_id,
                        producer_epoch,
                        commit,
                    )
                    .await
                    .map(|()| (producer_id, producer_epoch))
                };
                TxnReply::producer(ended)
            }
            TxnCall::Describe { transactional_id } => {
                TxnReply::Describe(self.describe(shard, &transactional_id))
            }
            TxnCall::List {
                states,
                producer_ids,
                duration_ms,
            } => TxnReply::List(self.list(shard, &states, &producer_ids, duration_ms)),
        }
    }

    /// The id's partition and the coordinator epoch (the partition's term; 0 unreplicated) if
    /// this shard serves the id now; else NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS.
    fn coordinates(&self, shard: &Rc<Shard>, transactional_id: &str) -> Result<(i32, i32), i16> {
        let index = txn_partition(shard, transactional_id);
        let Some(p) = shard.partition(TXN_TOPIC, index) else {
            return Err(code(ResponseError::NotCoordinator));
        };
        let Some(group) = p.replicated() else {
            return if self.loaded.get() {
                Ok((index, 0))
            } else {
                Err(code(ResponseError::CoordinatorLoadInProgress))
            };
        };
        match group.leadership() {
            None => Err(code(ResponseError::NotCoordinator)),
            Some(term) if self.led.borrow().get(&index) == Some(&term) => {
                Ok((index, i32::try_from(term).unwrap_or(i32::MAX)))
            }
            Some(_) => Err(code(ResponseError::CoordinatorLoadInProgress)),
        }
    }

    fn claim(&self, transactional_id: &str) -> Result<Busy<'_>, i16> {
        if !self.busy.borrow_mut().insert(transactional_id.to_string()) {
            return Err(code(ResponseError::ConcurrentTransactions));
        }
        Ok(Busy {
            set: &self.busy,
            id: transactional_id.to_string(),
        })
    }

    /// Writes the id's new state (None: a tombstone) and applies it once committed.
    async fn write(
        &self,
        shard: &Rc<Shard>,
        index: i32,
        transactional_id: &str,
        value: Option<TxnValue>,
    ) -> Result<(), i16> {
        write_record(shard, index, transactional_id, value.as_ref()).await?;
        let mut txns = self.txns.borrow_mut();
        match value {
            Some(v) => txns.insert(transactional_id.to_string(), v),
            None => txns.remove(transactional_id),
        };
        Ok(())
    }

    async fn init_producer_id(
        &self,
        shard: &Rc<Shard>,
        transactional_id: &str,
        timeout_ms: i32,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), i16> {
        if transactional_id.is_empty() {
            return Err(code(ResponseError::InvalidRequest));
        }
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(code(ResponseError::InvalidTransactionTimeout));
        }
        let (index, coordinator_epoch) = self.coordinates(shard, transactional_id)?;
        let _busy = self.claim(transactional_id)?;
        let current = self.txns.borrow().get(transactional_id).cloned();
        let now = now_ms();
        let Some(current) = current else {
            if self.txns.borrow().len() >= TXN_IDS_PER_SHARD_MAX {
                return Err(code(ResponseError::CoordinatorNotAvailable));
            }
            let new_id = allocate_producer_id(shard).await?;
            let value = TxnValue::empty(new_id, timeout_ms, now);
            self.write(shard, index, transactional_id, Some(value))
                .await?;
            return Ok((new_id, 0));
        };
        // KIP-360: a client naming its producer must name this id's producer (or, right
        // after a rotation, the one before it at its exhausted epoch).
        let expected = (producer_id >= 0).then_some(producer_epoch);
        if let Some(epoch) = expected {
            let valid = current.producer_id == producer_id
                || (current.prev_producer_id == producer_id && epoch >= i16::MAX - 1);
            if !valid {
                return Err(code(ResponseError::ProducerFenced));
            }
        }
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                Err(code(ResponseError::ConcurrentTransactions))
            }
            TxnState::Ongoing => {
                // Fence the previous instance: abort its transaction under a bumped epoch, so
                // the partitions refuse its writes; the client retries and gets the next one.
                // The markers go as the cluster's transactions version (Kafka's rule for the
                // ends a server starts).
                let fenced = bump(&current, now);
                let value = TxnValue {
                    state: TxnState::PrepareAbort,
                    timeout_ms: current.timeout_ms,
                    client_tv: CLUSTER_TRANSACTION_VERSION,
                    ..fenced
                };
                self.write(shard, index, transactional_id, Some(value))
                    .await?;
                self.spawn_completion(shard, transactional_id, coordinator_epoch);
                Err(code(ResponseError::ConcurrentTransactions))
            }
            TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort
            | TxnState::Dead => {
                let exhausted = current.producer_epoch >= i16::MAX - 1;
                let mut value = bump(&current, now);
                if exhausted && expected.is_none_or(|e| e == current.producer_epoch) {
                    // Kafka's rule: the epoch after i16::MAX - 1 needs a new producer id.
                    value.prev_producer_id = current.producer_id;
                    value.producer_id = allocate_producer_id(shard).await?;
                    value.producer_epoch = 0;
                } else {
                    // Kafka's `prepareIncrementProducerEpoch`: the current epoch bumps; the
                    // one before the last bump is a retry of it, answered alike.
                    match expected {
                        None => {}
                        Some(e) if e == current.producer_epoch => {}
                        Some(e) if e == current.last_producer_epoch => {
                            return Ok((current.producer_id, current.producer_epoch));
                        }
                        Some(_) => return Err(code(ResponseError::ProducerFenced)),
                    }
                }
                if expected.is_none() {
                    value.last_producer_epoch = -1;
                }
                value.next_producer_id = -1;
                value.timeout_ms = timeout_ms;
                value.state = TxnState::Empty;
                value.partitions.clear();
                value.start_ms = -1;
                let answer = (value.producer_id, value.producer_epoch);
                self.write(shard, index, transactional_id, Some(value))
                    .await?;
                Ok(answer)
            }
        }
    }

    /// The id's state after checking the producer's id and epoch, Kafka's order of errors.
    fn checked(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<TxnValue, i16> {
        let txns = self.txns.borrow();
        let Some(v) = txns.get(transactional_id) else {
            return Err(code(ResponseError::InvalidProducerIdMapping));
        };
        if v.producer_id != producer_id {
            return Err(code(ResponseError::InvalidProducerIdMapping));
        }
        if v.producer_epoch != producer_epoch {
            return Err(code(ResponseError::ProducerFenced));
        }
        Ok(v.clone())
    }

    async fn add_partitions(
        &self,
        shard: &Rc<Shard>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
        tv2: bool,
    ) -> Result<(), i16> {
        let (index, _) = self.coordinates(shard, transactional_id)?;
        // Kafka checks the producer before the pending state (a fenced producer hears so),
        // except for a leader's add (KAFKA-18660): a producer already on the epoch the
        // pending end hands out must hear CONCURRENT_TRANSACTIONS, not PRODUCER_FENCED.
        if !tv2 {
            self.checked(transactional_id, producer_id, producer_epoch)?;
        }
        let _busy = self.claim(transactional_id)?;
        let current = self.checked(transactional_id, producer_id, producer_epoch)?;
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(code(ResponseError::ConcurrentTransactions))
            }
            TxnState::Dead => return Err(code(ResponseError::InvalidTxnState)),
            _ => {}
        }
        let ongoing = current.state == TxnState::Ongoing;
        if ongoing && partitions.iter().all(|p| current.partitions.contains(p)) {
            return Ok(());
        }
        let now = now_ms();
        let mut value = current;
        if !ongoing {
            value.partitions.clear();
            value.start_ms = now;
        }
        value.partitions.extend(partitions);
        value.client_tv = if tv2 { 2 } else { 0 };
        if value.partitions.len() > TXN_PARTITIONS_MAX {
            return Err(code(ResponseError::InvalidRequest));
        }
        value.state = TxnState::Ongoing;
        value.last_update_ms = now;
        self.write(shard, index, transactional_id, Some(value))
            .await
    }

    /// Kafka's `handleVerifyPartitionsInTransaction`: one code per partition, no state change.
    /// A write in flight for the id is not waited for: the leader's guard covers that race.
    fn verify(
        &self,
        shard: &Rc<Shard>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<i16> {
        let all = |code: i16| vec![code; partitions.len()];
        if transactional_id.is_empty() {
            return all(code(ResponseError::InvalidRequest));
        }
        if let Err(error_code) = self.coordinates(shard, transactional_id) {
            return all(error_code);
        }
        let current = match self.checked(transactional_id, producer_id, producer_epoch) {
            Ok(current) => current,
            Err(error_code) => return all(error_code),
        };
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                all(code(ResponseError::ConcurrentTransactions))
            }
            TxnState::Ongoing => partitions
                .iter()
                .map(|p| {
                    if current.partitions.contains(p) {
                        0
                    } else {
                        code(ResponseError::TransactionAbortable)
                    }
                })
                .collect(),
            _ => all(code(ResponseError::TransactionAbortable)),
        }
    }

    async fn end_txn(
        &self,
        shard: &Rc<Shard>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), i16> {
        let (index, coordinator_epoch) = self.coordinates(shard, transactional_id)?;
        // Kafka checks the producer before the pending state: a fenced producer hears so.
        self.checked(transactional_id, producer_id, producer_epoch)?;
        let _busy = self.claim(transactional_id)?;
        let current = self.checked(transactional_id, producer_id, producer_epoch)?;
        match (current.state, commit) {
            (TxnState::Ongoing, _) => {
                let value = TxnValue {
                    state: if commit {
                        TxnState::PrepareCommit
                    } else {
                        TxnState::PrepareAbort
                    },
                    last_update_ms: now_ms(),
                    client_tv: 0,
                    ..current
                };
                self.write(shard, index, transactional_id, Some(value))
                    .await?;
                self.spawn_completion(shard, transactional_id, coordinator_epoch);
                Ok(())
            }
            // A retry of an EndTxn already done.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(code(ResponseError::ConcurrentTransactions))
            }
            (TxnState::PrepareEpochFence, _) => Err(code(ResponseError::ConcurrentTransactions)),
            _ => Err(code(ResponseError::InvalidTxnState)),
        }
    }

    /// EndTxn v5+ (KIP-890 transactions version 2, Kafka's `endTransaction` with epoch bump):
    /// every end bumps the epoch (the markers carry the bumped one), an abort with no
    /// transaction open is an "empty abort" that only bumps, and a client that lost the answer
    /// and asks again with the epoch before the bump gets the same answer. Answers the producer
    /// id and epoch the client goes on with: the bumped epoch, or once the epoch is exhausted
    /// the next producer id at epoch 0.
    async fn end_txn_v2(
        &self,
        shard: &Rc<Shard>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(i64, i16), i16> {
        let (index, coordinator_epoch) = self.coordinates(shard, transactional_id)?;
        // The pending check comes first (KAFKA-18464): a commit followed at once by an empty
        // abort must not fence its own producer.
        let _busy = self.claim(transactional_id)?;
        let Some(current) = self.txns.borrow().get(transactional_id).cloned() else {
            return Err(code(ResponseError::InvalidProducerIdMapping));
        };
        let empty_abort = match end_v2_decision(&current, producer_id, producer_epoch, commit)? {
            EndV2::Retried(answer) => return Ok(answer),
            EndV2::Prepare { empty_abort } => empty_abort,
        };
        let now = now_ms();
        let mut value = bump(&current, now);
        value.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        value.client_tv = 2;
        value.next_producer_id = -1;
        if current.producer_epoch >= i16::MAX - 1 {
            // The epoch after this one would be the last: the transaction after this one
            // starts on a new producer id (the markers still use this one, at the last epoch).
            value.next_producer_id = allocate_producer_id(shard).await?;
        }
        if empty_abort {
            value.partitions.clear();
            value.start_ms = now;
        }
        self.write(shard, index, transactional_id, Some(value.clone()))
            .await?;
        self.spawn_completion(shard, transactional_id, coordinator_epoch);
        let next = completed(&value);
        Ok((next.producer_id, next.producer_epoch))
    }

    /// Sends the markers of the id's `Prepare*` transaction until every partition has one,
    /// then writes `Complete*`. Stops if this shard stops coordinating the id at that epoch
    /// (the next coordinator finishes it).
    fn spawn_completion(&self, shard: &Rc<Shard>, transactional_id: &str, coordinator_epoch: i32) {
        let shard = shard.clone();
        let id = transactional_id.to_string();
        runtime::spawn_detached(async move {
            let coordinator = &shard.txns;
            let mut done: BTreeSet<(String, i32)> = BTreeSet::new();
            let mut pause = MARKER_RETRY_MIN;
            loop {
                if shard.shutting_down.get() {
                    return;
                }
                match coordinator.coordinates(&shard, &id) {
                    Ok((_, epoch)) if epoch == coordinator_epoch => {}
                    _ => return,
                }
                let Some(value) = coordinator.txns.borrow().get(&id).cloned() else {
                    return;
                };
                let commit = match value.state {
                    TxnState::PrepareCommit => true,
                    TxnState::PrepareAbort => false,
                    _ => return,
                };
                let remaining: Vec<(String, i32)> =
                    value.partitions.difference(&done).cloned().collect();
                if !remaining.is_empty() {
                    let Ok(_permit) = coordinator.markers_in_flight.acquire_permit(1).await else {
                        return;
                    };
                    let results = markers::send(
                        &shard,
                        markers::Marker {
                            producer_id: value.producer_id,
                            producer_epoch: value.producer_epoch,
                            coordinator_epoch,
                            commit,
                            transaction_version: i8::try_from(value.client_tv).unwrap_or(0),
                        },
                        remaining,
                    )
                    .await;
                    for (partition, error_code) in results {
                        if markers::fenced(error_code) {
                            tracing::warn!(
                                transactional_id = %id,
                                topic = %partition.0,
                                partition = partition.1,
                                error_code,
                                "a newer producer epoch or coordinator passed the partition: \
                                 this coordinator stops completing the transaction"
                            );
                            return;
                        }
                        if error_code == 0 {
                            done.insert(partition);
                        } else {
                            tracing::debug!(
                                transactional_id = %id,
                                topic = %partition.0,
                                partition = partition.1,
                                error_code,
                                "transaction marker not written yet"
                            );
                        }
                    }
                    if !value.partitions.is_subset(&done) {
                        runtime::sleep(pause).await;
                        pause = (pause * 2).min(MARKER_RETRY_MAX);
                        continue;
                    }
                }
                // Every marker is in: write Complete*, as one more state change of the id.
                let Ok(_busy) = coordinator.claim(&id) else {
                    runtime::sleep(MARKER_RETRY_MIN).await;
                    continue;
                };
                let Ok((index, epoch)) = coordinator.coordinates(&shard, &id) else {
                    return;
                };
                if epoch != coordinator_epoch || coordinator.txns.borrow().get(&id) != Some(&value)
                {
                    return;
                }
                let complete = TxnValue {
                    state: if commit {
                        TxnState::CompleteCommit
                    } else {
                        TxnState::CompleteAbort
                    },
                    partitions: BTreeSet::new(),
                    last_update_ms: now_ms(),
                    ..completed(&value)
                };
                match coordinator.write(&shard, index, &id, Some(complete)).await {
                    Ok(()) => return,
                    Err(error_code) => {
                        tracing::debug!(transactional_id = %id, error_code, "cannot complete the transaction yet");
                        drop(_busy);
                        runtime::sleep(pause).await;
                        pause = (pause * 2).min(MARKER_RETRY_MAX);
                    }
                }
            }
        });
    }

    fn describe(&self, shard: &Rc<Shard>, transactional_id: &str) -> DescribedTxn {
        let mut out = DescribedTxn {
            error_code: 0,
            transactional_id: transactional_id.to_string(),
            state: "",
            timeout_ms: 0,
            start_ms: -1,
            producer_id: -1,
            producer_epoch: -1,
            partitions: Vec::new(),
        };
        if let Err(error_code) = self.coordinates(shard, transactional_id) {
            out.error_code = error_code;
            return out;
        }
        match self.txns.borrow().get(transactional_id) {
            Some(v) => described(transactional_id, v),
            None => {
                out.error_code = code(ResponseError::TransactionalIdNotFound);
                out
            }
        }
    }

    fn list(
        &self,
        shard: &Rc<Shard>,
        states: &[String],
        producer_ids: &[i64],
        duration_ms: i64,
    ) -> Vec<DescribedTxn> {
        let now = now_ms();
        self.txns
            .borrow()
            .iter()
            .filter(|(id, _)| self.coordinates(shard, id).is_ok())
            .filter(|(_, v)| states.is_empty() || states.iter().any(|s| s == v.state.name()))
            .filter(|(_, v)| producer_ids.is_empty() || producer_ids.contains(&v.producer_id))
            // Kafka's v1 filter: running longer than the duration, whatever the state.
            .filter(|(_, v)| duration_ms < 0 || now - v.start_ms > duration_ms)
            .map(|(id, v)| described(id, v))
            .collect()
    }

    /// Reads this shard's unreplicated `__transaction_state` partitions once the node knows
    /// the cluster metadata; requests are answered COORDINATOR_LOAD_IN_PROGRESS until then.
    pub async fn load(shard: Rc<Shard>) {
        while !shard.view.borrow().ready {
            if shard.shutting_down.get() {
                return;
            }
            runtime::sleep(Duration::from_millis(10)).await;
        }
        let mut records = 0;
        for index in 0..txn_partitions(&shard) {
            if shard.owner(TXN_TOPIC, index) != shard.id {
                continue;
            }
            let Some(p) = shard.partition(TXN_TOPIC, index) else {
                continue;
            };
            if p.replicated().is_some() {
                continue;
            }
            records += shard.txns.read_partition(&p, index).await;
            shard.txns.resume_prepared(&shard, index, 0);
        }
        shard.txns.loaded.set(true);
        if records > 0 {
            tracing::info!(shard = shard.id, records, "loaded {TXN_TOPIC}");
        }
    }

    /// Applies partition `index`'s committed records; returns how many it read.
    async fn read_partition(&self, p: &crate::shard::partition::Partition, index: i32) -> usize {
        let mut count = 0;
        let end = p.high_watermark();
        let mut offset = p.log.log_start_offset();
        while offset < end {
            let read = match p.log.read(offset, LOAD_READ_BYTES, end).await {
                Ok(read) => read,
                Err(e) => {
                    crate::fatal::fatal(format!("cannot load {TXN_TOPIC}-{index} at {offset}: {e}"))
                }
            };
            if read.batches.is_empty() {
                break;
            }
            for batch in &read.batches {
                match records::decode_batch(batch) {
                    Ok(entries) => {
                        count += entries.len();
                        let mut txns = self.txns.borrow_mut();
                        for (id, value) in entries {
                            match value {
                                Some(v) => txns.insert(id, v),
                                None => txns.remove(&id),
                            };
                        }
                    }
                    Err(e) => tracing::warn!(partition = index, offset, "{e}"),
                }
                offset = crate::group::records::next_offset(batch)
                    .unwrap_or(end)
                    .max(offset + 1);
            }
        }
        count
    }

    /// Finishes the loaded `Prepare*` transactions of partition `index`.
    fn resume_prepared(&self, shard: &Rc<Shard>, index: i32, coordinator_epoch: i32) {
        let prepared: Vec<String> = self
            .txns
            .borrow()
            .iter()
            .filter(|(id, v)| {
                txn_partition(shard, id) == index
                    && matches!(v.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in prepared {
            self.spawn_completion(shard, &id, coordinator_epoch);
        }
    }

    /// Loads replicated partition `index` once this replica leads it at `term` with its whole
    /// log committed. False if leadership moved first.
    async fn load_led(
        &self,
        shard: &Rc<Shard>,
        index: i32,
        group: &ReplicaGroup,
        term: u64,
    ) -> bool {
        let Some(p) = shard.partition(TXN_TOPIC, index) else {
            return false;
        };
        let end = p.log.log_end_offset();
        if !crate::replication::leadership::wait_committed_as_leader(shard, group, term, end).await
        {
            return false;
        }
        self.unload(shard, index);
        let records = self.read_partition(&p, index).await;
        if group.leadership() != Some(term) {
            self.unload(shard, index);
            return false;
        }
        self.led.borrow_mut().insert(index, term);
        self.resume_prepared(shard, index, i32::try_from(term).unwrap_or(i32::MAX));
        tracing::info!(
            partition = index,
            term,
            records,
            "coordinator for {TXN_TOPIC}-{index}"
        );
        true
    }

    fn unload(&self, shard: &Rc<Shard>, index: i32) {
        self.led.borrow_mut().remove(&index);
        self.txns
            .borrow_mut()
            .retain(|id, _| txn_partition(shard, id) != index);
    }

    /// Aborts transactions past their timeout (with an epoch bump, fencing the producer) and
    /// forgets ids idle past `transactional.id.expiration.ms`, on Kafka's two intervals.
    pub async fn timeout_loop(shard: Rc<Shard>) {
        let abort_every = Duration::from_millis(
            shard
                .config
                .transaction_abort_timed_out_transaction_cleanup_interval_ms
                .max(1),
        );
        let expire_every_ms = shard
            .config
            .transaction_remove_expired_transaction_cleanup_interval_ms
            .max(1);
        let mut last_expiry = std::time::Instant::now();
        loop {
            runtime::sleep(abort_every).await;
            if shard.shutting_down.get() {
                return;
            }
            let coordinator = &shard.txns;
            let now = now_ms();
            let timed_out: Vec<String> = coordinator
                .txns
                .borrow()
                .iter()
                .filter(|(_, v)| {
                    v.state == TxnState::Ongoing
                        && now.saturating_sub(v.start_ms) > i64::from(v.timeout_ms)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in timed_out {
                if let Err(error_code) = coordinator.abort_timed_out(&shard, &id).await {
                    tracing::debug!(transactional_id = %id, error_code, "timed-out transaction not aborted yet");
                }
            }
            if last_expiry.elapsed() < Duration::from_millis(expire_every_ms) {
                continue;
            }
            last_expiry = std::time::Instant::now();
            let expired: Vec<String> = coordinator
                .txns
                .borrow()
                .iter()
                .filter(|(_, v)| {
                    matches!(
                        v.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    ) && now.saturating_sub(v.last_update_ms) >= coordinator.expiration_ms
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                let Ok((index, _)) = coordinator.coordinates(&shard, &id) else {
                    continue;
                };
                let Ok(_busy) = coordinator.claim(&id) else {
                    continue;
                };
                if let Err(error_code) = coordinator.write(&shard, index, &id, None).await {
                    tracing::debug!(transactional_id = %id, error_code, "expired id not removed yet");
                }
            }
        }
    }

    async fn abort_timed_out(&self, shard: &Rc<Shard>, transactional_id: &str) -> Result<(), i16> {
        let (index, coordinator_epoch) = self.coordinates(shard, transactional_id)?;
        let _busy = self.claim(transactional_id)?;
        let Some(current) = self.txns.borrow().get(transactional_id).cloned() else {
            return Ok(());
        };
        if current.state != TxnState::Ongoing {
            return Ok(());
        }
        tracing::info!(
            transactional_id,
            producer_id = current.producer_id,
            "aborting a transaction past its timeout"
        );
        let value = TxnValue {
            state: TxnState::PrepareAbort,
            client_tv: CLUSTER_TRANSACTION_VERSION,
            ..bump(&current, now_ms())
        };
        self.write(shard, index, transactional_id, Some(value))
            .await?;
        self.spawn_completion(shard, transactional_id, coordinator_epoch);
        Ok(())
    }
}

/// What an EndTxn v5+ does to a transaction (Kafka's TV2 `endTransaction` checks).
#[derive(Debug, PartialEq, Eq)]
enum EndV2 {
    /// A retry of an end already done: the same answer again, nothing written.
    Retried((i64, i16)),
    /// Prepare the end with a bumped epoch; `empty_abort`: nothing was open.
    Prepare { empty_abort: bool },
}

fn end_v2_decision(
    current: &TxnValue,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<EndV2, i16> {
    if matches!(
        current.state,
        TxnState::PrepareCommit | TxnState::PrepareAbort
    ) {
        // The markers are going out: Kafka holds the `Complete*` transition pending for that
        // whole phase, so any end meets its pending check.
        return Err(code(ResponseError::ConcurrentTransactions));
    }
    // A client that lost the answer asks again with the epoch it had: the one before the bump,
    // or after an exhausted epoch the previous producer id at `i16::MAX - 1`.
    let retry_on_overflow = current.prev_producer_id == producer_id
        && producer_epoch == i16::MAX - 1
        && current.producer_epoch == 0;
    let retry_on_bump = current.producer_id == producer_id
        && i32::from(current.producer_epoch) == i32::from(producer_epoch) + 1;
    if current.producer_id != producer_id && !retry_on_overflow {
        return Err(code(ResponseError::InvalidProducerIdMapping));
    }
    let same_epoch = current.producer_epoch == producer_epoch;
    let retry = retry_on_bump || retry_on_overflow;
    let valid = match current.state {
        TxnState::Ongoing | TxnState::Empty => same_epoch,
        TxnState::CompleteCommit | TxnState::CompleteAbort => retry || same_epoch,
        _ => false,
    };
    if !valid {
        return Err(code(ResponseError::ProducerFenced));
    }
    match (current.state, commit, retry) {
        (TxnState::Ongoing, _, _) => Ok(EndV2::Prepare { empty_abort: false }),
        (TxnState::CompleteCommit, true, true) | (TxnState::CompleteAbort, false, true) => Ok(
            EndV2::Retried((current.producer_id, current.producer_epoch)),
        ),
        (TxnState::Empty, _, true) => Err(code(ResponseError::ProducerFenced)),
        (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort, false, false) => {
            Ok(EndV2::Prepare { empty_abort: true })
        }
        _ => Err(code(ResponseError::InvalidTxnState)),
    }
}

/// The producer id and epoch a transaction's `Complete*` state carries: the prepared ones, or
/// after an exhausted epoch (transactions version 2) the next producer id at epoch 0.
fn completed(prepared: &TxnValue) -> TxnValue {
    let mut value = prepared.clone();
    if prepared.client_tv >= 2 && prepared.next_producer_id != -1 {
        value.prev_producer_id = prepared.producer_id;
        value.producer_id = prepared.next_producer_id;
        value.producer_epoch = 0;
        value.next_producer_id = -1;
    }
    value
}

/// The state with the next epoch. A fence may take the last one, `i16::MAX` (Kafka's
/// `prepareFenceProducerEpoch`); InitProducerId then moves to a new producer id.
fn bump(current: &TxnValue, now: i64) -> TxnValue {
    let mut value = current.clone();
    if current.producer_epoch < i16::MAX {
        value.producer_epoch = current.producer_epoch + 1;
    }
    value.last_producer_epoch = current.producer_epoch;
    value.last_update_ms = now;
    value
}

fn described(transactional_id: &str, v: &TxnValue) -> DescribedTxn {
    DescribedTxn {
        error_code: 0,
        transactional_id: transactional_id.to_string(),
        state: v.state.name(),
        timeout_ms: v.timeout_ms,
        start_ms: v.start_ms,
        producer_id: v.producer_id,
        producer_epoch: v.producer_epoch,
        partitions: v.partitions.iter().cloned().collect(),
    }
}

async fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, i16> {
    let (error_code, _, id) = shard.admin_call(AdminRequest::AllocateProducerId).await;
    if error_code != 0 {
        return Err(code(ResponseError::CoordinatorNotAvailable));
    }
    Ok(id)
}

/// Appends the id's record to its partition and waits until it is committed (a majority, and
/// the topic's min ISR in sync, as Kafka's coordinator writes with acks=all) or durable on a
/// single node. Errors are what Kafka's coordinator answers clients for them.
async fn write_record(
    shard: &Rc<Shard>,
    index: i32,
    transactional_id: &str,
    value: Option<&TxnValue>,
) -> Result<(), i16> {
    let Some(p) = shard.partition(TXN_TOPIC, index) else {
        return Err(code(ResponseError::NotCoordinator));
    };
    let batch = records::encode_batch(transactional_id, value, now_ms());
    if let Some(group) = p.replicated() {
        if batch.len() > shard.config.message_max_bytes as usize {
            return Err(code(ResponseError::UnknownServerError));
        }
        let lag_max = Duration::from_millis(shard.config.replica_lag_time_max_ms);
        let min_insync = shard.min_insync_replicas(TXN_TOPIC);
        let in_sync = group.in_sync_replicas(lag_max).map_or(0, |isr| isr.len());
        if in_sync < min_insync {
            return Err(code(ResponseError::CoordinatorNotAvailable));
        }
        return match group.propose(batch, -1, min_insync, lag_max).recv().await {
            Some(r) if r.error_code == 0 => Ok(()),
            Some(r) => Err(crate::group::coordinator::coordinator_write_error(
                r.error_code,
            )),
            None => Err(code(ResponseError::CoordinatorNotAvailable)),
        };
    }
    match p.log.append(batch, 0, now_ms()) {
        Ok(info) => {
            shard.mark_dirty(&p);
            if shard.config.flush_mode == FlushMode::Sync {
                match p.wait_durable(info.last_offset).recv().await {
                    Some(0) => {}
                    _ => return Err(code(ResponseError::CoordinatorNotAvailable)),
                }
            }
            Ok(())
        }
        Err(e) => Err(crate::group::coordinator::coordinator_write_error(
            storage_error_code(&e),
        )),
    }
}

/// Follows this replica's leadership of replicated `__transaction_state` partition `index`:
/// becoming leader loads its ids (requests get COORDINATOR_LOAD_IN_PROGRESS meanwhile);
/// losing it forgets them (NOT_COORDINATOR). Ends when the group stops.
pub async fn follow_leadership(shard: Rc<Shard>, index: i32, group: Rc<ReplicaGroup>) {
    crate::replication::leadership::follow_leadership(
        &group,
        &shard.shutting_down,
        |term| shard.txns.load_led(&shard, index, &group, term),
        || shard.txns.unload(&shard, index),
    )
    .await;
}

/// The answer to `call` when it cannot be served (`error_code`).
pub fn error_reply(call: &TxnCall, error_code: i16) -> TxnReply {
    match call {
        TxnCall::InitProducerId { .. } | TxnCall::EndTxn { .. } => {
            TxnReply::producer(Err(error_code))
        }
        TxnCall::AddPartitions { .. } => TxnReply::Code(error_code),
        TxnCall::Verify { partitions, .. } => TxnReply::Codes(vec![error_code; partitions.len()]),
        TxnCall::Describe { transactional_id } => TxnReply::Describe(DescribedTxn {
            error_code,
            transactional_id: transactional_id.clone(),
            state: "",
            timeout_ms: 0,
            start_ms: -1,
            producer_id: -1,
            producer_epoch: -1,
            partitions: Vec::new(),
        }),
        TxnCall::List { .. } => TxnReply::List(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(state: TxnState, producer_id: i64, epoch: i16) -> TxnValue {
        TxnValue {
            state,
            producer_epoch: epoch,
            ..TxnValue::empty(producer_id, 60_000, 0)
        }
    }

    fn err(e: ResponseError) -> Result<EndV2, i16> {
        Err(e.code())
    }

    #[test]
    fn an_end_bumps_and_a_lost_answer_is_asked_again() {
        let prepare = |empty_abort| Ok(EndV2::Prepare { empty_abort });
        // Ending an open transaction at its epoch.
        assert_eq!(
            end_v2_decision(&at(TxnState::Ongoing, 7, 3), 7, 3, true),
            prepare(false)
        );
        assert_eq!(
            end_v2_decision(&at(TxnState::Ongoing, 7, 3), 7, 2, true),
            err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            end_v2_decision(&at(TxnState::Ongoing, 7, 3), 8, 3, true),
            err(ResponseError::InvalidProducerIdMapping)
        );
        // While the markers go out, everything waits.
        assert_eq!(
            end_v2_decision(&at(TxnState::PrepareCommit, 7, 4), 7, 3, true),
            err(ResponseError::ConcurrentTransactions)
        );
        // After the commit (epoch 3 -> 4): the retry with 3 gets the answer again; an abort at
        // 4 is an empty abort; a commit at 4 has nothing to commit.
        let done = at(TxnState::CompleteCommit, 7, 4);
        assert_eq!(
            end_v2_decision(&done, 7, 3, true),
            Ok(EndV2::Retried((7, 4)))
        );
        assert_eq!(end_v2_decision(&done, 7, 4, false), prepare(true));
        assert_eq!(
            end_v2_decision(&done, 7, 4, true),
            err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            end_v2_decision(&done, 7, 3, false),
            err(ResponseError::InvalidTxnState)
        );
        assert_eq!(
            end_v2_decision(&done, 7, 2, true),
            err(ResponseError::ProducerFenced)
        );
        // Nothing begun since InitProducerId: an abort bumps, a retry-looking epoch is fenced.
        let empty = at(TxnState::Empty, 7, 0);
        assert_eq!(end_v2_decision(&empty, 7, 0, false), prepare(true));
        assert_eq!(
            end_v2_decision(&empty, 7, 0, true),
            err(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn an_exhausted_epoch_moves_to_the_next_producer_id() {
        // The end at i16::MAX - 1 prepares with the last epoch and a next producer id; the
        // markers use the old id at i16::MAX; `Complete*` and the answer use the next at 0.
        let mut prepared = bump(&at(TxnState::Ongoing, 7, i16::MAX - 1), 0);
        prepared.state = TxnState::PrepareCommit;
        prepared.client_tv = 2;
        prepared.next_producer_id = 9;
        assert_eq!(prepared.producer_epoch, i16::MAX);
        let complete = completed(&prepared);
        assert_eq!(
            (
                complete.producer_id,
                complete.producer_epoch,
                complete.prev_producer_id
            ),
            (9, 0, 7)
        );
        assert_eq!(complete.next_producer_id, -1);
        // The client that lost that answer retries with the old id and epoch: same answer.
        let done = TxnValue {
            state: TxnState::CompleteCommit,
            ..complete
        };
        assert_eq!(
            end_v2_decision(&done, 7, i16::MAX - 1, true),
            Ok(EndV2::Retried((9, 0)))
        );
        // A version-1 transaction never rotates at its end.
        let v1 = TxnValue {
            client_tv: 0,
            ..prepared
        };
        assert_eq!(completed(&v1).producer_id, 7);
    }
}
