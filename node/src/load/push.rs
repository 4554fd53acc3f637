//! Sending increments and decrements to counters anywhere in the cluster, coalesced,
//! with backpressure, and exactly once: what the load clients and `node-bench` send
//! with.
//!
//! **Coalescing.** In [`Mode::Coalesced`] a [`Pusher`] sums the changes for each
//! counter (a net delta plus how many operations it stands for) and makes each node one
//! batch, when a node has [`Limits::flush_ops`] pending operations, or when its owner
//! calls [`Pusher::flush_all`] (every few milliseconds) and the node has nothing
//! unacknowledged. A node with batches on their way gathers until their
//! acknowledgement, which makes its next batch at once (Nagle's rule, with no timer for
//! a lone change): a trickle costs one batch, one commit on each side, per round trip,
//! and a burst fills the window. Each counter still counts every operation exactly.
//! [`Mode::Unbatched`] makes one batch, one message, per operation (the baseline
//! `node-bench` compares against).
//!
//! **Exactly once.** Each destination node is a stream of numbered batches
//! ([`Batch`]), with a [`Window`] per stream. A batch is issued once it is committed to
//! the sender's [outbox](super::outbox) (with the issued tally), and only then sent; it
//! is kept until the destination acknowledges it. Every [`Limits::fence_every`] batches
//! the pusher asks the destination's host where the stream stands
//! ([`HostMessage::Sync`], answered once what came before it is on disk there, with the
//! last batch committed); the last batch of a coalesced burst carries its fence in the
//! same message ([`HostMessage::SyncedBatch`]). An answer short of what was sent, no
//! answer in time, or a new host for the node (a new session, a new run) sends
//! everything unacknowledged again;
//! the destination takes each batch once. A node that is gone keeps its stream, parked,
//! until it is back.
//!
//! **Both sides agree, or it is said.** A fence's answer carries what the stream's
//! batches add up to in the destination's store ([`StreamMark`]); the sender knows what
//! its own batches up to that number add up to, and checks. They differ only when a
//! store on either side was restored from an older copy or lost (or a destination
//! dropped changes for counters it does not have): then the sender logs an ERROR with
//! the difference, counts it as unvouched (in its node's description, so every
//! collection shows it) and takes the destination's side from then on
//! ([`Adopt`](super::outbox::Adopt), committed to its store). A destination that holds
//! batches beyond any this store issued (this store is older than what it had sent) is
//! the one case it cannot carry on from where it is: the pusher says so
//! ([`StartAgain::ReceiverAhead`]), and its owner starts again from the store, numbering
//! after them. So that no batch is ever numbered into a stream its destination is
//! ahead in, a stream makes no new batch until an answer from its destination's
//! current host has been checked: when the pusher starts, and whenever the destination
//! has a new host (it restarted: perhaps from an older copy). Only answers from the
//! current host are checked, and an answer that claims a stream beyond any sender's
//! reach ([`MAX_AHEAD`]) is not believed.
//!
//! **Backpressure.** ractor_cluster's queues are unbounded, so each stream has at most
//! [`Limits::window`] batches unacknowledged. A node whose window is full gets nothing
//! more, and [`Pusher::offer`] says [`Offer::Blocked`] once its pending batch is full
//! too: the sender waits instead of queueing. Memory is bounded by the windows, however
//! long an overload or an outage lasts, and heartbeats are never stuck behind a long
//! backlog.
//!
//! Each fence is one small task waiting for its answer, at most
//! `window / fence_every` per destination.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorId, ActorRef};
use shared::agent::InFlightTo;
use shared::counter::Delta;
use shared::host::{Batch, Change, HostMessage, StreamId, StreamMark};
use tracing::{error, info};

use super::outbox::{Adopt, OutBatch, Outbox};
use super::tally::IssuedTally;
use super::window::{Answer, Fence, Window};
use crate::cluster::rpc::ask;
use crate::store::{Discrepancy, Sum};

/// How long a fence's answer may take before everything unacknowledged is sent again
/// (the node is slow, frozen or gone; the failure detector will say which).
const FENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most batches a destination is believed to hold beyond what a sender issued (a
/// store restored from an older copy falls this far behind only after a trillion
/// batches): an answer beyond it is a lie or a fault, and is ignored.
pub(crate) const MAX_AHEAD: u64 = 1 << 40;

/// One message per operation, or coalesced batches (`--load-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Sum changes per counter and send one batch per node.
    Coalesced,
    /// One batch, one message, per operation.
    Unbatched,
}

/// Window and batch sizes of a [`Mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Unacknowledged batches allowed per destination node.
    pub window: u64,
    /// Batches between two acknowledgement requests to the same node.
    pub fence_every: u64,
    /// Pending operations that make a node's batch due (1: no coalescing)...
    pub flush_ops: u64,
    /// ...provided they average this many per counter in the batch: spread over many
    /// counters, a batch waits until it carries several operations per change, since
    /// the receiver's cost (encoding, the store's arithmetic) is per change, not per
    /// operation.
    pub ops_per_change: u64,
    /// Pending operations that make a batch due however they are spread.
    pub max_batch_ops: u64,
}

impl Mode {
    /// The window and batch sizes used in this mode.
    pub(crate) fn limits(self) -> Limits {
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

/// What the pusher's tasks and its outbox report; the owner hands each back to
/// [`Pusher::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// `host` (of `node`) answered `fence` with where the stream stands in its store,
    /// or did not answer in time (`None`).
    Answered {
        /// The destination.
        node: String,
        /// The host the fence went to.
        host: ActorId,
        /// The fence.
        fence: Fence,
        /// The answer.
        committed: Option<StreamMark>,
    },
    /// `node`'s batches up to `seq` are committed to the outbox: issued.
    Issued {
        /// The destination.
        node: String,
        /// The batch.
        seq: u64,
    },
    /// An adoption for `node` was handed to the outbox, which went down before it was
    /// committed: the sender must start again from the outbox.
    AdoptionLost {
        /// The destination.
        node: String,
        /// Which pusher made it.
        pusher: u64,
    },
    /// Batch `seq` for `node` was handed to the outbox, which went down before it said
    /// whether it was committed: the sender must start again from the outbox.
    IssueLost {
        /// The destination.
        node: String,
        /// The batch.
        seq: u64,
        /// Which pusher issued it (a pusher started again ignores its predecessor's).
        pusher: u64,
    },
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

/// The sender cannot go on from where it is, and must start again from its outbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartAgain {
    /// The outbox went down (or refused) a batch it was issuing (see
    /// [`PushEvent::IssueLost`]).
    #[error("the outbox did not issue batch {seq} for {node}: start again from it")]
    IssueLost {
        /// The destination.
        node: String,
        /// The batch.
        seq: u64,
    },
    /// The destination holds batches of this stream beyond any this sender issued: its
    /// store is older than what it had sent (restored from an older copy). Numbering
    /// carries on after them once the outbox has that (see [`Adopt`]).
    #[error("{node} holds batches of this node's stream up to {upto}, beyond the {issued} this store issued: start again after them")]
    ReceiverAhead {
        /// The destination.
        node: String,
        /// Its last batch.
        upto: u64,
        /// The last batch this sender issued.
        issued: u64,
    },
    /// The outbox went down before it committed an adoption (see [`Adopt`]).
    #[error("the outbox did not commit an adoption for {node}: start again from it")]
    AdoptionLost {
        /// The destination.
        node: String,
    },
}

/// One destination node's stream: its pending changes, window and unacknowledged
/// batches.
struct Lane {
    node: String,
    /// The node's host, while it is a target (parked without one).
    host: Option<ActorRef<HostMessage>>,
    counters: u32,
    /// Pending net delta and operations per counter index (coalesced mode only).
    pending: Vec<(i128, u64)>,
    /// Indices with pending operations, in first-touched order.
    dirty: Vec<u32>,
    pending_ops: u64,
    window: Window,
    /// Batches made and not acknowledged, in order (numbers `acked + 1 ..= last`).
    batches: VecDeque<OutBatch>,
    /// Fences waiting for their answer.
    fences_out: u64,
    /// Messages sent (batches, counting those sent again).
    messages: u64,
    /// What the destination should hold once it has every batch up to the window's
    /// `issued` (see [`crate::store::OutRecord::issued`]).
    issued_totals: Sum,
    /// Whether `issued_totals` is known (a stream begun by a store that kept no totals
    /// takes the destination's at its first answer).
    known: bool,
    /// Adoptions so far (see [`Adopt`]).
    adoptions: u64,
    /// Whether an answer from the destination's current host has been checked: until
    /// then, no new batch is made (see the module documentation).
    verified: bool,
}

impl Lane {
    fn new(node: String, window: Window) -> Self {
        Self {
            node,
            host: None,
            counters: 0,
            pending: Vec::new(),
            dirty: Vec::new(),
            pending_ops: 0,
            window,
            batches: VecDeque::new(),
            fences_out: 0,
            messages: 0,
            issued_totals: Sum::default(),
            known: true,
            adoptions: 0,
            verified: false,
        }
    }

    /// Whether the window lets no new batch be made now.
    fn blocked(&self) -> bool {
        !self.verified || self.window.is_full()
    }

    /// Whether the pending batch should go now (see [`Limits`]).
    fn due(&self, limits: Limits) -> bool {
        self.pending_ops >= limits.max_batch_ops
            || (self.pending_ops >= limits.flush_ops
                && self.pending_ops >= limits.ops_per_change * self.dirty.len() as u64)
    }

    /// Batch `seq`, if it is made and not acknowledged.
    fn batch(&self, seq: u64) -> Option<&OutBatch> {
        let first = self.batches.front()?.seq;
        let batch = self
            .batches
            .get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        (batch.seq == seq).then_some(batch)
    }

    /// What the destination should hold of the stream through batch `upto`, if this
    /// lane can tell: not for a batch already acknowledged (the answer is older than
    /// what it knows), and all it issued for one beyond.
    fn expected_through(&self, upto: u64) -> Option<(i128, i128)> {
        if upto < self.window.acked() {
            return None;
        }
        let issued = self.window.issued();
        let (mut value, mut operations) = (
            i128::from(self.issued_totals.value),
            i128::from(self.issued_totals.operations),
        );
        for batch in self.batches.iter().rev() {
            if batch.seq <= upto {
                break;
            }
            if batch.seq <= issued {
                value -= i128::from(batch.value);
                operations -= i128::from(batch.operations);
            }
        }
        Some((value, operations))
    }

    /// Checks the destination's `mark` against what this lane issued. Returns the
    /// adoption to make (and count as unvouched unless the lane's totals were not
    /// known), or `None` if they agree or the answer is too old to tell.
    fn audit(&mut self, mark: StreamMark) -> Option<Adopt> {
        let expected = self.expected_through(mark.seq)?;
        let value = i128::from(mark.value) - expected.0;
        let operations = i128::from(mark.operations) - expected.1;
        let ahead = mark.seq > self.window.issued();
        if value == 0 && operations == 0 && !ahead && self.known {
            return None;
        }
        let clamp = |n: i128| i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX });
        let adopt = self.adoption(
            mark.seq.max(self.window.acked()),
            Discrepancy::new(clamp(value), clamp(operations)),
            self.known && (value != 0 || operations != 0),
        );
        Some(adopt)
    }

    /// The lane's next adoption: acknowledged up to `upto`, what it counts as issued
    /// moved by `by`; taken here at once. One that is not a discrepancy sets the
    /// baseline (the totals are known from then on); one that is leaves an unknown
    /// baseline unknown, for the destination's first answer to set.
    fn adoption(&mut self, upto: u64, by: Discrepancy, unvouched: bool) -> Adopt {
        self.adoptions += 1;
        self.issued_totals = self.issued_totals.moved_by(by);
        self.known |= !unvouched;
        Adopt {
            dest: self.node.clone(),
            number: self.adoptions,
            upto,
            value: by.value,
            operations: by.operations,
            unvouched,
        }
    }
}

/// Sends changes to counters on many nodes; see the module documentation.
pub struct Pusher {
    mode: Mode,
    limits: Limits,
    stream: StreamId,
    lanes: Vec<Lane>,
    /// Lanes that are targets, in target order.
    active: Vec<usize>,
    /// `starts[i]` is the first global counter number of `active[i]`.
    starts: Vec<u64>,
    total: u64,
    tally: Arc<IssuedTally>,
    outbox: Option<Arc<dyn Outbox>>,
    notify: Arc<dyn Fn(PushEvent) + Send + Sync>,
    /// Operations issued and not acknowledged.
    in_flight: u64,
    /// This pusher among those of the process (see [`PushEvent::IssueLost`]).
    id: u64,
}

/// Pushers made so far in this process.
static PUSHERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Pusher {
    /// A pusher with no targets yet, sending as stream `stream`. Issued operations are
    /// added to `tally`. With an `outbox`, batches are issued by committing them to it
    /// (without, as they are made); `notify` receives the events of fences and of the
    /// outbox (from other tasks), which the owner hands back to [`Pusher::on_event`].
    pub fn new(
        mode: Mode,
        stream: StreamId,
        tally: Arc<IssuedTally>,
        outbox: Option<Arc<dyn Outbox>>,
        notify: Arc<dyn Fn(PushEvent) + Send + Sync>,
    ) -> Self {
        Self {
            mode,
            limits: mode.limits(),
            stream,
            lanes: Vec::new(),
            active: Vec::new(),
            starts: Vec::new(),
            total: 0,
            tally,
            outbox,
            notify,
            in_flight: 0,
            id: PUSHERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Takes up the streams of an outbox (a sender that started again): what they had
    /// not had acknowledged is sent once each node is a target. A stream whose batches
    /// are not numbered one after another from the acknowledged one on (only a store of
    /// an earlier version could hold one) cannot be sent as it is: its unacknowledged
    /// batches are given up, with an ERROR, and counted as unvouched; the destination's
    /// first answer then says what it really holds.
    pub(crate) fn resume(&mut self, streams: BTreeMap<String, crate::store::OutStream>) {
        for (node, stream) in streams {
            let record = stream.record;
            let contiguous = stream
                .batches
                .iter()
                .zip(record.acked.saturating_add(1)..)
                .all(|(batch, seq)| batch.seq == seq)
                && record.acked.checked_add(stream.batches.len() as u64) == Some(record.last_seq);
            let window = |acked| {
                Window::resume(
                    self.limits.window,
                    self.limits.fence_every,
                    record.last_seq,
                    acked,
                )
            };
            let mut lane = Lane::new(node, window(record.acked));
            lane.issued_totals = record.issued;
            lane.known = record.known;
            lane.adoptions = record.adoptions;
            self.tally.add_unvouched(record.unvouched);
            if contiguous {
                self.in_flight += stream.batches.iter().map(|b| b.operations).sum::<u64>();
                lane.batches = stream.batches.into();
            } else {
                let given_up = stream
                    .batches
                    .iter()
                    .fold(Discrepancy::default(), |sum, b| {
                        Discrepancy::new(
                            sum.value.saturating_add(b.value),
                            sum.operations.saturating_add_unsigned(b.operations),
                        )
                    });
                error!(destination = %lane.node, acked = record.acked, last = record.last_seq,
                    found = ?stream.batches.iter().map(|b| b.seq).collect::<Vec<_>>(),
                    "the outbox holds batches that are not numbered one after another (an \
                     earlier version's store): they are given up and counted as unvouched");
                lane.window = window(record.last_seq);
                let adopt = lane.adoption(
                    record.last_seq,
                    Discrepancy::new(
                        given_up.value.saturating_neg(),
                        given_up.operations.saturating_neg(),
                    ),
                    true,
                );
                self.tally.add_unvouched(adopt.discrepancy());
                self.adopt(adopt);
            }
            self.lanes.push(lane);
        }
    }

    /// Hands `adopt` to the outbox; if it is never committed, the sender starts again.
    fn adopt(&self, adopt: Adopt) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let (notify, node, pusher) = (Arc::clone(&self.notify), adopt.dest.clone(), self.id);
        outbox.adopt(
            adopt,
            Box::new(move |committed| {
                if !committed {
                    notify(PushEvent::AdoptionLost { node, pusher });
                }
            }),
        );
    }

    /// Replaces the destinations. A node's stream outlives its being a target: one that
    /// is no longer a target is parked (its pending operations are issued, and what is
    /// unacknowledged waits), and a target with a new host gets everything
    /// unacknowledged again.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        self.active.clear();
        self.starts.clear();
        self.total = 0;
        let mut seen = vec![false; self.lanes.len()];
        for target in targets {
            let i = match self.lanes.iter().position(|lane| lane.node == target.node) {
                Some(i) => i,
                None => {
                    let window = Window::new(self.limits.window, self.limits.fence_every);
                    self.lanes.push(Lane::new(target.node.clone(), window));
                    seen.push(false);
                    self.lanes.len() - 1
                }
            };
            seen[i] = true;
            let lane = &mut self.lanes[i];
            if lane.host.as_ref().map(|h| h.get_id()) != Some(target.host.get_id()) {
                lane.host = Some(target.host);
                lane.window.rewind();
                // A new host: the node restarted, perhaps from an older copy of its store.
                lane.verified = false;
            }
            if lane.counters != target.counters {
                // Pending changes were made for the node's old counters: they go as
                // they are (the node drops those it no longer has).
                let _ = self.flush(i);
                let lane = &mut self.lanes[i];
                lane.counters = target.counters;
                if self.mode == Mode::Coalesced {
                    lane.pending = vec![(0, 0); target.counters as usize];
                }
            }
            self.active.push(i);
            self.starts.push(self.total);
            self.total += u64::from(target.counters);
        }
        for (i, seen) in seen.into_iter().enumerate() {
            if !seen {
                self.lanes[i].host = None;
                let _ = self.flush(i);
            }
        }
        for i in 0..self.lanes.len() {
            let _ = self.transmit(i);
        }
    }

    /// Counters over all targets.
    pub(crate) fn total_counters(&self) -> u64 {
        self.total
    }

    /// Offers one operation for global counter number `pick` (`0..total_counters()`).
    pub fn offer(&mut self, pick: u64, delta: Delta) -> Offer {
        let slot = self.starts.partition_point(|&start| start <= pick) - 1;
        let i = self.active[slot];
        let index = (pick - self.starts[slot]) as u32;
        let limits = self.limits;
        match self.mode {
            Mode::Unbatched => {
                if self.lanes[i].blocked() {
                    return Offer::Blocked;
                }
                let lane = &mut self.lanes[i];
                lane.dirty.push(index);
                lane.pending_ops = 1;
                let change = Change {
                    counter: index,
                    delta: delta.signed(),
                    operations: 1,
                };
                self.make(i, vec![change])
            }
            Mode::Coalesced => {
                if self.lanes[i].due(limits) {
                    match self.flush(i) {
                        Offer::Accepted => {}
                        other => return other,
                    }
                }
                let lane = &mut self.lanes[i];
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
                    if self.flush(i) == Offer::Failed {
                        return Offer::Failed;
                    }
                }
                Offer::Accepted
            }
        }
    }

    /// Makes lane `i`'s pending changes a batch if its window allows (`Blocked` if not).
    fn flush(&mut self, i: usize) -> Offer {
        let lane = &mut self.lanes[i];
        if lane.dirty.is_empty() {
            return Offer::Accepted;
        }
        if lane.blocked() {
            return Offer::Blocked;
        }
        let changes: Vec<Change> = lane
            .dirty
            .drain(..)
            .map(|counter| {
                let (delta, operations) = std::mem::take(&mut lane.pending[counter as usize]);
                Change {
                    counter,
                    delta,
                    operations,
                }
            })
            .collect();
        self.make(i, changes)
    }

    /// Makes `changes` lane `i`'s next batch and issues it.
    fn make(&mut self, i: usize, changes: Vec<Change>) -> Offer {
        let lane = &mut self.lanes[i];
        let (value, _) = changes
            .iter()
            .fold((0i128, 0u64), |(v, o), c| (v + c.delta, o + c.operations));
        let operations = std::mem::take(&mut lane.pending_ops);
        lane.dirty.clear();
        let batch = OutBatch {
            seq: lane.window.make(),
            changes,
            value: i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX }),
            operations,
        };
        let seq = batch.seq;
        match &self.outbox {
            Some(outbox) => {
                lane.batches.push_back(batch.clone());
                let notify = Arc::clone(&self.notify);
                let node = lane.node.clone();
                let pusher = self.id;
                outbox.issue(
                    &lane.node,
                    batch,
                    Box::new(move |issued| {
                        notify(if issued {
                            PushEvent::Issued { node, seq }
                        } else {
                            PushEvent::IssueLost { node, seq, pusher }
                        })
                    }),
                );
                Offer::Accepted
            }
            None => {
                lane.batches.push_back(batch);
                self.issued(i, seq)
            }
        }
    }

    /// Lane `i`'s batches up to `seq` are issued: counted, and sent.
    fn issued(&mut self, i: usize, seq: u64) -> Offer {
        let lane = &mut self.lanes[i];
        for seq in lane.window.on_issued(seq) {
            if let Some(&OutBatch {
                value, operations, ..
            }) = lane.batch(seq)
            {
                self.tally.record(value, operations);
                self.in_flight += operations;
                lane.issued_totals = lane.issued_totals.plus(value, operations);
            }
        }
        self.transmit(i)
    }

    /// Sends lane `i`'s issued batches that its current host has not had.
    fn transmit(&mut self, i: usize) -> Offer {
        let lane = &mut self.lanes[i];
        let Some(host) = lane.host.clone() else {
            return Offer::Accepted;
        };
        if !lane.verified && lane.fences_out == 0 {
            // Where the stream stands there comes first (see the module documentation).
            let fence = lane.window.fence_now();
            Self::fence(&self.stream, &self.notify, lane, &host, fence, None);
        }
        let sendable = lane.window.sendable();
        let last = *sendable.end();
        for seq in sendable {
            let Some(batch) = lane.batch(seq) else {
                break;
            };
            let batch = Batch {
                stream: self.stream.clone(),
                seq,
                base: lane.window.acked(),
                changes: batch.changes.clone(),
            };
            lane.messages += 1;
            if self.mode == Mode::Coalesced && seq == last && lane.fences_out == 0 {
                // The end of a burst asks for its acknowledgement in the same message
                // (the next batch waits for it).
                let fence = match lane.window.on_sent(seq) {
                    Some(fence) => fence,
                    None => lane.window.fence_now(),
                };
                if !Self::fence(&self.stream, &self.notify, lane, &host, fence, Some(batch)) {
                    lane.host = None;
                    return Offer::Failed;
                }
                continue;
            }
            if host.cast(HostMessage::Batch(batch)).is_err() {
                // The host is gone: parked until the targets are refreshed.
                lane.host = None;
                return Offer::Failed;
            }
            if let Some(fence) = lane.window.on_sent(seq) {
                Self::fence(&self.stream, &self.notify, lane, &host, fence, None);
            }
        }
        if self.mode == Mode::Coalesced && lane.fences_out == 0 {
            // Batches sent earlier and covered by no fence yet (none went now).
            if let Some(fence) = lane.window.fence_rest() {
                Self::fence(&self.stream, &self.notify, lane, &host, fence, None);
            }
        }
        Offer::Accepted
    }

    /// Asks `host` where the stream stands, for `fence`: with `batch` in the same
    /// message (the fence's last batch), or alone. Sent now, in order with the batches
    /// around it; the answer is awaited in a task. Returns false if the host is gone
    /// (the fence is then answered as unanswered).
    fn fence(
        stream: &StreamId,
        notify: &Arc<dyn Fn(PushEvent) + Send + Sync>,
        lane: &mut Lane,
        host: &ActorRef<HostMessage>,
        fence: Fence,
        batch: Option<Batch>,
    ) -> bool {
        lane.fences_out += 1;
        let stream = stream.clone();
        let answer = ask(
            host,
            |reply| match batch {
                Some(batch) => HostMessage::SyncedBatch(batch, reply),
                None => HostMessage::Sync(stream, reply),
            },
            FENCE_TIMEOUT,
        );
        let sent = answer.is_some();
        let (id, notify, node) = (host.get_id(), Arc::clone(notify), lane.node.clone());
        tokio::spawn(async move {
            let committed = match answer {
                Some(rx) => tokio::time::timeout(FENCE_TIMEOUT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            notify(PushEvent::Answered {
                node,
                host: id,
                fence,
                committed,
            });
        });
        sent
    }

    /// Takes in one of the events the pusher's tasks and outbox report.
    pub fn on_event(&mut self, event: PushEvent) -> Result<(), StartAgain> {
        match event {
            PushEvent::Answered {
                node,
                host,
                fence,
                committed,
            } => {
                let Some(i) = self.lanes.iter().position(|lane| lane.node == node) else {
                    return Ok(());
                };
                let lane = &self.lanes[i];
                let current = lane.host.as_ref().map(|h| h.get_id()) == Some(host);
                let reach = lane.window.issued().saturating_add(MAX_AHEAD);
                let believed = committed.filter(|mark| mark.seq <= reach);
                if let (true, Some(mark)) = (current, believed) {
                    self.audit(i, mark)?;
                    self.lanes[i].verified = true;
                }
                self.answered(i, current, fence, believed.map(|mark| mark.seq));
            }
            PushEvent::Issued { node, seq } => {
                if let Some(i) = self.lanes.iter().position(|lane| lane.node == node) {
                    let _ = self.issued(i, seq);
                }
            }
            PushEvent::IssueLost { node, seq, pusher } if pusher == self.id => {
                return Err(StartAgain::IssueLost { node, seq })
            }
            PushEvent::IssueLost { .. } => {}
            PushEvent::AdoptionLost { node, pusher } if pusher == self.id => {
                return Err(StartAgain::AdoptionLost { node })
            }
            PushEvent::AdoptionLost { .. } => {}
        }
        Ok(())
    }

    /// Checks lane `i`'s destination's `mark` (see the module documentation).
    fn audit(&mut self, i: usize, mark: StreamMark) -> Result<(), StartAgain> {
        let lane = &mut self.lanes[i];
        let issued = lane.window.issued();
        let Some(adopt) = lane.audit(mark) else {
            return Ok(());
        };
        if adopt.unvouched {
            error!(destination = %adopt.dest, upto = mark.seq, issued,
                value = adopt.value, operations = adopt.operations,
                "this node's stream and its destination disagree: the destination holds \
                 {} operations (net value {}) more than this store issued to it, through \
                 batch {} (negative: fewer). A store on one side was restored from an older \
                 copy or lost; counted as unvouched, and the destination's figures taken from \
                 here on", adopt.operations, adopt.value, mark.seq);
            self.tally.add_unvouched(adopt.discrepancy());
        } else if adopt.value != 0 || adopt.operations != 0 {
            info!(destination = %adopt.dest, "the stream's totals were not kept by this store's \
                earlier version: taken from the destination");
        }
        let ahead = mark.seq > issued;
        self.adopt(adopt);
        if ahead {
            return Err(StartAgain::ReceiverAhead {
                node: self.lanes[i].node.clone(),
                upto: mark.seq,
                issued,
            });
        }
        Ok(())
    }

    /// Lane `i`'s destination (its `current` host, or one it no longer has) answered
    /// `fence` with `committed`.
    fn answered(&mut self, i: usize, current: bool, fence: Fence, committed: Option<u64>) {
        let lane = &mut self.lanes[i];
        lane.fences_out = lane.fences_out.saturating_sub(1);
        let before = lane.window.acked();
        let answer = if current {
            lane.window.on_answer(fence, committed)
        } else {
            // From a host the node no longer has: it still says what is committed
            // there, but sending again is the new host's business.
            let stale = Fence { id: 0, ..fence };
            lane.window.on_answer(stale, committed);
            Answer::Fine
        };
        let acked = lane.window.acked();
        while lane.batches.front().is_some_and(|b| b.seq <= acked) {
            if let Some(batch) = lane.batches.pop_front() {
                self.in_flight = self.in_flight.saturating_sub(batch.operations);
            }
        }
        if acked > before {
            if let Some(outbox) = &self.outbox {
                outbox.acked(&lane.node, acked);
            }
        }
        if answer == Answer::Resend {
            let _ = self.transmit(i);
        } else if self.mode == Mode::Coalesced && self.lanes[i].window.is_settled() {
            // What gathered while batches were on their way goes now (Nagle's rule).
            let _ = self.flush(i);
        }
    }

    /// The periodic flush: makes the pending batch of every node that has nothing
    /// unacknowledged (a node with batches on their way gathers until their
    /// acknowledgement, which flushes it: see [`Pusher::answered`]), and asks a node
    /// with sent batches no fence covers (and none waiting) to acknowledge them, so that
    /// a trickle is acknowledged too. Returns false if a host is gone (refresh the
    /// targets).
    pub(crate) fn flush_all(&mut self) -> bool {
        self.flush_lanes(self.mode == Mode::Coalesced)
    }

    /// Makes every pending batch whose window allows it (with `gather`, only those of
    /// nodes with nothing unacknowledged), and fences what no fence covers.
    fn flush_lanes(&mut self, gather: bool) -> bool {
        let mut ok = true;
        for i in 0..self.lanes.len() {
            if !gather || self.lanes[i].window.is_settled() {
                ok &= self.flush(i) != Offer::Failed;
            }
            let lane = &mut self.lanes[i];
            if lane.fences_out == 0 {
                if let Some(host) = lane.host.clone() {
                    // A stream not yet checked asks at once, even with nothing sent.
                    let fence = if lane.verified {
                        lane.window.fence_rest()
                    } else {
                        Some(lane.window.fence_now())
                    };
                    if let Some(fence) = fence {
                        Self::fence(&self.stream, &self.notify, lane, &host, fence, None);
                    }
                }
            }
        }
        ok
    }

    /// Makes every pending batch whose window allows it, whether or not a batch is on
    /// its way (a sender that stops issues what it coalesced). Returns false if a host
    /// is gone.
    pub(crate) fn flush_pending(&mut self) -> bool {
        self.flush_lanes(false)
    }

    /// Flushes what it can and asks for acknowledgement of everything sent. Call it
    /// (again after each event) until [`Pusher::settled`].
    pub fn drain(&mut self) -> bool {
        let ok = self.flush_lanes(false);
        for lane in &mut self.lanes {
            if let Some(host) = lane.host.clone() {
                if let Some(fence) = lane.window.fence_rest() {
                    Self::fence(&self.stream, &self.notify, lane, &host, fence, None);
                }
            }
        }
        ok
    }

    /// True when nothing is pending and every batch made has been acknowledged.
    pub fn settled(&self) -> bool {
        self.lanes
            .iter()
            .all(|lane| lane.pending_ops == 0 && lane.window.is_settled())
    }

    /// Operations issued and not yet acknowledged by their destination.
    pub(crate) fn in_flight_operations(&self) -> u64 {
        self.in_flight
    }

    /// Operations issued and not acknowledged, per destination (those with any).
    pub(crate) fn in_flight_to(&self) -> Vec<InFlightTo> {
        self.lanes
            .iter()
            .map(|lane| InFlightTo {
                node: lane.node.clone(),
                operations: lane.batches.iter().map(|b| b.operations).sum(),
            })
            .filter(|to| to.operations > 0)
            .collect()
    }

    /// Messages sent so far (batches, counting those sent again), over all nodes.
    pub fn messages(&self) -> u64 {
        self.lanes.iter().map(|lane| lane.messages).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::{Counter, CounterArgs};
    use crate::facts::NodeFacts;
    use crate::load::outbox::JournalOutbox;
    use crate::store::journal::{journal_name, JournalMessage};
    use crate::store::{OutRecord, OutStream, OutboxRecord};
    use crate::testing::WritePath;
    use ractor::Actor;
    use shared::counter::StatsOutcome;
    use shared::protocol::counter_name;
    use tokio::sync::mpsc;

    fn stream(sender: &str) -> StreamId {
        StreamId {
            sender: sender.into(),
            origin: 5,
        }
    }

    /// A pusher whose events arrive on the returned receiver.
    fn pusher(
        mode: Mode,
        outbox: Option<Arc<dyn Outbox>>,
    ) -> (Pusher, mpsc::UnboundedReceiver<PushEvent>, Arc<IssuedTally>) {
        let (tx, events) = mpsc::unbounded_channel();
        let tally = Arc::new(IssuedTally::default());
        let pusher = Pusher::new(
            mode,
            stream("sender"),
            Arc::clone(&tally),
            outbox,
            Arc::new(move |event| {
                let _ = tx.send(event);
            }),
        );
        (pusher, events, tally)
    }

    /// Waits for the next event (at most 10 s) and hands it to the pusher.
    async fn next_event(pusher: &mut Pusher, events: &mut mpsc::UnboundedReceiver<PushEvent>) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("no event within 10 s")
            .unwrap();
        pusher.on_event(event).unwrap();
    }

    /// Offers `ops` operations spread as `pick(k)` says, waiting whenever blocked, then
    /// waits until everything is acknowledged; returns what each counter should hold.
    async fn push_all(
        pusher: &mut Pusher,
        events: &mut mpsc::UnboundedReceiver<PushEvent>,
        ops: u64,
        pick: impl Fn(u64) -> u64,
    ) -> Vec<(i64, u64)> {
        let mut expected = vec![(0i64, 0u64); pusher.total_counters() as usize];
        let mut k = 0;
        while k < ops {
            let delta = crate::load::client::operation(k);
            match pusher.offer(pick(k), delta) {
                Offer::Accepted => {
                    expected[pick(k) as usize].0 += delta.signed() as i64;
                    expected[pick(k) as usize].1 += 1;
                    k += 1;
                }
                Offer::Blocked => next_event(pusher, events).await,
                Offer::Failed => panic!("the host is running"),
            }
        }
        while !pusher.settled() {
            pusher.drain();
            next_event(pusher, events).await;
        }
        expected
    }

    /// Pushes `ops` known operations through a real host and journal to real counters,
    /// issuing through the node's outbox, and checks that every counter's value and
    /// operation count come out exact, in the counters and in the store, and that the
    /// outbox is empty once everything is acknowledged.
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
        let (mut pusher, mut events, tally) = pusher(mode, Some(JournalOutbox::new(node)));
        pusher.set_targets(vec![Target {
            node: node.into(),
            host: host.clone(),
            counters,
        }]);
        let expected = push_all(&mut pusher, &mut events, ops, |k| k * 7 % 3).await;
        for (i, want) in expected.iter().enumerate() {
            let StatsOutcome(got) =
                ractor::call!(host, |r| HostMessage::GetStats(i as u32, r)).unwrap();
            let got = got.unwrap();
            assert_eq!((got.value, got.operations), *want, "counter {i}");
            let record = path.store.record(i as u32).unwrap();
            assert_eq!(
                (record.value, record.operations),
                *want,
                "stored counter {i}"
            );
        }
        let net: i64 = expected.iter().map(|e| e.0).sum();
        assert_eq!(tally.read(), Sum::new(net, ops));
        assert_eq!(pusher.in_flight_operations(), 0);
        // Everything issued went through the outbox and left it once acknowledged.
        let journal: ActorRef<JournalMessage> = ractor::registry::where_is(journal_name(node))
            .unwrap()
            .into();
        ractor::call!(journal, |r| JournalMessage::Sync(0, r)).unwrap();
        let OutboxRecord {
            streams: outbox,
            issued,
        } = path.store.outbox().unwrap();
        assert_eq!(issued, Sum::new(net, ops));
        assert!(outbox.values().all(|s| s.batches.is_empty()), "{outbox:?}");
        let messages = pusher.messages();
        path.stop().await;
        for (counter, handle) in handles {
            counter.stop(None);
            handle.await.unwrap();
        }
        messages
    }

    /// Node `node` with one real counter, behind a real host and journal.
    async fn one_counter_node(
        node: &str,
    ) -> (
        ActorRef<crate::counters::counter::CounterMessage>,
        ractor::concurrency::JoinHandle<()>,
        WritePath,
    ) {
        let facts = Arc::new(NodeFacts::for_tests(node, 1));
        let (counter, counter_handle) =
            Actor::spawn(None, Counter, CounterArgs::new(counter_name(node, 0)))
                .await
                .unwrap();
        facts.table.set_actor(0, Some(counter.clone()));
        (counter, counter_handle, WritePath::start(&facts).await)
    }

    /// A journal that crashes with a batch of the sender's unhandled, and a new one
    /// started before the sender hears of it: the sender's next batch would leave a gap
    /// in the outbox, so the store refuses it; the sender starts again from the store,
    /// and every counter ends exactly at what the store counts as issued.
    #[tokio::test]
    async fn a_batch_after_one_a_crashed_journal_lost_is_refused_and_nothing_is_misnumbered() {
        let node = "push-gap";
        let (counter, counter_handle, mut path) = one_counter_node(node).await;
        let host = path.host.clone();
        let target = || Target {
            node: node.into(),
            host: host.clone(),
            counters: 1,
        };
        let (mut first, mut events, _) = pusher(Mode::Unbatched, Some(JournalOutbox::new(node)));
        first.set_targets(vec![target()]);
        push_all(&mut first, &mut events, 10, |_| 0).await;
        // Batch 11 goes to the journal, which dies before it handles it; batch 12 goes
        // to the new one, before the sender hears that 11 was lost.
        assert_eq!(first.offer(0, Delta::Increment(1)), Offer::Accepted);
        path.crash_journal().await;
        assert_eq!(first.offer(0, Delta::Increment(1)), Offer::Accepted);
        let restart = loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("no event within 10 s")
                .unwrap();
            if let Err(why) = first.on_event(event) {
                break why;
            }
        };
        assert!(
            matches!(restart, StartAgain::IssueLost { seq: 11, .. }),
            "{restart}"
        );
        // As the load client does: once the journal has committed what it was handed,
        // a new pusher takes up the outbox.
        let journal: ActorRef<JournalMessage> = ractor::registry::where_is(journal_name(node))
            .unwrap()
            .into();
        ractor::call!(journal, |r| JournalMessage::Sync(0, r)).unwrap();
        let OutboxRecord {
            streams: outbox,
            issued: Sum { value, operations },
        } = path.store.outbox().unwrap();
        assert_eq!(
            outbox[node].record.last_seq, 10,
            "nothing after the gap was kept"
        );
        let (mut second, mut events, tally) =
            pusher(Mode::Unbatched, Some(JournalOutbox::new(node)));
        tally.set(Sum::new(value, operations));
        second.resume(outbox);
        second.set_targets(vec![target()]);
        push_all(&mut second, &mut events, 5, |_| 0).await;
        // The two lost operations were never issued: 15 were, and the counter holds
        // exactly them.
        let record = path.store.record(0).unwrap();
        let Sum { value, operations } = tally.read();
        assert_eq!(operations, 15);
        assert_eq!((record.value, record.operations), (value, 15));
        let StatsOutcome(stats) =
            ractor::call!(path.host, |r| HostMessage::GetStats(0, r)).unwrap();
        assert_eq!(stats.unwrap().value, value);
        path.stop().await;
        counter.stop(None);
        counter_handle.await.unwrap();
    }

    /// An outbox whose batches are not numbered one after another (an earlier
    /// version's) is never sent misnumbered: its unacknowledged batches are given up,
    /// counted as unvouched, and the store told.
    #[test]
    fn an_outbox_with_a_gap_is_given_up_and_counted() {
        struct Adoptions(std::sync::Mutex<Vec<Adopt>>);
        impl Outbox for Adoptions {
            fn issue(&self, _: &str, _: OutBatch, done: Box<dyn FnOnce(bool) + Send>) {
                done(false);
            }
            fn acked(&self, _: &str, _: u64) {}
            fn adopt(&self, adopt: Adopt, done: Box<dyn FnOnce(bool) + Send>) {
                self.0.lock().unwrap().push(adopt);
                done(true);
            }
        }
        let outbox = Arc::new(Adoptions(std::sync::Mutex::default()));
        let (mut pusher, _events, tally) = pusher(Mode::Unbatched, Some(outbox.clone()));
        let batch = |seq| OutBatch {
            seq,
            changes: Vec::new(),
            value: 3,
            operations: 1,
        };
        let record = OutRecord {
            last_seq: 4,
            acked: 1,
            issued: Sum::new(12, 4),
            known: true,
            ..OutRecord::default()
        };
        let stream = OutStream {
            record,
            batches: vec![batch(2), batch(4)],
        };
        pusher.resume(BTreeMap::from([("n".to_string(), stream)]));
        assert_eq!(pusher.in_flight_operations(), 0, "nothing left to send");
        assert!(pusher.settled());
        assert_eq!(tally.unvouched(), Discrepancy::new(-6, -2));
        let adopted = outbox.0.lock().unwrap().clone();
        assert_eq!(
            adopted,
            [Adopt {
                dest: "n".into(),
                number: 1,
                upto: 4,
                value: -6,
                operations: -2,
                unvouched: true
            }]
        );
        // A store that kept no totals (an earlier version's): the given-up batches are
        // unvouched, and the destination's first answer still sets the baseline, as no
        // discrepancy.
        let (mut unknown, _events, tally) = self::pusher(Mode::Unbatched, Some(outbox.clone()));
        let stream = OutStream {
            record: OutRecord {
                known: false,
                ..record
            },
            batches: vec![batch(2), batch(4)],
        };
        unknown.resume(BTreeMap::from([("n".to_string(), stream)]));
        assert_eq!(tally.unvouched(), Discrepancy::new(-6, -2));
        let mark = StreamMark {
            seq: 4,
            value: 40,
            operations: 9,
        };
        let baseline = unknown.lanes[0].audit(mark).expect("the baseline is taken");
        assert!(!baseline.unvouched, "{baseline:?}");
        assert_eq!(unknown.lanes[0].audit(mark), None, "then both sides agree");
    }

    /// No batch is made into a stream before its destination's current host has
    /// answered (it may hold batches of this stream this sender never issued).
    #[tokio::test]
    async fn no_batch_is_made_before_the_destination_has_answered() {
        let (silent, silent_handle) =
            crate::testing::Hoarder::<HostMessage>::start(None, None).await;
        let (mut pusher, _events, _) = pusher(Mode::Unbatched, None);
        pusher.set_targets(vec![Target {
            node: "quiet".into(),
            host: silent.clone(),
            counters: 1,
        }]);
        assert_eq!(pusher.offer(0, Delta::Increment(1)), Offer::Blocked);
        pusher.flush_all();
        assert_eq!(pusher.offer(0, Delta::Increment(1)), Offer::Blocked);
        assert_eq!(pusher.messages(), 0);
        silent.stop(None);
        silent_handle.await.unwrap();
    }

    /// Nagle's rule: a destination with a batch on its way gathers the periodic
    /// flushes' changes until the acknowledgement, which sends them at once; a batch
    /// that is due by its size goes regardless.
    #[tokio::test]
    async fn a_trickle_gathers_behind_the_batch_on_its_way_and_leaves_with_its_ack() {
        let node = "push-nagle";
        let (counter, counter_handle, path) = one_counter_node(node).await;
        let (mut pusher, mut events, _) = pusher(Mode::Coalesced, None);
        pusher.set_targets(vec![Target {
            node: node.into(),
            host: path.host.clone(),
            counters: 1,
        }]);
        // The stream is checked first.
        next_event(&mut pusher, &mut events).await;
        assert_eq!(pusher.offer(0, Delta::Increment(1)), Offer::Accepted);
        pusher.flush_all();
        assert_eq!(pusher.messages(), 1, "nothing was on its way: sent at once");
        for _ in 0..3 {
            assert_eq!(pusher.offer(0, Delta::Increment(1)), Offer::Accepted);
            pusher.flush_all();
        }
        assert_eq!(
            pusher.messages(),
            1,
            "gathered behind the unacknowledged batch"
        );
        // The acknowledgement sends what gathered, with no flush.
        while pusher.messages() < 2 {
            next_event(&mut pusher, &mut events).await;
        }
        // A batch due by its size does not wait.
        let limits = Mode::Coalesced.limits();
        for _ in 0..limits.flush_ops {
            assert_eq!(pusher.offer(0, Delta::Increment(1)), Offer::Accepted);
        }
        assert_eq!(pusher.messages(), 3);
        while !pusher.settled() {
            pusher.drain();
            next_event(&mut pusher, &mut events).await;
        }
        let value = ractor::call!(counter, crate::counters::counter::CounterMessage::GetValue);
        assert_eq!(value.unwrap().0, Ok(4 + limits.flush_ops as i64));
        path.stop().await;
        counter.stop(None);
        counter_handle.await.unwrap();
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
    async fn unbatched_pushes_are_exact_and_windowed() {
        let ops = 20_000;
        let messages = push_exactly(Mode::Unbatched, "push-unbatched", ops).await;
        assert_eq!(messages, ops);
    }

    #[tokio::test]
    async fn a_receiver_that_never_acknowledges_blocks_the_sender() {
        for mode in [Mode::Coalesced, Mode::Unbatched] {
            // A host that answers where the stream stands once, then takes everything
            // and never acknowledges.
            let (host, handle) = Actor::spawn(None, Stuck, ()).await.unwrap();
            let (mut pusher, mut events, _) = pusher(mode, None);
            pusher.set_targets(vec![Target {
                node: "stuck".into(),
                host: host.clone(),
                counters: 10,
            }]);
            next_event(&mut pusher, &mut events).await;
            let limits = mode.limits();
            let mut accepted = 0u64;
            while pusher.offer(accepted % 10, Delta::Increment(1)) == Offer::Accepted {
                accepted += 1;
                assert!(accepted < 10_000_000, "{mode:?}: never blocked");
            }
            assert_eq!(pusher.messages(), limits.window, "{mode:?}");
            // The window's batches plus one full pending batch, and nothing more.
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
            assert_eq!(
                pusher.in_flight_operations(),
                limits.window * limits.flush_ops
            );
            assert!(!pusher.settled());
            host.stop(None);
            handle.await.unwrap();
        }
    }

    /// A destination that answers the first `Sync` (a new stream) and holds every
    /// other message, never answering.
    struct Stuck;

    impl Actor for Stuck {
        type Msg = HostMessage;
        type State = (bool, Vec<HostMessage>);
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _: (),
        ) -> Result<Self::State, ractor::ActorProcessingErr> {
            Ok((false, Vec::new()))
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            message: Self::Msg,
            (answered, held): &mut Self::State,
        ) -> Result<(), ractor::ActorProcessingErr> {
            match message {
                HostMessage::Sync(_, reply) if !*answered => {
                    *answered = true;
                    let _ = reply.send(StreamMark::default());
                }
                other => held.push(other),
            }
            Ok(())
        }
    }

    /// A destination that applies each stream's batches once and in order, as a
    /// node's journal does, but loses some on the way: every batch whose number is a
    /// multiple of `lose_every` is dropped the first time it arrives.
    struct Lossy;

    #[derive(Default)]
    struct LossyState {
        lose_every: u64,
        lost: std::collections::HashSet<u64>,
        applied: u64,
        operations: u64,
        value: i128,
        batches: u64,
        changes: u64,
    }

    impl Actor for Lossy {
        type Msg = HostMessage;
        type State = Arc<std::sync::Mutex<LossyState>>;
        type Arguments = Arc<std::sync::Mutex<LossyState>>;

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            state: Self::Arguments,
        ) -> Result<Self::State, ractor::ActorProcessingErr> {
            Ok(state)
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            message: Self::Msg,
            state: &mut Self::State,
        ) -> Result<(), ractor::ActorProcessingErr> {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            match message {
                HostMessage::Sync(_, reply) => s.answer(reply),
                HostMessage::Batch(batch) => s.take(batch),
                HostMessage::SyncedBatch(batch, reply) => {
                    s.take(batch);
                    s.answer(reply);
                }
                _ => {}
            }
            Ok(())
        }
    }

    impl LossyState {
        /// Takes `batch` if it is the next and not lost on the way.
        fn take(&mut self, batch: Batch) {
            if self.lose_every > 0
                && batch.seq.is_multiple_of(self.lose_every)
                && self.lost.insert(batch.seq)
            {
                return;
            }
            if batch.seq == self.applied + 1 {
                self.applied = batch.seq;
                let (value, operations) = batch.totals().unwrap();
                self.value += value;
                self.operations += operations;
                self.batches += 1;
                self.changes += batch.changes.len() as u64;
            }
        }

        /// Answers a `Sync` with where the stream stands.
        fn answer(&self, reply: ractor::RpcReplyPort<StreamMark>) {
            let _ = reply.send(StreamMark {
                seq: self.applied,
                value: i64::try_from(self.value).unwrap_or(i64::MAX),
                operations: self.operations,
            });
        }
    }

    async fn lossy(lose_every: u64) -> (ActorRef<HostMessage>, Arc<std::sync::Mutex<LossyState>>) {
        let state = Arc::new(std::sync::Mutex::new(LossyState {
            lose_every,
            ..LossyState::default()
        }));
        let (host, _) = Actor::spawn(None, Lossy, Arc::clone(&state)).await.unwrap();
        (host, state)
    }

    #[tokio::test]
    async fn lost_batches_are_sent_again_and_applied_once() {
        for mode in [Mode::Coalesced, Mode::Unbatched] {
            let (host, state) = lossy(3).await;
            let (mut pusher, mut events, tally) = pusher(mode, None);
            pusher.set_targets(vec![Target {
                node: "lossy".into(),
                host: host.clone(),
                counters: 50,
            }]);
            let ops = 200_000;
            let expected = push_all(&mut pusher, &mut events, ops, |k| k % 50).await;
            let (value, operations, lost) = {
                let s = state.lock().unwrap();
                (s.value, s.operations, s.lost.len())
            };
            let net: i128 = expected.iter().map(|e| i128::from(e.0)).sum();
            assert_eq!((value, operations), (net, ops), "{mode:?}");
            assert!(lost > 0, "{mode:?}: nothing was lost");
            assert_eq!(tally.read(), Sum::new(net as i64, ops));
            assert_eq!(pusher.in_flight_operations(), 0);
            host.stop(None);
        }
    }

    #[tokio::test]
    async fn a_new_host_gets_everything_unacknowledged_and_a_resumed_outbox_is_sent() {
        // A host that answers only where a new stream stands takes four batches; then
        // the node has a new host.
        let (silent, silent_handle) = Actor::spawn(None, Stuck, ()).await.unwrap();
        let (mut pusher, mut events, _) = pusher(Mode::Unbatched, None);
        pusher.set_targets(vec![Target {
            node: "n".into(),
            host: silent.clone(),
            counters: 1,
        }]);
        next_event(&mut pusher, &mut events).await;
        for _ in 0..4 {
            assert_eq!(pusher.offer(0, Delta::Increment(2)), Offer::Accepted);
        }
        assert_eq!(pusher.in_flight_operations(), 4);
        let (host, state) = lossy(0).await;
        pusher.set_targets(vec![Target {
            node: "n".into(),
            host: host.clone(),
            counters: 1,
        }]);
        while !pusher.settled() {
            pusher.drain();
            next_event(&mut pusher, &mut events).await;
        }
        assert_eq!(state.lock().unwrap().value, 8);

        // A sender that starts again from an outbox holding batches 3 and 4 of 4 (1 and
        // 2 acknowledged): the destination gets those two, once.
        let (host, state) = lossy(0).await;
        {
            // It holds batches 1 and 2 (5 + 6).
            let mut s = state.lock().unwrap();
            (s.applied, s.value, s.operations) = (2, 11, 2);
        }
        let (mut resumed, mut events, tally) = pusher_with_outbox_of(4, 2);
        assert_eq!(resumed.in_flight_operations(), 2);
        resumed.set_targets(vec![Target {
            node: "n".into(),
            host: host.clone(),
            counters: 1,
        }]);
        while !resumed.settled() {
            resumed.drain();
            next_event(&mut resumed, &mut events).await;
        }
        let seen = {
            let s = state.lock().unwrap();
            (s.applied, s.value, s.batches)
        };
        assert_eq!(seen, (4, 26, 2));
        assert_eq!(
            tally.unvouched(),
            Discrepancy::new(0, 0),
            "both sides agree"
        );
        silent.stop(None);
        silent_handle.await.unwrap();
    }

    /// A pusher resumed from an outbox for node `n` with batches `acked + 1 ..= last`
    /// unacknowledged, batch `k` adding `k + 4` in one operation.
    fn pusher_with_outbox_of(
        last: u64,
        acked: u64,
    ) -> (Pusher, mpsc::UnboundedReceiver<PushEvent>, Arc<IssuedTally>) {
        let (mut pusher, events, tally) = pusher(Mode::Unbatched, None);
        let batches = (acked + 1..=last)
            .map(|seq| OutBatch {
                seq,
                changes: vec![Change {
                    counter: 0,
                    delta: i128::from(seq) + 4,
                    operations: 1,
                }],
                value: seq as i64 + 4,
                operations: 1,
            })
            .collect();
        let record = OutRecord {
            last_seq: last,
            acked,
            // Batches 1..=last add up to this.
            issued: Sum::new((1..=last).map(|k| k as i64 + 4).sum(), last),
            known: true,
            ..OutRecord::default()
        };
        let outbox = BTreeMap::from([("n".to_string(), OutStream { record, batches })]);
        pusher.resume(outbox);
        (pusher, events, tally)
    }

    #[tokio::test]
    async fn batches_spread_over_many_counters_still_coalesce() {
        let (host, state) = lossy(0).await;
        let (mut pusher, mut events, _) = pusher(Mode::Coalesced, None);
        let counters = 10_000;
        pusher.set_targets(vec![Target {
            node: "many".into(),
            host: host.clone(),
            counters,
        }]);
        let ops = 1_000_000u64;
        // Spread evenly: consecutive operations land far apart.
        push_all(&mut pusher, &mut events, ops, |k| {
            k * 7919 % u64::from(counters)
        })
        .await;
        let (operations, changes, batches) = {
            let s = state.lock().unwrap();
            (s.operations, s.changes, s.batches)
        };
        assert_eq!(operations, ops);
        // Batches of 4096 operations over 10,000 counters would carry about 1.2 per
        // change; waiting for several per change is what keeps the receiver's work down.
        assert!(
            operations >= 4 * changes,
            "{operations} operations in {changes} changes ({batches} batches)"
        );
        host.stop(None);
    }
}
