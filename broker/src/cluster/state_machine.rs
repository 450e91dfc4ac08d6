//! The metadata group's openraft state machine: applies committed entries to the
//! [`MetadataImage`] and tells the node what changed, and keeps the image's snapshots.
//!
//! The image lives in memory; its snapshots are durable. On restart openraft installs the last
//! snapshot and re-applies the log from there up to the committed index (the log store keeps
//! the committed log id), so the image is rebuilt exactly.
//!
//! Snapshot file: `log.dirs/__cluster_metadata-0/<index>-<term>.checkpoint` (Kafka's naming),
//! written to a temporary name, fsynced and renamed, then older checkpoints are removed. Its
//! content: a 4-byte length and the encoded snapshot meta (log id, membership), then the
//! image.

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::EntryPayload;
use spool_raft::{Command, TypeConfig};

use super::image::{ApplyOutcome, MetadataImage};
use super::records::{MetadataRecord, RecordBatch};

/// Bytes of one snapshot at most (what one RPC frame can carry).
pub const SNAPSHOT_BYTES_MAX: usize = spool_raft::wire::RPC_FRAME_BYTES_MAX - (1 << 20);

/// What one applied entry changed, for the node to pass on to its shards.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A topic was created or changed (partitions, configs): its current state.
    Topic(String),
    TopicDeleted(String),
    Brokers,
    ClusterId,
    /// Dynamic broker configs changed.
    BrokerConfigs,
    /// The whole image was replaced (a snapshot was installed).
    Everything,
}

/// Called after each applied entry (and after a snapshot install) with the image's applied
/// index and what changed; the apply does not go on until the returned future is done, so
/// every shard has seen index N before anyone is told N is applied.
pub type ApplyListener = Rc<dyn Fn(u64, Vec<Change>) -> LocalBoxFuture<'static, ()>>;

/// The last snapshot, as held in memory and on disk.
#[derive(Clone)]
struct Stored {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Bytes,
}

pub struct MetadataStateMachine {
    image: Rc<RefCell<MetadataImage>>,
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    snapshot: Rc<RefCell<Option<Stored>>>,
    /// None: snapshots only in memory (the in-process test harness).
    dir: Option<PathBuf>,
    listener: ApplyListener,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Encodes apply outcomes as the client_write response.
pub fn encode_outcomes(outcomes: &[ApplyOutcome]) -> Command {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&outcomes.to_vec())
        .map(|b| b.into_vec())
        .unwrap_or_default();
    Command(Bytes::from(bytes))
}

pub fn decode_outcomes(command: &Command) -> Vec<ApplyOutcome> {
    super::records::decode_aligned::<Vec<ApplyOutcome>>(&command.0).unwrap_or_default()
}

fn changes_of(records: &[MetadataRecord], before: &MetadataImage) -> Vec<Change> {
    records
        .iter()
        .filter_map(|r| {
            Some(match r {
                MetadataRecord::ClusterId { .. } => Change::ClusterId,
                MetadataRecord::RegisterBroker(_)
                | MetadataRecord::FenceBroker { .. }
                | MetadataRecord::UnfenceBroker { .. } => Change::Brokers,
                MetadataRecord::CreateTopic { name, .. } => Change::Topic(name.clone()),
                MetadataRecord::DeleteTopic { id }
                | MetadataRecord::CreatePartitions { id, .. }
                | MetadataRecord::AlterTopicConfigs { id, .. }
                | MetadataRecord::PartitionLeader { id, .. }
                | MetadataRecord::PartitionIsr { id, .. }
                | MetadataRecord::PartitionReassign { id, .. }
                | MetadataRecord::PartitionReassigned { id, .. } => {
                    let name = before.topic_name_by_id(id).unwrap_or_default();
                    if matches!(r, MetadataRecord::DeleteTopic { .. }) {
                        Change::TopicDeleted(name)
                    } else {
                        Change::Topic(name)
                    }
                }
                MetadataRecord::AlterBrokerConfigs { .. } => Change::BrokerConfigs,
                // A producer-id block changes nothing any shard serves from.
                MetadataRecord::ProducerIds { .. } => return None,
            })
        })
        .collect()
}

fn checkpoint_name(meta: &SnapshotMetaOf<TypeConfig>) -> String {
    let (index, term) = meta
        .last_log_id
        .as_ref()
        .map_or((0, 0), |l| (l.index, l.leader_id.term));
    format!("{index:020}-{term:010}.checkpoint")
}

impl MetadataStateMachine {
    /// Opens the state machine; the last durable snapshot in `dir`, if any, is what
    /// `get_current_snapshot` returns (openraft installs it at start).
    pub fn open(
        image: Rc<RefCell<MetadataImage>>,
        dir: Option<PathBuf>,
        listener: ApplyListener,
    ) -> io::Result<MetadataStateMachine> {
        let mut snapshot = None;
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            let mut names: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".checkpoint"))
                .collect();
            names.sort();
            if let Some(last) = names.last() {
                let bytes = std::fs::read(dir.join(last))?;
                snapshot = Some(
                    decode_checkpoint(&bytes)
                        .map_err(|e| io_err(format!("snapshot {last} is unreadable: {e}")))?,
                );
            }
            for name in names.iter().rev().skip(1) {
                let _ = std::fs::remove_file(dir.join(name));
            }
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".checkpoint.tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(MetadataStateMachine {
            image,
            last_applied: None,
            membership: Default::default(),
            snapshot: Rc::new(RefCell::new(snapshot)),
            dir,
            listener,
        })
    }
}

fn encode_checkpoint(stored: &Stored) -> io::Result<Vec<u8>> {
    let meta = spool_raft::wire::encode_snapshot_meta(&stored.meta).map_err(io_err)?;
    let mut out = Vec::with_capacity(4 + meta.len() + stored.data.len());
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&stored.data);
    Ok(out)
}

fn decode_checkpoint(bytes: &[u8]) -> Result<Stored, String> {
    if bytes.len() < 4 {
        return Err("shorter than its header".into());
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if len > bytes.len() - 4 {
        return Err(format!(
            "meta length {len} exceeds the {} bytes left",
            bytes.len() - 4
        ));
    }
    let meta =
        spool_raft::wire::decode_snapshot_meta(&bytes[4..4 + len]).map_err(|e| e.to_string())?;
    let data = Bytes::copy_from_slice(&bytes[4 + len..]);
    MetadataImage::decode(&data).map_err(|e| e.to_string())?;
    Ok(Stored { meta, data })
}

/// A snapshot checkpoint or one left half-written (`<index>-<term>.checkpoint[.tmp]`).
fn is_checkpoint_file(name: &str) -> bool {
    name.ends_with(".checkpoint") || name.ends_with(".checkpoint.tmp")
}

/// Writes a checkpoint durably (temp, fsync, rename, fsync dir) off the shard thread and
/// removes older ones.
async fn persist(dir: PathBuf, stored: &Stored) -> io::Result<()> {
    let bytes = encode_checkpoint(stored)?;
    let name = checkpoint_name(&stored.meta);
    crate::runtime::off_thread(move || {
        use std::io::Write;
        let tmp = dir.join(format!("{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(&name))?;
        std::fs::File::open(&dir)?.sync_all()?;
        // Only checkpoint files: the Raft log store shares this directory and may be
        // between writing and renaming its own `raft-state.tmp` right now (removing it made
        // that write fail with ENOENT and stopped the node's metadata quorum).
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let other = entry.file_name().to_string_lossy().into_owned();
            if other != name && is_checkpoint_file(&other) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    })
    .await
}

pub struct Builder {
    image: Rc<RefCell<MetadataImage>>,
    last_applied: Option<LogIdOf<TypeConfig>>,
    membership: StoredMembershipOf<TypeConfig>,
    snapshot: Rc<RefCell<Option<Stored>>>,
    dir: Option<PathBuf>,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Bytes>, io::Error> {
        let data = Bytes::from(self.image.borrow().encode().map_err(io_err)?);
        if data.len() > SNAPSHOT_BYTES_MAX {
            return Err(io_err(format!(
                "metadata snapshot of {} bytes exceeds {SNAPSHOT_BYTES_MAX}",
                data.len()
            )));
        }
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        let stored = Stored {
            meta: meta.clone(),
            data: data.clone(),
        };
        if let Some(dir) = &self.dir {
            persist(dir.clone(), &stored).await?;
        }
        *self.snapshot.borrow_mut() = Some(stored);
        Ok(SnapshotOf::<TypeConfig, Bytes> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetadataStateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<openraft::storage::EntryResponder<TypeConfig>, io::Error>>
            + Unpin,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            let mut outcomes = Vec::new();
            let mut changes = Vec::new();
            match &entry.payload {
                EntryPayload::Normal(command) => {
                    // A committed entry that does not decode is corruption or a newer
                    // format: stop applying rather than diverge from the other nodes.
                    let batch = RecordBatch::decode(&command.0).map_err(|e| {
                        io_err(format!(
                            "committed metadata entry {index} is undecodable: {e}"
                        ))
                    })?;
                    // Names come from the image before the batch (a deleted topic's name).
                    changes = changes_of(&batch.records, &self.image.borrow());
                    outcomes = self.image.borrow_mut().apply(index, &batch);
                }
                EntryPayload::Membership(m) => {
                    self.membership =
                        StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), m.clone());
                    self.image.borrow_mut().skip(index);
                }
                EntryPayload::Blank => self.image.borrow_mut().skip(index),
            }
            (self.listener)(index, changes).await;
            if let Some(responder) = responder {
                responder.send(encode_outcomes(&outcomes));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            image: self.image.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshot: self.snapshot.clone(),
            dir: self.dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Bytes,
    ) -> Result<(), io::Error> {
        let image = MetadataImage::decode(&snapshot).map_err(io_err)?;
        let stored = Stored {
            meta: meta.clone(),
            data: snapshot,
        };
        if let Some(dir) = &self.dir {
            let on_disk = self.snapshot.borrow().as_ref().map(|s| s.meta.clone());
            if on_disk.as_ref() != Some(meta) {
                persist(dir.clone(), &stored).await?;
                // Not our own snapshot reloaded at start: the leader sent it because our log
                // was behind its purge point.
                tracing::info!(
                    "installed a metadata snapshot from the quorum leader up to index {}",
                    meta.last_log_id.map_or(0, |l| l.index)
                );
            }
        }
        *self.snapshot.borrow_mut() = Some(stored);
        let index = image.applied;
        *self.image.borrow_mut() = image;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        (self.listener)(index, vec![Change::Everything]).await;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Bytes>>, io::Error> {
        Ok(self
            .snapshot
            .borrow()
            .as_ref()
            .map(|s| SnapshotOf::<TypeConfig, Bytes> {
                meta: s.meta.clone(),
                snapshot: s.data.clone(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(index: u64) -> Stored {
        Stored {
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: Some(openraft::LogId::new_term_index(1, index)),
                last_membership: Default::default(),
            },
            data: Bytes::from(MetadataImage::default().encode().expect("encode")),
        }
    }

    #[test]
    fn a_new_checkpoint_removes_only_older_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        // The Raft log store's files share the directory; its state file may be mid-replace.
        for name in ["raft-state", "raft-state.tmp", "00000000000000000000.log"] {
            std::fs::write(path.join(name), b"x").expect("write");
        }
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                persist(path.clone(), &stored(5)).await.expect("persist 5");
                std::fs::write(
                    path.join("00000000000000000007-0000000001.checkpoint.tmp"),
                    b"",
                )
                .expect("write");
                persist(path, &stored(9)).await.expect("persist 9");
            })
            .expect("executor");
        handle.join().expect("join");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "00000000000000000000.log",
                "00000000000000000009-0000000001.checkpoint",
                "raft-state",
                "raft-state.tmp",
            ]
        );
        let stored_9 = stored(9);
        let bytes = std::fs::read(dir.path().join(checkpoint_name(&stored_9.meta))).expect("read");
        assert_eq!(
            decode_checkpoint(&bytes).expect("decode").meta,
            stored_9.meta
        );
    }
}
