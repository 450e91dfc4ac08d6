//! The client side: [`Router`], openraft-multi's `GroupRouter` over TCP.
//!
//! One [`Connection`] per target node, shared by every group of the shard. A call encodes its
//! request, takes an in-flight slot, registers a reply slot under a fresh correlation id and
//! queues the frame for the connection's writer task; the reader task hands each response to
//! the slot with its correlation id. Every call is bounded by openraft's hard TTL; a call that
//! times out or is dropped takes its reply slot with it, so a late response is discarded.
//!
//! Fault model: a connect failure, a write failure, a closed connection or an invalid response
//! frame fails every call waiting on that connection with `Unreachable`. A failed connect (or a
//! connection closed before it answered anything) makes the target back off: calls fail at once
//! with `Unreachable`, which makes openraft back off too, until a re-dial is due (the wait
//! doubles from [`RECONNECT_BACKOFF_MIN`] to [`RECONNECT_BACKOFF_MAX`] and is reset once the
//! peer answers). A connection that has served calls and then breaks is re-dialled at once. A
//! connect runs in its own task, so a call's TTL shorter than a connect does not abort it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use futures_lite::io::BufReader;
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::RPCTypes;
use openraft_multi::GroupRouter;

use super::server::READ_BUFFER_BYTES;
use super::stream::SharedStream;
use super::{RaftTransport, TransportError, CONNECT_TIMEOUT};
use crate::wire::{self, GroupId, Request, Response};
use crate::{NodeId, NodeInfo, TypeConfig};

/// Requests one connection may have in flight (sent or queued, not yet answered). A call beyond
/// it waits for a slot within its TTL. Sized like the server's per-connection bound, so a
/// well-behaved client never makes the server stop reading.
pub const RPC_INFLIGHT_MAX: usize = super::RPC_INFLIGHT_PER_CONNECTION_MAX;

/// First wait before re-dialling a node whose connection failed.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait before re-dialling; short against election timeouts, so a restarted node is
/// found again within about a second.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The client of all Raft groups of one shard towards all other nodes. Clones share the
/// connections.
///
/// Owned by: the shard.
#[derive(Clone)]
pub struct Router {
    inner: Rc<RouterInner>,
}

struct RouterInner {
    /// This node, for openraft's `Timeout` errors.
    id: NodeId,
    addrs: RefCell<HashMap<NodeId, String>>,
    peers: RefCell<HashMap<NodeId, Rc<Peer>>>,
    next_correlation_id: Cell<u64>,
    connects: Cell<u64>,
}

/// The link to one target node.
struct Peer {
    node: NodeId,
    state: RefCell<PeerState>,
    /// One connect attempt at a time; calls arriving meanwhile wait for its outcome.
    dialling: Rc<Semaphore>,
    backoff: Cell<Duration>,
}

enum PeerState {
    Idle,
    Connected(Rc<Connection>),
    BackingOff { until: Instant },
}

/// One established connection. Dropping it (replaced, or the router dropped) ends its writer,
/// which shuts the socket down and so ends its reader.
struct Connection {
    frames: LocalSender<Vec<u8>>,
    slots: Rc<Semaphore>,
    shared: Rc<ConnectionShared>,
}

/// What the reader and writer tasks share with the callers.
struct ConnectionShared {
    pending: RefCell<HashMap<u64, oneshot::Sender<Response>>>,
    closed: Cell<bool>,
    /// A response arrived: the peer really serves us (resets the reconnect backoff).
    answered: Cell<bool>,
}

impl ConnectionShared {
    /// Fails every waiting call (their reply senders drop) and marks the connection dead.
    fn close(&self) {
        self.closed.set(true);
        self.pending.borrow_mut().clear();
    }
}

impl Router {
    /// The router of node `id` on this shard. It dials nothing until a group sends.
    pub fn new(id: NodeId) -> Router {
        Router {
            inner: Rc::new(RouterInner {
                id,
                addrs: RefCell::default(),
                peers: RefCell::default(),
                next_correlation_id: Cell::new(1),
                connects: Cell::new(0),
            }),
        }
    }

    /// Connections this router has established since it was made (re-dials included).
    pub fn connections_opened(&self) -> u64 {
        self.inner.connects.get()
    }

    /// Sends `request` to `group_id` on `target` and waits for its response for at most `ttl`.
    pub async fn call(
        &self,
        target: NodeId,
        group_id: GroupId,
        request: Request,
        ttl: Duration,
    ) -> Result<Response, CallError> {
        let deadline = Instant::now() + ttl;
        let call = self.call_until_answered(target, group_id, request);
        match timeout_at(deadline, call).await {
            Some(result) => result,
            None => Err(CallError::Timeout(ttl)),
        }
    }

    async fn call_until_answered(
        &self,
        target: NodeId,
        group_id: GroupId,
        request: Request,
    ) -> Result<Response, CallError> {
        let correlation_id = self.inner.next_correlation_id.get();
        self.inner.next_correlation_id.set(correlation_id + 1);
        let frame = wire::encode_request(correlation_id, group_id, &request)
            .map_err(|e| CallError::Network(e.into()))?;
        drop(request);
        let conn = self.connection(target).await?;
        let closed = || CallError::Unreachable(TransportError::ConnectionClosed { node: target });
        let _slot = conn
            .slots
            .acquire_static_permit(1)
            .await
            .map_err(|_| closed())?;
        if conn.shared.closed.get() {
            return Err(closed());
        }
        let (tx, rx) = oneshot::channel();
        conn.shared.pending.borrow_mut().insert(correlation_id, tx);
        let _reply_slot = ReplySlot {
            shared: &conn.shared,
            correlation_id,
        };
        conn.frames.send(frame).await.map_err(|_| closed())?;
        let response = rx.await.map_err(|_| closed())?;
        match response {
            Response::Failed(failure) => Err(CallError::Unreachable(TransportError::Remote {
                node: target,
                group: group_id,
                failure,
            })),
            response => Ok(response),
        }
    }

    /// The live connection to `target`, dialling it if there is none and no backoff applies.
    async fn connection(&self, target: NodeId) -> Result<Rc<Connection>, CallError> {
        let peer = self.peer(target);
        if let Some(conn) = peer.usable()? {
            return Ok(conn);
        }
        let closed = || CallError::Unreachable(TransportError::ConnectionClosed { node: target });
        let turn = peer
            .dialling
            .acquire_static_permit(1)
            .await
            .map_err(|_| closed())?;
        // Another call may have connected (or failed) while this one waited for its turn.
        if let Some(conn) = peer.usable()? {
            return Ok(conn);
        }
        // The attempt runs on its own, holding the turn: a caller whose TTL is shorter than a
        // connect gives up waiting, but the attempt still ends in a connection or a backoff
        // (and so in `Unreachable` for the calls after it), never in a fresh dial per call.
        let router = self.clone();
        let attempt = glommio::spawn_local(async move {
            let result = router.dial(target).await;
            router.install(&peer, result, turn)
        })
        .detach();
        match attempt.await {
            Some(Ok(conn)) => Ok(conn),
            Some(Err(e)) => Err(CallError::Unreachable(e)),
            None => Err(closed()),
        }
    }

    fn install(
        &self,
        peer: &Peer,
        dialled: Result<TcpStream, TransportError>,
        _turn: StaticPermit,
    ) -> Result<Rc<Connection>, TransportError> {
        match dialled {
            Ok(stream) => {
                let conn = Rc::new(Connection::start(stream, peer.node));
                self.inner.connects.set(self.inner.connects.get() + 1);
                *peer.state.borrow_mut() = PeerState::Connected(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                peer.back_off();
                Err(e)
            }
        }
    }

    fn peer(&self, target: NodeId) -> Rc<Peer> {
        self.inner
            .peers
            .borrow_mut()
            .entry(target)
            .or_insert_with(|| {
                Rc::new(Peer {
                    node: target,
                    state: RefCell::new(PeerState::Idle),
                    dialling: Rc::new(Semaphore::new(1)),
                    backoff: Cell::new(RECONNECT_BACKOFF_MIN),
                })
            })
            .clone()
    }

    async fn dial(&self, target: NodeId) -> Result<TcpStream, TransportError> {
        let addr = self
            .inner
            .addrs
            .borrow()
            .get(&target)
            .cloned()
            .ok_or(TransportError::NoAddress { node: target })?;
        let socket_addr = resolve(target, &addr).await?;
        match TcpStream::connect_timeout(socket_addr, CONNECT_TIMEOUT).await {
            Ok(stream) => Ok(stream),
            Err(glommio::GlommioError::TimedOut(_)) => {
                Err(TransportError::ConnectTimeout { node: target, addr })
            }
            Err(e) => Err(TransportError::Connect {
                node: target,
                addr,
                source: e.into(),
            }),
        }
    }

    async fn append_entries_call(
        &self,
        target: NodeId,
        group_id: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = Request::AppendEntries(rpc);
        match self
            .call(target, group_id, request, option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(r)) => Ok(r),
            Ok(_) => Err(mismatched(target)),
            Err(e) => Err(e.into_rpc_error(self.inner.id, target, RPCTypes::AppendEntries)),
        }
    }

    async fn vote_call(
        &self,
        target: NodeId,
        group_id: GroupId,
        request: Request,
        option: &RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(target, group_id, request, option.hard_ttl())
            .await
        {
            Ok(Response::Vote(r)) => Ok(r),
            Ok(_) => Err(mismatched(target)),
            Err(e) => Err(e.into_rpc_error(self.inner.id, target, RPCTypes::Vote)),
        }
    }
}

impl Peer {
    /// The connection if it is alive; `Ok(None)` if the caller may dial; an error while backing
    /// off.
    fn usable(&self) -> Result<Option<Rc<Connection>>, CallError> {
        let state = self.state.borrow();
        match &*state {
            PeerState::Connected(conn) if !conn.shared.closed.get() => {
                if conn.shared.answered.get() {
                    self.backoff.set(RECONNECT_BACKOFF_MIN);
                }
                Ok(Some(conn.clone()))
            }
            PeerState::Connected(conn) => {
                // One that served calls broke: re-dial at once. One closed before answering
                // anything (a peer refusing us) counts as a failed connect, so a peer that keeps
                // closing fresh connections is dialled at a doubling interval, not per call.
                let answered = conn.shared.answered.get();
                drop(state);
                if answered {
                    self.backoff.set(RECONNECT_BACKOFF_MIN);
                    *self.state.borrow_mut() = PeerState::Idle;
                    Ok(None)
                } else {
                    self.back_off();
                    self.usable()
                }
            }
            PeerState::Idle => Ok(None),
            PeerState::BackingOff { until } => {
                let now = Instant::now();
                if now >= *until {
                    drop(state);
                    *self.state.borrow_mut() = PeerState::Idle;
                    Ok(None)
                } else {
                    Err(CallError::Unreachable(TransportError::BackingOff {
                        node: self.node,
                        retry_in: *until - now,
                    }))
                }
            }
        }
    }

    fn back_off(&self) {
        let wait = self.backoff.get();
        self.backoff.set((wait * 2).min(RECONNECT_BACKOFF_MAX));
        *self.state.borrow_mut() = PeerState::BackingOff {
            until: Instant::now() + wait,
        };
    }
}

impl Connection {
    fn start(stream: TcpStream, target: NodeId) -> Connection {
        let stream = SharedStream::new(stream);
        let (frames, queued) = local_channel::new_bounded(RPC_INFLIGHT_MAX);
        let shared = Rc::new(ConnectionShared {
            pending: RefCell::default(),
            closed: Cell::new(false),
            answered: Cell::new(false),
        });
        glommio::spawn_local(write_loop(stream.clone(), queued, shared.clone(), target)).detach();
        glommio::spawn_local(read_loop(stream, shared.clone(), target)).detach();
        Connection {
            frames,
            slots: Rc::new(Semaphore::new(RPC_INFLIGHT_MAX as u64)),
            shared,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Wake callers waiting for a slot; the writer sees its channel close and ends.
        self.slots.close();
    }
}

async fn write_loop(
    mut stream: SharedStream,
    queued: LocalReceiver<Vec<u8>>,
    shared: Rc<ConnectionShared>,
    target: NodeId,
) {
    while let Some(frame) = queued.recv().await {
        if shared.closed.get() {
            break;
        }
        if let Err(e) = stream.write_all(&frame).await {
            tracing::warn!(target, "RPC write failed, closing the connection: {e}");
            break;
        }
    }
    shared.close();
    stream.shutdown();
}

async fn read_loop(stream: SharedStream, shared: Rc<ConnectionShared>, target: NodeId) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream.clone());
    loop {
        let payload = match wire::read_frame(&mut reader).await {
            Ok(Some(payload)) => payload,
            Ok(None) => {
                tracing::debug!(target, "RPC connection closed by the peer");
                break;
            }
            Err(e) => {
                if !shared.closed.get() {
                    tracing::warn!(target, "closing RPC connection: {e}");
                }
                break;
            }
        };
        match wire::decode_response(payload) {
            Ok((correlation_id, response)) => {
                shared.answered.set(true);
                let waiter = shared.pending.borrow_mut().remove(&correlation_id);
                match waiter {
                    // The caller may have given up in the meantime; nothing to do then.
                    Some(waiter) => drop(waiter.send(response)),
                    None => tracing::debug!(target, correlation_id, "late RPC response dropped"),
                }
            }
            Err(e) => {
                tracing::warn!(target, "closing RPC connection: invalid response: {e}");
                break;
            }
        }
    }
    shared.close();
    stream.shutdown();
}

/// Removes a call's reply slot when the call ends in any way, so a timed-out or cancelled call
/// leaves nothing behind.
struct ReplySlot<'a> {
    shared: &'a ConnectionShared,
    correlation_id: u64,
}

impl Drop for ReplySlot<'_> {
    fn drop(&mut self) {
        self.shared
            .pending
            .borrow_mut()
            .remove(&self.correlation_id);
    }
}

/// How a call failed, before it is shaped into the error openraft expects for the RPC.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Unreachable(TransportError),
    #[error(transparent)]
    Network(TransportError),
}

impl CallError {
    fn into_rpc_error(self, id: NodeId, target: NodeId, action: RPCTypes) -> RPCError<TypeConfig> {
        match self {
            CallError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id,
                target,
                timeout,
            }),
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn into_streaming_error(self, id: NodeId, target: NodeId) -> StreamingError<TypeConfig> {
        match self.into_rpc_error(id, target, RPCTypes::InstallSnapshot) {
            RPCError::Timeout(e) => StreamingError::Timeout(e),
            RPCError::Unreachable(e) => StreamingError::Unreachable(e),
            RPCError::Network(e) => StreamingError::Network(e),
            RPCError::RemoteError(e) => StreamingError::Network(NetworkError::new(&e)),
        }
    }
}

fn mismatched(target: NodeId) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&TransportError::MismatchedResponse {
        node: target,
    }))
}

impl Router {
    /// Sends an application message to the node at `addr` (known as `target`) and waits at most
    /// `ttl` for its answer.
    /// The node-level liveness ping: `target`'s incarnation (see [`super::incarnation`]), or
    /// why it did not answer within `ttl`.
    pub async fn ping(&self, target: NodeId, ttl: Duration) -> Result<u64, CallError> {
        let request = Request::App(Bytes::new());
        match self.call(target, super::PING_GROUP, request, ttl).await? {
            Response::App(answer) if answer.len() == 8 => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&answer);
                Ok(u64::from_le_bytes(raw))
            }
            _ => Err(CallError::Unreachable(TransportError::MismatchedResponse {
                node: target,
            })),
        }
    }

    pub async fn call_app(
        &self,
        target: NodeId,
        addr: &str,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Bytes, CallError> {
        self.add_node(
            target,
            &NodeInfo {
                rpc_addr: addr.to_string(),
            },
        );
        let request = Request::App(Bytes::from(payload));
        match self.call(target, super::APP_GROUP, request, ttl).await? {
            Response::App(answer) => Ok(answer),
            _ => Err(CallError::Unreachable(TransportError::MismatchedResponse {
                node: target,
            })),
        }
    }
}

impl RaftTransport for Router {
    fn add_node(&self, target: NodeId, node: &NodeInfo) {
        // A membership written before the node's address was known carries none; never let
        // it replace an address learned elsewhere (the cluster's broker registrations).
        if node.rpc_addr.is_empty() {
            return;
        }
        let mut addrs = self.inner.addrs.borrow_mut();
        if addrs.get(&target) == Some(&node.rpc_addr) {
            return;
        }
        let changed = addrs.insert(target, node.rpc_addr.clone()).is_some();
        drop(addrs);
        if changed {
            // A connection to the old address reaches the wrong node, or none: drop it.
            if let Some(peer) = self.inner.peers.borrow().get(&target) {
                *peer.state.borrow_mut() = PeerState::Idle;
            }
        }
    }
}

impl GroupRouter<TypeConfig, GroupId> for Router {
    type SnapshotData = Bytes;

    async fn append_entries(
        &self,
        target: NodeId,
        group_id: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.append_entries_call(target, group_id, rpc, &option)
            .await
    }

    async fn vote(
        &self,
        target: NodeId,
        group_id: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(target, group_id, Request::Vote(rpc), &option)
            .await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group_id: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(target, group_id, Request::PreVote(rpc), &option)
            .await
    }

    async fn full_snapshot(
        &self,
        target: NodeId,
        group_id: GroupId,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Bytes>,
        cancel: impl Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = Request::FullSnapshot { vote, snapshot };
        let call = async {
            match self
                .call(target, group_id, request, option.hard_ttl())
                .await
            {
                Ok(Response::FullSnapshot(r)) => Ok(r),
                Ok(_) => Err(StreamingError::Network(NetworkError::new(
                    &TransportError::MismatchedResponse { node: target },
                ))),
                Err(e) => Err(e.into_streaming_error(self.inner.id, target)),
            }
        };
        let cancelled = async { Err(StreamingError::Closed(cancel.await)) };
        futures_lite::future::or(call, cancelled).await
    }

    async fn transfer_leader(
        &self,
        target: NodeId,
        group_id: GroupId,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = Request::TransferLeader(req);
        match self
            .call(target, group_id, request, option.hard_ttl())
            .await
        {
            Ok(Response::TransferLeader(r)) => Ok(r),
            Ok(_) => Err(mismatched(target)),
            Err(e) => Err(e.into_rpc_error(self.inner.id, target, RPCTypes::TransferLeader)),
        }
    }
}

/// An `ip:port` parses in place; a host name is resolved on the executor's blocking thread, so
/// a slow DNS lookup never stalls the shard.
async fn resolve(node: NodeId, addr: &str) -> Result<SocketAddr, TransportError> {
    if let Ok(socket_addr) = addr.parse::<SocketAddr>() {
        return Ok(socket_addr);
    }
    let owned = addr.to_owned();
    let resolved = glommio::executor()
        .spawn_blocking(move || owned.to_socket_addrs().map(|mut a| a.next()))
        .await;
    match resolved {
        Ok(Some(socket_addr)) => Ok(socket_addr),
        Ok(None) => Err(TransportError::Resolve {
            node,
            addr: addr.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        }),
        Err(source) => Err(TransportError::Resolve {
            node,
            addr: addr.to_owned(),
            source,
        }),
    }
}

/// `Some(output)` if `future` completes before `deadline`.
async fn timeout_at<T>(deadline: Instant, future: impl Future<Output = T>) -> Option<T> {
    let timer = async {
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
        None
    };
    futures_lite::future::or(async { Some(future.await) }, timer).await
}
