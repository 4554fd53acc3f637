//! What one commit writes, worked out from its entries and what the store holds,
//! before anything is written: the one place where the store's rules live, shared by
//! both backends ([`file`](super::file) and [`memory`](super::memory)), which read
//! through [`Tables`] and then write [`Writes`] in one transaction.
//!
//! **Every entry is idempotent against the store**, so a commit retried after a
//! failure that may or may not have landed (a sync that reported an error after the
//! data reached the disk) applies nothing twice:
//!
//! - a batch at or below its stream's stored number applies nothing;
//! - a client change whose id is stored gets the stored outcome;
//! - an outgoing batch at or below its destination's last number is issued already if
//!   the outbox holds that very batch, and refused otherwise (as is one beyond the next
//!   number: the outbox never has a gap);
//! - an acknowledgement moves the acknowledged mark forward only;
//! - an adoption (see [`Entry::Adopt`]) is numbered and taken once.

use std::collections::BTreeMap;

use shared::counter::{Applied, CounterError};
use shared::host::changes_totals;

use super::error::StoreError;
use super::records::{
    id_bucket, Discrepancy, Entry, IdRecord, InRecord, OutBatch, OutRecord, Sum, MAX_IDS_PER_BUCKET,
};
use crate::counters::record::CounterRecord;

/// What a plan reads, as of the last commit. Each backend implements it over its own
/// tables.
pub(crate) trait Tables {
    /// Counter `index`'s record (zero if the store has none).
    fn counter(&mut self, index: u32) -> Result<CounterRecord, StoreError>;
    /// Incoming stream `key`'s record (zero if the store has none).
    fn stream_in(&mut self, key: &str) -> Result<InRecord, StoreError>;
    /// The record of client change id `id` if it was stored in `bucket`.
    fn client_id(&mut self, bucket: u32, id: &str) -> Result<Option<IdRecord>, StoreError>;
    /// Destination `dest`'s outgoing stream record (zero if the store has none).
    fn stream_out(&mut self, dest: &str) -> Result<OutRecord, StoreError>;
    /// Batch `seq` for `dest`, if the outbox holds it.
    fn outbox_batch(&mut self, dest: &str, seq: u64) -> Result<Option<OutBatch>, StoreError>;
}

/// What became of one entry of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A client change: its answer.
    Applied(Result<Applied, CounterError>),
    /// An outgoing batch: in the outbox (now or before), or refused (it does not follow
    /// the destination's last batch, or another batch holds its number).
    Issued(bool),
    /// Anything else: applied, or held already.
    Done,
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

/// Everything one commit writes.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// Every counter the commit touched, with its new record.
    pub(crate) counters: BTreeMap<u32, CounterRecord>,
    /// Operations applied to counters and refused.
    pub(crate) operations: OperationTally,
    /// Every incoming stream the commit touched, with its new record.
    pub(crate) streams_in: BTreeMap<String, InRecord>,
    /// New outbox rows: destination, batch.
    pub(crate) outbox: Vec<(String, OutBatch)>,
    /// Every destination the commit touched, with its new record.
    pub(crate) streams_out: BTreeMap<String, OutRecord>,
    /// Added to the issued tally.
    pub(crate) issued: Sum,
    /// Client change ids recorded by this commit, with the bucket they go in.
    pub(crate) ids: BTreeMap<String, (u32, IdRecord)>,
}

/// Works out what commit `number` of `entries` writes at store time `now_ms` (see
/// [`super::StoreClock`]), reading through `tables`; `ids_in_bucket` is how many ids
/// the store already holds in the current bucket. Returns the writes and one outcome
/// per entry.
pub(crate) fn plan(
    number: u64,
    now_ms: u64,
    ids_in_bucket: u64,
    entries: &[Entry],
    tables: &mut impl Tables,
) -> Result<(Writes, Vec<Outcome>), StoreError> {
    let mut planner = Planner {
        tables,
        writes: Writes::default(),
        now_ms,
        bucket: id_bucket(now_ms),
        ids_in_bucket,
    };
    let mut outcomes = Vec::with_capacity(entries.len());
    for entry in entries {
        let outcome = match entry {
            Entry::Batch {
                stream,
                seq,
                changes,
            } => planner.batch(stream, *seq, changes)?,
            Entry::Apply { counter, delta, id } => planner.apply(*counter, *delta, id)?,
            Entry::Outgoing { dest, batch } => planner.outgoing(dest, batch)?,
            Entry::Acked { dest, upto } => planner.acked(dest, *upto)?,
            Entry::Adopt(adopt) => planner.adopt(adopt)?,
        };
        outcomes.push(outcome);
    }
    let mut writes = planner.writes;
    for record in writes.counters.values_mut() {
        record.commit = number;
    }
    Ok((writes, outcomes))
}

/// One plan in the making.
struct Planner<'t, T> {
    tables: &'t mut T,
    writes: Writes,
    now_ms: u64,
    bucket: u32,
    ids_in_bucket: u64,
}

impl<T: Tables> Planner<'_, T> {
    /// Counter `index`'s record as this commit leaves it so far.
    fn counter(&mut self, index: u32) -> Result<&mut CounterRecord, StoreError> {
        use std::collections::btree_map::Entry as Slot;
        Ok(match self.writes.counters.entry(index) {
            Slot::Occupied(slot) => slot.into_mut(),
            Slot::Vacant(slot) => slot.insert(self.tables.counter(index)?),
        })
    }

    fn stream_in(&mut self, key: &str) -> Result<&mut InRecord, StoreError> {
        cached(&mut self.writes.streams_in, key, || {
            self.tables.stream_in(key)
        })
    }

    fn stream_out(&mut self, dest: &str) -> Result<&mut OutRecord, StoreError> {
        cached(&mut self.writes.streams_out, dest, || {
            self.tables.stream_out(dest)
        })
    }

    /// Batch `seq` of stream `key`: applied with the stream's new record, unless the
    /// store holds it already.
    fn batch(
        &mut self,
        key: &str,
        seq: u64,
        changes: &[shared::host::Change],
    ) -> Result<Outcome, StoreError> {
        if seq <= self.stream_in(key)?.seq {
            return Ok(Outcome::Done);
        }
        for change in changes {
            let applied = self
                .counter(change.counter)?
                .add(change.delta, change.operations)
                .is_ok();
            self.writes.operations.count(change.operations, applied);
        }
        // The host lets no batch through whose sums overflow; should one come, it
        // counts as the most it could.
        let (value, operations) = changes_totals(changes).unwrap_or((i128::MAX, u64::MAX));
        let record = self.stream_in(key)?;
        record.seq = seq;
        record.value = record.value.saturating_add(saturate(value));
        record.operations = record.operations.saturating_add(operations);
        Ok(Outcome::Done)
    }

    /// A client change with id `id`: the stored outcome if the id is stored, else
    /// applied (and the id stored), unless the ids of this bucket are at their bound.
    fn apply(
        &mut self,
        counter: u32,
        delta: shared::counter::Delta,
        id: &str,
    ) -> Result<Outcome, StoreError> {
        if let Some(earlier) = self.earlier(id)? {
            let outcome = if earlier.counter == counter && earlier.delta == delta {
                earlier.outcome.map(|value| Applied {
                    value,
                    repeated: true,
                })
            } else {
                Err(CounterError::IdReused {
                    id: id.to_string(),
                    earlier: format!("counter {} {:?}", earlier.counter, earlier.delta),
                })
            };
            return Ok(Outcome::Applied(outcome));
        }
        if self.ids_in_bucket >= MAX_IDS_PER_BUCKET {
            return Ok(Outcome::Applied(Err(CounterError::Unavailable(format!(
                "this node keeps at most {MAX_IDS_PER_BUCKET} change ids per day and has that \
                 many; try again later"
            )))));
        }
        let outcome = self.counter(counter)?.apply(delta);
        self.writes.operations.count(1, outcome.is_ok());
        let record = IdRecord {
            counter,
            delta,
            outcome: outcome.clone(),
            at_ms: self.now_ms,
        };
        self.writes
            .ids
            .insert(id.to_string(), (self.bucket, record));
        self.ids_in_bucket += 1;
        Ok(Outcome::Applied(outcome.map(|value| Applied {
            value,
            repeated: false,
        })))
    }

    /// What id `id` was stored with: in this commit, this bucket or the one before.
    fn earlier(&mut self, id: &str) -> Result<Option<IdRecord>, StoreError> {
        if let Some((_, record)) = self.writes.ids.get(id) {
            return Ok(Some(record.clone()));
        }
        for bucket in [self.bucket, self.bucket.saturating_sub(1)] {
            if let Some(record) = self.tables.client_id(bucket, id)? {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// An outgoing batch: into the outbox and the issued tally if it follows its
    /// destination's last batch; issued already if the outbox holds this very batch.
    fn outgoing(&mut self, dest: &str, batch: &OutBatch) -> Result<Outcome, StoreError> {
        let record = *self.stream_out(dest)?;
        if batch.seq <= record.last_seq {
            let same = batch.seq > record.acked
                && self.outbox_batch(dest, batch.seq)?.as_ref() == Some(batch);
            return Ok(Outcome::Issued(same));
        }
        if Some(batch.seq) != record.last_seq.checked_add(1) {
            return Ok(Outcome::Issued(false));
        }
        let record = self.stream_out(dest)?;
        record.last_seq = batch.seq;
        record.issued = record.issued.plus(batch.value, batch.operations);
        self.writes.issued = self.writes.issued.plus(batch.value, batch.operations);
        self.writes.outbox.push((dest.to_string(), batch.clone()));
        Ok(Outcome::Issued(true))
    }

    /// Batch `seq` for `dest` as this commit leaves the outbox so far.
    fn outbox_batch(&mut self, dest: &str, seq: u64) -> Result<Option<OutBatch>, StoreError> {
        let new = self
            .writes
            .outbox
            .iter()
            .find(|(d, b)| d == dest && b.seq == seq);
        match new {
            Some((_, batch)) => Ok(Some(batch.clone())),
            None => self.tables.outbox_batch(dest, seq),
        }
    }

    /// `dest` acknowledged every batch up to `upto` (at most the last one issued).
    fn acked(&mut self, dest: &str, upto: u64) -> Result<Outcome, StoreError> {
        let record = self.stream_out(dest)?;
        record.acked = record.acked.max(upto.min(record.last_seq));
        Ok(Outcome::Done)
    }

    /// A sender's adoption of what its receiver holds: taken once, by its number.
    fn adopt(&mut self, adopt: &super::Adopt) -> Result<Outcome, StoreError> {
        let record = self.stream_out(&adopt.dest)?;
        if adopt.number != record.adoptions.saturating_add(1) {
            return Ok(Outcome::Done);
        }
        record.adoptions = adopt.number;
        // As the sender's lane: a discrepancy leaves an unknown baseline unknown.
        record.known |= !adopt.unvouched;
        let by = Discrepancy::new(adopt.value, adopt.operations);
        record.issued = record.issued.moved_by(by);
        if adopt.unvouched {
            record.unvouched = record.unvouched.plus(by);
        }
        record.last_seq = record.last_seq.max(adopt.upto);
        record.acked = record.acked.max(adopt.upto);
        Ok(Outcome::Done)
    }
}

/// The record of `key` in `map`, read first if this commit has not touched it yet.
fn cached<'m, V>(
    map: &'m mut BTreeMap<String, V>,
    key: &str,
    read: impl FnOnce() -> Result<V, StoreError>,
) -> Result<&'m mut V, StoreError> {
    if !map.contains_key(key) {
        let record = read()?;
        map.insert(key.to_string(), record);
    }
    map.get_mut(key)
        .ok_or_else(|| StoreError::write(format!("the record of '{key}' vanished")))
}

/// `value` within `i64`, saturating at its bounds.
pub(crate) fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// What a commit did: the outcome of each entry, in order, and the new records of the
/// counters and incoming streams it touched.
#[derive(Debug, Default)]
pub(crate) struct CommitOutcome {
    /// One per entry, in order.
    pub(crate) outcomes: Vec<Outcome>,
    /// The new record of every counter the commit changed, by index (each counter is
    /// handed its record: one message per counter per commit, however many changes).
    pub(crate) counters: Vec<(u32, CounterRecord)>,
    /// Operations the commit applied to counters, and refused (they would overflow).
    pub(crate) operations: OperationTally,
    /// The new record of every incoming stream the commit touched.
    pub(crate) streams: Vec<(String, InRecord)>,
}
