//! What a counter actor answers, and what it answers with.

use ractor::RpcReplyPort;
use ractor_cluster_derive::RactorClusterMessage;
use serde::{Deserialize, Serialize};

/// A message to a counter. Counters handle them strictly one at a time.
///
/// The variant names are the wire tags (ractor sends them as strings): renaming one
/// is a protocol change.
#[derive(RactorClusterMessage)]
pub enum CounterMessage {
    /// Add `amount`, fire-and-forget (what load clients send). An increment that would
    /// overflow is rejected, counted in [`CounterStats::rejected`] and logged.
    Increment {
        /// How much to add.
        amount: u64,
    },
    /// Subtract `amount`, fire-and-forget; rejected like [`CounterMessage::Increment`].
    Decrement {
        /// How much to subtract.
        amount: u64,
    },
    /// Apply `delta` and answer with the new value or the reason it was rejected.
    #[rpc]
    Apply {
        /// The change to apply.
        delta: Delta,
        /// Where the outcome goes.
        reply: RpcReplyPort<ApplyOutcome>,
    },
    /// Answer with the current value.
    #[rpc]
    GetValue(RpcReplyPort<i64>),
    /// Answer with the counter's statistics.
    #[rpc]
    GetStats(RpcReplyPort<CounterStats>),
    /// Fail on purpose (fault injection, for supervision tests and drills). Ignored,
    /// with a warning, unless the counter's node runs with `--enable-fault-injection`.
    Crash,
}

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

/// Why a counter refused a change. The value is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CounterError {
    /// The result would not fit in an `i64`.
    #[error("{delta:?} would overflow counter value {value}")]
    Overflow {
        /// The value before (and after) the refused change.
        value: i64,
        /// The refused change.
        delta: Delta,
    },
}

/// The answer to [`CounterMessage::Apply`]: the new value, or why nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome(pub Result<i64, CounterError>);

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

crate::wire_type!(Delta, ApplyOutcome, CounterStats);
