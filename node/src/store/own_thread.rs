//! Whether the journal commits a client's change on its own thread: a plain type driven
//! by the instants it is given, tested on a made-up clock.
//!
//! A commit normally runs on a blocking thread, and its report comes back to the
//! journal's: a client sending one change after another wakes two sleeping threads per
//! change, and on a VM whose idle vCPUs halt each wake-up costs tens of microseconds, a
//! tenth of the change (BENCHMARKS.md). Redis writes and syncs its log on its one
//! thread. So does the journal, for one client's change alone: the worker it runs on
//! (a node has one by default) first runs every other task that is ready, then writes
//! and syncs the commit's record, as Redis's thread does; calls and heartbeats wait
//! meanwhile.
//!
//! **Only while a client is alone.** While the journal's thread syncs, the tasks that
//! would bring it other clients' changes wait for that very thread, so they arrive one
//! by one after it and every commit holds one change: four clients sending at once
//! made twice the fsyncs and took half as long again per change. A commit on a
//! blocking thread shows whether anything else arrives while it runs; so one lone change
//! in [`PROBE_EVERY`] goes to a blocking thread, and a commit after which something is
//! queued already (another client, traffic between nodes) starts a pause: every commit
//! goes to blocking threads until [`FIRST_BACKOFF`] after the last one that found
//! others. A probe that finds others right after a pause doubles the next pause, up to
//! [`LAST_BACKOFF`].
//!
//! **Only a commit that is just its record** ([`Next::plain`]): not one that also syncs
//! the store file (a checkpoint, one commit in 32), reopens it after a failure, or
//! wraps the log. On a blocking thread its client's answer leaves as soon as the
//! record is synced, and it serves as the probe.
//!
//! **Only while commits are quick** ([`QUICK`]), and never while they fail: a slow
//! disk would hold the worker, so after one slow commit every commit goes to a blocking
//! thread until one is quick again. A disk that stalls in the middle of a commit made
//! here holds the node's worker for as long, as it would hold Redis: peers hear no
//! heartbeat meanwhile, and one longer than the silence (0.6 × `--failure-timeout`)
//! makes them declare this node unreachable until it answers again; the node itself
//! checks no silence right after such a stall (the mesh's detector,
//! `cluster::detector`), so it does not declare its peers for what it had not yet read.

use std::time::{Duration, Instant};

/// A lone client change is committed on the journal's thread only if the last commit
/// held its thread for less than this.
pub(crate) const QUICK: Duration = Duration::from_millis(2);

/// One lone change in this many goes to a blocking thread, to see whether anything
/// else arrives while it runs.
pub(crate) const PROBE_EVERY: u32 = 8;

/// After a commit found others waiting, commits stay on blocking threads for this
/// long...
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// ...doubled each time a probe right after a pause finds others again, up to this.
pub(crate) const LAST_BACKOFF: Duration = Duration::from_secs(1);

/// The decision and what it rests on; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct OwnThread {
    /// Lone changes committed here since the last probe.
    streak: u32,
    /// Until when every commit goes to a blocking thread (`None`: no pause since the
    /// last probe that found nobody).
    shared_until: Option<Instant>,
    /// How long a pause lasts after the last commit that found others.
    backoff: Duration,
    /// How long the last commit held its thread (on a blocking thread: until it was
    /// durable).
    last_commit: Duration,
    /// How long the last commit made here held this thread, all of it (it is told
    /// before the commit's report).
    held_here: Option<Duration>,
}

impl Default for OwnThread {
    fn default() -> Self {
        Self {
            // The first lone change is a probe: nothing is known yet.
            streak: PROBE_EVERY,
            shared_until: None,
            backoff: FIRST_BACKOFF,
            last_commit: Duration::ZERO,
            held_here: None,
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
}

impl OwnThread {
    /// Whether the commit of `next`, starting at `now`, runs on the journal's thread;
    /// `plain` says whether it would be just its record (asked only of a lone change).
    pub(crate) fn here(&mut self, next: Next, now: Instant, plain: impl FnOnce() -> bool) -> bool {
        let lone = next.entries == 1 && next.clients == 1;
        if !lone || next.failing || self.last_commit >= QUICK {
            return false;
        }
        if self.shared_until.is_some_and(|until| now < until) {
            return false;
        }
        // One that is more than its record goes to a blocking thread anyway: it serves
        // as the probe.
        if self.streak + 1 >= PROBE_EVERY || !plain() {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        true
    }

    /// The commit just made here held this thread for `held`, all of it.
    pub(crate) fn held_here(&mut self, held: Duration) {
        self.held_here = Some(held);
    }

    /// A commit ended at `now`, durable after `took`; `others` says whether anything
    /// was queued meanwhile (then a pause starts, or goes on).
    pub(crate) fn ended(&mut self, took: Duration, others: bool, now: Instant) {
        self.last_commit = took.max(self.held_here.take().unwrap_or_default());
        let pause_over = self.shared_until.is_some_and(|until| now >= until);
        if others {
            if pause_over {
                // Others again right after a pause: the next one is longer.
                self.backoff = (self.backoff * 2).min(LAST_BACKOFF);
            }
            self.shared_until = Some(now + self.backoff);
            // The first lone change after the pause is a probe.
            self.streak = PROBE_EVERY;
        } else if pause_over {
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
    };

    fn quick() -> Duration {
        Duration::from_micros(150)
    }

    /// Whether a plain lone change starts here at `now`.
    fn lone(own: &mut OwnThread, now: Instant) -> bool {
        own.here(LONE, now, || true)
    }

    /// `n` lone changes, each ending with nothing else queued: which ran here.
    fn alone(own: &mut OwnThread, n: usize, now: &mut Instant) -> Vec<bool> {
        (0..n)
            .map(|_| {
                let here = lone(own, *now);
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
        let first = alone(&mut own, 2 * PROBE_EVERY as usize + 3, &mut now);
        // A probe first, then seven here, a probe, and so on.
        let probes: Vec<usize> = (0..first.len()).filter(|&i| !first[i]).collect();
        assert_eq!(probes, vec![0, 8, 16], "{first:?}");
    }

    #[test]
    fn groups_failures_slow_and_heavy_commits_go_to_a_blocking_thread() {
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
        ] {
            let asked = || panic!("the store is asked only about a lone change");
            assert!(!own.here(next, now, asked), "{next:?}");
        }
        assert!(
            lone(&mut own, now),
            "a plain lone change with quick commits"
        );
        // One that also syncs the file (or reopens it, or wraps the log) serves as the
        // probe: the next seven are here.
        assert!(!own.here(LONE, now, || false));
        assert_eq!(alone(&mut own, 7, &mut now), [true; 7]);
        assert!(!lone(&mut own, now), "and a probe");
        // A commit that held this thread too long, though it was durable soon.
        own.held_here(QUICK);
        own.ended(quick(), false, now);
        assert!(!lone(&mut own, now), "the last commit was slow");
        own.ended(QUICK, false, now);
        assert!(!lone(&mut own, now), "the last commit was slow");
        own.ended(quick(), false, now);
        assert!(lone(&mut own, now), "quick again");
    }

    #[test]
    fn a_pause_lasts_while_others_arrive_and_grows_when_they_come_back() {
        let mut own = OwnThread::default();
        let mut now = Instant::now();
        alone(&mut own, 2, &mut now);
        // Other clients' changes queued while commits ran, several times in a pause:
        // it goes on from the last of them, no longer.
        for _ in 0..10 {
            own.ended(quick(), true, now);
            assert!(!lone(&mut own, now + FIRST_BACKOFF / 2), "within the pause");
            now += FIRST_BACKOFF / 2;
        }
        assert_eq!(
            own.backoff, FIRST_BACKOFF,
            "one pause, however many commits"
        );
        now += FIRST_BACKOFF / 2;
        assert!(!lone(&mut own, now), "the first after the pause is a probe");
        // The probe finds others again: the next pause is twice as long.
        now += quick();
        own.ended(quick(), true, now);
        assert!(
            !lone(&mut own, now + FIRST_BACKOFF * 3 / 2),
            "a longer pause"
        );
        now += FIRST_BACKOFF * 2;
        assert!(!lone(&mut own, now), "a probe");
        // Up to the longest pause, however often they come back.
        for _ in 0..20 {
            own.ended(quick(), true, now);
            now += LAST_BACKOFF;
            assert!(!lone(&mut own, now), "a probe");
        }
        assert_eq!(own.backoff, LAST_BACKOFF);
        // The probe finds the client alone: here again, and the next pause is short.
        own.ended(quick(), false, now);
        assert!(lone(&mut own, now));
        assert_eq!(own.backoff, FIRST_BACKOFF);
    }
}
