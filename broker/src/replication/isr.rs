//! The in-sync replicas of a partition this replica leads, by Kafka's rule: a follower is in
//! sync while it has caught up with the leader's log end within `replica.lag.time.max.ms`.
//! Computed from openraft's replication progress (each follower's matched log id) and the
//! time of each follower's last acknowledged message, so a dead follower of an idle partition
//! drops out too.
//!
//! Kafka's "caught up" is a fetch reaching the log end the leader had at the previous fetch;
//! here an observation finds a follower either at the leader's last index (caught up as of its
//! last acknowledgement) or at the last index of the previous observation (caught up as of
//! that observation). Observations happen at each acks=all produce and each ISR sweep.
//!
//! Owned by: the partition's `ReplicaGroup`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};
use spool_raft::{NodeId, TypeConfig};

#[derive(Default)]
pub struct IsrTracker {
    /// The term these times belong to: a new leadership starts every voter afresh.
    term: u64,
    /// Per follower: the latest time it was known to hold everything the leader had then.
    caught_up: BTreeMap<NodeId, Instant>,
    /// The previous observation: when, and the leader's last index then.
    previous: Option<(Instant, u64)>,
}

impl IsrTracker {
    /// Takes in the leader's metrics; `None` when this replica does not lead.
    pub fn observe(&mut self, m: &RaftMetrics<TypeConfig>, now: Instant) -> Option<()> {
        if m.state != ServerState::Leader {
            self.term = 0;
            self.caught_up.clear();
            self.previous = None;
            return None;
        }
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if self.term != m.current_term {
            // Kafka's new leader keeps the ISR it was given; followers get the lag time from
            // the election to show they are alive.
            self.term = m.current_term;
            self.previous = None;
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
                    match self.previous {
                        Some((then, previous_last)) if matched >= previous_last => {
                            Some(then.min(acked))
                        }
                        _ => None,
                    }
                };
                if let Some(since) = since {
                    let entry = self.caught_up.entry(*node).or_insert(since);
                    *entry = (*entry).max(since);
                }
            }
        }
        self.previous = Some((now, last));
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
