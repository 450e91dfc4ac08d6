//! Kafka wire framing and record-batch handling. No I/O, no runtime.

pub mod batch;
pub mod compact;
pub mod control;
pub mod fetch_frame;
pub mod frame;
pub mod murmur2;
pub mod record;
pub mod varint;
