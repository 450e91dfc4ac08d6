//! Log compaction of one partition log (ARCHITECTURE.md, "Compaction"): Kafka's `LogCleaner`
//! with offsets preserved, for logs that are not Raft logs.
//!
//! One cleaning ([`PartitionLog::clean`]):
//! 1. **Plan** (one short borrow): the cleanable range is the prefix of sealed, durable
//!    segments that end at or below the last stable offset (an open transaction is never
//!    cleaned) and whose newest record is older than `min.compaction.lag.ms`. Its *dirty* part
//!    starts at the cleaner checkpoint (the side file [`CLEANER_CHECKPOINT_FILE`]). The round
//!    runs when dirty / cleanable bytes ≥ `min.cleanable.dirty.ratio`, when the first batch
//!    of a dirty sealed segment is older than `max.compaction.lag.ms` (Kafka's
//!    `maxCompactionDelay`), or when a delete horizon set by an earlier round has passed
//!    (KIP-534; kept in the checkpoint).
//! 2. **Offset map**: each key's last offset in the dirty part, skipping markers and aborted
//!    transactions, in the caller's bounded [`OffsetMap`]. A full map ends the round's dirty
//!    range there (Kafka's rule); the rest waits for the next round.
//! 3. **Rewrite**, group by group (consecutive segments from the log start; a segment joins
//!    the group while the output so far plus its size fits `segment.bytes`): a record stays unless the map holds a later offset for its
//!    key, it has no key, it belongs to an aborted transaction, or it is a tombstone whose
//!    batch's delete horizon has passed. A batch keeping a tombstone gets a horizon of now +
//!    `delete.retention.ms` the first time. A COMMIT/ABORT marker whose transaction kept no
//!    record gets a horizon likewise and goes once it passed. Batches keep their base offset,
//!    last offset delta and producer fields (`spool_protocol::compact`); a batch left without
//!    records is dropped (producer state lives in snapshots taken at rolls, above every
//!    cleanable segment, so nothing replays it).
//! 4. **Swap** (under the log's gate, a few renames): the output, written as
//!    `<base>.cleaned` and fdatasynced, is renamed `<base>-<end>.swap` and the directory synced
//!    (the commit point); the replaced segments' files are retired; the swap becomes
//!    `<base>.log`. [`recover_swaps`] finishes a swap found on open and drops a `.cleaned`.
//!    Readers holding an old segment's file keep reading it.
//!
//! Memory: the offset map (its budget), one scan chunk, one decoded batch and the output
//! buffer ([`CLEANER_WRITE_BUFFER_BYTES`]), whatever the log's size. A Raft log (a replicated
//! partition's) is cleaned below its high watermark with every batch kept, emptied ones as
//! bare headers, so each entry keeps its index (see [`PartitionLog::clean`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use spool_protocol::batch::{self, BatchHeader};
use spool_protocol::compact::{self, Retained};

use crate::entry_index;
use crate::fs::{failpoints, pad_to_alignment, Backend, SegmentFile};
use crate::log::{close_shared, io_error, marker_of, write_indexes_of, PartitionLog};
use crate::offset_map::OffsetMap;
use crate::producer::AbortedTxn;
use crate::segment::{self, Segment, SegmentView};
use crate::txn_index;
use crate::StorageError;

/// The side file holding the end of the last cleaning's dirty range (8 bytes, then CRC-32C).
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-checkpoint";
/// Output bytes a rewrite buffers before writing them (aligned part only).
pub const CLEANER_WRITE_BUFFER_BYTES: usize = 1 << 20;
/// Bytes read per I/O by the cleaner: small enough that decoding one chunk's batches is a short
/// slice of the shard's time.
const CLEANER_READ_CHUNK_BYTES: usize = 256 << 10;
const CLEANED_SUFFIX: &str = ".cleaned";
const SWAP_SUFFIX: &str = ".swap";

/// What one cleaning did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// The dirty range this round covered: `[dirty_start, dirty_end)`.
    pub dirty_start: i64,
    pub dirty_end: i64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// Keys the offset map held (its memory: this × `OFFSET_MAP_ENTRY_BYTES`).
    pub map_keys: usize,
    /// Wall time of the round, in microseconds.
    pub elapsed_us: u64,
}

/// What a round cleans, copied out of the log state.
struct CleanPlan {
    /// The cleanable segments, oldest first.
    segments: Vec<(SegmentView, i64)>,
    /// A Raft log: each segment's first entry index and entry count.
    entries: Option<Vec<(u64, u64)>>,
    dirty_start: i64,
    cleanable_end: i64,
    aborted: Vec<AbortedTxn>,
    segment_bytes: u64,
    index_interval_bytes: u64,
    delete_retention_ms: i64,
}

pub(crate) fn cleaned_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}{CLEANED_SUFFIX}"))
}

fn swap_path(dir: &Path, base_offset: i64, end_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}-{end_offset:020}{SWAP_SUFFIX}"))
}

/// `<20 digits>-<20 digits>.swap` → (base, end).
fn parse_swap_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(SWAP_SUFFIX)?;
    let (base, end) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(base) && digits(end)).then(|| Some((base.parse().ok()?, end.parse().ok()?)))?
}

/// On open, before segments are listed: finishes every committed swap (removes the segments
/// it replaces, then renames it into place) and removes unfinished `.cleaned` outputs.
/// Returns whether it changed the directory (the caller lists it again).
pub(crate) async fn recover_swaps(
    backend: &Backend,
    dir: &Path,
    names: &[String],
) -> Result<bool, StorageError> {
    let mut changed = false;
    for name in names {
        if name.ends_with(CLEANED_SUFFIX) {
            let path = dir.join(name);
            backend.remove_file(&path).await.map_err(io_error(&path))?;
            changed = true;
        }
    }
    for name in names {
        let Some((base, end)) = parse_swap_name(name) else {
            continue;
        };
        let replaced = names
            .iter()
            .filter_map(|other| segment::parse_file_name(other, "log"))
            .filter(|&other| other >= base && other < end);
        for old in replaced.chain(std::iter::once(base)) {
            for path in [
                segment::log_path(dir, old),
                segment::index_path(dir, old),
                segment::time_index_path(dir, old),
                entry_index::raft_index_path(dir, old),
                txn_index::txn_index_path(dir, old),
            ] {
                backend.remove_file(&path).await.map_err(io_error(&path))?;
            }
        }
        txn_index::write_empty(backend, dir, base).await?;
        let from = dir.join(name);
        let to = segment::log_path(dir, base);
        backend.rename(&from, &to).map_err(io_error(&from))?;
        tracing::info!(dir = %dir.display(), base, end, "finished an interrupted cleaning swap");
        changed = true;
    }
    if changed {
        backend.sync_dir(dir).await.map_err(io_error(dir))?;
    }
    Ok(changed)
}

/// Writes a cleaned segment sequentially with O_DIRECT, buffering at most
/// [`CLEANER_WRITE_BUFFER_BYTES`] plus one batch.
/// Holds a round's reads and writes to a rate on average (Kafka's `Throttler`): once the
/// bytes moved are more than the rate allows for the time taken, it sleeps the difference.
/// The batch in hand is at most a few MiB, so the pace is never far ahead.
pub(crate) struct IoPace {
    bytes_per_sec: f64,
    started: std::time::Instant,
    bytes: f64,
}

impl IoPace {
    pub(crate) fn new(bytes_per_sec: f64) -> IoPace {
        IoPace {
            bytes_per_sec,
            started: std::time::Instant::now(),
            bytes: 0.0,
        }
    }

    async fn spend(&mut self, bytes: usize) {
        // Kafka's default (Double.MAX_VALUE) and nonsense both mean: no limit.
        if !(self.bytes_per_sec > 0.0 && self.bytes_per_sec < f64::MAX) {
            return;
        }
        self.bytes += bytes as f64;
        let due = std::time::Duration::from_secs_f64(self.bytes / self.bytes_per_sec);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        }
    }
}

struct CleanWriter {
    file: SegmentFile,
    path: PathBuf,
    /// Bytes on disk so far (aligned).
    written: u64,
    buffer: Vec<u8>,
}

impl CleanWriter {
    async fn push(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CLEANER_WRITE_BUFFER_BYTES {
            let alignment = usize::try_from(self.file.alignment()).unwrap_or(usize::MAX);
            let aligned = self.buffer.len() - self.buffer.len() % alignment;
            let image = self.file.image([&self.buffer[..aligned]], aligned);
            self.file
                .write_image(self.written, image)
                .await
                .map_err(io_error(&self.path))?;
            self.written += aligned as u64;
            self.buffer.drain(..aligned);
        }
        Ok(())
    }

    /// Writes the rest, trims the padding and makes the file durable; returns its size.
    async fn finish(self) -> Result<(SegmentFile, u64), StorageError> {
        let size = self.written + self.buffer.len() as u64;
        if !self.buffer.is_empty() {
            let padded = pad_to_alignment(&self.buffer, self.file.alignment());
            self.file
                .write_at(self.written, &padded)
                .await
                .map_err(io_error(&self.path))?;
        }
        self.file
            .truncate(size)
            .await
            .map_err(io_error(&self.path))?;
        self.file.fdatasync().await.map_err(io_error(&self.path))?;
        Ok((self.file, size))
    }
}

/// Reads a sealed segment's batches in order, a chunk at a time.
struct BatchReader<'a> {
    file: &'a SegmentFile,
    path: PathBuf,
    position: u64,
    end: u64,
    chunk: Bytes,
    chunk_start: u64,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a SegmentFile, path: PathBuf, end: u64) -> BatchReader<'a> {
        BatchReader {
            file,
            path,
            position: 0,
            end,
            chunk: Bytes::new(),
            chunk_start: 0,
        }
    }

    /// The next batch; a sealed segment is trusted to be whole, so anything else is corrupt.
    async fn next(&mut self) -> Result<Option<(BatchHeader, Bytes)>, StorageError> {
        if self.position >= self.end {
            return Ok(None);
        }
        let corrupt = |position| StorageError::SegmentCorrupt {
            path: self.path.clone(),
            position,
        };
        let mut in_chunk = (self.position - self.chunk_start) as usize;
        let total = match batch::frame_length(self.chunk.get(in_chunk..).unwrap_or_default()) {
            Ok(total) => total,
            Err(_) => {
                // Read at least the declared length, checked against the segment's end first.
                let head = self
                    .file
                    .read_at(self.position, batch::LOG_OVERHEAD_BYTES)
                    .await
                    .map_err(io_error(&self.path))?;
                if head.len() < batch::LOG_OVERHEAD_BYTES {
                    return Err(corrupt(self.position));
                }
                let length = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
                let total = usize::try_from(length)
                    .ok()
                    .map(|length| length + batch::LOG_OVERHEAD_BYTES)
                    .filter(|&total| total as u64 <= self.end - self.position)
                    .ok_or_else(|| corrupt(self.position))?;
                let want = total
                    .max(CLEANER_READ_CHUNK_BYTES)
                    .min((self.end - self.position) as usize);
                self.chunk = self
                    .file
                    .read_at(self.position, want)
                    .await
                    .map_err(io_error(&self.path))?;
                self.chunk_start = self.position;
                in_chunk = 0;
                batch::frame_length(&self.chunk).map_err(|_| corrupt(self.position))?
            }
        };
        let bytes = self.chunk.slice(in_chunk..in_chunk + total);
        let header = batch::validate_stored(&bytes).map_err(|_| corrupt(self.position))?;
        self.position += total as u64;
        Ok(Some((header, bytes)))
    }
}

/// The per-batch decisions of one rewrite pass (step 3 of the module header).
struct Rewriter<'a> {
    map: &'a OffsetMap,
    /// Aborted transactions by producer: `(first offset, marker offset)`.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    now_ms: i64,
    delete_retention_ms: i64,
    /// Producers whose current transaction kept a record so far in this pass.
    txn_kept: HashSet<i64>,
    /// The earliest delete horizon still ahead among the batches written.
    next_horizon: Option<i64>,
    records_read: u64,
    records_kept: u64,
    /// A Raft log: a batch left without records stays as an empty one (its header), so
    /// every entry keeps its index.
    keep_empty: bool,
}

impl Rewriter<'_> {
    /// What stands for a batch a cleaning removes whole.
    fn removed(&self, header: &BatchHeader) -> Option<Bytes> {
        self.keep_empty.then(|| compact::empty_like(header))
    }

    fn aborted(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && self.aborted.get(&header.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|&(first, last)| first <= header.base_offset && header.base_offset <= last)
            })
    }

    fn horizon_ahead(&mut self, horizon: i64) {
        self.next_horizon = Some(self.next_horizon.map_or(horizon, |h| h.min(horizon)));
    }

    /// The bytes to write for one batch, None to drop it.
    fn decide(
        &mut self,
        header: &BatchHeader,
        bytes: &Bytes,
    ) -> Result<Option<Bytes>, batch::BatchError> {
        let new_horizon = self.now_ms.saturating_add(self.delete_retention_ms);
        if header.is_control() {
            if marker_of(header, bytes).is_none() {
                return Ok(Some(bytes.clone()));
            }
            if self.txn_kept.remove(&header.producer_id) {
                return Ok(Some(bytes.clone()));
            }
            // Its transaction left nothing below it: the marker goes once its horizon passed.
            return match header.delete_horizon() {
                Some(horizon) if self.now_ms >= horizon => Ok(self.removed(header)),
                Some(horizon) => {
                    self.horizon_ahead(horizon);
                    Ok(Some(bytes.clone()))
                }
                None => {
                    self.horizon_ahead(new_horizon);
                    compact::with_delete_horizon(bytes, new_horizon).map(Some)
                }
            };
        }
        let count = u64::try_from(header.records_count).unwrap_or(0);
        self.records_read += count;
        if self.aborted(header) {
            return Ok(self.removed(header));
        }
        let expired = header.delete_horizon().is_some_and(|h| self.now_ms >= h);
        let mut kept = 0u64;
        let mut kept_tombstone = false;
        let map = self.map;
        let retained = compact::retain(bytes, |record| {
            let keep = record
                .key
                .as_deref()
                .is_some_and(|key| map.keeps(key, record.offset))
                && !(record.value.is_none() && expired);
            if keep {
                kept += 1;
                kept_tombstone |= record.value.is_none();
            }
            keep
        })?;
        self.records_kept += kept;
        if kept > 0 && header.is_transactional() {
            self.txn_kept.insert(header.producer_id);
        }
        let out = match retained {
            Retained::None => return Ok(self.removed(header)),
            Retained::All => bytes.clone(),
            Retained::Some(thinned) => thinned,
        };
        match header.delete_horizon() {
            Some(horizon) if kept_tombstone => {
                self.horizon_ahead(horizon);
                Ok(Some(out))
            }
            None if kept_tombstone => {
                self.horizon_ahead(new_horizon);
                compact::with_delete_horizon(&out, new_horizon).map(Some)
            }
            _ => Ok(Some(out)),
        }
    }
}

impl PartitionLog {
    /// One cleaning round if one is due (module header); None if nothing was due. `map` is the
    /// shard's offset map, reused round after round (its budget bounds the round's memory).
    ///
    /// `limit` is the high watermark: nothing at or above it is cleaned (for a log that is not
    /// a Raft log, its durable end). A Raft log is cleaned as any other, except that a batch
    /// left without records stays as an empty batch, so entry numbering never changes: a
    /// follower reading entries below the cleaning gets them cleaned, with their index and
    /// term, which is what it would hold after cleaning them itself (cleaning is only below
    /// the high watermark, so a record that superseded another is committed, and any future
    /// leader has it).
    pub async fn clean(
        &self,
        now_ms: i64,
        limit: i64,
        map: &mut OffsetMap,
    ) -> Result<Option<CleanStats>, StorageError> {
        self.clean_paced(now_ms, limit, map, f64::MAX).await
    }

    /// [`PartitionLog::clean`] with its reads and writes together held to `bytes_per_sec` on
    /// average over the round (Kafka's `log.cleaner.io.max.bytes.per.second`; `f64::MAX`: no
    /// limit).
    pub async fn clean_paced(
        &self,
        now_ms: i64,
        limit: i64,
        map: &mut OffsetMap,
        bytes_per_sec: f64,
    ) -> Result<Option<CleanStats>, StorageError> {
        self.load_first_timestamps().await?;
        let Some(mut plan) = self.plan_clean(now_ms, limit) else {
            return Ok(None);
        };
        plan.aborted = self
            .aborted_txns(plan.segments[0].0.base_offset, plan.cleanable_end)
            .await?;
        let started = std::time::Instant::now();
        let mut pace = IoPace::new(bytes_per_sec);
        map.clear();
        let mut stats = CleanStats {
            dirty_start: plan.dirty_start,
            segments_before: plan.segments.len(),
            ..CleanStats::default()
        };
        let dirty_end = self
            .build_offset_map(&plan, map, &mut stats, &mut pace)
            .await?;
        stats.dirty_end = dirty_end;
        stats.map_keys = map.len();
        let mut rewriter = Rewriter {
            map,
            aborted: HashMap::new(),
            now_ms,
            delete_retention_ms: plan.delete_retention_ms,
            txn_kept: HashSet::new(),
            next_horizon: None,
            records_read: 0,
            records_kept: 0,
            keep_empty: plan.entries.is_some(),
        };
        for txn in &plan.aborted {
            rewriter
                .aborted
                .entry(txn.producer_id)
                .or_default()
                .push((txn.first_offset, txn.last_offset));
        }
        // Every segment holding an offset below the dirty end, rewritten in groups.
        let cleaned: Vec<&(SegmentView, i64)> = plan
            .segments
            .iter()
            .take_while(|(view, _)| view.base_offset < dirty_end.max(plan.dirty_start + 1))
            .collect();
        let mut at = 0;
        let mut whole = true;
        while at < cleaned.len() {
            let (taken, swapped) = self
                .clean_group(
                    &plan,
                    at,
                    &cleaned[at..],
                    &mut rewriter,
                    &mut stats,
                    &mut pace,
                )
                .await?;
            at += taken;
            if !swapped {
                // Retention deleted part of the group meanwhile. The groups after it must not
                // be swapped in: a transaction aborted in them may have records in the part
                // not rewritten, and a swap drops its `.txnindex` entry. The next round redoes
                // the range (the checkpoint stays).
                whole = false;
                break;
            }
        }
        stats.records_read += rewriter.records_read;
        stats.records_kept = rewriter.records_kept;
        if whole {
            self.write_cleaner_checkpoint(dirty_end, rewriter.next_horizon)
                .await?;
        }
        {
            let mut state = self.state.borrow_mut();
            if whole {
                state.cleaned_to = state.cleaned_to.max(dirty_end);
                state.next_delete_horizon = rewriter.next_horizon;
            }
            stats.segments_after = state
                .segments
                .iter()
                .take_while(|s| s.base_offset < plan.cleanable_end)
                .count();
        }
        stats.elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(Some(stats))
    }

    /// Reads the first batch's timestamp of every dirty sealed segment that does not know it
    /// yet (one opened from disk), for `max.compaction.lag.ms`: one header read per segment,
    /// once per segment's life in memory.
    async fn load_first_timestamps(&self) -> Result<(), StorageError> {
        let unknown: Vec<(i64, Rc<SegmentFile>)> = {
            let state = self.state.borrow();
            if !state.config.compaction.compact
                || state.config.compaction.max_compaction_lag_ms == i64::MAX
            {
                return Ok(());
            }
            let sealed = state.segments.len() - 1;
            state.segments[..sealed]
                .iter()
                .filter(|s| {
                    s.next_offset > state.cleaned_to
                        && s.first_timestamp.is_none()
                        && s.is_settled()
                        && !s.is_empty()
                })
                .filter_map(|s| s.file.clone().map(|file| (s.base_offset, file)))
                .collect()
        };
        for (base, file) in unknown {
            let path = segment::log_path(&self.dir, base);
            let head = file
                .read_at(0, batch::HEADER_BYTES)
                .await
                .map_err(io_error(&path))?;
            let header = BatchHeader::parse(&head)
                .map_err(|_| StorageError::SegmentCorrupt { path, position: 0 })?;
            let mut state = self.state.borrow_mut();
            if let Some(at) = state.position_of(base) {
                state.segments[at].first_timestamp = Some(header.max_timestamp);
            }
        }
        Ok(())
    }

    /// Step 1 of the module header.
    fn plan_clean(&self, now_ms: i64, limit: i64) -> Option<CleanPlan> {
        let mut state = self.state.borrow_mut();
        let compaction = state.config.compaction;
        if !compaction.compact {
            return None;
        }
        let limit = limit.min(state.durable_end_offset);
        let stable = state.producers.last_stable_offset(limit).min(limit);
        let lag_limit = now_ms.saturating_sub(compaction.min_compaction_lag_ms);
        let sealed = state.segments.len() - 1;
        let cleanable = state.segments[..sealed]
            .iter()
            .take_while(|s| {
                s.sealed
                    && s.is_settled()
                    && s.next_offset <= stable
                    && s.max_timestamp.0 <= lag_limit
            })
            .count();
        if cleanable == 0 {
            return None;
        }
        let segments = &state.segments[..cleanable];
        let start = segments[0].base_offset;
        let cleanable_end = segments[cleanable - 1].next_offset;
        let dirty_start = state.cleaned_to.clamp(start, cleanable_end);
        let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
        let dirty: u64 = segments
            .iter()
            .filter(|s| s.next_offset > dirty_start)
            .map(|s| s.size_bytes)
            .sum();
        // Strictly above, as Kafka's `cleanableRatio > minCleanableRatio`: 1.0 means never by
        // the ratio alone.
        let ratio_due = dirty > 0
            && (dirty as f64) > compaction.min_cleanable_dirty_ratio * (total.max(1) as f64);
        // Kafka's `maxCompactionDelay`: the earliest first-batch timestamp of the dirty
        // non-active segments (cleanable or not), against now - `max.compaction.lag.ms`.
        let earliest_dirty = state.segments[..sealed]
            .iter()
            .filter(|s| s.next_offset > dirty_start)
            .filter_map(|s| s.first_timestamp)
            .filter(|&ts| ts > 0)
            .min();
        let lag_due = dirty_start < cleanable_end
            && earliest_dirty.is_some_and(|ts| {
                ts < now_ms.saturating_sub(compaction.max_compaction_lag_ms.max(0))
            });
        let horizon_due = state.next_delete_horizon.is_some_and(|h| h <= now_ms);
        if !(ratio_due || lag_due || horizon_due) {
            return None;
        }
        let entries = state.entry_index.then(|| {
            segments
                .iter()
                .map(|s| {
                    let e = s
                        .entries
                        .as_ref()
                        .expect("a Raft log's segments have entries");
                    (e.first, e.count)
                })
                .collect()
        });
        let plan = CleanPlan {
            entries,
            segments: segments.iter().map(|s| (s.view(), s.next_offset)).collect(),
            dirty_start,
            cleanable_end,
            // Filled by the caller: the cleanable segments' aborts are in their files.
            aborted: Vec::new(),
            segment_bytes: state.config.segment_bytes,
            index_interval_bytes: u64::from(state.config.index_interval_bytes),
            delete_retention_ms: compaction.delete_retention_ms,
        };
        tracing::debug!(dir = %self.dir.display(), dirty, total, ratio_due, lag_due, horizon_due,
            "cleaning");
        Some(plan)
    }

    /// Step 2: fills `map` from the dirty range; returns where the round's dirty range ends.
    async fn build_offset_map(
        &self,
        plan: &CleanPlan,
        map: &mut OffsetMap,
        stats: &mut CleanStats,
        pace: &mut IoPace,
    ) -> Result<i64, StorageError> {
        let aborted = |header: &BatchHeader| {
            header.is_transactional()
                && plan.aborted.iter().any(|txn| {
                    txn.producer_id == header.producer_id
                        && txn.first_offset <= header.base_offset
                        && header.base_offset <= txn.last_offset
                })
        };
        for (view, next_offset) in &plan.segments {
            if *next_offset <= plan.dirty_start {
                continue;
            }
            let Some(mut reader) = self.reader(view) else {
                continue;
            };
            while let Some((header, bytes)) = reader.next().await? {
                stats.bytes_read += bytes.len() as u64;
                pace.spend(bytes.len()).await;
                if header.last_offset() < plan.dirty_start
                    || header.is_control()
                    || aborted(&header)
                {
                    continue;
                }
                let records =
                    compact::record_keys(&bytes).map_err(|_| StorageError::SegmentCorrupt {
                        path: reader.path.clone(),
                        position: reader.position - bytes.len() as u64,
                    })?;
                for record in records {
                    if record.offset < plan.dirty_start {
                        continue;
                    }
                    let Some(key) = record.key else { continue };
                    if !map.put(&key, record.offset) {
                        // Full: this round cleans up to here; the rest waits (Kafka's rule).
                        return Ok(record.offset);
                    }
                }
            }
        }
        Ok(plan.cleanable_end)
    }

    /// Steps 3 and 4 for one group: the first of `segments` and as many of the next as fit.
    /// A segment joins while the output so far plus its whole size stays within
    /// `segment.bytes` (Kafka groups by input sizes; by output, a second round is not needed
    /// to merge the segments a first one emptied). Returns how many segments it took, and
    /// whether it swapped them in (false: the log changed meanwhile and the output was dropped).
    async fn clean_group(
        &self,
        plan: &CleanPlan,
        at: usize,
        segments: &[&(SegmentView, i64)],
        rewriter: &mut Rewriter<'_>,
        stats: &mut CleanStats,
        pace: &mut IoPace,
    ) -> Result<(usize, bool), StorageError> {
        let base = segments[0].0.base_offset;
        let out_path = cleaned_path(&self.dir, base);
        self.backend
            .remove_file(&out_path)
            .await
            .map_err(io_error(&out_path))?;
        let file = self
            .backend
            .open_file(&out_path)
            .await
            .map_err(io_error(&out_path))?;
        let mut writer = CleanWriter {
            file,
            path: out_path.clone(),
            written: 0,
            buffer: Vec::with_capacity(CLEANER_WRITE_BUFFER_BYTES),
        };
        let mut tracker = Segment::new(base, None);
        if let Some(entries) = &plan.entries {
            tracker = tracker.with_entries(entries[at].0);
        }
        let mut taken = 0;
        for (view, next_offset) in segments {
            let fits = tracker.size_bytes + view.size_bytes <= plan.segment_bytes
                && *next_offset - base <= i64::from(u32::MAX);
            if taken > 0 && !fits {
                break;
            }
            taken += 1;
            let Some(mut reader) = self.reader(view) else {
                continue;
            };
            while let Some((header, bytes)) = reader.next().await? {
                stats.bytes_read += bytes.len() as u64;
                pace.spend(bytes.len()).await;
                let position = reader.position - bytes.len() as u64;
                let corrupt = |_| StorageError::SegmentCorrupt {
                    path: reader.path.clone(),
                    position,
                };
                let Some(out) = rewriter.decide(&header, &bytes).map_err(corrupt)? else {
                    continue;
                };
                let out_header = batch::validate_stored(&out).map_err(corrupt)?;
                tracker.track_batch(&out_header, plan.index_interval_bytes);
                writer.push(&out).await?;
                pace.spend(out.len()).await;
            }
        }
        let (file, size) = writer.finish().await?;
        assert_eq!(size, tracker.size_bytes);
        stats.bytes_written += size;
        tracker.finish_time_index();
        let group = &segments[..taken];
        let end = group[taken - 1].1;
        if let Some(entries) = &plan.entries {
            // Every batch stayed (emptied ones as headers): the numbering is unchanged.
            let count: u64 = entries[at..at + taken].iter().map(|e| e.1).sum();
            let kept = tracker.entries.as_ref().map_or(0, |e| e.count);
            if kept != count {
                return Err(StorageError::CorruptEntryIndex {
                    path: segment::log_path(&self.dir, base),
                    reason: "a cleaning would change the entry count",
                });
            }
        }
        let swapped = self.swap_in(group, tracker, file, end).await?;
        Ok((taken, swapped))
    }

    /// Step 4: replaces the group's segments by the cleaned one, unless the log changed under
    /// the cleaning (retention deleted one of them), in which case the output is dropped and
    /// this answers false.
    async fn swap_in(
        &self,
        group: &[&(SegmentView, i64)],
        mut cleaned: Segment,
        file: SegmentFile,
        end: i64,
    ) -> Result<bool, StorageError> {
        let base = cleaned.base_offset;
        let out_path = cleaned_path(&self.dir, base);
        let _gate = self.gate.lock().await;
        let at = {
            let state = self.state.borrow();
            state.position_of(base).filter(|&at| {
                group.iter().enumerate().all(|(k, (view, next))| {
                    state.segments.get(at + k).is_some_and(|s| {
                        s.base_offset == view.base_offset
                            && s.next_offset == *next
                            && s.size_bytes == view.size_bytes
                            && s.is_settled()
                            && at + k + 1 < state.segments.len()
                    })
                })
            })
        };
        let Some(at) = at else {
            file.close().await.map_err(io_error(&out_path))?;
            self.backend
                .remove_file(&out_path)
                .await
                .map_err(io_error(&out_path))?;
            tracing::debug!(base, "the log changed under the cleaning; output dropped");
            return Ok(false);
        };
        let swap = swap_path(&self.dir, base, end);
        self.backend
            .failpoint(failpoints::CLEAN_BEFORE_SWAP)
            .map_err(io_error(&out_path))?;
        self.backend
            .rename(&out_path, &swap)
            .map_err(io_error(&out_path))?;
        self.backend
            .sync_dir(&self.dir)
            .await
            .map_err(io_error(&self.dir))?;
        // Committed: from here a crash finishes the swap on open (`recover_swaps`).
        self.backend
            .failpoint(failpoints::CLEAN_AFTER_SWAP_COMMIT)
            .map_err(io_error(&swap))?;
        let old: Vec<Segment> = {
            let mut state = self.state.borrow_mut();
            cleaned.file = Some(Rc::new(file));
            cleaned.next_offset = end;
            cleaned.sealed = true;
            cleaned.durable_bytes = cleaned.size_bytes;
            cleaned.durable_next_offset = end;
            cleaned.durable_max_timestamp = cleaned.max_timestamp;
            if let Some(entries) = &mut cleaned.entries {
                entries.durable_count = entries.count;
            }
            let removed = state
                .segments
                .splice(at..at + group.len(), std::iter::once(cleaned))
                .collect();
            // Cached batches of the replaced segments would serve records the cleaning removed,
            // and remembered entry locations would point into the old files.
            state.tail.drop_before(end);
            state.entry_window.drop_before_offset(end);
            removed
        };
        let mut retired = Vec::new();
        for segment in old {
            let path = segment::log_path(&self.dir, segment.base_offset);
            if let Some(file) = segment.file {
                close_shared(file).await.map_err(io_error(&path))?;
            }
            let doomed = segment::deleted_path(&path);
            self.backend
                .rename(&path, &doomed)
                .map_err(io_error(&path))?;
            retired.push(doomed);
            // The cleaned segment's `.txnindex` is empty (written below): every transaction
            // aborted in the group lost its records to this rewrite (see `txn_index.rs`,
            // "Cleaning").
            for index in [
                segment::index_path(&self.dir, segment.base_offset),
                segment::time_index_path(&self.dir, segment.base_offset),
                entry_index::raft_index_path(&self.dir, segment.base_offset),
                txn_index::txn_index_path(&self.dir, segment.base_offset),
            ] {
                self.backend
                    .remove_file(&index)
                    .await
                    .map_err(io_error(&index))?;
            }
        }
        txn_index::write_empty(&self.backend, &self.dir, base).await?;
        let log = segment::log_path(&self.dir, base);
        self.backend.rename(&swap, &log).map_err(io_error(&swap))?;
        self.backend
            .sync_dir(&self.dir)
            .await
            .map_err(io_error(&self.dir))?;
        let (indexes, sidecar) = {
            let state = self.state.borrow();
            let segment = state.segment(base);
            let indexes = segment
                .and_then(|s| s.indexes.borrow().clone())
                .unwrap_or_default();
            let sidecar = segment.and_then(|s| s.entries.as_ref()).map(|e| {
                let sparse = e.sparse.borrow().clone().unwrap_or_default();
                entry_index::encode(e.first, e.count, true, &sparse)
            });
            (indexes, sidecar)
        };
        write_indexes_of(&self.backend, &self.dir, base, &indexes).await?;
        // Until this is written a restart numbers the segment from its neighbours
        // (`resolve_entries`), as for any lost sidecar.
        if let Some(sidecar) = sidecar {
            self.write_sidecar(base, &sidecar).await?;
        }
        drop(_gate);
        for path in retired {
            self.backend
                .remove_file(&path)
                .await
                .map_err(io_error(&path))?;
        }
        Ok(true)
    }

    /// A reader of the segment's durable batches; None if it has no file yet.
    fn reader<'a>(&self, view: &'a SegmentView) -> Option<BatchReader<'a>> {
        let path = segment::log_path(&self.dir, view.base_offset);
        view.file
            .as_ref()
            .map(|file| BatchReader::new(file, path, view.durable_bytes))
    }

    /// The checkpoint: the end of the cleaned range, then the earliest delete horizon the
    /// round left in the log (-1: none), then CRC-32C. The horizon is kept so a restart does
    /// not hold back tombstone removal until new dirty data arrives.
    async fn write_cleaner_checkpoint(
        &self,
        offset: i64,
        horizon: Option<i64>,
    ) -> Result<(), StorageError> {
        let mut bytes = offset.to_be_bytes().to_vec();
        bytes.extend_from_slice(&horizon.unwrap_or(-1).to_be_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        self.write_side_file(CLEANER_CHECKPOINT_FILE, &bytes).await
    }

    /// The cleaner checkpoint and delete horizon ((0, None) if none or damaged: cleaning again
    /// from the start is only work, never loss). A checkpoint written before the horizon was
    /// kept (8 bytes and CRC) has none.
    pub(crate) async fn read_cleaner_checkpoint(&self) -> Result<(i64, Option<i64>), StorageError> {
        let Some(bytes) = self.read_side_file(CLEANER_CHECKPOINT_FILE).await? else {
            return Ok((0, None));
        };
        let Some(body_len) = bytes.len().checked_sub(4).filter(|&n| n == 8 || n == 16) else {
            return Ok((0, None));
        };
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Ok((0, None));
        }
        let field = |at: usize| i64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let horizon = (body_len == 16).then(|| field(8)).filter(|&h| h >= 0);
        Ok((field(0), horizon))
    }

    /// Whether the topic compacts and how much of the log its cleaner checkpoint covers.
    pub fn cleaned_to(&self) -> i64 {
        self.state.borrow().cleaned_to
    }
}
