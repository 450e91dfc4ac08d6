//! `spool consume`: manual partition assignment, ListOffsets for the start, then a Fetch loop.
//!
//! No consumer group and no committed offsets: positions live only in this process. A fetch
//! response may end in a partial batch (the broker cuts at `partition_max_bytes`); it is skipped
//! and fetched again from its base offset next round. Control batches (transaction markers) are
//! skipped but still advance the position. Records below the fetch offset, which a broker returns
//! when the offset falls inside a compressed batch, are dropped.

use std::collections::BTreeMap;
use std::io::{BufWriter, ErrorKind, Write};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest};
use kafka_protocol::records::RecordBatchDecoder;

use super::client::{topic_name, Client, TopicInfo};
use super::error::{is_retriable, CliError};
use super::topic::stdout_err;
use super::{Bootstrap, ConsumeArgs};

/// Bytes one Fetch response may carry in total, and per partition.
pub const FETCH_BYTES_MAX: i32 = 8 * 1024 * 1024;
pub const FETCH_PARTITION_BYTES_MAX: i32 = 1024 * 1024;
/// Longest the broker may hold a Fetch waiting for data.
const FETCH_WAIT_MS_MAX: u64 = 500;
/// Consecutive retriable fetch failures tolerated before giving up.
const FETCH_ERRORS_MAX: u32 = 20;
const FETCH_RETRY_BACKOFF_MS: u64 = 200;
/// Record-batch header layout (magic 2): where the fields the consumer reads live.
const BATCH_HEADER_BYTES: usize = 61;
const BATCH_LENGTH_OFFSET: usize = 8;
const BATCH_MAGIC_OFFSET: usize = 16;
const BATCH_LAST_OFFSET_DELTA_OFFSET: usize = 23;
/// ListOffsets timestamps meaning "log start" and "log end".
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;

pub fn run(args: ConsumeArgs) -> Result<(), CliError> {
    let Bootstrap { bootstrap_server } = &args.conn;
    let start = parse_start(&args.offset)?;
    let mut client = Client::connect(bootstrap_server)?;
    let info = client.topic_info(&args.topic)?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if info.leaders.iter().any(|(i, _)| *i == p) => vec![p],
        Some(p) => {
            return Err(CliError::UnknownPartition {
                topic: args.topic.clone(),
                partition: p,
            })
        }
        None => info.leaders.iter().map(|(p, _)| *p).collect(),
    };
    let positions = start_positions(&mut client, &info, &partitions, start)?;
    let mut consumer = Consumer {
        client,
        info,
        positions,
        out: BufWriter::new(std::io::stdout()),
        print_key: args.print_key,
        print_offset: args.print_offset,
        printed: 0,
    };
    match consumer.run(args.count, args.timeout_ms) {
        // A closed pipe (`| head`) is a normal way for a consumer to end.
        Err(CliError::Local { source, .. }) if source.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Start {
    Earliest,
    Latest,
    Offset(i64),
}

pub fn parse_start(s: &str) -> Result<Start, CliError> {
    match s {
        "earliest" | "beginning" => Ok(Start::Earliest),
        "latest" | "end" => Ok(Start::Latest),
        _ => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Start::Offset(n)),
            _ => Err(CliError::InvalidArgument {
                flag: "--offset",
                value: s.to_string(),
                reason: "expected earliest, latest or a non-negative offset",
            }),
        },
    }
}

fn start_positions(
    client: &mut Client,
    info: &TopicInfo,
    partitions: &[i32],
    start: Start,
) -> Result<BTreeMap<i32, i64>, CliError> {
    let timestamp = match start {
        Start::Offset(n) => return Ok(partitions.iter().map(|p| (*p, n)).collect()),
        Start::Earliest => EARLIEST_TIMESTAMP,
        Start::Latest => LATEST_TIMESTAMP,
    };
    let mut positions = BTreeMap::new();
    for (leader, group) in by_leader(info, partitions) {
        let topic = ListOffsetsTopic::default()
            .with_name(topic_name(&info.name))
            .with_partitions(
                group
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            );
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![topic]);
        let (resp, _) = client.node(leader)?.send(&req)?;
        for p in resp
            .topics
            .iter()
            .filter(|t| t.name.as_str() == info.name)
            .flat_map(|t| t.partitions.iter())
        {
            if p.error_code != 0 {
                let context = format!("ListOffsets {}-{}", info.name, p.partition_index);
                return Err(CliError::kafka(context, p.error_code, None));
            }
            positions.insert(p.partition_index, p.offset);
        }
    }
    if let Some(missing) = partitions.iter().find(|p| !positions.contains_key(p)) {
        return Err(CliError::UnknownPartition {
            topic: info.name.clone(),
            partition: *missing,
        });
    }
    Ok(positions)
}

/// Partitions grouped by their leader's node id.
fn by_leader(info: &TopicInfo, partitions: &[i32]) -> BTreeMap<i32, Vec<i32>> {
    let mut groups: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (p, leader) in info.leaders.iter().filter(|(p, _)| partitions.contains(p)) {
        groups.entry(*leader).or_default().push(*p);
    }
    groups
}

struct Consumer {
    client: Client,
    info: TopicInfo,
    /// partition → next offset to fetch.
    positions: BTreeMap<i32, i64>,
    out: BufWriter<std::io::Stdout>,
    print_key: bool,
    print_offset: bool,
    printed: u64,
}

impl Consumer {
    fn run(&mut self, count: Option<u64>, timeout_ms: Option<u64>) -> Result<(), CliError> {
        let wait_ms = timeout_ms.map_or(FETCH_WAIT_MS_MAX, |t| t.clamp(1, FETCH_WAIT_MS_MAX));
        let mut last_record = Instant::now();
        let mut errors = 0;
        loop {
            if count.is_some_and(|c| self.printed >= c) {
                return self.out.flush().map_err(stdout_err);
            }
            if timeout_ms.is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t)) {
                return self.out.flush().map_err(stdout_err);
            }
            let before = self.printed;
            let partitions: Vec<i32> = self.positions.keys().copied().collect();
            for (leader, group) in by_leader(&self.info, &partitions) {
                match self.fetch(leader, &group, wait_ms, count) {
                    Ok(()) => errors = 0,
                    Err(FetchError::Fatal(e)) => return Err(e),
                    Err(FetchError::Retry { code, partition }) => {
                        errors += 1;
                        if errors >= FETCH_ERRORS_MAX {
                            let context = format!(
                                "Fetch {}-{partition} after {errors} attempts",
                                self.info.name
                            );
                            return Err(CliError::kafka(context, code, None));
                        }
                        std::thread::sleep(Duration::from_millis(FETCH_RETRY_BACKOFF_MS));
                        self.client.forget(leader);
                        self.info = self.client.topic_info(&self.info.name)?;
                    }
                }
                if count.is_some_and(|c| self.printed >= c) {
                    break;
                }
            }
            self.out.flush().map_err(stdout_err)?;
            if self.printed > before {
                last_record = Instant::now();
            }
        }
    }

    /// One Fetch to one leader; prints what it returns and advances positions.
    fn fetch(
        &mut self,
        leader: i32,
        partitions: &[i32],
        wait_ms: u64,
        count: Option<u64>,
    ) -> Result<(), FetchError> {
        let topic = FetchTopic::default()
            .with_topic(topic_name(&self.info.name))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(self.positions[p])
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX)
                    })
                    .collect(),
            );
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(i32::try_from(wait_ms).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_isolation_level(0)
            .with_session_id(0)
            // Epoch -1 with session 0: a full, sessionless fetch every time.
            .with_session_epoch(-1)
            .with_topics(vec![topic]);
        let (resp, _) = self.client.node(leader)?.send(&req)?;
        if resp.error_code != 0 {
            return Err(FetchError::kafka(
                &self.info.name,
                partitions[0],
                resp.error_code,
            ));
        }
        let name = self.info.name.clone();
        for t in resp.responses.iter().filter(|t| t.topic.as_str() == name) {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(FetchError::kafka(&name, p.partition_index, p.error_code));
                }
                let Some(records) = &p.records else { continue };
                self.print_batches(p.partition_index, records.clone(), count)?;
            }
        }
        Ok(())
    }

    fn print_batches(
        &mut self,
        partition: i32,
        mut data: Bytes,
        count: Option<u64>,
    ) -> Result<(), CliError> {
        let topic = &self.info.name;
        let Some(position) = self.positions.get_mut(&partition) else {
            return Ok(());
        };
        while let Some(batch) = next_batch(&mut data) {
            let base_offset = (&batch[..8]).get_i64();
            let magic = batch[BATCH_MAGIC_OFFSET] as i8;
            if magic != 2 {
                return Err(CliError::OldMessageFormat {
                    topic: topic.clone(),
                    partition,
                    magic,
                });
            }
            let last_delta = (&batch
                [BATCH_LAST_OFFSET_DELTA_OFFSET..BATCH_LAST_OFFSET_DELTA_OFFSET + 4])
                .get_i32();
            let set = RecordBatchDecoder::decode(&mut batch.clone()).map_err(|e| {
                CliError::CorruptBatch {
                    topic: topic.clone(),
                    partition,
                    offset: base_offset,
                    reason: e.to_string(),
                }
            })?;
            for record in &set.records {
                if record.control || record.offset < *position {
                    continue;
                }
                if count.is_some_and(|c| self.printed >= c) {
                    return Ok(());
                }
                write_record(
                    &mut self.out,
                    partition,
                    record,
                    self.print_key,
                    self.print_offset,
                )
                .map_err(stdout_err)?;
                self.printed += 1;
                *position = record.offset + 1;
            }
            *position = (*position).max(base_offset + i64::from(last_delta) + 1);
        }
        Ok(())
    }
}

/// Splits the next complete batch off `data`; `None` at the end or at a trailing partial batch.
pub fn next_batch(data: &mut Bytes) -> Option<Bytes> {
    if data.len() < BATCH_HEADER_BYTES {
        return None;
    }
    let length = (&data[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]).get_i32();
    // batchLength counts the bytes after itself; anything shorter than a header is garbage, so
    // stop rather than loop on it.
    let total = usize::try_from(length)
        .ok()?
        .checked_add(BATCH_LENGTH_OFFSET + 4)?;
    if total < BATCH_HEADER_BYTES || total > data.len() {
        return None;
    }
    Some(data.split_to(total))
}

fn write_record(
    out: &mut dyn Write,
    partition: i32,
    record: &kafka_protocol::records::Record,
    print_key: bool,
    print_offset: bool,
) -> std::io::Result<()> {
    if print_offset {
        write!(out, "{partition}:{}\t", record.offset)?;
    }
    if print_key {
        match &record.key {
            Some(k) => out.write_all(k)?,
            None => out.write_all(b"null")?,
        }
        out.write_all(b"\t")?;
    }
    match &record.value {
        Some(v) => out.write_all(v)?,
        None => out.write_all(b"null")?,
    }
    out.write_all(b"\n")
}

/// Why one fetch round failed: retriable broker errors are retried, the rest end the command.
enum FetchError {
    Retry { code: i16, partition: i32 },
    Fatal(CliError),
}

impl FetchError {
    fn kafka(topic: &str, partition: i32, code: i16) -> FetchError {
        if is_retriable(code) {
            FetchError::Retry { code, partition }
        } else {
            FetchError::Fatal(CliError::kafka(
                format!("Fetch {topic}-{partition}"),
                code,
                None,
            ))
        }
    }
}

impl From<CliError> for FetchError {
    fn from(e: CliError) -> Self {
        FetchError::Fatal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};
    use spool_protocol::record::plain_record;

    fn batch(base: i64, n: i64) -> BytesMut {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                plain_record(
                    base + i,
                    i as i32,
                    0,
                    None,
                    Some(Bytes::from(format!("v{}", base + i))),
                )
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
        buf
    }

    #[test]
    fn splits_batches_and_drops_a_trailing_partial_one() {
        let mut all = batch(0, 3);
        let first_len = all.len();
        all.extend_from_slice(&batch(3, 2));
        let second = batch(5, 4);
        all.extend_from_slice(&second[..second.len() - 1]);
        let mut data = all.freeze();
        let a = next_batch(&mut data).expect("first");
        assert_eq!(a.len(), first_len);
        let b = next_batch(&mut data).expect("second");
        let set = RecordBatchDecoder::decode(&mut b.clone()).expect("decode");
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![3, 4], "decoder yields absolute offsets");
        assert_eq!((&b[BATCH_LAST_OFFSET_DELTA_OFFSET..]).get_i32(), 1);
        assert!(
            next_batch(&mut data).is_none(),
            "partial batch is left for the next fetch"
        );
        let mut garbage = Bytes::from(vec![0u8; 100]);
        assert!(
            next_batch(&mut garbage).is_none(),
            "zero length is not a batch"
        );
    }

    #[test]
    fn parses_start_positions() {
        assert_eq!(parse_start("earliest").expect("e"), Start::Earliest);
        assert_eq!(parse_start("latest").expect("l"), Start::Latest);
        assert_eq!(parse_start("42").expect("n"), Start::Offset(42));
        assert!(parse_start("-3").is_err());
        assert!(parse_start("soon").is_err());
    }

    #[test]
    fn formats_records() {
        let record = plain_record(7, 0, 0, None, Some(Bytes::from_static(b"hello")));
        let mut out = Vec::new();
        write_record(&mut out, 2, &record, true, true).expect("write");
        assert_eq!(out, b"2:7\tnull\thello\n");
        out.clear();
        write_record(&mut out, 2, &record, false, false).expect("write");
        assert_eq!(out, b"hello\n");
    }
}
