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
//! A counter's actor runs only while the counter is used (see
//! [`CounterTable`](super::table::CounterTable)): it is started from the store on its
//! first message and stops on [`CounterMessage::Retire`] once idle, its figures staying
//! in the store.
//!
//! Every change reaches a counter only once it is committed to the node's store: after
//! each commit the journal hands every counter it changed its new record (one message
//! per counter per commit, however many changes the commit held for it). A counter
//! starts from its record in the store (its figures as of some commit), and takes a
//! record only if it is of a later commit than the one it holds, so a counter started
//! again after a failure is exact: what was queued at the one that failed is in the
//! store already, and what was committed after it reaches the new one.

use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use shared::counter::{CounterStats, StatsOutcome, ValueOutcome};
use tracing::{debug, error, warn};

use super::rate::RateWindow;
use super::record::CounterRecord;

/// A message to a counter (node-local). Counters handle them strictly one at a time.
#[derive(RactorMessage)]
pub(crate) enum CounterMessage {
    /// The counter's record as the store's commit `record.commit` left it (every change
    /// of that commit and the ones before, computed by the store with the same
    /// arithmetic, [`CounterRecord`]): taken unless the counter holds that commit
    /// already. The operations it adds count toward the recent rate.
    Committed(CounterRecord),
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
    /// Stop: the counter has been idle, and its slot in the table is empty already
    /// (messages after this one went to the supervisor). Every message before it has
    /// been handled.
    Retire,
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

/// The running counter: its state, whether it may be crashed on request, and whether
/// it was retired (idle) rather than stopped with the node.
pub(crate) struct CounterActorState {
    state: CounterState,
    fault_injection: bool,
    retired: bool,
}

/// A counter's private state.
#[derive(Debug, Clone)]
pub(crate) struct CounterState {
    /// Cluster-wide name, `node/index`.
    pub(crate) name: String,
    /// Its figures, as of the store's commit `record.commit`.
    pub(crate) record: CounterRecord,
    /// When the counter started.
    pub(crate) started: Instant,
    rate: RateWindow,
}

impl CounterState {
    /// A counter with `record`, started at `started`, its recent rate counted from `now`.
    pub(crate) fn new(name: String, record: CounterRecord, started: Instant, now: Instant) -> Self {
        Self {
            name,
            record,
            started,
            rate: RateWindow::new(now),
        }
    }

    /// Takes `record`, a commit's, at `now` unless it holds that commit already; the
    /// operations it applied count toward the recent rate. Returns how many operations
    /// the commit refused (they would have overflowed).
    pub(crate) fn commit(&mut self, record: CounterRecord, now: Instant) -> u64 {
        if record.commit <= self.record.commit {
            return 0;
        }
        let applied = record.operations.saturating_sub(self.record.operations);
        let refused = record.rejected.saturating_sub(self.record.rejected);
        self.rate.record(now, applied);
        self.record = record;
        refused
    }

    /// Takes `record` if it holds later commits (not counted toward the rate: it may
    /// hold the changes of a long time).
    pub(crate) fn resume(&mut self, record: CounterRecord) {
        if record.commit > self.record.commit {
            self.record = record;
        }
    }

    /// The counter's statistics at `now`.
    pub(crate) fn stats(&self, now: Instant) -> CounterStats {
        stats_of(
            self.name.clone(),
            &self.record,
            self.started,
            now,
            self.rate.rate(now),
        )
    }
}

/// A counter's statistics at `now` from its figures, its start and its recent rate: a
/// running counter's, or an idle one's from its record in the store (recent rate 0: the
/// rate window lives with the actor).
pub(crate) fn stats_of(
    name: String,
    record: &CounterRecord,
    started: Instant,
    now: Instant,
    recent_ops_per_sec: f64,
) -> CounterStats {
    let uptime = now.saturating_duration_since(started);
    let secs = uptime.as_secs_f64();
    CounterStats {
        name,
        value: record.value,
        operations: record.operations,
        rejected: record.rejected,
        ops_per_sec: if secs > 0.0 {
            record.operations as f64 / secs
        } else {
            0.0
        },
        recent_ops_per_sec,
        uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
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
            retired: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        CounterActorState { state, retired, .. }: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Its final value on a clean stop is the supervisor's to log, from the store.
        let why = if *retired { "retired: idle" } else { "stopped" };
        debug!(counter = %state.name, value = state.record.value, "counter {why}");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        CounterActorState {
            state,
            fault_injection,
            retired,
        }: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that gave up has dropped its reply port: failing to answer it is
        // not the counter's problem, so send errors are ignored.
        match message {
            CounterMessage::Committed(record) => {
                let refused = state.commit(record, Instant::now());
                if refused > 0 {
                    warn!(counter = %state.name, value_after = record.value, operations = refused,
                        "changes rejected: they would overflow");
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
            CounterMessage::Retire => {
                *retired = true;
                myself.stop(None);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(value: i64, operations: u64, rejected: u64, commit: u64) -> CounterRecord {
        CounterRecord {
            value,
            operations,
            rejected,
            commit,
        }
    }

    #[test]
    fn a_commit_already_held_is_skipped_and_a_later_one_taken() {
        let t0 = Instant::now();
        let held = record(10, 2, 0, 7);
        let mut c = CounterState::new("n/0".into(), held, t0, t0);
        assert_eq!(c.commit(record(15, 3, 0, 7), t0), 0);
        assert_eq!(c.record, held, "commit 7 is in the record already");
        assert_eq!(c.commit(record(16, 4, 1, 8), t0), 1, "one refused");
        assert_eq!(c.record, record(16, 4, 1, 8));
        assert_eq!(c.commit(record(9, 3, 0, 6), t0), 0);
        assert_eq!(c.record.commit, 8, "an earlier commit is never taken");
        // The store's record of a later commit replaces what the counter holds; of an
        // earlier one, it does not.
        let later = record(30, 6, 1, 9);
        c.resume(later);
        assert_eq!(c.record, later);
        c.resume(held);
        assert_eq!(c.record, later);
    }

    #[test]
    fn stats_report_rates() {
        let t0 = Instant::now();
        let mut c = CounterState::new("n/0".into(), CounterRecord::default(), t0, t0);
        // 20 commits of 2 operations each, 100 ms apart.
        for i in 1..=20u64 {
            let at = t0 + Duration::from_millis((i - 1) * 100);
            c.commit(record(2 * i as i64, 2 * i, 0, i), at);
        }
        let s = c.stats(t0 + Duration::from_secs(2));
        assert_eq!((s.value, s.operations, s.uptime_ms), (40, 40, 2000));
        assert!((s.ops_per_sec - 20.0).abs() < 1e-9);
        assert!((s.recent_ops_per_sec - 20.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn actor_answers_in_order() {
        let mut args = CounterArgs::new("test-node/0".into());
        args.record = record(100, 1, 0, 2);
        let (actor, handle) = Actor::spawn(None, Counter, args).await.unwrap();
        for (value, commit) in [(10, 1), (105, 2), (102, 3), (-4, 5), (98, 4)] {
            actor
                .cast(CounterMessage::Committed(record(value, 2, 0, commit)))
                .unwrap();
        }
        assert_eq!(
            ractor::call!(actor, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(-4)),
            "commits 1 and 2 were held already, 4 came after 5"
        );
        let StatsOutcome(stats) = ractor::call!(actor, CounterMessage::GetStats).unwrap();
        let stats = stats.unwrap();
        assert_eq!((stats.name.as_str(), stats.operations), ("test-node/0", 2));
        // Without fault injection a crash request changes nothing.
        actor.cast(CounterMessage::Crash).unwrap();
        assert_eq!(
            ractor::call!(actor, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(-4))
        );
        actor.stop(None);
        handle.await.unwrap();
    }
}
