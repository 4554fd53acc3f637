//! The redo log in front of the store file: a commit is durable once its writes are
//! one record here, synced; the store file takes them without a sync of its own, and
//! is synced only at a checkpoint, every [`CHECKPOINT_EVERY`] commits or
//! [`CHECKPOINT_BYTES`] of records, whichever comes first.
//!
//! Why: a commit of the store file writes about ten pages (its copy-on-write B-trees
//! and its header) and syncs them; one record written into a file whose blocks are
//! already allocated, and synced, is what a durable change must wait for, and on this
//! kind of machine takes half the time (one `pwrite` and one `fdatasync` that changes
//! no metadata: BENCHMARKS.md).
//!
//! **What a record holds.** The commit's writes as they land in the tables ([`Op`]),
//! each the new value of a key or the removal of keys, never an amount to add. So
//! replaying a record over a store that holds it already, or holds it and more, changes
//! nothing that replaying the records after it does not set again: the log is replayed
//! from the checkpoint's position to its last record, in order, over whatever the
//! store file holds.
//!
//! **Layout.** The file is [`CAPACITY`] bytes of zeros written once (so a record's sync
//! changes no metadata), then a header naming the file; a longer log (an earlier
//! version made 8 MiB ones) is used whole. Records follow from [`RECORDS_START`], each
//! `[length][crc32][cycle][sequence][payload]`. A checkpoint
//! commits, in the store file, where the log's next record goes ([`Position`]: its
//! cycle, offset and number); the log is the run of records from there, of that cycle,
//! numbered one after another, whose checksums hold. A record of another cycle, a torn
//! one, or zeros end it. When the log is full it wraps: a new random cycle from the
//! start, committed by the checkpoint that wraps it, so that no record of the lap
//! before can be taken for one of this lap. A store file restored from a copy older
//! than the log's last wrap finds no record of its cycle where its position says, and
//! opens as the copy.
//!
//! **A failed append** (a write or sync error) leaves the log's tail where it was: the
//! record may have landed or not. The store is reopened and the log read again from
//! the disk (its cached pages dropped) and replayed; a record that landed is kept, one
//! that did not is written over by the next append.
//!
//! **Checkpoint.** A commit of the store file with a sync, carrying the log's position,
//! makes everything before it durable there: one sync, nothing written to the log. A
//! commit whose record would not fit (or is larger than [`MAX_RECORD`]) wraps the log
//! and is such a checkpoint itself. Opening the store makes one at once after a replay
//! (the log read from the disk, its cached pages dropped); after a failure, the next
//! commit makes one first.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::faults::{DiskFault, DiskFaults};

/// The log's file name in the data dir.
pub(crate) const LOG_NAME: &str = "redo.log";

/// A new log file's size, zeros written once. It holds the records between two
/// checkpoints ([`CHECKPOINT_BYTES`] at most, plus one record) nearly four times over, so
/// a wrap, a commit that is a checkpoint of its own, replaces about one checkpoint in
/// four, and under a steady load none more often. Writing and syncing the zeros is
/// what making a store costs: at 8 MiB, 100 nodes started on two vCPUs spent a sixth
/// of their CPU on it (BENCHMARKS.md, `node-bench --nodes`).
pub(crate) const CAPACITY: u64 = 1024 * 1024;

/// Where records start (the header has the first page to itself).
const RECORDS_START: u64 = 4096;

/// The largest record payload; a commit writing more goes to the store file directly,
/// as a checkpoint. The log is for small commits, whose latency is its sync: a large
/// one (a commit under an unbatched overload holds about 20 KB of outgoing batches) is
/// one of many in a group, and writing it twice (the log, then the file at the
/// checkpoint) gains nothing.
pub(crate) const MAX_RECORD: usize = 16 * 1024;

/// Commits between checkpoints, at most. The store file keeps in memory every page
/// its commits changed since its last commit with a sync (redb commits without one at
/// reads, and frees none of their pages until then): up to ten pages or more a commit,
/// its copy-on-write trees. With 128 commits between
/// checkpoints a node under the unbatched soak held about 10 MiB more than without the
/// log; see also [`CHECKPOINT_BYTES`].
pub(crate) const CHECKPOINT_EVERY: u64 = 32;

/// Bytes of records between checkpoints, at most: larger commits change more pages
/// each, and are checkpointed after fewer of them.
pub(crate) const CHECKPOINT_BYTES: u64 = 256 * 1024;

const MAGIC: &[u8; 8] = b"CCREDO02";

/// A record's framing: length, checksum, cycle, sequence.
const FRAME: usize = 4 + 4 + 8 + 8;

/// Where the log's next record goes: what a checkpoint commits in the store file, and
/// where replaying starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) cycle: u64,
    pub(crate) offset: u64,
    pub(crate) seq: u64,
}

/// One write of a commit, as it lands in the store file's tables: a key's new value,
/// or the removal of keys. Replaying it sets the same, whatever the table holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// `meta[key] = value`.
    Meta(String, Vec<u8>),
    /// A counter's record.
    Counter(u32, (i64, u64, u64, u64)),
    /// An incoming stream's record.
    StreamIn(String, (u64, i64, u64)),
    /// A client change id's record, in its bucket.
    ClientId(u32, String, Vec<u8>),
    /// A client change id forgotten.
    ForgetId(u32, String),
    /// An outgoing batch, for a destination, under its number.
    Outbox(String, u64, Vec<u8>),
    /// A destination's outgoing batches up to and including a number, removed.
    ForgetOutbox(String, u64),
    /// A destination's last number and acknowledged mark.
    StreamOut(String, (u64, u64)),
    /// A destination's totals.
    OutTotals(String, (i64, u64, u64, i64, i64)),
}

/// The open log.
#[derive(Debug)]
pub(crate) struct RedoLog {
    file: File,
    /// The file's size: [`CAPACITY`], or more for a log an earlier version made.
    capacity: u64,
    faults: Arc<DiskFaults>,
    /// Where the next record goes.
    at: Position,
    /// Where the last checkpoint put it.
    checkpointed: Position,
}

fn io_error(what: &str, e: std::io::Error) -> StoreError {
    StoreError::write(format!("redo log: {what}: {e}"))
}

impl RedoLog {
    /// Opens the log in `dir`, making it, zero-filled, if it is not there; the next
    /// record goes at the start of a new cycle until [`RedoLog::read_from`] says
    /// otherwise.
    pub(crate) fn open(dir: &Path, faults: Arc<DiskFaults>) -> Result<Self, StoreError> {
        let path = dir.join(LOG_NAME);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("cannot open", e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("cannot read its size", e))?
            .len();
        let capacity = len.max(CAPACITY);
        if len < capacity {
            zero_fill(&file, len, capacity)?;
            // The log's name in the dir is durable before any record is acknowledged.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("cannot sync the data dir", e))?;
        }
        let mut header = [0u8; 8];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| io_error("cannot read its header", e))?;
        if &header != MAGIC {
            if header != [0; 8] {
                return Err(StoreError::write(
                    "redo log: its header is not one this program wrote (another file, or damaged)",
                ));
            }
            file.write_all_at(MAGIC, 0)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_error("cannot write its header", e))?;
        }
        let start = Position {
            cycle: new_cycle(0),
            offset: RECORDS_START,
            seq: 0,
        };
        Ok(Self {
            file,
            capacity,
            faults,
            at: start,
            checkpointed: start,
        })
    }

    /// The records from `from` (where the store file's last checkpoint put the log),
    /// each one's writes, in order, read from the file; the next record goes after
    /// them.
    pub(crate) fn read_from(&mut self, from: Position) -> Result<Vec<Vec<Op>>, StoreError> {
        let mut records = Vec::new();
        let mut at = from;
        loop {
            let mut frame = [0u8; FRAME];
            if at.offset + FRAME as u64 > self.capacity {
                break;
            }
            self.file
                .read_exact_at(&mut frame, at.offset)
                .map_err(|e| io_error("cannot read a record", e))?;
            let len = u32::from_le_bytes(frame[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
            let cycle = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
            let seq = u64::from_le_bytes(frame[16..24].try_into().expect("8 bytes"));
            let fits = len <= MAX_RECORD && at.offset + (FRAME + len) as u64 <= self.capacity;
            if cycle != at.cycle || seq != at.seq || !fits {
                break;
            }
            let mut payload = vec![0u8; len];
            self.file
                .read_exact_at(&mut payload, at.offset + FRAME as u64)
                .map_err(|e| io_error("cannot read a record", e))?;
            if crc != checksum(cycle, seq, &payload) {
                break;
            }
            let ops: Vec<Op> = shared::codec::decode(&payload).map_err(|e| {
                StoreError::write(format!(
                    "redo log: a record whose checksum holds does not decode: {e}"
                ))
            })?;
            records.push(ops);
            at.offset += (FRAME + len) as u64;
            at.seq += 1;
        }
        self.at = at;
        self.checkpointed = from;
        Ok(records)
    }

    /// Appends a record of `ops` and syncs it. `Ok(false)`: it does not fit (the
    /// caller makes the commit a checkpoint that wraps the log instead). An error
    /// leaves the tail where it was (see the module documentation).
    pub(crate) fn append(&mut self, ops: &[Op]) -> Result<bool, StoreError> {
        let payload = shared::codec::encode(&ops)
            .map_err(|e| StoreError::write(format!("redo log: cannot encode: {e}")))?;
        let end = self.at.offset + (FRAME + payload.len()) as u64;
        if payload.len() > MAX_RECORD || end > self.capacity {
            return Ok(false);
        }
        let Position { cycle, offset, seq } = self.at;
        let mut record = Vec::with_capacity(FRAME + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(cycle, seq, &payload).to_le_bytes());
        record.extend_from_slice(&cycle.to_le_bytes());
        record.extend_from_slice(&seq.to_le_bytes());
        record.extend_from_slice(&payload);
        self.write_synced(&record, offset)?;
        self.at.offset = end;
        self.at.seq += 1;
        Ok(true)
    }

    /// Where the next record goes: what a checkpoint commits.
    pub(crate) fn position(&self) -> Position {
        self.at
    }

    /// The next record goes at the start, in a new cycle: for a checkpoint to commit
    /// when the log is full.
    pub(crate) fn wrap(&mut self) {
        self.at = Position {
            cycle: new_cycle(self.at.cycle),
            offset: RECORDS_START,
            seq: 0,
        };
    }

    /// A checkpoint committed [`RedoLog::position`]: the records before it are in the
    /// store file.
    pub(crate) fn checkpointed(&mut self, at: Position) {
        self.checkpointed = at;
    }

    /// Records, and bytes of them, since the last checkpoint.
    fn since_checkpoint(&self) -> (u64, u64) {
        (
            self.at.seq.saturating_sub(self.checkpointed.seq),
            self.at.offset.saturating_sub(self.checkpointed.offset),
        )
    }

    /// Records since the last checkpoint.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.since_checkpoint().0
    }

    /// Whether the next record, if a small one, is all its commit writes and syncs: it
    /// leaves no checkpoint due (see [`RedoLog::checkpoint_due`]) and fits before the
    /// log's end (else its commit wraps the log).
    pub(crate) fn plain_next(&self) -> bool {
        /// The size assumed for the next record.
        const SMALL: u64 = 4096;
        let (records, bytes) = self.since_checkpoint();
        records + 1 < CHECKPOINT_EVERY
            && bytes + SMALL < CHECKPOINT_BYTES
            && self.at.offset + FRAME as u64 + SMALL <= self.capacity
    }

    /// Whether the store file is to be synced now: [`CHECKPOINT_EVERY`] records or
    /// [`CHECKPOINT_BYTES`] since the last checkpoint.
    pub(crate) fn checkpoint_due(&self) -> bool {
        let (records, bytes) = self.since_checkpoint();
        records >= CHECKPOINT_EVERY || bytes >= CHECKPOINT_BYTES
    }

    /// Writes `bytes` at `offset` and syncs them, through the fault hook.
    fn write_synced(&self, bytes: &[u8], offset: u64) -> Result<(), StoreError> {
        if self.faults.at_write() {
            return Err(io_error("write", injected()));
        }
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| io_error("write", e))?;
        match self.faults.at_sync() {
            None => self.file.sync_data().map_err(|e| io_error("sync", e)),
            Some(DiskFault::AfterSync) => {
                self.file.sync_data().map_err(|e| io_error("sync", e))?;
                Err(io_error("sync", injected()))
            }
            Some(_) => Err(io_error("sync", injected())),
        }
    }
}

/// A random cycle: neither `not` nor 0.
fn new_cycle(not: u64) -> u64 {
    loop {
        let cycle = fastrand::u64(..);
        if cycle != not && cycle != 0 {
            return cycle;
        }
    }
}

fn injected() -> std::io::Error {
    std::io::Error::other("injected I/O error (fault injection)")
}

/// A record's checksum: over its cycle, its number and its payload.
fn checksum(cycle: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&cycle.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Writes zeros from `from` to `to` and syncs them (and the file's size), so that a
/// record's sync later changes no metadata.
fn zero_fill(file: &File, from: u64, to: u64) -> Result<(), StoreError> {
    let zeros = vec![0u8; 256 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(|e| match e.kind() {
                ErrorKind::StorageFull => io_error("no room for the log", e),
                _ => io_error("cannot make the log", e),
            })?;
        at += n as u64;
    }
    file.sync_all()
        .map_err(|e| io_error("cannot make the log", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: u32) -> Vec<Op> {
        vec![
            Op::Counter(n, (i64::from(n), 1, 0, u64::from(n))),
            Op::Meta("clock".into(), vec![n as u8; 3]),
        ]
    }

    /// The log in `dir` and its records from `from`.
    fn reopen(dir: &Path, from: Position) -> (RedoLog, Vec<Vec<Op>>) {
        let mut log = RedoLog::open(dir, Arc::default()).unwrap();
        let records = log.read_from(from).unwrap();
        (log, records)
    }

    /// Records come back in order from where a checkpoint put the log; a wrap starts a
    /// new cycle at the start, and the records of the lap before are not taken for
    /// this lap's.
    #[test]
    fn records_are_read_back_from_a_position_until_the_lap_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RedoLog::open(dir.path(), Arc::default()).unwrap();
        let start = log.position();
        for n in 0..3 {
            assert!(log.append(&ops(n)).unwrap());
        }
        let after_one = {
            let (_, records) = reopen(dir.path(), start);
            assert_eq!(records, [ops(0), ops(1), ops(2)]);
            let mut probe = RedoLog::open(dir.path(), Arc::default()).unwrap();
            probe.read_from(start).unwrap();
            probe.position()
        };
        // From a later checkpoint: only what follows it.
        let (_, records) = reopen(dir.path(), after_one);
        assert!(records.is_empty());
        let (mut log, _) = reopen(dir.path(), start);
        log.wrap();
        let lap = log.position();
        assert_ne!(lap.cycle, start.cycle);
        // Shorter than the first record of the lap before: what follows it is that
        // lap's, and ends the log.
        assert!(log.append(&[Op::ForgetId(1, "a".into())]).unwrap());
        drop(log);
        assert_eq!(
            reopen(dir.path(), lap).1,
            [vec![Op::ForgetId(1, "a".into())]]
        );
        // The old lap's position finds another cycle at its start.
        assert!(reopen(dir.path(), start).1.is_empty());
    }

    /// A checkpoint is seen coming one record before it is due, and so is the log's
    /// end.
    #[test]
    fn a_commit_that_is_more_than_its_record_is_seen_coming() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RedoLog::open(dir.path(), Arc::default()).unwrap();
        for n in 0..CHECKPOINT_EVERY as u32 - 2 {
            assert!(log.append(&ops(n)).unwrap());
            assert!(log.plain_next() && !log.checkpoint_due(), "after {n}");
        }
        assert!(log.append(&ops(0)).unwrap());
        assert!(!log.plain_next() && !log.checkpoint_due());
        assert!(log.append(&ops(0)).unwrap());
        assert!(log.checkpoint_due());
        log.checkpointed(log.position());
        assert!(log.plain_next() && !log.checkpoint_due());
        // Near the end of the log: the next commit wraps it.
        log.at.offset = log.capacity - FRAME as u64 - 100;
        log.checkpointed(log.position());
        assert!(!log.plain_next());
    }

    /// A torn or damaged record ends the log there, and the next record goes in its
    /// place.
    #[test]
    fn a_damaged_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RedoLog::open(dir.path(), Arc::default()).unwrap();
        let start = log.position();
        let mut offsets = Vec::new();
        for n in 0..3 {
            offsets.push(log.position().offset);
            log.append(&ops(n)).unwrap();
        }
        drop(log);
        let file = File::options()
            .write(true)
            .open(dir.path().join(LOG_NAME))
            .unwrap();
        file.write_all_at(&[0xff], offsets[2] + FRAME as u64 + 1)
            .unwrap();
        let (mut log, records) = reopen(dir.path(), start);
        assert_eq!(records, [ops(0), ops(1)]);
        log.append(&ops(9)).unwrap();
        drop(log);
        assert_eq!(reopen(dir.path(), start).1, [ops(0), ops(1), ops(9)]);
    }

    /// A record that fails to land leaves the tail where it was, and the next one,
    /// the commit tried again, goes over it; one too large does not go in at all.
    #[test]
    fn a_failed_append_is_written_over_and_a_large_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(DiskFaults::default());
        let mut log = RedoLog::open(dir.path(), Arc::clone(&faults)).unwrap();
        let start = log.position();
        log.append(&ops(0)).unwrap();
        let tail = log.position();
        // The sync fails after syncing, then instead of it: nothing moves.
        faults.arm(0, 3);
        assert!(log.append(&ops(1)).is_err());
        assert!(log.append(&ops(1)).is_err());
        assert_eq!(log.position(), tail);
        // The write fault's turn: this sync goes through, the next write fails.
        assert!(log.append(&ops(1)).unwrap());
        let tail = log.position();
        assert!(log.append(&ops(2)).is_err());
        assert_eq!(log.position(), tail);
        assert!(log.append(&ops(2)).unwrap());
        assert_eq!(faults.injected(), 3);
        let huge = vec![Op::Meta("x".into(), vec![1; MAX_RECORD + 1])];
        assert!(!log.append(&huge).unwrap());
        drop(log);
        assert_eq!(reopen(dir.path(), start).1, [ops(0), ops(1), ops(2)]);
    }

    /// A log longer than a new one (an earlier version made it) is used whole: the
    /// records beyond [`CAPACITY`] are read back and the log fills it before wrapping.
    #[test]
    fn a_longer_log_from_before_is_used_whole() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedoLog::open(dir.path(), Arc::default()).unwrap());
        let file = File::options()
            .write(true)
            .open(dir.path().join(LOG_NAME))
            .unwrap();
        file.set_len(8 * CAPACITY).unwrap();
        drop(file);
        let mut log = RedoLog::open(dir.path(), Arc::default()).unwrap();
        assert_eq!(log.capacity, 8 * CAPACITY);
        log.at.offset = 5 * CAPACITY;
        let from = log.position();
        log.checkpointed(from);
        for n in 0..3 {
            assert!(log.append(&ops(n)).unwrap());
        }
        assert!(log.plain_next());
        drop(log);
        assert_eq!(reopen(dir.path(), from).1, [ops(0), ops(1), ops(2)]);
        let len = std::fs::metadata(dir.path().join(LOG_NAME)).unwrap().len();
        assert_eq!(len, 8 * CAPACITY);
    }

    /// A file that is not a log is refused, not written over.
    #[test]
    fn a_header_of_something_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_NAME), b"not a redo log at all").unwrap();
        let err = RedoLog::open(dir.path(), Arc::default()).unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
    }
}
