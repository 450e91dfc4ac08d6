//! What every shard knows of the cluster besides topics: the cluster id, the brokers and who
//! leads the metadata quorum. Shard 0 sends a new copy to every shard whenever it changes
//! (`Request::ClusterView`).

use super::image::{MetadataImage, TopicImage};
use crate::metadata::TopicMeta;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub fenced: bool,
    /// Where its peers' Raft RPCs reach it (empty: a node without a listener).
    pub rpc_addr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: String,
    /// Every registered broker, by id.
    pub brokers: Vec<BrokerView>,
    /// The metadata quorum's leader, if known.
    pub controller: Option<i32>,
    /// This node has caught up with the metadata log at start (the controller unfenced it):
    /// the partitions it holds are known, so consumer groups may load.
    pub ready: bool,
}

impl ClusterView {
    pub fn from_image(
        image: &MetadataImage,
        controller: Option<i32>,
        listener: &str,
        ready: bool,
    ) -> ClusterView {
        let brokers = image
            .brokers
            .values()
            .map(|b| {
                let endpoint = b
                    .registration
                    .listeners
                    .iter()
                    .find(|l| l.name == listener)
                    .or_else(|| b.registration.listeners.first());
                BrokerView {
                    id: b.registration.id,
                    host: endpoint.map(|e| e.host.clone()).unwrap_or_default(),
                    port: endpoint.map_or(0, |e| e.port),
                    rack: b.registration.rack.clone(),
                    fenced: b.fenced,
                    rpc_addr: b.registration.rpc_addr.clone(),
                }
            })
            .collect();
        ClusterView {
            cluster_id: image.cluster_id.clone().unwrap_or_default(),
            brokers,
            controller,
            ready,
        }
    }

    /// Unfenced brokers: the ones Metadata lists and that may lead.
    pub fn live(&self) -> impl Iterator<Item = &BrokerView> {
        self.brokers.iter().filter(|b| !b.fenced)
    }

    pub fn broker(&self, id: i32) -> Option<&BrokerView> {
        self.brokers.iter().find(|b| b.id == id)
    }

    /// Whether broker `id` is registered and unfenced (a fenced one has left, or not yet
    /// caught up).
    pub fn is_live(&self, id: i32) -> bool {
        self.broker(id).is_some_and(|b| !b.fenced)
    }

    /// A partition's leader: its first replica while that broker is live (one replica each
    /// until replication; then nobody else could lead).
    pub fn leader(&self, replicas: &[i32]) -> Option<&BrokerView> {
        let first = *replicas.first()?;
        self.broker(first).filter(|b| !b.fenced)
    }
}

/// The shard-side description of a topic, from the image.
pub fn topic_meta(topic: &TopicImage) -> TopicMeta {
    TopicMeta {
        name: topic.name.clone(),
        id: uuid::Uuid::from_bytes(topic.id),
        partitions: topic.partitions.len() as i32,
        replication_factor: topic
            .partitions
            .first()
            .map_or(1, |p| p.replicas.len() as i16),
        configs: topic.configs.clone(),
        replicas: topic
            .partitions
            .iter()
            .map(|p| p.replicas.clone())
            .collect(),
        leaders: topic
            .partitions
            .iter()
            .map(|p| (p.leader, p.leader_epoch))
            .collect(),
        isr: topic.partitions.iter().map(|p| p.isr.clone()).collect(),
        targets: topic.partitions.iter().map(|p| p.target.clone()).collect(),
    }
}
