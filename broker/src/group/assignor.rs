//! Server-side partition assignors of the consumer group protocol (KIP-848): `uniform` (Kafka's
//! default, sticky and balanced) and `range` (contiguous ranges per topic). Pure functions from
//! the members' subscriptions and the topics' partition counts to a target assignment.
//!
//! Invariants of every result: each partition of a subscribed topic is assigned to exactly one
//! member subscribed to that topic; a member gets only partitions of topics it subscribes to.

use std::collections::{BTreeMap, BTreeSet};

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// Kafka's names, in Kafka's default order of `group.consumer.assignors` (the first is the
/// default).
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Bounds the balancing passes of `uniform`: each pass moves one partition.
const BALANCE_MOVES_MAX: usize = 1 << 20;

/// Computes the target assignment with `assignor` (`range`, or `uniform` for anything else).
///
/// `members`: member id → subscribed (existing) topics; `topics`: topic → partition count;
/// `previous`: the last target assignment (for stickiness).
pub fn assign(
    assignor: &str,
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let out = match assignor {
        "range" => range(members, topics),
        _ => uniform(members, topics, previous),
    };
    debug_assert!(is_valid(members, topics, &out));
    out
}

/// Kafka's server-side `range`: per topic, the members subscribed to it in member-id order get
/// contiguous ranges; the first `partitions % members` get one more.
pub fn range(
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, &count) in topics {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, subs)| subs.contains(topic))
            .map(|(id, _)| id)
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        let n = subscribers.len() as i32;
        let (base, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribers.into_iter().enumerate() {
            let len = base + i32::from((i as i32) < extra);
            if len == 0 {
                continue;
            }
            let parts = out
                .get_mut(member)
                .expect("every member has an entry")
                .entry(topic.clone())
                .or_default();
            parts.extend(next..next + len);
            next += len;
        }
        assert_eq!(next, count, "range covers every partition");
    }
    out
}

/// `uniform`: keeps every previous placement that is still valid, gives each unassigned partition
/// to the least-loaded eligible member, then moves partitions from the most- to the least-loaded
/// member that can take them until no such move narrows the spread. With identical subscriptions
/// the counts differ by at most one.
pub fn uniform(
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let mut count: BTreeMap<String, usize> = members.keys().map(|m| (m.clone(), 0)).collect();
    let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
    // Quota per member when subscriptions are identical: keep at most ceil(total / members).
    let total: usize = topics
        .iter()
        .filter(|(t, _)| members.values().any(|s| s.contains(*t)))
        .map(|(_, &n)| n.max(0) as usize)
        .sum();
    let quota = if members.is_empty() {
        0
    } else {
        total.div_ceil(members.len())
    };
    for (member, subs) in members {
        let Some(prev) = previous.get(member) else {
            continue;
        };
        for (topic, parts) in prev {
            let Some(&n) = topics.get(topic) else {
                continue;
            };
            if !subs.contains(topic) {
                continue;
            }
            for &p in parts {
                if p >= n || count[member] >= quota || taken.contains(&(topic.clone(), p)) {
                    continue;
                }
                taken.insert((topic.clone(), p));
                out.get_mut(member)
                    .expect("member entry")
                    .entry(topic.clone())
                    .or_default()
                    .insert(p);
                *count.get_mut(member).expect("member count") += 1;
            }
        }
    }
    for (topic, &n) in topics {
        for p in 0..n {
            if taken.contains(&(topic.clone(), p)) {
                continue;
            }
            let least = members
                .iter()
                .filter(|(_, subs)| subs.contains(topic))
                .map(|(id, _)| id)
                .min_by_key(|id| (count[*id], (*id).clone()));
            let Some(member) = least else { break };
            let member = member.clone();
            taken.insert((topic.clone(), p));
            out.get_mut(&member)
                .expect("member entry")
                .entry(topic.clone())
                .or_default()
                .insert(p);
            *count.get_mut(&member).expect("member count") += 1;
        }
    }
    balance(members, &mut out, &mut count);
    out
}

/// Moves single partitions from a most-loaded member to a least-loaded one subscribed to its
/// topic while that narrows the spread by at least two.
fn balance(
    members: &BTreeMap<String, BTreeSet<String>>,
    out: &mut BTreeMap<String, Assignment>,
    count: &mut BTreeMap<String, usize>,
) {
    for _ in 0..BALANCE_MOVES_MAX {
        let mut moved = false;
        let mut by_load: Vec<(usize, String)> =
            count.iter().map(|(m, &c)| (c, m.clone())).collect();
        by_load.sort();
        'search: for (high_count, high) in by_load.iter().rev() {
            for (low_count, low) in by_load.iter() {
                if low_count + 1 >= *high_count {
                    break;
                }
                let subs = &members[low];
                let candidate = out[high]
                    .iter()
                    .filter(|(t, _)| subs.contains(*t))
                    .find_map(|(t, ps)| ps.iter().next_back().map(|&p| (t.clone(), p)));
                if let Some((topic, p)) = candidate {
                    let from = out.get_mut(high).expect("member entry");
                    let parts = from.get_mut(&topic).expect("topic entry");
                    parts.remove(&p);
                    if parts.is_empty() {
                        from.remove(&topic);
                    }
                    out.get_mut(low)
                        .expect("member entry")
                        .entry(topic)
                        .or_default()
                        .insert(p);
                    *count.get_mut(high).expect("count") -= 1;
                    *count.get_mut(low).expect("count") += 1;
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

/// Every partition of a subscribed topic exactly once, each to a subscriber.
pub fn is_valid(
    members: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
    out: &BTreeMap<String, Assignment>,
) -> bool {
    let mut seen: BTreeSet<(String, i32)> = BTreeSet::new();
    for (member, assignment) in out {
        let Some(subs) = members.get(member) else {
            return false;
        };
        for (topic, parts) in assignment {
            let Some(&n) = topics.get(topic) else {
                return false;
            };
            if !subs.contains(topic) {
                return false;
            }
            for &p in parts {
                if p < 0 || p >= n || !seen.insert((topic.clone(), p)) {
                    return false;
                }
            }
        }
    }
    let expected: usize = topics
        .iter()
        .filter(|(t, _)| members.values().any(|s| s.contains(*t)))
        .map(|(_, &n)| n.max(0) as usize)
        .sum();
    seen.len() == expected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        list.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn topics(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn counts(out: &BTreeMap<String, Assignment>) -> Vec<usize> {
        out.values()
            .map(|a| a.values().map(|p| p.len()).sum())
            .collect()
    }

    #[test]
    fn uniform_balances_identical_subscriptions() {
        let members = subs(&[("a", &["t", "u"]), ("b", &["t", "u"]), ("c", &["t", "u"])]);
        let topics = topics(&[("t", 7), ("u", 3)]);
        let out = uniform(&members, &topics, &BTreeMap::new());
        assert!(is_valid(&members, &topics, &out));
        let c = counts(&out);
        assert_eq!(c.iter().sum::<usize>(), 10);
        assert!(
            c.iter().max().expect("present") - c.iter().min().expect("present") <= 1,
            "{c:?}"
        );
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins() {
        let two = subs(&[("a", &["t"]), ("b", &["t"])]);
        let topics = topics(&[("t", 6)]);
        let first = uniform(&two, &topics, &BTreeMap::new());
        let three = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let second = uniform(&three, &topics, &first);
        assert!(is_valid(&three, &topics, &second));
        assert_eq!(counts(&second), vec![2, 2, 2]);
        // a and b only lose partitions; nothing moves between them.
        for m in ["a", "b"] {
            assert!(second[m]["t"].is_subset(&first[m]["t"]), "{m} kept its own");
        }
    }

    #[test]
    fn uniform_respects_different_subscriptions() {
        let members = subs(&[("a", &["t"]), ("b", &["t", "u"])]);
        let topics = topics(&[("t", 4), ("u", 4)]);
        let out = uniform(&members, &topics, &BTreeMap::new());
        assert!(is_valid(&members, &topics, &out));
        assert!(!out["a"].contains_key("u"));
        assert_eq!(counts(&out), vec![4, 4]);
    }

    #[test]
    fn range_assigns_contiguous_ranges_per_topic() {
        let members = subs(&[("a", &["t", "u"]), ("b", &["t", "u"]), ("c", &["t"])]);
        let topics = topics(&[("t", 8), ("u", 3)]);
        let out = range(&members, &topics);
        assert!(is_valid(&members, &topics, &out));
        let parts = |m: &str, t: &str| -> Vec<i32> {
            out[m]
                .get(t)
                .map(|p| p.iter().copied().collect())
                .unwrap_or_default()
        };
        assert_eq!(parts("a", "t"), vec![0, 1, 2]);
        assert_eq!(parts("b", "t"), vec![3, 4, 5]);
        assert_eq!(parts("c", "t"), vec![6, 7]);
        assert_eq!(parts("a", "u"), vec![0, 1]);
        assert_eq!(parts("b", "u"), vec![2]);
        assert!(parts("c", "u").is_empty());
    }

    #[test]
    fn more_members_than_partitions() {
        let members = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let topics = topics(&[("t", 2)]);
        for name in ASSIGNORS {
            let out = assign(name, &members, &topics, &BTreeMap::new());
            assert!(is_valid(&members, &topics, &out), "{name}");
            assert_eq!(counts(&out).iter().sum::<usize>(), 2, "{name}");
        }
    }
}
