//! The store file's storage: redb's own file backend, with a fault hook for tests (the
//! [redo log](super::redo) goes through the same hook).
//!
//! Linux may report a failed sync for writes that did reach the disk, and after such an
//! error nobody can know which; the store must come out exact either way. So the hook
//! makes some syncs fail in each of the ways that can happen ([`DiskFault`]), when armed
//! ([`DiskFaults::arm`], only on a node run with `--enable-fault-injection`): after the
//! real sync (the data landed), instead of it (the data may or may not land), or the
//! commit's first write fails (nothing of it lands). Unarmed, it costs one atomic load
//! per sync and per write.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What redb's backend I/O returns (without its experimental API).
type BackendIoError = std::io::Error;
use tracing::warn;

/// One way an armed hook makes a commit fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskFault {
    /// The sync runs, then reports an I/O error: the commit is on disk.
    AfterSync,
    /// The sync does not run and reports an I/O error: the commit is in the page cache,
    /// and on disk only if the kernel writes it back.
    InsteadOfSync,
    /// The next write reports an I/O error without writing: the commit does not land.
    Write,
}

impl DiskFault {
    /// The faults an armed hook makes, in turn.
    pub(crate) const ALL: [DiskFault; 3] = [
        DiskFault::AfterSync,
        DiskFault::InsteadOfSync,
        DiskFault::Write,
    ];
}

/// What the hook is armed to do: let `pass` more syncs through, then fail the next
/// `fail` commits, taking the kinds in [`DiskFault::ALL`] in turn.
#[derive(Debug, Default)]
struct Armed {
    pass: u64,
    fail: u64,
    next_kind: usize,
    /// A write fault waiting for the next write.
    failing_write: bool,
}

/// The storage faults of one store file (none unless armed); shared by every backend
/// the store opens, so an armed hook outlives the store's reopening.
#[derive(Debug, Default)]
pub(crate) struct DiskFaults {
    /// Faults still to inject (the fast path reads only this).
    pending: AtomicU64,
    armed: Mutex<Armed>,
    /// Faults injected so far.
    injected: AtomicU64,
}

impl DiskFaults {
    /// Arms the hook: `pass` syncs go through, then `fail` commits fail.
    pub(crate) fn arm(&self, pass: u64, fail: u64) {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        *armed = Armed {
            pass,
            fail,
            next_kind: 0,
            failing_write: false,
        };
        self.pending.store(fail, Ordering::Release);
    }

    /// Arms the hook to fail the next commit with `kind` (for the tests).
    #[cfg(test)]
    pub(crate) fn arm_one(&self, kind: DiskFault) {
        self.arm(0, 1);
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        armed.next_kind = DiskFault::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    }

    /// Faults injected so far.
    pub(crate) fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Faults still to inject.
    #[cfg(test)]
    fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// What to do at a sync: `None` to sync as usual.
    pub(super) fn at_sync(&self) -> Option<DiskFault> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if armed.fail == 0 || armed.failing_write {
            return None;
        }
        if armed.pass > 0 {
            armed.pass -= 1;
            return None;
        }
        let kind = DiskFault::ALL[armed.next_kind % DiskFault::ALL.len()];
        armed.next_kind += 1;
        if kind == DiskFault::Write {
            // This sync goes through; the commit after it fails at its first write.
            armed.failing_write = true;
            return None;
        }
        self.injected_one(&mut armed, kind);
        Some(kind)
    }

    /// Whether this write is to fail.
    pub(super) fn at_write(&self) -> bool {
        if self.pending.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if !armed.failing_write {
            return false;
        }
        armed.failing_write = false;
        self.injected_one(&mut armed, DiskFault::Write);
        true
    }

    fn injected_one(&self, armed: &mut Armed, kind: DiskFault) {
        armed.fail -= 1;
        self.pending.store(armed.fail, Ordering::Release);
        let n = self.injected.fetch_add(1, Ordering::Relaxed) + 1;
        warn!(
            ?kind,
            injected = n,
            left = armed.fail,
            "injecting a disk error (fault injection)"
        );
    }
}

fn injected_error() -> BackendIoError {
    std::io::Error::other("injected I/O error (fault injection)")
}

/// redb's file backend behind the fault hook.
#[derive(Debug)]
pub(crate) struct FaultyFile {
    inner: FileBackend,
    faults: Arc<DiskFaults>,
}

impl FaultyFile {
    /// `file` as a redb backend, with `faults`.
    pub(crate) fn new(
        file: std::fs::File,
        faults: Arc<DiskFaults>,
    ) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        match self.faults.at_sync() {
            None => self.inner.sync_data(),
            Some(DiskFault::AfterSync) => {
                self.inner.sync_data()?;
                Err(injected_error())
            }
            Some(_) => Err(injected_error()),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        if self.faults.at_write() {
            return Err(injected_error());
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_hook_lets_syncs_pass_then_fails_each_kind_in_turn() {
        let faults = DiskFaults::default();
        assert_eq!(faults.at_sync(), None, "unarmed");
        faults.arm(2, 3);
        assert_eq!(faults.at_sync(), None);
        assert_eq!(faults.at_sync(), None);
        assert_eq!(faults.at_sync(), Some(DiskFault::AfterSync));
        assert_eq!(faults.at_sync(), Some(DiskFault::InsteadOfSync));
        // A write fault: the next sync passes, the next write fails.
        assert_eq!(faults.at_sync(), None);
        assert!(faults.at_write());
        assert!(!faults.at_write());
        assert_eq!(faults.at_sync(), None, "all three injected");
        assert_eq!((faults.injected(), faults.pending()), (3, 0));
    }
}
