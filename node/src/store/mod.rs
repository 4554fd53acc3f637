//! The node's durable store, behind one small module: the rest of the node speaks in
//! counters, batches, commits and outboxes, never in tables and transactions.
//!
//! | module | owns |
//! | --- | --- |
//! | [`plan`] | the store's rules: what a commit writes, every entry idempotent |
//! | [`file`] | the redb file: its tables, its lock, opening it (or refusing to), one commit |
//! | [`lock_file`] | advisory locks on files: the data dir's, a data slot's |
//! | [`redo`] | the redo log in front of the file: a commit is durable once its record is synced |
//! | [`memory`] | the same tables in memory (`--memory-only`) |
//! | [`faults`] | the file's storage, with the sync and write errors tests inject |
//! | [`journal`] | the actor every change goes through: group commits, then the counters |
//! | [`pace`] | when the journal's next commit may start (the group commit interval) |
//! | [`own_thread`] | whether the journal commits a lone client's change on its own thread |
//! | [`slots`] | `--data-slots`: replicas sharing one directory, each holding a slot (its name and store) |
//! | [`left_mark`] | the mark of a node that left for good: its store never opened again |
//! | [`ship`] | where each commit's writes go besides the disk: the store's copy on another node |
//!
//! What is durable, all of it changed only by commits (all or nothing, each made durable
//! by one record of the [redo log](redo), or by a sync of the file itself at a
//! checkpoint; the file takes them into one write transaction kept open from commit to
//! commit):
//!
//! - every counter's figures ([`CounterRecord`]) and the last commit's number;
//! - per incoming stream (sender and its store), the last batch applied and what its
//!   batches added up to ([`InRecord`]): the receiver's half of exactly-once, committed
//!   with the counter changes it describes;
//! - per client change id, what became of that change ([`IdRecord`]), for at least
//!   [`ID_MEMORY`] of the store's own time ([`StoreClock`]): a change retried with its id
//!   within that time is applied once;
//! - the outbox: every batch this node's load clients issued and their destination has
//!   not acknowledged yet, and per destination its [`OutRecord`] (the last number used,
//!   the last acknowledged, what the batches issued to it add up to); and the issued
//!   tally (value, operations), committed with the batches it counts: the sender's half;
//! - the node's name (a data dir holds one node's data) and the store's own random id,
//!   the origin of this node's outgoing streams.
//!
//! A change is acknowledged only once a commit holding it is durable (its record in the
//! redo log synced); many changes share one commit (one fsync). The file takes the
//! commit right after, into its open transaction, and reads of the store wait for that. A commit that fails may still have reached the disk (a
//! sync can report an error after the data landed): whoever retries it retries the same
//! entries, and the [plan](plan) makes each of them idempotent against what the store
//! holds, so nothing is applied twice whichever way the failure went.

mod error;
pub(crate) mod faults;
mod file;
pub(crate) mod journal;
pub(crate) mod left_mark;
mod lock_file;
mod memory;
mod own_thread;
mod pace;
mod plan;
mod records;
mod redo;
mod ship;
pub(crate) mod slots;

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::counters::record::CounterRecord;

pub(crate) use error::StoreError;
pub(crate) use file::FILE_NAME;
pub(crate) use plan::{CommitOutcome, Outcome};
pub(crate) use records::{
    id_bucket, Adopt, Discrepancy, Entry, InRecord, OutBatch, OutStream, OutboxRecord,
    ReceivedTotals, Recovered, StoreClock, Sum,
};
pub(crate) use redo::Op;
pub(crate) use ship::{Cover, Ship};
#[cfg(test)]
pub(crate) use {
    plan::OperationTally,
    records::{OutRecord, ID_MEMORY, MAX_IDS_PER_BUCKET},
};

/// The node's store; see the module documentation.
#[derive(Debug)]
pub(crate) struct Store {
    kind: Kind,
    /// This store's random id: the origin of the node's outgoing streams.
    origin: u64,
    /// The store's own time.
    clock: StoreClock,
    /// Client change ids held in the current bucket: (bucket, count).
    ids: Mutex<(u32, u64)>,
    /// Held for the length of a commit: see [`Store::settled`].
    committing: Mutex<()>,
    /// Commits handed to another thread and not returned yet (counted from the
    /// hand-off, before they take `committing`), and their end: see [`Store::settled`].
    handed_off: (Mutex<u64>, Condvar),
    /// Where each commit's writes go as well: the node's copy on another node.
    ship: OnceLock<Arc<dyn Ship>>,
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
    File(Box<file::StoreFile>),
    Memory(Mutex<memory::MemoryTables>),
}

impl Store {
    /// Opens (or creates) node `node`'s store in `dir`, and recovers `counters` counters.
    /// `faults` is the file's storage faults (none unless a test arms them).
    pub(crate) fn open(
        dir: &Path,
        node: &str,
        counters: u32,
        faults: Arc<faults::DiskFaults>,
    ) -> Result<(Self, Recovered), StoreError> {
        let opened = file::StoreFile::open(dir, node, counters, faults)?;
        let clock = StoreClock::starting_at(opened.clock_ms);
        let bucket = id_bucket(clock.now_ms());
        let ids = opened.file.ids_in(bucket)?;
        let store = Self {
            kind: Kind::File(Box::new(opened.file)),
            origin: opened.origin,
            clock,
            ids: Mutex::new((bucket, ids)),
            committing: Mutex::default(),
            handed_off: Default::default(),
            ship: OnceLock::new(),
        };
        Ok((store, opened.recovered))
    }

    /// A store in memory for `counters` counters (`--memory-only`).
    pub(crate) fn memory(counters: u32) -> (Self, Recovered) {
        let store = Self {
            kind: Kind::Memory(Mutex::default()),
            origin: fastrand::u64(..),
            clock: StoreClock::starting_at(crate::clock::unix_millis()),
            ids: Mutex::default(),
            committing: Mutex::default(),
            handed_off: Default::default(),
            ship: OnceLock::new(),
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

    /// Whether commits reach a disk (so run off the journal's thread, but for a lone
    /// client's change: see the journal).
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

    /// Commits `entries` as commit `number`, in order, all or nothing, at the store's
    /// time now (when its ids are recorded, and what ids are forgotten).
    #[cfg(test)]
    pub(crate) fn commit(
        &self,
        number: u64,
        entries: &[Entry],
    ) -> Result<CommitOutcome, StoreError> {
        self.commit_at(number, self.clock.now_ms(), entries)
    }

    /// [`Store::commit`] at store time `now_ms` (tests set the time themselves).
    #[cfg(test)]
    pub(crate) fn commit_at(
        &self,
        number: u64,
        now_ms: u64,
        entries: &[Entry],
    ) -> Result<CommitOutcome, StoreError> {
        self.commit_at_then(number, now_ms, entries, |_, result| result)
    }

    /// Commits `batch`'s entries as commit `number` (see [`Store::commit`]), and calls
    /// `durable` with the batch and what the commit did, or why it failed, as soon as
    /// that is known: once the commit is durable, before the store file holds it too
    /// (reads of the store wait for that). Returns what `durable` returns.
    pub(crate) fn commit_then<B: AsRef<[Entry]>, T>(
        &self,
        number: u64,
        batch: B,
        durable: impl FnOnce(B, Result<CommitOutcome, StoreError>) -> T,
    ) -> T {
        self.commit_at_then(number, self.clock.now_ms(), batch, durable)
    }

    fn commit_at_then<B: AsRef<[Entry]>, T>(
        &self,
        number: u64,
        now_ms: u64,
        batch: B,
        durable: impl FnOnce(B, Result<CommitOutcome, StoreError>) -> T,
    ) -> T {
        let _committing = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = id_bucket(now_ms);
        let in_bucket = {
            let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            if ids.0 == bucket {
                ids.1
            } else {
                0
            }
        };
        let count_ids = |new_ids: u64| {
            if new_ids > 0 {
                let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
                *ids = (bucket, in_bucket + new_ids);
            }
        };
        match &self.kind {
            Kind::File(file) => match file.prepare(
                number,
                now_ms,
                in_bucket,
                batch.as_ref(),
                self.ship.get().map(|s| &**s),
            ) {
                Ok((outcome, new_ids, prepared)) => {
                    count_ids(new_ids);
                    let answer = durable(batch, Ok(outcome));
                    prepared.land();
                    answer
                }
                Err(e) => {
                    if let Some(ship) = self.ship.get() {
                        ship.failed(number);
                    }
                    durable(batch, Err(e))
                }
            },
            Kind::Memory(memory) => {
                let attempt = std::panic::AssertUnwindSafe(|| {
                    Self::memory_tables(memory).commit(number, now_ms, in_bucket, batch.as_ref())
                });
                let result = std::panic::catch_unwind(attempt)
                    .unwrap_or_else(|_| Err(StoreError::write("the commit panicked")));
                let result = result.map(|(outcome, new_ids)| {
                    count_ids(new_ids);
                    outcome
                });
                durable(batch, result)
            }
        }
    }

    /// The records of counters `indices` (in order, one each) as of the last commit.
    pub(crate) fn records(&self, indices: Range<u32>) -> Result<Vec<CounterRecord>, StoreError> {
        match &self.kind {
            Kind::File(file) => file.records(indices),
            Kind::Memory(memory) => Ok(Self::memory_tables(memory).records(indices)),
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
    pub(crate) fn outbox(&self) -> Result<OutboxRecord, StoreError> {
        match &self.kind {
            Kind::File(file) => file.outbox(),
            Kind::Memory(memory) => Ok(Self::memory_tables(memory).outbox()),
        }
    }

    /// Once no commit is running or handed off (one started by a journal that has
    /// failed since may still be, or may not have begun yet), the store as a journal
    /// starts from: see [`Store::current`]. Blocks: call it off the async threads.
    pub(crate) fn settled(&self, counters: u32) -> Result<Settled, StoreError> {
        let (count, ended) = &self.handed_off;
        let mut pending = count.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + SETTLE_WAIT;
        while *pending > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::write(format!(
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
        self.current(counters)
    }

    /// What the store holds now, between commits: the last commit's number, the records
    /// of counters `0..counters` and of every incoming stream. What a journal learns
    /// from after a commit failed (it may have landed or not). Blocks.
    pub(crate) fn current(&self, counters: u32) -> Result<Settled, StoreError> {
        let _committing = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Settled {
            last_commit: self.last_commit()?,
            records: self.records(0..counters)?,
            streams: self.streams_in()?,
        })
    }

    /// From now on, every commit's writes go to `ship` as well (once: a second call
    /// changes nothing). A store in memory has nothing to ship.
    pub(crate) fn ship_to(&self, ship: Arc<dyn Ship>) -> bool {
        self.is_durable() && self.ship.set(ship).is_ok()
    }

    /// Between two commits: the last commit's number and every row of the store (see
    /// `StoreFile::rows`); `then` runs before the next commit may start, with the
    /// number. What a copy of the store starts from. Blocks.
    pub(crate) fn rows_then(&self, then: impl FnOnce(u64)) -> Result<(u64, Vec<Op>), StoreError> {
        let _committing = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        let Kind::File(file) = &self.kind else {
            return Err(StoreError::write("a store in memory has no copies"));
        };
        let last = file.last_commit()?;
        let rows = file.rows()?;
        then(last);
        Ok((last, rows))
    }

    /// Applies another store's writes to this one, a copy of it (see
    /// `StoreFile::apply_copied`). Blocks.
    pub(crate) fn apply_copied(
        &self,
        ops: &[Op],
        reset: bool,
        copy_state: Option<u64>,
    ) -> Result<(), StoreError> {
        let _committing = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        match &self.kind {
            Kind::File(file) => file.apply_copied(ops, reset, copy_state),
            Kind::Memory(_) => Err(StoreError::write("a store in memory holds no copies")),
        }
    }

    /// The id of the store this one holds now (a copy's is its node's: see
    /// [`Store::origin`] for this node's own, as it was opened), and when that store
    /// was made (wall-clock milliseconds; 0 if it does not say).
    pub(crate) fn store_id(&self) -> Result<Option<(u64, u64)>, StoreError> {
        match &self.kind {
            Kind::File(file) => file.store_id(),
            Kind::Memory(_) => Ok(Some((self.origin, 0))),
        }
    }

    /// Whether this store is a whole copy of another node's (no transfer under way).
    pub(crate) fn copy_whole(&self) -> Result<bool, StoreError> {
        match &self.kind {
            Kind::File(file) => file.copy_whole(),
            Kind::Memory(_) => Ok(false),
        }
    }

    /// Whether the next commit, if a small one, is just its record written and synced
    /// (in the file: see `StoreFile::plain_next`); always in memory.
    pub(crate) fn plain_next(&self) -> bool {
        match &self.kind {
            Kind::File(file) => file.plain_next(),
            Kind::Memory(_) => true,
        }
    }

    /// Fault injection: the file's storage faults (`None` in memory).
    pub(crate) fn faults(&self) -> Option<Arc<faults::DiskFaults>> {
        match &self.kind {
            Kind::File(file) => Some(file.faults()),
            Kind::Memory(_) => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::counter::{Applied, CounterError, Delta};
    use shared::host::Change;

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
        store
            .commit(1, &[apply(0, Delta::Increment(1), "a")])
            .unwrap();
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

    fn apply(counter: u32, delta: Delta, id: &str) -> Entry {
        Entry::Apply {
            counter,
            delta,
            id: id.into(),
        }
    }

    fn batch(stream: &str, seq: u64, changes: Vec<Change>) -> Entry {
        Entry::Batch {
            stream: stream.into(),
            seq,
            changes,
        }
    }

    fn fresh(value: i64) -> Outcome {
        Outcome::Applied(Ok(Applied {
            value,
            repeated: false,
        }))
    }

    fn repeated(value: i64) -> Outcome {
        Outcome::Applied(Ok(Applied {
            value,
            repeated: true,
        }))
    }

    #[test]
    fn a_commit_applies_its_entries_in_order_and_stamps_what_it_touched() {
        let (store, recovered) = Store::memory(3);
        assert_eq!(recovered.records.len(), 3);
        let entries = vec![
            batch("a#1", 1, vec![change(0, 5, 2), change(2, -1, 1)]),
            apply(0, Delta::Increment(10), "x"),
            apply(1, Delta::Decrement(1 << 63), "y"),
            apply(1, Delta::Decrement(1), "z"),
            batch("a#1", 2, vec![change(0, 1, 1)]),
        ];
        let outcome = store.commit(4, &entries).unwrap();
        assert_eq!(outcome.outcomes[0], Outcome::Done);
        assert_eq!(outcome.outcomes[1], fresh(15));
        assert_eq!(outcome.outcomes[2], fresh(i64::MIN));
        assert!(
            matches!(outcome.outcomes[3], Outcome::Applied(Err(_))),
            "the second would overflow"
        );
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
        let day = ID_MEMORY.as_millis() as u64;
        // The same id twice in one commit, and again in a later one: applied once.
        let first = store
            .commit_at(
                1,
                1000,
                &[
                    apply(0, Delta::Increment(5), "a"),
                    apply(0, Delta::Increment(5), "a"),
                ],
            )
            .unwrap();
        let again = store
            .commit_at(2, 2000, &[apply(0, Delta::Increment(5), "a")])
            .unwrap();
        let outcomes: Vec<_> = first
            .outcomes
            .iter()
            .chain(&again.outcomes)
            .cloned()
            .collect();
        assert_eq!(outcomes, [fresh(5), repeated(5), repeated(5)]);
        assert_eq!(store.record(0).unwrap().operations, 1);
        // The same id for another change: refused, nothing applied.
        let reused = store
            .commit_at(3, 3000, &[apply(1, Delta::Increment(5), "a")])
            .unwrap();
        assert!(matches!(
            reused.outcomes[0],
            Outcome::Applied(Err(CounterError::IdReused { .. }))
        ));
        assert_eq!(store.record(1).unwrap().operations, 0);
        // A day later it is remembered still; two days later it is forgotten, and the
        // same change is a new one.
        let next_day = store
            .commit_at(4, 1000 + day, &[apply(0, Delta::Increment(5), "a")])
            .unwrap();
        assert_eq!(next_day.outcomes, [repeated(5)]);
        let later = store
            .commit_at(5, 1000 + 2 * day, &[apply(0, Delta::Increment(5), "a")])
            .unwrap();
        assert_eq!(later.outcomes, [fresh(10)]);
    }

    fn out_batch(seq: u64, value: i64, operations: u64) -> OutBatch {
        OutBatch {
            seq,
            changes: vec![change(0, value.into(), operations)],
            value,
            operations,
        }
    }

    fn out(dest: &str, seq: u64) -> Entry {
        Entry::Outgoing {
            dest: dest.into(),
            batch: out_batch(seq, 3, 2),
        }
    }

    #[test]
    fn the_outbox_keeps_what_is_not_acknowledged_and_the_tally_what_was_issued() {
        let (store, _) = Store::memory(1);
        store
            .commit(1, &[out("b", 1), out("b", 2), out("c", 1)])
            .unwrap();
        let acked = Entry::Acked {
            dest: "b".into(),
            upto: 2,
        };
        store.commit(2, &[out("b", 3), acked]).unwrap();
        let OutboxRecord {
            streams: outbox,
            issued,
        } = store.outbox().unwrap();
        assert_eq!(issued, Sum::new(12, 8));
        let b = &outbox["b"];
        assert_eq!((b.record.last_seq, b.record.acked), (3, 2));
        assert_eq!(
            b.record.issued,
            Sum::new(9, 6),
            "what b should hold of all three"
        );
        assert_eq!(b.batches, [out_batch(3, 3, 2)]);
        let c = &outbox["c"];
        assert_eq!(
            (c.record.last_seq, c.record.acked, c.batches.len()),
            (1, 0, 1)
        );
    }

    /// The whole of a commit retried (as after a sync that reported an error though
    /// the data had landed) applies nothing twice and adds nothing to any tally.
    #[test]
    fn a_commit_retried_after_it_landed_changes_nothing() {
        let (store, _) = Store::memory(2);
        store.commit(1, &[out("d", 1)]).unwrap();
        let entries = vec![
            batch("s#1", 1, vec![change(0, 7, 3)]),
            apply(1, Delta::Increment(4), "id-1"),
            out("d", 2),
            out("d", 3),
            Entry::Acked {
                dest: "d".into(),
                upto: 1,
            },
        ];
        let first = store.commit(2, &entries).unwrap();
        let again = store.commit(3, &entries).unwrap();
        let issued = |fresh_or_repeated| {
            vec![
                Outcome::Done,
                fresh_or_repeated,
                Outcome::Issued(true),
                Outcome::Issued(true),
                Outcome::Done,
            ]
        };
        assert_eq!(first.outcomes, issued(fresh(4)));
        assert_eq!(
            again.outcomes,
            issued(repeated(4)),
            "the batches it issued are issued, once"
        );
        assert_eq!(again.operations, OperationTally::default());
        let zero = store.record(0).unwrap();
        assert_eq!((zero.value, zero.operations), (7, 3));
        assert_eq!(store.record(1).unwrap().value, 4);
        let OutboxRecord {
            streams: outbox,
            issued,
        } = store.outbox().unwrap();
        assert_eq!(issued, Sum::new(9, 6), "issued once");
        assert_eq!(outbox["d"].record.issued, Sum::new(9, 6));
        assert_eq!(
            outbox["d"].batches,
            [out_batch(2, 3, 2), out_batch(3, 3, 2)]
        );
        assert_eq!(
            store.streams_in().unwrap()[0].1,
            InRecord {
                seq: 1,
                value: 7,
                operations: 3
            }
        );
    }

    /// The outbox never has a gap, and never holds two batches under one number.
    #[test]
    fn an_outgoing_batch_must_follow_its_destinations_last() {
        let (store, _) = Store::memory(1);
        let outcome = store
            .commit(1, &[out("d", 1), out("d", 3), out("d", 2)])
            .unwrap();
        assert_eq!(
            outcome.outcomes,
            [
                Outcome::Issued(true),
                Outcome::Issued(false),
                Outcome::Issued(true)
            ],
            "3 beyond the next is refused; 2 follows"
        );
        let other = Entry::Outgoing {
            dest: "d".into(),
            batch: out_batch(2, 99, 1),
        };
        let outcome = store.commit(2, &[other]).unwrap();
        assert_eq!(outcome.outcomes, [Outcome::Issued(false)], "2 is taken");
        let OutboxRecord {
            streams: outbox,
            issued,
        } = store.outbox().unwrap();
        assert_eq!(issued, Sum::new(6, 4));
        let seqs: Vec<u64> = outbox["d"].batches.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, [1, 2]);
    }

    /// An adoption is taken once, moves what the destination should hold, counts as
    /// unvouched when it says so, and carries the numbering past the destination's.
    #[test]
    fn an_adoption_is_taken_once_by_its_number() {
        let (store, _) = Store::memory(1);
        store.commit(1, &[out("d", 1), out("d", 2)]).unwrap();
        let adopt = Entry::Adopt(Adopt {
            dest: "d".into(),
            number: 1,
            upto: 5,
            value: 10,
            operations: 4,
            unvouched: true,
        });
        store.commit(2, std::slice::from_ref(&adopt)).unwrap();
        store.commit(3, &[adopt]).unwrap();
        let OutboxRecord {
            streams: outbox,
            issued,
        } = store.outbox().unwrap();
        let d = &outbox["d"];
        assert_eq!((d.record.last_seq, d.record.acked), (5, 5));
        assert!(d.batches.is_empty(), "acknowledged by the adoption");
        assert_eq!(d.record.issued, Sum::new(16, 8));
        assert_eq!(d.record.unvouched, Discrepancy::new(10, 4));
        assert_eq!(d.record.adoptions, 1);
        assert_eq!(
            issued,
            Sum::new(6, 4),
            "the issued tally is what this store issued"
        );
        // Numbering carries on after the destination's.
        let outcome = store.commit(4, &[out("d", 6)]).unwrap();
        assert_eq!(outcome.outcomes, [Outcome::Issued(true)]);
    }

    /// The ids kept per bucket are bounded: beyond, a new id is refused (and nothing
    /// applied), a stored one still answered.
    #[test]
    fn ids_beyond_the_bound_are_refused_and_stored_ones_still_answered() {
        let (store, _) = Store::memory(1);
        store
            .commit_at(1, 0, &[apply(0, Delta::Increment(1), "kept")])
            .unwrap();
        *store.ids.lock().unwrap() = (0, MAX_IDS_PER_BUCKET);
        let outcome = store
            .commit_at(
                2,
                1,
                &[
                    apply(0, Delta::Increment(1), "new"),
                    apply(0, Delta::Increment(1), "kept"),
                ],
            )
            .unwrap();
        assert!(matches!(
            outcome.outcomes[0],
            Outcome::Applied(Err(CounterError::Unavailable(_)))
        ));
        assert_eq!(outcome.outcomes[1], repeated(1));
        assert_eq!(store.record(0).unwrap().operations, 1);
    }
}
