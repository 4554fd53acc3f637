//! Where each commit's writes go besides this node's disk: the store's copy on another
//! node (see `crate::copies`); and how far that copy covers the commits.

use super::redo::Op;

/// Takes each commit's writes, in commit order, as the commit makes them (before it is
/// durable here: a copy elsewhere syncs them meanwhile). Called with the store's commit
/// lock held: nothing commits meanwhile.
pub(crate) trait Ship: Send + Sync + std::fmt::Debug {
    /// Commit `number` writes `ops`.
    fn ship(&self, number: u64, ops: &[Op]);

    /// Commit `number` failed: what was shipped for it may or may not have landed, and
    /// its retry may reuse its number with other writes.
    fn failed(&self, number: u64);
}

/// How far the store's copy covers the commits: the journal answers a commit only once
/// it is covered, and is woken when the one it waits for is. Set by whoever keeps the
/// copy in step (`crate::copies`).
#[derive(Default)]
pub(crate) struct Cover(std::sync::Mutex<Covering>);

#[derive(Default)]
struct Covering {
    /// Commits up to this number are covered (`u64::MAX`: every one).
    covered: u64,
    /// Who waits, for which commit.
    waiting: Option<(u64, Box<dyn FnOnce() + Send>)>,
}

impl std::fmt::Debug for Cover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cover").field(&self.get()).finish()
    }
}

impl Cover {
    fn lock(&self) -> std::sync::MutexGuard<'_, Covering> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits up to this number are covered.
    pub(crate) fn get(&self) -> u64 {
        self.lock().covered
    }

    /// Sets how far commits are covered to `to(what it was)`, and wakes whoever waits
    /// for a commit that is covered now.
    pub(crate) fn set(&self, to: impl FnOnce(u64) -> u64) {
        let mut covering = self.lock();
        covering.covered = to(covering.covered);
        let covered = covering.covered;
        let woken = covering
            .waiting
            .take_if(|(number, _)| *number <= covered)
            .map(|(_, wake)| wake);
        drop(covering);
        if let Some(wake) = woken {
            wake();
        }
    }

    /// Calls `wake` once commit `number` is covered: now if it is (in place of whoever
    /// waited before).
    pub(crate) fn wake_at(&self, number: u64, wake: Box<dyn FnOnce() + Send>) {
        let mut covering = self.lock();
        if covering.covered >= number {
            drop(covering);
            wake();
        } else {
            covering.waiting = Some((number, wake));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_waiter_is_woken_once_its_commit_is_covered_and_not_before() {
        let cover = Cover::default();
        let woken = Arc::new(AtomicU64::new(0));
        let wake = |n: u64| {
            let woken = Arc::clone(&woken);
            Box::new(move || woken.store(n, Ordering::SeqCst)) as Box<dyn FnOnce() + Send>
        };
        cover.wake_at(3, wake(3));
        cover.set(|_| 2);
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        cover.set(|c| c + 1);
        assert_eq!(woken.load(Ordering::SeqCst), 3);
        // Covered already: at once.
        cover.wake_at(1, wake(1));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        // Lowered (a session ended): a waiter above it waits again.
        cover.set(|c| c.min(1));
        cover.wake_at(2, wake(2));
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        cover.set(|_| u64::MAX);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
    }
}
