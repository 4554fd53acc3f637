//! The records the store keeps: what a commit is made of ([`Entry`]), and what it
//! leaves behind per counter, stream, destination and client change id.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shared::counter::{CounterError, Delta};
use shared::host::{Change, StreamMark};

use crate::counters::record::CounterRecord;

/// One change the journal commits: what it stands for, and how it is applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// Batch `seq` of stream `stream` (its key), to counters of this node, applied in
    /// the same commit that records it as the stream's last; nothing if the store holds
    /// that batch already.
    Batch {
        /// The stream's key ([`shared::host::StreamId::key`]), shared by its batches.
        stream: Arc<str>,
        /// Its number.
        seq: u64,
        /// Its changes.
        changes: Vec<Change>,
    },
    /// One client change to counter `counter`, whose outcome the client waits for:
    /// applied once per id (a change whose id is stored gets the stored outcome and
    /// changes nothing).
    Apply {
        /// Counter index.
        counter: u32,
        /// The change.
        delta: Delta,
        /// The client's id for it.
        id: String,
    },
    /// A batch this node's load clients issued to node `dest`: into the outbox, and
    /// into the issued tally, if it is the next of that destination's stream.
    Outgoing {
        /// The destination node.
        dest: String,
        /// The batch.
        batch: OutBatch,
    },
    /// Node `dest` acknowledged every batch up to `upto`: out of the outbox.
    Acked {
        /// The destination node.
        dest: String,
        /// The last batch acknowledged.
        upto: u64,
    },
    /// A sender found its receiver holding other totals than it issued to it (see
    /// [`Adopt`]).
    Adopt(Adopt),
}

impl Entry {
    /// The operations it carries (a client change is one; bookkeeping none).
    pub(crate) fn operations(&self) -> u64 {
        match self {
            Entry::Batch { changes, .. } => changes.iter().map(|c| c.operations).sum(),
            Entry::Apply { .. } => 1,
            Entry::Outgoing { batch, .. } => batch.operations,
            Entry::Acked { .. } | Entry::Adopt(_) => 0,
        }
    }
}

/// A sender's stream and its receiver disagree, and the sender takes the receiver's
/// side: what it counts as issued to that destination moves by (`value`,
/// `operations`), and, when that is a discrepancy nobody can vouch for (`unvouched`),
/// so does its unvouched tally; with `upto` beyond its last batch (the receiver holds
/// batches this store never issued: it was restored from an older copy), its numbering
/// carries on after them. Numbered per destination, so a retried commit takes it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopt {
    /// The destination node.
    pub dest: String,
    /// This adoption's number for `dest` (from 1).
    pub number: u64,
    /// The receiver's last batch: acknowledged, and the last number used if beyond it.
    pub upto: u64,
    /// Net value to add.
    pub value: i64,
    /// Operations to add (negative: the receiver holds fewer).
    pub operations: i64,
    /// Whether it is a discrepancy (false: a store from before totals were kept, whose
    /// baseline is taken as the receiver's).
    pub unvouched: bool,
}

impl Adopt {
    /// What the adoption moves the sender's figures by.
    pub(crate) fn discrepancy(&self) -> Discrepancy {
        Discrepancy::new(self.value, self.operations)
    }
}

/// One batch a sender made: its number in its stream, its changes, and what they add up
/// to. Kept in the sender's outbox until the destination acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutBatch {
    /// Its number in the stream (from 1).
    pub seq: u64,
    /// At most one entry per counter.
    pub changes: Vec<Change>,
    /// Net value.
    pub value: i64,
    /// Operations.
    pub operations: u64,
}

/// What a receiver keeps per incoming stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InRecord {
    /// The last batch applied.
    pub(crate) seq: u64,
    /// Net value of every batch applied.
    pub(crate) value: i64,
    /// Operations in every batch applied.
    pub(crate) operations: u64,
}

impl InRecord {
    pub(crate) fn to_tuple(self) -> (u64, i64, u64) {
        (self.seq, self.value, self.operations)
    }

    pub(crate) fn from_tuple((seq, value, operations): (u64, i64, u64)) -> Self {
        Self {
            seq,
            value,
            operations,
        }
    }

    /// The record as its stream's sender is told it.
    pub(crate) fn mark(self) -> StreamMark {
        StreamMark {
            seq: self.seq,
            value: self.value,
            operations: self.operations,
        }
    }
}

/// What a sender keeps per destination (its outgoing stream), besides the batches in
/// its outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OutRecord {
    /// The last batch number used.
    pub(crate) last_seq: u64,
    /// The last batch acknowledged.
    pub(crate) acked: u64,
    /// What the destination should hold of this stream once it has every batch up to
    /// `last_seq`: net value and operations of every batch issued to it, moved by the
    /// adoptions.
    pub(crate) issued: Sum,
    /// Whether `issued` is known: false for a stream a store from before these totals
    /// were kept had begun, until the destination's answer sets it.
    pub(crate) known: bool,
    /// Adoptions taken (see [`Adopt`]).
    pub(crate) adoptions: u64,
    /// What the destination holds beyond (negative: short of) what this store issued:
    /// net value and operations nobody can vouch for.
    pub(crate) unvouched: Discrepancy,
}

/// What a node's load clients issued: the outbox per destination, and the issued
/// tally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OutboxRecord {
    /// Per destination, its record and the batches it has not acknowledged.
    pub(crate) streams: BTreeMap<String, OutStream>,
    /// Every batch ever issued, added up.
    pub(crate) issued: Sum,
}

/// A net value and the operations that add up to it (what batches issued, or a stream
/// applied), each saturating at the bounds of its type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sum {
    /// Net value.
    pub(crate) value: i64,
    /// Operations.
    pub(crate) operations: u64,
}

impl Sum {
    /// `value` from `operations` operations.
    pub(crate) const fn new(value: i64, operations: u64) -> Self {
        Self { value, operations }
    }

    /// This, plus `value` from `operations` more operations.
    pub(crate) fn plus(self, value: i64, operations: u64) -> Self {
        Self::new(
            self.value.saturating_add(value),
            self.operations.saturating_add(operations),
        )
    }

    /// This, moved by a discrepancy (which may take operations away).
    pub(crate) fn moved_by(self, by: Discrepancy) -> Self {
        Self::new(
            self.value.saturating_add(by.value),
            self.operations.saturating_add_signed(by.operations),
        )
    }
}

/// What one side holds beyond (negative: short of) the other: net value and operations
/// nobody can vouch for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Discrepancy {
    /// Net value.
    pub(crate) value: i64,
    /// Operations.
    pub(crate) operations: i64,
}

impl Discrepancy {
    /// `value` and `operations` beyond (negative: short of).
    pub(crate) const fn new(value: i64, operations: i64) -> Self {
        Self { value, operations }
    }

    /// This plus `other`, saturating.
    pub(crate) fn plus(self, other: Discrepancy) -> Self {
        Self::new(
            self.value.saturating_add(other.value),
            self.operations.saturating_add(other.operations),
        )
    }
}

/// One destination's part of the outbox, as a sender starts with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct OutStream {
    /// The stream's record.
    pub(crate) record: OutRecord,
    /// The batches after `record.acked`, in order.
    pub(crate) batches: Vec<OutBatch>,
}

/// What this node has applied from each incoming stream, as of the last commit, and
/// how many commits its journal has made: the journal keeps them current, and the
/// node's description reports them.
#[derive(Debug, Default)]
pub(crate) struct ReceivedTotals(
    Mutex<BTreeMap<String, InRecord>>,
    std::sync::atomic::AtomicU64,
);

impl ReceivedTotals {
    /// One more commit.
    pub(crate) fn committed(&self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Commits so far.
    pub(crate) fn commits(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the streams' new records.
    pub(crate) fn update(&self, streams: impl IntoIterator<Item = (String, InRecord)>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.extend(streams);
    }

    /// Per sender (every stream from it), sorted by name.
    pub(crate) fn by_sender(&self) -> Vec<shared::stats::SenderTotals> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut by: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
        for (key, record) in map.iter() {
            let sender = key.split_once('#').map_or(key.as_str(), |(s, _)| s);
            let totals = by.entry(sender).or_default();
            totals.0 = totals.0.saturating_add(record.value);
            totals.1 = totals.1.saturating_add(record.operations);
        }
        by.into_iter()
            .map(
                |(sender, (value, operations))| shared::stats::SenderTotals {
                    sender: sender.to_string(),
                    value,
                    operations,
                },
            )
            .collect()
    }
}

/// How long, at least, a node remembers a client change's id (and so how long a retry
/// with that id is safe), in the store's own time ([`StoreClock`]): ids are kept in
/// buckets of this length, and a bucket's ids are forgotten once the bucket after it is
/// over, so between one and two lengths of the store's running time. A wall clock that
/// steps (back across midnight, or forward by days) neither hides an id nor forgets it.
pub(crate) const ID_MEMORY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The id bucket of store time `ms` (see [`ID_MEMORY`]).
pub(crate) fn id_bucket(ms: u64) -> u32 {
    u32::try_from(ms / ID_MEMORY.as_millis() as u64).unwrap_or(u32::MAX)
}

/// At most this many forgotten ids are removed per commit (the rest go with later ones).
pub(crate) const ID_PRUNE_PER_COMMIT: usize = 1024;

/// The most change ids the store takes in one bucket: beyond it, changes with new ids
/// are refused (not applied, and the client told so) until the next bucket. What bounds
/// the ids a member, honest or not, can make a node keep.
pub(crate) const MAX_IDS_PER_BUCKET: u64 = 1_000_000;

/// What became of a client change with an id, as the store remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdRecord {
    /// The counter it changed.
    pub(crate) counter: u32,
    /// The change.
    pub(crate) delta: Delta,
    /// The value after it, or why it was refused.
    pub(crate) outcome: Result<i64, CounterError>,
    /// When it was applied, in store time (see [`StoreClock`]).
    pub(crate) at_ms: u64,
}

/// The store's own clock: milliseconds that advance only while the store is open, with
/// the monotonic clock, from where they stood when it was last written. Client change
/// ids are kept by it, so no step of the wall clock can forget one early or keep one
/// forever; time the node is down does not count (an id lives longer, never shorter).
/// It starts from the wall clock once, when the store is made.
#[derive(Debug)]
pub(crate) struct StoreClock {
    base_ms: u64,
    opened: std::time::Instant,
}

impl StoreClock {
    /// A clock that stood at `base_ms` when the store was opened, now.
    pub(crate) fn starting_at(base_ms: u64) -> Self {
        Self {
            base_ms,
            opened: std::time::Instant::now(),
        }
    }

    /// Store time now.
    pub(crate) fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// What was recovered when the store opened.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Every counter's record (zero for counters the store had not seen).
    pub(crate) records: Vec<CounterRecord>,
    /// The last commit's number (0 for a new store).
    pub(crate) last_commit: u64,
    /// Whether the store was created now.
    pub(crate) fresh: bool,
}
