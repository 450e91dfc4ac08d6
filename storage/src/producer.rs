//! Idempotent-producer state (Kafka semantics): per producer id, its epoch and the metadata of
//! its last [`BATCHES_PER_PRODUCER_MAX`] batches, used to accept in-sequence batches, answer
//! retries as duplicates, and reject gaps and zombie epochs.
//!
//! Changes made by appends that are not yet durable are recorded in an undo log, so a failed
//! flush (or a rejected multi-batch append) restores exactly the state of the durable log.
//! Snapshots (`<offset>.snapshot`) hold the state as of an offset; recovery loads the newest one
//! at or below the log end and replays the batches after it.

use std::collections::{HashMap, VecDeque};

use spool_protocol::batch::{sequence_add, BatchHeader};

use crate::StorageError;

/// Batches remembered per producer for duplicate detection (Kafka's value).
pub(crate) const BATCHES_PER_PRODUCER_MAX: usize = 5;
/// Producers a snapshot may hold; a larger count means the file is damaged.
const SNAPSHOT_PRODUCERS_MAX: usize = 10_000_000;
const SNAPSHOT_MAGIC: &[u8; 4] = b"SPPS";
const SNAPSHOT_ENTRY_BYTES: usize = 8 + 2 + 1;
const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 8;

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
    pub batches: VecDeque<BatchMeta>,
}

/// What an append of one batch must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    Append,
    Duplicate { base_offset: i64, last_offset: i64 },
}

#[derive(Debug, Default)]
pub(crate) struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// (batch base offset, producer id, prior entry) for changes since the last commit,
    /// oldest first.
    undo: Vec<(i64, i64, Option<ProducerEntry>)>,
}

impl ProducerState {
    /// Checks a batch against the producer's state; does not change anything.
    pub(crate) fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, StorageError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        let producer_id = header.producer_id;
        // Kafka 4 accepts an unknown producer at any sequence and starts tracking it.
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

    /// Records an appended batch (offsets already assigned), remembering how to undo it.
    pub(crate) fn apply(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() {
            return;
        }
        let prior = self.producers.get(&header.producer_id).cloned();
        self.undo
            .push((header.base_offset, header.producer_id, prior));
        self.replay(header);
    }

    /// Records a batch read back from the log during recovery (no undo).
    pub(crate) fn replay(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert(ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_PER_PRODUCER_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: header.base_sequence,
            last_seq: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
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
        while self.undo.len() > mark {
            let Some((_, producer_id, prior)) = self.undo.pop() else {
                break;
            };
            restore(&mut self.producers, producer_id, prior);
        }
    }

    /// Reverts the changes made by batches at or after `offset` (a failed flush), then commits.
    pub(crate) fn rollback_from_offset(&mut self, offset: i64) {
        while self.undo.last().is_some_and(|&(base, _, _)| base >= offset) {
            let Some((_, producer_id, prior)) = self.undo.pop() else {
                break;
            };
            restore(&mut self.producers, producer_id, prior);
        }
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
            undo: Vec::new(),
        };
        for (_, producer_id, prior) in self.undo[mark..].iter().rev() {
            restore(&mut past.producers, *producer_id, prior.clone());
        }
        past.encode()
    }

    /// Snapshot bytes: magic, count, entries, CRC-32C of everything before it.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
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

    /// None if the snapshot is damaged.
    pub(crate) fn decode(bytes: &[u8]) -> Option<ProducerState> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut reader = Reader { bytes: body };
        if reader.take(4)? != SNAPSHOT_MAGIC {
            return None;
        }
        let count = usize::try_from(u64::from_be_bytes(reader.take(8)?.try_into().ok()?)).ok()?;
        if count > SNAPSHOT_PRODUCERS_MAX || count * SNAPSHOT_ENTRY_BYTES > reader.bytes.len() {
            return None;
        }
        let mut state = ProducerState::default();
        for _ in 0..count {
            let id = i64::from_be_bytes(reader.take(8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(reader.take(2)?.try_into().ok()?);
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
            state.producers.insert(id, ProducerEntry { epoch, batches });
        }
        reader.bytes.is_empty().then_some(state)
    }
}

fn restore(producers: &mut HashMap<i64, ProducerEntry>, id: i64, prior: Option<ProducerEntry>) {
    match prior {
        Some(entry) => producers.insert(id, entry),
        None => producers.remove(&id),
    };
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
