//! Expected operating errors of the broker crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown setting `{name}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    #[error("invalid value `{value}` for `{name}`")]
    Invalid { name: String, value: String },
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A combination of cluster settings Kafka rejects; the message is Kafka's.
    #[error("{0}")]
    Cluster(String),
}
