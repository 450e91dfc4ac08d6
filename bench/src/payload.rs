//! Record payloads and keys.
//!
//! Payloads come from a pool generated once (random bytes for `randomBytesRatio` of each, zeros
//! after, so compression sees realistic entropy); the first 8 bytes of every sent payload are
//! overwritten with its intended send time, which the consumer reads for end-to-end latency.

use bytes::Bytes;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::workload::{KeyDistributor, Workload};

/// Keys in the KEY_ROUND_ROBIN pool (OMB cycles through a fixed key list too).
pub const KEY_POOL_SIZE: usize = 10_000;
const KEY_BYTES: usize = 7;

pub struct PayloadPool {
    payloads: Vec<Bytes>,
}

impl PayloadPool {
    pub fn new(w: &Workload, seed: u64) -> PayloadPool {
        let mut rng = fastrand::Rng::with_seed(seed);
        let size = w.message_size as usize;
        let random = ((size as f64) * w.random_bytes_ratio).round() as usize;
        let payloads = (0..w.randomized_payload_pool_size)
            .map(|_| {
                let mut p = vec![0u8; size];
                rng.fill(&mut p[..random.min(size)]);
                Bytes::from(p)
            })
            .collect();
        PayloadPool { payloads }
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.payloads[i % self.payloads.len()]
    }
}

/// Microseconds since the Unix epoch: a clock producers and consumers in different threads (or
/// processes) agree on.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub fn read_timestamp(value: &[u8]) -> Option<u64> {
    value.get(..8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_be_bytes(a)
    })
}

pub struct Keys {
    kind: KeyDistributor,
    pool: Vec<Bytes>,
    next: usize,
    rng: fastrand::Rng,
}

impl Keys {
    pub fn new(kind: KeyDistributor, seed: u64) -> Keys {
        let mut rng = fastrand::Rng::with_seed(seed);
        let pool = if kind == KeyDistributor::KeyRoundRobin {
            (0..KEY_POOL_SIZE)
                .map(|_| {
                    Bytes::from(
                        (0..KEY_BYTES)
                            .map(|_| rng.alphanumeric() as u8)
                            .collect::<Vec<u8>>(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        Keys {
            kind,
            pool,
            next: 0,
            rng,
        }
    }

    pub fn next_key(&mut self) -> Option<Bytes> {
        match self.kind {
            KeyDistributor::NoKey => None,
            KeyDistributor::KeyRoundRobin => {
                let k = self.pool[self.next % self.pool.len()].clone();
                self.next = self.next.wrapping_add(1);
                Some(k)
            }
            KeyDistributor::RandomNano => {
                Some(Bytes::from(self.rng.u64(..).to_be_bytes().to_vec()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_asked_size_and_entropy() {
        let yaml = "{name: t, topics: 1, partitionsPerTopic: 1, messageSize: 1000, randomBytesRatio: 0.25, \
                    subscriptionsPerTopic: 1, consumerPerSubscription: 1, producersPerTopic: 1, producerRate: 1, \
                    testDurationSeconds: 1}";
        let w: Workload = serde_yaml::from_str(yaml).expect("workload");
        let pool = PayloadPool::new(&w, 1);
        let p = pool.get(3);
        assert_eq!(p.len(), 1000);
        assert!(p[250..].iter().all(|&b| b == 0), "tail is zeros");
        assert!(
            p[..250].iter().filter(|&&b| b != 0).count() > 200,
            "head is random"
        );
        assert_eq!(read_timestamp(&42u64.to_be_bytes()), Some(42));
        assert_eq!(read_timestamp(&[1, 2]), None);
    }

    #[test]
    fn round_robin_keys_cycle_and_no_key_is_null() {
        let mut k = Keys::new(KeyDistributor::KeyRoundRobin, 7);
        let first = k.next_key();
        for _ in 1..KEY_POOL_SIZE {
            k.next_key();
        }
        assert_eq!(k.next_key(), first);
        assert_eq!(Keys::new(KeyDistributor::NoKey, 7).next_key(), None);
        let mut r = Keys::new(KeyDistributor::RandomNano, 7);
        assert_ne!(r.next_key(), r.next_key());
    }
}
