//! Quiescence: partition groups run without openraft's per-group ticks (so no per-group
//! heartbeats and no per-group election timers); one loop per shard does their timing work
//! for all of them. See ARCHITECTURE.md, "Many groups".
//!
//! - **Liveness per node pair**: every `tick` the loop pings each peer that is a voter of one
//!   of the shard's groups (`Router::ping`, answered by the peer's RPC registry with its
//!   incarnation). A peer is down once no ping has succeeded for `down_after`.
//! - **Elections**: a follower whose leader's node is down, or that knows no leader, starts a
//!   pre-vote election (`trigger().elect(true)`): one live voter per group at once (within a
//!   short random stagger), the others as its backup a stagger later; and again after a
//!   randomized retry interval, doubling per attempt, while it still has no live leader. At
//!   most `ELECTIONS_IN_FLIGHT_MAX` of a shard's elections run at once. Raft's safety never depends
//!   on timers, so triggering elections from here changes when groups elect, never what they
//!   may decide; a voter's leader lease still refuses a candidate while a leader is writing to
//!   it.
//! - **Rejoin**: when a peer comes back (answers again, or answers with a new incarnation after
//!   a restart), the leaders of the groups it belongs to end their replication backoff to it
//!   (quiescent groups back off up to seconds from a dead node) and send one heartbeat each
//!   (`trigger().heartbeat()`), so the peer learns its leaders (and their commit index) before
//!   its own no-leader timer would make it disturb them.
//! - Commit notices need no heartbeat: openraft's replication streams send a follower the
//!   leader's new commit index when it moves.
//! - **Leader lease**: the proposer refuses writes while its leader holds no lease (no quorum
//!   acknowledgement within `election_timeout_max`, openraft's lease), so a leader cut off
//!   from its peers answers NOT_LEADER_OR_FOLLOWER at once; an idle quiescent leader sends
//!   nothing, so its lease runs out. Before a write the proposer calls [`renew_lease`]: one
//!   heartbeat round, answered by a quorum, renews it (one round trip on the first write
//!   after idling). Without it every write to a partition idle for two election timeouts was
//!   refused, and clients retried until they timed out.
//!
//! Owned by: the shard (one loop and one table per shard thread, `!Send`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, RaftMetrics, ServerState};
use spool_raft::transport::Router;
use spool_raft::{NodeId, TypeConfig};

use super::{PartitionRaft, ReplicaGroup};
use crate::runtime;

/// Elections one shard starts per round at most; the rest wait for the next round, so a dead
/// node's thousands of groups do not all elect in the same instant.
pub const ELECTIONS_PER_ROUND_MAX: usize = 256;

/// Elections one shard has running at most (started within the last retry interval and not
/// yet settled by a live leader). Each costs the voters an fsync and a round trip; with no
/// bound, thousands of groups electing at once on a loaded machine ran past their vote
/// timeouts, retried at a higher term, and kept the survivors busy without a leader.
pub const ELECTIONS_IN_FLIGHT_MAX: usize = 128;

/// A group's retry interval doubles after each election that did not give it a live leader,
/// up to this many doublings.
const RETRY_DOUBLINGS_MAX: u32 = 3;

/// Every this many rounds the loop looks at every group; in between it looks only at groups
/// with an election pending or running, and at all of them again as soon as a peer stops
/// answering, comes back, or a group registers. A settled group (a leader, or a follower of a
/// live leader) stays settled until one of those events, except for rare changes inside a
/// group (its leader stepped down without dying, a lost election left it without a leader),
/// which the full round finds within this many ticks. Looking at all 10,000 groups of a node
/// every tick cost more than half a core when idle.
pub const FULL_ROUND_EVERY: u32 = 5;

/// Rejoin heartbeats one shard sends per round at most.
pub const HEARTBEATS_PER_ROUND_MAX: usize = 512;

/// Rejoin heartbeats queued at most (one per led group and returning peer); past it the
/// follower finds its leader by electing, which is slower but safe.
pub const HEARTBEATS_QUEUED_MAX: usize = 65_536;

/// The loop's timing, from the partition groups' election timeout.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Between two rounds (pings, election checks).
    pub tick: Duration,
    /// A peer none of whose pings succeeded for this long is down.
    pub down_after: Duration,
    /// Elections for a dead leader's groups start within this window, spread at random.
    pub stagger: Duration,
    /// A group with no leader at all (just started, or a failed election) waits this long
    /// (plus the stagger) before electing: its leader's heartbeat may be on the way.
    pub no_leader_grace: Duration,
    /// Between two elections of one group that still has no live leader (plus up to as much
    /// again at random).
    pub retry: Duration,
}

impl Timing {
    pub fn from_election_timeout(election_ms: u64) -> Timing {
        let election = Duration::from_millis(election_ms.max(10));
        Timing {
            tick: election / 5,
            // The groups' own leader lease (openraft's election_timeout_max): one slow ping
            // on a loaded machine must not look like a dead node.
            down_after: election * 2,
            stagger: election / 2,
            no_leader_grace: election * 2,
            retry: election,
        }
    }
}

struct Peer {
    last_ok: Instant,
    incarnation: u64,
    pinging: bool,
    /// Set by a ping that found the peer back (after being down, or restarted): the leaders
    /// of its groups owe it a heartbeat.
    returned: bool,
    down: bool,
}

struct Slot {
    group: Weak<ReplicaGroup>,
    /// When this group elects next if it still has no live leader.
    elect_at: Cell<Option<Instant>>,
    /// When this shard last started an election of the group, and how many it started since
    /// the group last had a live leader.
    elected_at: Cell<Option<Instant>>,
    elections: Cell<u32>,
}

impl Slot {
    /// The group has a live leader (or is it): its next election starts from scratch.
    fn settled(&self) {
        self.elect_at.set(None);
        self.elected_at.set(None);
        self.elections.set(0);
    }
}

/// The shard's quiescent groups and its view of the peers.
pub struct Quiescer {
    me: NodeId,
    router: Router,
    timing: Timing,
    slots: RefCell<Vec<Slot>>,
    peers: RefCell<AHashMap<NodeId, Peer>>,
    heartbeats: RefCell<VecDeque<Weak<ReplicaGroup>>>,
    rng: Cell<u64>,
    /// Elections running at the end of the last round (see [`ELECTIONS_IN_FLIGHT_MAX`]).
    in_flight: Cell<usize>,
    /// Rounds run, for [`FULL_ROUND_EVERY`].
    rounds: Cell<u32>,
    /// The next round looks at every group (a group registered).
    full_due: Cell<bool>,
}

thread_local! {
    static QUIESCER: RefCell<Option<Rc<Quiescer>>> = const { RefCell::new(None) };
}

/// Puts `group` under this shard's loop (started by the first group).
pub fn register(group: &Rc<ReplicaGroup>, me: NodeId, router: &Router, timing: Timing) {
    let (q, fresh) = QUIESCER.with(|q| {
        let mut q = q.borrow_mut();
        let fresh = q.is_none();
        let q = q
            .get_or_insert_with(|| {
                Rc::new(Quiescer {
                    me,
                    router: router.clone(),
                    timing,
                    slots: RefCell::default(),
                    peers: RefCell::default(),
                    heartbeats: RefCell::default(),
                    rng: Cell::new(0x9e37_79b9_7f4a_7c15 ^ spool_raft::transport::incarnation()),
                    in_flight: Cell::new(0),
                    rounds: Cell::new(0),
                    full_due: Cell::new(true),
                })
            })
            .clone();
        (q, fresh)
    });
    if fresh {
        runtime::spawn_detached(run(Rc::downgrade(&q)));
    }
    q.full_due.set(true);
    q.slots.borrow_mut().push(Slot {
        group: Rc::downgrade(group),
        elect_at: Cell::new(None),
        elected_at: Cell::new(None),
        elections: Cell::new(0),
    });
}

/// When `peer`'s node last answered this shard's ping (`None`: not pinged from this shard, or
/// never answered). The ISR takes an idle, caught-up follower as in sync while it answers.
pub fn last_heard(peer: NodeId) -> Option<Instant> {
    QUIESCER.with(|q| {
        let q = q.try_borrow().ok()?;
        let peers = q.as_ref()?.peers.try_borrow().ok()?;
        peers
            .get(&peer)
            .filter(|p| p.incarnation != 0)
            .map(|p| p.last_ok)
    })
}

/// Whether a quorum acknowledged this replica as leader less than `within` ago (always, for a
/// sole voter): openraft's leader lease is this with `within` = `election_timeout_max`.
pub(super) fn quorum_acked_within(m: &RaftMetrics<TypeConfig>, within: Duration) -> bool {
    m.membership_config.voter_ids().count() <= 1
        || m.last_quorum_acked
            .as_ref()
            .is_some_and(|at| (*at).into_inner().elapsed() < within)
}

/// Whether this replica leads with a lease (`lease` long) past half its life: the proposer
/// would soon refuse a write.
fn lease_stale(m: &RaftMetrics<TypeConfig>, lease: Duration) -> bool {
    m.state == ServerState::Leader && !quorum_acked_within(m, lease / 2)
}

/// Renews an idle leader's lease before a write (see the module notes): sends one heartbeat
/// round and waits, at most `lease`, for a quorum to acknowledge it. Returns at once when the
/// lease is fresh or this replica does not lead; after `lease` without a quorum the proposer
/// refuses the write, as it should.
pub async fn renew_lease(raft: &PartitionRaft, lease: Duration) {
    if !lease_stale(&raft.metrics().borrow_watched(), lease) {
        return;
    }
    if raft.trigger().heartbeat().await.is_err() {
        return;
    }
    let deadline = Instant::now() + lease;
    let mut metrics = raft.metrics();
    loop {
        if !lease_stale(&metrics.borrow_watched(), lease) {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let changed = futures::future::select(
            Box::pin(metrics.changed()),
            Box::pin(runtime::sleep(deadline - now)),
        )
        .await;
        if let futures::future::Either::Left((Err(_), _)) = changed {
            return;
        }
    }
}

impl Quiescer {
    /// xorshift64*: enough to spread elections, no dependency.
    fn jitter(&self, max: Duration) -> Duration {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(r % nanos)
    }

    /// How long this replica waits before electing in a group that lost its leader. One live
    /// voter per group (picked by the group id, so a dead node's groups spread over the
    /// survivors) stands at once, within a quarter of the stagger; the others wait one to two
    /// staggers as its backup. When every survivor stood at random within the same window,
    /// two often stood together (pre-vote and vote take a round trip and an fsync each on a
    /// loaded machine), split the vote and both waited out a retry: that was most of the
    /// time to recover every leadership after a kill -9.
    fn first_wait(&self, group: &ReplicaGroup, voters: &[NodeId], now: Instant) -> Duration {
        let standing: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| *v == self.me || self.alive(*v, now))
            .collect();
        let first = standing
            .get((group.id % standing.len().max(1) as u64) as usize)
            .copied();
        if first.is_none_or(|f| f == self.me) {
            self.jitter(self.timing.stagger / 4)
        } else {
            self.timing.stagger + self.jitter(self.timing.stagger)
        }
    }

    fn alive(&self, peer: NodeId, now: Instant) -> bool {
        self.peers
            .borrow()
            .get(&peer)
            .is_some_and(|p| now.duration_since(p.last_ok) < self.timing.down_after)
    }

    /// One round over the shard's groups: all of them when `full` (see [`FULL_ROUND_EVERY`]),
    /// else those with an election pending or running.
    async fn round(self: &Rc<Self>) {
        let now = Instant::now();
        let rounds = self.rounds.get();
        self.rounds.set(rounds.wrapping_add(1));
        let mut full = self.full_due.replace(false) || rounds.is_multiple_of(FULL_ROUND_EVERY);
        // A peer that stopped answering makes this round look at every group, so its groups'
        // followers start electing now, not at the next full round.
        for (id, peer) in self.peers.borrow_mut().iter_mut() {
            if !peer.down && now.duration_since(peer.last_ok) >= self.timing.down_after {
                peer.down = true;
                full = true;
                tracing::info!(peer = id, "peer stopped answering pings; its groups elect");
            }
        }
        let mut wanted: BTreeSet<NodeId> = BTreeSet::new();
        let mut elect: Vec<Rc<ReplicaGroup>> = Vec::new();
        let budget = ELECTIONS_IN_FLIGHT_MAX
            .saturating_sub(self.in_flight.get())
            .min(ELECTIONS_PER_ROUND_MAX);
        let mut in_flight = 0;
        let returned: Vec<NodeId> = self
            .peers
            .borrow_mut()
            .iter_mut()
            .filter_map(|(id, p)| std::mem::take(&mut p.returned).then_some(*id))
            .collect();
        full |= !returned.is_empty();
        {
            let mut slots = self.slots.borrow_mut();
            let mut heartbeats = self.heartbeats.borrow_mut();
            slots.retain(|slot| {
                // Settled (no election pending): nothing to do until an event or the next
                // full round. Reading its metrics is what a round costs.
                if !full && slot.elect_at.get().is_none() {
                    return true;
                }
                let Some(group) = slot.group.upgrade() else {
                    return false;
                };
                let metrics = group.raft.metrics();
                let m = metrics.borrow_watched();
                let voters: Vec<NodeId> = m.membership_config.voter_ids().collect();
                wanted.extend(voters.iter().copied().filter(|v| *v != self.me));
                if m.state == ServerState::Leader {
                    slot.settled();
                    if returned.iter().any(|p| voters.contains(p))
                        && heartbeats.len() < HEARTBEATS_QUEUED_MAX
                    {
                        heartbeats.push_back(slot.group.clone());
                    }
                    return true;
                }
                if !voters.contains(&self.me) {
                    return true;
                }
                let (leader_known, leader_live) = match m.current_leader {
                    Some(l) if l != self.me => (true, self.alive(l, now)),
                    _ => (false, false),
                };
                if leader_live {
                    slot.settled();
                    return true;
                }
                // An election this shard started is still running: it is not retried before
                // its interval, and it holds a place among those in flight.
                if slot
                    .elected_at
                    .get()
                    .is_some_and(|at| now.duration_since(at) < self.timing.retry)
                {
                    in_flight += 1;
                }
                match slot.elect_at.get() {
                    None => {
                        let grace = if leader_known || voters.len() == 1 {
                            Duration::ZERO
                        } else {
                            self.timing.no_leader_grace
                        };
                        slot.elect_at
                            .set(Some(now + grace + self.first_wait(&group, &voters, now)));
                    }
                    Some(at) if at <= now && elect.len() < budget => {
                        let elections = slot.elections.get();
                        let retry =
                            self.timing.retry * 2u32.pow(elections.min(RETRY_DOUBLINGS_MAX));
                        slot.elect_at
                            .set(Some(now + retry + self.jitter(self.timing.retry)));
                        slot.elected_at.set(Some(now));
                        slot.elections.set(elections.saturating_add(1));
                        elect.push(group.clone());
                    }
                    Some(_) => {}
                }
                true
            });
        }
        self.in_flight.set(in_flight + elect.len());
        for group in elect {
            // Pre-vote first: a candidate that cannot win (a voter still hears a leader)
            // changes no term.
            if let Err(e) = group.raft.trigger().elect(true).await {
                tracing::debug!(topic = %group.topic, partition = group.partition, "no election: {e}");
            }
        }
        let due: Vec<Weak<ReplicaGroup>> = {
            let mut q = self.heartbeats.borrow_mut();
            let n = q.len().min(HEARTBEATS_PER_ROUND_MAX);
            q.drain(..n).collect()
        };
        for group in due.iter().filter_map(Weak::upgrade) {
            // The returning peer's replication stream may be deep in its backoff (up to
            // seconds): end it so the peer catches up now.
            let peers: Vec<NodeId> = group
                .raft
                .metrics()
                .borrow_watched()
                .membership_config
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| *id != self.me)
                .collect();
            if let Err(e) = group.raft.trigger().reset_backoff(peers).await {
                tracing::debug!(topic = %group.topic, partition = group.partition, "no backoff reset: {e}");
            }
            if let Err(e) = group.raft.trigger().heartbeat().await {
                tracing::debug!(topic = %group.topic, partition = group.partition, "no heartbeat: {e}");
            }
        }
        let mut to_ping = Vec::new();
        let mut peers = self.peers.borrow_mut();
        // Only a full round saw every group's voters, so only it forgets peers.
        if full {
            peers.retain(|id, _| wanted.contains(id));
        }
        for id in wanted {
            peers.entry(id).or_insert(Peer {
                // A new peer gets one down_after of grace before its groups elect.
                last_ok: now,
                incarnation: 0,
                pinging: false,
                returned: false,
                down: false,
            });
        }
        for (id, peer) in peers.iter_mut() {
            if !peer.pinging {
                peer.pinging = true;
                to_ping.push(*id);
            }
        }
        // glommio may run a spawned task at once, up to its first pending await: no borrow of
        // the peer table may be held here.
        drop(peers);
        for id in to_ping {
            runtime::spawn_detached(ping(Rc::downgrade(self), id));
        }
    }
}

async fn ping(q: Weak<Quiescer>, id: NodeId) {
    let Some(router) = q.upgrade().map(|q| q.router.clone()) else {
        return;
    };
    let ttl = q
        .upgrade()
        .map_or(Duration::from_secs(1), |q| q.timing.down_after / 2);
    let answer = router.ping(id, ttl).await;
    let Some(q) = q.upgrade() else {
        return;
    };
    let mut peers = q.peers.borrow_mut();
    let Some(peer) = peers.get_mut(&id) else {
        return;
    };
    peer.pinging = false;
    if let Ok(incarnation) = answer {
        peer.last_ok = Instant::now();
        let restarted = peer.incarnation != 0 && peer.incarnation != incarnation;
        if peer.down || restarted {
            tracing::info!(peer = id, restarted, "peer answers pings again");
            peer.returned = true;
        }
        peer.down = false;
        peer.incarnation = incarnation;
    }
}

async fn run(q: Weak<Quiescer>) {
    let mut last = Instant::now();
    loop {
        let Some(tick) = q.upgrade().map(|q| q.timing.tick) else {
            return;
        };
        runtime::sleep(tick).await;
        let Some(q) = q.upgrade() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(last) >= q.timing.down_after {
            // This process was paused (SIGSTOP, a stalled reactor): every peer's last answer
            // looks old because nobody asked. Give each peer a fresh chance to answer before
            // any of its groups elects.
            for peer in q.peers.borrow_mut().values_mut() {
                let fresh = now.checked_sub(q.timing.down_after / 2).unwrap_or(now);
                peer.last_ok = peer.last_ok.max(fresh);
            }
        }
        last = now;
        q.round().await;
    }
}
