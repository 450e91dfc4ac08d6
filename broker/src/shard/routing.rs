//! The one mapping from a partition to the shard that owns it.
//!
//! Architecture invariant: every piece of code that needs a partition's owner calls
//! [`shard_for`]; nothing else decides placement.

/// The shard owning `topic`/`partition` among `shards`.
///
/// A topic's partitions go round-robin over the shards, starting at a hash of the topic name so
/// that many single-partition topics do not all land on shard 0. The mapping depends only on the
/// name, the partition and the shard count; partition directories are named by topic and
/// partition, so a restart with another `--cores` simply reassigns them.
pub fn shard_for(topic: &str, partition: i32, shards: usize) -> usize {
    assert!(shards > 0);
    assert!(partition >= 0);
    let start = fnv1a(topic.as_bytes()) % shards as u64;
    ((start + partition as u64) % shards as u64) as usize
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_spread_evenly() {
        for shards in 1..=8 {
            let mut counts = vec![0; shards];
            for p in 0..(shards as i32 * 10) {
                counts[shard_for("events", p, shards)] += 1;
            }
            assert!(counts.iter().all(|&c| c == 10), "{shards}: {counts:?}");
        }
    }

    #[test]
    fn mapping_is_stable() {
        assert_eq!(shard_for("a", 0, 1), 0);
        assert_eq!(shard_for("events", 3, 4), shard_for("events", 3, 4));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
