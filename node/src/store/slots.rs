//! Data slots: one directory shared by the replicas of a service (a Compose service
//! scaled with `--scale`, whose replicas all mount one volume and are told nothing
//! that tells them apart), in which each running node holds a slot of its own.
//!
//! A node given `--data-slots DIR` takes the first slot `ROLE-1`, `ROLE-2`, ... under
//! `DIR` that no running node holds, and is named after it: its store is
//! `DIR/ROLE-N`, held by an advisory lock on `DIR/ROLE-N.slot` for as long as the
//! process lives. The kernel drops the lock when the process ends, however it ends, so
//! a replica that replaces one that stopped (or crashed, or was scaled away) takes the
//! free slot, and with it that node's name and counts. Two replicas starting at once
//! cannot take one slot: the lock decides. A slot whose node left the cluster for good
//! (its directory holds [`LEFT_MARK`](super::left_mark::LEFT_MARK)) is never taken: its
//! name is not used again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StoreError;

/// The most slots one directory offers: far beyond any replica count, a bound on the
/// files a node tries before it says they are all taken.
pub(crate) const MAX_SLOTS: u32 = 1_024;

/// A slot this node holds: its number, the name it gives the node, and its store's
/// directory. The slot stays held while any clone of it lives.
#[derive(Clone)]
pub(crate) struct Slot {
    /// 1, 2, ...
    pub(crate) number: u32,
    /// `ROLE-N`: the node's name.
    pub(crate) name: String,
    /// `DIR/ROLE-N`: the node's data dir.
    pub(crate) dir: PathBuf,
    /// The locked `DIR/ROLE-N.slot`.
    _held: Arc<File>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("number", &self.number)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Takes the first free slot named `prefix-N` under `dir` (made if missing).
pub(crate) fn claim(dir: &Path, prefix: &str) -> Result<Slot, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::open(dir, e))?;
    for number in 1..=MAX_SLOTS {
        let name = format!("{prefix}-{number}");
        let held = super::lock_file::try_lock(&dir.join(format!("{name}.slot")))
            .map_err(|why| StoreError::open(dir, why))?;
        let Some(file) = held else {
            continue;
        };
        // Left for good (or a mark that cannot be read): never taken again.
        if !matches!(super::left_mark::left_for_good(&dir.join(&name)), Ok(None)) {
            continue;
        }
        // A node given the slot's directory as its --data-dir (not taking the slot)
        // may hold its store: then the slot is not free either.
        let store_lock = dir.join(&name).join(super::file::LOCK_NAME);
        let store_free = !store_lock.exists()
            || super::lock_file::try_lock(&store_lock)
                .map_err(|why| StoreError::open(dir, why))?
                .is_some();
        if store_free {
            return Ok(Slot {
                number,
                dir: dir.join(&name),
                name,
                _held: Arc::new(file),
            });
        }
    }
    Err(StoreError::open(
        dir,
        format!("all {MAX_SLOTS} slots are held by running nodes or were left for good"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_take_distinct_slots_and_a_freed_slot_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim(dir.path(), "worker").unwrap();
        let second = claim(dir.path(), "worker").unwrap();
        let third = claim(dir.path(), "worker").unwrap();
        assert_eq!(
            [first.number, second.number, third.number],
            [1, 2, 3],
            "each held slot is skipped"
        );
        assert_eq!(second.name, "worker-2");
        assert_eq!(second.dir, dir.path().join("worker-2"));
        // A clone holds the slot as well: only when the last goes is it free.
        let kept = second.clone();
        drop(second);
        assert_eq!(claim(dir.path(), "worker").unwrap().number, 4);
        drop(kept);
        let again = claim(dir.path(), "worker").unwrap();
        assert_eq!((again.number, again.name.as_str()), (2, "worker-2"));
        // Each role has slots of its own.
        assert_eq!(claim(dir.path(), "coordinator").unwrap().number, 1);
    }

    /// A node that was given a slot's directory as its `--data-dir` (a named worker
    /// beside scaled ones) holds that store without the slot: the slot is skipped.
    #[test]
    fn a_slot_whose_store_another_node_holds_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("worker-1")).unwrap();
        let lock = dir
            .path()
            .join("worker-1")
            .join(crate::store::file::LOCK_NAME);
        let _named = super::super::lock_file::try_lock(&lock).unwrap().unwrap();
        assert_eq!(claim(dir.path(), "worker").unwrap().name, "worker-2");
    }

    /// A slot whose node left the cluster for good is passed over: its name and store
    /// are not used again.
    #[test]
    fn a_slot_whose_node_left_for_good_is_never_taken() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("worker-1")).unwrap();
        crate::store::left_mark::mark_left(&dir.path().join("worker-1"), "gone").unwrap();
        assert_eq!(claim(dir.path(), "worker").unwrap().name, "worker-2");
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let err = claim(&file.join("slots"), "worker").unwrap_err();
        assert!(
            err.to_string().contains("a-file/slots"),
            "the error names the directory: {err}"
        );
    }
}
