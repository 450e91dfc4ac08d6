//! Idempotent-producer state (Kafka semantics): per producer id, its epoch, the time of its
//! last append and the metadata of its last [`BATCHES_PER_PRODUCER_MAX`] batches, used to accept
//! in-sequence batches, answer retries as duplicates, and reject gaps and zombie epochs.
//!
//! Changes made by appends that are not yet durable are recorded in an undo log, so a failed
//! flush (or a rejected multi-batch append) restores exactly the state of the durable log.
//! Snapshots (`<offset>.snapshot`) hold the state as of an offset; recovery loads the newest one
//! at or below the log end and replays the batches after it.
//!
//! Expiry (Kafka's `producer.id.expiration.ms`): a producer whose last append is at least the
//! expiration ago is forgotten, and its next batch is treated as an unknown producer's (accepted
//! at any sequence). The time of a live append is the broker's `now_ms`, not the batch's max
//! timestamp (Kafka's choice), so a producer's client clock cannot make it expire at once or
//! never; a batch replayed from the log has only its max timestamp, and an entry's time never
//! goes back. `check` treats an expired entry as unknown (O(1)); `expire` removes expired
//! entries and runs lazily: every [`EXPIRE_INTERVAL_APPENDS`] appends, before a snapshot is
//! written, and on retention enforcement. Memory is bounded by [`PRODUCERS_PER_PARTITION_MAX`]:
//! past it the least recently appended-to producers are evicted.
//!
//! Transactions (Kafka's `ProducerStateManager`): a transactional batch starts or extends its
//! producer's ongoing transaction (its first offset is kept); a transaction marker (a control
//! batch with the producer id: COMMIT or ABORT) ends it, and an ABORT adds the transaction to
//! the aborted list that read_committed fetches return (the list holds the unsealed segments'
//! aborts; a seal moves a segment's to its `.txnindex`, see `txn_index.rs`). The first offset of the ongoing
//! transactions, and of ended ones whose marker the high watermark has not passed yet, bounds
//! the last stable offset. A producer with an ongoing transaction never expires and is never
//! evicted (Kafka's rule); ongoing transactions are bounded by the producer cap. All of it is a
//! fold of the log, so every replica holds the same state, and snapshots carry it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use spool_protocol::batch::{sequence_add, BatchHeader};
use spool_protocol::control::TxnMarker;

use crate::StorageError;

/// Batches remembered per producer for duplicate detection (Kafka's value).
pub(crate) const BATCHES_PER_PRODUCER_MAX: usize = 5;
/// Producers tracked per partition; past it the least recently used are evicted (their next
/// batch is then accepted as an unknown producer's).
pub(crate) const PRODUCERS_PER_PARTITION_MAX: usize = 50_000;
/// An eviction removes the excess plus `producers_max / PRODUCERS_EVICT_DIVISOR` more, so its
/// O(producers) cost is paid once per that many new producers, not on every one.
const PRODUCERS_EVICT_DIVISOR: usize = 16;
/// Appends between two expiry sweeps (each O(producers)).
pub(crate) const EXPIRE_INTERVAL_APPENDS: u32 = 4_096;
/// Producers a snapshot may hold; a larger count means the file is damaged. Larger than the cap
/// because snapshots written before the cap existed may hold more (they are trimmed on load).
const SNAPSHOT_PRODUCERS_MAX: usize = 10_000_000;
/// Version 1: no timestamps. Still read; its entries get the load time.
const SNAPSHOT_MAGIC_V1: &[u8; 4] = b"SPPS";
/// Version 2: each entry carries the time of its last append.
const SNAPSHOT_MAGIC_V2: &[u8; 4] = b"SPP2";
/// Version 3: entries carry the coordinator epoch and the ongoing transaction's first offset;
/// the aborted transactions still listed in memory (those of unsealed segments; before the
/// `.txnindex` files, all of them) and the ended-but-unstable ones follow the entries.
const SNAPSHOT_MAGIC_V3: &[u8; 4] = b"SPP3";
const SNAPSHOT_ENTRY_BYTES_V1: usize = 8 + 2 + 1;
const SNAPSHOT_ENTRY_BYTES_V2: usize = 8 + 2 + 8 + 1;
const SNAPSHOT_ENTRY_BYTES_V3: usize = 8 + 2 + 8 + 4 + 8 + 1;
const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 8;
const SNAPSHOT_ABORTED_BYTES: usize = 8 + 8 + 8 + 8;
const SNAPSHOT_ENDED_BYTES: usize = 8 + 8;

const _: () = assert!(PRODUCERS_PER_PARTITION_MAX <= SNAPSHOT_PRODUCERS_MAX);
const _: () = assert!(PRODUCERS_EVICT_DIVISOR > 0 && EXPIRE_INTERVAL_APPENDS > 0);
const _: () = assert!(BATCHES_PER_PRODUCER_MAX <= u8::MAX as usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    /// Time of the last append: `now_ms` of a live append, the max timestamp of a replayed
    /// batch; never decreases.
    pub last_timestamp_ms: i64,
    pub batches: VecDeque<BatchMeta>,
    /// The coordinator epoch of the last marker (-1: none yet).
    pub coordinator_epoch: i32,
    /// First offset of the producer's ongoing transaction on this partition.
    pub txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16, last_timestamp_ms: i64) -> ProducerEntry {
        ProducerEntry {
            epoch,
            last_timestamp_ms,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            txn_first_offset: None,
        }
    }

    /// Kafka never expires (nor may a cap evict) a producer in a transaction: its marker
    /// must still find the transaction.
    fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        self.txn_first_offset.is_none()
            && expiration_ms >= 0
            && now_ms.saturating_sub(self.last_timestamp_ms) >= expiration_ms
    }
}

/// A producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub epoch: i16,
    /// -1: none (a coordinator's writes only).
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    /// Of the last marker; -1 none.
    pub coordinator_epoch: i32,
    /// The open transaction's first offset here.
    pub txn_first_offset: Option<i64>,
}

/// An aborted transaction as read_committed fetches report it (Kafka's `AbortedTxn`):
/// records of `producer_id` from `first_offset` up to the marker at `last_offset` are
/// dropped by the client. `last_stable_offset` is the LSO right after the abort: every
/// transaction still open then starts at or above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// What an append of one batch must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug)]
pub(crate) struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every ongoing transaction: an index of
    /// `ProducerEntry::txn_first_offset`, kept in step by every change to `producers`.
    ongoing: BTreeSet<(i64, i64)>,
    /// (marker offset, first offset) of ended transactions, in marker order, until the high
    /// watermark passes the marker: until then they still hold the LSO back.
    ended: VecDeque<(i64, i64)>,
    /// Aborted transactions whose marker is in the active segment or in a sealed one whose
    /// seal is not persisted yet, in marker order; the others are in their segment's
    /// `.txnindex` (see `txn_index.rs`).
    aborted: Vec<AbortedTxn>,
    /// (batch base offset, producer id, prior entry) for changes since the last commit,
    /// oldest first. An eviction is recorded under the base offset of the batch that caused it.
    undo: Vec<(i64, i64, Option<ProducerEntry>)>,
    /// The cap on `producers`; [`PRODUCERS_PER_PARTITION_MAX`] except in tests.
    producers_max: usize,
    /// Appends since the last expiry sweep.
    appends_since_expire: u32,
    /// The latest `now_ms` seen, for the sweep before the snapshot written at close.
    clock_ms: i64,
}

impl Default for ProducerState {
    fn default() -> ProducerState {
        ProducerState {
            producers: HashMap::new(),
            ongoing: BTreeSet::new(),
            ended: VecDeque::new(),
            aborted: Vec::new(),
            undo: Vec::new(),
            producers_max: PRODUCERS_PER_PARTITION_MAX,
            appends_since_expire: 0,
            clock_ms: i64::MIN,
        }
    }
}

impl ProducerState {
    /// A state that evicts past `producers_max` instead of [`PRODUCERS_PER_PARTITION_MAX`].
    #[cfg(test)]
    pub(crate) fn with_producers_max(producers_max: usize) -> ProducerState {
        assert!(producers_max > 0);
        ProducerState {
            producers_max,
            ..ProducerState::default()
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// The producer's epoch and whether its transaction is open on this partition.
    pub(crate) fn txn_state(&self, producer_id: i64) -> Option<(i16, bool)> {
        self.producers
            .get(&producer_id)
            .map(|e| (e.epoch, e.txn_first_offset.is_some()))
    }

    /// The latest `now_ms` seen (`i64::MIN` if none).
    pub(crate) fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    /// Advances the clock used by [`ProducerState::expire_at_clock`].
    pub(crate) fn observe(&mut self, now_ms: i64) {
        self.clock_ms = self.clock_ms.max(now_ms);
    }

    /// Checks a batch against the producer's state; does not change anything. A producer whose
    /// last append is `expiration_ms` or more before `now_ms` counts as unknown.
    pub(crate) fn check(
        &self,
        header: &BatchHeader,
        marker: Option<TxnMarker>,
        now_ms: i64,
        expiration_ms: i64,
    ) -> Result<SequenceCheck, StorageError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let producer_id = header.producer_id;
        if header.is_control() || header.base_sequence < 0 {
            // A marker, or a coordinator's transactional write (a group coordinator's
            // TxnOffsetCommit: no sequence). One from an older epoch or an older coordinator
            // is a zombie's (Kafka's `checkProducerEpoch` and `checkCoordinatorEpoch`); expiry
            // does not apply, as a producer in a transaction never expires.
            let Some(entry) = self.producers.get(&producer_id) else {
                return Ok(SequenceCheck::Append);
            };
            if header.producer_epoch < entry.epoch {
                return Err(StorageError::InvalidProducerEpoch {
                    producer_id,
                    epoch: header.producer_epoch,
                    current: entry.epoch,
                });
            }
            if let Some(marker) = marker {
                if marker.coordinator_epoch < entry.coordinator_epoch {
                    return Err(StorageError::TransactionCoordinatorFenced {
                        producer_id,
                        epoch: marker.coordinator_epoch,
                        current: entry.coordinator_epoch,
                    });
                }
            }
            return Ok(SequenceCheck::Append);
        }
        // Kafka 4 accepts an unknown producer at any sequence and starts tracking it.
        let Some(entry) = self
            .producers
            .get(&producer_id)
            .filter(|entry| !entry.expired(now_ms, expiration_ms))
        else {
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch {
                producer_id,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            if header.base_sequence != 0 {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: header.base_sequence,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        let last_seq = header.last_sequence();
        let duplicate = entry
            .batches
            .iter()
            .find(|batch| batch.first_seq == header.base_sequence && batch.last_seq == last_seq);
        if let Some(batch) = duplicate {
            return Ok(SequenceCheck::Duplicate {
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
            });
        }
        match entry.batches.back() {
            Some(last) if header.base_sequence != sequence_add(last.last_seq, 1) => {
                Err(StorageError::OutOfOrderSequence {
                    producer_id,
                    expected: sequence_add(last.last_seq, 1),
                    got: header.base_sequence,
                })
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records a batch appended at `now_ms` (offsets already assigned), remembering how to undo
    /// it and any eviction it causes.
    pub(crate) fn apply(&mut self, header: &BatchHeader, marker: Option<TxnMarker>, now_ms: i64) {
        if !header.has_producer_id() {
            return;
        }
        self.observe(now_ms);
        let prior = self.producers.get(&header.producer_id).cloned();
        self.undo
            .push((header.base_offset, header.producer_id, prior));
        self.update(header, marker, now_ms);
        for (producer_id, entry) in self.evict_over_cap(Some(header.producer_id)) {
            self.undo
                .push((header.base_offset, producer_id, Some(entry)));
        }
    }

    /// Records a batch read back from the log during recovery (no undo), timed by its max
    /// timestamp: the log holds nothing else.
    pub(crate) fn replay(&mut self, header: &BatchHeader, marker: Option<TxnMarker>) {
        if !header.has_producer_id() {
            return;
        }
        self.update(header, marker, header.max_timestamp);
        self.evict_over_cap(Some(header.producer_id));
    }

    fn update(&mut self, header: &BatchHeader, marker: Option<TxnMarker>, timestamp_ms: i64) {
        if header.is_control() {
            self.end_transaction(header, marker, timestamp_ms);
            return;
        }
        let producer_id = header.producer_id;
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch, timestamp_ms));
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(header.base_offset);
            self.ongoing.insert((header.base_offset, producer_id));
        }
        if header.base_sequence < 0 {
            // A coordinator's write has no sequence to remember (validated as transactional).
            if header.producer_epoch > entry.epoch {
                entry.epoch = header.producer_epoch;
                entry.batches.clear();
            }
            entry.last_timestamp_ms = entry.last_timestamp_ms.max(timestamp_ms);
            return;
        }
        // A batch that does not continue the sequence of its epoch was accepted as an unknown
        // producer's (expired or evicted): start over, as the live append did.
        let continues = entry
            .batches
            .back()
            .is_none_or(|last| header.base_sequence == sequence_add(last.last_seq, 1));
        if header.producer_epoch != entry.epoch || !continues {
            // Never back to an older epoch: the leader refuses such batches, and a marker's
            // bump must hold whatever follows it.
            entry.epoch = entry.epoch.max(header.producer_epoch);
            entry.batches.clear();
        }
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(timestamp_ms);
        if entry.batches.len() == BATCHES_PER_PRODUCER_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        assert!(entry.batches.len() <= BATCHES_PER_PRODUCER_MAX);
    }

    /// A marker (Kafka's `appendEndTxnMarker`): a newer epoch restarts the producer's
    /// sequences; its ongoing transaction, if any, ends at the marker's offset, and an ABORT
    /// adds it to the aborted list. A control batch of another type changes nothing but time.
    fn end_transaction(
        &mut self,
        header: &BatchHeader,
        marker: Option<TxnMarker>,
        timestamp_ms: i64,
    ) {
        let producer_id = header.producer_id;
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch, timestamp_ms));
        entry.last_timestamp_ms = entry.last_timestamp_ms.max(timestamp_ms);
        let Some(marker) = marker else {
            return;
        };
        if header.producer_epoch > entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = marker.coordinator_epoch;
        let Some(first_offset) = entry.txn_first_offset.take() else {
            return;
        };
        let marker_offset = header.base_offset;
        self.ongoing.remove(&(first_offset, producer_id));
        self.ended.push_back((marker_offset, first_offset));
        if !marker.commit {
            let last_stable_offset = self
                .ongoing
                .first()
                .map_or(marker_offset + 1, |&(first, _)| first);
            assert!(self
                .aborted
                .last()
                .is_none_or(|last| last.last_offset < marker_offset));
            self.aborted.push(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: marker_offset,
                last_stable_offset,
            });
        }
    }

    /// Forgets ended transactions whose marker `high_watermark` has passed (every replica, as
    /// its high watermark moves), so the list holds only transactions ending above it.
    pub(crate) fn advance_stable(&mut self, high_watermark: i64) {
        while self
            .ended
            .front()
            .is_some_and(|&(marker, _)| marker < high_watermark)
        {
            self.ended.pop_front();
        }
    }

    /// The first offset a read_committed reader may not pass: the first offset of the oldest
    /// ongoing transaction, or of an ended one whose marker is not below `high_watermark` yet,
    /// else `high_watermark` (Kafka's last stable offset). Forgets ended transactions whose
    /// marker the high watermark has passed.
    pub(crate) fn last_stable_offset(&mut self, high_watermark: i64) -> i64 {
        self.advance_stable(high_watermark);
        let ongoing = self.ongoing.first().map_or(i64::MAX, |&(first, _)| first);
        let ended = self
            .ended
            .iter()
            .map(|&(_, first)| first)
            .min()
            .unwrap_or(i64::MAX);
        high_watermark.min(ongoing).min(ended)
    }

    /// The aborted transactions a read_committed fetch from `fetch_offset` up to
    /// `upper_bound` must report (Kafka's `collectAbortedTxns`): those ending at or after the
    /// fetch offset and starting below the bound; the scan stops at the first whose LSO
    /// reaches the bound, as every later one starts above it.
    pub(crate) fn aborted_txns(&self, fetch_offset: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        let from = self
            .aborted
            .partition_point(|a| a.last_offset < fetch_offset);
        let mut out = Vec::new();
        for txn in &self.aborted[from..] {
            if txn.first_offset < upper_bound {
                out.push(*txn);
            }
            if txn.last_stable_offset >= upper_bound {
                break;
            }
        }
        out
    }

    /// The listed aborted transactions whose marker lies in `[from, to)`: a sealed segment's,
    /// for its `.txnindex`.
    pub(crate) fn aborted_in(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let first = self.aborted.partition_point(|a| a.last_offset < from);
        let end = self.aborted.partition_point(|a| a.last_offset < to);
        self.aborted[first..end.max(first)].to_vec()
    }

    /// Forgets the listed aborted transactions whose marker lies in `[from, to)` (a sealed
    /// segment's, now in its `.txnindex`).
    pub(crate) fn remove_aborted_in(&mut self, from: i64, to: i64) {
        let first = self.aborted.partition_point(|a| a.last_offset < from);
        let end = self.aborted.partition_point(|a| a.last_offset < to);
        self.aborted.drain(first..end.max(first));
    }

    /// Removes and returns the listed aborted transactions whose marker is below `offset`.
    pub(crate) fn take_aborted_below(&mut self, offset: i64) -> Vec<AbortedTxn> {
        let end = self.aborted.partition_point(|a| a.last_offset < offset);
        self.aborted.drain(..end).collect()
    }

    /// Forgets aborted transactions whose marker is below `log_start_offset`: no reader can
    /// get their records any more, or (at a seal) the segment's `.txnindex` holds them now.
    pub(crate) fn prune_aborted(&mut self, log_start_offset: i64) {
        let gone = self
            .aborted
            .partition_point(|a| a.last_offset < log_start_offset);
        self.aborted.drain(..gone);
    }

    /// Every producer's state, for DescribeProducers, by producer id.
    pub(crate) fn describe(&self) -> Vec<ProducerInfo> {
        let mut out: Vec<_> = self
            .producers
            .iter()
            .map(|(&id, e)| ProducerInfo {
                producer_id: id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp_ms: e.last_timestamp_ms,
                coordinator_epoch: e.coordinator_epoch,
                txn_first_offset: e.txn_first_offset,
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }

    /// Removes or replaces a producer's entry, keeping the ongoing index in step.
    fn restore(&mut self, id: i64, prior: Option<ProducerEntry>) {
        let current = match prior {
            Some(entry) => {
                if let Some(first) = entry.txn_first_offset {
                    self.ongoing.insert((first, id));
                }
                self.producers.insert(id, entry)
            }
            None => self.producers.remove(&id),
        };
        if let Some(first) = current.and_then(|e| e.txn_first_offset) {
            if self.producers.get(&id).and_then(|e| e.txn_first_offset) != Some(first) {
                self.ongoing.remove(&(first, id));
            }
        }
    }

    /// Forgets markers at or after `offset` (their batches were rolled back).
    fn forget_markers_from(&mut self, offset: i64) {
        while self
            .ended
            .back()
            .is_some_and(|&(marker, _)| marker >= offset)
        {
            self.ended.pop_back();
        }
        let keep = self.aborted.partition_point(|a| a.last_offset < offset);
        self.aborted.truncate(keep);
    }

    /// Past the cap, removes the least recently appended-to producers (never `keep`) down to
    /// `producers_max - producers_max / PRODUCERS_EVICT_DIVISOR`, and returns them.
    fn evict_over_cap(&mut self, keep: Option<i64>) -> Vec<(i64, ProducerEntry)> {
        if self.producers.len() <= self.producers_max {
            return Vec::new();
        }
        let excess = self.producers.len() - self.producers_max;
        let mut oldest: Vec<(i64, i64)> = self
            .producers
            .iter()
            .filter(|&(&id, entry)| Some(id) != keep && entry.txn_first_offset.is_none())
            .map(|(&id, entry)| (entry.last_timestamp_ms, id))
            .collect();
        let count = (excess + self.producers_max / PRODUCERS_EVICT_DIVISOR).min(oldest.len());
        if count < oldest.len() {
            oldest.select_nth_unstable(count);
        }
        oldest.truncate(count);
        let evicted: Vec<_> = oldest
            .into_iter()
            .map(|(_, id)| {
                (
                    id,
                    self.producers.remove(&id).expect("collected from the map"),
                )
            })
            .collect();
        // Producers in a transaction are never evicted (Kafka's rule), so they may keep the
        // count above the cap: they are bounded by the transactional ids the coordinators
        // admit, and the broker refuses transactional batches without one.
        tracing::debug!(
            evicted = evicted.len(),
            producers_max = self.producers_max,
            "producer state evicts least recently used producers"
        );
        evicted
    }

    /// Counts an append; every [`EXPIRE_INTERVAL_APPENDS`] appends, expires producers.
    pub(crate) fn maybe_expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.observe(now_ms);
        self.appends_since_expire += 1;
        if self.appends_since_expire >= EXPIRE_INTERVAL_APPENDS {
            self.expire(now_ms, expiration_ms);
        }
    }

    /// Expires producers as of the latest `now_ms` seen (before the snapshot written at close).
    pub(crate) fn expire_at_clock(&mut self, expiration_ms: i64) -> usize {
        if self.clock_ms == i64::MIN {
            return 0;
        }
        self.expire(self.clock_ms, expiration_ms)
    }

    /// Removes the producers whose last append is `expiration_ms` or more before `now_ms`
    /// (none if `expiration_ms` is negative), except those with changes not yet durable: the
    /// undo log restores them exactly. A rollback thus restores the durable state minus
    /// expired producers, which `check` ignores anyway. Returns how many were removed.
    pub(crate) fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.observe(now_ms);
        self.appends_since_expire = 0;
        if expiration_ms < 0 {
            return 0;
        }
        let pending: HashSet<i64> = self.undo.iter().map(|&(_, id, _)| id).collect();
        let before = self.producers.len();
        self.producers
            .retain(|id, entry| pending.contains(id) || !entry.expired(now_ms, expiration_ms));
        let expired = before - self.producers.len();
        if expired > 0 {
            tracing::debug!(expired, now_ms, expiration_ms, "producer ids expired");
        }
        expired
    }

    /// Marks the changes made by batches below `offset` as durable; later ones (appended
    /// while a flush was in flight) can still be rolled back.
    pub(crate) fn commit_below(&mut self, offset: i64) {
        let durable = self.undo.partition_point(|&(base, _, _)| base < offset);
        self.undo.drain(..durable);
    }

    pub(crate) fn undo_mark(&self) -> usize {
        self.undo.len()
    }

    /// Reverts the changes made after `mark`, newest first.
    pub(crate) fn rollback_to(&mut self, mark: usize) {
        assert!(mark <= self.undo.len());
        let mut lowest = i64::MAX;
        while self.undo.len() > mark {
            let Some((base, producer_id, prior)) = self.undo.pop() else {
                break;
            };
            lowest = lowest.min(base);
            self.restore(producer_id, prior);
        }
        self.forget_markers_from(lowest);
    }

    /// Reverts the changes made by batches at or after `offset` (a failed flush), then commits.
    pub(crate) fn rollback_from_offset(&mut self, offset: i64) {
        while self.undo.last().is_some_and(|&(base, _, _)| base >= offset) {
            let Some((_, producer_id, prior)) = self.undo.pop() else {
                break;
            };
            self.restore(producer_id, prior);
        }
        self.forget_markers_from(offset);
        self.undo.clear();
    }

    /// Snapshot bytes of the state as it was at `mark` (before the changes made after it).
    pub(crate) fn encode_at_mark(&self, mark: usize) -> Vec<u8> {
        assert!(mark <= self.undo.len());
        if mark == self.undo.len() {
            return self.encode();
        }
        let mut past = ProducerState {
            producers: self.producers.clone(),
            ongoing: self.ongoing.clone(),
            ended: self.ended.clone(),
            aborted: self.aborted.clone(),
            ..ProducerState::default()
        };
        let mut lowest = i64::MAX;
        for (base, producer_id, prior) in self.undo[mark..].iter().rev() {
            lowest = lowest.min(*base);
            past.restore(*producer_id, prior.clone());
        }
        past.forget_markers_from(lowest);
        past.encode()
    }

    /// Snapshot bytes (version 3): magic, count, entries (id, epoch, last timestamp,
    /// coordinator epoch, ongoing transaction's first offset or -1, batches), the aborted
    /// transactions (count, then id, first, last, LSO), the ended-but-unstable ones (count,
    /// then marker offset, first offset), CRC-32C of everything before it.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let mut bytes = Vec::with_capacity(
            4 + 8
                + 4
                + ids.len() * (SNAPSHOT_ENTRY_BYTES_V3 + SNAPSHOT_BATCH_BYTES)
                + 16
                + self.aborted.len() * SNAPSHOT_ABORTED_BYTES
                + self.ended.len() * SNAPSHOT_ENDED_BYTES,
        );
        bytes.extend_from_slice(SNAPSHOT_MAGIC_V3);
        bytes.extend_from_slice(&(ids.len() as u64).to_be_bytes());
        for id in ids {
            let entry = &self.producers[&id];
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(&entry.epoch.to_be_bytes());
            bytes.extend_from_slice(&entry.last_timestamp_ms.to_be_bytes());
            bytes.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            bytes.extend_from_slice(&entry.txn_first_offset.unwrap_or(-1).to_be_bytes());
            bytes.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                bytes.extend_from_slice(&batch.first_seq.to_be_bytes());
                bytes.extend_from_slice(&batch.last_seq.to_be_bytes());
                bytes.extend_from_slice(&batch.base_offset.to_be_bytes());
                bytes.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        bytes.extend_from_slice(&(self.aborted.len() as u64).to_be_bytes());
        for txn in &self.aborted {
            bytes.extend_from_slice(&txn.producer_id.to_be_bytes());
            bytes.extend_from_slice(&txn.first_offset.to_be_bytes());
            bytes.extend_from_slice(&txn.last_offset.to_be_bytes());
            bytes.extend_from_slice(&txn.last_stable_offset.to_be_bytes());
        }
        bytes.extend_from_slice(&(self.ended.len() as u64).to_be_bytes());
        for &(marker, first) in &self.ended {
            bytes.extend_from_slice(&marker.to_be_bytes());
            bytes.extend_from_slice(&first.to_be_bytes());
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// None if the snapshot is damaged. A version 1 snapshot has no timestamps: its entries
    /// get `load_ms`, so none expires before a full expiration after the load. More producers
    /// than the cap (possible in version 1) are trimmed, least recently used first.
    pub(crate) fn decode(bytes: &[u8], load_ms: i64) -> Option<ProducerState> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut reader = Reader { bytes: body };
        let magic = reader.take(4)?;
        let version = match magic {
            m if m == SNAPSHOT_MAGIC_V3 => 3,
            m if m == SNAPSHOT_MAGIC_V2 => 2,
            m if m == SNAPSHOT_MAGIC_V1 => 1,
            _ => return None,
        };
        let has_timestamps = version >= 2;
        let entry_bytes = match version {
            1 => SNAPSHOT_ENTRY_BYTES_V1,
            2 => SNAPSHOT_ENTRY_BYTES_V2,
            _ => SNAPSHOT_ENTRY_BYTES_V3,
        };
        let count = usize::try_from(u64::from_be_bytes(reader.take(8)?.try_into().ok()?)).ok()?;
        if count > SNAPSHOT_PRODUCERS_MAX || count * entry_bytes > reader.bytes.len() {
            return None;
        }
        let mut state = ProducerState::default();
        for _ in 0..count {
            let id = i64::from_be_bytes(reader.take(8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(reader.take(2)?.try_into().ok()?);
            let last_timestamp_ms = if has_timestamps {
                i64::from_be_bytes(reader.take(8)?.try_into().ok()?)
            } else {
                load_ms
            };
            let (coordinator_epoch, txn_first_offset) = if version >= 3 {
                let epoch = i32::from_be_bytes(reader.take(4)?.try_into().ok()?);
                let first = i64::from_be_bytes(reader.take(8)?.try_into().ok()?);
                (epoch, (first >= 0).then_some(first))
            } else {
                (-1, None)
            };
            let batch_count = usize::from(reader.take(1)?[0]);
            if batch_count > BATCHES_PER_PRODUCER_MAX {
                return None;
            }
            let mut batches = VecDeque::with_capacity(batch_count);
            for _ in 0..batch_count {
                let batch = reader.take(SNAPSHOT_BATCH_BYTES)?;
                batches.push_back(BatchMeta {
                    first_seq: i32::from_be_bytes(batch[0..4].try_into().ok()?),
                    last_seq: i32::from_be_bytes(batch[4..8].try_into().ok()?),
                    base_offset: i64::from_be_bytes(batch[8..16].try_into().ok()?),
                    last_offset: i64::from_be_bytes(batch[16..24].try_into().ok()?),
                });
            }
            let entry = ProducerEntry {
                epoch,
                last_timestamp_ms,
                batches,
                coordinator_epoch,
                txn_first_offset,
            };
            if let Some(first) = txn_first_offset {
                state.ongoing.insert((first, id));
            }
            if state.producers.insert(id, entry).is_some() {
                return None;
            }
        }
        if version >= 3 {
            let count =
                usize::try_from(u64::from_be_bytes(reader.take(8)?.try_into().ok()?)).ok()?;
            if count > reader.bytes.len() / SNAPSHOT_ABORTED_BYTES {
                return None;
            }
            state.aborted.reserve(count);
            for _ in 0..count {
                let t = reader.take(SNAPSHOT_ABORTED_BYTES)?;
                let txn = AbortedTxn {
                    producer_id: i64::from_be_bytes(t[0..8].try_into().ok()?),
                    first_offset: i64::from_be_bytes(t[8..16].try_into().ok()?),
                    last_offset: i64::from_be_bytes(t[16..24].try_into().ok()?),
                    last_stable_offset: i64::from_be_bytes(t[24..32].try_into().ok()?),
                };
                if state
                    .aborted
                    .last()
                    .is_some_and(|l| l.last_offset >= txn.last_offset)
                {
                    return None;
                }
                state.aborted.push(txn);
            }
            let count =
                usize::try_from(u64::from_be_bytes(reader.take(8)?.try_into().ok()?)).ok()?;
            if count > reader.bytes.len() / SNAPSHOT_ENDED_BYTES {
                return None;
            }
            for _ in 0..count {
                let t = reader.take(SNAPSHOT_ENDED_BYTES)?;
                state.ended.push_back((
                    i64::from_be_bytes(t[0..8].try_into().ok()?),
                    i64::from_be_bytes(t[8..16].try_into().ok()?),
                ));
            }
        }
        if !reader.bytes.is_empty() {
            return None;
        }
        state.evict_over_cap(None);
        Some(state)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
}

#[cfg(test)]
impl ProducerState {
    /// Version 1 snapshot bytes (no timestamps), as written before expiry existed.
    pub(crate) fn encode_v1(&self) -> Vec<u8> {
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(SNAPSHOT_MAGIC_V1);
        bytes.extend_from_slice(&(ids.len() as u64).to_be_bytes());
        for id in ids {
            let entry = &self.producers[&id];
            bytes.extend_from_slice(&id.to_be_bytes());
            bytes.extend_from_slice(&entry.epoch.to_be_bytes());
            bytes.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                bytes.extend_from_slice(&batch.first_seq.to_be_bytes());
                bytes.extend_from_slice(&batch.last_seq.to_be_bytes());
                bytes.extend_from_slice(&batch.base_offset.to_be_bytes());
                bytes.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EXPIRATION_MS: i64 = 1_000;

    /// A header of `count` records from `producer_id` at `base_offset`, max timestamp `ts`.
    fn header(producer_id: i64, seq: i32, count: i32, base_offset: i64, ts: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: ts,
            max_timestamp: ts,
            producer_id,
            producer_epoch: 0,
            base_sequence: seq,
            records_count: count,
        }
    }

    /// Checks and applies like an append at `now_ms`.
    fn append(state: &mut ProducerState, header: &BatchHeader, now_ms: i64) -> SequenceCheck {
        let check = state.check(header, None, now_ms, EXPIRATION_MS).unwrap();
        if check == SequenceCheck::Append {
            state.apply(header, None, now_ms);
        }
        check
    }

    #[test]
    fn expired_producer_is_unknown_and_accepted_at_any_sequence() {
        let mut state = ProducerState::default();
        append(&mut state, &header(1, 0, 2, 0, 5), 100);
        // The entry is timed by the append's now_ms, not the batch's timestamp.
        assert_eq!(state.get(1).unwrap().last_timestamp_ms, 100);
        let gap = header(1, 9, 1, 2, 5);
        let just_before = 100 + EXPIRATION_MS - 1;
        assert!(matches!(
            state.check(&gap, None, just_before, EXPIRATION_MS),
            Err(StorageError::OutOfOrderSequence { expected: 2, .. })
        ));
        assert_eq!(
            state
                .check(&gap, None, 100 + EXPIRATION_MS, EXPIRATION_MS)
                .unwrap(),
            SequenceCheck::Append
        );
        // A negative expiration never expires.
        assert!(state.check(&gap, None, i64::MAX, -1).is_err());
        // The sweep keeps entries with undone changes, then removes expired ones.
        assert_eq!(state.expire(100 + EXPIRATION_MS, EXPIRATION_MS), 0);
        state.commit_below(i64::MAX);
        assert_eq!(state.expire(just_before, EXPIRATION_MS), 0);
        assert_eq!(state.expire(100 + EXPIRATION_MS, EXPIRATION_MS), 1);
        assert!(state.get(1).is_none());
        // Accepted again at any sequence; the old batch is no longer a duplicate.
        let now = 100 + EXPIRATION_MS;
        assert_eq!(append(&mut state, &gap, now), SequenceCheck::Append);
        assert_eq!(state.get(1).unwrap().batches.len(), 1);
        assert!(state
            .check(&header(1, 0, 2, 3, 5), None, now, EXPIRATION_MS)
            .is_err());
    }

    #[test]
    fn expired_but_unswept_producer_restarts_like_a_replay() {
        let mut live = ProducerState::default();
        let first = header(1, 0, 2, 0, 10);
        let restart = header(1, 40, 1, 2, 10 + EXPIRATION_MS);
        append(&mut live, &first, 10);
        assert_eq!(
            append(&mut live, &restart, 10 + EXPIRATION_MS),
            SequenceCheck::Append
        );
        let mut replayed = ProducerState::default();
        replayed.replay(&first, None);
        replayed.replay(&restart, None);
        assert_eq!(live.get(1), replayed.get(1));
        assert_eq!(live.get(1).unwrap().batches.len(), 1);
    }

    #[test]
    fn replay_uses_max_timestamp_and_never_goes_back() {
        let mut state = ProducerState::default();
        state.replay(&header(1, 0, 1, 0, 500), None);
        state.replay(&header(1, 1, 1, 1, 300), None);
        assert_eq!(state.get(1).unwrap().last_timestamp_ms, 500);
    }

    #[test]
    fn snapshot_round_trip_keeps_timestamps() {
        let mut state = ProducerState::default();
        for id in 0..20 {
            for k in 0..7 {
                append(
                    &mut state,
                    &header(id, k, 1, id * 100 + i64::from(k), 0),
                    10 * id,
                );
            }
        }
        let bytes = state.encode();
        assert_eq!(&bytes[..4], SNAPSHOT_MAGIC_V3);
        let decoded = ProducerState::decode(&bytes, 999_999).unwrap();
        assert_eq!(decoded.producers, state.producers);
        assert_eq!(decoded.get(7).unwrap().last_timestamp_ms, 70);
        assert_eq!(decoded.encode(), bytes);
        // Any damage is detected.
        for cut in [0, 4, 12, bytes.len() - 1] {
            assert!(ProducerState::decode(&bytes[..cut], 0).is_none());
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(ProducerState::decode(&flipped, 0).is_none());
    }

    #[test]
    fn version_1_snapshot_loads_with_the_load_time() {
        let mut state = ProducerState::default();
        append(&mut state, &header(3, 0, 2, 0, 0), 10);
        append(&mut state, &header(4, 0, 1, 2, 0), 20);
        let bytes = state.encode_v1();
        assert_eq!(&bytes[..4], SNAPSHOT_MAGIC_V1);
        let decoded = ProducerState::decode(&bytes, 5_000).unwrap();
        for id in [3, 4] {
            let entry = decoded.get(id).unwrap();
            assert_eq!(entry.last_timestamp_ms, 5_000);
            assert_eq!(entry.batches, state.get(id).unwrap().batches);
        }
        // Nothing expires before a whole expiration after the load.
        let retry = header(3, 0, 2, 0, 0);
        assert!(matches!(
            decoded.check(&retry, None, 5_000 + EXPIRATION_MS - 1, EXPIRATION_MS),
            Ok(SequenceCheck::Duplicate { base_offset: 0, .. })
        ));
    }

    #[test]
    fn undo_restores_timestamps_and_evictions() {
        let mut state = ProducerState::with_producers_max(2);
        append(&mut state, &header(1, 0, 1, 0, 0), 10);
        append(&mut state, &header(2, 0, 1, 1, 0), 20);
        state.commit_below(2);
        let durable = state.producers.clone();
        // A later append of producer 1 moves its time; a new producer evicts producer 2.
        append(&mut state, &header(1, 1, 1, 2, 0), 30);
        append(&mut state, &header(3, 0, 1, 3, 0), 40);
        assert_eq!(state.len(), 2);
        assert!(state.get(2).is_none());
        assert_eq!(state.get(1).unwrap().last_timestamp_ms, 30);
        assert_eq!(
            ProducerState::decode(&state.encode_at_mark(0), 0)
                .unwrap()
                .producers,
            durable
        );
        state.rollback_from_offset(2);
        assert_eq!(state.producers, durable);
        assert_eq!(state.undo_mark(), 0);
    }

    #[test]
    fn cap_evicts_least_recently_used() {
        let mut state = ProducerState::with_producers_max(4);
        for id in 0..4 {
            append(&mut state, &header(id, 0, 1, id, 0), 10 + id);
        }
        // Producer 0 appends again: now producer 1 is the least recently used.
        append(&mut state, &header(0, 1, 1, 4, 0), 100);
        append(&mut state, &header(9, 0, 1, 5, 0), 101);
        assert_eq!(state.len(), 4);
        assert!(state.get(1).is_none());
        for id in [0, 2, 3, 9] {
            assert!(state.get(id).is_some(), "{id}");
        }
        // An evicted producer is unknown again: accepted at any sequence.
        assert_eq!(
            append(&mut state, &header(1, 77, 1, 6, 0), 102),
            SequenceCheck::Append
        );
        assert!(state.get(2).is_none());
        // The default cap evicts a batch at once, keeping the producer being applied, even
        // when it looks oldest (a replayed batch with an old timestamp).
        let mut state = ProducerState::default();
        let max = PRODUCERS_PER_PARTITION_MAX as i64;
        for id in 0..max {
            state.replay(&header(id, 0, 1, id, 1_000 + id), None);
        }
        assert_eq!(state.len(), PRODUCERS_PER_PARTITION_MAX);
        state.replay(&header(max, 0, 1, max, 0), None);
        assert_eq!(
            state.len(),
            PRODUCERS_PER_PARTITION_MAX - PRODUCERS_PER_PARTITION_MAX / PRODUCERS_EVICT_DIVISOR
        );
        assert!(state.get(max).is_some());
        assert!(state.get(0).is_none());
        assert!(state.get(max - 1).is_some());
    }

    #[test]
    fn periodic_sweep_runs_every_interval_appends() {
        let mut state = ProducerState::default();
        append(&mut state, &header(1, 0, 1, 0, 0), 0);
        state.commit_below(i64::MAX);
        let now = 10 * EXPIRATION_MS;
        for _ in 0..EXPIRE_INTERVAL_APPENDS - 1 {
            state.maybe_expire(now, EXPIRATION_MS);
        }
        assert_eq!(state.len(), 1);
        state.maybe_expire(now, EXPIRATION_MS);
        assert_eq!(state.len(), 0);
        assert_eq!(state.clock_ms(), now);
    }
}
