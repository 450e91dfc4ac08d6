//! `spool-bench`: a Kafka-protocol load generator and the pieces of the side-by-side harness
//! (`bench/compare.sh`) that runs it against Spool and Apache Kafka.
//!
//! Subcommands each write one JSON result (`result.rs`); `report` renders a directory of them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod ceiling;
mod consumer;
mod error;
mod kafka_tools;
mod machine;
mod payload;
mod producer;
mod report;
mod result;
mod run;
mod stats;
mod svg;
mod wire;
mod workload;

use error::BenchError;
use result::Target;

#[derive(Parser)]
#[command(
    name = "spool-bench",
    version,
    about = "Benchmark Spool and Apache Kafka side by side"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one workload file against one broker and write its result as JSON.
    Run(RunArgs),
    /// Run Kafka's own kafka-producer-perf-test and kafka-consumer-perf-test against one broker.
    KafkaTools(ToolsArgs),
    /// Measure this machine's ceilings: loopback TCP and O_DIRECT sequential writes.
    Ceiling(CeilingArgs),
    /// Gather a directory of results into report.json, report.md and SVG plots.
    Report(ReportArgs),
}

/// Which broker a result is about.
#[derive(Args, Clone)]
pub struct TargetArgs {
    /// "spool" or "kafka".
    #[arg(long, default_value = "spool")]
    pub system: String,
    /// "defaults" or "fsync" (fsync parity: Kafka with flush.messages=1).
    #[arg(long, default_value = "defaults")]
    pub mode: String,
    /// Label for tables and plots (default: derived from system and mode).
    #[arg(long)]
    pub label: Option<String>,
    /// The broker's process id, to measure its CPU, peak RSS and disk writes from /proc.
    /// Repeat it for a cluster: figures are then summed over the processes.
    #[arg(long = "broker-pid")]
    pub broker_pids: Vec<u32>,
    /// How many brokers the target runs (1, or 3 for the 3-broker mode); shown in the label.
    #[arg(long, default_value_t = 1)]
    pub brokers: u32,
    /// Apache Kafka version, recorded in the result when the target is Kafka.
    #[arg(long)]
    pub kafka_version: Option<String>,
}

impl TargetArgs {
    pub fn target(&self) -> Target {
        let label = self.label.clone().unwrap_or_else(|| {
            let system = match self.system.as_str() {
                "spool" => "Spool".to_string(),
                "kafka" => "Kafka".to_string(),
                other => other.to_string(),
            };
            let mut notes = Vec::new();
            if self.brokers > 1 {
                notes.push(format!("{} brokers", self.brokers));
            }
            match self.mode.as_str() {
                "defaults" => {}
                "fsync" => notes.push("fsync parity".to_string()),
                other => notes.push(other.to_string()),
            }
            if notes.is_empty() {
                system
            } else {
                format!("{system} ({})", notes.join(", "))
            }
        });
        Target {
            system: self.system.clone(),
            mode: self.mode.clone(),
            label,
            brokers: self.brokers,
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// host:port of the broker.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Workload file (OpenMessaging Benchmark YAML).
    #[arg(long)]
    pub workload: PathBuf,
    /// Override producerRate (records/s over all producers; 0 = as fast as possible).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Override the measured duration, in seconds.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Override the warm-up, in seconds.
    #[arg(long)]
    pub warmup_s: Option<f64>,
    /// Override consumerBacklogSizeGB.
    #[arg(long)]
    pub backlog_gb: Option<f64>,
    /// Override partitionsPerTopic (smoke runs).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Replication factor of the topics the run creates.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Extra topic config (name=value) for the topics the run creates, e.g.
    /// min.insync.replicas=2; repeatable. A broker that rejects one fails the run.
    #[arg(long = "topic-config")]
    pub topic_configs: Vec<String>,
    /// retention.bytes per partition of the topics the run creates (bounds the disk a long
    /// max-rate run takes).
    #[arg(long, default_value_t = 1 << 30)]
    pub retention_bytes: u64,
    /// segment.bytes of the topics the run creates.
    #[arg(long, default_value_t = 128 << 20)]
    pub segment_bytes: u64,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where to write the result JSON.
    #[arg(long)]
    pub out: PathBuf,
    /// Print no progress line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ToolsArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Directory holding the Apache Kafka jars (kafka-tools and its dependencies).
    #[arg(long)]
    pub libs: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    #[arg(long, default_value_t = 1024)]
    pub record_size: u32,
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Replication factor of the perf tools' topic.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Extra topic config (name=value) for the perf tools' topic; repeatable.
    #[arg(long = "topic-config")]
    pub topic_configs: Vec<String>,
    /// Extra producer properties (key=value), e.g. acks=all (the default here).
    #[arg(long = "producer-prop")]
    pub producer_props: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct CeilingArgs {
    /// A directory on the disk the brokers write to.
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 1024 * 1024)]
    pub block_bytes: u32,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Directory of result JSON files (every *.json with a known "kind").
    #[arg(long)]
    pub results: PathBuf,
    /// Where report.json, report.md and the SVG plots go (default: the results directory).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The command line that produced the results, quoted in the report.
    #[arg(long, default_value = "")]
    pub command: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome: Result<(), BenchError> = match cli.command {
        Command::Run(args) => run::main(args),
        Command::KafkaTools(args) => kafka_tools::main(args),
        Command::Ceiling(args) => ceiling::main(args),
        Command::Report(args) => report::main(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spool-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The one exit for failures of the environment itself (a thread that cannot start, a load
/// thread that panicked): nothing measured after that could be trusted.
pub fn fatal(what: &str) -> ! {
    eprintln!("spool-bench: fatal: {what}");
    std::process::exit(70)
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: serde::Serialize>(
    path: &std::path::Path,
    value: &T,
) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| BenchError::Report(format!("encoding {}: {e}", path.display())))?;
    std::fs::write(path, text).map_err(BenchError::io(format!("writing {}", path.display())))
}
