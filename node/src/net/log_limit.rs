//! "Log this at most once a minute per source address": what keeps a misbehaving or
//! hostile peer from filling the log, one line per connection or frame.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Sources remembered at most: beyond this (many addresses at once, as an IPv6
/// attacker can have), new sources are not logged until old ones age out.
const MAX_SOURCES: usize = 4096;

/// Remembers when each source address was last logged.
#[derive(Debug)]
pub(crate) struct PerSource {
    every: Duration,
    last: HashMap<IpAddr, Instant>,
    pruned: Option<Instant>,
}

impl PerSource {
    /// At most one line per source per `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: HashMap::new(),
            pruned: None,
        }
    }

    /// Whether a line about `ip` may be logged now (and if so, records that it was).
    pub(crate) fn due(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.last.len() >= MAX_SOURCES && !self.last.contains_key(&ip) {
            // Full: forget sources not seen for a while (at most once a second, so a
            // flood from many addresses costs no more than that), else stay quiet.
            if self
                .pruned
                .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1))
            {
                self.prune(now);
            }
            if self.last.len() >= MAX_SOURCES {
                return false;
            }
        }
        let due = self
            .last
            .get(&ip)
            .is_none_or(|at| now.saturating_duration_since(*at) > self.every);
        if due {
            self.last.insert(ip, now);
        }
        due
    }

    /// Drops entries older than the period.
    fn prune(&mut self, now: Instant) {
        let every = self.every;
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) <= every);
        self.pruned = Some(now);
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

    #[test]
    fn the_table_stays_bounded() {
        let mut limit = PerSource::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            limit.due(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(limit.last.len(), MAX_SOURCES);
        // Once the old entries age out, new sources are logged again.
        let later = t0 + Duration::from_secs(61);
        assert!(limit.due(IpAddr::from([10, 9, 9, 9]), later));
        assert_eq!(limit.last.len(), 1);
    }
}
