//! Who a log dir belongs to, and who is using it: Kafka's `.lock` and `meta.properties`.
//!
//! `.lock` is flocked (`LOCK_EX | LOCK_NB`) for the life of the process, before anything else in
//! the dir is read or written, so a second broker pointed at the same `log.dirs` stops at
//! start-up instead of appending to the same segment files. The kernel drops the lock when the
//! process dies, even by `kill -9`; the file itself stays and means nothing.
//!
//! `meta.properties` is Kafka 4's (`version=1`, `node.id`, `cluster.id`, `directory.id`): a dir
//! formatted for another node id or another cluster is refused with Kafka's messages, since
//! serving it would hand clients another node's partitions under this node's name. The node id
//! is checked before anything else is read; the cluster id of record is the metadata log's
//! (`cluster::image`), checked once the node has caught up with it. A new cluster takes its id
//! from a `meta.properties` written beforehand, as after `kafka-storage.sh format`; a dir
//! without the file gets one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = ".lock";
pub const META_PROPERTIES: &str = "meta.properties";

/// The only `meta.properties` version Spool reads and writes (Kafka's KRaft one; version 0 is
/// ZooKeeper mode's `broker.id`).
const META_PROPERTIES_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "Failed to acquire lock on file {LOCK_FILE} in {dir}. \
         A broker in another process is using this directory."
    )]
    Locked { dir: PathBuf },
    #[error("cannot read or write {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("malformed {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error(
        "unsupported version {version} in {path}: Spool reads version \
         {META_PROPERTIES_VERSION} (KRaft) only"
    )]
    Version { path: PathBuf, version: String },
    #[error(
        "Stored node id {stored} doesn't match previous node id {configured} in {path}. If you \
         moved your data, make sure your configured node id matches. If you intend to create a \
         new node, you should remove all data in your data directories."
    )]
    NodeId {
        path: PathBuf,
        stored: i32,
        configured: i32,
    },
    #[error(
        "Invalid cluster.id in: {path}. Expected {expected} (the cluster of meta.json), \
         but read {stored}"
    )]
    ClusterId {
        path: PathBuf,
        expected: String,
        stored: String,
    },
}

/// Proof that this process holds a log dir's `.lock`; dropping it releases the dir.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    _file: File,
}

/// Locks `dir` for this process, creating it if needed.
pub fn lock(dir: &Path) -> Result<DirLock, IdentityError> {
    let path = dir.join(LOCK_FILE);
    let io = |e: std::io::Error| IdentityError::Io {
        path: path.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        }),
        Err(TryLockError::WouldBlock) => Err(IdentityError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Checks that a locked log dir belongs to this node (`meta.properties`' node.id), before
/// anything is read from it. Its cluster id is checked once the cluster's is known
/// ([`ensure_cluster_id`]).
pub fn check_node(lock: &DirLock, node_id: i32) -> Result<Option<MetaProperties>, IdentityError> {
    let dir = lock.dir.as_path();
    let stored = read(dir)?;
    if let Some(props) = &stored {
        if props.node_id != node_id {
            return Err(IdentityError::NodeId {
                path: dir.join(META_PROPERTIES),
                stored: props.node_id,
                configured: node_id,
            });
        }
    }
    Ok(stored)
}

/// Once the node knows the cluster's id (from the metadata log): a dir formatted for another
/// cluster is refused; a dir without `meta.properties` (or without a directory id) gets one.
pub fn ensure_cluster_id(dir: &Path, node_id: i32, cluster_id: &str) -> Result<(), IdentityError> {
    let path = dir.join(META_PROPERTIES);
    match read(dir)? {
        Some(props) if props.cluster_id != cluster_id => Err(IdentityError::ClusterId {
            path,
            expected: cluster_id.to_string(),
            stored: props.cluster_id,
        }),
        Some(props) if props.directory_id.is_some() => Ok(()),
        Some(props) => {
            // Kafka gives a dir without an id one and keeps it from then on.
            let props = MetaProperties {
                directory_id: Some(new_directory_id()),
                ..props
            };
            write(dir, &props)
        }
        None => {
            let props = MetaProperties {
                node_id,
                cluster_id: cluster_id.to_string(),
                directory_id: Some(new_directory_id()),
            };
            write(dir, &props)?;
            tracing::info!(dir = %dir.display(), "wrote {META_PROPERTIES}");
            Ok(())
        }
    }
}

/// The fields of a version-1 `meta.properties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: i32,
    pub cluster_id: String,
    pub directory_id: Option<String>,
}

impl MetaProperties {
    /// Reads the Java properties subset Kafka writes: `key=value` lines (`:` also separates),
    /// `#`/`!` comments, surrounding blanks trimmed, a repeated key's last value wins. Unknown keys
    /// are ignored, as Kafka does.
    pub fn parse(text: &str, path: &Path) -> Result<MetaProperties, IdentityError> {
        let malformed = |reason: String| IdentityError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let (mut version, mut node_id, mut cluster_id, mut directory_id) = (None, None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(malformed(format!("line `{line}` is not key=value")));
            };
            let value = value.trim().to_string();
            match key.trim() {
                "version" => version = Some(value),
                "node.id" => node_id = Some(value),
                "cluster.id" => cluster_id = Some(value),
                "directory.id" => directory_id = Some(value),
                _ => {}
            }
        }
        let version = version.ok_or_else(|| malformed("no version".into()))?;
        if version != META_PROPERTIES_VERSION {
            return Err(IdentityError::Version {
                path: path.to_path_buf(),
                version,
            });
        }
        let node_id = node_id.ok_or_else(|| malformed("node.id was not specified".into()))?;
        let node_id = node_id
            .parse()
            .map_err(|_| malformed(format!("node.id `{node_id}` is not an integer")))?;
        let cluster_id = cluster_id
            .filter(|c| !c.is_empty())
            .ok_or_else(|| malformed("cluster.id was not specified".into()))?;
        Ok(MetaProperties {
            node_id,
            cluster_id,
            directory_id: directory_id.filter(|d| !d.is_empty()),
        })
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "#\n#Written by spool {}\nversion={META_PROPERTIES_VERSION}\nnode.id={}\ncluster.id={}\n",
            env!("CARGO_PKG_VERSION"),
            self.node_id,
            self.cluster_id
        );
        if let Some(id) = &self.directory_id {
            out.push_str(&format!("directory.id={id}\n"));
        }
        out
    }
}

/// `dir`'s `meta.properties`, `None` if it has none.
pub fn read(dir: &Path) -> Result<Option<MetaProperties>, IdentityError> {
    let path = dir.join(META_PROPERTIES);
    match std::fs::read_to_string(&path) {
        Ok(text) => MetaProperties::parse(&text, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IdentityError::Io {
            path,
            reason: e.to_string(),
        }),
    }
}

/// Replaces `dir`'s `meta.properties` atomically (write temp, fsync, rename, fsync dir), so a
/// crash leaves the old file or the new one.
pub fn write(dir: &Path, props: &MetaProperties) -> Result<(), IdentityError> {
    let path = dir.join(META_PROPERTIES);
    let io = |e: std::io::Error| IdentityError::Io {
        path: path.clone(),
        reason: e.to_string(),
    };
    let tmp = dir.join(format!("{META_PROPERTIES}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(props.render().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// A Kafka `Uuid` string: 16 random bytes in URL-safe base64 without padding (22 characters).
fn new_directory_id() -> String {
    let mut bytes = uuid::Uuid::new_v4().into_bytes();
    // Kafka never hands out an id whose string starts with '-' (it reads as a command-line flag);
    // the first character encodes the top 6 bits, and below 32 it is a letter.
    bytes[0] &= 0x7f;
    base64_url(&bytes)
}

fn base64_url(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = u128::from_be_bytes(*bytes);
    // 22 characters carry 132 bits: the last 4 are the zero padding of the final character.
    (0..22i32)
        .map(|i| {
            let shift = 128 - 6 * (i + 1);
            let index = if shift >= 0 {
                (bits >> shift) & 63
            } else {
                (bits << -shift) & 63
            };
            ALPHABET[index as usize] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MetaProperties, IdentityError> {
        MetaProperties::parse(text, Path::new("/d/meta.properties"))
    }

    #[test]
    fn parses_what_kafka_writes() {
        let kafka =
            "#\n#Tue Mar 12 10:01:02 UTC 2024\nnode.id=3\ndirectory.id=r4nd0mD1rId-xxxxxxxxxx\n\
                     version=1\ncluster.id=MkU3OEVBNTcwNTJENDM2Qk\n";
        assert_eq!(
            parse(kafka).expect("parse"),
            MetaProperties {
                node_id: 3,
                cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
                directory_id: Some("r4nd0mD1rId-xxxxxxxxxx".into()),
            }
        );
        let spaced = "! comment\n  version : 1 \nnode.id= 7\ncluster.id =c\nsome.future.key=x\n";
        let p = parse(spaced).expect("parse");
        assert_eq!(
            (p.node_id, p.cluster_id.as_str(), p.directory_id),
            (7, "c", None)
        );
    }

    #[test]
    fn rejects_what_it_cannot_trust() {
        let cases = [
            ("node.id=1\ncluster.id=c\n", "no version"),
            (
                "version=0\nbroker.id=1\ncluster.id=c\n",
                "unsupported version 0",
            ),
            ("version=1\ncluster.id=c\n", "node.id was not specified"),
            ("version=1\nnode.id=one\ncluster.id=c\n", "not an integer"),
            ("version=1\nnode.id=1\n", "cluster.id was not specified"),
            (
                "version=1\nnode.id=1\ncluster.id=\n",
                "cluster.id was not specified",
            ),
            ("version=1\nnode.id\n", "is not key=value"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn render_round_trips() {
        let props = MetaProperties {
            node_id: -1,
            cluster_id: "abc".into(),
            directory_id: Some(new_directory_id()),
        };
        assert_eq!(parse(&props.render()).expect("parse"), props);
    }

    #[test]
    fn directory_ids_are_kafka_uuid_strings() {
        assert_eq!(base64_url(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        // java: Base64.getUrlEncoder().withoutPadding() of bytes 0xff.. and of 0xfb 0xef 0xbe ..
        assert_eq!(base64_url(&[0xff; 16]), "_____________________w");
        let mut bytes = [0u8; 16];
        bytes[..3].copy_from_slice(&[0xfb, 0xef, 0xbe]);
        assert!(base64_url(&bytes).starts_with("----"));
        for _ in 0..1000 {
            let id = new_directory_id();
            assert_eq!(id.len(), 22);
            assert!(!id.starts_with('-'), "{id}");
        }
    }

    #[test]
    fn a_new_dir_gets_meta_properties_and_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = lock(dir.path()).expect("lock");
        assert_eq!(check_node(&lock, 5).expect("check"), None);
        ensure_cluster_id(dir.path(), 5, "clusterOfTheLog0000000").expect("write");
        let written = read(dir.path()).expect("read").expect("written");
        assert_eq!(written.node_id, 5);
        assert_eq!(written.cluster_id, "clusterOfTheLog0000000");
        assert!(written.directory_id.is_some());
        assert_eq!(check_node(&lock, 5).expect("check"), Some(written.clone()));
        ensure_cluster_id(dir.path(), 5, "clusterOfTheLog0000000").expect("again");
        assert_eq!(read(dir.path()).expect("read"), Some(written));
    }

    #[test]
    fn a_formatted_dir_without_directory_id_gets_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let formatted = MetaProperties {
            node_id: 2,
            cluster_id: "formattedClusterId0000".into(),
            directory_id: None,
        };
        write(dir.path(), &formatted).expect("write");
        let lock = lock(dir.path()).expect("lock");
        assert_eq!(
            check_node(&lock, 2).expect("check"),
            Some(formatted.clone())
        );
        ensure_cluster_id(dir.path(), 2, "formattedClusterId0000").expect("same cluster");
        let now = read(dir.path()).expect("read").expect("kept");
        assert!(now.directory_id.is_some(), "a directory id is added");
        assert_eq!(now.cluster_id, formatted.cluster_id);
    }

    #[test]
    fn another_nodes_or_clusters_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = lock(dir.path()).expect("lock");
        ensure_cluster_id(dir.path(), 1, "ourClusterId0000000000").expect("write");
        let ours = read(dir.path()).expect("read").expect("written");

        let err = check_node(&lock, 2).expect_err("another node").to_string();
        assert!(
            err.starts_with("Stored node id 1 doesn't match previous node id 2 in "),
            "{err}"
        );

        let foreign = MetaProperties {
            cluster_id: "anotherClusterId000000".into(),
            ..ours.clone()
        };
        write(dir.path(), &foreign).expect("write");
        check_node(&lock, 1).expect("same node");
        let err = ensure_cluster_id(dir.path(), 1, &ours.cluster_id)
            .expect_err("another cluster")
            .to_string();
        assert!(err.starts_with("Invalid cluster.id in: "), "{err}");
        assert!(err.contains(&ours.cluster_id), "{err}");
        assert!(err.contains("but read anotherClusterId000000"), "{err}");
        assert_eq!(
            read(dir.path()).expect("read"),
            Some(foreign),
            "left as found"
        );
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock(dir.path()).expect("lock");
        // flock locks belong to the open file, so a second open conflicts even in this process.
        let err = lock(dir.path()).expect_err("second lock").to_string();
        assert!(
            err.contains(".lock") && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        drop(held);
        lock(dir.path()).expect("free again");
    }
}
