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

/// Blocking threads per shard (glommio's pool): the durability round's `syncfs` must not queue
/// behind a segment unlink (tens of ms on ext4) or a directory sync. Not pinned: they mostly
/// wait for the device, and when they run they should not wait for the shard's CPU.
pub const BLOCKING_THREADS_PER_SHARD: usize = 2;

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
        .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD))
        .name(name)
        .spawn(main)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use glommio::channels::shared_channel;

    use super::*;

    /// The vendored glommio's sleep protocol (a fence on each side instead of a membarrier;
    /// vendor/glommio/SPOOL-PATCH.md): a message sent to a shard that is going to sleep, or
    /// asleep, must wake it. Two shards ping-pong, pausing at different rhythms so each often
    /// parks just as the other sends; a lost wake-up hangs a shard, which the bounded wait
    /// reports.
    #[test]
    fn a_parked_shard_always_wakes_for_a_message() {
        const ROUNDS: u64 = 20_000;
        let (to_echo, echo_in) = shared_channel::new_bounded::<u64>(1);
        let (to_pinger, pinger_in) = shared_channel::new_bounded::<u64>(1);
        let pinger = start_shard("wake-test-ping", 0, move || async move {
            let tx = to_echo.connect().await;
            let rx = pinger_in.connect().await;
            for i in 0..ROUNDS {
                tx.send(i).await.expect("echo gone");
                assert_eq!(rx.recv().await, Some(i));
                if i % 7 == 0 {
                    sleep(Duration::from_micros(20)).await;
                }
            }
        })
        .expect("start ping shard");
        let echo = start_shard("wake-test-echo", 1, move || async move {
            let rx = echo_in.connect().await;
            let tx = to_pinger.connect().await;
            for _ in 0..ROUNDS {
                let v = rx.recv().await.expect("pinger gone");
                if v % 5 == 0 {
                    sleep(Duration::from_micros(30)).await;
                }
                tx.send(v).await.expect("pinger gone");
            }
        })
        .expect("start echo shard");
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let outcome = pinger.join().is_ok() && echo.join().is_ok();
            let _ = done.send(outcome);
        });
        match finished.recv_timeout(Duration::from_secs(120)) {
            Ok(ok) => assert!(ok, "a shard panicked"),
            Err(_) => panic!("{ROUNDS} round trips not done in 120 s: a wake-up was lost"),
        }
    }
}
