//! Synthetic load clients (`--load R`): increments and decrements of known amounts at
//! `R` operations per second, spread over the counters of *all* nodes.
//!
//! Every operation that was handed to the transport is added to an [`IssuedTally`],
//! which the node reports in its stats: once the clients stop, the cluster's total value
//! and operation count must equal the sum of all nodes' tallies exactly.
//!
//! **Backpressure.** Sends are fire-and-forget casts, and ractor_cluster's queues are
//! unbounded, so a client faster than its receivers would grow them without limit (and
//! delay the heartbeats that share the connection). Each destination node therefore
//! has a window of [`WINDOW`] operations: every [`FENCE_EVERY`] operations the client
//! calls the counter it last sent to (`GetValue`), and the answer, which comes after
//! everything sent before it on that connection, acknowledges them. A node whose window
//! is full gets nothing more until it catches up, so `--load` above what the receivers
//! sustain runs at what they sustain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{pg, Actor, ActorCell, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use shared::counter::CounterMessage;
use shared::protocol::{owner_node, COUNTERS_GROUP};
use tokio::time::Instant;
use tracing::info;

use crate::collect::call_until;

/// How often the load client wakes up to send its share of operations.
const TICK: Duration = Duration::from_millis(10);
/// How often the load client re-reads the counters group (copying it every tick would
/// cost more than the sends themselves with many counters). A failed send refreshes at
/// once.
const REFRESH: Duration = Duration::from_millis(250);
/// Unacknowledged operations allowed per destination node.
pub const WINDOW: u64 = 4096;
/// Operations between two acknowledgement requests to the same node.
pub const FENCE_EVERY: u64 = 512;
/// How long an acknowledgement may take before the node's window is released anyway
/// (the node is then gone or going, and the failure detector will say so).
const FENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node's load clients have sent: net value and operation count.
#[derive(Debug, Default)]
pub struct IssuedTally {
    value: AtomicI64,
    operations: AtomicU64,
}

impl IssuedTally {
    /// Records one operation of signed `delta`.
    pub fn record(&self, delta: i64) {
        self.value.fetch_add(delta, Ordering::Relaxed);
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    /// `(value, operations)` so far.
    pub fn read(&self) -> (i64, u64) {
        (
            self.value.load(Ordering::Relaxed),
            self.operations.load(Ordering::Relaxed),
        )
    }
}

/// The `k`-th operation of a load client: increments of 1..=5, every fourth operation a
/// decrement of 1..=3. Deterministic, so a run can be reasoned about; the net drift is
/// upward so values visibly move.
pub fn operation(k: u64) -> CounterMessage {
    if k % 4 == 3 {
        CounterMessage::Decrement { amount: 1 + k % 3 }
    } else {
        CounterMessage::Increment { amount: 1 + k % 5 }
    }
}

fn signed(message: &CounterMessage) -> i64 {
    match message {
        CounterMessage::Increment { amount } => *amount as i64,
        CounterMessage::Decrement { amount } => -(*amount as i64),
        _ => 0,
    }
}

/// The load client behaviour.
#[derive(Debug, Default)]
pub struct LoadClient;

/// The load client's configuration.
#[derive(Debug, Clone)]
pub struct LoadArgs {
    /// Target operations per second.
    pub rate: u32,
    /// Stop after this many operations (`None`: until the node stops).
    pub max_ops: Option<u64>,
    /// Where sent operations are counted.
    pub tally: Arc<IssuedTally>,
    /// Seed for the choice of counters (the node name's hash, so nodes differ).
    pub seed: u64,
}

/// One destination node's window of unacknowledged operations.
#[derive(Debug, Default)]
struct Window {
    /// Operations sent to the node.
    sent: u64,
    /// Operations the node has acknowledged.
    acked: u64,
    /// `sent` when the last acknowledgement was requested.
    fenced: u64,
}

/// The load client's state: a token bucket, per-node windows and a random-number
/// generator.
pub struct LoadState {
    args: LoadArgs,
    sent: u64,
    tokens: f64,
    last_refill: Instant,
    rng: u64,
    ticker: Option<JoinHandle<()>>,
    /// Counters of all nodes with their node's name, as of `refreshed` (`None`: read
    /// them on the next tick).
    counters: Vec<(String, ActorCell)>,
    refreshed: Option<Instant>,
    windows: HashMap<String, Window>,
    stopping: bool,
}

/// Messages to the load client (local only).
#[derive(RactorMessage)]
pub enum LoadMessage {
    /// Time to send the operations that are due.
    Tick,
    /// `node` has processed the first `upto` operations sent to it (or stopped
    /// answering, which releases them too).
    Acked {
        /// Destination node.
        node: String,
        /// Operations acknowledged.
        upto: u64,
    },
}

impl LoadState {
    /// xorshift64*: fast, and good enough to spread operations over counters.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn finished(&self) -> bool {
        self.args.max_ops.is_some_and(|max| self.sent >= max)
    }

    fn refresh(&mut self, now: Instant) {
        if self
            .refreshed
            .is_some_and(|at| now.duration_since(at) < REFRESH)
        {
            return;
        }
        self.counters = pg::get_members(&COUNTERS_GROUP.to_string())
            .into_iter()
            .filter_map(|cell| {
                let node = owner_node(&cell.get_name()?)?.to_string();
                Some((node, cell))
            })
            .collect();
        self.refreshed = Some(now);
    }

    /// Sends what the token bucket and the windows allow.
    fn pump(&mut self, myself: &ActorRef<LoadMessage>) {
        if self.counters.is_empty() {
            return;
        }
        while self.tokens >= 1.0 && !self.finished() {
            let pick = (self.next_random() % self.counters.len() as u64) as usize;
            let (node, cell) = &self.counters[pick];
            let window = self.windows.entry(node.clone()).or_default();
            if window.sent - window.acked >= WINDOW {
                // That node is behind: wait for its acknowledgement (which pumps again).
                break;
            }
            let message = operation(self.sent);
            let delta = signed(&message);
            if cell.send_message(message).is_err() {
                // The counter is going away (its node left): re-read the group and
                // carry on next tick. Nothing was sent, so nothing is counted.
                self.refreshed = None;
                break;
            }
            window.sent += 1;
            if window.sent - window.fenced >= FENCE_EVERY {
                window.fenced = window.sent;
                request_ack(myself, node.clone(), cell.clone(), window.sent);
            }
            self.args.tally.record(delta);
            self.sent += 1;
            self.tokens -= 1.0;
        }
    }
}

/// Asks `counter` for its value; the answer acknowledges the first `upto` operations
/// sent to its node (they were sent before this call on the same connection).
fn request_ack(myself: &ActorRef<LoadMessage>, node: String, counter: ActorCell, upto: u64) {
    let myself = myself.clone();
    tokio::spawn(async move {
        let until = Instant::now() + FENCE_TIMEOUT;
        // Success or not, the window is released: a node that does not answer within
        // the timeout is failing, and its operations are lost or late either way.
        let _ = call_until(counter.into(), CounterMessage::GetValue, until).await;
        let _ = myself.cast(LoadMessage::Acked { node, upto });
    });
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
        info!(rate = args.rate, max_ops = ?args.max_ops, "load clients started");
        Ok(LoadState {
            rng: args.seed | 1,
            args,
            sent: 0,
            tokens: 0.0,
            last_refill: Instant::now(),
            ticker: Some(myself.send_interval(TICK, || LoadMessage::Tick)),
            counters: Vec::new(),
            refreshed: None,
            windows: HashMap::new(),
            stopping: false,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        let (value, operations) = state.args.tally.read();
        info!(value, operations, "load clients stopped");
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
                let rate = f64::from(state.args.rate);
                // At most 100 ms of operations are saved up, so a pause is not followed
                // by a burst.
                state.tokens = (state.tokens
                    + rate * now.duration_since(state.last_refill).as_secs_f64())
                .min(rate / 10.0 + 1.0);
                state.last_refill = now;
                state.refresh(now);
            }
            LoadMessage::Acked { node, upto } => {
                if let Some(window) = state.windows.get_mut(&node) {
                    window.acked = window.acked.max(upto);
                }
            }
        }
        state.pump(&myself);
        if state.finished() && !state.stopping {
            state.stopping = true;
            let (value, operations) = state.args.tally.read();
            info!(value, operations, "load clients finished their --load-ops");
            myself.stop(Some("load finished".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_have_known_amounts() {
        let net: i64 = (0..8).map(|k| signed(&operation(k))).sum();
        // k = 0..7: +1 +2 +3 -1 +5 +1 +2 -2
        assert_eq!(net, 11);
        let tally = IssuedTally::default();
        tally.record(5);
        tally.record(-2);
        assert_eq!(tally.read(), (3, 2));
    }
}
