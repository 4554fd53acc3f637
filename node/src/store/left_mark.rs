//! The mark a node that left the cluster for good leaves in its data dir: such a store
//! is kept for reference and never opened by a node again, and a data slot that holds
//! one is never taken (see [`super::slots`]).

use std::path::Path;

/// The mark's file name, in the data dir.
pub(crate) const LEFT_MARK: &str = "LEFT-FOR-GOOD";

/// Leaves the mark in `data_dir`, saying `why`.
pub(crate) fn mark_left(data_dir: &Path, why: &str) -> std::io::Result<()> {
    std::fs::write(data_dir.join(LEFT_MARK), why)
}

/// What the mark in `data_dir` says, if the node that kept its store there left the
/// cluster for good.
pub(crate) fn left_for_good(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(LEFT_MARK)).ok()
}
