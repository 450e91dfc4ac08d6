//! DescribeLogDirs, versions 1–4 (Kafka 4's range: v0 went with KIP-896): the replicas this
//! broker holds, per log directory, with their size and lag. Spool has one log directory per
//! node (`log.dirs`), so the answer has one result, named by its absolute path.
//!
//! As Kafka: a null topic list asks for every replica this broker holds, `__consumer_offsets`
//! included (the metadata log is not a partition log and is left out, as KRaft keeps it out of
//! the log manager); named partitions this broker does not hold, and unknown topics, are
//! simply absent. Each shard describes the replicas it owns (`Request::LogDirs`). v3 adds the
//! top-level error code, v4 the volume's total and usable bytes (statvfs of the log dir, as
//! Java's `File.getTotalSpace` / `getUsableSpace`; -1 when they cannot be read). No log dir is
//! ever offline in Spool (a failed flush takes a partition offline, not the dir), and
//! authorization is not built, so no result carries an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;
use crate::shard::mesh::{LogDirPart, Reply, Request};

pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };

/// (topic, partition) pairs one shard is asked to describe.
type Partitions = Vec<(String, i32)>;

pub async fn handle(ctx: &Ctx, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let shard = &ctx.shard;
    // Each shard gets the partitions it owns, or every shard the question "all of them".
    let asks: Vec<(usize, Option<Partitions>)> = match request.topics {
        None => (0..shard.count).map(|to| (to, None)).collect(),
        Some(topics) => {
            // Kafka collects the request into a set of partitions: a partition named twice is
            // described once.
            let mut wanted = BTreeSet::new();
            {
                let table = shard.topics.borrow();
                for t in &topics {
                    let Some(meta) = table.get(t.topic.as_str()) else {
                        continue;
                    };
                    for &p in t
                        .partitions
                        .iter()
                        .filter(|&&p| p >= 0 && p < meta.partitions)
                    {
                        wanted.insert((t.topic.to_string(), p));
                    }
                }
            }
            let mut per_shard: Vec<Partitions> = vec![Vec::new(); shard.count];
            for (topic, p) in wanted {
                per_shard[shard.owner(&topic, p)].push((topic, p));
            }
            per_shard
                .into_iter()
                .enumerate()
                .filter(|(_, parts)| !parts.is_empty())
                .map(|(to, parts)| (to, Some(parts)))
                .collect()
        }
    };
    let calls = asks
        .into_iter()
        .map(|(to, parts)| shard.call(to, Request::LogDirs { parts }));
    let mut by_topic: BTreeMap<String, Vec<LogDirPart>> = BTreeMap::new();
    for reply in futures::future::join_all(calls).await {
        // No reply only while shutting down: that shard's replicas are left out.
        if let Some(Reply::LogDirs(parts)) = reply {
            for part in parts {
                by_topic.entry(part.topic.clone()).or_default().push(part);
            }
        }
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, mut parts)| {
            parts.sort_by_key(|p| p.partition);
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|p| {
                            DescribeLogDirsPartition::default()
                                .with_partition_index(p.partition)
                                .with_partition_size(p.size_bytes)
                                .with_offset_lag(p.offset_lag)
                                .with_is_future_key(false)
                        })
                        .collect(),
                )
        })
        .collect();
    let dir = absolute_dir(&shard.config.log_dirs);
    let mut result = DescribeLogDirsResult::default()
        .with_error_code(0)
        .with_log_dir(StrBytes::from_string(dir.to_string_lossy().into_owned()))
        .with_topics(topics);
    if ctx.version() >= 4 {
        let (total, usable) = match crate::runtime::off_thread(move || volume_space(&dir)).await {
            Ok(space) => space,
            Err(e) => {
                tracing::warn!("statvfs of the log dir failed: {e}");
                (-1, -1)
            }
        };
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    DescribeLogDirsResponse::default()
        .with_error_code(0)
        .with_results(vec![result])
}

/// The log dir as Kafka names it: absolute, symlinks kept (Java's `File.getAbsolutePath`).
fn absolute_dir(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// (total, usable) bytes of the volume holding `dir`: Java's `getTotalSpace` (blocks ×
/// fragment size) and `getUsableSpace` (blocks available to unprivileged users × fragment
/// size). Off the shard's thread: statvfs of a hung mount can block.
fn volume_space(dir: &Path) -> std::io::Result<(i64, i64)> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let fragment = stat.fragment_size();
    let bytes = |blocks: u64| i64::try_from(blocks.saturating_mul(fragment)).unwrap_or(i64::MAX);
    Ok((bytes(stat.blocks()), bytes(stat.blocks_available())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_space_of_a_real_dir() {
        let dir = std::env::temp_dir();
        let (total, usable) = volume_space(&dir).expect("statvfs of the temp dir");
        assert!(
            total > 0 && usable >= 0 && usable <= total,
            "{total} {usable}"
        );
        assert!(volume_space(Path::new("/no/such/dir/for/spool")).is_err());
    }

    #[test]
    fn log_dir_is_reported_absolute() {
        let relative = absolute_dir(Path::new("data/node-1"));
        assert!(relative.is_absolute());
        assert!(relative.ends_with("data/node-1"));
        assert_eq!(
            absolute_dir(Path::new("/var/spool")),
            Path::new("/var/spool")
        );
    }
}
