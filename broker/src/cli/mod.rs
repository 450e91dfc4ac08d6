//! The admin and data command line: `spool topic ...`, `spool group ...`, `spool txn ...`,
//! `spool cluster status`, `spool cluster decommission`, `spool produce`, `spool consume`.
//!
//! A small blocking Kafka client (std `TcpStream`, no runtime) speaking the wire protocol through
//! the `kafka-protocol` codec, so the same commands work against Spool and Apache Kafka. Boundary:
//! nothing here touches broker internals; it is a client like any other.
//!
//! Exit status: 0 on success, 1 when the broker or the connection fails (Kafka's error name and
//! message on stderr), 2 for usage errors (from clap).

mod client;
mod cluster;
mod conn;
mod consume;
mod error;
mod group;
mod group_wire;
mod produce;
mod reassign;
mod topic;
mod txn;

use clap::{Args, Subcommand};

pub use error::CliError;

/// Where to reach the cluster.
#[derive(Args, Debug, Clone)]
pub struct Bootstrap {
    /// A broker to bootstrap from, HOST:PORT.
    #[arg(
        long,
        env = "SPOOL_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap_server: String,
}

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(flatten)]
    pub conn: Bootstrap,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic (CreateTopics).
    Create {
        name: String,
        /// Partition count; -1 uses the broker's `num.partitions`.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor; -1 uses the broker's `default.replication.factor`.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic config override, `name=value` (e.g. `retention.ms=60000`). Repeatable.
        #[arg(long, value_name = "NAME=VALUE")]
        config: Vec<String>,
    },
    /// List topic names, sorted (Metadata).
    List,
    /// Show partitions, leaders, replicas, ISR, topic id and config overrides.
    Describe { name: String },
    /// Delete a topic (DeleteTopics).
    Delete { name: String },
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub conn: Bootstrap,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Brokers (live or fenced), the active controller and the metadata quorum's lag.
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move every replica off a broker (AlterPartitionReassignments) and wait until the moves
    /// are done (ListPartitionReassignments empty).
    Decommission {
        /// The broker to empty.
        #[arg(long)]
        broker: i32,
        /// Give up waiting after this many seconds (the moves continue).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub conn: Bootstrap,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups of every broker: id, state, protocol type (ListGroups).
    List {
        /// Only groups in this state (Empty, Stable, PreparingRebalance, ...). Repeatable.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
    },
    /// State, members and their assignments, committed offsets and lag per partition.
    Describe { group: String },
    /// Delete groups with no active members, and their committed offsets (DeleteGroups).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Plan, and with --execute commit, new offsets for a group that has no active members.
    ResetOffsets(ResetOffsetsArgs),
}

#[derive(Args, Debug)]
pub struct ResetOffsetsArgs {
    pub group: String,
    #[arg(long)]
    pub topic: String,
    /// Only this partition (default: all partitions of the topic). Repeatable.
    #[arg(long)]
    pub partition: Vec<i32>,
    #[command(flatten)]
    pub to: ResetTarget,
    /// Commit the plan; without it the plan is only printed.
    #[arg(long)]
    pub execute: bool,
}

/// Where `reset-offsets` moves the group: exactly one of these.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The log start offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// The log end offset.
    #[arg(long)]
    pub to_latest: bool,
    /// The first offset whose timestamp is at or after this time, e.g. 2024-05-01T12:00:00Z
    /// (no zone means UTC); the log end when there is none.
    #[arg(long, value_name = "ISO8601")]
    pub to_datetime: Option<String>,
    /// This offset, clamped to the partition's [log start, log end].
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    #[command(flatten)]
    pub conn: Bootstrap,
    #[command(subcommand)]
    pub command: TxnCommand,
}

#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// Transactional ids of every broker's coordinator: id, coordinator, producer id, state
    /// (ListTransactions).
    List {
        /// Only transactions in this state (Ongoing, PrepareCommit, ...). Repeatable.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
        /// Only this producer id. Repeatable.
        #[arg(long = "producer-id", value_name = "ID")]
        producer_ids: Vec<i64>,
    },
    /// One transactional id's state, epoch, timeout, start time and partitions
    /// (DescribeTransactions at its coordinator).
    Describe { transactional_id: String },
    /// Abort a hanging transaction on one partition by writing its ABORT marker there
    /// (WriteTxnMarkers at the leader), as `kafka-transactions.sh abort` does.
    Abort(TxnAbortArgs),
}

#[derive(Args, Debug)]
pub struct TxnAbortArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub partition: i32,
    /// The first offset of the open transaction to abort: its producer is looked up with
    /// DescribeProducers. Without it, give --producer-id and --producer-epoch.
    #[arg(long, conflicts_with_all = ["producer_id", "producer_epoch", "coordinator_epoch"])]
    pub start_offset: Option<i64>,
    #[arg(long)]
    pub producer_id: Option<i64>,
    #[arg(long)]
    pub producer_epoch: Option<i16>,
    /// The coordinator epoch to write the marker with (default -1).
    #[arg(long, allow_negative_numbers = true)]
    pub coordinator_epoch: Option<i32>,
}

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub conn: Bootstrap,
    pub topic: String,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Split each line at the first SEP into key and value; lines without SEP get a null key.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// -1 (all in-sync replicas), 1 (leader) or 0 (no response).
    #[arg(long, default_value = "-1", allow_negative_numbers = true, value_parser = parse_acks)]
    pub acks: i16,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// A header added to every record, `key=value`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub header: Vec<String>,
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "-1" | "all" => Ok(-1),
        _ => Err("expected -1 (or all), 0 or 1".to_string()),
    }
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub conn: Bootstrap,
    pub topic: String,
    /// Read only this partition (default: all partitions).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Where to start: earliest, latest, or an offset.
    #[arg(long, default_value = "latest")]
    pub offset: String,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when no record arrives for this long (default: never).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Print `key<TAB>` before each value (`null` for no key).
    #[arg(long)]
    pub print_key: bool,
    /// Print `partition:offset<TAB>` before each record.
    #[arg(long)]
    pub print_offset: bool,
}

/// `spool topic ...`; returns the process exit code.
pub fn topic(args: TopicArgs) -> i32 {
    let mut out = std::io::stdout();
    report(
        client::Client::connect(&args.conn.bootstrap_server)
            .and_then(|mut c| topic::run(&mut c, args.command, &mut out)),
    )
}

/// `spool cluster ...`; returns the process exit code.
pub fn cluster(args: ClusterArgs) -> i32 {
    let mut out = std::io::stdout();
    report(
        client::Client::connect(&args.conn.bootstrap_server).and_then(|mut c| match args.command {
            ClusterCommand::Status { json } => cluster::status(&mut c, json, &mut out),
            ClusterCommand::Decommission {
                broker,
                timeout_secs,
            } => reassign::decommission(
                &mut c,
                broker,
                std::time::Duration::from_secs(timeout_secs),
                &mut out,
            ),
        }),
    )
}

/// `spool group ...`; returns the process exit code.
pub fn group(args: GroupArgs) -> i32 {
    let mut out = std::io::stdout();
    report(
        client::Client::connect(&args.conn.bootstrap_server)
            .and_then(|mut c| group::run(&mut c, args.command, &mut out)),
    )
}

/// `spool txn ...`; returns the process exit code.
pub fn txn(args: TxnArgs) -> i32 {
    let mut out = std::io::stdout();
    report(
        client::Client::connect(&args.conn.bootstrap_server)
            .and_then(|mut c| txn::run(&mut c, args.command, &mut out)),
    )
}

/// `spool produce`; returns the process exit code.
pub fn produce(args: ProduceArgs) -> i32 {
    report(produce::run(args))
}

/// `spool consume`; returns the process exit code.
pub fn consume(args: ConsumeArgs) -> i32 {
    report(consume::run(args))
}

fn report(result: Result<(), CliError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

/// Splits `name=value` at the first `=`.
pub(crate) fn parse_key_value<'a>(
    flag: &'static str,
    pair: &'a str,
) -> Result<(&'a str, &'a str), CliError> {
    match pair.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(CliError::InvalidArgument {
            flag,
            value: pair.to_string(),
            reason: "expected NAME=VALUE",
        }),
    }
}
