//! What a node's counter host answers: the one remote entry point to the node's
//! counters (one host per node, in [`crate::protocol::HOSTS_GROUP`]).
//!
//! Counters are addressed by their index on the node (`worker-1/3` is index 3 on
//! `worker-1`). The host forwards each message to that counter, in arrival order, and
//! the counter handles it like any other: every figure still comes from the counter.
//! A collection asks each node's host once ([`HostMessage::Collect`]) for all of its
//! counters' `GetStats`, so the network carries one request per node, not per counter.

use ractor::RpcReplyPort;
use ractor_cluster_derive::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::agent::NodeInfo;
use crate::counter::{CounterStats, Delta, StatsOutcome, ValueOutcome};

/// A message to a node's counter host.
///
/// The variant names are the wire tags (ractor sends them as strings): renaming one
/// is a protocol change.
#[derive(RactorClusterMessage)]
pub enum HostMessage {
    /// Coalesced changes to counters of this node, fire-and-forget: each entry is one
    /// counter's summed delta and how many operations it stands for.
    Changes(Changes),
    /// Add `amount` to counter `counter`, fire-and-forget (one operation per message:
    /// the unbatched path).
    Increment {
        /// Counter index on this node.
        counter: u32,
        /// How much to add.
        amount: u64,
    },
    /// Subtract `amount` from counter `counter`, fire-and-forget.
    Decrement {
        /// Counter index on this node.
        counter: u32,
        /// How much to subtract.
        amount: u64,
    },
    /// Answered with its argument once every change sent before it (on the same
    /// connection) is committed to the node's store: the acknowledgement senders use to
    /// keep a bounded window of unacknowledged work.
    #[rpc]
    Sync(u64, RpcReplyPort<u64>),
    /// Apply one change and answer with the new value or why it was refused.
    #[rpc]
    Apply {
        /// Counter index on this node.
        counter: u32,
        /// The change.
        delta: Delta,
        /// Where the outcome goes.
        reply: RpcReplyPort<ValueOutcome>,
    },
    /// Answer with the counter's value.
    #[rpc]
    GetValue(u32, RpcReplyPort<ValueOutcome>),
    /// Answer with the counter's own statistics.
    #[rpc]
    GetStats(u32, RpcReplyPort<StatsOutcome>),
    /// This node's part of a collection: describe the node and ask every one of its
    /// counters for its `GetStats`, answering within the given milliseconds.
    #[rpc]
    Collect(u64, RpcReplyPort<CollectReply>),
}

/// One node's part of a collection: the node's description and each counter's own
/// `GetStats` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalReport {
    /// The node's description of itself.
    pub info: NodeInfo,
    /// Every counter of the node with its `GetStats` answer, or `None` if it did not
    /// answer in time.
    pub counters: Vec<(String, Option<CounterStats>)>,
}

/// The answer to [`HostMessage::Collect`]: the report, or `None` when the host is
/// already running as many collections as it allows at once (the collector then
/// counts the node as not answering, so the collection says it is incomplete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectReply(pub Option<LocalReport>);

/// One counter's share of a coalesced batch: `operations` changes that sum to `delta`.
///
/// The counter applies it as a whole: if the sum would overflow, all of its operations
/// are refused (and counted as refused), and the value is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Counter index on the receiving node.
    pub counter: u32,
    /// Net change (wider than `i64`, so that summing can never wrap).
    pub delta: i128,
    /// How many increments and decrements `delta` sums up.
    pub operations: u64,
}

/// A batch of coalesced changes for one node, at most one entry per counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes(pub Vec<Change>);

crate::wire_type!(Change, Changes, LocalReport, CollectReply);
