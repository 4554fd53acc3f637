//! Advisory locks on files, for the data dir (one process per store) and the data
//! slots (one node per slot): held while the returned [`File`] is open, dropped by the
//! kernel when the process ends however it ends.

use std::fs::{File, TryLockError};
use std::path::Path;

/// Opens (or makes) `path` and locks it: the open file if this process now holds the
/// lock, `None` if another holds it, or what went wrong.
pub(super) fn try_lock(path: &Path) -> Result<Option<File>, String> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}
