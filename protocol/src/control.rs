//! Transaction markers: the control batches (Kafka's `EndTransactionMarker`) a partition leader
//! appends when a transaction commits or aborts. One uncompressed record; its key is the
//! control record key (version 0, type 0 = ABORT, 1 = COMMIT), its value Kafka's
//! `EndTxnMarker` v0 (version, coordinator epoch). The batch is transactional and control and
//! carries the producer id and epoch and no sequence, as Kafka writes it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_BYTES, MAGIC_V2};
use crate::varint::{get_varint, put_varint};

/// Control record types (Kafka's `ControlRecordType`).
pub const CONTROL_TYPE_ABORT: i16 = 0;
pub const CONTROL_TYPE_COMMIT: i16 = 1;
const CONTROL_KEY_VERSION: i16 = 0;
const END_TXN_MARKER_VERSION: i16 = 0;
const ATTRIBUTES_TXN_CONTROL: i16 = (1 << 4) | (1 << 5);

/// A transaction marker's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The marker batch for `producer_id` at `producer_epoch` (base offset 0: the log stamps it).
pub fn encode_txn_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: TxnMarker,
    now_ms: i64,
) -> Bytes {
    let control_type = if marker.commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut record = BytesMut::with_capacity(24);
    record.put_i8(0); // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, 4);
    record.put_i16(CONTROL_KEY_VERSION);
    record.put_i16(control_type);
    put_varint(&mut record, 6);
    record.put_i16(END_TXN_MARKER_VERSION);
    record.put_i32(marker.coordinator_epoch);
    put_varint(&mut record, 0); // headers

    let mut out = BytesMut::with_capacity(HEADER_BYTES + 1 + record.len());
    out.put_i64(0); // base offset
    out.put_i32(0); // batch length, set below
    out.put_i32(-1); // partition leader epoch: stamped by the log
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, set below
    out.put_i16(ATTRIBUTES_TXN_CONTROL);
    out.put_i32(0); // last offset delta
    out.put_i64(now_ms);
    out.put_i64(now_ms);
    out.put_i64(producer_id);
    out.put_i16(producer_epoch);
    out.put_i32(-1); // base sequence
    out.put_i32(1); // records
    put_varint(&mut out, record.len() as i64);
    out.put_slice(&record);
    let length = i32::try_from(out.len() - batch::LOG_OVERHEAD_BYTES).expect("a small batch");
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// The marker a control batch with a producer id holds; None for any other batch or a control
/// record that is not a COMMIT or ABORT (Kafka ignores other control types in this position).
/// Every length is checked against the bytes left.
pub fn decode_txn_marker(batch_bytes: &[u8]) -> Option<TxnMarker> {
    let header = BatchHeader::parse(batch_bytes).ok()?;
    if !header.is_control() || !header.has_producer_id() || header.compression() != 0 {
        return None;
    }
    let end = header.total_bytes().min(batch_bytes.len());
    let records = batch_bytes.get(HEADER_BYTES..end)?;
    let mut at = 0;
    let length = usize::try_from(get_varint(records, &mut at)?).ok()?;
    if length > records.len() - at {
        return None;
    }
    at += 1; // attributes
    get_varint(records, &mut at)?; // timestamp delta
    get_varint(records, &mut at)?; // offset delta
    let key_length = usize::try_from(get_varint(records, &mut at)?).ok()?;
    let key = records.get(at..at.checked_add(key_length)?)?;
    at += key_length;
    if key.len() < 4 || i16::from_be_bytes([key[0], key[1]]) != CONTROL_KEY_VERSION {
        return None;
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        CONTROL_TYPE_COMMIT => true,
        CONTROL_TYPE_ABORT => false,
        _ => return None,
    };
    let value_length = usize::try_from(get_varint(records, &mut at)?).ok()?;
    let value = records.get(at..at.checked_add(value_length)?)?;
    if value.len() < 6 {
        return None;
    }
    Some(TxnMarker {
        commit,
        coordinator_epoch: i32::from_be_bytes([value[2], value[3], value[4], value[5]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn markers_round_trip_and_kafka_decodes_them() {
        for commit in [true, false] {
            let marker = TxnMarker {
                commit,
                coordinator_epoch: 7,
            };
            let bytes = encode_txn_marker(42, 3, marker, 1_000);
            let header = batch::validate(&bytes).expect("a valid batch");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(header.base_sequence, -1);
            assert_eq!(decode_txn_marker(&bytes), Some(marker));
            // kafka-protocol's decoder (Kafka's format) reads the control record.
            let mut buf = bytes.clone();
            let set = RecordBatchDecoder::decode(&mut buf).expect("decodes");
            let record = &set.records[0];
            assert!(record.control && record.transactional);
            let key = record.key.as_ref().expect("a key");
            assert_eq!(&key[..], &[0, 0, 0, u8::from(commit)]);
            // Any cut is refused, never a panic.
            for cut in 0..bytes.len() {
                let _ = decode_txn_marker(&bytes[..cut]);
            }
        }
        // A data batch is no marker.
        let mut data = BytesMut::from(
            &encode_txn_marker(
                1,
                0,
                TxnMarker {
                    commit: true,
                    coordinator_epoch: 0,
                },
                0,
            )[..],
        );
        data[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        assert_eq!(decode_txn_marker(&data), None);
    }
}
