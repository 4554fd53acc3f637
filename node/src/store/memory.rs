//! The store's tables in memory (`--memory-only`): the same commits and answers as the
//! file, and nothing survives the process.

use std::collections::BTreeMap;

use super::{
    day_of, plan, CommitOutcome, Entry, IdRecord, InRecord, OutBatch, OutStream, StoreError,
    ID_PRUNE_PER_COMMIT,
};
use crate::counters::record::CounterRecord;

/// The tables; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct MemoryTables {
    counters: BTreeMap<u32, CounterRecord>,
    streams_in: BTreeMap<String, InRecord>,
    outbox: BTreeMap<String, OutStream>,
    issued: (i64, u64),
    /// By day and id, as in the file.
    ids: BTreeMap<(u32, String), IdRecord>,
    /// The last commit's number.
    pub(crate) last_commit: u64,
}

impl MemoryTables {
    /// One commit: see [`super::Store::commit`].
    pub(crate) fn commit(&mut self, number: u64, now_ms: u64, entries: &[Entry]) -> CommitOutcome {
        let planned = plan(
            number,
            now_ms,
            entries,
            |index| Ok::<_, StoreError>(self.record(index)),
            |key| Ok(self.streams_in.get(key).copied().unwrap_or_default()),
            |id| {
                let today = day_of(now_ms);
                Ok([today, today.saturating_sub(1)]
                    .into_iter()
                    .find_map(|day| self.ids.get(&(day, id.to_string())).cloned()))
            },
        );
        // Reading memory cannot fail.
        let Ok((writes, applied)) = planned else {
            return CommitOutcome::default();
        };
        let counters: Vec<(u32, CounterRecord)> = writes.counters.into_iter().collect();
        self.counters.extend(counters.iter().copied());
        let streams: Vec<(String, InRecord)> = writes.streams_in.into_iter().collect();
        self.streams_in.extend(streams.iter().cloned());
        for (dest, batch) in writes.outbox {
            let stream = self.outbox.entry(dest).or_default();
            stream.last_seq = stream.last_seq.max(batch.seq);
            stream.batches.push(batch);
        }
        for (dest, upto) in writes.acked {
            let stream = self.outbox.entry(dest).or_default();
            stream.acked = stream.acked.max(upto);
            let acked = stream.acked;
            stream.batches.retain(|b: &OutBatch| b.seq > acked);
        }
        let yesterday = day_of(now_ms).saturating_sub(1);
        let forgotten: Vec<(u32, String)> = self
            .ids
            .keys()
            .take_while(|(day, _)| *day < yesterday)
            .take(ID_PRUNE_PER_COMMIT)
            .cloned()
            .collect();
        for key in forgotten {
            self.ids.remove(&key);
        }
        for (id, record) in writes.ids {
            self.ids.insert((day_of(record.at_ms), id), record);
        }
        self.issued.0 = self.issued.0.saturating_add(writes.issued.0);
        self.issued.1 = self.issued.1.saturating_add(writes.issued.1);
        self.last_commit = number;
        CommitOutcome {
            applied,
            counters,
            operations: writes.operations,
            streams,
        }
    }

    /// Counter `index`'s record.
    pub(crate) fn record(&self, index: u32) -> CounterRecord {
        self.counters.get(&index).copied().unwrap_or_default()
    }

    /// The records of counters `0..counters`.
    pub(crate) fn records(&self, counters: u32) -> Vec<CounterRecord> {
        (0..counters).map(|i| self.record(i)).collect()
    }

    /// Every incoming stream's record.
    pub(crate) fn streams_in(&self) -> Vec<(String, InRecord)> {
        self.streams_in
            .iter()
            .map(|(k, r)| (k.clone(), *r))
            .collect()
    }

    /// The outbox and the issued tally.
    pub(crate) fn outbox(&self) -> super::Outbox {
        (self.outbox.clone(), self.issued)
    }
}
