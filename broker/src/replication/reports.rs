//! Leadership reports to the controller, batched per shard: a group that wins an election
//! queues its report, and one request at a time carries everything queued meanwhile, so the
//! controller commits one metadata batch for many partitions. After a node dies its thousands
//! of groups elect within a second or two; one report and one metadata commit each, in turn,
//! took minutes (10,000 partitions never settled).
//!
//! Owned by: the shard (`!Send`, one per shard thread).

use std::cell::{Cell, RefCell};

use crate::cluster::rpc::LeaderReport;
use crate::runtime::{self, LocalReceiver, LocalSender};

/// Reports one request carries at most (about 60 bytes each, far below the controller RPC's
/// bound).
pub const LEADER_REPORTS_PER_REQUEST_MAX: usize = 4096;

/// Reports queued at most; past it a report is refused at once and its group retries later.
pub const LEADER_REPORTS_QUEUED_MAX: usize = 65_536;

struct Queued {
    report: LeaderReport,
    reply: LocalSender<bool>,
}

#[derive(Default)]
pub struct LeaderReports {
    queued: RefCell<Vec<Queued>>,
    sending: Cell<bool>,
}

impl LeaderReports {
    /// Queues `report`; the answer says whether the controller took it. `None` when the
    /// queue is full (answer: not taken).
    pub fn push(&self, report: LeaderReport) -> Option<LocalReceiver<bool>> {
        let mut queued = self.queued.borrow_mut();
        if queued.len() >= LEADER_REPORTS_QUEUED_MAX {
            return None;
        }
        let (reply, answer) = runtime::oneshot();
        queued.push(Queued { report, reply });
        Some(answer)
    }

    /// Claims the right to send (false: a sender runs already and will take what is queued).
    pub fn start_sending(&self) -> bool {
        !self.sending.replace(true)
    }

    /// The next batch to send, oldest first; empty ends the sender's turn.
    pub fn next_batch(&self) -> (Vec<LeaderReport>, Vec<LocalSender<bool>>) {
        let mut queued = self.queued.borrow_mut();
        let n = queued.len().min(LEADER_REPORTS_PER_REQUEST_MAX);
        if n == 0 {
            self.sending.set(false);
        }
        queued.drain(..n).map(|q| (q.report, q.reply)).unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(partition: i32) -> LeaderReport {
        LeaderReport {
            topic: "t".into(),
            partition,
            epoch: 1,
        }
    }

    #[test]
    fn one_sender_takes_everything_queued_in_bounded_batches() {
        let reports = LeaderReports::default();
        let answers: Vec<_> = (0..(LEADER_REPORTS_PER_REQUEST_MAX as i32 + 5))
            .map(|p| reports.push(report(p)).expect("room"))
            .collect();
        assert!(reports.start_sending());
        assert!(!reports.start_sending(), "a second sender while one runs");
        let (first, replies) = reports.next_batch();
        assert_eq!(first.len(), LEADER_REPORTS_PER_REQUEST_MAX);
        assert_eq!(first[0], report(0));
        for r in replies {
            let _ = r.try_send(true);
        }
        let (rest, _replies) = reports.next_batch();
        assert_eq!(rest.len(), 5);
        assert!(!reports.start_sending(), "still the same sender's turn");
        let (none, _) = reports.next_batch();
        assert!(none.is_empty());
        assert!(reports.start_sending(), "an empty batch ends the turn");
        drop(answers);
    }
}
