//! The metadata image: what the cluster metadata log says once applied, as KRaft's
//! `MetadataImage`. Pure and deterministic: applying the same batches in the same order gives
//! the same image on every node, so placement, ids and times are decided by the proposer and
//! carried in the records, never computed here.
//!
//! Owned by: shard 0 of every node (applied from the metadata Raft group); other shards get
//! copies of what changed.

use std::collections::BTreeMap;

use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};

use super::records::{
    decode_aligned, BrokerRegistration, MetadataRecord, PartitionAssignment, RecordBatch,
    RecordError,
};

/// What applying one record did; the proposer maps it to a Kafka error code.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    /// CreateTopic of a name that exists (two creations raced; the first committed wins).
    TopicExists,
    /// The topic was deleted before this record committed.
    UnknownTopic,
    /// A fence/unfence for an incarnation that has since re-registered: ignored.
    StaleIncarnation,
    /// The cluster id is set once.
    ClusterIdSet,
    /// Producer ids `[first, first + count)` now belong to the requesting broker.
    ProducerIdBlock {
        first: i64,
    },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerState {
    pub registration: BrokerRegistration,
    /// Fenced brokers lead nothing and are not listed in Metadata. A broker registers fenced
    /// and is unfenced once it has caught up with the log.
    pub fenced: bool,
    /// Log index of its latest registration: it is unfenced only after applying this far.
    pub registered_at: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub replicas: Vec<i32>,
    /// The Raft group's leader as last reported (at creation: the first replica, epoch 0).
    pub leader: i32,
    pub leader_epoch: i32,
    /// The in-sync replicas as the leader last reported them (at creation: every replica).
    pub isr: Vec<i32>,
    /// A reassignment in progress: the replica set the partition is moving to. `replicas`
    /// stays the group's voters until its leader reports the membership change.
    pub target: Option<Vec<i32>>,
}

impl PartitionState {
    /// Replicas a reassignment in progress adds (in the target's order).
    pub fn adding(&self) -> Vec<i32> {
        self.target.as_ref().map_or(Vec::new(), |t| {
            t.iter()
                .filter(|r| !self.replicas.contains(r))
                .copied()
                .collect()
        })
    }

    /// Replicas a reassignment in progress removes.
    pub fn removing(&self) -> Vec<i32> {
        self.target.as_ref().map_or(Vec::new(), |t| {
            self.replicas
                .iter()
                .filter(|r| !t.contains(r))
                .copied()
                .collect()
        })
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: [u8; 16],
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// Raft index of the last entry applied (0 = nothing yet).
    pub applied: u64,
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerState>,
    /// Keyed by name: names are unique among live topics; ids are looked up by scan on the rare
    /// id-addressed admin paths (DeleteTopics v6 by id).
    pub topics: BTreeMap<String, TopicImage>,
    /// Producer ids below this were handed out to some broker.
    pub next_producer_id: i64,
    /// Dynamic broker configs by broker id (-1: the cluster default).
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
}

/// The image as snapshots before dynamic broker configs (no header): still read, so a node
/// upgraded over its old data directory loads its last snapshot.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
struct MetadataImageV1 {
    applied: u64,
    cluster_id: Option<String>,
    brokers: BTreeMap<i32, BrokerState>,
    topics: BTreeMap<String, TopicImage>,
    next_producer_id: i64,
}

/// Snapshot bytes of images from version 2 on start with this, then a u16 version.
const IMAGE_MAGIC: &[u8; 4] = b"SPIM";
const IMAGE_VERSION: u16 = 2;

fn partition_state(assignment: PartitionAssignment) -> PartitionState {
    assert!(
        !assignment.replicas.is_empty(),
        "a committed assignment names at least one replica"
    );
    // The preferred replica leads until the group reports its first election (which it
    // starts at once: see `ReplicaGroup::start`).
    PartitionState {
        leader: assignment.replicas[0],
        isr: assignment.replicas.clone(),
        replicas: assignment.replicas,
        leader_epoch: 0,
        target: None,
    }
}

impl MetadataImage {
    /// Applies one committed entry's batch at Raft `index`. Every record's outcome is returned
    /// in order; a record that does not apply changes nothing.
    pub fn apply(&mut self, index: u64, batch: &RecordBatch) -> Vec<ApplyOutcome> {
        assert!(
            index > self.applied || (index == 0 && self.applied == 0),
            "metadata applied out of order: {index} after {}",
            self.applied
        );
        self.applied = index;
        batch
            .records
            .iter()
            .map(|record| self.apply_record(index, record.clone()))
            .collect()
    }

    /// Records an entry that carries no batch (a leader's blank entry, a membership change).
    pub fn skip(&mut self, index: u64) {
        assert!(index >= self.applied, "metadata applied out of order");
        self.applied = index;
    }

    fn apply_record(&mut self, index: u64, record: MetadataRecord) -> ApplyOutcome {
        match record {
            MetadataRecord::ClusterId { cluster_id } => match &self.cluster_id {
                Some(existing) if *existing != cluster_id => ApplyOutcome::ClusterIdSet,
                _ => {
                    self.cluster_id = Some(cluster_id);
                    ApplyOutcome::Applied
                }
            },
            MetadataRecord::RegisterBroker(registration) => {
                self.brokers.insert(
                    registration.id,
                    BrokerState {
                        registration,
                        fenced: true,
                        registered_at: index,
                    },
                );
                ApplyOutcome::Applied
            }
            MetadataRecord::FenceBroker { id, incarnation }
            | MetadataRecord::UnfenceBroker { id, incarnation } => {
                let fence = matches!(record, MetadataRecord::FenceBroker { .. });
                match self.brokers.get_mut(&id) {
                    Some(b) if b.registration.incarnation == incarnation => {
                        b.fenced = fence;
                        ApplyOutcome::Applied
                    }
                    _ => ApplyOutcome::StaleIncarnation,
                }
            }
            MetadataRecord::CreateTopic {
                name,
                id,
                configs,
                partitions,
            } => {
                if self.topics.contains_key(&name) {
                    return ApplyOutcome::TopicExists;
                }
                let topic = TopicImage {
                    name: name.clone(),
                    id,
                    configs: configs.into_iter().collect(),
                    partitions: partitions.into_iter().map(partition_state).collect(),
                };
                self.topics.insert(name, topic);
                ApplyOutcome::Applied
            }
            MetadataRecord::DeleteTopic { id } => match self.topic_name_by_id(&id) {
                Some(name) => {
                    self.topics.remove(&name);
                    ApplyOutcome::Applied
                }
                None => ApplyOutcome::UnknownTopic,
            },
            MetadataRecord::CreatePartitions { id, added } => match self.topic_by_id_mut(&id) {
                Some(topic) => {
                    topic
                        .partitions
                        .extend(added.into_iter().map(partition_state));
                    ApplyOutcome::Applied
                }
                None => ApplyOutcome::UnknownTopic,
            },
            MetadataRecord::AlterBrokerConfigs { broker, changes } => {
                let configs = self.broker_configs.entry(broker).or_default();
                for (name, value) in changes {
                    match value {
                        Some(v) => configs.insert(name, v),
                        None => configs.remove(&name),
                    };
                }
                if configs.is_empty() {
                    self.broker_configs.remove(&broker);
                }
                ApplyOutcome::Applied
            }
            MetadataRecord::AlterTopicConfigs { id, changes } => match self.topic_by_id_mut(&id) {
                Some(topic) => {
                    for (name, value) in changes {
                        match value {
                            Some(v) => topic.configs.insert(name, v),
                            None => topic.configs.remove(&name),
                        };
                    }
                    ApplyOutcome::Applied
                }
                None => ApplyOutcome::UnknownTopic,
            },
            MetadataRecord::PartitionLeader {
                id,
                partition,
                leader,
                epoch,
            } => match self.topic_by_id_mut(&id) {
                Some(topic) => {
                    if let Some(state) = usize::try_from(partition)
                        .ok()
                        .and_then(|p| topic.partitions.get_mut(p))
                    {
                        if epoch > state.leader_epoch || state.leader < 0 {
                            state.leader = leader;
                            state.leader_epoch = epoch;
                        }
                    }
                    ApplyOutcome::Applied
                }
                None => ApplyOutcome::UnknownTopic,
            },
            MetadataRecord::PartitionIsr {
                id,
                partition,
                epoch,
                isr,
            } => match self.topic_by_id_mut(&id) {
                Some(topic) => {
                    if let Some(state) = usize::try_from(partition)
                        .ok()
                        .and_then(|p| topic.partitions.get_mut(p))
                    {
                        if epoch >= state.leader_epoch {
                            state.isr = isr;
                        }
                    }
                    ApplyOutcome::Applied
                }
                None => ApplyOutcome::UnknownTopic,
            },
            MetadataRecord::PartitionReassign {
                id,
                partition,
                target,
            } => match self.partition_mut(&id, partition) {
                Some(state) => {
                    state.target = target.filter(|t| *t != state.replicas);
                    ApplyOutcome::Applied
                }
                None => ApplyOutcome::UnknownTopic,
            },
            MetadataRecord::PartitionReassigned {
                id,
                partition,
                replicas,
            } => match self.partition_mut(&id, partition) {
                Some(state) => {
                    assert!(!replicas.is_empty(), "a group keeps at least one voter");
                    state.isr.retain(|r| replicas.contains(r));
                    state.replicas = replicas;
                    state.target = None;
                    ApplyOutcome::Applied
                }
                None => ApplyOutcome::UnknownTopic,
            },
            MetadataRecord::ProducerIds { count, .. } => {
                assert!(count > 0, "the proposer asks for a positive block");
                let first = self.next_producer_id;
                self.next_producer_id += count;
                ApplyOutcome::ProducerIdBlock { first }
            }
        }
    }

    pub fn topic_name_by_id(&self, id: &[u8; 16]) -> Option<String> {
        self.topics
            .values()
            .find(|t| &t.id == id)
            .map(|t| t.name.clone())
    }

    fn partition_mut(&mut self, id: &[u8; 16], partition: i32) -> Option<&mut PartitionState> {
        let topic = self.topic_by_id_mut(id)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| topic.partitions.get_mut(p))
    }

    fn topic_by_id_mut(&mut self, id: &[u8; 16]) -> Option<&mut TopicImage> {
        self.topics.values_mut().find(|t| &t.id == id)
    }

    /// The broker that leads a partition now: its first replica, unless that broker is fenced
    /// or unknown (then the partition is offline until it returns; with one replica there is
    /// nobody else to lead).
    pub fn leader(&self, partition: &PartitionState) -> Option<i32> {
        let first = *partition.replicas.first()?;
        match self.brokers.get(&first) {
            Some(b) if !b.fenced => Some(first),
            _ => None,
        }
    }

    /// Unfenced brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerState> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The whole image as snapshot bytes: magic, version, then rkyv.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let body = rkyv::to_bytes::<rancor::Error>(self)
            .map_err(|e| RecordError::Invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(IMAGE_MAGIC);
        out.extend_from_slice(&IMAGE_VERSION.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// A snapshot's image, validated before use; a snapshot of the first layout (no header)
    /// loads with no dynamic broker configs.
    pub fn decode(bytes: &[u8]) -> Result<MetadataImage, RecordError> {
        match bytes.strip_prefix(IMAGE_MAGIC) {
            Some(rest) => {
                let version = rest
                    .get(..2)
                    .map(|v| u16::from_be_bytes([v[0], v[1]]))
                    .ok_or_else(|| RecordError::Invalid("image header cut short".into()))?;
                if version != IMAGE_VERSION {
                    return Err(RecordError::Version(version));
                }
                decode_aligned(&rest[2..])
            }
            None => {
                let v1: MetadataImageV1 = decode_aligned(bytes)?;
                Ok(MetadataImage {
                    applied: v1.applied,
                    cluster_id: v1.cluster_id,
                    brokers: v1.brokers,
                    topics: v1.topics,
                    next_producer_id: v1.next_producer_id,
                    broker_configs: BTreeMap::new(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::Endpoint;

    fn registration(id: i32, incarnation: u8) -> BrokerRegistration {
        BrokerRegistration {
            id,
            incarnation: [incarnation; 16],
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9090 + id as u16,
            }],
            rack: None,
            rpc_addr: format!("127.0.0.1:{}", 9190 + id),
            controller: true,
        }
    }

    fn create(name: &str, id: u8, replicas: &[i32]) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            id: [id; 16],
            configs: vec![],
            partitions: replicas
                .iter()
                .map(|r| PartitionAssignment { replicas: vec![*r] })
                .collect(),
        }
    }

    #[test]
    fn brokers_register_fenced_and_unfence_by_incarnation() {
        let mut image = MetadataImage::default();
        let b = RecordBatch::new;
        image.apply(
            1,
            &b(vec![MetadataRecord::RegisterBroker(registration(1, 1))]),
        );
        assert!(image.brokers[&1].fenced);
        assert_eq!(image.live_brokers().count(), 0);
        let out = image.apply(
            2,
            &b(vec![MetadataRecord::UnfenceBroker {
                id: 1,
                incarnation: [9; 16],
            }]),
        );
        assert_eq!(out, vec![ApplyOutcome::StaleIncarnation]);
        assert!(image.brokers[&1].fenced);
        image.apply(
            3,
            &b(vec![MetadataRecord::UnfenceBroker {
                id: 1,
                incarnation: [1; 16],
            }]),
        );
        assert_eq!(image.live_brokers().count(), 1);
        // A restart re-registers with a new incarnation: fenced again until caught up.
        image.apply(
            4,
            &b(vec![MetadataRecord::RegisterBroker(registration(1, 2))]),
        );
        assert!(image.brokers[&1].fenced);
        assert_eq!(image.brokers[&1].registered_at, 4);
    }

    #[test]
    fn topics_create_race_grow_alter_delete() {
        let mut image = MetadataImage::default();
        let b = RecordBatch::new;
        image.apply(
            1,
            &b(vec![MetadataRecord::RegisterBroker(registration(1, 1))]),
        );
        image.apply(
            2,
            &b(vec![MetadataRecord::UnfenceBroker {
                id: 1,
                incarnation: [1; 16],
            }]),
        );
        assert_eq!(
            image.apply(3, &b(vec![create("t", 5, &[1, 2])])),
            vec![ApplyOutcome::Applied]
        );
        assert_eq!(
            image.apply(4, &b(vec![create("t", 6, &[1])])),
            vec![ApplyOutcome::TopicExists]
        );
        assert_eq!(image.topics["t"].id, [5; 16]);
        let t = &image.topics["t"];
        assert_eq!(image.leader(&t.partitions[0]), Some(1));
        // Broker 2 never registered: its partition is offline.
        assert_eq!(image.leader(&t.partitions[1]), None);
        image.apply(
            5,
            &b(vec![
                MetadataRecord::CreatePartitions {
                    id: [5; 16],
                    added: vec![PartitionAssignment { replicas: vec![1] }],
                },
                MetadataRecord::AlterTopicConfigs {
                    id: [5; 16],
                    changes: vec![("retention.ms".into(), Some("10".into()))],
                },
            ]),
        );
        assert_eq!(image.topics["t"].partitions.len(), 3);
        assert_eq!(image.topics["t"].configs["retention.ms"], "10");
        assert_eq!(
            image.apply(6, &b(vec![MetadataRecord::DeleteTopic { id: [5; 16] }])),
            vec![ApplyOutcome::Applied]
        );
        assert_eq!(
            image.apply(7, &b(vec![MetadataRecord::DeleteTopic { id: [5; 16] }])),
            vec![ApplyOutcome::UnknownTopic]
        );
        assert!(image.topics.is_empty());
    }

    #[test]
    fn cluster_id_and_producer_ids() {
        let mut image = MetadataImage::default();
        let b = RecordBatch::new;
        let id = |s: &str| MetadataRecord::ClusterId {
            cluster_id: s.into(),
        };
        assert_eq!(
            image.apply(1, &b(vec![id("a")])),
            vec![ApplyOutcome::Applied]
        );
        assert_eq!(
            image.apply(2, &b(vec![id("b")])),
            vec![ApplyOutcome::ClusterIdSet]
        );
        assert_eq!(image.cluster_id.as_deref(), Some("a"));
        let block = |broker| MetadataRecord::ProducerIds {
            broker,
            count: 1000,
        };
        assert_eq!(
            image.apply(3, &b(vec![block(1), block(2)])),
            vec![
                ApplyOutcome::ProducerIdBlock { first: 0 },
                ApplyOutcome::ProducerIdBlock { first: 1000 }
            ]
        );
        assert_eq!(image.next_producer_id, 2000);
    }

    #[test]
    fn snapshot_round_trip_and_same_image_everywhere() {
        let batches: Vec<RecordBatch> = vec![
            RecordBatch::new(vec![MetadataRecord::RegisterBroker(registration(1, 1))]),
            RecordBatch::new(vec![create("a", 1, &[1, 1, 1])]),
            RecordBatch::new(vec![create("b", 2, &[1])]),
        ];
        let mut one = MetadataImage::default();
        let mut two = MetadataImage::default();
        for (i, batch) in batches.iter().enumerate() {
            one.apply(i as u64 + 1, batch);
            two.apply(
                i as u64 + 1,
                &RecordBatch::decode(&batch.encode().expect("enc")).expect("dec"),
            );
        }
        assert_eq!(one, two);
        let restored = MetadataImage::decode(&one.encode().expect("encode")).expect("decode");
        assert_eq!(restored, one);
        assert!(MetadataImage::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn dynamic_broker_configs_apply_and_old_snapshots_still_load() {
        let b = RecordBatch::new;
        let mut image = MetadataImage::default();
        image.apply(1, &b(vec![create("t", 5, &[1])]));
        image.apply(
            2,
            &b(vec![MetadataRecord::AlterBrokerConfigs {
                broker: -1,
                changes: vec![("log.retention.ms".into(), Some("5".into()))],
            }]),
        );
        assert_eq!(image.broker_configs[&-1]["log.retention.ms"], "5");
        let decoded = MetadataImage::decode(&image.encode().expect("encode")).expect("decode");
        assert_eq!(decoded, image);
        image.apply(
            3,
            &b(vec![MetadataRecord::AlterBrokerConfigs {
                broker: -1,
                changes: vec![("log.retention.ms".into(), None)],
            }]),
        );
        assert!(image.broker_configs.is_empty());
        // A snapshot written before the field existed (no header, the first layout).
        let old = MetadataImageV1 {
            applied: image.applied,
            cluster_id: image.cluster_id.clone(),
            brokers: image.brokers.clone(),
            topics: image.topics.clone(),
            next_producer_id: image.next_producer_id,
        };
        let bytes = rkyv::to_bytes::<rancor::Error>(&old).expect("encode v1");
        assert_eq!(MetadataImage::decode(&bytes).expect("decode v1"), image);
        assert!(MetadataImage::decode(b"SPIM\x00\x09rest").is_err());
    }
}
