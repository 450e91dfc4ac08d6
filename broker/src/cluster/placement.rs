//! Where a new partition's replicas go, in the spirit of Kafka's `StripedReplicaPlacer`: brokers
//! are interleaved rack by rack, each partition's leader is the next broker in that stripe
//! (from a start the controller picks at random), and followers go first to racks the partition
//! does not use yet. So leaders and replicas spread evenly over brokers and racks.
//!
//! Pure: the controller calls it with the live brokers and writes the result into the
//! `CreateTopic` record, so every node applies the same assignment.

use std::collections::BTreeMap;

use super::records::PartitionAssignment;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    /// Kafka's INVALID_REPLICATION_FACTOR message.
    #[error("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {live} broker(s) are registered.")]
    NotEnoughBrokers { rf: usize, live: usize },
}

/// A placement candidate: an unfenced broker and its rack.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// Brokers ordered rack-interleaved: r1b1, r2b1, r3b1, r1b2, ... (brokers without a rack share
/// one unnamed rack, as in Kafka).
fn stripe(candidates: &[Candidate]) -> Vec<(i32, Option<String>)> {
    let mut racks: BTreeMap<Option<String>, Vec<i32>> = BTreeMap::new();
    for c in candidates {
        racks.entry(c.rack.clone()).or_default().push(c.id);
    }
    for ids in racks.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    let mut out = Vec::with_capacity(candidates.len());
    let mut round = 0;
    loop {
        let before = out.len();
        for (rack, ids) in &racks {
            if let Some(id) = ids.get(round) {
                out.push((*id, rack.clone()));
            }
        }
        if out.len() == before {
            return out;
        }
        round += 1;
    }
}

/// Assigns `count` partitions numbered from `first_partition`, `rf` replicas each.
pub fn place(
    candidates: &[Candidate],
    first_partition: usize,
    count: usize,
    rf: usize,
    start: usize,
) -> Result<Vec<PartitionAssignment>, PlacementError> {
    let stripe = stripe(candidates);
    let n = stripe.len();
    if rf == 0 || rf > n {
        return Err(PlacementError::NotEnoughBrokers { rf, live: n });
    }
    let mut out = Vec::with_capacity(count);
    for p in first_partition..first_partition + count {
        let lead = (start + p) % n;
        // Shift followers by one more every full turn of leaders, so partitions that share a
        // leader do not all share their followers too.
        let shift = 1 + (start + p) / n % (n - 1).max(1);
        let mut replicas = vec![stripe[lead].0];
        let mut racks = vec![stripe[lead].1.clone()];
        // First pass: only racks not used yet; second: anyone not chosen yet.
        for pass in 0..2 {
            for i in lead + shift..lead + shift + n {
                if replicas.len() == rf {
                    break;
                }
                let (id, rack) = &stripe[i % n];
                if !replicas.contains(id) && (pass == 1 || !racks.contains(rack)) {
                    replicas.push(*id);
                    racks.push(rack.clone());
                }
            }
        }
        assert_eq!(replicas.len(), rf, "rf <= brokers, so every pass fills");
        out.push(PartitionAssignment { replicas });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(spec: &[(i32, Option<&str>)]) -> Vec<Candidate> {
        spec.iter()
            .map(|(id, rack)| Candidate {
                id: *id,
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn leaders_spread_evenly() {
        let live = brokers(&[(1, None), (2, None), (3, None)]);
        for start in 0..5 {
            let placed = place(&live, 0, 12, 1, start).expect("place");
            let mut per: BTreeMap<i32, usize> = BTreeMap::new();
            for a in &placed {
                *per.entry(a.replicas[0]).or_default() += 1;
            }
            assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![4, 4, 4]);
        }
    }

    #[test]
    fn replicas_cover_racks_first_and_never_repeat() {
        let live = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let placed = place(&live, 0, 30, 3, 7).expect("place");
        let rack_of = |id: i32| {
            live.iter()
                .find(|c| c.id == id)
                .and_then(|c| c.rack.clone())
        };
        let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
        for a in &placed {
            let mut racks: Vec<_> = a.replicas.iter().map(|id| rack_of(*id)).collect();
            racks.sort();
            racks.dedup();
            assert_eq!(racks.len(), 3, "{a:?} spans every rack");
            *leaders.entry(a.replicas[0]).or_default() += 1;
        }
        assert!(leaders.values().all(|n| *n == 5), "{leaders:?}");
    }

    #[test]
    fn too_few_brokers_is_kafkas_error() {
        let live = brokers(&[(1, None)]);
        let err = place(&live, 0, 1, 3, 0).expect_err("rf 3 on one broker");
        assert_eq!(
            err.to_string(),
            "Unable to replicate the partition 3 time(s): The target replication factor of 3 cannot be reached because only 1 broker(s) are registered."
        );
        assert!(place(&[], 0, 1, 1, 0).is_err());
    }

    #[test]
    fn added_partitions_continue_the_stripe() {
        let live = brokers(&[(1, None), (2, None)]);
        let first = place(&live, 0, 3, 1, 0).expect("place");
        let more = place(&live, 3, 3, 1, 0).expect("place");
        let all: Vec<i32> = first.iter().chain(&more).map(|a| a.replicas[0]).collect();
        assert_eq!(all, vec![1, 2, 1, 2, 1, 2]);
    }
}
