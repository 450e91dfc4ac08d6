//! The async runtime seam. Everything Spool needs from glommio beyond files and sockets — spawning,
//! timers, shard-local channels, starting pinned executors — goes through here, so the runtime
//! could be swapped by rewriting one module.

use std::future::Future;
use std::time::Duration;

pub use glommio::channels::local_channel::{
    new_bounded, new_unbounded, LocalReceiver, LocalSender,
};
pub use glommio::sync::Semaphore;
pub use glommio::Task;

/// Spawns a task on the current shard.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(future)
}

/// Spawns a task on the current shard and lets it run on its own.
pub fn spawn_detached(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Runs a blocking call (a slow file-system operation) on the executor's blocking thread, so
/// the shard keeps serving meanwhile.
pub async fn off_thread<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(call).await
}

pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await
}

/// Runs `future` for at most `duration`; `None` when it timed out.
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    let timer = async {
        glommio::timer::sleep(duration).await;
        None
    };
    futures_lite::future::or(async { Some(future.await) }, timer).await
}

/// A shard-local one-shot reply slot.
pub fn oneshot<T>() -> (LocalSender<T>, LocalReceiver<T>) {
    new_bounded(1)
}

/// Starts one executor pinned to CPU `cpu` (modulo the online CPUs) running `main` on its own
/// thread.
pub fn start_shard<F, Fut>(
    name: &str,
    cpu: usize,
    main: F,
) -> Result<glommio::ExecutorJoinHandle<()>, glommio::GlommioError<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu % cpus))
        .name(name)
        .spawn(main)
}
