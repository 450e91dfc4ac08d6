//! The in-sync replicas of a partition this replica leads, by Kafka's rule: a follower is in
//! sync while it has caught up with the leader's log end within `replica.lag.time.max.ms`.
//! Computed from openraft's replication progress (each follower's matched log id) and the
//! time of each follower's last acknowledged message, so a dead follower of an idle partition
//! drops out too.
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

impl IsrTracker {
    /// Takes in the leader's metrics; `None` when this replica does not lead.
    pub fn observe(
        &mut self,
        m: &RaftMetrics<TypeConfig>,
        now: Instant,
        lag_max: Duration,
    ) -> Option<()> {
        if m.state != ServerState::Leader {
            self.term = 0;
            self.caught_up.clear();
            self.history.clear();
            return None;
        }
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if self.term != m.current_term {
            // Kafka's new leader keeps the ISR it was given; followers get the lag time from
            // the election to show they are alive.
            self.term = m.current_term;
            self.history.clear();
            self.caught_up = voters.iter().map(|v| (*v, now)).collect();
        }
        self.caught_up.retain(|node, _| voters.contains(node));
        let last = m.last_log_index.unwrap_or(0);
        if let (Some(replication), Some(heartbeat)) = (&m.replication, &m.heartbeat) {
            for (node, matched) in replication {
                if *node == m.id || !voters.contains(node) {
                    continue;
                }
                let Some(acked) = heartbeat.get(node).and_then(|t| t.as_ref()).map(|t| t.0) else {
                    continue;
                };
                let matched = matched.map_or(0, |id| id.index);
                let since = if matched >= last {
                    Some(acked)
                } else {
                    // The newest sample the follower had reached.
                    self.history
                        .iter()
                        .rev()
                        .find(|(_, sampled)| matched >= *sampled)
                        .map(|(then, _)| (*then).min(acked))
                };
                if let Some(since) = since {
                    let entry = self.caught_up.entry(*node).or_insert(since);
                    *entry = (*entry).max(since);
                }
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
