//! Time for actors: a [`Ticker`] that sends an actor a message at a fixed interval for as
//! long as the actor lives, and wall-clock timestamps for what is reported to people and
//! peers (`since_ms`, `collected_at_ms`, a node's incarnation). Durations and deadlines
//! use `tokio::time::Instant` instead, which never jumps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::concurrency::JoinHandle;
use ractor::{ActorRef, Message};

/// Sends an actor a message every period; stops when dropped (keep it in the actor's
/// state: it goes with the state, however the actor ends, even killed).
#[derive(Debug)]
pub(crate) struct Ticker(JoinHandle<()>);

impl Ticker {
    /// Sends `actor` `message()` every `period`, the first one a period from now.
    pub(crate) fn every<M: Message>(
        actor: &ActorRef<M>,
        period: Duration,
        message: impl Fn() -> M + Send + 'static,
    ) -> Self {
        Self(actor.send_interval(period, message))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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
