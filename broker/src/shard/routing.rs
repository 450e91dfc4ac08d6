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

/// The `__consumer_offsets` partition of a consumer group, as Kafka computes it:
/// `Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions`, with Java's `String.hashCode`
/// over UTF-16 code units and `Utils.abs` mapping `Integer.MIN_VALUE` to 0. Matching Kafka keeps
/// the on-disk layout of `__consumer_offsets` the same as Kafka's.
pub fn group_partition(group_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0);
    let hash = java_string_hash(group_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

/// The shard owning a consumer group: the owner of its `__consumer_offsets` partition. The group's
/// state lives only there.
pub fn group_shard(group_id: &str, partitions: i32, shards: usize) -> usize {
    shard_for(
        "__consumer_offsets",
        group_partition(group_id, partitions),
        shards,
    )
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
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

    #[test]
    fn group_partition_matches_kafka() {
        // Values of Java's String.hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("abc"), 96354);
        assert_eq!(java_string_hash("group-1"), 293_427_299);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(group_partition("", 50), 0);
        assert_eq!(group_partition("abc", 50), 4);
        assert_eq!(group_partition("group-1", 50), 49);
        assert_eq!(group_partition("my-group", 50), 12);
        assert_eq!(group_partition("test-consumer-group", 50), 31);
        // Utils.abs(Integer.MIN_VALUE) is 0 in Kafka.
        assert_eq!(group_partition("polygenelubricants", 50), 0);
        // Outside the BMP: two UTF-16 code units, as Java counts them.
        assert_eq!(java_string_hash("\u{1F600}"), 0xD83D * 31 + 0xDE00);
        for shards in 1..=4 {
            assert!(group_shard("g", 50, shards) < shards);
        }
    }
}
