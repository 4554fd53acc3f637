//! A sliding-window rate: operations per second over the last [`WINDOW_SECS`] seconds.
//!
//! The lifetime average (`operations / uptime`) hides what a counter is doing *now*: a
//! counter that was busy for an hour and idle since still shows a high average. The
//! window keeps one bucket per second, so its memory is fixed and recording is O(1).

use std::time::{Duration, Instant};

/// How many seconds the window covers.
pub(crate) const WINDOW_SECS: u64 = 10;

/// Per-second operation counts for the last [`WINDOW_SECS`] seconds.
#[derive(Debug, Clone)]
pub(crate) struct RateWindow {
    start: Instant,
    /// `buckets[s % WINDOW_SECS]` counts operations of second `s` since `start`.
    buckets: [u64; WINDOW_SECS as usize],
    /// The second each bucket currently holds (a stale bucket is treated as zero).
    bucket_second: [u64; WINDOW_SECS as usize],
}

impl RateWindow {
    /// An empty window whose clock starts at `start`.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            buckets: [0; WINDOW_SECS as usize],
            bucket_second: [u64::MAX; WINDOW_SECS as usize],
        }
    }

    fn second_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    /// Records `n` operations at `at`.
    pub(crate) fn record(&mut self, at: Instant, n: u64) {
        let second = self.second_of(at);
        let slot = (second % WINDOW_SECS) as usize;
        if self.bucket_second[slot] != second {
            self.bucket_second[slot] = second;
            self.buckets[slot] = 0;
        }
        self.buckets[slot] = self.buckets[slot].saturating_add(n);
    }

    /// Operations per second over the window ending at `now`. Before a full window has
    /// passed, the rate is over the time elapsed so far.
    pub(crate) fn rate(&self, now: Instant) -> f64 {
        let now_second = self.second_of(now);
        let oldest = now_second.saturating_sub(WINDOW_SECS - 1);
        let total: u64 = self
            .bucket_second
            .iter()
            .zip(self.buckets.iter())
            .filter(|(s, _)| **s != u64::MAX && **s >= oldest && **s <= now_second)
            .map(|(_, n)| *n)
            .sum();
        let elapsed = now.saturating_duration_since(self.start);
        // The window spans the previous WINDOW_SECS-1 whole seconds plus the current one.
        let span = if elapsed.as_secs() >= WINDOW_SECS - 1 {
            Duration::from_secs(WINDOW_SECS - 1) + subsec(elapsed)
        } else {
            elapsed
        };
        if span.is_zero() {
            return 0.0;
        }
        total as f64 / span.as_secs_f64()
    }
}

fn subsec(d: Duration) -> Duration {
    Duration::from_nanos(u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_rate_is_over_elapsed_time() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0);
        w.record(t0 + Duration::from_millis(100), 50);
        w.record(t0 + Duration::from_millis(1500), 50);
        let r = w.rate(t0 + Duration::from_secs(2));
        assert!((r - 50.0).abs() < 1e-9, "rate {r}");
    }

    #[test]
    fn old_operations_leave_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0);
        w.record(t0, 1000);
        // 20 s later, with 10 ops/s recently, the burst at t0 no longer counts.
        for s in 11..20 {
            w.record(t0 + Duration::from_secs(s), 10);
        }
        let now = t0 + Duration::from_secs(20);
        w.record(now, 10);
        let r = w.rate(now);
        assert!((r - 100.0 / 9.0).abs() < 1e-9, "rate {r}");
        assert_eq!(w.rate(now + Duration::from_secs(60)), 0.0);
    }

    #[test]
    fn empty_window_is_zero() {
        let t0 = Instant::now();
        assert_eq!(RateWindow::new(t0).rate(t0), 0.0);
    }
}
