//! Cluster metadata of a single node: the topic table, the cluster id and the producer-id
//! allocator.
//!
//! Owned by: shard 0 (the metadata shard) for every change; each shard holds a read-only copy of
//! the topic table, updated by messages from shard 0 (`shard::mesh::Control`). Shard 0 persists the
//! table with write-temp, fsync, rename, fsync-dir, so a crash leaves the old or the new file.
//! Admin operations are rare, so the blocking std::fs calls here are deliberate and stay off the
//! produce/fetch path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

use crate::error::MetadataError;

/// How many producer ids are reserved on disk at a time, so a restart never reissues one.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

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

/// Topics the broker writes itself (`__consumer_offsets`): clients may read and describe them but
/// not produce to, delete or grow them, as in Kafka.
pub fn topic_is_internal(name: &str) -> bool {
    name == crate::group::OFFSETS_TOPIC
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub id: uuid::Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic-level overrides by Kafka name (`retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
}

/// Every shard's view of the topics.
#[derive(Debug, Default)]
pub struct TopicTable {
    by_name: AHashMap<String, Rc<TopicMeta>>,
    by_id: AHashMap<uuid::Uuid, Rc<TopicMeta>>,
}

impl TopicTable {
    pub fn get(&self, name: &str) -> Option<&Rc<TopicMeta>> {
        self.by_name.get(name)
    }
    pub fn get_by_id(&self, id: &uuid::Uuid) -> Option<&Rc<TopicMeta>> {
        self.by_id.get(id)
    }
    pub fn upsert(&mut self, meta: TopicMeta) {
        let meta = Rc::new(meta);
        self.by_id.insert(meta.id, meta.clone());
        self.by_name.insert(meta.name.clone(), meta);
    }
    pub fn remove(&mut self, name: &str) -> Option<Rc<TopicMeta>> {
        let meta = self.by_name.remove(name)?;
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

/// What shard 0 keeps on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedMeta {
    pub cluster_id: String,
    /// Producer ids below this may have been handed out.
    pub producer_id_reserved: i64,
    pub topics: Vec<TopicMeta>,
}

/// Shard 0's durable metadata store.
pub struct MetaStore {
    path: PathBuf,
    pub state: PersistedMeta,
    next_producer_id: i64,
}

impl MetaStore {
    /// Opens `log_dirs/meta.json`; a new one gets `cluster_id_if_new` (the id the dir was
    /// formatted with, `identity`) or a fresh cluster id.
    pub fn open(
        log_dirs: &Path,
        cluster_id_if_new: Option<String>,
    ) -> Result<MetaStore, MetadataError> {
        let path = log_dirs.join("meta.json");
        let io = |e: std::io::Error| MetadataError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(log_dirs).map_err(io)?;
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MetadataError::Io {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedMeta {
                cluster_id: cluster_id_if_new.unwrap_or_else(new_cluster_id),
                producer_id_reserved: 0,
                topics: Vec::new(),
            },
            Err(e) => return Err(io(e)),
        };
        let next_producer_id = state.producer_id_reserved;
        let mut store = MetaStore {
            path,
            state,
            next_producer_id,
        };
        store.persist()?;
        Ok(store)
    }

    /// A producer id never handed out before, even across restarts.
    pub fn allocate_producer_id(&mut self) -> Result<i64, MetadataError> {
        if self.next_producer_id >= self.state.producer_id_reserved {
            let before = self.state.producer_id_reserved;
            self.state.producer_id_reserved = self.next_producer_id + PRODUCER_ID_BLOCK;
            if let Err(e) = self.persist() {
                // Never hand out an id whose reservation is not on disk.
                self.state.producer_id_reserved = before;
                return Err(e);
            }
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        assert!(id < self.state.producer_id_reserved);
        Ok(id)
    }

    pub fn persist(&mut self) -> Result<(), MetadataError> {
        let io = |e: std::io::Error| MetadataError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| MetadataError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_data().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

/// Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 characters).
fn new_cluster_id() -> String {
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
    fn producer_ids_never_repeat_across_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = MetaStore::open(dir.path(), None).expect("open");
        let first: Vec<i64> = (0..3)
            .map(|_| a.allocate_producer_id().expect("id"))
            .collect();
        assert_eq!(first, vec![0, 1, 2]);
        let cluster = a.state.cluster_id.clone();
        drop(a);
        let mut b = MetaStore::open(dir.path(), None).expect("reopen");
        assert_eq!(b.state.cluster_id, cluster);
        assert!(b.allocate_producer_id().expect("id") >= PRODUCER_ID_BLOCK);
    }
}
