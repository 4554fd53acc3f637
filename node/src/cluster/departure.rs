//! A node's own departure: whether it is deciding to leave for good, has been asked to
//! leave (for a while, or for good), and whether it takes changes meanwhile.
//!
//! Plain state shared by the agent (which takes `node leave`), the counter host (which
//! takes no change while the node is closed), the node's root (whose clean stop says in
//! its leave notice whether the node left for good) and the server (which stops the
//! node once it is asked to leave). How a node decides to leave for good is in
//! [`leave`](super::leave).
//!
//! The states, and the only ways between them:
//!
//! ```text
//! Open ──decide──▶ Deciding ──reopen──▶ Open
//!   │                 │
//!   │                 └──leave_for_good (marks the data dir)──▶ Leaving { for_good: true }
//!   └──stop────────────────────────────────────────────────────▶ Leaving { for_good: false }
//! ```
//!
//! `stop` (a clean stop, or `node leave` without `--for-good`) from `Deciding` leaves
//! for a while and the decision in progress fails; nothing ever turns a departure for
//! good into one for a while, or reopens a node that is leaving. The node is closed to
//! changes in every state but `Open`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::store::left_mark::mark_left;

/// Where a node stands; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// In the cluster, taking changes.
    Open,
    /// Closed while it decides whether it can leave for good.
    Deciding,
    /// Leaving, and stopping.
    Leaving {
        /// For good, rather than for a while.
        for_good: bool,
    },
}

/// Why a departure could not go the way it was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DepartureError {
    /// Another `node leave --for-good` is being decided, or the node is leaving.
    #[error("it is already deciding whether it can leave, or leaving")]
    Busy,
    /// The data dir could not be marked.
    #[error("cannot mark its data dir: {0}")]
    Mark(#[source] std::io::Error),
}

/// This node's departure; see the module documentation.
#[derive(Debug)]
pub(crate) struct Departing {
    state: Mutex<State>,
    /// Woken once the node is asked to leave; the server waits on it beside the signals.
    asked: Notify,
    /// Batches and syncs the closed host dropped (their senders send them again).
    dropped: AtomicU64,
    /// The data dir, where a node that leaves for good leaves its mark (`None` in
    /// memory).
    data_dir: Option<PathBuf>,
}

impl Default for Departing {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Departing {
    /// The departure of a node whose store is in `data_dir` (`None`: memory-only).
    pub(crate) fn new(data_dir: Option<PathBuf>) -> Self {
        Self {
            state: Mutex::new(State::Open),
            asked: Notify::new(),
            dropped: AtomicU64::new(0),
            data_dir,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the node stands.
    pub(crate) fn state(&self) -> State {
        *self.lock()
    }

    /// Whether the node takes no change now (in every state but `Open`).
    pub(crate) fn closing(&self) -> bool {
        self.state() != State::Open
    }

    /// Closes the node to decide whether it can leave for good; the count of what the
    /// closed host drops starts from zero.
    pub(crate) fn decide(&self) -> Result<(), DepartureError> {
        let mut state = self.lock();
        if *state != State::Open {
            return Err(DepartureError::Busy);
        }
        self.dropped.store(0, Ordering::SeqCst);
        *state = State::Deciding;
        Ok(())
    }

    /// The node cannot leave for good: open it again (only from `Deciding`).
    pub(crate) fn reopen(&self) {
        let mut state = self.lock();
        if *state == State::Deciding {
            *state = State::Open;
        }
    }

    /// The node can leave for good: marks its data dir with `why` and asks it to stop
    /// (only from `Deciding`: a clean stop that came meanwhile wins).
    pub(crate) fn leave_for_good(&self, why: &str) -> Result<(), DepartureError> {
        let mut state = self.lock();
        if *state != State::Deciding {
            return Err(DepartureError::Busy);
        }
        if let Some(dir) = &self.data_dir {
            mark_left(dir, why).map_err(DepartureError::Mark)?;
        }
        *state = State::Leaving { for_good: true };
        drop(state);
        self.asked.notify_waiters();
        Ok(())
    }

    /// Leaves (for a while, unless the node is leaving for good already) and asks it
    /// to stop: a clean stop, or `node leave`. Returns whether it leaves for good.
    pub(crate) fn stop(&self) -> bool {
        let mut state = self.lock();
        let for_good = matches!(*state, State::Leaving { for_good: true });
        *state = State::Leaving { for_good };
        drop(state);
        self.asked.notify_waiters();
        for_good
    }

    /// Whether the node leaves for good (once asked).
    pub(crate) fn for_good(&self) -> bool {
        self.state() == State::Leaving { for_good: true }
    }

    /// Returns once the node has been asked to leave.
    pub(crate) async fn asked(&self) {
        loop {
            let notified = self.asked.notified();
            if matches!(self.state(), State::Leaving { .. }) {
                return;
            }
            notified.await;
        }
    }

    /// The closed host dropped a batch or a sync.
    pub(crate) fn dropped_one(&self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }

    /// Batches and syncs the closed host dropped since the node began to decide.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::left_mark::left_for_good;

    #[tokio::test]
    async fn being_asked_wakes_whoever_waits_and_whoever_comes_later() {
        let departing = std::sync::Arc::new(Departing::default());
        let waiting = {
            let departing = std::sync::Arc::clone(&departing);
            tokio::spawn(async move { departing.asked().await })
        };
        tokio::task::yield_now().await;
        departing.decide().unwrap();
        departing.leave_for_good("gone").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiter was not woken")
            .unwrap();
        // Asked before: returns at once.
        departing.asked().await;
        assert!(departing.for_good());
    }

    /// One decision at a time; a clean stop during one wins and leaves for a while; a
    /// departure for good is never turned into one for a while, nor reopened.
    #[test]
    fn departures_go_one_way() {
        let departing = Departing::default();
        assert!(!departing.closing());
        departing.decide().unwrap();
        assert!(departing.closing());
        assert!(matches!(departing.decide(), Err(DepartureError::Busy)));
        departing.reopen();
        assert_eq!(departing.state(), State::Open);

        departing.decide().unwrap();
        assert!(
            !departing.stop(),
            "a stop while deciding leaves for a while"
        );
        assert!(matches!(
            departing.leave_for_good("late"),
            Err(DepartureError::Busy)
        ));
        departing.reopen();
        assert_eq!(departing.state(), State::Leaving { for_good: false });

        let departing = Departing::default();
        departing.decide().unwrap();
        departing.leave_for_good("gone").unwrap();
        assert!(departing.stop(), "still for good");
        departing.reopen();
        assert!(departing.for_good());
    }

    #[test]
    fn a_node_that_left_for_good_leaves_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(left_for_good(dir.path()).unwrap(), None);
        let departing = Departing::new(Some(dir.path().to_path_buf()));
        departing.decide().unwrap();
        departing.leave_for_good("left at 12:00").unwrap();
        assert_eq!(
            left_for_good(dir.path()).unwrap().as_deref(),
            Some("left at 12:00")
        );
    }
}
