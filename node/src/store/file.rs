//! The store on disk: one redb file, `store.redb`, in the node's data dir.
//!
//! Tables: `meta` (the node's name, this store's id, the last commit) and `counters`
//! (each counter's figures by index). A commit is one redb write transaction, durable
//! (fsynced) when it returns. redb locks the file, so two processes never share it.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{apply_all, ApplyOutcome, Entry, Recovered, StoreError};
use crate::counters::record::CounterRecord;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const COUNTERS: TableDefinition<u32, (i64, u64, u64, u64)> = TableDefinition::new("counters");

/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The file's name in the data dir.
pub(crate) const FILE_NAME: &str = "store.redb";

/// An open store file.
pub(crate) struct StoreFile {
    db: Database,
    dir: PathBuf,
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
    /// Opens (or creates) node `node`'s store in `dir`, and reads `counters` records.
    pub(crate) fn open(
        dir: &Path,
        node: &str,
        counters: u32,
    ) -> Result<(Self, Recovered), StoreError> {
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
                    meta.insert("last_commit", 0u64.to_be_bytes().as_slice())
                        .map_err(|e| open_error(e.to_string()))?;
                    write
                        .open_table(COUNTERS)
                        .map_err(|e| open_error(e.to_string()))?;
                }
                write.commit().map_err(|e| open_error(e.to_string()))?;
                true
            }
        };

        let store = Self {
            db,
            dir: path.clone(),
        };
        let last_commit = store.last_commit().map_err(|e| unreadable(&e))?;
        let records = store.records(counters).map_err(|e| unreadable(&e))?;
        Ok((
            store,
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
        entries: &[Entry],
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        let write = self.db.begin_write().map_err(write_error)?;
        let outcomes = {
            let mut table = write.open_table(COUNTERS).map_err(write_error)?;
            let mut failure = None;
            let mut updates = Vec::new();
            let outcomes = apply_all(
                number,
                entries,
                |index| match table.get(index) {
                    Ok(found) => found
                        .map(|r| CounterRecord::from_tuple(r.value()))
                        .unwrap_or_default(),
                    Err(e) => {
                        failure.get_or_insert(write_error(e));
                        CounterRecord::default()
                    }
                },
                |index, record| updates.push((index, record)),
            );
            if let Some(failure) = failure {
                return Err(failure);
            }
            for (index, record) in updates {
                table
                    .insert(index, record.to_tuple())
                    .map_err(write_error)?;
            }
            let mut meta = write.open_table(META).map_err(write_error)?;
            meta.insert("last_commit", number.to_be_bytes().as_slice())
                .map_err(write_error)?;
            outcomes
        };
        write.commit().map_err(write_error)?;
        Ok(outcomes)
    }

    /// The records of counters `0..counters`, in one read.
    pub(crate) fn records(&self, counters: u32) -> Result<Vec<CounterRecord>, StoreError> {
        let read = self.db.begin_read().map_err(write_error)?;
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
        let read = self.db.begin_read().map_err(write_error)?;
        let table = read.open_table(COUNTERS).map_err(write_error)?;
        Ok(table
            .get(index)
            .map_err(write_error)?
            .map(|r| CounterRecord::from_tuple(r.value()))
            .unwrap_or_default())
    }

    /// The last commit's number.
    pub(crate) fn last_commit(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read().map_err(write_error)?;
        let meta = read.open_table(META).map_err(write_error)?;
        let bytes = meta.get("last_commit").map_err(write_error)?;
        Ok(bytes
            .and_then(|b| <[u8; 8]>::try_from(b.value()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::counter::Delta;

    #[test]
    fn what_was_committed_is_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, recovered) = StoreFile::open(dir.path(), "n", 2).unwrap();
            assert!(recovered.fresh);
            let outcomes = store
                .commit(
                    1,
                    &[Entry::Apply {
                        counter: 1,
                        delta: Delta::Increment(7),
                    }],
                )
                .unwrap();
            assert_eq!(outcomes, [Ok(7)]);
        }
        let (store, recovered) = StoreFile::open(dir.path(), "n", 3).unwrap();
        assert!(!recovered.fresh);
        assert_eq!(recovered.last_commit, 1);
        let values: Vec<i64> = recovered.records.iter().map(|r| r.value).collect();
        assert_eq!(values, [0, 7, 0]);
        assert_eq!(store.record(1).unwrap().commit, 1);
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
        let (_open, _) = StoreFile::open(dir.path(), "a", 1).unwrap();
        let err = StoreFile::open(dir.path(), "a", 1).unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
    }
}
