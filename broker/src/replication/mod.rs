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

pub mod isr;
pub mod leadership;
pub mod quiesce;
pub mod reassign;
pub mod reports;
pub mod retention;
pub mod state_machine;

use std::cell::{Cell, RefCell};
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
use spool_raft::store::{DurableProposal, PartitionStore, PROPOSAL_BASE_OFFSET};
use spool_raft::transport::{GroupId, Router};
use spool_raft::{Command, NodeId, NodeInfo, TypeConfig};
use spool_storage::{PartitionLog, SequenceCheck};

use crate::runtime::{self, LocalReceiver, LocalSender};
use crate::shard::mesh::ProduceResult;
use crate::shard::{now_ms, storage_error_code};
use state_machine::{Appended, HighWatermark, PartitionStateMachine, SnapshotTarget};

pub type PartitionRaft = Raft<TypeConfig, PartitionStateMachine>;

/// Produce requests queued for one group's proposer; past it a request is answered with a
/// retriable error at once.
pub const PROPOSALS_QUEUED_MAX: usize = 1024;

/// How long a produce request waits for its batch to commit before REQUEST_TIMED_OUT (a group
/// without a quorum never commits; the Java producer's request timeout is 30 s).
pub const COMMIT_WAIT_MAX: Duration = Duration::from_secs(30);

/// acks=1 requests waiting for their batch to be durable in the leader's log; past it a request
/// waits for the commit instead (a stronger answer, only slower).
pub const DURABLE_WAITERS_MAX: usize = 4096;

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

/// Environment switch for quiescent partition groups (no per-group ticks, heartbeats or
/// election timers; see ARCHITECTURE.md, "Many groups"): on by default, `0` turns them off
/// (openraft's own timers per group, which cannot carry a thousand partitions per node).
pub const QUIESCE_ENV: &str = "SPOOL_PARTITION_QUIESCE";

/// openraft's settings for partition groups: the metadata quorum's election timeout (Kafka's
/// `replica.lag.time.max.ms` is far longer; a partition fails over like the quorum),
/// snapshots and purges only when retention asks (`retention.rs`), never by entry count.
/// Unless [`QUIESCE_ENV`]`=0`, no tick: a group has no heartbeat or election timer of its own;
/// the shard's `quiesce` loop pings each peer node once per round for all groups and starts
/// the elections of the groups whose leader's node stopped answering.
pub fn raft_config(
    cluster: &crate::config::ClusterConfig,
) -> Result<Arc<openraft::Config>, String> {
    let election = cluster.election_timeout_ms.max(10);
    let quiescent = std::env::var(QUIESCE_ENV).map_or(true, |v| v != "0");
    let config = openraft::Config {
        cluster_name: "spool-partition".into(),
        election_timeout_min: election,
        election_timeout_max: election * 2,
        // openraft also times AppendEntries out after this. A quiescent group sends no
        // periodic heartbeat, so only that timeout is left, and at 1/5 of the election
        // timeout a loaded follower's fsync made thousands of them fail and resend at 10,000
        // partitions. Three quarters is the most openraft's check (interval plus a tick below
        // the election timeout) allows.
        heartbeat_interval: if quiescent {
            (election * 3 / 4).max(5)
        } else {
            (election / 5).max(5)
        },
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        // Only retention's explicit `purge_log` purges: a snapshot alone keeps every entry.
        max_in_snapshot_log_to_keep: u64::MAX,
        // Opt-in until the fault harness passes with it reliably (a restarted follower
        // stayed behind on one partition in one of two runs).
        enable_tick: !quiescent,
        // A leader retries a follower whose node is down on this series. At openraft's flat
        // 200 ms, a dead node's followers cost each surviving leader of 3,000 groups 15,000
        // failed sends (and log lines) a second, and its node then missed pre-votes for
        // minutes. The quiescer ends the backoff when the node answers again (`quiesce`,
        // "Rejoin"), so a long one costs no catch-up time.
        backoff: if quiescent {
            "250ms 500ms ...8s".into()
        } else {
            openraft::Config::default().backoff
        },
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| e.to_string())
}

/// One batch waiting to be proposed.
struct Proposal {
    records: Bytes,
    acks: i16,
    /// `min.insync.replicas` for an acks=all request: above a majority, the answer also waits
    /// for this many replicas to hold the batch.
    min_insync: usize,
    /// `replica.lag.time.max.ms`.
    lag_max: Duration,
    reply: LocalSender<ProduceResult>,
}

/// acks=1 requests waiting for their proposal to be durable in this leader's log, by the tag
/// the proposer wrote into the batch's partition leader epoch field.
type DurableWaiters = Rc<RefCell<AHashMap<i32, LocalSender<DurableProposal>>>>;

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
    durable: DurableWaiters,
    next_tag: Cell<i32>,
    isr: RefCell<isr::IsrTracker>,
    /// Where retention wants the next snapshot to end (`retention.rs`).
    snapshot_target: SnapshotTarget,
    /// The in-sync replicas last reported to the controller, with the term they were seen in.
    reported_isr: RefCell<Option<(u64, Vec<i32>)>>,
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
        let durable: DurableWaiters = Rc::new(RefCell::new(AHashMap::new()));
        {
            let durable = durable.clone();
            store.on_durable_proposals(Box::new(move |proposals| {
                let mut waiters = durable.borrow_mut();
                for proposal in proposals {
                    if let Some(waiter) = waiters.remove(&proposal.tag) {
                        let _ = waiter.try_send(*proposal);
                    }
                }
            }));
        }
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
        // A replica a reassignment adds starts as a learner of the current voters; the leader
        // adds it (`add_learner`) and later makes it a voter through the log.
        let learner = (!spec.replicas.contains(&spec.node_id)).then_some(spec.node_id);
        let nodes: BTreeMap<NodeId, NodeInfo> = spec
            .replicas
            .iter()
            .chain(learner.iter())
            .map(|r| {
                let rpc_addr = spec.rpc_addrs.get(r).cloned().unwrap_or_default();
                (*r as NodeId, NodeInfo { rpc_addr })
            })
            .collect();
        let membership =
            Membership::new(vec![voters], nodes).map_err(|e| GroupError::Start(e.to_string()))?;
        let snapshot_target = SnapshotTarget::default();
        let sm = PartitionStateMachine::new(
            log.clone(),
            committed,
            StoredMembership::new(None, membership),
            hw.clone(),
            snapshot_target.clone(),
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
        // Bounded by `propose` (PROPOSALS_QUEUED_MAX); unbounded here so an idle group holds no
        // preallocated queue (glommio's bounded channel allocates its capacity up front).
        let (proposals, queue) = runtime::new_unbounded();
        let group = Rc::new(ReplicaGroup {
            id,
            topic: spec.topic.to_string(),
            partition: spec.partition,
            raft,
            hw,
            log,
            proposals,
            durable,
            next_tag: Cell::new(0),
            isr: RefCell::new(isr::IsrTracker::default()),
            snapshot_target,
            reported_isr: RefCell::new(None),
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

    /// Whether this leader holds its lease: a quorum acknowledged it within
    /// `election_timeout_max` (openraft's lease). The proposer refuses writes without it, as
    /// openraft upstream does, so a leader cut off from its peers answers
    /// NOT_LEADER_OR_FOLLOWER at once instead of leaving clients to time out. Refusing here,
    /// before the batch is recorded as pending, is safe, where openraft refusing a batch
    /// already sent to it was not (see [`Pending`]).
    fn lease_held(&self) -> bool {
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        quiesce::quorum_acked_within(&self.raft.metrics().borrow_watched(), lease)
    }

    /// The in-sync replicas while this replica leads (see [`isr`]), else `None`.
    pub fn in_sync_replicas(&self, lag_max: Duration) -> Option<Vec<i32>> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let now = std::time::Instant::now();
        let view = isr::LeaderView::of(&m);
        drop(m);
        let mut tracker = self.isr.borrow_mut();
        tracker.observe(&view, now, lag_max, quiesce::last_heard)?;
        Some(tracker.in_sync(view.id, now, lag_max))
    }

    /// The in-sync replicas and epoch to report to the controller, if they changed since the
    /// last report this replica made as leader.
    pub fn isr_to_report(&self, lag_max: Duration) -> Option<(u64, Vec<i32>)> {
        let term = self.leadership()?;
        let isr = self.in_sync_replicas(lag_max)?;
        match self.reported_isr.borrow().as_ref() {
            Some((t, reported)) if *t == term && *reported == isr => None,
            _ => Some((term, isr)),
        }
    }

    /// The controller took this report.
    pub fn isr_reported(&self, term: u64, isr: Vec<i32>) {
        *self.reported_isr.borrow_mut() = Some((term, isr));
    }

    /// Queues a produce request's records for this partition; the answer comes once the
    /// batch is committed (acks=all: a majority holds it durably, and `min_insync` replicas
    /// when that is more than a majority) or durable in this leader's log (acks=1), or at
    /// once with an error.
    pub fn propose(
        &self,
        records: Bytes,
        acks: i16,
        min_insync: usize,
        lag_max: Duration,
    ) -> LocalReceiver<ProduceResult> {
        let (reply, answer) = runtime::oneshot();
        // A full queue drops the proposal, and with it the reply: the waiter sees the channel
        // close and answers with a retriable error.
        if self.proposals.len() >= PROPOSALS_QUEUED_MAX {
            return answer;
        }
        let _ = self.proposals.try_send(Proposal {
            records,
            acks,
            min_insync,
            lag_max,
            reply,
        });
        answer
    }

    /// A tag for a proposal whose answer waits for it to be durable here, and where that
    /// news arrives; `None` when too many wait already.
    fn expect_durable(&self) -> Option<(i32, LocalReceiver<DurableProposal>)> {
        let mut waiters = self.durable.borrow_mut();
        if waiters.len() >= DURABLE_WAITERS_MAX {
            return None;
        }
        let mut tag = self.next_tag.get();
        while waiters.contains_key(&tag) {
            tag = tag.checked_add(1).unwrap_or(0);
        }
        self.next_tag.set(tag.checked_add(1).unwrap_or(0));
        let (tx, rx) = runtime::oneshot();
        waiters.insert(tag, tx);
        Some((tag, rx))
    }

    fn failed(&self, error_code: i16) -> ProduceResult {
        ProduceResult {
            error_code,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: self.log.visible_start_offset(),
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
///
/// This trusts that the leader's openraft, within one term, appends every write it is sent
/// until it stops leading: a write refused while a later one is accepted would leave the
/// later batch in the log without the refused one before it, and the client (librdkafka
/// counts a later success as proof of the earlier batch) would lose the refused batch. Hence
/// the vendored openraft appends writes whatever the leader's lease (SPOOL-PATCH.md) and the
/// proposer checks the lease itself, before recording a batch; a refusal for a leadership
/// transfer lasts to the end of the term.
#[derive(Default)]
struct Pending {
    term: u64,
    producers: AHashMap<i64, PendingProducer>,
    /// Per producer, the epoch of its newest marker or coordinator write in flight (a fence's
    /// bumped epoch): until that entry is in the log, the log's own check would still let the
    /// old epoch through, and a zombie's batch appended after the fence would reopen a
    /// transaction no coordinator knows.
    fences: AHashMap<i64, (i16, usize)>,
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
        if header.has_producer_id()
            && self
                .fences
                .get(&header.producer_id)
                .is_some_and(|&(epoch, _)| header.producer_epoch < epoch)
        {
            return Verdict::Refused(ResponseError::InvalidProducerEpoch.code());
        }
        // A transaction marker or a coordinator's transactional write has no sequence: only
        // the log's epoch checks apply.
        if sequenced(header) {
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
        if header.has_producer_id() && !sequenced(header) {
            let fence = self
                .fences
                .entry(header.producer_id)
                .or_insert((header.producer_epoch, 0));
            fence.0 = fence.0.max(header.producer_epoch);
            fence.1 += 1;
            return;
        }
        if !sequenced(header) {
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
        if term != self.term {
            return;
        }
        if header.has_producer_id() && !sequenced(header) {
            // In the log now (whatever its fate): the log's check holds its epoch from here.
            if let Some(fence) = self.fences.get_mut(&header.producer_id) {
                fence.1 -= 1;
                if fence.1 == 0 {
                    self.fences.remove(&header.producer_id);
                }
            }
            return;
        }
        if !sequenced(header) {
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

/// Whether a batch carries an idempotent producer's sequence.
fn sequenced(header: &BatchHeader) -> bool {
    header.has_producer_id() && header.base_sequence >= 0 && !header.is_control()
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
        // An idle quiescent leader's lease has run out: one heartbeat round renews it. A
        // ticking group's heartbeats keep it fresh while a quorum answers.
        let config = group.raft.config();
        if !config.enable_tick {
            let lease = Duration::from_millis(config.election_timeout_max);
            quiesce::renew_lease(&group.raft, lease).await;
        }
        if !group.lease_held() {
            let _ = proposal
                .reply
                .try_send(group.failed(ResponseError::NotLeaderOrFollower.code()));
            continue;
        }
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
                            log_start_offset: group.log.visible_start_offset(),
                        });
                    }
                }
                Verdict::Append => {
                    let mut stamped = bytes.to_vec();
                    batch::set_base_offset(&mut stamped, PROPOSAL_BASE_OFFSET);
                    // The partition leader epoch field is the store's to stamp; until then it
                    // carries the tag an acks=1 answer waits on (-1: nobody waits), never
                    // what the client wrote there.
                    let durable = if proposal.acks == 1 {
                        group.expect_durable()
                    } else {
                        None
                    };
                    batch::set_partition_leader_epoch(
                        &mut stamped,
                        durable.as_ref().map_or(-1, |(tag, _)| *tag),
                    );
                    let (responder, committed) = ProgressResponder::complete_only();
                    let sent = group
                        .raft
                        .write(Command(Bytes::from(stamped)))
                        .with_leader(term)
                        .responder(responder)
                        .await;
                    if sent.is_err() {
                        if let Some((tag, _)) = &durable {
                            group.durable.borrow_mut().remove(tag);
                        }
                        answer = Some(group.failed(ResponseError::NotLeaderOrFollower.code()));
                        break;
                    }
                    pending.borrow_mut().record(&header);
                    waits.push(Waiting {
                        header,
                        committed,
                        durable,
                    });
                }
            }
        }
        let pending = pending.clone();
        let (min_insync, lag_max) = (proposal.min_insync, proposal.lag_max);
        runtime::spawn_detached(async move {
            let mut first: Option<ProduceResult> = None;
            let mut error = None;
            // acks=1 batches answered before their commit, still to be settled at it.
            let mut unsettled = Vec::new();
            for wait in waits {
                let deadline = std::time::Instant::now() + COMMIT_WAIT_MAX;
                let Waiting {
                    header,
                    mut committed,
                    durable,
                } = wait;
                if let Some((tag, durable)) = durable {
                    let outcome = futures::future::select(
                        Box::pin(durable.recv()),
                        futures::future::select(
                            &mut committed,
                            Box::pin(runtime::sleep(COMMIT_WAIT_MAX)),
                        ),
                    )
                    .await;
                    group.durable.borrow_mut().remove(&tag);
                    match outcome {
                        futures::future::Either::Left((Some(d), _)) => {
                            first.get_or_insert(ProduceResult {
                                error_code: 0,
                                base_offset: d.base_offset,
                                log_append_time_ms: d.log_append_time_ms,
                                log_start_offset: group.log.visible_start_offset(),
                            });
                            unsettled.push((header, committed));
                            continue;
                        }
                        // Committed before this leader's own flush ended (two followers were
                        // faster): answered from the commit below.
                        futures::future::Either::Right((
                            futures::future::Either::Left((result, _)),
                            _,
                        )) => {
                            pending.borrow_mut().settle(&header, term);
                            let code = committed_code(&group, result, &mut first);
                            if code != 0 && error.is_none() {
                                error = Some(code);
                            }
                            continue;
                        }
                        _ => {
                            // Not durable in time, or the store is gone: settled at commit.
                            error.get_or_insert(ResponseError::RequestTimedOut.code());
                            unsettled.push((header, committed));
                            continue;
                        }
                    }
                }
                let outcome =
                    futures::future::select(committed, Box::pin(runtime::sleep(COMMIT_WAIT_MAX)))
                        .await;
                pending.borrow_mut().settle(&header, term);
                let code = match outcome {
                    futures::future::Either::Left((result, _)) => {
                        let index = match &result {
                            Ok(Ok(response)) => Some(response.log_id.index),
                            _ => None,
                        };
                        let code = committed_code(&group, result, &mut first);
                        match index {
                            Some(index)
                                if code == 0
                                    && !held_by(
                                        &group, term, index, min_insync, lag_max, deadline,
                                    )
                                    .await =>
                            {
                                ResponseError::NotEnoughReplicasAfterAppend.code()
                            }
                            _ => code,
                        }
                    }
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
            if proposal.acks != 0 {
                let result = match (answer, error, first) {
                    (_, Some(code), _) => group.failed(code),
                    (Some(answer), None, _) if answer.error_code != 0 => answer,
                    (_, None, Some(first)) => first,
                    (Some(answer), None, None) => answer,
                    (None, None, None) => group.failed(ResponseError::CorruptMessage.code()),
                };
                let _ = proposal.reply.try_send(result);
            }
            for (header, committed) in unsettled {
                let _ =
                    futures::future::select(committed, Box::pin(runtime::sleep(COMMIT_WAIT_MAX)))
                        .await;
                pending.borrow_mut().settle(&header, term);
            }
        });
    }
}

/// Longest pause between two looks at who holds an acks=all batch waiting for
/// `min.insync.replicas` above a majority.
const HELD_BY_POLL: Duration = Duration::from_millis(100);

/// A proposed batch whose answer is awaited.
struct Waiting {
    header: BatchHeader,
    committed: CommitReceiver,
    /// acks=1: the tag and news of the batch being durable in this leader's log.
    durable: Option<(i32, LocalReceiver<DurableProposal>)>,
}

type CommitReceiver = openraft::type_config::alias::OneshotReceiverOf<
    TypeConfig,
    openraft::raft::ClientWriteResult<TypeConfig>,
>;

/// The error code of a commit outcome (0: committed), noting the first batch's offsets.
fn committed_code<E>(
    group: &ReplicaGroup,
    result: Result<openraft::raft::ClientWriteResult<TypeConfig>, E>,
    first: &mut Option<ProduceResult>,
) -> i16 {
    match result {
        Ok(Ok(response)) => match Appended::decode(&response.data) {
            Some(appended) => {
                first.get_or_insert(ProduceResult {
                    error_code: 0,
                    base_offset: appended.base_offset,
                    log_append_time_ms: appended.log_append_time_ms,
                    log_start_offset: group.log.visible_start_offset(),
                });
                0
            }
            None => ResponseError::UnknownServerError.code(),
        },
        // Leadership moved before the entry committed: it may still commit under the next
        // leader; an idempotent retry is then answered as a duplicate.
        _ => ResponseError::NotLeaderOrFollower.code(),
    }
}

/// Whether `min_insync` voters (the leader among them) hold entry `index`, waiting for them
/// until `deadline` while this replica leads `term` and that many stay in sync (Kafka's
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrinks under a waiting acks=all request).
/// A commit already means a majority holds it, so only a `min.insync.replicas` above a
/// majority waits at all.
async fn held_by(
    group: &ReplicaGroup,
    term: u64,
    index: u64,
    min_insync: usize,
    lag_max: Duration,
    deadline: std::time::Instant,
) -> bool {
    let mut metrics = group.raft.metrics();
    loop {
        if group
            .in_sync_replicas(lag_max)
            .is_none_or(|isr| isr.len() < min_insync)
        {
            return false;
        }
        {
            let m = metrics.borrow_watched();
            let voters = m.membership_config.membership().voter_ids().count();
            if min_insync <= voters / 2 + 1 {
                return true;
            }
            if m.state != ServerState::Leader || m.current_term != term {
                return false;
            }
            let holding = m.replication.as_ref().map_or(0, |r| {
                r.values()
                    .filter(|matched| matched.is_some_and(|id| id.index >= index))
                    .count()
            });
            if holding >= min_insync {
                return true;
            }
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        // Woken by replication progress, and at least every `HELD_BY_POLL` to see a silent
        // follower's lag run out.
        let changed = futures::future::select(
            Box::pin(metrics.changed()),
            Box::pin(runtime::sleep((deadline - now).min(HELD_BY_POLL))),
        )
        .await;
        if let futures::future::Either::Left((Err(_), _)) = changed {
            return false;
        }
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
