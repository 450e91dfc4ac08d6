//! Records as a plain producer writes them (not idempotent, not transactional), for everything
//! in Spool that builds batches itself: the `spool produce` CLI, the group coordinator's
//! `__consumer_offsets` batches, spool-bench and tests.

use bytes::Bytes;
use kafka_protocol::records::{Record, TimestampType};

/// The record at `offset_delta` within its batch, `offset` being what the encoder writes
/// (brokers assign the real offsets on append; readers' tests may want real ones).
///
/// kafka-protocol's encoder derives a batch's base sequence as `sequence - offset delta` and
/// starts a new batch wherever that changes, so the sequence steps with the delta from -1: the
/// batch carries NO_SEQUENCE (-1), as a non-idempotent producer's must.
pub fn plain_record(
    offset: i64,
    offset_delta: i32,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: offset_delta - 1,
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

    #[test]
    fn plain_records_make_one_batch_without_a_sequence() {
        let records: Vec<Record> = (0..3)
            .map(|i| plain_record(10 + i, i as i32, 5, None, Some(Bytes::from_static(b"v"))))
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode");
        let header = crate::batch::BatchHeader::parse(&buf).expect("header");
        assert_eq!(header.base_offset, 10);
        assert_eq!(header.last_offset(), 12);
        assert_eq!(header.base_sequence, -1);
        assert_eq!(header.producer_id, -1);
        assert_eq!(header.total_bytes(), buf.len(), "one batch");
    }
}
