//! The JSON every step of a benchmark run writes, and the report reads.
//!
//! One file per step (`kind` says which): a workload run against one broker, Kafka's own perf
//! tools against one broker, or the machine's ceilings. `spool-bench report` gathers a directory
//! of them into `report.json` and renders Markdown and SVG from that alone, so a report can be
//! re-rendered (or compared across machines) without rerunning anything.

use serde::{Deserialize, Serialize};

use crate::workload::Workload;

/// Which broker, in which durability mode, a result is about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// "spool" or "kafka".
    pub system: String,
    /// "defaults" (each broker as shipped) or "fsync" (Kafka with flush.messages=1).
    pub mode: String,
    /// Human label for tables and plot legends, e.g. "Kafka (fsync parity)".
    pub label: String,
    /// Broker processes the target ran (3 in compare.sh's 3-broker mode).
    #[serde(default = "one")]
    pub brokers: u32,
}

fn one() -> u32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Machine {
    pub hostname: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cores: u32,
    pub mem_bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Versions {
    /// `git describe --always --dirty` of the Spool tree the bench was built from.
    pub spool_git: String,
    pub bench: String,
    /// Apache Kafka version when the target is Kafka.
    pub kafka: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Throughput {
    pub records: u64,
    pub bytes: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
}

/// Latency in microseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
    /// (percentile in 0..=100, value in µs) at HDR-style log-spaced percentiles, for plots.
    pub percentiles: Vec<(f64, u64)>,
    /// The raw histogram: HdrHistogram V2 deflate encoding, base64 (the format HdrHistogram's
    /// Java, Go and Rust libraries all read).
    pub histogram: String,
}

/// One second of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since the load started (warm-up included).
    pub t_s: f64,
    pub warmup: bool,
    pub publish_mb_s: f64,
    pub publish_records_s: f64,
    pub consume_mb_s: f64,
    pub consume_records_s: f64,
    /// Records produced and not yet consumed (summed over subscriptions, per subscription).
    pub backlog_records: i64,
    pub broker_cpu_pct: Option<f64>,
    pub broker_rss_bytes: Option<u64>,
    /// The highest publish latency among records acknowledged in this second, so a stall
    /// shows when it happened (the histograms have no time axis).
    #[serde(default)]
    pub publish_latency_max_ms: f64,
}

/// The broker processes' resource use over the measured part of a run, from /proc: one
/// process, or the sum over a cluster's processes.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct BrokerUsage {
    /// The first (or only) process.
    pub pid: u32,
    /// Every process measured (empty in results written before clusters were measured).
    #[serde(default)]
    pub pids: Vec<u32>,
    /// User + system CPU seconds, summed over the processes.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM, reset at the start of the measurement); for several processes
    /// the sum of each one's peak (an upper bound of the peak of the sum).
    pub peak_rss_bytes: u64,
    /// Bytes the processes caused to be written to storage (/proc/PID/io write_bytes), summed.
    pub disk_write_bytes: u64,
}

/// A catch-up read: consumers start against a backlog while producers keep going.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct CatchUp {
    pub backlog_bytes: u64,
    /// Seconds from the consumers' start until they were within one second of production.
    pub drain_s: f64,
    /// Consumer read rate during the drain.
    pub read_mb_per_s: f64,
    pub read_records_per_s: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RunResult {
    /// Always "workload".
    pub kind: String,
    pub target: Target,
    pub workload: Workload,
    pub machine: Machine,
    pub versions: Versions,
    pub started_unix_s: u64,
    /// Length of the measured window (warm-up excluded).
    pub measured_s: f64,
    /// Records per second asked for (0 = closed loop, as fast as acks come back).
    pub target_rate: u64,
    pub publish: Throughput,
    pub consume: Throughput,
    /// Send → ack, from each record's intended send time (no coordinated omission).
    pub publish_latency: Option<Latency>,
    /// Timestamp in the payload → consumer.
    pub end_to_end_latency: Option<Latency>,
    pub timeline: Vec<Sample>,
    pub broker: Option<BrokerUsage>,
    pub catch_up: Option<CatchUp>,
    /// Produce/fetch errors seen (each is also logged to stderr).
    pub errors: u64,
}

/// Kafka's `kafka-producer-perf-test` (ProducerPerformance) summary line.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ProducerPerf {
    pub records: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub avg_latency_ms: f64,
    pub max_latency_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Kafka's `kafka-consumer-perf-test` (ConsumerPerformance) CSV line.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ConsumerPerf {
    pub mb: f64,
    pub mb_per_s: f64,
    pub records: u64,
    pub records_per_s: f64,
    pub rebalance_ms: f64,
    pub fetch_ms: f64,
    pub fetch_mb_per_s: f64,
    pub fetch_records_per_s: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ToolsResult {
    /// Always "kafka-tools".
    pub kind: String,
    pub target: Target,
    pub machine: Machine,
    pub versions: Versions,
    /// The exact command lines run.
    pub commands: Vec<String>,
    pub record_size: u32,
    pub partitions: u32,
    pub producer: ProducerPerf,
    pub consumer: ConsumerPerf,
    pub broker: Option<BrokerUsage>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CeilingResult {
    /// Always "ceiling".
    pub kind: String,
    pub machine: Machine,
    /// One sender and one receiver thread over 127.0.0.1.
    pub loopback_tcp_mb_per_s: f64,
    /// Sequential O_DIRECT writes (`block_bytes` each, one fdatasync at the end) into the data
    /// directory's file system.
    pub odirect_write_mb_per_s: f64,
    pub data_dir: String,
    pub block_bytes: u32,
    pub seconds: f64,
}

/// Everything `spool-bench report` gathered, as written to report.json.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Report {
    pub kind: String,
    pub machine: Machine,
    pub versions: Versions,
    /// The command that produced the results, as the harness recorded it.
    pub command: String,
    pub ceiling: Option<CeilingResult>,
    pub runs: Vec<RunResult>,
    pub tools: Vec<ToolsResult>,
}
