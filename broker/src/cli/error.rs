//! Expected failures of the command-line client.
//!
//! Broker-reported failures carry Kafka's error name (`TOPIC_ALREADY_EXISTS`) and the broker's
//! message, so the output reads the same as Kafka's own tools. Bugs are asserts, not variants.

use std::io;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("I/O error talking to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("{what}: {source}")]
    Local {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot encode {api:?} v{version}: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot decode {api:?} v{version} response from {addr}: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        addr: String,
        reason: String,
    },
    #[error("{addr} sent a {size}-byte response frame; limit is {max} bytes")]
    FrameSize { addr: String, size: i64, max: usize },
    #[error("{addr} answered correlation id {got}, expected {expected}")]
    Correlation {
        addr: String,
        expected: i32,
        got: i32,
    },
    #[error(
        "{addr} does not support {api:?} in a version this client speaks ({ours_min}..={ours_max})"
    )]
    Unsupported {
        addr: String,
        api: ApiKey,
        ours_min: i16,
        ours_max: i16,
    },
    #[error("{context}: {name}{}", colon_prefixed(.message))]
    Kafka {
        context: String,
        name: String,
        message: String,
    },
    #[error("topic `{topic}` does not exist")]
    UnknownTopic { topic: String },
    #[error("topic `{topic}` has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("no leader for {topic}-{partition} after {attempts} metadata attempts")]
    NoLeader {
        topic: String,
        partition: i32,
        attempts: u32,
    },
    #[error("metadata names no address for broker {node_id}")]
    UnknownBroker { node_id: i32 },
    #[error("invalid {flag} `{value}`: {reason}")]
    InvalidArgument {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{topic}-{partition}: only record batches of magic 2 are supported, got magic {magic}"
    )]
    OldMessageFormat {
        topic: String,
        partition: i32,
        magic: i8,
    },
    #[error("{topic}-{partition}: corrupt record batch at offset {offset}: {reason}")]
    CorruptBatch {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("stdin line of {size} bytes exceeds record_bytes_max {max}")]
    RecordTooLarge { size: usize, max: usize },
}

impl CliError {
    /// A broker error code turned into the error Kafka's tools would print.
    pub fn kafka(context: impl Into<String>, code: i16, message: Option<&str>) -> Self {
        let name = error_name(code);
        let message = message.unwrap_or_default().to_string();
        CliError::Kafka {
            context: context.into(),
            name,
            message,
        }
    }
}

/// Kafka's constant name for an error code, e.g. 36 → `TOPIC_ALREADY_EXISTS`.
///
/// The crate names its variants in CamelCase after Kafka's `Errors` enum, so converting back to
/// SCREAMING_SNAKE_CASE yields Kafka's own spelling.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => camel_to_screaming_snake(&format!("{e:?}")),
    }
}

/// True when Kafka marks the code as retriable (leader moving, topic still being created, ...).
pub fn is_retriable(code: i16) -> bool {
    ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

fn colon_prefixed(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn camel_to_screaming_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_match_kafka() {
        let cases = [
            (0, "NONE"),
            (3, "UNKNOWN_TOPIC_OR_PARTITION"),
            (36, "TOPIC_ALREADY_EXISTS"),
            (37, "INVALID_PARTITIONS"),
            (-1, "UNKNOWN_SERVER_ERROR"),
        ];
        for (code, name) in cases {
            assert_eq!(error_name(code), name, "code {code}");
        }
        assert!(is_retriable(3));
        assert!(!is_retriable(36));
    }
}
