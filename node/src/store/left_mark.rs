//! The mark a node that left the cluster for good leaves in its data dir: such a store
//! is kept for reference and never opened by a node again, and a data slot that holds
//! one is never taken (see [`super::slots`]).

use std::io::Write;
use std::path::Path;

/// The mark's file name, in the data dir.
pub(crate) const LEFT_MARK: &str = "LEFT-FOR-GOOD";

/// Leaves the mark in `data_dir`, saying `why`, on disk before it returns.
pub(crate) fn mark_left(data_dir: &Path, why: &str) -> std::io::Result<()> {
    let mut file = std::fs::File::create(data_dir.join(LEFT_MARK))?;
    file.write_all(why.as_bytes())?;
    file.sync_all()?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// What the mark in `data_dir` says (`Ok(None)`: there is none). A mark that is there
/// but cannot be read is an error: a node must not start on that store.
pub(crate) fn left_for_good(data_dir: &Path) -> std::io::Result<Option<String>> {
    let path = data_dir.join(LEFT_MARK);
    if !path.try_exists()? {
        return Ok(None);
    }
    let bytes = std::fs::read(path)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}
