//! Sending increments and decrements to counters anywhere in the cluster, coalesced
//! and with backpressure: what the load clients and `node bench` send with.
//!
//! **Coalescing.** In [`Mode::Coalesced`] a [`Pusher`] sums the changes for each
//! counter (a net delta plus how many operations it stands for) and sends each node
//! one [`HostMessage::Changes`] batch, when a node has [`Limits::flush_ops`] pending
//! operations or when its owner calls [`Pusher::flush_all`] (every few milliseconds).
//! Each counter still counts every operation exactly. [`Mode::Unbatched`] sends one
//! message per operation (the baseline `node bench` compares against).
//!
//! **Backpressure.** ractor_cluster's queues are unbounded, so each destination node
//! has a [`Window`] of [`Limits::window`] unacknowledged messages. Every
//! [`Limits::fence_every`] messages the pusher calls the node's host with
//! [`HostMessage::Sync`], and the answer (which comes after everything sent before it on
//! that connection) acknowledges them. A node whose window is full gets nothing more,
//! and [`Pusher::offer`] says [`Offer::Blocked`] once its pending batch is full too: the
//! sender waits instead of queueing. Memory is bounded by the window, however long an
//! overload lasts, and heartbeats are never stuck behind a long backlog.
//!
//! Each fence is one small task waiting for its answer, at most
//! `window / fence_every` per destination.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorId, ActorRef};
use shared::counter::Delta;
use shared::host::{Change, Changes, HostMessage};
use tokio::time::Instant;

use super::tally::IssuedTally;
use super::window::Window;
use crate::cluster::rpc::call_until;

/// How long an acknowledgement may take before the window is released anyway (the
/// node is then gone or going, and the failure detector will say so).
const FENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// One message per operation, or coalesced batches (`--load-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Sum changes per counter and send one batch per node.
    Coalesced,
    /// One `Increment`/`Decrement` message per operation.
    Unbatched,
}

/// Window and batch sizes of a [`Mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unacknowledged messages allowed per destination node.
    pub window: u64,
    /// Messages between two acknowledgement requests to the same node.
    pub fence_every: u64,
    /// Pending operations that make a node's batch due (1: no coalescing)...
    pub flush_ops: u64,
    /// ...provided they average this many per counter in the batch: spread over many
    /// counters, a batch waits until it carries several operations per change, since
    /// the receiver's cost is one counter message per change, not per operation.
    pub ops_per_change: u64,
    /// Pending operations that make a batch due however they are spread.
    pub max_batch_ops: u64,
}

impl Mode {
    /// The window and batch sizes used in this mode.
    pub fn limits(self) -> Limits {
        match self {
            // Up to 32 batches in flight per node: enough to keep a loopback link busy
            // through a round trip, small enough to stay flat. A batch carries 4096 to
            // 65536 operations in at most as many changes (a few bytes each).
            Mode::Coalesced => Limits {
                window: 32,
                fence_every: 4,
                flush_ops: 4096,
                ops_per_change: 8,
                max_batch_ops: 65536,
            },
            Mode::Unbatched => Limits {
                window: 4096,
                fence_every: 512,
                flush_ops: 1,
                ops_per_change: 1,
                max_batch_ops: 1,
            },
        }
    }
}

/// A destination node: its host and how many counters it runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// Node name.
    pub node: String,
    /// The node's counter host.
    pub host: ActorRef<HostMessage>,
    /// Counters on the node (indices `0..counters`).
    pub counters: u32,
}

/// "The host `host` has handed on the first `upto` messages sent to it."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The host that answered (a rejoined node has a new one).
    pub host: ActorId,
    /// Messages acknowledged.
    pub upto: u64,
}

/// What became of an operation offered to the pusher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Taken (sent, or pending in a batch).
    Accepted,
    /// The node's window and batch are full: wait for an acknowledgement.
    Blocked,
    /// The node's host is gone: refresh the targets.
    Failed,
}

/// One destination node's batch and window.
struct Lane {
    target: Target,
    /// Pending net delta and operations per counter index (coalesced mode only).
    pending: Vec<(i128, u64)>,
    /// Indices with pending operations, in first-touched order.
    dirty: Vec<u32>,
    pending_ops: u64,
    /// Messages sent and acknowledged.
    window: Window,
}

impl Lane {
    fn new(target: Target, mode: Mode) -> Self {
        let limits = mode.limits();
        let pending = match mode {
            Mode::Coalesced => vec![(0, 0); target.counters as usize],
            Mode::Unbatched => Vec::new(),
        };
        Self {
            target,
            pending,
            dirty: Vec::new(),
            pending_ops: 0,
            window: Window::new(limits.window, limits.fence_every),
        }
    }

    /// Whether the pending batch should go now (see [`Limits`]).
    fn due(&self, limits: Limits) -> bool {
        self.pending_ops >= limits.max_batch_ops
            || (self.pending_ops >= limits.flush_ops
                && self.pending_ops >= limits.ops_per_change * self.dirty.len() as u64)
    }
}

/// Sends changes to counters on many nodes; see the module documentation.
pub struct Pusher {
    mode: Mode,
    limits: Limits,
    lanes: Vec<Lane>,
    /// `starts[i]` is the first global counter number of lane `i`.
    starts: Vec<u64>,
    total: u64,
    tally: Arc<IssuedTally>,
    notify: Arc<dyn Fn(Ack) + Send + Sync>,
}

impl Pusher {
    /// A pusher with no targets yet. Sent operations are added to `tally`; `notify`
    /// receives acknowledgements (from a spawned task), which the owner hands back to
    /// [`Pusher::acked`].
    pub fn new(
        mode: Mode,
        tally: Arc<IssuedTally>,
        notify: Arc<dyn Fn(Ack) + Send + Sync>,
    ) -> Self {
        Self {
            mode,
            limits: mode.limits(),
            lanes: Vec::new(),
            starts: Vec::new(),
            total: 0,
            tally,
            notify,
        }
    }

    /// Replaces the destinations. A node whose host is unchanged keeps its window and
    /// pending batch; anything pending for a node that is no longer a target is dropped
    /// (it was never handed to the transport, so it was never counted as issued).
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        let mut old: Vec<Lane> = std::mem::take(&mut self.lanes);
        for target in targets {
            let kept = old.iter().position(|lane| {
                lane.target.host.get_id() == target.host.get_id()
                    && lane.target.counters == target.counters
            });
            let lane = match kept {
                Some(i) => old.swap_remove(i),
                None => Lane::new(target, self.mode),
            };
            self.lanes.push(lane);
        }
        self.starts.clear();
        self.total = 0;
        for lane in &self.lanes {
            self.starts.push(self.total);
            self.total += u64::from(lane.target.counters);
        }
    }

    /// Counters over all targets.
    pub fn total_counters(&self) -> u64 {
        self.total
    }

    /// Offers one operation for global counter number `pick` (`0..total_counters()`).
    pub fn offer(&mut self, pick: u64, delta: Delta) -> Offer {
        let lane_index = self.starts.partition_point(|&start| start <= pick) - 1;
        let index = (pick - self.starts[lane_index]) as u32;
        let limits = self.limits;
        let lane = &mut self.lanes[lane_index];
        match self.mode {
            Mode::Unbatched => {
                if lane.window.is_full() {
                    return Offer::Blocked;
                }
                let message = match delta {
                    Delta::Increment(amount) => HostMessage::Increment {
                        counter: index,
                        amount,
                    },
                    Delta::Decrement(amount) => HostMessage::Decrement {
                        counter: index,
                        amount,
                    },
                };
                if lane.target.host.cast(message).is_err() {
                    return Offer::Failed;
                }
                self.tally.record(delta.signed() as i64, 1);
                self.sent_one(lane_index);
                Offer::Accepted
            }
            Mode::Coalesced => {
                if lane.due(limits) {
                    match self.flush(lane_index) {
                        Offer::Accepted => {}
                        other => return other,
                    }
                }
                let lane = &mut self.lanes[lane_index];
                let slot = &mut lane.pending[index as usize];
                if slot.1 == 0 {
                    lane.dirty.push(index);
                }
                slot.0 += delta.signed();
                slot.1 += 1;
                lane.pending_ops += 1;
                if lane.due(limits) {
                    // Best effort: if the window is full the batch waits for the next
                    // offer or flush.
                    if self.flush(lane_index) == Offer::Failed {
                        return Offer::Failed;
                    }
                }
                Offer::Accepted
            }
        }
    }

    /// Sends lane `i`'s pending batch if its window allows (`Blocked` if not).
    fn flush(&mut self, i: usize) -> Offer {
        let lane = &mut self.lanes[i];
        if lane.dirty.is_empty() {
            return Offer::Accepted;
        }
        if lane.window.is_full() {
            return Offer::Blocked;
        }
        let mut net: i128 = 0;
        let changes: Vec<Change> = lane
            .dirty
            .drain(..)
            .map(|counter| {
                let (delta, operations) = std::mem::take(&mut lane.pending[counter as usize]);
                net += delta;
                Change {
                    counter,
                    delta,
                    operations,
                }
            })
            .collect();
        let operations = std::mem::take(&mut lane.pending_ops);
        if lane
            .target
            .host
            .cast(HostMessage::Changes(Changes(changes)))
            .is_err()
        {
            return Offer::Failed;
        }
        self.tally.record(net as i64, operations);
        self.sent_one(i);
        Offer::Accepted
    }

    fn sent_one(&mut self, i: usize) {
        if let Some(upto) = self.lanes[i].window.on_sent() {
            self.fence(i, upto);
        }
    }

    /// Asks lane `i`'s host to acknowledge everything up to message `upto`.
    fn fence(&self, i: usize, upto: u64) {
        let host = self.lanes[i].target.host.clone();
        let notify = Arc::clone(&self.notify);
        tokio::spawn(async move {
            let id = host.get_id();
            // Answered or not, the window is released: a node that does not answer
            // within the timeout is failing, and what was sent is lost or late anyway.
            let _ = call_until(
                host,
                |reply| HostMessage::Sync(upto, reply),
                Instant::now() + FENCE_TIMEOUT,
            )
            .await;
            notify(Ack { host: id, upto });
        });
    }

    /// Records an acknowledgement.
    pub fn acked(&mut self, ack: Ack) {
        if let Some(lane) = self
            .lanes
            .iter_mut()
            .find(|lane| lane.target.host.get_id() == ack.host)
        {
            lane.window.ack(ack.upto);
        }
    }

    /// Sends every pending batch whose window allows it. Returns false if a host is
    /// gone (refresh the targets).
    pub fn flush_all(&mut self) -> bool {
        let mut ok = true;
        for i in 0..self.lanes.len() {
            ok &= self.flush(i) != Offer::Failed;
        }
        ok
    }

    /// Flushes what it can and asks for acknowledgement of everything sent. Call it
    /// (again after each acknowledgement) until [`Pusher::settled`].
    pub fn drain(&mut self) -> bool {
        let ok = self.flush_all();
        for i in 0..self.lanes.len() {
            if let Some(upto) = self.lanes[i].window.fence_rest() {
                self.fence(i, upto);
            }
        }
        ok
    }

    /// True when nothing is pending and every message sent has been acknowledged.
    pub fn settled(&self) -> bool {
        self.lanes
            .iter()
            .all(|lane| lane.pending_ops == 0 && lane.window.is_settled())
    }

    /// Messages sent so far, over all targets.
    pub fn messages(&self) -> u64 {
        self.lanes.iter().map(|lane| lane.window.sent()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::facts::NodeFacts;
    use crate::counters::counter::{Counter, CounterArgs};
    use crate::testing::WritePath;
    use ractor::Actor;
    use shared::counter::StatsOutcome;
    use shared::protocol::counter_name;
    use tokio::sync::mpsc;

    /// Pushes `ops` known operations through a real host to real counters and checks
    /// that every counter's value and operation count come out exact.
    async fn push_exactly(mode: Mode, node: &str, ops: u64) -> u64 {
        let counters = 3u32;
        let facts = Arc::new(NodeFacts::for_tests(node, counters));
        let mut handles = Vec::new();
        for i in 0..counters {
            let (counter, handle) =
                Actor::spawn(None, Counter, CounterArgs::new(counter_name(node, i)))
                    .await
                    .unwrap();
            facts.table.set_actor(i, Some(counter.clone()));
            handles.push((counter, handle));
        }
        let path = WritePath::start(&facts).await;
        let host = path.host.clone();

        let (tx, mut acks) = mpsc::unbounded_channel();
        let tally = Arc::new(IssuedTally::default());
        let mut pusher = Pusher::new(
            mode,
            Arc::clone(&tally),
            Arc::new(move |ack| {
                let _ = tx.send(ack);
            }),
        );
        pusher.set_targets(vec![Target {
            node: node.into(),
            host: host.clone(),
            counters,
        }]);
        let mut expected = vec![(0i64, 0u64); counters as usize];
        let mut k = 0;
        while k < ops {
            let delta = crate::load::client::operation(k);
            let pick = k * 7 % pusher.total_counters();
            match pusher.offer(pick, delta) {
                Offer::Accepted => {
                    expected[pick as usize].0 += delta.signed() as i64;
                    expected[pick as usize].1 += 1;
                    k += 1;
                }
                Offer::Blocked => {
                    let ack = tokio::time::timeout(Duration::from_secs(5), acks.recv())
                        .await
                        .expect("no acknowledgement within 5 s")
                        .unwrap();
                    pusher.acked(ack);
                }
                Offer::Failed => panic!("the host is running"),
            }
        }
        while !pusher.settled() {
            pusher.drain();
            let ack = tokio::time::timeout(Duration::from_secs(5), acks.recv())
                .await
                .expect("not settled within 5 s")
                .unwrap();
            pusher.acked(ack);
        }
        for (i, want) in expected.iter().enumerate() {
            let StatsOutcome(got) =
                ractor::call!(host, |r| HostMessage::GetStats(i as u32, r)).unwrap();
            let got = got.unwrap();
            assert_eq!((got.value, got.operations), *want, "counter {i}");
        }
        let net: i64 = expected.iter().map(|e| e.0).sum();
        assert_eq!(tally.read(), (net, ops));
        let messages = pusher.messages();
        // What the counters hold is what was committed.
        for (i, want) in expected.iter().enumerate() {
            let record = path.store.record(i as u32).unwrap();
            assert_eq!(
                (record.value, record.operations),
                *want,
                "stored counter {i}"
            );
        }
        path.stop().await;
        for (counter, handle) in handles {
            counter.stop(None);
            handle.await.unwrap();
        }
        messages
    }

    #[tokio::test]
    async fn coalesced_pushes_are_exact_and_batched() {
        let ops = 100_000;
        let messages = push_exactly(Mode::Coalesced, "push-coalesced", ops).await;
        // 4096 operations per batch: about 25 messages, not 100,000.
        assert!(
            messages <= ops / 4096 + 1,
            "{messages} messages for {ops} ops"
        );
    }

    #[tokio::test]
    async fn a_receiver_that_never_acknowledges_blocks_the_sender() {
        for mode in [Mode::Coalesced, Mode::Unbatched] {
            // A host that takes everything and never acknowledges.
            let (host, handle) = crate::testing::Hoarder::<HostMessage>::start(None, None).await;
            let mut pusher = Pusher::new(mode, Arc::default(), Arc::new(|_| {}));
            pusher.set_targets(vec![Target {
                node: "stuck".into(),
                host: host.clone(),
                counters: 10,
            }]);
            let limits = mode.limits();
            let mut accepted = 0u64;
            while pusher.offer(accepted % 10, Delta::Increment(1)) == Offer::Accepted {
                accepted += 1;
                assert!(accepted < 10_000_000, "{mode:?}: never blocked");
            }
            assert_eq!(pusher.messages(), limits.window, "{mode:?}");
            // The window's messages plus one full pending batch, and nothing more.
            let pending = if mode == Mode::Coalesced {
                limits.flush_ops
            } else {
                0
            };
            assert_eq!(
                accepted,
                limits.window * limits.flush_ops + pending,
                "{mode:?}"
            );
            assert!(!pusher.settled());
            host.stop(None);
            handle.await.unwrap();
        }
    }

    /// A host that acknowledges at once and records the batches it receives.
    struct Recorder;

    #[derive(Default)]
    struct Received {
        operations: u64,
        changes: u64,
        batches: u64,
    }

    impl Actor for Recorder {
        type Msg = HostMessage;
        type State = Arc<std::sync::Mutex<Received>>;
        type Arguments = Arc<std::sync::Mutex<Received>>;

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            received: Self::Arguments,
        ) -> Result<Self::State, ractor::ActorProcessingErr> {
            Ok(received)
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            message: Self::Msg,
            received: &mut Self::State,
        ) -> Result<(), ractor::ActorProcessingErr> {
            match message {
                HostMessage::Sync(upto, reply) => {
                    let _ = reply.send(upto);
                }
                HostMessage::Changes(Changes(changes)) => {
                    let mut r = received.lock().unwrap_or_else(|e| e.into_inner());
                    r.batches += 1;
                    r.changes += changes.len() as u64;
                    r.operations += changes.iter().map(|c| c.operations).sum::<u64>();
                }
                _ => {}
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn batches_spread_over_many_counters_still_coalesce() {
        let received = Arc::new(std::sync::Mutex::new(Received::default()));
        let (host, handle) = Actor::spawn(None, Recorder, Arc::clone(&received))
            .await
            .unwrap();
        let (tx, mut acks) = mpsc::unbounded_channel();
        let mut pusher = Pusher::new(
            Mode::Coalesced,
            Arc::default(),
            Arc::new(move |ack| {
                let _ = tx.send(ack);
            }),
        );
        let counters = 10_000;
        pusher.set_targets(vec![Target {
            node: "many".into(),
            host: host.clone(),
            counters,
        }]);
        let ops = 1_000_000u64;
        let mut k = 0;
        while k < ops {
            // Spread evenly: consecutive operations land far apart.
            match pusher.offer(k * 7919 % u64::from(counters), Delta::Increment(1)) {
                Offer::Accepted => k += 1,
                Offer::Blocked => pusher.acked(acks.recv().await.unwrap()),
                Offer::Failed => panic!("the host is running"),
            }
        }
        while !pusher.settled() {
            pusher.drain();
            pusher.acked(acks.recv().await.unwrap());
        }
        let (operations, changes, batches) = {
            let r = received.lock().unwrap();
            (r.operations, r.changes, r.batches)
        };
        assert_eq!(operations, ops);
        // Batches of 4096 operations over 10,000 counters would carry about 1.2 per
        // change; waiting for several per change is what keeps the receiver's work down.
        assert!(
            operations >= 4 * changes,
            "{operations} operations in {changes} changes ({batches} batches)"
        );
        host.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn unbatched_pushes_are_exact_and_windowed() {
        let ops = 20_000;
        let messages = push_exactly(Mode::Unbatched, "push-unbatched", ops).await;
        assert_eq!(messages, ops);
    }
}
