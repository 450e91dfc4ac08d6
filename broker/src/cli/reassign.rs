//! `spool cluster decommission --broker N`: moves every replica off broker N and waits until
//! the moves are done, through AlterPartitionReassignments and ListPartitionReassignments (so
//! it works against Apache Kafka too; it is a client like `kafka-reassign-partitions.sh`).
//!
//! Each replica on N is replaced, in the partition's replica list at N's place (so a partition
//! N preferred to lead gets its replacement as preferred leader), by the live broker that holds
//! the fewest replicas so far among those the partition does not use yet: the load spreads
//! evenly over the others. A partition with nowhere to go (its replication factor equals the
//! brokers left) fails the command before anything moves.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest,
};

use super::client::{topic_name, Client};
use super::error::CliError;

/// Partitions per AlterPartitionReassignments request (Spool and KRaft accept 10,000).
const PARTITIONS_PER_REQUEST_MAX: usize = 1000;

/// Pause between two ListPartitionReassignments while waiting.
const POLL: Duration = Duration::from_millis(500);

/// The replica lists that move broker `gone`'s replicas to the others, evenly: `current` is
/// every partition's replica list, `live` the brokers that may take replicas.
pub fn plan(
    current: &BTreeMap<(String, i32), Vec<i32>>,
    live: &BTreeSet<i32>,
    gone: i32,
) -> Result<BTreeMap<(String, i32), Vec<i32>>, String> {
    let mut load: BTreeMap<i32, usize> = live
        .iter()
        .filter(|b| **b != gone)
        .map(|b| (*b, 0))
        .collect();
    for replicas in current.values() {
        for r in replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut moves = BTreeMap::new();
    for ((topic, partition), replicas) in current {
        let Some(at) = replicas.iter().position(|r| *r == gone) else {
            continue;
        };
        let Some((&to, _)) = load
            .iter()
            .filter(|(b, _)| !replicas.contains(b))
            .min_by_key(|(b, n)| (**n, **b))
        else {
            return Err(format!(
                "{topic}-{partition} has {} replicas and no other broker is left to take broker {gone}'s",
                replicas.len()
            ));
        };
        *load.entry(to).or_default() += 1;
        let mut target = replicas.clone();
        target[at] = to;
        moves.insert((topic.clone(), *partition), target);
    }
    Ok(moves)
}

pub fn decommission(
    client: &mut Client,
    broker: i32,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let local = |source| CliError::Local {
        what: "cannot write the output",
        source,
    };
    let cluster = super::cluster::describe_cluster(client)?;
    if !cluster.brokers.iter().any(|b| b.broker_id.0 == broker) {
        return Err(CliError::kafka(
            "decommission",
            kafka_protocol::ResponseError::BrokerNotAvailable.code(),
            Some(&format!("broker {broker} is not registered")),
        ));
    }
    let live: BTreeSet<i32> = cluster
        .brokers
        .iter()
        .filter(|b| !b.is_fenced)
        .map(|b| b.broker_id.0)
        .collect();
    let metadata = client.metadata(None)?;
    let mut current = BTreeMap::new();
    for topic in &metadata.topics {
        let Some(name) = topic.name.as_ref() else {
            continue;
        };
        for p in &topic.partitions {
            current.insert(
                (name.0.to_string(), p.partition_index),
                p.replica_nodes.iter().map(|b| b.0).collect::<Vec<i32>>(),
            );
        }
    }
    let moves = plan(&current, &live, broker).map_err(|m| {
        CliError::kafka(
            "decommission",
            kafka_protocol::ResponseError::InvalidReplicationFactor.code(),
            Some(&m),
        )
    })?;
    writeln!(out, "Moving {} replicas off broker {broker}", moves.len()).map_err(local)?;
    let list: Vec<(&(String, i32), &Vec<i32>)> = moves.iter().collect();
    for chunk in list.chunks(PARTITIONS_PER_REQUEST_MAX) {
        let mut topics: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
        for ((topic, partition), target) in chunk {
            writeln!(out, "  {topic}-{partition}: {target:?}").map_err(local)?;
            topics.entry(topic.as_str()).or_default().push(
                ReassignablePartition::default()
                    .with_partition_index(*partition)
                    .with_replicas(Some(target.iter().map(|b| BrokerId(*b)).collect())),
            );
        }
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(60_000)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        ReassignableTopic::default()
                            .with_name(topic_name(name))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let answer = client.bootstrap().send(&request)?.0;
        if answer.error_code != 0 {
            return Err(CliError::kafka(
                "AlterPartitionReassignments",
                answer.error_code,
                answer.error_message.as_ref().map(|m| m.as_str()),
            ));
        }
        for topic in &answer.responses {
            for p in &topic.partitions {
                if p.error_code != 0 {
                    return Err(CliError::kafka(
                        format!(
                            "AlterPartitionReassignments {}-{}",
                            topic.name.0.as_str(),
                            p.partition_index
                        ),
                        p.error_code,
                        p.error_message.as_ref().map(|m| m.as_str()),
                    ));
                }
            }
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let answer = client
            .bootstrap()
            .send(&ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000))?
            .0;
        if answer.error_code != 0 {
            return Err(CliError::kafka(
                "ListPartitionReassignments",
                answer.error_code,
                answer.error_message.as_ref().map(|m| m.as_str()),
            ));
        }
        let pending = answer
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.partition_index))
            })
            .filter(|k| moves.contains_key(k))
            .count();
        if pending == 0 {
            writeln!(out, "Broker {broker} holds no replicas any more").map_err(local)?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::kafka(
                "decommission",
                kafka_protocol::ResponseError::RequestTimedOut.code(),
                Some(&format!(
                    "{pending} reassignments still in progress after {}s",
                    timeout.as_secs()
                )),
            ));
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_replacements_evenly_and_keeps_position() {
        let mut current = BTreeMap::new();
        for p in 0..6 {
            current.insert(("t".to_string(), p), vec![1, 2 + (p % 2)]);
        }
        let live: BTreeSet<i32> = [1, 2, 3, 4].into_iter().collect();
        let moves = plan(&current, &live, 1).expect("plan");
        assert_eq!(moves.len(), 6);
        let mut per_broker: BTreeMap<i32, usize> = BTreeMap::new();
        for target in moves.values() {
            assert!(!target.contains(&1));
            assert_eq!(target.len(), 2);
            *per_broker.entry(target[0]).or_default() += 1;
        }
        // Broker 4 held nothing, so it takes the most; every broker ends with 4 replicas.
        let mut total: BTreeMap<i32, usize> = BTreeMap::new();
        for t in moves.values() {
            for r in t {
                *total.entry(*r).or_default() += 1;
            }
        }
        assert_eq!(total.values().copied().collect::<Vec<_>>(), vec![4, 4, 4]);
    }

    #[test]
    fn nowhere_to_go_is_an_error() {
        let mut current = BTreeMap::new();
        current.insert(("t".to_string(), 0), vec![1, 2, 3]);
        let live: BTreeSet<i32> = [1, 2, 3].into_iter().collect();
        assert!(plan(&current, &live, 1).is_err());
    }
}
