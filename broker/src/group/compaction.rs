//! Compaction of `__consumer_offsets` by rewrite: the records of the offsets log are keyed
//! (latest value per key wins at load, a null value is a tombstone), so once a partition has
//! [`COMPACT_SEGMENTS_MIN`] segments its shard re-appends the live values and deletes the
//! segments below them.
//!
//! One round, per offsets partition the shard owns (`compact_partition`):
//! 1. Read the partition from its log start to X, folding the latest (key → value) per
//!    encoded key and the offset of that latest record. Only durable records are read: before
//!    reading [X, end) the round waits until `end` is durable. It then reads on from X until
//!    the log end has not moved, so X = the log end offset when the read finishes.
//! 2. With no `.await` between that last check and the appends (the shard is one thread and
//!    `PartitionLog::append` is synchronous), re-append every live value, in the order of
//!    their latest records, as record batches of at most the topic's `max.message.bytes`.
//!    This is the compaction's exclusion of the coordinator's writers: they append
//!    synchronously too, so none can land between the read reaching X and the re-append;
//!    writers never wait for the compaction, it catches up with them instead (bounded by
//!    [`CATCH_UP_ROUNDS_MAX`], after which the round is abandoned and retried later).
//!    A round whose live values are more than half the bytes read stops before appending.
//! 3. Wait until the re-appended records are durable, then `delete_segments_below(X)`.
//!
//! Correctness: every key live below X (its latest record below X has a value) has that latest
//! value re-appended at or after X, and no record for it was written in [X, re-append) — the
//! log end was X. So replaying the log from any start offset ≤ X gives every key the same
//! latest value as before, and dropping whole segments below X loses nothing; a key whose
//! latest record below X is a tombstone has no record left once those segments are gone, so
//! tombstoned keys vanish. The re-append keeps the relative order of the keys' latest records,
//! so the load's cross-key rules (a `Group` record after a `ConsumerGroup` one makes the group
//! classic) see the same order. The load's rule that a `Group` tombstone drops the group
//! relies on the writers: deleting or expiring a group also tombstones its offsets and its
//! `ConsumerGroup` key, so no live key of a deleted group survives compaction.
//! If anything fails (an append, a flush), nothing is deleted: records re-appended at or
//! after X repeat latest values, which is harmless.
//!
//! Transactions: a TxnOffsetCommit's records count only once their COMMIT marker is read (an
//! ABORT drops them), as at load; a round that finds a transaction still open below X stops,
//! since deleting its records would leave its marker nothing to commit.
//!
//! Owned by: the partition's shard.

use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;

use super::records::{self, Key, Value};
use super::{offsets_partitions, OFFSETS_TOPIC};
use spool_storage::StorageError;

use crate::runtime;
use crate::shard::partition::Partition;
use crate::shard::{now_ms, Shard};

/// How often each owned offsets partition's segment count is checked.
pub const COMPACTION_CHECK_INTERVAL_MS: u64 = 1_000;
/// A partition is compacted once it has this many segments (the active one included).
pub const COMPACT_SEGMENTS_MIN: usize = 3;
/// Reads of records appended during a round before the round gives up for now.
pub const CATCH_UP_ROUNDS_MAX: usize = 8;
/// Bytes read per step (as the load).
const READ_BYTES: usize = super::coordinator::LOAD_READ_BYTES;
/// A round rewrites only if the live values are at most this fraction (1/n) of the bytes
/// read, so a partition whose data is mostly live is not rewritten every check.
const LIVE_FRACTION_MAX_DIV: usize = 2;
/// Upper bound of a record's framing in a batch (length, attributes, deltas, key and value
/// lengths, header count: varints), used to keep re-appended batches within
/// `max.message.bytes`.
const RECORD_OVERHEAD_BYTES: usize = 32;
/// A magic-2 batch header.
const BATCH_HEADER_BYTES: usize = 61;

/// Why a round stopped before deleting anything; the next check retries.
#[derive(Debug, thiserror::Error)]
enum CompactionError {
    #[error("records up to {offset} did not become durable: error {code}")]
    NotDurable { offset: i64, code: i16 },
    #[error("writes kept arriving for {CATCH_UP_ROUNDS_MAX} reads")]
    Busy,
    #[error("{OFFSETS_TOPIC} is gone")]
    TopicGone,
    #[error("nothing read at {offset} below {end}")]
    ShortRead { offset: i64, end: i64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The latest record of one key below the read position.
struct Latest {
    offset: i64,
    key: Key,
    value: Option<Value>,
    /// Encoded key + value bytes.
    bytes: usize,
}

/// Every `COMPACTION_CHECK_INTERVAL_MS`, once the offsets are loaded: compacts each owned
/// offsets partition that has `COMPACT_SEGMENTS_MIN` segments or more.
pub async fn compaction_loop(shard: Rc<Shard>) {
    loop {
        runtime::sleep(Duration::from_millis(COMPACTION_CHECK_INTERVAL_MS)).await;
        if shard.shutting_down.get() {
            return;
        }
        if !shard.groups.is_loaded() {
            continue;
        }
        for index in 0..offsets_partitions(&shard) {
            if shard.owner(OFFSETS_TOPIC, index) != shard.id {
                continue;
            }
            let Some(p) = shard.partition(OFFSETS_TOPIC, index) else {
                continue;
            };
            // A replicated partition's log is its Raft log: deleting segments behind openraft
            // would leave replicas different (and a lagging follower a hole). Its compaction
            // has to go through the group (snapshot + purge) and is not built yet.
            if p.group.borrow().is_some() {
                continue;
            }
            if p.log.segment_count() < COMPACT_SEGMENTS_MIN || p.deleted.get() {
                continue;
            }
            match compact_partition(&shard, &p).await {
                Ok(deleted) => tracing::info!(partition = index, deleted, "compacted offsets"),
                Err(e) => tracing::warn!(partition = index, "offsets compaction: {e}"),
            }
        }
    }
}

/// One compaction round (see the module header). Returns how many segments it deleted.
async fn compact_partition(shard: &Rc<Shard>, p: &Rc<Partition>) -> Result<usize, CompactionError> {
    let mut latest: AHashMap<Bytes, Latest> = AHashMap::new();
    let mut pending: AHashMap<i64, Vec<(Bytes, Latest)>> = AHashMap::new();
    let mut x = p.log.log_start_offset();
    let mut caught_up = false;
    let mut read_bytes = 0usize;
    for _ in 0..CATCH_UP_ROUNDS_MAX {
        let end = p.log.log_end_offset();
        if end == x {
            caught_up = true;
            break;
        }
        wait_durable(p, end - 1).await?;
        read_bytes += read_latest(p, x, end, &mut latest, &mut pending).await?;
        x = end;
    }
    // No `.await` from here to the last append: no writer can come between.
    if !caught_up || p.log.log_end_offset() != x {
        return Err(CompactionError::Busy);
    }
    // A transaction with offsets below X and no marker yet: its records would go with the
    // segments, and a later COMMIT would find nothing. Compact once it has ended.
    if !pending.is_empty() {
        return Err(CompactionError::Busy);
    }
    let mut live: Vec<Latest> = latest.into_values().filter(|l| l.value.is_some()).collect();
    live.sort_unstable_by_key(|l| l.offset);
    let live_bytes: usize = live.iter().map(|l| l.bytes + RECORD_OVERHEAD_BYTES).sum();
    if live_bytes.saturating_mul(LIVE_FRACTION_MAX_DIV) > read_bytes {
        tracing::debug!(live_bytes, read_bytes, "offsets mostly live: not compacted");
        return Ok(0);
    }
    let last = reappend(shard, p, &live)?;
    if let Some(last) = last {
        wait_durable(p, last).await?;
    }
    Ok(p.log.delete_segments_below(x).await?)
}

async fn wait_durable(p: &Partition, offset: i64) -> Result<(), CompactionError> {
    let code = p.wait_durable(offset).recv().await.unwrap_or(-1);
    if code != 0 {
        return Err(CompactionError::NotDurable { offset, code });
    }
    Ok(())
}

/// Folds the records in [from, to) into `latest` (later records replace earlier ones), as the
/// load does: a transaction's records (TxnOffsetCommit) wait in `pending` for their marker, and
/// count only if it is a COMMIT. Returns the bytes read.
async fn read_latest(
    p: &Partition,
    from: i64,
    to: i64,
    latest: &mut AHashMap<Bytes, Latest>,
    pending: &mut AHashMap<i64, Vec<(Bytes, Latest)>>,
) -> Result<usize, CompactionError> {
    let mut offset = from;
    let mut read_bytes = 0;
    while offset < to {
        let read = p.log.read(offset, READ_BYTES, to).await?;
        if read.batches.is_empty() {
            return Err(CompactionError::ShortRead { offset, end: to });
        }
        for batch in &read.batches {
            read_bytes += batch.len();
            let producer = spool_protocol::batch::BatchHeader::parse(batch)
                .ok()
                .filter(|h| h.has_producer_id());
            if let Some(h) = producer.filter(|h| h.is_control()) {
                let ended = pending.remove(&h.producer_id).unwrap_or_default();
                if spool_protocol::control::decode_txn_marker(batch).is_some_and(|m| m.commit) {
                    // By log offset, as the load's `apply_offset`: a plain commit or a
                    // tombstone written after the transaction's record wins over it.
                    for (key, entry) in ended {
                        if latest.get(&key).is_none_or(|l| l.offset < entry.offset) {
                            latest.insert(key, entry);
                        }
                    }
                }
                offset = records::next_offset(batch).unwrap_or(to).max(offset + 1);
                continue;
            }
            // Undecodable batches are skipped, as the load skips them.
            match records::decode_batch(batch) {
                Ok(entries) => {
                    for (log_offset, key, value) in entries {
                        let encoded = records::encode_key(&key);
                        let bytes = encoded.len()
                            + value.as_ref().map_or(0, |v| records::encode_value(v).len());
                        let entry = Latest {
                            offset: log_offset,
                            key,
                            value,
                            bytes,
                        };
                        match producer {
                            Some(h) => pending
                                .entry(h.producer_id)
                                .or_default()
                                .push((encoded, entry)),
                            None => {
                                latest.insert(encoded, entry);
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(offset, "compaction skips a batch: {e}"),
            }
            offset = records::next_offset(batch).unwrap_or(to).max(offset + 1);
        }
    }
    Ok(read_bytes)
}

/// Appends `live` in order as batches within the topic's `max.message.bytes`, synchronously,
/// and queues the partition for the group commit. Returns the last offset appended.
fn reappend(
    shard: &Rc<Shard>,
    p: &Rc<Partition>,
    live: &[Latest],
) -> Result<Option<i64>, CompactionError> {
    let max_bytes = {
        let topics = shard.topics.borrow();
        let meta = topics
            .get(OFFSETS_TOPIC)
            .ok_or(CompactionError::TopicGone)?;
        shard.log_config(meta).max_message_bytes as usize
    };
    let mut last = None;
    let mut chunk: Vec<(Key, Option<Value>)> = Vec::new();
    let mut chunk_bytes = BATCH_HEADER_BYTES;
    for (i, l) in live.iter().enumerate() {
        chunk.push((l.key.clone(), l.value.clone()));
        chunk_bytes += l.bytes + RECORD_OVERHEAD_BYTES;
        let next_bytes = live
            .get(i + 1)
            .map_or(usize::MAX, |n| n.bytes + RECORD_OVERHEAD_BYTES);
        if chunk_bytes.saturating_add(next_bytes) <= max_bytes {
            continue;
        }
        let now = now_ms();
        let batch = records::encode_batch(&chunk, now);
        let info = p.log.append(batch, 0, now)?;
        shard.mark_dirty(p);
        last = Some(info.last_offset);
        chunk.clear();
        chunk_bytes = BATCH_HEADER_BYTES;
    }
    assert!(chunk.is_empty());
    Ok(last)
}
