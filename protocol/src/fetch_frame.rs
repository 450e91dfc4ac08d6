//! Fetch responses encoded as a list of chunks, so record data is written to the socket from the
//! buffers it already lives in (the tail cache, a disk read) instead of being copied into one
//! response buffer: a Fetch moves more bytes than every other API together.
//!
//! Everything but the records is encoded by kafka-protocol (each `PartitionData` with its
//! records left null), and the records are spliced in where the null marker sits: records is
//! the last non-tagged field of `PartitionData` in every version, so the marker is found by
//! diffing the encodings with null and with empty records. The top and topic levels (a few
//! scalars and array headers) are written here; the unit tests check the result is byte for byte
//! what kafka-protocol encodes for every version this broker serves.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use crate::frame::EncodeError;
use crate::varint::put_uvarint;

/// Record chunks at least this large are referenced; smaller ones are cheaper to copy than to
/// write as a separate chunk.
pub const REFERENCE_BYTES_MIN: usize = 16 * 1024;
/// Fetch versions with flexible encoding (compact arrays, tagged fields).
const FLEXIBLE_MIN: i16 = 12;
/// Fetch versions addressing topics by id instead of name.
const TOPIC_ID_MIN: i16 = 13;
/// Fetch versions with the NodeEndpoints tagged field (KIP-951), tag 0.
const NODE_ENDPOINTS_MIN: i16 = 16;

enum Chunk {
    Own(BytesMut),
    Shared(Bytes),
}

struct Chunks {
    done: Vec<Chunk>,
    cur: BytesMut,
}

impl Chunks {
    fn put(&mut self, bytes: &[u8]) {
        self.cur.extend_from_slice(bytes);
    }

    fn put_records(&mut self, batches: &[Bytes]) {
        for b in batches {
            if b.len() < REFERENCE_BYTES_MIN {
                self.cur.extend_from_slice(b);
            } else {
                if !self.cur.is_empty() {
                    let own = self.cur.split();
                    self.done.push(Chunk::Own(own));
                }
                self.done.push(Chunk::Shared(b.clone()));
            }
        }
    }

    fn uvarint(&mut self, v: u64) {
        put_uvarint(&mut self.cur, v);
    }

    /// Array length: compact (n + 1, unsigned varint) when flexible, else i32.
    fn array_len(&mut self, n: usize, flexible: bool) {
        if flexible {
            self.uvarint(n as u64 + 1);
        } else {
            self.cur.put_i32(n as i32);
        }
    }
}

/// Encodes the whole response frame (size prefix, header, body) for Fetch `version`.
/// `records[t][p]` are the batches of partition `p` of topic `t` in `response`, whose own
/// `records` fields must be `None` (they are replaced by these).
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    response: &FetchResponse,
    records: &[Vec<Vec<Bytes>>],
) -> Result<Vec<Bytes>, EncodeError> {
    let err = |e: &dyn std::fmt::Display| EncodeError(e.to_string());
    assert!(version >= 4, "Fetch v{version} is not served");
    let flexible = version >= FLEXIBLE_MIN;
    assert!(
        response.unknown_tagged_fields.is_empty()
            && (version >= NODE_ENDPOINTS_MIN || response.node_endpoints.is_empty()),
        "fetch responses carry no top-level tagged fields but NodeEndpoints (v16+)"
    );
    assert_eq!(records.len(), response.responses.len());
    let mut c = Chunks {
        done: Vec::new(),
        cur: BytesMut::with_capacity(256),
    };
    c.put(&[0; 4]); // size, patched below
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut c.cur, ApiKey::Fetch.response_header_version(version))
        .map_err(|e| err(&e))?;
    c.cur.put_i32(response.throttle_time_ms);
    if version >= 7 {
        c.cur.put_i16(response.error_code);
        c.cur.put_i32(response.session_id);
    }
    c.array_len(response.responses.len(), flexible);
    let (mut null, mut empty) = (BytesMut::new(), BytesMut::new());
    for (topic, topic_records) in response.responses.iter().zip(records) {
        assert!(topic.unknown_tagged_fields.is_empty());
        assert_eq!(topic_records.len(), topic.partitions.len());
        if version >= TOPIC_ID_MIN {
            c.put(topic.topic_id.as_bytes());
        } else if flexible {
            c.uvarint(topic.topic.len() as u64 + 1);
            c.put(topic.topic.as_bytes());
        } else {
            c.cur.put_i16(topic.topic.len() as i16);
            c.put(topic.topic.as_bytes());
        }
        c.array_len(topic.partitions.len(), flexible);
        for (partition, batches) in topic.partitions.iter().zip(topic_records) {
            assert!(partition.records.is_none(), "records go in `records`");
            // Cleared, not split: the two buffers keep their capacity across partitions.
            null.clear();
            partition.encode(&mut null, version).map_err(|e| err(&e))?;
            empty.clear();
            partition
                .clone()
                .with_records(Some(Bytes::new()))
                .encode(&mut empty, version)
                .map_err(|e| err(&e))?;
            let at = null
                .iter()
                .zip(empty.iter())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| unreachable!("null and empty records encode differently"));
            let marker = if flexible { 1 } else { 4 };
            c.put(&null[..at]);
            let len: usize = batches.iter().map(Bytes::len).sum();
            if flexible {
                c.uvarint(len as u64 + 1);
            } else {
                let len = i32::try_from(len)
                    .map_err(|_| EncodeError(format!("{len} bytes of records")))?;
                c.cur.put_i32(len);
            }
            c.put_records(batches);
            c.put(&null[at + marker..]);
        }
        if flexible {
            c.uvarint(0); // topic tagged fields
        }
    }
    if flexible && !response.node_endpoints.is_empty() {
        // One top-level tagged field: tag 0, its size, a compact array of endpoints.
        let mut field = BytesMut::new();
        put_uvarint(&mut field, response.node_endpoints.len() as u64 + 1);
        for endpoint in &response.node_endpoints {
            endpoint.encode(&mut field, version).map_err(|e| err(&e))?;
        }
        c.uvarint(1);
        c.uvarint(0);
        c.uvarint(field.len() as u64);
        c.put(&field);
    } else if flexible {
        c.uvarint(0); // top-level tagged fields
    }
    let Chunks { mut done, cur } = c;
    if !cur.is_empty() {
        done.push(Chunk::Own(cur));
    }
    let total: usize = done
        .iter()
        .map(|c| match c {
            Chunk::Own(b) => b.len(),
            Chunk::Shared(b) => b.len(),
        })
        .sum();
    let size =
        i32::try_from(total - 4).map_err(|_| EncodeError(format!("{total}-byte response")))?;
    match done.first_mut() {
        Some(Chunk::Own(first)) => first[..4].copy_from_slice(&size.to_be_bytes()),
        _ => unreachable!("the frame starts with its own header bytes"),
    }
    Ok(done
        .into_iter()
        .map(|c| match c {
            Chunk::Own(b) => b.freeze(),
            Chunk::Shared(b) => b,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
        PartitionData,
    };
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn batches(seed: u8, sizes: &[usize]) -> Vec<Bytes> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![seed.wrapping_add(i as u8); n]))
            .collect()
    }

    fn response(version: i16) -> (FetchResponse, Vec<Vec<Vec<Bytes>>>) {
        let mut topics = Vec::new();
        let mut records = Vec::new();
        for t in 0..3u8 {
            let mut partitions = Vec::new();
            let mut topic_records = Vec::new();
            for p in 0..3i32 {
                let mut data = PartitionData::default()
                    .with_records(None)
                    .with_partition_index(p)
                    .with_error_code(if p == 2 { 1 } else { 0 })
                    .with_high_watermark(1000 + i64::from(p))
                    .with_last_stable_offset(999)
                    .with_log_start_offset(if version >= 5 { 7 } else { -1 })
                    .with_preferred_read_replica((-1).into());
                if p == 1 {
                    data = data
                        .with_aborted_transactions(Some(vec![AbortedTransaction::default()
                            .with_producer_id(5.into())
                            .with_first_offset(17)]));
                }
                if version >= 12 && p == 0 && t == 1 {
                    // Tagged fields after the records must survive the splice.
                    data = data
                        .with_diverging_epoch(
                            EpochEndOffset::default().with_epoch(3).with_end_offset(40),
                        )
                        .with_current_leader(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(1.into())
                                .with_leader_epoch(2),
                        );
                }
                partitions.push(data);
                topic_records.push(match p {
                    0 => batches(t, &[100, 40_000, 20, 70_000]),
                    1 => Vec::new(),
                    _ => batches(t, &[5]),
                });
            }
            let topic = FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(format!("topic-{t}"))))
                .with_topic_id(uuid::Uuid::from_bytes([t + 1; 16]))
                .with_partitions(partitions);
            topics.push(topic);
            records.push(topic_records);
        }
        let mut resp = FetchResponse::default()
            .with_throttle_time_ms(12)
            .with_error_code(0)
            .with_session_id(0)
            .with_responses(topics);
        if version >= 16 {
            resp = resp.with_node_endpoints(vec![
                NodeEndpoint::default()
                    .with_node_id(1.into())
                    .with_host(StrBytes::from_static_str("broker-1.example"))
                    .with_port(9092),
                NodeEndpoint::default()
                    .with_node_id(2.into())
                    .with_host(StrBytes::from_static_str("b2"))
                    .with_port(19092)
                    .with_rack(Some(StrBytes::from_static_str("rack-b"))),
            ]);
        }
        (resp, records)
    }

    #[test]
    fn chunks_equal_kafka_protocols_encoding_for_every_served_version() {
        for version in 4..=17i16 {
            let (resp, records) = response(version);
            let chunks = encode_fetch_response(version, 77, &resp, &records).expect("chunks");
            // The reference: the same response with the records inline, encoded in one buffer.
            let mut inline = resp.clone();
            for (topic, topic_records) in inline.responses.iter_mut().zip(&records) {
                for (p, batches) in topic.partitions.iter_mut().zip(topic_records) {
                    let joined: Vec<u8> = batches.iter().flat_map(|b| b.iter().copied()).collect();
                    p.records = Some(Bytes::from(joined));
                }
            }
            let expected = crate::frame::encode_response(ApiKey::Fetch, version, 77, &inline)
                .expect("reference");
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined.len(), expected.len(), "v{version} length");
            assert!(joined == expected[..], "v{version} bytes differ");
            // Large batches are referenced, not copied.
            let big = &records[0][0][1];
            assert!(
                chunks
                    .iter()
                    .any(|c| c.as_ptr() == big.as_ptr() && c.len() == big.len()),
                "v{version}: the 40 KB batch was copied"
            );
        }
    }
}
