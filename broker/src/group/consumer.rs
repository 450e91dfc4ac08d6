//! The consumer group protocol (KIP-848): Kafka's `ConsumerGroup`, the ConsumerGroupHeartbeat
//! rules of its `GroupMetadataManager` and the member state machine of its
//! `CurrentAssignmentBuilder`, as pure functions of the group, the request, the topic table and
//! `now_ms` (nothing here awaits or does I/O; the coordinator persists and answers).
//!
//! Epochs: the *group epoch* is bumped by every change of membership, subscriptions or
//! subscribed-topic metadata; the *target assignment* is recomputed by the server-side assignor
//! when it lags the group epoch (its epoch becomes the group epoch); each member's *member epoch*
//! catches up with the target assignment epoch as it reconciles.
//!
//! Architecture invariant (revocation before reassignment): a partition is in at most one
//! member's `assigned ∪ pending_revocation`. A member whose target drops a partition it owns moves
//! to `UnrevokedPartitions` at its current epoch and keeps only `assigned ∩ target`; only once its
//! heartbeat no longer lists the revoked partitions are they released, and a member whose target
//! includes a partition still held by another waits in `UnreleasedPartitions` until it is free.
//!
//! ```text
//!            epoch < target, nothing to revoke                 revoked acknowledged
//! Stable ───────────────────────────────────────▶ Stable ◀──────────────── UnrevokedPartitions
//!   │  epoch < target, owns partitions leaving its target ──────────────────────▲
//!   └──── target partitions still held by others ──▶ UnreleasedPartitions ──(released)──▶ Stable
//! ```
//! Fencing: a heartbeat with an epoch above the member's, or below it other than the previous
//! epoch with a subset of the assignment (a lost response), gets FENCED_MEMBER_EPOCH.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use kafka_protocol::error::ResponseError;

use super::assignor::{self, Assignment};

/// Member epoch of a (dynamic) member leaving the group.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// Member epoch of a static member leaving temporarily (its assignment is kept for its instance
/// id until the session expires).
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;
/// Bounds a member's subscription list.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// The `group.consumer.*` settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    /// Names served; the first is the default.
    pub assignors: Vec<String>,
    pub max_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub state: MemberState,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    pub session_deadline_ms: i64,
    /// Set while the member must revoke partitions: it is fenced if it has not by then.
    pub rebalance_deadline_ms: Option<i64>,
}

/// One consumer group.
///
/// Owned by: the shard owning the group's `__consumer_offsets` partition. Its committed offsets
/// live in the classic `Group` entry of the same id (see `coordinator.rs`).
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, Member>,
    pub target: BTreeMap<String, Assignment>,
    /// The assignor of the last target assignment.
    pub assignor: String,
    /// Partition counts of the subscribed topics when the group epoch was last bumped.
    pub subscribed_metadata: BTreeMap<String, i32>,
}

/// A decoded ConsumerGroupHeartbeat (topic ids already mapped to names).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatIn {
    pub version: i16,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer: an error, or the member's epoch and (when it changed or was asked for) its
/// assignment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeartbeatOut {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: Option<Assignment>,
}

impl HeartbeatOut {
    pub fn error(e: ResponseError, message: impl Into<String>, member_id: &str) -> HeartbeatOut {
        HeartbeatOut {
            error: e.code(),
            message: Some(message.into()),
            member_id: member_id.to_string(),
            member_epoch: -1,
            assignment: None,
        }
    }
}

/// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`: INVALID_REQUEST,
/// UNSUPPORTED_ASSIGNOR or INVALID_REGULAR_EXPRESSION with Kafka's message.
pub fn validate(group_id: &str, r: &HeartbeatIn, settings: &Settings) -> Result<(), HeartbeatOut> {
    let invalid = |m: &str| {
        Err(HeartbeatOut::error(
            ResponseError::InvalidRequest,
            m,
            &r.member_id,
        ))
    };
    if r.version >= 1 && r.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    if group_id.is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if r.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if r.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    if r.member_epoch == 0 {
        if r.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if r.owned.as_ref().is_none_or(|o| !o.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        let names = r
            .subscribed_topic_names
            .as_ref()
            .is_some_and(|n| !n.is_empty());
        let regex = r
            .subscribed_topic_regex
            .as_ref()
            .is_some_and(|n| !n.is_empty());
        if !names && !regex {
            return invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
    } else if r.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        if r.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
    } else if r.member_epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if r.subscribed_topic_names
        .as_ref()
        .is_some_and(|n| n.len() > SUBSCRIBED_TOPICS_MAX)
    {
        return invalid("Too many subscribed topics.");
    }
    if let Some(re) = r
        .subscribed_topic_regex
        .as_deref()
        .filter(|re| !re.is_empty())
    {
        if let Err(e) = compile(re) {
            return Err(HeartbeatOut::error(
                ResponseError::InvalidRegularExpression,
                format!("SubscribedTopicRegex `{re}` is not a valid regular expression: {e}."),
                &r.member_id,
            ));
        }
    }
    if let Some(a) = r.server_assignor.as_deref() {
        if !settings.assignors.iter().any(|n| n == a) {
            return Err(HeartbeatOut::error(
                ResponseError::UnsupportedAssignor,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: {}.",
                    settings.assignors.join(", ")
                ),
                &r.member_id,
            ));
        }
    }
    Ok(())
}

/// A subscription regex (Kafka: RE2/J, matched against the whole topic name). The `regex`
/// engine's syntax is close to RE2's.
pub fn compile(re: &str) -> Result<regex_automata::meta::Regex, String> {
    regex_automata::meta::Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())
}

impl Member {
    fn new(id: &str, now_ms: i64) -> Member {
        Member {
            id: id.to_string(),
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            rebalance_timeout_ms: 0,
            state: MemberState::Stable,
            member_epoch: 0,
            previous_member_epoch: 0,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: now_ms,
            rebalance_deadline_ms: None,
        }
    }

    /// Topics this member subscribes to that exist: names, plus regex matches. As in Kafka, the
    /// broker matches the whole name and does not skip internal topics (a client that wants them
    /// out says so in its regex).
    pub fn resolved_topics(&self, topics: &BTreeMap<String, i32>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .subscribed_topic_names
            .iter()
            .filter(|t| topics.contains_key(*t))
            .cloned()
            .collect();
        if let Some(re) = self.subscribed_topic_regex.as_deref() {
            if let Ok(re) = compile(re) {
                out.extend(topics.keys().filter(|t| re.is_match(t.as_str())).cloned());
            }
        }
        out
    }
}

fn is_subset(small: &Assignment, big: &Assignment) -> bool {
    small
        .iter()
        .all(|(t, ps)| ps.is_empty() || big.get(t).is_some_and(|b| ps.is_subset(b)))
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|q| !ps.is_disjoint(q)))
}

fn normalized(a: Assignment) -> Assignment {
    a.into_iter().filter(|(_, p)| !p.is_empty()).collect()
}

impl ConsumerGroup {
    pub fn new(id: &str) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            assignor: String::new(),
            subscribed_metadata: BTreeMap::new(),
        }
    }

    /// Kafka's `ConsumerGroupState` name.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch != self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Every topic some member subscribes to (for OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC).
    pub fn subscribed_topics(&self, topics: &BTreeMap<String, i32>) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.resolved_topics(topics))
            .collect()
    }

    /// Serves one ConsumerGroupHeartbeat for a request already [`validate`]d; `new_member_id`
    /// is used when a v0 member joins without an id. Returns the answer and whether the group
    /// epoch changed (the coordinator persists it).
    pub fn heartbeat(
        &mut self,
        r: HeartbeatIn,
        settings: &Settings,
        topics: &BTreeMap<String, i32>,
        new_member_id: &str,
        now_ms: i64,
    ) -> (HeartbeatOut, bool) {
        if r.member_epoch == LEAVE_GROUP_MEMBER_EPOCH
            || r.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH
        {
            return self.leave(&r, now_ms);
        }
        let (member_id, joined) = match self.find_or_join(&r, settings, new_member_id, now_ms) {
            Ok(found) => found,
            Err(out) => return (out, false),
        };
        let before = self.members[&member_id].assigned.clone();
        let subscription_changed = self.update_member(&member_id, &r);
        let metadata_changed = self.metadata_changed(topics);
        // One bump per heartbeat, whatever changed (as Kafka).
        let bumped = joined || subscription_changed || metadata_changed;
        if bumped {
            self.group_epoch += 1;
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target(settings, topics);
        }
        self.reconcile(&member_id, r.owned.as_ref(), now_ms);
        let m = self.members.get_mut(&member_id).expect("member present");
        m.session_deadline_ms =
            super::classic::session_deadline(now_ms, settings.session_timeout_ms);
        let full =
            r.rebalance_timeout_ms != -1 && r.subscribed_topic_names.is_some() && r.owned.is_some();
        let assignment =
            (r.member_epoch == 0 || full || m.assigned != before).then(|| m.assigned.clone());
        let out = HeartbeatOut {
            error: 0,
            message: None,
            member_id: member_id.clone(),
            member_epoch: m.member_epoch,
            assignment,
        };
        (out, bumped)
    }

    /// The member a heartbeat speaks for: joined (epoch 0), or existing with a valid epoch.
    fn find_or_join(
        &mut self,
        r: &HeartbeatIn,
        settings: &Settings,
        new_member_id: &str,
        now_ms: i64,
    ) -> Result<(String, bool), HeartbeatOut> {
        let requested = if r.member_id.is_empty() {
            new_member_id.to_string()
        } else {
            r.member_id.clone()
        };
        if r.member_epoch != 0 {
            let Some(m) = self.members.get(&requested) else {
                return Err(HeartbeatOut::error(
                    ResponseError::UnknownMemberId,
                    format!("Member {requested} is not a member of group {}.", self.id),
                    &requested,
                ));
            };
            let fenced = r.member_epoch > m.member_epoch
                || (r.member_epoch < m.member_epoch
                    && (r.member_epoch != m.previous_member_epoch
                        || !r.owned.as_ref().is_some_and(|o| is_subset(o, &m.assigned))));
            if fenced {
                return Err(HeartbeatOut::error(
                    ResponseError::FencedMemberEpoch,
                    format!(
                        "The consumer group member has a smaller member epoch ({}) than the one \
                         known by the group coordinator ({}). The member must abandon all its \
                         partitions and rejoin.",
                        r.member_epoch, m.member_epoch
                    ),
                    &requested,
                ));
            }
            return Ok((requested, false));
        }
        // Joining (epoch 0). A static member may take over its instance's previous member.
        if let Some(instance) = r.instance_id.as_deref() {
            let previous = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance))
                .map(|m| (m.id.clone(), m.member_epoch));
            if let Some((old_id, old_epoch)) = previous {
                if old_id != requested {
                    if old_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                        return Err(HeartbeatOut::error(
                            ResponseError::UnreleasedInstanceId,
                            format!(
                                "Static member {old_id} with instance id {instance} is still \
                                 using it."
                            ),
                            &requested,
                        ));
                    }
                    let mut m = self.members.remove(&old_id).expect("present");
                    m.id = requested.clone();
                    m.member_epoch = m.previous_member_epoch;
                    m.session_deadline_ms = now_ms;
                    if let Some(t) = self.target.remove(&old_id) {
                        self.target.insert(requested.clone(), t);
                    }
                    self.members.insert(requested.clone(), m);
                    return Ok((requested, false));
                }
            }
        }
        match self.members.get_mut(&requested) {
            Some(m) => {
                // A rejoin: the client gave up everything it owned.
                m.member_epoch = 0;
                m.previous_member_epoch = 0;
                m.state = MemberState::Stable;
                m.assigned.clear();
                m.pending_revocation.clear();
                m.rebalance_deadline_ms = None;
            }
            None => {
                if self.members.len() >= settings.max_size {
                    return Err(HeartbeatOut::error(
                        ResponseError::GroupMaxSizeReached,
                        format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            settings.max_size
                        ),
                        &requested,
                    ));
                }
                self.members
                    .insert(requested.clone(), Member::new(&requested, now_ms));
                return Ok((requested, true));
            }
        }
        Ok((requested, false))
    }

    /// Applies the fields a heartbeat carries (null = unchanged); whether the subscription
    /// changed.
    fn update_member(&mut self, id: &str, r: &HeartbeatIn) -> bool {
        let m = self.members.get_mut(id).expect("member present");
        let mut changed = false;
        if let Some(names) = &r.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            changed |= names != m.subscribed_topic_names;
            m.subscribed_topic_names = names;
        }
        if let Some(re) = &r.subscribed_topic_regex {
            let re = (!re.is_empty()).then(|| re.clone());
            changed |= re != m.subscribed_topic_regex;
            m.subscribed_topic_regex = re;
        }
        if let Some(a) = &r.server_assignor {
            changed |= m.server_assignor.as_ref() != Some(a);
            m.server_assignor = Some(a.clone());
        }
        if r.rebalance_timeout_ms != -1 {
            m.rebalance_timeout_ms = r.rebalance_timeout_ms;
        }
        if r.instance_id.is_some() {
            m.instance_id = r.instance_id.clone();
        }
        if r.rack_id.is_some() {
            m.rack_id = r.rack_id.clone();
        }
        if !r.client_id.is_empty() || m.client_id.is_empty() {
            m.client_id = r.client_id.clone();
        }
        if !r.client_host.is_empty() {
            m.client_host = r.client_host.clone();
        }
        changed
    }

    /// Whether a subscribed topic appeared, vanished or grew since the last check (the caller
    /// bumps the group epoch).
    pub fn metadata_changed(&mut self, topics: &BTreeMap<String, i32>) -> bool {
        let now: BTreeMap<String, i32> = self
            .subscribed_topics(topics)
            .into_iter()
            .map(|t| {
                let n = topics[&t];
                (t, n)
            })
            .collect();
        if now == self.subscribed_metadata {
            return false;
        }
        self.subscribed_metadata = now;
        true
    }

    /// The assignor most members ask for, else the default.
    fn preferred_assignor(&self, settings: &Settings) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .map(|(name, _)| name.to_string())
            .unwrap_or_else(|| {
                settings
                    .assignors
                    .first()
                    .cloned()
                    .unwrap_or_else(|| assignor::ASSIGNORS[0].to_string())
            })
    }

    /// Recomputes the target assignment at the group epoch.
    pub fn compute_target(&mut self, settings: &Settings, topics: &BTreeMap<String, i32>) {
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.resolved_topics(topics)))
            .collect();
        let used: BTreeMap<String, i32> = subscriptions
            .values()
            .flatten()
            .map(|t| (t.clone(), topics[t]))
            .collect();
        let name = self.preferred_assignor(settings);
        self.target = assignor::assign(&name, &subscriptions, &used, &self.target)
            .into_iter()
            .map(|(m, a)| (m, normalized(a)))
            .collect();
        self.assignor = name;
        self.assignment_epoch = self.group_epoch;
    }

    /// Partitions held (assigned or pending revocation) by members other than `except`.
    fn held_by_others(&self, except: &str) -> HashSet<(String, i32)> {
        let mut held = HashSet::new();
        for m in self.members.values().filter(|m| m.id != except) {
            for a in [&m.assigned, &m.pending_revocation] {
                for (t, ps) in a {
                    held.extend(ps.iter().map(|&p| (t.clone(), p)));
                }
            }
        }
        held
    }

    /// Kafka's `CurrentAssignmentBuilder`: moves the member toward the target assignment.
    /// `owned`: what the client says it owns (None = unchanged since the last heartbeat).
    pub fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now_ms: i64) {
        let m = &self.members[id];
        let next = match m.state {
            MemberState::Stable if m.member_epoch == self.assignment_epoch => return,
            MemberState::UnrevokedPartitions
                if owned.is_none_or(|o| intersects(o, &m.pending_revocation)) =>
            {
                return;
            }
            _ => self.next_assignment(id, owned),
        };
        let m = self.members.get_mut(id).expect("member present");
        let was_unrevoked = m.state == MemberState::UnrevokedPartitions;
        if next.member_epoch != m.member_epoch {
            m.previous_member_epoch = m.member_epoch;
        }
        m.member_epoch = next.member_epoch;
        m.state = next.state;
        m.assigned = next.assigned;
        m.pending_revocation = next.pending_revocation;
        m.rebalance_deadline_ms = match (m.state, was_unrevoked) {
            (MemberState::UnrevokedPartitions, false) => {
                Some(now_ms + i64::from(m.rebalance_timeout_ms))
            }
            (MemberState::UnrevokedPartitions, true) => m.rebalance_deadline_ms,
            _ => None,
        };
    }

    fn next_assignment(&self, id: &str, owned: Option<&Assignment>) -> Next {
        let m = &self.members[id];
        let empty = Assignment::new();
        let target = self.target.get(id).unwrap_or(&empty);
        let held = self.held_by_others(id);
        let mut keep = Assignment::new();
        let mut revoke = Assignment::new();
        let mut newly = Assignment::new();
        let mut unreleased = false;
        let topics: BTreeSet<&String> = target.keys().chain(m.assigned.keys()).collect();
        for t in topics {
            let current = m.assigned.get(t).cloned().unwrap_or_default();
            let wanted = target.get(t).cloned().unwrap_or_default();
            let kept: BTreeSet<i32> = current.intersection(&wanted).copied().collect();
            let gone: BTreeSet<i32> = current.difference(&wanted).copied().collect();
            let mut added = BTreeSet::new();
            for &p in wanted.difference(&current) {
                if held.contains(&(t.clone(), p)) {
                    unreleased = true;
                } else {
                    added.insert(p);
                }
            }
            keep.insert(t.clone(), kept);
            revoke.insert(t.clone(), gone);
            newly.insert(t.clone(), added);
        }
        let (keep, revoke, newly) = (normalized(keep), normalized(revoke), normalized(newly));
        let owns_revoked = owned.is_none_or(|o| intersects(o, &revoke));
        if !revoke.is_empty() && owns_revoked {
            return Next {
                state: MemberState::UnrevokedPartitions,
                member_epoch: m.member_epoch,
                assigned: keep,
                pending_revocation: revoke,
            };
        }
        let mut assigned = keep;
        for (t, ps) in newly {
            assigned.entry(t).or_default().extend(ps);
        }
        Next {
            state: if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            },
            member_epoch: self.assignment_epoch,
            assigned,
            pending_revocation: Assignment::new(),
        }
    }

    /// Epoch -1 (leave) and -2 (static member leaving temporarily).
    fn leave(&mut self, r: &HeartbeatIn, now_ms: i64) -> (HeartbeatOut, bool) {
        let id = if r.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            self.members
                .values()
                .find(|m| m.instance_id == r.instance_id)
                .map(|m| m.id.clone())
        } else {
            self.members
                .contains_key(&r.member_id)
                .then(|| r.member_id.clone())
        };
        let Some(id) = id else {
            let message = format!(
                "Member {} is not a member of group {}.",
                r.member_id, self.id
            );
            return (
                HeartbeatOut::error(ResponseError::UnknownMemberId, message, &r.member_id),
                false,
            );
        };
        let out = HeartbeatOut {
            member_id: r.member_id.clone(),
            member_epoch: r.member_epoch,
            ..HeartbeatOut::default()
        };
        if r.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            // Kept (with its assignment) until its session expires or its instance rejoins.
            let m = self.members.get_mut(&id).expect("present");
            if m.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                m.previous_member_epoch = m.member_epoch;
            }
            m.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            m.session_deadline_ms = m.session_deadline_ms.max(now_ms);
            return (out, false);
        }
        self.remove_member(&id);
        (out, true)
    }

    /// Removes a member (leave, session expiry, rebalance timeout): its partitions are free at
    /// once and the group epoch is bumped.
    pub fn remove_member(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.group_epoch += 1;
        }
    }

    /// Expires members whose session or revocation deadline passed. Returns the removed ids.
    pub fn tick(&mut self, now_ms: i64) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now_ms
                    || m.rebalance_deadline_ms.is_some_and(|d| d <= now_ms)
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id);
        }
        expired
    }

    /// The earliest session or revocation deadline of a member, if any (when `tick` next
    /// removes someone).
    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline_ms), m.rebalance_deadline_ms])
            .flatten()
            .min()
    }

    /// Kafka's `ConsumerGroup.validateOffsetCommit`.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        version: i16,
    ) -> Result<(), i16> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(ResponseError::UnknownMemberId.code());
        };
        if version < 9 {
            return Err(ResponseError::UnsupportedVersion.code());
        }
        if member_epoch != m.member_epoch {
            return Err(ResponseError::StaleMemberEpoch.code());
        }
        Ok(())
    }

    /// Kafka's `ConsumerGroup.validateOffsetFetch`.
    pub fn validate_offset_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), i16> {
        let Some(member_id) = member_id else {
            return if member_epoch < 0 {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId.code())
            };
        };
        if member_id.is_empty() && member_epoch < 0 {
            return Ok(());
        }
        let Some(m) = self.members.get(member_id) else {
            return Err(ResponseError::UnknownMemberId.code());
        };
        if member_epoch != m.member_epoch {
            return Err(ResponseError::StaleMemberEpoch.code());
        }
        Ok(())
    }
}

struct Next {
    state: MemberState,
    member_epoch: i32,
    assigned: Assignment,
    pending_revocation: Assignment,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            assignors: vec!["uniform".into(), "range".into()],
            max_size: 100,
        }
    }

    fn topics() -> BTreeMap<String, i32> {
        [("t".to_string(), 4)].into_iter().collect()
    }

    fn join(id: &str) -> HeartbeatIn {
        HeartbeatIn {
            version: 1,
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 300_000,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            ..HeartbeatIn::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: &Assignment) -> HeartbeatIn {
        HeartbeatIn {
            version: 1,
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned.clone()),
            ..HeartbeatIn::default()
        }
    }

    fn parts(a: &Assignment) -> Vec<i32> {
        a.get("t")
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    fn of(list: &[i32]) -> Assignment {
        [("t".to_string(), list.iter().copied().collect())]
            .into_iter()
            .collect()
    }

    /// No partition is ever held by two members.
    fn assert_exclusive(g: &ConsumerGroup) {
        let mut seen = BTreeSet::new();
        for m in g.members.values() {
            for a in [&m.assigned, &m.pending_revocation] {
                for (t, ps) in a {
                    for &p in ps {
                        assert!(seen.insert((t.clone(), p)), "{t}-{p} held twice");
                    }
                }
            }
        }
    }

    #[test]
    fn revocation_before_reassignment_with_two_members() {
        let (s, t) = (settings(), topics());
        let mut g = ConsumerGroup::new("g");
        let (a, changed) = g.heartbeat(join("a"), &s, &t, "", 0);
        assert!(changed);
        assert_eq!(a.error, 0);
        assert_eq!(a.member_epoch, 1, "one bump per heartbeat");
        let a_owned = a.assignment.clone().expect("assignment on join");
        assert_eq!(parts(&a_owned), vec![0, 1, 2, 3]);
        assert_eq!(g.state(), "Stable");

        // b joins: the target gives it two of a's partitions, which a still owns.
        let (b, _) = g.heartbeat(join("b"), &s, &t, "", 10);
        assert_eq!(b.member_epoch, 2);
        assert_eq!(
            parts(b.assignment.as_ref().expect("present")),
            Vec::<i32>::new()
        );
        assert_eq!(g.members["b"].state, MemberState::UnreleasedPartitions);
        assert_eq!(g.state(), "Reconciling");
        assert_exclusive(&g);

        // a is asked to revoke (same epoch, keeps only the intersection).
        let (a2, _) = g.heartbeat(beat("a", 1, &a_owned), &s, &t, "", 20);
        assert_eq!(a2.member_epoch, 1);
        let kept = a2.assignment.clone().expect("changed");
        assert_eq!(parts(&kept).len(), 2);
        assert_eq!(g.members["a"].state, MemberState::UnrevokedPartitions);
        assert_exclusive(&g);

        // b still cannot get them: a has not acknowledged.
        let (b2, _) = g.heartbeat(beat("b", 2, &Assignment::new()), &s, &t, "", 25);
        assert_eq!(b2.assignment, None);
        assert!(g.members["b"].assigned.is_empty());

        // a heartbeats still owning them: nothing moves.
        let (a3, _) = g.heartbeat(beat("a", 1, &a_owned), &s, &t, "", 30);
        assert_eq!((a3.member_epoch, a3.assignment), (1, None));

        // a acknowledges: it reaches epoch 2 ...
        let (a4, _) = g.heartbeat(beat("a", 1, &kept), &s, &t, "", 40);
        assert_eq!(a4.member_epoch, 2);
        assert_eq!(g.members["a"].state, MemberState::Stable);
        // ... and b gets the released partitions.
        let (b3, _) = g.heartbeat(beat("b", 2, &Assignment::new()), &s, &t, "", 50);
        let b_parts = parts(b3.assignment.as_ref().expect("assigned"));
        assert_eq!(b_parts.len(), 2);
        assert!(b_parts.iter().all(|p| !parts(&kept).contains(p)));
        assert_eq!(g.state(), "Stable");
        assert_exclusive(&g);
    }

    #[test]
    fn fencing_and_unknown_members() {
        let (s, t) = (settings(), topics());
        let mut g = ConsumerGroup::new("g");
        let (a, _) = g.heartbeat(join("a"), &s, &t, "", 0);
        let owned = a.assignment.expect("present");
        let (r, _) = g.heartbeat(beat("a", 7, &owned), &s, &t, "", 1);
        assert_eq!(r.error, ResponseError::FencedMemberEpoch.code());
        let (r, _) = g.heartbeat(beat("x", 2, &owned), &s, &t, "", 1);
        assert_eq!(r.error, ResponseError::UnknownMemberId.code());
        // b joins; a moves to epoch 2 after revoking; a retry at epoch 1 with a subset is fine.
        g.heartbeat(join("b"), &s, &t, "", 2);
        let (a2, _) = g.heartbeat(beat("a", 1, &owned), &s, &t, "", 3);
        let kept = a2.assignment.expect("present");
        let (a3, _) = g.heartbeat(beat("a", 1, &kept), &s, &t, "", 4);
        assert_eq!(a3.member_epoch, 2);
        let (retry, _) = g.heartbeat(beat("a", 1, &kept), &s, &t, "", 5);
        assert_eq!(
            retry.error, 0,
            "previous epoch with a subset is a lost response"
        );
        let (stale, _) = g.heartbeat(beat("a", 1, &owned), &s, &t, "", 6);
        assert_eq!(stale.error, ResponseError::FencedMemberEpoch.code());
        // Offset commits are checked against the member epoch.
        assert_eq!(g.validate_offset_commit("a", 2, 9), Ok(()));
        assert_eq!(
            g.validate_offset_commit("a", 1, 9),
            Err(ResponseError::StaleMemberEpoch.code())
        );
        assert_eq!(
            g.validate_offset_commit("zz", 2, 9),
            Err(ResponseError::UnknownMemberId.code())
        );
        assert_eq!(g.validate_offset_fetch(None, -1), Ok(()));
        assert_eq!(
            g.validate_offset_fetch(Some("a"), 1),
            Err(ResponseError::StaleMemberEpoch.code())
        );
    }

    #[test]
    fn leave_and_session_expiry_free_partitions() {
        let (s, t) = (settings(), topics());
        let mut g = ConsumerGroup::new("g");
        g.heartbeat(join("a"), &s, &t, "", 0);
        g.heartbeat(join("b"), &s, &t, "", 0);
        let epoch = g.group_epoch;
        let mut leave = beat("b", 2, &Assignment::new());
        leave.member_epoch = LEAVE_GROUP_MEMBER_EPOCH;
        let (out, changed) = g.heartbeat(leave, &s, &t, "", 1);
        assert!(changed);
        assert_eq!((out.error, out.member_epoch), (0, -1));
        assert_eq!(g.group_epoch, epoch + 1);
        // a's session expires.
        assert_eq!(g.tick(45_000), Vec::<String>::new());
        assert_eq!(g.tick(45_001), vec!["a".to_string()]);
        assert_eq!(g.state(), "Empty");
    }

    #[test]
    fn v0_member_id_is_generated_and_requests_validated() {
        let (s, t) = (settings(), topics());
        let mut g = ConsumerGroup::new("g");
        let mut r = join("");
        r.version = 0;
        assert!(validate("g", &r, &s).is_ok());
        let (out, _) = g.heartbeat(r, &s, &t, "generated", 0);
        assert_eq!(out.member_id, "generated");
        let r = join("");
        assert_eq!(
            validate("g", &r, &s).expect_err("invalid").error,
            ResponseError::InvalidRequest.code()
        );
        let mut r = join("m");
        r.server_assignor = Some("sticky".into());
        assert_eq!(
            validate("g", &r, &s).expect_err("invalid").error,
            ResponseError::UnsupportedAssignor.code()
        );
        let mut r = join("m");
        r.subscribed_topic_regex = Some("(".into());
        assert_eq!(
            validate("g", &r, &s).expect_err("invalid").error,
            ResponseError::InvalidRegularExpression.code()
        );
    }

    #[test]
    fn regex_subscription_and_new_topics() {
        let s = settings();
        let mut t = topics();
        t.insert("other".into(), 2);
        let mut g = ConsumerGroup::new("g");
        let mut r = join("a");
        r.subscribed_topic_names = None;
        r.subscribed_topic_regex = Some("t.*".into());
        let (out, _) = g.heartbeat(r, &s, &t, "", 0);
        assert_eq!(
            parts(out.assignment.as_ref().expect("present")),
            vec![0, 1, 2, 3]
        );
        assert!(!out.assignment.expect("present").contains_key("other"));
        t.insert("t2".into(), 1);
        let (out, changed) = g.heartbeat(
            beat("a", out.member_epoch, &of(&[0, 1, 2, 3])),
            &s,
            &t,
            "",
            1,
        );
        assert!(changed, "a new matching topic bumps the group epoch");
        assert_eq!(out.assignment.expect("present")["t2"].len(), 1);
    }

    #[test]
    fn static_member_rejoins_with_its_assignment() {
        let (s, t) = (settings(), topics());
        let mut g = ConsumerGroup::new("g");
        let mut r = join("a");
        r.instance_id = Some("i".into());
        let (a, _) = g.heartbeat(r, &s, &t, "", 0);
        let mut leave = beat("a", a.member_epoch, &Assignment::new());
        leave.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
        leave.instance_id = Some("i".into());
        let (out, changed) = g.heartbeat(leave, &s, &t, "", 1);
        assert_eq!((out.error, out.member_epoch, changed), (0, -2, false));
        let mut r = join("a2");
        r.instance_id = Some("i".into());
        let (a2, _) = g.heartbeat(r, &s, &t, "", 2);
        assert_eq!(a2.error, 0);
        assert_eq!(a2.member_epoch, a.member_epoch);
        assert_eq!(a2.assignment, a.assignment);
        // The instance id is in use now.
        let mut r = join("a3");
        r.instance_id = Some("i".into());
        let (a3, _) = g.heartbeat(r, &s, &t, "", 3);
        assert_eq!(a3.error, ResponseError::UnreleasedInstanceId.code());
    }
}
