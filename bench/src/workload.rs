//! Workload files in the OpenMessaging Benchmark (OMB) style.
//!
//! The field names are OMB's (`partitionsPerTopic`, `producerRate`, `keyDistributor`, ...), so an
//! OMB workload YAML runs unchanged; the producer knobs OMB keeps in its driver file (acks,
//! compression, batching, in-flight requests) are optional fields here with Kafka's client
//! defaults, so one file describes the whole load and both brokers see the same client.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::BenchError;

/// Bounds that keep a typo in a workload file from asking for absurd resources.
pub const TOPICS_MAX: u32 = 1_000;
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
pub const MESSAGE_SIZE_MAX: u32 = 1024 * 1024;
pub const PRODUCERS_MAX: u32 = 256;
pub const CONSUMERS_MAX: u32 = 256;
pub const BATCH_BYTES_MAX: u32 = 16 * 1024 * 1024;
pub const INFLIGHT_PER_CONNECTION_MAX: u32 = 64;
/// The end-to-end timestamp lives in the first 8 bytes of every payload.
pub const MESSAGE_SIZE_MIN: u32 = 8;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// Null keys; the producer fills one partition's batch, then moves on (Kafka's sticky
    /// partitioner, KIP-480).
    #[default]
    NoKey,
    /// Keys cycle through a fixed pool; partition = murmur2(key) as Kafka's default partitioner.
    KeyRoundRobin,
    /// A fresh random key per record; partition = murmur2(key).
    RandomNano,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    pub message_size: u32,
    /// OMB: payloads drawn from a pool of randomized payloads. Always true here; accepted so OMB
    /// files parse.
    #[serde(default)]
    pub use_randomized_payloads: bool,
    /// Fraction of each payload that is random bytes (the rest is zeros, which compresses).
    #[serde(default = "default_random_bytes_ratio")]
    pub random_bytes_ratio: f64,
    #[serde(default = "default_payload_pool")]
    pub randomized_payload_pool_size: u32,
    /// OMB's payload file is not supported; present only so OMB files parse (must be unset or it
    /// is refused, rather than silently ignored).
    #[serde(default)]
    pub payload_file: Option<String>,
    pub subscriptions_per_topic: u32,
    pub producers_per_topic: u32,
    pub consumer_per_subscription: u32,
    /// Records per second over all producers; 0 = closed loop: every producer sends as fast as
    /// its in-flight bound lets it, which finds the maximum rate the broker sustains.
    pub producer_rate: u64,
    /// Build a backlog of this many GiB with consumers paused, then let consumers drain it while
    /// producers keep producing (catch-up read). Fractions are allowed (smoke runs).
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    #[serde(default)]
    pub test_duration_minutes: f64,
    #[serde(default)]
    pub warmup_duration_minutes: Option<f64>,
    /// Seconds; overrides testDurationMinutes when set.
    #[serde(default)]
    pub test_duration_seconds: Option<f64>,
    /// Seconds; overrides warmupDurationMinutes when set.
    #[serde(default)]
    pub warmup_duration_seconds: Option<f64>,
    /// "all" (-1), "1" or "0".
    #[serde(default = "default_acks")]
    pub acks: String,
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Producer batch.size per partition.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: u32,
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Largest produce request (Kafka's max.request.size).
    #[serde(default = "default_request_bytes")]
    pub request_bytes_max: u32,
    #[serde(default = "default_connections")]
    pub connections_per_producer: u32,
    /// Kafka's max.in.flight.requests.per.connection.
    #[serde(default = "default_inflight")]
    pub inflight_per_connection: u32,
    /// Fetch max.bytes / max.partition.fetch.bytes, as Kafka's consumer defaults.
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: u32,
    #[serde(default = "default_fetch_partition_max_bytes")]
    pub fetch_partition_max_bytes: u32,
    /// fetch.max.wait.ms
    #[serde(default = "default_fetch_wait_ms")]
    pub fetch_max_wait_ms: u32,
}

fn default_random_bytes_ratio() -> f64 {
    1.0
}
fn default_payload_pool() -> u32 {
    64
}
fn default_acks() -> String {
    "all".into()
}
fn default_compression() -> String {
    "none".into()
}
fn default_batch_bytes() -> u32 {
    128 * 1024
}
fn default_linger_ms() -> u64 {
    1
}
fn default_request_bytes() -> u32 {
    1024 * 1024
}
fn default_connections() -> u32 {
    1
}
fn default_inflight() -> u32 {
    5
}
fn default_fetch_max_bytes() -> u32 {
    50 * 1024 * 1024
}
fn default_fetch_partition_max_bytes() -> u32 {
    1024 * 1024
}
fn default_fetch_wait_ms() -> u32 {
    500
}

impl Workload {
    pub fn load(path: &Path) -> Result<Workload, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
            what: format!("reading workload {}", path.display()),
            source,
        })?;
        let w: Workload = serde_yaml::from_str(&text).map_err(|e| BenchError::Workload {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        w.validate().map_err(|reason| BenchError::Workload {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(w)
    }

    pub fn validate(&self) -> Result<(), String> {
        let range = |name: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(format!("{name} = {v} is outside {lo}..={hi}"))
            } else {
                Ok(())
            }
        };
        range("topics", self.topics.into(), 1, TOPICS_MAX.into())?;
        range(
            "partitionsPerTopic",
            self.partitions_per_topic.into(),
            1,
            PARTITIONS_PER_TOPIC_MAX.into(),
        )?;
        range(
            "messageSize",
            self.message_size.into(),
            MESSAGE_SIZE_MIN.into(),
            MESSAGE_SIZE_MAX.into(),
        )?;
        range(
            "producersPerTopic",
            self.producers_per_topic.into(),
            1,
            PRODUCERS_MAX.into(),
        )?;
        range(
            "consumerPerSubscription",
            self.consumer_per_subscription.into(),
            0,
            CONSUMERS_MAX.into(),
        )?;
        range(
            "subscriptionsPerTopic",
            self.subscriptions_per_topic.into(),
            0,
            CONSUMERS_MAX.into(),
        )?;
        range(
            "batchBytes",
            self.batch_bytes.into(),
            self.message_size.into(),
            BATCH_BYTES_MAX.into(),
        )?;
        range(
            "requestBytesMax",
            self.request_bytes_max.into(),
            self.batch_bytes.into(),
            BATCH_BYTES_MAX.into(),
        )?;
        range(
            "inflightPerConnection",
            self.inflight_per_connection.into(),
            1,
            INFLIGHT_PER_CONNECTION_MAX.into(),
        )?;
        range(
            "connectionsPerProducer",
            self.connections_per_producer.into(),
            1,
            16,
        )?;
        if !(0.0..=1.0).contains(&self.random_bytes_ratio) {
            return Err(format!(
                "randomBytesRatio = {} is outside 0..=1",
                self.random_bytes_ratio
            ));
        }
        range(
            "randomizedPayloadPoolSize",
            self.randomized_payload_pool_size.into(),
            1,
            4096,
        )?;
        if self.payload_file.is_some() {
            return Err(
                "payloadFile is not supported; use messageSize and randomBytesRatio".into(),
            );
        }
        if !(0.0..=1024.0).contains(&self.consumer_backlog_size_gb) {
            return Err("consumerBacklogSizeGB must be within 0..=1024".into());
        }
        if self.consumer_backlog_size_gb > 0.0 && self.consumers() == 0 {
            return Err("a consumer backlog needs consumers to drain it".into());
        }
        self.acks_value()?;
        self.compression_value()?;
        if self.duration_s() <= 0.0 {
            return Err("set testDurationSeconds or testDurationMinutes above 0".into());
        }
        if self.warmup_s() < 0.0 {
            return Err("warm-up must not be negative".into());
        }
        Ok(())
    }

    pub fn acks_value(&self) -> Result<i16, String> {
        match self.acks.as_str() {
            "all" | "-1" => Ok(-1),
            "1" => Ok(1),
            "0" => Ok(0),
            other => Err(format!("acks = {other:?}: use all, 1 or 0")),
        }
    }

    pub fn compression_value(&self) -> Result<kafka_protocol::records::Compression, String> {
        use kafka_protocol::records::Compression;
        match self.compression.as_str() {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "compression = {other:?}: use none, gzip, snappy, lz4 or zstd"
            )),
        }
    }

    pub fn duration_s(&self) -> f64 {
        self.test_duration_seconds
            .unwrap_or(self.test_duration_minutes * 60.0)
    }

    /// OMB's default warm-up is one minute.
    pub fn warmup_s(&self) -> f64 {
        self.warmup_duration_seconds
            .unwrap_or(self.warmup_duration_minutes.unwrap_or(1.0) * 60.0)
    }

    pub fn producers(&self) -> u32 {
        self.topics * self.producers_per_topic
    }

    pub fn consumers(&self) -> u32 {
        self.topics * self.subscriptions_per_topic * self.consumer_per_subscription
    }

    pub fn backlog_bytes(&self) -> u64 {
        (self.consumer_backlog_size_gb * (1u64 << 30) as f64) as u64
    }

    /// Topic names, unique per run so reruns against one broker never read old data.
    pub fn topic_names(&self, run_id: &str) -> Vec<String> {
        (0..self.topics)
            .map(|t| format!("bench-{}-{run_id}-{t}", sanitize(&self.name)))
            .collect()
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OMB_FILE: &str = "
name: 1 topic / 16 partitions / 1kb
topics: 1
partitionsPerTopic: 16
keyDistributor: \"NO_KEY\"
messageSize: 1024
useRandomizedPayloads: true
randomBytesRatio: 0.5
randomizedPayloadPoolSize: 1000
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
";

    #[test]
    fn an_omb_workload_file_parses_with_kafka_client_defaults() {
        let w: Workload = serde_yaml::from_str(OMB_FILE).expect("parses");
        w.validate().expect("valid");
        assert_eq!(w.partitions_per_topic, 16);
        assert_eq!(w.key_distributor, KeyDistributor::NoKey);
        assert_eq!(w.producer_rate, 50_000);
        assert_eq!(w.duration_s(), 900.0);
        assert_eq!(w.warmup_s(), 60.0);
        assert_eq!(w.acks_value(), Ok(-1));
        assert_eq!(w.inflight_per_connection, 5);
        assert_eq!(w.consumers(), 1);
    }

    #[test]
    fn bad_values_are_refused_with_the_field_name() {
        let mut w: Workload = serde_yaml::from_str(OMB_FILE).expect("parses");
        w.partitions_per_topic = 0;
        assert!(w
            .validate()
            .expect_err("must be refused")
            .contains("partitionsPerTopic"));
        let mut w: Workload = serde_yaml::from_str(OMB_FILE).expect("parses");
        w.message_size = 4;
        assert!(w
            .validate()
            .expect_err("must be refused")
            .contains("messageSize"));
        let mut w: Workload = serde_yaml::from_str(OMB_FILE).expect("parses");
        w.acks = "2".into();
        assert!(w.validate().expect_err("must be refused").contains("acks"));
        let mut w: Workload = serde_yaml::from_str(OMB_FILE).expect("parses");
        w.payload_file = Some("x".into());
        assert!(w
            .validate()
            .expect_err("must be refused")
            .contains("payloadFile"));
        let unknown = format!("{OMB_FILE}bogusField: 1\n");
        assert!(serde_yaml::from_str::<Workload>(&unknown).is_err());
    }

    #[test]
    fn the_shipped_workloads_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("workloads dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Workload::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 4, "expected the four shipped workloads, found {n}");
    }
}
