//! Partition store tests: openraft's log storage suite, then what only a partition log has:
//! a leader's proposals stamped at its log end and a follower keeping the leader's bytes
//! exactly (byte-identical replicas), control batches every client skips, a replicated copy
//! that does not continue the log refused, and a restart that finds the same entries.

#![allow(clippy::unwrap_used)]

use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::EntryPayload;
use openraft_rt::{AsyncRuntime, Oneshot};
use spool_protocol::batch::{self, BatchHeader, HEADER_BYTES};
use spool_storage::{Backend, LogConfig, MemFs, PartitionLog, TimestampType};

use super::codec::{
    decode_record, encode_batch, Entry, CONTROL_LEADER_CHANGE, CONTROL_SPOOL_MEMBERSHIP,
    LEADER_CHANGE_VALUE,
};
use super::tests::{log_id, membership, run, suite_error, MemStateMachine};
use super::{PartitionStore, StoreError, PROPOSAL_BASE_OFFSET};
use crate::rt::GlommioRuntime;
use crate::{Command, TypeConfig};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_000,
        segment_ms: i64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        max_message_bytes: 100_000,
        index_interval_bytes: 4096,
        timestamp_type: TimestampType::CreateTime,
        tail_cache_bytes_max: 0,
        producer_id_expiration_ms: -1,
        compaction: Default::default(),
    }
}

async fn open(fs: &MemFs, name: &str) -> Result<PartitionStore, StoreError> {
    let dir = PathBuf::from(format!("/data/{name}"));
    let log = PartitionLog::open_entry_indexed(dir, config(), Backend::Memory(fs.clone())).await?;
    PartitionStore::open(Rc::new(log)).await
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, PartitionStore, MemStateMachine, ()> for MemBuilder {
    async fn build(
        &self,
    ) -> Result<((), PartitionStore, MemStateMachine), openraft::StorageError<TypeConfig>> {
        let store = open(&MemFs::new(), "t-0").await.map_err(suite_error)?;
        Ok(((), store, MemStateMachine::default()))
    }
}

#[test]
fn openraft_log_suite_on_a_partition_log() {
    run(Suite::<
        TypeConfig,
        PartitionStore,
        MemStateMachine,
        MemBuilder,
        (),
    >::test_all(MemBuilder))
    .unwrap();
}

/// A one-record batch as a leader's Kafka layer proposes it (offset unstamped).
fn proposal(value: &str) -> Bytes {
    let batch = encode_batch(b"k", Some(value.as_bytes()), 0, 1_700_000_000_000, 0);
    let mut bytes = batch.to_vec();
    batch::set_base_offset(&mut bytes, PROPOSAL_BASE_OFFSET);
    Bytes::from(bytes)
}

fn normal(term: u64, index: u64, batch: Bytes) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command(batch)),
    }
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

async fn append(store: &mut PartitionStore, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = <GlommioRuntime as AsyncRuntime>::Oneshot::channel();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await.unwrap()
}

async fn entries(store: &mut PartitionStore) -> Vec<Entry> {
    store
        .get_log_reader()
        .await
        .try_get_log_entries(..)
        .await
        .unwrap()
}

/// Every stored batch, in order.
async fn stored(store: &PartitionStore) -> Vec<Bytes> {
    let log = store.log();
    log.read(log.log_start_offset(), 1 << 20, i64::MAX)
        .await
        .unwrap()
        .batches
}

#[test]
fn follower_stores_the_leaders_bytes_at_the_leaders_offsets() {
    run(async {
        let fs = MemFs::new();
        let mut leader = open(&fs, "leader").await.unwrap();
        let mut follower = open(&fs, "follower").await.unwrap();
        let members = Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Membership(membership()),
        };
        append(
            &mut leader,
            vec![
                blank(1, 0),
                normal(1, 1, proposal("a")),
                members,
                normal(1, 3, proposal("b")),
            ],
        )
        .await
        .unwrap();
        append(&mut leader, vec![blank(2, 4), normal(2, 5, proposal("c"))])
            .await
            .unwrap();

        // What replication sends: the leader's entries read back from its log.
        let sent = entries(&mut leader).await;
        assert_eq!(sent.len(), 6);
        for (i, entry) in sent.iter().enumerate() {
            assert_eq!(entry.log_id.index, i as u64);
        }
        assert!(matches!(sent[0].payload, EntryPayload::Blank));
        assert!(matches!(sent[2].payload, EntryPayload::Membership(_)));
        let EntryPayload::Normal(Command(first)) = &sent[1].payload else {
            panic!("entry 1 is client data");
        };
        let header = BatchHeader::parse(first).unwrap();
        assert_eq!((header.base_offset, header.partition_leader_epoch), (1, 1));
        append(&mut follower, sent[..3].to_vec()).await.unwrap();
        append(&mut follower, sent[3..].to_vec()).await.unwrap();

        let (ours, theirs) = (stored(&leader).await, stored(&follower).await);
        assert_eq!(ours.len(), 6);
        assert_eq!(ours, theirs, "replicas hold identical bytes");
        let epochs: Vec<(i64, i32)> = ours
            .iter()
            .map(|b| {
                let h = BatchHeader::parse(b).unwrap();
                (h.base_offset, h.partition_leader_epoch)
            })
            .collect();
        assert_eq!(epochs, [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]);
        assert_eq!(entries(&mut follower).await, sent);
    });
}

#[test]
fn control_batches_are_what_every_client_skips() {
    run(async {
        let fs = MemFs::new();
        let mut store = open(&fs, "t-0").await.unwrap();
        let members = Entry {
            log_id: log_id(3, 1),
            payload: EntryPayload::Membership(membership()),
        };
        append(&mut store, vec![blank(3, 0), members])
            .await
            .unwrap();
        let batches = stored(&store).await;
        for (bytes, control_type) in batches
            .iter()
            .zip([CONTROL_LEADER_CHANGE, CONTROL_SPOOL_MEMBERSHIP])
        {
            let header = batch::validate(bytes).unwrap();
            assert!(header.is_control() && !header.has_producer_id());
            assert!(!header.is_transactional());
            assert_eq!(header.records_count, 1);
            let (key, _value) = decode_record(bytes.slice(HEADER_BYTES..)).unwrap();
            let key = key.unwrap();
            // librdkafka refuses any control key but version 0 and exactly 4 bytes.
            assert_eq!(key.len(), 4);
            assert_eq!(&key[..2], &[0, 0]);
            assert_eq!(i16::from_be_bytes([key[2], key[3]]), control_type);
        }
        // Kafka's own decoders read them: the batch as a control batch, the blank entry's
        // value as a LeaderChangeMessage.
        let mut buf = batches[0].clone();
        let records = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
        let record = &records.records[0];
        assert!(record.control && record.producer_id == -1);
        use kafka_protocol::protocol::Decodable;
        let mut value = Bytes::from_static(&LEADER_CHANGE_VALUE);
        let message = kafka_protocol::messages::LeaderChangeMessage::decode(&mut value, 0).unwrap();
        assert_eq!(message.leader_id.0, -1);
        assert!(message.voters.is_empty() && message.granting_voters.is_empty());
        assert!(value.is_empty());
    });
}

#[test]
fn replicated_copy_that_does_not_continue_the_log_is_refused() {
    run(async {
        let fs = MemFs::new();
        let mut leader = open(&fs, "leader").await.unwrap();
        append(&mut leader, vec![blank(1, 0), normal(1, 1, proposal("a"))])
            .await
            .unwrap();
        let sent = entries(&mut leader).await;
        let mut follower = open(&fs, "follower").await.unwrap();
        // Entry 1 (offset 1) where the follower's log expects entry 0 at offset 0: a gap.
        let error = append(&mut follower, vec![sent[1].clone()]).await;
        // An empty log may start anywhere (a new follower after a snapshot), at the batch's
        // own offset.
        assert!(error.is_ok());
        assert_eq!(follower.log().log_end_offset(), 2);
        // But a batch stamped with another epoch than its entry's term is refused.
        let mut wrong = open(&fs, "wrong").await.unwrap();
        let mut relabelled = sent[1].clone();
        relabelled.log_id = log_id(7, 1);
        assert!(append(&mut wrong, vec![relabelled]).await.is_err());
    });
}

#[test]
fn restart_finds_the_same_entries_and_vote() {
    run(async {
        let fs = MemFs::new();
        let mut store = open(&fs, "t-0").await.unwrap();
        append(
            &mut store,
            vec![
                blank(1, 0),
                normal(1, 1, proposal("a")),
                normal(1, 2, proposal("b")),
            ],
        )
        .await
        .unwrap();
        let vote = openraft::Vote::new(1, 2);
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(1, 1))).await.unwrap();
        let before = entries(&mut store).await;
        let log = store.log().clone();
        drop(store);
        let Ok(log) = Rc::try_unwrap(log) else {
            panic!("the store let go of the log");
        };
        log.close().await.unwrap();
        let mut store = open(&fs, "t-0").await.unwrap();
        assert_eq!(entries(&mut store).await, before);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 2)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1)));
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.read_vote().await.unwrap(), Some(vote));
        // Truncating the uncommitted suffix takes the record back out of the log.
        store.truncate_after(Some(log_id(1, 1))).await.unwrap();
        assert_eq!(store.log().log_end_offset(), 2);
        assert_eq!(entries(&mut store).await, before[..2].to_vec());
    });
}

#[test]
fn the_leader_hears_of_its_proposals_once_durable_and_a_follower_of_none() {
    run(async {
        use std::cell::RefCell;
        let fs = MemFs::new();
        let mut leader = open(&fs, "leader").await.unwrap();
        let mut follower = open(&fs, "follower").await.unwrap();
        let heard: Rc<RefCell<Vec<super::DurableProposal>>> = Rc::default();
        for store in [&leader, &follower] {
            let heard = heard.clone();
            store.on_durable_proposals(Box::new(move |p| heard.borrow_mut().extend_from_slice(p)));
        }
        let tagged = |value: &str, tag: i32| {
            let mut bytes = proposal(value).to_vec();
            batch::set_partition_leader_epoch(&mut bytes, tag);
            Bytes::from(bytes)
        };
        append(
            &mut leader,
            vec![
                blank(3, 0),
                normal(3, 1, tagged("a", 7)),
                normal(3, 2, tagged("b", -1)),
            ],
        )
        .await
        .unwrap();
        let heard_now: Vec<(i32, u64, i64, i64)> = heard
            .borrow()
            .iter()
            .map(|p| (p.tag, p.index, p.base_offset, p.last_offset))
            .collect();
        assert_eq!(heard_now, [(7, 1, 1, 1), (-1, 2, 2, 2)]);
        // The tag never reaches the disk: the store stamps the term there.
        for b in stored(&leader).await {
            assert_eq!(BatchHeader::parse(&b).unwrap().partition_leader_epoch, 3);
        }
        heard.borrow_mut().clear();
        let sent = entries(&mut leader).await;
        append(&mut follower, sent).await.unwrap();
        assert!(
            heard.borrow().is_empty(),
            "a replicated copy is nobody's proposal here"
        );
    });
}
