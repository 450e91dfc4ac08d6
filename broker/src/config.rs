//! The broker's typed configuration, with Apache Kafka's setting names and defaults.
//!
//! Layering, lowest to highest precedence: built-in defaults, a TOML file (`--config`), environment
//! variables (`SPOOL_` + the upper-cased name with `.` → `_`, e.g. `SPOOL_LOG_DIRS`), command-line
//! flags (`--log-dirs`) and `--set name=value` overrides. Every setting is known by its Kafka name.
//! Any Apache Kafka broker setting is accepted, so a Kafka user's settings start Spool: the ones
//! Spool does not use are logged as ignored, each with the reason (`ignored_reason`). Any other
//! name is an error, with the closest known name as a suggestion.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::ConfigError;

/// How acknowledged writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// acks=1/-1 are answered after fdatasync, with group commit (Spool's default).
    Sync,
    /// Acks come first; a background flusher syncs every `log.flush.interval.ms` (Kafka's model).
    Interval,
}

use crate::kafka_config_names::KAFKA_BROKER_SETTINGS;

/// Why Spool ignores a Kafka broker setting it does not use.
pub fn ignored_reason(name: &str) -> &'static str {
    let has = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
    if matches!(
        name,
        "log.retention.hours" | "log.retention.minutes" | "log.roll.hours"
    ) {
        "the `.ms` spelling of this duration is given too, and wins, as in Kafka"
    } else if has(&[
        "ssl.",
        "sasl.",
        "security.",
        "listener.security",
        "principal.builder",
        "authorizer.",
        "super.users",
        "delegation.token",
        "connections.max.reauth",
    ]) {
        "Spool's listeners are PLAINTEXT: TLS, SASL and ACLs are not built"
    } else if has(&[
        "num.network.threads",
        "num.io.threads",
        "num.replica.fetchers",
        "background.threads",
        "num.recovery.threads",
        "queued.max.request.bytes",
        "socket.send.buffer",
        "socket.receive.buffer",
        "socket.listen.backlog",
    ]) {
        "thread-per-core: one executor per core (`cores`) serves sockets, disk and replication"
    } else if has(&["replica.", "unclean.leader.election", "min.insync"]) {
        "partitions replicate through Raft groups, not follower fetching"
    } else if has(&[
        "log.cleaner",
        "compression.",
        "log.preallocate",
        "log.message.downconversion",
    ]) {
        "this log setting is not applied by Spool's storage"
    } else if has(&["remote.", "log.local.retention"]) {
        "tiered storage is not built"
    } else if has(&["share.", "group.share."]) {
        "share groups (KIP-932) are not built"
    } else if name.contains("quota") {
        "client quotas are not built"
    } else if has(&["metric", "kafka.metrics", "telemetry"]) {
        "Kafka's JMX metrics are not built"
    } else if has(&[
        "controller.",
        "metadata.",
        "node.id",
        "process.roles",
        "initial.broker",
        "broker.",
        "eligible.leader",
        "early.start",
    ]) {
        "KRaft tuning Spool's metadata quorum (openraft) does not need"
    } else if has(&["group.", "offsets.", "transaction", "producer.id"]) {
        "coordinator tuning Spool's coordinators do not use"
    } else {
        "Spool does not use this setting"
    }
}

/// Fails closed: a listener whose protocol is not PLAINTEXT (by its name or
/// `listener.security.protocol.map`), an authorizer, or a non-PLAINTEXT inter-broker protocol
/// would be served without the security asked for, since Spool has no TLS, SASL or ACLs.
/// (Other `ssl.*` and `sasl.*` settings are inert without such a listener, as in Kafka.)
fn refuse_security(
    values: &BTreeMap<&'static str, (String, ConfigSource)>,
    ignored: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let map: BTreeMap<&str, &str> = ignored
        .get("listener.security.protocol.map")
        .map(|m| {
            m.split(',')
                .filter_map(|pair| pair.split_once(':'))
                .map(|(name, protocol)| (name.trim(), protocol.trim()))
                .collect()
        })
        .unwrap_or_default();
    let listeners = values.get("listeners").map_or("", |v| v.0.as_str());
    for entry in listeners.split(',').filter(|e| !e.trim().is_empty()) {
        let name = entry.split("://").next().unwrap_or("").trim();
        let protocol = map.get(name).copied().unwrap_or(
            if matches!(name, "SSL" | "SASL_SSL" | "SASL_PLAINTEXT") {
                name
            } else {
                "PLAINTEXT"
            },
        );
        if !protocol.eq_ignore_ascii_case("PLAINTEXT") {
            return Err(ConfigError::Cluster(format!(
                "listener {name} uses {protocol}: Spool serves PLAINTEXT only (no TLS or SASL), \
                 and refuses to start rather than serve it without"
            )));
        }
    }
    for (name, refused) in [
        ("authorizer.class.name", "ACLs are not built"),
        (
            "security.inter.broker.protocol",
            "inter-node security is not built",
        ),
    ] {
        let set = ignored
            .get(name)
            .is_some_and(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("PLAINTEXT"));
        if set {
            return Err(ConfigError::Cluster(format!(
                "{name} is set: {refused}, and Spool refuses to start rather than run without it"
            )));
        }
    }
    Ok(())
}

/// The known setting name closest to `name` (a likely misspelling), if any is close.
fn closest_name(name: &str) -> Option<&'static str> {
    let limit = (name.len() / 4).clamp(2, 6);
    SETTINGS
        .iter()
        .map(|s| s.name)
        .chain(KAFKA_BROKER_SETTINGS.iter().copied())
        .map(|known| (edit_distance(name, known), known))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Smallest `offsets.topic.segment.bytes`, as Kafka's.
pub const OFFSETS_TOPIC_SEGMENT_BYTES_MIN: u64 = 1 << 20;

/// One broker setting: its Kafka name, default, and documentation.
pub struct SettingSpec {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every broker setting Spool understands. DescribeConfigs lists these with their sources.
pub const SETTINGS: &[SettingSpec] = &[
    SettingSpec { name: "node.id", default: "0", doc: "This broker's id." },
    SettingSpec { name: "listeners", default: "PLAINTEXT://127.0.0.1:9092", doc: "NAME://HOST:PORT,...: the client listener (one SO_REUSEPORT socket per shard) and, in a cluster, the controller listener named by controller.listener.names (inter-node RPC)." },
    SettingSpec { name: "advertised.listeners", default: "", doc: "Address handed to clients in Metadata; defaults to listeners." },
    SettingSpec { name: "process.roles", default: "broker,controller", doc: "broker, controller, or both. With no controller.quorum.voters a broker,controller node is a one-node cluster, its own only voter." },
    SettingSpec { name: "controller.quorum.voters", default: "", doc: "id@host:port,... of the metadata quorum's voters (their controller listeners). Empty: a one-node cluster." },
    SettingSpec { name: "controller.quorum.bootstrap.servers", default: "", doc: "host:port,... of controllers a broker-only node contacts to find the quorum (instead of controller.quorum.voters)." },
    SettingSpec { name: "controller.listener.names", default: "CONTROLLER", doc: "The listener (in listeners) that carries inter-node RPC. Every node of a cluster has it: brokers are learners of the metadata quorum." },
    SettingSpec { name: "controller.quorum.election.timeout.ms", default: "1000", doc: "A follower that hears no leader for this long (randomized up to twice) starts an election." },
    SettingSpec { name: "controller.quorum.request.timeout.ms", default: "2000", doc: "Deadline of one inter-node RPC." },
    SettingSpec { name: "broker.rack", default: "", doc: "The broker's rack; placement spreads a partition's replicas over racks." },
    SettingSpec { name: "broker.heartbeat.interval.ms", default: "2000", doc: "How often a broker heartbeats to the active controller." },
    SettingSpec { name: "broker.session.timeout.ms", default: "9000", doc: "A broker with no heartbeat for this long is fenced: it leads nothing and is not listed in Metadata." },
    SettingSpec { name: "auto.leader.rebalance.enable", default: "true", doc: "Every leader.imbalance.check.interval.seconds, move leadership of replicated partitions back to their preferred replica (the first) when it is live and in sync and its broker's leader imbalance is above leader.imbalance.per.broker.percentage." },
    SettingSpec { name: "leader.imbalance.check.interval.seconds", default: "300", doc: "How often leader balance is checked (auto.leader.rebalance.enable)." },
    SettingSpec { name: "leader.imbalance.per.broker.percentage", default: "10", doc: "Share (0-100) of a broker's preferred partitions led by others above which their leadership is moved back to it." },
    SettingSpec { name: "controlled.shutdown.enable", default: "true", doc: "On SIGTERM, move every partition leadership this broker holds to an in-sync follower (bounded wait) before stopping." },
    SettingSpec { name: "metadata.log.max.record.bytes.between.snapshots", default: "20971520", doc: "Bytes of metadata log after which a node snapshots its metadata image and purges the log below it." },
    SettingSpec { name: "cluster.id", default: "", doc: "The cluster id a new cluster takes; empty: the first quorum leader picks a random one." },
    SettingSpec { name: "log.dirs", default: "./spool-data", doc: "Directory holding partition logs and broker metadata." },
    SettingSpec { name: "cores", default: "0", doc: "Shards (one pinned executor each); 0 = every online CPU." },
    SettingSpec { name: "num.partitions", default: "1", doc: "Partitions of an auto-created topic." },
    SettingSpec { name: "default.replication.factor", default: "1", doc: "Replication factor of auto-created topics." },
    SettingSpec { name: "auto.create.topics.enable", default: "true", doc: "Create unknown topics on Metadata and Produce." },
    SettingSpec { name: "log.segment.bytes", default: "1073741824", doc: "Segment size before rolling." },
    SettingSpec { name: "log.roll.ms", default: "604800000", doc: "Segment age before rolling." },
    SettingSpec { name: "log.retention.ms", default: "604800000", doc: "Age after which whole segments are deleted; -1 keeps forever." },
    SettingSpec { name: "log.retention.bytes", default: "-1", doc: "Partition size above which old segments are deleted; -1 = no limit." },
    SettingSpec { name: "log.retention.check.interval.ms", default: "300000", doc: "How often retention runs." },
    SettingSpec { name: "log.cleanup.policy", default: "delete", doc: "cleanup.policy of topics that set none: delete, compact, or both (comma separated)." },
    SettingSpec { name: "log.cleaner.enable", default: "true", doc: "Run the log cleaner (one per shard) over compacted topics." },
    SettingSpec { name: "log.cleaner.io.max.bytes.per.second", default: "1.7976931348623157E308", doc: "The cleaners' reads and writes together held to this many bytes per second on average, split evenly between the shards (Kafka's default: no limit; dynamic)." },
    SettingSpec { name: "log.cleaner.min.cleanable.ratio", default: "0.5", doc: "min.cleanable.dirty.ratio of topics that set none: a log is cleaned when its dirty bytes are at least this share of its cleanable bytes." },
    SettingSpec { name: "log.cleaner.min.compaction.lag.ms", default: "0", doc: "min.compaction.lag.ms of topics that set none: a record stays uncompacted at least this long." },
    SettingSpec { name: "log.cleaner.max.compaction.lag.ms", default: "9223372036854775807", doc: "max.compaction.lag.ms of topics that set none: a dirty segment older than this is cleaned whatever the dirty ratio." },
    SettingSpec { name: "log.cleaner.delete.retention.ms", default: "86400000", doc: "delete.retention.ms of topics that set none: how long a tombstone (or an empty transaction marker) stays after the cleaning that first kept it." },
    SettingSpec { name: "log.cleaner.dedupe.buffer.size", default: "134217728", doc: "Memory for the cleaners' key maps, split evenly between the shards: bounds a cleaning round's memory (a full map ends the round early; the rest waits for the next)." },
    SettingSpec { name: "log.cleaner.backoff.ms", default: "15000", doc: "How long a shard's cleaner sleeps when no log needs cleaning." },
    SettingSpec { name: "log.index.interval.bytes", default: "4096", doc: "Bytes between sparse index entries." },
    SettingSpec { name: "log.message.timestamp.type", default: "CreateTime", doc: "CreateTime or LogAppendTime." },
    SettingSpec { name: "message.max.bytes", default: "1048588", doc: "Largest record batch accepted." },
    SettingSpec { name: "socket.request.max.bytes", default: "104857600", doc: "Largest request accepted; checked before allocating." },
    SettingSpec { name: "log.flush.interval.messages", default: "1", doc: "1 (Spool's default): fsync before ack with group commit. Larger: ack first, flush every log.flush.interval.ms (Kafka's default model)." },
    SettingSpec { name: "log.flush.interval.ms", default: "1000", doc: "Background flush period when log.flush.interval.messages > 1." },
    SettingSpec { name: "queued.max.requests", default: "500", doc: "In-flight requests per connection before the broker stops reading from it." },
    SettingSpec { name: "producer.id.expiration.ms", default: "86400000", doc: "A producer id's idempotence state is forgotten this long after its last append; its next batch is accepted as a new producer's." },
    SettingSpec { name: "spool.log.sync.scope", default: "filesystem", doc: "How a shard's durability round makes its partitions' appends durable: filesystem (one syncfs per log filesystem for all of them: one device flush) or file (one fdatasync per partition; for a log directory on a filesystem other programs write much to, whose dirty pages syncfs would also write)." },
    SettingSpec { name: "spool.tail.cache.bytes", default: "8388608", doc: "Per-partition bytes of recent batches kept in memory, so consumers within this much of the log end never read the disk." },
    SettingSpec { name: "spool.tail.cache.shard.bytes", default: "67108864", doc: "Bytes of tail cache per shard, shared by its partitions: each keeps at most min(spool.tail.cache.bytes, this / its partition count)." },
    SettingSpec { name: "min.insync.replicas", default: "1", doc: "Replicated topics: an acks=all write needs this many in-sync replicas (the leader counts), else NOT_ENOUGH_REPLICAS. Topics may override it." },
    SettingSpec { name: "replica.lag.time.max.ms", default: "30000", doc: "A follower that has not caught up with its leader's log end for this long leaves the in-sync replicas." },
    SettingSpec { name: "offsets.topic.num.partitions", default: "50", doc: "Partitions of __consumer_offsets (fixed once the topic exists); a group's partition is abs(groupId.hashCode()) % this." },
    SettingSpec { name: "offsets.topic.replication.factor", default: "3", doc: "Replication factor of __consumer_offsets when it is created, capped by the brokers live then (so a one-node cluster gets 1)." },
    SettingSpec { name: "offsets.topic.segment.bytes", default: "104857600", doc: "segment.bytes of __consumer_offsets when it is created (minimum 1048576); the topic is compacted by the log cleaner." },
    SettingSpec { name: "offsets.retention.minutes", default: "10080", doc: "Offsets of a group Empty for longer than this are deleted." },
    SettingSpec { name: "offsets.retention.check.interval.ms", default: "600000", doc: "How often expired offsets are looked for." },
    SettingSpec { name: "offset.metadata.max.bytes", default: "4096", doc: "Largest metadata string of a committed offset." },
    SettingSpec { name: "group.initial.rebalance.delay.ms", default: "3000", doc: "How long the first rebalance of an empty group waits for more members." },
    SettingSpec { name: "group.min.session.timeout.ms", default: "6000", doc: "Smallest session timeout a member may ask for." },
    SettingSpec { name: "group.max.session.timeout.ms", default: "1800000", doc: "Largest session timeout a member may ask for." },
    SettingSpec { name: "group.max.size", default: "2147483647", doc: "Most members of one consumer group." },
    SettingSpec { name: "group.consumer.session.timeout.ms", default: "45000", doc: "KIP-848 consumer groups: a member that does not heartbeat for this long is removed." },
    SettingSpec { name: "group.consumer.heartbeat.interval.ms", default: "5000", doc: "KIP-848 consumer groups: the heartbeat interval given to members." },
    SettingSpec { name: "group.consumer.assignors", default: "uniform,range", doc: "KIP-848 consumer groups: the server-side assignors (uniform, range); the first is the default." },
    SettingSpec { name: "group.consumer.max.size", default: "2147483647", doc: "KIP-848 consumer groups: most members of one group." },
    SettingSpec { name: "transaction.state.log.num.partitions", default: "50", doc: "Partitions of __transaction_state (fixed once the topic exists); a transactional id's coordinator is the leader of partition abs(transactionalId.hashCode()) % this." },
    SettingSpec { name: "transaction.state.log.replication.factor", default: "3", doc: "Replication factor of __transaction_state when it is created, capped by the brokers live then." },
    SettingSpec { name: "transaction.state.log.min.isr", default: "2", doc: "min.insync.replicas of __transaction_state (capped by its replication factor)." },
    SettingSpec { name: "transaction.state.log.segment.bytes", default: "104857600", doc: "segment.bytes of __transaction_state when it is created." },
    SettingSpec { name: "transaction.max.timeout.ms", default: "900000", doc: "Largest transaction.timeout.ms a producer may ask for (else INVALID_TRANSACTION_TIMEOUT)." },
    SettingSpec { name: "transactional.id.expiration.ms", default: "604800000", doc: "A transactional id with no transaction for this long is forgotten." },
    SettingSpec { name: "transaction.abort.timed.out.transaction.cleanup.interval.ms", default: "10000", doc: "How often the coordinator aborts transactions past their timeout." },
    SettingSpec { name: "transaction.remove.expired.transaction.cleanup.interval.ms", default: "3600000", doc: "How often the coordinator removes expired transactional ids." },
    SettingSpec { name: "transaction.partition.verification.enable", default: "true", doc: "KIP-890: a partition leader asks the transaction coordinator whether a producer's first transactional batch belongs to an ongoing transaction before appending it (dynamic)." },
    SettingSpec { name: "add.partitions.to.txn.retry.backoff.ms", default: "20", doc: "Pause before a partition leader asks the coordinator again to add a partition for a Produce v12+ that met CONCURRENT_TRANSACTIONS." },
    SettingSpec { name: "add.partitions.to.txn.retry.backoff.max.ms", default: "100", doc: "How long a partition leader keeps retrying that add before answering CONCURRENT_TRANSACTIONS." },
];

/// The node's place in the cluster (KRaft's settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub broker: bool,
    pub controller: bool,
    /// The metadata quorum's voters: node id → controller listener `host:port`. For a one-node
    /// cluster, just this node with no address (no RPC listener is opened).
    pub voters: BTreeMap<i32, String>,
    pub bootstrap_servers: Vec<String>,
    /// The name of the RPC listener (`controller.listener.names`' first).
    pub controller_listener: String,
    /// This node's RPC listener (`controller.listener.names` in `listeners`), if it has one.
    pub rpc_listen: Option<(String, u16)>,
    pub rack: Option<String>,
    pub election_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    pub snapshot_bytes: u64,
    pub cluster_id: Option<String>,
}

impl BrokerConfig {
    pub fn controller_listener_name(&self) -> String {
        self.cluster.controller_listener.clone()
    }

    pub fn listener_name(&self) -> String {
        self.listener.clone()
    }
}

impl ClusterConfig {
    /// A one-node cluster: no peers, no RPC listener.
    pub fn single_node(&self) -> bool {
        self.rpc_listen.is_none()
    }
}

/// The broker's resolved configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub cluster: ClusterConfig,
    /// The client listener's name (`PLAINTEXT`), as brokers register it.
    pub listener: String,
    pub listen_host: String,
    pub listen_port: u16,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub log_dirs: PathBuf,
    pub cores: usize,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub log_segment_bytes: u64,
    pub log_roll_ms: i64,
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_retention_check_interval_ms: u64,
    pub log_index_interval_bytes: u32,
    pub log_message_timestamp_type: String,
    pub message_max_bytes: u32,
    pub socket_request_max_bytes: usize,
    pub flush_mode: FlushMode,
    pub log_flush_interval_ms: u64,
    pub log_sync_scope: spool_storage::SyncScope,
    pub inflight_requests_max: usize,
    pub tail_cache_bytes_max: usize,
    pub tail_cache_shard_bytes_max: usize,
    pub producer_id_expiration_ms: i64,
    pub log_cleanup_policy: String,
    pub log_cleaner_enable: bool,
    pub log_cleaner_min_cleanable_ratio: f64,
    pub log_cleaner_io_max_bytes_per_second: f64,
    pub log_cleaner_min_compaction_lag_ms: i64,
    pub log_cleaner_max_compaction_lag_ms: i64,
    pub log_cleaner_delete_retention_ms: i64,
    pub log_cleaner_dedupe_buffer_size: usize,
    pub log_cleaner_backoff_ms: u64,
    pub min_insync_replicas: i32,
    pub replica_lag_time_max_ms: u64,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_segment_bytes: u64,
    pub offsets_topic_replication_factor: i16,
    pub offsets_retention_minutes: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub offset_metadata_max_bytes: usize,
    pub group_initial_rebalance_delay_ms: i64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_max_size: usize,
    pub group_consumer_session_timeout_ms: i32,
    pub group_consumer_heartbeat_interval_ms: i32,
    pub group_consumer_assignors: Vec<String>,
    pub group_consumer_max_size: usize,
    pub transaction_state_log_num_partitions: i32,
    pub transaction_state_log_replication_factor: i16,
    pub transaction_state_log_min_isr: i32,
    pub transaction_state_log_segment_bytes: u64,
    pub transaction_max_timeout_ms: i32,
    pub transaction_partition_verification_enable: bool,
    pub add_partitions_to_txn_retry_backoff_ms: u64,
    pub add_partitions_to_txn_retry_backoff_max_ms: u64,
    pub transactional_id_expiration_ms: i64,
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    pub transaction_remove_expired_transaction_cleanup_interval_ms: u64,
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_seconds: u64,
    pub leader_imbalance_per_broker_percentage: u32,
    pub controlled_shutdown_enable: bool,
    /// Every setting's value as text, with where it came from (for DescribeConfigs).
    pub values: BTreeMap<&'static str, (String, ConfigSource)>,
    /// Kafka settings given that Spool does not use: (name, value, why), logged at start.
    pub ignored: Vec<(String, String, &'static str)>,
}

/// Where a setting's value came from, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Default,
    /// A file, environment variable or flag given at start: Kafka's STATIC_BROKER_CONFIG.
    Static,
}

impl BrokerConfig {
    /// Resolves a configuration from layered `name → value` sources, lowest precedence first.
    pub fn resolve(layers: &[BTreeMap<String, String>]) -> Result<BrokerConfig, ConfigError> {
        let mut values: BTreeMap<&'static str, (String, ConfigSource)> = SETTINGS
            .iter()
            .map(|s| (s.name, (s.default.to_string(), ConfigSource::Default)))
            .collect();
        let mut ignored: BTreeMap<String, String> = BTreeMap::new();
        for layer in layers {
            for (name, value) in layer {
                if let Some(spec) = SETTINGS.iter().find(|s| s.name == name.as_str()) {
                    values.insert(spec.name, (value.clone(), ConfigSource::Static));
                } else if KAFKA_BROKER_SETTINGS.contains(&name.as_str()) {
                    ignored.insert(name.clone(), value.clone());
                } else {
                    return Err(ConfigError::Unknown {
                        name: name.clone(),
                        suggestion: closest_name(name).map(str::to_string),
                    });
                }
            }
        }
        // Kafka's coarser spellings of two durations, used when the `.ms` one is not given
        // (Kafka's precedence: ms, then minutes, then hours).
        for (ms_name, coarser) in [
            (
                "log.retention.ms",
                &[
                    ("log.retention.minutes", 60_000i64),
                    ("log.retention.hours", 3_600_000),
                ][..],
            ),
            ("log.roll.ms", &[("log.roll.hours", 3_600_000)][..]),
        ] {
            if values
                .get(ms_name)
                .is_some_and(|v| v.1 == ConfigSource::Static)
            {
                continue;
            }
            if let Some((name, unit)) = coarser.iter().find(|(n, _)| ignored.contains_key(*n)) {
                let given = ignored.remove(*name).unwrap_or_default();
                let amount: i64 = parse(name, &given)?;
                let ms = if amount < 0 {
                    -1
                } else {
                    amount.saturating_mul(*unit)
                };
                let spec = SETTINGS
                    .iter()
                    .find(|s| s.name == ms_name)
                    .expect("a known setting");
                values.insert(spec.name, (ms.to_string(), ConfigSource::Static));
            }
        }
        refuse_security(&values, &ignored)?;
        let mut config = Self::from_values(values)?;
        config.ignored = ignored
            .into_iter()
            .map(|(name, value)| {
                let why = ignored_reason(&name);
                (name, value, why)
            })
            .collect();
        Ok(config)
    }

    fn from_values(
        values: BTreeMap<&'static str, (String, ConfigSource)>,
    ) -> Result<BrokerConfig, ConfigError> {
        let get =
            |name: &'static str| -> &str { values.get(name).map(|v| v.0.as_str()).unwrap_or("") };
        let node_id: i32 = parse("node.id", get("node.id"))?;
        let controller_listener = get("controller.listener.names")
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let (listener, listen_host, listen_port) =
            client_listener(get("listeners"), &controller_listener)?;
        let advertised = get("advertised.listeners");
        let (advertised_host, advertised_port) = if advertised.is_empty() {
            (listen_host.clone(), listen_port)
        } else {
            let (_, host, port) = client_listener(advertised, &controller_listener)?;
            (host, port)
        };
        let cluster = cluster_config(node_id, &controller_listener, &values)?;
        let cores_setting: usize = parse("cores", get("cores"))?;
        let cores = if cores_setting == 0 {
            online_cpus()
        } else {
            cores_setting
        };
        let flush_messages: i64 = parse(
            "log.flush.interval.messages",
            get("log.flush.interval.messages"),
        )?;
        let timestamp_type = get("log.message.timestamp.type").to_string();
        if timestamp_type != "CreateTime" && timestamp_type != "LogAppendTime" {
            return Err(ConfigError::Invalid {
                name: "log.message.timestamp.type".into(),
                value: timestamp_type,
            });
        }
        let log_sync_scope = match get("spool.log.sync.scope") {
            "filesystem" => spool_storage::SyncScope::Filesystem,
            "file" => spool_storage::SyncScope::File,
            other => {
                return Err(ConfigError::Invalid {
                    name: "spool.log.sync.scope".into(),
                    value: other.to_string(),
                })
            }
        };
        let config = BrokerConfig {
            node_id,
            cluster,
            listener,
            listen_host,
            listen_port,
            advertised_host,
            advertised_port,
            log_dirs: PathBuf::from(get("log.dirs")),
            cores,
            num_partitions: parse("num.partitions", get("num.partitions"))?,
            default_replication_factor: parse(
                "default.replication.factor",
                get("default.replication.factor"),
            )?,
            auto_create_topics_enable: parse(
                "auto.create.topics.enable",
                get("auto.create.topics.enable"),
            )?,
            log_segment_bytes: parse("log.segment.bytes", get("log.segment.bytes"))?,
            log_roll_ms: parse("log.roll.ms", get("log.roll.ms"))?,
            log_retention_ms: parse("log.retention.ms", get("log.retention.ms"))?,
            log_retention_bytes: parse("log.retention.bytes", get("log.retention.bytes"))?,
            log_retention_check_interval_ms: parse(
                "log.retention.check.interval.ms",
                get("log.retention.check.interval.ms"),
            )?,
            log_index_interval_bytes: parse(
                "log.index.interval.bytes",
                get("log.index.interval.bytes"),
            )?,
            log_message_timestamp_type: timestamp_type,
            message_max_bytes: parse("message.max.bytes", get("message.max.bytes"))?,
            socket_request_max_bytes: parse(
                "socket.request.max.bytes",
                get("socket.request.max.bytes"),
            )?,
            flush_mode: if flush_messages <= 1 {
                FlushMode::Sync
            } else {
                FlushMode::Interval
            },
            log_flush_interval_ms: parse("log.flush.interval.ms", get("log.flush.interval.ms"))?,
            log_sync_scope,
            inflight_requests_max: parse("queued.max.requests", get("queued.max.requests"))?,
            tail_cache_bytes_max: parse("spool.tail.cache.bytes", get("spool.tail.cache.bytes"))?,
            tail_cache_shard_bytes_max: parse(
                "spool.tail.cache.shard.bytes",
                get("spool.tail.cache.shard.bytes"),
            )?,
            producer_id_expiration_ms: parse(
                "producer.id.expiration.ms",
                get("producer.id.expiration.ms"),
            )?,
            log_cleanup_policy: get("log.cleanup.policy").to_string(),
            log_cleaner_enable: parse("log.cleaner.enable", get("log.cleaner.enable"))?,
            log_cleaner_io_max_bytes_per_second: parse(
                "log.cleaner.io.max.bytes.per.second",
                get("log.cleaner.io.max.bytes.per.second"),
            )?,
            log_cleaner_min_cleanable_ratio: parse(
                "log.cleaner.min.cleanable.ratio",
                get("log.cleaner.min.cleanable.ratio"),
            )?,
            log_cleaner_min_compaction_lag_ms: parse(
                "log.cleaner.min.compaction.lag.ms",
                get("log.cleaner.min.compaction.lag.ms"),
            )?,
            log_cleaner_max_compaction_lag_ms: parse(
                "log.cleaner.max.compaction.lag.ms",
                get("log.cleaner.max.compaction.lag.ms"),
            )?,
            log_cleaner_delete_retention_ms: parse(
                "log.cleaner.delete.retention.ms",
                get("log.cleaner.delete.retention.ms"),
            )?,
            log_cleaner_dedupe_buffer_size: parse(
                "log.cleaner.dedupe.buffer.size",
                get("log.cleaner.dedupe.buffer.size"),
            )?,
            log_cleaner_backoff_ms: parse("log.cleaner.backoff.ms", get("log.cleaner.backoff.ms"))?,
            min_insync_replicas: parse("min.insync.replicas", get("min.insync.replicas"))?,
            replica_lag_time_max_ms: parse(
                "replica.lag.time.max.ms",
                get("replica.lag.time.max.ms"),
            )?,
            offsets_topic_num_partitions: parse(
                "offsets.topic.num.partitions",
                get("offsets.topic.num.partitions"),
            )?,
            transaction_state_log_num_partitions: parse(
                "transaction.state.log.num.partitions",
                get("transaction.state.log.num.partitions"),
            )?,
            transaction_state_log_replication_factor: parse(
                "transaction.state.log.replication.factor",
                get("transaction.state.log.replication.factor"),
            )?,
            transaction_state_log_min_isr: parse(
                "transaction.state.log.min.isr",
                get("transaction.state.log.min.isr"),
            )?,
            transaction_state_log_segment_bytes: parse(
                "transaction.state.log.segment.bytes",
                get("transaction.state.log.segment.bytes"),
            )?,
            transaction_max_timeout_ms: parse(
                "transaction.max.timeout.ms",
                get("transaction.max.timeout.ms"),
            )?,
            transaction_partition_verification_enable: parse(
                "transaction.partition.verification.enable",
                get("transaction.partition.verification.enable"),
            )?,
            add_partitions_to_txn_retry_backoff_ms: parse(
                "add.partitions.to.txn.retry.backoff.ms",
                get("add.partitions.to.txn.retry.backoff.ms"),
            )?,
            add_partitions_to_txn_retry_backoff_max_ms: parse(
                "add.partitions.to.txn.retry.backoff.max.ms",
                get("add.partitions.to.txn.retry.backoff.max.ms"),
            )?,
            transactional_id_expiration_ms: parse(
                "transactional.id.expiration.ms",
                get("transactional.id.expiration.ms"),
            )?,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: parse(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                get("transaction.abort.timed.out.transaction.cleanup.interval.ms"),
            )?,
            transaction_remove_expired_transaction_cleanup_interval_ms: parse(
                "transaction.remove.expired.transaction.cleanup.interval.ms",
                get("transaction.remove.expired.transaction.cleanup.interval.ms"),
            )?,
            offsets_topic_segment_bytes: parse(
                "offsets.topic.segment.bytes",
                get("offsets.topic.segment.bytes"),
            )?,
            offsets_topic_replication_factor: parse(
                "offsets.topic.replication.factor",
                get("offsets.topic.replication.factor"),
            )?,
            offsets_retention_minutes: parse(
                "offsets.retention.minutes",
                get("offsets.retention.minutes"),
            )?,
            offsets_retention_check_interval_ms: parse(
                "offsets.retention.check.interval.ms",
                get("offsets.retention.check.interval.ms"),
            )?,
            offset_metadata_max_bytes: parse(
                "offset.metadata.max.bytes",
                get("offset.metadata.max.bytes"),
            )?,
            group_initial_rebalance_delay_ms: parse(
                "group.initial.rebalance.delay.ms",
                get("group.initial.rebalance.delay.ms"),
            )?,
            group_min_session_timeout_ms: parse(
                "group.min.session.timeout.ms",
                get("group.min.session.timeout.ms"),
            )?,
            group_max_session_timeout_ms: parse(
                "group.max.session.timeout.ms",
                get("group.max.session.timeout.ms"),
            )?,
            group_max_size: parse("group.max.size", get("group.max.size"))?,
            group_consumer_session_timeout_ms: parse(
                "group.consumer.session.timeout.ms",
                get("group.consumer.session.timeout.ms"),
            )?,
            group_consumer_heartbeat_interval_ms: parse(
                "group.consumer.heartbeat.interval.ms",
                get("group.consumer.heartbeat.interval.ms"),
            )?,
            group_consumer_assignors: get("group.consumer.assignors")
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            group_consumer_max_size: parse(
                "group.consumer.max.size",
                get("group.consumer.max.size"),
            )?,
            auto_leader_rebalance_enable: parse(
                "auto.leader.rebalance.enable",
                get("auto.leader.rebalance.enable"),
            )?,
            leader_imbalance_check_interval_seconds: parse(
                "leader.imbalance.check.interval.seconds",
                get("leader.imbalance.check.interval.seconds"),
            )?,
            leader_imbalance_per_broker_percentage: parse(
                "leader.imbalance.per.broker.percentage",
                get("leader.imbalance.per.broker.percentage"),
            )?,
            controlled_shutdown_enable: parse(
                "controlled.shutdown.enable",
                get("controlled.shutdown.enable"),
            )?,
            values,
            ignored: Vec::new(),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name: &str, value: String| ConfigError::Invalid {
            name: name.into(),
            value,
        };
        if self.num_partitions < 1 {
            return Err(invalid("num.partitions", self.num_partitions.to_string()));
        }
        if self.min_insync_replicas < 1 {
            return Err(invalid(
                "min.insync.replicas",
                self.min_insync_replicas.to_string(),
            ));
        }
        if self.replica_lag_time_max_ms < 1 {
            return Err(invalid(
                "replica.lag.time.max.ms",
                self.replica_lag_time_max_ms.to_string(),
            ));
        }
        if self.offsets_topic_num_partitions < 1 {
            return Err(invalid(
                "offsets.topic.num.partitions",
                self.offsets_topic_num_partitions.to_string(),
            ));
        }
        for (name, value) in [
            (
                "transaction.state.log.num.partitions",
                i64::from(self.transaction_state_log_num_partitions),
            ),
            (
                "transaction.state.log.replication.factor",
                i64::from(self.transaction_state_log_replication_factor),
            ),
            (
                "transaction.state.log.min.isr",
                i64::from(self.transaction_state_log_min_isr),
            ),
            (
                "transaction.max.timeout.ms",
                i64::from(self.transaction_max_timeout_ms),
            ),
            (
                "transactional.id.expiration.ms",
                self.transactional_id_expiration_ms,
            ),
        ] {
            if value < 1 {
                return Err(invalid(name, value.to_string()));
            }
        }
        if self.offsets_topic_replication_factor < 1 {
            return Err(invalid(
                "offsets.topic.replication.factor",
                self.offsets_topic_replication_factor.to_string(),
            ));
        }
        if !(OFFSETS_TOPIC_SEGMENT_BYTES_MIN..=i32::MAX as u64)
            .contains(&self.offsets_topic_segment_bytes)
        {
            return Err(invalid(
                "offsets.topic.segment.bytes",
                self.offsets_topic_segment_bytes.to_string(),
            ));
        }
        if self.group_max_size == 0 {
            return Err(invalid("group.max.size", "0".into()));
        }
        let assignors = &self.group_consumer_assignors;
        if assignors.is_empty()
            || assignors
                .iter()
                .any(|a| !crate::group::assignor::ASSIGNORS.contains(&a.as_str()))
        {
            return Err(invalid("group.consumer.assignors", assignors.join(",")));
        }
        if self.group_consumer_session_timeout_ms <= 0
            || self.group_consumer_heartbeat_interval_ms <= 0
            || self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms
        {
            return Err(invalid(
                "group.consumer.heartbeat.interval.ms",
                self.group_consumer_heartbeat_interval_ms.to_string(),
            ));
        }
        if self.group_consumer_max_size == 0 {
            return Err(invalid("group.consumer.max.size", "0".into()));
        }
        if self.leader_imbalance_check_interval_seconds == 0 {
            return Err(invalid(
                "leader.imbalance.check.interval.seconds",
                "0".into(),
            ));
        }
        if self.leader_imbalance_per_broker_percentage > 100 {
            return Err(invalid(
                "leader.imbalance.per.broker.percentage",
                self.leader_imbalance_per_broker_percentage.to_string(),
            ));
        }
        if self.inflight_requests_max == 0 {
            return Err(invalid("queued.max.requests", "0".into()));
        }
        if self.log_segment_bytes < crate::topic_config::SEGMENT_BYTES_MIN as u64 {
            return Err(invalid(
                "log.segment.bytes",
                self.log_segment_bytes.to_string(),
            ));
        }
        if self.socket_request_max_bytes < 1024 || self.socket_request_max_bytes > i32::MAX as usize
        {
            return Err(invalid(
                "socket.request.max.bytes",
                self.socket_request_max_bytes.to_string(),
            ));
        }
        Ok(())
    }
}

/// Parses a listener list, `NAME://host:port,...` (a bare `host:port` is PLAINTEXT), into
/// (name, host, port) entries.
fn parse_listeners(text: &str) -> Result<Vec<(String, String, u16)>, ConfigError> {
    let invalid = || ConfigError::Invalid {
        name: "listeners".into(),
        value: text.to_string(),
    };
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, rest) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
        let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
        let port: u16 = port.parse().map_err(|_| invalid())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        out.push((name.to_string(), host.to_string(), port));
    }
    Ok(out)
}

/// The Kafka (client) listener: the first one that is not the controller listener.
fn client_listener(
    text: &str,
    controller_listener: &str,
) -> Result<(String, String, u16), ConfigError> {
    parse_listeners(text)?
        .into_iter()
        .find(|(name, _, _)| name != controller_listener)
        .ok_or_else(|| {
            ConfigError::Cluster(
                "There must be at least one broker advertised listener. Perhaps all listeners appear in controller.listener.names?".into(),
            )
        })
}

/// KRaft's settings, checked as Kafka checks them (its messages), with one difference: a
/// broker-only node also needs the controller listener, because brokers are Raft learners and
/// receive replication RPCs there.
fn cluster_config(
    node_id: i32,
    controller_listener: &str,
    values: &BTreeMap<&'static str, (String, ConfigSource)>,
) -> Result<ClusterConfig, ConfigError> {
    let get = |name: &'static str| -> &str { values.get(name).map(|v| v.0.as_str()).unwrap_or("") };
    let fail = |m: String| Err(ConfigError::Cluster(m));
    if node_id < 0 {
        return fail(format!("node.id must be non-negative, got {node_id}"));
    }
    let mut broker = false;
    let mut controller = false;
    for role in get("process.roles").split(',').map(str::trim) {
        match role {
            "broker" if !broker => broker = true,
            "controller" if !controller => controller = true,
            "broker" | "controller" => {
                return fail(format!(
                    "Duplicate role names found in `process.roles`: {}",
                    get("process.roles")
                ))
            }
            other => {
                return fail(format!(
                "Unknown process role '{other}' (only 'broker' and 'controller' are allowed roles)"
            ))
            }
        }
    }
    let mut voters = BTreeMap::new();
    for entry in get("controller.quorum.voters")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let Some((id, addr)) = entry.split_once('@') else {
            return fail("Invalid configuration value for controller.quorum.voters. Each entry should be in the form `{id}@{host}:{port}`.".into());
        };
        let Ok(id) = id.trim().parse::<i32>() else {
            return fail(format!("Failed to parse voter ID as an integer from {id}"));
        };
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => {
                return fail(format!("Failed to parse host port from entry {entry} for the configuration controller.quorum.voters. Each entry should be in the form `{{id}}@{{host}}:{{port}}`."))
            }
        }
        voters.insert(id, addr.to_string());
    }
    let bootstrap_servers: Vec<String> = get("controller.quorum.bootstrap.servers")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let listeners = parse_listeners(get("listeners"))?;
    let rpc_listen = listeners
        .iter()
        .find(|(name, _, _)| name == controller_listener)
        .map(|(_, host, port)| (host.clone(), *port));
    let voters_list = || {
        format!(
            "Set({})",
            voters
                .keys()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if voters.is_empty() && bootstrap_servers.is_empty() {
        // The embedded default: a one-node cluster, its own only voter.
        if !(broker && controller) {
            return fail("If using process.roles, either controller.quorum.bootstrap.servers must contain the set of bootstrap controllers or controller.quorum.voters must contain a parseable set of controllers.".into());
        }
        voters.insert(node_id, String::new());
        return Ok(ClusterConfig {
            broker,
            controller,
            voters,
            bootstrap_servers,
            controller_listener: controller_listener.to_string(),
            rpc_listen: None,
            rack: None,
            election_timeout_ms: parse(
                "controller.quorum.election.timeout.ms",
                get("controller.quorum.election.timeout.ms"),
            )?,
            request_timeout_ms: parse(
                "controller.quorum.request.timeout.ms",
                get("controller.quorum.request.timeout.ms"),
            )?,
            heartbeat_interval_ms: parse(
                "broker.heartbeat.interval.ms",
                get("broker.heartbeat.interval.ms"),
            )?,
            session_timeout_ms: parse(
                "broker.session.timeout.ms",
                get("broker.session.timeout.ms"),
            )?,
            snapshot_bytes: parse(
                "metadata.log.max.record.bytes.between.snapshots",
                get("metadata.log.max.record.bytes.between.snapshots"),
            )?,
            cluster_id: Some(get("cluster.id"))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
        .with_rack(get("broker.rack")));
    }
    if controller && !voters.is_empty() && !voters.contains_key(&node_id) {
        return fail(format!("If process.roles contains the 'controller' role, the node id {node_id} must be included in the set of voters controller.quorum.voters={}", voters_list()));
    }
    if !controller && voters.contains_key(&node_id) {
        return fail(format!("If process.roles contains just the 'broker' role, the node id {node_id} must not be included in the set of voters controller.quorum.voters={}", voters_list()));
    }
    if controller && voters.is_empty() {
        return fail("A controller needs controller.quorum.voters: Spool's metadata quorum is static (controller.quorum.bootstrap.servers is for broker-only nodes).".into());
    }
    if rpc_listen.is_none() {
        return fail(format!("controller.listener.names must contain at least one value appearing in the 'listeners' configuration: {controller_listener} is not in listeners (every Spool node of a multi-node cluster receives inter-node RPC on it)"));
    }
    let heartbeat_interval_ms: u64 = parse(
        "broker.heartbeat.interval.ms",
        get("broker.heartbeat.interval.ms"),
    )?;
    let session_timeout_ms: u64 = parse(
        "broker.session.timeout.ms",
        get("broker.session.timeout.ms"),
    )?;
    if heartbeat_interval_ms == 0 || heartbeat_interval_ms >= session_timeout_ms {
        return fail(format!("broker.heartbeat.interval.ms ({heartbeat_interval_ms}) must be positive and below broker.session.timeout.ms ({session_timeout_ms})"));
    }
    let election_timeout_ms: u64 = parse(
        "controller.quorum.election.timeout.ms",
        get("controller.quorum.election.timeout.ms"),
    )?;
    if election_timeout_ms < 10 {
        return fail(format!(
            "controller.quorum.election.timeout.ms must be at least 10, got {election_timeout_ms}"
        ));
    }
    Ok(ClusterConfig {
        broker,
        controller,
        voters,
        bootstrap_servers,
        controller_listener: controller_listener.to_string(),
        rpc_listen,
        rack: None,
        election_timeout_ms,
        request_timeout_ms: parse(
            "controller.quorum.request.timeout.ms",
            get("controller.quorum.request.timeout.ms"),
        )?,
        heartbeat_interval_ms,
        session_timeout_ms,
        snapshot_bytes: parse(
            "metadata.log.max.record.bytes.between.snapshots",
            get("metadata.log.max.record.bytes.between.snapshots"),
        )?,
        cluster_id: Some(get("cluster.id"))
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    }
    .with_rack(get("broker.rack")))
}

impl ClusterConfig {
    fn with_rack(mut self, rack: &str) -> ClusterConfig {
        self.rack = Some(rack.trim().to_string()).filter(|r| !r.is_empty());
        self
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
    })
}

fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Reads a TOML file into Kafka-named settings. Both `"log.dirs" = "x"` and nested tables
/// (`[log] dirs = "x"`) are accepted: nested keys are joined with dots.
pub fn load_toml(path: &std::path::Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        path: path.to_path_buf(),
        reason: source.to_string(),
    })?;
    let value: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut out = BTreeMap::new();
    flatten("", &toml::Value::Table(value), &mut out);
    Ok(out)
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Settings given as `SPOOL_<NAME>` environment variables.
pub fn from_env() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for spec in SETTINGS {
        let var = format!("SPOOL_{}", spec.name.to_uppercase().replace('.', "_"));
        if let Ok(value) = std::env::var(&var) {
            out.insert(spec.name.to_string(), value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = BrokerConfig::resolve(&[]).expect("defaults resolve");
        assert_eq!((c.listen_host.as_str(), c.listen_port), ("127.0.0.1", 9092));
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 9092)
        );
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert_eq!(c.socket_request_max_bytes, 100 * 1024 * 1024);
        assert_eq!(c.flush_mode, FlushMode::Sync);
    }

    #[test]
    fn leadership_settings_have_kafkas_defaults_and_bounds() {
        let c = BrokerConfig::resolve(&[]).expect("defaults resolve");
        assert!(c.auto_leader_rebalance_enable);
        assert_eq!(c.leader_imbalance_check_interval_seconds, 300);
        assert_eq!(c.leader_imbalance_per_broker_percentage, 10);
        assert!(c.controlled_shutdown_enable);
        let c = BrokerConfig::resolve(&[layer(&[
            ("auto.leader.rebalance.enable", "false"),
            ("leader.imbalance.check.interval.seconds", "2"),
            ("leader.imbalance.per.broker.percentage", "0"),
            ("controlled.shutdown.enable", "false"),
        ])])
        .expect("valid settings");
        assert!(!c.auto_leader_rebalance_enable && !c.controlled_shutdown_enable);
        assert_eq!(c.leader_imbalance_check_interval_seconds, 2);
        assert_eq!(c.leader_imbalance_per_broker_percentage, 0);
        for (name, value) in [
            ("leader.imbalance.check.interval.seconds", "0"),
            ("leader.imbalance.per.broker.percentage", "101"),
            ("auto.leader.rebalance.enable", "maybe"),
        ] {
            assert!(
                BrokerConfig::resolve(&[layer(&[(name, value)])]).is_err(),
                "{name}={value} accepted"
            );
        }
    }

    #[test]
    fn later_layers_win_and_unknown_names_fail() {
        let c = BrokerConfig::resolve(&[
            layer(&[
                ("listeners", "PLAINTEXT://127.0.0.2:9000"),
                ("num.partitions", "3"),
            ]),
            layer(&[
                ("num.partitions", "6"),
                ("advertised.listeners", "PLAINTEXT://localhost:9000"),
            ]),
        ])
        .expect("resolves");
        assert_eq!(c.num_partitions, 6);
        assert_eq!(c.listen_host, "127.0.0.2");
        assert_eq!(c.advertised_host, "localhost");
        assert_eq!(c.values["num.partitions"].1, ConfigSource::Static);
        assert!(matches!(
            BrokerConfig::resolve(&[layer(&[("no.such.setting", "1")])]),
            Err(ConfigError::Unknown { .. })
        ));
        // Any Kafka broker setting is accepted; those Spool does not use are ignored, with why.
        let c = BrokerConfig::resolve(&[layer(&[
            ("num.network.threads", "8"),
            ("ssl.keystore.location", "/x"),
            ("log.retention.hours", "24"),
            ("log.roll.hours", "2"),
        ])])
        .expect("Kafka settings are accepted");
        let ignored: Vec<&str> = c.ignored.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(ignored, ["num.network.threads", "ssl.keystore.location"]);
        assert!(c.ignored[0].2.contains("thread-per-core"));
        assert!(c.ignored[1].2.contains("TLS"));
        // Kafka's hours and minutes spellings count, below the `.ms` one.
        assert_eq!(c.log_retention_ms, 24 * 3_600_000);
        assert_eq!(c.log_roll_ms, 2 * 3_600_000);
        let c = BrokerConfig::resolve(&[layer(&[
            ("log.retention.hours", "24"),
            ("log.retention.ms", "5000"),
        ])])
        .expect("resolves");
        assert_eq!(c.log_retention_ms, 5000);
        // Security asked for is refused, not silently dropped.
        for (name, value) in [
            ("listeners", "SASL_SSL://127.0.0.1:9093"),
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
        ] {
            assert!(
                matches!(
                    BrokerConfig::resolve(&[layer(&[(name, value)])]),
                    Err(ConfigError::Cluster(_))
                ),
                "{name}"
            );
        }
        let mapped = BrokerConfig::resolve(&[layer(&[
            ("listeners", "EXTERNAL://127.0.0.1:9093"),
            ("listener.security.protocol.map", "EXTERNAL:SSL"),
        ])]);
        assert!(matches!(mapped, Err(ConfigError::Cluster(_))));
        // A misspelling is still an error, with the closest name.
        let e = BrokerConfig::resolve(&[layer(&[("log.retenton.ms", "1")])])
            .expect_err("a misspelling is refused");
        assert_eq!(
            e.to_string(),
            "unknown setting `log.retenton.ms`; did you mean `log.retention.ms`?"
        );
        assert!(matches!(
            BrokerConfig::resolve(&[layer(&[("num.partitions", "zero")])]),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn the_durability_round_scope_is_filesystem_unless_set() {
        let c = BrokerConfig::resolve(&[]).expect("defaults resolve");
        assert_eq!(c.log_sync_scope, spool_storage::SyncScope::Filesystem);
        let c = BrokerConfig::resolve(&[layer(&[("spool.log.sync.scope", "file")])])
            .expect("file scope");
        assert_eq!(c.log_sync_scope, spool_storage::SyncScope::File);
        let e = BrokerConfig::resolve(&[layer(&[("spool.log.sync.scope", "disk")])])
            .expect_err("an unknown scope is refused");
        assert!(
            matches!(&e, ConfigError::Invalid { name, value } if name == "spool.log.sync.scope" && value == "disk"),
            "{e}"
        );
    }

    #[test]
    fn one_node_cluster_by_default() {
        let c = BrokerConfig::resolve(&[layer(&[("node.id", "7")])]).expect("defaults");
        assert!(c.cluster.broker && c.cluster.controller);
        assert!(c.cluster.single_node());
        assert_eq!(
            c.cluster.voters.keys().copied().collect::<Vec<_>>(),
            vec![7]
        );
        assert_eq!(c.cluster.session_timeout_ms, 9000);
    }

    #[test]
    fn cluster_settings_as_kafka_checks_them() {
        let three = "1@127.0.0.1:9193,2@127.0.0.1:9293,3@127.0.0.1:9393";
        let c = BrokerConfig::resolve(&[layer(&[
            ("node.id", "2"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9292,CONTROLLER://127.0.0.1:9293",
            ),
            ("controller.quorum.voters", three),
            ("broker.rack", "r2"),
        ])])
        .expect("combined node");
        assert_eq!((c.listen_host.as_str(), c.listen_port), ("127.0.0.1", 9292));
        assert_eq!(c.cluster.rpc_listen, Some(("127.0.0.1".to_string(), 9293)));
        assert_eq!(c.cluster.voters.len(), 3);
        assert_eq!(c.cluster.rack.as_deref(), Some("r2"));
        let err = |pairs: &[(&str, &str)]| match BrokerConfig::resolve(&[layer(pairs)]) {
            Err(ConfigError::Cluster(m)) => m,
            other => panic!("expected a cluster error, got {other:?}"),
        };
        let m = err(&[
            ("node.id", "4"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9492,CONTROLLER://127.0.0.1:9493",
            ),
            ("controller.quorum.voters", three),
        ]);
        assert!(
            m.contains("the node id 4 must be included in the set of voters"),
            "{m}"
        );
        let m = err(&[
            ("node.id", "1"),
            ("process.roles", "broker"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9492,CONTROLLER://127.0.0.1:9493",
            ),
            ("controller.quorum.voters", three),
        ]);
        assert!(
            m.contains("must not be included in the set of voters"),
            "{m}"
        );
        let m = err(&[("process.roles", "broker")]);
        assert!(m.contains("controller.quorum.voters must contain"), "{m}");
        let m = err(&[("process.roles", "broker,nope")]);
        assert!(m.contains("Unknown process role 'nope'"), "{m}");
        let m = err(&[
            ("node.id", "1"),
            ("listeners", "PLAINTEXT://127.0.0.1:9192"),
            ("controller.quorum.voters", three),
        ]);
        assert!(m.contains("controller.listener.names"), "{m}");
        let m = err(&[("controller.quorum.voters", "1@nohostport")]);
        assert!(m.contains("{host}:{port}"), "{m}");
        let m = err(&[("listeners", "CONTROLLER://127.0.0.1:9093")]);
        assert!(m.contains("at least one broker advertised listener"), "{m}");
    }

    #[test]
    fn toml_nested_and_dotted_keys_flatten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spool.toml");
        std::fs::write(&path, "\"log.dirs\" = \"/data\"\n[num]\npartitions = 4\n").expect("write");
        let layer = load_toml(&path).expect("parses");
        assert_eq!(layer["log.dirs"], "/data");
        assert_eq!(layer["num.partitions"], "4");
    }
}
