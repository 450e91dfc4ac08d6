//! Requests a broker sends to the active controller (Kafka's forwarded admin writes,
//! BrokerRegistration and BrokerHeartbeat), carried as opaque application RPCs over the Raft
//! transport and encoded with rkyv.

use rkyv::{Archive, Deserialize, Serialize};

use super::records::{decode_aligned, BrokerRegistration, RecordError};

/// Bytes in one controller RPC at most (a CreateTopics with explicit assignments of many
/// partitions fits).
pub const CONTROLLER_RPC_BYTES_MAX: usize = 8 << 20;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ControllerRequest {
    /// `assignments` empty: the controller places `partitions` × `replication`.
    CreateTopic {
        name: String,
        id: [u8; 16],
        partitions: i32,
        replication: i16,
        assignments: Vec<Vec<i32>>,
        configs: Vec<(String, String)>,
        validate_only: bool,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        count: i32,
        assignments: Vec<Vec<i32>>,
        validate_only: bool,
    },
    /// IncrementalAlterConfigs (`replace` false) or AlterConfigs (`replace` true: the changes
    /// are all `Set` and name the topic's whole set of overrides; the others are removed). The
    /// controller applies the operations to its own image, so an append or a replacement never
    /// builds on a broker's stale copy.
    AlterTopicConfigs {
        name: String,
        changes: Vec<ConfigChange>,
        replace: bool,
        validate_only: bool,
    },
    AllocateProducerIds {
        broker: i32,
    },
    /// Partition leaders on `leader` report their elections (see
    /// `MetadataRecord::PartitionLeader`), one request for all a shard won meanwhile: after a
    /// node dies, thousands of groups elect at once, and one metadata commit each, in turn,
    /// took minutes.
    ReportLeaders {
        leader: i32,
        reports: Vec<LeaderReport>,
    },
    /// A partition leader's in-sync replicas changed (see `MetadataRecord::PartitionIsr`).
    ReportIsr {
        leader: i32,
        changes: Vec<IsrChange>,
    },
    /// AlterPartitionReassignments of one partition: move its replicas to `target`, or cancel
    /// the pending move (`None`).
    AlterReassignment {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// A partition leader changed its group's voters to `voters` (a reassignment finished or
    /// was cancelled after the membership changed).
    ReportReassigned {
        topic: String,
        partition: i32,
        voters: Vec<i32>,
    },
    /// Not for the controller: transaction markers for partitions the receiving node leads,
    /// answered by that node with `Codes`, one per marker (see `txn::markers`).
    WriteTxnMarkers {
        markers: Vec<crate::txn::markers::MarkerPart>,
    },
    /// Not for the controller: asks the node that leads a partition's Raft group to hand its
    /// leadership to replica `to` (ElectLeaders), answered by that node itself with
    /// `Done { value: leader it knows, or -1 }` (see `replication::leadership`).
    MoveLeader {
        topic: String,
        partition: i32,
        to: i32,
        /// How long the leader waits for the move before answering.
        wait_ms: u64,
    },
    Register(BrokerRegistration),
    Heartbeat {
        id: i32,
        incarnation: [u8; 16],
        /// The metadata log index the broker has applied: it is unfenced only once caught up
        /// with its own registration.
        applied: u64,
    },
    /// The quorum's state as its leader sees it (DescribeQuorum, `spool cluster status`).
    DescribeQuorum,
    /// The broker has handed over its leaderships and is stopping (Kafka's BrokerHeartbeat
    /// with `WantShutDown`): the controller fences it at once, as KRaft's does at the end of a
    /// controlled shutdown, so Metadata stops naming it without waiting for its session to
    /// expire.
    ShutDown {
        id: i32,
        incarnation: [u8; 16],
    },
    /// Dynamic broker configs (`dynamic_config.rs`) of `broker`, or the cluster default (-1):
    /// IncrementalAlterConfigs, or AlterConfigs with `replace` (as for topics). Last in the
    /// enum: older requests keep their encoding.
    AlterBrokerConfigs {
        broker: i32,
        changes: Vec<ConfigChange>,
        replace: bool,
        validate_only: bool,
    },
    /// Not for the controller: KIP-890 verifications (or adds) for transactions the receiving
    /// node coordinates, answered by that node with `Codes`, one per partition in order (see
    /// `txn::verify`).
    VerifyTxn {
        entries: Vec<crate::txn::verify::VerifyEntry>,
    },
}

/// A partition this node leads in `epoch`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeaderReport {
    pub topic: String,
    pub partition: i32,
    pub epoch: i32,
}

/// One partition's in-sync replicas as its leader sees them in `epoch`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic: String,
    pub partition: i32,
    pub epoch: i32,
    pub isr: Vec<i32>,
}

/// IncrementalAlterConfigs' operations (Kafka's `AlterConfigOp.OpType`, codes 0–3).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    Set,
    Delete,
    /// Adds list items not present yet (list-type configs only).
    Append,
    /// Removes list items (list-type configs only).
    Subtract,
}

impl ConfigOp {
    pub fn from_code(code: i8) -> Option<ConfigOp> {
        match code {
            0 => Some(ConfigOp::Set),
            1 => Some(ConfigOp::Delete),
            2 => Some(ConfigOp::Append),
            3 => Some(ConfigOp::Subtract),
            _ => None,
        }
    }

    /// Kafka's name of the operation, as its error messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            ConfigOp::Set => "SET",
            ConfigOp::Delete => "DELETE",
            ConfigOp::Append => "APPEND",
            ConfigOp::Subtract => "SUBTRACT",
        }
    }
}

/// One config operation of an alter request; `value` is empty for `Delete`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub name: String,
    pub op: ConfigOp,
    pub value: String,
}

/// One replica of the metadata log as the leader sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub id: i32,
    /// -1: unknown.
    pub log_end_offset: i64,
    /// Wall-clock ms of the replica's last acknowledged request; -1 unknown.
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

/// The metadata quorum, from its leader.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QuorumState {
    pub leader: i32,
    pub epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<ReplicaProgress>,
    pub observers: Vec<ReplicaProgress>,
    /// Voters' RPC endpoints: (id, host, port).
    pub endpoints: Vec<(i32, String, u16)>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ControllerResponse {
    /// A Kafka error code (0 = success) and message; `value` carries a request's number (the
    /// first producer id of a block); `index` is the metadata log index that holds the change,
    /// which the forwarding broker waits to have applied before it answers its client.
    Done {
        error_code: i16,
        message: Option<String>,
        value: i64,
        index: u64,
    },
    /// This node does not lead the metadata quorum; `leader` is who does, if known.
    NotController {
        leader: Option<u64>,
    },
    Heartbeat {
        fenced: bool,
    },
    Quorum(QuorumState),
    /// One Kafka error code per item of the request (`WriteTxnMarkers`, `VerifyTxn`).
    Codes(Vec<i16>),
}

impl ControllerRequest {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .map_err(|e| RecordError::Invalid(e.to_string()))?;
        Ok(bytes.into_vec())
    }
    pub fn decode(bytes: &[u8]) -> Result<ControllerRequest, RecordError> {
        if bytes.len() > CONTROLLER_RPC_BYTES_MAX {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        decode_aligned(bytes)
    }
}

impl ControllerResponse {
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .map_err(|e| RecordError::Invalid(e.to_string()))?;
        Ok(bytes.into_vec())
    }
    pub fn decode(bytes: &[u8]) -> Result<ControllerResponse, RecordError> {
        if bytes.len() > CONTROLLER_RPC_BYTES_MAX {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        decode_aligned(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let req = ControllerRequest::CreatePartitions {
            name: "t".into(),
            count: 4,
            assignments: vec![vec![1], vec![2]],
            validate_only: false,
        };
        let bytes = req.encode().expect("encode");
        assert_eq!(ControllerRequest::decode(&bytes).expect("decode"), req);
        assert!(ControllerRequest::decode(&bytes[..bytes.len() / 2]).is_err());
        let req = ControllerRequest::AlterTopicConfigs {
            name: "t".into(),
            changes: vec![ConfigChange {
                name: "cleanup.policy".into(),
                op: ConfigOp::Append,
                value: "compact".into(),
            }],
            replace: false,
            validate_only: true,
        };
        let bytes = req.encode().expect("encode");
        assert_eq!(ControllerRequest::decode(&bytes).expect("decode"), req);
        for code in 0..4 {
            let op = ConfigOp::from_code(code).expect("known op");
            assert_eq!(op as i8, code, "{}", op.name());
        }
        assert_eq!(ConfigOp::from_code(4), None);
        let resp = ControllerResponse::NotController { leader: Some(3) };
        let bytes = resp.encode().expect("encode");
        assert_eq!(ControllerResponse::decode(&bytes).expect("decode"), resp);
        assert!(ControllerResponse::decode(&[0xff; 3]).is_err());
    }
}
