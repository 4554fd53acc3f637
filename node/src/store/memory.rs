//! The store's tables in memory (`--memory-only`): the same commits and answers as the
//! file, and nothing survives the process.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    plan, CommitOutcome, Entry, IdRecord, InRecord, OutBatch, OutStream, StoreError, ID_MEMORY,
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
    ids: BTreeMap<String, IdRecord>,
    /// `(at_ms, id)` of every id in `ids`, oldest first.
    id_times: BTreeSet<(u64, String)>,
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
            |id| Ok(self.ids.get(id).cloned()),
        );
        // Reading memory cannot fail.
        let Ok((writes, applied)) = planned else {
            return CommitOutcome::default();
        };
        self.counters.extend(writes.counters);
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
        let cutoff = now_ms.saturating_sub(ID_MEMORY.as_millis() as u64);
        let forgotten: Vec<(u64, String)> = self
            .id_times
            .iter()
            .take_while(|(at, _)| *at < cutoff)
            .take(ID_PRUNE_PER_COMMIT)
            .cloned()
            .collect();
        for key in forgotten {
            self.ids.remove(&key.1);
            self.id_times.remove(&key);
        }
        for (id, record) in writes.ids {
            self.id_times.insert((record.at_ms, id.clone()));
            self.ids.insert(id, record);
        }
        self.issued.0 = self.issued.0.saturating_add(writes.issued.0);
        self.issued.1 = self.issued.1.saturating_add(writes.issued.1);
        self.last_commit = number;
        CommitOutcome { applied, streams }
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
