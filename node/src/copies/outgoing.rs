//! What this node's store has committed and its copy does not hold yet: the commits'
//! writes, queued in commit order as the store makes them, for the shipper; and how far
//! the copy covers the commits, which the journal waits on before it acknowledges one.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::{watch, Notify};

use crate::store::{Op, Ship};

/// Every commit is covered: no copy is being kept in step (one copy wanted, no keeper
/// up, or the keeper unreachable or catching up), so a commit on this node's disk is
/// on every current copy.
pub(crate) const ALONE: u64 = u64::MAX;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Outgoing {
    queued: Mutex<Queued>,
    /// Something was queued.
    ready: Notify,
    /// Commits up to this number are on every current copy's disk ([`ALONE`]: on this
    /// node's alone, which is every current copy).
    covered: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Queued {
    /// Whether commits are queued at all (a session with a keeper is open or opening).
    keeping: bool,
    records: VecDeque<(u64, Vec<Op>)>,
}

impl Default for Outgoing {
    fn default() -> Self {
        Self {
            queued: Mutex::default(),
            ready: Notify::new(),
            covered: watch::Sender::new(ALONE),
        }
    }
}

impl Ship for Outgoing {
    fn ship(&self, number: u64, ops: &[Op]) {
        let mut queued = self.lock();
        if queued.keeping {
            queued.records.push_back((number, ops.to_vec()));
            drop(queued);
            self.ready.notify_one();
        }
    }
}

impl Outgoing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session with a keeper opens: commits are queued from now on.
    pub(crate) fn keep(&self) {
        self.lock().keeping = true;
    }

    /// No keeper: nothing is queued, and every commit is covered.
    pub(crate) fn alone(&self) {
        let mut queued = self.lock();
        queued.keeping = false;
        queued.records.clear();
        drop(queued);
        self.covered.send_replace(ALONE);
    }

    /// The copy holds the store as of commit `number` (a state transfer): records up to
    /// it are dropped.
    pub(crate) fn drop_through(&self, number: u64) {
        self.lock().records.retain(|(n, _)| *n > number);
    }

    /// Every record queued, in commit order, and the last one's number; waits for one
    /// if none is queued.
    pub(crate) async fn take(&self) -> (u64, Vec<Op>) {
        loop {
            let notified = self.ready.notified();
            {
                let mut queued = self.lock();
                if let Some(&(last, _)) = queued.records.back() {
                    let ops = queued.records.drain(..).flat_map(|(_, ops)| ops).collect();
                    return (last, ops);
                }
            }
            notified.await;
        }
    }

    /// Commits up to `number` are on the copy's disk as well as this node's.
    pub(crate) fn covered(&self, number: u64) {
        self.covered.send_replace(number);
    }

    /// How far commits are covered, to wait on.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.covered.subscribe()
    }

    /// Commits queued and not shipped yet.
    #[cfg(test)]
    fn lag(&self) -> usize {
        self.lock().records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u32) -> Vec<Op> {
        vec![Op::Counter(n, (n as i64, 1, 1, 0))]
    }

    #[tokio::test]
    async fn commits_are_queued_only_while_a_copy_is_kept_and_taken_in_order() {
        let out = Outgoing::default();
        out.ship(1, &op(1));
        assert_eq!(out.lag(), 0, "no keeper: nothing queued");
        assert_eq!(*out.watch().borrow(), ALONE);
        out.keep();
        out.ship(2, &op(2));
        out.ship(3, &op(3));
        out.ship(4, &op(4));
        out.drop_through(2);
        let (last, ops) = out.take().await;
        assert_eq!(last, 4);
        assert_eq!(ops, [op(3), op(4)].concat());
        out.covered(4);
        assert_eq!(*out.watch().borrow(), 4);
        out.ship(5, &op(5));
        out.alone();
        assert_eq!(out.lag(), 0);
        assert_eq!(*out.watch().borrow(), ALONE);
    }
}
