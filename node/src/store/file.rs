//! The store on disk: one redb file, `store.redb`, in the node's data dir, and a lock
//! file, `LOCK`, held for as long as the process has the store open.
//!
//! Tables: `meta` (the node's name, this store's id, the issued tally, the store's
//! clock), `counters` (each counter's figures by index), `streams_in` (per incoming
//! stream, its last batch and totals), `outbox` (batches issued and not acknowledged,
//! by destination and number), `streams_out` (per destination, the last number used
//! and the last acknowledged), `out_totals` (per destination, what was issued to it,
//! its adoptions and what is unvouched) and `client_ids` (what became of each client
//! change id, by bucket of store time and id, so whole buckets are forgotten in order).
//! The last commit's number is the highest any counter holds. A commit is durable once
//! its record in the [redo log](super::redo) is synced; the file takes its writes into
//! one redb write transaction kept open from commit to commit ([`Taken`]), which redb
//! commits when something reads the file, and with a sync at checkpoints.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, TableHandle,
    WriteTransaction,
};
use tracing::{error, info, warn};

use super::error::StoreError;
use super::faults::{DiskFaults, FaultyFile};
use super::plan::{plan, CommitOutcome, Tables, Writes};
use super::records::{
    id_bucket, Discrepancy, Entry, IdRecord, InRecord, OutBatch, OutRecord, OutStream,
    OutboxRecord, Recovered, Sum, ID_PRUNE_PER_COMMIT,
};
use super::redo::{Op, Position, RedoLog, LOG_NAME};
use super::ship::Ship;
use crate::counters::record::CounterRecord;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const COUNTERS: TableDefinition<u32, (i64, u64, u64, u64)> = TableDefinition::new("counters");
const STREAMS_IN: TableDefinition<&str, (u64, i64, u64)> = TableDefinition::new("streams_in");
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
const STREAMS_OUT: TableDefinition<&str, (u64, u64)> = TableDefinition::new("streams_out");
/// Per destination: issued value and operations, adoptions, unvouched value and
/// operations (see [`OutRecord`]).
type OutTotals = (i64, u64, u64, i64, i64);
const OUT_TOTALS: TableDefinition<&str, OutTotals> = TableDefinition::new("out_totals");
const CLIENT_IDS: TableDefinition<(u32, &str), &[u8]> = TableDefinition::new("client_ids");

/// redb's page cache (its default is 1 GiB).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The file's name in the data dir.
pub(crate) const FILE_NAME: &str = "store.redb";

/// The lock file's name in the data dir.
pub(crate) const LOCK_NAME: &str = "LOCK";

/// An open store file.
///
/// After a failed write or read (a full or failing disk) redb fails every later
/// operation until the database is opened again; so an operation that fails marks the
/// file broken, and the next one, a read or a commit, first reopens it (redb recovers
/// the last commit that reached the disk), which succeeds once the disk works again.
/// Before reopening, the file's pages are dropped from the kernel's cache: after a
/// failed sync, Linux may keep pages it could not write as if they were clean, and what
/// the store reads next must be what the disk holds, not what it was asked to hold.
/// The data dir's lock is held throughout, reopening included.
pub(crate) struct StoreFile {
    db: RwLock<Option<Database>>,
    /// The redo log: a commit is durable once it is there (see [`super::redo`]).
    redo: Mutex<RedoLog>,
    /// A checkpoint is owed before the log may take another record (see [`replay`]).
    owed: AtomicBool,
    /// The write transaction that holds the commits the file has taken since redb last
    /// committed (see [`Taken`]). Held by a commit from the start of its plan until it
    /// lands (through the log's sync, and the checkpoint's when one is due); a read
    /// commits it first (without a sync), so whoever heard of a commit reads what it
    /// wrote.
    taken: Mutex<Option<WriteTransaction>>,
    dir: PathBuf,
    broken: AtomicBool,
    faults: Arc<DiskFaults>,
    /// Held (locked) for the life of the store.
    _lock: File,
}

impl Drop for StoreFile {
    /// A clean close: what the file has taken is committed, and redb makes it durable as
    /// it closes. The log's position stays at the last checkpoint: the next start
    /// replays the records since, which the file then holds already (a replay changes
    /// nothing there), and checkpoints.
    fn drop(&mut self) {
        let taken = self.taken.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(write) = taken.take() {
            if let Err(e) = write.commit() {
                warn!(error = %e, "closing the store file, its last commits were not written to it; the redo log holds them for the next start");
            }
        }
    }
}

impl std::fmt::Debug for StoreFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFile").field("dir", &self.dir).finish()
    }
}

fn write_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Write(e.into())
}

fn closed() -> StoreError {
    StoreError::write("the store is closed after a failed operation (it is reopened at the next)")
}

/// The commits the file has taken since redb last committed: one write transaction,
/// kept open from one commit to the next.
///
/// Each commit writes into it, and is durable once its record in the redo log is
/// synced; redb commits the transaction only when something reads the file (without
/// a sync: reads see it, the disk need not) and at a checkpoint (with a sync). So a
/// commit costs redb no commit of its own, and a page that commit after commit changes
/// (a counter's leaf, the ids of the current bucket) is copied once between two reads
/// or checkpoints, not once per commit. A failure drops the transaction, and with it every commit
/// since redb's last: all of them are in the log, which the reopened file replays.
type Taken = Option<WriteTransaction>;

/// The open transaction, or a new one; either way without a sync of its own (a
/// checkpoint asks for one).
fn writer(taken: &mut Taken, db: &Database) -> Result<WriteTransaction, StoreError> {
    if let Some(write) = taken.take() {
        return Ok(write);
    }
    let mut write = db.begin_write().map_err(write_error)?;
    write
        .set_durability(Durability::None)
        .map_err(write_error)?;
    Ok(write)
}

/// A commit that is durable (its record is in the redo log) and that the file has not
/// taken yet: reads wait until it is landed. Dropped without landing (a panic on the
/// way), it marks the file broken: the next operation reopens it and replays the log,
/// which holds the commit.
pub(crate) struct Prepared<'f> {
    file: &'f StoreFile,
    /// The file's transaction with the commit's writes (`None`: committed already).
    write: Option<WriteTransaction>,
    taken: MutexGuard<'f, Taken>,
    /// The file stays open (not reopened) until then.
    db: RwLockReadGuard<'f, Option<Database>>,
}

impl Prepared<'_> {
    /// Gives the transaction back to the file, and lets reads go on; every
    /// [`super::redo::CHECKPOINT_EVERY`] records of the log (or fewer, larger ones),
    /// commits it with a sync instead (a checkpoint, recording where the log's next
    /// record goes). The next commit and reads wait for this; a failure marks the file
    /// broken, and the next operation reopens it and replays the log, which still holds
    /// the commit.
    pub(crate) fn land(mut self) {
        let Some(write) = self.write.take() else {
            return;
        };
        let file = self.file;
        let mut redo = file.redo.lock().unwrap_or_else(|e| e.into_inner());
        if !redo.checkpoint_due() || self.db.is_none() {
            *self.taken = Some(write);
            return;
        }
        let attempt = std::panic::AssertUnwindSafe(|| checkpoint(write, &mut redo));
        let landed = std::panic::catch_unwind(attempt)
            .unwrap_or_else(|_| Err(StoreError::write("a checkpoint panicked")));
        if let Err(e) = landed {
            error!(error = %e, "a checkpoint of the store file failed; the redo log is replayed at the next operation");
            file.failed();
        }
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        if self.write.is_some() {
            self.file.failed();
        }
    }
}

/// Where the store file keeps where its last checkpoint put the redo log: cycle,
/// offset and number of the next record.
const REDO_FROM: &str = "redo_from";

/// When the store was made (wall-clock milliseconds), in `meta`.
const MADE_MS: &str = "made_ms";

/// The last commit's number, in `meta`: strictly increasing from commit to commit, so
/// two copies of one store tell which is further on.
const LAST_COMMIT: &str = "commit";

/// Whether a copy of another node's store is whole (`[1]`) or a state transfer into it
/// is under way (`[0]`); absent in a node's own store.
pub(crate) const COPY_STATE: &str = "copy_state";

/// The `meta` keys that describe this file, not the store it holds: a copy of the
/// store leaves them out.
const FILE_ONLY: [&str; 2] = [REDO_FROM, COPY_STATE];

/// Commits `write` with a sync, carrying where the redo log's next record goes (see
/// [`super::redo`]): the log's records before it are in the file from then on.
fn checkpoint(mut write: WriteTransaction, redo: &mut RedoLog) -> Result<(), StoreError> {
    let at = redo.position();
    write
        .set_durability(Durability::Immediate)
        .map_err(write_error)?;
    let from = [at.cycle, at.offset, at.seq].map(u64::to_be_bytes).concat();
    write
        .open_table(META)
        .map_err(write_error)?
        .insert(REDO_FROM, from.as_slice())
        .map_err(write_error)?;
    write.commit().map_err(write_error)?;
    redo.checkpointed(at);
    Ok(())
}

/// Replays the redo log into `db` from where `db`'s last checkpoint put it, in order,
/// in a commit without a sync: reads see it, and the next commit makes a checkpoint of
/// it first. Returns whether a checkpoint is owed before the log may take another
/// record: after a replay, and for a store that has never had one (a new store, one
/// made before the log).
fn replay(db: &Database, redo: &mut RedoLog) -> Result<bool, StoreError> {
    let from = db
        .begin_read()
        .map_err(write_error)
        .and_then(|read| read_u64s::<3>(&read.open_table(META).map_err(write_error)?, REDO_FROM))?;
    let Some([cycle, offset, seq]) = from else {
        return Ok(true);
    };
    let records = redo.read_from(Position { cycle, offset, seq })?;
    if records.is_empty() {
        return Ok(false);
    }
    let mut write = db.begin_write().map_err(write_error)?;
    write
        .set_durability(Durability::None)
        .map_err(write_error)?;
    for op in records.iter().flatten() {
        apply(&write, op)?;
    }
    write.commit().map_err(write_error)?;
    info!(
        records = records.len(),
        "replayed the redo log into the store file"
    );
    Ok(true)
}

/// One write of the redo log, as the commit made it.
fn apply(write: &WriteTransaction, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::Meta(key, value) => put(write, META, key.as_str(), value.as_slice()),
        Op::Counter(index, record) => put(write, COUNTERS, *index, *record),
        Op::StreamIn(key, record) => put(write, STREAMS_IN, key.as_str(), *record),
        Op::ClientId(bucket, id, record) => {
            put(write, CLIENT_IDS, (*bucket, id.as_str()), record.as_slice())
        }
        Op::ForgetId(bucket, id) => {
            write
                .open_table(CLIENT_IDS)
                .map_err(write_error)?
                .remove((*bucket, id.as_str()))
                .map_err(write_error)?;
            Ok(())
        }
        Op::Outbox(dest, seq, batch) => put(write, OUTBOX, (dest.as_str(), *seq), batch.as_slice()),
        Op::ForgetOutbox(dest, through) => write
            .open_table(OUTBOX)
            .map_err(write_error)?
            .retain_in((dest.as_str(), 0)..=(dest.as_str(), *through), |_, _| false)
            .map_err(write_error),
        Op::StreamOut(dest, marks) => put(write, STREAMS_OUT, dest.as_str(), *marks),
        Op::OutTotals(dest, totals) => put(write, OUT_TOTALS, dest.as_str(), *totals),
    }
}

/// Sets `key` to `value` in `table`.
fn put<'k, 'v, K: redb::Key + 'static, V: redb::Value + 'static>(
    write: &WriteTransaction,
    table: TableDefinition<K, V>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
    value: impl std::borrow::Borrow<V::SelfType<'v>>,
) -> Result<(), StoreError> {
    write
        .open_table(table)
        .map_err(write_error)?
        .insert(key, value)
        .map_err(write_error)?;
    Ok(())
}

/// What opening a store file found.
pub(crate) struct Opened {
    /// The open file.
    pub(crate) file: StoreFile,
    /// The store's id.
    pub(crate) origin: u64,
    /// Its counters and last commit.
    pub(crate) recovered: Recovered,
    /// Where the store's clock stood when it was last written.
    pub(crate) clock_ms: u64,
}

impl StoreFile {
    /// Opens (or creates) node `node`'s store in `dir`, locks the dir, and reads
    /// `counters` records: every table must be readable now, not at the first commit.
    pub(crate) fn open(
        dir: &Path,
        node: &str,
        counters: u32,
        faults: Arc<DiskFaults>,
    ) -> Result<Opened, StoreError> {
        let (db, lock, existed) = open_locked(dir, &faults)?;
        let fresh = claim(&db, dir, node, existed)?;
        // What the disk holds, not what a process before this one asked it to: a
        // record whose sync failed may be in the page cache only.
        drop_cached_pages(&dir.join(LOG_NAME));
        let mut redo =
            RedoLog::open(dir, Arc::clone(&faults)).map_err(|e| StoreError::open(dir, e))?;
        let mut owed = replay(&db, &mut redo)
            .map_err(|e| StoreError::open(dir, format!("cannot replay the redo log: {e}")))?;
        let mut broken = false;
        if owed {
            // Synced now, with where the log goes on: a clean close of the file would
            // make the replayed commits durable without it.
            let synced = db
                .begin_write()
                .map_err(write_error)
                .and_then(|write| checkpoint(write, &mut redo));
            match synced {
                Ok(()) => owed = false,
                // Owed still, and the file reopened at the first read: the disk may
                // take no writes now (full), and reads go on.
                Err(e) => {
                    warn!(error = %e, "the store file could not be synced after opening; it is at the next commit");
                    broken = true;
                }
            }
        }
        let store = Self {
            db: RwLock::new(Some(db)),
            redo: Mutex::new(redo),
            owed: AtomicBool::new(owed),
            taken: Mutex::new(None),
            dir: dir.to_path_buf(),
            broken: AtomicBool::new(broken),
            faults,
            _lock: lock,
        };
        store.recover(counters, fresh)
    }

    /// Reads what the node resumes from: the last commit, every counter's record, the
    /// store's id and clock; and checks the incoming streams and the outbox read too.
    fn recover(self, counters: u32, fresh: bool) -> Result<Opened, StoreError> {
        let unreadable = |e: &dyn std::fmt::Display| unreadable(&self.dir, e);
        let last_commit = self.last_commit().map_err(|e| unreadable(&e))?;
        let records = self.records(0..counters).map_err(|e| unreadable(&e))?;
        let origin = self
            .meta_u64s::<1>("store_id")
            .map_err(|e| unreadable(&e))?
            .map(|[id]| id)
            .ok_or_else(|| unreadable(&"it holds no store id"))?;
        // A store that keeps no clock of its own starts it from the wall clock, once:
        // its ids were kept by wall-clock day, which that continues.
        let clock_ms = self
            .meta_u64s::<1>("clock")
            .map_err(|e| unreadable(&e))?
            .map_or_else(crate::clock::unix_millis, |[ms]| ms);
        self.streams_in().map_err(|e| unreadable(&e))?;
        self.outbox().map_err(|e| unreadable(&e))?;
        Ok(Opened {
            file: self,
            origin,
            recovered: Recovered {
                records,
                last_commit,
                fresh,
            },
            clock_ms,
        })
    }

    /// The file's storage faults.
    pub(crate) fn faults(&self) -> Arc<DiskFaults> {
        Arc::clone(&self.faults)
    }

    /// Whether the next commit, if a small one, is just its record, written and synced:
    /// no reopening of the file after a failure, no checkpoint owed or due, no wrap of
    /// the log. Never waits: a log busy with something else (a replay) says no.
    pub(crate) fn plain_next(&self) -> bool {
        !self.broken.load(Ordering::Acquire)
            && !self.owed.load(Ordering::Acquire)
            && self.redo.try_lock().is_ok_and(|redo| redo.plain_next())
    }

    /// One commit at store time `now_ms`, with `in_bucket` ids held in the current
    /// bucket, up to the moment it is durable: see `Store::commit`. Returns what it did,
    /// how many new ids it stored, and what is left to do: [`Prepared::land`] it.
    pub(crate) fn prepare(
        &self,
        number: u64,
        now_ms: u64,
        in_bucket: u64,
        entries: &[Entry],
        ship: Option<&dyn Ship>,
    ) -> Result<(CommitOutcome, u64, Prepared<'_>), StoreError> {
        let panicked = || StoreError::write("the commit panicked");
        let (db, mut taken) = loop {
            let reopen = std::panic::AssertUnwindSafe(|| self.reopen_if_broken());
            std::panic::catch_unwind(reopen).map_err(|_| panicked())??;
            let db = self.db.read().unwrap_or_else(|e| e.into_inner());
            let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
            // An operation that failed while this one waited dropped the open
            // transaction: what it held is in the log, and comes back with the reopen.
            if !self.broken.load(Ordering::Acquire) {
                break (db, taken);
            }
        };
        let attempt = std::panic::AssertUnwindSafe(|| {
            self.prepare_in((&db, &mut taken), number, now_ms, in_bucket, entries, ship)
        });
        let result = std::panic::catch_unwind(attempt).unwrap_or_else(|_| Err(panicked()));
        match result {
            Ok((outcome, new_ids, write)) => {
                let prepared = Prepared {
                    file: self,
                    write,
                    taken,
                    db,
                };
                Ok((outcome, new_ids, prepared))
            }
            Err(e) => {
                // The open transaction went with it, and the commits it held.
                self.failed();
                Err(e)
            }
        }
    }

    /// A commit failed, or was not landed: the file is reopened, and the log replayed
    /// into it, at the next operation; and a checkpoint is owed before the log takes
    /// another record (a sync that failed may have left the log's header, or a
    /// record, in the page cache only).
    fn failed(&self) {
        self.owed.store(true, Ordering::Release);
        self.broken.store(true, Ordering::Release);
    }

    /// The commit's writes in the file's open transaction, and its record in the redo
    /// log, synced: the transaction is returned, for [`Prepared::land`] to give back. A
    /// commit whose record does not fit the log is committed with a sync here instead
    /// (`None` returned), and the log starts again.
    fn prepare_in(
        &self,
        (db, taken): (&Option<Database>, &mut Taken),
        number: u64,
        now_ms: u64,
        in_bucket: u64,
        entries: &[Entry],
        ship: Option<&dyn Ship>,
    ) -> Result<(CommitOutcome, u64, Option<WriteTransaction>), StoreError> {
        let db = db.as_ref().ok_or_else(closed)?;
        let mut redo = self.redo.lock().unwrap_or_else(|e| e.into_inner());
        if self.owed.load(Ordering::Acquire) {
            checkpoint(writer(taken, db)?, &mut redo)?;
            self.owed.store(false, Ordering::Release);
        }
        let write = writer(taken, db)?;
        let mut tables = FileTables::new(&write);
        let (writes, outcomes) = plan(number, now_ms, in_bucket, entries, &mut tables)?;
        let new_ids = writes.ids.len() as u64;
        tables.write(&writes, now_ms, number)?;
        let ops = std::mem::take(&mut tables.redo);
        drop(tables);
        let outcome = CommitOutcome {
            outcomes,
            counters: writes.counters.into_iter().collect(),
            operations: writes.operations,
            streams: writes.streams_in.into_iter().collect(),
        };
        // Shipped before the local sync, so the copy's round trip and sync run beside
        // it (see crate::copies).
        if let Some(ship) = ship {
            ship.ship(number, &ops);
        }
        if redo.append(&ops)? {
            return Ok((outcome, new_ids, Some(write)));
        }
        // Too large for the log, or the log is full: durable in the file itself, which
        // then holds everything the log did, and the log starts a new lap.
        redo.wrap();
        checkpoint(write, &mut redo)?;
        Ok((outcome, new_ids, None))
    }

    /// [`StoreFile::prepare`] and land it at once.
    #[cfg(test)]
    pub(crate) fn commit(
        &self,
        number: u64,
        now_ms: u64,
        in_bucket: u64,
        entries: &[Entry],
    ) -> Result<(CommitOutcome, u64), StoreError> {
        let (outcome, new_ids, prepared) =
            self.prepare(number, now_ms, in_bucket, entries, None)?;
        prepared.land();
        Ok((outcome, new_ids))
    }

    /// Starts the log's next lap now, with a checkpoint, as a full log does.
    #[cfg(test)]
    fn wrap_log(&self) {
        let db = self.db.read().unwrap();
        let mut taken = self.taken.lock().unwrap();
        let mut redo = self.redo.lock().unwrap();
        redo.wrap();
        let write = writer(&mut taken, db.as_ref().unwrap()).unwrap();
        checkpoint(write, &mut redo).unwrap();
    }

    /// Reopens the file if an earlier operation failed.
    fn reopen_if_broken(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        Ok(())
    }

    /// Opens the file again (see the type's documentation). The data dir's lock stays
    /// held.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        if !self.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        // Closes the file first, dropping the open transaction and the commits it held
        // (taken since redb's last commit): the log holds them, and the replay below puts
        // them back.
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).take();
        *db = None;
        let file = self.dir.join(FILE_NAME);
        drop_cached_pages(&file);
        drop_cached_pages(&self.dir.join(LOG_NAME));
        let reopened = open_database(&file, &self.faults)
            .map_err(|e| StoreError::write(format!("cannot reopen the store: {e}")))?;
        // What the log holds and the file may not (a commit answered but not landed,
        // or one in doubt that reached the log); synced by the next commit, so that
        // reads go on while the disk takes no writes.
        let mut redo = self.redo.lock().unwrap_or_else(|e| e.into_inner());
        let owed = replay(&reopened, &mut redo)?;
        self.owed.fetch_or(owed, Ordering::AcqRel);
        *db = Some(reopened);
        self.broken.store(false, Ordering::Release);
        Ok(())
    }

    /// Runs `f` in a read transaction (reopening the file first if it is broken).
    /// After the commit under way, if there is one, and with every commit the file has
    /// taken (its open transaction committed first, without a sync); reopening the file
    /// first if an earlier operation failed, or one failed while this waited for it (it
    /// dropped the open transaction: the reopened file has its commits back from the
    /// log). An error marks the file broken.
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (read, _db) = loop {
            self.reopen_if_broken()?;
            let db = self.db.read().unwrap_or_else(|e| e.into_inner());
            let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
            if self.broken.load(Ordering::Acquire) {
                continue;
            }
            let begun = std::panic::AssertUnwindSafe(|| {
                let db = db.as_ref().ok_or_else(closed)?;
                if let Some(write) = taken.take() {
                    write.commit().map_err(write_error)?;
                }
                db.begin_read().map_err(write_error)
            });
            match std::panic::catch_unwind(begun)
                .unwrap_or_else(|_| Err(StoreError::write("committing for a read panicked")))
            {
                // The file stays open (not reopened) while it is read.
                Ok(read) => break (read, db),
                Err(e) => {
                    // The open transaction went with it, and the commits it held.
                    self.failed();
                    return Err(e);
                }
            }
        };
        let result = f(&read);
        if result.is_err() {
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    /// The records of counters `indices`, in one read: one pass over the table's
    /// range, a counter the table does not hold yet getting the empty record.
    pub(crate) fn records(&self, indices: Range<u32>) -> Result<Vec<CounterRecord>, StoreError> {
        self.read(|read| {
            let table = read.open_table(COUNTERS).map_err(write_error)?;
            let mut records = Vec::with_capacity(indices.len());
            for row in table.range(indices.clone()).map_err(write_error)? {
                let (index, record) = row.map_err(write_error)?;
                let at = (index.value() - indices.start) as usize;
                records.resize(at, CounterRecord::default());
                records.push(CounterRecord::from_tuple(record.value()));
            }
            records.resize(indices.len(), CounterRecord::default());
            Ok(records)
        })
    }

    /// Counter `index`'s record.
    pub(crate) fn record(&self, index: u32) -> Result<CounterRecord, StoreError> {
        self.read(|read| counter_in(&read.open_table(COUNTERS).map_err(write_error)?, index))
    }

    /// The last commit's number: every commit writes it (a store made by an earlier
    /// version has it only in its counters' records, the highest of which is it).
    pub(crate) fn last_commit(&self) -> Result<u64, StoreError> {
        self.read(|read| {
            let meta = read.open_table(META).map_err(write_error)?;
            if let Some([last]) = read_u64s::<1>(&meta, LAST_COMMIT)? {
                return Ok(last);
            }
            let mut last = 0;
            let table = read.open_table(COUNTERS).map_err(write_error)?;
            for row in table.iter().map_err(write_error)? {
                let (_, record) = row.map_err(write_error)?;
                last = last.max(CounterRecord::from_tuple(record.value()).commit);
            }
            Ok(last)
        })
    }

    /// Every incoming stream's record.
    pub(crate) fn streams_in(&self) -> Result<Vec<(String, InRecord)>, StoreError> {
        self.read(|read| {
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
        })
    }

    /// Client change ids held in `bucket`.
    pub(crate) fn ids_in(&self, bucket: u32) -> Result<u64, StoreError> {
        self.read(|read| {
            let table = read.open_table(CLIENT_IDS).map_err(write_error)?;
            let mut count = 0;
            for row in table.range((bucket, "")..).map_err(write_error)? {
                let (key, _) = row.map_err(write_error)?;
                if key.value().0 != bucket {
                    break;
                }
                count += 1;
            }
            Ok(count)
        })
    }

    /// The outbox, per destination, and the issued tally.
    pub(crate) fn outbox(&self) -> Result<OutboxRecord, StoreError> {
        self.read(|read| {
            let mut streams: BTreeMap<String, OutStream> = BTreeMap::new();
            let out = read.open_table(STREAMS_OUT).map_err(write_error)?;
            let totals = read.open_table(OUT_TOTALS).map_err(write_error)?;
            for row in out.iter().map_err(write_error)? {
                let (dest, _) = row.map_err(write_error)?;
                let record = stream_out_in(&out, &totals, dest.value())?;
                streams.entry(dest.value().to_string()).or_default().record = record;
            }
            let outbox = read.open_table(OUTBOX).map_err(write_error)?;
            for row in outbox.iter().map_err(write_error)? {
                let (key, bytes) = row.map_err(write_error)?;
                let (dest, _) = key.value();
                let batch: OutBatch = shared::codec::decode(bytes.value()).map_err(write_error)?;
                streams
                    .entry(dest.to_string())
                    .or_default()
                    .batches
                    .push(batch);
            }
            let meta = read.open_table(META).map_err(write_error)?;
            let issued = read_u64s::<2>(&meta, "issued")?
                .map_or(Sum::default(), |[value, operations]| {
                    Sum::new(value as i64, operations)
                });
            Ok(OutboxRecord { streams, issued })
        })
    }

    /// Every row of the store, as the writes that make it (the redo log's [`Op`]s),
    /// `meta`'s rows about this file left out: what a copy of the store starts from.
    pub(crate) fn rows(&self) -> Result<Vec<Op>, StoreError> {
        self.read(|read| {
            let mut ops = Vec::new();
            rows_of(read, META, &mut ops, |key, value| {
                (!FILE_ONLY.contains(&key)).then(|| Op::Meta(key.into(), value.to_vec()))
            })?;
            rows_of(read, COUNTERS, &mut ops, |index, record| {
                Some(Op::Counter(index, record))
            })?;
            rows_of(read, STREAMS_IN, &mut ops, |key, record| {
                Some(Op::StreamIn(key.into(), record))
            })?;
            rows_of(read, CLIENT_IDS, &mut ops, |(bucket, id), record| {
                Some(Op::ClientId(bucket, id.into(), record.to_vec()))
            })?;
            rows_of(read, OUTBOX, &mut ops, |(dest, seq), batch| {
                Some(Op::Outbox(dest.into(), seq, batch.to_vec()))
            })?;
            rows_of(read, STREAMS_OUT, &mut ops, |dest, marks| {
                Some(Op::StreamOut(dest.into(), marks))
            })?;
            rows_of(read, OUT_TOTALS, &mut ops, |dest, totals| {
                Some(Op::OutTotals(dest.into(), totals))
            })?;
            Ok(ops)
        })
    }

    /// Applies `ops`, writes another store made (its rows, or its commits' records, in
    /// order), as one commit of this file, durable on return. `reset` first empties
    /// every table but this file's own `meta` rows (a state transfer's first part).
    /// `copy_state` is written with them, if given (see [`COPY_STATE`]).
    pub(crate) fn apply_copied(
        &self,
        ops: &[Op],
        reset: bool,
        copy_state: Option<u64>,
    ) -> Result<(), StoreError> {
        self.reopen_if_broken()?;
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let attempt = std::panic::AssertUnwindSafe(|| {
            self.apply_copied_in(&db, &mut taken, ops, reset, copy_state)
        });
        let result = std::panic::catch_unwind(attempt)
            .unwrap_or_else(|_| Err(StoreError::write("applying a copy panicked")));
        match result {
            Ok(write) => {
                Prepared {
                    file: self,
                    write,
                    taken,
                    db,
                }
                .land();
                Ok(())
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    fn apply_copied_in(
        &self,
        db: &Option<Database>,
        taken: &mut Taken,
        ops: &[Op],
        reset: bool,
        copy_state: Option<u64>,
    ) -> Result<Option<WriteTransaction>, StoreError> {
        let db = db.as_ref().ok_or_else(closed)?;
        let mut redo = self.redo.lock().unwrap_or_else(|e| e.into_inner());
        if self.owed.load(Ordering::Acquire) {
            checkpoint(writer(taken, db)?, &mut redo)?;
            self.owed.store(false, Ordering::Release);
        }
        let write = writer(taken, db)?;
        if reset {
            empty_tables(&write)?;
        }
        let mut record: Vec<Op> = Vec::with_capacity(ops.len() + 1);
        if let Some(state) = copy_state {
            record.push(Op::Meta(COPY_STATE.into(), state.to_be_bytes().to_vec()));
        }
        for op in record.iter().chain(ops) {
            apply(&write, op)?;
        }
        // A reset cannot be a record of the log (replaying it over a later state would
        // undo that): it is made durable in the file itself, as a checkpoint.
        if !reset {
            record.extend_from_slice(ops);
            if redo.append(&record)? {
                return Ok(Some(write));
            }
        }
        redo.wrap();
        checkpoint(write, &mut redo)?;
        Ok(None)
    }

    /// Whether this file holds a whole copy of another node's store ([`COPY_STATE`]).
    pub(crate) fn copy_whole(&self) -> Result<bool, StoreError> {
        Ok(self.meta_u64s::<1>(COPY_STATE)? == Some([1]))
    }

    /// Whether a transfer into this file is under way, or stopped midway.
    #[cfg(test)]
    pub(crate) fn copy_incomplete(&self) -> Result<bool, StoreError> {
        Ok(self.meta_u64s::<1>(COPY_STATE)? == Some([0]))
    }

    /// The id of the store the file holds now (a copy's is its node's), and when that
    /// store was made (0 for a store made before stores said so).
    pub(crate) fn store_id(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let made = self.meta_u64s::<1>(MADE_MS)?.map_or(0, |[ms]| ms);
        Ok(self.meta_u64s::<1>("store_id")?.map(|[id]| (id, made)))
    }

    /// Meta entry `key` as `N` big-endian u64s, if present.
    fn meta_u64s<const N: usize>(&self, key: &str) -> Result<Option<[u64; N]>, StoreError> {
        self.read(|read| read_u64s::<N>(&read.open_table(META).map_err(write_error)?, key))
    }
}

/// Makes `dir`, locks it for this process's life, and opens its database; says
/// whether the file existed (with something in it) before.
fn open_locked(dir: &Path, faults: &Arc<DiskFaults>) -> Result<(Database, File, bool), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::open(dir, e))?;
    let lock = lock_dir(dir)?;
    let file = dir.join(FILE_NAME);
    let existed = file.metadata().is_ok_and(|m| m.len() > 0);
    let db = open_database(&file, faults).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: dir.to_path_buf(),
        },
        other if existed => unreadable(dir, &other),
        other => StoreError::open(dir, other),
    })?;
    Ok((db, lock, existed))
}

/// Checks that the store is node `node`'s (a data dir holds one node's data), and
/// makes the tables it lacks; true if the store is new.
fn claim(db: &Database, dir: &Path, node: &str, existed: bool) -> Result<bool, StoreError> {
    match node_name(db).map_err(|e| unreadable(dir, &e))? {
        Some(found) if found != node => Err(StoreError::WrongNode {
            path: dir.to_path_buf(),
            found,
            expected: node.to_string(),
        }),
        Some(_) => {
            add_missing_tables(db).map_err(|e| StoreError::open(dir, e))?;
            Ok(false)
        }
        None if existed => Err(unreadable(dir, &"it holds no node's name")),
        None => {
            create_tables(db, node).map_err(|e| StoreError::open(dir, e))?;
            Ok(true)
        }
    }
}

/// The name of the node whose store this is; `None` for a store without one.
fn node_name(db: &Database) -> Result<Option<String>, redb::Error> {
    let read = db.begin_read()?;
    match read.open_table(META) {
        Ok(meta) => Ok(meta
            .get("node")?
            .map(|name| String::from_utf8_lossy(name.value()).into_owned())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The store in `dir` exists and cannot be read, for `reason`.
fn unreadable(dir: &Path, reason: &dyn std::fmt::Display) -> StoreError {
    StoreError::Unreadable {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Locks the data dir for this process (an advisory lock on its `LOCK` file, held
/// until the file is closed: when the store is dropped, or the process ends however it
/// ends).
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    match super::lock_file::try_lock(&dir.join(LOCK_NAME)) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(StoreError::InUse {
            path: dir.to_path_buf(),
        }),
        Err(why) => Err(StoreError::open(dir, why)),
    }
}

/// Asks the kernel to drop `file`'s cached pages (those it holds as written: pages
/// still to be written are started on their way instead), so that the next read comes
/// from the disk. Best effort: where it is not supported, the cache stays.
fn drop_cached_pages(file: &Path) {
    if let Ok(handle) = File::open(file) {
        let _ = rustix::fs::fadvise(&handle, 0, None, rustix::fs::Advice::DontNeed);
    }
}

/// Opens (or creates) the database in `file` through the fault hook.
fn open_database(file: &Path, faults: &Arc<DiskFaults>) -> Result<Database, redb::DatabaseError> {
    let handle = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(file)?;
    // A small page cache: the node keeps its counters in memory itself, and the store
    // is written far more than it is read.
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(FaultyFile::new(handle, Arc::clone(faults))?)
}

/// Makes a new store's tables, its name, id and clock.
fn create_tables(db: &Database, node: &str) -> Result<(), redb::Error> {
    let write = db.begin_write()?;
    {
        let mut meta = write.open_table(META)?;
        meta.insert("node", node.as_bytes())?;
        meta.insert("store_id", fastrand::u64(..).to_be_bytes().as_slice())?;
        // When the store was made: of two stores of one node (one made on a blank disk
        // after the other was lost), the later is the node's.
        meta.insert(
            MADE_MS,
            crate::clock::unix_millis().to_be_bytes().as_slice(),
        )?;
        meta.insert(
            "clock",
            crate::clock::unix_millis().to_be_bytes().as_slice(),
        )?;
        open_all_tables(&write)?;
    }
    write.commit()?;
    Ok(())
}

/// Empties every table, `meta` but for this file's own rows.
fn empty_tables(write: &WriteTransaction) -> Result<(), StoreError> {
    write
        .open_table(META)
        .map_err(write_error)?
        .retain(|key, _| FILE_ONLY.contains(&key))
        .map_err(write_error)?;
    write
        .open_table(COUNTERS)
        .map_err(write_error)?
        .retain(|_, _| false)
        .map_err(write_error)?;
    write
        .open_table(STREAMS_IN)
        .map_err(write_error)?
        .retain(|_, _| false)
        .map_err(write_error)?;
    write
        .open_table(CLIENT_IDS)
        .map_err(write_error)?
        .retain(|_, _| false)
        .map_err(write_error)?;
    write
        .open_table(OUTBOX)
        .map_err(write_error)?
        .retain(|_, _| false)
        .map_err(write_error)?;
    write
        .open_table(STREAMS_OUT)
        .map_err(write_error)?
        .retain(|_, _| false)
        .map_err(write_error)?;
    write
        .open_table(OUT_TOTALS)
        .map_err(write_error)?
        .retain(|_, _| false)
        .map_err(write_error)?;
    Ok(())
}

/// Opens (and so makes) every table but `meta`.
fn open_all_tables(write: &WriteTransaction) -> Result<(), redb::TableError> {
    write.open_table(COUNTERS)?;
    write.open_table(STREAMS_IN)?;
    write.open_table(OUTBOX)?;
    write.open_table(STREAMS_OUT)?;
    write.open_table(OUT_TOTALS)?;
    write.open_table(CLIENT_IDS)?;
    Ok(())
}

/// Makes the tables a store made by an earlier version lacks (`out_totals`), in one
/// commit, only if some are missing.
fn add_missing_tables(db: &Database) -> Result<(), redb::Error> {
    let wanted = [
        COUNTERS.name(),
        STREAMS_IN.name(),
        OUTBOX.name(),
        STREAMS_OUT.name(),
        OUT_TOTALS.name(),
        CLIENT_IDS.name(),
    ];
    let present: Vec<String> = db
        .begin_read()?
        .list_tables()?
        .map(|table| table.name().to_string())
        .collect();
    if wanted.iter().all(|name| present.iter().any(|p| p == name)) {
        return Ok(());
    }
    let write = db.begin_write()?;
    open_all_tables(&write)?;
    write.commit()?;
    Ok(())
}

fn counter_in(
    table: &impl ReadableTable<u32, (i64, u64, u64, u64)>,
    index: u32,
) -> Result<CounterRecord, StoreError> {
    Ok(table
        .get(index)
        .map_err(write_error)?
        .map(|r| CounterRecord::from_tuple(r.value()))
        .unwrap_or_default())
}

/// Destination `dest`'s record: its totals are known if the store kept them, or if the
/// stream is new.
fn stream_out_in(
    out: &impl ReadableTable<&'static str, (u64, u64)>,
    totals: &impl ReadableTable<&'static str, OutTotals>,
    dest: &str,
) -> Result<OutRecord, StoreError> {
    let marks = out.get(dest).map_err(write_error)?.map(|r| r.value());
    let sums = totals.get(dest).map_err(write_error)?.map(|r| r.value());
    let (last_seq, acked) = marks.unwrap_or((0, 0));
    let mut record = OutRecord {
        last_seq,
        acked,
        known: marks.is_none() || sums.is_some(),
        ..OutRecord::default()
    };
    if let Some((value, operations, adoptions, unvouched_value, unvouched_operations)) = sums {
        record.issued = Sum::new(value, operations);
        record.adoptions = adoptions;
        record.unvouched = Discrepancy::new(unvouched_value, unvouched_operations);
    }
    Ok(record)
}

/// The tables of one commit, each opened when first needed: a commit opens only the
/// tables it reads or changes (each one written costs pages, and pages cost time in the
/// fsync).
struct FileTables<'txn> {
    write: &'txn WriteTransaction,
    counters: Option<Table<'txn, u32, (i64, u64, u64, u64)>>,
    streams_in: Option<Table<'txn, &'static str, (u64, i64, u64)>>,
    client_ids: Option<Table<'txn, (u32, &'static str), &'static [u8]>>,
    streams_out: Option<Table<'txn, &'static str, (u64, u64)>>,
    out_totals: Option<Table<'txn, &'static str, OutTotals>>,
    outbox: Option<Table<'txn, (&'static str, u64), &'static [u8]>>,
    /// What was written, for the redo log.
    redo: Vec<Op>,
}

/// Table `definition` of `write`, opened into `slot` the first time.
fn opened<'s, 'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Option<Table<'txn, K, V>>,
    write: &'txn WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<&'s mut Table<'txn, K, V>, StoreError> {
    if slot.is_none() {
        *slot = Some(write.open_table(definition).map_err(write_error)?);
    }
    slot.as_mut()
        .ok_or_else(|| StoreError::write("a table did not open"))
}

impl<'txn> FileTables<'txn> {
    fn new(write: &'txn WriteTransaction) -> Self {
        Self {
            write,
            counters: None,
            streams_in: None,
            client_ids: None,
            streams_out: None,
            out_totals: None,
            outbox: None,
            redo: Vec::new(),
        }
    }

    /// Writes what the plan worked out, and commit `number`'s number.
    fn write(&mut self, writes: &Writes, now_ms: u64, number: u64) -> Result<(), StoreError> {
        let write = self.write;
        {
            let bytes = number.to_be_bytes();
            put(write, META, LAST_COMMIT, bytes.as_slice())?;
            self.redo.push(Op::Meta(LAST_COMMIT.into(), bytes.to_vec()));
        }
        if !writes.ids.is_empty() {
            let ids = opened(&mut self.client_ids, write, CLIENT_IDS)?;
            prune_ids(ids, id_bucket(now_ms), &mut self.redo)?;
            for (id, (bucket, record)) in &writes.ids {
                let bytes = shared::codec::encode(record).map_err(write_error)?;
                ids.insert((*bucket, id.as_str()), bytes.as_slice())
                    .map_err(write_error)?;
                self.redo.push(Op::ClientId(*bucket, id.clone(), bytes));
            }
            // The clock goes with the ids it dated: a restart carries on from here.
            let mut meta = write.open_table(META).map_err(write_error)?;
            let clock = now_ms.to_be_bytes();
            meta.insert("clock", clock.as_slice())
                .map_err(write_error)?;
            self.redo.push(Op::Meta("clock".into(), clock.to_vec()));
        }
        if !writes.counters.is_empty() {
            let counters = opened(&mut self.counters, write, COUNTERS)?;
            for (index, record) in &writes.counters {
                counters
                    .insert(*index, record.to_tuple())
                    .map_err(write_error)?;
                self.redo.push(Op::Counter(*index, record.to_tuple()));
            }
        }
        if !writes.streams_in.is_empty() {
            let streams = opened(&mut self.streams_in, write, STREAMS_IN)?;
            for (key, record) in &writes.streams_in {
                streams
                    .insert(key.as_str(), record.to_tuple())
                    .map_err(write_error)?;
                self.redo.push(Op::StreamIn(key.clone(), record.to_tuple()));
            }
        }
        self.write_outgoing(writes)?;
        if writes.issued != Sum::default() {
            let mut meta = write.open_table(META).map_err(write_error)?;
            let [value, operations] = read_u64s::<2>(&meta, "issued")?.unwrap_or([0, 0]);
            let issued = Sum::new(value as i64, operations)
                .plus(writes.issued.value, writes.issued.operations);
            let bytes = [
                (issued.value as u64).to_be_bytes(),
                issued.operations.to_be_bytes(),
            ]
            .concat();
            meta.insert("issued", bytes.as_slice())
                .map_err(write_error)?;
            self.redo.push(Op::Meta("issued".into(), bytes));
        }
        Ok(())
    }

    /// The outbox's new rows, the destinations' new records, and the rows they no
    /// longer need.
    fn write_outgoing(&mut self, writes: &Writes) -> Result<(), StoreError> {
        let write = self.write;
        if !writes.outbox.is_empty() {
            let outbox = opened(&mut self.outbox, write, OUTBOX)?;
            for (dest, batch) in &writes.outbox {
                let bytes = shared::codec::encode(batch).map_err(write_error)?;
                outbox
                    .insert((dest.as_str(), batch.seq), bytes.as_slice())
                    .map_err(write_error)?;
                self.redo.push(Op::Outbox(dest.clone(), batch.seq, bytes));
            }
        }
        for (dest, record) in &writes.streams_out {
            let before = self.stream_out(dest)?;
            if *record == before {
                continue;
            }
            opened(&mut self.streams_out, write, STREAMS_OUT)?
                .insert(dest.as_str(), (record.last_seq, record.acked))
                .map_err(write_error)?;
            self.redo
                .push(Op::StreamOut(dest.clone(), (record.last_seq, record.acked)));
            if record.known {
                let totals = (
                    record.issued.value,
                    record.issued.operations,
                    record.adoptions,
                    record.unvouched.value,
                    record.unvouched.operations,
                );
                opened(&mut self.out_totals, write, OUT_TOTALS)?
                    .insert(dest.as_str(), totals)
                    .map_err(write_error)?;
                self.redo.push(Op::OutTotals(dest.clone(), totals));
            }
            if record.acked > before.acked {
                opened(&mut self.outbox, write, OUTBOX)?
                    .retain_in(
                        (dest.as_str(), 0)..=(dest.as_str(), record.acked),
                        |_, _| false,
                    )
                    .map_err(write_error)?;
                self.redo.push(Op::ForgetOutbox(dest.clone(), record.acked));
            }
        }
        Ok(())
    }
}

/// Removes ids of buckets before the one before `bucket`, a bounded number per commit.
fn prune_ids(
    ids: &mut Table<'_, (u32, &'static str), &'static [u8]>,
    bucket: u32,
    redo: &mut Vec<Op>,
) -> Result<(), StoreError> {
    let mut forgotten: Vec<(u32, String)> = Vec::new();
    for row in ids
        .range(..(bucket.saturating_sub(1), ""))
        .map_err(write_error)?
    {
        let (key, _) = row.map_err(write_error)?;
        let (day, id) = key.value();
        forgotten.push((day, id.to_string()));
        if forgotten.len() >= ID_PRUNE_PER_COMMIT {
            break;
        }
    }
    for (day, id) in forgotten {
        ids.remove((day, id.as_str())).map_err(write_error)?;
        redo.push(Op::ForgetId(day, id));
    }
    Ok(())
}

impl Tables for FileTables<'_> {
    fn counter(&mut self, index: u32) -> Result<CounterRecord, StoreError> {
        counter_in(opened(&mut self.counters, self.write, COUNTERS)?, index)
    }

    fn stream_in(&mut self, key: &str) -> Result<InRecord, StoreError> {
        let table = opened(&mut self.streams_in, self.write, STREAMS_IN)?;
        Ok(table
            .get(key)
            .map_err(write_error)?
            .map(|r| InRecord::from_tuple(r.value()))
            .unwrap_or_default())
    }

    fn client_id(&mut self, bucket: u32, id: &str) -> Result<Option<IdRecord>, StoreError> {
        let table = opened(&mut self.client_ids, self.write, CLIENT_IDS)?;
        match table.get((bucket, id)).map_err(write_error)? {
            Some(bytes) => Ok(Some(
                shared::codec::decode::<IdRecord>(bytes.value()).map_err(write_error)?,
            )),
            None => Ok(None),
        }
    }

    fn stream_out(&mut self, dest: &str) -> Result<OutRecord, StoreError> {
        let write = self.write;
        opened(&mut self.streams_out, write, STREAMS_OUT)?;
        opened(&mut self.out_totals, write, OUT_TOTALS)?;
        match (&self.streams_out, &self.out_totals) {
            (Some(out), Some(totals)) => stream_out_in(out, totals, dest),
            _ => Err(StoreError::write("a table did not open")),
        }
    }

    fn outbox_batch(&mut self, dest: &str, seq: u64) -> Result<Option<OutBatch>, StoreError> {
        let table = opened(&mut self.outbox, self.write, OUTBOX)?;
        match table.get((dest, seq)).map_err(write_error)? {
            Some(bytes) => Ok(Some(
                shared::codec::decode(bytes.value()).map_err(write_error)?,
            )),
            None => Ok(None),
        }
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
        return Err(StoreError::write(format!(
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

/// Every row of `table` that `op` makes a write of, appended to `ops` in key order.
fn rows_of<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
    ops: &mut Vec<Op>,
    op: impl for<'a> Fn(K::SelfType<'a>, V::SelfType<'a>) -> Option<Op>,
) -> Result<(), StoreError> {
    let table = read.open_table(table).map_err(write_error)?;
    for row in table.iter().map_err(write_error)? {
        let (key, value) = row.map_err(write_error)?;
        ops.extend(op(key.value(), value.value()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outcome;
    use shared::counter::Delta;

    fn open(dir: &Path, node: &str, counters: u32) -> Result<Opened, StoreError> {
        StoreFile::open(dir, node, counters, Arc::default())
    }

    /// A change to counter 0 by `by`, as stream `s`'s batch `seq`.
    fn batch(seq: u64, by: i128) -> Entry {
        Entry::Batch {
            stream: "s#1".into(),
            seq,
            changes: vec![shared::host::Change {
                counter: 0,
                delta: by,
                operations: 1,
            }],
        }
    }

    /// The writes each commit ships, collected.
    #[derive(Debug, Default)]
    struct Shipped(std::sync::Mutex<Vec<(u64, Vec<Op>)>>);

    impl Ship for Shipped {
        fn ship(&self, number: u64, ops: &[Op]) {
            self.0.lock().unwrap().push((number, ops.to_vec()));
        }

        fn failed(&self, _number: u64) {}
    }

    /// A copy made from a store's rows, then given each later commit's shipped writes,
    /// in order, holds what the store holds, row for row; again after it starts again
    /// (the writes are in its redo log); and a transfer stopped midway is marked so.
    #[test]
    fn a_copy_from_rows_and_shipped_commits_holds_what_the_store_holds() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = open(a.path(), "n", 2).unwrap().file;
        source.commit(1, 0, 0, &[batch(1, 5)]).unwrap();
        let copy = open(b.path(), "n", 0).unwrap().file;
        copy.apply_copied(&source.rows().unwrap(), true, Some(0))
            .unwrap();
        assert!(copy.copy_incomplete().unwrap() && !copy.copy_whole().unwrap());
        copy.apply_copied(&[], false, Some(1)).unwrap();
        assert!(copy.copy_whole().unwrap());
        let shipped = Shipped::default();
        for (number, by) in [(2, 3), (3, -7)] {
            let (_, _, prepared) = source
                .prepare(number, 0, 0, &[batch(number, by)], Some(&shipped))
                .unwrap();
            prepared.land();
        }
        for (number, ops) in shipped.0.lock().unwrap().iter() {
            assert!(ops.contains(&Op::Meta(LAST_COMMIT.into(), number.to_be_bytes().to_vec())));
            copy.apply_copied(ops, false, None).unwrap();
        }
        assert_eq!(copy.rows().unwrap(), source.rows().unwrap());
        assert_eq!(copy.last_commit().unwrap(), 3);
        drop(copy);
        let reopened = open(b.path(), "n", 1).unwrap();
        assert_eq!(reopened.file.rows().unwrap(), source.rows().unwrap());
        assert_eq!(reopened.recovered.records[0].value, 5 + 3 - 7);
        // A reset empties what the copy held before.
        reopened.file.apply_copied(&[], true, Some(1)).unwrap();
        assert_eq!(reopened.file.last_commit().unwrap(), 0);
    }

    /// A commit is answered once its record is in the redo log, before the file has
    /// it: one that never reached the file (the process died first) is there after a
    /// restart, read from the log, with the stream record that makes it happen once.
    #[test]
    fn a_commit_answered_before_the_file_had_it_is_there_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), "n", 1).unwrap().file;
            store.commit(1, 0, 0, &[batch(1, 5)]).unwrap();
            let (_, _, prepared) = store.prepare(2, 0, 0, &[batch(2, 3)], None).unwrap();
            // Dropped unlanded, its transaction aborted: the file never holds commit 2.
            drop(prepared);
        }
        let opened = open(dir.path(), "n", 1).unwrap();
        assert_eq!(opened.recovered.records[0].value, 8);
        assert_eq!(opened.recovered.last_commit, 2);
        // Synced at once, with the log's position after what was replayed: a clean
        // close of the file cannot make it durable without that.
        assert!(!opened.file.owed.load(Ordering::Acquire));
        assert_eq!(opened.file.redo.lock().unwrap().len(), 0);
        assert_eq!(opened.file.streams_in().unwrap()[0].1.seq, 2);
        // Sent again, it applies nothing.
        opened.file.commit(3, 0, 0, &[batch(2, 3)]).unwrap();
        assert_eq!(opened.file.record(0).unwrap().value, 8);
    }

    /// After any failed commit (here: the log's sync reporting an error after it
    /// synced), a checkpoint is owed at once, and the next commit makes it first: what
    /// the log holds may be in the page cache only, and the file is synced before the
    /// log takes another record. What each commit wrote is there, once.
    #[test]
    fn after_a_failed_commit_a_checkpoint_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), "n", 1).unwrap().file;
            store.commit(1, 0, 0, &[batch(1, 5)]).unwrap();
            assert!(!store.owed.load(Ordering::Acquire));
            store.faults().arm(0, 1);
            assert!(store.commit(2, 0, 0, &[batch(2, 3)]).is_err());
            assert!(store.owed.load(Ordering::Acquire));
            store.commit(2, 0, 0, &[batch(2, 3)]).unwrap();
            assert!(!store.owed.load(Ordering::Acquire));
            // One record since the last checkpoint: the checkpoint came first.
            assert_eq!(store.redo.lock().unwrap().len(), 1);
        }
        let opened = open(dir.path(), "n", 1).unwrap();
        assert_eq!(opened.recovered.records[0].value, 8);
    }

    /// The file takes commits into one open transaction, not a redb commit each: a
    /// read commits it first and sees every commit, and a clean close writes it to the
    /// file (here the log is deleted after the close, and nothing is lost).
    #[test]
    fn commits_wait_in_one_transaction_until_a_read_or_a_close() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), "n", 1).unwrap().file;
            store.commit(1, 0, 0, &[batch(1, 5)]).unwrap();
            store.commit(2, 0, 0, &[batch(2, 3)]).unwrap();
            assert!(store.taken.lock().unwrap().is_some(), "no open transaction");
            assert_eq!(store.record(0).unwrap().value, 8);
            assert!(
                store.taken.lock().unwrap().is_none(),
                "the read left it open"
            );
            store.commit(3, 0, 0, &[batch(3, 2)]).unwrap();
            assert!(store.taken.lock().unwrap().is_some());
        }
        std::fs::remove_file(dir.path().join(LOG_NAME)).unwrap();
        let opened = open(dir.path(), "n", 1).unwrap();
        assert_eq!(opened.recovered.records[0].value, 10);
        assert_eq!(opened.recovered.last_commit, 3);
    }

    /// A failed commit drops the open transaction, and with it the commits the file
    /// took before it (never committed to redb): the reopened file gets them back from
    /// the log, each once.
    #[test]
    fn a_failed_commit_keeps_the_commits_the_file_took_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "n", 1).unwrap().file;
        store.commit(1, 0, 0, &[batch(1, 5)]).unwrap();
        store.commit(2, 0, 0, &[batch(2, 3)]).unwrap();
        assert!(store.taken.lock().unwrap().is_some());
        store.faults().arm(0, 1);
        assert!(store.commit(3, 0, 0, &[batch(3, 1)]).is_err());
        assert!(store.taken.lock().unwrap().is_none());
        // Its sync reported an error after it synced (the first kind of fault): in
        // doubt, and in the log, so it is there too; sent again, it applies nothing.
        assert_eq!(store.record(0).unwrap().value, 9);
        store.commit(3, 0, 0, &[batch(3, 1)]).unwrap();
        store.commit(4, 0, 0, &[batch(4, 1)]).unwrap();
        assert_eq!(store.record(0).unwrap().value, 10);
    }

    /// A read that waits for a commit under way, which then fails and drops the open
    /// transaction (and the commits it held), reopens the file before it reads: it sees
    /// every acknowledged commit, from the log, not redb's older state.
    #[test]
    fn a_read_waiting_for_a_commit_that_fails_sees_every_acknowledged_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "n", 1).unwrap().file;
        store.commit(1, 0, 0, &[batch(1, 5)]).unwrap();
        store.commit(2, 0, 0, &[batch(2, 3)]).unwrap();
        std::thread::scope(|scope| {
            // A commit under way holds the open transaction...
            let mut under_way = store.taken.lock().unwrap();
            let tasks = threads_of_this_process();
            let reader = scope.spawn(|| store.record(0).unwrap().value);
            // ...and the read waits for it (its thread asleep on the lock)...
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !threads_of_this_process()
                .iter()
                .any(|t| !tasks.contains(t) && thread_state(t) == Some('S'))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the reader never waited for the commit under way"
                );
                std::thread::yield_now();
            }
            // ...which fails: its transaction dropped, with commits 1 and 2.
            under_way.take();
            store.failed();
            drop(under_way);
            assert_eq!(reader.join().unwrap(), 8);
        });
    }

    /// This process's threads (their ids).
    fn threads_of_this_process() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A thread's state letter (`R` running, `S` asleep...), if it is still there.
    fn thread_state(tid: &str) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        // After the name, which is in parentheses and may hold spaces.
        stat.rsplit_once(") ")?.1.chars().next()
    }

    /// Every [`super::super::redo::CHECKPOINT_EVERY`] commits the file is synced;
    /// what the log held is in the file.
    #[test]
    fn the_log_starts_again_at_each_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let every = super::super::redo::CHECKPOINT_EVERY;
        let commits = every + 10;
        {
            let store = open(dir.path(), "n", 1).unwrap().file;
            for seq in 1..=commits {
                store.commit(seq, 0, 0, &[batch(seq, 1)]).unwrap();
            }
            let held = store.redo.lock().unwrap().len();
            assert!(held < every, "{held} records held");
            assert!(held > 0);
        }
        let opened = open(dir.path(), "n", 1).unwrap();
        assert_eq!(opened.recovered.records[0].value, commits as i64);
    }

    /// A store file restored from an older copy, beside the log: while the log's lap
    /// still holds every record since the copy's checkpoint, they are replayed, in
    /// order, and nothing goes back; once the log has wrapped, the copy's position finds
    /// another lap's record there, and it opens as the copy.
    #[test]
    fn a_store_file_restored_from_an_older_copy_takes_the_log_only_from_its_lap() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.redb");
        {
            let store = open(dir.path(), "n", 1).unwrap().file;
            store.commit(1, 0, 0, &[batch(1, 5)]).unwrap();
        }
        std::fs::copy(dir.path().join(FILE_NAME), &copy).unwrap();
        {
            let store = open(dir.path(), "n", 1).unwrap().file;
            store.commit(2, 0, 0, &[batch(2, 3)]).unwrap();
        }
        std::fs::copy(&copy, dir.path().join(FILE_NAME)).unwrap();
        {
            let opened = open(dir.path(), "n", 1).unwrap();
            assert_eq!(
                opened.recovered.records[0].value, 8,
                "the lap was not replayed"
            );
            opened.file.wrap_log();
            opened.file.commit(3, 0, 0, &[batch(3, 1)]).unwrap();
        }
        std::fs::copy(&copy, dir.path().join(FILE_NAME)).unwrap();
        let opened = open(dir.path(), "n", 1).unwrap();
        assert_eq!(opened.recovered.records[0].value, 5);
        assert_eq!(opened.file.streams_in().unwrap()[0].1.seq, 1);
    }

    #[test]
    fn what_was_committed_is_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let opened = open(dir.path(), "n", 2).unwrap();
            assert!(opened.recovered.fresh);
            let entries = [
                Entry::Apply {
                    counter: 1,
                    delta: Delta::Increment(7),
                    id: "i".into(),
                },
                Entry::Outgoing {
                    dest: "m".into(),
                    batch: OutBatch {
                        seq: 1,
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
            ];
            let (outcome, new_ids) = opened.file.commit(1, 5000, 0, &entries).unwrap();
            assert_eq!(new_ids, 1);
            assert_eq!(
                outcome.outcomes[0],
                Outcome::Applied(Ok(shared::counter::Applied {
                    value: 7,
                    repeated: false
                }))
            );
        }
        let opened = open(dir.path(), "n", 3).unwrap();
        assert!(!opened.recovered.fresh);
        assert_eq!(opened.recovered.last_commit, 1);
        assert_eq!(
            opened.clock_ms, 5000,
            "the clock stood where the ids were dated"
        );
        let values: Vec<i64> = opened.recovered.records.iter().map(|r| r.value).collect();
        assert_eq!(values, [0, 7, 0]);
        let store = opened.file;
        assert_eq!(store.record(1).unwrap().commit, 1);
        assert_eq!(store.ids_in(0).unwrap(), 1);
        let OutboxRecord {
            streams: outbox,
            issued,
        } = store.outbox().unwrap();
        let m = &outbox["m"];
        assert_eq!(
            (issued, m.record.last_seq, m.batches.len()),
            (Sum::new(-2, 3), 1, 1)
        );
        assert_eq!((m.record.issued, m.record.known), (Sum::new(-2, 3), true));
        assert_eq!(store.streams_in().unwrap()[0].1.seq, 9);
    }

    /// A store made by the version before this one (no `out_totals` table, no clock)
    /// opens; its streams' totals are unknown until a destination's answer sets them.
    #[test]
    fn a_store_of_the_earlier_version_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), "n", 1).unwrap().file;
            let outgoing = Entry::Outgoing {
                dest: "m".into(),
                batch: OutBatch {
                    seq: 1,
                    changes: Vec::new(),
                    value: 4,
                    operations: 2,
                },
            };
            store.commit(1, 0, 0, &[outgoing]).unwrap();
        }
        {
            // Nor a redo log.
            std::fs::remove_file(dir.path().join(super::super::redo::LOG_NAME)).unwrap();
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let write = db.begin_write().unwrap();
            write.delete_table(OUT_TOTALS).unwrap();
            write.open_table(META).unwrap().remove("clock").unwrap();
            write.commit().unwrap();
        }
        let opened = open(dir.path(), "n", 1).unwrap();
        let OutboxRecord {
            streams: outbox,
            issued,
        } = opened.file.outbox().unwrap();
        assert_eq!(issued, Sum::new(4, 2));
        let m = &outbox["m"];
        assert_eq!((m.record.last_seq, m.record.known), (1, false));
        assert_eq!(m.batches.len(), 1);
    }

    #[test]
    fn another_nodes_store_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), "a", 1).unwrap().file);
        let err = open(dir.path(), "b", 1).err().unwrap();
        assert!(matches!(err, StoreError::WrongNode { .. }), "{err}");
        assert!(err.to_string().contains("belongs to node 'a'"), "{err}");

        let garbage = tempfile::tempdir().unwrap();
        std::fs::write(garbage.path().join(FILE_NAME), vec![7u8; 8192]).unwrap();
        let err = open(garbage.path(), "a", 1).err().unwrap();
        assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
        // Never replaced: the file is as it was.
        assert_eq!(
            std::fs::read(garbage.path().join(FILE_NAME)).unwrap(),
            vec![7u8; 8192]
        );
    }

    /// The data dir stays locked for the life of the store, while a failed commit makes
    /// it reopen the file too.
    #[test]
    fn one_process_at_a_time_even_while_the_store_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), "a", 1).unwrap();
        let err = open(dir.path(), "a", 1).err().unwrap();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("another process"), "{err}");
        let store = opened.file;
        let faults = store.faults();
        faults.arm(0, 1);
        let entry = [Entry::Apply {
            counter: 0,
            delta: Delta::Increment(1),
            id: "x".into(),
        }];
        assert!(store.commit(1, 0, 0, &entry).is_err(), "the injected fault");
        // The file is closed now, to be reopened: the dir is still locked.
        let err = open(dir.path(), "a", 1).err().unwrap();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        store.commit(2, 0, 0, &entry).unwrap();
        let err = open(dir.path(), "a", 1).err().unwrap();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        drop(store);
        open(dir.path(), "a", 1).unwrap();
    }

    /// After a failure, a read reopens the file as a commit does: a counter started
    /// during a disk fault reads its record once the disk works again.
    #[test]
    fn reads_reopen_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "a", 1).unwrap().file;
        let entry = [Entry::Apply {
            counter: 0,
            delta: Delta::Increment(3),
            id: "x".into(),
        }];
        store.commit(1, 0, 0, &entry).unwrap();
        store.faults().arm(0, 1);
        assert!(store.commit(2, 0, 0, &[]).is_err());
        assert_eq!(store.record(0).unwrap().value, 3);
        assert_eq!(store.records(0..1).unwrap()[0].value, 3);
    }

    /// A range of records is read in one pass: counters the table does not hold yet
    /// are empty records, each counter once, in order, from anywhere in the table.
    #[test]
    fn records_are_read_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "a", 10).unwrap().file;
        let entries: Vec<_> = [2u32, 5, 6]
            .iter()
            .map(|&counter| Entry::Apply {
                counter,
                delta: Delta::Increment(u64::from(counter) * 10),
                id: format!("id-{counter}"),
            })
            .collect();
        store.commit(1, 0, 0, &entries).unwrap();
        let values = |range| -> Vec<i64> {
            store
                .records(range)
                .unwrap()
                .iter()
                .map(|r| r.value)
                .collect()
        };
        assert_eq!(values(0..10), [0, 0, 20, 0, 0, 50, 60, 0, 0, 0]);
        assert_eq!(values(3..7), [0, 0, 50, 60]);
        assert_eq!(values(6..6), Vec::<i64>::new());
        assert_eq!(values(7..12), [0, 0, 0, 0, 0]);
    }

    /// Each kind of injected fault in turn: a commit reports an error whether or not
    /// it reached the disk, and committing the same entries again until one succeeds
    /// applies them once.
    #[test]
    fn every_kind_of_disk_fault_is_retried_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "a", 1).unwrap().file;
        store.faults().arm(0, 3);
        let entries = |seq: u64| {
            [
                Entry::Batch {
                    stream: "s#1".into(),
                    seq,
                    changes: vec![shared::host::Change {
                        counter: 0,
                        delta: 5,
                        operations: 2,
                    }],
                },
                Entry::Outgoing {
                    dest: "d".into(),
                    batch: OutBatch {
                        seq,
                        changes: Vec::new(),
                        value: 1,
                        operations: 1,
                    },
                },
            ]
        };
        let mut failures = 0;
        for seq in 1..=3 {
            while store.commit(seq, 0, 0, &entries(seq)).is_err() {
                failures += 1;
                assert!(failures <= 3, "commits keep failing");
            }
        }
        // Every kind was injected; the close of the file while reopening it after a
        // failure syncs too (redb makes its commits without a sync durable there), and a
        // fault that lands on that sync fails no commit.
        assert_eq!(store.faults().injected(), 3, "every kind injected");
        assert!(failures >= 2, "only {failures} commits failed");
        let record = store.record(0).unwrap();
        assert_eq!((record.value, record.operations), (15, 6));
        let OutboxRecord {
            streams: outbox,
            issued,
        } = store.outbox().unwrap();
        assert_eq!(issued, Sum::new(3, 3));
        assert_eq!(outbox["d"].batches.len(), 3);
    }
}
