//! The counter actor: a private value changed only by its own messages, one at a time.
//!
//! The arithmetic lives in [`CounterRecord`] (plain data, shared with the store, which
//! keeps the same figures on disk); the actor routes messages to it and keeps a recent
//! rate besides. Its node finds it through the
//! [`CounterTable`](super::table::CounterTable), which the supervisor keeps current.
//!
//! [`CounterMessage`] is deliberately node-local: ractor_cluster mirrors every actor
//! whose messages can cross the network onto every peer (about 11 KB per actor per
//! peer), which at 100,000 counters per node would cost gigabytes. Other nodes reach a
//! counter through its node's [`host`](super::host).
//!
//! Every change reaches a counter only once it is committed to the node's store, with
//! the commit's number. A counter starts from its record in the store (its figures as of
//! some commit), and skips a change whose commit it already holds, so a counter started
//! again after a failure is exact: what was queued at the one that failed is in the
//! store already, and what was committed after it reaches the new one.

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use shared::counter::{CounterStats, StatsOutcome, ValueOutcome};
use tracing::{error, info, warn};

use super::rate::RateWindow;
use super::record::CounterRecord;

/// A message to a counter (node-local). Counters handle them strictly one at a time.
#[derive(RactorMessage)]
pub(crate) enum CounterMessage {
    /// Apply `operations` changes that sum to `delta`, as a whole (on overflow none
    /// of them, counted as `operations` rejections), committed in commit `commit`.
    Add {
        /// Net change.
        delta: i128,
        /// How many operations it stands for.
        operations: u64,
        /// The store's commit that holds it; a counter that holds this commit already
        /// skips it.
        commit: u64,
    },
    /// Answer with the current value (always `Ok`: the reply type is the host's, so
    /// that the host can hand a remote caller's port straight to the counter).
    GetValue(RpcReplyPort<ValueOutcome>),
    /// Answer with the counter's statistics (always `Ok`, as for `GetValue`).
    GetStats(RpcReplyPort<StatsOutcome>),
    /// Take the store's record if it holds later commits than the counter does: sent by
    /// a journal that starts, since its predecessor may have committed changes it never
    /// handed on.
    Resume(CounterRecord),
    /// Fail on purpose (fault injection, for supervision tests and drills). Ignored,
    /// with a warning, unless the node runs with `--enable-fault-injection`.
    Crash,
}

/// The counter behaviour.
#[derive(Debug, Default)]
pub(crate) struct Counter;

/// What a counter is started with.
#[derive(Debug, Clone)]
pub(crate) struct CounterArgs {
    /// Cluster-wide name, `node/index`.
    pub(crate) name: String,
    /// When the counter first started on this node (a restart keeps it, so lifetime
    /// ops/s stays meaningful).
    pub(crate) started: Instant,
    /// Its figures, from the store.
    pub(crate) record: CounterRecord,
    /// Whether [`CounterMessage::Crash`] makes it fail (`--enable-fault-injection`).
    pub(crate) fault_injection: bool,
}

impl CounterArgs {
    /// A fresh counter without fault injection.
    #[cfg(test)]
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            started: Instant::now(),
            record: CounterRecord::default(),
            fault_injection: false,
        }
    }
}

/// The running counter: its state, and whether it may be crashed on request.
pub(crate) struct CounterActorState {
    state: CounterState,
    fault_injection: bool,
}

/// A counter's private state.
#[derive(Debug, Clone)]
pub(crate) struct CounterState {
    /// Cluster-wide name, `node/index`.
    pub(crate) name: String,
    /// Its figures.
    pub(crate) record: CounterRecord,
    /// The last commit of the store record it started from (or resumed): changes of
    /// commits up to it are in `record` already and are skipped. (Not `record.commit`:
    /// one commit hands a counter several changes, all of which apply.)
    held_through: u64,
    /// When the counter started.
    pub(crate) started: Instant,
    rate: RateWindow,
}

impl CounterState {
    /// A counter with `record`, started at `started`, its recent rate counted from `now`.
    pub(crate) fn new(name: String, record: CounterRecord, started: Instant, now: Instant) -> Self {
        Self {
            name,
            held_through: record.commit,
            record,
            started,
            rate: RateWindow::new(now),
        }
    }

    /// Applies the changes of commit `commit` at `now` (unless it holds them already).
    /// On overflow nothing changes except the rejection count, and the unchanged value
    /// is the error.
    pub(crate) fn add(
        &mut self,
        delta: i128,
        operations: u64,
        commit: u64,
        now: Instant,
    ) -> Result<i64, i64> {
        if commit != 0 && commit <= self.held_through {
            return Ok(self.record.value);
        }
        let result = self.record.add(delta, operations);
        if result.is_ok() {
            self.rate.record(now, operations);
        }
        self.record.commit = self.record.commit.max(commit);
        result
    }

    /// Takes `record` if it holds later commits.
    pub(crate) fn resume(&mut self, record: CounterRecord) {
        if record.commit > self.record.commit {
            self.record = record;
            self.held_through = record.commit;
        }
    }

    /// The counter's statistics at `now`.
    pub(crate) fn stats(&self, now: Instant) -> CounterStats {
        let uptime = now.saturating_duration_since(self.started);
        let secs = uptime.as_secs_f64();
        let record = &self.record;
        CounterStats {
            name: self.name.clone(),
            value: record.value,
            operations: record.operations,
            rejected: record.rejected,
            ops_per_sec: if secs > 0.0 {
                record.operations as f64 / secs
            } else {
                0.0
            },
            recent_ops_per_sec: self.rate.rate(now),
            uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
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
            state: CounterState::new(args.name, args.record, args.started, Instant::now()),
            fault_injection: args.fault_injection,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        CounterActorState { state, .. }: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let record = &state.record;
        info!(
            counter = %state.name,
            value = record.value,
            operations = record.operations,
            rejected = record.rejected,
            "counter stopped with final value {}",
            record.value
        );
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        CounterActorState {
            state,
            fault_injection,
        }: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that gave up has dropped its reply port: failing to answer it is
        // not the counter's problem, so send errors are ignored.
        match message {
            CounterMessage::Add {
                delta,
                operations,
                commit,
            } => {
                if let Err(value) = state.add(delta, operations, commit, Instant::now()) {
                    warn!(counter = %state.name, value, delta, operations,
                        "change rejected: it would overflow");
                }
            }
            CounterMessage::Resume(record) => state.resume(record),
            CounterMessage::GetValue(reply) => {
                let _ = reply.send(ValueOutcome(Ok(state.record.value)));
            }
            CounterMessage::GetStats(reply) => {
                let _ = reply.send(StatsOutcome(Ok(state.stats(Instant::now()))));
            }
            CounterMessage::Crash if *fault_injection => {
                error!(counter = %state.name, "failing on request (fault injection)");
                return Err("injected failure".into());
            }
            CounterMessage::Crash => {
                warn!(counter = %state.name, "ignored a crash request: fault injection is off");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_commit_already_held_is_skipped() {
        let t0 = Instant::now();
        let held = CounterRecord {
            value: 10,
            operations: 2,
            rejected: 0,
            commit: 7,
        };
        let mut c = CounterState::new("n/0".into(), held, t0, t0);
        assert_eq!(
            c.add(5, 1, 7, t0),
            Ok(10),
            "commit 7 is in the record already"
        );
        assert_eq!(c.add(5, 1, 8, t0), Ok(15));
        assert_eq!(
            c.add(1, 1, 8, t0),
            Ok(16),
            "one commit, two changes: both apply"
        );
        assert_eq!(
            (c.record.value, c.record.operations, c.record.commit),
            (16, 4, 8)
        );
        // The store's record of a later commit replaces what the counter holds; of an
        // earlier one, it does not.
        let later = CounterRecord {
            value: 30,
            operations: 6,
            rejected: 1,
            commit: 9,
        };
        c.resume(later);
        assert_eq!(c.record, later);
        assert_eq!(c.add(1, 1, 9, t0), Ok(30), "commit 9 is held now");
        c.resume(held);
        assert_eq!(c.record, later);
        // Commit 0: not from the store (tests), always applied.
        assert_eq!(c.add(1, 1, 0, t0), Ok(31));
    }

    #[test]
    fn stats_report_rates() {
        let t0 = Instant::now();
        let mut c = CounterState::new("n/0".into(), CounterRecord::default(), t0, t0);
        for i in 0..40 {
            c.add(1, 1, 0, t0 + Duration::from_millis(i * 50)).unwrap();
        }
        let s = c.stats(t0 + Duration::from_secs(2));
        assert_eq!((s.value, s.operations, s.uptime_ms), (40, 40, 2000));
        assert!((s.ops_per_sec - 20.0).abs() < 1e-9);
        assert!((s.recent_ops_per_sec - 20.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn actor_answers_in_order() {
        let mut args = CounterArgs::new("test-node/0".into());
        args.record = CounterRecord {
            value: 100,
            operations: 1,
            rejected: 0,
            commit: 2,
        };
        let (actor, handle) = Actor::spawn(None, Counter, args).await.unwrap();
        for (delta, commit) in [(-90, 1), (5, 2), (-3, 3), (-4, 3), (-96, 4)] {
            actor
                .cast(CounterMessage::Add {
                    delta,
                    operations: 1,
                    commit,
                })
                .unwrap();
        }
        assert_eq!(
            ractor::call!(actor, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(-3)),
            "commits 1 and 2 were held already"
        );
        let StatsOutcome(stats) = ractor::call!(actor, CounterMessage::GetStats).unwrap();
        let stats = stats.unwrap();
        assert_eq!((stats.name.as_str(), stats.operations), ("test-node/0", 4));
        // Without fault injection a crash request changes nothing.
        actor.cast(CounterMessage::Crash).unwrap();
        assert_eq!(
            ractor::call!(actor, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(-3))
        );
        actor.stop(None);
        handle.await.unwrap();
    }
}
