//! Small durable files beside a log's segments, for state that belongs to the log but is not
//! record data: the Raft vote and purge point of a log used as a Raft log.
//!
//! A write replaces the whole file atomically and durably (write a temporary file, fdatasync,
//! rename, fsync the directory), through the same file seam as the segments, so it behaves alike
//! on O_DIRECT files and on the in-memory file system with its crashes. After a crash a reader
//! sees the old content or the new one, never a mix; a leftover temporary file is removed when
//! the log is opened. The content is the caller's: it should carry its own checksum.
//!
//! Names are restricted to `[A-Za-z0-9_-]` and must not be one of the log's own files, so a
//! side file can never be mistaken for (or clobber) a segment, index, snapshot or marker.

use bytes::Bytes;

use crate::clean::CLEAN_SHUTDOWN_FILE;
use crate::log::{io_error, PartitionLog, EPOCH_CHECKPOINT_FILE};
use crate::StorageError;

/// Largest side file: they hold a few fields, so anything larger is damage, not data.
pub const SIDE_FILE_BYTES_MAX: usize = 64 * 1024;

/// Largest side file written with an explicit bound: a Raft snapshot of a partition (its
/// producer state: up to 50,000 producers of ~140 bytes each), well within one RPC frame.
pub const SNAPSHOT_FILE_BYTES_MAX: usize = 32 * 1024 * 1024;

impl PartitionLog {
    /// Replaces the side file `name` with `bytes`; durable when this returns Ok.
    pub async fn write_side_file(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.write_side_file_max(name, bytes, SIDE_FILE_BYTES_MAX)
            .await
    }

    /// The content of the side file `name`, or None if it was never written.
    pub async fn read_side_file(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        self.read_side_file_max(name, SIDE_FILE_BYTES_MAX).await
    }

    /// `write_side_file` for a file of at most `max` bytes (at most
    /// [`SNAPSHOT_FILE_BYTES_MAX`]).
    pub async fn write_side_file_max(
        &self,
        name: &str,
        bytes: &[u8],
        max: usize,
    ) -> Result<(), StorageError> {
        assert!(is_side_file_name(name), "invalid side file name {name:?}");
        assert!(max <= SNAPSHOT_FILE_BYTES_MAX.max(SIDE_FILE_BYTES_MAX));
        assert!(bytes.len() <= max, "side file of {} bytes", bytes.len());
        let path = self.dir.join(name);
        self.backend
            .write_file_atomic(&path, bytes)
            .await
            .map_err(io_error(&path))
    }

    /// `read_side_file` for a file of at most `max` bytes; a larger one is an error.
    pub async fn read_side_file_max(
        &self,
        name: &str,
        max: usize,
    ) -> Result<Option<Bytes>, StorageError> {
        assert!(is_side_file_name(name), "invalid side file name {name:?}");
        let path = self.dir.join(name);
        if !self.backend.exists(&path) {
            return Ok(None);
        }
        let file = self
            .backend
            .open_file(&path)
            .await
            .map_err(io_error(&path))?;
        let size = file.size().await.map_err(io_error(&path))?;
        // Checked before reading: a damaged size must not become an allocation.
        let too_large = usize::try_from(size).map_or(true, |size| size > max);
        let bytes = if too_large {
            Err(StorageError::SideFileTooLarge {
                path: path.clone(),
                size,
                max,
            })
        } else {
            file.read_at(0, size as usize)
                .await
                .map_err(io_error(&path))
        };
        file.close().await.map_err(io_error(&path))?;
        bytes.map(Some)
    }
}

fn is_side_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name != CLEAN_SHUTDOWN_FILE
        && name != EPOCH_CHECKPOINT_FILE
}
