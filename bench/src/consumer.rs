//! A fetching consumer for load generation.
//!
//! Each subscription reads every partition of its topic from offset 0; its consumers split the
//! partitions between them (a static assignment, as a group's range assignor would produce, so a
//! rebalance never disturbs the measurement). In a cluster a consumer's partitions are fetched
//! from their leaders by one thread per leader (Kafka's consumer sends one fetch per broker). Fetches are Kafka's consumer defaults: full fetch
//! requests (no sessions), fetch.min.bytes 1, fetch.max.wait.ms, max.bytes and
//! max.partition.fetch.bytes from the workload.
//!
//! End-to-end latency is now minus the send time the producer wrote into each payload.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use spool_protocol::batch::{batches, BatchHeader, HEADER_BYTES};

use crate::error::BenchError;
use crate::payload::{now_us, read_timestamp};
use crate::producer::Control;
use crate::stats::{self, Counters};
use crate::wire::Conn;
use crate::workload::Workload;

/// How long a paused consumer (building a backlog) sleeps between checks.
const PAUSED_POLL_MS: u64 = 10;
/// Kafka errors worth retrying without failing the run (the topic may be seconds old).
const RETRIABLE: [i16; 4] = [3, 5, 6, 13];
/// Consecutive failed fetches before the consumer gives up.
const FETCH_FAILURES_MAX: u32 = 100;

pub struct ConsumerPlan {
    pub id: u32,
    /// The broker to fetch from: the leader of every partition in `partitions`.
    pub bootstrap: String,
    pub topic: String,
    pub partitions: Vec<i32>,
    pub workload: Workload,
    pub control: Arc<Control>,
    pub counters: Arc<Counters>,
}

pub struct ConsumerOutcome {
    pub end_to_end: Histogram<u64>,
}

pub fn spawn(plan: ConsumerPlan) -> JoinHandle<Result<ConsumerOutcome, BenchError>> {
    std::thread::Builder::new()
        .name(format!("consumer-{}", plan.id))
        .spawn(move || {
            let control = plan.control.clone();
            let out = run(plan);
            if out.is_err() {
                control.stop.store(true, Ordering::Relaxed);
            }
            out
        })
        .unwrap_or_else(|e| crate::fatal(&format!("cannot start a consumer thread: {e}")))
}

fn run(plan: ConsumerPlan) -> Result<ConsumerOutcome, BenchError> {
    let mut conn = Conn::connect(&plan.bootstrap)?;
    let mut e2e = stats::histogram();
    let mut offsets: Vec<i64> = vec![0; plan.partitions.len()];
    let topic = TopicName(StrBytes::from_string(plan.topic.clone()));
    let w = &plan.workload;
    let mut failures = 0;
    while !plan.control.stopped() {
        if !plan.control.consume.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(PAUSED_POLL_MS));
            continue;
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(w.fetch_max_wait_ms as i32)
            .with_min_bytes(1)
            .with_max_bytes(w.fetch_max_bytes as i32)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(
                    plan.partitions
                        .iter()
                        .zip(&offsets)
                        .map(|(&p, &o)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(o)
                                .with_current_leader_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(w.fetch_partition_max_bytes as i32)
                        })
                        .collect(),
                )]);
        let resp = conn.call(&req)?;
        let mut failed = resp.error_code != 0;
        for t in &resp.responses {
            for pr in &t.partitions {
                let Some(i) = plan
                    .partitions
                    .iter()
                    .position(|&p| p == pr.partition_index)
                else {
                    continue;
                };
                if pr.error_code != 0 {
                    if !RETRIABLE.contains(&pr.error_code) {
                        return Err(BenchError::Kafka {
                            what: format!("fetch {}-{}", plan.topic, pr.partition_index),
                            code: pr.error_code,
                            message: None,
                        });
                    }
                    failed = true;
                    continue;
                }
                if let Some(records) = &pr.records {
                    offsets[i] = consume_records(
                        records.clone(),
                        offsets[i],
                        &plan.control,
                        &plan.counters,
                        &mut e2e,
                    )?;
                }
            }
        }
        if failed {
            failures += 1;
            Counters::add(&plan.counters.errors, 1);
            if failures >= FETCH_FAILURES_MAX {
                return Err(BenchError::Kafka {
                    what: format!("fetch {}: {failures} failed fetches in a row", plan.topic),
                    code: resp.error_code,
                    message: None,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        } else {
            failures = 0;
        }
    }
    Ok(ConsumerOutcome { end_to_end: e2e })
}

/// Counts the records at or after `from` in a fetched record set and returns the next offset to
/// fetch. A broker may end the set with a partial batch (it cuts at the byte limit); that and
/// anything after it is fetched again next time.
fn consume_records(
    records: Bytes,
    from: i64,
    control: &Control,
    counters: &Counters,
    e2e: &mut Histogram<u64>,
) -> Result<i64, BenchError> {
    let mut next = from;
    let mut count = 0u64;
    let mut bytes = 0u64;
    let now = now_us();
    for batch in batches(records) {
        let Ok((_, batch)) = batch else {
            break;
        };
        let header = BatchHeader::parse(&batch)
            .map_err(|e| BenchError::Protocol(format!("fetched batch: {e}")))?;
        next = next.max(header.last_offset() + 1);
        if header.is_control() {
            continue;
        }
        let mut on_value = |offset: i64, value: &[u8]| {
            if offset < from {
                return;
            }
            count += 1;
            bytes += value.len() as u64;
            if let Some(sent) = read_timestamp(value) {
                if control.measuring(sent) {
                    stats::record(e2e, now.saturating_sub(sent), 1);
                }
            }
        };
        if header.compression() == 0 {
            walk_uncompressed(&batch, header.base_offset, &mut on_value)?;
        } else {
            let mut buf = batch.clone();
            let set = RecordBatchDecoder::decode(&mut buf)
                .map_err(|e| BenchError::Protocol(format!("decoding a fetched batch: {e}")))?;
            for r in &set.records {
                on_value(r.offset, r.value.as_deref().unwrap_or(&[]));
            }
        }
    }
    Counters::add(&counters.consumed_records, count);
    Counters::add(&counters.consumed_bytes, bytes);
    Ok(next)
}

/// Walks the records of an uncompressed v2 batch without materializing them: the consumer only
/// needs each value's first 8 bytes, and decoding a million records a second into structs would
/// spend the CPU the broker under test needs.
fn walk_uncompressed(
    batch: &[u8],
    base_offset: i64,
    on_value: &mut impl FnMut(i64, &[u8]),
) -> Result<(), BenchError> {
    let bad = |what: &str| BenchError::Protocol(format!("fetched batch at {base_offset}: {what}"));
    let mut pos = HEADER_BYTES;
    while pos < batch.len() {
        let (len, n) = varint(&batch[pos..]).ok_or_else(|| bad("record length"))?;
        pos += n;
        let len = usize::try_from(len).map_err(|_| bad("negative record length"))?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= batch.len())
            .ok_or_else(|| bad("record past batch end"))?;
        let rec = &batch[pos..end];
        let mut at = 1; // attributes
        let (_, n) = varint(&rec[at.min(rec.len())..]).ok_or_else(|| bad("timestamp delta"))?;
        at += n;
        let (offset_delta, n) =
            varint(&rec[at.min(rec.len())..]).ok_or_else(|| bad("offset delta"))?;
        at += n;
        let (key_len, n) = varint(&rec[at.min(rec.len())..]).ok_or_else(|| bad("key length"))?;
        at += n;
        if key_len > 0 {
            at += key_len as usize;
        }
        let (value_len, n) =
            varint(&rec[at.min(rec.len())..]).ok_or_else(|| bad("value length"))?;
        at += n;
        let value = if value_len > 0 {
            rec.get(at..at + value_len as usize)
                .ok_or_else(|| bad("value past record end"))?
        } else {
            &[]
        };
        on_value(base_offset + offset_delta, value);
        pos = end;
    }
    Ok(())
}

/// A zig-zag varint (Kafka's record fields); returns the value and the bytes it used.
fn varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
    use spool_protocol::record::plain_record;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    fn batch(base: i64, values: &[u64], compression: Compression) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                plain_record(
                    base + i as i64,
                    i as i32,
                    0,
                    (i % 2 == 0).then(|| Bytes::from_static(b"key")),
                    Some(Bytes::from(
                        [v.to_be_bytes().to_vec(), vec![7; 100]].concat(),
                    )),
                )
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    #[test]
    fn counts_records_from_the_fetch_offset_and_stops_at_a_partial_batch() {
        let control = Control {
            stop: AtomicBool::new(false),
            measure_from_us: AtomicU64::new(0),
            consume: AtomicBool::new(true),
            start_us: 0,
            subscriptions: 1,
        };
        let counters = Counters::default();
        let mut h = stats::histogram();
        let sent = now_us() - 5_000;
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let a = batch(10, &[sent; 5], compression);
            let b = batch(15, &[sent; 3], compression);
            let mut set = BytesMut::new();
            set.extend_from_slice(&a);
            set.extend_from_slice(&b);
            set.extend_from_slice(&b[..b.len() / 2]); // partial third batch
            let before = Counters::get(&counters.consumed_records);
            let next =
                consume_records(set.freeze(), 12, &control, &counters, &mut h).expect("consume");
            assert_eq!(next, 18);
            assert_eq!(
                Counters::get(&counters.consumed_records) - before,
                6,
                "{compression:?}"
            );
        }
        assert_eq!(h.len(), 18);
        assert!(h.value_at_quantile(0.5) >= 5_000);
    }

    #[test]
    fn varints_decode_as_kafka_encodes_them() {
        assert_eq!(varint(&[0x00]), Some((0, 1)));
        assert_eq!(varint(&[0x01]), Some((-1, 1)));
        assert_eq!(varint(&[0x02]), Some((1, 1)));
        assert_eq!(varint(&[0xac, 0x02]), Some((150, 2)));
        assert_eq!(varint(&[0x80]), None);
        assert_eq!(varint(&[]), None);
    }
}
