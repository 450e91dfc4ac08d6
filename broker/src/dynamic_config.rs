//! Dynamic broker configs: Kafka's `kafka-configs --entity-type brokers` settings, changed at
//! run time through IncrementalAlterConfigs / AlterConfigs, stored in the metadata log
//! (`MetadataRecord::AlterBrokerConfigs`: per broker, or the cluster-wide default with broker
//! -1) and applied live by every broker's shards.
//!
//! A broker's value of a setting is, as in Kafka: its own dynamic value, else the cluster
//! default's, else its static config file / `--set`, else the built-in default. Which settings
//! can change live is Spool's own list ([`DYNAMIC_APPLIED`]): the log defaults every partition
//! without a topic override follows, and the log cleaner's settings. Kafka's replication
//! throttles are accepted and kept (the reassignment tool sets them) but have no effect
//! ([`DYNAMIC_IGNORED`]); any other name is refused, as Kafka refuses one it cannot update.

use std::collections::BTreeMap;

use crate::topic_config;

/// DescribeConfigs sources of dynamic broker values.
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;

/// The broker id of the cluster-wide default in `AlterBrokerConfigs` and the image.
pub const DEFAULT_BROKER: i32 = -1;

/// Settings applied live when changed: each partition's log settings follow at once (unless
/// its topic overrides them) and the shard's cleaner reads its own on every pass.
pub const DYNAMIC_APPLIED: &[&str] = &[
    "log.cleaner.backoff.ms",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.io.max.bytes.per.second",
    "log.cleaner.max.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleanup.policy",
    "log.index.interval.bytes",
    "log.message.timestamp.type",
    "log.retention.bytes",
    "log.retention.ms",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
    "transaction.partition.verification.enable",
];

/// Dynamic in Kafka, kept and reported by Spool, without effect: the reason.
pub const DYNAMIC_IGNORED: &[(&str, &str)] = &[
    (
        "leader.replication.throttled.rate",
        "replication throttles are not built",
    ),
    (
        "follower.replication.throttled.rate",
        "replication throttles are not built",
    ),
    (
        "replica.alter.log.dirs.io.max.bytes.per.second",
        "one log directory per broker: nothing moves between directories",
    ),
];

/// Why `name=value` cannot be set dynamically (Kafka's INVALID_REQUEST for a name it cannot
/// update, INVALID_CONFIG for a bad value), or Ok.
pub fn validate(name: &str, value: &str) -> Result<(), (bool, String)> {
    if DYNAMIC_IGNORED.iter().any(|(n, _)| *n == name) {
        return value.parse::<i64>().map(|_| ()).map_err(|_| {
            (
                false,
                format!("Invalid value {value} for configuration {name}"),
            )
        });
    }
    if !DYNAMIC_APPLIED.contains(&name) {
        return Err((
            true,
            format!("Cannot update these configs dynamically: Set({name})"),
        ));
    }
    // The log defaults take the values of the topic config they stand for.
    if let Some(spec) = topic_config::TOPIC_CONFIGS
        .iter()
        .find(|s| s.synonym == Some(name))
    {
        return topic_config::validate(spec.name, value).map_err(|m| (false, m));
    }
    let ok = match name {
        "log.cleaner.backoff.ms" => value.parse::<u64>().is_ok_and(|v| v >= 1),
        // Kafka's floor for the dedupe buffer: 1 MiB per cleaner thread.
        "log.cleaner.dedupe.buffer.size" => value.parse::<u64>().is_ok_and(|v| v >= 1 << 20),
        "transaction.partition.verification.enable" => value.parse::<bool>().is_ok(),
        "log.cleaner.io.max.bytes.per.second" => value.parse::<f64>().is_ok_and(|v| v > 0.0),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err((
            false,
            format!("Invalid value {value} for configuration {name}"),
        ))
    }
}

/// The dynamic values one broker sees: its own and the cluster default's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicConfigs {
    pub default: BTreeMap<String, String>,
    pub broker: BTreeMap<String, String>,
}

impl DynamicConfigs {
    /// `name`'s dynamic value and its DescribeConfigs source, if it has one.
    pub fn get(&self, name: &str) -> Option<(&str, i8)> {
        if let Some(v) = self.broker.get(name) {
            return Some((v, SOURCE_DYNAMIC_BROKER));
        }
        self.default
            .get(name)
            .map(|v| (v.as_str(), SOURCE_DYNAMIC_DEFAULT_BROKER))
    }

    /// `name`'s dynamic value parsed, else `fallback` (a value that does not parse cannot be
    /// here: the controller validated it).
    pub fn num<T: std::str::FromStr>(&self, name: &str, fallback: T) -> T {
        self.get(name)
            .and_then(|(v, _)| v.parse().ok())
            .unwrap_or(fallback)
    }

    /// Broker `node`'s view of the image's dynamic configs.
    pub fn of(all: &BTreeMap<i32, BTreeMap<String, String>>, node: i32) -> DynamicConfigs {
        DynamicConfigs {
            default: all.get(&DEFAULT_BROKER).cloned().unwrap_or_default(),
            broker: all.get(&node).cloned().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_can_change_live() {
        assert!(validate("log.retention.ms", "1000").is_ok());
        assert_eq!(
            validate("log.retention.ms", "-7").map_err(|e| e.0),
            Err(false)
        );
        assert!(validate("log.cleanup.policy", "compact,delete").is_ok());
        assert!(validate("log.cleaner.min.cleanable.ratio", "2").is_err());
        assert!(validate("log.cleaner.dedupe.buffer.size", "1024").is_err());
        assert!(validate("leader.replication.throttled.rate", "1000000").is_ok());
        assert_eq!(validate("log.dirs", "/tmp").map_err(|e| e.0), Err(true));
        assert_eq!(validate("num.io.threads", "8").map_err(|e| e.0), Err(true));
        // Every applied name is a setting Spool has.
        for name in DYNAMIC_APPLIED {
            assert!(
                crate::config::SETTINGS.iter().any(|s| s.name == *name),
                "{name}"
            );
        }
    }

    #[test]
    fn a_broker_value_wins_over_the_cluster_default() {
        let mut all = BTreeMap::new();
        all.insert(
            DEFAULT_BROKER,
            BTreeMap::from([("log.retention.ms".to_string(), "100".to_string())]),
        );
        all.insert(
            3,
            BTreeMap::from([("log.retention.ms".to_string(), "300".to_string())]),
        );
        assert_eq!(
            DynamicConfigs::of(&all, 3).get("log.retention.ms"),
            Some(("300", SOURCE_DYNAMIC_BROKER))
        );
        assert_eq!(
            DynamicConfigs::of(&all, 1).get("log.retention.ms"),
            Some(("100", SOURCE_DYNAMIC_DEFAULT_BROKER))
        );
        assert_eq!(
            DynamicConfigs::of(&all, 1).num("log.retention.ms", 7i64),
            100
        );
        assert_eq!(DynamicConfigs::of(&all, 1).num("log.roll.ms", 7i64), 7);
    }
}
