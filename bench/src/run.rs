//! `spool-bench run`: one workload against one broker.
//!
//! Phases: create the topics (unique names per run) and wait for their leaders; start consumers
//! then producers, each talking to the partitions' leaders (one broker, or a cluster's three:
//! `--bootstrap` takes a comma-separated list); warm up; measure; stop and gather. With a consumer backlog, consumers stay
//! paused until the backlog is written, then the measured window is the catch-up read plus the
//! test duration after it. A sampler on this thread records one `Sample` per second and prints
//! a progress line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsRequest, MetadataRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::consumer::{self, ConsumerPlan};
use crate::error::BenchError;
use crate::machine::{self, ProcSnapshot};
use crate::payload::{now_us, PayloadPool};
use crate::producer::{self, Control, ProducerPlan};
use crate::result::{CatchUp, RunResult, Sample, Throughput};
use crate::stats::{self, Counters};
use crate::wire::Conn;
use crate::workload::Workload;
use crate::RunArgs;

/// How long topic creation may take before the run fails (Kafka needs a few seconds for 1,000
/// partitions).
const TOPIC_READY_TIMEOUT_S: u64 = 120;
/// A backlog that cannot be written or drained in this long means the broker is not keeping up
/// at all; stop rather than run forever.
const BACKLOG_PHASE_TIMEOUT_S: f64 = 3600.0;
const PROGRESS_EVERY_S: f64 = 5.0;
/// Kafka error codes: TOPIC_ALREADY_EXISTS is fine on a rerun.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Replication factor larger than the brokers the controller knows of.
const INVALID_REPLICATION_FACTOR: i16 = 38;

pub fn main(args: RunArgs) -> Result<(), BenchError> {
    let mut w = Workload::load(&args.workload)?;
    if let Some(rate) = args.rate {
        w.producer_rate = rate;
    }
    if let Some(d) = args.duration_s {
        w.test_duration_seconds = Some(d);
    }
    if let Some(d) = args.warmup_s {
        w.warmup_duration_seconds = Some(d);
    }
    if let Some(p) = args.partitions {
        w.partitions_per_topic = p;
    }
    if let Some(gb) = args.backlog_gb {
        w.consumer_backlog_size_gb = gb;
    }
    w.validate().map_err(|reason| BenchError::Workload {
        path: args.workload.display().to_string(),
        reason,
    })?;
    let topic = TopicSettings::from_args(&args)?;
    let target = args.target.target();
    eprintln!(
        "spool-bench: {} against {} at {} ({})",
        w.name,
        target.label,
        args.bootstrap,
        if w.producer_rate == 0 {
            "max rate, closed loop".to_string()
        } else {
            format!("{} records/s", w.producer_rate)
        }
    );
    let result = run(&args.bootstrap, &w, &topic, &args.target, args.quiet)?;
    crate::write_json(&args.out, &result)?;
    eprintln!(
        "spool-bench: {}: publish {:.1} MB/s ({:.0} rec/s), p99 {} ms, e2e p99 {} ms, broker peak RSS {} MiB -> {}",
        target.label,
        result.publish.mb_per_s,
        result.publish.records_per_s,
        result.publish_latency.as_ref().map_or("–".into(), |l| format!("{:.2}", l.p99_us as f64 / 1e3)),
        result.end_to_end_latency.as_ref().map_or("–".into(), |l| format!("{:.2}", l.p99_us as f64 / 1e3)),
        result.broker.as_ref().map_or("–".into(), |b| (b.peak_rss_bytes >> 20).to_string()),
        args.out.display()
    );
    if result.errors > 0 {
        eprintln!(
            "spool-bench: {} errors during the run (see above)",
            result.errors
        );
    }
    Ok(())
}

/// How the run's topics are created. Both brokers get the same settings. The retention
/// defaults keep a long max-rate run within the disk (at 500 MB/s a minute is 30 GB): at most
/// `retention_bytes` per partition is kept, and the catch-up backlog (5 GiB over 16 partitions)
/// stays far below the default.
pub struct TopicSettings {
    pub replication_factor: i16,
    /// (name, value), after retention.bytes and segment.bytes (a broker applies the last).
    pub configs: Vec<(String, String)>,
}

impl TopicSettings {
    fn from_args(args: &RunArgs) -> Result<TopicSettings, BenchError> {
        let mut configs = vec![
            (
                "retention.bytes".to_string(),
                args.retention_bytes.to_string(),
            ),
            ("segment.bytes".to_string(), args.segment_bytes.to_string()),
        ];
        for kv in &args.topic_configs {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                BenchError::Usage(format!("--topic-config {kv:?}: expected name=value"))
            })?;
            configs.retain(|(name, _)| name != k);
            configs.push((k.to_string(), v.to_string()));
        }
        if args.replication_factor < 1 {
            return Err(BenchError::Usage(format!(
                "--replication-factor {}: must be at least 1",
                args.replication_factor
            )));
        }
        Ok(TopicSettings {
            replication_factor: args.replication_factor,
            configs,
        })
    }
}

/// Connects to the first address of a comma-separated bootstrap list that answers.
fn connect_any(bootstrap: &str) -> Result<Conn, BenchError> {
    let mut last = None;
    for addr in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match Conn::connect(addr) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| BenchError::Usage(format!("empty bootstrap list {bootstrap:?}"))))
}

pub fn run(
    bootstrap: &str,
    w: &Workload,
    topic_settings: &TopicSettings,
    target_args: &crate::TargetArgs,
    quiet: bool,
) -> Result<RunResult, BenchError> {
    let run_id = format!("{:x}", now_us() & 0xffff_ffff);
    let topics = w.topic_names(&run_id);
    let mut admin = connect_any(bootstrap)?;
    let leaders = create_topics(
        &mut admin,
        &topics,
        w.partitions_per_topic as i32,
        topic_settings,
    )?;

    let counters = Arc::new(Counters::default());
    let backlog = w.backlog_bytes();
    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        measure_from_us: AtomicU64::new(u64::MAX),
        consume: AtomicBool::new(backlog == 0),
        start_us: now_us(),
        subscriptions: u64::from(w.subscriptions_per_topic),
    });
    let payloads = Arc::new(PayloadPool::new(w, 42));

    let mut consumers = Vec::new();
    let mut id = 0;
    for (topic, topic_leaders) in topics.iter().zip(&leaders) {
        for _sub in 0..w.subscriptions_per_topic {
            for c in 0..w.consumer_per_subscription {
                // A consumer's partitions, by leader: one fetching thread per broker.
                let mut by_leader: std::collections::BTreeMap<&str, Vec<i32>> =
                    std::collections::BTreeMap::new();
                for p in 0..w.partitions_per_topic as i32 {
                    if (p as u32) % w.consumer_per_subscription == c {
                        by_leader
                            .entry(topic_leaders[p as usize].as_str())
                            .or_default()
                            .push(p);
                    }
                }
                for (leader, partitions) in by_leader {
                    consumers.push(consumer::spawn(ConsumerPlan {
                        id,
                        bootstrap: leader.to_string(),
                        topic: topic.clone(),
                        partitions,
                        workload: w.clone(),
                        control: control.clone(),
                        counters: counters.clone(),
                    }));
                    id += 1;
                }
            }
        }
    }
    let per_producer_rate = w.producer_rate as f64 / f64::from(w.producers());
    let mut producers = Vec::new();
    for (t, (topic, topic_leaders)) in topics.iter().zip(&leaders).enumerate() {
        for p in 0..w.producers_per_topic {
            producers.push(producer::spawn(ProducerPlan {
                id: t as u32 * w.producers_per_topic + p,
                leaders: topic_leaders.clone(),
                topic: topic.clone(),
                partitions: w.partitions_per_topic as i32,
                rate: per_producer_rate,
                workload: w.clone(),
                payloads: payloads.clone(),
                control: control.clone(),
                counters: counters.clone(),
            }));
        }
    }

    let pids = target_args.broker_pids.as_slice();
    let mut sampler = Sampler::new(
        counters.clone(),
        pids,
        w.subscriptions_per_topic.max(1) as i64,
        quiet,
        w.name.clone(),
    );
    let started = Instant::now();
    let mut catch_up = None;
    let measure_start;
    let measure_start_snapshot;
    let counts_at_start;
    let plan_s;
    if backlog > 0 {
        // Phase 1: write the backlog with consumers paused.
        sampler.phase = "backlog";
        while Counters::get(&counters.published_bytes) < backlog && !control.stopped() {
            sampler.tick(true, None);
            if started.elapsed().as_secs_f64() > BACKLOG_PHASE_TIMEOUT_S {
                return Err(BenchError::Usage(
                    "backlog not written within an hour".into(),
                ));
            }
        }
        // Phase 2: consumers start; measurement starts with them.
        measure_start = Instant::now();
        control.measure_from_us.store(now_us(), Ordering::Relaxed);
        measure_start_snapshot = broker_snapshot(pids, true);
        counts_at_start = counts(&counters);
        let consumed_before = Counters::get(&counters.consumed_bytes);
        let consumed_records_before = Counters::get(&counters.consumed_records);
        let backlog_bytes = Counters::get(&counters.published_bytes);
        control.consume.store(true, Ordering::Relaxed);
        sampler.phase = "catch-up";
        loop {
            sampler.tick(false, None);
            let behind = sampler.last_backlog_records();
            let rate = sampler.last_publish_records_s().max(1.0);
            if (behind as f64) <= rate || control.stopped() {
                break;
            }
            if measure_start.elapsed().as_secs_f64() > BACKLOG_PHASE_TIMEOUT_S {
                return Err(BenchError::Usage(
                    "backlog not drained within an hour".into(),
                ));
            }
        }
        let drain_s = measure_start.elapsed().as_secs_f64();
        let read_bytes = Counters::get(&counters.consumed_bytes) - consumed_before;
        let read_records = Counters::get(&counters.consumed_records) - consumed_records_before;
        catch_up = Some(CatchUp {
            backlog_bytes,
            drain_s,
            read_mb_per_s: read_bytes as f64 / 1e6 / drain_s,
            read_records_per_s: read_records as f64 / drain_s,
        });
        plan_s = drain_s + w.duration_s();
        sampler.phase = "steady";
    } else {
        sampler.phase = "warm-up";
        let warmup = Duration::from_secs_f64(w.warmup_s());
        while started.elapsed() < warmup && !control.stopped() {
            sampler.tick(true, Some(warmup.as_secs_f64() + w.duration_s()));
        }
        measure_start = Instant::now();
        control.measure_from_us.store(now_us(), Ordering::Relaxed);
        measure_start_snapshot = broker_snapshot(pids, true);
        counts_at_start = counts(&counters);
        plan_s = w.duration_s();
        sampler.phase = "measure";
    }
    let total_s =
        started.elapsed().as_secs_f64() + (plan_s - measure_start.elapsed().as_secs_f64());
    while measure_start.elapsed().as_secs_f64() < plan_s && !control.stopped() {
        sampler.tick(false, Some(total_s));
    }
    let measured_s = measure_start.elapsed().as_secs_f64();
    let end = counts(&counters);
    let publish = throughput(
        end.0 - counts_at_start.0,
        end.1 - counts_at_start.1,
        measured_s,
    );
    let consume = throughput(
        end.2 - counts_at_start.2,
        end.3 - counts_at_start.3,
        measured_s,
    );
    let end_snapshot = broker_snapshot(pids, false);
    control.stop.store(true, Ordering::Relaxed);

    let mut publish_latency = stats::histogram();
    let mut end_to_end = stats::histogram();
    let mut first_err = None;
    for p in producers {
        match p.join() {
            Ok(Ok(o)) => publish_latency
                .add(&o.latency)
                .unwrap_or_else(|e| unreachable!("same bounds: {e}")),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => crate::fatal("a producer thread panicked"),
        }
    }
    for c in consumers {
        match c.join() {
            Ok(Ok(o)) => end_to_end
                .add(&o.end_to_end)
                .unwrap_or_else(|e| unreachable!("same bounds: {e}")),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => crate::fatal("a consumer thread panicked"),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // Free the disk for the next workload; the result does not depend on it, so a failure is
    // only reported.
    if let Err(e) = delete_topics(&mut admin, &topics) {
        eprintln!("spool-bench: deleting topics {topics:?}: {e}");
    }

    let broker = match (measure_start_snapshot, end_snapshot) {
        (Some(a), Some(b)) => Some(machine::usage(pids, &a, &b)),
        _ => None,
    };
    Ok(RunResult {
        kind: "workload".into(),
        target: target_args.target(),
        workload: w.clone(),
        machine: machine::machine(),
        versions: machine::versions(target_args.kafka_version.clone()),
        started_unix_s: control.start_us / 1_000_000,
        measured_s,
        target_rate: w.producer_rate,
        publish,
        consume,
        publish_latency: if w.acks_value() == Ok(0) {
            None
        } else {
            stats::summarize(&publish_latency)
        },
        end_to_end_latency: stats::summarize(&end_to_end),
        timeline: sampler.samples,
        broker,
        catch_up,
        errors: Counters::get(&counters.errors),
    })
}

/// (published records, published bytes, consumed records, consumed bytes)
fn counts(c: &Counters) -> (u64, u64, u64, u64) {
    (
        Counters::get(&c.published_records),
        Counters::get(&c.published_bytes),
        Counters::get(&c.consumed_records),
        Counters::get(&c.consumed_bytes),
    )
}

fn throughput(records: u64, bytes: u64, secs: f64) -> Throughput {
    let secs = secs.max(1e-9);
    Throughput {
        records,
        bytes,
        records_per_s: records as f64 / secs,
        mb_per_s: bytes as f64 / 1e6 / secs,
    }
}

fn broker_snapshot(pids: &[u32], reset_peak: bool) -> Option<ProcSnapshot> {
    if reset_peak {
        machine::reset_peak_rss_all(pids);
    }
    machine::snapshot_sum(pids)
}

/// Creates the topics and waits until every partition has a leader that answers; returns the
/// leaders' host:port, per topic, by partition.
fn create_topics(
    admin: &mut Conn,
    topics: &[String],
    partitions: i32,
    settings: &TopicSettings,
) -> Result<Vec<Vec<String>>, BenchError> {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(60_000)
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(topic_name(t))
                        .with_num_partitions(partitions)
                        .with_replication_factor(settings.replication_factor)
                        .with_configs(
                            settings
                                .configs
                                .iter()
                                .map(|(k, v)| topic_config(k, v))
                                .collect(),
                        )
                })
                .collect(),
        );
    // A cluster that has just started may not have every broker registered yet: a replication
    // factor above the live brokers is refused until they are.
    let deadline = Instant::now() + Duration::from_secs(TOPIC_READY_TIMEOUT_S);
    loop {
        let resp = admin.call(&req)?;
        let failed = resp
            .topics
            .iter()
            .find(|t| t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS);
        match failed {
            None => break,
            Some(t) if t.error_code == INVALID_REPLICATION_FACTOR && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Some(t) => {
                return Err(BenchError::Kafka {
                    what: format!("creating topic {}", t.name.as_str()),
                    code: t.error_code,
                    message: t.error_message.as_ref().map(|m| m.to_string()),
                })
            }
        }
    }
    // Leaders can lag creation (Kafka propagates metadata asynchronously).
    loop {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let resp = admin.call(&req)?;
        let ready = resp.topics.len() == topics.len()
            && resp.topics.iter().all(|t| {
                t.error_code == 0
                    && t.partitions.len() == partitions as usize
                    && t.partitions
                        .iter()
                        .all(|p| p.error_code == 0 && p.leader_id.0 >= 0)
            });
        if ready {
            let leaders = leader_addresses(&resp, topics)?;
            if partitions_answer(&leaders, topics, partitions)? {
                return Ok(leaders);
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Usage(format!(
                "topics {topics:?} have no leaders after {TOPIC_READY_TIMEOUT_S} s"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// host:port of each partition's leader, per topic in the order of `topics`.
fn leader_addresses(
    resp: &kafka_protocol::messages::MetadataResponse,
    topics: &[String],
) -> Result<Vec<Vec<String>>, BenchError> {
    let broker_addr = |id: BrokerId| {
        resp.brokers
            .iter()
            .find(|b| b.node_id == id)
            .map(|b| format!("{}:{}", b.host.as_str(), b.port))
            .ok_or_else(|| {
                BenchError::Protocol(format!("leader {} is not among Metadata's brokers", id.0))
            })
    };
    topics
        .iter()
        .map(|name| {
            let t = resp
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
                .ok_or_else(|| BenchError::Protocol(format!("Metadata lacks topic {name}")))?;
            let mut parts: Vec<_> = t.partitions.iter().collect();
            parts.sort_by_key(|p| p.partition_index);
            parts.iter().map(|p| broker_addr(p.leader_id)).collect()
        })
        .collect()
}

/// Kafka lists a new partition's leader in Metadata before the leader has loaded it, and
/// answers NOT_LEADER_OR_FOLLOWER to produce until then; a ListOffsets that every partition's
/// leader answers without error means the load can start.
fn partitions_answer(
    leaders: &[Vec<String>],
    topics: &[String],
    partitions: i32,
) -> Result<bool, BenchError> {
    let mut addrs: Vec<&String> = leaders.iter().flatten().collect();
    addrs.sort();
    addrs.dedup();
    for addr in addrs {
        let mut conn = Conn::connect(addr)?;
        if !partitions_answer_at(&mut conn, leaders, addr, topics, partitions)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn partitions_answer_at(
    conn: &mut Conn,
    leaders: &[Vec<String>],
    addr: &str,
    topics: &[String],
    partitions: i32,
) -> Result<bool, BenchError> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .iter()
                .zip(leaders)
                .map(|(t, topic_leaders)| {
                    ListOffsetsTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(
                            (0..partitions)
                                .filter(|&p| topic_leaders[p as usize] == addr)
                                .map(|p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_current_leader_epoch(-1)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let resp = conn.call(&req)?;
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .all(|p| p.error_code == 0))
}

fn delete_topics(admin: &mut Conn, topics: &[String]) -> Result<(), BenchError> {
    // v6 names topics in `topics`, older versions in `topic_names`; set both, the encoder
    // writes the one of the negotiated version.
    let req = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topic_names(topics.iter().map(|t| topic_name(t)).collect())
        .with_topics(
            topics
                .iter()
                .map(|t| DeleteTopicState::default().with_name(Some(topic_name(t))))
                .collect(),
        );
    let resp = admin.call(&req)?;
    match resp.responses.iter().find(|r| r.error_code != 0) {
        Some(r) => Err(BenchError::Kafka {
            what: format!("deleting topic {:?}", r.name.as_ref().map(|n| n.as_str())),
            code: r.error_code,
            message: r.error_message.as_ref().map(|m| m.to_string()),
        }),
        None if resp.responses.len() != topics.len() => Err(BenchError::Protocol(format!(
            "{} delete results for {} topics",
            resp.responses.len(),
            topics.len()
        ))),
        None => Ok(()),
    }
}

fn topic_config(name: &str, value: &str) -> CreatableTopicConfig {
    CreatableTopicConfig::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value.to_string())))
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

/// Once a second: a `Sample` from the counters and the broker's /proc, and now and then a
/// progress line.
struct Sampler {
    counters: Arc<Counters>,
    pids: Vec<u32>,
    subscriptions: i64,
    quiet: bool,
    name: String,
    phase: &'static str,
    started: Instant,
    next: Instant,
    last: (u64, u64, u64, u64),
    last_cpu: Option<f64>,
    last_progress: f64,
    samples: Vec<Sample>,
}

impl Sampler {
    fn new(
        counters: Arc<Counters>,
        pids: &[u32],
        subscriptions: i64,
        quiet: bool,
        name: String,
    ) -> Sampler {
        let now = Instant::now();
        Sampler {
            counters,
            pids: pids.to_vec(),
            subscriptions,
            quiet,
            name,
            phase: "",
            started: now,
            next: now + Duration::from_secs(1),
            last: (0, 0, 0, 0),
            last_cpu: machine::snapshot_sum(pids).map(|s| s.cpu_s),
            last_progress: 0.0,
            samples: Vec::new(),
        }
    }

    /// Sleeps until the next whole second, then records a sample.
    fn tick(&mut self, warmup: bool, total_s: Option<f64>) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        self.next += Duration::from_secs(1);
        let c = &self.counters;
        let cur = counts(c);
        let proc_now = machine::snapshot_sum(&self.pids);
        let cpu_pct = match (proc_now, self.last_cpu) {
            (Some(s), Some(before)) => Some((s.cpu_s - before) * 100.0),
            _ => None,
        };
        self.last_cpu = proc_now.map(|s| s.cpu_s);
        let t_s = self.started.elapsed().as_secs_f64();
        let sample = Sample {
            t_s,
            warmup,
            publish_mb_s: (cur.1 - self.last.1) as f64 / 1e6,
            publish_records_s: (cur.0 - self.last.0) as f64,
            consume_mb_s: (cur.3 - self.last.3) as f64 / 1e6,
            consume_records_s: (cur.2 - self.last.2) as f64,
            backlog_records: cur.0 as i64 - cur.2 as i64 / self.subscriptions,
            broker_cpu_pct: cpu_pct,
            broker_rss_bytes: proc_now.map(|s| s.rss_bytes),
            publish_latency_max_ms: c.interval_latency_max_us.swap(0, Ordering::Relaxed) as f64
                / 1e3,
        };
        self.last = cur;
        if !self.quiet && t_s - self.last_progress >= PROGRESS_EVERY_S {
            self.last_progress = t_s;
            let left = total_s.map_or(String::new(), |t| {
                format!(", {:.0} s left", (t - t_s).max(0.0))
            });
            let lat_n = Counters::get(&c.latency_count).max(1);
            eprintln!(
                "  [{} {}] {:>4.0} s{}: publish {:.1} MB/s, consume {:.1} MB/s, backlog {} records, publish latency so far mean {:.2} ms max {:.2} ms, broker CPU {}, RSS {}, errors {}",
                self.name,
                self.phase,
                t_s,
                left,
                sample.publish_mb_s,
                sample.consume_mb_s,
                sample.backlog_records,
                Counters::get(&c.latency_sum_us) as f64 / lat_n as f64 / 1e3,
                Counters::get(&c.latency_max_us) as f64 / 1e3,
                cpu_pct.map_or("–".into(), |p| format!("{p:.0}%")),
                sample.broker_rss_bytes.map_or("–".into(), |b| format!("{} MiB", b >> 20)),
                Counters::get(&c.errors),
            );
        }
        self.samples.push(sample);
    }

    fn last_backlog_records(&self) -> i64 {
        self.samples.last().map_or(i64::MAX, |s| s.backlog_records)
    }

    fn last_publish_records_s(&self) -> f64 {
        self.samples.last().map_or(0.0, |s| s.publish_records_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::MetadataResponse;

    #[test]
    fn leaders_are_listed_by_partition_with_their_brokers_addresses() {
        let broker = |id: i32, port: i32| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(port)
        };
        let partition = |index: i32, leader: i32| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(BrokerId(leader))
        };
        let resp = MetadataResponse::default()
            .with_brokers(vec![broker(1, 9001), broker(2, 9003), broker(3, 9005)])
            .with_topics(vec![MetadataResponseTopic::default()
                .with_name(Some(topic_name("t")))
                .with_partitions(vec![
                    partition(2, 3),
                    partition(0, 1),
                    partition(1, 2),
                ])]);
        let leaders = leader_addresses(&resp, &["t".to_string()]).expect("leaders");
        assert_eq!(
            leaders,
            vec![vec!["127.0.0.1:9001", "127.0.0.1:9003", "127.0.0.1:9005"]]
        );
        let orphan = resp.clone().with_brokers(vec![broker(1, 9001)]);
        assert!(leader_addresses(&orphan, &["t".to_string()]).is_err());
        assert!(leader_addresses(&resp, &["missing".to_string()]).is_err());
    }
}
