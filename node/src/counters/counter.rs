//! The counter actor: a private value changed only by its own messages, one at a time.
//!
//! All arithmetic lives in [`CounterState`] (plain data, tested without actors); the
//! actor only routes messages to it. Its node finds it through the
//! [`CounterTable`](super::table::CounterTable), which the supervisor keeps current.
//!
//! [`CounterMessage`] is deliberately node-local: ractor_cluster mirrors every actor
//! whose messages can cross the network onto every peer (about 11 KB per actor per
//! peer), which at 100,000 counters per node would cost gigabytes. Other nodes reach a
//! counter through its node's [`host`](super::host).
//!
//! After every message the counter commits its value, operation and rejection counts
//! to a [`Checkpoint`] kept in the table, so a counter restarted after a failure
//! carries on from the last message it completed (and keeps its start time). Only the
//! recent-rate window starts afresh.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use shared::counter::{CounterError, CounterStats, Delta, StatsOutcome, ValueOutcome};
use tracing::{error, info, warn};

use super::rate::RateWindow;

/// A message to a counter (node-local). Counters handle them strictly one at a time.
#[derive(RactorMessage)]
pub(crate) enum CounterMessage {
    /// Add `amount`, fire-and-forget. A change that would overflow is rejected,
    /// counted in [`CounterStats::rejected`] and logged.
    Increment {
        /// How much to add.
        amount: u64,
    },
    /// Subtract `amount`, fire-and-forget; rejected like [`CounterMessage::Increment`].
    Decrement {
        /// How much to subtract.
        amount: u64,
    },
    /// Apply `operations` coalesced changes that sum to `delta`, as a whole: all of
    /// them, or (on overflow) none, counted as `operations` rejections.
    Add {
        /// Net change.
        delta: i128,
        /// How many operations it stands for.
        operations: u64,
    },
    /// Apply `delta` and answer with the new value or the reason it was rejected.
    Apply {
        /// The change to apply.
        delta: Delta,
        /// Where the outcome goes.
        reply: RpcReplyPort<ValueOutcome>,
    },
    /// Answer with the current value (always `Ok`: the reply type is the host's, so
    /// that the host can hand a remote caller's port straight to the counter).
    GetValue(RpcReplyPort<ValueOutcome>),
    /// Answer with the counter's statistics (always `Ok`, as for `GetValue`).
    GetStats(RpcReplyPort<StatsOutcome>),
    /// Fail on purpose (fault injection, for supervision tests and drills). Ignored,
    /// with a warning, unless the node runs with `--enable-fault-injection`.
    Crash,
}

/// The counter behaviour.
#[derive(Debug, Default)]
pub(crate) struct Counter;

/// What a counter's restart keeps: the state as of the last completed message.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    value: AtomicI64,
    operations: AtomicU64,
    rejected: AtomicU64,
    started: Instant,
}

impl Checkpoint {
    /// A zeroed checkpoint for a counter starting now.
    pub(crate) fn new() -> Self {
        Self {
            value: AtomicI64::new(0),
            operations: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn save(&self, state: &CounterState) {
        self.value.store(state.value, Ordering::Relaxed);
        self.operations.store(state.operations, Ordering::Relaxed);
        self.rejected.store(state.rejected, Ordering::Relaxed);
    }

    fn restore(&self, name: String) -> CounterState {
        let mut state = CounterState::new(name, self.started);
        state.value = self.value.load(Ordering::Relaxed);
        state.operations = self.operations.load(Ordering::Relaxed);
        state.rejected = self.rejected.load(Ordering::Relaxed);
        state
    }
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self::new()
    }
}

/// What a counter is started with.
#[derive(Debug, Clone)]
pub(crate) struct CounterArgs {
    /// Cluster-wide name, `node/index`.
    pub(crate) name: String,
    /// Where its state is committed; the supervisor hands the same one to a restart.
    pub(crate) checkpoint: Arc<Checkpoint>,
    /// Whether [`CounterMessage::Crash`] makes it fail (`--enable-fault-injection`).
    pub(crate) fault_injection: bool,
}

impl CounterArgs {
    /// A fresh counter without fault injection.
    #[cfg(test)]
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            checkpoint: Arc::default(),
            fault_injection: false,
        }
    }
}

/// The running counter: its state and where to commit it.
pub(crate) struct CounterActorState {
    state: CounterState,
    args: CounterArgs,
}

/// A counter's private state.
#[derive(Debug, Clone)]
pub(crate) struct CounterState {
    /// Cluster-wide name, `node/index`.
    pub(crate) name: String,
    /// Current value.
    pub(crate) value: i64,
    /// Applied operations.
    pub(crate) operations: u64,
    /// Refused (overflowing) operations.
    pub(crate) rejected: u64,
    /// When the counter started.
    pub(crate) started: Instant,
    rate: RateWindow,
}

impl CounterState {
    /// A zeroed counter started at `now`.
    pub(crate) fn new(name: String, now: Instant) -> Self {
        Self {
            name,
            value: 0,
            operations: 0,
            rejected: 0,
            started: now,
            rate: RateWindow::new(now),
        }
    }

    /// Applies `delta` at `now`. On overflow nothing changes except the rejection count.
    pub(crate) fn apply(&mut self, delta: Delta, now: Instant) -> Result<i64, CounterError> {
        self.add(delta.signed(), 1, now)
            .map_err(|value| CounterError::Overflow { value, delta })
    }

    /// Applies `operations` changes summing to `delta` at `now`, as a whole. On
    /// overflow nothing changes except the rejection count (by `operations`), and the
    /// unchanged value is the error.
    pub(crate) fn add(&mut self, delta: i128, operations: u64, now: Instant) -> Result<i64, i64> {
        let next = i128::from(self.value)
            .checked_add(delta)
            .unwrap_or(i128::MAX);
        match i64::try_from(next) {
            Ok(value) => {
                self.value = value;
                self.operations = self.operations.saturating_add(operations);
                self.rate.record(now, operations);
                Ok(value)
            }
            Err(_) => {
                self.rejected = self.rejected.saturating_add(operations);
                Err(self.value)
            }
        }
    }

    /// The counter's statistics at `now`.
    pub(crate) fn stats(&self, now: Instant) -> CounterStats {
        let uptime = now.saturating_duration_since(self.started);
        let secs = uptime.as_secs_f64();
        CounterStats {
            name: self.name.clone(),
            value: self.value,
            operations: self.operations,
            rejected: self.rejected,
            ops_per_sec: if secs > 0.0 {
                self.operations as f64 / secs
            } else {
                0.0
            },
            recent_ops_per_sec: self.rate.rate(now),
            uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn apply_logged(&mut self, delta: Delta) {
        if let Err(error) = self.apply(delta, Instant::now()) {
            warn!(counter = %self.name, %error, "change rejected");
        }
    }
}

impl Actor for Counter {
    type Msg = CounterMessage;
    type State = CounterActorState;
    type Arguments = CounterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CounterArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(CounterActorState {
            state: args.checkpoint.restore(args.name.clone()),
            args,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        CounterActorState { state, .. }: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        info!(
            counter = %state.name,
            value = state.value,
            operations = state.operations,
            rejected = state.rejected,
            "counter stopped with final value {}",
            state.value
        );
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        CounterActorState { state, args }: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that gave up has dropped its reply port: failing to answer it is
        // not the counter's problem, so send errors are ignored.
        match message {
            CounterMessage::Increment { amount } => state.apply_logged(Delta::Increment(amount)),
            CounterMessage::Decrement { amount } => state.apply_logged(Delta::Decrement(amount)),
            CounterMessage::Add { delta, operations } => {
                if let Err(value) = state.add(delta, operations, Instant::now()) {
                    warn!(counter = %state.name, value, delta, operations,
                        "coalesced change rejected: it would overflow");
                }
            }
            CounterMessage::Apply { delta, reply } => {
                let _ = reply.send(ValueOutcome(state.apply(delta, Instant::now())));
            }
            CounterMessage::GetValue(reply) => {
                let _ = reply.send(ValueOutcome(Ok(state.value)));
            }
            CounterMessage::GetStats(reply) => {
                let _ = reply.send(StatsOutcome(Ok(state.stats(Instant::now()))));
            }
            CounterMessage::Crash if args.fault_injection => {
                error!(counter = %state.name, "failing on request (fault injection)");
                return Err("injected failure".into());
            }
            CounterMessage::Crash => {
                warn!(counter = %state.name, "ignored a crash request: fault injection is off");
            }
        }
        args.checkpoint.save(state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn increments_and_decrements_are_exact() {
        let t0 = Instant::now();
        let mut c = CounterState::new("n/0".into(), t0);
        assert_eq!(c.apply(Delta::Increment(5), t0), Ok(5));
        assert_eq!(c.apply(Delta::Decrement(7), t0), Ok(-2));
        assert_eq!(c.apply(Delta::Increment(0), t0), Ok(-2));
        assert_eq!((c.value, c.operations, c.rejected), (-2, 3, 0));
    }

    #[test]
    fn overflow_is_rejected_and_counted() {
        let t0 = Instant::now();
        let mut c = CounterState::new("n/0".into(), t0);
        c.apply(Delta::Increment(i64::MAX as u64), t0).unwrap();
        let err = c.apply(Delta::Increment(1), t0).unwrap_err();
        assert_eq!(
            err,
            CounterError::Overflow {
                value: i64::MAX,
                delta: Delta::Increment(1)
            }
        );
        assert_eq!(c.value, i64::MAX);
        // i64::MAX - (2^64 - 1) = i64::MIN: the widest decrement still fits.
        assert_eq!(c.apply(Delta::Decrement(u64::MAX), t0), Ok(i64::MIN));
        let mut low = CounterState::new("n/1".into(), t0);
        assert_eq!(low.apply(Delta::Decrement(1u64 << 63), t0), Ok(i64::MIN));
        assert!(low.apply(Delta::Decrement(1), t0).is_err());
        assert_eq!((low.value, low.operations, low.rejected), (i64::MIN, 1, 1));
    }

    #[test]
    fn coalesced_changes_count_every_operation_or_none() {
        let t0 = Instant::now();
        let mut c = CounterState::new("n/0".into(), t0);
        assert_eq!(c.add(12, 5, t0), Ok(12));
        assert_eq!(c.add(-20, 3, t0), Ok(-8));
        assert_eq!((c.value, c.operations, c.rejected), (-8, 8, 0));
        // A sum beyond i64 is refused whole, and each of its operations is counted.
        assert_eq!(c.add(i128::from(i64::MAX) + 9, 4, t0), Err(-8));
        assert_eq!(c.add(i128::MIN, 2, t0), Err(-8));
        assert_eq!((c.value, c.operations, c.rejected), (-8, 8, 6));
        assert_eq!(c.stats(t0 + Duration::from_secs(1)).operations, 8);
    }

    #[test]
    fn stats_report_rates() {
        let t0 = Instant::now();
        let mut c = CounterState::new("n/0".into(), t0);
        for i in 0..40 {
            c.apply(Delta::Increment(1), t0 + Duration::from_millis(i * 50))
                .unwrap();
        }
        let s = c.stats(t0 + Duration::from_secs(2));
        assert_eq!((s.value, s.operations, s.uptime_ms), (40, 40, 2000));
        assert!((s.ops_per_sec - 20.0).abs() < 1e-9);
        assert!((s.recent_ops_per_sec - 20.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn actor_answers_in_order() {
        let (actor, handle) = Actor::spawn(None, Counter, CounterArgs::new("test-node/0".into()))
            .await
            .unwrap();
        actor
            .cast(CounterMessage::Increment { amount: 10 })
            .unwrap();
        actor.cast(CounterMessage::Decrement { amount: 3 }).unwrap();
        actor
            .cast(CounterMessage::Add {
                delta: -4,
                operations: 2,
            })
            .unwrap();
        let out = ractor::call!(actor, |reply| CounterMessage::Apply {
            delta: Delta::Increment(5),
            reply
        })
        .unwrap();
        assert_eq!(out, ValueOutcome(Ok(8)));
        assert_eq!(
            ractor::call!(actor, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(8))
        );
        let StatsOutcome(stats) = ractor::call!(actor, CounterMessage::GetStats).unwrap();
        let stats = stats.unwrap();
        assert_eq!((stats.name.as_str(), stats.operations), ("test-node/0", 5));
        // Without fault injection a crash request changes nothing.
        actor.cast(CounterMessage::Crash).unwrap();
        assert_eq!(
            ractor::call!(actor, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(8))
        );
        actor.stop(None);
        handle.await.unwrap();
    }
}
