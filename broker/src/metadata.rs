//! The shard-side topic table, topic name rules, and the reader of the legacy single-node
//! `meta.json`.
//!
//! Owned by: every shard holds its own read-only copy of the topic table, changed only by
//! messages from shard 0 (`Request::TopicUpsert`/`TopicDelete`), which sends them as it
//! applies the cluster metadata log (`cluster::state_machine`).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

/// Topic names Kafka accepts: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn topic_name_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Topics the broker writes itself (`__consumer_offsets`, `__transaction_state`): clients may
/// read and describe them but not produce to, delete or grow them, as in Kafka.
pub fn topic_is_internal(name: &str) -> bool {
    name == crate::group::OFFSETS_TOPIC || name == crate::txn::TXN_TOPIC
}

/// Asks the controller for an internal topic (`partitions` × `replication_factor`, spread over
/// the brokers live now, with `configs`); one that exists already is success.
pub async fn ensure_internal_topic(
    shard: &std::rc::Rc<crate::shard::Shard>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: Vec<(String, String)>,
) {
    use kafka_protocol::error::ResponseError;
    let meta = TopicMeta {
        name: name.to_string(),
        id: uuid::Uuid::new_v4(),
        partitions,
        replication_factor,
        configs: configs.into_iter().collect(),
        replicas: Vec::new(),
        leaders: Vec::new(),
        isr: Vec::new(),
        targets: Vec::new(),
    };
    let (code, message, _) = shard
        .admin_call(crate::shard::mesh::AdminRequest::CreateTopic {
            meta,
            validate_only: false,
            timeout_ms: 0,
        })
        .await;
    if code != 0 && code != ResponseError::TopicAlreadyExists.code() {
        tracing::warn!("cannot create {name} yet: error {code} {message:?}");
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic-level overrides by Kafka name (`retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
    /// Each partition's replicas (broker ids, leader first), as the controller placed them.
    /// Empty in a creation request: the controller places.
    #[serde(default)]
    pub replicas: Vec<Vec<i32>>,
    /// Each partition's Raft group leader and leader epoch as last reported to the
    /// controller ((-1, 0): none yet). Empty for topics whose partitions are not Raft groups.
    #[serde(default)]
    pub leaders: Vec<(i32, i32)>,
    /// Each replicated partition's in-sync replicas as its leader last reported them.
    #[serde(default)]
    pub isr: Vec<Vec<i32>>,
    /// Each partition's reassignment target while one is in progress.
    #[serde(default)]
    pub targets: Vec<Option<Vec<i32>>>,
}

/// Every shard's view of the topics.
#[derive(Debug, Default)]
pub struct TopicTable {
    by_name: AHashMap<String, Rc<TopicMeta>>,
    by_id: AHashMap<uuid::Uuid, Rc<TopicMeta>>,
    /// Bumped by every change, so a sweep can tell whether anything changed since it last
    /// looked.
    generation: u64,
}

impl TopicTable {
    pub fn get(&self, name: &str) -> Option<&Rc<TopicMeta>> {
        self.by_name.get(name)
    }
    pub fn get_by_id(&self, id: &uuid::Uuid) -> Option<&Rc<TopicMeta>> {
        self.by_id.get(id)
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// Whether any partition has a reassignment target.
    pub fn reassigning(&self) -> bool {
        self.by_name
            .values()
            .any(|m| m.targets.iter().any(Option::is_some))
    }
    pub fn upsert(&mut self, meta: TopicMeta) {
        self.generation += 1;
        let meta = Rc::new(meta);
        self.by_id.insert(meta.id, meta.clone());
        self.by_name.insert(meta.name.clone(), meta);
    }
    pub fn remove(&mut self, name: &str) -> Option<Rc<TopicMeta>> {
        let meta = self.by_name.remove(name)?;
        self.generation += 1;
        self.by_id.remove(&meta.id);
        Some(meta)
    }
    /// Topics sorted by name.
    pub fn all(&self) -> Vec<Rc<TopicMeta>> {
        let mut v: Vec<_> = self.by_name.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// What a single-node Spool before the metadata quorum kept in `log.dirs/meta.json`. A node
/// that finds one when it bootstraps a new cluster imports it into the metadata log
/// (`cluster::bootstrap`), then renames it `meta.json.imported`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyMeta {
    pub cluster_id: String,
    /// Producer ids below this may have been handed out.
    pub producer_id_reserved: i64,
    pub topics: Vec<TopicMeta>,
}

pub const LEGACY_META_FILE: &str = "meta.json";

/// The legacy `meta.json` of `log_dirs`, if there is a readable one.
pub fn read_legacy(log_dirs: &Path) -> Option<LegacyMeta> {
    let path = log_dirs.join(LEGACY_META_FILE);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(meta) => Some(meta),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring unreadable legacy metadata: {e}");
            None
        }
    }
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 characters).
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits: u128 = u128::from_be_bytes(bytes);
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "events.v1", "A_b-c", &"x".repeat(249)] {
            assert!(topic_name_valid(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
            assert!(!topic_name_valid(bad), "{bad}");
        }
    }

    #[test]
    fn legacy_meta_json_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_legacy(dir.path()).is_none());
        std::fs::write(
            dir.path().join(LEGACY_META_FILE),
            r#"{"cluster_id":"c","producer_id_reserved":2000,"topics":[{"name":"t","id":"00000000-0000-0000-0000-000000000001","partitions":2,"replication_factor":1,"configs":{}}]}"#,
        )
        .expect("write");
        let legacy = read_legacy(dir.path()).expect("read");
        assert_eq!(legacy.topics[0].partitions, 2);
        assert!(legacy.topics[0].replicas.is_empty());
        std::fs::write(dir.path().join(LEGACY_META_FILE), "{").expect("write");
        assert!(read_legacy(dir.path()).is_none());
    }
}
