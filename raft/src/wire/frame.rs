//! Framing: `[u32 big-endian payload length][payload]`, the payload one rkyv archive.
//!
//! The length is checked against [`RPC_FRAME_BYTES_MAX`] before anything is allocated, and the
//! payload buffer then grows only as its bytes arrive ([`READ_CHUNK_BYTES_MAX`] at a time), so a
//! peer announcing a large frame and sending nothing pins no memory for it.

use futures_lite::{AsyncRead, AsyncReadExt};
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;

use super::WireError;

/// Largest frame payload a node sends or accepts. A whole snapshot travels in one frame
/// (openraft's `full_snapshot`), so this bounds the snapshot of any group, with room for the
/// envelope: a metadata image must stay well below 64 MiB. AppendEntries batches are far smaller
/// (openraft's `max_payload_entries` entries of a few KiB).
pub const RPC_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The length prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Most bytes one read adds to a frame being received.
const READ_CHUNK_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(RPC_FRAME_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(READ_CHUNK_BYTES_MAX <= RPC_FRAME_BYTES_MAX);

/// An rkyv writer that serializes behind a reserved length prefix, so a frame goes out in one
/// write without copying the payload again. Positions are relative to the payload start, which
/// is where the receiver's aligned buffer starts, so rkyv's alignment padding stays right.
pub(super) struct FrameWriter {
    buf: Vec<u8>,
}

impl FrameWriter {
    pub(super) fn new() -> FrameWriter {
        FrameWriter {
            buf: vec![0; FRAME_PREFIX_BYTES],
        }
    }

    /// Fills in the prefix; the frame is refused if its payload is over the bound the receiver
    /// would enforce.
    pub(super) fn finish(mut self) -> Result<Vec<u8>, WireError> {
        let len = self.buf.len() - FRAME_PREFIX_BYTES;
        if len > RPC_FRAME_BYTES_MAX {
            return Err(WireError::FrameTooLong {
                len,
                max: RPC_FRAME_BYTES_MAX,
            });
        }
        let prefix = u32::try_from(len).map_err(|_| WireError::FrameTooLong {
            len,
            max: RPC_FRAME_BYTES_MAX,
        })?;
        self.buf[..FRAME_PREFIX_BYTES].copy_from_slice(&prefix.to_be_bytes());
        Ok(self.buf)
    }
}

impl Positional for FrameWriter {
    fn pos(&self) -> usize {
        self.buf.len() - FRAME_PREFIX_BYTES
    }
}

impl<E> Writer<E> for FrameWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

/// Reads one frame's payload into an aligned buffer (rkyv validates in place). `Ok(None)`: the
/// peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<AlignedVec>, WireError> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    let mut filled = 0;
    while filled < FRAME_PREFIX_BYTES {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(WireError::Truncated)
            };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > RPC_FRAME_BYTES_MAX {
        return Err(WireError::FrameTooLong {
            len,
            max: RPC_FRAME_BYTES_MAX,
        });
    }
    let mut payload = AlignedVec::new();
    while payload.len() < len {
        let start = payload.len();
        let chunk = (len - start).min(READ_CHUNK_BYTES_MAX);
        payload.resize(start + chunk, 0);
        reader
            .read_exact(&mut payload[start..])
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
                _ => WireError::Io(e),
            })?;
    }
    Ok(Some(payload))
}
