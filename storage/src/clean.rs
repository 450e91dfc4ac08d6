//! What a clean shutdown leaves for the next open, so that it scans nothing.
//!
//! A log's close produces one [`CleanRecord`]: the active segment's logical size, end offset and
//! timestamps, its offset and time indexes, its Raft entry sidecar, the producer state at the
//! end and the leader epoch cache (which every flush also checkpoints when it changed). A
//! record vouches for a log only until the log changes, so an open consumes it before the log
//! accepts a write.
//!
//! Where records live:
//! - a log closed on its own (`PartitionLog::close`) writes its record as the `clean-shutdown`
//!   file in its directory; the next open reads it and removes it, durably, before anything else;
//! - a broker shard closing all its logs writes one *book* per log directory: the records of
//!   every log it closed, in one file (`clean-shutdown-shard-<n>`), with one file sync and one
//!   directory sync for all of them. Writing a file per log cost a new inode, a file sync and a
//!   directory sync each: 10,000 partitions took 12-37 s to stop.
//!
//! A book is consumed by [`take_books`] before any log under the directory opens: each book is
//! renamed to `<name>.taken` (durably), read by the shards ([`CleanBook::load`]) and handed out
//! record by record ([`CleanBook::take`]); a record is handed out at most once per process. The
//! next start deletes `.taken` books unread, so a record never outlives the run that consumed
//! it, and a log opened after that run without a fresh record recovers as after a crash.
//!
//! Every length in a record or book is checked against the bytes left, and each carries a CRC:
//! a damaged one is ignored (the logs it covered recover by scanning), never trusted.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::fs::Backend;
use crate::log::io_error;
use crate::StorageError;

/// The file a log closed on its own leaves in its directory.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// A shard's book in a log directory: `clean-shutdown-shard-<shard>`.
pub const CLEAN_BOOK_PREFIX: &str = "clean-shutdown-shard-";
/// The suffix of a book consumed by a start (deleted unread by the next one).
const TAKEN_SUFFIX: &str = ".taken";
/// A book's bound. A shard whose records would not fit writes the rest of them one file per log
/// directory, as a log closed on its own does (slower, still clean). A book at the bound is read
/// whole at start: 256 MiB holds ~1 million small logs, or 10,000 with ~25 KiB of active-segment
/// index each (a 100 MiB active segment at the default index interval).
pub const CLEAN_BOOK_BYTES_MAX: usize = 256 << 20;
/// One record's bound: within a book, and for the file of a log closed on its own.
pub const CLEAN_RECORD_BYTES_MAX: usize = 64 << 20;

const RECORD_MAGIC: &[u8; 4] = b"SPC2";
const BOOK_MAGIC: &[u8; 4] = b"SPCB";
const MARKER_FIELDS: usize = 7;
/// A section's length meaning "absent".
const ABSENT: u32 = u32::MAX;

/// The active segment's state at a clean shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanShutdown {
    pub base_offset: i64,
    pub size_bytes: u64,
    pub next_offset: i64,
    pub rolling_ms: i64,
    pub max_timestamp: (i64, i64),
    pub bytes_since_index: u64,
}

/// Everything a clean close leaves for the next open (see the module header). Opaque outside
/// the crate: made by a close, handed to an open, stored in a book in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanRecord(Bytes);

/// A decoded record.
#[derive(Debug, Clone)]
pub(crate) struct CleanState {
    pub marker: CleanShutdown,
    /// The active segment's encoded offset and time indexes.
    pub indexes: Option<(Bytes, Bytes)>,
    /// The active segment's encoded entry sidecar (Raft logs only).
    pub sidecar: Option<Bytes>,
    /// The encoded producer state at the end of the log.
    pub producers: Bytes,
    /// The encoded leader epoch cache.
    pub epochs: Bytes,
}

impl CleanRecord {
    pub(crate) fn encode(state: &CleanState) -> CleanRecord {
        let marker = &state.marker;
        let sections = [
            state.indexes.as_ref().map(|(offsets, _)| offsets),
            state.indexes.as_ref().map(|(_, times)| times),
            state.sidecar.as_ref(),
            Some(&state.producers),
            Some(&state.epochs),
        ];
        let len = 4
            + 8 * MARKER_FIELDS
            + sections
                .iter()
                .map(|s| 4 + s.map_or(0, |s| s.len()))
                .sum::<usize>()
            + 4;
        let mut bytes = Vec::with_capacity(len);
        bytes.extend_from_slice(RECORD_MAGIC);
        for value in [
            marker.base_offset,
            marker.size_bytes as i64,
            marker.next_offset,
            marker.rolling_ms,
            marker.max_timestamp.0,
            marker.max_timestamp.1,
            marker.bytes_since_index as i64,
        ] {
            bytes.extend_from_slice(&value.to_be_bytes());
        }
        for section in sections {
            match section {
                Some(section) => {
                    let n = u32::try_from(section.len())
                        .ok()
                        .filter(|&n| n != ABSENT)
                        .expect("a section below 4 GiB");
                    bytes.extend_from_slice(&n.to_be_bytes());
                    bytes.extend_from_slice(section);
                }
                None => bytes.extend_from_slice(&ABSENT.to_be_bytes()),
            }
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        CleanRecord(bytes.into())
    }

    /// None if the bytes are not a whole, undamaged record.
    pub(crate) fn decode(&self) -> Option<CleanState> {
        let bytes = &self.0;
        let body_len = bytes.len().checked_sub(4)?;
        let crc = u32::from_be_bytes(bytes[body_len..].try_into().ok()?);
        if crc32c::crc32c(&bytes[..body_len]) != crc {
            return None;
        }
        let mut reader = Reader {
            bytes: bytes.slice(..body_len),
        };
        if &reader.take(4)?[..] != RECORD_MAGIC {
            return None;
        }
        let mut fields = [0i64; MARKER_FIELDS];
        for field in &mut fields {
            *field = i64::from_be_bytes(reader.take(8)?[..].try_into().ok()?);
        }
        let marker = CleanShutdown {
            base_offset: fields[0],
            size_bytes: u64::try_from(fields[1]).ok()?,
            next_offset: fields[2],
            rolling_ms: fields[3],
            max_timestamp: (fields[4], fields[5]),
            bytes_since_index: u64::try_from(fields[6]).ok()?,
        };
        let offsets = reader.section()?;
        let times = reader.section()?;
        let sidecar = reader.section()?;
        let producers = reader.section()??;
        let epochs = reader.section()??;
        if !reader.bytes.is_empty() {
            return None;
        }
        let indexes = match (offsets, times) {
            (Some(offsets), Some(times)) => Some((offsets, times)),
            (None, None) => None,
            _ => return None,
        };
        Some(CleanState {
            marker,
            indexes,
            sidecar,
            producers,
            epochs,
        })
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: Bytes) -> CleanRecord {
        CleanRecord(bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the record as the `clean-shutdown` file of the log in `dir` (the log must be
    /// closed: the file vouches for the log as it is now).
    pub async fn write_in(&self, backend: &Backend, dir: &Path) -> Result<(), StorageError> {
        let path = dir.join(CLEAN_SHUTDOWN_FILE);
        backend
            .write_file_atomic(&path, &self.0)
            .await
            .map_err(io_error(&path))
    }

    /// Reads and removes, durably, the `clean-shutdown` file in `dir`: after this the file
    /// cannot vouch for a log that changed. None if there was none (or it is too large).
    pub(crate) async fn take_from(
        backend: &Backend,
        dir: &Path,
    ) -> Result<Option<CleanRecord>, StorageError> {
        let path = dir.join(CLEAN_SHUTDOWN_FILE);
        if !backend.exists(&path) {
            return Ok(None);
        }
        let bytes = backend
            .read_file_bounded(&path, CLEAN_RECORD_BYTES_MAX)
            .await
            .map_err(io_error(&path))?;
        backend.remove_file(&path).await.map_err(io_error(&path))?;
        backend.sync_dir(dir).await.map_err(io_error(dir))?;
        Ok(bytes.map(CleanRecord))
    }
}

struct Reader {
    bytes: Bytes,
}

impl Reader {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        (n <= self.bytes.len()).then(|| self.bytes.split_to(n))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?[..].try_into().ok()?))
    }

    /// A length-prefixed section: Some(None) if marked absent.
    fn section(&mut self) -> Option<Option<Bytes>> {
        match self.u32()? {
            ABSENT => Some(None),
            n => Some(Some(self.take(usize::try_from(n).ok()?)?)),
        }
    }
}

/// Before any log under `root` opens (one thread, nothing else using the directory yet):
/// deletes books a previous start consumed, and marks the last stop's books consumed, durably.
/// Returns the consumed books' paths, for [`CleanBook::load`].
pub fn take_books(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut taken = Vec::new();
    let mut changed = false;
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(taken),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(CLEAN_BOOK_PREFIX) {
            continue;
        }
        let path = entry.path();
        if name.ends_with(TAKEN_SUFFIX) || name.ends_with(".tmp") {
            std::fs::remove_file(&path)?;
        } else {
            let to = root.join(format!("{name}{TAKEN_SUFFIX}"));
            std::fs::rename(&path, &to)?;
            taken.push(to);
        }
        changed = true;
    }
    if changed {
        std::fs::File::open(root)?.sync_all()?;
    }
    taken.sort();
    Ok(taken)
}

/// The records of consumed books, by log directory.
#[derive(Debug, Default)]
pub struct CleanBook {
    records: HashMap<PathBuf, CleanRecord>,
}

impl CleanBook {
    /// Reads the books `take_books` consumed and keeps the records of the log directories
    /// `keep` accepts. A damaged or oversized book is skipped whole (logged): its logs recover
    /// as after a crash.
    pub async fn load(
        backend: &Backend,
        books: &[PathBuf],
        keep: impl Fn(&Path) -> bool,
    ) -> CleanBook {
        let mut records = HashMap::new();
        for path in books {
            let root = path.parent().unwrap_or(Path::new("."));
            let bytes = match backend.read_file_bounded(path, CLEAN_BOOK_BYTES_MAX).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    tracing::warn!(path = %path.display(), "clean-shutdown book missing or over its bound; its logs recover by scanning");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot read the clean-shutdown book ({e}); its logs recover by scanning");
                    continue;
                }
            };
            match decode_book(bytes) {
                Some(entries) => {
                    for (name, record) in entries {
                        let dir = root.join(name);
                        if keep(&dir) {
                            records.insert(dir, record);
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %path.display(), "damaged clean-shutdown book; its logs recover by scanning");
                }
            }
        }
        CleanBook { records }
    }

    /// The record for the log in `dir`, once.
    pub fn take(&mut self, dir: &Path) -> Option<CleanRecord> {
        self.records.remove(dir)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Collects one shard's records for one log directory and writes them as its book.
#[derive(Debug)]
pub struct CleanBookWriter {
    root: PathBuf,
    shard: usize,
    bytes: Vec<u8>,
    count: u32,
}

impl CleanBookWriter {
    pub fn new(root: PathBuf, shard: usize) -> CleanBookWriter {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(BOOK_MAGIC);
        CleanBookWriter {
            root,
            shard,
            bytes,
            count: 0,
        }
    }

    /// Adds the record of the log in `dir` (a directory directly under the root). Gives it back
    /// when it does not fit the book's bound, or `dir` is not under the root: the caller then
    /// writes it beside the log ([`CleanRecord::write_in`]).
    pub fn add(&mut self, dir: &Path, record: CleanRecord) -> Result<(), CleanRecord> {
        let name = match dir.strip_prefix(&self.root).ok().and_then(Path::to_str) {
            Some(name) if !name.is_empty() && !name.contains('/') => name,
            _ => return Err(record),
        };
        let Ok(name_len) = u16::try_from(name.len()) else {
            return Err(record);
        };
        let added = 2 + name.len() + 4 + record.len();
        // + the count and the CRC at the end.
        if self.bytes.len() + added + 8 > CLEAN_BOOK_BYTES_MAX {
            return Err(record);
        }
        let record_len = u32::try_from(record.len()).expect("a record below its bound");
        self.bytes.extend_from_slice(&name_len.to_be_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.extend_from_slice(&record_len.to_be_bytes());
        self.bytes.extend_from_slice(&record.0);
        self.count += 1;
        Ok(())
    }

    /// Writes the book durably (file, then its directory). Nothing to write for no records.
    pub async fn finish(mut self, backend: &Backend) -> Result<usize, StorageError> {
        if self.count == 0 {
            return Ok(0);
        }
        self.bytes.extend_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&self.bytes);
        self.bytes.extend_from_slice(&crc.to_be_bytes());
        let path = self.root.join(format!("{CLEAN_BOOK_PREFIX}{}", self.shard));
        backend
            .write_file_atomic(&path, &self.bytes)
            .await
            .map_err(io_error(&path))?;
        Ok(self.count as usize)
    }
}

/// A book's (name, record) entries; None if damaged anywhere.
fn decode_book(bytes: Bytes) -> Option<Vec<(String, CleanRecord)>> {
    let body_len = bytes.len().checked_sub(4)?;
    let crc = u32::from_be_bytes(bytes[body_len..].try_into().ok()?);
    if crc32c::crc32c(&bytes[..body_len]) != crc {
        return None;
    }
    let entries_len = body_len.checked_sub(4)?;
    let count = u32::from_be_bytes(bytes[entries_len..body_len].try_into().ok()?);
    let mut reader = Reader {
        bytes: bytes.slice(..entries_len),
    };
    if &reader.take(4)?[..] != BOOK_MAGIC {
        return None;
    }
    let mut entries = Vec::new();
    while !reader.bytes.is_empty() {
        let name_len = u16::from_be_bytes(reader.take(2)?[..].try_into().ok()?);
        let name = String::from_utf8(reader.take(usize::from(name_len))?.to_vec()).ok()?;
        if name.is_empty() || name.contains('/') || name == ".." || name == "." {
            return None;
        }
        let record_len = usize::try_from(reader.u32()?).ok()?;
        if record_len > CLEAN_RECORD_BYTES_MAX {
            return None;
        }
        entries.push((name, CleanRecord(reader.take(record_len)?)));
    }
    (entries.len() == usize::try_from(count).ok()?).then_some(entries)
}

#[cfg(test)]
pub(crate) fn book_bytes_for_test(entries: &[(&str, &CleanRecord)]) -> Vec<u8> {
    let mut writer = CleanBookWriter::new(PathBuf::from("/r"), 0);
    for (name, record) in entries {
        writer
            .add(&Path::new("/r").join(name), (*record).clone())
            .expect("fits");
    }
    writer.bytes.extend_from_slice(&writer.count.to_be_bytes());
    let crc = crc32c::crc32c(&writer.bytes);
    writer.bytes.extend_from_slice(&crc.to_be_bytes());
    writer.bytes
}

#[cfg(test)]
pub(crate) fn decode_book_for_test(bytes: &[u8]) -> Option<Vec<(String, CleanRecord)>> {
    decode_book(Bytes::copy_from_slice(bytes))
}

/// Where an open finds the record of the log's last clean close.
#[derive(Debug)]
pub enum CleanFrom {
    /// The `clean-shutdown` file in the log's directory (a log closed on its own).
    Dir,
    /// A record taken from a book, or None: no clean close of this log to trust. A
    /// `clean-shutdown` file in the directory is removed unused either way.
    Given(Option<CleanRecord>),
}
