//! A shard: one pinned executor owning a fixed set of partitions, its own sockets and its own
//! group-commit flusher.
//!
//! Architecture invariants:
//! - a partition's log is touched only by the shard `routing::shard_for` names;
//! - shards share nothing; they talk through `mesh` messages only;
//! - shard 0 is the metadata shard: it alone changes the topic table and persists it, then tells
//!   every shard (`Request::TopicUpsert` / `TopicDelete`).

pub mod cleaner;
pub mod mesh;
pub mod partition;
pub mod routing;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use kafka_protocol::error::ResponseError;
use spool_protocol::batch;
use spool_storage::{
    Backend, CleanBook, CleanBookWriter, CleanFrom, LogConfig, PartitionLog, StorageError,
    SyncRounds, TimestampType,
};

use crate::cluster::node::ClusterNode;
use crate::cluster::rpc::LeaderReport;
use crate::cluster::view::ClusterView;
use crate::config::{BrokerConfig, FlushMode};
use crate::metadata::{TopicMeta, TopicTable};
use crate::runtime::{self, LocalReceiver, LocalSender};
use mesh::{
    AdminRequest, EpochAnswer, EpochQuery, FetchPart, FetchResult, LogDirPart, Mesh, OffsetAnswer,
    OffsetQuery, ProducePart, ProduceResult, Reply, Request,
};
use partition::Partition;

/// Partitions one group commit flushes at once.
pub const FLUSH_PARTITIONS_MAX: usize = 1024;

/// Partitions a shard closes at once at shutdown.
pub const CLOSE_IN_FLIGHT_MAX: usize = 64;

/// Partition logs a shard opens at once (start-up, a topic created or grown).
pub const OPEN_IN_FLIGHT_MAX: usize = 64;

/// How long a metadata write without a timeout of its own (auto-creation, producer ids) waits
/// for the controller (the Java client's request.timeout.ms).
pub const ADMIN_TIMEOUT_MS: u64 = 30_000;

/// How long DescribeQuorum looks for the quorum's leader before REQUEST_TIMED_OUT (the request
/// has no timeout of its own; Kafka's forwarding uses 60 s, the Java admin's request timeout is
/// 30 s).
pub const QUORUM_TIMEOUT_MS: u64 = 20_000;

/// Longest pause between two looks at the in-sync replicas of the partitions a shard leads
/// (shorter when `replica.lag.time.max.ms` / 2 is).
pub const ISR_SWEEP_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Partitions one ISR report to the controller carries at most.
pub const ISR_REPORT_BATCH_MAX: usize = 1000;

/// What a produce answer still waits for.
pub enum Wait {
    None,
    /// The partition's group commit round (error code, 0 = durable).
    Durable(LocalReceiver<i16>),
    /// A replicated partition's commit, with the offsets the leader stamped.
    Replicated(LocalReceiver<ProduceResult>),
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Rc<BrokerConfig>,
    /// The cluster as shard 0 last described it.
    pub view: RefCell<Rc<ClusterView>>,
    /// Shard 0 only: this node's place in the cluster (the metadata Raft group).
    pub cluster: RefCell<Option<Rc<ClusterNode>>>,
    pub topics: RefCell<TopicTable>,
    partitions: RefCell<AHashMap<(String, i32), Rc<Partition>>>,
    pub mesh: Mesh,
    dirty: RefCell<Vec<Rc<Partition>>>,
    /// Where every partition log of the shard makes its appends durable together.
    sync_rounds: Rc<SyncRounds>,
    flush_wake: LocalSender<()>,
    flush_wake_rx: RefCell<Option<LocalReceiver<()>>>,
    pub shutting_down: Cell<bool>,
    /// This broker's dynamic broker configs, from the metadata log (`dynamic_config.rs`).
    pub dynamic: RefCell<crate::dynamic_config::DynamicConfigs>,
    /// The consumer groups whose `__consumer_offsets` partition this shard owns.
    pub groups: crate::group::GroupCoordinator,
    /// The transactional ids whose `__transaction_state` partition this shard owns.
    pub txns: crate::txn::TxnCoordinator,
    /// KIP-890 verifications this shard's produce requests wait for, per coordinator node.
    pub txn_verifier: crate::txn::verify::Verifier,
    /// This shard's Raft groups as peers' RPCs reach them (shard 0: also the metadata group
    /// and the controller RPCs).
    pub raft_groups: spool_raft::transport::GroupRegistry,
    /// This shard's connections to peer nodes, shared by all of its groups.
    pub raft_router: spool_raft::transport::Router,
    /// The shard running each partition group this node hosts: shard 0's RPC listener forwards
    /// a peer's request for a group on another shard by it.
    group_owners: RefCell<AHashMap<u64, usize>>,
    /// Taken by `apply_topic` across its awaits: topic updates arrive as concurrent tasks (a
    /// leadership or ISR report right after a creation), and two of them must never both open
    /// the same partition's files or start its group twice.
    topic_apply: futures::lock::Mutex<()>,
    /// Leadership reports waiting for the controller, sent in batches.
    leader_reports: crate::replication::reports::LeaderReports,
    /// Topics with a partition `apply_topic` could not open or start: the next update of
    /// the topic, whatever it changes, tries them again.
    topics_incomplete: RefCell<ahash::AHashSet<String>>,
    /// The tail cache share last applied to every partition.
    tail_share: Cell<usize>,
    /// The last clean stop's records of this shard's logs, each handed to the log's first
    /// open (see `spool_storage::clean`).
    clean_book: RefCell<CleanBook>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Maps a storage failure to the Kafka error code a client understands.
pub fn storage_error_code(e: &StorageError) -> i16 {
    match e {
        StorageError::CorruptBatch { .. } => ResponseError::CorruptMessage.code(),
        StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        StorageError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber.code(),
        StorageError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch.code(),
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        StorageError::Io { .. } | StorageError::CorruptTxnIndex { .. } => {
            ResponseError::KafkaStorageError.code()
        }
        StorageError::InvalidRecord { .. } => ResponseError::InvalidRecord.code(),
        StorageError::TransactionCoordinatorFenced { .. } => {
            ResponseError::TransactionCoordinatorFenced.code()
        }
        #[allow(unreachable_patterns)]
        _ => ResponseError::UnknownServerError.code(),
    }
}

/// The first record at or after `timestamp` in the batch holding `offset` (storage indexes whole
/// batches; ListOffsets answers with a record).
async fn first_record_at_or_after(
    p: &Partition,
    offset: i64,
    timestamp: i64,
    high_watermark: i64,
) -> Result<Option<(i64, i64)>, i16> {
    // Never below Kafka's log start (DeleteRecords may have moved it inside a batch), as
    // Kafka's lookup starts at max(found, logStartOffset); batches whose max timestamp is
    // below the target hold no answer and are passed over undecoded.
    // `offset` names the batch to start in (any of its offsets: the max timestamp lookup
    // gives the batch's last); records before it in that batch count, those below the log
    // start never do.
    let floor = p.log.visible_start_offset();
    let mut from = offset.max(floor);
    for _ in 0..TIMESTAMP_SCAN_BATCHES_MAX {
        if from >= high_watermark {
            return Ok(None);
        }
        let read = p
            .log
            .read(from, 1, high_watermark)
            .await
            .map_err(|e| storage_error_code(&e))?;
        let Some(batch) = read.batches.first() else {
            return Ok(None);
        };
        let header = spool_protocol::batch::BatchHeader::parse(batch)
            .map_err(|_| ResponseError::CorruptMessage.code())?;
        if header.max_timestamp >= timestamp && !header.is_control() {
            let records = spool_protocol::batch::record_timestamps(batch).map_err(|e| {
                tracing::error!(topic = %p.topic, partition = p.index, "stored batch at {from} undecodable: {e}");
                ResponseError::CorruptMessage.code()
            })?;
            let found = records
                .into_iter()
                .find(|&(o, ts)| ts >= timestamp && o >= floor && o < high_watermark);
            if found.is_some() {
                return Ok(found);
            }
        }
        from = header.last_offset() + 1;
    }
    Ok(None)
}

/// Whether a `cleanup.policy` value holds `compact`.
pub fn policy_compacts(policy: &str) -> bool {
    policy.split(',').any(|v| v.trim() == "compact")
}

/// Batches a ListOffsets by timestamp reads past the one the time index found (when the log
/// start or a control batch sits in the way) before it answers "none".
const TIMESTAMP_SCAN_BATCHES_MAX: usize = 64;

impl Shard {
    pub fn new(id: usize, count: usize, config: Rc<BrokerConfig>, mesh: Mesh) -> Rc<Shard> {
        let (flush_wake, flush_wake_rx) = runtime::new_bounded(1);
        let config_node_id = config.node_id.max(0);
        let sync_rounds = SyncRounds::start(Backend::Dma, config.log_sync_scope);
        Rc::new(Shard {
            leader_reports: Default::default(),
            groups: crate::group::GroupCoordinator::new(&config),
            txns: crate::txn::TxnCoordinator::new(&config),
            txn_verifier: Default::default(),
            id,
            count,
            config,
            view: RefCell::new(Rc::new(ClusterView::default())),
            cluster: RefCell::new(None),
            topics: RefCell::new(TopicTable::default()),
            partitions: RefCell::new(AHashMap::new()),
            mesh,
            dirty: RefCell::new(Vec::new()),
            sync_rounds,
            flush_wake,
            flush_wake_rx: RefCell::new(Some(flush_wake_rx)),
            shutting_down: Cell::new(false),
            dynamic: RefCell::new(Default::default()),
            raft_groups: spool_raft::transport::GroupRegistry::new(),
            raft_router: spool_raft::transport::Router::new(config_node_id as u64),
            group_owners: RefCell::new(AHashMap::new()),
            topic_apply: futures::lock::Mutex::new(()),
            topics_incomplete: RefCell::default(),
            tail_share: Cell::new(0),
            clean_book: RefCell::default(),
        })
    }

    /// Before any partition opens: keeps the records of this shard's partitions from the
    /// books the start took (`spool_storage::take_books`).
    pub async fn load_clean_book(&self, books: &[PathBuf]) {
        let root = self.config.log_dirs.clone();
        let book = CleanBook::load(&Backend::Dma, books, |dir| {
            dir.parent() == Some(root.as_path())
                && dir
                    .file_name()
                    .and_then(|name| name.to_str())
                    .and_then(|name| name.rsplit_once('-'))
                    .and_then(|(topic, index)| Some((topic, index.parse::<i32>().ok()?)))
                    .is_some_and(|(topic, index)| self.owner(topic, index) == self.id)
        })
        .await;
        tracing::debug!(
            shard = self.id,
            records = book.len(),
            "clean-shutdown records loaded"
        );
        *self.clean_book.borrow_mut() = book;
    }

    pub fn cluster_id(&self) -> String {
        self.view.borrow().cluster_id.clone()
    }

    /// The error for a partition this shard does not hold: NOT_LEADER_OR_FOLLOWER if the topic
    /// has it (another broker holds it; the client refreshes Metadata), else unknown.
    pub fn missing_partition_code(&self, topic: &str, partition: i32) -> i16 {
        match self.topics.borrow().get(topic) {
            Some(meta) if (0..meta.partitions).contains(&partition) => {
                ResponseError::NotLeaderOrFollower.code()
            }
            _ => ResponseError::UnknownTopicOrPartition.code(),
        }
    }

    /// The leader and leader epoch the metadata names for a replicated partition (KIP-951's
    /// CurrentLeader, sent with NOT_LEADER_OR_FOLLOWER so a client need not refresh Metadata).
    pub fn current_leader(&self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        let topics = self.topics.borrow();
        let meta = topics.get(topic)?;
        let &(leader, epoch) = meta.leaders.get(usize::try_from(partition).ok()?)?;
        let live = self.view.borrow().is_live(leader);
        (leader >= 0 && live).then_some((leader, epoch))
    }

    /// (id, host, port, rack) of each known broker in `ids`: KIP-951's NodeEndpoints.
    pub fn endpoints(
        &self,
        ids: impl IntoIterator<Item = i32>,
    ) -> Vec<(i32, String, u16, Option<String>)> {
        let view = self.view.borrow();
        ids.into_iter()
            .filter_map(|id| {
                let b = view.broker(id)?;
                Some((id, b.host.clone(), b.port, b.rack.clone()))
            })
            .collect()
    }

    /// Whether this node holds `partition` of `meta` (it is among its replicas).
    /// The Raft groups of this shard's replicated partitions.
    pub fn replica_groups(&self) -> Vec<Rc<crate::replication::ReplicaGroup>> {
        self.partitions
            .borrow()
            .values()
            .filter_map(|p| p.replicated())
            .collect()
    }

    /// Whether this broker holds a replica of the partition: one of its replicas, or one a
    /// reassignment in progress adds (it joins the group as a learner).
    pub fn hosts(&self, meta: &TopicMeta, partition: i32) -> bool {
        let me = self.config.node_id;
        meta.replicas
            .get(partition as usize)
            .is_some_and(|r| r.contains(&me))
            || meta
                .targets
                .get(partition as usize)
                .is_some_and(|t| t.as_ref().is_some_and(|t| t.contains(&me)))
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        routing::shard_for(topic, partition, self.count)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Serves `request` on shard `to`: directly when that is this shard, else over the mesh.
    pub async fn call(self: &Rc<Self>, to: usize, request: Request) -> Option<Reply> {
        if to == self.id {
            return Some(self.serve(request).await);
        }
        let slot = self.mesh.send(to, request).await;
        slot.recv().await
    }

    /// Serves one request addressed to this shard.
    pub async fn serve(self: &Rc<Self>, request: Request) -> Reply {
        match request {
            Request::Produce { acks, parts } => {
                let pending = self.produce_local(acks, parts);
                Reply::Produce(Self::finish_produce(pending).await)
            }
            Request::Fetch { parts, budget } => {
                Reply::Fetch(self.fetch_local(&parts, budget).await)
            }
            Request::WaitForData { parts, wait_ms } => {
                self.wait_for_data(&parts, wait_ms).await;
                Reply::Waited
            }
            Request::ListOffsets { parts } => {
                Reply::ListOffsets(self.list_offsets_local(&parts).await)
            }
            Request::EpochEndOffsets { parts } => {
                Reply::EpochEndOffsets(self.epoch_end_offsets_local(&parts))
            }
            Request::LogDirs { parts } => Reply::LogDirs(self.log_dirs_local(parts.as_deref())),
            Request::TopicUpsert { meta } => {
                self.apply_topic(meta).await;
                Reply::Done
            }
            Request::TopicDelete { name } => {
                self.drop_topic(&name).await;
                Reply::Done
            }
            Request::BrokerConfigs { configs } => {
                self.apply_dynamic_configs(configs);
                Reply::Done
            }
            Request::ClusterView { view } => {
                self.learn_rpc_addrs(&view);
                *self.view.borrow_mut() = Rc::new(view);
                Reply::Done
            }
            Request::Raft { group, request } => {
                Reply::Raft(self.raft_groups.dispatch(group, request).await)
            }
            Request::Quorum => Reply::Quorum(self.quorum_local().await),
            Request::MoveLeader {
                topic,
                partition,
                to,
                wait_ms,
            } => {
                let wait = Duration::from_millis(wait_ms);
                crate::replication::leadership::move_local(self, &topic, partition, to, wait)
                    .await
                    .into_reply()
            }
            Request::Admin(admin) => self.admin(admin).await,
            Request::Group(call) => Reply::Group(self.groups.serve(self, call).await),
            // Boxed: a coordinator's InitProducerId asks shard 0 for a producer id, through
            // this same function.
            Request::Txn(call) => Reply::Txn(Box::pin(self.txns.serve(self, call)).await),
            Request::TxnMarkers(parts) => {
                Reply::TxnMarkers(crate::txn::markers::write_local(self, parts).await)
            }
            Request::TxnVerifyBegin(parts) => {
                Reply::TxnVerifyBegin(crate::txn::verify::begin_local(self, &parts))
            }
            Request::DeleteRecords {
                topic,
                partition,
                offset,
            } => {
                let (error_code, low_watermark) =
                    match self.delete_records(&topic, partition, offset).await {
                        Ok(start) => (0, start),
                        Err(code) => (code, -1),
                    };
                Reply::DeleteRecords {
                    error_code,
                    low_watermark,
                }
            }
            Request::Producers { topic, partition } => {
                Reply::Producers(match self.partition(&topic, partition) {
                    None => Err(self.missing_partition_code(&topic, partition)),
                    Some(p) if p.follows() => Err(ResponseError::NotLeaderOrFollower.code()),
                    Some(p) => Ok(p.log.describe_producers()),
                })
            }
        }
    }

    /// The receive loop for messages from shard `from`. It never awaits a send: produce appends
    /// happen here, in arrival order; everything else runs in its own task.
    pub async fn receive_loop(
        self: Rc<Self>,
        receiver: glommio::channels::shared_channel::ConnectedReceiver<mesh::Envelope>,
    ) {
        while let Some(envelope) = receiver.recv().await {
            match envelope {
                mesh::Envelope::Reply { id, reply } => self.mesh.complete(id, reply),
                mesh::Envelope::Request {
                    from,
                    id,
                    request: Request::Produce { acks, parts },
                } => {
                    let pending = self.produce_local(acks, parts);
                    let shard = self.clone();
                    runtime::spawn_detached(async move {
                        let results = Self::finish_produce(pending).await;
                        shard.mesh.reply(from, id, Reply::Produce(results)).await;
                    });
                }
                mesh::Envelope::Request { from, id, request } => {
                    let shard = self.clone();
                    runtime::spawn_detached(async move {
                        let reply = shard.serve(request).await;
                        shard.mesh.reply(from, id, reply).await;
                    });
                }
            }
        }
    }

    // ---- produce ----------------------------------------------------------------------------

    /// Appends synchronously, in order, and returns what each part still waits for.
    pub fn produce_local(&self, acks: i16, parts: Vec<ProducePart>) -> Vec<(ProduceResult, Wait)> {
        let now = now_ms();
        let mut out = Vec::with_capacity(parts.len());
        // Asked only once a transactional batch comes: plain produce does not pay for it.
        let mut verifying: Option<bool> = None;
        for part in parts {
            let Some(p) = self.partition(&part.topic, part.partition) else {
                let result = ProduceResult {
                    error_code: self.missing_partition_code(&part.topic, part.partition),
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: -1,
                };
                out.push((result, Wait::None));
                continue;
            };
            // A transactional data batch (the handler refused client control batches).
            let txn_header = batch::BatchHeader::parse(&part.records)
                .ok()
                .filter(|h| h.is_transactional() && h.has_producer_id() && !h.is_control());
            let check = txn_header
                .as_ref()
                .filter(|_| *verifying.get_or_insert_with(|| self.txn_verification_enabled()));
            if let Some(header) = check {
                if let Err(error_code) =
                    crate::txn::verify::check_append(&p, header, part.txn_token)
                {
                    let result = ProduceResult {
                        error_code,
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: p.log.visible_start_offset(),
                    };
                    out.push((result, Wait::None));
                    continue;
                }
            }
            if let Some(group) = p.replicated() {
                if group.leadership().is_none() {
                    let result = ProduceResult {
                        error_code: ResponseError::NotLeaderOrFollower.code(),
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: p.log.visible_start_offset(),
                    };
                    out.push((result, Wait::None));
                    continue;
                }
                // Kafka's rule: acks=all is refused before anything is appended while fewer
                // replicas are in sync than the topic's `min.insync.replicas`.
                let min_insync = if acks == -1 {
                    self.min_insync_replicas(&part.topic)
                } else {
                    1
                };
                let lag_max = Duration::from_millis(self.config.replica_lag_time_max_ms);
                if acks == -1 {
                    let in_sync = group.in_sync_replicas(lag_max).map_or(0, |isr| isr.len());
                    if in_sync < min_insync {
                        let result = ProduceResult {
                            error_code: ResponseError::NotEnoughReplicas.code(),
                            base_offset: -1,
                            log_append_time_ms: -1,
                            log_start_offset: p.log.visible_start_offset(),
                        };
                        out.push((result, Wait::None));
                        continue;
                    }
                }
                let answer = group.propose(part.records, acks, min_insync, lag_max);
                if let Some(header) = &txn_header {
                    crate::txn::verify::appended(&p, header);
                }
                let pending = ProduceResult {
                    error_code: 0,
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: p.log.visible_start_offset(),
                };
                let wait = if acks == 0 {
                    Wait::None
                } else {
                    Wait::Replicated(answer)
                };
                out.push((pending, wait));
                continue;
            }
            if p.offline.get() {
                let result = ProduceResult {
                    error_code: ResponseError::KafkaStorageError.code(),
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: p.log.visible_start_offset(),
                };
                out.push((result, Wait::None));
                continue;
            }
            match p.log.append(part.records, 0, now) {
                Ok(info) => {
                    if let Some(header) = &txn_header {
                        crate::txn::verify::appended(&p, header);
                    }
                    let result = ProduceResult {
                        error_code: 0,
                        base_offset: info.base_offset,
                        log_append_time_ms: info.log_append_time_ms,
                        log_start_offset: p.log.visible_start_offset(),
                    };
                    let wait = match self.config.flush_mode {
                        FlushMode::Sync if acks != 0 => {
                            Wait::Durable(p.wait_durable(info.last_offset))
                        }
                        _ => Wait::None,
                    };
                    if !info.duplicate {
                        self.mark_dirty(&p);
                    }
                    if self.config.flush_mode == FlushMode::Interval {
                        p.wake_fetchers();
                    }
                    out.push((result, wait));
                }
                Err(e) => {
                    tracing::debug!(topic = %part.topic, partition = part.partition, "append rejected: {e}");
                    let result = ProduceResult {
                        error_code: storage_error_code(&e),
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: p.log.visible_start_offset(),
                    };
                    out.push((result, Wait::None));
                }
            }
        }
        out
    }

    /// DeleteRecords on this shard's partition (see `kafka/handlers/delete_records.rs`): the
    /// new log start offset, or an error code.
    async fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, i16> {
        let Some(p) = self.partition(topic, partition) else {
            return Err(self.missing_partition_code(topic, partition));
        };
        if p.follows() {
            return Err(ResponseError::NotLeaderOrFollower.code());
        }
        let deletable = self.topics.borrow().get(topic).is_some_and(|m| {
            m.configs
                .get("cleanup.policy")
                .is_none_or(|policy| policy.split(',').any(|v| v.trim() == "delete"))
        });
        if !deletable {
            return Err(ResponseError::PolicyViolation.code());
        }
        let hw = p.high_watermark();
        let offset = if offset == -1 { hw } else { offset };
        if offset < 0 || offset > hw {
            return Err(ResponseError::OffsetOutOfRange.code());
        }
        if offset <= p.log.visible_start_offset() {
            return Ok(p.log.visible_start_offset());
        }
        match p.replicated() {
            None => p
                .log
                .advance_start(offset)
                .await
                .map_err(|e| storage_error_code(&e)),
            Some(group) => {
                let entry = spool_raft::store::encode_log_start_entry(offset, now_ms());
                let lag_max = Duration::from_millis(self.config.replica_lag_time_max_ms);
                match group.propose(entry, -1, 1, lag_max).recv().await {
                    Some(r) if r.error_code == 0 => Ok(p.log.visible_start_offset()),
                    Some(r) => Err(r.error_code),
                    None => Err(ResponseError::NotEnoughReplicas.code()),
                }
            }
        }
    }

    /// The topic's `min.insync.replicas` (its override, else the broker's).
    pub fn min_insync_replicas(&self, topic: &str) -> usize {
        let topics = self.topics.borrow();
        let value = topics
            .get(topic)
            .and_then(|meta| meta.configs.get("min.insync.replicas"))
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(self.config.min_insync_replicas);
        usize::try_from(value.max(1)).unwrap_or(1)
    }

    pub async fn finish_produce(pending: Vec<(ProduceResult, Wait)>) -> Vec<ProduceResult> {
        let mut results = Vec::with_capacity(pending.len());
        for (mut result, wait) in pending {
            match wait {
                Wait::None => {}
                Wait::Durable(rx) => {
                    let code = rx
                        .recv()
                        .await
                        .unwrap_or(ResponseError::KafkaStorageError.code());
                    if code != 0 {
                        result.error_code = code;
                        result.base_offset = -1;
                    }
                }
                // A dropped answer is a proposal its group could not queue or a group that
                // stopped: retriable.
                Wait::Replicated(rx) => {
                    result = rx.recv().await.unwrap_or(ProduceResult {
                        error_code: ResponseError::RequestTimedOut.code(),
                        base_offset: -1,
                        ..result
                    });
                }
            }
            results.push(result);
        }
        results
    }

    pub fn mark_dirty(&self, p: &Rc<Partition>) {
        if !p.dirty.replace(true) {
            self.dirty.borrow_mut().push(p.clone());
        }
        let _ = self.flush_wake.try_send(());
    }

    /// Group commit: each round flushes every partition that was appended to since the last
    /// round, concurrently, then acknowledges all their waiters. Appends that arrive during a
    /// round ride the next one.
    pub async fn flusher(self: Rc<Self>) {
        let Some(wake) = self.flush_wake_rx.borrow_mut().take() else {
            return;
        };
        loop {
            match self.config.flush_mode {
                FlushMode::Sync => {
                    if wake.recv().await.is_none() {
                        return;
                    }
                }
                FlushMode::Interval => {
                    runtime::sleep(Duration::from_millis(self.config.log_flush_interval_ms)).await;
                }
            }
            self.flush_dirty().await;
            if self.shutting_down.get() && self.dirty.borrow().is_empty() {
                return;
            }
        }
    }

    pub async fn flush_dirty(&self) {
        loop {
            let round: Vec<Rc<Partition>> = {
                let mut dirty = self.dirty.borrow_mut();
                let n = dirty.len().min(FLUSH_PARTITIONS_MAX);
                dirty.drain(..n).collect()
            };
            if round.is_empty() {
                return;
            }
            for p in &round {
                p.dirty.set(false);
            }
            let round: Vec<Rc<Partition>> =
                round.into_iter().filter(|p| !p.deleted.get()).collect();
            let interval = self.config.flush_mode == FlushMode::Interval;
            let flushes = round.iter().map(|p| async move {
                let code = match p.log.flush().await {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::error!(topic = %p.topic, partition = p.index, "flush failed: {e}");
                        if interval {
                            // Consumers may already have read what the failed flush rolled back;
                            // new appends would reuse those offsets. Stop writing, as Kafka takes
                            // the log directory offline.
                            tracing::error!(topic = %p.topic, partition = p.index, "partition offline for writes until restart");
                            p.offline.set(true);
                        }
                        storage_error_code(&e)
                    }
                };
                p.flushed(code);
            });
            futures::future::join_all(flushes).await;
            if self.config.flush_mode == FlushMode::Sync {
                return;
            }
        }
    }

    // ---- fetch ------------------------------------------------------------------------------

    /// Reads `parts` in request order, spending at most `budget` bytes (the request's
    /// `max_bytes`) beyond the first batch, as Kafka's fetch does: the first partition with data
    /// returns at least one whole batch even past the limits, so consumers always progress.
    /// When the partitions' own limits add up to no more than the budget (the common case:
    /// 1 MiB per partition against 50 MiB), the budget cannot bind and the partitions are read
    /// concurrently, so a fetch of partitions that miss the tail cache waits for one disk read,
    /// not for one per partition in turn.
    pub async fn fetch_local(&self, parts: &[FetchPart], budget: usize) -> Vec<FetchResult> {
        let mut out = Vec::with_capacity(parts.len());
        // (index in `out`, partition, offset, per-partition limit, high watermark)
        let mut reads = Vec::new();
        for part in parts {
            let Some(p) = self.partition(&part.topic, part.partition) else {
                out.push(FetchResult {
                    error_code: self.missing_partition_code(&part.topic, part.partition),
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    batches: Vec::new(),
                    aborted: None,
                });
                continue;
            };
            if p.follows() || p.epoch_error(part.current_leader_epoch).is_some() {
                out.push(FetchResult {
                    error_code: p
                        .epoch_error(part.current_leader_epoch)
                        .unwrap_or(ResponseError::NotLeaderOrFollower.code()),
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    batches: Vec::new(),
                    aborted: None,
                });
                continue;
            }
            let hw = p.high_watermark();
            // Kafka clamps the first unstable offset to the log start: a transaction whose
            // start retention or DeleteRecords removed no longer holds readers back.
            let lso = p
                .log
                .last_stable_offset(hw)
                .max(p.log.visible_start_offset());
            // A read_committed reader stops at the LSO and gets the aborted transactions of
            // what it may read (Kafka lists those overlapping the range; the client drops their
            // records itself).
            let end = if part.read_committed { lso } else { hw };
            let mut result = FetchResult {
                error_code: 0,
                high_watermark: hw,
                last_stable_offset: lso,
                log_start_offset: p.log.visible_start_offset(),
                batches: Vec::new(),
                aborted: None,
            };
            // Between the high watermark and the log end is a valid position (the data is not yet
            // committed): an empty answer, not an error.
            if part.fetch_offset > p.log.log_end_offset()
                || part.fetch_offset < p.log.visible_start_offset()
            {
                result.error_code = ResponseError::OffsetOutOfRange.code();
            } else {
                // Before the read: a cleaning swapped in between them removes aborted records
                // and their listing together, so the list read first is never short.
                let aborted = if part.read_committed {
                    match p.log.aborted_txns(part.fetch_offset, end).await {
                        Ok(aborted) => Some(aborted),
                        Err(e) => {
                            tracing::error!(topic = %p.topic, partition = p.index,
                                "aborted transactions unreadable: {e}");
                            result.error_code = storage_error_code(&e);
                            out.push(result);
                            continue;
                        }
                    }
                } else {
                    None
                };
                result.aborted = aborted.map(|aborted| {
                    aborted
                        .iter()
                        .map(|a| (a.producer_id, a.first_offset))
                        .collect()
                });
                if part.fetch_offset < end {
                    reads.push((out.len(), p, part.fetch_offset, part.max_bytes.max(1), end));
                }
            }
            out.push(result);
        }
        let total: usize = reads
            .iter()
            .map(|r| r.3)
            .fold(0usize, usize::saturating_add);
        if total <= budget {
            let done = futures::future::join_all(
                reads
                    .iter()
                    .map(|(_, p, offset, limit, hw)| p.log.read(*offset, *limit, *hw)),
            )
            .await;
            for ((i, ..), read) in reads.iter().zip(done) {
                match read {
                    Ok(read) => out[*i].batches = read.batches,
                    Err(e) => out[*i].error_code = storage_error_code(&e),
                }
            }
        } else {
            let mut remaining = budget;
            for (i, p, offset, limit, hw) in &reads {
                if remaining == 0 {
                    break;
                }
                match p.log.read(*offset, (*limit).min(remaining), *hw).await {
                    Ok(read) => {
                        let size: usize = read.batches.iter().map(bytes::Bytes::len).sum();
                        remaining = remaining.saturating_sub(size);
                        out[*i].batches = read.batches;
                    }
                    Err(e) => out[*i].error_code = storage_error_code(&e),
                }
            }
        }
        out
    }

    pub async fn wait_for_data(&self, parts: &[(String, i32, i64)], wait_ms: u64) {
        let mut slots = Vec::with_capacity(parts.len());
        for (topic, partition, offset) in parts {
            let Some(p) = self.partition(topic, *partition) else {
                return;
            };
            if p.high_watermark() > *offset {
                return;
            }
            slots.push(p.wait_for_data());
        }
        if slots.is_empty() {
            return;
        }
        let any = futures::future::select_all(slots.iter().map(|w| Box::pin(w.rx.recv())));
        let _ = runtime::timeout(Duration::from_millis(wait_ms), any).await;
    }

    // ---- offsets ----------------------------------------------------------------------------

    pub async fn list_offsets_local(&self, parts: &[OffsetQuery]) -> Vec<OffsetAnswer> {
        let mut out = Vec::with_capacity(parts.len());
        for q in parts {
            let Some(p) = self.partition(&q.topic, q.partition) else {
                out.push(OffsetAnswer {
                    error_code: self.missing_partition_code(&q.topic, q.partition),
                    timestamp: -1,
                    offset: -1,
                    leader_epoch: -1,
                });
                continue;
            };
            if p.follows() || p.epoch_error(q.current_leader_epoch).is_some() {
                out.push(OffsetAnswer {
                    error_code: p
                        .epoch_error(q.current_leader_epoch)
                        .unwrap_or(ResponseError::NotLeaderOrFollower.code()),
                    timestamp: -1,
                    offset: -1,
                    leader_epoch: -1,
                });
                continue;
            }
            // A single node's only epoch is 0; a log that never held a record has none (-1).
            // A replicated partition's is its leader's term.
            let known_epoch = match p.replicated().and_then(|g| g.leadership()) {
                Some(term) => i32::try_from(term).unwrap_or(i32::MAX),
                None if p.log.log_end_offset() > 0 => 0,
                None => -1,
            };
            let hw = p.high_watermark();
            let latest = if q.read_committed {
                p.log
                    .last_stable_offset(hw)
                    .max(p.log.visible_start_offset())
            } else {
                hw
            };
            let none = OffsetAnswer {
                error_code: 0,
                timestamp: -1,
                offset: -1,
                leader_epoch: -1,
            };
            let answer = match q.timestamp {
                -1 => OffsetAnswer {
                    offset: latest,
                    leader_epoch: known_epoch,
                    ..none
                },
                -2 | -4 => OffsetAnswer {
                    offset: p.log.visible_start_offset(),
                    leader_epoch: known_epoch,
                    ..none
                },
                -5 => OffsetAnswer { offset: -1, ..none },
                -3 => match p.log.max_timestamp() {
                    Some((offset, ts, epoch)) if offset < latest => {
                        match first_record_at_or_after(&p, offset, ts, latest).await {
                            Ok(Some((offset, ts))) => OffsetAnswer {
                                offset,
                                timestamp: ts,
                                leader_epoch: epoch,
                                ..none
                            },
                            Ok(None) => none,
                            Err(code) => OffsetAnswer {
                                error_code: code,
                                ..none
                            },
                        }
                    }
                    _ => none,
                },
                ts if ts >= 0 => match p.log.offset_for_timestamp(ts).await {
                    Ok(Some((batch_offset, _, epoch))) if batch_offset < latest => {
                        match first_record_at_or_after(&p, batch_offset, ts, latest).await {
                            Ok(Some((offset, found_ts))) => OffsetAnswer {
                                offset,
                                timestamp: found_ts,
                                leader_epoch: epoch,
                                ..none
                            },
                            Ok(None) => none,
                            Err(code) => OffsetAnswer {
                                error_code: code,
                                ..none
                            },
                        }
                    }
                    Ok(_) => none,
                    Err(e) => OffsetAnswer {
                        error_code: storage_error_code(&e),
                        ..none
                    },
                },
                _ => OffsetAnswer {
                    error_code: ResponseError::InvalidRequest.code(),
                    ..none
                },
            };
            out.push(answer);
        }
        out
    }

    /// DescribeLogDirs' view of this shard's replicas: the named ones it holds (others are
    /// left out, as Kafka leaves out logs it does not have), or all of them.
    pub fn log_dirs_local(&self, parts: Option<&[(String, i32)]>) -> Vec<LogDirPart> {
        let describe = |p: &Partition| LogDirPart {
            topic: p.topic.clone(),
            partition: p.index,
            size_bytes: i64::try_from(p.log.size_bytes()).unwrap_or(i64::MAX),
            // Kafka's lag for a current log is max(high watermark - log end, 0): a follower's
            // high watermark never passes the end of the log it holds, so it is 0 here as it is
            // in Kafka; only a future log (AlterReplicaLogDirs, not built) has a real lag.
            offset_lag: (p.high_watermark() - p.log.log_end_offset()).max(0),
        };
        match parts {
            Some(parts) => parts
                .iter()
                .filter_map(|(topic, index)| self.partition(topic, *index))
                .map(|p| describe(&p))
                .collect(),
            None => self
                .partitions
                .borrow()
                .values()
                .map(|p| describe(p))
                .collect(),
        }
    }

    pub fn epoch_end_offsets_local(&self, parts: &[EpochQuery]) -> Vec<EpochAnswer> {
        parts
            .iter()
            .map(|q| match self.partition(&q.topic, q.partition) {
                None => EpochAnswer {
                    error_code: self.missing_partition_code(&q.topic, q.partition),
                    leader_epoch: -1,
                    end_offset: -1,
                },
                Some(p) if p.follows() => EpochAnswer {
                    error_code: ResponseError::NotLeaderOrFollower.code(),
                    leader_epoch: -1,
                    end_offset: -1,
                },
                // Kafka's checks of the client's idea of the leader epoch: older than the
                // leader's is fenced, newer is not known here yet (both retriable: the client
                // refreshes its metadata). An unreplicated partition's only epoch is 0.
                Some(p) if p.epoch_error(q.current_leader_epoch).is_some() => EpochAnswer {
                    error_code: p.epoch_error(q.current_leader_epoch).unwrap_or(0),
                    leader_epoch: -1,
                    end_offset: -1,
                },
                Some(p) => {
                    let (epoch, end) = p.log.end_offset_for_epoch(q.leader_epoch);
                    EpochAnswer {
                        error_code: 0,
                        leader_epoch: epoch,
                        end_offset: end,
                    }
                }
            })
            .collect()
    }

    // ---- topics -----------------------------------------------------------------------------

    pub fn log_config(&self, meta: &TopicMeta) -> LogConfig {
        let c = &self.config;
        let dynamic = self.dynamic.borrow();
        let get = |name: &str| meta.configs.get(name).map(String::as_str);
        // A topic override, else the broker's dynamic value of its synonym, else the static.
        let num = |name: &str, broker: &str, default: i64| {
            get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| dynamic.num(broker, default))
        };
        let float = |name: &str, broker: &str, default: f64| {
            get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| dynamic.num(broker, default))
        };
        let text = |name: &str, broker: &str, default: &str| -> String {
            get(name)
                .map(str::to_string)
                .or_else(|| dynamic.get(broker).map(|(v, _)| v.to_string()))
                .unwrap_or_else(|| default.to_string())
        };
        LogConfig {
            segment_bytes: num(
                "segment.bytes",
                "log.segment.bytes",
                c.log_segment_bytes as i64,
            )
            .max(1024) as u64,
            segment_ms: num("segment.ms", "log.roll.ms", c.log_roll_ms),
            retention_ms: num("retention.ms", "log.retention.ms", c.log_retention_ms),
            retention_bytes: num(
                "retention.bytes",
                "log.retention.bytes",
                c.log_retention_bytes,
            ),
            max_message_bytes: num(
                "max.message.bytes",
                "message.max.bytes",
                i64::from(c.message_max_bytes),
            )
            .clamp(0, i64::from(i32::MAX)) as u32,
            index_interval_bytes: num(
                "index.interval.bytes",
                "log.index.interval.bytes",
                i64::from(c.log_index_interval_bytes),
            )
            .clamp(1, i64::from(i32::MAX)) as u32,
            timestamp_type: match text(
                "message.timestamp.type",
                "log.message.timestamp.type",
                &c.log_message_timestamp_type,
            )
            .as_str()
            {
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => TimestampType::CreateTime,
            },
            tail_cache_bytes_max: self.tail_cache_share(),
            producer_id_expiration_ms: c.producer_id_expiration_ms,
            compaction: {
                let policy = text(
                    "cleanup.policy",
                    "log.cleanup.policy",
                    &c.log_cleanup_policy,
                );
                let has = |name: &str| policy.split(',').any(|v| v.trim() == name);
                spool_storage::Compaction {
                    compact: has("compact"),
                    delete: has("delete"),
                    min_cleanable_dirty_ratio: float(
                        "min.cleanable.dirty.ratio",
                        "log.cleaner.min.cleanable.ratio",
                        c.log_cleaner_min_cleanable_ratio,
                    ),
                    min_compaction_lag_ms: num(
                        "min.compaction.lag.ms",
                        "log.cleaner.min.compaction.lag.ms",
                        c.log_cleaner_min_compaction_lag_ms,
                    ),
                    max_compaction_lag_ms: num(
                        "max.compaction.lag.ms",
                        "log.cleaner.max.compaction.lag.ms",
                        c.log_cleaner_max_compaction_lag_ms,
                    ),
                    delete_retention_ms: num(
                        "delete.retention.ms",
                        "log.cleaner.delete.retention.ms",
                        c.log_cleaner_delete_retention_ms,
                    ),
                }
            },
        }
    }

    /// Each partition's share of the shard's tail cache budget: with 1,000 partitions a fixed
    /// per-partition cache would hold a gigabyte; the shard bound keeps it at
    /// `spool.tail.cache.shard.bytes`.
    fn tail_cache_share(&self) -> usize {
        let n = self.partitions.borrow().len().max(1);
        self.config
            .tail_cache_bytes_max
            .min(self.config.tail_cache_shard_bytes_max / n)
    }

    /// Applies the current share to every partition (after partitions come or go).
    fn share_tail_cache(&self) {
        let share = self.tail_cache_share();
        if self.tail_share.replace(share) == share {
            return;
        }
        for p in self.partitions.borrow().values() {
            p.log.set_tail_cache_bytes_max(share);
        }
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.config.log_dirs.join(format!("{topic}-{partition}"))
    }

    /// Whether `topic`'s partitions are Raft groups: every partition, `__consumer_offsets`
    /// included, of a node that talks to peers (`controller.listener` / RPC set). A one-node
    /// cluster writes its logs directly.
    pub fn replicates(&self, _topic: &str) -> bool {
        self.config.cluster.rpc_listen.is_some()
    }

    /// Whether `log.cleanup.policy` as this broker has it now (dynamic, else static) compacts:
    /// the policy of topics that set none. Borrows only: it runs on every produce.
    pub fn compacts_by_default(&self) -> bool {
        match self.dynamic.borrow().get("log.cleanup.policy") {
            Some((policy, _)) => policy_compacts(policy),
            None => policy_compacts(&self.config.log_cleanup_policy),
        }
    }

    /// `transaction.partition.verification.enable` as this broker has it now (dynamic, else
    /// static). Borrows only: it runs on every transactional produce.
    pub fn txn_verification_enabled(&self) -> bool {
        match self
            .dynamic
            .borrow()
            .get("transaction.partition.verification.enable")
        {
            Some((value, _)) => value != "false",
            None => self.config.transaction_partition_verification_enable,
        }
    }

    /// New dynamic broker configs: every partition's log settings follow at once (those its
    /// topic does not override); the cleaner reads its own on its next pass.
    fn apply_dynamic_configs(&self, configs: crate::dynamic_config::DynamicConfigs) {
        tracing::info!(default = ?configs.default, broker = ?configs.broker, "dynamic broker configs");
        *self.dynamic.borrow_mut() = configs;
        let parts: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        for p in parts {
            let meta = self.topics.borrow().get(&p.topic).cloned();
            if let Some(meta) = meta {
                p.log.update_config(self.log_config(&meta));
            }
        }
    }

    /// Installs a topic in this shard's table and opens the logs of the partitions it owns
    /// (and starts their Raft groups when the topic replicates).
    pub async fn apply_topic(self: &Rc<Self>, meta: TopicMeta) {
        let _applying = self.topic_apply.lock().await;
        // A metadata update arriving after `close_all` (a leader or ISR report of the
        // handovers a controlled shutdown makes) would open the closed partitions again.
        if self.shutting_down.get() {
            return;
        }
        // Most updates are a partition's leader or ISR report: nothing to open, close or
        // reconfigure. Walking every partition of the topic for each of them (and resharing
        // the tail cache over every partition of the shard) was most of an idle node's CPU
        // with 10,000 partitions, and quadratic while they were being created.
        let only_leaders_or_isr = self.topics.borrow().get(&meta.name).is_some_and(|old| {
            old.id == meta.id
                && old.partitions == meta.partitions
                && old.replication_factor == meta.replication_factor
                && old.replicas == meta.replicas
                && old.targets == meta.targets
                && old.configs == meta.configs
        }) && !self.topics_incomplete.borrow().contains(&meta.name);
        if only_leaders_or_isr {
            self.topics.borrow_mut().upsert(meta);
            return;
        }
        let mut incomplete = false;
        let config = self.log_config(&meta);
        let replicated = self.replicates(&meta.name);
        let mut to_open = Vec::new();
        for index in 0..meta.partitions {
            if !self.hosts(&meta, index) {
                // A reassignment moved the replica away: the group's voters no longer name
                // this broker (the leader reported the committed membership change).
                if replicated && self.owner(&meta.name, index) == self.id {
                    self.retire_replica(&meta.name, index).await;
                }
                continue;
            }
            if replicated {
                let owner = self.owner(&meta.name, index);
                self.group_owners
                    .borrow_mut()
                    .insert(crate::replication::group_id(&meta.id, index), owner);
            }
            if self.owner(&meta.name, index) != self.id {
                continue;
            }
            if let Some(p) = self.partition(&meta.name, index) {
                p.log.update_config(config.clone());
                continue;
            }
            let dir = self.partition_dir(&meta.name, index);
            let record = self.clean_book.borrow_mut().take(&dir);
            to_open.push((index, dir, record));
        }
        // Opening a log is a few small reads and a directory listing: many at once, so a
        // shard of thousands of partitions starts in about OPEN_IN_FLIGHT_MAX times fewer
        // device round trips. Then in partition order, as before.
        let mut opened: Vec<_> = {
            use futures::StreamExt as _;
            futures::stream::iter(to_open)
                .map(|(index, dir, record)| {
                    let config = config.clone();
                    async move {
                        let clean = CleanFrom::Given(record);
                        let log = PartitionLog::open_with(
                            dir.clone(),
                            config,
                            Backend::Dma,
                            replicated,
                            clean,
                        )
                        .await;
                        (index, dir, log)
                    }
                })
                .buffer_unordered(OPEN_IN_FLIGHT_MAX)
                .collect()
                .await
        };
        opened.sort_unstable_by_key(|(index, ..)| *index);
        for (index, dir, opened) in opened {
            match opened {
                Ok(log) => {
                    if let Err(e) = log.join_sync_rounds(self.sync_rounds.clone()) {
                        // Still durable: its flushes sync its own file.
                        tracing::warn!(
                            dir = %dir.display(),
                            "partition log outside the shard's durability rounds: {e}"
                        );
                    }
                    let log = Rc::new(log);
                    let p = Partition::new(
                        meta.name.clone(),
                        index,
                        log.clone(),
                        self.config.flush_mode,
                    );
                    if replicated {
                        if let Err(e) = self.start_group(&meta, index, &p).await {
                            tracing::error!(
                                dir = %dir.display(),
                                "cannot start the partition's Raft group; partition offline: {e}"
                            );
                            incomplete = true;
                            continue;
                        }
                    }
                    self.partitions
                        .borrow_mut()
                        .insert((meta.name.clone(), index), p);
                }
                // One unreadable partition (or running out of file descriptors) must not keep the
                // whole broker down: it stays offline and the others serve.
                Err(e) => {
                    tracing::error!(
                        dir = %dir.display(),
                        "cannot open partition log; partition offline: {e}"
                    );
                    incomplete = true;
                }
            }
        }
        if incomplete {
            self.topics_incomplete
                .borrow_mut()
                .insert(meta.name.clone());
        } else {
            self.topics_incomplete.borrow_mut().remove(&meta.name);
        }
        self.topics.borrow_mut().upsert(meta);
        self.share_tail_cache();
    }

    /// Starts partition `index`'s Raft group on this shard, makes it reachable by peers and
    /// reports its leaderships to the controller.
    async fn start_group(
        self: &Rc<Self>,
        meta: &TopicMeta,
        index: i32,
        p: &Rc<Partition>,
    ) -> Result<(), String> {
        use crate::replication::{GroupSpec, ReplicaGroup};
        let replicas = meta
            .replicas
            .get(index as usize)
            .cloned()
            .unwrap_or_default();
        let rpc_addrs: AHashMap<i32, String> = self
            .view
            .borrow()
            .brokers
            .iter()
            .map(|b| (b.id, b.rpc_addr.clone()))
            .collect();
        let config = crate::replication::raft_config(&self.config.cluster)?;
        let group = ReplicaGroup::start(
            GroupSpec {
                node_id: self.config.node_id,
                topic: &meta.name,
                topic_id: meta.id,
                partition: index,
                replicas: &replicas,
                rpc_addrs: &rpc_addrs,
            },
            p.log.clone(),
            self.raft_router.clone(),
            config,
        )
        .await
        .map_err(|e| e.to_string())?;
        self.raft_groups
            .register(group.id, group.raft.clone())
            .map_err(|e| e.to_string())?;
        {
            let p = Rc::downgrade(p);
            *group.hw.on_advance.borrow_mut() = Some(Box::new(move || {
                if let Some(p) = p.upgrade() {
                    p.wake_fetchers();
                }
            }));
        }
        *p.group.borrow_mut() = Some(group.clone());
        if meta.name == crate::group::OFFSETS_TOPIC {
            runtime::spawn_detached(crate::group::coordinator::follow_leadership(
                self.clone(),
                index,
                group.clone(),
            ));
        }
        if meta.name == crate::txn::TXN_TOPIC {
            runtime::spawn_detached(crate::txn::coordinator::follow_leadership(
                self.clone(),
                index,
                group.clone(),
            ));
        }
        let shard = self.clone();
        let (topic, partition) = (meta.name.clone(), index);
        runtime::spawn_detached(crate::replication::report_leadership(group, move |epoch| {
            let shard = shard.clone();
            let report = LeaderReport {
                topic: topic.clone(),
                partition,
                epoch,
            };
            async move { shard.report_leader(report).await }
        }));
        Ok(())
    }

    /// Keeps this shard's router pointed at every broker's RPC listener.
    fn learn_rpc_addrs(&self, view: &ClusterView) {
        use spool_raft::transport::RaftTransport;
        for broker in &view.brokers {
            if !broker.rpc_addr.is_empty() {
                self.raft_router.add_node(
                    broker.id as u64,
                    &spool_raft::NodeInfo {
                        rpc_addr: broker.rpc_addr.clone(),
                    },
                );
            }
        }
    }

    /// Shard 0's RPC listener: a peer's request for a partition group on another shard.
    pub async fn forward_raft(
        self: &Rc<Self>,
        group: spool_raft::transport::GroupId,
        request: spool_raft::transport::Request,
    ) -> spool_raft::transport::Response {
        use spool_raft::transport::Response;
        use spool_raft::wire::Failure;
        let owner = self.group_owners.borrow().get(&group).copied();
        match owner {
            Some(owner) if owner != self.id => {
                match self.call(owner, Request::Raft { group, request }).await {
                    Some(Reply::Raft(response)) => response,
                    _ => Response::Failed(Failure::GroupStopped),
                }
            }
            _ => Response::Failed(Failure::UnknownGroup),
        }
    }

    pub async fn drop_topic(&self, name: &str) {
        let removed = self.topics.borrow_mut().remove(name);
        self.topics_incomplete.borrow_mut().remove(name);
        if let Some(meta) = removed {
            let mut owners = self.group_owners.borrow_mut();
            for index in 0..meta.partitions {
                owners.remove(&crate::replication::group_id(&meta.id, index));
            }
        }
        let owned: Vec<Rc<Partition>> = {
            let mut parts = self.partitions.borrow_mut();
            let keys: Vec<_> = parts.keys().filter(|(t, _)| t == name).cloned().collect();
            keys.iter().filter_map(|k| parts.remove(k)).collect()
        };
        self.share_tail_cache();
        // Out of the flusher's queue, and never flushed again, so no late flush writes by path
        // into a directory a recreated topic of the same name may own.
        self.dirty.borrow_mut().retain(|p| p.topic != name);
        for p in owned {
            self.delete_partition(p).await;
        }
    }

    /// Stops and deletes this broker's replica of a partition a reassignment moved elsewhere
    /// (Kafka's StopReplica with deletion).
    async fn retire_replica(&self, topic: &str, index: i32) {
        let removed = self
            .partitions
            .borrow_mut()
            .remove(&(topic.to_string(), index));
        let Some(p) = removed else {
            return;
        };
        tracing::info!(
            topic,
            partition = index,
            "replica reassigned away; deleting it"
        );
        self.share_tail_cache();
        self.dirty
            .borrow_mut()
            .retain(|d| !(d.topic == topic && d.index == index));
        self.delete_partition(p).await;
    }

    /// Stops a partition taken out of the table and deletes its files.
    async fn delete_partition(&self, p: Rc<Partition>) {
        let name = p.topic.clone();
        let name = name.as_str();
        {
            p.deleted.set(true);
            p.flushed(ResponseError::UnknownTopicOrPartition.code());
            self.stop_group(&p).await;
            let dir = self.partition_dir(&p.topic, p.index);
            match Rc::try_unwrap(p)
                .ok()
                .and_then(|p| Rc::try_unwrap(p.log).ok())
            {
                Some(log) => {
                    if let Err(e) = log.delete().await {
                        tracing::error!(topic = name, "cannot delete partition log: {e}");
                    }
                }
                None => {
                    // A read or flush still holds the partition (its open files stay readable).
                    // Move the directory aside first, as Kafka does, so the name is free at once.
                    let doomed = std::path::PathBuf::from(format!(
                        "{}.{}-delete",
                        dir.display(),
                        uuid::Uuid::new_v4().simple()
                    ));
                    let removed = match std::fs::rename(&dir, &doomed) {
                        Ok(()) => {
                            runtime::off_thread(move || std::fs::remove_dir_all(&doomed)).await
                        }
                        Err(e) => Err(e),
                    };
                    if let Err(e) = removed {
                        tracing::error!(dir = %dir.display(), "cannot delete partition directory: {e}");
                    }
                }
            }
        }
    }

    /// Stops a replicated partition's group: no peer reaches it any more and it writes nothing.
    async fn stop_group(&self, p: &Partition) {
        let group = p.group.borrow_mut().take();
        if let Some(group) = group {
            self.raft_groups.deregister(group.id);
            self.group_owners.borrow_mut().remove(&group.id);
            group.shutdown().await;
        }
    }

    /// Reports the in-sync replicas of the partitions this shard leads to the controller
    /// whenever they change (Kafka's AlterPartition), so every broker's Metadata shows them:
    /// one report per shard and sweep, at most [`ISR_REPORT_BATCH_MAX`] partitions each.
    pub async fn isr_loop(self: Rc<Self>) {
        let lag_max = Duration::from_millis(self.config.replica_lag_time_max_ms);
        let interval = (lag_max / 2).clamp(Duration::from_millis(10), ISR_SWEEP_INTERVAL_MAX);
        loop {
            runtime::sleep(interval).await;
            if self.shutting_down.get() {
                return;
            }
            let groups: Vec<Rc<crate::replication::ReplicaGroup>> = self
                .partitions
                .borrow()
                .values()
                .filter_map(|p| p.replicated())
                .collect();
            let mut changes = Vec::new();
            let mut reported = Vec::new();
            for group in groups {
                if changes.len() >= ISR_REPORT_BATCH_MAX {
                    break;
                }
                if let Some((term, isr)) = group.isr_to_report(lag_max) {
                    changes.push(crate::cluster::rpc::IsrChange {
                        topic: group.topic.clone(),
                        partition: group.partition,
                        epoch: i32::try_from(term).unwrap_or(i32::MAX),
                        isr: isr.clone(),
                    });
                    reported.push((group, term, isr));
                }
            }
            if changes.is_empty() {
                continue;
            }
            let (code, message, _) = self.admin_call(AdminRequest::ReportIsr { changes }).await;
            if code != 0 {
                tracing::debug!("ISR report failed: {code} {message:?}");
                continue;
            }
            for (group, term, isr) in reported {
                group.isr_reported(term, isr);
            }
        }
    }

    /// Every shard's retention pass, every `log.retention.check.interval.ms`.
    pub async fn retention_loop(self: Rc<Self>) {
        loop {
            runtime::sleep(Duration::from_millis(
                self.config.log_retention_check_interval_ms.max(100),
            ))
            .await;
            if self.shutting_down.get() {
                return;
            }
            let parts: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
            for p in parts {
                // A replicated partition's log is its Raft log: its retention goes through
                // openraft's snapshot and purge (`replication/retention.rs`), never by
                // deleting segments behind openraft's back.
                let group = p.group.borrow().clone();
                if let Some(group) = group {
                    // A compacted topic (cleanup.policy=compact): the log cleaner keeps it
                    // small; deleting its old segments would lose live offsets.
                    if p.topic == crate::group::OFFSETS_TOPIC {
                        continue;
                    }
                    if let Err(e) = group.enforce_retention(now_ms()).await {
                        tracing::warn!(topic = %p.topic, partition = p.index, "retention failed: {e}");
                    }
                    continue;
                }
                match p.log.enforce_retention(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %p.topic, partition = p.index, "retention deleted {n} segments")
                    }
                    Err(e) => {
                        tracing::error!(topic = %p.topic, partition = p.index, "retention failed: {e}")
                    }
                }
            }
        }
    }

    /// Flushes and closes every log (clean shutdown).
    pub async fn close_all(&self) {
        self.shutting_down.set(true);
        // An update being applied finishes first; later ones see `shutting_down`.
        let _applying = self.topic_apply.lock().await;
        self.flush_dirty().await;
        let rounds = self.sync_rounds.stats();
        tracing::info!(
            shard = self.id,
            rounds = rounds.rounds,
            members = rounds.members,
            syncfs = rounds.syncfs_calls,
            fdatasync = rounds.fdatasync_calls,
            "durability rounds since start"
        );
        let parts: Vec<Rc<Partition>> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        // Each log's close flushes it and hands back its clean-shutdown record; the records
        // go into this shard's book, one file with one sync for all of them (a file per log
        // took 10,000 partitions 12-37 s). Many closes at once: the flushes and file closes
        // wait for the device CLOSE_IN_FLIGHT_MAX at a time.
        let book = RefCell::new(CleanBookWriter::new(self.config.log_dirs.clone(), self.id));
        use futures::StreamExt as _;
        futures::stream::iter(parts)
            .for_each_concurrent(CLOSE_IN_FLIGHT_MAX, |p| {
                let book = &book;
                async move {
                    p.flushed(ResponseError::KafkaStorageError.code());
                    self.stop_group(&p).await;
                    let dir = self.partition_dir(&p.topic, p.index);
                    let log = match Rc::try_unwrap(p) {
                        Ok(p) => p.log,
                        Err(p) => p.log.clone(),
                    };
                    let log = match Rc::try_unwrap(log) {
                        Ok(log) => log,
                        Err(log) => {
                            if let Err(e) = log.flush().await {
                                tracing::error!("flush at shutdown failed: {e}");
                            }
                            return;
                        }
                    };
                    let record = match log.close_record().await {
                        Ok(record) => record,
                        Err(e) => return tracing::error!("close failed: {e}"),
                    };
                    // Over the book's bound: beside the log, as a log closed on its own.
                    let added = book.borrow_mut().add(&dir, record);
                    if let Err(record) = added {
                        if let Err(e) = record.write_in(&Backend::Dma, &dir).await {
                            tracing::error!("close failed: {e}");
                        }
                    }
                }
            })
            .await;
        match book.into_inner().finish(&Backend::Dma).await {
            Ok(n) => tracing::debug!(shard = self.id, logs = n, "clean-shutdown book written"),
            Err(e) => tracing::error!(
                "cannot write the clean-shutdown book (the next start recovers these logs as after a crash): {e}"
            ),
        }
    }

    // ---- admin and cluster (shard 0) --------------------------------------------------------

    /// Broadcasts a change to every shard and waits until all applied it.
    async fn broadcast(self: &Rc<Self>, make: impl Fn() -> Request) {
        let calls = (0..self.count).map(|to| self.call(to, make()));
        futures::future::join_all(calls).await;
    }

    fn cluster_node(&self) -> Option<Rc<ClusterNode>> {
        self.cluster.borrow().clone()
    }

    /// A metadata change: submitted to the active controller, answered once this node applied it.
    async fn admin(self: &Rc<Self>, request: AdminRequest) -> Reply {
        assert_eq!(self.id, 0, "the cluster node runs on shard 0");
        let Some(node) = self.cluster_node() else {
            return Reply::Admin {
                error_code: ResponseError::NotController.code(),
                message: Some("the broker is starting".into()),
                value: 0,
            };
        };
        use crate::cluster::rpc::{ControllerRequest, ControllerResponse};
        let timeout =
            |ms: i32| Duration::from_millis(if ms > 0 { ms as u64 } else { ADMIN_TIMEOUT_MS });
        let (request, timeout) = match request {
            AdminRequest::AllocateProducerId => {
                return match node
                    .producer_id(Duration::from_millis(ADMIN_TIMEOUT_MS))
                    .await
                {
                    Ok(id) => Reply::Admin {
                        error_code: 0,
                        message: None,
                        value: id,
                    },
                    Err((error_code, message)) => Reply::Admin {
                        error_code,
                        message: Some(message),
                        value: 0,
                    },
                };
            }
            AdminRequest::CreateTopic {
                meta,
                validate_only,
                timeout_ms,
            } => (
                ControllerRequest::CreateTopic {
                    name: meta.name,
                    id: meta.id.into_bytes(),
                    partitions: meta.partitions,
                    replication: meta.replication_factor,
                    assignments: meta.replicas,
                    configs: meta.configs.into_iter().collect(),
                    validate_only,
                },
                timeout(timeout_ms),
            ),
            AdminRequest::ReportLeaders { reports } => (
                ControllerRequest::ReportLeaders {
                    leader: self.config.node_id,
                    reports,
                },
                timeout(0),
            ),
            AdminRequest::ReportIsr { changes } => (
                ControllerRequest::ReportIsr {
                    leader: self.config.node_id,
                    changes,
                },
                timeout(0),
            ),
            AdminRequest::DeleteTopic { name, timeout_ms } => {
                (ControllerRequest::DeleteTopic { name }, timeout(timeout_ms))
            }
            AdminRequest::AlterReassignment {
                topic,
                partition,
                target,
                timeout_ms,
            } => (
                ControllerRequest::AlterReassignment {
                    topic,
                    partition,
                    target,
                },
                timeout(timeout_ms),
            ),
            AdminRequest::ReportReassigned {
                topic,
                partition,
                voters,
            } => (
                ControllerRequest::ReportReassigned {
                    topic,
                    partition,
                    voters,
                },
                timeout(0),
            ),
            AdminRequest::CreatePartitions {
                name,
                count,
                assignments,
                validate_only,
                timeout_ms,
            } => (
                ControllerRequest::CreatePartitions {
                    name,
                    count,
                    assignments,
                    validate_only,
                },
                timeout(timeout_ms),
            ),
            AdminRequest::AlterTopicConfigs {
                name,
                changes,
                replace,
                validate_only,
            } => (
                ControllerRequest::AlterTopicConfigs {
                    name,
                    changes,
                    replace,
                    validate_only,
                },
                timeout(0),
            ),
            AdminRequest::AlterBrokerConfigs {
                broker,
                changes,
                replace,
                validate_only,
            } => (
                ControllerRequest::AlterBrokerConfigs {
                    broker,
                    changes,
                    replace,
                    validate_only,
                },
                timeout(0),
            ),
        };
        match node.submit(request, timeout).await {
            ControllerResponse::Done {
                error_code,
                message,
                value,
                ..
            } => Reply::Admin {
                error_code,
                message,
                value,
            },
            other => Reply::Admin {
                error_code: ResponseError::UnknownServerError.code(),
                message: Some(format!("unexpected controller answer {other:?}")),
                value: 0,
            },
        }
    }

    /// Shard 0: passes what an applied metadata entry changed on to every shard, before the
    /// entry counts as applied.
    pub async fn apply_cluster_changes(
        self: &Rc<Self>,
        image: &RefCell<crate::cluster::image::MetadataImage>,
        changes: Vec<crate::cluster::state_machine::Change>,
    ) {
        use crate::cluster::state_machine::Change;
        use crate::cluster::view::topic_meta;
        if changes.is_empty() {
            return;
        }
        let everything = changes.contains(&Change::Everything);
        let mut view_changed = everything;
        let mut dynamic = None;
        let mut upserts: Vec<TopicMeta> = Vec::new();
        let mut deletes: Vec<String> = Vec::new();
        {
            let image = image.borrow();
            if everything {
                upserts.extend(image.topics.values().map(topic_meta));
                let known: Vec<String> = self
                    .topics
                    .borrow()
                    .all()
                    .iter()
                    .map(|t| t.name.clone())
                    .collect();
                deletes.extend(known.into_iter().filter(|n| !image.topics.contains_key(n)));
            }
            for change in &changes {
                match change {
                    Change::Topic(name) => {
                        if let Some(t) = image.topics.get(name) {
                            upserts.push(topic_meta(t));
                        }
                    }
                    Change::TopicDeleted(name) => deletes.push(name.clone()),
                    Change::Brokers | Change::ClusterId => view_changed = true,
                    Change::BrokerConfigs | Change::Everything => {
                        dynamic = Some(crate::dynamic_config::DynamicConfigs::of(
                            &image.broker_configs,
                            self.config.node_id,
                        ));
                    }
                }
            }
        }
        if view_changed {
            self.publish_view().await;
        }
        if let Some(configs) = dynamic {
            if *self.dynamic.borrow() != configs {
                self.broadcast(|| Request::BrokerConfigs {
                    configs: configs.clone(),
                })
                .await;
            }
        }
        for name in deletes {
            self.broadcast(|| Request::TopicDelete { name: name.clone() })
                .await;
        }
        for meta in upserts {
            self.broadcast(|| Request::TopicUpsert { meta: meta.clone() })
                .await;
        }
    }

    /// Shard 0: sends every shard the cluster view as the image and the quorum now say.
    pub async fn publish_view(self: &Rc<Self>) {
        let Some(node) = self.cluster_node() else {
            return;
        };
        let view = ClusterView::from_image(
            &node.image.borrow(),
            node.leader(),
            &self.config.listener_name(),
            node.ready.get(),
        );
        if *self.view.borrow().as_ref() == view {
            return;
        }
        self.broadcast(|| Request::ClusterView { view: view.clone() })
            .await;
    }

    /// Shard 0: the metadata quorum from its leader.
    async fn quorum_local(self: &Rc<Self>) -> Result<crate::cluster::rpc::QuorumState, i16> {
        match self.cluster_node() {
            Some(node) => node
                .describe_quorum(Duration::from_millis(QUORUM_TIMEOUT_MS))
                .await
                .map_err(|e| e.code()),
            None => Err(ResponseError::RequestTimedOut.code()),
        }
    }

    /// The metadata quorum, for DescribeQuorum on any shard.
    pub async fn describe_quorum(
        self: &Rc<Self>,
    ) -> Result<crate::cluster::rpc::QuorumState, ResponseError> {
        match self.call(0, Request::Quorum).await {
            Some(Reply::Quorum(Ok(q))) => Ok(q),
            Some(Reply::Quorum(Err(code))) => {
                Err(ResponseError::try_from_code(code).unwrap_or(ResponseError::RequestTimedOut))
            }
            _ => Err(ResponseError::RequestTimedOut),
        }
    }

    /// Sends a metadata change to shard 0.
    /// Tells the controller this node leads a partition's group in an epoch, batched with
    /// the shard's other reports (`replication::reports`); true once the controller took it.
    async fn report_leader(self: &Rc<Self>, report: LeaderReport) -> bool {
        let (topic, partition, epoch) = (report.topic.clone(), report.partition, report.epoch);
        let Some(answer) = self.leader_reports.push(report) else {
            return false;
        };
        if self.leader_reports.start_sending() {
            runtime::spawn_detached(self.clone().send_leader_reports());
        }
        let taken = answer.recv().await.unwrap_or(false);
        if !taken {
            tracing::debug!(%topic, partition, epoch, "leadership report not taken");
        }
        taken
    }

    async fn send_leader_reports(self: Rc<Self>) {
        loop {
            let (reports, replies) = self.leader_reports.next_batch();
            if reports.is_empty() {
                return;
            }
            let count = reports.len();
            let (code, message, _) = self
                .admin_call(AdminRequest::ReportLeaders { reports })
                .await;
            if code != 0 {
                tracing::debug!(count, "leadership reports failed: {code} {message:?}");
            }
            for reply in replies {
                let _ = reply.try_send(code == 0);
            }
        }
    }

    /// Sends `request` to broker `node`'s cluster RPC listener (a request another node serves
    /// itself: markers, verifications, leadership moves) and decodes its answer; the error
    /// says why none came.
    pub async fn call_peer(
        &self,
        node: i32,
        request: &crate::cluster::rpc::ControllerRequest,
        ttl: Duration,
    ) -> Result<crate::cluster::rpc::ControllerResponse, String> {
        let addr = self
            .view
            .borrow()
            .broker(node)
            .map(|b| b.rpc_addr.clone())
            .unwrap_or_default();
        if addr.is_empty() {
            return Err("no address known".into());
        }
        let payload = request.encode().map_err(|e| e.to_string())?;
        let bytes = self
            .raft_router
            .call_app(node as spool_raft::NodeId, &addr, payload, ttl)
            .await
            .map_err(|e| e.to_string())?;
        crate::cluster::rpc::ControllerResponse::decode(&bytes).map_err(|e| e.to_string())
    }

    pub async fn admin_call(self: &Rc<Self>, request: AdminRequest) -> (i16, Option<String>, i64) {
        match self.call(0, Request::Admin(request)).await {
            Some(Reply::Admin {
                error_code,
                message,
                value,
            }) => (error_code, message, value),
            _ => (
                ResponseError::CoordinatorNotAvailable.code(),
                Some("shutting down".into()),
                0,
            ),
        }
    }

    /// Creates a topic with the broker's defaults (auto-creation).
    pub async fn auto_create(self: &Rc<Self>, name: &str) -> i16 {
        let meta = TopicMeta {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions: self.config.num_partitions,
            replication_factor: self.config.default_replication_factor,
            configs: Default::default(),
            replicas: Vec::new(),
            leaders: Vec::new(),
            isr: Vec::new(),
            targets: Vec::new(),
        };
        let (code, _, _) = self
            .admin_call(AdminRequest::CreateTopic {
                meta,
                validate_only: false,
                timeout_ms: 0,
            })
            .await;
        if code == ResponseError::TopicAlreadyExists.code() {
            0
        } else {
            code
        }
    }
}
