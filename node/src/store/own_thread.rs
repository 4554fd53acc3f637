//! Whether the journal commits a client's change on its own thread: a plain type driven
//! by the instants it is given, tested on a made-up clock.
//!
//! A commit normally runs on a blocking thread, and its report comes back to the
//! journal's: a client sending one change after another wakes two sleeping threads per
//! change, and on a VM whose idle vCPUs halt each wake-up costs tens of microseconds, a
//! tenth of the change (BENCHMARKS.md). Redis writes and syncs its log on its one
//! thread. So does the journal, for one client's change alone: the worker it runs on
//! (a node has one by default) first runs every other task that is ready, then waits
//! out the sync, as Redis's thread does; calls and heartbeats wait at most that long.
//!
//! **Only while a client is alone.** While the journal's thread syncs, the tasks that
//! would bring it other clients' changes wait for that very thread, so they arrive one
//! by one after it and every commit holds one change: four clients sending at once
//! made twice the fsyncs and took half as long again per change. A commit on a
//! blocking thread shows whether anything else arrives while it runs; so every
//! [`PROBE_EVERY`]th lone change goes to a blocking thread, and a commit after which
//! something is queued already (another client, traffic between nodes) keeps every
//! commit on blocking threads for a while ([`FIRST_BACKOFF`], doubling up to
//! [`LAST_BACKOFF`] while it lasts).
//!
//! **Not a commit with a checkpoint** (the store file's own sync, one commit in 32): on
//! a blocking thread its client's answer leaves after the first sync, not after both;
//! it serves as a probe.
//!
//! **Only while commits are quick** ([`QUICK`]), and never while they fail: a slow
//! disk would hold the worker, so after one slow sync every commit goes to a blocking
//! thread until one is quick again. (A disk that stalls in the middle of a commit made
//! here holds the node's worker for that one sync, as it would hold Redis.)

use std::time::{Duration, Instant};

/// A lone client change is committed on the journal's thread only if the last commit
/// was durable within this.
pub(crate) const QUICK: Duration = Duration::from_millis(2);

/// One lone change in this many goes to a blocking thread, to see whether anything
/// else arrives while it runs.
pub(crate) const PROBE_EVERY: u32 = 8;

/// After a commit found others waiting, commits stay on blocking threads for this
/// long...
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// ...doubling while they keep finding others, up to this.
pub(crate) const LAST_BACKOFF: Duration = Duration::from_secs(1);

/// The decision and what it rests on; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct OwnThread {
    /// Lone changes committed here since the last probe.
    streak: u32,
    /// Until when every commit goes to a blocking thread.
    shared_until: Option<Instant>,
    /// How long the next finding of others keeps commits off this thread.
    backoff: Duration,
    /// How long the last commit took to be durable.
    last_commit: Duration,
}

impl Default for OwnThread {
    fn default() -> Self {
        Self {
            // The first lone change is a probe: nothing is known yet.
            streak: PROBE_EVERY,
            shared_until: None,
            backoff: FIRST_BACKOFF,
            last_commit: Duration::ZERO,
        }
    }
}

/// What the next commit holds, as far as the decision is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Next {
    /// Entries.
    pub(crate) entries: usize,
    /// How many of them are clients' changes.
    pub(crate) clients: usize,
    /// Whether commits are failing (the next is a retry).
    pub(crate) failing: bool,
    /// Whether it will also sync the store file (a checkpoint).
    pub(crate) checkpoint: bool,
}

impl OwnThread {
    /// Whether the commit of `next`, starting at `now`, runs on the journal's thread.
    pub(crate) fn here(&mut self, next: Next, now: Instant) -> bool {
        let lone = next.entries == 1 && next.clients == 1;
        if !lone || next.failing || self.last_commit >= QUICK {
            return false;
        }
        if self.shared_until.is_some_and(|until| now < until) {
            return false;
        }
        // A commit with a checkpoint syncs twice: the client's answer is not held
        // behind the second sync, and it serves as the probe.
        if self.streak >= PROBE_EVERY || next.checkpoint {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        true
    }

    /// A commit ended at `now`, durable after `took`; `others` says whether anything
    /// was queued meanwhile (then commits stay off this thread for a while).
    pub(crate) fn ended(&mut self, took: Duration, others: bool, now: Instant) {
        self.last_commit = took;
        if others {
            self.shared_until = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(LAST_BACKOFF);
            // The first lone change after the pause is a probe.
            self.streak = PROBE_EVERY;
        } else if self.shared_until.is_none_or(|until| now >= until) {
            self.shared_until = None;
            self.backoff = FIRST_BACKOFF;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONE: Next = Next {
        entries: 1,
        clients: 1,
        failing: false,
        checkpoint: false,
    };

    fn quick() -> Duration {
        Duration::from_micros(150)
    }

    /// `n` lone changes, each ending with nothing else queued: which ran here.
    fn alone(own: &mut OwnThread, n: usize, now: &mut Instant) -> Vec<bool> {
        (0..n)
            .map(|_| {
                let here = own.here(LONE, *now);
                *now += quick();
                own.ended(quick(), false, *now);
                here
            })
            .collect()
    }

    #[test]
    fn a_client_alone_commits_here_but_for_one_probe_in_eight() {
        let mut own = OwnThread::default();
        let mut now = Instant::now();
        let first = alone(&mut own, 1 + 2 * PROBE_EVERY as usize + 2, &mut now);
        // A probe first, then seven here, a probe, and so on.
        let probes: Vec<usize> = (0..first.len()).filter(|&i| !first[i]).collect();
        assert_eq!(probes, vec![0, 9, 18], "{first:?}");
    }

    #[test]
    fn groups_failures_and_slow_commits_go_to_a_blocking_thread() {
        let mut own = OwnThread::default();
        let mut now = Instant::now();
        alone(&mut own, 2, &mut now);
        for next in [
            Next {
                entries: 2,
                clients: 2,
                ..LONE
            },
            Next {
                entries: 2,
                clients: 1,
                ..LONE
            },
            Next {
                entries: 1,
                clients: 0,
                ..LONE
            },
            Next {
                failing: true,
                ..LONE
            },
            Next {
                checkpoint: true,
                ..LONE
            },
        ] {
            assert!(!own.here(next, now), "{next:?}");
        }
        assert!(own.here(LONE, now), "a lone change with quick commits");
        own.ended(QUICK, false, now);
        assert!(!own.here(LONE, now), "the last commit was slow");
        own.ended(quick(), false, now);
        assert!(own.here(LONE, now), "quick again");
    }

    #[test]
    fn others_keep_commits_off_this_thread_for_longer_while_they_last() {
        let mut own = OwnThread::default();
        let mut now = Instant::now();
        alone(&mut own, 2, &mut now);
        // Another client's change was queued while a commit ran.
        own.ended(quick(), true, now);
        let paused_at = now;
        assert!(!own.here(LONE, now + FIRST_BACKOFF / 2), "within the pause");
        now = paused_at + FIRST_BACKOFF;
        assert!(!own.here(LONE, now), "the first after the pause is a probe");
        // The probe finds others again: twice as long.
        own.ended(quick(), true, now);
        assert!(
            !own.here(LONE, now + FIRST_BACKOFF * 3 / 2),
            "a longer pause"
        );
        now += FIRST_BACKOFF * 2;
        assert!(!own.here(LONE, now), "a probe");
        // Up to the longest pause, however long the others last.
        for _ in 0..20 {
            own.ended(quick(), true, now);
            now += LAST_BACKOFF;
            assert!(!own.here(LONE, now), "a probe");
        }
        assert_eq!(own.backoff, LAST_BACKOFF);
        // The probe finds the client alone: here again, and the pause starts short.
        own.ended(quick(), false, now);
        assert!(own.here(LONE, now));
        assert_eq!(own.backoff, FIRST_BACKOFF);
    }
}
