//! `spool produce`: stdin lines → records → magic-2 batches → Produce to partition leaders.
//!
//! A reader thread feeds lines through a bounded channel so the main loop can flush a partly full
//! batch when stdin goes quiet (`LINGER_MS`), which keeps interactive use responsive while piped
//! input is sent in full batches. Partitioning matches Kafka's default partitioner for keyed
//! records (murmur2) and round-robins null keys. Retriable errors are retried a bounded number of
//! times without idempotence, so a retry after a lost response may duplicate a batch (at least
//! once, like a non-idempotent Kafka producer).

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

use super::client::{topic_name, Client, TopicInfo};
use super::error::{is_retriable, CliError};
use super::{parse_key_value, Bootstrap, ProduceArgs};
use spool_protocol::murmur2::partition_for_key;
use spool_protocol::record::plain_record;

/// Records per batch before it is sent.
pub const BATCH_RECORDS_MAX: usize = 1000;
/// Uncompressed key+value bytes per batch before it is sent.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Longest stdin line accepted as one record (Kafka's default `max.message.bytes` is ~1 MiB).
pub const RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Lines buffered between the stdin reader and the sender.
const LINES_QUEUED_MAX: usize = 10_000;
/// How long a partly full batch waits for more input before it is sent.
const LINGER_MS: u64 = 100;
/// Attempts per batch for retriable errors (leader moved, topic not ready yet, ...).
const PRODUCE_ATTEMPTS_MAX: u32 = 10;
const PRODUCE_RETRY_BACKOFF_MS: u64 = 200;
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

pub fn run(args: ProduceArgs) -> Result<(), CliError> {
    let Bootstrap { bootstrap_server } = &args.conn;
    let compression = parse_compression(&args.compression)?;
    let headers = args
        .header
        .iter()
        .map(|h| parse_key_value("--header", h).map(|(k, v)| (k.to_string(), v.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut client = Client::connect(bootstrap_server)?;
    let info = client.topic_info(&args.topic)?;
    if let Some(p) = args.partition {
        if !info.leaders.iter().any(|(i, _)| *i == p) {
            return Err(CliError::UnknownPartition {
                topic: args.topic.clone(),
                partition: p,
            });
        }
    }
    let mut producer = Producer {
        client,
        info,
        acks: args.acks,
        compression,
        headers,
        pending: BTreeMap::new(),
        pending_records: 0,
        pending_bytes: 0,
        round_robin: 0,
        records: 0,
        bytes: 0,
    };
    let started = Instant::now();
    let lines = spawn_stdin_reader();
    loop {
        match lines.recv_timeout(Duration::from_millis(LINGER_MS)) {
            Ok(Ok(line)) => {
                let (key, value) = split_line(line, args.key_separator.as_deref());
                producer.add(args.partition, key, value)?;
                if producer.pending_records >= BATCH_RECORDS_MAX
                    || producer.pending_bytes >= BATCH_BYTES_MAX
                {
                    producer.flush()?;
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(RecvTimeoutError::Timeout) => producer.flush()?,
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    producer.flush()?;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} records ({} bytes) to {} in {:.3} s ({:.0} records/s, {:.2} MiB/s)",
        producer.records,
        producer.bytes,
        args.topic,
        elapsed,
        producer.records as f64 / elapsed.max(1e-9),
        producer.bytes as f64 / elapsed.max(1e-9) / (1024.0 * 1024.0)
    );
    Ok(())
}

struct Producer {
    client: Client,
    info: TopicInfo,
    acks: i16,
    compression: Compression,
    headers: Vec<(String, String)>,
    /// partition → records not yet sent.
    pending: BTreeMap<i32, Vec<Record>>,
    pending_records: usize,
    pending_bytes: usize,
    round_robin: usize,
    records: u64,
    bytes: u64,
}

impl Producer {
    fn add(
        &mut self,
        partition: Option<i32>,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Result<(), CliError> {
        let count = i32::try_from(self.info.leaders.len()).unwrap_or(i32::MAX);
        let partition = match (partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, count),
            (None, None) => {
                self.round_robin = self.round_robin.wrapping_add(1);
                self.info.leaders[self.round_robin % self.info.leaders.len()].0
            }
        };
        let size = key.as_ref().map_or(0, Bytes::len) + value.len();
        let mut headers = IndexMap::new();
        for (k, v) in &self.headers {
            headers.insert(
                StrBytes::from_string(k.clone()),
                Some(Bytes::from(v.clone())),
            );
        }
        let batch = self.pending.entry(partition).or_default();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // Offsets are relative within the batch; the broker assigns the real ones.
        let delta = batch.len();
        batch.push(Record {
            headers,
            ..plain_record(delta as i64, delta as i32, timestamp, key, Some(value))
        });
        self.pending_records += 1;
        self.pending_bytes += size;
        Ok(())
    }

    /// Sends every pending batch, one Produce request per leader.
    fn flush(&mut self) -> Result<(), CliError> {
        if self.pending_records == 0 {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut by_leader: BTreeMap<i32, Vec<(i32, BytesMut, usize, usize)>> = BTreeMap::new();
        for (partition, records) in pending {
            let leader = self.leader_of(partition)?;
            let bytes: usize = records
                .iter()
                .map(|r| {
                    r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len)
                })
                .sum();
            let mut buf = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression: self.compression,
            };
            RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| {
                CliError::Encode {
                    api: kafka_protocol::messages::ApiKey::Produce,
                    version: -1,
                    reason: format!("record batch: {e}"),
                }
            })?;
            by_leader
                .entry(leader)
                .or_default()
                .push((partition, buf, records.len(), bytes));
        }
        for (leader, batches) in by_leader {
            self.send_with_retries(leader, batches)?;
        }
        self.pending_records = 0;
        self.pending_bytes = 0;
        Ok(())
    }

    fn leader_of(&self, partition: i32) -> Result<i32, CliError> {
        self.info
            .leaders
            .iter()
            .find(|(p, _)| *p == partition)
            .map(|(_, l)| *l)
            .ok_or_else(|| CliError::UnknownPartition {
                topic: self.info.name.clone(),
                partition,
            })
    }

    fn send_with_retries(
        &mut self,
        mut leader: i32,
        mut batches: Vec<(i32, BytesMut, usize, usize)>,
    ) -> Result<(), CliError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failed = self.send_once(leader, &batches)?;
            let (retriable, fatal): (Vec<_>, Vec<_>) = failed
                .into_iter()
                .partition(|(_, code, _)| is_retriable(*code));
            if let Some((partition, code, message)) = fatal.into_iter().next() {
                let context = format!("cannot produce to {}-{partition}", self.info.name);
                return Err(CliError::kafka(context, code, message.as_deref()));
            }
            // Count what succeeded; keep only the partitions to retry.
            let retry: Vec<i32> = retriable.iter().map(|(p, _, _)| *p).collect();
            for (p, _, n, b) in &batches {
                if !retry.contains(p) {
                    self.records += *n as u64;
                    self.bytes += *b as u64;
                }
            }
            if let Some((partition, code, message)) = retriable.into_iter().next() {
                if attempt >= PRODUCE_ATTEMPTS_MAX {
                    let context = format!(
                        "cannot produce to {}-{partition} after {attempt} attempts",
                        self.info.name
                    );
                    return Err(CliError::kafka(context, code, message.as_deref()));
                }
                batches.retain(|(p, ..)| retry.contains(p));
                std::thread::sleep(Duration::from_millis(PRODUCE_RETRY_BACKOFF_MS));
                self.client.forget(leader);
                self.info = self.client.topic_info(&self.info.name)?;
                // Batches for one request must share a leader; after a move, they still do on a
                // single node, and a multi-node split is handled by sending to the first's leader.
                leader = self.leader_of(batches[0].0)?;
                continue;
            }
            return Ok(());
        }
    }

    /// One Produce request; returns the partitions that failed with their error.
    fn send_once(
        &mut self,
        leader: i32,
        batches: &[(i32, BytesMut, usize, usize)],
    ) -> Result<Vec<(i32, i16, Option<String>)>, CliError> {
        let partitions = batches
            .iter()
            .map(|(p, buf, ..)| {
                PartitionProduceData::default()
                    .with_index(*p)
                    .with_records(Some(buf.clone().freeze()))
            })
            .collect();
        let topic = TopicProduceData::default()
            .with_name(topic_name(&self.info.name))
            .with_partition_data(partitions);
        let req = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![topic]);
        let conn = self.client.node(leader)?;
        if self.acks == 0 {
            conn.send_oneway(&req)?;
            return Ok(Vec::new());
        }
        let (resp, _) = conn.send(&req)?;
        let mut failed = Vec::new();
        let mut answered = 0;
        for t in resp
            .responses
            .iter()
            .filter(|t| t.name.as_str() == self.info.name)
        {
            for p in &t.partition_responses {
                answered += 1;
                if p.error_code != 0 {
                    failed.push((p.index, p.error_code, produce_error_message(p)));
                }
            }
        }
        if answered != batches.len() {
            let reason = format!("{answered} partition results for {} batches", batches.len());
            return Err(CliError::Decode {
                api: kafka_protocol::messages::ApiKey::Produce,
                version: -1,
                addr: conn.addr().to_string(),
                reason,
            });
        }
        Ok(failed)
    }
}

/// The broker's explanation of a failed partition. Kafka explains INVALID_RECORD per record in
/// `record_errors` rather than in `error_message`.
fn produce_error_message(p: &PartitionProduceResponse) -> Option<String> {
    let mut parts: Vec<String> = p
        .error_message
        .iter()
        .map(|m| m.as_str().to_string())
        .collect();
    for r in &p.record_errors {
        let why = r
            .batch_index_error_message
            .as_ref()
            .map_or("", |m| m.as_str());
        parts.push(format!("record {}: {why}", r.batch_index));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Reads stdin lines (without their `\n` or `\r\n`) on a thread; the channel closes at EOF.
fn spawn_stdin_reader() -> Receiver<Result<Vec<u8>, CliError>> {
    let (tx, rx) = sync_channel(LINES_QUEUED_MAX);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut line = Vec::new();
            // `take` bounds the allocation of one line even if the input has no newline.
            let limit = (RECORD_BYTES_MAX + 2) as u64;
            match (&mut input).take(limit).read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    let complete = line.last() == Some(&b'\n');
                    if complete {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    let item = if line.len() > RECORD_BYTES_MAX {
                        Err(CliError::RecordTooLarge {
                            size: line.len(),
                            max: RECORD_BYTES_MAX,
                        })
                    } else {
                        Ok(line)
                    };
                    let stop = item.is_err();
                    if tx.send(item).is_err() || stop {
                        return;
                    }
                }
                Err(source) => {
                    let _ = tx.send(Err(CliError::Local {
                        what: "cannot read stdin",
                        source,
                    }));
                    return;
                }
            }
        }
    });
    rx
}

/// Splits `key SEP value` at the first separator; lines without it have a null key.
pub fn split_line(line: Vec<u8>, separator: Option<&str>) -> (Option<Bytes>, Bytes) {
    let line = Bytes::from(line);
    let Some(sep) = separator.map(str::as_bytes).filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(at) => (Some(line.slice(..at)), line.slice(at + sep.len()..)),
        None => (None, line),
    }
}

pub fn parse_compression(name: &str) -> Result<Compression, CliError> {
    match name {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(CliError::InvalidArgument {
            flag: "--compression",
            value: name.to_string(),
            reason: "expected none, gzip, snappy, lz4 or zstd",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn splits_keys_at_the_first_separator() {
        let cases: &[(&str, Option<&str>, Option<&str>, &str)] = &[
            ("k:v", Some(":"), Some("k"), "v"),
            ("k:v:w", Some(":"), Some("k"), "v:w"),
            ("no-sep", Some(":"), None, "no-sep"),
            (":v", Some(":"), Some(""), "v"),
            ("k::v", Some("::"), Some("k"), "v"),
            ("k:v", None, None, "k:v"),
        ];
        for (line, sep, key, value) in cases {
            let (k, v) = split_line(line.as_bytes().to_vec(), *sep);
            assert_eq!(k.as_deref(), key.map(str::as_bytes), "{line}");
            assert_eq!(&v[..], value.as_bytes(), "{line}");
        }
    }

    #[test]
    fn batches_round_trip_under_every_codec() {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let compression = parse_compression(codec).expect("codec");
            let records: Vec<Record> = (0..3)
                .map(|i| {
                    plain_record(
                        i,
                        i as i32,
                        1_700_000_000_000,
                        (i == 1).then(|| Bytes::from_static(b"k")),
                        Some(Bytes::from(format!("value-{i}"))),
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
            assert_eq!(buf[16], 2, "magic");
            let base_sequence = (&buf[53..57]).get_i32();
            assert_eq!(
                base_sequence, -1,
                "non-idempotent batches carry NO_SEQUENCE"
            );
            let set = RecordBatchDecoder::decode(&mut buf.freeze()).expect("decode");
            assert_eq!(set.compression, compression);
            let values: Vec<_> = set
                .records
                .iter()
                .map(|r| r.value.clone().expect("value"))
                .collect();
            assert_eq!(
                values,
                vec![
                    Bytes::from("value-0"),
                    Bytes::from("value-1"),
                    Bytes::from("value-2")
                ]
            );
        }
        assert!(parse_compression("brotli").is_err());
    }
}
