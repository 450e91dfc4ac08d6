//! A pipelined Kafka producer for load generation.
//!
//! One thread per producer builds per-partition batches (batch.size, linger.ms, Kafka's sticky
//! partitioner for null keys, murmur2 for keys) and writes Produce requests on its connections,
//! `connectionsPerProducer` to each partition leader (in a cluster a request carries only the
//! batches of partitions its broker leads, as Kafka's sender does);
//! each connection has a reader thread that matches responses to requests in order (Kafka answers
//! a connection's requests in order) and records latency. At most `inflightPerConnection`
//! requests are outstanding per connection: the bounded channel between writer and reader is
//! that bound, so a slow broker blocks the writer exactly as max.in.flight blocks Kafka's sender.
//!
//! Latency is measured from each record's *intended* send time: at a fixed rate, record i of a
//! producer is due at start + i/rate whether or not the producer could keep up, so a stalled
//! broker shows up as latency instead of silently lowering the offered load (coordinated
//! omission). In closed-loop mode (rate 0) a record is intended when it is created.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
use spool_protocol::murmur2::partition_for_key;
use spool_protocol::record::plain_record;

use crate::error::BenchError;
use crate::payload::{now_us, Keys, PayloadPool};
use crate::stats::{self, Counters};
use crate::wire::{self, Conn};
use crate::workload::{KeyDistributor, Workload};

/// Records waiting in a producer's accumulator, in bytes (Kafka's buffer.memory default). When
/// full, a fixed-rate producer stops generating and its records fall behind schedule, which the
/// intended-time latency then shows.
pub const BUFFER_BYTES_MAX: usize = 32 * 1024 * 1024;
/// The broker's per-request timeout (Kafka's request.timeout.ms default).
pub const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// In closed-loop mode producers run ahead of the slowest subscription by at most this many
/// records: the maximum *sustainable* rate is one consumers keep up with (OMB's balanced rate),
/// not one that only grows a backlog.
pub const CLOSED_LOOP_BACKLOG_RECORDS_MAX: u64 = 32_768;
/// The shortest wait between rounds of the send loop (the kernel's default timer slack is
/// 50 µs, so shorter sleeps would not be shorter).
const SLEEP_MIN_US: u64 = 50;
/// The longest: how late the loop may notice a freed in-flight slot.
const SLEEP_MAX_US: u64 = 10_000;

/// State every load thread watches.
pub struct Control {
    pub stop: AtomicBool,
    /// Records intended before this time (µs since epoch) are warm-up and not measured.
    pub measure_from_us: AtomicU64,
    /// Consumers fetch only while this is set (cleared to build a backlog).
    pub consume: AtomicBool,
    /// When producers start, µs since epoch; fixed-rate schedules count from here.
    pub start_us: u64,
    /// Subscriptions reading every record (0: nothing consumes, no backlog bound).
    pub subscriptions: u64,
}

impl Control {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn measuring(&self, intended_us: u64) -> bool {
        intended_us >= self.measure_from_us.load(Ordering::Relaxed)
    }
}

pub struct ProducerPlan {
    pub id: u32,
    /// host:port of each partition's leader, by partition index (leaders are looked up once,
    /// when the topics are ready; a leader that moves during the run shows up as errors).
    pub leaders: Vec<String>,
    pub topic: String,
    pub partitions: i32,
    /// Records per second for this producer; 0 = closed loop.
    pub rate: f64,
    pub workload: Workload,
    pub payloads: Arc<PayloadPool>,
    pub control: Arc<Control>,
    pub counters: Arc<Counters>,
}

pub struct ProducerOutcome {
    pub latency: Histogram<u64>,
}

/// Starts a producer; its thread ends when `control.stop` is set and every request is answered.
pub fn spawn(plan: ProducerPlan) -> JoinHandle<Result<ProducerOutcome, BenchError>> {
    let name = format!("producer-{}", plan.id);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let control = plan.control.clone();
            let out = Producer::new(plan).and_then(Producer::run);
            if out.is_err() {
                // One producer failing invalidates the run; stop the others promptly.
                control.stop.store(true, Ordering::Relaxed);
            }
            out
        })
        .unwrap_or_else(|e| crate::fatal(&format!("cannot start a producer thread: {e}")))
}

struct Batch {
    arena: BytesMut,
    /// (key, value range in arena, intended µs)
    records: Vec<(Option<Bytes>, usize, usize, u64)>,
    created: Instant,
}

/// What the reader needs to account for one request.
struct Pending {
    correlation_id: i32,
    version: i16,
    /// (partition, intended send times of its records, payload bytes)
    batches: Vec<(i32, Vec<u64>, u64)>,
}

struct Link {
    conn: Conn,
    pending: SyncSender<Pending>,
    reader: JoinHandle<Result<Histogram<u64>, BenchError>>,
}

/// The connections to one broker, used in turn.
struct LinkGroup {
    links: Vec<Link>,
    next: usize,
}

struct Producer {
    plan: ProducerPlan,
    /// One group per distinct leader.
    groups: Vec<LinkGroup>,
    /// Index into `groups` of each partition's leader.
    partition_group: Vec<usize>,
    /// Per partition, its batches oldest first: a full batch waits for an in-flight slot while
    /// new records start the next one, as in Kafka's accumulator (a batch never exceeds
    /// batch.size plus one record).
    batches: Vec<VecDeque<Batch>>,
    /// Where the next request starts taking partitions, so that with more ready batches than a
    /// request holds no partition starves (Kafka's drain index).
    drain_from: usize,
    buffered_bytes: usize,
    sticky: i32,
    keys: Keys,
    acks: i16,
    compression: Compression,
    topic: TopicName,
    generated: u64,
    payload_index: usize,
}

impl Producer {
    fn new(plan: ProducerPlan) -> Result<Producer, BenchError> {
        let w = &plan.workload;
        let acks = w.acks_value().map_err(BenchError::Usage)?;
        let compression = w.compression_value().map_err(BenchError::Usage)?;
        if plan.leaders.len() != plan.partitions as usize {
            return Err(BenchError::Usage(format!(
                "{} leaders for {} partitions",
                plan.leaders.len(),
                plan.partitions
            )));
        }
        let mut addrs: Vec<&String> = plan.leaders.iter().collect();
        addrs.sort();
        addrs.dedup();
        let partition_group = plan
            .leaders
            .iter()
            .map(|l| {
                addrs
                    .binary_search(&l)
                    .unwrap_or_else(|_| unreachable!("listed"))
            })
            .collect();
        let mut groups = Vec::new();
        for addr in addrs {
            let mut links = Vec::new();
            for _ in 0..w.connections_per_producer {
                let conn = Conn::connect(addr)?;
                let (tx, rx) = sync_channel(w.inflight_per_connection as usize);
                let reader = conn.reader()?;
                let control = plan.control.clone();
                let counters = plan.counters.clone();
                let reader = std::thread::Builder::new()
                    .name(format!("producer-{}-reader", plan.id))
                    .spawn(move || read_responses(reader, rx, control, counters))
                    .unwrap_or_else(|e| {
                        crate::fatal(&format!("cannot start a reader thread: {e}"))
                    });
                links.push(Link {
                    conn,
                    pending: tx,
                    reader,
                });
            }
            groups.push(LinkGroup { links, next: 0 });
        }
        Ok(Producer {
            keys: Keys::new(w.key_distributor, 0x5eed ^ u64::from(plan.id)),
            batches: (0..plan.partitions).map(|_| VecDeque::new()).collect(),
            drain_from: 0,
            // Spread producers over partitions from the start.
            sticky: (plan.id as i32 * 7) % plan.partitions,
            topic: TopicName(StrBytes::from_string(plan.topic.clone())),
            acks,
            compression,
            groups,
            partition_group,
            buffered_bytes: 0,
            generated: 0,
            payload_index: plan.id as usize,
            plan,
        })
    }

    fn run(mut self) -> Result<ProducerOutcome, BenchError> {
        let interval_us = if self.plan.rate > 0.0 {
            1e6 / self.plan.rate
        } else {
            0.0
        };
        let start = self.plan.control.start_us;
        let linger = Duration::from_millis(self.plan.workload.linger_ms);
        let closed_loop_fill = self.plan.workload.request_bytes_max as usize;
        let result = loop {
            if self.plan.control.stopped() {
                break self.flush_all();
            }
            let now = now_us();
            if interval_us > 0.0 {
                loop {
                    let due = start + (self.generated as f64 * interval_us) as u64;
                    if due > now || self.buffered_bytes >= BUFFER_BYTES_MAX {
                        break;
                    }
                    self.add_record(due);
                }
            } else if self.backlog_allows_more() {
                while self.buffered_bytes < closed_loop_fill {
                    self.add_record(now);
                }
            }
            match self.send_ready(linger, false) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => break Err(e),
            }
            // Nothing ready: wait for the next record's due time or the oldest batch's linger.
            let next_due = if interval_us > 0.0 {
                start + (self.generated as f64 * interval_us) as u64
            } else {
                u64::MAX
            };
            let linger_due = self
                .batches
                .iter()
                .filter_map(|q| q.front())
                .map(|b| b.created + linger)
                .min()
                .map(|t| now + t.saturating_duration_since(Instant::now()).as_micros() as u64)
                .unwrap_or(u64::MAX);
            // Never spin, even when the next record is due in microseconds: on a machine the
            // broker shares, a spinning load generator takes the CPU the broker needs (at a
            // fixed 260k records/s the cores had no idle time, and the broker's tail latency
            // was the scheduler's). Records due meanwhile are made on waking, each with its
            // intended time, so the delay counts in their latency.
            let wake = next_due.min(linger_due);
            let sleep_us = wake
                .saturating_sub(now_us())
                .clamp(SLEEP_MIN_US, SLEEP_MAX_US);
            std::thread::sleep(Duration::from_micros(sleep_us));
        };
        // Closing the channels tells the readers no more requests come; they drain and end.
        let mut latency = stats::histogram();
        let mut first_err = result.err();
        for link in self.groups.into_iter().flat_map(|g| g.links) {
            drop(link.pending);
            match link.reader.join() {
                Ok(Ok(h)) => {
                    latency
                        .add(&h)
                        .unwrap_or_else(|e| unreachable!("same bounds: {e}"));
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => crate::fatal("a producer reader thread panicked"),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(ProducerOutcome { latency }),
        }
    }

    /// Closed loop only: whether consumers are close enough behind to create more records.
    fn backlog_allows_more(&self) -> bool {
        let c = &self.plan.control;
        if c.subscriptions == 0 || !c.consume.load(Ordering::Relaxed) {
            return true;
        }
        let counters = &self.plan.counters;
        let created = Counters::get(&counters.generated_records);
        let consumed = Counters::get(&counters.consumed_records) / c.subscriptions;
        created.saturating_sub(consumed) < CLOSED_LOOP_BACKLOG_RECORDS_MAX
    }

    fn add_record(&mut self, intended_us: u64) {
        let w = &self.plan.workload;
        let key = self.keys.next_key();
        let partition = match (&key, w.key_distributor) {
            (Some(k), KeyDistributor::KeyRoundRobin | KeyDistributor::RandomNano) => {
                partition_for_key(k, self.plan.partitions)
            }
            _ => self.sticky,
        };
        let size = w.message_size as usize;
        let batch_bytes = w.batch_bytes as usize;
        let queue = &mut self.batches[partition as usize];
        if queue
            .back()
            .is_none_or(|b| b.arena.len() + size > batch_bytes)
        {
            queue.push_back(Batch {
                arena: BytesMut::with_capacity(batch_bytes.max(size)),
                records: Vec::new(),
                created: Instant::now(),
            });
        }
        let Some(batch) = queue.back_mut() else {
            unreachable!("a batch was just pushed");
        };
        let at = batch.arena.len();
        batch.arena.extend_from_slice(&intended_us.to_be_bytes());
        batch
            .arena
            .extend_from_slice(&self.plan.payloads.get(self.payload_index)[8..]);
        self.payload_index = self.payload_index.wrapping_add(1);
        batch.records.push((key, at, at + size, intended_us));
        self.buffered_bytes += size;
        self.generated += 1;
        Counters::add(&self.plan.counters.generated_records, 1);
        // Kafka's sticky partitioner moves on once the partition's batch is full.
        if w.key_distributor == KeyDistributor::NoKey && batch.arena.len() + size > batch_bytes {
            self.sticky = (self.sticky + 1) % self.plan.partitions;
        }
    }

    /// Sends one request with the batches that are full or lingered long enough (all of them
    /// when `all`). Returns whether it sent anything.
    fn send_ready(&mut self, linger: Duration, all: bool) -> Result<bool, BenchError> {
        let w = &self.plan.workload;
        let batch_bytes = w.batch_bytes as usize;
        let size = w.message_size as usize;
        let request_max = w.request_bytes_max as usize;
        let now = Instant::now();
        let mut taken = Vec::new();
        let mut request_bytes = 0;
        let n = self.batches.len();
        for i in 0..n {
            let p = (self.drain_from + i) % n;
            let queue = &mut self.batches[p];
            let ready = queue.front().is_some_and(|b| {
                all || queue.len() > 1
                    || b.arena.len() + size > batch_bytes
                    || now.duration_since(b.created) >= linger
            });
            if !ready {
                continue;
            }
            let len = queue.front().map_or(0, |b| b.arena.len());
            if !taken.is_empty() && request_bytes + len > request_max {
                break;
            }
            request_bytes += len;
            if let Some(b) = queue.pop_front() {
                taken.push((p as i32, b));
            }
        }
        if taken.is_empty() {
            return Ok(false);
        }
        self.drain_from = (self.drain_from + 1) % n;
        if taken
            .iter()
            .any(|(p, _)| *p == self.sticky && self.batches[*p as usize].is_empty())
        {
            self.sticky = (self.sticky + 1) % self.plan.partitions;
        }
        self.buffered_bytes -= taken
            .iter()
            .map(|(_, b)| b.records.len() * w.message_size as usize)
            .sum::<usize>();
        // One request per leader; with one broker that is the whole selection.
        let mut by_group: Vec<Vec<(i32, Batch)>> =
            (0..self.groups.len()).map(|_| Vec::new()).collect();
        for (p, b) in taken {
            by_group[self.partition_group[p as usize]].push((p, b));
        }
        for (g, batches) in by_group.into_iter().enumerate() {
            if !batches.is_empty() {
                self.send(g, batches)?;
            }
        }
        Ok(true)
    }

    fn send(&mut self, group: usize, taken: Vec<(i32, Batch)>) -> Result<(), BenchError> {
        let timestamp_ms = (now_us() / 1000) as i64;
        let options = RecordEncodeOptions {
            version: 2,
            compression: self.compression,
        };
        let mut partition_data = Vec::with_capacity(taken.len());
        let mut accounted = Vec::with_capacity(taken.len());
        for (p, batch) in taken {
            let arena = batch.arena.freeze();
            let records: Vec<Record> = batch
                .records
                .iter()
                .enumerate()
                .map(|(i, (key, from, to, _))| {
                    plain_record(
                        i as i64,
                        i as i32,
                        timestamp_ms,
                        key.clone(),
                        Some(arena.slice(*from..*to)),
                    )
                })
                .collect();
            let mut buf = BytesMut::with_capacity(arena.len() + 64 + records.len() * 16);
            RecordBatchEncoder::encode(&mut buf, &records, &options)
                .map_err(|e| BenchError::Protocol(format!("encoding a record batch: {e}")))?;
            partition_data.push(
                PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(buf.freeze())),
            );
            let intended: Vec<u64> = batch.records.iter().map(|r| r.3).collect();
            accounted.push((p, intended, arena.len() as u64));
        }
        let req = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(self.topic.clone())
                .with_partition_data(partition_data)]);
        let group = &mut self.groups[group];
        let n = group.links.len();
        let link = &mut group.links[group.next];
        group.next = (group.next + 1) % n;
        let version = link.conn.version_for(wire::api_key::<ProduceRequest>())?;
        if self.acks == 0 {
            // No response will come: count the records as published once written.
            link.conn.send_version(&req, version)?;
            for (_, intended, bytes) in &accounted {
                Counters::add(&self.plan.counters.published_records, intended.len() as u64);
                Counters::add(&self.plan.counters.published_bytes, *bytes);
            }
            return Ok(());
        }
        // Reserve the in-flight slot first: this blocks while the connection is at its bound.
        // The correlation id is the connection's next one, which send_version then uses.
        let correlation_id = link.conn.next_correlation_id();
        link.pending
            .send(Pending {
                correlation_id,
                version,
                batches: accounted,
            })
            .map_err(|_| {
                BenchError::Protocol(format!("{}: response reader ended", link.conn.addr))
            })?;
        let sent = link.conn.send_version(&req, version)?;
        assert_eq!(sent, correlation_id, "correlation ids out of step");
        Ok(())
    }

    fn flush_all(&mut self) -> Result<(), BenchError> {
        while self.send_ready(Duration::ZERO, true)? {}
        Ok(())
    }
}

fn read_responses(
    mut reader: wire::FrameReader,
    pending: Receiver<Pending>,
    control: Arc<Control>,
    counters: Arc<Counters>,
) -> Result<Histogram<u64>, BenchError> {
    let mut latency = stats::histogram();
    while let Ok(p) = pending.recv() {
        let frame = reader.read()?;
        let acked_us = now_us();
        let resp = wire::decode_response::<ProduceRequest>(frame, p.version, p.correlation_id)?;
        for (partition, intended, bytes) in &p.batches {
            let code = resp
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|r| r.index == *partition)
                .map(|r| {
                    (
                        r.error_code,
                        r.error_message.as_ref().map(|m| m.to_string()),
                    )
                });
            match code {
                Some((0, _)) => {
                    Counters::add(&counters.published_records, intended.len() as u64);
                    Counters::add(&counters.published_bytes, *bytes);
                    let (mut sum, mut max) = (0, 0);
                    for &t in intended {
                        let us = acked_us.saturating_sub(t);
                        sum += us;
                        max = max.max(us);
                        if control.measuring(t) {
                            stats::record(&mut latency, us, 1);
                        }
                    }
                    Counters::add(&counters.latency_sum_us, sum);
                    Counters::add(&counters.latency_count, intended.len() as u64);
                    counters.latency_max_us.fetch_max(max, Ordering::Relaxed);
                    counters
                        .interval_latency_max_us
                        .fetch_max(max, Ordering::Relaxed);
                }
                other => {
                    Counters::add(&counters.errors, 1);
                    eprintln!(
                        "spool-bench: produce to partition {partition} via {} failed: {:?}",
                        reader.addr, other
                    );
                }
            }
        }
    }
    Ok(latency)
}
