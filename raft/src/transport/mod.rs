//! The inter-node RPC layer every Raft group of a shard shares.
//!
//! ```text
//! group A ─┐ GroupNetworkFactory(Router, A) ──┐                ┌─ RpcServer ─ GroupRegistry ─┬─ group A
//! group B ─┘ GroupNetworkFactory(Router, B) ──┴ Router ══TCP══▶┘  (node's RPC listener)      └─ group B
//! ```
//!
//! - Client: [`Router`] keeps one connection per target node per shard, shared by every group,
//!   connected lazily, pipelined (responses matched by correlation id), at most
//!   [`RPC_INFLIGHT_MAX`] requests in flight on it. Each call honours openraft's hard TTL
//!   (`RPCError::Timeout`); a failed or closed connection is `Unreachable`, so openraft backs
//!   off, and it is re-dialled after a short backoff.
//! - Server: [`RpcServer`] accepts peers' connections and dispatches each request through the
//!   shard's [`GroupRegistry`] to the addressed group, up to [`RPC_INFLIGHT_PER_CONNECTION_MAX`]
//!   at a time per connection. An unknown group gets an error response, not a closed connection.
//!
//! *The seam for a simulated network*: groups never name `Router`. A group's network factory is
//! `GroupNetworkFactory<T, GroupId>` for any `T:` [`RaftTransport`] (openraft-multi's
//! `GroupRouter` plus [`RaftTransport::add_node`]), and the server side of a node is just its
//! [`GroupRegistry`], whose [`GroupRegistry::dispatch`] takes a [`Request`] and returns a
//! [`Response`]. A deterministic harness implements `RaftTransport` by handing each request to
//! the target node's registry in-process, with its own drops, delays, reorders and partitions;
//! the groups, their stores and the registry are unchanged.
//!
//! Owned by: the shard. `Router`, `RpcServer` and `GroupRegistry` are `!Send` (`Rc`).

mod client;
mod registry;
mod server;
mod stream;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use openraft::RaftNetworkFactory;
use openraft_multi::{GroupNetworkAdapter, GroupNetworkFactory, GroupRouter};

pub use self::client::{
    CallError, Router, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, RPC_INFLIGHT_MAX,
};
pub use self::registry::{
    incarnation, AppHandler, Fallback, GroupRegistry, RaftGroup, APP_GROUP, PING_GROUP,
};
pub use self::server::{RpcServer, RPC_CONNECTIONS_MAX, RPC_INFLIGHT_PER_CONNECTION_MAX};
use crate::wire::{Failure, WireError};
pub use crate::wire::{GroupId, Request, Response};
use crate::{NodeId, NodeInfo, TypeConfig};

/// What a group's network needs: openraft-multi's `GroupRouter` with Spool's snapshot data, and
/// a way to learn node addresses from the membership openraft passes to `new_client`.
pub trait RaftTransport: GroupRouter<TypeConfig, GroupId, SnapshotData = Bytes> {
    /// Records how to reach `target`. Called for every client openraft opens, so it must be
    /// cheap when nothing changed.
    fn add_node(&self, target: NodeId, node: &NodeInfo);
}

/// A group's network factory over any transport: `Raft::new(id, config,
/// network_factory(router.clone(), group_id), log, sm)`.
pub fn network_factory<T: RaftTransport>(
    transport: T,
    group_id: GroupId,
) -> GroupNetworkFactory<T, GroupId> {
    GroupNetworkFactory::new(transport, group_id)
}

impl<T: RaftTransport> RaftNetworkFactory<TypeConfig> for GroupNetworkFactory<T, GroupId> {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, T>;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        self.factory.add_node(target, node);
        GroupNetworkAdapter::new(self.factory.clone(), target, self.group_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind the RPC listener to {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: glommio::GlommioError<()>,
    },
    #[error("group {group} is already registered on this shard")]
    GroupAlreadyRegistered { group: GroupId },
    #[error("no address known for node {node}")]
    NoAddress { node: NodeId },
    #[error("cannot resolve {addr} of node {node}: {source}")]
    Resolve {
        node: NodeId,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to node {node} at {addr}: {source}")]
    Connect {
        node: NodeId,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to node {node} at {addr} timed out")]
    ConnectTimeout { node: NodeId, addr: String },
    #[error("node {node} is unreachable; next attempt in {retry_in:?}")]
    BackingOff { node: NodeId, retry_in: Duration },
    #[error("the connection to node {node} closed")]
    ConnectionClosed { node: NodeId },
    #[error("node {node} could not serve group {group}: {failure:?}")]
    Remote {
        node: NodeId,
        group: GroupId,
        failure: Failure,
    },
    #[error("node {node} answered with a response of another kind")]
    MismatchedResponse { node: NodeId },
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// The longest a connect attempt may take, whatever the call's TTL.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
