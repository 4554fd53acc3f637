//! "Log this at most once a minute per source address": what keeps a misbehaving or
//! hostile peer from filling the log, one line per connection or frame.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Remembers when each source address was last logged.
#[derive(Debug)]
pub struct PerSource {
    every: Duration,
    last: HashMap<IpAddr, Instant>,
}

impl PerSource {
    /// At most one line per source per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: HashMap::new(),
        }
    }

    /// Whether a line about `ip` may be logged now (and if so, records that it was).
    pub fn due(&mut self, ip: IpAddr, now: Instant) -> bool {
        let every = self.every;
        // Forget sources not seen for a while, so the table stays small.
        if self.last.len() > 1024 {
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) <= every);
        }
        let due = self
            .last
            .get(&ip)
            .is_none_or(|at| now.saturating_duration_since(*at) > every);
        if due {
            self.last.insert(ip, now);
        }
        due
    }

    /// Drops entries older than the period.
    pub fn prune(&mut self, now: Instant) {
        let every = self.every;
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) <= every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_source_per_period() {
        let mut limit = PerSource::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limit.due(a, t0));
        assert!(!limit.due(a, t0 + Duration::from_secs(59)));
        assert!(limit.due(b, t0 + Duration::from_secs(1)));
        assert!(limit.due(a, t0 + Duration::from_secs(61)));
    }
}
