//! A shard's durability rounds: the logs of one shard make their appended bytes durable
//! together, at a bounded number of device flushes per round instead of one per partition.
//!
//! A log's flush writes its new bytes (O_DIRECT: they reach the device when the write
//! completes), then *joins* the shard's round and waits for it. The round's runner (a task)
//! takes every member that joined since the last round started and makes them durable at once;
//! members that join while a round runs form the next one (group commit):
//! - [`SyncScope::Filesystem`] (the default): one `syncfs` per filesystem holding two or more
//!   members, one `fdatasync` for a filesystem holding one. `syncfs` writes back every dirty
//!   inode of the filesystem (the members' sizes among them) and issues one device flush, and
//!   since Linux 5.8 reports the errors of that writeback and flush to the caller.
//! - [`SyncScope::File`]: one `fdatasync` per member, issued together. For a log directory on a
//!   filesystem shared with other heavy writers, whose dirty pages `syncfs` would also write.
//!
//! Measured on this project's machine (`bench/sync_round.py`, BENCHMARKS.md): 64 files, one
//! round: 33.6 device flushes and 7.85 ms with a sync per file, 1 flush and 4.72 ms with
//! `syncfs`.
//!
//! Invariants:
//! - a round covers exactly the writes that completed before it started: a member joins only
//!   after its write completed, and a member that joins while a round runs waits for the next.
//! - every member of a round hears its filesystem's result; a failed sync fails every member on
//!   that filesystem, and each of their logs rolls back to what was durable before.
//! - a log whose filesystem the shard cannot track (more than [`SYNC_FILESYSTEMS_MAX`]) syncs
//!   its own file in the round.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use futures::future::LocalBoxFuture;

use crate::fs::{failpoints, off_thread, Backend, SegmentFile};

/// Members one round takes; later joiners wait for the next round.
pub const SYNC_ROUND_MEMBERS_MAX: usize = 4096;
/// Filesystems a shard keeps a `syncfs` handle for.
pub const SYNC_FILESYSTEMS_MAX: usize = 16;

/// How a round makes its members durable (`spool.log.sync.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncScope {
    Filesystem,
    File,
}

/// What a shard's rounds did, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub rounds: u64,
    pub members: u64,
    pub syncfs_calls: u64,
    pub fdatasync_calls: u64,
}

/// A shard's durability rounds. Created on the shard's executor ([`SyncRounds::start`]); its
/// runner task ends once the last handle is dropped.
pub struct SyncRounds {
    inner: Rc<Inner>,
}

/// Which filesystem a log lives on, as its shard's rounds know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FsKey(Option<usize>);

struct Inner {
    backend: Backend,
    scope: SyncScope,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    joined: Vec<Member>,
    runner: Option<Waker>,
    closed: bool,
    /// Per tracked filesystem: its device and an open directory on it (`syncfs` needs a
    /// descriptor). Shared with the blocking thread that runs the call.
    filesystems: Vec<(u64, Arc<std::fs::File>)>,
    stats: SyncStats,
}

struct Member {
    file: Rc<SegmentFile>,
    fs: FsKey,
    answer: Rc<Answer>,
}

/// A member's result slot. `io::Error` is not `Clone`, so a round's error is kept as its parts.
#[derive(Default)]
struct Answer {
    result: RefCell<Option<Result<(), SyncError>>>,
    waker: RefCell<Option<Waker>>,
}

#[derive(Clone)]
struct SyncError {
    raw: Option<i32>,
    kind: io::ErrorKind,
    message: String,
}

impl SyncError {
    fn of(error: &io::Error) -> SyncError {
        SyncError {
            raw: error.raw_os_error(),
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    fn into_io(self) -> io::Error {
        match self.raw {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.message),
        }
    }
}

impl SyncRounds {
    /// Starts the rounds of the calling executor's shard.
    pub fn start(backend: Backend, scope: SyncScope) -> Rc<SyncRounds> {
        let inner = Rc::new(Inner {
            backend,
            scope,
            state: RefCell::new(State::default()),
        });
        glommio::spawn_local(run(inner.clone())).detach();
        Rc::new(SyncRounds { inner })
    }

    pub fn stats(&self) -> SyncStats {
        self.inner.state.borrow().stats
    }

    /// The filesystem of a log directory, opening a handle on it the first time one of the
    /// shard's logs lives there. Blocking (a `stat`, maybe an `open`): call at log open only.
    pub(crate) fn filesystem_of(&self, dir: &Path) -> io::Result<FsKey> {
        let Backend::Dma = self.inner.backend else {
            return Ok(FsKey(Some(0)));
        };
        let dev = std::fs::metadata(dir)?.dev();
        let mut state = self.inner.state.borrow_mut();
        if let Some(i) = state.filesystems.iter().position(|(d, _)| *d == dev) {
            return Ok(FsKey(Some(i)));
        }
        if state.filesystems.len() >= SYNC_FILESYSTEMS_MAX {
            return Ok(FsKey(None));
        }
        // The parent (the log directory root) when it is on the same filesystem: a partition's
        // own directory may be deleted with its topic, and the handle would keep it alive.
        let parent = dir
            .parent()
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == dev));
        let handle = std::fs::File::open(parent.unwrap_or(dir))?;
        state.filesystems.push((dev, Arc::new(handle)));
        Ok(FsKey(Some(state.filesystems.len() - 1)))
    }

    /// Makes `file`'s completed writes durable in the next round that starts.
    pub(crate) async fn sync(&self, file: Rc<SegmentFile>, fs: FsKey) -> io::Result<()> {
        let answer = Rc::new(Answer::default());
        {
            let mut state = self.inner.state.borrow_mut();
            state.joined.push(Member {
                file,
                fs,
                answer: answer.clone(),
            });
            if let Some(runner) = state.runner.take() {
                runner.wake();
            }
        }
        poll_fn(|cx| match answer.result.borrow_mut().take() {
            Some(result) => Poll::Ready(result.map_err(SyncError::into_io)),
            None => {
                *answer.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for SyncRounds {
    fn drop(&mut self) {
        let mut state = self.inner.state.borrow_mut();
        state.closed = true;
        if let Some(runner) = state.runner.take() {
            runner.wake();
        }
    }
}

async fn run(inner: Rc<Inner>) {
    loop {
        let closed = poll_fn(|cx| {
            let mut state = inner.state.borrow_mut();
            if !state.joined.is_empty() {
                Poll::Ready(false)
            } else if state.closed {
                Poll::Ready(true)
            } else {
                state.runner = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if closed {
            return;
        }
        // No yield to gather more: the runner is a task of its own and runs only after the
        // task that woke it yields, so the flushes polled together (a shard's group commit is
        // one task) are all here. A yield cost a scheduling pass per round at 10 MB/s, where
        // ~95% of rounds have one member, and gathered no more at 1,000 partitions.
        let round: Vec<Member> = {
            let mut state = inner.state.borrow_mut();
            let n = state.joined.len().min(SYNC_ROUND_MEMBERS_MAX);
            state.stats.rounds += 1;
            state.stats.members += n as u64;
            state.joined.drain(..n).collect()
        };
        inner.run_round(round).await;
    }
}

impl Inner {
    async fn run_round(&self, mut round: Vec<Member>) {
        round.sort_by_key(|m| m.fs.0);
        let mut groups: Vec<Vec<Member>> = Vec::new();
        for member in round {
            match groups.last_mut() {
                Some(group) if member.fs.0.is_some() && group[0].fs == member.fs => {
                    group.push(member)
                }
                _ => groups.push(vec![member]),
            }
        }
        let syncs = groups.into_iter().flat_map(|group| {
            let whole_fs =
                self.scope == SyncScope::Filesystem && group.len() > 1 && group[0].fs.0.is_some();
            if whole_fs {
                vec![self.sync_filesystem(group)]
            } else {
                group.into_iter().map(|m| self.sync_file(m)).collect()
            }
        });
        futures::future::join_all(syncs).await;
    }

    fn sync_filesystem(&self, group: Vec<Member>) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            self.state.borrow_mut().stats.syncfs_calls += 1;
            let result = match &self.backend {
                Backend::Dma => {
                    let index = group[0].fs.0.expect("grouped by a tracked filesystem");
                    let handle = self.state.borrow().filesystems[index].1.clone();
                    off_thread(move || {
                        nix::unistd::syncfs(handle.as_raw_fd()).map_err(io::Error::from)
                    })
                    .await
                }
                Backend::Memory(fs) => match self.backend.failpoint(failpoints::SYNC_ROUND) {
                    Ok(()) => fs.sync_all().await,
                    Err(e) => Err(e),
                },
            };
            let result = result.map_err(|e| SyncError::of(&e));
            for member in group {
                member.answer(result.clone());
            }
        })
    }

    fn sync_file(&self, member: Member) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            self.state.borrow_mut().stats.fdatasync_calls += 1;
            let result = member.file.fdatasync().await.map_err(|e| SyncError::of(&e));
            member.answer(result);
        })
    }
}

impl Member {
    fn answer(self, result: Result<(), SyncError>) {
        *self.answer.result.borrow_mut() = Some(result);
        if let Some(waker) = self.answer.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}
