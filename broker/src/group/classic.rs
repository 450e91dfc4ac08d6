//! The classic group protocol's state machine: Kafka's `ClassicGroup` and the join / sync /
//! heartbeat / leave rules of its group coordinator, as pure functions of the group, the request
//! and `now_ms`. Nothing here awaits or does I/O: delayed answers (a JoinGroup that waits for the
//! rebalance, a follower's SyncGroup that waits for the leader) come out as [`Event`]s that the
//! coordinator (`group/mod.rs`) hands to the waiting requests; timers are deadlines checked by
//! [`Group::tick`]. So the whole state machine is unit-tested with a fake clock.
//!
//! States and transitions (as Kafka):
//! ```text
//! Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!   ▲                    ▲   │ (no members left)                       │ leader syncs
//!   └────────────────────┼───┘                                         ▼
//!                        └──────── join / leave / expiry ─────────── Stable
//! Dead: deleted (DeleteGroups, or expired with no offsets left).
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::records::{GroupValue, MemberValue};

/// Kafka's `group.new.member.join.timeout`: a new member awaiting its first join may expire.
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 300_000;

/// When a session heard from at `now_ms` expires. The clock is read in whole milliseconds, so
/// `now_ms` may be up to 1 ms before the heartbeat really arrived; the extra millisecond keeps a
/// member from ever expiring before `session_timeout_ms` has passed since its heartbeat (CI saw
/// one expire 0.13 ms early), at the cost of at most 1 ms late.
pub fn session_deadline(now_ms: i64, session_timeout_ms: i32) -> i64 {
    now_ms + i64::from(session_timeout_ms) + 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// The group settings of the broker config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
    pub initial_rebalance_delay_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub awaiting_join: bool,
    pub awaiting_sync: bool,
    /// Joined but not yet through a completed join: may expire while awaiting join.
    pub is_new: bool,
    pub heartbeat_deadline_ms: i64,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn heartbeat_satisfied(&self, now_ms: i64) -> bool {
        if self.is_new {
            self.heartbeat_deadline_ms > now_ms
        } else if self.awaiting_join || self.awaiting_sync {
            true
        } else {
            self.heartbeat_deadline_ms > now_ms
        }
    }
}

/// A JoinGroup answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: (member id, instance id, metadata) of every member.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(e: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: e.code(),
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinResult::default()
        }
    }
}

/// A SyncGroup answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(e: ResponseError) -> SyncResult {
        SyncResult {
            error: e.code(),
            ..SyncResult::default()
        }
    }
}

/// What a state change asks the coordinator to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Answer the JoinGroup that member is waiting on.
    Join(String, JoinResult),
    /// Answer the SyncGroup that member is waiting on.
    Sync(String, SyncResult),
    /// Write the group's metadata record (generation, protocol, leader, state time).
    Persist,
}

/// A JoinGroup as the state machine sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+ (KIP-394): a first join gets MEMBER_ID_REQUIRED and an id.
    pub require_known_member_id: bool,
    /// v9+: the leader of a static rejoin may skip the assignment.
    pub supports_skip_assignment: bool,
    /// The id to give if this is a new member (generated by the caller, so tests are exact).
    pub new_member_id: String,
}

/// How a JoinGroup is answered: now, or by a later [`Event::Join`] for this member id.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    Now(JoinResult),
    Wait(String),
}

/// How a SyncGroup is answered: now, or by a later [`Event::Sync`].
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    Now(SyncResult),
    Wait,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Where its record sits in the offsets partition: a newer record replaces an older one.
    pub log_offset: i64,
}

/// One classic group.
///
/// Owned by: the shard owning the group's `__consumer_offsets` partition.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub state_since_ms: i64,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order (the first is the leader when one must be chosen).
    pub members: Vec<Member>,
    /// KIP-394 member ids handed out, not yet joined: id → expiry.
    pub pending: BTreeMap<String, i64>,
    pub offsets: BTreeMap<(String, i32), Committed>,
    join_deadline_ms: i64,
    /// The initial rebalance delay is running (no early completion).
    delaying: bool,
    delay_remaining_ms: i64,
    new_member_added: bool,
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: BTreeMap::new(),
            offsets: BTreeMap::new(),
            join_deadline_ms: 0,
            delaying: false,
            delay_remaining_ms: 0,
            new_member_added: false,
        }
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn static_member(&self, instance_id: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// Kafka's `supportsProtocols`.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.candidates().iter().any(|c| c == name))
    }

    /// Protocols every member supports, in the first member's order.
    fn candidates(&self) -> Vec<String> {
        let Some(first) = self.members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .collect()
    }

    /// Kafka's `selectProtocol`: among the protocols all members support, each member votes for
    /// the first it lists; the most votes win (ties: the earlier candidate).
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes = vec![0usize; candidates.len()];
        for m in &self.members {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(p, _)| candidates.iter().position(|c| c == p))
            {
                votes[i] += 1;
            }
        }
        let best = votes.iter().copied().max()?;
        let i = votes.iter().position(|&v| v == best)?;
        candidates.get(i).cloned()
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.iter().all(|m| m.awaiting_join)
    }

    fn accepts_joining(&self, member_id: &str, limits: &Limits) -> bool {
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.member(member_id).is_some_and(|m| m.awaiting_join)
                    || self.members.iter().filter(|m| m.awaiting_join).count() + self.pending.len()
                        < limits.max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.member(member_id).is_some() || self.members.len() < limits.max_size
            }
        }
    }

    // ---- JoinGroup --------------------------------------------------------------------------

    pub fn join(
        &mut self,
        req: JoinRequest,
        limits: &Limits,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> JoinOutcome {
        let fail = |e: ResponseError| JoinOutcome::Now(JoinResult::error(e, &req.member_id));
        if req.session_timeout_ms < limits.min_session_timeout_ms
            || req.session_timeout_ms > limits.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let joining = if req.member_id.is_empty() {
            req.new_member_id.as_str()
        } else {
            req.member_id.as_str()
        };
        if !self.pending.contains_key(joining) && !self.accepts_joining(joining, limits) {
            return fail(ResponseError::GroupMaxSizeReached);
        }
        if req.member_id.is_empty() {
            self.join_new_member(req, limits, now_ms, events)
        } else {
            self.join_current_member(req, limits, now_ms, events)
        }
    }

    fn join_new_member(
        &mut self,
        req: JoinRequest,
        limits: &Limits,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> JoinOutcome {
        if let Some(instance) = req.instance_id.clone() {
            if let Some(old) = self.static_member(&instance).map(|m| m.id.clone()) {
                return self.replace_static_member(&old, req, limits, now_ms, events);
            }
            return self.add_member_and_rebalance(req, limits, now_ms, events);
        }
        if req.require_known_member_id {
            self.pending.insert(
                req.new_member_id.clone(),
                now_ms + i64::from(req.session_timeout_ms),
            );
            return JoinOutcome::Now(JoinResult::error(
                ResponseError::MemberIdRequired,
                &req.new_member_id,
            ));
        }
        self.add_member_and_rebalance(req, limits, now_ms, events)
    }

    fn join_current_member(
        &mut self,
        mut req: JoinRequest,
        limits: &Limits,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> JoinOutcome {
        let fail = |e: ResponseError, id: &str| JoinOutcome::Now(JoinResult::error(e, id));
        if self.pending.remove(&req.member_id).is_some() {
            req.new_member_id = req.member_id.clone();
            return self.add_member_and_rebalance(req, limits, now_ms, events);
        }
        if let Some(instance) = &req.instance_id {
            match self.static_member(instance) {
                Some(m) if m.id != req.member_id => {
                    return fail(ResponseError::FencedInstanceId, &req.member_id)
                }
                None => return fail(ResponseError::UnknownMemberId, &req.member_id),
                Some(_) => {}
            }
        }
        let Some(member) = self.member(&req.member_id) else {
            return fail(ResponseError::UnknownMemberId, &req.member_id);
        };
        let same_protocols = member.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(req, limits, now_ms, events)
            }
            GroupState::CompletingRebalance if same_protocols => {
                JoinOutcome::Now(self.join_result(&req.member_id, is_leader, false))
            }
            GroupState::Stable if same_protocols && !is_leader => {
                JoinOutcome::Now(self.join_result(&req.member_id, false, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(req, limits, now_ms, events)
            }
            GroupState::Empty | GroupState::Dead => {
                fail(ResponseError::UnknownMemberId, &req.member_id)
            }
        }
    }

    /// A static member rejoining with a new member id takes over its old identity; the old id is
    /// fenced. In a Stable group whose protocol still fits it gets its old assignment without a
    /// rebalance.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        req: JoinRequest,
        limits: &Limits,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> JoinOutcome {
        let new_id = req.new_member_id.clone();
        let fenced = ResponseError::FencedInstanceId;
        let current_protocol = self.protocol.clone();
        let Some(member) = self.member_mut(old_id) else {
            unreachable!("static member {old_id} exists");
        };
        if member.awaiting_join {
            events.push(Event::Join(
                old_id.to_string(),
                JoinResult::error(fenced, old_id),
            ));
        }
        if member.awaiting_sync {
            events.push(Event::Sync(old_id.to_string(), SyncResult::error(fenced)));
            member.awaiting_sync = false;
        }
        member.protocols = req.protocols.clone();
        member.id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.heartbeat_deadline_ms = session_deadline(now_ms, req.session_timeout_ms);
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        let protocol_unchanged = self.state == GroupState::Stable
            && self.select_protocol() == current_protocol
            && current_protocol
                .as_ref()
                .is_some_and(|p| req.protocols.iter().any(|(n, _)| n == p));
        if protocol_unchanged {
            let is_leader = self.leader.as_deref() == Some(new_id.as_str());
            let skip = is_leader && req.supports_skip_assignment;
            return JoinOutcome::Now(self.join_result(&new_id, is_leader, skip));
        }
        let mut req = req;
        req.member_id = new_id;
        self.update_member_and_rebalance(req, limits, now_ms, events)
    }

    fn add_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        limits: &Limits,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> JoinOutcome {
        let id = req.new_member_id.clone();
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.push(Member {
            id: id.clone(),
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: true,
            awaiting_sync: false,
            is_new: true,
            heartbeat_deadline_ms: now_ms + NEW_MEMBER_JOIN_TIMEOUT_MS,
        });
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.new_member_added = true;
        self.maybe_prepare_rebalance(limits, now_ms, events);
        self.try_complete_join(now_ms, events);
        JoinOutcome::Wait(id)
    }

    fn update_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        limits: &Limits,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> JoinOutcome {
        let id = req.member_id.clone();
        let member = self.member_mut(&id).expect("updated member exists");
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.awaiting_join = true;
        self.maybe_prepare_rebalance(limits, now_ms, events);
        self.try_complete_join(now_ms, events);
        JoinOutcome::Wait(id)
    }

    fn join_result(&self, member_id: &str, with_members: bool, skip: bool) -> JoinResult {
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members {
                self.members
                    .iter()
                    .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: skip,
        }
    }

    fn maybe_prepare_rebalance(&mut self, limits: &Limits, now_ms: i64, events: &mut Vec<Event>) {
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(limits, now_ms, events);
        }
    }

    fn prepare_rebalance(&mut self, limits: &Limits, now_ms: i64, events: &mut Vec<Event>) {
        if self.state == GroupState::CompletingRebalance {
            for m in &mut self.members {
                m.assignment = Bytes::new();
                if m.awaiting_sync {
                    m.awaiting_sync = false;
                    events.push(Event::Sync(
                        m.id.clone(),
                        SyncResult::error(ResponseError::RebalanceInProgress),
                    ));
                }
            }
        }
        let rebalance_timeout_ms = self
            .members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        // Kafka's initial rebalance: the join of an Empty group completes only on its timer,
        // even with `group.initial.rebalance.delay.ms=0` (the timer then fires on a later
        // turn of the shard), so members that join together share the first generation.
        if self.state == GroupState::Empty {
            self.delaying = true;
            self.new_member_added = false;
            self.join_deadline_ms = now_ms + limits.initial_rebalance_delay_ms;
            self.delay_remaining_ms =
                (rebalance_timeout_ms - limits.initial_rebalance_delay_ms).max(0);
        } else {
            self.delaying = false;
            self.join_deadline_ms = now_ms + rebalance_timeout_ms;
        }
        self.transition(GroupState::PreparingRebalance, now_ms);
    }

    fn try_complete_join(&mut self, now_ms: i64, events: &mut Vec<Event>) {
        if self.state == GroupState::PreparingRebalance && !self.delaying && self.all_joined() {
            self.complete_join(now_ms, events);
        }
    }

    /// Kafka's `onCompleteJoin`: members that did not rejoin are dropped, the next generation
    /// starts, everyone waiting on JoinGroup is answered (the leader with all members).
    fn complete_join(&mut self, now_ms: i64, events: &mut Vec<Event>) {
        self.delaying = false;
        self.members.retain(|m| m.awaiting_join);
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.iter().any(|m| &m.id == l))
        {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.transition(GroupState::Empty, now_ms);
            events.push(Event::Persist);
            return;
        }
        self.protocol = self.select_protocol();
        self.transition(GroupState::CompletingRebalance, now_ms);
        let leader = self.leader.clone().unwrap_or_default();
        for i in 0..self.members.len() {
            let id = self.members[i].id.clone();
            let result = self.join_result(&id, id == leader, false);
            let m = &mut self.members[i];
            m.awaiting_join = false;
            m.is_new = false;
            m.heartbeat_deadline_ms = session_deadline(now_ms, m.session_timeout_ms);
            events.push(Event::Join(id, result));
        }
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup ---------------------------------------------------

    /// The checks SyncGroup, Heartbeat and OffsetCommit share: known member, not fenced.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
        if let Some(instance) = instance_id {
            match self.static_member(instance) {
                None => return Err(ResponseError::UnknownMemberId.code()),
                Some(m) if m.id != member_id => return Err(ResponseError::FencedInstanceId.code()),
                Some(_) => {}
            }
        }
        if self.member(member_id).is_none() {
            return Err(ResponseError::UnknownMemberId.code());
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> SyncOutcome {
        let fail = |code: i16| {
            SyncOutcome::Now(SyncResult {
                error: code,
                ..SyncResult::default()
            })
        };
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable.code());
        }
        if let Err(code) = self.validate_member(member_id, instance_id) {
            return fail(code);
        }
        if generation != self.generation {
            return fail(ResponseError::IllegalGeneration.code());
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return fail(ResponseError::InconsistentGroupProtocol.code());
        }
        self.heard_from(member_id, now_ms);
        match self.state {
            GroupState::Empty => fail(ResponseError::UnknownMemberId.code()),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress.code()),
            GroupState::Dead => fail(ResponseError::CoordinatorNotAvailable.code()),
            GroupState::Stable => SyncOutcome::Now(self.sync_result(member_id)),
            GroupState::CompletingRebalance => {
                self.member_mut(member_id)
                    .expect("validated member")
                    .awaiting_sync = true;
                if self.leader.as_deref() == Some(member_id) {
                    for m in &mut self.members {
                        m.assignment = assignments
                            .iter()
                            .find(|(id, _)| *id == m.id)
                            .map(|(_, a)| a.clone())
                            .unwrap_or_default();
                    }
                    self.transition(GroupState::Stable, now_ms);
                    events.push(Event::Persist);
                    for i in 0..self.members.len() {
                        if self.members[i].awaiting_sync {
                            self.members[i].awaiting_sync = false;
                            let id = self.members[i].id.clone();
                            let result = self.sync_result(&id);
                            events.push(Event::Sync(id, result));
                        }
                    }
                }
                SyncOutcome::Wait
            }
        }
    }

    fn sync_result(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: 0,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .member(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    fn heard_from(&mut self, member_id: &str, now_ms: i64) {
        if let Some(m) = self.member_mut(member_id) {
            m.heartbeat_deadline_ms = session_deadline(now_ms, m.session_timeout_ms);
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        if let Err(code) = self.validate_member(member_id, instance_id) {
            return code;
        }
        if generation != self.generation {
            return ResponseError::IllegalGeneration.code();
        }
        match self.state {
            GroupState::Empty => ResponseError::UnknownMemberId.code(),
            GroupState::PreparingRebalance => {
                self.heard_from(member_id, now_ms);
                ResponseError::RebalanceInProgress.code()
            }
            _ => {
                self.heard_from(member_id, now_ms);
                0
            }
        }
    }

    /// One member of a LeaveGroup: its error code.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        limits: &Limits,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        let id = match instance_id {
            Some(instance) => match self.static_member(instance) {
                None => return ResponseError::UnknownMemberId.code(),
                Some(m) if !member_id.is_empty() && m.id != member_id => {
                    return ResponseError::FencedInstanceId.code()
                }
                Some(m) => m.id.clone(),
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.try_complete_join(now_ms, events);
            return 0;
        }
        if self.member(&id).is_none() {
            return ResponseError::UnknownMemberId.code();
        }
        self.remove_member_and_update(&id, limits, now_ms, events);
        0
    }

    fn remove_member_and_update(
        &mut self,
        id: &str,
        limits: &Limits,
        now_ms: i64,
        events: &mut Vec<Event>,
    ) {
        let Some(i) = self.members.iter().position(|m| m.id == id) else {
            return;
        };
        let m = self.members.remove(i);
        if m.awaiting_join {
            events.push(Event::Join(
                m.id.clone(),
                JoinResult::error(ResponseError::UnknownMemberId, &m.id),
            ));
        }
        if m.awaiting_sync {
            events.push(Event::Sync(
                m.id.clone(),
                SyncResult::error(ResponseError::UnknownMemberId),
            ));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(limits, now_ms, events);
                self.try_complete_join(now_ms, events);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, events),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Timers: pending-member and session expiry, the rebalance timeout, the initial delay.
    pub fn tick(&mut self, limits: &Limits, now_ms: i64, events: &mut Vec<Event>) {
        self.expire(limits, now_ms, events);
        if self.state == GroupState::PreparingRebalance && self.join_deadline_ms <= now_ms {
            if self.delaying && self.new_member_added && self.delay_remaining_ms > 0 {
                let step = limits
                    .initial_rebalance_delay_ms
                    .min(self.delay_remaining_ms);
                self.delay_remaining_ms -= step;
                self.new_member_added = false;
                self.join_deadline_ms = now_ms + step;
            } else {
                self.complete_join(now_ms, events);
            }
        }
    }

    /// Expires pending member ids and members whose session deadline has passed (at the
    /// deadline itself: a member whose deadline is `now_ms` is gone; `session_deadline` puts
    /// it just past the session). The coordinator runs this
    /// before serving any request of the group too, so a late timer is never observable.
    pub fn expire(&mut self, limits: &Limits, now_ms: i64, events: &mut Vec<Event>) {
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now_ms);
        if self.pending.len() != before {
            self.try_complete_join(now_ms, events);
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.heartbeat_satisfied(now_ms))
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member_and_update(&id, limits, now_ms, events);
        }
    }

    /// The earliest time a timer of this group fires (a pending id or a session expires, the
    /// join phase ends), if any: what the coordinator's timer sleeps until.
    pub fn next_deadline(&self) -> Option<i64> {
        let pending = self.pending.values().copied().min();
        let sessions = self
            .members
            .iter()
            .filter(|m| m.is_new || !(m.awaiting_join || m.awaiting_sync))
            .map(|m| m.heartbeat_deadline_ms)
            .min();
        let join = (self.state == GroupState::PreparingRebalance).then_some(self.join_deadline_ms);
        [pending, sessions, join].into_iter().flatten().min()
    }

    // ---- persistence ------------------------------------------------------------------------

    /// The group metadata record for this generation: what a new coordinator needs to keep the
    /// group's members without a rebalance (Kafka's `GroupMetadataValue`).
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone();
        let members = self
            .members
            .iter()
            .map(|m| MemberValue {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: protocol
                    .as_deref()
                    .map(|p| m.metadata(p))
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol,
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members,
        }
    }

    /// Takes the state of a loaded group metadata record, as Kafka's coordinator does when it
    /// loads a partition: Stable with its members (each gets a fresh session from `now_ms`, so
    /// a member that died with the old coordinator still expires) or Empty without. Anything a
    /// rebalance in progress had (waiting joins, pending ids) belonged to the old coordinator's
    /// connections and is gone; those clients retry.
    pub fn restore(&mut self, v: GroupValue, now_ms: i64) {
        self.generation = v.generation;
        self.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        self.pending.clear();
        self.delaying = false;
        self.new_member_added = false;
        let protocol = v.protocol.filter(|_| !v.members.is_empty());
        self.members = v
            .members
            .into_iter()
            .map(|m| Member {
                protocols: protocol
                    .iter()
                    .map(|p| (p.clone(), m.subscription.clone()))
                    .collect(),
                id: m.id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                assignment: m.assignment,
                awaiting_join: false,
                awaiting_sync: false,
                is_new: false,
                heartbeat_deadline_ms: session_deadline(now_ms, m.session_timeout_ms),
            })
            .collect();
        self.leader = v.leader.filter(|l| self.members.iter().any(|m| &m.id == l));
        self.protocol = protocol;
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.state_since_ms = if v.state_timestamp_ms >= 0 {
            v.state_timestamp_ms
        } else {
            now_ms
        };
    }

    // ---- offsets ----------------------------------------------------------------------------

    /// Kafka's `validateOffsetCommit` for a (non-transactional) OffsetCommit.
    pub fn validate_offset_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Result<(), i16> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable.code());
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(ResponseError::IllegalGeneration.code());
            }
        } else if self.state != GroupState::Empty {
            return Err(ResponseError::UnknownMemberId.code());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress.code());
        }
        self.heard_from(member_id, now_ms);
        Ok(())
    }

    /// Topics the members subscribe to, when the group speaks the consumer protocol and every
    /// member's subscription decodes; `None` = unknown (treated as subscribed to everything).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for m in &self.members {
            let mut metadata = m.metadata(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            let _ = bytes::Buf::get_i16(&mut metadata);
            let sub = ConsumerProtocolSubscription::decode(&mut metadata, version.min(3)).ok()?;
            topics.extend(sub.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
    }

    /// An offset record at `log_offset` became durable: apply it unless a newer one already was.
    pub fn apply_offset(
        &mut self,
        topic: &str,
        partition: i32,
        value: Option<Committed>,
        log_offset: i64,
    ) {
        let key = (topic.to_string(), partition);
        if self
            .offsets
            .get(&key)
            .is_some_and(|c| c.log_offset > log_offset)
        {
            return;
        }
        match value {
            Some(c) => {
                self.offsets.insert(key, c);
            }
            None => {
                self.offsets.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_session_timeout_ms: 6000,
        max_session_timeout_ms: 1_800_000,
        max_size: 3,
        initial_rebalance_delay_ms: 0,
    };

    fn req(member_id: &str, new_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: false,
            new_member_id: new_id.into(),
        }
    }

    fn joins(events: &[Event]) -> Vec<(String, JoinResult)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Join(id, r) => Some((id.clone(), r.clone())),
                _ => None,
            })
            .collect()
    }

    /// Joins `id` through MEMBER_ID_REQUIRED; returns the outcome of the second join.
    fn join2(g: &mut Group, id: &str, now: i64, ev: &mut Vec<Event>) -> JoinOutcome {
        let first = g.join(req("", id, &["range"]), &LIMITS, now, ev);
        match first {
            JoinOutcome::Now(r) => {
                assert_eq!(r.error, ResponseError::MemberIdRequired.code());
                assert_eq!(r.member_id, id);
            }
            other => panic!("{other:?}"),
        }
        g.join(req(id, "unused", &["range"]), &LIMITS, now, ev)
    }

    /// The first member of an Empty group: its join completes on the timer (here at once).
    fn join_alone(g: &mut Group, id: &str, now: i64, ev: &mut Vec<Event>) -> JoinOutcome {
        let out = join2(g, id, now, ev);
        assert!(
            joins(ev).is_empty(),
            "the initial join never completes inline"
        );
        g.tick(&LIMITS, now, ev);
        out
    }

    #[test]
    fn members_joining_an_empty_group_together_share_generation_1() {
        // group.initial.rebalance.delay.ms=0: the join still waits for the timer.
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        join2(&mut g, "m1", 0, &mut ev);
        join2(&mut g, "m2", 0, &mut ev);
        assert!(joins(&ev).is_empty());
        assert_eq!(g.next_deadline(), Some(0));
        // The timer fires: a member was added during the delay, so it extends (by 0 ms).
        g.tick(&LIMITS, 0, &mut ev);
        assert!(joins(&ev).is_empty());
        join2(&mut g, "m3", 1, &mut ev);
        g.tick(&LIMITS, 1, &mut ev);
        assert!(joins(&ev).is_empty());
        // No new member since the last firing: the join completes with all three.
        g.tick(&LIMITS, 2, &mut ev);
        let j = joins(&ev);
        assert_eq!(j.len(), 3);
        assert!(j.iter().all(|(_, r)| r.error == 0 && r.generation == 1));
        let leader = j.iter().find(|(id, _)| id == "m1").expect("m1 answered");
        assert_eq!(leader.1.members.len(), 3);
        assert_eq!(g.state, GroupState::CompletingRebalance);
    }

    #[test]
    fn next_deadline_is_the_earliest_timer() {
        let mut g = Group::new("g", 0);
        assert_eq!(g.next_deadline(), None);
        let mut ev = Vec::new();
        join_alone(&mut g, "m1", 0, &mut ev);
        // Joined: the session runs from the join's completion (plus the millisecond the
        // clock's resolution may hide; see `session_deadline`).
        assert_eq!(g.next_deadline(), Some(10_001));
        g.sync("m1", None, 1, None, None, vec![], 5, &mut ev);
        assert_eq!(g.next_deadline(), Some(5 + 10_001));
        assert_eq!(g.heartbeat("m1", None, 1, 7), 0);
        assert_eq!(g.next_deadline(), Some(7 + 10_001));
        // Expiry is exact to the millisecond: alive until the session has passed, gone at
        // the deadline.
        g.expire(&LIMITS, 7 + 10_000, &mut ev);
        assert_eq!(g.members.len(), 1);
        g.expire(&LIMITS, 7 + 10_001, &mut ev);
        assert!(g.members.is_empty());
    }

    #[test]
    fn single_member_join_sync_heartbeat_leave() {
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        assert_eq!(
            join_alone(&mut g, "m1", 0, &mut ev),
            JoinOutcome::Wait("m1".into())
        );
        let j = joins(&ev);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].1.generation, 1);
        assert_eq!(j[0].1.leader, "m1");
        assert_eq!(j[0].1.members.len(), 1);
        assert_eq!(j[0].1.protocol_name.as_deref(), Some("range"));
        assert_eq!(g.state, GroupState::CompletingRebalance);
        ev.clear();
        let out = g.sync(
            "m1",
            None,
            1,
            None,
            None,
            vec![("m1".into(), Bytes::from_static(b"A"))],
            1,
            &mut ev,
        );
        assert_eq!(out, SyncOutcome::Wait);
        assert_eq!(g.state, GroupState::Stable);
        assert!(ev.contains(&Event::Persist));
        assert!(
            matches!(&ev[1], Event::Sync(id, r) if id == "m1" && r.assignment == Bytes::from_static(b"A"))
        );
        assert_eq!(g.heartbeat("m1", None, 1, 2), 0);
        assert_eq!(
            g.heartbeat("m1", None, 0, 2),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            g.heartbeat("zz", None, 1, 2),
            ResponseError::UnknownMemberId.code()
        );
        ev.clear();
        assert_eq!(g.leave("m1", None, &LIMITS, 3, &mut ev), 0);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.generation, 2);
        assert_eq!(ev, vec![Event::Persist]);
    }

    #[test]
    fn second_member_triggers_rebalance_and_rebalance_timeout_drops_laggards() {
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        join_alone(&mut g, "m1", 0, &mut ev);
        g.sync("m1", None, 1, None, None, vec![], 0, &mut ev);
        ev.clear();
        // m2 joins: Stable → PreparingRebalance; m1 must rejoin.
        assert_eq!(
            join2(&mut g, "m2", 10, &mut ev),
            JoinOutcome::Wait("m2".into())
        );
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat("m1", None, 1, 11),
            ResponseError::RebalanceInProgress.code()
        );
        assert!(joins(&ev).is_empty());
        // m1 never rejoins: after the rebalance timeout it is dropped and m2 leads generation 2.
        g.tick(&LIMITS, 10 + 30_000, &mut ev);
        let j = joins(&ev);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].0, "m2");
        assert_eq!(j[0].1.leader, "m2");
        assert_eq!(j[0].1.generation, 2);
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn rejoin_completes_rebalance_with_all_members() {
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        join_alone(&mut g, "m1", 0, &mut ev);
        g.sync("m1", None, 1, None, None, vec![], 0, &mut ev);
        ev.clear();
        join2(&mut g, "m2", 10, &mut ev);
        assert_eq!(
            g.join(req("m1", "x", &["range"]), &LIMITS, 20, &mut ev),
            JoinOutcome::Wait("m1".into())
        );
        let j = joins(&ev);
        assert_eq!(j.len(), 2);
        let leader = j.iter().find(|(id, _)| id == "m1").expect("m1 answered");
        assert_eq!(leader.1.members.len(), 2);
        let follower = j.iter().find(|(id, _)| id == "m2").expect("m2 answered");
        assert!(follower.1.members.is_empty());
        // The follower syncs first and waits for the leader.
        ev.clear();
        assert_eq!(
            g.sync(
                "m2",
                None,
                2,
                Some("consumer"),
                Some("range"),
                vec![],
                21,
                &mut ev
            ),
            SyncOutcome::Wait
        );
        assert!(ev.is_empty());
        g.sync(
            "m1",
            None,
            2,
            None,
            None,
            vec![("m2".into(), Bytes::from_static(b"B"))],
            22,
            &mut ev,
        );
        assert!(ev.iter().any(|e| matches!(e, Event::Sync(id, r) if id == "m2" && r.assignment == Bytes::from_static(b"B"))));
        assert_eq!(g.state, GroupState::Stable);
    }

    #[test]
    fn session_expiry_removes_member_and_rebalances() {
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        join_alone(&mut g, "m1", 0, &mut ev);
        g.sync("m1", None, 1, None, None, vec![], 0, &mut ev);
        ev.clear();
        // Never before the whole session has passed, at most a millisecond after.
        g.tick(&LIMITS, 10_000, &mut ev);
        assert_eq!(g.members.len(), 1);
        g.tick(&LIMITS, 10_001, &mut ev);
        assert!(g.members.is_empty());
        assert_eq!(g.state, GroupState::Empty);
    }

    #[test]
    fn pending_member_expires_and_limits_apply() {
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        let mut r = req("", "p1", &["range"]);
        r.session_timeout_ms = 100;
        match g.join(r, &LIMITS, 0, &mut ev) {
            JoinOutcome::Now(r) => assert_eq!(r.error, ResponseError::InvalidSessionTimeout.code()),
            other => panic!("{other:?}"),
        }
        g.join(req("", "p1", &["range"]), &LIMITS, 0, &mut ev);
        assert!(g.pending.contains_key("p1"));
        g.tick(&LIMITS, 10_000, &mut ev);
        assert!(g.pending.is_empty());
        // group.max.size = 3: while rebalancing, members awaiting join count (Kafka's rule).
        let delayed = Limits {
            initial_rebalance_delay_ms: 1000,
            ..LIMITS
        };
        for id in ["a", "b", "c"] {
            let mut r = req("", id, &["range"]);
            r.require_known_member_id = false;
            assert_eq!(
                g.join(r, &delayed, 20_000, &mut ev),
                JoinOutcome::Wait(id.into())
            );
        }
        let mut r = req("", "d", &["range"]);
        r.require_known_member_id = false;
        match g.join(r, &delayed, 20_000, &mut ev) {
            JoinOutcome::Now(r) => assert_eq!(r.error, ResponseError::GroupMaxSizeReached.code()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_selection_by_votes() {
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        let mut r1 = req("", "m1", &["range", "roundrobin", "sticky"]);
        r1.require_known_member_id = false;
        let mut r2 = req("", "m2", &["sticky", "roundrobin"]);
        r2.require_known_member_id = false;
        let mut r3 = req("", "m3", &["roundrobin", "sticky"]);
        r3.require_known_member_id = false;
        let limits = Limits {
            initial_rebalance_delay_ms: 1000,
            ..LIMITS
        };
        g.join(r1, &limits, 0, &mut ev);
        g.join(r2, &limits, 0, &mut ev);
        g.join(r3, &limits, 0, &mut ev);
        // Candidates: roundrobin, sticky. Votes: m1 → roundrobin, m2 → sticky, m3 → roundrobin.
        assert_eq!(g.select_protocol().as_deref(), Some("roundrobin"));
        // A member with no common protocol is refused.
        let mut r4 = req("", "m4", &["cooperative-sticky"]);
        r4.require_known_member_id = false;
        match g.join(r4, &limits, 0, &mut ev) {
            JoinOutcome::Now(r) => {
                assert_eq!(r.error, ResponseError::InconsistentGroupProtocol.code())
            }
            other => panic!("{other:?}"),
        }
        // The initial delay holds the join; members joined during it extend it once more
        // (Kafka's InitialDelayedJoin), then the join completes.
        assert!(joins(&ev).is_empty());
        g.tick(&limits, 1000, &mut ev);
        assert!(joins(&ev).is_empty());
        g.tick(&limits, 2000, &mut ev);
        assert_eq!(joins(&ev).len(), 3);
    }

    #[test]
    fn static_member_rejoin_keeps_assignment_and_fences_old_id() {
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        let mut r = req("", "s1", &["range"]);
        r.instance_id = Some("i1".into());
        assert_eq!(
            g.join(r.clone(), &LIMITS, 0, &mut ev),
            JoinOutcome::Wait("s1".into())
        );
        g.tick(&LIMITS, 0, &mut ev);
        g.sync(
            "s1",
            Some("i1"),
            1,
            None,
            None,
            vec![("s1".into(), Bytes::from_static(b"A"))],
            0,
            &mut ev,
        );
        assert_eq!(g.state, GroupState::Stable);
        // Restart: same instance id, no member id.
        r.new_member_id = "s1b".into();
        match g.join(r, &LIMITS, 100, &mut ev) {
            JoinOutcome::Now(res) => {
                assert_eq!(res.error, 0);
                assert_eq!(res.member_id, "s1b");
                assert_eq!(res.generation, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.state, GroupState::Stable);
        ev.clear();
        match g.sync("s1b", Some("i1"), 1, None, None, vec![], 101, &mut ev) {
            SyncOutcome::Now(s) => assert_eq!(s.assignment, Bytes::from_static(b"A")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            g.heartbeat("s1", Some("i1"), 1, 102),
            ResponseError::FencedInstanceId.code()
        );
        assert_eq!(g.heartbeat("s1b", Some("i1"), 1, 102), 0);
    }

    #[test]
    fn offset_commit_validation() {
        let mut g = Group::new("g", 0);
        let mut ev = Vec::new();
        // Simple commits on an empty group.
        assert_eq!(g.validate_offset_commit("", None, -1, 0), Ok(()));
        join_alone(&mut g, "m1", 0, &mut ev);
        assert_eq!(
            g.validate_offset_commit("m1", None, 1, 0),
            Err(ResponseError::RebalanceInProgress.code())
        );
        assert_eq!(
            g.validate_offset_commit("", None, -1, 0),
            Err(ResponseError::UnknownMemberId.code())
        );
        g.sync("m1", None, 1, None, None, vec![], 0, &mut ev);
        assert_eq!(g.validate_offset_commit("m1", None, 1, 0), Ok(()));
        assert_eq!(
            g.validate_offset_commit("m1", None, 0, 0),
            Err(ResponseError::IllegalGeneration.code())
        );
        assert_eq!(
            g.validate_offset_commit("mx", None, 1, 0),
            Err(ResponseError::UnknownMemberId.code())
        );
    }

    #[test]
    fn newer_offset_records_win() {
        let mut g = Group::new("g", 0);
        let c = |offset, log_offset| Committed {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
            log_offset,
        };
        g.apply_offset("t", 0, Some(c(5, 10)), 10);
        g.apply_offset("t", 0, Some(c(3, 9)), 9);
        assert_eq!(g.offsets[&("t".to_string(), 0)].offset, 5);
        g.apply_offset("t", 0, None, 11);
        assert!(g.offsets.is_empty());
    }
}
