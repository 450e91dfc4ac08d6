//! Topic-level configs: Kafka's names, their broker-level synonyms and defaults, and validation.
//!
//! The names are Kafka's full topic config list so that tools setting any of them work; the
//! ones Spool enforces are marked `enforced`. A topic's value comes from its override, else the
//! broker synonym's value (static config or default), as Kafka resolves it.

use crate::config::{BrokerConfig, ConfigSource};

/// DescribeConfigs config types.
pub const TYPE_BOOLEAN: i8 = 1;
pub const TYPE_STRING: i8 = 2;
pub const TYPE_INT: i8 = 3;
pub const TYPE_LONG: i8 = 5;
pub const TYPE_DOUBLE: i8 = 6;
pub const TYPE_LIST: i8 = 7;

/// DescribeConfigs sources.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// Smallest `segment.bytes` / `log.segment.bytes`, as Kafka 4.
pub const SEGMENT_BYTES_MIN: i64 = 1024 * 1024;

pub struct TopicConfigSpec {
    pub name: &'static str,
    /// The broker setting it defaults to, when Spool has one.
    pub synonym: Option<&'static str>,
    pub default: &'static str,
    pub config_type: i8,
    pub enforced: bool,
}

const fn spec(
    name: &'static str,
    synonym: Option<&'static str>,
    default: &'static str,
    config_type: i8,
    enforced: bool,
) -> TopicConfigSpec {
    TopicConfigSpec {
        name,
        synonym,
        default,
        config_type,
        enforced,
    }
}

/// Kafka 4.3.1's topic configs, every one it reports in DescribeConfigs (its names, types,
/// defaults and broker synonyms; `flush.*` default to Spool's fsync-before-ack settings).
pub const TOPIC_CONFIGS: &[TopicConfigSpec] = &[
    spec(
        "cleanup.policy",
        Some("log.cleanup.policy"),
        "delete",
        TYPE_LIST,
        true,
    ),
    spec(
        "compression.gzip.level",
        Some("compression.gzip.level"),
        "-1",
        TYPE_INT,
        false,
    ),
    spec(
        "compression.lz4.level",
        Some("compression.lz4.level"),
        "9",
        TYPE_INT,
        false,
    ),
    spec(
        "compression.type",
        Some("compression.type"),
        "producer",
        TYPE_STRING,
        false,
    ),
    spec(
        "compression.zstd.level",
        Some("compression.zstd.level"),
        "3",
        TYPE_INT,
        false,
    ),
    spec(
        "delete.retention.ms",
        Some("log.cleaner.delete.retention.ms"),
        "86400000",
        TYPE_LONG,
        true,
    ),
    spec(
        "file.delete.delay.ms",
        Some("log.segment.delete.delay.ms"),
        "60000",
        TYPE_LONG,
        false,
    ),
    spec(
        "flush.messages",
        Some("log.flush.interval.messages"),
        "1",
        TYPE_LONG,
        false,
    ),
    spec(
        "flush.ms",
        Some("log.flush.interval.ms"),
        "1000",
        TYPE_LONG,
        false,
    ),
    spec(
        "follower.replication.throttled.replicas",
        None,
        "",
        TYPE_LIST,
        false,
    ),
    spec(
        "index.interval.bytes",
        Some("log.index.interval.bytes"),
        "4096",
        TYPE_INT,
        true,
    ),
    spec(
        "leader.replication.throttled.replicas",
        None,
        "",
        TYPE_LIST,
        false,
    ),
    spec(
        "local.retention.bytes",
        Some("log.local.retention.bytes"),
        "-2",
        TYPE_LONG,
        false,
    ),
    spec(
        "local.retention.ms",
        Some("log.local.retention.ms"),
        "-2",
        TYPE_LONG,
        false,
    ),
    spec(
        "max.compaction.lag.ms",
        Some("log.cleaner.max.compaction.lag.ms"),
        "9223372036854775807",
        TYPE_LONG,
        true,
    ),
    spec(
        "max.message.bytes",
        Some("message.max.bytes"),
        "1048588",
        TYPE_INT,
        true,
    ),
    spec(
        "message.timestamp.after.max.ms",
        Some("log.message.timestamp.after.max.ms"),
        "3600000",
        TYPE_LONG,
        false,
    ),
    spec(
        "message.timestamp.before.max.ms",
        Some("log.message.timestamp.before.max.ms"),
        "9223372036854775807",
        TYPE_LONG,
        false,
    ),
    spec(
        "message.timestamp.type",
        Some("log.message.timestamp.type"),
        "CreateTime",
        TYPE_STRING,
        true,
    ),
    spec(
        "min.cleanable.dirty.ratio",
        Some("log.cleaner.min.cleanable.ratio"),
        "0.5",
        TYPE_DOUBLE,
        true,
    ),
    spec(
        "min.compaction.lag.ms",
        Some("log.cleaner.min.compaction.lag.ms"),
        "0",
        TYPE_LONG,
        true,
    ),
    spec(
        "min.insync.replicas",
        Some("min.insync.replicas"),
        "1",
        TYPE_INT,
        true,
    ),
    spec(
        "preallocate",
        Some("log.preallocate"),
        "false",
        TYPE_BOOLEAN,
        false,
    ),
    spec(
        "remote.log.copy.disable",
        None,
        "false",
        TYPE_BOOLEAN,
        false,
    ),
    spec(
        "remote.log.delete.on.disable",
        None,
        "false",
        TYPE_BOOLEAN,
        false,
    ),
    spec("remote.storage.enable", None, "false", TYPE_BOOLEAN, false),
    spec(
        "retention.bytes",
        Some("log.retention.bytes"),
        "-1",
        TYPE_LONG,
        true,
    ),
    spec(
        "retention.ms",
        Some("log.retention.ms"),
        "604800000",
        TYPE_LONG,
        true,
    ),
    spec(
        "segment.bytes",
        Some("log.segment.bytes"),
        "1073741824",
        TYPE_INT,
        true,
    ),
    spec(
        "segment.index.bytes",
        Some("log.index.size.max.bytes"),
        "10485760",
        TYPE_INT,
        false,
    ),
    spec("segment.jitter.ms", None, "0", TYPE_LONG, false),
    spec(
        "segment.ms",
        Some("log.roll.ms"),
        "604800000",
        TYPE_LONG,
        true,
    ),
    spec(
        "unclean.leader.election.enable",
        Some("unclean.leader.election.enable"),
        "false",
        TYPE_BOOLEAN,
        false,
    ),
];

pub fn find(name: &str) -> Option<&'static TopicConfigSpec> {
    TOPIC_CONFIGS.iter().find(|s| s.name == name)
}

/// Why a topic config override is refused (INVALID_CONFIG).
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(spec) = find(name) else {
        return Err(format!("Unknown topic config name: {name}"));
    };
    let ok = match spec.config_type {
        TYPE_INT => value.parse::<i32>().is_ok(),
        TYPE_LONG => value.parse::<i64>().is_ok(),
        TYPE_DOUBLE => value.parse::<f64>().is_ok(),
        TYPE_BOOLEAN => value == "true" || value == "false",
        _ => true,
    };
    if !ok {
        return Err(format!("Invalid value {value} for configuration {name}"));
    }
    let range_ok = match name {
        "message.timestamp.type" => value == "CreateTime" || value == "LogAppendTime",
        // Kafka 4 (KIP-1030) allows no segment under 1 MiB.
        "segment.bytes" => value
            .parse::<i64>()
            .map(|v| v >= SEGMENT_BYTES_MIN)
            .unwrap_or(false),
        "max.message.bytes" | "index.interval.bytes" => {
            value.parse::<i64>().map(|v| v >= 0).unwrap_or(false)
        }
        "retention.ms" | "retention.bytes" => {
            value.parse::<i64>().map(|v| v >= -1).unwrap_or(false)
        }
        "segment.ms" => value.parse::<i64>().map(|v| v >= 1).unwrap_or(false),
        "min.insync.replicas" => value.parse::<i32>().map(|v| v >= 1).unwrap_or(false),
        "cleanup.policy" => value
            .split(',')
            .all(|p| p.trim() == "delete" || p.trim() == "compact"),
        "min.cleanable.dirty.ratio" => value.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)),
        "delete.retention.ms" | "min.compaction.lag.ms" | "file.delete.delay.ms" => {
            value.parse::<i64>().is_ok_and(|v| v >= 0)
        }
        "max.compaction.lag.ms" => value.parse::<i64>().is_ok_and(|v| v >= 1),
        "local.retention.ms" | "local.retention.bytes" => {
            value.parse::<i64>().is_ok_and(|v| v >= -2)
        }
        "compression.type" => {
            ["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"].contains(&value)
        }
        "compression.gzip.level" => value
            .parse::<i32>()
            .is_ok_and(|v| v == -1 || (1..=9).contains(&v)),
        "compression.lz4.level" => value.parse::<i32>().is_ok_and(|v| (1..=17).contains(&v)),
        "compression.zstd.level" => value
            .parse::<i32>()
            .is_ok_and(|v| (-131_072..=22).contains(&v)),
        _ => true,
    };
    if !range_ok {
        return Err(format!("Invalid value {value} for configuration {name}"));
    }
    Ok(())
}

/// A topic config's effective value and its source, given the topic's overrides: the
/// override, else the broker synonym's dynamic value (this broker's, then the cluster
/// default's), static value or default.
pub fn resolve(
    spec: &TopicConfigSpec,
    overrides: &std::collections::BTreeMap<String, String>,
    broker: &BrokerConfig,
    dynamic: &crate::dynamic_config::DynamicConfigs,
) -> (String, i8) {
    if let Some(v) = overrides.get(spec.name) {
        return (v.clone(), SOURCE_DYNAMIC_TOPIC);
    }
    if let Some((value, source)) = spec.synonym.and_then(|s| dynamic.get(s)) {
        return (value.to_string(), source);
    }
    if let Some((value, source)) = spec.synonym.and_then(|s| broker.values.get(s)) {
        let source = if *source == ConfigSource::Static {
            SOURCE_STATIC_BROKER
        } else {
            SOURCE_DEFAULT
        };
        return (value.clone(), source);
    }
    (spec.default.to_string(), SOURCE_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_cases() {
        let cases = [
            ("retention.ms", "1000", true),
            ("retention.ms", "-1", true),
            ("retention.ms", "-2", false),
            ("retention.ms", "soon", false),
            ("segment.bytes", "1048575", false),
            ("segment.bytes", "1048576", true),
            ("message.timestamp.type", "LogAppendTime", true),
            ("message.timestamp.type", "Now", false),
            ("cleanup.policy", "compact,delete", true),
            ("no.such.config", "1", false),
            ("preallocate", "yes", false),
            ("min.insync.replicas", "2", true),
            ("min.insync.replicas", "0", false),
            ("min.cleanable.dirty.ratio", "0.01", true),
            ("min.cleanable.dirty.ratio", "1.5", false),
            ("delete.retention.ms", "-1", false),
            ("compression.zstd.level", "22", true),
            ("compression.lz4.level", "0", false),
            ("compression.type", "brotli", false),
        ];
        for (name, value, ok) in cases {
            assert_eq!(validate(name, value).is_ok(), ok, "{name}={value}");
        }
    }
}
