//! A node's place in the cluster, run by shard 0: the metadata Raft group (voter or learner),
//! the active controller when this node leads it, forwarding of metadata writes to whoever
//! does, and the broker's registration and heartbeats.
//!
//! Owned by: shard 0. Other shards reach it through shard 0's admin path (`Shard::admin`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use spool_raft::{Command, NodeId, NodeInfo, TypeConfig};

use super::controller::{self, Plan};
use super::image::MetadataImage;
use super::records::{BrokerRegistration, MetadataRecord, RecordBatch};
use super::rpc::{ControllerRequest, ControllerResponse, QuorumState, ReplicaProgress};
use super::state_machine::{decode_outcomes, MetadataStateMachine};
use crate::runtime;

/// The metadata group's id on the transport.
pub const METADATA_GROUP: u64 = 0;

/// How long a caller waits for a metadata write end to end (Kafka's forwarding gives up at
/// 60 s; the request's own timeout usually binds first).
pub const FORWARD_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// Pause between attempts while no controller is known or reachable.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// How often the active controller looks for brokers whose session expired.
const LIVENESS_CHECK: Duration = Duration::from_millis(250);
/// Stopping broker incarnations the active controller remembers (oldest forgotten first).
const STOPPING_BROKERS_MAX: usize = 1024;
/// How long a stopping broker waits for the controller to fence it.
const LEAVE_FENCE_WAIT_MAX: Duration = Duration::from_secs(3);
/// How long a stopping active controller waits for a voter to take the quorum's leadership.
const QUORUM_HANDOVER_WAIT_MAX: Duration = Duration::from_secs(3);
/// How often the handover looks at the quorum's leader.
const QUORUM_HANDOVER_POLL: Duration = Duration::from_millis(20);

pub type MetadataRaft = Raft<TypeConfig, MetadataStateMachine>;

/// The applied index every shard has seen, and the tasks waiting for it to advance.
#[derive(Default)]
pub struct Applied {
    index: Cell<u64>,
    /// (index awaited, wake-up); one per waiting request, so bounded by the requests in flight.
    waiters: RefCell<Vec<(u64, futures::channel::oneshot::Sender<()>)>>,
}

impl Applied {
    pub fn get(&self) -> u64 {
        self.index.get()
    }

    pub fn set(&self, index: u64) {
        if index <= self.index.get() {
            return;
        }
        self.index.set(index);
        let mut waiters = self.waiters.borrow_mut();
        let (ready, waiting): (Vec<_>, Vec<_>) = waiters.drain(..).partition(|(i, _)| *i <= index);
        *waiters = waiting;
        for (_, wake) in ready {
            let _ = wake.send(());
        }
    }

    /// Waits until `index` is applied, or `deadline`; true if it was.
    pub async fn wait(&self, index: u64, deadline: Instant) -> bool {
        if self.index.get() >= index {
            return true;
        }
        let (wake, woken) = futures::channel::oneshot::channel();
        {
            let mut waiters = self.waiters.borrow_mut();
            // Waiters that timed out while nothing was applied (no quorum) are dropped here,
            // so the list stays bounded by the requests actually waiting.
            waiters.retain(|(_, w)| !w.is_canceled());
            waiters.push((index, wake));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        futures::future::select(woken, Box::pin(runtime::sleep(left))).await;
        self.index.get() >= index
    }
}

pub struct ClusterNode {
    pub node_id: i32,
    pub raft: MetadataRaft,
    pub image: Rc<RefCell<MetadataImage>>,
    pub applied: Rc<Applied>,
    router: spool_raft::transport::Router,
    /// Voters from `controller.quorum.voters` (their RPC addresses), to reach a leader whose
    /// address this node has not learned from the log yet.
    voters: BTreeMap<i32, String>,
    bootstrap: Vec<String>,
    registration: BrokerRegistration,
    /// Whether the controller last told this broker it is fenced.
    pub fenced: Cell<bool>,
    /// Set once, when the controller first unfences this broker: it has caught up with the
    /// metadata log since it started.
    pub ready: Cell<bool>,
    session_timeout: Duration,
    election_timeout: Duration,
    request_timeout: Duration,
    /// The active controller serializes its writes (see `controller.rs`).
    write_lock: glommio::sync::Semaphore,
    /// Last heartbeat per broker, kept by the active controller only.
    liveness: RefCell<HashMap<i32, Instant>>,
    /// Broker incarnations that asked to shut down (active controller only): a heartbeat
    /// still in flight from one must not unfence it again.
    stopping: RefCell<BTreeSet<(i32, [u8; 16])>>,
    /// The term this node last became leader in: a new term restarts every broker's session.
    led_term: Cell<Option<u64>>,
    /// Producer ids this broker may hand out: `[next, end)`.
    producer_ids: Cell<(i64, i64)>,
    /// The RPC listener, kept for the node's life (a one-node cluster has none).
    pub rpc_server: RefCell<Option<spool_raft::transport::RpcServer>>,
    /// Closes the metadata log after the group stops (see [`ClusterNode::shutdown`]).
    pub store_closer: RefCell<Option<spool_raft::store::StoreCloser>>,
    /// Set once the broker has left the cluster at shutdown: heartbeats go on until then, so
    /// a slow controlled shutdown does not end in a session expiry.
    left: Cell<bool>,
}

fn done(error: ResponseError, message: impl Into<String>) -> ControllerResponse {
    ControllerResponse::Done {
        error_code: error.code(),
        message: Some(message.into()),
        value: 0,
        index: 0,
    }
}

impl ClusterNode {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: i32,
        raft: MetadataRaft,
        image: Rc<RefCell<MetadataImage>>,
        applied: Rc<Applied>,
        router: spool_raft::transport::Router,
        config: &crate::config::BrokerConfig,
        registration: BrokerRegistration,
    ) -> Rc<ClusterNode> {
        let cluster = &config.cluster;
        Rc::new(ClusterNode {
            node_id,
            raft,
            image,
            applied,
            router,
            voters: cluster.voters.clone(),
            bootstrap: cluster.bootstrap_servers.clone(),
            registration,
            fenced: Cell::new(true),
            ready: Cell::new(false),
            session_timeout: Duration::from_millis(cluster.session_timeout_ms),
            election_timeout: Duration::from_millis(cluster.election_timeout_ms.max(10)),
            request_timeout: Duration::from_millis(cluster.request_timeout_ms.max(100)),
            write_lock: glommio::sync::Semaphore::new(1),
            liveness: RefCell::new(HashMap::new()),
            stopping: RefCell::new(BTreeSet::new()),
            led_term: Cell::new(None),
            producer_ids: Cell::new((0, 0)),
            rpc_server: RefCell::new(None),
            store_closer: RefCell::new(None),
            left: Cell::new(false),
        })
    }

    /// The end of a controlled shutdown, once every shard has handed over its leaderships:
    /// the controller fences this broker, so Metadata stops naming it at once (KRaft's
    /// `WantShutDown` heartbeat), and an active controller hands the quorum's leadership to
    /// an up-to-date voter, so metadata writes (leader and ISR reports of the moves just made,
    /// other brokers' heartbeats) do not wait out an election timeout. Both are bounded; a
    /// failure only costs what an unclean stop costs.
    ///
    /// `gone` names the brokers this node's view shows fenced: with them, a voter that still
    /// looks alive is counted out, so the last node of a cluster stopping one by one does not
    /// wait out the fence's bound for a quorum that no longer exists.
    pub async fn leave(&self, gone: &[i32]) {
        if !self.quorum_may_answer(gone) {
            tracing::info!("no metadata quorum to fence this stopping broker");
            self.left.set(true);
            return;
        }
        let answer = self
            .submit(
                ControllerRequest::ShutDown {
                    id: self.node_id,
                    incarnation: self.registration.incarnation,
                },
                LEAVE_FENCE_WAIT_MAX,
            )
            .await;
        if !matches!(answer, ControllerResponse::Done { error_code: 0, .. }) {
            tracing::warn!("the controller did not fence this stopping broker: {answer:?}");
        }
        self.left.set(true);
        self.hand_over_quorum().await;
    }

    /// Whether a majority of the metadata voters may still answer: as a follower, whether a
    /// leader is known and has not left; as the leader, whether a majority (itself included) acknowledged it
    /// within an election timeout and is not a broker known to have left.
    fn quorum_may_answer(&self, gone: &[i32]) -> bool {
        use openraft::Instant as _;
        let m = self.raft.metrics().borrow_watched().clone();
        match m.current_leader {
            None => false,
            // A leader that is a broker known to have left is gone with it (its handover of
            // the quorum did not complete).
            Some(leader) if leader != m.id => !gone.contains(&(leader as i32)),
            Some(_) => {
                let fresh = self.election_timeout;
                let voters: Vec<_> = m.membership_config.membership().voter_ids().collect();
                let answering = voters
                    .iter()
                    .filter(|id| {
                        **id == m.id
                            || (!gone.contains(&(**id as i32))
                                && m.heartbeat
                                    .as_ref()
                                    .and_then(|h| h.get(*id).cloned().flatten())
                                    .is_some_and(|at| at.into_inner().elapsed() <= fresh))
                    })
                    .count();
                answering * 2 > voters.len()
            }
        }
    }

    async fn hand_over_quorum(&self) {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return;
        }
        // Only a voter holding the whole log can win at once; any other would need the
        // transfer's wait and then still lose to the up-to-date voters.
        let last = m.last_log_index;
        let target = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != m.id)
            .find(|id| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index)
                    == last
            });
        let Some(to) = target else {
            tracing::info!("no up-to-date voter to hand the metadata quorum to");
            return;
        };
        if let Err(e) = self.raft.trigger().transfer_leader(to).await {
            tracing::warn!("metadata quorum handover not started: {e}");
            return;
        }
        let deadline = Instant::now() + QUORUM_HANDOVER_WAIT_MAX;
        while Instant::now() < deadline {
            let leader = self.raft.metrics().borrow_watched().current_leader;
            if leader.is_some_and(|l| l != m.id) {
                tracing::info!("metadata quorum handed to node {}", to);
                return;
            }
            runtime::sleep(QUORUM_HANDOVER_POLL).await;
        }
        tracing::warn!("metadata quorum leadership did not move to node {to} before shutdown");
    }

    /// Stops the metadata group, then closes its log cleanly so the next start does not have
    /// to recover the log's tail.
    pub async fn shutdown(&self) {
        self.left.set(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("metadata quorum did not stop cleanly: {e}");
            return;
        }
        let closer = self.store_closer.borrow_mut().take();
        if let Some(closer) = closer {
            match closer.close().await {
                Ok(true) => {}
                Ok(false) => tracing::info!("metadata log still in use at shutdown"),
                Err(e) => tracing::warn!("metadata log did not close cleanly: {e}"),
            }
        }
    }

    /// The current leader of the metadata quorum, as this node knows it.
    pub fn leader(&self) -> Option<i32> {
        self.raft
            .metrics()
            .borrow_watched()
            .current_leader
            .map(|id| id as i32)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Where node `id`'s RPC listener is: the membership (learned from the log) first, the
    /// configured voters next.
    fn rpc_addr(&self, id: i32) -> Option<String> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        if let Some(node) = metrics
            .membership_config
            .membership()
            .get_node(&(id as NodeId))
        {
            if !node.rpc_addr.is_empty() {
                return Some(node.rpc_addr.clone());
            }
        }
        if let Some(addr) = self.voters.get(&id).filter(|a| !a.is_empty()) {
            return Some(addr.clone());
        }
        self.image
            .borrow()
            .brokers
            .get(&id)
            .map(|b| b.registration.rpc_addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// Sends `request` to the active controller (this node, or over RPC) until it answers or
    /// `timeout` passes; a change is answered only once this node has applied it.
    pub async fn submit(
        &self,
        request: ControllerRequest,
        timeout: Duration,
    ) -> ControllerResponse {
        let deadline = Instant::now() + timeout.min(FORWARD_TIMEOUT_MAX);
        let mut tried_bootstrap = 0usize;
        loop {
            let answer = match self.leader() {
                // Without a quorum the write never commits: answer at the request's deadline
                // (the entry may still commit later, as a timed-out Kafka request may).
                Some(leader) if leader == self.node_id => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match runtime::timeout(left, self.handle(request.clone())).await {
                        Some(answer) => Some(answer),
                        None => {
                            return done(ResponseError::RequestTimedOut, "The request timed out.")
                        }
                    }
                }
                Some(leader) => match self.rpc_addr(leader) {
                    Some(addr) => {
                        self.forward(leader as NodeId, &addr, &request, deadline)
                            .await
                    }
                    None => None,
                },
                // Not in the quorum yet (a new broker-only node): ask a bootstrap controller,
                // which answers NotController with the leader if it is not the leader itself.
                None if !self.bootstrap.is_empty()
                    || self.voters.values().any(|a| !a.is_empty()) =>
                {
                    // Bootstrap servers' node ids are unknown: address them by stand-in ids
                    // from the top of the id space, which no node.id (an i32) reaches.
                    let candidates: Vec<(NodeId, String)> = self
                        .voters
                        .iter()
                        .filter(|(_, a)| !a.is_empty())
                        .map(|(id, a)| (*id as NodeId, a.clone()))
                        .chain(
                            self.bootstrap
                                .iter()
                                .enumerate()
                                .map(|(i, a)| (NodeId::MAX - 1 - i as NodeId, a.clone())),
                        )
                        .collect();
                    let (id, addr) = candidates[tried_bootstrap % candidates.len()].clone();
                    tried_bootstrap += 1;
                    self.forward(id, &addr, &request, deadline).await
                }
                None => None,
            };
            match answer {
                Some(ControllerResponse::Done {
                    error_code,
                    message,
                    value,
                    index,
                }) => {
                    if error_code == 0 && index > 0 && !self.applied.wait(index, deadline).await {
                        return done(ResponseError::RequestTimedOut, "The request timed out.");
                    }
                    return ControllerResponse::Done {
                        error_code,
                        message,
                        value,
                        index,
                    };
                }
                Some(
                    answer @ (ControllerResponse::Heartbeat { .. }
                    | ControllerResponse::Quorum(_)
                    | ControllerResponse::Codes(_)),
                ) => return answer,
                Some(ControllerResponse::NotController {
                    leader: Some(leader),
                }) if Some(leader as i32) != self.leader() => {
                    if let Some(addr) = self.rpc_addr(leader as i32) {
                        if let Some(answer) = self.forward(leader, &addr, &request, deadline).await
                        {
                            if !matches!(answer, ControllerResponse::NotController { .. }) {
                                return answer;
                            }
                        }
                    }
                }
                Some(ControllerResponse::NotController { .. }) | None => {}
            }
            if Instant::now() + RETRY_BACKOFF >= deadline {
                return done(ResponseError::RequestTimedOut, "The request timed out.");
            }
            runtime::sleep(RETRY_BACKOFF).await;
        }
    }

    async fn forward(
        &self,
        target: NodeId,
        addr: &str,
        request: &ControllerRequest,
        deadline: Instant,
    ) -> Option<ControllerResponse> {
        let payload = request.encode().ok()?;
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = left.min(self.request_timeout.max(Duration::from_secs(5)));
        match self.router.call_app(target, addr, payload, timeout).await {
            Ok(bytes) => match ControllerResponse::decode(&bytes) {
                Ok(answer) => Some(answer),
                Err(e) => {
                    tracing::warn!(target, "undecodable controller answer: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(target, addr, "controller RPC failed: {e}");
                None
            }
        }
    }

    /// Serves a controller request arriving over RPC (another node forwarding to us).
    pub async fn handle_rpc(self: Rc<Self>, payload: bytes::Bytes) -> Vec<u8> {
        // The forwarder gave up by FORWARD_TIMEOUT_MAX; do not hold the write turn longer.
        let answer = match ControllerRequest::decode(&payload) {
            Ok(request) => runtime::timeout(FORWARD_TIMEOUT_MAX, self.handle(request))
                .await
                .unwrap_or_else(|| done(ResponseError::RequestTimedOut, "The request timed out.")),
            Err(e) => done(ResponseError::InvalidRequest, e.to_string()),
        };
        answer.encode().unwrap_or_default()
    }

    /// The active controller's side of a request.
    async fn handle(&self, request: ControllerRequest) -> ControllerResponse {
        if !self.is_leader() {
            return ControllerResponse::NotController {
                leader: self.leader().map(|l| l as u64),
            };
        }
        self.start_term_if_new();
        match request {
            ControllerRequest::Heartbeat {
                id,
                incarnation,
                applied,
            } => self.heartbeat(id, incarnation, applied).await,
            ControllerRequest::Register(registration) => {
                let id = registration.id;
                if !registration.controller {
                    // A broker-only node follows the metadata log as a learner.
                    let node = NodeInfo {
                        rpc_addr: registration.rpc_addr.clone(),
                    };
                    if let Err(e) = self.raft.add_learner(id as NodeId, node, false).await {
                        return done(ResponseError::NotController, e.to_string());
                    }
                }
                self.liveness.borrow_mut().insert(id, Instant::now());
                self.propose(ControllerRequest::Register(registration))
                    .await
            }
            ControllerRequest::DescribeQuorum => ControllerResponse::Quorum(self.quorum()),
            ControllerRequest::ShutDown { id, incarnation } => {
                {
                    let mut stopping = self.stopping.borrow_mut();
                    if stopping.len() >= STOPPING_BROKERS_MAX {
                        stopping.pop_first();
                    }
                    stopping.insert((id, incarnation));
                }
                self.propose(ControllerRequest::ShutDown { id, incarnation })
                    .await
            }
            other => self.propose(other).await,
        }
    }

    fn start_term_if_new(&self) {
        let term = self.raft.metrics().borrow_watched().current_term;
        if self.led_term.get() != Some(term) {
            // A new controller gives every broker a whole session before fencing it.
            self.led_term.set(Some(term));
            let now = Instant::now();
            let ids: Vec<i32> = self.image.borrow().brokers.keys().copied().collect();
            let mut liveness = self.liveness.borrow_mut();
            liveness.clear();
            for id in ids {
                liveness.insert(id, now);
            }
        }
    }

    async fn heartbeat(&self, id: i32, incarnation: [u8; 16], applied: u64) -> ControllerResponse {
        let (fenced, registered_at) = {
            let image = self.image.borrow();
            match image.brokers.get(&id) {
                None => {
                    return done(
                        ResponseError::BrokerIdNotRegistered,
                        format!("No broker registration found for broker id {id}"),
                    )
                }
                Some(b) if b.registration.incarnation != incarnation => {
                    return done(
                        ResponseError::StaleBrokerEpoch,
                        format!("Broker {id} registered again with another incarnation"),
                    )
                }
                Some(b) => (b.fenced, b.registered_at),
            }
        };
        self.liveness.borrow_mut().insert(id, Instant::now());
        if fenced && self.stopping.borrow().contains(&(id, incarnation)) {
            return ControllerResponse::Heartbeat { fenced };
        }
        if fenced && applied >= registered_at {
            let answer = self
                .propose_records(
                    vec![MetadataRecord::UnfenceBroker { id, incarnation }],
                    None,
                )
                .await;
            // The broker waited on this write: it was alive all along, however long the
            // commit took.
            self.liveness.borrow_mut().insert(id, Instant::now());
            if let ControllerResponse::Done { error_code: 0, .. } = answer {
                return ControllerResponse::Heartbeat { fenced: false };
            }
            return answer;
        }
        ControllerResponse::Heartbeat { fenced }
    }

    async fn propose(&self, request: ControllerRequest) -> ControllerResponse {
        let _turn = self.write_lock.acquire_permit(1).await;
        let start = rand_start();
        let plan = controller::plan(&self.image.borrow(), &request, start);
        match plan {
            Err((e, message)) => done(e, message),
            Ok(Plan::Nothing) => ControllerResponse::Done {
                error_code: 0,
                message: None,
                value: 0,
                index: 0,
            },
            Ok(Plan::Propose(records)) => self.write(records, Some(&request)).await,
        }
    }

    async fn propose_records(
        &self,
        records: Vec<MetadataRecord>,
        request: Option<&ControllerRequest>,
    ) -> ControllerResponse {
        let _turn = self.write_lock.acquire_permit(1).await;
        self.write(records, request).await
    }

    async fn write(
        &self,
        records: Vec<MetadataRecord>,
        request: Option<&ControllerRequest>,
    ) -> ControllerResponse {
        let bytes = match RecordBatch::new(records).encode() {
            Ok(b) => b,
            Err(e) => return done(ResponseError::InvalidRequest, e.to_string()),
        };
        match self
            .raft
            .client_write(Command(bytes::Bytes::from(bytes)))
            .await
        {
            Ok(written) => {
                let index = written.log_id.index;
                let outcomes = decode_outcomes(&written.data);
                let (error_code, message, value) = match request {
                    Some(request) => controller::answer(request, &outcomes),
                    None => (0, None, 0),
                };
                ControllerResponse::Done {
                    error_code,
                    message,
                    value,
                    index,
                }
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                ControllerResponse::NotController {
                    leader: f.leader_id,
                }
            }
            Err(e) => done(ResponseError::NotController, e.to_string()),
        }
    }

    /// Proposes records as the active controller; true once committed.
    pub async fn write_records(&self, records: Vec<MetadataRecord>) -> bool {
        matches!(
            self.propose_records(records, None).await,
            ControllerResponse::Done { error_code: 0, .. }
        )
    }

    /// On the active controller: fences brokers whose session expired, one at a time as Kafka.
    pub async fn liveness_loop(self: Rc<Self>, shutdown: Arc<AtomicBool>) {
        while !shutdown.load(Ordering::Relaxed) {
            runtime::sleep(LIVENESS_CHECK).await;
            if !self.is_leader() {
                continue;
            }
            self.start_term_if_new();
            let now = Instant::now();
            // The active controller never fences its own broker: they are one process, so
            // the broker is alive while the controller runs (a one-node cluster under load
            // once fenced itself while its own unfencing write was committing).
            let stale: Option<(i32, [u8; 16])> = {
                let image = self.image.borrow();
                let liveness = self.liveness.borrow();
                let found = image
                    .live_brokers()
                    .map(|b| (b.registration.id, b.registration.incarnation))
                    .find(|(id, _)| {
                        *id != self.node_id
                            && liveness
                                .get(id)
                                .is_none_or(|seen| now.duration_since(*seen) > self.session_timeout)
                    });
                found
            };
            if let Some((id, incarnation)) = stale {
                tracing::warn!("Fencing broker {id} because its session has timed out.");
                self.propose_records(vec![MetadataRecord::FenceBroker { id, incarnation }], None)
                    .await;
            }
        }
    }

    /// The broker's side: register, then heartbeat every `interval` (faster while fenced).
    pub async fn registration_loop(self: Rc<Self>, interval: Duration, shutdown: Arc<AtomicBool>) {
        let mut registered = false;
        // Heartbeats go on through a controlled shutdown (Kafka's broker heartbeats until the
        // controller lets it stop); a broker never registers again once stopping.
        while !self.left.get() && (registered || !shutdown.load(Ordering::Relaxed)) {
            if !registered {
                let answer = self
                    .submit(
                        ControllerRequest::Register(self.registration.clone()),
                        self.request_timeout * 5,
                    )
                    .await;
                match answer {
                    ControllerResponse::Done { error_code: 0, .. } => registered = true,
                    other => {
                        tracing::debug!("registration not accepted yet: {other:?}");
                        runtime::sleep(RETRY_BACKOFF * 4).await;
                        continue;
                    }
                }
            }
            let answer = self
                .submit(
                    ControllerRequest::Heartbeat {
                        id: self.node_id,
                        incarnation: self.registration.incarnation,
                        applied: self.applied.get(),
                    },
                    self.request_timeout * 2,
                )
                .await;
            match answer {
                ControllerResponse::Heartbeat { fenced } => {
                    if self.fenced.get() != fenced {
                        tracing::info!(node = self.node_id, fenced, "broker fencing changed");
                    }
                    self.fenced.set(fenced);
                    if !fenced {
                        self.ready.set(true);
                    }
                }
                ControllerResponse::Done { error_code, .. }
                    if error_code == ResponseError::BrokerIdNotRegistered.code()
                        || error_code == ResponseError::StaleBrokerEpoch.code() =>
                {
                    registered = false;
                    continue;
                }
                _ => {}
            }
            let pause = if self.fenced.get() {
                RETRY_BACKOFF * 2
            } else {
                interval
            };
            runtime::sleep(pause).await;
        }
    }

    /// A fresh producer id, from this broker's block (a new block is asked of the controller
    /// when it runs out, so ids are unique across the cluster and restarts).
    pub async fn producer_id(&self, timeout: Duration) -> Result<i64, (i16, String)> {
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        match self
            .submit(
                ControllerRequest::AllocateProducerIds {
                    broker: self.node_id,
                },
                timeout,
            )
            .await
        {
            ControllerResponse::Done {
                error_code: 0,
                value,
                ..
            } => {
                // Another task may have refilled meanwhile; the newer block wins, ids of the
                // other are simply never used.
                self.producer_ids
                    .set((value + 1, value + controller::PRODUCER_ID_BLOCK_SIZE));
                Ok(value)
            }
            ControllerResponse::Done {
                error_code,
                message,
                ..
            } => Err((error_code, message.unwrap_or_default())),
            _ => Err((
                ResponseError::RequestTimedOut.code(),
                "no controller".into(),
            )),
        }
    }

    /// The metadata quorum as this node sees it; complete only on the leader (followers'
    /// progress is known only there), so callers ask the leader ([`Self::describe_quorum`]).
    pub fn quorum(&self) -> QuorumState {
        use openraft::Instant as _;
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<i32> = membership.voter_ids().map(|id| id as i32).collect();
        let everyone: BTreeSet<i32> = membership.nodes().map(|(id, _)| *id as i32).collect();
        let now_ms = crate::shard::now_ms();
        let end = |log: Option<u64>| log.map_or(-1, |i| i as i64 + 1);
        let own_end = end(metrics.last_log_index);
        let progress = |id: i32| -> ReplicaProgress {
            if id == self.node_id {
                return ReplicaProgress {
                    id,
                    log_end_offset: own_end,
                    last_fetch_ms: now_ms,
                    last_caught_up_ms: now_ms,
                };
            }
            let log_end_offset = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&(id as NodeId)))
                .map_or(-1, |l| end(l.as_ref().map(|l| l.index)));
            let last_fetch_ms = metrics
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&(id as NodeId)).cloned().flatten())
                .map_or(-1, |at| {
                    now_ms - at.into_inner().elapsed().as_millis() as i64
                });
            ReplicaProgress {
                id,
                log_end_offset,
                last_fetch_ms,
                // A follower acknowledging the leader's end is caught up as of that ack.
                last_caught_up_ms: if log_end_offset == own_end {
                    last_fetch_ms
                } else {
                    -1
                },
            }
        };
        let endpoints = voters
            .iter()
            .filter_map(|id| {
                let addr = self.rpc_addr(*id)?;
                let (host, port) = addr.rsplit_once(':')?;
                Some((*id, host.to_string(), port.parse().ok()?))
            })
            .collect();
        QuorumState {
            leader: metrics.current_leader.map_or(-1, |l| l as i32),
            epoch: metrics.current_term as i32,
            high_watermark: end(metrics
                .cluster_committed
                .or(metrics.local_committed)
                .map(|l| l.index)),
            voters: voters.iter().map(|id| progress(*id)).collect(),
            observers: everyone
                .difference(&voters)
                .map(|id| progress(*id))
                .collect(),
            endpoints,
        }
    }

    /// The quorum's state from its leader (forwarded there if need be).
    pub async fn describe_quorum(&self, timeout: Duration) -> Result<QuorumState, ResponseError> {
        match self
            .submit(ControllerRequest::DescribeQuorum, timeout)
            .await
        {
            ControllerResponse::Quorum(q) => Ok(q),
            ControllerResponse::Done { error_code, .. } => {
                Err(ResponseError::try_from_code(error_code)
                    .unwrap_or(ResponseError::RequestTimedOut))
            }
            _ => Err(ResponseError::RequestTimedOut),
        }
    }
}

fn rand_start() -> usize {
    (uuid::Uuid::new_v4().as_u128() % 1_000_003) as usize
}

/// The openraft settings of the metadata group, from Kafka's quorum settings.
pub fn raft_config(
    cluster: &crate::config::ClusterConfig,
) -> Result<Arc<openraft::Config>, String> {
    let election = cluster.election_timeout_ms.max(10);
    let config = openraft::Config {
        cluster_name: "spool-metadata".into(),
        election_timeout_min: election,
        election_timeout_max: election * 2,
        heartbeat_interval: (election / 5).max(5),
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs(
            cluster.snapshot_bytes,
        )),
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| e.to_string())
}

/// openraft counts entries between snapshots, Kafka bytes: metadata entries are mostly small
/// (a registration, a topic of a few partitions), about 256 bytes.
fn snapshot_logs(bytes: u64) -> u64 {
    (bytes / 256).max(16)
}
