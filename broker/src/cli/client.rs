//! A minimal cluster client: bootstrap connection, Metadata, and connections to partition leaders.
//!
//! Requests about the cluster (Metadata, CreateTopics, ...) go to the bootstrap broker, which
//! forwards admin requests to the controller itself (KRaft Kafka and Spool both do). Produce,
//! ListOffsets and Fetch go to the partition's leader, found by node id in the latest Metadata.
//! One connection per node; each carries one request at a time.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::conn::Connection;
use super::error::{is_retriable, CliError};

/// Metadata attempts while a topic or its leaders are still being created (Kafka reports a
/// topic for a moment after CreateTopics returns as unknown or leaderless).
pub const METADATA_ATTEMPTS_MAX: u32 = 30;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const METADATA_RETRY_BACKOFF_MS: u64 = 100;

/// What the CLI needs to know about one topic.
pub struct TopicInfo {
    pub name: String,
    /// partition index → leader node id, for every partition, ordered by index.
    pub leaders: Vec<(i32, i32)>,
}

pub struct Client {
    bootstrap: Connection,
    /// node id → "host:port", from the latest Metadata.
    brokers: HashMap<i32, String>,
    leaders: HashMap<i32, Connection>,
}

impl Client {
    pub fn connect(bootstrap: &str) -> Result<Client, CliError> {
        Ok(Client {
            bootstrap: Connection::open(bootstrap)?,
            brokers: HashMap::new(),
            leaders: HashMap::new(),
        })
    }

    /// The connection used for cluster-wide requests.
    pub fn bootstrap(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    /// Metadata for `topics` (all topics when `None`), remembering broker addresses.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, CliError> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let (resp, _) = self.bootstrap.send(&req)?;
        if resp.error_code != 0 {
            return Err(CliError::kafka("Metadata", resp.error_code, None));
        }
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        Ok(resp)
    }

    /// The topic's partitions and their leaders, retrying (bounded) while the topic is new and
    /// Metadata still reports it missing or leaderless.
    pub fn topic_info(&mut self, topic: &str) -> Result<TopicInfo, CliError> {
        let names = [topic.to_string()];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.metadata(Some(&names))?;
            let t = resp
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
                .ok_or_else(|| CliError::UnknownTopic {
                    topic: topic.to_string(),
                })?;
            let leaderless = t
                .partitions
                .iter()
                .find(|p| p.leader_id.0 < 0 || is_retriable(p.error_code));
            if t.error_code == 0 && !t.partitions.is_empty() && leaderless.is_none() {
                let mut leaders: Vec<(i32, i32)> = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.leader_id.0))
                    .collect();
                leaders.sort_unstable();
                return Ok(TopicInfo {
                    name: topic.to_string(),
                    leaders,
                });
            }
            let transient = t.error_code == 0 || is_retriable(t.error_code);
            if !transient || attempt >= METADATA_ATTEMPTS_MAX {
                return Err(match (t.error_code, leaderless) {
                    (UNKNOWN_TOPIC_OR_PARTITION, _) => CliError::UnknownTopic {
                        topic: topic.to_string(),
                    },
                    (0, Some(p)) => CliError::NoLeader {
                        topic: topic.to_string(),
                        partition: p.partition_index,
                        attempts: attempt,
                    },
                    // No error and no partitions: nothing to route to, so treat it as missing.
                    (0, None) => CliError::UnknownTopic {
                        topic: topic.to_string(),
                    },
                    (code, _) => CliError::kafka(format!("Metadata for {topic}"), code, None),
                });
            }
            std::thread::sleep(Duration::from_millis(METADATA_RETRY_BACKOFF_MS));
        }
    }

    /// The connection to node `node_id`, opened on first use.
    pub fn node(&mut self, node_id: i32) -> Result<&mut Connection, CliError> {
        if !self.leaders.contains_key(&node_id) {
            let addr = self
                .brokers
                .get(&node_id)
                .ok_or(CliError::UnknownBroker { node_id })?;
            let conn = Connection::open(addr)?;
            self.leaders.insert(node_id, conn);
        }
        Ok(self
            .leaders
            .get_mut(&node_id)
            .unwrap_or_else(|| unreachable!("inserted above")))
    }

    /// Drops the connection to a node, e.g. after it stopped being a leader or failed.
    pub fn forget(&mut self, node_id: i32) {
        self.leaders.remove(&node_id);
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}
