//! What this node's store has committed and its copy does not hold yet: the commits'
//! writes, queued in commit order as the store makes them, for the shipper; and how far
//! the copy covers the commits, which the journal waits on before it acknowledges one.
//!
//! **Sessions.** Each session with a keeper has an epoch. A transfer begins one, under
//! the store's commit lock ([`Outgoing::start_session`]): the queue keeps only commits
//! after the transfer's, and the cover drops to the transfer's commit, so a commit made
//! from then on waits for its shipment. An acknowledgement counts only for the session
//! it was sent in ([`Outgoing::covered_in`]): a commit that fails ([`Ship::failed`]: it
//! may have been shipped, and its retry reuses its number with other writes) ends the
//! session, and the next begins with a transfer of what the store holds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shared::copies::{CopyStatus, TRANSFER_PART_OPS};
use tokio::sync::Notify;

use crate::store::{Cover, Op, Ship};

/// Every commit is covered: no copy is kept (one copy wanted, or no other member up),
/// so a commit on this node's disk is on every current copy.
pub(crate) const ALONE: u64 = u64::MAX;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Outgoing {
    queued: Mutex<Queued>,
    /// Something was queued.
    ready: Notify,
    /// Commits up to this number are on every current copy's disk ([`ALONE`]: on this
    /// node's alone, which is every current copy).
    covered: Arc<Cover>,
    /// The last commit made (shipped or not).
    last: AtomicU64,
    /// The member whose copy is in step, if any.
    kept_by: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Queued {
    /// Whether commits are queued at all (a session with a keeper is open or opening).
    keeping: bool,
    /// The current session's epoch.
    epoch: u64,
    /// Shippers stopped so far (see [`Outgoing::stop`]): a session starts only under
    /// the shipper that began it.
    stopped: u64,
    records: VecDeque<(u64, Vec<Op>)>,
}

impl Default for Outgoing {
    fn default() -> Self {
        Self {
            queued: Mutex::default(),
            ready: Notify::new(),
            // Nothing covered until the shipper opens a session or finds no keeper (see
            // crate::copies::shipper): a journal that starts waits for that.
            covered: Arc::new(Cover::default()),
            last: AtomicU64::new(0),
            kept_by: Mutex::default(),
        }
    }
}

impl Ship for Outgoing {
    fn ship(&self, number: u64, ops: &[Op]) {
        self.last.fetch_max(number, Ordering::Relaxed);
        let mut queued = self.lock();
        if queued.keeping {
            queued.records.push_back((number, ops.to_vec()));
            drop(queued);
            self.ready.notify_one();
        }
    }

    fn failed(&self, number: u64) {
        let mut queued = self.lock();
        // Nothing of it was shipped (it failed before): the session holds.
        if !queued.keeping || self.last.load(Ordering::Relaxed) < number {
            return;
        }
        queued.epoch += 1;
        queued.records.retain(|(n, _)| *n < number);
        self.covered.set(|c| c.min(number.saturating_sub(1)));
    }
}

impl Outgoing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session with a keeper is to open: commits are queued from now on.
    pub(crate) fn keep(&self) {
        self.lock().keeping = true;
    }

    /// Whether commits are queued for a keeper.
    pub(crate) fn keeping(&self) -> bool {
        self.lock().keeping
    }

    /// A session opens with a transfer of the store as of commit `number`: call it
    /// between two commits (under the store's commit lock), with the [`Outgoing::shipper`]
    /// read before the transfer began. Records up to it are dropped, commits after it
    /// wait for their shipment; returns the session's epoch, or `None` if that shipper
    /// has stopped since.
    pub(crate) fn start_session(&self, number: u64, shipper: u64) -> Option<u64> {
        let mut queued = self.lock();
        if queued.stopped != shipper {
            return None;
        }
        queued.keeping = true;
        queued.epoch += 1;
        queued.records.retain(|(n, _)| *n > number);
        self.covered.set(|c| c.min(number));
        Some(queued.epoch)
    }

    /// Which shipper runs now, for [`Outgoing::start_session`].
    pub(crate) fn shipper(&self) -> u64 {
        self.lock().stopped
    }

    /// The shipper stopped: every commit is covered (see [`Outgoing::alone`]), whatever
    /// a read of the store it began before it stopped does after; the next shipper
    /// starts its own sessions.
    pub(crate) fn stop(&self) {
        self.lock().stopped += 1;
        self.alone();
    }

    /// The current session's epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// No keeper: nothing is queued, and every commit is covered.
    pub(crate) fn alone(&self) {
        self.kept_by(None);
        let mut queued = self.lock();
        queued.keeping = false;
        queued.epoch += 1;
        queued.records.clear();
        drop(queued);
        self.covered.set(|_| ALONE);
    }

    /// The records queued, in commit order (whole commits, about [`TRANSFER_PART_OPS`]
    /// writes at most, or one commit), the epoch of the session they were queued in,
    /// and the last one's number; waits for one if none is queued.
    pub(crate) async fn take(&self) -> (u64, u64, Vec<Op>) {
        loop {
            let notified = self.ready.notified();
            {
                let mut queued = self.lock();
                let mut ops: Vec<Op> = Vec::new();
                let mut last = None;
                while let Some((number, record)) = queued.records.pop_front() {
                    ops.extend(record);
                    last = Some(number);
                    let next = queued.records.front().map_or(0, |(_, r)| r.len());
                    if ops.len() + next > TRANSFER_PART_OPS {
                        break;
                    }
                }
                if let Some(last) = last {
                    return (queued.epoch, last, ops);
                }
            }
            notified.await;
        }
    }

    /// Commits up to `number` are on the copy's disk as well as this node's, if session
    /// `epoch` is still the current one; says whether it was.
    pub(crate) fn covered_in(&self, epoch: u64, number: u64) -> bool {
        let queued = self.lock();
        if queued.epoch != epoch || !queued.keeping {
            return false;
        }
        self.covered.set(|_| number);
        true
    }

    /// How far commits are covered, to wait on.
    pub(crate) fn cover(&self) -> Arc<Cover> {
        Arc::clone(&self.covered)
    }

    /// The copy on `keeper` is in step (`None`: no copy is).
    pub(crate) fn kept_by(&self, keeper: Option<&str>) {
        *self.kept_by.lock().unwrap_or_else(|e| e.into_inner()) = keeper.map(str::to_string);
    }

    /// Where the store is copied, and how far the copy lags, for the node's description.
    pub(crate) fn status(&self) -> CopyStatus {
        let covered = self.covered.get();
        let lag = if covered == ALONE {
            0
        } else {
            self.last.load(Ordering::Relaxed).saturating_sub(covered)
        };
        CopyStatus {
            copies: 2,
            kept_by: self
                .kept_by
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            lag_commits: lag,
        }
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

    fn covered(out: &Outgoing) -> u64 {
        out.cover().get()
    }

    #[tokio::test]
    async fn commits_are_queued_only_while_a_copy_is_kept_and_taken_in_order() {
        let out = Outgoing::default();
        assert_eq!(
            covered(&out),
            0,
            "nothing covered before the shipper decides"
        );
        out.alone();
        out.ship(1, &op(1));
        assert_eq!(out.lag(), 0, "no keeper: nothing queued");
        assert_eq!(covered(&out), ALONE);
        out.keep();
        out.ship(2, &op(2));
        out.ship(3, &op(3));
        // The transfer holds the store as of commit 2: what follows waits for it.
        let epoch = out.start_session(2, out.shipper()).unwrap();
        assert_eq!(covered(&out), 2);
        out.ship(4, &op(4));
        let (taken_in, last, ops) = out.take().await;
        assert_eq!((taken_in, last), (epoch, 4));
        assert_eq!(ops, [op(3), op(4)].concat());
        assert!(out.covered_in(epoch, 4));
        assert_eq!(covered(&out), 4);
        out.ship(5, &op(5));
        out.alone();
        assert_eq!(out.lag(), 0);
        assert_eq!(covered(&out), ALONE);
        assert!(
            !out.covered_in(epoch, 5),
            "a session that ended covers nothing"
        );
    }

    /// A commit that failed may have been shipped, and its retry reuses its number:
    /// the session ends, the cover drops below it, and an answer for the old session
    /// counts for nothing.
    #[tokio::test]
    async fn a_failed_commit_ends_the_session_and_is_not_covered_by_it() {
        let out = Outgoing::default();
        out.keep();
        let epoch = out.start_session(0, out.shipper()).unwrap();
        for n in 1..=3 {
            out.ship(n, &op(n as u32));
        }
        assert!(out.covered_in(epoch, 1));
        // A commit that failed before it shipped anything leaves the session be.
        out.failed(4);
        assert_eq!(out.epoch(), epoch);
        out.failed(3);
        assert_eq!(covered(&out), 1);
        assert_eq!(out.lag(), 2, "commits before the failed one stay queued");
        assert!(!out.covered_in(epoch, 3), "the failed commit's shipment");
        assert_eq!(covered(&out), 1);
        assert_ne!(out.epoch(), epoch);
    }

    /// A shipper that stopped while it read the store for a transfer leaves every
    /// commit covered: the read's session never starts, not even once the next
    /// shipper runs; that one's own sessions do.
    #[test]
    fn a_stopped_shippers_read_starts_no_session() {
        let out = Outgoing::default();
        out.keep();
        let first = out.shipper();
        out.stop();
        assert_eq!(out.start_session(7, first), None);
        assert_eq!(covered(&out), ALONE);
        assert!(!out.keeping());
        let epoch = out.epoch();
        assert!(out.start_session(7, out.shipper()).is_some());
        assert_eq!(covered(&out), 7);
        assert_eq!(
            out.start_session(8, first),
            None,
            "a later read of the first"
        );
        assert_eq!(
            out.epoch(),
            epoch + 1,
            "the session of the running shipper holds"
        );
    }

    /// A backlog goes in shipments of whole commits, none much larger than a part of a
    /// transfer.
    #[tokio::test]
    async fn a_backlog_is_taken_in_bounded_shipments() {
        let out = Outgoing::default();
        out.keep();
        out.start_session(0, out.shipper());
        let big: Vec<Op> = (0..TRANSFER_PART_OPS as u32 / 2 + 1).flat_map(op).collect();
        for n in 1..=3 {
            out.ship(n, &big);
        }
        let (_, last, ops) = out.take().await;
        assert_eq!((last, ops.len()), (1, big.len()));
        let (_, last, _) = out.take().await;
        assert_eq!(last, 2);
        assert_eq!(out.lag(), 1);
    }
}
