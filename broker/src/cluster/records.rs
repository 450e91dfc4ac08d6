//! The cluster metadata records: what one entry of the metadata Raft log (`__cluster_metadata`)
//! says, as Kafka's KRaft metadata records do. An entry carries a [`RecordBatch`]: its records
//! are applied together or not at all, so a topic and all its partitions appear at once.
//!
//! Encoded with rkyv. Bytes read from the log or the network are copied into an aligned buffer
//! and validated before anything is read from them; a record that fails validation is a
//! [`RecordError`], never a panic.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Bytes in one encoded metadata batch at most: a CreateTopics of thousands of partitions
/// fits; anything larger is refused before it is proposed.
pub const METADATA_BATCH_BYTES_MAX: usize = 8 << 20;

/// The record format version written by this build, checked on decode so an older node never
/// silently misreads a newer record.
pub const METADATA_FORMAT_VERSION: u16 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("metadata batch of {0} bytes exceeds {METADATA_BATCH_BYTES_MAX}")]
    TooLarge(usize),
    #[error("metadata batch is not valid: {0}")]
    Invalid(String),
    #[error(
        "metadata batch format version {0} is newer than this build's {METADATA_FORMAT_VERSION}"
    )]
    Version(u16),
}

/// A listener a broker advertises to clients (Kafka's `advertised.listeners` entries).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: i32,
    /// A fresh random id per broker process start: a registration from an older incarnation
    /// (a delayed message) never overrides a newer one.
    pub incarnation: [u8; 16],
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    /// The node's RPC (controller listener) address, for the Raft transport.
    pub rpc_addr: String,
    /// Whether the node is a voter of the metadata quorum (`process.roles` has `controller`).
    pub controller: bool,
}

/// One partition's replica set, decided by the controller at creation (leader = first).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    pub replicas: Vec<i32>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// Written once, by the first leader of a new cluster (or from `cluster.id` if set).
    ClusterId {
        cluster_id: String,
    },
    RegisterBroker(BrokerRegistration),
    /// The broker missed heartbeats for `broker.session.timeout.ms`; its partitions go offline.
    FenceBroker {
        id: i32,
        incarnation: [u8; 16],
    },
    UnfenceBroker {
        id: i32,
        incarnation: [u8; 16],
    },
    CreateTopic {
        name: String,
        id: [u8; 16],
        configs: Vec<(String, String)>,
        partitions: Vec<PartitionAssignment>,
    },
    DeleteTopic {
        id: [u8; 16],
    },
    CreatePartitions {
        id: [u8; 16],
        added: Vec<PartitionAssignment>,
    },
    /// `None` removes the override.
    AlterTopicConfigs {
        id: [u8; 16],
        changes: Vec<(String, Option<String>)>,
    },
    /// The next `count` producer ids go to `broker`. Where the block starts is decided at
    /// apply (the image's next free id), so two concurrent requests never get the same block.
    ProducerIds {
        broker: i32,
        count: i64,
    },
    /// A partition's Raft group elected `leader` in term `epoch` (its leader epoch), as its
    /// leader reported; older epochs than the image's are ignored at apply.
    PartitionLeader {
        id: [u8; 16],
        partition: i32,
        leader: i32,
        epoch: i32,
    },
    /// A partition's leader in `epoch` reports its in-sync replicas (Kafka's AlterPartition);
    /// a report from an epoch older than the image's leader epoch is ignored at apply.
    PartitionIsr {
        id: [u8; 16],
        partition: i32,
        epoch: i32,
        isr: Vec<i32>,
    },
    /// AlterPartitionReassignments: the partition's replicas are to become `target` (KRaft's
    /// PartitionChangeRecord with adding/removing replicas); `None` cancels a pending one.
    /// The partition's Raft leader carries it out and reports the outcome.
    PartitionReassign {
        id: [u8; 16],
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// The partition's Raft group changed its voters to `replicas` (the leader reported it
    /// once the membership change committed): the reassignment, if any, is over.
    PartitionReassigned {
        id: [u8; 16],
        partition: i32,
        replicas: Vec<i32>,
    },
    /// Dynamic broker configs (`dynamic_config.rs`) of broker `broker`, or of every broker
    /// (the cluster default) when it is -1; `None` removes the value. Last in the enum: older
    /// records keep their encoding.
    AlterBrokerConfigs {
        broker: i32,
        changes: Vec<(String, Option<String>)>,
    },
}

/// What one Raft entry of the metadata group carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub version: u16,
    pub records: Vec<MetadataRecord>,
}

impl RecordBatch {
    pub fn new(records: Vec<MetadataRecord>) -> RecordBatch {
        RecordBatch {
            version: METADATA_FORMAT_VERSION,
            records,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let bytes = rkyv::to_bytes::<rancor::Error>(self)
            .map_err(|e| RecordError::Invalid(e.to_string()))?;
        if bytes.len() > METADATA_BATCH_BYTES_MAX {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        Ok(bytes.into_vec())
    }

    pub fn decode(bytes: &[u8]) -> Result<RecordBatch, RecordError> {
        if bytes.len() > METADATA_BATCH_BYTES_MAX {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let batch: RecordBatch = decode_aligned(bytes)?;
        if batch.version > METADATA_FORMAT_VERSION {
            return Err(RecordError::Invalid(
                RecordError::Version(batch.version).to_string(),
            ));
        }
        Ok(batch)
    }
}

/// Validates and deserializes rkyv bytes of unknown alignment (a slice of a log read or of a
/// network frame) by copying them into an aligned buffer first.
pub fn decode_aligned<T>(bytes: &[u8]) -> Result<T, RecordError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|e| RecordError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordBatch {
        RecordBatch::new(vec![
            MetadataRecord::ClusterId {
                cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
            },
            MetadataRecord::RegisterBroker(BrokerRegistration {
                id: 2,
                incarnation: [7; 16],
                listeners: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.2".into(),
                    port: 9092,
                }],
                rack: Some("r1".into()),
                rpc_addr: "127.0.0.2:9093".into(),
                controller: true,
            }),
            MetadataRecord::CreateTopic {
                name: "events".into(),
                id: [1; 16],
                configs: vec![("retention.ms".into(), "1000".into())],
                partitions: vec![
                    PartitionAssignment { replicas: vec![2] },
                    PartitionAssignment { replicas: vec![1] },
                ],
            },
            MetadataRecord::AlterTopicConfigs {
                id: [1; 16],
                changes: vec![("retention.ms".into(), None)],
            },
            MetadataRecord::ProducerIds {
                broker: 2,
                count: 1000,
            },
        ])
    }

    #[test]
    fn round_trip() {
        let batch = sample();
        let bytes = batch.encode().expect("encode");
        assert_eq!(RecordBatch::decode(&bytes).expect("decode"), batch);
        // Misaligned input (a slice at an odd offset) decodes too.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(RecordBatch::decode(&shifted[1..]).expect("decode"), batch);
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let bytes = sample().encode().expect("encode");
        for cut in [0, 1, 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(RecordBatch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Flip every byte in turn: each decode either fails or yields some valid batch.
        for i in 0..bytes.len() {
            let mut evil = bytes.clone();
            evil[i] ^= 0xff;
            let _ = RecordBatch::decode(&evil);
        }
        assert!(matches!(
            RecordBatch::decode(&vec![0u8; METADATA_BATCH_BYTES_MAX + 1]),
            Err(RecordError::TooLarge(_))
        ));
    }

    #[test]
    fn newer_format_is_refused() {
        let mut batch = sample();
        batch.version = METADATA_FORMAT_VERSION + 1;
        let bytes = batch.encode().expect("encode");
        assert!(RecordBatch::decode(&bytes).is_err());
    }
}
