//! Synthetic load clients (`--load R`): increments and decrements of known amounts at
//! `R` operations per second, spread evenly over the counters of *all* nodes.
//!
//! The clients send through a [`Pusher`]: coalesced per counter and batched per node
//! (or one message per operation with `--load-mode unbatched`), with a bounded window
//! of unacknowledged batches per node, so `--load` above what the receivers sustain
//! runs at what they sustain, with flat memory. Every batch is committed to the node's
//! outbox before it is sent, and counted in the node's [`IssuedTally`] then: delivered
//! exactly once from there, so once the load has stopped and every fault has healed,
//! the cluster's total value and operation count equal the sum of all nodes' tallies
//! exactly, and nothing is in flight.
//!
//! Destinations are the counter hosts in the process group, with each node's counter
//! count from the membership (this node's from its own table).
//!
//! A load client that starts (the node started, or the client was restarted) first
//! waits until everything already handed to the journal is committed, then takes up the
//! outbox and the tally from the store: what the outbox holds is sent again, and with
//! `--load-ops` it stops at the same total, counting what was issued before a crash.
//! What it had coalesced but not yet issued is lost (never counted, so nothing is
//! miscounted). Without `--load`, a node whose outbox holds batches from an earlier run
//! runs a load client at rate 0 that delivers them and stops.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use shared::counter::Delta;
use shared::host::StreamId;
use tokio::time::Instant;
use tracing::{info, warn};

use super::outbox::JournalOutbox;
use super::push::{Mode, Offer, PushEvent, Pusher, Target};
use crate::clock::Ticker;
use crate::cluster::discovery::hosts;
use crate::cluster::rpc::call_until;
use crate::facts::NodeFacts;
use crate::store::journal::{journal_name, JournalMessage};
use crate::store::{Store, StoreError};

/// The load client wakes up often enough to issue about this many operations each
/// time (a wake-up costs far more than an operation)...
const OPS_PER_TICK: f64 = 25.0;
/// ...but at least this often, so a trickle still leaves within a tick...
const LONGEST_TICK: Duration = Duration::from_millis(50);
/// ...and at most this often.
const SHORTEST_TICK: Duration = Duration::from_millis(5);

/// How often a load client issuing `rate` operations per second wakes up to issue its
/// share and flush what it has coalesced: every 5 ms from 5,000 operations per second
/// on, every 20 ms at 1,250, every 50 ms at 500 or fewer (and with no load of its own).
/// What it coalesces waits anyway while its destination's last batch is on its way
/// (see [`Pusher`]), and a wake-up costs as much as hundreds of operations.
pub(crate) fn tick_for(rate: u32) -> Duration {
    if rate == 0 {
        return LONGEST_TICK;
    }
    Duration::from_secs_f64(OPS_PER_TICK / f64::from(rate)).clamp(SHORTEST_TICK, LONGEST_TICK)
}
/// How often the load client re-reads the hosts group. A failed send refreshes at once.
const REFRESH: Duration = Duration::from_millis(250);
/// How long a starting load client waits for the journal (which the root may be
/// restarting) to commit what it holds.
const JOURNAL_WAIT: Duration = Duration::from_secs(10);
/// How long a starting load client waits for a journal that is not running at all (it
/// may be waiting for the store to be readable: the root starts the load client again
/// later).
const JOURNAL_ABSENT: Duration = Duration::from_secs(1);

/// The `k`-th operation of a load client: increments of 1..=5, every fourth operation a
/// decrement of 1..=3. Deterministic, so a run can be reasoned about; the net drift is
/// upward so values visibly move.
pub fn operation(k: u64) -> Delta {
    if k % 4 == 3 {
        Delta::Decrement(1 + k % 3)
    } else {
        Delta::Increment(1 + k % 5)
    }
}

/// The load client behaviour.
#[derive(Debug, Default)]
pub(crate) struct LoadClient;

/// Load clients to run on a node (`--load`, `--load-ops`, `--load-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadSpec {
    /// Operations per second.
    pub rate: u32,
    /// Stop after this many operations.
    pub max_ops: Option<u64>,
    /// Coalesced or one message per operation.
    pub mode: Mode,
}

/// The load client's configuration.
#[derive(Clone)]
pub(crate) struct LoadArgs {
    /// Rate, limit and mode.
    pub(crate) spec: LoadSpec,
    /// This node: its name, counters, membership, and the tally of what was issued.
    pub(crate) facts: Arc<NodeFacts>,
    /// The node's store: the outbox and the tally, as of the last commit.
    pub(crate) store: Arc<Store>,
}

/// The load client's state: a token bucket, the pusher and a random-number generator.
pub(crate) struct LoadState {
    args: LoadArgs,
    /// Operations accepted so far (this run and, after a restart, those issued before).
    sent: u64,
    tokens: f64,
    last_refill: Instant,
    rng: fastrand::Rng,
    _ticker: Ticker,
    pusher: Pusher,
    refreshed: Option<Instant>,
    stopping: bool,
}

/// Messages to the load client (local only).
#[derive(RactorMessage)]
pub(crate) enum LoadMessage {
    /// Time to send the operations that are due.
    Tick,
    /// A fence was answered, or the outbox committed a batch.
    Push(PushEvent),
}

impl LoadState {
    fn finished(&self) -> bool {
        self.args.spec.max_ops.is_some_and(|max| self.sent >= max)
    }

    fn refresh(&mut self, now: Instant) {
        if self
            .refreshed
            .is_some_and(|at| now.duration_since(at) < REFRESH)
        {
            return;
        }
        let facts = &self.args.facts;
        let counts: std::collections::HashMap<String, u32> = facts
            .membership
            .snapshot()
            .into_iter()
            .filter_map(|peer| Some((peer.name, peer.counters?)))
            .collect();
        let targets = hosts()
            .into_iter()
            .filter_map(|(node, host)| {
                let counters = if node == facts.name {
                    facts.table.len()
                } else {
                    *counts.get(&node)?
                };
                (counters > 0).then_some(Target {
                    node,
                    host,
                    counters,
                })
            })
            .collect();
        self.pusher.set_targets(targets);
        self.refreshed = Some(now);
    }

    /// Sends what the token bucket and the windows allow.
    fn pump(&mut self) {
        let total = self.pusher.total_counters();
        if total == 0 {
            return;
        }
        while self.tokens >= 1.0 && !self.finished() {
            let pick = self.rng.u64(..total);
            match self.pusher.offer(pick, operation(self.sent)) {
                Offer::Accepted => {
                    self.sent += 1;
                    self.tokens -= 1.0;
                }
                // That node is behind: its acknowledgement pumps again.
                Offer::Blocked => break,
                Offer::Failed => {
                    // A host is going away (its node left): re-read the group next tick.
                    self.refreshed = None;
                    break;
                }
            }
        }
    }
}

/// Waits until the journal runs and has committed everything handed to it so far. If it
/// does not (its store takes no writes, or it cannot start), the store is unavailable:
/// the load client is started again once it is.
async fn journal_settled(node: &str) -> Result<(), StoreError> {
    let started = Instant::now();
    let deadline = started + JOURNAL_WAIT;
    loop {
        match ractor::registry::where_is(journal_name(node)) {
            Some(cell) => {
                let journal: ActorRef<JournalMessage> = cell.into();
                if call_until(journal, |r| JournalMessage::Sync(0, r), deadline)
                    .await
                    .is_some()
                {
                    return Ok(());
                }
            }
            None if started.elapsed() >= JOURNAL_ABSENT => {
                return Err(StoreError::Unavailable(format!(
                    "the journal has not been running for {JOURNAL_ABSENT:?}"
                )))
            }
            None => {}
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "the journal did not settle within {JOURNAL_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A pusher that takes up the node's outbox, once whatever was handed to the journal
/// before is committed (or never will be); returns it with the operations issued so far
/// (the tally, which it also sets).
async fn start_pusher(
    args: &LoadArgs,
    myself: &ActorRef<LoadMessage>,
) -> Result<(Pusher, u64), ActorProcessingErr> {
    journal_settled(&args.facts.name).await?;
    let store = Arc::clone(&args.store);
    let outbox = crate::runtime::busy_poll::spawn_blocking(move || store.outbox()).await??;
    args.facts.issued.set(outbox.issued);
    let events = myself.clone();
    let mut pusher = Pusher::new(
        args.spec.mode,
        StreamId {
            sender: args.facts.name.clone(),
            origin: args.store.origin(),
        },
        Arc::clone(&args.facts.issued),
        Some(JournalOutbox::new(&args.facts.name)),
        Arc::new(move |event| {
            let _ = events.cast(LoadMessage::Push(event));
        }),
    );
    pusher.resume(outbox.streams);
    args.facts
        .issued
        .set_in_flight(pusher.in_flight_operations());
    args.facts.issued.set_in_flight_to(pusher.in_flight_to());
    Ok((pusher, outbox.issued.operations))
}

impl Actor for LoadClient {
    type Msg = LoadMessage;
    type State = LoadState;
    type Arguments = LoadArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: LoadArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let LoadSpec {
            rate,
            max_ops,
            mode,
        } = args.spec;
        let (pusher, issued) = start_pusher(&args, &myself).await?;
        args.facts.issued.set_running(true);
        info!(rate, max_ops = ?max_ops, mode = ?mode, issued, in_flight = pusher.in_flight_operations(), "load clients started");
        Ok(LoadState {
            rng: fastrand::Rng::new(),
            args,
            sent: issued,
            tokens: 0.0,
            last_refill: Instant::now(),
            _ticker: Ticker::every(&myself, tick_for(rate), || LoadMessage::Tick),
            pusher,
            refreshed: None,
            stopping: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Issue what is coalesced but not yet issued (if the windows allow), whether or
        // not a batch is on its way: the journal commits it before the node stops, and
        // the next run sends it.
        state.pusher.flush_pending();
        state.args.facts.issued.set_running(false);
        let issued = state.args.facts.issued.read();
        info!(
            value = issued.value,
            operations = issued.operations,
            "load clients stopped"
        );
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match message {
            LoadMessage::Tick => {
                let rate = f64::from(state.args.spec.rate);
                // At most 100 ms of operations are saved up, so a pause is not followed
                // by a burst.
                state.tokens = (state.tokens
                    + rate * now.duration_since(state.last_refill).as_secs_f64())
                .min(rate / 10.0 + 1.0);
                state.last_refill = now;
                state.refresh(now);
                state.pump();
                if !state.pusher.flush_all() {
                    state.refreshed = None;
                }
                let issued = &state.args.facts.issued;
                issued.set_in_flight_to(state.pusher.in_flight_to());
            }
            LoadMessage::Push(event) => {
                if let Err(why) = state.pusher.on_event(event) {
                    // The journal failed with a batch of ours uncommitted (or perhaps
                    // committed), or refused it, or a destination is ahead of this
                    // store: start again from what the store holds, once everything
                    // handed to the journal is committed.
                    warn!(%why, "taking up the outbox again");
                    let (pusher, issued) = start_pusher(&state.args, &myself).await?;
                    state.pusher = pusher;
                    state.sent = issued;
                    state.refreshed = None;
                    state.refresh(now);
                }
                state.pump();
            }
        }
        let in_flight = state.pusher.in_flight_operations();
        let issued = &state.args.facts.issued;
        if in_flight == 0 && issued.in_flight() != 0 {
            // Per destination it is otherwise updated at each tick; cleared once, when
            // the last acknowledgement comes, not at every message.
            issued.set_in_flight_to(Vec::new());
        }
        issued.set_in_flight(in_flight);
        if state.finished() {
            // Send the rest and wait for it to be acknowledged, then stop.
            state.pusher.drain();
            if state.pusher.settled() && !state.stopping {
                state.stopping = true;
                let issued = state.args.facts.issued.read();
                info!(
                    value = issued.value,
                    operations = issued.operations,
                    "load clients finished: everything they issued is acknowledged"
                );
                myself.stop(Some(crate::supervision::LOAD_FINISHED.into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_client_wakes_up_about_once_per_25_operations_within_bounds() {
        assert_eq!(tick_for(10_000_000), Duration::from_millis(5));
        assert_eq!(tick_for(5_000), Duration::from_millis(5));
        assert_eq!(tick_for(1_250), Duration::from_millis(20));
        assert_eq!(tick_for(500), Duration::from_millis(50));
        assert_eq!(tick_for(160), Duration::from_millis(50));
        assert_eq!(tick_for(1), Duration::from_millis(50));
        assert_eq!(tick_for(0), Duration::from_millis(50));
    }

    #[test]
    fn operations_have_known_amounts() {
        let net: i128 = (0..8).map(|k| operation(k).signed()).sum();
        // k = 0..7: +1 +2 +3 -1 +5 +1 +2 -2
        assert_eq!(net, 11);
    }
}
