//! Moving the leadership of replicated partitions, Kafka's three ways: preferred-leader election
//! on request (ElectLeaders), automatic rebalancing (`auto.leader.rebalance.enable`) and
//! controlled shutdown (SIGTERM, `controlled.shutdown.enable`).
//!
//! Kafka's controller elects a leader by writing a record; a Raft group's leadership can only be
//! handed over by its current leader (`trigger().transfer_leader(to)`: the leader stops
//! proposing, the target waits until its log holds the leader's last entry and then wins the
//! election at once, before any follower's timeout). So every move runs on the node that leads
//! the group: a request for another node's partition travels there as a `MoveLeader` RPC on the
//! controller transport (answered by that node itself, not by the controller), then over the
//! shard mesh to the partition's shard ([`move_local`]). The leader refuses a target that is not
//! in sync ([`in_sync`]): a transfer to a replica that cannot catch up within the election
//! timeout would leave the group leaderless until a follower's election timeout fires.
//!
//! A restarted broker never takes leadership before it has caught up: Raft's vote rule refuses a
//! candidate whose log is behind a majority, and every move here checks [`in_sync`] first.
//!
//! Owned by: the partition's shard (every function runs on the shard it is called on).

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kafka_protocol::error::ResponseError;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use spool_raft::NodeId;

use super::ReplicaGroup;
use crate::cluster::rpc::{ControllerRequest, ControllerResponse};
use crate::runtime;
use crate::shard::mesh::{Reply, Request};
use crate::shard::Shard;

/// How long a leader waits for one transfer to take effect (the target's log catching up to
/// the leader's last entry, bounded by openraft at one election timeout, plus its election).
pub const TRANSFER_WAIT_MAX: Duration = Duration::from_secs(5);

/// Entries a follower may lack and still be handed the leadership: it receives them during
/// the transfer, before it stands (openraft gives it one election timeout to).
pub const TRANSFER_LAG_ENTRIES_MAX: u64 = 256;

/// Transfers one shard runs at once (rebalancing, controlled shutdown, one ElectLeaders).
pub const TRANSFERS_IN_FLIGHT_MAX: usize = 64;

/// Preferred-leader elections one shard starts per rebalance round (KRaft's
/// `MAX_ELECTIONS_PER_IMBALANCE` is 1000 per controller round).
pub const REBALANCE_ELECTIONS_MAX: usize = 1000;

/// How long SIGTERM waits for the broker's leaderships to move before it stops anyway.
pub const CONTROLLED_SHUTDOWN_WAIT_MAX: Duration = Duration::from_secs(10);

/// Nodes an ElectLeaders request follows "not the leader, ask X" hints through.
const MOVE_HOPS_MAX: usize = 3;

/// How often a waiter polls the shard's metadata for a reported leader.
const METADATA_POLL: Duration = Duration::from_millis(20);

/// The outcome of one move, as a Kafka error code and message; `leader` is the leader the
/// answering replica knows (-1: none), the hint a caller follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveAnswer {
    pub error_code: i16,
    pub message: Option<String>,
    pub leader: i32,
}

impl MoveAnswer {
    fn ok() -> MoveAnswer {
        MoveAnswer {
            error_code: 0,
            message: None,
            leader: -1,
        }
    }

    fn error(e: ResponseError, message: impl Into<String>, leader: i32) -> MoveAnswer {
        MoveAnswer {
            error_code: e.code(),
            message: Some(message.into()),
            leader,
        }
    }

    pub fn into_reply(self) -> Reply {
        Reply::Admin {
            error_code: self.error_code,
            message: self.message,
            value: i64::from(self.leader),
        }
    }

    /// The answer as a reply or an RPC carries it: the leader in `value`.
    fn carried(error_code: i16, message: Option<String>, value: i64) -> MoveAnswer {
        MoveAnswer {
            error_code,
            message,
            leader: i32::try_from(value).unwrap_or(-1),
        }
    }

    fn from_reply(reply: Option<Reply>) -> MoveAnswer {
        match reply {
            Some(Reply::Admin {
                error_code,
                message,
                value,
            }) => MoveAnswer::carried(error_code, message, value),
            _ => MoveAnswer::error(
                ResponseError::PreferredLeaderNotAvailable,
                "the broker is shutting down",
                -1,
            ),
        }
    }
}

/// Whether replica `to` could take over `group` now: this replica leads, `to` is another voter
/// that acknowledged within `ack_max` and whose log is at most [`TRANSFER_LAG_ENTRIES_MAX`]
/// entries behind. Err names why not.
pub fn in_sync(group: &ReplicaGroup, to: i32, ack_max: Duration) -> Result<(), String> {
    use openraft::Instant as _;
    let metrics = group.raft.metrics();
    let m = metrics.borrow_watched();
    if m.state != ServerState::Leader {
        return Err("this replica does not lead".into());
    }
    let to_id = to as NodeId;
    if to_id == m.id {
        return Err("the replica already leads".into());
    }
    if !m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == to_id)
    {
        return Err(format!("broker {to} is not a replica of the partition"));
    }
    let acked = m
        .heartbeat
        .as_ref()
        .and_then(|h| h.get(&to_id).cloned().flatten())
        .map(|at| at.into_inner().elapsed());
    // A quiescent group sends no heartbeats: an idle follower answers for itself through its
    // node's answers to the shard's pings (the caught-up check below still applies).
    let heard = super::quiesce::last_heard(to_id).map(|at| at.elapsed());
    let acked = match (acked, heard) {
        (Some(a), Some(h)) => Some(a.min(h)),
        (a, h) => a.or(h),
    };
    match acked {
        Some(age) if age <= ack_max => {}
        _ => return Err(format!("replica {to} has not answered the leader lately")),
    }
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&to_id).cloned().flatten())
        .map(|log_id| log_id.index);
    let last = m.last_log_index.unwrap_or(0);
    match matched {
        Some(index) if last.saturating_sub(index) <= TRANSFER_LAG_ENTRIES_MAX => Ok(()),
        _ => Err(format!(
            "replica {to} is not in sync (it has entries up to {matched:?}, the leader {last})"
        )),
    }
}

/// Hands `group`'s leadership to `to` and waits (up to `wait`) until `to` leads; true if it
/// does.
pub async fn transfer(group: &ReplicaGroup, to: i32, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    if let Err(e) = group.raft.trigger().transfer_leader(to as NodeId).await {
        tracing::debug!(topic = %group.topic, partition = group.partition, "transfer not started: {e}");
        return false;
    }
    wait_for_leader(group, to, deadline).await
}

/// Waits until this replica sees `to` lead (a follower with `to` as its leader, or `to` itself
/// leading), or `deadline`.
async fn wait_for_leader(group: &ReplicaGroup, to: i32, deadline: Instant) -> bool {
    wait_until_led(group, deadline, |m| {
        if m.id == to as NodeId {
            m.state == ServerState::Leader
        } else {
            m.state != ServerState::Leader && m.current_leader == Some(to as NodeId)
        }
    })
    .await
}

/// Waits until another replica leads (this one follows a known leader), or `deadline`.
async fn wait_for_other_leader(group: &ReplicaGroup, deadline: Instant) -> bool {
    wait_until_led(group, deadline, |m| {
        m.state != ServerState::Leader && m.current_leader.is_some_and(|l| l != m.id)
    })
    .await
}

async fn wait_until_led(
    group: &ReplicaGroup,
    deadline: Instant,
    done: impl Fn(&openraft::RaftMetrics<spool_raft::TypeConfig>) -> bool,
) -> bool {
    let mut metrics = group.raft.metrics();
    loop {
        if done(&metrics.borrow_watched()) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match runtime::timeout(left, metrics.changed()).await {
            Some(Ok(())) => {}
            // The group stopped, or the time is up.
            Some(Err(_)) | None => return false,
        }
    }
}

fn ack_max(shard: &Shard) -> Duration {
    // A live follower acknowledges every heartbeat interval (a fifth of the election timeout).
    Duration::from_millis(shard.config.cluster.election_timeout_ms.max(10))
}

/// On the partition's shard: moves the leadership of `topic`-`partition` to `to` if this
/// replica leads it. Not leading, it answers NOT_LEADER_OR_FOLLOWER with the leader it knows;
/// with no leader at all and `to` being this replica, it stands for election (the preferred
/// replica of a group mid-election).
pub async fn move_local(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    to: i32,
    wait: Duration,
) -> MoveAnswer {
    let me = shard.config.node_id;
    let wait = wait.min(TRANSFER_WAIT_MAX);
    let Some(p) = shard.partition(topic, partition) else {
        let code = shard.missing_partition_code(topic, partition);
        let leader = shard
            .current_leader(topic, partition)
            .map_or(-1, |(leader, _)| leader);
        return MoveAnswer {
            error_code: code,
            message: Some(format!(
                "broker {me} holds no replica of {topic}-{partition}"
            )),
            leader,
        };
    };
    let Some(group) = p.replicated() else {
        // Not a Raft group: its only replica leads.
        return if to == me {
            MoveAnswer::error(ResponseError::ElectionNotNeeded, "", me)
        } else {
            MoveAnswer::error(
                ResponseError::PreferredLeaderNotAvailable,
                format!("{topic}-{partition} has no replica on broker {to}"),
                me,
            )
        };
    };
    let (state, known_leader) = {
        let metrics = group.raft.metrics();
        let m = metrics.borrow_watched();
        (m.state, m.current_leader.map_or(-1, |l| l as i32))
    };
    if state == ServerState::Leader {
        if to == me {
            return MoveAnswer::error(ResponseError::ElectionNotNeeded, "", me);
        }
        if let Err(why) = in_sync(&group, to, ack_max(shard)) {
            return MoveAnswer::error(ResponseError::PreferredLeaderNotAvailable, why, me);
        }
        return if transfer(&group, to, wait).await {
            MoveAnswer {
                leader: to,
                ..MoveAnswer::ok()
            }
        } else {
            MoveAnswer::error(
                ResponseError::PreferredLeaderNotAvailable,
                format!("leadership did not move to broker {to} within {wait:?}"),
                current_leader(&group),
            )
        };
    }
    if known_leader < 0 && to == me {
        // No leader: an election is due anyway; the preferred replica stands now. Raft's vote
        // rule elects it only if its log is as complete as a majority's.
        if let Err(e) = group.raft.trigger().elect(false).await {
            return MoveAnswer::error(
                ResponseError::PreferredLeaderNotAvailable,
                e.to_string(),
                -1,
            );
        }
        return if wait_for_leader(&group, me, Instant::now() + wait).await {
            MoveAnswer {
                leader: me,
                ..MoveAnswer::ok()
            }
        } else {
            MoveAnswer::error(
                ResponseError::PreferredLeaderNotAvailable,
                format!("broker {me} was not elected within {wait:?}"),
                current_leader(&group),
            )
        };
    }
    MoveAnswer::error(
        ResponseError::NotLeaderOrFollower,
        format!("broker {me} does not lead {topic}-{partition}"),
        known_leader,
    )
}

fn current_leader(group: &ReplicaGroup) -> i32 {
    group
        .raft
        .metrics()
        .borrow_watched()
        .current_leader
        .map_or(-1, |l| l as i32)
}

/// How often a new leader looks whether its log is committed before a coordinator loads it.
const COMMIT_POLL: Duration = Duration::from_millis(5);

/// For a coordinator that became leader of `group` in `term`: waits until the high watermark
/// reaches the log's end as it is now, so the load reads only committed records (a new
/// leader's log may hold entries of the old term that are not committed yet). False if the
/// leadership moved or the shard is stopping meanwhile.
pub async fn wait_committed_as_leader(
    shard: &Shard,
    group: &ReplicaGroup,
    term: u64,
    end: i64,
) -> bool {
    while group.hw.offset.get() < end {
        if group.leadership() != Some(term) || shard.shutting_down.get() {
            return false;
        }
        runtime::sleep(COMMIT_POLL).await;
    }
    true
}

/// Follows this replica's leadership of `group` for a coordinator whose state is the
/// partition's log (the group and transaction coordinators): `load(term)` when it becomes
/// leader (false: leadership moved before the load ended), `unload()` when it stops leading
/// or the group stops (`shutting_down`). Ends when the group stops.
pub async fn follow_leadership<F>(
    group: &ReplicaGroup,
    shutting_down: &std::cell::Cell<bool>,
    mut load: impl FnMut(u64) -> F,
    unload: impl Fn(),
) where
    F: std::future::Future<Output = bool>,
{
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = group.raft.metrics();
    let mut loaded: Option<u64> = None;
    loop {
        let leading = group.leadership();
        if leading != loaded {
            if loaded.take().is_some() {
                unload();
            }
            if let Some(term) = leading {
                if load(term).await {
                    loaded = Some(term);
                }
            }
        }
        if metrics.changed().await.is_err() || shutting_down.get() {
            if loaded.is_some() {
                unload();
            }
            return;
        }
    }
}

/// Shard 0's RPC listener: serves a `MoveLeader` from another node (on the partition's shard);
/// None for every other message (the controller's).
pub async fn serve_rpc(shard: &Rc<Shard>, payload: &[u8]) -> Option<Vec<u8>> {
    let Ok(ControllerRequest::MoveLeader {
        topic,
        partition,
        to,
        wait_ms,
    }) = ControllerRequest::decode(payload)
    else {
        return None;
    };
    let answer = ask_shard(shard, topic, partition, to, wait_ms).await;
    let response = ControllerResponse::Done {
        error_code: answer.error_code,
        message: answer.message,
        value: i64::from(answer.leader),
        index: 0,
    };
    Some(response.encode().unwrap_or_default())
}

async fn ask_shard(
    shard: &Rc<Shard>,
    topic: String,
    partition: i32,
    to: i32,
    wait_ms: u64,
) -> MoveAnswer {
    let owner = shard.owner(&topic, partition);
    MoveAnswer::from_reply(
        shard
            .call(
                owner,
                Request::MoveLeader {
                    topic,
                    partition,
                    to,
                    wait_ms,
                },
            )
            .await,
    )
}

/// Asks node `node` to move `topic`-`partition`'s leadership to `to` (this node: over the
/// mesh; another: over the cluster RPC), within `deadline`.
async fn ask_node(
    shard: &Rc<Shard>,
    node: i32,
    topic: &str,
    partition: i32,
    to: i32,
    deadline: Instant,
) -> MoveAnswer {
    let left = deadline.saturating_duration_since(Instant::now());
    let wait_ms = left.min(TRANSFER_WAIT_MAX).as_millis() as u64;
    if node == shard.config.node_id {
        return ask_shard(shard, topic.to_string(), partition, to, wait_ms).await;
    }
    let unreachable = |why: String| {
        MoveAnswer::error(
            ResponseError::PreferredLeaderNotAvailable,
            format!("cannot reach broker {node}, the partition's leader: {why}"),
            -1,
        )
    };
    let request = ControllerRequest::MoveLeader {
        topic: topic.to_string(),
        partition,
        to,
        wait_ms,
    };
    // The RPC outlives the leader's own wait by a little, so its answer arrives.
    let ttl = Duration::from_millis(wait_ms) + Duration::from_secs(2);
    match shard.call_peer(node, &request, ttl).await {
        Ok(ControllerResponse::Done {
            error_code,
            message,
            value,
            ..
        }) => MoveAnswer::carried(error_code, message, value),
        Ok(other) => unreachable(format!("unexpected answer {other:?}")),
        Err(e) => unreachable(e),
    }
}

/// Kafka's preferred-leader election of one partition (ElectLeaders, election type 0), from any
/// shard of any broker: ELECTION_NOT_NEEDED when the preferred replica (the first) leads,
/// PREFERRED_LEADER_NOT_AVAILABLE when it is not live or not in sync, else the current leader
/// hands the leadership over; success is answered once this broker's metadata names the
/// preferred replica as leader (bounded by `deadline`).
pub async fn elect_preferred(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    deadline: Instant,
) -> (i16, Option<String>) {
    let known = {
        let topics = shard.topics.borrow();
        topics.get(topic).and_then(|meta| {
            let p = usize::try_from(partition).ok()?;
            let replicas = meta.replicas.get(p)?.clone();
            Some((replicas, meta.leaders.get(p).copied()))
        })
    };
    let Some((replicas, leader)) = known else {
        return (
            ResponseError::UnknownTopicOrPartition.code(),
            Some(format!("No such partition as {topic}-{partition}")),
        );
    };
    let Some(&preferred) = replicas.first() else {
        return (
            ResponseError::UnknownTopicOrPartition.code(),
            Some(format!("{topic}-{partition} has no replicas")),
        );
    };
    let live = |id: i32| shard.view.borrow().is_live(id);
    if !live(preferred) {
        return (
            ResponseError::PreferredLeaderNotAvailable.code(),
            Some(format!(
                "Failed to elect leader for partition {topic}-{partition} under strategy PreferredReplicaPartitionLeaderElectionStrategy: broker {preferred} is not alive"
            )),
        );
    }
    // An unreplicated partition (a one-node cluster's, `__consumer_offsets`) is led by its
    // only replica (see `ClusterView::leader`).
    let leader = match leader {
        Some((leader, _)) if shard.replicates(topic) => leader,
        _ => preferred,
    };
    if leader == preferred {
        return (ResponseError::ElectionNotNeeded.code(), None);
    }
    let mut target = if leader >= 0 && live(leader) {
        leader
    } else {
        preferred
    };
    let mut answer = MoveAnswer::error(ResponseError::PreferredLeaderNotAvailable, "", -1);
    for _ in 0..MOVE_HOPS_MAX {
        answer = ask_node(shard, target, topic, partition, preferred, deadline).await;
        let follow = answer.error_code == ResponseError::NotLeaderOrFollower.code()
            && answer.leader >= 0
            && answer.leader != target;
        if !follow {
            break;
        }
        if answer.leader == preferred {
            // The preferred replica leads already; this broker's metadata has not caught up.
            return (ResponseError::ElectionNotNeeded.code(), None);
        }
        target = answer.leader;
    }
    if answer.error_code == ResponseError::NotLeaderOrFollower.code() {
        // No leader was found to hand over: the group is mid-election.
        return (
            ResponseError::PreferredLeaderNotAvailable.code(),
            Some(format!(
                "{topic}-{partition} has no leader to hand over from right now"
            )),
        );
    }
    if answer.error_code != 0 {
        return (answer.error_code, answer.message.filter(|m| !m.is_empty()));
    }
    // Answer once this broker's Metadata shows the move (the new leader reports it to the
    // controller), so a client's next Metadata here sees the election's result.
    while Instant::now() < deadline {
        let named = shard
            .current_leader(topic, partition)
            .map(|(leader, _)| leader);
        if named == Some(preferred) {
            break;
        }
        runtime::sleep(METADATA_POLL).await;
    }
    (0, None)
}

/// The partitions this shard holds a replicated group of, with their replica lists.
fn local_groups(shard: &Rc<Shard>) -> Vec<(Rc<ReplicaGroup>, Vec<i32>)> {
    let topics = shard.topics.borrow().all();
    let mut out = Vec::new();
    for meta in topics {
        for index in 0..meta.partitions {
            if shard.owner(&meta.name, index) != shard.id {
                continue;
            }
            let Some(group) = shard
                .partition(&meta.name, index)
                .and_then(|p| p.replicated())
            else {
                continue;
            };
            let replicas = meta
                .replicas
                .get(index as usize)
                .cloned()
                .unwrap_or_default();
            out.push((group, replicas));
        }
    }
    out
}

/// Brokers whose leader imbalance is above `percentage`: the share of the partitions they are
/// preferred for (first replica) that another broker leads, from the metadata every shard
/// holds (Kafka's rule: `leader.imbalance.per.broker.percentage`). Pure, for the unit tests.
pub fn imbalanced_brokers(
    partitions: impl IntoIterator<Item = (i32, i32)>,
    percentage: u32,
) -> std::collections::BTreeSet<i32> {
    let mut counts: std::collections::BTreeMap<i32, (u64, u64)> = Default::default();
    for (preferred, leader) in partitions {
        let c = counts.entry(preferred).or_default();
        c.0 += 1;
        if leader != preferred {
            c.1 += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(_, (total, off))| *off * 100 > u64::from(percentage) * *total)
        .map(|(broker, _)| broker)
        .collect()
}

/// When this shard first saw each group it leads in its current term (rebalancing state).
pub type LedSince = ahash::AHashMap<spool_raft::transport::GroupId, (u64, Instant)>;

/// Notes the term each group this shard leads is led in, and since when; forgets the others.
fn note_leaderships(groups: &[(Rc<ReplicaGroup>, Vec<i32>)], led_since: &mut LedSince) {
    let now = Instant::now();
    let mut seen = ahash::AHashSet::new();
    for (group, _) in groups {
        if let Some(term) = group.leadership() {
            seen.insert(group.id);
            let entry = led_since.entry(group.id).or_insert((term, now));
            if entry.0 != term {
                *entry = (term, now);
            }
        }
    }
    led_since.retain(|id, _| seen.contains(id));
}

/// One rebalance round on this shard: every group it leads whose preferred replica is another
/// live, in-sync broker with a leader imbalance above the configured percentage gets its
/// leadership moved back (at most [`REBALANCE_ELECTIONS_MAX`]). A group is moved only once
/// this replica has led it for `settle`: a broker in controlled shutdown hands its
/// leaderships over and stops answering for them at once, but the new leader's last
/// acknowledgement from it stays fresh for a moment, long enough to look in sync and be
/// handed the leadership straight back (a transfer to a stopped replica leaves the group
/// leaderless until an election timeout). Returns the moves made.
pub async fn rebalance_round(
    shard: &Rc<Shard>,
    led_since: &mut LedSince,
    settle: Duration,
) -> usize {
    let me = shard.config.node_id;
    let pairs: Vec<(i32, i32)> = {
        let topics = shard.topics.borrow().all();
        topics
            .iter()
            .filter(|meta| shard.replicates(&meta.name))
            .flat_map(|meta| {
                meta.replicas
                    .iter()
                    .zip(meta.leaders.iter())
                    .filter_map(|(replicas, (leader, _))| Some((*replicas.first()?, *leader)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let groups = local_groups(shard);
    note_leaderships(&groups, led_since);
    let imbalanced = imbalanced_brokers(pairs, shard.config.leader_imbalance_per_broker_percentage);
    if imbalanced.is_empty() {
        return 0;
    }
    let ack_max = ack_max(shard);
    let now = Instant::now();
    let candidates: Vec<(Rc<ReplicaGroup>, i32)> = groups
        .into_iter()
        .filter(|(group, _)| {
            led_since
                .get(&group.id)
                .is_some_and(|(_, since)| now.saturating_duration_since(*since) >= settle)
        })
        .filter_map(|(group, replicas)| {
            let preferred = *replicas.first()?;
            let live = shard.view.borrow().is_live(preferred);
            (preferred != me
                && imbalanced.contains(&preferred)
                && live
                && group.leadership().is_some()
                && in_sync(&group, preferred, ack_max).is_ok())
            .then_some((group, preferred))
        })
        .take(REBALANCE_ELECTIONS_MAX)
        .collect();
    let moved = std::cell::Cell::new(0usize);
    futures::stream::iter(candidates)
        .for_each_concurrent(TRANSFERS_IN_FLIGHT_MAX, |(group, preferred)| {
            let moved = &moved;
            async move {
                if transfer(&group, preferred, TRANSFER_WAIT_MAX).await {
                    moved.set(moved.get() + 1);
                    tracing::info!(topic = %group.topic, partition = group.partition, to = preferred, "leadership moved back to the preferred replica");
                }
            }
        })
        .await;
    moved.get()
}

/// Every shard: `auto.leader.rebalance.enable`'s loop, one round every
/// `leader.imbalance.check.interval.seconds`, until shutdown.
pub async fn rebalance_loop(
    shard: Rc<Shard>,
    shutdown: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    if !shard.config.auto_leader_rebalance_enable || shard.config.cluster.single_node() {
        return;
    }
    let interval = Duration::from_secs(shard.config.leader_imbalance_check_interval_seconds);
    // Twice the time after which a silent replica stops counting as in sync.
    let settle = ack_max(&shard) * 2;
    let step = Duration::from_millis(100).min(interval);
    let mut next = Instant::now() + interval;
    let mut led_since = LedSince::default();
    while !shutdown.load(Ordering::Relaxed) {
        runtime::sleep(step).await;
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + interval;
        if shard.view.borrow().ready {
            rebalance_round(&shard, &mut led_since, settle).await;
        }
    }
}

/// SIGTERM on every shard (Kafka's controlled shutdown): stops following (so no leadership
/// lands here any more), hands every leadership this shard holds to an in-sync follower (the
/// earliest in the replica list), and waits until each move shows in this broker's metadata,
/// all within [`CONTROLLED_SHUTDOWN_WAIT_MAX`]. A group with no in-sync follower keeps its
/// leader until the broker stops; its followers then elect one after their timeout.
pub async fn controlled_shutdown(shard: &Rc<Shard>) {
    let started = Instant::now();
    let deadline = started + CONTROLLED_SHUTDOWN_WAIT_MAX;
    let me = shard.config.node_id;
    let groups = local_groups(shard);
    if groups.is_empty() {
        return;
    }
    let ack_max = ack_max(shard);
    // A live follower takes over within about two election timeouts (its log catching up,
    // then its election).
    let shutdown_try = (ack_max * 2 + Duration::from_millis(500)).min(TRANSFER_WAIT_MAX);
    let mut leading = Vec::new();
    for (group, replicas) in groups {
        if group.leadership().is_some() {
            leading.push((group, replicas));
        } else {
            // A follower that peers cannot reach cannot be handed a leadership (by a
            // rebalance or another broker's shutdown) in the moment before it stops.
            shard.raft_groups.deregister(group.id);
        }
    }
    let total = leading.len();
    let moved = std::cell::Cell::new(0usize);
    futures::stream::iter(leading)
        .for_each_concurrent(TRANSFERS_IN_FLIGHT_MAX, |(group, replicas)| {
            let moved = &moved;
            async move {
                // A fenced follower is a broker that has left (or not yet caught up). A
                // follower that stopped a moment ago still looks in sync for an ack window,
                // so a transfer that does not take within a try goes on to the next one.
                let live = |id: i32| shard.view.borrow().is_live(id);
                let mut moved_away = false;
                for to in replicas.iter().copied().filter(|r| *r != me && live(*r)) {
                    if in_sync(&group, to, ack_max).is_err() {
                        continue;
                    }
                    let wait = deadline
                        .saturating_duration_since(Instant::now())
                        .min(shutdown_try);
                    if let Err(e) = group.raft.trigger().transfer_leader(to as NodeId).await {
                        tracing::warn!(topic = %group.topic, partition = group.partition, to, "transfer not started: {e}");
                        continue;
                    }
                    if wait_for_other_leader(&group, Instant::now() + wait).await {
                        moved_away = true;
                        break;
                    }
                    tracing::info!(topic = %group.topic, partition = group.partition, to, "leadership did not move yet; trying the next follower");
                }
                if !moved_away {
                    tracing::warn!(topic = %group.topic, partition = group.partition, "leadership did not move before shutdown");
                    return;
                }
                shard.raft_groups.deregister(group.id);
                moved.set(moved.get() + 1);
                // Clients told NOT_LEADER_OR_FOLLOWER here get the new leader from this
                // broker's metadata (KIP-951), so wait until it names it (a metadata quorum
                // that lost its majority never will: bounded by one try).
                let named_by = deadline.min(Instant::now() + shutdown_try);
                while Instant::now() < named_by
                    && shard
                        .current_leader(&group.topic, group.partition)
                        .is_none_or(|(leader, _)| leader == me)
                {
                    runtime::sleep(METADATA_POLL).await;
                }
            }
        })
        .await;
    if total > 0 {
        tracing::info!(
            shard = shard.id,
            "controlled shutdown: moved {} of {total} leaderships in {:?}",
            moved.get(),
            started.elapsed()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imbalance_is_the_share_of_preferred_partitions_led_elsewhere() {
        // Broker 1 is preferred for 10 partitions and leads 9: 10% off, not above 10%.
        let mut pairs: Vec<(i32, i32)> = (0..9).map(|_| (1, 1)).collect();
        pairs.push((1, 2));
        assert!(imbalanced_brokers(pairs.clone(), 10).is_empty());
        // A second partition led elsewhere: 20% > 10%.
        pairs.push((1, 3));
        assert_eq!(
            imbalanced_brokers(pairs.clone(), 10)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![1]
        );
        // 0% moves back any partition not led by its preferred replica (KRaft's behaviour).
        assert_eq!(
            imbalanced_brokers(vec![(2, 2), (3, 3), (3, 1)], 0)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![3]
        );
        // 100% never moves anything.
        assert!(imbalanced_brokers(vec![(1, 2), (1, 3)], 100).is_empty());
        // No leader (-1) counts as led elsewhere.
        assert_eq!(
            imbalanced_brokers(vec![(4, -1)], 10)
                .into_iter()
                .collect::<Vec<_>>(),
            vec![4]
        );
    }
}
