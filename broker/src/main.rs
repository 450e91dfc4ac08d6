//! `spool`: the broker and its admin/data command line.
//!
//! `spool broker` starts one pinned glommio executor (a shard) per core; see ARCHITECTURE.md for
//! the request path. The other subcommands are Kafka clients usable against Spool or Apache Kafka.

mod cli;
mod cluster;
mod config;
mod dynamic_config;
mod error;
mod fatal;
mod group;
mod identity;
mod kafka;
mod kafka_config_names;
mod metadata;
mod net;
mod replication;
mod runtime;
mod shard;
mod topic_config;
mod txn;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use glommio::channels::channel_mesh::MeshBuilder;

use config::BrokerConfig;
use fatal::fatal;
use net::exclusive::{self, PortMutex};
use net::gate::{self, ShardGate, Stage, StartGate};
use shard::mesh::{Envelope, Mesh, MESH_CHANNEL_MESSAGES_MAX};
use shard::Shard;

/// mimalloc instead of glibc malloc: request and response buffers of up to a few MiB are
/// allocated and freed on every shard thread, and glibc's per-thread arenas with its adaptive
/// mmap threshold keep freed MiB-sized blocks resident; mimalloc returns them to the OS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long shard 0 waits for the other shards' controlled shutdown before the broker leaves
/// the cluster anyway (each shard's own part is bounded by `CONTROLLED_SHUTDOWN_WAIT_MAX`).
const LEAVE_BARRIER_WAIT_MAX: Duration =
    Duration::from_secs(replication::leadership::CONTROLLED_SHUTDOWN_WAIT_MAX.as_secs() + 1);
/// How long the other shards wait for shard 0 to leave the cluster, after that barrier
/// (`ClusterNode::leave` is bounded by its fence and handover waits).
const LEAVE_WAIT_MAX: Duration = Duration::from_secs(8);
const LEAVE_POLL: Duration = Duration::from_millis(20);

#[derive(Parser)]
#[command(
    name = "spool",
    version,
    about = "A Kafka-compatible, thread-per-core event streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Broker(BrokerArgs),
    /// Create, list, describe and delete topics.
    Topic(cli::TopicArgs),
    /// List, describe, delete consumer groups and reset their offsets.
    Group(cli::GroupArgs),
    /// List and describe transactions; abort a hanging one.
    Txn(cli::TxnArgs),
    /// The cluster's brokers, controller and metadata quorum.
    Cluster(cli::ClusterArgs),
    /// Produce stdin lines as records to a topic.
    Produce(cli::ProduceArgs),
    /// Print records of a topic to stdout.
    Consume(cli::ConsumeArgs),
}

/// Broker settings. Every flag is also `SPOOL_<NAME>` in the environment and `name = value`
/// (Kafka's dotted name) in the TOML file; `--set name=value` reaches any setting.
#[derive(Args)]
struct BrokerArgs {
    /// TOML file of settings with Kafka's names (`"log.dirs" = "/var/lib/spool"`).
    #[arg(long, env = "SPOOL_CONFIG")]
    config: Option<PathBuf>,
    /// `listeners`: PLAINTEXT://HOST:PORT to listen on.
    #[arg(long)]
    listeners: Option<String>,
    /// `advertised.listeners`: the address Metadata hands to clients.
    #[arg(long)]
    advertised_listeners: Option<String>,
    /// `log.dirs`: where partition logs and metadata live.
    #[arg(long)]
    log_dirs: Option<String>,
    /// `node.id`.
    #[arg(long)]
    node_id: Option<String>,
    /// Shards to run, one pinned executor each; 0 = all online CPUs.
    #[arg(long)]
    cores: Option<String>,
    /// Any setting by its Kafka name, e.g. `--set num.partitions=3`. Repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Broker(args) => run_broker(args),
        Command::Topic(args) => std::process::exit(cli::topic(args)),
        Command::Group(args) => std::process::exit(cli::group(args)),
        Command::Txn(args) => std::process::exit(cli::txn(args)),
        Command::Cluster(args) => std::process::exit(cli::cluster(args)),
        Command::Produce(args) => std::process::exit(cli::produce(args)),
        Command::Consume(args) => std::process::exit(cli::consume(args)),
    }
}

fn resolve_config(args: &BrokerArgs) -> BrokerConfig {
    let mut layers: Vec<BTreeMap<String, String>> = Vec::new();
    if let Some(path) = &args.config {
        layers.push(config::load_toml(path).unwrap_or_else(|e| fatal(e)));
    }
    layers.push(config::from_env());
    let mut flags = BTreeMap::new();
    let named = [
        ("listeners", &args.listeners),
        ("advertised.listeners", &args.advertised_listeners),
        ("log.dirs", &args.log_dirs),
        ("node.id", &args.node_id),
        ("cores", &args.cores),
    ];
    for (name, value) in named {
        if let Some(v) = value {
            flags.insert(name.to_string(), v.clone());
        }
    }
    for pair in &args.set {
        let Some((k, v)) = pair.split_once('=') else {
            fatal(format!("--set expects NAME=VALUE, got `{pair}`"));
        };
        flags.insert(k.trim().to_string(), v.trim().to_string());
    }
    layers.push(flags);
    BrokerConfig::resolve(&layers).unwrap_or_else(|e| fatal(e))
}

fn run_broker(args: BrokerArgs) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPOOL_LOG")
                // openraft warns of every failed send to a follower, once per retry and
                // group: with a node down, thousands of groups wrote 1 MB/s of them.
                .unwrap_or_else(|_| {
                    "info,openraft=warn,openraft::replication=error,\
                     openraft::engine::handler::replication_handler=error"
                        .into()
                }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = resolve_config(&args);
    for (name, value, why) in &config.ignored {
        tracing::info!(
            "ignored setting {name}={value} (Kafka {}): {why}",
            kafka_config_names::KAFKA_VERSION
        );
    }
    // Every partition keeps its segment files open; take the hard limit, as Kafka's packaging
    // asks operators to.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!("open file limit {limit}"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
    // Start-up order, each step before anything the next one writes or serves: check that no
    // other process listens on the address, lock the log dir, check (or write) its identity,
    // recover partitions, check the address again and only then listen. Every refusal is a
    // one-line fatal error; the first check makes a second broker on the port fail before it
    // writes into its log dir or spends time recovering partitions.
    let listen_addr =
        exclusive::resolve(&config.listen_host, config.listen_port).unwrap_or_else(|e| fatal(e));
    exclusive::ensure_unused(listen_addr).unwrap_or_else(|e| fatal(e));
    let dir_lock = identity::lock(&config.log_dirs).unwrap_or_else(|e| fatal(e));
    identity::check_node(&dir_lock, config.node_id).unwrap_or_else(|e| fatal(e));
    // The last clean stop's records, consumed before any log opens (`spool_storage::clean`).
    let clean_books = Arc::new(
        spool_storage::take_books(&config.log_dirs).unwrap_or_else(|e| {
            fatal(format!(
                "cannot take the clean-shutdown books in {}: {e}",
                config.log_dirs.display()
            ))
        }),
    );

    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone()).unwrap_or_else(|e| fatal(e));
    }

    let cores = config.cores;
    let mesh =
        (cores > 1).then(|| MeshBuilder::<Envelope, _>::full(cores, MESH_CHANNEL_MESSAGES_MAX));
    let (start_gate, shard_gates) = gate::start_gate(cores);
    let handed_over = Arc::new(AtomicUsize::new(0));
    let left = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(cores);
    for (id, gate) in shard_gates.into_iter().enumerate() {
        let shard_args = ShardArgs {
            id,
            config: config.clone(),
            mesh: mesh.clone(),
            shutdown: shutdown.clone(),
            handed_over: handed_over.clone(),
            left: left.clone(),
            gate,
            listen_addr,
            clean_books: clean_books.clone(),
        };
        let handle = runtime::start_shard(&format!("spool-shard-{id}"), id, move || {
            shard_main(shard_args)
        })
        .unwrap_or_else(|e| fatal(format!("cannot start shard {id}: {e}")));
        handles.push(handle);
    }
    open_listeners(&start_gate, &config, listen_addr, &shutdown);
    for handle in handles {
        if let Err(e) = handle.join() {
            fatal(format!("shard failed: {e}"));
        }
    }
    drop(dir_lock);
    tracing::info!("spool stopped");
}

/// Once every shard is ready, checks again that no other process listens on the address and lets
/// the shards listen, all under the port mutex (see `net::exclusive`).
fn open_listeners(
    gate: &StartGate,
    config: &BrokerConfig,
    addr: SocketAddr,
    shutdown: &AtomicBool,
) {
    if !gate.wait_all(Stage::Ready, shutdown) {
        return;
    }
    let mutex = PortMutex::acquire(addr.port()).unwrap_or_else(|e| fatal(e));
    exclusive::ensure_unused(addr).unwrap_or_else(|e| fatal(e));
    gate.open();
    if gate.wait_all(Stage::Listening, shutdown) {
        tracing::info!(
            "spool broker {} listening on {addr} with {} shard(s), data in {}",
            config.node_id,
            config.cores,
            config.log_dirs.display()
        );
    }
    drop(mutex);
}

struct ShardArgs {
    id: usize,
    config: BrokerConfig,
    mesh: Option<MeshBuilder<Envelope, glommio::channels::channel_mesh::Full>>,
    shutdown: Arc<AtomicBool>,
    /// Shards that have finished their part of a controlled shutdown.
    handed_over: Arc<AtomicUsize>,
    /// Set by shard 0 once the broker has left the cluster (fenced, quorum handed over).
    left: Arc<AtomicBool>,
    gate: ShardGate,
    listen_addr: SocketAddr,
    /// The books `spool_storage::take_books` took, read by every shard before its first open.
    clean_books: Arc<Vec<std::path::PathBuf>>,
}

async fn shard_main(args: ShardArgs) {
    let count = args.config.cores;
    let (senders, receivers) = match args.mesh {
        Some(builder) => match builder.join().await {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(e) => fatal(format!("cannot join the shard mesh: {e}")),
        },
        None => (None, None),
    };
    let config = Rc::new(args.config);
    let shard = Shard::new(args.id, count, config.clone(), Mesh::new(args.id, senders));
    // Before the mesh delivers a topic to open.
    shard.load_clean_book(&args.clean_books).await;
    if let Some(mut receivers) = receivers {
        for (_, receiver) in receivers.streams() {
            runtime::spawn_detached(shard.clone().receive_loop(receiver));
        }
    }
    runtime::spawn_detached(shard.clone().flusher());
    runtime::spawn_detached(shard.clone().retention_loop());
    runtime::spawn_detached(shard::cleaner::cleaner_loop(shard.clone()));
    runtime::spawn_detached(shard.clone().isr_loop());
    runtime::spawn_detached(replication::reassign::reassign_loop(shard.clone()));
    runtime::spawn_detached(group::GroupCoordinator::load(shard.clone()));
    runtime::spawn_detached(group::GroupCoordinator::tick_loop(shard.clone()));
    runtime::spawn_detached(group::GroupCoordinator::expire_loop(shard.clone()));
    runtime::spawn_detached(txn::TxnCoordinator::load(shard.clone()));
    runtime::spawn_detached(txn::TxnCoordinator::timeout_loop(shard.clone()));
    runtime::spawn_detached(replication::leadership::rebalance_loop(
        shard.clone(),
        args.shutdown.clone(),
    ));
    // Shard 0 joins the cluster: it replays the metadata log (opening every shard's partitions
    // as topics are applied) and waits until the controller unfences this broker, so the node
    // is caught up before any shard listens.
    let node = if args.id == 0 {
        let node = cluster::start(shard.clone(), args.shutdown.clone()).await;
        if cluster::wait_ready(&node, &shard, &args.shutdown).await {
            let cluster_id = shard.cluster_id();
            identity::ensure_cluster_id(&config.log_dirs, config.node_id, &cluster_id)
                .unwrap_or_else(|e| fatal(e));
            // A one-node cluster creates the offsets topic at once, as Spool always has; a
            // multi-node one at the first FindCoordinator, when more brokers are live to
            // spread it over (Kafka's way).
            if config.cluster.single_node() {
                group::ensure_offsets_topic(&shard).await;
            }
        }
        Some(node)
    } else {
        None
    };
    args.gate.report(args.id, Stage::Ready);
    let accept = if args.gate.wait_open(&args.shutdown).await {
        let listener = net::bind(args.listen_addr)
            .unwrap_or_else(|e| fatal(format!("cannot listen on {}: {e}", args.listen_addr)));
        args.gate.report(args.id, Stage::Listening);
        Some(runtime::spawn(net::accept_loop(shard.clone(), listener)))
    } else {
        None
    };
    while !args.shutdown.load(Ordering::Relaxed) {
        runtime::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(shard = args.id, "shutting down");
    // Kafka's controlled shutdown: leaderships move while this broker still serves, so clients
    // it answers NOT_LEADER_OR_FOLLOWER are pointed at the new leaders.
    if config.controlled_shutdown_enable {
        replication::leadership::controlled_shutdown(&shard).await;
        args.handed_over.fetch_add(1, Ordering::AcqRel);
        // The broker leaves the cluster once every shard has handed its leaderships over, and
        // every shard stays up until it has: applying the fence publishes the new broker
        // view to every shard, and a shard that had exited would never answer.
        let deadline = Instant::now() + LEAVE_BARRIER_WAIT_MAX;
        // A one-node cluster has no one to leave.
        if let Some(node) = node.as_ref().filter(|_| !config.cluster.single_node()) {
            while args.handed_over.load(Ordering::Acquire) < count && Instant::now() < deadline {
                runtime::sleep(LEAVE_POLL).await;
            }
            let gone: Vec<i32> = shard
                .view
                .borrow()
                .brokers
                .iter()
                .filter(|b| b.fenced && b.id != config.node_id)
                .map(|b| b.id)
                .collect();
            node.leave(&gone).await;
        }
        if args.id == 0 {
            args.left.store(true, Ordering::Release);
        }
        let deadline = deadline + LEAVE_WAIT_MAX;
        while !args.left.load(Ordering::Acquire) && Instant::now() < deadline {
            runtime::sleep(LEAVE_POLL).await;
        }
    }
    // Stop listening first, as Kafka's shutdown does: a connection accepted now would only be
    // reset when the process exits, while a closed port lets clients go to another broker.
    drop(accept);
    shard.close_all().await;
    if let Some(node) = node {
        node.shutdown().await;
    }
}
