//! What a node's senders have handed to the transport: the "issued" side of the
//! cluster's exactness check (`issued_* == total_*` once the load has stopped).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Net value and operations issued so far; shared by the load clients that add to it
/// and the node's description that reports it.
#[derive(Debug, Default)]
pub struct IssuedTally {
    value: AtomicI64,
    operations: AtomicU64,
}

impl IssuedTally {
    /// Records `operations` operations that sum to `value`.
    pub fn record(&self, value: i64, operations: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
        self.operations.fetch_add(operations, Ordering::Relaxed);
    }

    /// `(value, operations)` so far.
    pub fn read(&self) -> (i64, u64) {
        (
            self.value.load(Ordering::Relaxed),
            self.operations.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_add_up() {
        let tally = IssuedTally::default();
        tally.record(5, 1);
        tally.record(-2, 3);
        assert_eq!(tally.read(), (3, 4));
    }
}
