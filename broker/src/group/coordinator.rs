//! The group coordinator of one shard: the groups whose offsets partition this shard owns, the
//! requests waiting on them, their timers, and their records in `__consumer_offsets`.
//!
//! Owned by: its shard (`!Send`). No `RefCell` borrow is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as CgAssignment, DescribedGroup as CgDescribedGroup, Member as CgMember,
    TopicPartitions as CgTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HeartbeatAssignment, TopicPartitions as HeartbeatTopicPartitions,
};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, SyncGroupRequest, SyncGroupResponse,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::assignor::Assignment;
use super::classic::{
    Committed, Event, Group, GroupState, JoinOutcome, JoinRequest, JoinResult, Limits, SyncOutcome,
    SyncResult,
};
use super::consumer::{self, ConsumerGroup, HeartbeatIn};
use super::records::{self, ConsumerGroupValue, Key, OffsetValue, Value};
use super::{FetchedOffset, FetchedOffsets, GroupCall, GroupReply, OFFSETS_TOPIC};
use crate::config::{BrokerConfig, FlushMode};
use crate::replication::ReplicaGroup;
use crate::runtime::{self, LocalReceiver, LocalSender};
use crate::shard::mesh::ProduceResult;
use crate::shard::{now_ms, routing, storage_error_code, Shard};

/// The shortest sleep of the group timer: a join phase due "now" (the initial rebalance with
/// `group.initial.rebalance.delay.ms=0`) completes after at least this long, so joins already
/// on their way are served first, as Kafka's timer fires through its event queue.
pub const GROUP_TIMER_MIN: Duration = Duration::from_millis(1);
/// The longest sleep of the group timer with nothing scheduled (it also watches for shutdown).
pub const GROUP_TIMER_IDLE: Duration = Duration::from_millis(500);
/// Bytes read per step while loading an offsets partition.
pub const LOAD_READ_BYTES: usize = 1 << 20;
/// Records in one expiry batch.
pub const EXPIRE_BATCH_RECORDS_MAX: usize = 1000;

type WaitKey = (String, String);
/// One partition's offset as a commit request gives it (`offset_record`). `partitions`: the
/// topic's partition count, None if the topic is unknown.
struct OffsetToCommit<'a> {
    group_id: &'a str,
    topic: &'a str,
    partition: i32,
    partitions: Option<i32>,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
    now: i64,
}

/// A transactional offset record waiting for its marker: (offsets partition, log offset, key,
/// value).
type PendingTxnOffset = (i32, i64, Key, Option<Value>);
/// Records to append: a key and its value, or `None` for a tombstone.
type Entries = Vec<(Key, Option<Value>)>;

pub struct GroupCoordinator {
    loaded: Cell<bool>,
    groups: RefCell<AHashMap<String, Group>>,
    /// KIP-848 groups; each also has a `groups` entry (Empty, no members) holding its offsets.
    consumer: RefCell<AHashMap<String, ConsumerGroup>>,
    consumer_settings: consumer::Settings,
    join_waiters: RefCell<AHashMap<WaitKey, LocalSender<JoinResult>>>,
    sync_waiters: RefCell<AHashMap<WaitKey, LocalSender<SyncResult>>>,
    limits: Limits,
    metadata_max_bytes: usize,
    retention_ms: i64,
    /// Replicated offsets partitions whose groups are loaded: index → the Raft term this shard
    /// leads them in. Their groups are served only while that term lasts.
    led: RefCell<AHashMap<i32, u64>>,
    /// Transactional offset commits waiting for their transaction's marker, by producer id:
    /// (offsets partition, log offset, record). A COMMIT marker applies them, an ABORT drops
    /// them (Kafka's pending transactional offsets).
    txn_offsets: RefCell<AHashMap<i64, Vec<PendingTxnOffset>>>,
    /// Markers committed on an offsets partition while it was not loaded yet: (partition,
    /// marker offset, producer id, commit). Applied once it is, unless the load read them.
    deferred_markers: RefCell<Vec<(i32, i64, i64, bool)>>,
    /// Per offsets partition, where its last load stopped reading.
    load_end: RefCell<AHashMap<i32, i64>>,
    /// The deadline (ms) the timer task sleeps until; `i64::MAX` when none.
    armed: Cell<i64>,
    /// Wakes the timer task when a deadline earlier than `armed` appears.
    wake: LocalSender<()>,
    wake_rx: RefCell<Option<LocalReceiver<()>>>,
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn opt(text: &Option<StrBytes>) -> Option<String> {
    text.as_ref().map(|t| t.to_string())
}

impl GroupCoordinator {
    pub fn new(config: &BrokerConfig) -> GroupCoordinator {
        let (wake, wake_rx) = runtime::new_bounded(1);
        GroupCoordinator {
            armed: Cell::new(i64::MAX),
            txn_offsets: RefCell::new(AHashMap::new()),
            deferred_markers: RefCell::new(Vec::new()),
            load_end: RefCell::new(AHashMap::new()),
            led: RefCell::new(AHashMap::new()),
            wake,
            wake_rx: RefCell::new(Some(wake_rx)),
            loaded: Cell::new(false),
            groups: RefCell::new(AHashMap::new()),
            consumer: RefCell::new(AHashMap::new()),
            consumer_settings: consumer::Settings {
                session_timeout_ms: config.group_consumer_session_timeout_ms,
                heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
                assignors: config.group_consumer_assignors.clone(),
                max_size: config.group_consumer_max_size,
            },
            join_waiters: RefCell::new(AHashMap::new()),
            sync_waiters: RefCell::new(AHashMap::new()),
            limits: Limits {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                max_size: config.group_max_size,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            },
            metadata_max_bytes: config.offset_metadata_max_bytes,
            retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
        }
    }

    /// Serves one group request on this (the owning) shard.
    pub async fn serve(&self, shard: &Rc<Shard>, call: GroupCall) -> GroupReply {
        if !self.loaded.get() {
            return error_reply(call, ResponseError::CoordinatorLoadInProgress.code());
        }
        if let Some(group_id) = group_of(&call) {
            if let Err(code) = self.coordinates(shard, &group_id) {
                return error_reply(call, code);
            }
            self.expire_due(shard, &group_id);
        }
        match call {
            GroupCall::Join {
                version,
                client_id,
                client_host,
                request,
            } => GroupReply::Join(
                self.join(shard, version, client_id, client_host, request)
                    .await,
            ),
            GroupCall::Sync { version, request } => {
                GroupReply::Sync(self.sync(shard, version, request).await)
            }
            GroupCall::Heartbeat { request } => GroupReply::Heartbeat(self.heartbeat(request)),
            GroupCall::Leave { version, request } => {
                GroupReply::Leave(self.leave(shard, version, request))
            }
            GroupCall::OffsetCommit { version, request } => {
                GroupReply::OffsetCommit(self.offset_commit(shard, version, request).await)
            }
            GroupCall::TxnOffsetCommit { version, request } => {
                GroupReply::TxnOffsetCommit(self.txn_offset_commit(shard, version, *request).await)
            }
            GroupCall::OffsetFetch {
                group,
                topics,
                member,
                require_stable,
            } => GroupReply::OffsetFetch(self.offset_fetch(&group, topics, member, require_stable)),
            GroupCall::OffsetDelete { request } => {
                GroupReply::OffsetDelete(self.offset_delete(shard, request).await)
            }
            GroupCall::List { states, types } => GroupReply::List(self.list(&states, &types)),
            GroupCall::Describe { group } => GroupReply::Describe(self.describe(&group)),
            GroupCall::Delete { group } => GroupReply::Delete(self.delete(shard, &group).await),
            GroupCall::ConsumerHeartbeat {
                version,
                client_id,
                client_host,
                request,
            } => GroupReply::ConsumerHeartbeat(
                self.consumer_heartbeat(shard, version, client_id, client_host, request)
                    .await,
            ),
            GroupCall::ConsumerDescribe { group } => {
                GroupReply::ConsumerDescribe(self.consumer_describe(shard, &group))
            }
        }
    }

    // ---- JoinGroup / SyncGroup / Heartbeat / LeaveGroup -------------------------------------

    async fn join(
        &self,
        shard: &Rc<Shard>,
        version: i16,
        client_id: String,
        client_host: String,
        request: JoinGroupRequest,
    ) -> JoinGroupResponse {
        let group_id = request.group_id.0.to_string();
        let member_id = request.member_id.to_string();
        let instance_id = opt(&request.group_instance_id);
        let result = if group_id.is_empty() {
            JoinResult::error(ResponseError::InvalidGroupId, &member_id)
        } else if !self.classic_join_allowed(&group_id) {
            JoinResult::error(ResponseError::InconsistentGroupProtocol, &member_id)
        } else if !self.groups.borrow().contains_key(&group_id) && !member_id.is_empty() {
            JoinResult::error(ResponseError::UnknownMemberId, &member_id)
        } else {
            let prefix = instance_id.clone().unwrap_or_else(|| client_id.clone());
            let join = JoinRequest {
                member_id: member_id.clone(),
                instance_id,
                client_id,
                client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: if version == 0 {
                    request.session_timeout_ms
                } else {
                    request.rebalance_timeout_ms
                },
                protocol_type: request.protocol_type.to_string(),
                protocols: request
                    .protocols
                    .iter()
                    .map(|p| (p.name.to_string(), p.metadata.clone()))
                    .collect(),
                require_known_member_id: version >= 4,
                supports_skip_assignment: version >= 9,
                new_member_id: format!("{prefix}-{}", uuid::Uuid::new_v4()),
            };
            let mut events = Vec::new();
            let outcome = {
                let mut groups = self.groups.borrow_mut();
                let now = now_ms();
                let group = groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id, now));
                let outcome = group.join(join, &self.limits, now, &mut events);
                let unused = group.members.is_empty()
                    && group.pending.is_empty()
                    && group.offsets.is_empty()
                    && group.generation == 0;
                if unused {
                    groups.remove(&group_id);
                }
                outcome
            };
            match outcome {
                JoinOutcome::Now(result) => {
                    self.dispatch(shard, &group_id, events);
                    result
                }
                JoinOutcome::Wait(id) => {
                    let (tx, rx) = runtime::oneshot();
                    self.join_waiters
                        .borrow_mut()
                        .insert((group_id.clone(), id.clone()), tx);
                    self.dispatch(shard, &group_id, events);
                    rx.recv().await.unwrap_or_else(|| {
                        JoinResult::error(ResponseError::RebalanceInProgress, &id)
                    })
                }
            }
        };
        join_response(version, result)
    }

    async fn sync(
        &self,
        shard: &Rc<Shard>,
        version: i16,
        request: SyncGroupRequest,
    ) -> SyncGroupResponse {
        let group_id = request.group_id.0.to_string();
        let member_id = request.member_id.to_string();
        let mut events = Vec::new();
        let outcome = {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(&group_id) {
                None if group_id.is_empty() => {
                    SyncOutcome::Now(SyncResult::error(ResponseError::InvalidGroupId))
                }
                None => SyncOutcome::Now(SyncResult::error(ResponseError::UnknownMemberId)),
                Some(group) => group.sync(
                    &member_id,
                    opt(&request.group_instance_id).as_deref(),
                    request.generation_id,
                    opt(&request.protocol_type).as_deref(),
                    opt(&request.protocol_name).as_deref(),
                    request
                        .assignments
                        .iter()
                        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                        .collect(),
                    now_ms(),
                    &mut events,
                ),
            }
        };
        let result = match outcome {
            SyncOutcome::Now(result) => {
                self.dispatch(shard, &group_id, events);
                result
            }
            SyncOutcome::Wait => {
                let (tx, rx) = runtime::oneshot();
                self.sync_waiters
                    .borrow_mut()
                    .insert((group_id.clone(), member_id), tx);
                self.dispatch(shard, &group_id, events);
                rx.recv()
                    .await
                    .unwrap_or_else(|| SyncResult::error(ResponseError::RebalanceInProgress))
            }
        };
        let response = SyncGroupResponse::default()
            .with_error_code(result.error)
            .with_assignment(result.assignment);
        if version >= 5 {
            response
                .with_protocol_type(result.protocol_type.map(|t| s(&t)))
                .with_protocol_name(result.protocol_name.map(|n| s(&n)))
        } else {
            response
        }
    }

    fn heartbeat(&self, request: HeartbeatRequest) -> HeartbeatResponse {
        let group_id = request.group_id.0.to_string();
        let code = match self.groups.borrow_mut().get_mut(&group_id) {
            None if group_id.is_empty() => ResponseError::InvalidGroupId.code(),
            None => ResponseError::UnknownMemberId.code(),
            Some(group) => group.heartbeat(
                &request.member_id,
                opt(&request.group_instance_id).as_deref(),
                request.generation_id,
                now_ms(),
            ),
        };
        HeartbeatResponse::default().with_error_code(code)
    }

    fn leave(
        &self,
        shard: &Rc<Shard>,
        version: i16,
        request: LeaveGroupRequest,
    ) -> LeaveGroupResponse {
        let group_id = request.group_id.0.to_string();
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let mut events = Vec::new();
        let (top, codes): (i16, Vec<i16>) = {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(&group_id) {
                None if group_id.is_empty() => (ResponseError::InvalidGroupId.code(), Vec::new()),
                None => (
                    0,
                    vec![ResponseError::UnknownMemberId.code(); leaving.len()],
                ),
                Some(g) if g.state == GroupState::Dead => {
                    (ResponseError::CoordinatorNotAvailable.code(), Vec::new())
                }
                Some(g) => {
                    let now = now_ms();
                    let codes = leaving
                        .iter()
                        .map(|(id, instance)| {
                            g.leave(id, instance.as_deref(), &self.limits, now, &mut events)
                        })
                        .collect();
                    (0, codes)
                }
            }
        };
        self.dispatch(shard, &group_id, events);
        if version < 3 {
            let code = if top != 0 {
                top
            } else {
                codes.first().copied().unwrap_or(0)
            };
            return LeaveGroupResponse::default().with_error_code(code);
        }
        if top != 0 {
            return LeaveGroupResponse::default().with_error_code(top);
        }
        let members = leaving
            .into_iter()
            .zip(codes)
            .map(|((id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(s(&id))
                    .with_group_instance_id(instance.map(|i| s(&i)))
                    .with_error_code(code)
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    }

    /// Hands state-machine events to the requests waiting on them. Answers that follow a
    /// metadata write wait until it is durable.
    fn dispatch(&self, shard: &Rc<Shard>, group_id: &str, events: Vec<Event>) {
        self.arm(group_id);
        let mut durable: Option<Write> = None;
        let mut deferred = Vec::new();
        let mut persisted = false;
        for event in events {
            match event {
                Event::Persist if !persisted => {
                    persisted = true;
                    durable = self.persist_group(shard, group_id);
                }
                Event::Persist => {}
                other if durable.is_some() => deferred.push(other),
                other => self.complete(group_id, other),
            }
        }
        if let Some(rx) = durable {
            if deferred.is_empty() {
                return;
            }
            let shard = shard.clone();
            let group_id = group_id.to_string();
            runtime::spawn_detached(async move {
                let failed = rx.done().await.err();
                if let Some(code) = failed {
                    tracing::warn!(group = %group_id, "group metadata write failed: error {code}");
                }
                for event in deferred {
                    // Answers that depend on the write carry its error (a replicated write
                    // that did not commit: NOT_COORDINATOR, and the client looks again).
                    let event = match (failed, event) {
                        (Some(code), Event::Join(m, _)) => {
                            let mut r = JoinResult::error(ResponseError::UnknownServerError, &m);
                            r.error = code;
                            Event::Join(m, r)
                        }
                        (Some(code), Event::Sync(m, _)) => Event::Sync(
                            m,
                            SyncResult {
                                error: code,
                                ..SyncResult::default()
                            },
                        ),
                        (_, event) => event,
                    };
                    shard.groups.complete(&group_id, event);
                }
            });
        }
    }

    fn complete(&self, group_id: &str, event: Event) {
        match event {
            Event::Join(member, result) => {
                let key = (group_id.to_string(), member);
                if let Some(tx) = self.join_waiters.borrow_mut().remove(&key) {
                    let _ = tx.try_send(result);
                }
            }
            Event::Sync(member, result) => {
                let key = (group_id.to_string(), member);
                if let Some(tx) = self.sync_waiters.borrow_mut().remove(&key) {
                    let _ = tx.try_send(result);
                }
            }
            Event::Persist => {}
        }
    }

    /// Appends the group's metadata record; the write says when it is durable (committed).
    fn persist_group(&self, shard: &Rc<Shard>, group_id: &str) -> Option<Write> {
        let value = self.groups.borrow().get(group_id)?.to_value();
        let key = Key::Group {
            group: group_id.to_string(),
        };
        match append(shard, group_id, &[(key, Some(Value::Group(value)))], None) {
            Ok(write) => Some(write),
            Err(code) => {
                tracing::warn!(
                    group = group_id,
                    "cannot write group metadata: error {code}"
                );
                None
            }
        }
    }

    /// Makes the timer task wake by `group_id`'s next deadline.
    fn arm(&self, group_id: &str) {
        let classic = self
            .groups
            .borrow()
            .get(group_id)
            .and_then(Group::next_deadline);
        let consumer = self
            .consumer
            .borrow()
            .get(group_id)
            .and_then(ConsumerGroup::next_deadline);
        if let Some(deadline) = classic.into_iter().chain(consumer).min() {
            if deadline < self.armed.get() {
                self.armed.set(deadline);
                // Full means a wake-up is already pending.
                let _ = self.wake.try_send(());
            }
        }
    }

    /// Expiry that is due for `group_id`, applied before one of its requests is served, so a
    /// member is gone from the moment its session deadline passes whatever the timer's delay.
    fn expire_due(&self, shard: &Rc<Shard>, group_id: &str) {
        let now = now_ms();
        let mut events = Vec::new();
        let due = |d: Option<i64>| d.is_some_and(|d| d <= now);
        if let Some(g) = self.groups.borrow_mut().get_mut(group_id) {
            if due(g.next_deadline()) {
                g.expire(&self.limits, now, &mut events);
            }
        }
        if !events.is_empty() {
            self.dispatch(shard, group_id, events);
        }
        let consumer_due = due(self
            .consumer
            .borrow()
            .get(group_id)
            .and_then(ConsumerGroup::next_deadline));
        if consumer_due {
            self.consumer_tick(shard, now);
        }
    }

    /// The group timer: sleeps until the earliest deadline of any group on this shard (session
    /// expiry, the rebalance timeout, the initial delay), fires what is due, and sleeps again;
    /// a new earlier deadline wakes it (`arm`).
    pub async fn tick_loop(shard: Rc<Shard>) {
        let Some(wake) = shard.groups.wake_rx.borrow_mut().take() else {
            return;
        };
        loop {
            if shard.shutting_down.get() {
                return;
            }
            let coordinator = &shard.groups;
            let now = now_ms();
            let mut fired = Vec::new();
            let mut next = i64::MAX;
            for (id, group) in coordinator.groups.borrow_mut().iter_mut() {
                let Some(deadline) = group.next_deadline() else {
                    continue;
                };
                if deadline <= now {
                    let mut events = Vec::new();
                    group.tick(&coordinator.limits, now, &mut events);
                    if !events.is_empty() {
                        fired.push((id.clone(), events));
                    }
                }
                next = next.min(group.next_deadline().unwrap_or(i64::MAX));
            }
            coordinator.armed.set(next);
            for (id, events) in fired {
                coordinator.dispatch(&shard, &id, events);
            }
            if coordinator.loaded.get() {
                coordinator.consumer_tick(&shard, now);
            }
            let consumer_next = coordinator
                .consumer
                .borrow()
                .values()
                .filter_map(ConsumerGroup::next_deadline)
                .min()
                .unwrap_or(i64::MAX);
            let next = coordinator.armed.get().min(consumer_next);
            coordinator.armed.set(next);
            let sleep = if next == i64::MAX {
                GROUP_TIMER_IDLE
            } else {
                let until_us = next.saturating_mul(1000).saturating_sub(now_us()).max(0);
                Duration::from_micros(until_us as u64).clamp(GROUP_TIMER_MIN, GROUP_TIMER_IDLE)
            };
            futures_lite::future::or(runtime::sleep(sleep), async {
                let _ = wake.recv().await;
            })
            .await;
        }
    }

    // ---- ConsumerGroupHeartbeat / ConsumerGroupDescribe (KIP-848) ----------------------------

    /// Whether a classic JoinGroup may use `group_id`: not while it is a consumer group with
    /// members; an empty consumer group becomes classic (its offsets stay).
    fn classic_join_allowed(&self, group_id: &str) -> bool {
        let mut consumer = self.consumer.borrow_mut();
        match consumer.get(group_id) {
            Some(cg) if !cg.members.is_empty() => false,
            Some(_) => {
                consumer.remove(group_id);
                true
            }
            None => true,
        }
    }

    async fn consumer_heartbeat(
        &self,
        shard: &Rc<Shard>,
        version: i16,
        client_id: String,
        client_host: String,
        request: Box<ConsumerGroupHeartbeatRequest>,
    ) -> ConsumerGroupHeartbeatResponse {
        let group_id = request.group_id.0.to_string();
        let topics = topic_partitions(shard);
        let owned = request.topic_partitions.map(|tps| {
            let table = shard.topics.borrow();
            let mut owned = Assignment::new();
            for tp in tps {
                if let Some(meta) = table.get_by_id(&tp.topic_id) {
                    owned
                        .entry(meta.name.clone())
                        .or_default()
                        .extend(tp.partitions.iter().copied());
                }
            }
            owned
        });
        let r = HeartbeatIn {
            version,
            member_id: request.member_id.to_string(),
            member_epoch: request.member_epoch,
            instance_id: opt(&request.instance_id),
            rack_id: opt(&request.rack_id),
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            subscribed_topic_names: request
                .subscribed_topic_names
                .map(|names| names.iter().map(|n| n.0.to_string()).collect()),
            subscribed_topic_regex: if version >= 1 {
                opt(&request.subscribed_topic_regex)
            } else {
                None
            },
            server_assignor: opt(&request.server_assignor),
            owned,
            client_id,
            client_host,
        };
        let out = match consumer::validate(&group_id, &r, &self.consumer_settings) {
            Err(out) => out,
            Ok(()) => match self.consumer_heartbeat_apply(&group_id, r, &topics) {
                Err(out) => out,
                Ok((out, persist)) => {
                    self.arm(&group_id);
                    if let Some(epoch) = persist {
                        if let Some(write) = self.persist_consumer(shard, &group_id, epoch) {
                            if let Err(code) = write.done().await {
                                tracing::warn!(group = %group_id, "group epoch write failed: error {code}");
                            }
                        }
                    }
                    out
                }
            },
        };
        let table = shard.topics.borrow();
        let assignment = out.assignment.as_ref().map(|a| {
            HeartbeatAssignment::default().with_topic_partitions(
                a.iter()
                    .filter_map(|(topic, parts)| {
                        table.get(topic).map(|meta| {
                            HeartbeatTopicPartitions::default()
                                .with_topic_id(meta.id)
                                .with_partitions(parts.iter().copied().collect())
                        })
                    })
                    .collect(),
            )
        });
        let response = ConsumerGroupHeartbeatResponse::default()
            .with_error_code(out.error)
            .with_error_message(out.message.as_deref().map(s));
        if out.error != 0 {
            return response;
        }
        response
            .with_member_id(Some(s(&out.member_id)))
            .with_member_epoch(out.member_epoch)
            .with_heartbeat_interval_ms(self.consumer_settings.heartbeat_interval_ms)
            .with_assignment(assignment)
    }

    /// The state change of one heartbeat; `Some(epoch)` when the group epoch must be persisted.
    fn consumer_heartbeat_apply(
        &self,
        group_id: &str,
        r: HeartbeatIn,
        topics: &BTreeMap<String, i32>,
    ) -> Result<(consumer::HeartbeatOut, Option<i32>), consumer::HeartbeatOut> {
        let now = now_ms();
        let mut groups = self.groups.borrow_mut();
        let mut consumers = self.consumer.borrow_mut();
        let mut created = false;
        if !consumers.contains_key(group_id) {
            if let Some(g) = groups.get(group_id) {
                if !g.members.is_empty() || !g.pending.is_empty() || g.state != GroupState::Empty {
                    return Err(consumer::HeartbeatOut::error(
                        ResponseError::GroupIdNotFound,
                        format!("Group {group_id} is not a consumer group."),
                        &r.member_id,
                    ));
                }
            }
            if r.member_epoch != 0 {
                // Kafka says GROUP_ID_NOT_FOUND; UNKNOWN_MEMBER_ID makes every client rejoin.
                return Err(consumer::HeartbeatOut::error(
                    ResponseError::UnknownMemberId,
                    format!("Consumer group {group_id} not found."),
                    &r.member_id,
                ));
            }
            consumers.insert(group_id.to_string(), ConsumerGroup::new(group_id));
            let holder = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            holder.generation = 0;
            holder.protocol_type = None;
            holder.protocol = None;
            holder.leader = None;
            created = true;
        }
        let cg = consumers.get_mut(group_id).expect("present");
        let new_member_id = if r.member_id.is_empty() {
            new_member_id()
        } else {
            String::new()
        };
        let (out, bumped) = cg.heartbeat(r, &self.consumer_settings, topics, &new_member_id, now);
        if bumped && cg.members.is_empty() {
            if let Some(holder) = groups.get_mut(group_id) {
                holder.state_since_ms = now;
            }
        }
        let persist = (bumped || created).then_some(cg.group_epoch);
        Ok((out, persist))
    }

    /// Appends the consumer group's epoch record; the slot says when it is durable.
    fn persist_consumer(&self, shard: &Rc<Shard>, group_id: &str, epoch: i32) -> Option<Write> {
        let key = Key::ConsumerGroup {
            group: group_id.to_string(),
        };
        let value = Value::ConsumerGroup(ConsumerGroupValue { epoch });
        match append(shard, group_id, &[(key, Some(value))], None) {
            Ok(write) => Some(write),
            Err(code) => {
                tracing::warn!(group = group_id, "cannot write group epoch: error {code}");
                None
            }
        }
    }

    fn consumer_describe(&self, shard: &Rc<Shard>, group_id: &str) -> CgDescribedGroup {
        let base = CgDescribedGroup::default().with_group_id(GroupId(s(group_id)));
        let not_found = |message: String| {
            base.clone()
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(s(&message)))
        };
        if group_id.is_empty() {
            return base.with_error_code(ResponseError::InvalidGroupId.code());
        }
        let consumers = self.consumer.borrow();
        let Some(cg) = consumers.get(group_id) else {
            return if self.groups.borrow().contains_key(group_id) {
                not_found(format!("Group {group_id} is not a consumer group."))
            } else {
                not_found(format!("Group {group_id} not found."))
            };
        };
        let table = shard.topics.borrow();
        let to_wire = |a: &Assignment| {
            CgAssignment::default().with_topic_partitions(
                a.iter()
                    .filter_map(|(topic, parts)| {
                        table.get(topic).map(|meta| {
                            CgTopicPartitions::default()
                                .with_topic_id(meta.id)
                                .with_topic_name(TopicName(s(topic)))
                                .with_partitions(parts.iter().copied().collect())
                        })
                    })
                    .collect(),
            )
        };
        let empty = Assignment::new();
        let members = cg
            .members
            .values()
            .map(|m| {
                CgMember::default()
                    .with_member_id(s(&m.id))
                    .with_instance_id(m.instance_id.as_deref().map(s))
                    .with_rack_id(m.rack_id.as_deref().map(s))
                    .with_member_epoch(m.member_epoch)
                    .with_client_id(s(&m.client_id))
                    .with_client_host(s(&m.client_host))
                    .with_subscribed_topic_names(
                        m.subscribed_topic_names
                            .iter()
                            .map(|t| TopicName(s(t)))
                            .collect(),
                    )
                    .with_subscribed_topic_regex(m.subscribed_topic_regex.as_deref().map(s))
                    .with_assignment(to_wire(&m.assigned))
                    .with_target_assignment(to_wire(cg.target.get(&m.id).unwrap_or(&empty)))
                    .with_member_type(1)
            })
            .collect();
        let assignor = if cg.assignor.is_empty() {
            self.consumer_settings
                .assignors
                .first()
                .cloned()
                .unwrap_or_default()
        } else {
            cg.assignor.clone()
        };
        base.with_group_state(s(cg.state()))
            .with_group_epoch(cg.group_epoch)
            .with_assignment_epoch(cg.assignment_epoch)
            .with_assignor_name(s(&assignor))
            .with_members(members)
    }

    /// Session and revocation expiry of consumer-group members (from `tick_loop`).
    fn consumer_tick(&self, shard: &Rc<Shard>, now: i64) {
        let mut expired = Vec::new();
        for (id, cg) in self.consumer.borrow_mut().iter_mut() {
            let removed = cg.tick(now);
            if removed.is_empty() {
                continue;
            }
            tracing::info!(group = %id, members = ?removed, "consumer group members expired");
            expired.push((id.clone(), cg.group_epoch, cg.members.is_empty()));
        }
        for (id, epoch, now_empty) in expired {
            if now_empty {
                if let Some(holder) = self.groups.borrow_mut().get_mut(&id) {
                    holder.state_since_ms = now;
                }
            }
            // Not awaited: the epoch record only has to reach the log before later ones.
            let _ = self.persist_consumer(shard, &id, epoch);
        }
    }

    // ---- offsets ----------------------------------------------------------------------------

    async fn offset_commit(
        &self,
        shard: &Rc<Shard>,
        version: i16,
        request: OffsetCommitRequest,
    ) -> OffsetCommitResponse {
        let group_id = request.group_id.0.to_string();
        let generation = request.generation_id_or_member_epoch;
        let now = now_ms();
        let group_error: Option<i16> = if group_id.is_empty() {
            Some(ResponseError::InvalidGroupId.code())
        } else {
            let mut groups = self.groups.borrow_mut();
            if !groups.contains_key(&group_id) && generation < 0 {
                groups.insert(group_id.clone(), Group::new(&group_id, now));
            }
            let consumer_group = self.consumer.borrow();
            match (groups.get_mut(&group_id), consumer_group.get(&group_id)) {
                (_, Some(cg)) => cg
                    .validate_offset_commit(&request.member_id, generation, version)
                    .err(),
                (None, None) => Some(ResponseError::IllegalGeneration.code()),
                (Some(g), None) => g
                    .validate_offset_commit(
                        &request.member_id,
                        opt(&request.group_instance_id).as_deref(),
                        generation,
                        now,
                    )
                    .err(),
            }
        };
        // Per partition: an error, or the index of its record in the batch.
        let mut codes: Vec<Vec<Result<usize, i16>>> = Vec::new();
        let mut entries: Vec<(Key, Option<Value>)> = Vec::new();
        for t in &request.topics {
            let topic = t.name.0.to_string();
            let partitions = shard.topics.borrow().get(&topic).map(|m| m.partitions);
            let mut row = Vec::new();
            for p in &t.partitions {
                let leader_epoch = if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                };
                let commit = OffsetToCommit {
                    group_id: &group_id,
                    topic: &topic,
                    partition: p.partition_index,
                    partitions,
                    offset: p.committed_offset,
                    leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    now,
                };
                let code = match group_error {
                    Some(code) => Err(code),
                    None => self.offset_record(commit).map(|record| {
                        entries.push(record);
                        entries.len() - 1
                    }),
                };
                row.push(code);
            }
            codes.push(row);
        }
        let write_code = if entries.is_empty() {
            0
        } else {
            self.write_and_apply(shard, &group_id, entries).await
        };
        let topics = request
            .topics
            .iter()
            .zip(codes)
            .map(|(t, row)| {
                let partitions = t
                    .partitions
                    .iter()
                    .zip(row)
                    .map(|(p, code)| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(match code {
                                Ok(_) => write_code,
                                Err(c) => c,
                            })
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// The record committing one partition's offset (OffsetCommit and TxnOffsetCommit), or
    /// Kafka's error for it: UNKNOWN_TOPIC_OR_PARTITION, OFFSET_METADATA_TOO_LARGE.
    fn offset_record(&self, c: OffsetToCommit<'_>) -> Result<(Key, Option<Value>), i16> {
        if !matches!(c.partitions, Some(n) if c.partition >= 0 && c.partition < n) {
            return Err(ResponseError::UnknownTopicOrPartition.code());
        }
        if c.metadata
            .as_ref()
            .is_some_and(|m| m.len() > self.metadata_max_bytes)
        {
            return Err(ResponseError::OffsetMetadataTooLarge.code());
        }
        Ok((
            Key::Offset {
                group: c.group_id.to_string(),
                topic: c.topic.to_string(),
                partition: c.partition,
            },
            Some(Value::Offset(OffsetValue {
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.unwrap_or_default(),
                commit_timestamp_ms: c.now,
            })),
        ))
    }

    /// TxnOffsetCommit: the offsets are written as transactional records of the producer and
    /// kept pending until the transaction's marker reaches this partition (`complete_txn`).
    /// Members are checked as OffsetCommit checks them, except that a request with
    /// generation -1 and no member id (clients before v3) is not checked, as in Kafka.
    async fn txn_offset_commit(
        &self,
        shard: &Rc<Shard>,
        version: i16,
        request: TxnOffsetCommitRequest,
    ) -> TxnOffsetCommitResponse {
        use crate::kafka::handlers::txn_offset_commit::answer;
        let group_id = request.group_id.0.to_string();
        let producer = (request.producer_id.0, request.producer_epoch);
        let (generation, member_id) = if version >= 3 {
            (request.generation_id, request.member_id.to_string())
        } else {
            (-1, String::new())
        };
        let now = now_ms();
        let group_error: Option<i16> = if group_id.is_empty() {
            Some(ResponseError::InvalidGroupId.code())
        } else if self
            .txn_offsets
            .borrow()
            .values()
            .map(Vec::len)
            .sum::<usize>()
            >= TXN_OFFSETS_PENDING_MAX
        {
            Some(ResponseError::CoordinatorNotAvailable.code())
        } else if generation < 0 && member_id.is_empty() {
            self.groups
                .borrow_mut()
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id, now));
            None
        } else {
            let mut groups = self.groups.borrow_mut();
            let consumer_group = self.consumer.borrow();
            match (groups.get_mut(&group_id), consumer_group.get(&group_id)) {
                (_, Some(cg)) => cg.validate_offset_commit(&member_id, generation, 9).err(),
                (None, None) => Some(ResponseError::IllegalGeneration.code()),
                (Some(g), None) => g
                    .validate_offset_commit(
                        &member_id,
                        opt(&request.group_instance_id).as_deref(),
                        generation,
                        now,
                    )
                    .err(),
            }
        };
        let mut codes: Vec<Vec<i16>> = Vec::new();
        let mut entries: Vec<(Key, Option<Value>)> = Vec::new();
        for t in &request.topics {
            let topic = t.name.0.to_string();
            let partitions = shard.topics.borrow().get(&topic).map(|m| m.partitions);
            let mut row = Vec::new();
            for p in &t.partitions {
                let leader_epoch = if version >= 2 {
                    p.committed_leader_epoch
                } else {
                    -1
                };
                let commit = OffsetToCommit {
                    group_id: &group_id,
                    topic: &topic,
                    partition: p.partition_index,
                    partitions,
                    offset: p.committed_offset,
                    leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    now,
                };
                let code = match group_error {
                    Some(code) => code,
                    None => match self.offset_record(commit) {
                        Ok(record) => {
                            entries.push(record);
                            0
                        }
                        Err(code) => code,
                    },
                };
                row.push(code);
            }
            codes.push(row);
        }
        if !entries.is_empty() {
            let written = match append(shard, &group_id, &entries, Some(producer)) {
                Ok(write) => write.done().await,
                Err(code) => Err(code),
            };
            match written {
                Ok(base) => {
                    let index =
                        routing::group_partition(&group_id, super::offsets_partitions(shard));
                    let mut pending = self.txn_offsets.borrow_mut();
                    let list = pending.entry(producer.0).or_default();
                    for (i, (key, value)) in entries.into_iter().enumerate() {
                        list.push((index, base + i as i64, key, value));
                    }
                }
                Err(code) => {
                    // Kafka's answer for a write the producer's epoch no longer owns.
                    let code = if code == ResponseError::InvalidProducerEpoch.code() {
                        ResponseError::ProducerFenced.code()
                    } else {
                        code
                    };
                    for row in &mut codes {
                        for c in row.iter_mut().filter(|c| **c == 0) {
                            *c = code;
                        }
                    }
                }
            }
        }
        answer(&request, &codes)
    }

    /// A transaction marker reached offsets partition `index` (committed there): a COMMIT
    /// makes the producer's pending offsets on it the group's, an ABORT drops them.
    /// The marker path committed a marker at `marker_offset` of offsets partition `index` on
    /// this shard. A partition still loading gets it once loaded: its load may stop below the
    /// marker and add the transaction's offsets as pending afterwards.
    pub fn marker_written(
        &self,
        index: i32,
        replicated: bool,
        marker_offset: i64,
        producer_id: i64,
        commit: bool,
    ) {
        let loaded = if replicated {
            self.led.borrow().contains_key(&index)
        } else {
            self.loaded.get()
        };
        if loaded {
            self.complete_txn(index, producer_id, commit);
            return;
        }
        let mut deferred = self.deferred_markers.borrow_mut();
        if deferred.len() < TXN_OFFSETS_PENDING_MAX {
            deferred.push((index, marker_offset, producer_id, commit));
        }
    }

    /// Applies the markers deferred for partition `index` (all partitions: None) that its load
    /// did not read.
    fn apply_deferred(&self, index: Option<i32>) {
        let mine: Vec<(i32, i64, i64, bool)> = {
            let mut deferred = self.deferred_markers.borrow_mut();
            let (mine, rest) = deferred
                .drain(..)
                .partition(|d| index.is_none_or(|i| d.0 == i));
            *deferred = rest;
            mine
        };
        for (index, offset, producer_id, commit) in mine {
            let end = self.load_end.borrow().get(&index).copied().unwrap_or(0);
            if offset >= end {
                self.complete_txn(index, producer_id, commit);
            }
        }
    }

    pub fn complete_txn(&self, index: i32, producer_id: i64, commit: bool) {
        let settled = {
            let mut pending = self.txn_offsets.borrow_mut();
            let Some(list) = pending.get_mut(&producer_id) else {
                return;
            };
            let (settled, rest): (Vec<_>, Vec<_>) = list.drain(..).partition(|e| e.0 == index);
            *list = rest;
            if list.is_empty() {
                pending.remove(&producer_id);
            }
            settled
        };
        if !commit {
            return;
        }
        let mut groups = self.groups.borrow_mut();
        let mut consumer = self.consumer.borrow_mut();
        for (_, log_offset, key, value) in settled {
            apply_loaded(&mut groups, &mut consumer, log_offset, key, value);
        }
    }

    /// Appends offset records (values or tombstones) of one group, waits until durable, then
    /// applies them. Returns the error code for all of them.
    async fn write_and_apply(
        &self,
        shard: &Rc<Shard>,
        group_id: &str,
        entries: Vec<(Key, Option<Value>)>,
    ) -> i16 {
        let base = match append(shard, group_id, &entries, None) {
            Ok(write) => match write.done().await {
                Ok(base) => base,
                Err(code) => return code,
            },
            Err(code) => return code,
        };
        let mut groups = self.groups.borrow_mut();
        for (i, (key, value)) in entries.into_iter().enumerate() {
            let Key::Offset {
                group,
                topic,
                partition,
            } = key
            else {
                continue;
            };
            let Some(g) = groups.get_mut(&group) else {
                continue;
            };
            let log_offset = base + i as i64;
            let committed = value.and_then(|v| match v {
                Value::Offset(v) => Some(committed(v, log_offset)),
                Value::Group(_) | Value::ConsumerGroup(_) => None,
            });
            g.apply_offset(&topic, partition, committed, log_offset);
        }
        0
    }

    fn offset_fetch(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        member: Option<(Option<String>, i32)>,
        require_stable: bool,
    ) -> FetchedOffsets {
        if let Some((member_id, epoch)) = member {
            if let Some(cg) = self.consumer.borrow().get(group_id) {
                if let Err(code) = cg.validate_offset_fetch(member_id.as_deref(), epoch) {
                    return FetchedOffsets {
                        error_code: code,
                        topics: Vec::new(),
                    };
                }
            }
        }
        let groups = self.groups.borrow();
        let group = groups.get(group_id);
        // Kafka's requireStable: partitions with a transactional commit in flight.
        let pending: ahash::AHashSet<(String, i32)> = if require_stable {
            self.txn_offsets
                .borrow()
                .values()
                .flatten()
                .filter_map(|(_, _, key, _)| match key {
                    Key::Offset {
                        group,
                        topic,
                        partition,
                    } if group == group_id => Some((topic.clone(), *partition)),
                    _ => None,
                })
                .collect()
        } else {
            ahash::AHashSet::new()
        };
        let found = |topic: &str, partition: i32| -> FetchedOffset {
            if pending.contains(&(topic.to_string(), partition)) {
                return FetchedOffset {
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: Some(String::new()),
                    error_code: ResponseError::UnstableOffsetCommit.code(),
                };
            }
            match group.and_then(|g| g.offsets.get(&(topic.to_string(), partition))) {
                Some(c) => FetchedOffset {
                    partition,
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: Some(c.metadata.clone()),
                    error_code: 0,
                },
                None => FetchedOffset {
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: Some(String::new()),
                    error_code: 0,
                },
            }
        };
        let topics = match topics {
            Some(list) => list
                .into_iter()
                .map(|(topic, parts)| {
                    let offsets = parts.iter().map(|&p| found(&topic, p)).collect();
                    (topic, offsets)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<FetchedOffset>> = BTreeMap::new();
                if let Some(g) = group {
                    for (topic, partition) in g.offsets.keys() {
                        by_topic
                            .entry(topic.clone())
                            .or_default()
                            .push(found(topic, *partition));
                    }
                }
                by_topic.into_iter().collect()
            }
        };
        FetchedOffsets {
            error_code: if group_id.is_empty() {
                ResponseError::InvalidGroupId.code()
            } else {
                0
            },
            topics,
        }
    }

    async fn offset_delete(
        &self,
        shard: &Rc<Shard>,
        request: OffsetDeleteRequest,
    ) -> OffsetDeleteResponse {
        let group_id = request.group_id.0.to_string();
        let top = |e: ResponseError| OffsetDeleteResponse::default().with_error_code(e.code());
        let (subscribed, existing) = {
            let groups = self.groups.borrow();
            let Some(g) = groups
                .get(&group_id)
                .filter(|g| g.state != GroupState::Dead)
            else {
                return top(ResponseError::GroupIdNotFound);
            };
            if g.state != GroupState::Empty && g.protocol_type.as_deref() != Some("consumer") {
                return top(ResponseError::NonEmptyGroup);
            }
            let subscribed = if g.state == GroupState::Empty {
                Vec::new()
            } else {
                g.subscribed_topics().unwrap_or_default()
            };
            let subscribed = match self.consumer.borrow().get(&group_id) {
                Some(cg) => cg
                    .subscribed_topics(&topic_partitions(shard))
                    .into_iter()
                    .collect(),
                None => subscribed,
            };
            let existing: Vec<(String, i32)> = g.offsets.keys().cloned().collect();
            (subscribed, existing)
        };
        let mut tombstones = Vec::new();
        let mut rows = Vec::new();
        for t in &request.topics {
            let topic = t.name.0.to_string();
            let is_subscribed = subscribed.contains(&topic);
            let mut row = Vec::new();
            for p in &t.partitions {
                if is_subscribed {
                    row.push(Some(ResponseError::GroupSubscribedToTopic.code()));
                    continue;
                }
                if existing.contains(&(topic.clone(), p.partition_index)) {
                    tombstones.push((
                        Key::Offset {
                            group: group_id.clone(),
                            topic: topic.clone(),
                            partition: p.partition_index,
                        },
                        None,
                    ));
                }
                row.push(None);
            }
            rows.push(row);
        }
        let write_code = if tombstones.is_empty() {
            0
        } else {
            self.write_and_apply(shard, &group_id, tombstones).await
        };
        let topics = request
            .topics
            .iter()
            .zip(rows)
            .map(|(t, row)| {
                let partitions = t
                    .partitions
                    .iter()
                    .zip(row)
                    .map(|(p, code)| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code.unwrap_or(write_code))
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default().with_topics(topics)
    }

    // ---- ListGroups / DescribeGroups / DeleteGroups -----------------------------------------

    fn list(&self, states: &[String], types: &[String]) -> Vec<ListedGroup> {
        let consumer = self.consumer.borrow();
        let mut out: Vec<ListedGroup> = self
            .groups
            .borrow()
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| match consumer.get(&g.id) {
                Some(cg) => (&g.id, "consumer", "consumer", cg.state()),
                None => (
                    &g.id,
                    g.protocol_type.as_deref().unwrap_or(""),
                    "classic",
                    g.state.name(),
                ),
            })
            .filter(|(_, _, kind, _)| types.is_empty() || types.iter().any(|t| t == kind))
            .filter(|(_, _, _, state)| {
                states.is_empty() || states.iter().any(|s| *s == state.to_lowercase())
            })
            .map(|(id, protocol_type, kind, state)| {
                ListedGroup::default()
                    .with_group_id(GroupId(s(id)))
                    .with_protocol_type(s(protocol_type))
                    .with_group_state(s(state))
                    .with_group_type(s(kind))
            })
            .collect();
        out.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
        out
    }

    fn describe(&self, group_id: &str) -> DescribedGroup {
        let groups = self.groups.borrow();
        let base = DescribedGroup::default().with_group_id(GroupId(s(group_id)));
        if group_id.is_empty() {
            return base.with_error_code(ResponseError::InvalidGroupId.code());
        }
        // Kafka answers DescribeGroups v0–5 for a consumer (KIP-848) group as for an unknown one
        // (v6 would say GROUP_ID_NOT_FOUND, "not a classic group").
        let Some(g) = groups
            .get(group_id)
            .filter(|_| !self.consumer.borrow().contains_key(group_id))
        else {
            return base.with_group_state(s("Dead"));
        };
        let stable = g.state == GroupState::Stable;
        let protocol = g.protocol.clone().unwrap_or_default();
        let members = g
            .members
            .iter()
            .map(|m| {
                let member = DescribedGroupMember::default()
                    .with_member_id(s(&m.id))
                    .with_group_instance_id(m.instance_id.as_deref().map(s))
                    .with_client_id(s(&m.client_id))
                    .with_client_host(s(&m.client_host));
                if stable {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    member
                        .with_member_metadata(metadata)
                        .with_member_assignment(m.assignment.clone())
                } else {
                    member
                }
            })
            .collect();
        base.with_group_state(s(g.state.name()))
            .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")))
            .with_protocol_data(s(if stable { &protocol } else { "" }))
            .with_members(members)
    }

    async fn delete(&self, shard: &Rc<Shard>, group_id: &str) -> i16 {
        let entries = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups
                .get_mut(group_id)
                .filter(|g| g.state != GroupState::Dead)
            else {
                return if group_id.is_empty() {
                    ResponseError::InvalidGroupId.code()
                } else {
                    ResponseError::GroupIdNotFound.code()
                };
            };
            if g.state != GroupState::Empty || !g.pending.is_empty() {
                return ResponseError::NonEmptyGroup.code();
            }
            let is_consumer = match self.consumer.borrow().get(group_id) {
                Some(cg) if !cg.members.is_empty() => return ResponseError::NonEmptyGroup.code(),
                Some(_) => true,
                None => false,
            };
            g.state = GroupState::Dead;
            let mut entries = tombstones_for(g, g.offsets.keys().cloned().collect(), true);
            if is_consumer {
                entries.push((
                    Key::ConsumerGroup {
                        group: group_id.to_string(),
                    },
                    None,
                ));
            }
            entries
        };
        let code = write_tombstones(shard, group_id, &entries).await;
        self.groups.borrow_mut().remove(group_id);
        self.consumer.borrow_mut().remove(group_id);
        code
    }

    // ---- start-up and expiry ----------------------------------------------------------------

    /// Loads this shard's `__consumer_offsets` partitions once the node has caught up with the
    /// cluster metadata (so it knows which partitions it holds); group requests are answered
    /// only afterwards. Partitions assigned to it later are new, hence empty.
    pub async fn load(shard: Rc<Shard>) {
        while !shard.view.borrow().ready {
            if shard.shutting_down.get() {
                return;
            }
            runtime::sleep(Duration::from_millis(10)).await;
        }
        let partitions = super::offsets_partitions(&shard);
        let started = std::time::Instant::now();
        let mut records = 0usize;
        for index in 0..partitions {
            if shard.owner(OFFSETS_TOPIC, index) != shard.id {
                continue;
            }
            let Some(p) = shard.partition(OFFSETS_TOPIC, index) else {
                continue;
            };
            // A replicated partition is loaded by its leader when it becomes leader
            // (`follow_leadership`).
            if p.group.borrow().is_some() {
                continue;
            }
            records += shard.groups.read_partition(&p, index).await;
        }
        shard.groups.loaded.set(true);
        shard.groups.apply_deferred(None);
        let _ = shard.groups.wake.try_send(());
        let groups = shard.groups.groups.borrow().len();
        tracing::info!(
            shard = shard.id,
            groups,
            records,
            "loaded {OFFSETS_TOPIC} in {:?}",
            started.elapsed()
        );
    }

    /// Applies partition `index`'s records below its high watermark to the groups; returns
    /// how many it read.
    async fn read_partition(&self, p: &crate::shard::partition::Partition, index: i32) -> usize {
        let mut records = 0;
        let end = p.high_watermark();
        self.load_end.borrow_mut().insert(index, end);
        let mut offset = p.log.log_start_offset();
        while offset < end {
            let read = match p.log.read(offset, LOAD_READ_BYTES, end).await {
                Ok(read) => read,
                Err(e) => crate::fatal::fatal(format!(
                    "cannot load {OFFSETS_TOPIC}-{index} at {offset}: {e}"
                )),
            };
            if read.batches.is_empty() {
                break;
            }
            for batch in &read.batches {
                let header = spool_protocol::batch::BatchHeader::parse(batch).ok();
                if let Some(h) = header.filter(|h| h.has_producer_id()) {
                    // A transaction's offsets wait for its marker, later in the log.
                    if h.is_control() {
                        if let Some(marker) = spool_protocol::control::decode_txn_marker(batch) {
                            self.complete_txn(index, h.producer_id, marker.commit);
                        }
                    } else if let Ok(entries) = records::decode_batch(batch) {
                        records += entries.len();
                        let mut pending = self.txn_offsets.borrow_mut();
                        let list = pending.entry(h.producer_id).or_default();
                        for (log_offset, key, value) in entries {
                            list.push((index, log_offset, key, value));
                        }
                    }
                    offset = records::next_offset(batch).unwrap_or(end).max(offset + 1);
                    continue;
                }
                match records::decode_batch(batch) {
                    Ok(entries) => {
                        records += entries.len();
                        let mut groups = self.groups.borrow_mut();
                        let mut consumer = self.consumer.borrow_mut();
                        for (log_offset, key, value) in entries {
                            apply_loaded(&mut groups, &mut consumer, log_offset, key, value);
                        }
                    }
                    Err(e) => tracing::warn!(partition = index, offset, "{e}"),
                }
                offset = records::next_offset(batch).unwrap_or(end).max(offset + 1);
            }
        }
        records
    }

    /// Whether this shard serves `group_id` now: its offsets partition is unreplicated, or
    /// replicated and led here with its groups loaded for the current term. Else
    /// NOT_COORDINATOR (another broker leads it: the client looks it up again) or
    /// COORDINATOR_LOAD_IN_PROGRESS (just became leader, still loading).
    fn coordinates(&self, shard: &Rc<Shard>, group_id: &str) -> Result<(), i16> {
        let index = routing::group_partition(group_id, super::offsets_partitions(shard));
        let Some(p) = shard.partition(OFFSETS_TOPIC, index) else {
            return Err(ResponseError::NotCoordinator.code());
        };
        let Some(group) = p.group.borrow().clone() else {
            return Ok(());
        };
        match group.leadership() {
            None => Err(ResponseError::NotCoordinator.code()),
            Some(term) if self.led.borrow().get(&index) == Some(&term) => Ok(()),
            Some(_) => Err(ResponseError::CoordinatorLoadInProgress.code()),
        }
    }

    /// Loads replicated partition `index`'s groups once this replica leads it at `term` and
    /// everything in its log is committed (its blank entry commits its predecessors' entries),
    /// so the groups are exactly what the partition holds. False if leadership moved first.
    async fn load_led(
        &self,
        shard: &Rc<Shard>,
        index: i32,
        group: &ReplicaGroup,
        term: u64,
    ) -> bool {
        let Some(p) = shard.partition(OFFSETS_TOPIC, index) else {
            return false;
        };
        let started = std::time::Instant::now();
        let end = p.log.log_end_offset();
        if !crate::replication::leadership::wait_committed_as_leader(shard, group, term, end).await
        {
            return false;
        }
        let records = self.read_partition(&p, index).await;
        if group.leadership() != Some(term) {
            self.unload(shard, index);
            return false;
        }
        self.led.borrow_mut().insert(index, term);
        self.apply_deferred(Some(index));
        // Loaded members' sessions run from now: the timer must learn their deadlines.
        let _ = self.wake.try_send(());
        tracing::info!(
            partition = index,
            term,
            records,
            "coordinator for {OFFSETS_TOPIC}-{index}: groups loaded in {:?}",
            started.elapsed()
        );
        true
    }

    /// Forgets the groups of partition `index` (this replica no longer leads it); their
    /// waiting JoinGroup and SyncGroup requests get NOT_COORDINATOR.
    fn unload(&self, shard: &Rc<Shard>, index: i32) {
        self.led.borrow_mut().remove(&index);
        self.txn_offsets.borrow_mut().retain(|_, list| {
            list.retain(|e| e.0 != index);
            !list.is_empty()
        });
        self.deferred_markers.borrow_mut().retain(|d| d.0 != index);
        let partitions = super::offsets_partitions(shard);
        let ours = |g: &str| routing::group_partition(g, partitions) == index;
        let gone: Vec<String> = self
            .groups
            .borrow()
            .keys()
            .chain(self.consumer.borrow().keys())
            .filter(|g| ours(g))
            .cloned()
            .collect();
        for g in &gone {
            self.groups.borrow_mut().remove(g);
            self.consumer.borrow_mut().remove(g);
        }
        let code = ResponseError::NotCoordinator;
        let joins: Vec<(WaitKey, LocalSender<JoinResult>)> = {
            let mut waiters = self.join_waiters.borrow_mut();
            let keys: Vec<WaitKey> = waiters.keys().filter(|(g, _)| ours(g)).cloned().collect();
            keys.into_iter()
                .filter_map(|k| waiters.remove(&k).map(|tx| (k, tx)))
                .collect()
        };
        for ((_, member), tx) in joins {
            let _ = tx.try_send(JoinResult::error(code, &member));
        }
        let syncs: Vec<LocalSender<SyncResult>> = {
            let mut waiters = self.sync_waiters.borrow_mut();
            let keys: Vec<WaitKey> = waiters.keys().filter(|(g, _)| ours(g)).cloned().collect();
            keys.into_iter()
                .filter_map(|k| waiters.remove(&k))
                .collect()
        };
        for tx in syncs {
            let _ = tx.try_send(SyncResult::error(code));
        }
        if !gone.is_empty() {
            tracing::info!(
                partition = index,
                groups = gone.len(),
                "groups unloaded: no longer leader of {OFFSETS_TOPIC}-{index}"
            );
        }
    }

    /// Every `offsets.retention.check.interval.ms`: offsets of groups Empty for longer than
    /// `offsets.retention.minutes` (for groups without a generation: each offset older than
    /// that) are tombstoned; a group left with nothing is deleted.
    pub async fn expire_loop(shard: Rc<Shard>) {
        loop {
            runtime::sleep(Duration::from_millis(
                shard.config.offsets_retention_check_interval_ms.max(100),
            ))
            .await;
            if shard.shutting_down.get() {
                return;
            }
            if !shard.groups.loaded.get() {
                continue;
            }
            let work = shard.groups.expired(now_ms());
            for (group_id, entries, drop_group) in work {
                let code = write_tombstones(&shard, &group_id, &entries).await;
                if code != 0 {
                    continue;
                }
                let mut groups = shard.groups.groups.borrow_mut();
                if let Some(g) = groups.get_mut(&group_id) {
                    for (key, _) in &entries {
                        if let Key::Offset {
                            topic, partition, ..
                        } = key
                        {
                            g.offsets.remove(&(topic.clone(), *partition));
                        }
                    }
                    if drop_group && g.state == GroupState::Empty && g.offsets.is_empty() {
                        groups.remove(&group_id);
                        shard.groups.consumer.borrow_mut().remove(&group_id);
                    }
                }
                tracing::info!(group = %group_id, records = entries.len(), "expired offsets");
            }
        }
    }

    /// (group, tombstones, whether the group goes too) for every group with expired offsets.
    fn expired(&self, now: i64) -> Vec<(String, Entries, bool)> {
        let groups = self.groups.borrow();
        let mut out = Vec::new();
        let consumer = self.consumer.borrow();
        for g in groups.values() {
            if g.state != GroupState::Empty || !g.pending.is_empty() {
                continue;
            }
            if consumer.get(&g.id).is_some_and(|cg| !cg.members.is_empty()) {
                continue;
            }
            let has_generation = g.generation > 0 || g.protocol_type.is_some();
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, c)| {
                    let base = if has_generation {
                        g.state_since_ms
                    } else {
                        c.commit_timestamp_ms
                    };
                    base.saturating_add(self.retention_ms) <= now
                })
                .map(|(k, _)| k.clone())
                .take(EXPIRE_BATCH_RECORDS_MAX)
                .collect();
            let drop_group = expired.len() == g.offsets.len()
                && g.state_since_ms.saturating_add(self.retention_ms) <= now;
            if expired.is_empty() && !drop_group {
                continue;
            }
            let mut entries = tombstones_for(g, expired, drop_group);
            if drop_group && consumer.contains_key(&g.id) {
                entries.push((
                    Key::ConsumerGroup {
                        group: g.id.clone(),
                    },
                    None,
                ));
            }
            out.push((g.id.clone(), entries, drop_group));
        }
        out
    }
}

/// Pending transactional offset commits one shard keeps at most; past it TxnOffsetCommit
/// answers COORDINATOR_NOT_AVAILABLE until transactions end.
pub const TXN_OFFSETS_PENDING_MAX: usize = 1_000_000;

/// Follows this replica's leadership of replicated offsets partition `index`: becoming leader
/// loads the partition's groups from its committed log (requests get
/// COORDINATOR_LOAD_IN_PROGRESS meanwhile); losing it unloads them (NOT_COORDINATOR). Ends
/// when the group stops.
pub async fn follow_leadership(shard: Rc<Shard>, index: i32, group: Rc<ReplicaGroup>) {
    crate::replication::leadership::follow_leadership(
        &group,
        &shard.shutting_down,
        |term| shard.groups.load_led(&shard, index, &group, term),
        || shard.groups.unload(&shard, index),
    )
    .await;
}

/// Wall-clock microseconds (the deadlines are `now_ms` milliseconds).
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The group a request names (ListGroups names none).
fn group_of(call: &GroupCall) -> Option<String> {
    Some(match call {
        GroupCall::Join { request, .. } => request.group_id.0.to_string(),
        GroupCall::Sync { request, .. } => request.group_id.0.to_string(),
        GroupCall::Heartbeat { request } => request.group_id.0.to_string(),
        GroupCall::Leave { request, .. } => request.group_id.0.to_string(),
        GroupCall::OffsetCommit { request, .. } => request.group_id.0.to_string(),
        GroupCall::TxnOffsetCommit { request, .. } => request.group_id.0.to_string(),
        GroupCall::OffsetDelete { request } => request.group_id.0.to_string(),
        GroupCall::ConsumerHeartbeat { request, .. } => request.group_id.0.to_string(),
        GroupCall::OffsetFetch { group, .. }
        | GroupCall::Describe { group }
        | GroupCall::Delete { group }
        | GroupCall::ConsumerDescribe { group } => group.clone(),
        GroupCall::List { .. } => return None,
    })
}

/// Partition count of every topic in the shard's topic table.
fn topic_partitions(shard: &Shard) -> BTreeMap<String, i32> {
    shard
        .topics
        .borrow()
        .all()
        .iter()
        .map(|m| (m.name.clone(), m.partitions))
        .collect()
}

/// A server-generated member id (ConsumerGroupHeartbeat v0), as Kafka's `Uuid.toString()`:
/// 22 characters of URL-safe base64.
fn new_member_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits = u128::from_be_bytes(bytes);
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(bits >> 122) as usize & 63] as char);
        bits <<= 6;
    }
    out
}

fn committed(v: OffsetValue, log_offset: i64) -> Committed {
    Committed {
        offset: v.offset,
        leader_epoch: v.leader_epoch,
        metadata: v.metadata,
        commit_timestamp_ms: v.commit_timestamp_ms,
        log_offset,
    }
}

/// Applies one record read at start-up.
fn apply_loaded(
    groups: &mut AHashMap<String, Group>,
    consumer: &mut AHashMap<String, ConsumerGroup>,
    log_offset: i64,
    key: Key,
    value: Option<Value>,
) {
    match (key, value) {
        (
            Key::Offset {
                group,
                topic,
                partition,
            },
            value,
        ) => {
            let offset = match value {
                Some(Value::Offset(v)) => Some(committed(v, log_offset)),
                Some(Value::Group(_) | Value::ConsumerGroup(_)) => return,
                None => None,
            };
            if offset.is_none() && !groups.contains_key(&group) {
                return;
            }
            let g = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now_ms()));
            g.apply_offset(&topic, partition, offset, log_offset);
        }
        (Key::Group { group }, Some(Value::Group(v))) => {
            let g = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now_ms()));
            g.restore(v, now_ms());
            // The later record's type wins: the group became classic.
            consumer.remove(&group);
        }
        (Key::Group { group }, None) => {
            groups.remove(&group);
            consumer.remove(&group);
        }
        (Key::ConsumerGroup { group }, Some(Value::ConsumerGroup(v))) => {
            let g = groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, now_ms()));
            g.generation = 0;
            g.protocol_type = None;
            let cg = consumer
                .entry(group.clone())
                .or_insert_with(|| ConsumerGroup::new(&group));
            cg.group_epoch = v.epoch;
            cg.assignment_epoch = v.epoch;
        }
        (Key::ConsumerGroup { group }, None) => {
            consumer.remove(&group);
        }
        (Key::Group { .. } | Key::ConsumerGroup { .. }, Some(_)) => {}
    }
}

fn tombstones_for(
    g: &Group,
    offsets: Vec<(String, i32)>,
    with_group: bool,
) -> Vec<(Key, Option<Value>)> {
    let mut entries: Vec<(Key, Option<Value>)> = offsets
        .into_iter()
        .map(|(topic, partition)| {
            (
                Key::Offset {
                    group: g.id.clone(),
                    topic,
                    partition,
                },
                None,
            )
        })
        .collect();
    if with_group {
        entries.push((
            Key::Group {
                group: g.id.clone(),
            },
            None,
        ));
    }
    entries
}

async fn write_tombstones(
    shard: &Rc<Shard>,
    group_id: &str,
    entries: &[(Key, Option<Value>)],
) -> i16 {
    if entries.is_empty() {
        return 0;
    }
    match append(shard, group_id, entries, None) {
        Ok(write) => write.done().await.err().unwrap_or(0),
        Err(code) => code,
    }
}

/// A write to a group's offsets partition on its way.
enum Write {
    /// Appended directly at `base`; `durable` says when it is on disk (none: interval mode).
    Local {
        base: i64,
        durable: Option<LocalReceiver<i16>>,
    },
    /// Proposed through the partition's Raft group; answered once committed.
    Proposed(LocalReceiver<ProduceResult>),
}

impl Write {
    /// The first record's offset once the write is durable (committed, when replicated).
    async fn done(self) -> Result<i64, i16> {
        match self {
            Write::Local {
                base,
                durable: None,
            } => Ok(base),
            Write::Local {
                base,
                durable: Some(rx),
            } => match rx.recv().await {
                Some(0) => Ok(base),
                Some(code) => Err(code),
                None => Err(ResponseError::KafkaStorageError.code()),
            },
            Write::Proposed(rx) => match rx.recv().await {
                Some(r) if r.error_code == 0 => Ok(r.base_offset),
                Some(r) => Err(coordinator_write_error(r.error_code)),
                // The proposal queue was full (the reply was dropped): retriable.
                None => Err(ResponseError::CoordinatorNotAvailable.code()),
            },
        }
    }
}

/// The error a client gets for a group write the partition refused, as Kafka's group
/// coordinator normalizes append errors: leadership gone → NOT_COORDINATOR (look it up
/// again); not enough replicas or no commit in time → COORDINATOR_NOT_AVAILABLE.
pub(crate) fn coordinator_write_error(code: i16) -> i16 {
    use ResponseError as E;
    match ResponseError::try_from_code(code) {
        Some(E::NotLeaderOrFollower | E::KafkaStorageError | E::FencedLeaderEpoch) => {
            E::NotCoordinator.code()
        }
        Some(
            E::NotEnoughReplicas
            | E::NotEnoughReplicasAfterAppend
            | E::RequestTimedOut
            | E::UnknownTopicOrPartition,
        ) => E::CoordinatorNotAvailable.code(),
        Some(E::MessageTooLarge | E::RecordListTooLarge | E::InvalidFetchSize) => {
            E::UnknownServerError.code()
        }
        _ => code,
    }
}

/// Writes records to the group's offsets partition: appended and queued for the shard's group
/// commit, or, when the partition is replicated, proposed through its Raft group.
fn append(
    shard: &Rc<Shard>,
    group_id: &str,
    entries: &[(Key, Option<Value>)],
    producer: Option<(i64, i16)>,
) -> Result<Write, i16> {
    let index = crate::shard::routing::group_partition(group_id, super::offsets_partitions(shard));
    let Some(p) = shard.partition(OFFSETS_TOPIC, index) else {
        return Err(ResponseError::NotCoordinator.code());
    };
    let now = now_ms();
    let batch = match producer {
        Some(producer) => records::encode_txn_batch(entries, now, producer),
        None => records::encode_batch(entries, now),
    };
    if let Some(group) = p.group.borrow().as_ref() {
        // The local append checks this itself; a proposal must be refused before it is in
        // the Raft log (a big group's members and assignments can outgrow a message).
        if batch.len() > shard.config.message_max_bytes as usize {
            return Err(ResponseError::MessageTooLarge.code());
        }
        // Committed by a majority, as Kafka's coordinator writes with acks=all; no
        // `min.insync.replicas` above that (the topic's default of 1).
        let lag_max = std::time::Duration::from_millis(shard.config.replica_lag_time_max_ms);
        return Ok(Write::Proposed(group.propose(batch, -1, 1, lag_max)));
    }
    match p.log.append(batch, 0, now) {
        Ok(info) => {
            let durable = (shard.config.flush_mode == FlushMode::Sync)
                .then(|| p.wait_durable(info.last_offset));
            shard.mark_dirty(&p);
            Ok(Write::Local {
                base: info.base_offset,
                durable,
            })
        }
        Err(e) => Err(storage_error_code(&e)),
    }
}

fn join_response(version: i16, r: JoinResult) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(s(&id))
                .with_group_instance_id(if version >= 5 {
                    instance.map(|i| s(&i))
                } else {
                    None
                })
                .with_metadata(metadata)
        })
        .collect();
    let protocol_name = match r.protocol_name {
        Some(n) => Some(s(&n)),
        None if version < 7 => Some(s("")),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_protocol_type(if version >= 7 {
            r.protocol_type.map(|t| s(&t))
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(s(&r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(s(&r.member_id))
        .with_members(members)
}

/// The answer to `call` when the coordinator cannot serve it (loading, shutting down).
pub fn error_reply(call: GroupCall, code: i16) -> GroupReply {
    match call {
        GroupCall::Join {
            version, request, ..
        } => GroupReply::Join(join_response(
            version,
            JoinResult {
                error: code,
                generation: -1,
                member_id: request.member_id.to_string(),
                ..JoinResult::default()
            },
        )),
        GroupCall::Sync { .. } => {
            GroupReply::Sync(SyncGroupResponse::default().with_error_code(code))
        }
        GroupCall::Heartbeat { .. } => {
            GroupReply::Heartbeat(HeartbeatResponse::default().with_error_code(code))
        }
        GroupCall::Leave { .. } => {
            GroupReply::Leave(LeaveGroupResponse::default().with_error_code(code))
        }
        GroupCall::OffsetCommit { request, .. } => {
            let topics = request
                .topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            GroupReply::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
        }
        GroupCall::TxnOffsetCommit { request, .. } => GroupReply::TxnOffsetCommit(
            crate::kafka::handlers::txn_offset_commit::failed(&request, code),
        ),
        GroupCall::OffsetFetch { .. } => GroupReply::OffsetFetch(FetchedOffsets {
            error_code: code,
            topics: Vec::new(),
        }),
        GroupCall::OffsetDelete { .. } => {
            GroupReply::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code))
        }
        GroupCall::List { .. } => GroupReply::List(Vec::new()),
        GroupCall::Describe { group } => GroupReply::Describe(
            DescribedGroup::default()
                .with_group_id(GroupId(s(&group)))
                .with_error_code(code),
        ),
        GroupCall::Delete { .. } => GroupReply::Delete(code),
        GroupCall::ConsumerHeartbeat { .. } => GroupReply::ConsumerHeartbeat(
            kafka_protocol::messages::ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_member_epoch(-1),
        ),
        GroupCall::ConsumerDescribe { group } => GroupReply::ConsumerDescribe(
            kafka_protocol::messages::consumer_group_describe_response::DescribedGroup::default()
                .with_group_id(GroupId(s(&group)))
                .with_error_code(code),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::records::GroupValue;
    use super::*;
    use bytes::Bytes;

    fn offset(group: &str, topic: &str, partition: i32) -> Key {
        Key::Offset {
            group: group.into(),
            topic: topic.into(),
            partition,
        }
    }

    fn value(offset: i64) -> Option<Value> {
        Some(Value::Offset(OffsetValue {
            offset,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        }))
    }

    /// What a restart sees: the stored batches, replayed in log order.
    fn replay(batches: &[Vec<(Key, Option<Value>)>]) -> AHashMap<String, Group> {
        replay_all(batches).0
    }

    fn replay_all(
        batches: &[Vec<(Key, Option<Value>)>],
    ) -> (AHashMap<String, Group>, AHashMap<String, ConsumerGroup>) {
        let mut groups = AHashMap::new();
        let mut consumer = AHashMap::new();
        let mut base = 0i64;
        for entries in batches {
            let mut batch = records::encode_batch(entries, 1).to_vec();
            batch[0..8].copy_from_slice(&base.to_be_bytes());
            let batch = bytes::Bytes::from(batch);
            for (log_offset, key, value) in records::decode_batch(&batch).expect("decodes") {
                apply_loaded(&mut groups, &mut consumer, log_offset, key, value);
            }
            base = records::next_offset(&batch).expect("header");
        }
        (groups, consumer)
    }

    #[test]
    fn offsets_of_groups_empty_past_retention_expire() {
        let layer = [("offsets.retention.minutes".to_string(), "1".to_string())]
            .into_iter()
            .collect();
        let config = BrokerConfig::resolve(&[layer]).expect("config resolves");
        let coordinator = GroupCoordinator::new(&config);
        let group_meta = Some(Value::Group(GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: None,
            state_timestamp_ms: 10_000,
            members: vec![],
        }));
        let (groups, consumer) = replay_all(&[
            vec![
                (Key::Group { group: "g".into() }, group_meta),
                (offset("g", "t", 0), value(5)),
            ],
            // A simple (group-less) commit at time 1: each offset expires on its own.
            vec![(offset("simple", "t", 0), value(7))],
        ]);
        *coordinator.groups.borrow_mut() = groups;
        *coordinator.consumer.borrow_mut() = consumer;
        let names = |work: Vec<(String, Entries, bool)>| {
            let mut v: Vec<(String, usize, bool)> =
                work.into_iter().map(|(g, e, d)| (g, e.len(), d)).collect();
            v.sort();
            v
        };
        // Nothing is older than a minute yet.
        assert_eq!(names(coordinator.expired(59_000)), vec![]);
        // The simple commit is (its offset is tombstoned); the group has been Empty only
        // since 10 s.
        assert_eq!(
            names(coordinator.expired(60_001)),
            vec![("simple".into(), 1, false)]
        );
        // A minute after the group became Empty: its offset and the group itself go.
        assert_eq!(
            names(coordinator.expired(70_000)),
            vec![("g".into(), 2, true), ("simple".into(), 1, false)]
        );
    }

    #[test]
    fn load_restores_consumer_groups_at_their_epoch() {
        let epoch = |e| Some(Value::ConsumerGroup(ConsumerGroupValue { epoch: e }));
        let cg = |g: &str| Key::ConsumerGroup { group: g.into() };
        let (groups, consumer) = replay_all(&[
            vec![(cg("c"), epoch(3)), (offset("c", "t", 0), value(5))],
            vec![(cg("c"), epoch(9))],
            vec![(cg("gone"), epoch(1)), (cg("gone"), None)],
        ]);
        let c = &consumer["c"];
        assert_eq!((c.group_epoch, c.assignment_epoch), (9, 9));
        assert!(c.members.is_empty());
        assert_eq!(c.state(), "Empty");
        assert_eq!(groups["c"].offsets[&("t".to_string(), 0)].offset, 5);
        assert!(!consumer.contains_key("gone"));
    }

    #[test]
    fn load_restores_a_classic_group_with_its_members() {
        let member = |id: &str| records::MemberValue {
            id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            subscription: Bytes::from_static(b"sub"),
            assignment: Bytes::from(format!("for {id}")),
        };
        let stable = Some(Value::Group(GroupValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m2".into()),
            state_timestamp_ms: 5,
            members: vec![member("m1"), member("m2")],
        }));
        let before = now_ms();
        let groups = replay(&[vec![(Key::Group { group: "g".into() }, stable)]]);
        let g = &groups["g"];
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.generation, 4);
        assert_eq!(g.protocol.as_deref(), Some("range"));
        assert_eq!(g.leader.as_deref(), Some("m2"));
        let ids: Vec<&str> = g.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"]);
        let m1 = g.member("m1").expect("restored");
        assert_eq!(&m1.assignment[..], b"for m1");
        assert_eq!(
            m1.protocols,
            vec![("range".into(), Bytes::from_static(b"sub"))]
        );
        // A fresh session from the load, so a member that died with the old coordinator
        // still expires, and one that lives keeps heartbeating.
        assert!(m1.heartbeat_deadline_ms >= before + 10_000);
        assert_eq!(g.next_deadline(), Some(m1.heartbeat_deadline_ms));

        // A later record of the same group with no members leaves it Empty.
        let empty = Some(Value::Group(GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: None,
            leader: None,
            state_timestamp_ms: 6,
            members: vec![],
        }));
        let groups = replay(&[
            vec![(Key::Group { group: "g".into() }, groups_value(&groups["g"]))],
            vec![(Key::Group { group: "g".into() }, empty)],
        ]);
        assert_eq!(groups["g"].state, GroupState::Empty);
        assert!(groups["g"].members.is_empty() && groups["g"].leader.is_none());
        assert_eq!(groups["g"].generation, 5);
    }

    fn groups_value(g: &Group) -> Option<Value> {
        Some(Value::Group(g.to_value()))
    }

    #[test]
    fn load_keeps_the_latest_record_per_key() {
        let group_meta = Some(Value::Group(GroupValue {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 5,
            members: vec![],
        }));
        let groups = replay(&[
            vec![
                (offset("g", "t", 0), value(1)),
                (offset("g", "t", 1), value(2)),
            ],
            vec![(Key::Group { group: "g".into() }, group_meta)],
            vec![(offset("g", "t", 0), value(10))],
            vec![(offset("g", "t", 1), None)],
            vec![(offset("h", "t", 0), value(3))],
            vec![
                (offset("h", "t", 0), None),
                (Key::Group { group: "h".into() }, None),
            ],
            vec![(offset("gone", "t", 0), None)],
        ]);
        assert_eq!(
            groups.len(),
            1,
            "h deleted, tombstone-only groups not created"
        );
        let g = &groups["g"];
        assert_eq!(g.state, GroupState::Empty);
        assert!(g.members.is_empty());
        assert_eq!(g.generation, 7);
        assert_eq!(g.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(g.state_since_ms, 5);
        assert_eq!(g.offsets.len(), 1);
        let c = &g.offsets[&("t".to_string(), 0)];
        assert_eq!((c.offset, c.log_offset), (10, 3));
    }
}
