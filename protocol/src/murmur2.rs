//! Kafka's default key partitioner: `toPositive(murmur2(key)) % partitions`.
//!
//! A bit-exact port of `org.apache.kafka.common.utils.Utils.murmur2` (seed 0x9747b28c), so a keyed
//! record lands in the same partition whether Spool's CLI, spool-bench or a Java producer wrote it. Java's
//! unsigned shifts (`>>>`) and wrapping `int` multiplication are reproduced with `u32` wrapping
//! arithmetic; the result is reinterpreted as Java's signed `int`.

const SEED: u32 = 0x9747_b28c;
const M: u32 = 0x5bd1_e995;
const R: u32 = 24;

pub fn murmur2(data: &[u8]) -> i32 {
    let length = data.len();
    // Java uses the length as an int; callers bound key sizes far below 2 GiB.
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    // Java's `(data[i] & 0xff)` masks each tail byte, so no sign extension survives here.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a non-null key.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(
        partitions > 0,
        "partition count must be positive, got {partitions}"
    );
    // Utils.toPositive clears the sign bit rather than taking abs(), so i32::MIN maps to 0.
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` vectors, then values printed by `Utils.murmur2` from the
    /// kafka-clients 4.x jar in tests/.deps (short keys exercise every tail length).
    #[test]
    fn matches_kafka_murmur2() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"0", 971_027_396),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
            (b"2187", -1_508_407_203),
            (b"10000000", -1_830_336_757),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                *expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partitions_like_the_default_partitioner() {
        // toPositive(-973932308) = 1173551340; 1173551340 % 4 = 0.
        assert_eq!(partition_for_key(b"21", 4), 1_173_551_340 % 4);
        // From the Java client: toPositive(murmur2(key)) % 3.
        assert_eq!(partition_for_key(b"key-1", 3), 0);
        assert_eq!(partition_for_key(b"key-2", 3), 2);
        assert_eq!(partition_for_key(b"key-3", 3), 2);
        for key in [&b"a"[..], b"bb", b"ccc", b"dddd", b"", b"\xff\xfe\xfd"] {
            let p = partition_for_key(key, 7);
            assert!((0..7).contains(&p));
        }
    }
}
