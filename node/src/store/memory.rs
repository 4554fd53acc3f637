//! The store's tables in memory (`--memory-only`): the same commits and answers as the
//! file, through the same [plan](super::plan), and nothing survives the process.

use std::collections::BTreeMap;

use super::error::StoreError;
use super::plan::{plan, CommitOutcome, Tables};
use super::records::{
    id_bucket, Entry, IdRecord, InRecord, OutBatch, OutRecord, OutStream, OutboxRecord, Sum,
    ID_PRUNE_PER_COMMIT,
};
use crate::counters::record::CounterRecord;

/// The tables; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct MemoryTables {
    counters: BTreeMap<u32, CounterRecord>,
    streams_in: BTreeMap<String, InRecord>,
    streams_out: BTreeMap<String, OutRecord>,
    outbox: BTreeMap<(String, u64), OutBatch>,
    issued: Sum,
    /// By bucket and id, as in the file.
    ids: BTreeMap<(u32, String), IdRecord>,
    /// The last commit's number.
    pub(crate) last_commit: u64,
}

impl Tables for &MemoryTables {
    fn counter(&mut self, index: u32) -> Result<CounterRecord, StoreError> {
        Ok(self.record(index))
    }

    fn stream_in(&mut self, key: &str) -> Result<InRecord, StoreError> {
        Ok(self.streams_in.get(key).copied().unwrap_or_default())
    }

    fn client_id(&mut self, bucket: u32, id: &str) -> Result<Option<IdRecord>, StoreError> {
        Ok(self.ids.get(&(bucket, id.to_string())).cloned())
    }

    fn stream_out(&mut self, dest: &str) -> Result<OutRecord, StoreError> {
        Ok(self.streams_out.get(dest).copied().unwrap_or(OutRecord {
            known: true,
            ..OutRecord::default()
        }))
    }

    fn outbox_batch(&mut self, dest: &str, seq: u64) -> Result<Option<OutBatch>, StoreError> {
        Ok(self.outbox.get(&(dest.to_string(), seq)).cloned())
    }
}

impl MemoryTables {
    /// One commit: see `Store::commit`. Returns what it did and how many new
    /// ids it stored.
    pub(crate) fn commit(
        &mut self,
        number: u64,
        now_ms: u64,
        in_bucket: u64,
        entries: &[Entry],
    ) -> Result<(CommitOutcome, u64), StoreError> {
        let (writes, outcomes) = plan(number, now_ms, in_bucket, entries, &mut &*self)?;
        let counters: Vec<(u32, CounterRecord)> = writes.counters.into_iter().collect();
        self.counters.extend(counters.iter().copied());
        let streams: Vec<(String, InRecord)> = writes.streams_in.into_iter().collect();
        self.streams_in.extend(streams.iter().cloned());
        for (dest, batch) in writes.outbox {
            self.outbox.insert((dest, batch.seq), batch);
        }
        for (dest, record) in writes.streams_out {
            self.outbox
                .retain(|(d, seq), _| *d != dest || *seq > record.acked);
            self.streams_out.insert(dest, record);
        }
        let new_ids = writes.ids.len() as u64;
        if new_ids > 0 {
            let before = id_bucket(now_ms).saturating_sub(1);
            let forgotten: Vec<(u32, String)> = self
                .ids
                .keys()
                .take_while(|(bucket, _)| *bucket < before)
                .take(ID_PRUNE_PER_COMMIT)
                .cloned()
                .collect();
            for key in forgotten {
                self.ids.remove(&key);
            }
        }
        for (id, (bucket, record)) in writes.ids {
            self.ids.insert((bucket, id), record);
        }
        self.issued = self
            .issued
            .plus(writes.issued.value, writes.issued.operations);
        self.last_commit = number;
        let outcome = CommitOutcome {
            outcomes,
            counters,
            operations: writes.operations,
            streams,
        };
        Ok((outcome, new_ids))
    }

    /// Counter `index`'s record.
    pub(crate) fn record(&self, index: u32) -> CounterRecord {
        self.counters.get(&index).copied().unwrap_or_default()
    }

    /// The records of counters `indices`.
    pub(crate) fn records(&self, indices: std::ops::Range<u32>) -> Vec<CounterRecord> {
        indices.map(|i| self.record(i)).collect()
    }

    /// Every incoming stream's record.
    pub(crate) fn streams_in(&self) -> Vec<(String, InRecord)> {
        self.streams_in
            .iter()
            .map(|(k, r)| (k.clone(), *r))
            .collect()
    }

    /// The outbox and the issued tally.
    pub(crate) fn outbox(&self) -> OutboxRecord {
        let mut streams: BTreeMap<String, OutStream> = self
            .streams_out
            .iter()
            .map(|(dest, record)| {
                let stream = OutStream {
                    record: *record,
                    batches: Vec::new(),
                };
                (dest.clone(), stream)
            })
            .collect();
        for ((dest, _), batch) in &self.outbox {
            streams
                .entry(dest.clone())
                .or_default()
                .batches
                .push(batch.clone());
        }
        OutboxRecord {
            streams,
            issued: self.issued,
        }
    }
}
