//! A node's own departure: whether it has been asked to leave the cluster (for a while,
//! or for good), whether it has stopped taking changes meanwhile, and the mark a node
//! that left for good leaves in its data dir so that it never starts there again.
//!
//! Plain state shared by the agent (which takes `node leave`), the counter host (which
//! takes no change while the node is closing), the node's root (whose clean stop says
//! in its leave notice whether the node left for good) and the server (which stops the
//! node once it is asked to leave). How a node decides to leave for good is in
//! [`leave`](super::leave).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use crate::store::left_mark::mark_left;

/// This node's departure; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Departing {
    /// Set once the node is asked to leave; the server waits on it beside the signals.
    asked: Notify,
    asked_flag: AtomicBool,
    /// Whether it leaves for good.
    for_good: AtomicBool,
    /// While set, the counter host takes no change: it drops batches and syncs (their
    /// senders send them again, as to a node that does not answer) and refuses client
    /// changes.
    closing: AtomicBool,
    /// The data dir, where a node that leaves for good leaves its mark (`None` in
    /// memory).
    data_dir: Option<PathBuf>,
}

impl Departing {
    /// The departure of a node whose store is in `data_dir` (`None`: memory-only).
    pub(crate) fn new(data_dir: Option<PathBuf>) -> Self {
        Self {
            data_dir,
            ..Self::default()
        }
    }

    /// Stop taking changes (`true`), or take them again.
    pub(crate) fn close(&self, closing: bool) {
        self.closing.store(closing, Ordering::SeqCst);
    }

    /// Whether the node takes no change now.
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Asks the node to leave (for good, or for a while) and stop.
    pub(crate) fn ask(&self, for_good: bool) {
        self.for_good.store(for_good, Ordering::SeqCst);
        self.asked_flag.store(true, Ordering::SeqCst);
        self.asked.notify_waiters();
    }

    /// Whether the node leaves for good (once asked).
    pub(crate) fn for_good(&self) -> bool {
        self.for_good.load(Ordering::SeqCst)
    }

    /// Returns once the node has been asked to leave.
    pub(crate) async fn asked(&self) {
        loop {
            let notified = self.asked.notified();
            if self.asked_flag.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Leaves the mark of a node that left for good in its data dir, saying `why`.
    pub(crate) fn mark(&self, why: &str) -> std::io::Result<()> {
        match &self.data_dir {
            Some(dir) => mark_left(dir, why),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::left_mark::left_for_good;

    #[tokio::test]
    async fn asking_wakes_whoever_waits_and_whoever_comes_later() {
        let departing = std::sync::Arc::new(Departing::default());
        let waiting = {
            let departing = std::sync::Arc::clone(&departing);
            tokio::spawn(async move { departing.asked().await })
        };
        tokio::task::yield_now().await;
        departing.ask(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiter was not woken")
            .unwrap();
        // Asked before: returns at once.
        departing.asked().await;
        assert!(departing.for_good());
    }

    #[test]
    fn a_node_that_left_for_good_leaves_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(left_for_good(dir.path()), None);
        let departing = Departing::new(Some(dir.path().to_path_buf()));
        departing.mark("left at 12:00").unwrap();
        assert_eq!(left_for_good(dir.path()).as_deref(), Some("left at 12:00"));
        // In memory there is nowhere to leave it, and nothing to keep.
        Departing::new(None).mark("x").unwrap();
    }
}
