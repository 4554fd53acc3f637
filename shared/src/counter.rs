//! A counter's wire vocabulary: changes, outcomes and statistics.
//!
//! Counter actors themselves are node-local (their messages never cross the network,
//! so ractor does not mirror 100,000 counters onto every peer); other nodes and clients
//! reach them through their node's counter host ([`crate::host::HostMessage`]).

use serde::{Deserialize, Serialize};

/// One change to a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delta {
    /// Add this much.
    Increment(u64),
    /// Subtract this much.
    Decrement(u64),
}

impl Delta {
    /// The signed change, widened so that `Decrement(u64::MAX)` is representable.
    pub fn signed(self) -> i128 {
        match self {
            Delta::Increment(n) => i128::from(n),
            Delta::Decrement(n) => -i128::from(n),
        }
    }
}

/// Why a counter operation failed. A refused change leaves the value as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CounterError {
    /// The node has no counter with that index.
    #[error("no counter '{0}' on its node")]
    NoSuchCounter(String),
    /// The counter exists but could not be reached (it is restarting or stopping).
    #[error("counter '{0}' is not running")]
    NotRunning(String),
    /// The node cannot take changes now (its store takes no writes: a full or failing
    /// disk); nothing was applied.
    #[error("not applied: {0}")]
    Unavailable(String),
    /// The change's id was used before for another change (another counter or delta):
    /// nothing was applied.
    #[error(
        "id '{id}' was used before for another change ({earlier}); give each change its own id"
    )]
    IdReused {
        /// The id.
        id: String,
        /// The change it was used for, as `COUNTER DELTA`.
        earlier: String,
    },
    /// The result would not fit in an `i64`.
    #[error("{delta:?} would overflow counter value {value}")]
    Overflow {
        /// The value before (and after) the refused change.
        value: i64,
        /// The refused change.
        delta: Delta,
    },
}

/// A counter's value (after a change, or as read), or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueOutcome(pub Result<i64, CounterError>);

/// A change with an id, applied: the value after it, and whether it had been applied
/// before (then this is the first time's result, and nothing changed now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The counter's value right after the change.
    pub value: i64,
    /// The id had been applied before: this is that result, and nothing changed now.
    pub repeated: bool,
}

/// What became of a change with an id: applied (now or before), or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome(pub Result<Applied, CounterError>);

/// A counter's statistics, or why there are none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsOutcome(pub Result<CounterStats, CounterError>);

/// A counter's statistics at the moment it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterStats {
    /// Cluster-wide counter name, `node/index`.
    pub name: String,
    /// Current value.
    pub value: i64,
    /// Applied increments and decrements since the counter started.
    pub operations: u64,
    /// Changes refused because they would overflow.
    pub rejected: u64,
    /// `operations` divided by the seconds since the counter started.
    pub ops_per_sec: f64,
    /// Operations per second over the last few seconds (see the node's rate window):
    /// what the counter is doing now, as opposed to its lifetime average.
    pub recent_ops_per_sec: f64,
    /// Milliseconds since the counter started.
    pub uptime_ms: u64,
}

crate::wire_type!(
    Delta,
    ValueOutcome,
    ApplyOutcome,
    StatsOutcome,
    CounterStats
);
