//! Partition reassignment, carried out by each partition's Raft leader (AlterPartitionReassignments
//! only records the target in the metadata log; see ARCHITECTURE.md, "Reassignment").
//!
//! Every shard sweeps the groups it leads; for a partition whose metadata names a target
//! replica set other than the group's voters it takes the next step, and only one step per
//! sweep, so each decision is made from fresh metrics and a lost leadership simply hands the
//! work to the next leader's sweep:
//! 1. add each new replica as a learner (`add_learner`, not blocking: its broker opened the
//!    partition and started the group as a learner when it applied the target);
//! 2. once every learner's matched index is within [`CATCHUP_LAG_ENTRIES_MAX`] of the leader's
//!    last index, change the voters to the target (`change_membership`: joint consensus, each
//!    membership entry a control batch in the partition's log). A leader the target removes
//!    first changes the voters to the target plus itself, then hands its leadership to an
//!    in-sync target replica, whose own sweep removes it;
//! 3. once the voters are the target, report them to the controller (`ReportReassigned`),
//!    which writes the final replica set; removed replicas' brokers then stop the group and
//!    delete the partition.
//!
//! Cancelling (the target cleared) removes learners that are not voters; once the voters have
//! changed, the new voters stand and are reported as the replica set.
//!
//! Owned by: each shard (`!Send`).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use spool_raft::{NodeId, NodeInfo};

use super::leadership;
use super::ReplicaGroup;
use crate::runtime;
use crate::shard::mesh::AdminRequest;
use crate::shard::Shard;

/// Pause between two sweeps of a shard's groups.
pub const REASSIGN_SWEEP: Duration = Duration::from_millis(250);

/// While no partition has a target and the topics have not changed since a sweep found nothing
/// to do, a shard looks at its groups only every this many sweeps (a cancelled move's stray
/// learners, a lost leader's unreported voters). Reading every led group's metrics four
/// times a second was a visible share of an idle node's CPU with thousands of partitions.
pub const REASSIGN_IDLE_SWEEP_EVERY: u32 = 20;

/// Groups one sweep takes a step for at most (each step may wait for a commit).
pub const REASSIGN_STEPS_PER_SWEEP_MAX: usize = 16;

/// How far (entries) a new replica may be behind the leader's last index when it becomes a
/// voter: close enough that the joint configuration commits without waiting on it for long.
pub const CATCHUP_LAG_ENTRIES_MAX: u64 = 64;

/// How long one membership change may take before the sweep gives up on it (it may still
/// commit; the next sweep sees the result).
pub const MEMBERSHIP_CHANGE_WAIT_MAX: Duration = Duration::from_secs(10);

/// What one group's leader should do next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Nothing,
    AddLearners(Vec<i32>),
    RemoveLearners(Vec<i32>),
    /// Wait for learners to catch up.
    Wait,
    ChangeVoters(BTreeSet<NodeId>),
    TransferTo(Vec<i32>),
    Report(Vec<i32>),
}

/// The group's membership and progress as the leader sees it.
struct View {
    me: i32,
    voters: BTreeSet<i32>,
    learners: BTreeSet<i32>,
    joint: bool,
    last_index: u64,
    matched: BTreeMap<i32, u64>,
}

fn decide(view: &View, replicas: &[i32], target: Option<&[i32]>) -> Step {
    if view.joint {
        // A change in flight (or one a lost leader left half done): the next change
        // completes it.
        return match target {
            Some(t) => Step::ChangeVoters(voters_for(view.me, t)),
            None => Step::ChangeVoters(view.voters.iter().map(|v| *v as NodeId).collect()),
        };
    }
    let Some(target) = target else {
        let strays: Vec<i32> = view.learners.iter().copied().collect();
        if !strays.is_empty() {
            return Step::RemoveLearners(strays);
        }
        let current: BTreeSet<i32> = replicas.iter().copied().collect();
        return if current != view.voters {
            Step::Report(view.voters.iter().copied().collect())
        } else {
            Step::Nothing
        };
    };
    let wanted: BTreeSet<i32> = target.iter().copied().collect();
    let strays: Vec<i32> = view
        .learners
        .iter()
        .filter(|l| !wanted.contains(l))
        .copied()
        .collect();
    if !strays.is_empty() {
        return Step::RemoveLearners(strays);
    }
    if view.voters == wanted {
        return Step::Report(target.to_vec());
    }
    let missing: Vec<i32> = target
        .iter()
        .filter(|r| !view.voters.contains(r) && !view.learners.contains(r))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Step::AddLearners(missing);
    }
    let behind = view.learners.iter().any(|l| {
        view.matched
            .get(l)
            .is_none_or(|m| view.last_index.saturating_sub(*m) > CATCHUP_LAG_ENTRIES_MAX)
    });
    if behind {
        return Step::Wait;
    }
    let next = voters_for(view.me, target);
    let next_ids: BTreeSet<i32> = next.iter().map(|v| *v as i32).collect();
    if next_ids != view.voters {
        return Step::ChangeVoters(next);
    }
    // The voters are the target plus this leader, which the target removes.
    Step::TransferTo(target.to_vec())
}

/// The voters to change to: the target, plus this leader if the target removes it (it hands
/// over its leadership before it leaves).
fn voters_for(me: i32, target: &[i32]) -> BTreeSet<NodeId> {
    target
        .iter()
        .copied()
        .chain(std::iter::once(me))
        .map(|r| r as NodeId)
        .collect()
}

fn view_of(group: &ReplicaGroup) -> Option<View> {
    let metrics = group.raft.metrics();
    let m = metrics.borrow_watched();
    if m.state != ServerState::Leader {
        return None;
    }
    let membership = m.membership_config.membership();
    let voters: BTreeSet<i32> = membership.voter_ids().map(|v| v as i32).collect();
    Some(View {
        me: m.id as i32,
        learners: membership
            .learner_ids()
            .map(|v| v as i32)
            .filter(|l| !voters.contains(l))
            .collect(),
        voters,
        joint: membership.get_joint_config().len() > 1,
        last_index: m.last_log_index.unwrap_or(0),
        matched: m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter_map(|(id, log_id)| log_id.as_ref().map(|l| (*id as i32, l.index)))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Every shard: one sweep every [`REASSIGN_SWEEP`] until shutdown.
pub async fn reassign_loop(shard: Rc<Shard>) {
    if shard.config.cluster.single_node() {
        return;
    }
    let mut sweeps: u32 = 0;
    // The topics' generation when a sweep last found nothing to do.
    let mut quiet_at: Option<u64> = None;
    loop {
        runtime::sleep(REASSIGN_SWEEP).await;
        if shard.shutting_down.get() {
            return;
        }
        sweeps = sweeps.wrapping_add(1);
        let (generation, reassigning) = {
            let topics = shard.topics.borrow();
            (topics.generation(), topics.reassigning())
        };
        if !reassigning
            && quiet_at == Some(generation)
            && !sweeps.is_multiple_of(REASSIGN_IDLE_SWEEP_EVERY)
        {
            continue;
        }
        let busy = sweep(&shard).await;
        quiet_at = (!busy).then_some(generation);
    }
}

/// One pass over the groups this shard leads; whether any had something to do or wait for.
async fn sweep(shard: &Rc<Shard>) -> bool {
    let groups = shard.replica_groups();
    let mut steps = 0;
    let mut busy = false;
    for group in groups {
        if steps >= REASSIGN_STEPS_PER_SWEEP_MAX {
            return true;
        }
        let Some(meta) = shard.topics.borrow().get(&group.topic).cloned() else {
            continue;
        };
        let index = group.partition as usize;
        let replicas = meta.replicas.get(index).cloned().unwrap_or_default();
        let target = meta.targets.get(index).cloned().flatten();
        let Some(view) = view_of(&group) else {
            continue;
        };
        let step = decide(&view, &replicas, target.as_deref());
        if step == Step::Nothing {
            continue;
        }
        busy = true;
        if step == Step::Wait {
            continue;
        }
        steps += 1;
        tracing::debug!(topic = %group.topic, partition = group.partition, ?step, "reassignment step");
        take(shard, &group, step).await;
    }
    busy
}

async fn take(shard: &Rc<Shard>, group: &ReplicaGroup, step: Step) {
    let (topic, partition) = (group.topic.clone(), group.partition);
    match step {
        Step::Nothing | Step::Wait => {}
        Step::AddLearners(ids) => {
            let addrs: BTreeMap<i32, String> = shard
                .view
                .borrow()
                .brokers
                .iter()
                .map(|b| (b.id, b.rpc_addr.clone()))
                .collect();
            for id in ids {
                let Some(rpc_addr) = addrs.get(&id).filter(|a| !a.is_empty()).cloned() else {
                    continue;
                };
                let added = runtime::timeout(
                    MEMBERSHIP_CHANGE_WAIT_MAX,
                    group
                        .raft
                        .add_learner(id as NodeId, NodeInfo { rpc_addr }, false),
                )
                .await;
                if !matches!(added, Some(Ok(_))) {
                    tracing::debug!(%topic, partition, id, "learner not added: {added:?}");
                    return;
                }
            }
        }
        Step::RemoveLearners(ids) => {
            let ids: BTreeSet<NodeId> = ids.into_iter().map(|i| i as NodeId).collect();
            let removed = runtime::timeout(
                MEMBERSHIP_CHANGE_WAIT_MAX,
                group
                    .raft
                    .change_membership(openraft::ChangeMembers::RemoveNodes(ids), false),
            )
            .await;
            if !matches!(removed, Some(Ok(_))) {
                tracing::debug!(%topic, partition, "learners not removed: {removed:?}");
            }
        }
        Step::ChangeVoters(voters) => {
            let changed = runtime::timeout(
                MEMBERSHIP_CHANGE_WAIT_MAX,
                group.raft.change_membership(voters.clone(), false),
            )
            .await;
            match changed {
                Some(Ok(_)) => {
                    tracing::info!(%topic, partition, ?voters, "partition voters changed")
                }
                other => tracing::debug!(%topic, partition, "voters not changed: {other:?}"),
            }
        }
        Step::TransferTo(candidates) => {
            let ack_max = Duration::from_millis(shard.config.cluster.election_timeout_ms.max(10));
            let Some(to) = candidates
                .into_iter()
                .find(|c| leadership::in_sync(group, *c, ack_max).is_ok())
            else {
                return;
            };
            let wait = Duration::from_millis(shard.config.cluster.election_timeout_ms.max(10) * 2);
            if !leadership::transfer(group, to, wait).await {
                tracing::debug!(%topic, partition, to, "leadership not handed over yet");
            }
        }
        Step::Report(voters) => {
            let (code, message, _) = shard
                .admin_call(AdminRequest::ReportReassigned {
                    topic: topic.clone(),
                    partition,
                    voters,
                })
                .await;
            if code != 0 {
                tracing::debug!(%topic, partition, "reassignment report failed: {code} {message:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(me: i32, voters: &[i32], learners: &[(i32, u64)], last: u64) -> View {
        View {
            me,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().map(|(l, _)| *l).collect(),
            joint: false,
            last_index: last,
            matched: learners.iter().copied().collect(),
        }
    }

    fn ids(v: &[i32]) -> BTreeSet<NodeId> {
        v.iter().map(|i| *i as NodeId).collect()
    }

    #[test]
    fn moves_a_replica_step_by_step() {
        let replicas = [1, 2, 3];
        let target = Some(&[1, 2, 4][..]);
        assert_eq!(
            decide(&view(1, &[1, 2, 3], &[], 100), &replicas, target),
            Step::AddLearners(vec![4])
        );
        assert_eq!(
            decide(&view(1, &[1, 2, 3], &[(4, 10)], 100), &replicas, target),
            Step::Wait
        );
        assert_eq!(
            decide(&view(1, &[1, 2, 3], &[(4, 90)], 100), &replicas, target),
            Step::ChangeVoters(ids(&[1, 2, 4]))
        );
        assert_eq!(
            decide(&view(1, &[1, 2, 4], &[], 100), &replicas, target),
            Step::Report(vec![1, 2, 4])
        );
    }

    #[test]
    fn a_removed_leader_hands_over_first() {
        let replicas = [1, 2];
        let target = Some(&[2, 3][..]);
        assert_eq!(
            decide(&view(1, &[1, 2], &[(3, 100)], 100), &replicas, target),
            Step::ChangeVoters(ids(&[1, 2, 3]))
        );
        assert_eq!(
            decide(&view(1, &[1, 2, 3], &[], 100), &replicas, target),
            Step::TransferTo(vec![2, 3])
        );
        // The new leader removes the old one.
        assert_eq!(
            decide(&view(2, &[1, 2, 3], &[], 100), &replicas, target),
            Step::ChangeVoters(ids(&[2, 3]))
        );
    }

    #[test]
    fn cancelling_reverts_learners_or_keeps_changed_voters() {
        assert_eq!(
            decide(&view(1, &[1, 2], &[(3, 5)], 100), &[1, 2], None),
            Step::RemoveLearners(vec![3])
        );
        assert_eq!(
            decide(&view(1, &[1, 2], &[], 100), &[1, 2], None),
            Step::Nothing
        );
        assert_eq!(
            decide(&view(1, &[1, 3], &[], 100), &[1, 2], None),
            Step::Report(vec![1, 3])
        );
        // A changed target drops learners it no longer names.
        assert_eq!(
            decide(&view(1, &[1, 2], &[(3, 5)], 100), &[1, 2], Some(&[1, 4])),
            Step::RemoveLearners(vec![3])
        );
    }
}
