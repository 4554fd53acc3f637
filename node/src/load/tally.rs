//! What a node's senders have issued (committed to their outbox, from where it is
//! delivered exactly once), and how much of it is not acknowledged yet: the "issued"
//! side of the cluster's exactness check (`issued_* == total_*` and no operations in
//! flight once the load has stopped and every fault has healed). The durable copy is in
//! the node's store; this one is what the node reports.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use shared::agent::InFlightTo;

use crate::store::{Discrepancy, Sum};

/// Net value and operations issued so far; shared by the load clients that add to it
/// and the node's description that reports it. Beside it, what this node's streams and
/// their destinations disagree on (see [`crate::load::push`]): unvouched.
#[derive(Debug, Default)]
pub struct IssuedTally {
    value: AtomicI64,
    operations: AtomicU64,
    in_flight: AtomicU64,
    /// The same per destination, as of the load client's last tick.
    in_flight_to: Mutex<Vec<InFlightTo>>,
    /// Whether a load client runs (it may issue more at any moment).
    running: AtomicBool,
    unvouched_value: AtomicI64,
    unvouched_operations: AtomicI64,
}

impl IssuedTally {
    /// Records `operations` operations that sum to `value`.
    pub(crate) fn record(&self, value: i64, operations: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
        self.operations.fetch_add(operations, Ordering::Relaxed);
    }

    /// Sets the tally (to what the store holds, when a sender starts); the unvouched
    /// figures start again from zero (the sender adds its streams' back).
    pub(crate) fn set(&self, issued: Sum) {
        self.value.store(issued.value, Ordering::Relaxed);
        self.operations.store(issued.operations, Ordering::Relaxed);
        self.unvouched_value.store(0, Ordering::Relaxed);
        self.unvouched_operations.store(0, Ordering::Relaxed);
    }

    /// Adds what a destination holds beyond (negative: short of) what was issued to it.
    pub(crate) fn add_unvouched(&self, by: Discrepancy) {
        self.unvouched_value.fetch_add(by.value, Ordering::Relaxed);
        self.unvouched_operations
            .fetch_add(by.operations, Ordering::Relaxed);
    }

    /// What is unvouched so far.
    pub(crate) fn unvouched(&self) -> Discrepancy {
        Discrepancy::new(
            self.unvouched_value.load(Ordering::Relaxed),
            self.unvouched_operations.load(Ordering::Relaxed),
        )
    }

    /// Sets how many issued operations are not acknowledged yet.
    pub(crate) fn set_in_flight(&self, operations: u64) {
        self.in_flight.store(operations, Ordering::Relaxed);
    }

    /// Issued operations not acknowledged yet.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A load client started (`true`) or stopped.
    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }

    /// Whether a load client runs.
    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Sets how many issued operations each destination has not acknowledged yet
    /// (those with any).
    pub(crate) fn set_in_flight_to(&self, by_destination: Vec<InFlightTo>) {
        *self.in_flight_to.lock().unwrap_or_else(|e| e.into_inner()) = by_destination;
    }

    /// Issued operations not acknowledged yet, per destination (those with any).
    pub(crate) fn in_flight_to(&self) -> Vec<InFlightTo> {
        self.in_flight_to
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What was issued so far.
    pub(crate) fn read(&self) -> Sum {
        Sum::new(
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
        assert_eq!(tally.read(), Sum::new(3, 4));
    }
}
