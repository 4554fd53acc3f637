//! A counter's durable figures and their arithmetic: plain data, shared by the counter
//! actor (its live state) and the store (its record on disk), so the two compute the
//! same figures from the same changes in the same order.

use shared::counter::{CounterError, Delta};

/// What a counter is, durably: its value, how many operations it applied and refused,
/// and the last commit whose changes it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CounterRecord {
    /// Current value.
    pub(crate) value: i64,
    /// Applied operations.
    pub(crate) operations: u64,
    /// Refused (overflowing) operations.
    pub(crate) rejected: u64,
    /// The last commit (of the node's store) whose changes are in these figures.
    pub(crate) commit: u64,
}

impl CounterRecord {
    /// Applies `operations` changes summing to `delta`, as a whole. On overflow nothing
    /// changes except the rejection count (by `operations`), and the unchanged value is
    /// the error.
    pub(crate) fn add(&mut self, delta: i128, operations: u64) -> Result<i64, i64> {
        let next = i128::from(self.value)
            .checked_add(delta)
            .unwrap_or(i128::MAX);
        match i64::try_from(next) {
            Ok(value) => {
                self.value = value;
                self.operations = self.operations.saturating_add(operations);
                Ok(value)
            }
            Err(_) => {
                self.rejected = self.rejected.saturating_add(operations);
                Err(self.value)
            }
        }
    }

    /// Applies one change. On overflow nothing changes except the rejection count.
    pub(crate) fn apply(&mut self, delta: Delta) -> Result<i64, CounterError> {
        self.add(delta.signed(), 1)
            .map_err(|value| CounterError::Overflow { value, delta })
    }

    /// The record as a tuple (how the store keeps it).
    pub(crate) fn to_tuple(self) -> (i64, u64, u64, u64) {
        (self.value, self.operations, self.rejected, self.commit)
    }

    /// The record from its tuple.
    pub(crate) fn from_tuple((value, operations, rejected, commit): (i64, u64, u64, u64)) -> Self {
        Self {
            value,
            operations,
            rejected,
            commit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_and_decrements_are_exact() {
        let mut c = CounterRecord::default();
        assert_eq!(c.apply(Delta::Increment(5)), Ok(5));
        assert_eq!(c.apply(Delta::Decrement(7)), Ok(-2));
        assert_eq!(c.apply(Delta::Increment(0)), Ok(-2));
        assert_eq!((c.value, c.operations, c.rejected), (-2, 3, 0));
    }

    #[test]
    fn overflow_is_rejected_and_counted() {
        let mut c = CounterRecord::default();
        c.apply(Delta::Increment(i64::MAX as u64)).unwrap();
        let err = c.apply(Delta::Increment(1)).unwrap_err();
        assert_eq!(
            err,
            CounterError::Overflow {
                value: i64::MAX,
                delta: Delta::Increment(1)
            }
        );
        assert_eq!(c.value, i64::MAX);
        // i64::MAX - (2^64 - 1) = i64::MIN: the widest decrement still fits.
        assert_eq!(c.apply(Delta::Decrement(u64::MAX)), Ok(i64::MIN));
        let mut low = CounterRecord::default();
        assert_eq!(low.apply(Delta::Decrement(1u64 << 63)), Ok(i64::MIN));
        assert!(low.apply(Delta::Decrement(1)).is_err());
        assert_eq!((low.value, low.operations, low.rejected), (i64::MIN, 1, 1));
    }

    #[test]
    fn coalesced_changes_count_every_operation_or_none() {
        let mut c = CounterRecord::default();
        assert_eq!(c.add(12, 5), Ok(12));
        assert_eq!(c.add(-20, 3), Ok(-8));
        assert_eq!((c.value, c.operations, c.rejected), (-8, 8, 0));
        // A sum beyond i64 is refused whole, and each of its operations is counted.
        assert_eq!(c.add(i128::from(i64::MAX) + 9, 4), Err(-8));
        assert_eq!(c.add(i128::MIN, 2), Err(-8));
        assert_eq!((c.value, c.operations, c.rejected), (-8, 8, 6));
        let again = CounterRecord::from_tuple(c.to_tuple());
        assert_eq!(again, c);
    }
}
