//! Replicated partitions: each data partition of a multi-node cluster is one openraft group
//! whose voters are its replicas, living on the partition's shard on every replica broker;
//! its Raft log is the partition's log (`spool_raft::store::PartitionStore`). See
//! ARCHITECTURE.md, "Replicated partitions".
//!
//! This module is the Kafka side of a group: the leader's proposer (checks a batch against the
//! idempotent-producer state, proposes it, answers the produce request at commit with the
//! offsets its store stamped), the high watermark (moved by the state machine), and the
//! report of each new leadership to the controller, which writes it into the metadata log so
//! every broker's Metadata names the leader and its epoch.
//!
//! Owned by: the partition's shard (`!Send`).

pub mod quiesce;
pub mod state_machine;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use openraft::async_runtime::WatchReceiver;
use openraft::impls::ProgressResponder;
use openraft::{Membership, Raft, ServerState, StoredMembership};
use spool_protocol::batch::{self, BatchHeader};
use spool_raft::store::{PartitionStore, PROPOSAL_BASE_OFFSET};
use spool_raft::transport::{GroupId, Router};
use spool_raft::{Command, NodeId, NodeInfo, TypeConfig};
use spool_storage::{PartitionLog, SequenceCheck};

use crate::runtime::{self, LocalReceiver, LocalSender};
use crate::shard::mesh::ProduceResult;
use crate::shard::{now_ms, storage_error_code};
use state_machine::{Appended, HighWatermark, PartitionStateMachine};

pub type PartitionRaft = Raft<TypeConfig, PartitionStateMachine>;

/// Produce requests queued for one group's proposer; past it a request is answered with a
/// retriable error at once.
pub const PROPOSALS_QUEUED_MAX: usize = 1024;

/// How long a produce request waits for its batch to commit before REQUEST_TIMED_OUT (a group
/// without a quorum never commits; the Java producer's request timeout is 30 s).
pub const COMMIT_WAIT_MAX: Duration = Duration::from_secs(30);

/// Pause between attempts to report a leadership while the controller cannot be reached.
const REPORT_RETRY: Duration = Duration::from_millis(200);

/// The transport id of a partition's group: a hash of the topic id and the partition (a
/// recreated topic of the same name gets a new id, so its groups never meet the old ones).
/// Never 0 (the metadata group), `u64::MAX` (application messages) or `PING_GROUP`.
pub fn group_id(topic_id: &uuid::Uuid, partition: i32) -> GroupId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic_id
        .as_bytes()
        .iter()
        .chain(partition.to_be_bytes().iter())
    {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.clamp(1, spool_raft::transport::PING_GROUP - 1)
}

/// Environment switch for quiescent partition groups (`1` turns them on). Off by default
/// until the replication and fault tests pass with it (see ARCHITECTURE.md, "Many groups").
pub const QUIESCE_ENV: &str = "SPOOL_PARTITION_QUIESCE";

/// openraft's settings for partition groups: the metadata quorum's election timeout (Kafka's
/// `replica.lag.time.max.ms` is far longer; a partition fails over like the quorum), no
/// snapshots until retention goes through Raft (nothing is ever purged behind openraft).
/// With [`QUIESCE_ENV`] set, no tick: a group has no heartbeat or election timer of its own;
/// the shard's `quiesce` loop pings each peer node once per round for all groups and starts
/// the elections of the groups whose leader's node stopped answering.
pub fn raft_config(
    cluster: &crate::config::ClusterConfig,
) -> Result<Arc<openraft::Config>, String> {
    let election = cluster.election_timeout_ms.max(10);
    let config = openraft::Config {
        cluster_name: "spool-partition".into(),
        election_timeout_min: election,
        election_timeout_max: election * 2,
        heartbeat_interval: (election / 5).max(5),
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        enable_tick: std::env::var(QUIESCE_ENV).map_or(true, |v| v != "1"),
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| e.to_string())
}

/// One batch waiting to be proposed.
struct Proposal {
    records: Bytes,
    acks: i16,
    reply: LocalSender<ProduceResult>,
}

/// A partition's Raft group on this node.
///
/// Owned by: the partition's shard.
pub struct ReplicaGroup {
    pub id: GroupId,
    pub topic: String,
    pub partition: i32,
    pub raft: PartitionRaft,
    pub hw: Rc<HighWatermark>,
    log: Rc<PartitionLog>,
    proposals: LocalSender<Proposal>,
}

/// Where a group's peers are and who they are.
pub struct GroupSpec<'a> {
    pub node_id: i32,
    pub topic: &'a str,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub replicas: &'a [i32],
    /// RPC address of every broker the cluster knows.
    pub rpc_addrs: &'a AHashMap<i32, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("cannot open the partition's Raft log: {0}")]
    Store(#[from] spool_raft::store::StoreError),
    #[error("cannot start the partition's Raft group: {0}")]
    Start(String),
}

impl ReplicaGroup {
    /// Starts the group on `log` (opened entry-indexed). The group is created pre-initialized:
    /// every replica derives the same voters from the metadata record, so no membership entry
    /// precedes the data and no `initialize` call races another replica's.
    pub async fn start(
        spec: GroupSpec<'_>,
        log: Rc<PartitionLog>,
        router: Router,
        config: Arc<openraft::Config>,
    ) -> Result<Rc<ReplicaGroup>, GroupError> {
        let mut store = PartitionStore::open(log.clone()).await?;
        let committed = {
            use openraft::storage::RaftLogStorage;
            let committed = store
                .read_committed()
                .await
                .map_err(|e| GroupError::Start(e.to_string()))?;
            let last = store
                .get_log_state()
                .await
                .map_err(|e| GroupError::Start(e.to_string()))?
                .last_log_id;
            committed.min(last)
        };
        let hw = HighWatermark::new(match committed {
            Some(id) => log
                .offset_of_index(id.index)
                .await
                .map_err(|e| GroupError::Start(e.to_string()))?
                .map_or(log.log_start_offset(), |(_, last)| last + 1),
            None => log.log_start_offset(),
        });
        let voters: BTreeSet<NodeId> = spec.replicas.iter().map(|r| *r as NodeId).collect();
        let nodes: BTreeMap<NodeId, NodeInfo> = spec
            .replicas
            .iter()
            .map(|r| {
                let rpc_addr = spec.rpc_addrs.get(r).cloned().unwrap_or_default();
                (*r as NodeId, NodeInfo { rpc_addr })
            })
            .collect();
        let membership =
            Membership::new(vec![voters], nodes).map_err(|e| GroupError::Start(e.to_string()))?;
        let sm = PartitionStateMachine::new(
            log.clone(),
            committed,
            StoredMembership::new(None, membership),
            hw.clone(),
        );
        let id = group_id(&spec.topic_id, spec.partition);
        let timing = quiesce::Timing::from_election_timeout(config.election_timeout_min);
        let quiescent = !config.enable_tick;
        let network = spool_raft::transport::network_factory(router.clone(), id);
        let raft = Raft::new(spec.node_id as NodeId, config, network, store, sm)
            .await
            .map_err(|e| GroupError::Start(e.to_string()))?;
        // The preferred replica of a new group stands at once instead of waiting out an
        // election timeout, so the leader Metadata named at creation is soon the real one.
        let fresh = committed.is_none() && log.log_end_offset() == 0;
        // A sole voter elects itself at once (a quiescent group has no tick to do it).
        let sole = spec.replicas == [spec.node_id];
        if sole || (fresh && spec.replicas.first() == Some(&spec.node_id)) {
            if let Err(e) = raft.trigger().elect(false).await {
                tracing::debug!(
                    topic = spec.topic,
                    partition = spec.partition,
                    "no election: {e}"
                );
            }
        }
        let (proposals, queue) = runtime::new_bounded(PROPOSALS_QUEUED_MAX);
        let group = Rc::new(ReplicaGroup {
            id,
            topic: spec.topic.to_string(),
            partition: spec.partition,
            raft,
            hw,
            log,
            proposals,
        });
        runtime::spawn_detached(proposer(Rc::downgrade(&group), queue));
        if quiescent {
            quiesce::register(&group, spec.node_id as NodeId, &router, timing);
        }
        Ok(group)
    }

    /// Whether this replica leads the group now, and in which term (the leader epoch).
    pub fn leadership(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        (m.state == ServerState::Leader).then_some(m.current_term)
    }

    /// Queues a produce request's records for this partition; the answer comes once the
    /// batch is committed (acks=all and acks=1 alike: a replicated partition acknowledges
    /// what a majority holds), or at once with an error.
    pub fn propose(&self, records: Bytes, acks: i16) -> LocalReceiver<ProduceResult> {
        let (reply, answer) = runtime::oneshot();
        // A full queue drops the proposal, and with it the reply: the waiter sees the channel
        // close and answers with a retriable error.
        let _ = self.proposals.try_send(Proposal {
            records,
            acks,
            reply,
        });
        answer
    }

    fn failed(&self, error_code: i16) -> ProduceResult {
        ProduceResult {
            error_code,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: self.log.log_start_offset(),
        }
    }

    /// Stops the group (the log stays open: the partition closes it).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::debug!(topic = %self.topic, partition = self.partition, "group did not stop cleanly: {e}");
        }
    }
}

/// Sequences the leader has proposed but not yet seen committed, per producer: a batch that
/// continues a pending one is accepted although the log has not got the pending one yet, and
/// a retry of a pending one is told to come back (it is answered as a duplicate once the
/// original is in the log).
#[derive(Default)]
struct Pending {
    term: u64,
    producers: AHashMap<i64, PendingProducer>,
}

struct PendingProducer {
    epoch: i16,
    next_sequence: i32,
    /// (first, last) sequence of each batch in flight, oldest first.
    batches: VecDeque<(i32, i32)>,
}

enum Verdict {
    Append,
    Duplicate { base_offset: i64, last_offset: i64 },
    Refused(i16),
}

impl Pending {
    fn check(&self, log: &PartitionLog, records: &Bytes, header: &BatchHeader) -> Verdict {
        if header.has_producer_id() {
            if let Some(pending) = self.producers.get(&header.producer_id) {
                let ordered = if header.producer_epoch < pending.epoch {
                    Err(ResponseError::InvalidProducerEpoch.code())
                } else if header.producer_epoch > pending.epoch {
                    if header.base_sequence == 0 {
                        Ok(())
                    } else {
                        Err(ResponseError::OutOfOrderSequenceNumber.code())
                    }
                } else if header.base_sequence == pending.next_sequence {
                    Ok(())
                } else if pending
                    .batches
                    .contains(&(header.base_sequence, header.last_sequence()))
                {
                    // Still in flight: retriable, and by the retry it may be in the log.
                    Err(ResponseError::NotEnoughReplicas.code())
                } else {
                    Err(ResponseError::OutOfOrderSequenceNumber.code())
                };
                return match ordered {
                    Ok(()) => Verdict::Append,
                    Err(code) => Verdict::Refused(code),
                };
            }
        }
        match log.check_producer(records, now_ms()) {
            Ok(SequenceCheck::Append) => Verdict::Append,
            Ok(SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            }) => Verdict::Duplicate {
                base_offset,
                last_offset,
            },
            Err(e) => Verdict::Refused(storage_error_code(&e)),
        }
    }

    fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() {
            return;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert(PendingProducer {
                epoch: header.producer_epoch,
                next_sequence: 0,
                batches: VecDeque::new(),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.next_sequence = batch::sequence_add(header.last_sequence(), 1);
        entry
            .batches
            .push_back((header.base_sequence, header.last_sequence()));
    }

    fn settle(&mut self, header: &BatchHeader, term: u64) {
        if term != self.term || !header.has_producer_id() {
            return;
        }
        if let Some(entry) = self.producers.get_mut(&header.producer_id) {
            let key = (header.base_sequence, header.last_sequence());
            if let Some(at) = entry.batches.iter().position(|b| *b == key) {
                entry.batches.remove(at);
            }
            if entry.batches.is_empty() {
                self.producers.remove(&header.producer_id);
            }
        }
    }
}

/// The leader's proposer: takes produce requests in arrival order, checks each batch, proposes
/// it in that order, and answers each request when its batch commits.
async fn proposer(group: std::rc::Weak<ReplicaGroup>, queue: LocalReceiver<Proposal>) {
    let pending = Rc::new(RefCell::new(Pending::default()));
    // The queue closes when the group is dropped; the task holds it only while proposing.
    while let Some(proposal) = queue.recv().await {
        let Some(group) = group.upgrade() else {
            return;
        };
        let Some(term) = group.leadership() else {
            let _ = proposal
                .reply
                .try_send(group.failed(ResponseError::NotLeaderOrFollower.code()));
            continue;
        };
        if pending.borrow().term != term {
            *pending.borrow_mut() = Pending {
                term,
                ..Pending::default()
            };
        }
        let mut waits = Vec::new();
        let mut answer: Option<ProduceResult> = None;
        let mut duplicate_end: Option<i64> = None;
        for frame in batch::batches(proposal.records.clone()) {
            let Ok((_, bytes)) = frame else {
                answer = Some(group.failed(ResponseError::CorruptMessage.code()));
                break;
            };
            let header = match batch::validate(&bytes) {
                Ok(header) => header,
                Err(_) => {
                    answer = Some(group.failed(ResponseError::CorruptMessage.code()));
                    break;
                }
            };
            let verdict = pending.borrow().check(&group.log, &bytes, &header);
            match verdict {
                Verdict::Refused(code) => {
                    answer = Some(group.failed(code));
                    break;
                }
                Verdict::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    // The original is in this leader's log but perhaps not committed yet (a
                    // new leader commits its predecessor's entries with its blank entry):
                    // answered once it is, as Kafka answers acks=all at the high watermark.
                    duplicate_end = duplicate_end.max(Some(last_offset + 1));
                    if waits.is_empty() && answer.is_none() {
                        answer = Some(ProduceResult {
                            error_code: 0,
                            base_offset,
                            log_append_time_ms: -1,
                            log_start_offset: group.log.log_start_offset(),
                        });
                    }
                }
                Verdict::Append => {
                    let mut stamped = bytes.to_vec();
                    batch::set_base_offset(&mut stamped, PROPOSAL_BASE_OFFSET);
                    let (responder, committed) = ProgressResponder::complete_only();
                    let sent = group
                        .raft
                        .write(Command(Bytes::from(stamped)))
                        .with_leader(term)
                        .responder(responder)
                        .await;
                    if sent.is_err() {
                        answer = Some(group.failed(ResponseError::NotLeaderOrFollower.code()));
                        break;
                    }
                    pending.borrow_mut().record(&header);
                    waits.push((header, committed));
                }
            }
        }
        let pending = pending.clone();
        runtime::spawn_detached(async move {
            let mut first: Option<ProduceResult> = None;
            let mut error = None;
            for (header, committed) in waits {
                let outcome =
                    futures::future::select(committed, Box::pin(runtime::sleep(COMMIT_WAIT_MAX)))
                        .await;
                pending.borrow_mut().settle(&header, term);
                let code = match outcome {
                    futures::future::Either::Left((Ok(Ok(response)), _)) => {
                        match Appended::decode(&response.data) {
                            Some(appended) => {
                                first.get_or_insert(ProduceResult {
                                    error_code: 0,
                                    base_offset: appended.base_offset,
                                    log_append_time_ms: appended.log_append_time_ms,
                                    log_start_offset: group.log.log_start_offset(),
                                });
                                0
                            }
                            None => ResponseError::UnknownServerError.code(),
                        }
                    }
                    // Leadership moved before the entry committed: it may still commit under
                    // the next leader; an idempotent retry is then answered as a duplicate.
                    futures::future::Either::Left(_) => ResponseError::NotLeaderOrFollower.code(),
                    futures::future::Either::Right(_) => ResponseError::RequestTimedOut.code(),
                };
                if code != 0 && error.is_none() {
                    error = Some(code);
                }
            }
            if let Some(end) = duplicate_end.filter(|_| error.is_none()) {
                if !committed_through(&group, term, end).await {
                    error = Some(ResponseError::NotLeaderOrFollower.code());
                }
            }
            if proposal.acks == 0 {
                return;
            }
            let result = match (answer, error, first) {
                (_, Some(code), _) => group.failed(code),
                (Some(answer), None, _) if answer.error_code != 0 => answer,
                (_, None, Some(first)) => first,
                (Some(answer), None, None) => answer,
                (None, None, None) => group.failed(ResponseError::CorruptMessage.code()),
            };
            let _ = proposal.reply.try_send(result);
        });
    }
}

/// Waits until the high watermark reaches `end` while this replica still leads `term`
/// (bounded by [`COMMIT_WAIT_MAX`]): true if it did.
async fn committed_through(group: &ReplicaGroup, term: u64, end: i64) -> bool {
    let deadline = std::time::Instant::now() + COMMIT_WAIT_MAX;
    while group.hw.offset.get() < end {
        if group.leadership() != Some(term) || std::time::Instant::now() >= deadline {
            return false;
        }
        runtime::sleep(DUPLICATE_POLL).await;
    }
    true
}

/// How often an answer to a retried batch looks whether the original has committed (rare:
/// only retries whose original a new leader has not committed yet wait at all).
const DUPLICATE_POLL: Duration = Duration::from_millis(5);

/// Reports each leadership this replica wins to the controller (through `report`), once per
/// term, retrying while it still leads that term.
pub async fn report_leadership<F, Fut>(group: Rc<ReplicaGroup>, report: F)
where
    F: Fn(i32) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut metrics = group.raft.metrics();
    let mut reported = None;
    loop {
        let leading = group.leadership();
        if let Some(term) = leading {
            if reported != Some(term) {
                let epoch = i32::try_from(term).unwrap_or(i32::MAX);
                if report(epoch).await {
                    reported = Some(term);
                } else {
                    runtime::sleep(REPORT_RETRY).await;
                    continue;
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
