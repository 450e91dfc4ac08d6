//! A partition group's openraft state machine. It copies no data (the log is the partition's
//! log): applying an entry moves the high watermark to the entry's end offset, wakes long-poll
//! fetchers and answers the produce request waiting on it with the offsets the leader's store
//! stamped.
//!
//! "Applied" is not persisted: it is the committed log id the store keeps (an entry needs no
//! work to be applied, so every committed entry is as good as applied), which spares openraft
//! re-reading the whole log at start.
//!
//! Snapshots are metadata only ([`PartitionSnapshot`]: the next offset, the log start, the
//! idempotent-producer state and the leader epoch cache as of the snapshot's last entry); they
//! exist so retention can purge the log through openraft (`retention.rs`). A snapshot is built
//! at the entry retention asks for ([`SnapshotTarget`]), else at the applied entry, kept in
//! memory and in the `raft-snapshot` file beside the segments (so a restarted leader can still
//! send it), and sent whole to a follower behind the purge point. A follower installing one
//! whose log does not already continue it restarts its log empty at the snapshot's next offset
//! with its producer state and epochs (`PartitionLog::restart_from_snapshot`), as a Kafka
//! follower whose fetch offset fell below the leader's log start.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, LogId};
use spool_protocol::batch::BatchHeader;
use spool_raft::{Command, TypeConfig};
use spool_storage::PartitionLog;

/// What a committed proposal answers: its offsets as the leader stamped them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time_ms: i64,
}

impl Appended {
    fn encode(self) -> Command {
        let mut buf = BytesMut::with_capacity(24);
        buf.put_i64(self.base_offset);
        buf.put_i64(self.last_offset);
        buf.put_i64(self.log_append_time_ms);
        Command(buf.freeze())
    }

    pub fn decode(command: &Command) -> Option<Appended> {
        let mut bytes = command.0.clone();
        if bytes.len() != 24 {
            return None;
        }
        Some(Appended {
            base_offset: bytes.get_i64(),
            last_offset: bytes.get_i64(),
            log_append_time_ms: bytes.get_i64(),
        })
    }
}

/// The high watermark, shared by the state machine (which moves it) and the partition
/// (which serves it), with what to do when it moves.
pub struct HighWatermark {
    pub offset: Cell<i64>,
    pub on_advance: RefCell<Option<Box<dyn Fn()>>>,
}

impl HighWatermark {
    pub fn new(offset: i64) -> Rc<HighWatermark> {
        Rc::new(HighWatermark {
            offset: Cell::new(offset),
            on_advance: RefCell::new(None),
        })
    }

    fn advance(&self, offset: i64) {
        if offset > self.offset.get() {
            self.offset.set(offset);
            if let Some(wake) = self.on_advance.borrow().as_ref() {
                wake();
            }
        }
    }
}

/// The entry the next snapshot is to end at, set by retention before it asks openraft for a
/// snapshot (openraft's builder has no argument); taken by the builder.
pub type SnapshotTarget = Rc<Cell<Option<u64>>>;

/// Memberships remembered, newest last, so a snapshot below the newest membership entry names
/// the membership in force at its own last entry.
const MEMBERSHIPS_KEPT_MAX: usize = 4;

/// The file beside the segments holding the last snapshot: a 4-byte meta length, the meta
/// (`spool_raft::wire::encode_snapshot_meta`), then the [`PartitionSnapshot`] bytes.
const SNAPSHOT_FILE: &str = "raft-snapshot";

/// The last snapshot, as held in memory and on disk.
#[derive(Clone)]
struct Stored {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Bytes,
    next_offset: i64,
    producers: Bytes,
}

pub struct PartitionStateMachine {
    log: Rc<PartitionLog>,
    applied: Option<LogIdOf<TypeConfig>>,
    /// Newest last; the last one is the membership in force.
    memberships: VecDeque<StoredMembershipOf<TypeConfig>>,
    hw: Rc<HighWatermark>,
    target: SnapshotTarget,
    snapshot: Rc<RefCell<Option<Stored>>>,
    /// Whether the snapshot file was read (lazily: openraft's first call is async).
    loaded: bool,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl PartitionStateMachine {
    pub fn new(
        log: Rc<PartitionLog>,
        applied: Option<LogIdOf<TypeConfig>>,
        membership: StoredMembershipOf<TypeConfig>,
        hw: Rc<HighWatermark>,
        target: SnapshotTarget,
    ) -> PartitionStateMachine {
        PartitionStateMachine {
            log,
            applied,
            memberships: VecDeque::from([membership]),
            hw,
            target,
            snapshot: Rc::new(RefCell::new(None)),
            loaded: false,
        }
    }

    fn membership(&self) -> StoredMembershipOf<TypeConfig> {
        self.memberships
            .back()
            .cloned()
            .expect("a membership is always known")
    }

    fn set_membership(&mut self, membership: StoredMembershipOf<TypeConfig>) {
        self.memberships.push_back(membership);
        while self.memberships.len() > MEMBERSHIPS_KEPT_MAX {
            self.memberships.pop_front();
        }
    }

    /// Reads the snapshot file once. A damaged file is an error: the log below its purge
    /// point is gone, so the snapshot cannot be rebuilt.
    async fn load(&mut self) -> io::Result<()> {
        if self.loaded {
            return Ok(());
        }
        let bytes = self
            .log
            .read_side_file_max(SNAPSHOT_FILE, PARTITION_SNAPSHOT_FILE_BYTES_MAX)
            .await
            .map_err(io_err)?;
        if let Some(bytes) = bytes {
            let stored = decode_stored(&bytes)
                .map_err(|e| io_err(format!("{SNAPSHOT_FILE} is unreadable: {e}")))?;
            *self.snapshot.borrow_mut() = Some(stored);
        }
        self.loaded = true;
        Ok(())
    }

    /// Whether the log already continues the snapshot ending at `last`: it holds that very
    /// entry, or it was restarted right after it (a repeated install after a restart).
    async fn log_continues(
        &self,
        last: &LogIdOf<TypeConfig>,
        snapshot: &PartitionSnapshot,
    ) -> io::Result<bool> {
        if let Some(info) = self.log.entry_position(last.index).await.map_err(io_err)? {
            return Ok(u64::try_from(info.epoch).ok() == Some(last.leader_id.term)
                && info.last_offset + 1 == snapshot.next_offset);
        }
        Ok(self.log.first_entry_index() == last.index + 1
            && self.log.log_start_offset() == snapshot.next_offset
            && self.log.next_entry_index() > last.index + 1)
    }

    /// The end offset of entry `index`: the high watermark once it is applied.
    async fn end_of(&self, index: u64) -> io::Result<i64> {
        match self.log.offset_of_index(index).await.map_err(io_err)? {
            Some((_, last)) => Ok(last + 1),
            None => Ok(self.log.log_end_offset().min(self.hw.offset.get())),
        }
    }
}

impl RaftStateMachine<TypeConfig> for PartitionStateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        self.load().await?;
        Ok((self.applied, self.membership()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<openraft::storage::EntryResponder<TypeConfig>, io::Error>>
            + Unpin,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            self.applied = Some(entry.log_id);
            let answer = match &entry.payload {
                EntryPayload::Normal(Command(batch)) => {
                    let header = BatchHeader::parse(batch).map_err(io_err)?;
                    // DeleteRecords: every replica moves its log start as it applies the entry,
                    // so a new leader serves exactly what the old one did.
                    if let Some(start) = spool_raft::store::decode_log_start_entry(batch) {
                        match self.log.advance_start(start).await {
                            Ok(_) => {}
                            // The leader checked it against its high watermark; a bad one is
                            // ignored rather than stopping the group.
                            Err(e @ spool_storage::StorageError::OffsetOutOfRange { .. }) => {
                                tracing::warn!("DeleteRecords entry not applied: {e}");
                            }
                            Err(e) => return Err(io_err(e)),
                        }
                    }
                    self.hw.advance(header.last_offset() + 1);
                    self.log.advance_stable(header.last_offset() + 1);
                    Appended {
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                        log_append_time_ms: -1,
                    }
                    .encode()
                }
                EntryPayload::Membership(membership) => {
                    self.set_membership(StoredMembershipOf::<TypeConfig>::new(
                        Some(entry.log_id),
                        membership.clone(),
                    ));
                    let end = self.end_of(entry.log_id.index).await?;
                    self.hw.advance(end);
                    Command::default()
                }
                EntryPayload::Blank => {
                    let end = self.end_of(entry.log_id.index).await?;
                    self.hw.advance(end);
                    Command::default()
                }
            };
            if let Some(responder) = responder {
                responder.send(answer);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builder()
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.builder())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Bytes,
    ) -> Result<(), io::Error> {
        let decoded = PartitionSnapshot::decode(&snapshot).map_err(io_err)?;
        let last = meta
            .last_log_id
            .ok_or_else(|| io_err("a partition snapshot names its last entry"))?;
        let stored = Stored {
            meta: meta.clone(),
            data: snapshot,
            next_offset: decoded.next_offset,
            producers: decoded.producers.clone(),
        };
        // Durable before the log is restarted, so a crash in between installs it again.
        persist(&self.log, &stored).await?;
        if !self.log_continues(&last, &decoded).await? {
            tracing::info!(
                index = last.index,
                next_offset = decoded.next_offset,
                "the log restarts at the snapshot's offset"
            );
            self.log
                .restart_from_snapshot(
                    last.index + 1,
                    decoded.next_offset,
                    &decoded.producers,
                    &decoded.epochs,
                )
                .await
                .map_err(io_err)?;
        }
        if self.applied < Some(last) {
            self.applied = Some(last);
        }
        self.memberships = VecDeque::from([meta.last_membership.clone()]);
        self.hw.advance(decoded.next_offset);
        *self.snapshot.borrow_mut() = Some(stored);
        self.loaded = true;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Bytes>>, io::Error> {
        self.load().await?;
        Ok(self
            .snapshot
            .borrow()
            .clone()
            .map(|stored| openraft::storage::Snapshot {
                meta: stored.meta,
                snapshot: stored.data,
            }))
    }
}

impl PartitionStateMachine {
    /// A builder for a snapshot ending at the retention target when one is set and applied
    /// (with the membership in force there), else at the applied entry.
    fn builder(&mut self) -> SnapshotBuilder {
        let applied = self.applied.map(|id| id.index);
        let target = self.target.take().filter(|t| Some(*t) <= applied);
        let at_target = target.and_then(|t| {
            self.memberships
                .iter()
                .rev()
                .find(|m| m.log_id().is_none_or(|id| id.index <= t))
                .map(|m| (t, m.clone()))
        });
        let (index, membership) = match at_target {
            Some((t, m)) => (Some(t), m),
            None => (applied, self.membership()),
        };
        SnapshotBuilder {
            log: self.log.clone(),
            index,
            membership,
            snapshot: self.snapshot.clone(),
        }
    }
}

pub struct SnapshotBuilder {
    log: Rc<PartitionLog>,
    /// The snapshot's last entry.
    index: Option<u64>,
    membership: StoredMembershipOf<TypeConfig>,
    snapshot: Rc<RefCell<Option<Stored>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Bytes>, io::Error> {
        let index = self
            .index
            .ok_or_else(|| io_err("nothing applied to snapshot"))?;
        let info = self
            .log
            .entry_position(index)
            .await
            .map_err(io_err)?
            .ok_or_else(|| io_err(format!("entry {index} is not in the log")))?;
        let term = u64::try_from(info.epoch).map_err(|_| io_err("an entry without a term"))?;
        let next_offset = info.last_offset + 1;
        let previous = self.snapshot.borrow().clone();
        let base = previous
            .as_ref()
            .map(|p| (p.next_offset, p.producers.as_ref()));
        let producers = self
            .log
            .producer_state_at(next_offset, base)
            .await
            .map_err(io_err)?;
        let snapshot = PartitionSnapshot {
            next_offset,
            log_start_offset: self.log.log_start_offset().min(next_offset),
            epochs: self.log.epochs_at(next_offset),
            producers: Bytes::from(producers),
        };
        let data = snapshot.encode().map_err(io_err)?;
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: Some(LogId::new_term_index(term, index)),
            last_membership: self.membership.clone(),
        };
        let stored = Stored {
            meta: meta.clone(),
            data: data.clone(),
            next_offset,
            producers: snapshot.producers,
        };
        persist(&self.log, &stored).await?;
        *self.snapshot.borrow_mut() = Some(stored);
        tracing::debug!(index, next_offset, "partition snapshot built");
        Ok(openraft::storage::Snapshot {
            meta,
            snapshot: data,
        })
    }
}

/// Writes the snapshot file durably (replacing the previous one).
async fn persist(log: &PartitionLog, stored: &Stored) -> io::Result<()> {
    let meta = spool_raft::wire::encode_snapshot_meta(&stored.meta).map_err(io_err)?;
    let mut bytes = Vec::with_capacity(4 + meta.len() + stored.data.len());
    bytes.put_u32(u32::try_from(meta.len()).map_err(io_err)?);
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&stored.data);
    if bytes.len() > PARTITION_SNAPSHOT_FILE_BYTES_MAX {
        return Err(io_err(format!(
            "snapshot file of {} bytes exceeds {PARTITION_SNAPSHOT_FILE_BYTES_MAX}",
            bytes.len()
        )));
    }
    log.write_side_file_max(SNAPSHOT_FILE, &bytes, PARTITION_SNAPSHOT_FILE_BYTES_MAX)
        .await
        .map_err(io_err)
}

fn decode_stored(bytes: &[u8]) -> Result<Stored, String> {
    let mut rest = bytes;
    if rest.len() < 4 {
        return Err("shorter than its header".into());
    }
    let len = rest.get_u32() as usize;
    if len > rest.len() {
        return Err(format!(
            "meta length {len} exceeds the {} bytes left",
            rest.len()
        ));
    }
    let meta = spool_raft::wire::decode_snapshot_meta(&rest[..len]).map_err(|e| e.to_string())?;
    let data = Bytes::copy_from_slice(&rest[len..]);
    let snapshot = PartitionSnapshot::decode(&data).map_err(|e| e.to_string())?;
    Ok(Stored {
        meta,
        data,
        next_offset: snapshot.next_offset,
        producers: snapshot.producers,
    })
}

/// Largest partition snapshot, encoded: its producer state is bounded by storage's
/// `PRODUCERS_PER_PARTITION_MAX` (50,000 producers of at most 139 bytes, ~7 MiB) and its epoch
/// cache by [`SNAPSHOT_EPOCHS_MAX`]; one RPC frame carries it.
pub const PARTITION_SNAPSHOT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The snapshot file: the snapshot plus its meta (a few hundred bytes of membership).
const PARTITION_SNAPSHOT_FILE_BYTES_MAX: usize = PARTITION_SNAPSHOT_BYTES_MAX + (1 << 20);

/// Epoch cache entries a snapshot may carry (after the log start moves, the cache holds one
/// entry per leader epoch above it).
pub const SNAPSHOT_EPOCHS_MAX: usize = 100_000;

const _: () = assert!(PARTITION_SNAPSHOT_FILE_BYTES_MAX <= spool_storage::SNAPSHOT_FILE_BYTES_MAX);
const _: () = assert!(PARTITION_SNAPSHOT_FILE_BYTES_MAX < spool_raft::wire::RPC_FRAME_BYTES_MAX);

const SNAPSHOT_MAGIC: &[u8; 4] = b"SPS1";

/// A partition snapshot's data: what the log's records below `next_offset` imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// The offset after the snapshot's last entry: where a follower installing it restarts.
    pub next_offset: i64,
    /// The log start of the replica that built it (at most `next_offset`).
    pub log_start_offset: i64,
    /// The leader epoch cache as of `next_offset`: (epoch, start offset), increasing.
    pub epochs: Vec<(i32, i64)>,
    /// The idempotent-producer state as of `next_offset`, in storage's snapshot encoding.
    pub producers: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("partition snapshot of {0} bytes exceeds {PARTITION_SNAPSHOT_BYTES_MAX}")]
    TooLarge(usize),
    #[error("partition snapshot is corrupt: {0}")]
    Corrupt(&'static str),
}

impl PartitionSnapshot {
    /// Magic, next offset, log start, epoch count (u32) and (epoch i32, start i64) pairs,
    /// producer state length (u32) and bytes, CRC-32C of everything before it.
    pub fn encode(&self) -> Result<Bytes, SnapshotError> {
        let len = 4 + 8 + 8 + 4 + self.epochs.len() * 12 + 4 + self.producers.len() + 4;
        if len > PARTITION_SNAPSHOT_BYTES_MAX || self.epochs.len() > SNAPSHOT_EPOCHS_MAX {
            return Err(SnapshotError::TooLarge(len));
        }
        let mut buf = BytesMut::with_capacity(len);
        buf.put_slice(SNAPSHOT_MAGIC);
        buf.put_i64(self.next_offset);
        buf.put_i64(self.log_start_offset);
        buf.put_u32(self.epochs.len() as u32);
        for (epoch, start) in &self.epochs {
            buf.put_i32(*epoch);
            buf.put_i64(*start);
        }
        buf.put_u32(self.producers.len() as u32);
        buf.put_slice(&self.producers);
        let crc = crc32c::crc32c(&buf);
        buf.put_u32(crc);
        Ok(buf.freeze())
    }

    /// Every length is checked against the bytes left before anything is allocated.
    pub fn decode(bytes: &[u8]) -> Result<PartitionSnapshot, SnapshotError> {
        use SnapshotError::Corrupt;
        if bytes.len() > PARTITION_SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::TooLarge(bytes.len()));
        }
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or(Corrupt("shorter than its checksum"))?;
        let (mut body, mut crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body) != crc.get_u32() {
            return Err(Corrupt("checksum mismatch"));
        }
        if body.len() < 4 + 8 + 8 + 4 || &body[..4] != SNAPSHOT_MAGIC {
            return Err(Corrupt("not a partition snapshot"));
        }
        body.advance(4);
        let next_offset = body.get_i64();
        let log_start_offset = body.get_i64();
        if next_offset < 0 || log_start_offset < 0 || log_start_offset > next_offset {
            return Err(Corrupt("offsets out of order"));
        }
        let count = body.get_u32() as usize;
        if count > SNAPSHOT_EPOCHS_MAX || count * 12 > body.remaining() {
            return Err(Corrupt("epoch count exceeds the bytes left"));
        }
        let mut epochs = Vec::with_capacity(count);
        for _ in 0..count {
            let epoch = body.get_i32();
            let start = body.get_i64();
            let increasing = epochs
                .last()
                .is_none_or(|&(e, s): &(i32, i64)| epoch > e && start > s);
            if epoch < 0 || start < 0 || start > next_offset || !increasing {
                return Err(Corrupt("epochs out of order"));
            }
            epochs.push((epoch, start));
        }
        if body.remaining() < 4 {
            return Err(Corrupt("no producer state"));
        }
        let producers_len = body.get_u32() as usize;
        if producers_len != body.remaining() {
            return Err(Corrupt("producer state length differs from the bytes left"));
        }
        if !spool_storage::producer_snapshot_is_valid(body) {
            return Err(Corrupt("undecodable producer state"));
        }
        Ok(PartitionSnapshot {
            next_offset,
            log_start_offset,
            epochs,
            producers: Bytes::copy_from_slice(body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty producer state in storage's encoding (magic, zero count, CRC).
    fn empty_producers() -> Bytes {
        let mut body = b"SPP2".to_vec();
        body.extend_from_slice(&0u64.to_be_bytes());
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        Bytes::from(body)
    }

    fn sample() -> PartitionSnapshot {
        PartitionSnapshot {
            next_offset: 1_000,
            log_start_offset: 900,
            epochs: vec![(3, 950), (5, 990)],
            producers: empty_producers(),
        }
    }

    #[test]
    fn snapshot_round_trips() {
        let snapshot = sample();
        let bytes = snapshot.encode().expect("encode");
        assert_eq!(PartitionSnapshot::decode(&bytes), Ok(snapshot));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        let bytes = sample().encode().expect("encode");
        for len in 0..bytes.len() {
            assert!(
                PartitionSnapshot::decode(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 0x10;
            assert!(
                PartitionSnapshot::decode(&flipped).is_err(),
                "flipped byte {i}"
            );
        }
    }

    /// Well-formed (checksummed) bytes whose fields lie are refused, never trusted.
    #[test]
    fn lying_fields_are_errors() {
        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - 4);
            let crc = crc32c::crc32c(&body);
            body.extend_from_slice(&crc.to_be_bytes());
            body
        };
        let good = sample().encode().expect("encode").to_vec();
        // Epoch count far beyond the bytes present.
        let mut huge_count = good.clone();
        huge_count[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(PartitionSnapshot::decode(&reseal(huge_count)).is_err());
        // Producer length beyond the bytes present.
        let mut long_producers = good.clone();
        let at = 24 + 2 * 12;
        long_producers[at..at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
        assert!(PartitionSnapshot::decode(&reseal(long_producers)).is_err());
        // Log start above the next offset.
        let mut starts_late = good.clone();
        starts_late[12..20].copy_from_slice(&2_000i64.to_be_bytes());
        assert!(PartitionSnapshot::decode(&reseal(starts_late)).is_err());
        // Epochs that go back.
        let mut backwards = sample();
        backwards.epochs = vec![(5, 950), (3, 990)];
        let bytes = backwards.encode().expect("encode");
        assert!(PartitionSnapshot::decode(&bytes).is_err());
        // A producer state storage cannot load.
        let mut bad_producers = sample();
        bad_producers.producers = Bytes::from_static(b"SPP2\0\0\0\0");
        let bytes = bad_producers.encode().expect("encode");
        assert!(PartitionSnapshot::decode(&bytes).is_err());
        assert!(PartitionSnapshot::decode(&[0u8; 64]).is_err());
        assert!(decode_stored(&[0xff; 8]).is_err());
        assert!(decode_stored(&[]).is_err());
    }

    #[test]
    fn oversized_snapshots_are_refused() {
        let mut big = sample();
        big.producers = Bytes::from(vec![0u8; PARTITION_SNAPSHOT_BYTES_MAX]);
        assert!(matches!(big.encode(), Err(SnapshotError::TooLarge(_))));
        let bytes = vec![0u8; PARTITION_SNAPSHOT_BYTES_MAX + 1];
        assert!(matches!(
            PartitionSnapshot::decode(&bytes),
            Err(SnapshotError::TooLarge(_))
        ));
    }
}
