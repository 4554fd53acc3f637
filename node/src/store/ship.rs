//! Where each commit's writes go besides this node's disk: the store's copy on another
//! node (see `crate::copies`).

use super::redo::Op;

/// Takes each commit's writes, in commit order, as the commit makes them (before it is
/// durable here: a copy elsewhere syncs them meanwhile). Called with the store's commit
/// lock held: nothing commits meanwhile.
pub(crate) trait Ship: Send + Sync + std::fmt::Debug {
    /// Commit `number` writes `ops`.
    fn ship(&self, number: u64, ops: &[Op]);
}
