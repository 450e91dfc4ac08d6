//! Expected failures of a benchmark step. Each names what was being done, so a failed run says
//! which broker, file or request it gave up on.

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("workload {path}: {reason}")]
    Workload { path: String, reason: String },
    #[error("{what}: Kafka error code {code}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        what: String,
        code: i16,
        message: Option<String>,
    },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Usage(String),
    #[error("{tool} failed: {reason}")]
    Tool { tool: String, reason: String },
    #[error("report: {0}")]
    Report(String),
}

impl BenchError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}
