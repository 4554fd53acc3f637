//! The store on disk: one redb file, `store.redb`, in the node's data dir.
//!
//! Tables: `meta` (the node's name, this store's id, the last commit, the issued
//! tally), `counters` (each counter's figures by index), `streams_in` (per incoming
//! stream, its last batch and totals), `outbox` (batches issued and not acknowledged,
//! by destination and number) and `streams_out` (per destination, the last number used
//! and the last acknowledged) and `client_ids` (what became of each client change id, by
//! day and id, so whole days are forgotten in order). The last commit's number is the
//! highest any counter holds. A commit is one redb write transaction, durable (fsynced)
//! when it returns. redb locks the file, so two processes never share it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    day_of, plan, CommitOutcome, Entry, IdRecord, InRecord, OutBatch, OutStream, Recovered,
    StoreError, ID_PRUNE_PER_COMMIT,
};
use crate::counters::record::CounterRecord;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const COUNTERS: TableDefinition<u32, (i64, u64, u64, u64)> = TableDefinition::new("counters");
const STREAMS_IN: TableDefinition<&str, (u64, i64, u64)> = TableDefinition::new("streams_in");
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
const STREAMS_OUT: TableDefinition<&str, (u64, u64)> = TableDefinition::new("streams_out");
const CLIENT_IDS: TableDefinition<(u32, &str), &[u8]> = TableDefinition::new("client_ids");

/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The file's name in the data dir.
pub(crate) const FILE_NAME: &str = "store.redb";

/// An open store file.
///
/// After a failed write (a full disk, say) redb fails every later operation until the
/// database is opened again; so a commit that fails marks the file broken, and the next
/// commit first reopens it (redb recovers the last commit), which succeeds once the
/// disk takes writes again.
pub(crate) struct StoreFile {
    db: RwLock<Option<Database>>,
    dir: PathBuf,
    broken: AtomicBool,
}

impl std::fmt::Debug for StoreFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFile").field("dir", &self.dir).finish()
    }
}

fn write_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

impl StoreFile {
    /// Opens (or creates) node `node`'s store in `dir`, and reads `counters` records;
    /// returns it with the store's id.
    pub(crate) fn open(
        dir: &Path,
        node: &str,
        counters: u32,
    ) -> Result<(Self, u64, Recovered), StoreError> {
        let path = dir.to_path_buf();
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        let unreadable = |e: &dyn std::fmt::Display| StoreError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let file = dir.join(FILE_NAME);
        let existed = file.metadata().is_ok_and(|m| m.len() > 0);
        // A small page cache: the node keeps its counters in memory itself, and the
        // store is written far more than it is read.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&file)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    open_error("another process has it open (is that node running already?)".into())
                }
                other if existed => unreadable(&other),
                other => open_error(other.to_string()),
            })?;

        let found = {
            let read = db.begin_read().map_err(|e| unreadable(&e))?;
            match read.open_table(META) {
                Ok(meta) => meta
                    .get("node")
                    .map_err(|e| unreadable(&e))?
                    .map(|name| String::from_utf8_lossy(name.value()).into_owned()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(unreadable(&e)),
            }
        };
        let fresh = match found {
            Some(found) if found != node => {
                return Err(StoreError::WrongNode {
                    path,
                    found,
                    expected: node.to_string(),
                })
            }
            Some(_) => false,
            None if existed => {
                return Err(unreadable(&"it holds no node's name"));
            }
            None => {
                let write = db.begin_write().map_err(|e| open_error(e.to_string()))?;
                {
                    let mut meta = write
                        .open_table(META)
                        .map_err(|e| open_error(e.to_string()))?;
                    meta.insert("node", node.as_bytes())
                        .map_err(|e| open_error(e.to_string()))?;
                    meta.insert("store_id", fastrand::u64(..).to_be_bytes().as_slice())
                        .map_err(|e| open_error(e.to_string()))?;
                    write
                        .open_table(COUNTERS)
                        .map_err(|e| open_error(e.to_string()))?;
                    write
                        .open_table(STREAMS_IN)
                        .map_err(|e| open_error(e.to_string()))?;
                    write
                        .open_table(OUTBOX)
                        .map_err(|e| open_error(e.to_string()))?;
                    write
                        .open_table(STREAMS_OUT)
                        .map_err(|e| open_error(e.to_string()))?;
                    write
                        .open_table(CLIENT_IDS)
                        .map_err(|e| open_error(e.to_string()))?;
                }
                write.commit().map_err(|e| open_error(e.to_string()))?;
                true
            }
        };

        let store = Self {
            db: RwLock::new(Some(db)),
            dir: path.clone(),
            broken: AtomicBool::new(false),
        };
        let last_commit = store.last_commit().map_err(|e| unreadable(&e))?;
        let records = store.records(counters).map_err(|e| unreadable(&e))?;
        let origin = store
            .meta_u64s::<1>("store_id")
            .map_err(|e| unreadable(&e))?
            .map(|[id]| id)
            .ok_or_else(|| unreadable(&"it holds no store id"))?;
        // Everything else must be readable too: now, rather than at the first commit.
        store.streams_in().map_err(|e| unreadable(&e))?;
        store.outbox().map_err(|e| unreadable(&e))?;
        Ok((
            store,
            origin,
            Recovered {
                records,
                last_commit,
                fresh,
            },
        ))
    }

    /// One commit: see [`super::Store::commit`].
    pub(crate) fn commit(
        &self,
        number: u64,
        now_ms: u64,
        entries: &[Entry],
    ) -> Result<CommitOutcome, StoreError> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let result = self.with_db(|db| Self::commit_to(db, number, now_ms, entries));
        if result.is_err() {
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    /// Opens the file again (see the type's documentation).
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // Closes the file (and its lock) first.
        *db = None;
        let reopened = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(self.dir.join(FILE_NAME))
            .map_err(|e| StoreError::Write(format!("cannot reopen the store: {e}")))?;
        *db = Some(reopened);
        self.broken.store(false, Ordering::Release);
        Ok(())
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.with_db(|db| db.begin_read().map_err(write_error))
    }

    /// Runs `f` on the open database.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        match db.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Write(
                "the store is closed after a failed write (it is reopened at the next commit)"
                    .into(),
            )),
        }
    }

    fn commit_to(
        db: &Database,
        number: u64,
        now_ms: u64,
        entries: &[Entry],
    ) -> Result<CommitOutcome, StoreError> {
        // Only the tables a commit changes are opened: each one written costs pages, and
        // pages cost time in the fsync.
        let has = |f: fn(&Entry) -> bool| entries.iter().any(f);
        let with_batches = has(|e| matches!(e, Entry::Batch { .. }));
        let with_ids = has(|e| matches!(e, Entry::Apply { id: Some(_), .. }));
        let with_outbox = has(|e| matches!(e, Entry::Outgoing { .. } | Entry::Acked { .. }));
        let write = db.begin_write().map_err(write_error)?;
        let outcome = {
            let mut counters = write.open_table(COUNTERS).map_err(write_error)?;
            let mut streams_in = with_batches
                .then(|| write.open_table(STREAMS_IN))
                .transpose()
                .map_err(write_error)?;
            let mut client_ids = with_ids
                .then(|| write.open_table(CLIENT_IDS))
                .transpose()
                .map_err(write_error)?;
            let today = day_of(now_ms);
            let (writes, applied) = plan(
                number,
                now_ms,
                entries,
                |index| {
                    Ok(counters
                        .get(index)
                        .map_err(write_error)?
                        .map(|r| CounterRecord::from_tuple(r.value()))
                        .unwrap_or_default())
                },
                |key| {
                    let Some(streams_in) = streams_in.as_ref() else {
                        return Ok(InRecord::default());
                    };
                    Ok(streams_in
                        .get(key)
                        .map_err(write_error)?
                        .map(|r| InRecord::from_tuple(r.value()))
                        .unwrap_or_default())
                },
                |id| {
                    let Some(client_ids) = client_ids.as_ref() else {
                        return Ok(None);
                    };
                    // Today's ids and yesterday's: see `ID_MEMORY`.
                    for day in [today, today.saturating_sub(1)] {
                        if let Some(bytes) = client_ids.get((day, id)).map_err(write_error)? {
                            let record = shared::codec::decode::<IdRecord>(bytes.value())
                                .map_err(write_error)?;
                            return Ok(Some(record));
                        }
                    }
                    Ok(None)
                },
            )?;
            if let Some(client_ids) = client_ids.as_mut() {
                // Ids of days before yesterday are forgotten, a bounded number per commit.
                let mut forgotten: Vec<(u32, String)> = Vec::new();
                for row in client_ids
                    .range(..(today.saturating_sub(1), ""))
                    .map_err(write_error)?
                {
                    let (key, _) = row.map_err(write_error)?;
                    let (day, id) = key.value();
                    forgotten.push((day, id.to_string()));
                    if forgotten.len() >= ID_PRUNE_PER_COMMIT {
                        break;
                    }
                }
                for (day, id) in &forgotten {
                    client_ids
                        .remove((*day, id.as_str()))
                        .map_err(write_error)?;
                }
                for (id, record) in &writes.ids {
                    let bytes = shared::codec::encode(record).map_err(write_error)?;
                    client_ids
                        .insert((day_of(record.at_ms), id.as_str()), bytes.as_slice())
                        .map_err(write_error)?;
                }
            }
            for (index, record) in &writes.counters {
                counters
                    .insert(*index, record.to_tuple())
                    .map_err(write_error)?;
            }
            if let Some(streams_in) = streams_in.as_mut() {
                for (key, record) in &writes.streams_in {
                    streams_in
                        .insert(key.as_str(), record.to_tuple())
                        .map_err(write_error)?;
                }
            }
            if with_outbox {
                let mut outbox = write.open_table(OUTBOX).map_err(write_error)?;
                let mut streams_out = write.open_table(STREAMS_OUT).map_err(write_error)?;
                let out_record = |table: &redb::Table<&str, (u64, u64)>, dest: &str| {
                    Ok::<_, StoreError>(
                        table
                            .get(dest)
                            .map_err(write_error)?
                            .map_or((0, 0), |r| r.value()),
                    )
                };
                for (dest, batch) in &writes.outbox {
                    let bytes = shared::codec::encode(batch).map_err(write_error)?;
                    outbox
                        .insert((dest.as_str(), batch.seq), bytes.as_slice())
                        .map_err(write_error)?;
                    let (last, acked) = out_record(&streams_out, dest)?;
                    streams_out
                        .insert(dest.as_str(), (last.max(batch.seq), acked))
                        .map_err(write_error)?;
                }
                for (dest, upto) in &writes.acked {
                    let (last, acked) = out_record(&streams_out, dest)?;
                    streams_out
                        .insert(dest.as_str(), (last, acked.max(*upto)))
                        .map_err(write_error)?;
                    outbox
                        .retain_in((dest.as_str(), 0)..=(dest.as_str(), *upto), |_, _| false)
                        .map_err(write_error)?;
                }
            }
            if writes.issued != (0, 0) {
                let mut meta = write.open_table(META).map_err(write_error)?;
                let [value, operations] = read_u64s::<2>(&meta, "issued")?.unwrap_or([0, 0]);
                let value = (value as i64).saturating_add(writes.issued.0);
                let operations = operations.saturating_add(writes.issued.1);
                let bytes = [(value as u64).to_be_bytes(), operations.to_be_bytes()].concat();
                meta.insert("issued", bytes.as_slice())
                    .map_err(write_error)?;
            }
            CommitOutcome {
                applied,
                counters: writes.counters.into_iter().collect(),
                operations: writes.operations,
                streams: writes.streams_in.into_iter().collect(),
            }
        };
        write.commit().map_err(write_error)?;
        Ok(outcome)
    }

    /// The records of counters `0..counters`, in one read.
    pub(crate) fn records(&self, counters: u32) -> Result<Vec<CounterRecord>, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(COUNTERS).map_err(write_error)?;
        (0..counters)
            .map(|index| {
                Ok(table
                    .get(index)
                    .map_err(write_error)?
                    .map(|r| CounterRecord::from_tuple(r.value()))
                    .unwrap_or_default())
            })
            .collect()
    }

    /// Counter `index`'s record.
    pub(crate) fn record(&self, index: u32) -> Result<CounterRecord, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(COUNTERS).map_err(write_error)?;
        Ok(table
            .get(index)
            .map_err(write_error)?
            .map(|r| CounterRecord::from_tuple(r.value()))
            .unwrap_or_default())
    }

    /// The last commit's number: the highest any counter holds (a commit that changed
    /// no counter leaves no number behind, and none is needed).
    pub(crate) fn last_commit(&self) -> Result<u64, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(COUNTERS).map_err(write_error)?;
        let mut last = 0;
        for row in table.iter().map_err(write_error)? {
            let (_, record) = row.map_err(write_error)?;
            last = last.max(CounterRecord::from_tuple(record.value()).commit);
        }
        Ok(last)
    }

    /// Every incoming stream's record.
    pub(crate) fn streams_in(&self) -> Result<Vec<(String, InRecord)>, StoreError> {
        let read = self.begin_read()?;
        let table = read.open_table(STREAMS_IN).map_err(write_error)?;
        table
            .iter()
            .map_err(write_error)?
            .map(|row| {
                let (key, record) = row.map_err(write_error)?;
                Ok((
                    key.value().to_string(),
                    InRecord::from_tuple(record.value()),
                ))
            })
            .collect()
    }

    /// The outbox, per destination, and the issued tally.
    pub(crate) fn outbox(&self) -> Result<super::Outbox, StoreError> {
        let read = self.begin_read()?;
        let mut streams: BTreeMap<String, OutStream> = BTreeMap::new();
        for row in read
            .open_table(STREAMS_OUT)
            .map_err(write_error)?
            .iter()
            .map_err(write_error)?
        {
            let (dest, record) = row.map_err(write_error)?;
            let (last_seq, acked) = record.value();
            let stream = streams.entry(dest.value().to_string()).or_default();
            stream.last_seq = last_seq;
            stream.acked = acked;
        }
        for row in read
            .open_table(OUTBOX)
            .map_err(write_error)?
            .iter()
            .map_err(write_error)?
        {
            let (key, bytes) = row.map_err(write_error)?;
            let (dest, _) = key.value();
            let batch: OutBatch = shared::codec::decode(bytes.value()).map_err(write_error)?;
            streams
                .entry(dest.to_string())
                .or_default()
                .batches
                .push(batch);
        }
        let issued = self
            .meta_u64s::<2>("issued")?
            .map_or((0, 0), |[value, operations]| (value as i64, operations));
        Ok((streams, issued))
    }

    /// Meta entry `key` as `N` big-endian u64s, if present.
    fn meta_u64s<const N: usize>(&self, key: &str) -> Result<Option<[u64; N]>, StoreError> {
        let read = self.begin_read()?;
        let meta = read.open_table(META).map_err(write_error)?;
        read_u64s::<N>(&meta, key)
    }
}

/// Meta entry `key` of `meta` as `N` big-endian u64s, if present (an entry of another
/// length is an error: the store is not what this build wrote).
fn read_u64s<const N: usize>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<[u64; N]>, StoreError> {
    let Some(bytes) = meta.get(key).map_err(write_error)? else {
        return Ok(None);
    };
    let bytes = bytes.value();
    if bytes.len() != 8 * N {
        return Err(StoreError::Write(format!(
            "meta entry '{key}' has {} bytes, not {}",
            bytes.len(),
            8 * N
        )));
    }
    let mut out = [0u64; N];
    for (slot, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *slot = u64::from_be_bytes(word);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::counter::Delta;

    #[test]
    fn what_was_committed_is_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _, recovered) = StoreFile::open(dir.path(), "n", 2).unwrap();
            assert!(recovered.fresh);
            let outcome = store
                .commit(
                    1,
                    0,
                    &[
                        Entry::Apply {
                            counter: 1,
                            delta: Delta::Increment(7),
                            id: Some("i".into()),
                        },
                        Entry::Outgoing {
                            dest: "m".into(),
                            batch: OutBatch {
                                seq: 4,
                                changes: Vec::new(),
                                value: -2,
                                operations: 3,
                            },
                        },
                        Entry::Batch {
                            stream: "m#7".into(),
                            seq: 9,
                            changes: Vec::new(),
                        },
                    ],
                )
                .unwrap();
            assert_eq!(
                outcome.applied[0],
                Ok(shared::counter::Applied {
                    value: 7,
                    repeated: false
                })
            );
        }
        let (store, _, recovered) = StoreFile::open(dir.path(), "n", 3).unwrap();
        assert!(!recovered.fresh);
        assert_eq!(recovered.last_commit, 1);
        let values: Vec<i64> = recovered.records.iter().map(|r| r.value).collect();
        assert_eq!(values, [0, 7, 0]);
        assert_eq!(store.record(1).unwrap().commit, 1);
        let (outbox, issued) = store.outbox().unwrap();
        assert_eq!(
            (issued, outbox["m"].last_seq, outbox["m"].batches.len()),
            ((-2, 3), 4, 1)
        );
        assert_eq!(store.streams_in().unwrap()[0].1.seq, 9);
    }

    #[test]
    fn another_nodes_store_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(StoreFile::open(dir.path(), "a", 1).unwrap());
        let err = StoreFile::open(dir.path(), "b", 1).unwrap_err();
        assert!(matches!(err, StoreError::WrongNode { .. }), "{err}");
        assert!(err.to_string().contains("belongs to node 'a'"), "{err}");

        let garbage = tempfile::tempdir().unwrap();
        std::fs::write(garbage.path().join(FILE_NAME), vec![7u8; 8192]).unwrap();
        let err = StoreFile::open(garbage.path(), "a", 1).unwrap_err();
        assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
        // Never replaced: the file is as it was.
        assert_eq!(
            std::fs::read(garbage.path().join(FILE_NAME)).unwrap(),
            vec![7u8; 8192]
        );
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _open = StoreFile::open(dir.path(), "a", 1).unwrap();
        let err = StoreFile::open(dir.path(), "a", 1).unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
    }
}
