//! Spool's partition log: segments, sparse indexes, recovery, retention, producer state.
//!
//! Architecture invariant: `storage` knows nothing about Kafka requests or sockets. It stores
//! Kafka record batches (magic 2) because that is the on-disk format, and it will serve directly
//! as the Raft log of a partition: record data is never written twice.
//!
//! Owned by: the partition's shard. Every type here is `!Send` by design. Every
//! `PartitionLog` method takes `&self` (except the consuming `close` / `delete`), so the shard
//! may append, read, flush and enforce retention on one log concurrently; the rules (no state
//! borrow across an `.await`, one flush-gate holder at a time) are in `log.rs`.
//!
//! Code map: `log` (append, flush, read), `cleaner` (log compaction: plan, rewrite, swap), `offset_map` (its bounded key map), `recovery` (open, close), `clean` (what a clean close leaves for the next open: records, shard books), `maintenance` (truncation,
//! restart at an offset, retention), `raft_snapshot` (a Raft snapshot's state, restart from one), `side_file` (small durable files beside the log), `sync_rounds` (a shard's durability rounds: one device flush for many logs),
//! `segment` (one segment and batch scanning), `index` (sparse indexes), `producer`
//! (idempotent-producer state), `epoch` (leader epoch cache), `tail` (in-memory tail cache),
//! `entry_index` (Raft entry index sidecars), `entries` (the entry API of a log used as a
//! Raft log), `fs` (the I/O seam: O_DIRECT files or an in-memory file system with fault injection).

use std::path::PathBuf;

use bytes::Bytes;

mod clean;
mod cleaner;
mod entries;
mod entry_index;
mod epoch;
mod fs;
mod index;
mod log;
mod maintenance;
mod offset_map;
mod producer;
mod raft_snapshot;
mod recovery;
mod segment;
mod side_file;
mod sync_rounds;
mod tail;
#[cfg(test)]
mod tests;
mod txn_index;

pub use crate::clean::{
    take_books, CleanBook, CleanBookWriter, CleanFrom, CleanRecord, CLEAN_BOOK_BYTES_MAX,
    CLEAN_BOOK_PREFIX, CLEAN_RECORD_BYTES_MAX,
};
pub use crate::cleaner::{CleanStats, CLEANER_CHECKPOINT_FILE};
pub use crate::entries::EntryStamp;
pub use crate::entry_index::{EntryInfo, RAFT_TAIL_ENTRIES_MAX};
pub use crate::fs::{failpoints, Backend, MemFs, MemOp};
pub use crate::log::PartitionLog;
pub use crate::offset_map::{OffsetMap, OFFSET_MAP_ENTRY_BYTES};
pub use crate::producer::{AbortedTxn, ProducerInfo, SequenceCheck};
pub use crate::raft_snapshot::producer_snapshot_is_valid;
pub use crate::side_file::{SIDE_FILE_BYTES_MAX, SNAPSHOT_FILE_BYTES_MAX};
pub use crate::sync_rounds::{
    SyncRounds, SyncScope, SyncStats, SYNC_FILESYSTEMS_MAX, SYNC_ROUND_MEMBERS_MAX,
};

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Per-partition log settings, named after Kafka's topic configs.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes` (Kafka default 1 GiB).
    pub segment_bytes: u64,
    /// `segment.ms` (Kafka default 7 days).
    pub segment_ms: i64,
    /// `retention.ms`, -1 = unlimited (Kafka default 7 days).
    pub retention_ms: i64,
    /// `retention.bytes`, -1 = unlimited (Kafka default).
    pub retention_bytes: i64,
    /// `max.message.bytes` (Kafka default 1048588): largest batch accepted.
    pub max_message_bytes: u32,
    /// `index.interval.bytes` (Kafka default 4096).
    pub index_interval_bytes: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// Bytes of recently appended batches kept in memory to serve caught-up readers.
    pub tail_cache_bytes_max: usize,
    /// `producer.id.expiration.ms` (Kafka default 86400000 = 24 h): a producer id is forgotten
    /// this long after its last append; -1 = never.
    pub producer_id_expiration_ms: i64,
    /// `cleanup.policy` and the compaction settings.
    pub compaction: Compaction,
}

/// `cleanup.policy` and the settings of log compaction, named after Kafka's topic configs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compaction {
    /// `cleanup.policy` holds `compact`.
    pub compact: bool,
    /// `cleanup.policy` holds `delete`: retention deletes old segments.
    pub delete: bool,
    /// `min.cleanable.dirty.ratio` (Kafka default 0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms` (Kafka default 0).
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms` (Kafka default Long.MAX_VALUE).
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms` (Kafka default 86400000): how long tombstones and empty
    /// transaction markers stay after the cleaning that first kept them.
    pub delete_retention_ms: i64,
}

impl Default for Compaction {
    /// Kafka's defaults: `cleanup.policy=delete`.
    fn default() -> Compaction {
        Compaction {
            compact: false,
            delete: true,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("corrupt record batch at byte {position}: {reason}")]
    CorruptBatch {
        position: usize,
        reason: &'static str,
    },
    #[error("invalid record batch: {reason}")]
    InvalidRecord { reason: &'static str },
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: u32 },
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {epoch} is older than current {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error(
        "marker of coordinator epoch {epoch} for producer {producer_id} is older than {current}"
    )]
    TransactionCoordinatorFenced {
        producer_id: i64,
        epoch: i32,
        current: i32,
    },
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("segment {path} is corrupt at byte {position}")]
    SegmentCorrupt { path: PathBuf, position: u64 },
    #[error("side file {path} has {size} bytes, more than {max}")]
    SideFileTooLarge {
        path: PathBuf,
        size: u64,
        max: usize,
    },
    #[error("entry index {path} is corrupt: {reason}")]
    CorruptEntryIndex { path: PathBuf, reason: &'static str },
    #[error("aborted transaction index {path} is corrupt: {reason}")]
    CorruptTxnIndex { path: PathBuf, reason: &'static str },
    #[error("entry index {index} is out of range [{first}, {next}]")]
    EntryOutOfRange { index: u64, first: u64, next: u64 },
    #[error("an entry must be exactly one record batch")]
    NotOneBatch,
    #[error("a replicated entry at offset {base_offset} epoch {epoch} where the log expects offset {expected_offset} epoch {expected_epoch}")]
    MisplacedEntry {
        base_offset: i64,
        epoch: i32,
        expected_offset: i64,
        expected_epoch: i32,
    },
    #[error("the batch repeats offsets {base_offset}..={last_offset} of the producer; an entry must be new")]
    DuplicateEntry { base_offset: i64, last_offset: i64 },
    #[error("snapshot is corrupt: {reason}")]
    CorruptSnapshot { reason: &'static str },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    /// True when the batch was a retry of one of the producer's last 5 batches; nothing was
    /// written and the offsets are the original ones.
    pub duplicate: bool,
}

/// Whole record batches starting with the one that contains the requested offset.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub batches: Vec<Bytes>,
}
