//! The records of `__consumer_offsets`, in Kafka's own key and value layouts so Kafka's tools can
//! read them:
//!
//! ```text
//! offset commit key   i16 version=1, string group, string topic, i32 partition
//! group metadata key  i16 version=2, string group
//! offset value        i16 version=3, i64 offset, i32 leader epoch, string metadata, i64 commit ms
//! group value         i16 version=3, string protocol type, i32 generation, nullable string
//!                     protocol, nullable string leader, i64 state timestamp, i32 member count,
//!                     then per member: string id, nullable string instance id, string client
//!                     id, string client host, i32 rebalance timeout, i32 session timeout,
//!                     bytes subscription, bytes assignment
//! consumer group key  i16 version=3, string group          (KIP-848 ConsumerGroupMetadataKey)
//! its value           i16 version=0, i32 group epoch, u8 0 (no tagged fields), Kafka's
//!                     flexible ConsumerGroupMetadataValue v0
//! ```
//!
//! A null value is a tombstone (offset deleted or expired, group deleted). A classic group's
//! members are persisted with their assignments whenever a generation completes, as Kafka does,
//! so a new coordinator (failover or restart) knows them and their heartbeats carry on without a
//! rebalance. KIP-848 members are not persisted yet: after a failover they rejoin at epoch 0.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use spool_protocol::record::plain_record;

/// A decoded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    /// A consumer (KIP-848) group's metadata.
    ConsumerGroup {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupValue {
    pub epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// A classic group member as persisted (Kafka's `GroupMetadataValue.MemberMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's chosen protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Offset(OffsetValue),
    Group(GroupValue),
    ConsumerGroup(ConsumerGroupValue),
}

/// A record that does not parse as any of the layouts above.
#[derive(Debug, thiserror::Error)]
#[error("undecodable coordinator record: {reason}")]
pub struct RecordError {
    pub reason: &'static str,
}

pub(crate) fn put_str(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).expect("strings are checked to fit an i16 length");
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
}

fn put_opt_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_i16(-1),
    }
}

pub(crate) fn get_opt_str(buf: &mut Bytes) -> Result<Option<String>, RecordError> {
    if buf.remaining() < 2 {
        return Err(RecordError {
            reason: "short string length",
        });
    }
    let len = buf.get_i16();
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(RecordError {
            reason: "short string",
        });
    }
    let s = buf.split_to(len);
    String::from_utf8(s.to_vec())
        .map(Some)
        .map_err(|_| RecordError {
            reason: "string is not UTF-8",
        })
}

pub(crate) fn get_str(buf: &mut Bytes) -> Result<String, RecordError> {
    get_opt_str(buf)?.ok_or(RecordError {
        reason: "null string",
    })
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    let len = i32::try_from(b.len()).expect("group metadata fits a record batch");
    buf.put_i32(len);
    buf.put_slice(b);
}

fn get_bytes(buf: &mut Bytes) -> Result<Bytes, RecordError> {
    need(buf, 4)?;
    let len = buf.get_i32();
    let len = usize::try_from(len).map_err(|_| RecordError {
        reason: "negative bytes length",
    })?;
    need(buf, len)?;
    Ok(buf.split_to(len))
}

pub(crate) fn need(buf: &Bytes, n: usize) -> Result<(), RecordError> {
    if buf.remaining() < n {
        Err(RecordError {
            reason: "short record",
        })
    } else {
        Ok(())
    }
}

pub fn encode_key(key: &Key) -> Bytes {
    let mut buf = BytesMut::new();
    match key {
        Key::Offset {
            group,
            topic,
            partition,
        } => {
            buf.put_i16(1);
            put_str(&mut buf, group);
            put_str(&mut buf, topic);
            buf.put_i32(*partition);
        }
        Key::Group { group } => {
            buf.put_i16(2);
            put_str(&mut buf, group);
        }
        Key::ConsumerGroup { group } => {
            buf.put_i16(3);
            put_str(&mut buf, group);
        }
    }
    buf.freeze()
}

pub fn encode_value(value: &Value) -> Bytes {
    let mut buf = BytesMut::new();
    match value {
        Value::Offset(v) => {
            buf.put_i16(3);
            buf.put_i64(v.offset);
            buf.put_i32(v.leader_epoch);
            put_str(&mut buf, &v.metadata);
            buf.put_i64(v.commit_timestamp_ms);
        }
        Value::Group(v) => {
            buf.put_i16(3);
            put_str(&mut buf, &v.protocol_type);
            buf.put_i32(v.generation);
            put_opt_str(&mut buf, v.protocol.as_deref());
            put_opt_str(&mut buf, v.leader.as_deref());
            buf.put_i64(v.state_timestamp_ms);
            let count = i32::try_from(v.members.len()).expect("group size is bounded");
            buf.put_i32(count);
            for m in &v.members {
                put_str(&mut buf, &m.id);
                put_opt_str(&mut buf, m.instance_id.as_deref());
                put_str(&mut buf, &m.client_id);
                put_str(&mut buf, &m.client_host);
                buf.put_i32(m.rebalance_timeout_ms);
                buf.put_i32(m.session_timeout_ms);
                put_bytes(&mut buf, &m.subscription);
                put_bytes(&mut buf, &m.assignment);
            }
        }
        Value::ConsumerGroup(v) => {
            buf.put_i16(0);
            buf.put_i32(v.epoch);
            buf.put_u8(0);
        }
    }
    buf.freeze()
}

pub fn decode_key(mut buf: Bytes) -> Result<Key, RecordError> {
    need(&buf, 2)?;
    match buf.get_i16() {
        0 | 1 => {
            let group = get_str(&mut buf)?;
            let topic = get_str(&mut buf)?;
            need(&buf, 4)?;
            Ok(Key::Offset {
                group,
                topic,
                partition: buf.get_i32(),
            })
        }
        2 => Ok(Key::Group {
            group: get_str(&mut buf)?,
        }),
        3 => Ok(Key::ConsumerGroup {
            group: get_str(&mut buf)?,
        }),
        _ => Err(RecordError {
            reason: "unknown key version",
        }),
    }
}

/// Decodes a value for `key`; Kafka's offset value versions 0–3 and group value versions 0–3
/// (version 4, flexible, is never written by Spool and is refused).
pub fn decode_value(key: &Key, mut buf: Bytes) -> Result<Value, RecordError> {
    need(&buf, 2)?;
    let version = buf.get_i16();
    match key {
        Key::Offset { .. } => {
            need(&buf, 8)?;
            let offset = buf.get_i64();
            let leader_epoch = if version >= 3 {
                need(&buf, 4)?;
                buf.get_i32()
            } else {
                -1
            };
            let metadata = get_str(&mut buf)?;
            need(&buf, 8)?;
            Ok(Value::Offset(OffsetValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms: buf.get_i64(),
            }))
        }
        Key::Group { .. } => {
            if !(0..=3).contains(&version) {
                return Err(RecordError {
                    reason: "unknown group value version",
                });
            }
            let protocol_type = get_str(&mut buf)?;
            need(&buf, 4)?;
            let generation = buf.get_i32();
            let protocol = get_opt_str(&mut buf)?;
            let leader = get_opt_str(&mut buf)?;
            let state_timestamp_ms = if version >= 2 {
                need(&buf, 8)?;
                buf.get_i64()
            } else {
                -1
            };
            let members = decode_members(&mut buf, version)?;
            Ok(Value::Group(GroupValue {
                protocol_type,
                generation,
                protocol,
                leader,
                state_timestamp_ms,
                members,
            }))
        }
        Key::ConsumerGroup { .. } => {
            need(&buf, 4)?;
            Ok(Value::ConsumerGroup(ConsumerGroupValue {
                epoch: buf.get_i32(),
            }))
        }
    }
}

/// The member array of a group value of `version` (0–3). The count is checked against the
/// bytes left (a member takes at least 20 bytes) before anything is allocated.
fn decode_members(buf: &mut Bytes, version: i16) -> Result<Vec<MemberValue>, RecordError> {
    const MEMBER_BYTES_MIN: usize = 2 + 2 + 2 + 4 + 4 + 4;
    need(buf, 4)?;
    let count = usize::try_from(buf.get_i32()).unwrap_or(0);
    if count > buf.remaining() / MEMBER_BYTES_MIN {
        return Err(RecordError {
            reason: "member count exceeds the record",
        });
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = get_str(buf)?;
        let instance_id = if version >= 3 {
            get_opt_str(buf)?
        } else {
            None
        };
        let client_id = get_str(buf)?;
        let client_host = get_str(buf)?;
        let rebalance_timeout_ms = if version >= 1 {
            need(buf, 4)?;
            buf.get_i32()
        } else {
            -1
        };
        need(buf, 4)?;
        let session_timeout_ms = buf.get_i32();
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        members.push(MemberValue {
            id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: get_bytes(buf)?,
            assignment: get_bytes(buf)?,
        });
    }
    Ok(members)
}

/// One magic-2 record batch holding `entries` (key, value or tombstone), ready for
/// `PartitionLog::append` (which assigns the offsets).
pub fn encode_batch(entries: &[(Key, Option<Value>)], now_ms: i64) -> Bytes {
    encode_batch_of(entries, now_ms, None)
}

/// A transactional batch of `producer` (id, epoch), as TxnOffsetCommit writes it: Kafka's
/// coordinator writes it without a sequence.
pub fn encode_txn_batch(
    entries: &[(Key, Option<Value>)],
    now_ms: i64,
    producer: (i64, i16),
) -> Bytes {
    encode_batch_of(entries, now_ms, Some(producer))
}

fn encode_batch_of(
    entries: &[(Key, Option<Value>)],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> Bytes {
    assert!(!entries.is_empty());
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let mut record = plain_record(
                i as i64,
                i as i32,
                now_ms,
                Some(encode_key(key)),
                value.as_ref().map(encode_value),
            );
            if let Some((producer_id, producer_epoch)) = producer {
                record.transactional = true;
                record.producer_id = producer_id;
                record.producer_epoch = producer_epoch;
            }
            record
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("uncompressed batches always encode");
    buf.freeze()
}

/// The (log offset, key, value-or-tombstone) entries of one stored batch. Records that do not
/// decode are skipped with a warning (a future format must not stop the load).
pub fn decode_batch(batch: &Bytes) -> Result<Vec<(i64, Key, Option<Value>)>, RecordError> {
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|_| RecordError {
        reason: "undecodable batch",
    })?;
    let mut out = Vec::with_capacity(set.records.len());
    for record in set.records {
        if record.control {
            continue;
        }
        let Some(key) = record.key else { continue };
        let key = match decode_key(key) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(offset = record.offset, "skipping record: {e}");
                continue;
            }
        };
        let value = match record.value {
            None => None,
            Some(v) => match decode_value(&key, v) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(offset = record.offset, "skipping record: {e}");
                    continue;
                }
            },
        };
        out.push((record.offset, key, value));
    }
    Ok(out)
}

/// The offset after the last record of a stored magic-2 batch (base offset + last offset delta
/// + 1), read from the header.
pub fn next_offset(batch: &[u8]) -> Option<i64> {
    if batch.len() < 27 {
        return None;
    }
    let base = i64::from_be_bytes(batch[0..8].try_into().ok()?);
    let delta = i32::from_be_bytes(batch[23..27].try_into().ok()?);
    Some(base + i64::from(delta) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let cases = vec![
            (
                Key::Offset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 7,
                },
                Some(Value::Offset(OffsetValue {
                    offset: 42,
                    leader_epoch: 3,
                    metadata: "meta".into(),
                    commit_timestamp_ms: 1_700_000_000_000,
                })),
            ),
            (
                Key::Group { group: "g".into() },
                Some(Value::Group(GroupValue {
                    protocol_type: "consumer".into(),
                    generation: 5,
                    protocol: Some("range".into()),
                    leader: None,
                    state_timestamp_ms: 9,
                    members: vec![],
                })),
            ),
            (
                Key::Group { group: "m".into() },
                Some(Value::Group(GroupValue {
                    protocol_type: "consumer".into(),
                    generation: 2,
                    protocol: Some("range".into()),
                    leader: Some("m-1".into()),
                    state_timestamp_ms: 11,
                    members: vec![
                        MemberValue {
                            id: "m-1".into(),
                            instance_id: Some("i-1".into()),
                            client_id: "c".into(),
                            client_host: "/127.0.0.1".into(),
                            rebalance_timeout_ms: 300_000,
                            session_timeout_ms: 45_000,
                            subscription: Bytes::from_static(b"sub"),
                            assignment: Bytes::from_static(b"assigned"),
                        },
                        MemberValue {
                            id: "m-2".into(),
                            instance_id: None,
                            client_id: "c".into(),
                            client_host: "/127.0.0.1".into(),
                            rebalance_timeout_ms: 1,
                            session_timeout_ms: 2,
                            subscription: Bytes::new(),
                            assignment: Bytes::new(),
                        },
                    ],
                })),
            ),
            (Key::Group { group: "h".into() }, None),
            (
                Key::ConsumerGroup { group: "c".into() },
                Some(Value::ConsumerGroup(ConsumerGroupValue { epoch: 12 })),
            ),
            (Key::ConsumerGroup { group: "d".into() }, None),
        ];
        let batch = encode_batch(&cases, 1234);
        let decoded = decode_batch(&batch).expect("decodes");
        assert_eq!(decoded.len(), 6);
        for ((offset, key, value), (k, v)) in decoded.into_iter().zip(cases) {
            assert!(offset >= 0);
            assert_eq!(key, k);
            assert_eq!(value, v);
        }
        assert_eq!(next_offset(&batch), Some(6));
    }

    #[test]
    fn group_values_with_lying_lengths_are_refused() {
        let key = Key::Group { group: "g".into() };
        // Version 3, protocol type "", generation 1, null protocol and leader, timestamp 0,
        // then the member count.
        let head = |count: i32| {
            let mut b = BytesMut::new();
            b.put_i16(3);
            put_str(&mut b, "");
            b.put_i32(1);
            b.put_i16(-1);
            b.put_i16(-1);
            b.put_i64(0);
            b.put_i32(count);
            b
        };
        // A count far beyond the bytes left is refused before anything is allocated.
        assert!(decode_value(&key, head(i32::MAX).freeze()).is_err());
        // A member whose assignment claims more bytes than remain.
        let mut b = head(1);
        for s in ["m", "c", "h"] {
            if s == "c" {
                b.put_i16(-1); // instance id
            }
            put_str(&mut b, s);
        }
        b.put_i32(1);
        b.put_i32(1);
        b.put_i32(0);
        b.put_i32(1 << 20);
        assert!(decode_value(&key, b.freeze()).is_err());
        // Version 4 (flexible) is not a layout Spool writes.
        let mut b = BytesMut::new();
        b.put_i16(4);
        assert!(decode_value(&key, b.freeze()).is_err());
    }

    #[test]
    fn offset_key_matches_kafka_layout() {
        let key = encode_key(&Key::Offset {
            group: "ab".into(),
            topic: "t".into(),
            partition: 1,
        });
        assert_eq!(&key[..], &[0, 1, 0, 2, b'a', b'b', 0, 1, b't', 0, 0, 0, 1]);
        assert!(decode_key(Bytes::from_static(&[0, 9])).is_err());
        assert!(decode_key(Bytes::from_static(&[0, 1, 0, 5, b'a'])).is_err());
    }
}
