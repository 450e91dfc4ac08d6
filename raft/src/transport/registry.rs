//! The Raft groups of one shard, by group id: where every inbound request is dispatched.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use openraft::storage::RaftStateMachine;
use openraft::Raft;

use super::TransportError;
use crate::wire::{Failure, GroupId, Request, Response};
use crate::TypeConfig;

/// A group as the transport sees it: something that answers Raft requests. Object-safe, so
/// groups with different state machines share one registry; implemented for every
/// `Raft<TypeConfig, SM>` whose snapshots are `Bytes`.
pub trait RaftGroup {
    /// Answers `request`; a stopped Raft answers [`Failure::GroupStopped`].
    fn handle(&self, request: Request) -> LocalBoxFuture<'static, Response>;
}

impl<SM> RaftGroup for Raft<TypeConfig, SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = Bytes>,
{
    fn handle(&self, request: Request) -> LocalBoxFuture<'static, Response> {
        let raft = self.clone();
        Box::pin(async move {
            let answered = match request {
                Request::AppendEntries(r) => raft
                    .append_entries(r)
                    .await
                    .map(Response::AppendEntries)
                    .map_err(|e| e.to_string()),
                Request::Vote(r) => raft
                    .vote(r)
                    .await
                    .map(Response::Vote)
                    .map_err(|e| e.to_string()),
                Request::PreVote(r) => raft
                    .pre_vote(r)
                    .await
                    .map(Response::Vote)
                    .map_err(|e| e.to_string()),
                Request::FullSnapshot { vote, snapshot } => raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map(Response::FullSnapshot)
                    .map_err(|e| e.to_string()),
                Request::TransferLeader(r) => raft
                    .handle_transfer_leader(r)
                    .await
                    .map(Response::TransferLeader)
                    .map_err(|e| e.to_string()),
                // Application messages go to the app handler's group, never to a Raft group.
                Request::App(_) => return Response::Failed(Failure::UnknownGroup),
            };
            answered.unwrap_or_else(|reason| {
                tracing::debug!("raft group stopped, cannot answer: {reason}");
                Response::Failed(Failure::GroupStopped)
            })
        })
    }
}

/// The group id application messages are addressed to (no Raft group uses it).
pub const APP_GROUP: GroupId = u64::MAX;

/// The group id of the node-level liveness ping (no Raft group uses it): one request per node
/// pair and shard replaces the per-group heartbeats of quiescent groups. Every registry answers
/// it itself, before any group or fallback, with this process's [`incarnation`].
pub const PING_GROUP: GroupId = u64::MAX - 1;

/// A number that differs between two runs of a node (its start time in nanoseconds), so a peer
/// that pings it learns about a restart even when the restart was quicker than a missed ping.
pub fn incarnation() -> u64 {
    static INCARNATION: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *INCARNATION.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .max(1)
    })
}

/// Answers application messages ([`Request::App`]): the broker's controller RPCs. Register it
/// under [`APP_GROUP`].
pub struct AppHandler(pub Rc<dyn Fn(Bytes) -> LocalBoxFuture<'static, Vec<u8>>>);

impl RaftGroup for AppHandler {
    fn handle(&self, request: Request) -> LocalBoxFuture<'static, Response> {
        match request {
            Request::App(payload) => {
                let answer = (self.0)(payload);
                Box::pin(async move { Response::App(Bytes::from(answer.await)) })
            }
            _ => Box::pin(async { Response::Failed(Failure::UnknownGroup) }),
        }
    }
}

/// Owned by: the shard. Cloning shares the same registry (the server holds one clone, the code
/// that creates groups another).
#[derive(Clone, Default)]
pub struct GroupRegistry {
    groups: Rc<RefCell<HashMap<GroupId, Rc<dyn RaftGroup>>>>,
    fallback: Rc<RefCell<Option<Fallback>>>,
}

/// Where a request for a group this registry does not hold goes (a node whose groups live
/// on several shards forwards it to the group's shard).
pub type Fallback = Rc<dyn Fn(GroupId, Request) -> LocalBoxFuture<'static, Response>>;

impl GroupRegistry {
    pub fn new() -> GroupRegistry {
        GroupRegistry::default()
    }

    /// Makes `group` reachable by peers. A group id is registered at most once per shard.
    pub fn register(
        &self,
        group_id: GroupId,
        group: impl RaftGroup + 'static,
    ) -> Result<(), TransportError> {
        let mut groups = self.groups.borrow_mut();
        if groups.contains_key(&group_id) {
            return Err(TransportError::GroupAlreadyRegistered { group: group_id });
        }
        groups.insert(group_id, Rc::new(group));
        Ok(())
    }

    /// Stops routing to the group; requests already dispatched still complete.
    pub fn deregister(&self, group_id: GroupId) -> bool {
        self.groups.borrow_mut().remove(&group_id).is_some()
    }

    pub fn contains(&self, group_id: GroupId) -> bool {
        self.groups.borrow().contains_key(&group_id)
    }

    /// Sends requests for groups not registered here to `fallback`.
    pub fn set_fallback(&self, fallback: Fallback) {
        *self.fallback.borrow_mut() = Some(fallback);
    }

    /// Answers one request for `group_id`; an unknown group goes to the fallback, or answers
    /// [`Failure::UnknownGroup`].
    pub async fn dispatch(&self, group_id: GroupId, request: Request) -> Response {
        if group_id == PING_GROUP {
            return Response::App(Bytes::copy_from_slice(&incarnation().to_le_bytes()));
        }
        // Clone the handle out so no borrow spans the await (a group may (de)register meanwhile).
        let group = self.groups.borrow().get(&group_id).cloned();
        match group {
            Some(group) => group.handle(request).await,
            None => {
                let fallback = self.fallback.borrow().clone();
                match fallback {
                    Some(fallback) => fallback(group_id, request).await,
                    None => Response::Failed(Failure::UnknownGroup),
                }
            }
        }
    }
}
