//! Spool's consensus layer.
//!
//! openraft (`single-threaded`) runs on a glommio shard through [`rt::GlommioRuntime`]. The Raft
//! log and vote live on Spool's own storage ([`store`]), fsynced before an append or a vote is
//! acknowledged. Nodes talk over [`transport`]: one connection per node pair per shard, shared by
//! every Raft group on that shard, each frame length-checked before allocating and each message
//! ([`wire`]) validated on receipt.
//!
//! *Boundary*: this crate knows Raft, bytes and sockets, not Kafka requests or the cluster
//! metadata. A group's state machine (the metadata image, later a partition) is the broker's.

pub mod rt;
pub mod store;
pub mod transport;
mod types;
pub mod wire;

pub use types::{Command, NodeId, NodeInfo, TypeConfig};
