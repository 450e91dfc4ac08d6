//! The node's RPC listener on one shard: reads peers' requests, dispatches them to the shard's
//! groups, writes the responses back tagged with the request's correlation id.
//!
//! Fault model: a frame over [`RPC_FRAME_BYTES_MAX`](crate::wire::RPC_FRAME_BYTES_MAX), a frame
//! that fails validation or conversion, or a connection closed mid-frame closes that connection
//! only (logged at warn); the listener, the other connections and the groups go on. A request
//! for an unknown group is answered with an error, the connection stays.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::io::BufReader;
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};
use glommio::Task;

use super::stream::SharedStream;
use super::{GroupRegistry, TransportError};
use crate::wire::{self, IncomingRequest, WireError};

/// Requests one connection may have being served or waiting to be written; the reader stops
/// reading while at the bound, which pushes back on the peer through TCP. openraft keeps about
/// one AppendEntries in flight per group and target, so this is roughly the number of groups one
/// peer can drive at full speed over one connection.
pub const RPC_INFLIGHT_PER_CONNECTION_MAX: usize = 256;

/// Peer connections one shard's listener serves at once; more are refused (closed at accept).
/// A cluster needs one per peer node per peer shard.
pub const RPC_CONNECTIONS_MAX: usize = 1024;

/// Read buffer per connection: many small frames per read.
pub(super) const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The RPC listener of a shard. Dropping it stops accepting; established connections run until
/// their peer closes them.
///
/// Owned by: the shard that bound it.
pub struct RpcServer {
    local_addr: SocketAddr,
    stats: Rc<ServerStats>,
    _accept: Task<()>,
}

#[derive(Default)]
struct ServerStats {
    accepted: Cell<u64>,
    open: Cell<usize>,
}

impl RpcServer {
    /// Binds `addr` (port 0 picks a free port: see [`RpcServer::local_addr`]) and serves the
    /// groups of `registry`. Must run inside the shard's executor.
    pub fn bind(addr: &str, registry: GroupRegistry) -> Result<RpcServer, TransportError> {
        let listener = TcpListener::bind(addr).map_err(|source| TransportError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let stats = Rc::new(ServerStats::default());
        let accept = glommio::spawn_local(accept_loop(listener, registry, stats.clone()));
        Ok(RpcServer {
            local_addr,
            stats,
            _accept: accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections accepted and served since bind (those refused at the bound not counted).
    pub fn connections_accepted(&self) -> u64 {
        self.stats.accepted.get()
    }

    /// Connections being served now.
    pub fn connections_open(&self) -> usize {
        self.stats.open.get()
    }
}

async fn accept_loop(listener: TcpListener, registry: GroupRegistry, stats: Rc<ServerStats>) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of fds or a connection reset before accept: neither is fatal to the
                // listener; pause so a persistent condition does not spin the shard.
                tracing::warn!("RPC accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if stats.open.get() >= RPC_CONNECTIONS_MAX {
            tracing::warn!(
                peer = ?stream.peer_addr().ok(),
                "refusing RPC connection: {RPC_CONNECTIONS_MAX} already open"
            );
            continue;
        }
        stats.accepted.set(stats.accepted.get() + 1);
        stats.open.set(stats.open.get() + 1);
        let registry = registry.clone();
        let stats = stats.clone();
        glommio::spawn_local(async move {
            serve_connection(stream, registry).await;
            stats.open.set(stats.open.get() - 1);
        })
        .detach();
    }
}

/// A response frame and the in-flight slot it occupies until written.
type Outgoing = (Vec<u8>, StaticPermit);

async fn serve_connection(stream: TcpStream, registry: GroupRegistry) {
    let stream = SharedStream::new(stream);
    let peer = stream.peer();
    let (tx, rx) = local_channel::new_bounded::<Outgoing>(RPC_INFLIGHT_PER_CONNECTION_MAX);
    let writer = glommio::spawn_local(write_loop(stream.clone(), rx, peer.clone()));
    let slots = Rc::new(Semaphore::new(RPC_INFLIGHT_PER_CONNECTION_MAX as u64));
    match read_loop(&stream, &registry, Rc::new(tx), &slots).await {
        Ok(()) => tracing::debug!(peer, "RPC connection closed by peer"),
        Err(e) => {
            tracing::warn!(peer, "closing RPC connection: {e}");
            // Refuse further work at once: in-flight answers are dropped, not written.
            slots.close();
            stream.shutdown();
        }
    }
    // The writer ends once every in-flight request has answered (each holds a sender).
    writer.await;
    stream.shutdown();
}

async fn read_loop(
    stream: &SharedStream,
    registry: &GroupRegistry,
    tx: Rc<LocalSender<Outgoing>>,
    slots: &Rc<Semaphore>,
) -> Result<(), WireError> {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream.clone());
    loop {
        let Ok(slot) = slots.acquire_static_permit(1).await else {
            return Ok(());
        };
        let Some(payload) = wire::read_frame(&mut reader).await? else {
            return Ok(());
        };
        let IncomingRequest {
            correlation_id,
            group_id,
            request,
        } = wire::decode_request(payload)?;
        let registry = registry.clone();
        let tx = tx.clone();
        // Served concurrently: a slow group (a snapshot install) must not hold up heartbeats
        // of the others sharing this connection.
        glommio::spawn_local(async move {
            let response = registry.dispatch(group_id, request).await;
            match wire::encode_response(correlation_id, &response) {
                Ok(frame) => {
                    // Fails only when the connection is closing; the answer is then moot.
                    let _ = tx.send((frame, slot)).await;
                }
                Err(e) => tracing::warn!(group_id, "cannot encode an RPC response: {e}"),
            }
        })
        .detach();
    }
}

async fn write_loop(mut stream: SharedStream, rx: LocalReceiver<Outgoing>, peer: String) {
    while let Some((frame, slot)) = rx.recv().await {
        if let Err(e) = stream.write_all(&frame).await {
            tracing::warn!(peer, "RPC connection write failed: {e}");
            stream.shutdown();
            return;
        }
        drop(slot);
    }
}
