//! The aborted-transaction index of a sealed segment: `<base offset, 20 digits>.txnindex`,
//! Kafka's `TransactionIndex` format (34-byte entries: version 0 as i16, producer id, first
//! offset, last offset, last stable offset, big-endian), one entry per ABORT marker in the
//! segment, in marker order.
//!
//! Who holds an aborted transaction (invariant): exactly one of
//! - the `.txnindex` of the durably sealed segment that holds its marker, or
//! - the in-memory list of the producer state (`ProducerState::aborted`), for markers in the
//!   active segment and in sealed segments whose seal is not persisted yet. Producer
//!   snapshots carry that list as of their offset.
//!
//! Life of a file:
//! - **Seal**: the flush that persists a segment's seal writes its entries (if any) with an
//!   atomic replace (or removes a file an undone seal left), before the producer snapshot at
//!   its end; once the seal is persisted, its entries leave memory. A persisted seal is never
//!   undone by a failed flush (the empty segment after it stays the active one).
//! - **Read** (read_committed fetch, cleaner plan): the files of the segments from the fetch
//!   offset on, then the in-memory list (both picked under one borrow), until an entry's last
//!   stable offset reaches the upper bound (every later abort starts above it). A picked file
//!   that is gone makes the read start again (a suffix truncation moved its entries back to
//!   memory), at most `ABORTED_READ_ATTEMPTS_MAX` times. Nothing of sealed segments stays in
//!   memory; a read streams a file in chunks of [`TXN_INDEX_READ_CHUNK_BYTES`].
//! - **Retention, DeleteRecords, full truncation**: deleted with the segment.
//! - **Cleaning**: a rewritten segment has lost every aborted record of the transactions
//!   whose markers it holds (their records all precede the marker, and a round's swapped
//!   groups are a prefix of the log: it stops at the first group it could not swap in), so
//!   the replaced segments' files are deleted and the output gets an empty one. Empty, not
//!   absent: on open, a segment with a file takes no aborts from a producer snapshot, which
//!   may still list those of the segments the cleaning replaced.
//! - **Suffix truncation**: the cut segment becomes active again; its entries below the cut
//!   come back into memory from the snapshot and replay, and its file is removed.
//! - **Open**: the active segment's file (from a seal undone by truncation) is removed. An
//!   in-memory entry of a sealed segment without a file (a log written before this file
//!   existed, or a replay from an older snapshot) is written to a new file; one whose
//!   segment has a file is a duplicate and is dropped.

use std::path::{Path, PathBuf};

use crate::fs::Backend;
use crate::log::io_error;
use crate::producer::AbortedTxn;
use crate::StorageError;

/// Bytes per entry, as Kafka's `AbortedTxn.TOTAL_SIZE`.
pub(crate) const TXN_ENTRY_BYTES: usize = 34;
const TXN_INDEX_VERSION: i16 = 0;
/// Bytes read per I/O when collecting from a file: a segment full of tiny aborted
/// transactions can hold millions of entries, and a fetch usually needs only a few.
pub(crate) const TXN_INDEX_READ_CHUNK_BYTES: usize = TXN_ENTRY_BYTES * 2048;

pub(crate) fn txn_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.txnindex"))
}

pub(crate) fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(entries.len() * TXN_ENTRY_BYTES);
    for txn in entries {
        bytes.extend_from_slice(&TXN_INDEX_VERSION.to_be_bytes());
        bytes.extend_from_slice(&txn.producer_id.to_be_bytes());
        bytes.extend_from_slice(&txn.first_offset.to_be_bytes());
        bytes.extend_from_slice(&txn.last_offset.to_be_bytes());
        bytes.extend_from_slice(&txn.last_stable_offset.to_be_bytes());
    }
    bytes
}

fn decode_entry(entry: &[u8]) -> Option<AbortedTxn> {
    let field = |at: usize| i64::from_be_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
    if entry.len() != TXN_ENTRY_BYTES
        || i16::from_be_bytes([entry[0], entry[1]]) != TXN_INDEX_VERSION
    {
        return None;
    }
    let txn = AbortedTxn {
        producer_id: field(2),
        first_offset: field(10),
        last_offset: field(18),
        last_stable_offset: field(26),
    };
    (txn.first_offset <= txn.last_offset).then_some(txn)
}

/// The range a file's entries must lie in: markers inside the segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentRange {
    pub base_offset: i64,
    pub next_offset: i64,
}

/// How [`collect`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collected {
    /// An entry's last stable offset reached the upper bound: no later abort overlaps.
    Complete,
    /// Read to the end; later segments may hold more.
    Partial,
    /// The file is gone: the segment was deleted, cleaned or truncated since the caller
    /// looked (a truncation moves its entries back to memory: the caller looks again).
    Missing,
}

/// Adds to `out` the entries of the segment's file that a read_committed fetch of
/// `[fetch_offset, upper_bound)` must report. A damaged file is an error: its aborted records
/// would otherwise reach read_committed readers.
pub(crate) async fn collect(
    backend: &Backend,
    dir: &Path,
    range: SegmentRange,
    fetch_offset: i64,
    upper_bound: i64,
    out: &mut Vec<AbortedTxn>,
) -> Result<Collected, StorageError> {
    let path = txn_index_path(dir, range.base_offset);
    if !backend.exists(&path) {
        return Ok(Collected::Missing);
    }
    let file = match backend.open_existing(&path).await {
        Ok(file) => file,
        Err(_) if !backend.exists(&path) => return Ok(Collected::Missing),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let result = async {
        let size = file.size().await.map_err(io_error(&path))?;
        if size % TXN_ENTRY_BYTES as u64 != 0 {
            return Err(StorageError::CorruptTxnIndex {
                path: path.clone(),
                reason: "its size is not a whole number of entries",
            });
        }
        let mut position = 0u64;
        let mut previous = i64::MIN;
        while position < size {
            let want = TXN_INDEX_READ_CHUNK_BYTES.min((size - position) as usize);
            let chunk = file
                .read_at(position, want)
                .await
                .map_err(io_error(&path))?;
            if chunk.len() != want {
                return Err(StorageError::CorruptTxnIndex {
                    path: path.clone(),
                    reason: "short read",
                });
            }
            position += want as u64;
            for entry in chunk.chunks_exact(TXN_ENTRY_BYTES) {
                let txn = decode_entry(entry)
                    .filter(|txn| {
                        txn.last_offset > previous
                            && (range.base_offset..range.next_offset).contains(&txn.last_offset)
                    })
                    .ok_or_else(|| StorageError::CorruptTxnIndex {
                        path: path.clone(),
                        reason: "an entry is invalid, out of order or outside its segment",
                    })?;
                previous = txn.last_offset;
                if txn.last_offset < fetch_offset {
                    continue;
                }
                if txn.first_offset < upper_bound {
                    out.push(txn);
                }
                if txn.last_stable_offset >= upper_bound {
                    return Ok(Collected::Complete);
                }
            }
        }
        Ok(Collected::Partial)
    }
    .await;
    file.close().await.map_err(io_error(&path))?;
    result
}

/// Writes an empty file for a cleaned segment: it lists no abort, and its presence tells the
/// open not to write it the aborts a producer snapshot still lists for the segments it
/// replaced (their records, and maybe their markers, are gone).
pub(crate) async fn write_empty(
    backend: &Backend,
    dir: &Path,
    base_offset: i64,
) -> Result<(), StorageError> {
    let path = txn_index_path(dir, base_offset);
    backend
        .write_file_atomic(&path, &[])
        .await
        .map_err(io_error(&path))
}

/// Replaces the segment's file with `entries` (not empty), durably.
pub(crate) async fn write(
    backend: &Backend,
    dir: &Path,
    base_offset: i64,
    entries: &[AbortedTxn],
) -> Result<(), StorageError> {
    assert!(!entries.is_empty());
    let path = txn_index_path(dir, base_offset);
    backend
        .write_file_atomic(&path, &encode(entries))
        .await
        .map_err(io_error(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_kafkas_layout() {
        let txn = AbortedTxn {
            producer_id: 7,
            first_offset: 10,
            last_offset: 12,
            last_stable_offset: 13,
        };
        let bytes = encode(&[txn]);
        assert_eq!(bytes.len(), TXN_ENTRY_BYTES);
        assert_eq!(&bytes[..2], &[0, 0], "version 0");
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        assert_eq!(&bytes[26..34], &13i64.to_be_bytes());
        assert_eq!(decode_entry(&bytes), Some(txn));
        let mut wrong_version = bytes.clone();
        wrong_version[1] = 1;
        assert_eq!(decode_entry(&wrong_version), None);
        let mut backwards = bytes;
        backwards[10..18].copy_from_slice(&20i64.to_be_bytes());
        assert_eq!(
            decode_entry(&backwards),
            None,
            "first offset past the marker"
        );
    }
}
