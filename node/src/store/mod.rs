//! The node's durable store, behind one small module: the rest of the node speaks in
//! counters, changes and commits, never in tables and transactions.
//!
//! | module | owns |
//! | --- | --- |
//! | [`file`] | the redb file: its tables, opening it (or refusing to), one commit |
//! | [`journal`] | the actor every change goes through: group commits, then the counters |
//!
//! What is durable: every counter's figures ([`CounterRecord`]) as of the last commit,
//! the node's name (a data dir holds one node's data) and an id for this store. A change
//! is acknowledged only once a commit holding it has returned; many changes share one
//! commit (one fsync).
//!
//! `--memory-only` keeps the same records in memory instead, for comparison: the same
//! commits and acknowledgements, and nothing survives the process.

pub(crate) mod file;
pub(crate) mod journal;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use shared::counter::{CounterError, Delta};
use shared::host::Change;

use crate::counters::record::CounterRecord;

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

/// One change the journal commits: what it stands for, and how the counters take it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// Coalesced changes to counters of this node (a batch from a sender).
    Changes(Vec<Change>),
    /// One client change to counter `counter`, whose outcome the client waits for.
    Apply {
        /// Counter index.
        counter: u32,
        /// The change.
        delta: Delta,
    },
}

impl Entry {
    /// The entry's changes as `(counter, delta, operations)`.
    pub(crate) fn changes(&self) -> Vec<(u32, i128, u64)> {
        match self {
            Entry::Changes(changes) => changes
                .iter()
                .map(|c| (c.counter, c.delta, c.operations))
                .collect(),
            Entry::Apply { counter, delta } => vec![(*counter, delta.signed(), 1)],
        }
    }
}

/// What a commit found for an [`Entry::Apply`]: the value after it, or why it was
/// refused.
pub(crate) type ApplyOutcome = Result<i64, CounterError>;

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
    /// Held for the length of a commit: see [`Store::settled`].
    committing: Mutex<()>,
}

#[derive(Debug)]
enum Kind {
    File(file::StoreFile),
    Memory(Mutex<MemoryState>),
}

#[derive(Debug, Default)]
struct MemoryState {
    records: Vec<CounterRecord>,
    last_commit: u64,
}

impl Store {
    /// Opens (or creates) node `node`'s store in `dir`, and recovers `counters` counters.
    pub(crate) fn open(
        dir: &Path,
        node: &str,
        counters: u32,
    ) -> Result<(Self, Recovered), StoreError> {
        let (file, recovered) = file::StoreFile::open(dir, node, counters)?;
        Ok((
            Self {
                kind: Kind::File(file),
                committing: Mutex::default(),
            },
            recovered,
        ))
    }

    /// A store in memory for `counters` counters (`--memory-only`).
    pub(crate) fn memory(counters: u32) -> (Self, Recovered) {
        let records = vec![CounterRecord::default(); counters as usize];
        let store = Self {
            kind: Kind::Memory(Mutex::new(MemoryState {
                records: records.clone(),
                last_commit: 0,
            })),
            committing: Mutex::default(),
        };
        (
            store,
            Recovered {
                records,
                last_commit: 0,
                fresh: true,
            },
        )
    }

    /// Whether commits reach a disk (so are worth running off the actor's thread).
    pub(crate) fn is_durable(&self) -> bool {
        matches!(self.kind, Kind::File(_))
    }

    /// Commits `entries` as commit `number`, in order: every counter they touch gets its
    /// new figures, all or nothing. Returns the outcome of each [`Entry::Apply`], in order.
    pub(crate) fn commit(
        &self,
        number: u64,
        entries: &[Entry],
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        let _committing = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        match &self.kind {
            Kind::File(file) => file.commit(number, entries),
            Kind::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                let mut updates = Vec::new();
                let outcomes = apply_all(
                    number,
                    entries,
                    |index| {
                        memory
                            .records
                            .get(index as usize)
                            .copied()
                            .unwrap_or_default()
                    },
                    |index, record| updates.push((index, record)),
                );
                for (index, record) in updates {
                    if let Some(slot) = memory.records.get_mut(index as usize) {
                        *slot = record;
                    }
                }
                memory.last_commit = number;
                Ok(outcomes)
            }
        }
    }

    /// The records of counters `0..counters` as of the last commit.
    pub(crate) fn records(&self, counters: u32) -> Result<Vec<CounterRecord>, StoreError> {
        match &self.kind {
            Kind::File(file) => file.records(counters),
            Kind::Memory(memory) => {
                let memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                Ok((0..counters as usize)
                    .map(|i| memory.records.get(i).copied().unwrap_or_default())
                    .collect())
            }
        }
    }

    /// Counter `index`'s record as of the last commit.
    pub(crate) fn record(&self, index: u32) -> Result<CounterRecord, StoreError> {
        match &self.kind {
            Kind::File(file) => file.record(index),
            Kind::Memory(memory) => Ok(memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .records
                .get(index as usize)
                .copied()
                .unwrap_or_default()),
        }
    }

    /// Once no commit is running (one started by a journal that has failed since may
    /// still be), the last commit's number and the records of counters `0..counters`.
    /// Blocks: call it off the async threads.
    pub(crate) fn settled(&self, counters: u32) -> Result<(u64, Vec<CounterRecord>), StoreError> {
        let _committing = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        Ok((self.last_commit()?, self.records(counters)?))
    }

    /// The number of the last commit.
    pub(crate) fn last_commit(&self) -> Result<u64, StoreError> {
        match &self.kind {
            Kind::File(file) => file.last_commit(),
            Kind::Memory(memory) => {
                Ok(memory.lock().unwrap_or_else(|e| e.into_inner()).last_commit)
            }
        }
    }
}

/// Applies `entries` in order to the records `get` reads, writes every touched one back
/// through `put` (stamped with commit `number`), and returns the outcomes of the
/// [`Entry::Apply`]s. The same arithmetic as the counters'.
pub(crate) fn apply_all(
    number: u64,
    entries: &[Entry],
    mut get: impl FnMut(u32) -> CounterRecord,
    mut put: impl FnMut(u32, CounterRecord),
) -> Vec<ApplyOutcome> {
    let mut touched: std::collections::BTreeMap<u32, CounterRecord> = Default::default();
    let mut outcomes = Vec::new();
    for entry in entries {
        match entry {
            Entry::Changes(changes) => {
                for change in changes {
                    let record = touched
                        .entry(change.counter)
                        .or_insert_with(|| get(change.counter));
                    let _ = record.add(change.delta, change.operations);
                }
            }
            Entry::Apply { counter, delta } => {
                let record = touched.entry(*counter).or_insert_with(|| get(*counter));
                outcomes.push(record.apply(*delta));
            }
        }
    }
    for (index, mut record) in touched {
        record.commit = number;
        put(index, record);
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Entry::Changes(vec![change(0, 5, 2), change(2, -1, 1)]),
            Entry::Apply {
                counter: 0,
                delta: Delta::Increment(10),
            },
            Entry::Apply {
                counter: 1,
                delta: Delta::Decrement(1 << 63),
            },
            Entry::Apply {
                counter: 1,
                delta: Delta::Decrement(1),
            },
        ];
        let outcomes = store.commit(4, &entries).unwrap();
        assert_eq!(outcomes[0], Ok(15));
        assert_eq!(outcomes[1], Ok(i64::MIN));
        assert!(outcomes[2].is_err(), "the second would overflow");
        let zero = store.record(0).unwrap();
        assert_eq!((zero.value, zero.operations, zero.commit), (15, 3, 4));
        let one = store.record(1).unwrap();
        assert_eq!((one.operations, one.rejected, one.commit), (1, 1, 4));
        assert_eq!(store.last_commit().unwrap(), 4);
    }
}
