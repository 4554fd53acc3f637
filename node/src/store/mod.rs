//! The node's durable store, behind one small module: the rest of the node speaks in
//! counters, batches, commits and outboxes, never in tables and transactions.
//!
//! | module | owns |
//! | --- | --- |
//! | [`file`] | the redb file: its tables, opening it (or refusing to), one commit |
//! | [`memory`] | the same tables in memory (`--memory-only`) |
//! | [`journal`] | the actor every change goes through: group commits, then the counters |
//!
//! What is durable, all of it changed only by commits (one redb write transaction each,
//! all or nothing):
//!
//! - every counter's figures ([`CounterRecord`]) and the last commit's number;
//! - per incoming stream (sender and its store), the last batch applied and what its
//!   batches added up to ([`InRecord`]): the receiver's half of exactly-once, committed
//!   with the counter changes it describes;
//! - per client change id, what became of that change ([`IdRecord`]), for at least
//!   [`ID_MEMORY`]: a change retried with its id within that time is applied once;
//! - the outbox: every batch this node's load clients issued and their destination has
//!   not acknowledged yet, per destination, with the last number used; and the issued
//!   tally (value, operations), committed with the batches it counts: the sender's half;
//! - the node's name (a data dir holds one node's data) and the store's own random id,
//!   the origin of this node's outgoing streams.
//!
//! A change is acknowledged only once a commit holding it has returned; many changes
//! share one commit (one fsync).

pub(crate) mod file;
pub(crate) mod journal;
pub(crate) mod memory;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};
use shared::counter::{Applied, CounterError, Delta};
use shared::host::Change;

use crate::counters::record::CounterRecord;
pub(crate) use crate::load::outbox::OutBatch;

/// Why the store cannot be used. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The data dir or its file cannot be opened (or created).
    #[error("cannot open the store in {path}: {reason}")]
    Open {
        /// The data dir.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The store there is not this node's.
    #[error(
        "the store in {path} belongs to node '{found}', not '{expected}': give each node its own \
         --data-dir (or --name '{found}')"
    )]
    WrongNode {
        /// The data dir.
        path: PathBuf,
        /// The node whose data it holds.
        found: String,
        /// This node.
        expected: String,
    },
    /// The store exists but cannot be read: the node refuses to start rather than
    /// replace it with an empty one.
    #[error(
        "the store in {path} cannot be read ({reason}); the node will not replace it with an \
         empty one: move it aside to start afresh, or restore it"
    )]
    Unreadable {
        /// The data dir.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A commit failed (the disk is full, or failing): nothing of it was applied.
    #[error("cannot write to the store: {0}")]
    Write(String),
}

/// One change the journal commits: what it stands for, and how it is applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// Batch `seq` of stream `stream` (its key), to counters of this node, applied in
    /// the same commit that records it as the stream's last.
    Batch {
        /// The stream's key ([`shared::host::StreamId::key`]), shared by its batches.
        stream: Arc<str>,
        /// Its number.
        seq: u64,
        /// Its changes.
        changes: Vec<Change>,
    },
    /// One client change to counter `counter`, whose outcome the client waits for:
    /// applied once per id (a change whose id is recorded gets the recorded outcome
    /// and changes nothing).
    Apply {
        /// Counter index.
        counter: u32,
        /// The change.
        delta: Delta,
        /// The client's id for it (`None`: no id, applied every time; tests only).
        id: Option<String>,
    },
    /// A batch this node's load clients issued to node `dest`: into the outbox, and
    /// into the issued tally.
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
    fn to_tuple(self) -> (u64, i64, u64) {
        (self.seq, self.value, self.operations)
    }

    fn from_tuple((seq, value, operations): (u64, i64, u64)) -> Self {
        Self {
            seq,
            value,
            operations,
        }
    }
}

/// The outbox per destination, and the issued tally `(value, operations)`.
pub(crate) type Outbox = (BTreeMap<String, OutStream>, (i64, u64));

/// One destination's part of the outbox, as a sender starts with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct OutStream {
    /// The last batch number used.
    pub(crate) last_seq: u64,
    /// The last batch acknowledged.
    pub(crate) acked: u64,
    /// The batches after `acked`, in order.
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
    pub(crate) fn by_sender(&self) -> Vec<shared::agent::SenderTotals> {
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
                |(sender, (value, operations))| shared::agent::SenderTotals {
                    sender: sender.to_string(),
                    value,
                    operations,
                },
            )
            .collect()
    }
}

/// How long, at least, a node remembers a client change's id (and so how long a retry
/// with that id is safe): ids are kept by the (UTC) day they were applied, and a day's
/// ids are forgotten once the day after it is over, so between 24 and 48 hours.
pub(crate) const ID_MEMORY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The day (since the Unix epoch, UTC) of `ms` milliseconds since it.
pub(crate) fn day_of(ms: u64) -> u32 {
    u32::try_from(ms / ID_MEMORY.as_millis() as u64).unwrap_or(u32::MAX)
}

/// At most this many forgotten ids are removed per commit (the rest go with later ones).
pub(crate) const ID_PRUNE_PER_COMMIT: usize = 1024;

/// What became of a client change with an id, as the store remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdRecord {
    /// The counter it changed.
    pub(crate) counter: u32,
    /// The change.
    pub(crate) delta: Delta,
    /// The value after it, or why it was refused.
    pub(crate) outcome: Result<i64, CounterError>,
    /// When it was applied (milliseconds since the Unix epoch).
    pub(crate) at_ms: u64,
}

/// What a commit did: the outcome of each [`Entry::Apply`] (in order), and the new
/// records of the counters and incoming streams it touched.
#[derive(Debug, Default)]
pub(crate) struct CommitOutcome {
    /// One per [`Entry::Apply`], in order: the client's answer.
    pub(crate) applied: Vec<Result<Applied, CounterError>>,
    /// The new record of every counter the commit changed, by index (each counter is
    /// handed its record: one message per counter per commit, however many changes).
    pub(crate) counters: Vec<(u32, CounterRecord)>,
    /// Operations the commit applied to counters, and refused (they would overflow).
    pub(crate) operations: OperationTally,
    /// The new record of every incoming stream the commit touched.
    pub(crate) streams: Vec<(String, InRecord)>,
}

/// Operations one commit applied to counters, and refused because they would overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OperationTally {
    /// Applied.
    pub(crate) applied: u64,
    /// Refused.
    pub(crate) rejected: u64,
}

impl OperationTally {
    fn count(&mut self, operations: u64, applied: bool) {
        let slot = if applied {
            &mut self.applied
        } else {
            &mut self.rejected
        };
        *slot = slot.saturating_add(operations);
    }
}

/// Everything one commit writes, worked out from its entries before anything is
/// written (see [`plan`]).
#[derive(Debug, Default)]
pub(crate) struct Writes {
    counters: BTreeMap<u32, CounterRecord>,
    /// Operations applied to counters and refused.
    pub(crate) operations: OperationTally,
    streams_in: BTreeMap<String, InRecord>,
    /// New outbox rows: destination, batch.
    outbox: Vec<(String, OutBatch)>,
    /// Per destination, the last batch acknowledged (rows up to it are deleted).
    acked: BTreeMap<String, u64>,
    /// Added to the issued tally.
    issued: (i64, u64),
    /// Client change ids recorded by this commit.
    ids: BTreeMap<String, IdRecord>,
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

/// The node's store; see the module documentation.
#[derive(Debug)]
pub(crate) struct Store {
    kind: Kind,
    /// This store's random id: the origin of the node's outgoing streams.
    origin: u64,
    /// Held for the length of a commit: see [`Store::settled`].
    committing: Mutex<()>,
    /// Commits handed to another thread and not returned yet (counted from the
    /// hand-off, before they take `committing`), and their end: see [`Store::settled`].
    handed_off: (Mutex<u64>, Condvar),
}

/// How long a journal that starts waits for its predecessor's commits to return.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A commit handed to another thread, counted from the hand-off until it is dropped
/// (after the commit returned): see [`Store::settled`].
pub(crate) struct HandedOff(Arc<Store>);

impl Drop for HandedOff {
    fn drop(&mut self) {
        let (count, ended) = &self.0.handed_off;
        let mut count = count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        if *count == 0 {
            ended.notify_all();
        }
    }
}

#[derive(Debug)]
enum Kind {
    File(file::StoreFile),
    Memory(Mutex<memory::MemoryTables>),
}

impl Store {
    /// Opens (or creates) node `node`'s store in `dir`, and recovers `counters` counters.
    pub(crate) fn open(
        dir: &Path,
        node: &str,
        counters: u32,
    ) -> Result<(Self, Recovered), StoreError> {
        let (file, origin, recovered) = file::StoreFile::open(dir, node, counters)?;
        let store = Self {
            kind: Kind::File(file),
            origin,
            committing: Mutex::default(),
            handed_off: Default::default(),
        };
        Ok((store, recovered))
    }

    /// A store in memory for `counters` counters (`--memory-only`).
    pub(crate) fn memory(counters: u32) -> (Self, Recovered) {
        let store = Self {
            kind: Kind::Memory(Mutex::default()),
            origin: fastrand::u64(..),
            committing: Mutex::default(),
            handed_off: Default::default(),
        };
        let recovered = Recovered {
            records: vec![CounterRecord::default(); counters as usize],
            last_commit: 0,
            fresh: true,
        };
        (store, recovered)
    }

    /// Counts a commit about to be handed to another thread, before it is: a journal
    /// that starts meanwhile waits for it ([`Store::settled`]). Drop the guard once the
    /// commit has returned.
    pub(crate) fn hand_off(store: &Arc<Store>) -> HandedOff {
        let (count, _) = &store.handed_off;
        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        HandedOff(Arc::clone(store))
    }

    /// Whether commits reach a disk (so are worth running off the actor's thread).
    pub(crate) fn is_durable(&self) -> bool {
        matches!(self.kind, Kind::File(_))
    }

    /// This store's id, the origin of the node's outgoing streams.
    pub(crate) fn origin(&self) -> u64 {
        self.origin
    }

    fn memory_tables(
        memory: &Mutex<memory::MemoryTables>,
    ) -> std::sync::MutexGuard<'_, memory::MemoryTables> {
        memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits `entries` as commit `number`, at `now_ms` (milliseconds since the Unix
    /// epoch: when its ids are recorded, and what ids are forgotten), in order, all or
    /// nothing.
    pub(crate) fn commit(
        &self,
        number: u64,
        now_ms: u64,
        entries: &[Entry],
    ) -> Result<CommitOutcome, StoreError> {
        let _committing = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        match &self.kind {
            Kind::File(file) => file.commit(number, now_ms, entries),
            Kind::Memory(memory) => Ok(Self::memory_tables(memory).commit(number, now_ms, entries)),
        }
    }

    /// The records of counters `0..counters` as of the last commit.
    pub(crate) fn records(&self, counters: u32) -> Result<Vec<CounterRecord>, StoreError> {
        match &self.kind {
            Kind::File(file) => file.records(counters),
            Kind::Memory(memory) => Ok(Self::memory_tables(memory).records(counters)),
        }
    }

    /// Counter `index`'s record as of the last commit.
    pub(crate) fn record(&self, index: u32) -> Result<CounterRecord, StoreError> {
        match &self.kind {
            Kind::File(file) => file.record(index),
            Kind::Memory(memory) => Ok(Self::memory_tables(memory).record(index)),
        }
    }

    /// The number of the last commit.
    pub(crate) fn last_commit(&self) -> Result<u64, StoreError> {
        match &self.kind {
            Kind::File(file) => file.last_commit(),
            Kind::Memory(memory) => Ok(Self::memory_tables(memory).last_commit),
        }
    }

    /// Every incoming stream's record.
    pub(crate) fn streams_in(&self) -> Result<Vec<(String, InRecord)>, StoreError> {
        match &self.kind {
            Kind::File(file) => file.streams_in(),
            Kind::Memory(memory) => Ok(Self::memory_tables(memory).streams_in()),
        }
    }

    /// The outbox, per destination, and the issued tally `(value, operations)`.
    pub(crate) fn outbox(&self) -> Result<Outbox, StoreError> {
        match &self.kind {
            Kind::File(file) => file.outbox(),
            Kind::Memory(memory) => Ok(Self::memory_tables(memory).outbox()),
        }
    }

    /// Once no commit is running or handed off (one started by a journal that has
    /// failed since may still be, or may not have begun yet), the last commit's number,
    /// the records of counters `0..counters` and of every incoming stream. Blocks: call
    /// it off the async threads.
    pub(crate) fn settled(&self, counters: u32) -> Result<Settled, StoreError> {
        let (count, ended) = &self.handed_off;
        let mut pending = count.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + SETTLE_WAIT;
        while *pending > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Write(format!(
                    "a commit handed off before this journal started has not returned in \
                     {SETTLE_WAIT:?}"
                )));
            }
            pending = ended
                .wait_timeout(pending, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(pending);
        let _committing = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Settled {
            last_commit: self.last_commit()?,
            records: self.records(counters)?,
            streams: self.streams_in()?,
        })
    }
}

/// The store as a journal starts from: see [`Store::settled`].
#[derive(Debug)]
pub(crate) struct Settled {
    /// The last commit's number.
    pub(crate) last_commit: u64,
    /// Every counter's record.
    pub(crate) records: Vec<CounterRecord>,
    /// Every incoming stream's record.
    pub(crate) streams: Vec<(String, InRecord)>,
}

/// Works out what commit `number` of `entries` writes, reading the counters and
/// incoming streams it touches through `counter` and `stream_in`. The same arithmetic
/// as the counters'; a backend then writes [`Writes`] in one transaction.
pub(crate) fn plan(
    number: u64,
    now_ms: u64,
    entries: &[Entry],
    mut counter: impl FnMut(u32) -> Result<CounterRecord, StoreError>,
    mut stream_in: impl FnMut(&str) -> Result<InRecord, StoreError>,
    mut client_id: impl FnMut(&str) -> Result<Option<IdRecord>, StoreError>,
) -> Result<(Writes, Vec<Result<Applied, CounterError>>), StoreError> {
    let mut writes = Writes::default();
    let mut outcomes = Vec::new();
    let mut touch = |writes: &mut Writes, index: u32| -> Result<(), StoreError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = writes.counters.entry(index) {
            slot.insert(counter(index)?);
        }
        Ok(())
    };
    for entry in entries {
        match entry {
            Entry::Batch {
                stream,
                seq,
                changes,
            } => {
                for change in changes {
                    touch(&mut writes, change.counter)?;
                    if let Some(record) = writes.counters.get_mut(&change.counter) {
                        let applied = record.add(change.delta, change.operations).is_ok();
                        writes.operations.count(change.operations, applied);
                    }
                }
                if !writes.streams_in.contains_key(&**stream) {
                    let record = stream_in(stream)?;
                    writes.streams_in.insert(stream.to_string(), record);
                }
                if let Some(record) = writes.streams_in.get_mut(&**stream) {
                    let (value, operations) = changes
                        .iter()
                        .fold((0i128, 0u64), |(v, o), c| (v + c.delta, o + c.operations));
                    record.seq = *seq;
                    record.value = record.value.saturating_add(saturate(value));
                    record.operations = record.operations.saturating_add(operations);
                }
            }
            Entry::Apply { counter, delta, id } => {
                let earlier = match id {
                    Some(id) => match writes.ids.get(id) {
                        Some(record) => Some(record.clone()),
                        None => client_id(id)?,
                    },
                    None => None,
                };
                if let (Some(earlier), Some(id)) = (earlier, id) {
                    let same = earlier.counter == *counter && earlier.delta == *delta;
                    let outcome = if same {
                        earlier.outcome.map(|value| Applied {
                            value,
                            repeated: true,
                        })
                    } else {
                        Err(CounterError::IdReused {
                            id: id.clone(),
                            earlier: format!("counter {} {:?}", earlier.counter, earlier.delta),
                        })
                    };
                    outcomes.push(outcome);
                    continue;
                }
                touch(&mut writes, *counter)?;
                let Some(record) = writes.counters.get_mut(counter) else {
                    continue;
                };
                let outcome = record.apply(*delta);
                writes.operations.count(1, outcome.is_ok());
                if let Some(id) = id {
                    let remembered = IdRecord {
                        counter: *counter,
                        delta: *delta,
                        outcome: outcome.clone(),
                        at_ms: now_ms,
                    };
                    writes.ids.insert(id.clone(), remembered);
                }
                outcomes.push(outcome.map(|value| Applied {
                    value,
                    repeated: false,
                }));
            }
            Entry::Outgoing { dest, batch } => {
                writes.issued.0 = writes.issued.0.saturating_add(batch.value);
                writes.issued.1 = writes.issued.1.saturating_add(batch.operations);
                writes.outbox.push((dest.clone(), batch.clone()));
            }
            Entry::Acked { dest, upto } => {
                let acked = writes.acked.entry(dest.clone()).or_default();
                *acked = (*acked).max(*upto);
            }
        }
    }
    for record in writes.counters.values_mut() {
        record.commit = number;
    }
    Ok((writes, outcomes))
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal that starts reads the store only once every commit handed off before
    /// it has returned, even one that had not begun when it started.
    #[test]
    fn settling_waits_for_commits_handed_off_before() {
        let (store, _) = Store::memory(2);
        let store = Arc::new(store);
        let handed_off = Store::hand_off(&store);
        let (done, settled) = std::sync::mpsc::channel();
        let reader = Arc::clone(&store);
        let waiter = std::thread::spawn(move || {
            let last = reader.settled(2).map(|s| s.last_commit);
            let _ = done.send(());
            last
        });
        assert!(
            settled
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "settled while a commit was handed off and had not begun"
        );
        let change = Entry::Apply {
            counter: 0,
            delta: Delta::Increment(1),
            id: None,
        };
        store.commit(1, 0, &[change]).unwrap();
        drop(handed_off);
        settled
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("settled did not return once the commit was done");
        assert_eq!(
            waiter.join().unwrap().unwrap(),
            1,
            "it read the store before"
        );
    }

    fn change(counter: u32, delta: i128, operations: u64) -> Change {
        Change {
            counter,
            delta,
            operations,
        }
    }

    #[test]
    fn a_commit_applies_its_entries_in_order_and_stamps_what_it_touched() {
        let (store, recovered) = Store::memory(3);
        assert_eq!(recovered.records.len(), 3);
        let entries = vec![
            Entry::Batch {
                stream: "a#1".into(),
                seq: 1,
                changes: vec![change(0, 5, 2), change(2, -1, 1)],
            },
            Entry::Apply {
                counter: 0,
                delta: Delta::Increment(10),
                id: Some("x".into()),
            },
            Entry::Apply {
                counter: 1,
                delta: Delta::Decrement(1 << 63),
                id: None,
            },
            Entry::Apply {
                counter: 1,
                delta: Delta::Decrement(1),
                id: None,
            },
            Entry::Batch {
                stream: "a#1".into(),
                seq: 2,
                changes: vec![change(0, 1, 1)],
            },
        ];
        let outcome = store.commit(4, 0, &entries).unwrap();
        let values: Vec<Result<i64, CounterError>> = outcome
            .applied
            .iter()
            .map(|a| a.clone().map(|a| a.value))
            .collect();
        assert_eq!(values[0], Ok(15));
        assert_eq!(values[1], Ok(i64::MIN));
        assert!(values[2].is_err(), "the second would overflow");
        let zero = store.record(0).unwrap();
        assert_eq!((zero.value, zero.operations, zero.commit), (16, 4, 4));
        let one = store.record(1).unwrap();
        assert_eq!((one.operations, one.rejected, one.commit), (1, 1, 4));
        assert_eq!(store.last_commit().unwrap(), 4);
        // The counters get the records the commit made, one each.
        let records: Vec<_> = outcome
            .counters
            .iter()
            .map(|(index, r)| (*index, r.value, r.operations, r.rejected, r.commit))
            .collect();
        assert_eq!(
            records,
            [(0, 16, 4, 0, 4), (1, i64::MIN, 1, 1, 4), (2, -1, 1, 0, 4)]
        );
        let stream = InRecord {
            seq: 2,
            value: 5,
            operations: 4,
        };
        assert_eq!(outcome.streams, [("a#1".to_string(), stream)]);
        assert_eq!(store.streams_in().unwrap(), [("a#1".to_string(), stream)]);
    }

    #[test]
    fn a_change_is_applied_once_per_id_and_ids_are_remembered_for_a_day_at_least() {
        let (store, _) = Store::memory(2);
        let apply = |counter: u32, delta: Delta, id: &str| Entry::Apply {
            counter,
            delta,
            id: Some(id.into()),
        };
        let day = ID_MEMORY.as_millis() as u64;
        // The same id twice in one commit, and again in a later one: applied once.
        let first = store
            .commit(
                1,
                1000,
                &[
                    apply(0, Delta::Increment(5), "a"),
                    apply(0, Delta::Increment(5), "a"),
                ],
            )
            .unwrap();
        let again = store
            .commit(2, 2000, &[apply(0, Delta::Increment(5), "a")])
            .unwrap();
        let outcomes: Vec<_> = first
            .applied
            .iter()
            .chain(&again.applied)
            .cloned()
            .collect();
        let fresh = |value| {
            Ok(Applied {
                value,
                repeated: false,
            })
        };
        let repeated = |value| {
            Ok(Applied {
                value,
                repeated: true,
            })
        };
        assert_eq!(outcomes, [fresh(5), repeated(5), repeated(5)]);
        assert_eq!(store.record(0).unwrap().operations, 1);
        // The same id for another change: refused, nothing applied.
        let reused = store
            .commit(3, 3000, &[apply(1, Delta::Increment(5), "a")])
            .unwrap();
        assert!(matches!(
            reused.applied[0],
            Err(CounterError::IdReused { .. })
        ));
        assert_eq!(store.record(1).unwrap().operations, 0);
        // A day later it is remembered still; two days later it is forgotten, and the
        // same change is a new one.
        let next_day = store
            .commit(4, 1000 + day, &[apply(0, Delta::Increment(5), "a")])
            .unwrap();
        assert_eq!(next_day.applied, [repeated(5)]);
        let later = store
            .commit(5, 1000 + 2 * day, &[apply(0, Delta::Increment(5), "a")])
            .unwrap();
        assert_eq!(later.applied, [fresh(10)]);
    }

    #[test]
    fn the_outbox_keeps_what_is_not_acknowledged_and_the_tally_what_was_issued() {
        let (store, _) = Store::memory(1);
        let batch = |seq: u64| OutBatch {
            seq,
            changes: vec![change(0, 3, 2)],
            value: 3,
            operations: 2,
        };
        let out = |dest: &str, seq: u64| Entry::Outgoing {
            dest: dest.into(),
            batch: batch(seq),
        };
        store
            .commit(1, 0, &[out("b", 1), out("b", 2), out("c", 1)])
            .unwrap();
        store
            .commit(
                2,
                0,
                &[
                    out("b", 3),
                    Entry::Acked {
                        dest: "b".into(),
                        upto: 2,
                    },
                ],
            )
            .unwrap();
        let (outbox, issued) = store.outbox().unwrap();
        assert_eq!(issued, (12, 8));
        let b = &outbox["b"];
        assert_eq!((b.last_seq, b.acked), (3, 2));
        assert_eq!(b.batches, [batch(3)]);
        let c = &outbox["c"];
        assert_eq!((c.last_seq, c.acked, c.batches.len()), (1, 0, 1));
    }
}
