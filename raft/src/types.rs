//! The one openraft type configuration every Spool Raft group uses.

use std::fmt;

use bytes::Bytes;

/// Kafka's `node.id` (a non-negative i32), widened for openraft.
pub type NodeId = u64;

/// What a node needs to be reached by its peers: its RPC listener address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub rpc_addr: String,
}

/// An opaque command: the group's state machine gives it meaning (the metadata group: one
/// encoded metadata record batch). Also used as the apply response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command(pub Bytes);

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// Spool's Raft types: u64 node ids, commands as bytes, on glommio. Standard Raft's
    /// leader id (at most one leader per term): a term is a Kafka leader epoch, which names
    /// one leader. openraft's default (`leader_id_adv`) lets two candidates lead one term.
    pub TypeConfig:
        D = Command,
        R = Command,
        NodeId = NodeId,
        Node = NodeInfo,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
        AsyncRuntime = crate::rt::GlommioRuntime,
);
