//! Log store tests: openraft's own log storage suite on the in-memory backend and on real
//! O_DIRECT files, then crashes (acknowledged entries and the vote survive, a torn tail is
//! cut), purges across segments and restarts, and damaged bytes (a clear error, never a panic).
//! Everything runs inside a glommio executor (`GlommioRuntime`): the suite sleeps on its timers.

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::pin::pin;
use std::rc::Rc;

use bytes::Bytes;
use futures::StreamExt;
use futures_lite::future::poll_once;
use openraft::storage::{
    EntryResponder, IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine, Snapshot, SnapshotMeta,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, StoredMembership};
use openraft_rt::{AsyncRuntime, Oneshot};
use spool_storage::{Backend, MemFs, MemOp};

use super::codec::{
    decode_entry, decode_membership, encode_entry, encode_membership, Entry, PersistentState,
    RaftLogId, RaftMembership, Vote,
};
use super::{LogStore, StoreConfig, StoreError, STATE_FILE};
use crate::rt::GlommioRuntime;
use crate::{Command, NodeInfo, TypeConfig};

/// Small segments, so a few entries span several and purge deletes whole ones.
fn small_config() -> StoreConfig {
    StoreConfig {
        segment_bytes: 1_000,
        entry_bytes_max: 100_000,
        tail_cache_bytes_max: 0,
    }
}

fn group_dir() -> PathBuf {
    PathBuf::from("/raft/group-0")
}

pub(super) fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    GlommioRuntime::new(1).block_on(future)
}

async fn open_mem(fs: &MemFs) -> Result<LogStore, StoreError> {
    LogStore::open(group_dir(), Backend::Memory(fs.clone()), small_config()).await
}

pub(super) fn log_id(term: u64, index: u64) -> RaftLogId {
    LogId::new_term_index(term, index)
}

fn normal(term: u64, index: u64, data: &str) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command(Bytes::from(data.to_owned()))),
    }
}

pub(super) fn membership() -> RaftMembership {
    let nodes: BTreeMap<u64, NodeInfo> = [1, 2, 3, 4]
        .into_iter()
        .map(|id| {
            let rpc_addr = format!("10.0.0.{id}:9093");
            (id, NodeInfo { rpc_addr })
        })
        .collect();
    let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    RaftMembership::new(vec![voters], nodes).unwrap()
}

/// Appends and waits for the durability callback; returns what it reported.
async fn append_acked(store: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = <GlommioRuntime as AsyncRuntime>::Oneshot::channel();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await.unwrap()
}

async fn all_entries(store: &mut LogStore) -> Vec<Entry> {
    store
        .get_log_reader()
        .await
        .try_get_log_entries(..)
        .await
        .unwrap()
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

// ---- openraft's suite -----------------------------------------------------------------------

/// A minimal in-memory state machine: the suite needs one beside the log store.
#[derive(Clone, Default)]
pub(super) struct MemStateMachine {
    inner: Rc<RefCell<MemSmState>>,
}

#[derive(Default)]
struct MemSmState {
    applied: Option<RaftLogId>,
    membership: StoredMembershipOf<TypeConfig>,
    snapshot: Option<SnapshotMetaOf<TypeConfig>>,
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
    type SnapshotData = ();
    type SnapshotBuilder = MemStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<RaftLogId>, StoredMembershipOf<TypeConfig>), io::Error> {
        let inner = self.inner.borrow();
        Ok((inner.applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            {
                let mut inner = self.inner.borrow_mut();
                inner.applied = Some(entry.log_id);
                if let EntryPayload::Membership(m) = &entry.payload {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            if let Some(responder) = responder {
                responder.send(Command::default());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> MemStateMachine {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        _snapshot: (),
    ) -> Result<(), io::Error> {
        let mut inner = self.inner.borrow_mut();
        inner.applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, ()>>, io::Error> {
        let inner = self.inner.borrow();
        Ok(inner
            .snapshot
            .clone()
            .map(|meta| Snapshot { meta, snapshot: () }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MemStateMachine {
    type SnapshotData = ();

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, ()>, io::Error> {
        let mut inner = self.inner.borrow_mut();
        let meta = SnapshotMeta {
            last_log_id: inner.applied,
            last_membership: inner.membership.clone(),
        };
        inner.snapshot = Some(meta.clone());
        Ok(Snapshot { meta, snapshot: () })
    }
}

pub(super) fn suite_error(error: StoreError) -> openraft::StorageError<TypeConfig> {
    openraft::StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, error.into())
}

/// Every store on its own in-memory file system.
struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, MemStateMachine, ()> for MemBuilder {
    async fn build(
        &self,
    ) -> Result<((), LogStore, MemStateMachine), openraft::StorageError<TypeConfig>> {
        let store = open_mem(&MemFs::new()).await.map_err(suite_error)?;
        Ok(((), store, MemStateMachine::default()))
    }
}

/// Every store in its own temporary directory of O_DIRECT files.
struct DmaBuilder;

impl StoreBuilder<TypeConfig, LogStore, MemStateMachine, tempfile::TempDir> for DmaBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, MemStateMachine), openraft::StorageError<TypeConfig>>
    {
        let tmp = tempfile::tempdir().map_err(|e| {
            openraft::StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, e)
        })?;
        let dir = tmp.path().join("group-0");
        let store = LogStore::open(dir, Backend::Dma, small_config())
            .await
            .map_err(suite_error)?;
        Ok((tmp, store, MemStateMachine::default()))
    }
}

#[test]
fn openraft_log_suite_on_memory() {
    run(Suite::<TypeConfig, LogStore, MemStateMachine, MemBuilder, ()>::test_all(MemBuilder))
        .unwrap();
}

#[test]
fn openraft_log_suite_on_dma_files() {
    run(Suite::<
        TypeConfig,
        LogStore,
        MemStateMachine,
        DmaBuilder,
        tempfile::TempDir,
    >::test_all(DmaBuilder))
    .unwrap();
}

// ---- durability and recovery ----------------------------------------------------------------

#[test]
fn reopen_keeps_entries_vote_committed_and_log_state() {
    run(async {
        let fs = MemFs::new();
        let mut store = open_mem(&fs).await.unwrap();
        let vote = Vote::new_committed(3, 1);
        store.save_vote(&vote).await.unwrap();
        let mut entries = vec![Entry {
            log_id: log_id(1, 0),
            payload: EntryPayload::Membership(membership()),
        }];
        entries.push(Entry {
            log_id: log_id(2, 1),
            payload: EntryPayload::Blank,
        });
        entries.extend((2..30).map(|i| normal(3, i, &format!("command-{i}"))));
        append_acked(&mut store, entries.clone()).await.unwrap();
        store.save_committed(Some(log_id(3, 20))).await.unwrap();
        drop(store);

        fs.crash();
        let mut store = open_mem(&fs).await.unwrap();
        assert_eq!(
            store.get_log_reader().await.read_vote().await.unwrap(),
            Some(vote)
        );
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 20)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, None);
        assert_eq!(state.last_log_id, Some(log_id(3, 29)));
        assert_eq!(all_entries(&mut store).await, entries);
    });
}

#[test]
fn crash_keeps_every_acknowledged_entry_and_drops_the_unsynced_rest() {
    run(async {
        let fs = MemFs::new();
        let mut store = open_mem(&fs).await.unwrap();
        store.save_vote(&Vote::new(5, 2)).await.unwrap();
        for i in 0..12 {
            append_acked(&mut store, vec![normal(5, i, "acked")])
                .await
                .unwrap();
        }
        // The next append parks at its fdatasync: written, not durable, not acknowledged.
        fs.hold(MemOp::Sync);
        let (tx, mut rx) = <GlommioRuntime as AsyncRuntime>::Oneshot::channel();
        {
            let append = store.append(vec![normal(5, 12, "lost")], IOFlushed::signal(tx));
            let mut append = pin!(append);
            assert!(poll_once(&mut append).await.is_none());
            assert_eq!(fs.parked(MemOp::Sync), 1);
            assert!(
                poll_once(&mut rx).await.is_none(),
                "acknowledged before fdatasync"
            );
        }
        drop(store);
        fs.release(MemOp::Sync);
        fs.crash();

        let mut store = open_mem(&fs).await.unwrap();
        assert_eq!(
            indexes(&all_entries(&mut store).await),
            (0..12).collect::<Vec<_>>()
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(5, 11)));
        let vote = store.get_log_reader().await.read_vote().await.unwrap();
        assert_eq!(vote, Some(Vote::new(5, 2)));
        // The log continues where the durable entries end.
        append_acked(&mut store, vec![normal(6, 12, "again")])
            .await
            .unwrap();
        assert_eq!(all_entries(&mut store).await.len(), 13);
    });
}

#[test]
fn a_torn_tail_is_truncated_at_every_tear_point() {
    // The unsynced write covers the active segment's last durable page plus the new entry;
    // whatever prefix of it reached the disk, reopen keeps exactly the acknowledged entries.
    let torn_entry = normal(2, 3, &"x".repeat(300));
    let durable_entry = normal(2, 0, "durable");
    let durable_bytes = 3 * encode_entry(&durable_entry, 0).unwrap().0.len();
    let torn_bytes = encode_entry(&torn_entry, 0).unwrap().0.len();
    for prefix in (0..4096).step_by(97) {
        run(async {
            let fs = MemFs::new();
            let mut store = open_mem(&fs).await.unwrap();
            for i in 0..3 {
                let mut entry = durable_entry.clone();
                entry.log_id.index = i;
                append_acked(&mut store, vec![entry]).await.unwrap();
            }
            fs.hold(MemOp::Sync);
            {
                let append = store.append(vec![torn_entry.clone()], IOFlushed::noop());
                let mut append = pin!(append);
                assert!(poll_once(&mut append).await.is_none());
            }
            drop(store);
            fs.release(MemOp::Sync);
            fs.crash_torn(prefix);

            let mut store = open_mem(&fs).await.unwrap();
            let entries = all_entries(&mut store).await;
            // A write that landed whole may survive without its fdatasync; a partial one never.
            let survived = prefix >= durable_bytes + torn_bytes;
            if survived {
                assert_eq!(entries.len(), 4, "tear at {prefix}");
                assert_eq!(entries[3], torn_entry, "tear at {prefix}");
            } else {
                assert_eq!(indexes(&entries), vec![0, 1, 2], "tear at {prefix}");
            }
            let last = store.get_log_state().await.unwrap().last_log_id;
            assert_eq!(last, entries.last().map(|e| e.log_id));
            let next = entries.len() as u64;
            append_acked(&mut store, vec![normal(3, next, "after")])
                .await
                .unwrap();
        });
    }
}

#[test]
fn purge_deletes_whole_segments_and_survives_reopen() {
    run(async {
        let fs = MemFs::new();
        let mut store = open_mem(&fs).await.unwrap();
        let entries: Vec<Entry> = (0..60).map(|i| normal(1, i, &"p".repeat(40))).collect();
        append_acked(&mut store, entries).await.unwrap();
        let segments_before = segment_count(&fs);
        assert!(segments_before > 3, "small segments roll");

        store.purge(log_id(1, 30)).await.unwrap();
        assert!(
            segment_count(&fs) < segments_before,
            "whole segments deleted"
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 30)));
        assert_eq!(state.last_log_id, Some(log_id(1, 59)));
        assert_eq!(
            indexes(&all_entries(&mut store).await),
            (31..60).collect::<Vec<_>>()
        );
        drop(store);

        fs.crash();
        let mut store = open_mem(&fs).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 30)));
        assert_eq!(state.last_log_id, Some(log_id(1, 59)));
        assert_eq!(
            indexes(&all_entries(&mut store).await),
            (31..60).collect::<Vec<_>>()
        );

        // Past the end (a snapshot beyond the log): the log restarts after the purge point.
        store.purge(log_id(4, 100)).await.unwrap();
        append_acked(&mut store, vec![normal(4, 101, "after snapshot")])
            .await
            .unwrap();
        drop(store);
        fs.crash();
        let mut store = open_mem(&fs).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(4, 100)));
        assert_eq!(state.last_log_id, Some(log_id(4, 101)));
        assert_eq!(indexes(&all_entries(&mut store).await), vec![101]);
    });
}

fn segment_count(fs: &MemFs) -> usize {
    fs.paths()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .count()
}

#[test]
fn a_purge_interrupted_before_the_log_restart_is_finished_on_open() {
    run(async {
        let fs = MemFs::new();
        let mut store = open_mem(&fs).await.unwrap();
        append_acked(&mut store, (0..10).map(|i| normal(1, i, "e")).collect())
            .await
            .unwrap();
        // The purge point is durable; the crash comes before the log restarts past it.
        let purged = PersistentState {
            purged: Some(log_id(2, 50)),
            ..PersistentState::default()
        };
        store.shared.write_state(purged).await.unwrap();
        drop(store);
        fs.crash();

        let mut store = open_mem(&fs).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 50)));
        assert_eq!(state.last_log_id, Some(log_id(2, 50)));
        assert!(all_entries(&mut store).await.is_empty());
        append_acked(&mut store, vec![normal(2, 51, "next")])
            .await
            .unwrap();
    });
}

#[test]
fn appends_must_be_contiguous_unless_the_log_is_empty() {
    run(async {
        let fs = MemFs::new();
        let mut store = open_mem(&fs).await.unwrap();
        // An empty log starts wherever its first entry is.
        append_acked(&mut store, vec![normal(1, 7, "a")])
            .await
            .unwrap();
        let gap = append_acked(&mut store, vec![normal(1, 9, "gap")]).await;
        assert_eq!(gap.unwrap_err().kind(), io::ErrorKind::Other);
        let overlap = store
            .append(vec![normal(1, 7, "again")], IOFlushed::noop())
            .await;
        assert!(overlap.is_err());
        append_acked(&mut store, vec![normal(1, 8, "b")])
            .await
            .unwrap();
        drop(store);
        fs.crash();
        let mut store = open_mem(&fs).await.unwrap();
        assert_eq!(indexes(&all_entries(&mut store).await), vec![7, 8]);
    });
}

#[test]
fn a_failed_fdatasync_is_reported_to_the_callback_and_loses_the_entry() {
    run(async {
        let fs = MemFs::new();
        let mut store = open_mem(&fs).await.unwrap();
        append_acked(&mut store, vec![normal(1, 0, "ok")])
            .await
            .unwrap();
        fs.arm(spool_storage::failpoints::FLUSH_AFTER_WRITE_BEFORE_SYNC);
        let result = append_acked(&mut store, vec![normal(1, 1, "fails")]).await;
        assert!(result.is_err());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 0)));
    });
}

#[test]
fn dma_store_reopens_with_its_entries_and_vote() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group-0");
    run(async {
        let mut store = LogStore::open(dir.clone(), Backend::Dma, small_config())
            .await
            .unwrap();
        store.save_vote(&Vote::new_committed(2, 3)).await.unwrap();
        let entries: Vec<Entry> = (0..40).map(|i| normal(2, i, &"d".repeat(50))).collect();
        append_acked(&mut store, entries.clone()).await.unwrap();
        store.purge(log_id(2, 9)).await.unwrap();
        drop(store);

        let mut store = LogStore::open(dir.clone(), Backend::Dma, small_config())
            .await
            .unwrap();
        let vote = store.get_log_reader().await.read_vote().await.unwrap();
        assert_eq!(vote, Some(Vote::new_committed(2, 3)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 9)));
        assert_eq!(state.last_log_id, Some(log_id(2, 39)));
        assert_eq!(all_entries(&mut store).await, entries[10..].to_vec());
    });
}

// ---- damaged bytes --------------------------------------------------------------------------

fn state_path() -> PathBuf {
    group_dir().join(STATE_FILE)
}

#[test]
fn a_damaged_state_file_is_a_clear_error() {
    // (byte, mask): the body length, the version, the flags, a vote byte (checksum), the crc.
    let cases = [
        (5, 0x01),
        (8, 0x40),
        (4, 0x07),
        (9, 0x80),
        (20, 0x01),
        (60, 0x10),
    ];
    for (position, mask) in cases {
        run(async {
            let fs = MemFs::new();
            let mut store = open_mem(&fs).await.unwrap();
            store.save_vote(&Vote::new(7, 1)).await.unwrap();
            drop(store);
            fs.corrupt(&state_path(), position, mask);
            match open_mem(&fs).await {
                Err(StoreError::CorruptState { path, .. }) => assert_eq!(path, state_path()),
                Err(other) => panic!("byte {position}: unexpected error {other}"),
                Ok(_) => panic!("byte {position}: damage not detected"),
            }
        });
    }
}

#[test]
fn state_decoding_checks_the_length_before_trusting_it() {
    let state = PersistentState {
        vote: Some(Vote::new_committed(9, 4)),
        committed: Some(log_id(9, 100)),
        purged: Some(log_id(8, 50)),
    };
    let bytes = state.encode();
    assert_eq!(PersistentState::decode(&bytes), Ok(state));
    for len in 0..bytes.len() {
        assert!(
            PersistentState::decode(&bytes[..len]).is_err(),
            "prefix {len}"
        );
    }
    let mut huge = bytes.clone();
    huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        PersistentState::decode(&huge),
        Err("body length disagrees with the file size")
    );
}

#[test]
fn a_damaged_entry_is_a_clear_error() {
    run(async {
        let fs = MemFs::new();
        let mut store = open_mem(&fs).await.unwrap();
        let entries: Vec<Entry> = (0..40).map(|i| normal(1, i, &"c".repeat(40))).collect();
        append_acked(&mut store, entries).await.unwrap();
        drop(store);
        // Bit rot in the first (sealed, so trusted on open) segment, inside an entry's value.
        let first = fs
            .paths()
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap();
        fs.corrupt(&first, 100, 0x20);
        let mut store = open_mem(&fs).await.unwrap();
        let read = store.get_log_reader().await.try_get_log_entries(0..5).await;
        let error = read.unwrap_err();
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::Other
            ),
            "{error}"
        );
    });
}

/// Rewrites a batch's CRC after a test damaged the bytes it covers, so the damage reaches
/// the record decoder instead of failing the checksum.
fn reseal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn record_decoding_checks_every_length() {
    let entry = Entry {
        log_id: log_id(4, 0),
        payload: EntryPayload::Membership(membership()),
    };
    let (batch, epoch) = encode_entry(&entry, 1_000).unwrap();
    assert_eq!(epoch, 4);
    let mut stamped = batch.to_vec();
    spool_protocol::batch::set_partition_leader_epoch(&mut stamped, epoch);
    assert_eq!(
        decode_entry(&Bytes::from(stamped.clone()), 0).unwrap(),
        entry
    );
    assert!(
        decode_entry(&Bytes::from(stamped.clone()), 1).is_err(),
        "index mismatch"
    );

    // Every record byte, damaged several ways, with a valid CRC: an error or a valid entry,
    // never a panic.
    for position in 61..stamped.len() {
        for mask in [0x01, 0x40, 0x80, 0xff] {
            let mut damaged = stamped.clone();
            damaged[position] ^= mask;
            reseal(&mut damaged);
            let _ = decode_entry(&Bytes::from(damaged), 0);
        }
    }
    // A record length claiming far more than the batch holds.
    let mut long = stamped.clone();
    long[61] = 0xfe;
    reseal(&mut long);
    assert!(matches!(
        decode_entry(&Bytes::from(long), 0),
        Err(StoreError::CorruptEntry { index: 0, .. })
    ));
}

#[test]
fn membership_decoding_checks_counts_against_the_bytes_left() {
    let encoded = encode_membership(&membership()).unwrap();
    assert_eq!(decode_membership(&encoded).unwrap(), membership());
    for len in 0..encoded.len() {
        assert!(decode_membership(&encoded[..len]).is_err(), "prefix {len}");
    }
    // A voter count of 65535 with a few bytes behind it is refused before any allocation.
    let mut huge = encoded.to_vec();
    huge[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
    assert!(decode_membership(&huge).is_err());
    let mut trailing = encoded.to_vec();
    trailing.push(0);
    assert!(decode_membership(&trailing).is_err());
}

#[test]
fn entry_batches_are_what_kafka_decodes() {
    use kafka_protocol::records::RecordBatchDecoder;

    for (entry, value) in [
        (
            normal(3, 0, "payload"),
            Some(Bytes::from_static(b"payload")),
        ),
        (
            Entry {
                log_id: log_id(3, 0),
                payload: EntryPayload::Blank,
            },
            None,
        ),
    ] {
        let (batch, _) = encode_entry(&entry, 1_234).unwrap();
        let mut buf = batch.clone();
        let set = RecordBatchDecoder::decode(&mut buf).unwrap();
        assert_eq!(set.records.len(), 1);
        let record = &set.records[0];
        assert_eq!(record.value, value);
        assert_eq!(record.timestamp, 1_234);
        let key = record.key.clone().unwrap();
        assert_eq!(key.len(), 2);
        spool_protocol::batch::validate(&batch).unwrap();
    }
}

#[test]
fn terms_beyond_a_kafka_epoch_are_refused() {
    let entry = normal(u64::from(u32::MAX), 0, "x");
    assert!(matches!(
        encode_entry(&entry, 0),
        Err(StoreError::TermTooLarge { .. })
    ));
}
