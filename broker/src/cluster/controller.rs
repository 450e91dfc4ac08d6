//! The active controller's decisions: a request is checked against the current image and turned
//! into the metadata records to propose ([`plan`]); once committed, the apply outcomes become
//! the answer ([`answer`]). Pure, so every rule here is unit-tested without a quorum; the
//! proposing, liveness and fencing live in `node.rs`.
//!
//! The controller serializes its writes (one proposal in flight, planned against an image that
//! has applied everything before it), as KRaft's single controller thread does, so a plan never
//! races another plan. Races with nothing else exist: only the leader proposes.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;

use super::image::{ApplyOutcome, MetadataImage};
use super::placement::{self, Candidate};
use super::records::{MetadataRecord, PartitionAssignment};
use super::rpc::{ConfigChange, ConfigOp, ControllerRequest};
use crate::topic_config;

/// Producer ids handed to a broker per `AllocateProducerIds` (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Replicas of one partition at most: each is a voter of the partition's Raft group, and
/// every voter costs the leader a replication stream (Kafka has no bound; RF above 5 is
/// rare).
pub const REPLICATION_FACTOR_MAX: i16 = 16;

/// Why a request is refused before anything is proposed: a Kafka error and its message.
pub type Refusal = (ResponseError, String);

/// What to propose for a request, or nothing to propose (validate-only or a no-op).
#[derive(Debug, PartialEq)]
pub enum Plan {
    Propose(Vec<MetadataRecord>),
    Nothing,
}

fn refuse(e: ResponseError, message: impl Into<String>) -> Refusal {
    (e, message.into())
}

fn candidates(image: &MetadataImage) -> Vec<Candidate> {
    image
        .live_brokers()
        .map(|b| Candidate {
            id: b.registration.id,
            rack: b.registration.rack.clone(),
        })
        .collect()
}

/// Checks explicit assignments (`replicas` per partition, as `kafka-topics.sh
/// --replica-assignment` sends them) against the registered brokers.
fn explicit(
    image: &MetadataImage,
    assignments: &[Vec<i32>],
) -> Result<Vec<PartitionAssignment>, Refusal> {
    let mut out = Vec::with_capacity(assignments.len());
    for (p, replicas) in assignments.iter().enumerate() {
        if replicas.is_empty() {
            return Err(refuse(
                ResponseError::InvalidReplicaAssignment,
                format!("The manual partition assignment includes an empty replica list for partition {p}."),
            ));
        }
        let mut seen = replicas.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != replicas.len() {
            return Err(refuse(
                ResponseError::InvalidReplicaAssignment,
                format!("The manual partition assignment includes the partition {p} with duplicate replicas."),
            ));
        }
        if let Some(unknown) = replicas.iter().find(|r| !image.brokers.contains_key(r)) {
            return Err(refuse(
                ResponseError::InvalidReplicaAssignment,
                format!("The manual partition assignment includes broker {unknown}, but no such broker is registered."),
            ));
        }
        if replicas.len() > REPLICATION_FACTOR_MAX as usize {
            return Err(too_many_replicas(replicas.len() as i16));
        }
        out.push(PartitionAssignment {
            replicas: replicas.clone(),
        });
    }
    Ok(out)
}

fn too_many_replicas(rf: i16) -> Refusal {
    refuse(
        ResponseError::InvalidReplicationFactor,
        format!("Replication factor {rf} is above Spool's maximum of {REPLICATION_FACTOR_MAX}."),
    )
}

/// Turns a request into records, checked against `image`. `start` is the placement stripe's
/// starting point (random per request, as Kafka's placer).
pub fn plan(
    image: &MetadataImage,
    request: &ControllerRequest,
    start: usize,
) -> Result<Plan, Refusal> {
    match request {
        ControllerRequest::CreateTopic {
            name,
            id,
            partitions,
            replication,
            assignments,
            configs,
            validate_only,
        } => {
            if image.topics.contains_key(name) {
                return Err(refuse(
                    ResponseError::TopicAlreadyExists,
                    format!("Topic '{name}' already exists."),
                ));
            }
            let placed = if assignments.is_empty() {
                let live = candidates(image);
                let rf = (*replication).max(0) as usize;
                if rf > live.len() || rf == 0 {
                    let e = placement::PlacementError::NotEnoughBrokers {
                        rf,
                        live: live.len(),
                    };
                    return Err(refuse(
                        ResponseError::InvalidReplicationFactor,
                        e.to_string(),
                    ));
                }
                if *replication > REPLICATION_FACTOR_MAX {
                    return Err(too_many_replicas(*replication));
                }
                placement::place(&live, 0, (*partitions).max(0) as usize, rf, start)
                    .map_err(|e| refuse(ResponseError::InvalidReplicationFactor, e.to_string()))?
            } else {
                explicit(image, assignments)?
            };
            if *validate_only {
                return Ok(Plan::Nothing);
            }
            Ok(Plan::Propose(vec![MetadataRecord::CreateTopic {
                name: name.clone(),
                id: *id,
                configs: configs.clone(),
                partitions: placed,
            }]))
        }
        ControllerRequest::DeleteTopic { name } => match image.topics.get(name) {
            Some(topic) => Ok(Plan::Propose(vec![MetadataRecord::DeleteTopic {
                id: topic.id,
            }])),
            None => Err(refuse(
                ResponseError::UnknownTopicOrPartition,
                "This server does not host this topic-partition.",
            )),
        },
        ControllerRequest::CreatePartitions {
            name,
            count,
            assignments,
            validate_only,
        } => {
            let Some(topic) = image.topics.get(name) else {
                return Err(refuse(
                    ResponseError::UnknownTopicOrPartition,
                    format!("The topic '{name}' does not exist."),
                ));
            };
            let current = topic.partitions.len() as i32;
            if *count <= current {
                return Err(refuse(
                    ResponseError::InvalidPartitions,
                    format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
                ));
            }
            let added = (*count - current) as usize;
            let placed = if assignments.is_empty() {
                let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
                placement::place(&candidates(image), current as usize, added, rf, start)
                    .map_err(|e| refuse(ResponseError::InvalidReplicationFactor, e.to_string()))?
            } else {
                if assignments.len() != added {
                    return Err(refuse(
                        ResponseError::InvalidReplicaAssignment,
                        format!("Increasing the number of partitions by {added} but {} assignments provided.", assignments.len()),
                    ));
                }
                explicit(image, assignments)?
            };
            if *validate_only {
                return Ok(Plan::Nothing);
            }
            Ok(Plan::Propose(vec![MetadataRecord::CreatePartitions {
                id: topic.id,
                added: placed,
            }]))
        }
        ControllerRequest::AlterTopicConfigs {
            name,
            changes,
            replace,
            validate_only,
        } => {
            let topic = image.topics.get(name);
            let none = BTreeMap::new();
            let current = topic.map_or(&none, |t| &t.configs);
            let altered = altered_configs(current, changes, *replace)?;
            // Kafka validates the whole resulting set, then that the topic exists, in that order.
            let mut after = current.clone();
            apply_altered(&mut after, &altered);
            for (key, value) in &after {
                topic_config::validate(key, value)
                    .map_err(|message| refuse(ResponseError::InvalidConfig, message))?;
            }
            let Some(topic) = topic else {
                return Err(refuse(
                    ResponseError::UnknownTopicOrPartition,
                    format!("The topic '{name}' does not exist."),
                ));
            };
            if *validate_only || altered.is_empty() {
                return Ok(Plan::Nothing);
            }
            Ok(Plan::Propose(vec![MetadataRecord::AlterTopicConfigs {
                id: topic.id,
                changes: altered,
            }]))
        }
        ControllerRequest::AlterBrokerConfigs {
            broker,
            changes,
            replace,
            validate_only,
        } => {
            let none = BTreeMap::new();
            let current = image.broker_configs.get(broker).unwrap_or(&none);
            let altered = altered_configs(current, changes, *replace)?;
            for (name, value) in &altered {
                if let Some(value) = value {
                    crate::dynamic_config::validate(name, value).map_err(
                        |(request, message)| {
                            let e = if request {
                                ResponseError::InvalidRequest
                            } else {
                                ResponseError::InvalidConfig
                            };
                            refuse(e, message)
                        },
                    )?;
                }
            }
            if *validate_only || altered.is_empty() {
                return Ok(Plan::Nothing);
            }
            Ok(Plan::Propose(vec![MetadataRecord::AlterBrokerConfigs {
                broker: *broker,
                changes: altered,
            }]))
        }
        ControllerRequest::ReportLeaders { leader, reports } => {
            // Reports of partitions that no longer exist (deleted meanwhile) or that the
            // image already shows at this epoch or a later one change nothing.
            propose_any(
                reports
                    .iter()
                    .filter_map(|r| {
                        let (id, state) = find_partition(image, &r.topic, r.partition)?;
                        (state.leader < 0 || state.leader_epoch < r.epoch).then_some(
                            MetadataRecord::PartitionLeader {
                                id,
                                partition: r.partition,
                                leader: *leader,
                                epoch: r.epoch,
                            },
                        )
                    })
                    .collect(),
            )
        }
        ControllerRequest::ReportIsr { leader, changes } => {
            // Reports from a leader the image does not name yet (its own leadership report
            // is still on its way) or from an older epoch are dropped; the leader reports
            // again at its next sweep.
            propose_any(
                changes
                    .iter()
                    .filter_map(|c| {
                        let (id, state) = find_partition(image, &c.topic, c.partition)?;
                        (state.leader == *leader
                            && state.leader_epoch == c.epoch
                            && state.isr != c.isr
                            && c.isr.iter().all(|r| state.replicas.contains(r)))
                        .then(|| MetadataRecord::PartitionIsr {
                            id,
                            partition: c.partition,
                            epoch: c.epoch,
                            isr: c.isr.clone(),
                        })
                    })
                    .collect(),
            )
        }
        ControllerRequest::AlterReassignment {
            topic,
            partition,
            target,
        } => {
            let (id, state) = partition_of(image, topic, *partition)?;
            match target {
                None if state.target.is_none() => Err(refuse(
                    ResponseError::NoReassignmentInProgress,
                    format!("Partition {topic}-{partition} has no ongoing reassignment."),
                )),
                None => Ok(Plan::Propose(vec![MetadataRecord::PartitionReassign {
                    id,
                    partition: *partition,
                    target: None,
                }])),
                Some(target) => {
                    let checked =
                        explicit(image, std::slice::from_ref(target)).map_err(|(e, m)| {
                            (
                                e,
                                m.replace("partition 0", &format!("partition {partition}")),
                            )
                        })?;
                    let target = checked
                        .into_iter()
                        .next()
                        .map(|a| a.replicas)
                        .unwrap_or_default();
                    if state.target.is_none() && target == state.replicas {
                        return Ok(Plan::Nothing);
                    }
                    Ok(Plan::Propose(vec![MetadataRecord::PartitionReassign {
                        id,
                        partition: *partition,
                        target: Some(target),
                    }]))
                }
            }
        }
        ControllerRequest::ReportReassigned {
            topic,
            partition,
            voters,
        } => {
            let (id, state) = partition_of(image, topic, *partition)?;
            let same = |a: &[i32], b: &[i32]| {
                let mut a = a.to_vec();
                let mut b = b.to_vec();
                a.sort_unstable();
                b.sort_unstable();
                a == b
            };
            if voters.is_empty() {
                return Ok(Plan::Nothing);
            }
            let replicas = match &state.target {
                // Keeps the target's order: its first replica is the preferred leader.
                Some(target) if same(target, voters) => target.clone(),
                // A report of an intermediate step, or from before the target changed.
                Some(_) => return Ok(Plan::Nothing),
                None if same(&state.replicas, voters) => return Ok(Plan::Nothing),
                // Cancelled after the group's membership had changed: the group's voters stand.
                None => {
                    let mut kept: Vec<i32> = state
                        .replicas
                        .iter()
                        .filter(|r| voters.contains(r))
                        .copied()
                        .collect();
                    kept.extend(voters.iter().filter(|v| !state.replicas.contains(v)));
                    kept
                }
            };
            Ok(Plan::Propose(vec![MetadataRecord::PartitionReassigned {
                id,
                partition: *partition,
                replicas,
            }]))
        }
        ControllerRequest::AllocateProducerIds { broker } => {
            Ok(Plan::Propose(vec![MetadataRecord::ProducerIds {
                broker: *broker,
                count: PRODUCER_ID_BLOCK_SIZE,
            }]))
        }
        ControllerRequest::Register(registration) => {
            Ok(Plan::Propose(vec![MetadataRecord::RegisterBroker(
                registration.clone(),
            )]))
        }
        // Answered by the liveness tracker and the quorum's metrics, never planned; MoveLeader
        // is served by the partition leader's node before it reaches the controller.
        ControllerRequest::ShutDown { id, incarnation } => Ok(match image.brokers.get(id) {
            // A stale incarnation (the broker already restarted) or a fenced broker: nothing
            // to do.
            Some(b) if b.registration.incarnation == *incarnation && !b.fenced => {
                Plan::Propose(vec![MetadataRecord::FenceBroker {
                    id: *id,
                    incarnation: *incarnation,
                }])
            }
            _ => Plan::Nothing,
        }),
        ControllerRequest::Heartbeat { .. }
        | ControllerRequest::DescribeQuorum
        | ControllerRequest::MoveLeader { .. }
        | ControllerRequest::WriteTxnMarkers { .. }
        | ControllerRequest::VerifyTxn { .. } => Ok(Plan::Nothing),
    }
}

/// A partition's topic id and state, or UNKNOWN_TOPIC_OR_PARTITION.
fn partition_of<'a>(
    image: &'a MetadataImage,
    topic: &str,
    partition: i32,
) -> Result<([u8; 16], &'a super::image::PartitionState), Refusal> {
    find_partition(image, topic, partition).ok_or_else(|| {
        refuse(
            ResponseError::UnknownTopicOrPartition,
            format!("Unable to find partition {topic}-{partition}."),
        )
    })
}

/// A partition's topic id and state, if both exist.
fn find_partition<'a>(
    image: &'a MetadataImage,
    topic: &str,
    partition: i32,
) -> Option<([u8; 16], &'a super::image::PartitionState)> {
    let t = image.topics.get(topic)?;
    let state = usize::try_from(partition)
        .ok()
        .and_then(|p| t.partitions.get(p))?;
    Some((t.id, state))
}

/// Records to write, or nothing when every report was stale.
fn propose_any(records: Vec<MetadataRecord>) -> Result<Plan, Refusal> {
    Ok(if records.is_empty() {
        Plan::Nothing
    } else {
        Plan::Propose(records)
    })
}

/// The overrides that change when `changes` apply to `current` (`None`: removed), as Kafka's
/// `ConfigurationControlManager` computes them: every operation starts from the current value
/// (a request names a config at most once), and a value that stays the same is not written.
/// `replace` (AlterConfigs): overrides the request does not name are removed.
fn altered_configs(
    current: &BTreeMap<String, String>,
    changes: &[ConfigChange],
    replace: bool,
) -> Result<Vec<(String, Option<String>)>, Refusal> {
    // The forwarding broker refuses these already; a request from elsewhere gets the same answer.
    let mut names = std::collections::HashSet::with_capacity(changes.len());
    if !changes.iter().all(|c| names.insert(c.name.as_str())) {
        return Err(refuse(
            ResponseError::InvalidRequest,
            "Error due to duplicate config keys",
        ));
    }
    let mut altered = Vec::with_capacity(changes.len());
    for change in changes {
        let now = current.get(&change.name).map(String::as_str);
        let next = match change.op {
            ConfigOp::Set => Some(change.value.clone()),
            ConfigOp::Delete => None,
            ConfigOp::Append | ConfigOp::Subtract => {
                let Some(spec) = topic_config::find(&change.name)
                    .filter(|s| s.config_type == topic_config::TYPE_LIST)
                else {
                    return Err(refuse(
                        ResponseError::InvalidConfig,
                        format!(
                            "Can't {} to key {} because its type is not LIST.",
                            change.op.name(),
                            change.name
                        ),
                    ));
                };
                let mut items: Vec<&str> = now
                    .unwrap_or(spec.default)
                    .split(',')
                    .filter(|i| !i.is_empty())
                    .collect();
                for item in java_split(&change.value) {
                    if change.op == ConfigOp::Append {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    } else if let Some(at) = items.iter().position(|i| *i == item) {
                        items.remove(at);
                    }
                }
                Some(items.join(","))
            }
        };
        if next.as_deref() != now {
            altered.push((change.name.clone(), next));
        }
    }
    if replace {
        for name in current.keys() {
            if !changes.iter().any(|c| c.name == *name) {
                altered.push((name.clone(), None));
            }
        }
    }
    Ok(altered)
}

/// Java's `String.split(",")`, whose results the list operations are defined by: trailing
/// empty items are dropped, but an empty string is one empty item.
fn java_split(value: &str) -> Vec<&str> {
    if value.is_empty() {
        return vec![""];
    }
    let mut items: Vec<&str> = value.split(',').collect();
    while items.last() == Some(&"") {
        items.pop();
    }
    items
}

fn apply_altered(configs: &mut BTreeMap<String, String>, altered: &[(String, Option<String>)]) {
    for (name, value) in altered {
        match value {
            Some(v) => configs.insert(name.clone(), v.clone()),
            None => configs.remove(name),
        };
    }
}

/// The Kafka error code, message and value for a committed request's outcomes.
pub fn answer(
    request: &ControllerRequest,
    outcomes: &[ApplyOutcome],
) -> (i16, Option<String>, i64) {
    for outcome in outcomes {
        match outcome {
            ApplyOutcome::Applied | ApplyOutcome::StaleIncarnation | ApplyOutcome::ClusterIdSet => {
            }
            ApplyOutcome::ProducerIdBlock { first } => return (0, None, *first),
            ApplyOutcome::TopicExists => {
                let name = match request {
                    ControllerRequest::CreateTopic { name, .. } => name.as_str(),
                    _ => "",
                };
                return (
                    ResponseError::TopicAlreadyExists.code(),
                    Some(format!("Topic '{name}' already exists.")),
                    0,
                );
            }
            ApplyOutcome::UnknownTopic => {
                return (
                    ResponseError::UnknownTopicOrPartition.code(),
                    Some("This server does not host this topic-partition.".into()),
                    0,
                )
            }
        }
    }
    (0, None, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::{BrokerRegistration, RecordBatch};

    fn image_with(brokers: &[(i32, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        let mut index = 0;
        for (id, fenced) in brokers {
            index += 1;
            let incarnation = [*id as u8; 16];
            image.apply(
                index,
                &RecordBatch::new(vec![MetadataRecord::RegisterBroker(BrokerRegistration {
                    id: *id,
                    incarnation,
                    listeners: vec![],
                    rack: None,
                    rpc_addr: String::new(),
                    controller: false,
                })]),
            );
            if !fenced {
                index += 1;
                image.apply(
                    index,
                    &RecordBatch::new(vec![MetadataRecord::UnfenceBroker {
                        id: *id,
                        incarnation,
                    }]),
                );
            }
        }
        image
    }

    fn create(name: &str, partitions: i32, replication: i16) -> ControllerRequest {
        ControllerRequest::CreateTopic {
            name: name.into(),
            id: [1; 16],
            partitions,
            replication,
            assignments: vec![],
            configs: vec![],
            validate_only: false,
        }
    }

    #[test]
    fn create_places_over_live_brokers_only() {
        let image = image_with(&[(1, false), (2, true), (3, false)]);
        let Ok(Plan::Propose(records)) = plan(&image, &create("t", 4, 1), 0) else {
            panic!("planned");
        };
        let MetadataRecord::CreateTopic { partitions, .. } = &records[0] else {
            panic!("a CreateTopic");
        };
        let leaders: Vec<i32> = partitions.iter().map(|p| p.replicas[0]).collect();
        assert!(leaders.iter().all(|l| *l == 1 || *l == 3), "{leaders:?}");
        assert!(leaders.contains(&1) && leaders.contains(&3));
    }

    #[test]
    fn create_refusals() {
        let image = image_with(&[(1, false)]);
        let (e, msg) = plan(&image, &create("t", 1, 3), 0).expect_err("rf 3");
        assert_eq!(e, ResponseError::InvalidReplicationFactor);
        assert!(msg.contains("only 1 broker(s) are registered"), "{msg}");
        let none = image_with(&[(1, true)]);
        assert_eq!(
            plan(&none, &create("t", 1, 1), 0).expect_err("no live").0,
            ResponseError::InvalidReplicationFactor
        );
        let three = image_with(&[(1, false), (2, false), (3, false)]);
        match plan(&three, &create("t", 2, 3), 0) {
            Ok(Plan::Propose(records)) => match &records[..] {
                [MetadataRecord::CreateTopic { partitions, .. }] => {
                    for p in partitions {
                        let mut replicas = p.replicas.clone();
                        replicas.sort_unstable();
                        assert_eq!(replicas, [1, 2, 3]);
                    }
                }
                other => panic!("rf 3: {other:?}"),
            },
            other => panic!("rf 3 on three brokers: {other:?}"),
        }
        let many: Vec<(i32, bool)> = (1..=20).map(|id| (id, false)).collect();
        let many = image_with(&many);
        let (e, msg) = plan(&many, &create("t", 1, REPLICATION_FACTOR_MAX + 1), 0)
            .expect_err("above the maximum");
        assert_eq!(e, ResponseError::InvalidReplicationFactor);
        assert!(msg.contains("maximum"), "{msg}");
        let bad = ControllerRequest::CreateTopic {
            name: "t".into(),
            id: [1; 16],
            partitions: -1,
            replication: -1,
            assignments: vec![vec![9]],
            configs: vec![],
            validate_only: false,
        };
        assert_eq!(
            plan(&image, &bad, 0).expect_err("unknown broker").0,
            ResponseError::InvalidReplicaAssignment
        );
    }

    #[test]
    fn validate_only_proposes_nothing_and_existing_topics_are_refused() {
        let mut image = image_with(&[(1, false)]);
        let mut req = create("t", 2, 1);
        if let ControllerRequest::CreateTopic { validate_only, .. } = &mut req {
            *validate_only = true;
        }
        assert_eq!(plan(&image, &req, 0), Ok(Plan::Nothing));
        let Ok(Plan::Propose(records)) = plan(&image, &create("t", 2, 1), 0) else {
            panic!("planned");
        };
        image.apply(99, &RecordBatch::new(records));
        assert_eq!(
            plan(&image, &create("t", 2, 1), 0).expect_err("exists").0,
            ResponseError::TopicAlreadyExists
        );
        let grow = ControllerRequest::CreatePartitions {
            name: "t".into(),
            count: 2,
            assignments: vec![],
            validate_only: false,
        };
        assert_eq!(
            plan(&image, &grow, 0).expect_err("not more").0,
            ResponseError::InvalidPartitions
        );
    }

    fn image_with_topic(configs: &[(&str, &str)]) -> MetadataImage {
        let mut image = image_with(&[(1, false)]);
        let index = image.applied + 1;
        image.apply(
            index,
            &RecordBatch::new(vec![MetadataRecord::CreateTopic {
                name: "t".into(),
                id: [7; 16],
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                partitions: vec![PartitionAssignment { replicas: vec![1] }],
            }]),
        );
        image
    }

    #[test]
    fn leadership_reports_in_one_request_become_one_batch_of_new_leaders() {
        let image = image_with_topic(&[]);
        let report = |topic: &str, partition, epoch| crate::cluster::rpc::LeaderReport {
            topic: topic.into(),
            partition,
            epoch,
        };
        let request = |reports| ControllerRequest::ReportLeaders { leader: 2, reports };
        // Not newer than the image (epoch 0), a partition or topic that does not exist:
        // nothing to write, and no error (the reporters are done with them).
        let stale = request(vec![
            report("t", 0, 0),
            report("t", 5, 1),
            report("nope", 0, 1),
        ]);
        assert!(matches!(plan(&image, &stale, 0), Ok(Plan::Nothing)));
        let mixed = request(vec![report("nope", 0, 1), report("t", 0, 3)]);
        let Ok(Plan::Propose(records)) = plan(&image, &mixed, 0) else {
            panic!("a newer epoch is written");
        };
        assert_eq!(
            records,
            vec![MetadataRecord::PartitionLeader {
                id: [7; 16],
                partition: 0,
                leader: 2,
                epoch: 3,
            }]
        );
    }

    fn alter(name: &str, ops: &[(&str, ConfigOp, &str)], replace: bool) -> ControllerRequest {
        ControllerRequest::AlterTopicConfigs {
            name: name.into(),
            changes: ops
                .iter()
                .map(|(k, op, v)| ConfigChange {
                    name: k.to_string(),
                    op: *op,
                    value: v.to_string(),
                })
                .collect(),
            replace,
            validate_only: false,
        }
    }

    /// The changes the controller proposes for `request`, or its refusal.
    fn altered(
        image: &MetadataImage,
        request: &ControllerRequest,
    ) -> Result<Vec<(String, Option<String>)>, Refusal> {
        match plan(image, request, 0)? {
            Plan::Nothing => Ok(vec![]),
            Plan::Propose(records) => match records.as_slice() {
                [MetadataRecord::AlterTopicConfigs { id, changes }] => {
                    assert_eq!(*id, [7; 16]);
                    Ok(changes.clone())
                }
                other => panic!("unexpected records {other:?}"),
            },
        }
    }

    /// Operations, `replace`, and the changes the controller proposes for them.
    type AlterCase = (
        &'static [(&'static str, ConfigOp, &'static str)],
        bool,
        Vec<(String, Option<String>)>,
    );

    fn set(k: &str, v: &str) -> (String, Option<String>) {
        (k.into(), Some(v.into()))
    }

    fn unset(k: &str) -> (String, Option<String>) {
        (k.into(), None)
    }

    #[test]
    fn alter_configs_set_delete_and_replace() {
        use ConfigOp::*;
        let image = image_with_topic(&[("retention.ms", "1000"), ("segment.ms", "60000")]);
        let cases: &[AlterCase] = &[
            (
                &[("max.message.bytes", Set, "512")],
                false,
                vec![set("max.message.bytes", "512")],
            ),
            (
                &[("retention.ms", Set, "2000")],
                false,
                vec![set("retention.ms", "2000")],
            ),
            // An unchanged value and the deletion of an absent override write nothing.
            (&[("retention.ms", Set, "1000")], false, vec![]),
            (&[("retention.bytes", Delete, "")], false, vec![]),
            (&[("no.such.config", Delete, "")], false, vec![]),
            (
                &[("retention.ms", Delete, "")],
                false,
                vec![unset("retention.ms")],
            ),
            // AlterConfigs: what the request does not name is removed.
            (
                &[
                    ("max.message.bytes", Set, "512"),
                    ("segment.ms", Set, "60000"),
                ],
                true,
                vec![set("max.message.bytes", "512"), unset("retention.ms")],
            ),
            (&[], true, vec![unset("retention.ms"), unset("segment.ms")]),
            // List configs: items start from the override, else the default (`delete`).
            (
                &[("cleanup.policy", Append, "compact")],
                false,
                vec![set("cleanup.policy", "delete,compact")],
            ),
            (
                &[("cleanup.policy", Append, "delete")],
                false,
                vec![set("cleanup.policy", "delete")],
            ),
        ];
        for (ops, replace, want) in cases {
            let request = alter("t", ops, *replace);
            assert_eq!(
                altered(&image, &request).as_ref(),
                Ok(want),
                "{ops:?} replace={replace}"
            );
        }
        let listed = image_with_topic(&[("cleanup.policy", "compact,delete")]);
        assert_eq!(
            altered(
                &listed,
                &alter("t", &[("cleanup.policy", Subtract, "compact")], false)
            ),
            Ok(vec![set("cleanup.policy", "delete")])
        );
    }

    #[test]
    fn alter_configs_applies_as_planned() {
        let mut image = image_with_topic(&[("retention.ms", "1000")]);
        let request = alter("t", &[("segment.ms", ConfigOp::Set, "5000")], true);
        let Ok(Plan::Propose(records)) = plan(&image, &request, 0) else {
            panic!("planned");
        };
        let index = image.applied + 1;
        assert_eq!(
            image.apply(index, &RecordBatch::new(records)),
            vec![ApplyOutcome::Applied]
        );
        let configs: Vec<_> = image.topics["t"].configs.iter().collect();
        assert_eq!(
            configs,
            vec![(&"segment.ms".to_string(), &"5000".to_string())]
        );
    }

    #[test]
    fn alter_configs_refusals() {
        use ConfigOp::*;
        let image = image_with_topic(&[("retention.ms", "1000")]);
        let refused = |request: ControllerRequest| altered(&image, &request).expect_err("refused");
        assert_eq!(
            refused(alter("nope", &[("retention.ms", Set, "5")], false)),
            (
                ResponseError::UnknownTopicOrPartition,
                "The topic 'nope' does not exist.".into()
            )
        );
        assert_eq!(
            refused(alter("t", &[("no.such.config", Set, "1")], false)),
            (
                ResponseError::InvalidConfig,
                "Unknown topic config name: no.such.config".into()
            )
        );
        assert_eq!(
            refused(alter("t", &[("retention.ms", Set, "soon")], true)).0,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            refused(alter("t", &[("retention.ms", Append, "5")], false)),
            (
                ResponseError::InvalidConfig,
                "Can't APPEND to key retention.ms because its type is not LIST.".into()
            )
        );
        assert_eq!(
            refused(alter("t", &[("cleanup.policy", Append, "forever")], false)).0,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            refused(alter(
                "t",
                &[("segment.ms", Set, "9"), ("segment.ms", Delete, "")],
                false
            ))
            .0,
            ResponseError::InvalidRequest
        );
        // Kafka checks the values before the topic: an invalid value on a missing topic.
        assert_eq!(
            refused(alter("nope", &[("retention.ms", Set, "-5")], false)).0,
            ResponseError::InvalidConfig
        );
    }

    #[test]
    fn alter_configs_validate_only_proposes_nothing() {
        let image = image_with_topic(&[]);
        let mut request = alter("t", &[("retention.ms", ConfigOp::Set, "5")], false);
        if let ControllerRequest::AlterTopicConfigs { validate_only, .. } = &mut request {
            *validate_only = true;
        }
        assert_eq!(plan(&image, &request, 0), Ok(Plan::Nothing));
        if let ControllerRequest::AlterTopicConfigs { changes, .. } = &mut request {
            changes[0].value = "-5".into();
        }
        assert_eq!(
            plan(&image, &request, 0).expect_err("invalid").0,
            ResponseError::InvalidConfig
        );
    }

    #[test]
    fn java_split_matches_string_split() {
        assert_eq!(java_split(""), vec![""]);
        assert_eq!(java_split("a,,b,,"), vec!["a", "", "b"]);
        assert_eq!(java_split(",,"), Vec::<&str>::new());
    }

    #[test]
    fn a_broker_shutting_down_is_fenced_once_and_only_in_its_incarnation() {
        let image = image_with(&[(1, false), (2, true)]);
        let shut = |id: i32, incarnation: [u8; 16]| {
            plan(&image, &ControllerRequest::ShutDown { id, incarnation }, 0)
        };
        assert_eq!(
            shut(1, [1; 16]),
            Ok(Plan::Propose(vec![MetadataRecord::FenceBroker {
                id: 1,
                incarnation: [1; 16]
            }]))
        );
        // Restarted since (another incarnation), already fenced, or unknown: nothing.
        assert_eq!(shut(1, [9; 16]), Ok(Plan::Nothing));
        assert_eq!(shut(2, [2; 16]), Ok(Plan::Nothing));
        assert_eq!(shut(3, [3; 16]), Ok(Plan::Nothing));
    }

    #[test]
    fn answers_from_outcomes() {
        let req = create("t", 1, 1);
        assert_eq!(answer(&req, &[ApplyOutcome::Applied]).0, 0);
        assert_eq!(
            answer(&req, &[ApplyOutcome::TopicExists]).0,
            ResponseError::TopicAlreadyExists.code()
        );
        assert_eq!(
            answer(
                &ControllerRequest::AllocateProducerIds { broker: 1 },
                &[ApplyOutcome::ProducerIdBlock { first: 5000 }]
            ),
            (0, None, 5000)
        );
    }
}
