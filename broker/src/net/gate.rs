//! The start-up gate: listeners open only once every shard is ready.
//!
//! An open port means the broker can serve (Kafka likewise starts its acceptors at the end of
//! start-up). A shard used to listen as soon as its own partitions were open, while other shards
//! were still recovering theirs: a client connected and its requests queued behind that recovery,
//! and anything that probes the port took the broker for ready. Now each shard reports `Ready`
//! once its partitions are open and its mesh receive loops run (loading consumer groups goes on
//! in the background; until it ends, their requests get COORDINATOR_LOAD_IN_PROGRESS); the main
//! thread then checks the address is free and opens the gate, every shard binds and listens, and
//! reports `Listening`.
//!
//! The main thread blocks on a std channel; shards must not block their executor, so they poll
//! the gate flag with a timer (`GATE_POLL_MS`, a delay paid once per start-up).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::runtime;

/// How often a shard waiting for the gate looks at it.
const GATE_POLL_MS: u64 = 2;
/// How often the main thread, waiting for shards, looks at the shutdown flag.
const SHUTDOWN_POLL_MS: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Partitions opened and recovered, mesh receive loops running.
    Ready,
    /// Listener bound and listening.
    Listening,
}

/// The main thread's side.
pub struct StartGate {
    open: Arc<AtomicBool>,
    events: Receiver<(usize, Stage)>,
    shards: usize,
}

/// A shard's side.
pub struct ShardGate {
    open: Arc<AtomicBool>,
    events: Sender<(usize, Stage)>,
}

pub fn start_gate(shards: usize) -> (StartGate, Vec<ShardGate>) {
    let open = Arc::new(AtomicBool::new(false));
    let (tx, events) = channel();
    let shard_gates = (0..shards)
        .map(|_| ShardGate {
            open: open.clone(),
            events: tx.clone(),
        })
        .collect();
    // Only the shards hold senders, so the main thread sees a disconnect once all are gone.
    drop(tx);
    (
        StartGate {
            open,
            events,
            shards,
        },
        shard_gates,
    )
}

impl StartGate {
    /// Blocks until every shard has reported `stage`; false if shutdown was requested or the
    /// shards are gone first.
    pub fn wait_all(&self, stage: Stage, shutdown: &AtomicBool) -> bool {
        let mut reached = vec![false; self.shards];
        let started = std::time::Instant::now();
        let mut next_report = Duration::from_secs(30);
        while !reached.iter().all(|&r| r) {
            if shutdown.load(Ordering::Relaxed) {
                return false;
            }
            // A shard that never gets there (a hung start) would otherwise leave no trace.
            if started.elapsed() >= next_report {
                let waiting: Vec<usize> = (0..self.shards).filter(|&s| !reached[s]).collect();
                tracing::warn!(
                    ?stage,
                    ?waiting,
                    "shards not there after {:?}",
                    started.elapsed()
                );
                next_report += Duration::from_secs(30);
            }
            match self
                .events
                .recv_timeout(Duration::from_millis(SHUTDOWN_POLL_MS))
            {
                Ok((shard, s)) if s == stage => reached[shard] = true,
                Ok((shard, s)) => {
                    unreachable!("shard {shard} reported {s:?} while waiting for {stage:?}")
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        true
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
    }
}

impl ShardGate {
    pub fn report(&self, shard: usize, stage: Stage) {
        // The main thread only stops listening when shutting down; nothing to tell it then.
        let _ = self.events.send((shard, stage));
    }

    /// Waits until the listeners may open; false if shutdown was requested first.
    pub async fn wait_open(&self, shutdown: &AtomicBool) -> bool {
        loop {
            if self.open.load(Ordering::Acquire) {
                return true;
            }
            if shutdown.load(Ordering::Relaxed) {
                return false;
            }
            runtime::sleep(Duration::from_millis(GATE_POLL_MS)).await;
        }
    }
}
