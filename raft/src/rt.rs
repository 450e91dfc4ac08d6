//! openraft's `AsyncRuntime` on glommio: what a Raft group needs from its shard's executor.
//!
//! Tasks, timers and the executor are glommio's. The channels and the async mutex are tokio's
//! `sync` primitives, which are runtime-independent (no tokio runtime is started): they have the
//! exact semantics openraft's trait documents (weak senders, `try_recv`, `borrow_and_update`),
//! which glommio's own local channels lack.
//!
//! Owned by: the shard that runs the Raft group. Everything spawned here is `!Send` and runs on
//! the executor that is running on the calling thread; spawning, sleeping or timing out outside
//! a glommio executor is a bug (glommio panics).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::{Add, AddAssign, Deref, Sub, SubAssign};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use glommio::timer::Timer;
use openraft_rt::{
    mpsc, mutex, oneshot, watch, AsyncRuntime, Mpsc, MpscReceiver, MpscSender, MpscWeakSender,
    OptionalSend, OptionalSync,
};
use tokio::sync::mpsc as tokio_mpsc;
use tokio::sync::watch as tokio_watch;

/// openraft's runtime on a glommio shard.
///
/// `new`/`block_on` make and run a fresh `LocalExecutor` on the calling thread; openraft itself
/// never calls them (they exist for tests). In the broker, Raft runs inside the shard's
/// executor and only the associated functions (`spawn`, `sleep`, ...) are used.
pub struct GlommioRuntime {
    executor: glommio::LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioRuntime")
            .field("executor_id", &self.executor.id())
            .finish()
    }
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = GlommioInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<R, T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        // Detached: openraft drops handles of tasks it means to keep running, and dropping a
        // glommio `Task` would cancel it.
        JoinHandle(glommio::spawn_local(future).detach())
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Sleep::until(std::time::Instant::now() + duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Sleep::until(deadline.0)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Self::timeout_at(GlommioInstant(std::time::Instant::now() + duration), future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future,
            sleep: Sleep::until(deadline.0),
            _output: PhantomData,
        }
    }

    fn is_panic(_join_error: &Self::JoinError) -> bool {
        // With `panic = "abort"` a panicking task ends the process; a JoinError only ever means
        // the task was cancelled (its executor stopped).
        false
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rand::rng()
    }

    type Mpsc = TokioMpsc;
    type Watch = TokioWatch;
    type Oneshot = TokioOneshot;
    type Mutex<T: OptionalSend + 'static> = TokioMutex<T>;

    fn new(_threads: usize) -> Self {
        // A runtime is one shard: `threads` does not apply. No error path exists in the trait;
        // failing to set up io_uring here is an environment failure of a test.
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap_or_else(|e| panic!("cannot create a glommio LocalExecutor: {e}"));
        GlommioRuntime { executor }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.executor.run(future)
    }
}

/// Why a spawned task produced no value: glommio cancelled it (its executor stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("glommio task was cancelled before it completed")]
pub struct JoinError;

/// The handle of a detached glommio task; dropping it lets the task run on.
pub struct JoinHandle<T>(glommio::task::JoinHandle<T>);

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|v| v.ok_or(JoinError))
    }
}

/// A point on the monotonic clock glommio's timers use (`std::time::Instant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlommioInstant(pub std::time::Instant);

impl openraft_rt::Instant for GlommioInstant {
    fn now() -> Self {
        GlommioInstant(std::time::Instant::now())
    }
}

impl Add<Duration> for GlommioInstant {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        GlommioInstant(self.0 + rhs)
    }
}

impl AddAssign<Duration> for GlommioInstant {
    fn add_assign(&mut self, rhs: Duration) {
        self.0 += rhs;
    }
}

impl Sub<Duration> for GlommioInstant {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        GlommioInstant(self.0 - rhs)
    }
}

impl Sub<GlommioInstant> for GlommioInstant {
    type Output = Duration;
    fn sub(self, rhs: GlommioInstant) -> Duration {
        self.0.saturating_duration_since(rhs.0)
    }
}

impl SubAssign<Duration> for GlommioInstant {
    fn sub_assign(&mut self, rhs: Duration) {
        self.0 -= rhs;
    }
}

/// Completes at a deadline. The glommio timer is registered on first poll, not at creation, so
/// a `Sleep` may be built outside the executor (openraft builds some before spawning).
pub struct Sleep {
    deadline: std::time::Instant,
    timer: Option<Timer>,
}

impl Sleep {
    fn until(deadline: std::time::Instant) -> Sleep {
        Sleep {
            deadline,
            timer: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = std::time::Instant::now();
        if now >= self.deadline {
            self.timer = None;
            return Poll::Ready(());
        }
        let remaining = self.deadline - now;
        let timer = self.timer.get_or_insert_with(|| Timer::new(remaining));
        Pin::new(timer).poll(cx).map(|_| ())
    }
}

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// A future that must complete before a deadline. The future is polled first, so one that is
    /// ready at the deadline still wins.
    pub struct Timeout<R, F> {
        #[pin]
        future: F,
        sleep: Sleep,
        _output: PhantomData<fn() -> R>,
    }
}

impl<R, F: Future<Output = R>> Future for Timeout<R, F> {
    type Output = Result<R, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}

/// Bounded MPSC channels (tokio's, runtime-independent).
pub struct TokioMpsc;

pub struct MpscTx<T>(tokio_mpsc::Sender<T>);
pub struct MpscRx<T>(tokio_mpsc::Receiver<T>);
pub struct MpscWeakTx<T>(tokio_mpsc::WeakSender<T>);

impl<T> Clone for MpscTx<T> {
    fn clone(&self) -> Self {
        MpscTx(self.0.clone())
    }
}

impl<T> Clone for MpscWeakTx<T> {
    fn clone(&self) -> Self {
        MpscWeakTx(self.0.clone())
    }
}

impl Mpsc for TokioMpsc {
    type Sender<T: OptionalSend> = MpscTx<T>;
    type Receiver<T: OptionalSend> = MpscRx<T>;
    type WeakSender<T: OptionalSend> = MpscWeakTx<T>;

    fn channel<T: OptionalSend>(buffer: usize) -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = tokio_mpsc::channel(buffer);
        (MpscTx(tx), MpscRx(rx))
    }
}

impl<T: OptionalSend> MpscSender<TokioMpsc, T> for MpscTx<T> {
    async fn send(&self, msg: T) -> Result<(), mpsc::SendError<T>> {
        self.0.send(msg).await.map_err(|e| mpsc::SendError(e.0))
    }

    fn downgrade(&self) -> MpscWeakTx<T> {
        MpscWeakTx(self.0.downgrade())
    }
}

impl<T: OptionalSend> MpscReceiver<T> for MpscRx<T> {
    async fn recv(&mut self) -> Option<T> {
        self.0.recv().await
    }

    fn try_recv(&mut self) -> Result<T, mpsc::TryRecvError> {
        self.0.try_recv().map_err(|e| match e {
            tokio_mpsc::error::TryRecvError::Empty => mpsc::TryRecvError::Empty,
            tokio_mpsc::error::TryRecvError::Disconnected => mpsc::TryRecvError::Disconnected,
        })
    }
}

impl<T: OptionalSend> MpscWeakSender<TokioMpsc, T> for MpscWeakTx<T> {
    fn upgrade(&self) -> Option<MpscTx<T>> {
        self.0.upgrade().map(MpscTx)
    }
}

/// Watch channels (tokio's, runtime-independent).
pub struct TokioWatch;

pub struct WatchTx<T>(tokio_watch::Sender<T>);
pub struct WatchRx<T>(tokio_watch::Receiver<T>);
pub struct WatchRef<'a, T>(tokio_watch::Ref<'a, T>);

impl<T> Clone for WatchTx<T> {
    fn clone(&self) -> Self {
        WatchTx(self.0.clone())
    }
}

impl<T> Clone for WatchRx<T> {
    fn clone(&self) -> Self {
        WatchRx(self.0.clone())
    }
}

impl<T> Deref for WatchRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl watch::Watch for TokioWatch {
    type Sender<T: OptionalSend + OptionalSync> = WatchTx<T>;
    type Receiver<T: OptionalSend + OptionalSync> = WatchRx<T>;
    type Ref<'a, T: OptionalSend + 'a> = WatchRef<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (WatchTx<T>, WatchRx<T>) {
        let (tx, rx) = tokio_watch::channel(init);
        (WatchTx(tx), WatchRx(rx))
    }
}

impl<T: OptionalSend + OptionalSync> watch::WatchSender<TokioWatch, T> for WatchTx<T> {
    fn send(&self, value: T) -> Result<(), watch::SendError<T>> {
        self.0.send(value).map_err(|e| watch::SendError(e.0))
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        self.0.send_if_modified(modify)
    }

    fn borrow_watched(&self) -> WatchRef<'_, T> {
        WatchRef(self.0.borrow())
    }

    fn subscribe(&self) -> WatchRx<T> {
        WatchRx(self.0.subscribe())
    }
}

impl<T: OptionalSend + OptionalSync> watch::WatchReceiver<TokioWatch, T> for WatchRx<T> {
    async fn changed(&mut self) -> Result<(), watch::RecvError> {
        self.0.changed().await.map_err(|_| watch::RecvError(()))
    }

    fn borrow_watched(&self) -> WatchRef<'_, T> {
        WatchRef(self.0.borrow())
    }

    fn borrow_and_update(&mut self) -> WatchRef<'_, T> {
        WatchRef(self.0.borrow_and_update())
    }
}

/// Oneshot channels (tokio's, runtime-independent).
pub struct TokioOneshot;

pub struct OneshotTx<T>(tokio::sync::oneshot::Sender<T>);

impl oneshot::Oneshot for TokioOneshot {
    type Sender<T: OptionalSend> = OneshotTx<T>;
    type Receiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type ReceiverError = tokio::sync::oneshot::error::RecvError;

    fn channel<T: OptionalSend>() -> (Self::Sender<T>, Self::Receiver<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (OneshotTx(tx), rx)
    }
}

impl<T: OptionalSend> oneshot::OneshotSender<T> for OneshotTx<T> {
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

/// An async mutex (tokio's, runtime-independent). openraft uses it off the data path.
pub struct TokioMutex<T>(tokio::sync::Mutex<T>);

impl<T: OptionalSend + 'static> mutex::Mutex<T> for TokioMutex<T> {
    type Guard<'a> = tokio::sync::MutexGuard<'a, T>;

    fn new(value: T) -> Self {
        TokioMutex(tokio::sync::Mutex::new(value))
    }

    fn lock(&self) -> impl Future<Output = Self::Guard<'_>> + OptionalSend {
        self.0.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::GlommioRuntime;

    /// openraft's own conformance suite for runtimes, including the deterministic-RNG suite.
    #[test]
    fn openraft_runtime_suite() {
        openraft_rt::testing::Suite::<GlommioRuntime>::test_all();
    }
}
