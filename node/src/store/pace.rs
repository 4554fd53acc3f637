//! When the journal may start its next commit: a plain type driven by the instants it
//! is given, tested on a made-up clock.
//!
//! Every commit costs an fsync, and at light load a node's queue is rarely more than a
//! few entries, so committing whenever anything is queued costs an fsync per arrival
//! (hundreds per second for a trickle). Traffic between nodes (load batches, the outbox,
//! acknowledgements) loses nothing by waiting a few milliseconds: its senders pipeline
//! behind their windows. So a commit that holds only such traffic starts no sooner than
//! the interval after the previous commit started, and gathers whatever arrives
//! meanwhile: at most `1 / interval` such commits per second, whatever the number of
//! senders up to a few hundred (each sends a node about one batch per two intervals). A
//! commit holding something a person waits on (a client's change, a clean stop) starts
//! at once, and so does one whose queue is already large (under heavy load a commit
//! takes longer than the interval, and waiting would only cost throughput).
//!
//! Nothing is acknowledged before its commit returns, so pacing moves when traffic is
//! acknowledged, never whether it is durable first.

use std::time::{Duration, Instant};

/// Queued changes (entries carrying operations: batches, outgoing batches, client
/// changes) that make a commit start at once, however recent the last one: a queue this
/// long pays for its fsync already (one-operation batches under heavy unbatched load
/// reach it within a millisecond)...
pub(crate) const ENOUGH_CHANGES: usize = 256;
/// ...and so do this many queued operations (a sender's batch that is due by its size
/// carries at least as many).
pub(crate) const ENOUGH_OPERATIONS: u64 = 4096;

/// What the journal's queue holds, as far as pacing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Queued {
    /// Entries queued (bookkeeping included).
    pub(crate) entries: usize,
    /// How many of them carry operations.
    pub(crate) changes: usize,
    /// Operations they carry.
    pub(crate) operations: u64,
    /// Whether anyone waits on them in person (a client's change, a drain).
    pub(crate) urgent: bool,
}

/// Whether a commit may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Start it.
    Now,
    /// Nothing to commit.
    Idle,
    /// Wait this long, then ask again.
    After(Duration),
}

/// The pacing of one journal's commits; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    interval: Duration,
    last_start: Option<Instant>,
}

impl Pace {
    /// Commits of traffic between nodes at least `interval` apart (zero: no pacing).
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_start: None,
        }
    }

    /// Whether a commit of `queued` may start at `now`.
    pub(crate) fn check(&self, now: Instant, queued: Queued) -> Start {
        if queued.entries == 0 {
            return Start::Idle;
        }
        if queued.urgent
            || queued.changes >= ENOUGH_CHANGES
            || queued.operations >= ENOUGH_OPERATIONS
        {
            return Start::Now;
        }
        let Some(last) = self.last_start else {
            return Start::Now;
        };
        match (last + self.interval).checked_duration_since(now) {
            Some(wait) if !wait.is_zero() => Start::After(wait),
            _ => Start::Now,
        }
    }

    /// A commit started at `now`.
    pub(crate) fn started(&mut self, now: Instant) {
        self.last_start = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn queued(entries: usize, urgent: bool) -> Queued {
        Queued {
            entries,
            changes: entries,
            operations: entries as u64,
            urgent,
        }
    }

    #[test]
    fn traffic_between_nodes_gathers_for_the_interval_after_the_last_commit() {
        let t0 = Instant::now();
        let mut pace = Pace::new(10 * MS);
        assert_eq!(pace.check(t0, queued(0, false)), Start::Idle);
        // The first commit goes at once.
        assert_eq!(pace.check(t0, queued(1, false)), Start::Now);
        pace.started(t0);
        // Within the interval, a few entries wait for the rest of it...
        assert_eq!(
            pace.check(t0 + 3 * MS, queued(2, false)),
            Start::After(7 * MS)
        );
        assert_eq!(pace.check(t0 + 9 * MS, queued(5, false)), Start::After(MS));
        // ...and go once it is over, however late the check.
        assert_eq!(pace.check(t0 + 10 * MS, queued(5, false)), Start::Now);
        assert_eq!(pace.check(t0 + 500 * MS, queued(1, false)), Start::Now);
    }

    #[test]
    fn someone_waiting_or_a_long_queue_starts_a_commit_at_once() {
        let t0 = Instant::now();
        let mut pace = Pace::new(10 * MS);
        pace.started(t0);
        assert_eq!(pace.check(t0 + MS, queued(1, true)), Start::Now);
        assert_eq!(
            pace.check(t0 + MS, queued(ENOUGH_CHANGES - 1, false)),
            Start::After(9 * MS)
        );
        assert_eq!(
            pace.check(t0 + MS, queued(ENOUGH_CHANGES, false)),
            Start::Now
        );
        // Bookkeeping (acknowledgements) does not count as changes.
        let acks = Queued {
            entries: 10 * ENOUGH_CHANGES,
            changes: 0,
            operations: 0,
            urgent: false,
        };
        assert_eq!(pace.check(t0 + MS, acks), Start::After(9 * MS));
        let big_batch = Queued {
            entries: 1,
            changes: 1,
            operations: ENOUGH_OPERATIONS,
            urgent: false,
        };
        assert_eq!(pace.check(t0 + MS, big_batch), Start::Now);
    }

    #[test]
    fn a_zero_interval_never_waits() {
        let t0 = Instant::now();
        let mut pace = Pace::new(Duration::ZERO);
        pace.started(t0);
        assert_eq!(pace.check(t0, queued(1, false)), Start::Now);
    }

    #[test]
    fn commits_of_a_steady_trickle_are_at_most_one_per_interval() {
        // An entry every millisecond for a second; a commit takes 2 ms.
        let t0 = Instant::now();
        let mut pace = Pace::new(10 * MS);
        let (mut queue, mut commits, mut busy_until) = (0, 0, t0);
        for ms in 0..1000u32 {
            let now = t0 + ms * MS;
            queue += 1;
            if now >= busy_until && pace.check(now, queued(queue, false)) == Start::Now {
                pace.started(now);
                commits += 1;
                queue = 0;
                busy_until = now + 2 * MS;
            }
        }
        assert_eq!(commits, 100, "one commit per 10 ms");
    }
}
