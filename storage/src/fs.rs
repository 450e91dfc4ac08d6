//! The narrow I/O seam under the log: a [`Backend`] (directory operations) and a [`SegmentFile`]
//! (positional reads, aligned writes, fdatasync, truncate). Everything above this module —
//! format, indexes, recovery, retention — is identical for both backends.
//!
//! `Backend::Dma` uses glommio `DmaFile` (O_DIRECT, io_uring). Directory operations (create,
//! list, rename) use blocking std calls: they take microseconds and happen at open and roll
//! only. Removing files and syncing a directory run on glommio's blocking thread pool instead:
//! unlinking a 128 MiB segment took 30-70 ms on ext4 (freeing its extents) and a directory
//! fsync waits for a journal commit, and on the shard thread either stalled every partition
//! and connection of the shard (retention deleting 8 segments stalled it ~400 ms). They run
//! one at a time there; a shard's clean stop and start need one directory sync per log
//! directory, not one per partition (`clean.rs`).
//!
//! `Backend::Memory` is an in-memory file system for tests. Fault model:
//! - every write lands in a file's *live* bytes; only `fdatasync` copies them to its *durable*
//!   bytes. [`MemFs::crash`] replaces live bytes by durable bytes in every file.
//! - [`MemFs::crash_torn`] additionally keeps a prefix of the most recent unsynced write.
//! - metadata operations (create, rename, remove) are durable immediately.
//! - [`MemFs::set_enospc`] makes every write fail with ENOSPC until cleared.
//! - [`MemFs::arm`] arms a named failure point (see [`failpoints`]): power is lost when the log
//!   reaches it. That operation and every later write, sync, truncate, create, rename and
//!   remove fail with EIO, until the test calls [`MemFs::crash`] (or `crash_torn`).
//!
//! - files removed while open stay readable and writable through the open handle (POSIX
//!   unlink semantics), so a read racing retention behaves as on a real disk.
//! - [`MemFs::hold`] parks every write, fdatasync or read ([`MemOp`]) of the log until the test
//!   calls [`MemFs::step`] (one passes) or [`MemFs::release`]: tests use it to run appends,
//!   reads and retention while a flush is awaiting its I/O.
//!
//! Writes must be aligned to [`SegmentFile::alignment`] in position and length on both backends,
//! so the memory backend catches alignment bugs that O_DIRECT would turn into EINVAL.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::poll_fn;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

/// Alignment the memory backend enforces, the common O_DIRECT block size.
pub const MEM_ALIGNMENT_BYTES: u64 = 4096;

/// Names of the failure points the log passes through. Arm them with [`MemFs::arm`].
pub mod failpoints {
    /// In `flush`, after the segment bytes are written, before fdatasync.
    pub const FLUSH_AFTER_WRITE_BEFORE_SYNC: &str = "flush.after_write_before_sync";
    /// In `flush`, after fdatasync, before the log records the bytes as durable.
    pub const FLUSH_AFTER_SYNC: &str = "flush.after_sync";
    /// Mid segment roll: the old segment's data is durable, its index files are not written.
    pub const ROLL_BEFORE_INDEX: &str = "roll.before_index";
    /// Mid segment roll: index files written, producer snapshot not yet written.
    pub const ROLL_BEFORE_SNAPSHOT: &str = "roll.before_snapshot";
    /// Mid segment roll: the new segment's file exists, nothing written to it yet.
    pub const ROLL_AFTER_CREATE: &str = "roll.after_create";
    /// In `close`, after everything is flushed, before the clean-shutdown marker is written.
    pub const CLOSE_BEFORE_MARKER: &str = "close.before_marker";
    /// In a cleaning, after the output is written and synced, before the swap commits.
    pub const CLEAN_BEFORE_SWAP: &str = "clean.before_swap";
    /// In a cleaning, right after the swap committed (renamed and the directory synced).
    pub const CLEAN_AFTER_SWAP_COMMIT: &str = "clean.after_swap_commit";
    /// In a shard's durability round, before its `syncfs`: every member's sync fails.
    pub const SYNC_ROUND: &str = "sync.round";

    pub const ALL: [&str; 6] = [
        FLUSH_AFTER_WRITE_BEFORE_SYNC,
        FLUSH_AFTER_SYNC,
        ROLL_BEFORE_INDEX,
        ROLL_BEFORE_SNAPSHOT,
        ROLL_AFTER_CREATE,
        CLOSE_BEFORE_MARKER,
    ];
}

/// Where segment files live: real O_DIRECT files, or an in-memory file system for tests.
#[derive(Clone, Debug)]
pub enum Backend {
    Dma,
    Memory(MemFs),
}

/// Runs a blocking file-system call on the executor's blocking thread pool, so the shard's
/// thread keeps serving while the kernel works.
pub(crate) async fn off_thread<T: Send + 'static>(
    call: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    glommio::executor().spawn_blocking(call).await
}

impl Backend {
    /// Opens `path` for reading and writing, creating it if absent.
    pub(crate) async fn open_file(&self, path: &Path) -> io::Result<SegmentFile> {
        match self {
            Backend::Dma => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .dma_open(path)
                    .await?;
                Ok(SegmentFile::Dma(file))
            }
            Backend::Memory(fs) => {
                if !fs.inner.borrow().files.contains_key(path) {
                    fs.check_alive()?;
                }
                let state = fs
                    .inner
                    .borrow_mut()
                    .files
                    .entry(path.to_path_buf())
                    .or_default()
                    .clone();
                Ok(SegmentFile::Memory(MemFile {
                    fs: fs.clone(),
                    path: path.to_path_buf(),
                    state,
                }))
            }
        }
    }

    /// glommio 0.9 decides once per block device whether io_uring polled I/O works by reading
    /// the first DmaFile it opens. If that file is empty the read trivially succeeds and every
    /// later read fails with EOPNOTSUPP on devices without polling. So the first open on a
    /// device must see data: open a one-block probe file in `dir` before any segment.
    pub(crate) async fn prime_iopoll_probe(&self, dir: &Path) -> io::Result<()> {
        if let Backend::Dma = self {
            let probe = dir.join(".iopoll-probe");
            std::fs::write(&probe, [0u8; 4096])?;
            let file = OpenOptions::new().read(true).dma_open(&probe).await;
            std::fs::remove_file(&probe)?;
            file?.close().await?;
        }
        Ok(())
    }

    pub(crate) fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        match self {
            Backend::Dma => std::fs::create_dir_all(dir),
            Backend::Memory(fs) => {
                fs.inner.borrow_mut().dirs.insert(dir.to_path_buf());
                Ok(())
            }
        }
    }

    /// File names (not paths) directly inside `dir`.
    pub(crate) fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        match self {
            Backend::Dma => {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(dir)? {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
                Ok(names)
            }
            Backend::Memory(fs) => Ok(fs
                .inner
                .borrow()
                .files
                .keys()
                .filter(|path| path.parent() == Some(dir))
                .filter_map(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect()),
        }
    }

    pub(crate) fn exists(&self, path: &Path) -> bool {
        match self {
            Backend::Dma => path.exists(),
            Backend::Memory(fs) => fs.inner.borrow().files.contains_key(path),
        }
    }

    /// Removes a file; a missing file is not an error.
    pub(crate) async fn remove_file(&self, path: &Path) -> io::Result<()> {
        match self {
            Backend::Dma => {
                let path = path.to_path_buf();
                off_thread(move || match std::fs::remove_file(&path) {
                    Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                })
                .await
            }
            Backend::Memory(fs) => {
                fs.check_alive()?;
                fs.inner.borrow_mut().files.remove(path);
                Ok(())
            }
        }
    }

    pub(crate) async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        match self {
            Backend::Dma => {
                let dir = dir.to_path_buf();
                off_thread(move || std::fs::remove_dir_all(&dir)).await
            }
            Backend::Memory(fs) => {
                let mut inner = fs.inner.borrow_mut();
                inner.files.retain(|path, _| !path.starts_with(dir));
                inner.dirs.retain(|path| !path.starts_with(dir));
                Ok(())
            }
        }
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self {
            Backend::Dma => std::fs::rename(from, to),
            Backend::Memory(fs) => {
                fs.check_alive()?;
                let mut inner = fs.inner.borrow_mut();
                let file = inner.files.remove(from).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "rename of a missing file")
                })?;
                inner.files.insert(to.to_path_buf(), file);
                Ok(())
            }
        }
    }

    /// Makes creations, renames and removals in `dir` durable.
    pub(crate) async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self {
            Backend::Dma => {
                let dir = dir.to_path_buf();
                off_thread(move || std::fs::File::open(&dir)?.sync_all()).await
            }
            Backend::Memory(_) => Ok(()),
        }
    }

    /// Replaces `path` with `bytes` atomically: write a temporary file, fdatasync, rename.
    pub(crate) async fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(path);
        let file = self.open_file(&tmp).await?;
        let result = file.write_whole(bytes).await;
        file.close().await?;
        result?;
        self.rename(&tmp, path)?;
        self.sync_dir(path.parent().unwrap_or(Path::new("."))).await
    }

    /// Opens an existing file for reading; NotFound if it is not there (never creates it,
    /// so a reader racing an unlink cannot leave an empty file behind).
    pub(crate) async fn open_existing(&self, path: &Path) -> io::Result<SegmentFile> {
        match self {
            Backend::Dma => {
                let file = OpenOptions::new().read(true).dma_open(path).await?;
                Ok(SegmentFile::Dma(file))
            }
            Backend::Memory(fs) => {
                if !fs.inner.borrow().files.contains_key(path) {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
                }
                self.open_file(path).await
            }
        }
    }

    /// The whole content of `path`, or None if it does not exist.
    pub(crate) async fn read_file(&self, path: &Path) -> io::Result<Option<Bytes>> {
        if !self.exists(path) {
            return Ok(None);
        }
        let file = self.open_file(path).await?;
        let size = file.size().await?;
        let bytes = file
            .read_at(0, usize::try_from(size).unwrap_or(usize::MAX))
            .await;
        file.close().await?;
        bytes.map(Some)
    }

    /// `read_file`, or None also if the file holds more than `max` bytes (not read then).
    pub(crate) async fn read_file_bounded(
        &self,
        path: &Path,
        max: usize,
    ) -> io::Result<Option<Bytes>> {
        if !self.exists(path) {
            return Ok(None);
        }
        let file = self.open_file(path).await?;
        let size = file.size().await;
        let bytes = match size {
            Ok(size) if size <= max as u64 => file.read_at(0, size as usize).await.map(Some),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        };
        file.close().await?;
        bytes
    }

    /// Fails once if the named failure point is armed (memory backend only).
    pub(crate) fn failpoint(&self, name: &'static str) -> io::Result<()> {
        match self {
            Backend::Dma => Ok(()),
            Backend::Memory(fs) => {
                let mut inner = fs.inner.borrow_mut();
                if inner.armed.remove(name) {
                    inner.dead = true;
                    Err(io::Error::other(format!("failure point {name}")))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Name of the temporary file used while writing `path` atomically.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// One open file of a partition directory.
#[derive(Debug)]
pub enum SegmentFile {
    Dma(DmaFile),
    Memory(MemFile),
}

impl SegmentFile {
    pub(crate) fn alignment(&self) -> u64 {
        match self {
            SegmentFile::Dma(file) => file.alignment(),
            SegmentFile::Memory(_) => MEM_ALIGNMENT_BYTES,
        }
    }

    /// Writes `data` at `pos`. Both must be aligned to [`Self::alignment`].
    pub(crate) async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        let alignment = self.alignment();
        assert!(
            pos.is_multiple_of(alignment),
            "unaligned write position {pos}"
        );
        assert!(
            (data.len() as u64).is_multiple_of(alignment),
            "unaligned write length {}",
            data.len()
        );
        match self {
            SegmentFile::Dma(file) => {
                let mut buffer = file.alloc_dma_buffer(data.len());
                buffer.as_bytes_mut().copy_from_slice(data);
                let written = file.write_at(buffer, pos).await?;
                if written != data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short O_DIRECT write",
                    ));
                }
                Ok(())
            }
            SegmentFile::Memory(file) => {
                file.fs.pass(MemOp::Write).await;
                file.write_at(pos, data)
            }
        }
    }

    /// Assembles `parts` back to back, zero padded to [`Self::alignment`], directly in the
    /// buffer the write will use: the data is copied once, with no intermediate image.
    pub(crate) fn image<'a>(
        &self,
        parts: impl IntoIterator<Item = &'a [u8]>,
        len: usize,
    ) -> WriteImage {
        let alignment = usize::try_from(self.alignment()).unwrap_or(usize::MAX);
        let padded_len = len.div_ceil(alignment) * alignment;
        let fill = |out: &mut [u8]| {
            let mut at = 0;
            for part in parts {
                out[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            assert_eq!(at, len, "image parts disagree with the planned length");
            // The write buffer is not zeroed by its allocator; the padding must be.
            out[at..].fill(0);
        };
        match self {
            SegmentFile::Dma(file) => {
                let mut buffer = file.alloc_dma_buffer(padded_len);
                fill(buffer.as_bytes_mut());
                WriteImage::Dma(buffer)
            }
            SegmentFile::Memory(_) => {
                let mut bytes = vec![0; padded_len];
                fill(&mut bytes);
                WriteImage::Memory(bytes)
            }
        }
    }

    /// Writes an image made by [`Self::image`] at `pos` (aligned).
    pub(crate) async fn write_image(&self, pos: u64, image: WriteImage) -> io::Result<()> {
        assert!(
            pos.is_multiple_of(self.alignment()),
            "unaligned write position {pos}"
        );
        match (self, image) {
            (SegmentFile::Dma(file), WriteImage::Dma(buffer)) => {
                let len = buffer.len();
                let written = file.write_at(buffer, pos).await?;
                if written != len {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short O_DIRECT write",
                    ));
                }
                Ok(())
            }
            (SegmentFile::Memory(_), WriteImage::Memory(bytes)) => self.write_at(pos, &bytes).await,
            _ => unreachable!("an image is written to the kind of file that made it"),
        }
    }

    /// Reads up to `len` bytes at `pos` (fewer at end of file). No alignment required.
    pub(crate) async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        match self {
            SegmentFile::Dma(file) => {
                let result = file.read_at(pos, len).await?;
                Ok(Bytes::copy_from_slice(&result))
            }
            SegmentFile::Memory(file) => {
                file.fs.pass(MemOp::Read).await;
                Ok(file.read_at(pos, len))
            }
        }
    }

    pub(crate) async fn fdatasync(&self) -> io::Result<()> {
        match self {
            SegmentFile::Dma(file) => Ok(file.fdatasync().await?),
            SegmentFile::Memory(file) => {
                file.fs.pass(MemOp::Sync).await;
                file.fdatasync()
            }
        }
    }

    pub(crate) async fn truncate(&self, len: u64) -> io::Result<()> {
        match self {
            SegmentFile::Dma(file) => Ok(file.truncate(len).await?),
            SegmentFile::Memory(file) => file.truncate(len),
        }
    }

    pub(crate) async fn size(&self) -> io::Result<u64> {
        match self {
            SegmentFile::Dma(file) => Ok(file.file_size().await?),
            SegmentFile::Memory(file) => Ok(file.len()),
        }
    }

    pub(crate) async fn close(self) -> io::Result<()> {
        match self {
            SegmentFile::Dma(file) => Ok(file.close().await?),
            SegmentFile::Memory(_) => Ok(()),
        }
    }

    /// Writes `bytes` as the whole file content (zero padded to alignment, then truncated to
    /// the exact length) and fdatasyncs. For small files: indexes, snapshots, markers.
    pub(crate) async fn write_whole(&self, bytes: &[u8]) -> io::Result<()> {
        let padded = pad_to_alignment(bytes, self.alignment());
        if !padded.is_empty() {
            self.write_at(0, &padded).await?;
        }
        self.truncate(bytes.len() as u64).await?;
        self.fdatasync().await
    }
}

/// Bytes ready for one aligned write, in the buffer type the backend writes from.
pub(crate) enum WriteImage {
    Dma(glommio::io::DmaBuffer),
    Memory(Vec<u8>),
}

/// `bytes` followed by zeros up to a multiple of `alignment`.
pub(crate) fn pad_to_alignment(bytes: &[u8], alignment: u64) -> Vec<u8> {
    let alignment = usize::try_from(alignment).unwrap_or(usize::MAX);
    let padded_len = bytes.len().div_ceil(alignment) * alignment;
    let mut padded = Vec::with_capacity(padded_len);
    padded.extend_from_slice(bytes);
    padded.resize(padded_len, 0);
    padded
}

/// Cloneable handle to an in-memory file system. See the module header for its fault model.
#[derive(Clone, Default)]
pub struct MemFs {
    inner: Rc<RefCell<MemFsInner>>,
}

impl std::fmt::Debug for MemFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemFs")
            .field("files", &self.inner.borrow().files.len())
            .finish()
    }
}

/// Operations of a [`MemFs`] a test can park with [`MemFs::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemOp {
    Write,
    Sync,
    Read,
}

/// Parking state of one [`MemOp`].
#[derive(Default)]
struct Hold {
    held: bool,
    /// Parked operations allowed through by `step` and not yet taken.
    passes: usize,
    /// Operations currently parked.
    parked: usize,
    wakers: Vec<Waker>,
}

type FileHandle = Rc<RefCell<MemFileState>>;

#[derive(Default)]
struct MemFsInner {
    /// Open handles share the state, so a removed file lives on while it is open.
    files: BTreeMap<PathBuf, FileHandle>,
    holds: HashMap<MemOp, Hold>,
    dirs: BTreeSet<PathBuf>,
    armed: HashSet<&'static str>,
    enospc: bool,
    /// Power is lost (a failure point was hit): every mutation fails until `crash`.
    dead: bool,
    /// The most recent write not yet covered by an fdatasync: (path, position, bytes).
    last_unsynced_write: Option<(PathBuf, u64, Vec<u8>)>,
}

#[derive(Default, Clone)]
struct MemFileState {
    live: Vec<u8>,
    durable: Vec<u8>,
}

impl MemFs {
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// Arms a failure point from [`failpoints`]: it fails once, the next time it is reached.
    pub fn arm(&self, name: &'static str) {
        self.inner.borrow_mut().armed.insert(name);
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.inner.borrow().dead {
            return Err(io::Error::from_raw_os_error(5)); // EIO: the power is gone
        }
        Ok(())
    }

    /// Parks every later `op` until [`MemFs::step`] or [`MemFs::release`].
    pub fn hold(&self, op: MemOp) {
        self.inner.borrow_mut().holds.entry(op).or_default().held = true;
    }

    /// Lets one parked (or the next) `op` through; later ones stay parked.
    pub fn step(&self, op: MemOp) {
        let mut inner = self.inner.borrow_mut();
        let hold = inner.holds.entry(op).or_default();
        hold.passes += 1;
        hold.wakers.drain(..).for_each(Waker::wake);
    }

    /// Stops parking `op` and wakes every parked one.
    pub fn release(&self, op: MemOp) {
        let mut inner = self.inner.borrow_mut();
        let hold = inner.holds.entry(op).or_default();
        hold.held = false;
        hold.passes = 0;
        hold.wakers.drain(..).for_each(Waker::wake);
    }

    /// How many `op`s are parked right now.
    pub fn parked(&self, op: MemOp) -> usize {
        self.inner
            .borrow()
            .holds
            .get(&op)
            .map_or(0, |hold| hold.parked)
    }

    /// Waits while `op` is held (see [`MemFs::hold`]).
    async fn pass(&self, op: MemOp) {
        let mut parked = false;
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let hold = inner.holds.entry(op).or_default();
            if !hold.held || hold.passes > 0 {
                if hold.held {
                    hold.passes -= 1;
                }
                if parked {
                    hold.parked -= 1;
                }
                return Poll::Ready(());
            }
            if !parked {
                parked = true;
                hold.parked += 1;
            }
            hold.wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// While set, every write fails with ENOSPC.
    pub fn set_enospc(&self, on: bool) {
        self.inner.borrow_mut().enospc = on;
    }

    /// `syncfs`: every file's live bytes become durable.
    pub(crate) async fn sync_all(&self) -> io::Result<()> {
        self.pass(MemOp::Sync).await;
        self.check_alive()?;
        let mut inner = self.inner.borrow_mut();
        for file in inner.files.values() {
            let mut file = file.borrow_mut();
            file.durable = file.live.clone();
        }
        inner.last_unsynced_write = None;
        Ok(())
    }

    /// Power loss: every file loses what was not fdatasynced.
    pub fn crash(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.last_unsynced_write = None;
        inner.dead = false;
        for file in inner.files.values() {
            let mut file = file.borrow_mut();
            file.live = file.durable.clone();
        }
    }

    /// Power loss during the most recent unsynced write: its first `prefix_bytes` reached the
    /// disk, everything else not fdatasynced is lost.
    pub fn crash_torn(&self, prefix_bytes: usize) {
        let torn = self.inner.borrow_mut().last_unsynced_write.take();
        if let Some((path, pos, data)) = torn {
            let inner = self.inner.borrow();
            if let Some(file) = inner.files.get(&path) {
                let prefix = &data[..prefix_bytes.min(data.len())];
                write_into(&mut file.borrow_mut().durable, pos, prefix);
            }
        }
        self.crash();
    }

    /// Live bytes of a file, or None if absent.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        self.inner
            .borrow()
            .files
            .get(path)
            .map(|file| file.borrow().live.clone())
    }

    /// XORs `mask` into the byte at `pos`, live and durable (bit rot).
    pub fn corrupt(&self, path: &Path, pos: usize, mask: u8) {
        let inner = self.inner.borrow();
        let mut file = inner
            .files
            .get(path)
            .expect("corrupt: no such file")
            .borrow_mut();
        let file = &mut *file;
        for bytes in [&mut file.live, &mut file.durable] {
            if pos < bytes.len() {
                bytes[pos] ^= mask;
            }
        }
    }

    /// Replaces a file's bytes, live and durable, creating it if absent (damage or a bug).
    pub fn overwrite(&self, path: &Path, bytes: &[u8]) {
        let state = MemFileState {
            live: bytes.to_vec(),
            durable: bytes.to_vec(),
        };
        self.inner
            .borrow_mut()
            .files
            .insert(path.to_path_buf(), Rc::new(RefCell::new(state)));
    }

    /// Removes a file, as an operator or a bug might.
    pub fn remove(&self, path: &Path) {
        self.inner.borrow_mut().files.remove(path);
    }

    /// Paths of every file, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.inner.borrow().files.keys().cloned().collect()
    }
}

/// An open file of a [`MemFs`].
#[derive(Debug)]
pub struct MemFile {
    fs: MemFs,
    path: PathBuf,
    state: FileHandle,
}

impl std::fmt::Debug for MemFileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemFileState")
            .field("live", &self.live.len())
            .field("durable", &self.durable.len())
            .finish()
    }
}

impl MemFile {
    fn with_state<T>(&self, f: impl FnOnce(&mut MemFileState) -> T) -> io::Result<T> {
        Ok(f(&mut self.state.borrow_mut()))
    }

    fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.fs.check_alive()?;
        if self.fs.inner.borrow().enospc {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.with_state(|state| write_into(&mut state.live, pos, data))?;
        self.fs.inner.borrow_mut().last_unsynced_write =
            Some((self.path.clone(), pos, data.to_vec()));
        Ok(())
    }

    fn read_at(&self, pos: u64, len: usize) -> Bytes {
        self.with_state(|state| {
            let start = usize::try_from(pos)
                .unwrap_or(usize::MAX)
                .min(state.live.len());
            let end = start.saturating_add(len).min(state.live.len());
            Bytes::copy_from_slice(&state.live[start..end])
        })
        .unwrap_or_default()
    }

    fn fdatasync(&self) -> io::Result<()> {
        self.fs.check_alive()?;
        self.with_state(|state| state.durable = state.live.clone())?;
        let mut inner = self.fs.inner.borrow_mut();
        if inner
            .last_unsynced_write
            .as_ref()
            .is_some_and(|(path, _, _)| *path == self.path)
        {
            inner.last_unsynced_write = None;
        }
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.fs.check_alive()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.with_state(|state| state.live.resize(len, 0))
    }

    fn len(&self) -> u64 {
        self.with_state(|state| state.live.len() as u64)
            .unwrap_or(0)
    }
}

fn write_into(bytes: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let start = usize::try_from(pos).expect("memory file position fits usize");
    let end = start + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}
