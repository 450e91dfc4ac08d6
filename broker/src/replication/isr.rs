//! The in-sync replicas of a partition this replica leads, by Kafka's rule: a follower is in
//! sync while it has caught up with the leader's log end within `replica.lag.time.max.ms`.
//! Computed from openraft's replication progress (each follower's matched log id) and the
//! time of each follower's last acknowledged message, so a dead follower of an idle partition
//! drops out too. A quiescent group sends no heartbeats, so an idle follower that holds the
//! leader's last entry counts as caught up as of its node's last answer to the shard's pings.
//!
//! Kafka's "caught up" is a fetch reaching the log end the leader had at some earlier time;
//! here the leader keeps a short history of its last index (one sample per
//! `lag_max / HISTORY_MAX * 2`, so it spans twice the lag), and a follower whose matched index
//! reached a sample's index was caught up as of that sample's time (or of its last
//! acknowledgement, if earlier). Under steady load a follower is always a little behind the
//! newest entry, so comparing with the newest observation alone would drop it from the ISR.
//! Observations happen at each acks=all produce and each ISR sweep.
//!
//! Owned by: the partition's `ReplicaGroup`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};
use spool_raft::{NodeId, TypeConfig};

/// Samples of the leader's last index kept for the caught-up rule.
pub const HISTORY_MAX: usize = 64;

#[derive(Default)]
pub struct IsrTracker {
    /// The term these times belong to: a new leadership starts every voter afresh.
    term: u64,
    /// Per follower: the latest time it was known to hold everything the leader had then.
    caught_up: BTreeMap<NodeId, Instant>,
    /// Earlier observations, oldest first: when, and the leader's last index then.
    history: VecDeque<(Instant, u64)>,
}

/// What the tracker needs from a replica's Raft metrics, so the rule can be tested without a
/// running group.
pub struct LeaderView {
    pub id: NodeId,
    pub leader: bool,
    pub term: u64,
    pub voters: Vec<NodeId>,
    /// The leader's last log index.
    pub last: u64,
    /// Per follower: its matched index and the time of its last acknowledgement, if any.
    pub followers: Vec<(NodeId, u64, Option<Instant>)>,
}

impl LeaderView {
    pub fn of(m: &RaftMetrics<TypeConfig>) -> LeaderView {
        let followers = match (&m.replication, &m.heartbeat) {
            (Some(replication), Some(heartbeat)) => replication
                .iter()
                .map(|(node, matched)| {
                    let acked = heartbeat.get(node).and_then(|t| t.as_ref()).map(|t| t.0);
                    (*node, matched.map_or(0, |id| id.index), acked)
                })
                .collect(),
            _ => Vec::new(),
        };
        LeaderView {
            id: m.id,
            leader: m.state == ServerState::Leader,
            term: m.current_term,
            voters: m.membership_config.membership().voter_ids().collect(),
            last: m.last_log_index.unwrap_or(0),
            followers,
        }
    }
}

impl IsrTracker {
    /// Takes in the leader's view; `None` when this replica does not lead. `heard` is when a
    /// follower's node last answered a ping (the quiescent groups' liveness, see
    /// `quiesce.rs`): an idle group sends no heartbeats, so an idle follower that holds the
    /// leader's last entry stays in sync while its node answers.
    pub fn observe(
        &mut self,
        v: &LeaderView,
        now: Instant,
        lag_max: Duration,
        heard: impl Fn(NodeId) -> Option<Instant>,
    ) -> Option<()> {
        if !v.leader {
            self.term = 0;
            self.caught_up.clear();
            self.history.clear();
            return None;
        }
        if self.term != v.term {
            // Kafka's new leader keeps the ISR it was given; followers get the lag time from
            // the election to show they are alive.
            self.term = v.term;
            self.history.clear();
            self.caught_up = v.voters.iter().map(|n| (*n, now)).collect();
        }
        self.caught_up.retain(|node, _| v.voters.contains(node));
        let last = v.last;
        for (node, matched, acked) in &v.followers {
            let (node, matched) = (*node, *matched);
            if node == v.id || !v.voters.contains(&node) {
                continue;
            }
            let since = if matched >= last {
                // Holds everything: in sync as of its last acknowledgement, or of its node's
                // last ping answer (never later than now).
                let heard = heard(node).map(|t| t.min(now));
                match (*acked, heard) {
                    (Some(a), Some(h)) => Some(a.max(h)),
                    (a, h) => a.or(h),
                }
            } else {
                // The newest sample the follower had reached.
                acked.and_then(|acked| {
                    self.history
                        .iter()
                        .rev()
                        .find(|(_, sampled)| matched >= *sampled)
                        .map(|(then, _)| (*then).min(acked))
                })
            };
            if let Some(since) = since {
                let entry = self.caught_up.entry(node).or_insert(since);
                *entry = (*entry).max(since);
            }
        }
        let spacing = (lag_max * 2 / HISTORY_MAX as u32).max(Duration::from_millis(1));
        if self
            .history
            .back()
            .is_none_or(|(then, _)| now.saturating_duration_since(*then) >= spacing)
        {
            if self.history.len() >= HISTORY_MAX {
                self.history.pop_front();
            }
            self.history.push_back((now, last));
        }
        Some(())
    }

    /// The leader and every voter caught up within `lag_max`, by node id.
    pub fn in_sync(&self, leader: NodeId, now: Instant, lag_max: Duration) -> Vec<i32> {
        let mut isr: Vec<i32> = self
            .caught_up
            .iter()
            .filter(|(node, at)| **node == leader || now.saturating_duration_since(**at) <= lag_max)
            .map(|(node, _)| *node as i32)
            .collect();
        if !isr.contains(&(leader as i32)) {
            isr.push(leader as i32);
            isr.sort_unstable();
        }
        isr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(10);

    fn view(term: u64, last: u64, followers: Vec<(NodeId, u64, Option<Instant>)>) -> LeaderView {
        LeaderView {
            id: 1,
            leader: true,
            term,
            voters: vec![1, 2, 3],
            last,
            followers,
        }
    }

    fn leads(observed: Option<()>) {
        assert!(observed.is_some(), "the view is a leader's");
    }

    fn never(_: NodeId) -> Option<Instant> {
        None
    }

    #[test]
    fn followers_that_ack_the_last_entry_are_in_sync() {
        let t0 = Instant::now();
        let mut isr = IsrTracker::default();
        let v = view(2, 10, vec![(2, 10, Some(t0)), (3, 10, Some(t0))]);
        leads(isr.observe(&v, t0, LAG, never));
        let later = t0 + LAG / 2;
        let v = view(2, 20, vec![(2, 20, Some(later)), (3, 20, Some(later))]);
        leads(isr.observe(&v, later, LAG, never));
        assert_eq!(isr.in_sync(1, later + LAG, LAG), vec![1, 2, 3]);
    }

    #[test]
    fn a_lagging_follower_drops_out_after_the_lag_time() {
        let t0 = Instant::now();
        let mut isr = IsrTracker::default();
        let mut now = t0;
        // Node 3 acknowledges all along but stays at index 5 while the leader moves on.
        for step in 0..30u64 {
            let v = view(
                2,
                5 + step * 10,
                vec![(2, 5 + step * 10, Some(now)), (3, 5, Some(now))],
            );
            leads(isr.observe(&v, now, LAG, |_| Some(now)));
            now += Duration::from_secs(1);
        }
        assert_eq!(isr.in_sync(1, now, LAG), vec![1, 2]);
    }

    #[test]
    fn a_follower_slightly_behind_under_load_stays_in_sync() {
        let t0 = Instant::now();
        let mut isr = IsrTracker::default();
        let mut now = t0;
        for step in 1..60u64 {
            // Always one sample behind the newest entry.
            let last = step * 10;
            let v = view(
                2,
                last,
                vec![(2, last - 10, Some(now)), (3, last - 10, Some(now))],
            );
            leads(isr.observe(&v, now, LAG, never));
            now += Duration::from_millis(500);
        }
        assert_eq!(isr.in_sync(1, now, LAG), vec![1, 2, 3]);
    }

    #[test]
    fn a_dead_follower_of_an_idle_partition_drops_out() {
        let t0 = Instant::now();
        let mut isr = IsrTracker::default();
        let v = view(2, 10, vec![(2, 10, Some(t0)), (3, 10, Some(t0))]);
        leads(isr.observe(&v, t0, LAG, |_| Some(t0)));
        // Node 3 stops answering pings at t0; node 2 keeps answering.
        let now = t0 + LAG * 2;
        let v = view(2, 10, vec![(2, 10, Some(t0)), (3, 10, Some(t0))]);
        leads(isr.observe(&v, now, LAG, |n| Some(if n == 2 { now } else { t0 })));
        assert_eq!(isr.in_sync(1, now, LAG), vec![1, 2]);
    }

    #[test]
    fn an_idle_caught_up_follower_whose_node_answers_stays_in_sync() {
        let t0 = Instant::now();
        let mut isr = IsrTracker::default();
        let v = view(2, 10, vec![(2, 10, Some(t0)), (3, 10, Some(t0))]);
        leads(isr.observe(&v, t0, LAG, never));
        // No acknowledgement since t0 (a quiescent group sends no heartbeats), pings answered.
        let now = t0 + LAG * 3;
        leads(isr.observe(&v, now, LAG, |_| Some(now - Duration::from_millis(200))));
        assert_eq!(isr.in_sync(1, now, LAG), vec![1, 2, 3]);
        // Without ping answers the same follower would have dropped out.
        let mut deaf = IsrTracker::default();
        leads(deaf.observe(&v, t0, LAG, never));
        leads(deaf.observe(&v, now, LAG, never));
        assert_eq!(deaf.in_sync(1, now, LAG), vec![1]);
    }

    #[test]
    fn an_idle_follower_behind_the_leader_is_not_saved_by_pings() {
        let t0 = Instant::now();
        let mut isr = IsrTracker::default();
        let v = view(2, 10, vec![(2, 10, Some(t0)), (3, 4, Some(t0))]);
        leads(isr.observe(&v, t0, LAG, |_| Some(t0)));
        let now = t0 + LAG * 3;
        leads(isr.observe(&v, now, LAG, |_| Some(now)));
        assert_eq!(isr.in_sync(1, now, LAG), vec![1, 2]);
    }

    #[test]
    fn a_new_term_starts_every_voter_afresh() {
        let t0 = Instant::now();
        let mut isr = IsrTracker::default();
        let v = view(2, 10, vec![(2, 10, Some(t0)), (3, 2, Some(t0))]);
        leads(isr.observe(&v, t0, LAG, never));
        let now = t0 + LAG * 2;
        leads(isr.observe(&v, now, LAG, never));
        assert_eq!(isr.in_sync(1, now, LAG), vec![1]);
        // Re-elected in term 3: every voter gets the lag time again.
        let v3 = view(3, 11, vec![]);
        leads(isr.observe(&v3, now, LAG, never));
        assert_eq!(isr.in_sync(1, now + LAG / 2, LAG), vec![1, 2, 3]);
        // Losing leadership forgets everything.
        let follower = LeaderView {
            leader: false,
            ..view(3, 11, vec![])
        };
        assert!(isr.observe(&follower, now, LAG, never).is_none());
    }
}
