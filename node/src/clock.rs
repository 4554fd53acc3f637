//! Wall-clock timestamps, for what is reported to people and peers (`since_ms`,
//! `collected_at_ms`, a node's incarnation). Durations and deadlines use
//! `tokio::time::Instant` instead, which never jumps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub(crate) fn unix_millis() -> u64 {
    since_epoch().as_millis().try_into().unwrap_or(u64::MAX)
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn unix_micros() -> u64 {
    since_epoch().as_micros().try_into().unwrap_or(u64::MAX)
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
