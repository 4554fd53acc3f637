//! Cluster-wide statistics: what one collection found. This is also the JSON that
//! `node stats --json` prints, so field names are part of the user interface.

use serde::{Deserialize, Serialize};

use crate::protocol::Role;

/// What a node applied from one sender: every batch of every stream from it, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderTotals {
    /// The sending node.
    pub sender: String,
    /// Net value of its batches.
    pub value: i64,
    /// Operations in its batches.
    pub operations: u64,
}

/// The result of one collection over the whole cluster.
///
/// Sums are `i128` so that adding many `i64` values can never overflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStats {
    /// Node that ran the collection.
    pub collected_by: String,
    /// Milliseconds since the Unix epoch when the collection started.
    pub collected_at_ms: u64,
    /// How long the collection took, in milliseconds.
    pub duration_ms: u64,
    /// The collection's deadline, in milliseconds.
    pub deadline_ms: u64,
    /// Sum of the values of the counters that answered.
    pub total_value: i128,
    /// Sum of the operation counts of the counters that answered.
    pub total_operations: u128,
    /// Counters that answered (and are in the sums).
    pub num_counters: usize,
    /// Counters discovered through the process group, answered or not.
    pub known_counters: usize,
    /// Cluster nodes known to the collecting node, reachable or not (a node that left
    /// cleanly is forgotten). Clients are never counted.
    pub num_nodes: usize,
    /// Nodes that are reachable and whose agent answered in time.
    pub reachable_nodes: usize,
    /// True when every node known here or seen as up by any member is reachable and
    /// answered, every member sees every other as up, and every counter of every node
    /// answered in time.
    pub complete: bool,
    /// Mean of the answering counters' lifetime ops/s.
    pub avg_ops_per_sec: f64,
    /// Sum of the answering counters' recent ops/s: the cluster's current throughput.
    pub recent_ops_per_sec: f64,
    /// Sum of what all nodes' load clients issued (value).
    pub issued_value: i128,
    /// Sum of what all nodes' load clients issued (operations).
    pub issued_operations: u128,
    /// Issued operations not yet acknowledged by their destination, over all nodes.
    /// Once the load has stopped and every fault has healed it is 0, and the totals
    /// equal what was issued, plus what the nodes report as unvouched.
    pub in_flight_operations: u128,
    /// Net value the nodes' streams and their receivers disagree on, over all nodes
    /// (see [`NodeStats::unvouched_value`]): 0 unless a store was restored from an older
    /// copy or lost. Once everything has settled, `total_value == issued_value +
    /// unvouched_value` (plus client changes).
    pub unvouched_value: i128,
    /// Operations the nodes' streams and their receivers disagree on, over all nodes.
    pub unvouched_operations: i128,
    /// Counters that did not answer in time, or whose node is unreachable (in an answer
    /// without per-counter lines, at most [`crate::agent::MISSING_NAMES`] of them:
    /// `known_counters - num_counters` is how many there are).
    pub missing_counters: Vec<String>,
    /// Members that do not see each other as up (`"a -> b"`: `a` does not see `b`). A
    /// collection is complete only over a full mesh.
    pub missing_links: Vec<String>,
    /// Per node, sorted by name.
    pub nodes: Vec<NodeStats>,
    /// Members that left the cluster (cleanly, saying so), sorted by name: what their
    /// counters held as they left, which is in none of the sums above. Once a member
    /// comes back it is a node again.
    pub departed: Vec<DepartedNode>,
}

/// A member that left the cluster, and the counts it took with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepartedNode {
    /// Node name.
    pub name: String,
    /// Whether it left for good (an operator's decision) or for a while.
    pub for_good: bool,
    /// When it left, in milliseconds since the Unix epoch (as the collecting node heard).
    pub left_at_ms: u64,
    /// How many counters it hosts.
    pub counters: u32,
    /// Whether what its counters held is known (its store could be read as it left).
    pub known: bool,
    /// The sum of its counters' values as it left.
    pub value: i128,
    /// The sum of its counters' operations as it left.
    pub operations: u128,
    /// Net value its load clients issued (in none of the cluster's issued sums above).
    pub issued_value: i64,
    /// Operations its load clients issued.
    pub issued_operations: u64,
    /// Of those, the ones not acknowledged when it left (in its outbox).
    pub in_flight_operations: u64,
    /// Operations the nodes that answered issued to it and it never acknowledged: kept
    /// by their senders until it comes back, so never applied if it left for good.
    pub in_flight_to_it: u128,
}

/// One node's part of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Node name.
    pub name: String,
    /// The node's role, when its agent answered.
    pub role: Option<Role>,
    /// `host:port` the node advertises, when its agent answered.
    pub advertise: Option<String>,
    /// Whether the collecting node's failure detector considers this node reachable
    /// (always true for the collecting node itself).
    pub reachable: bool,
    /// When `reachable` last changed (or the node was first seen; for the collecting
    /// node, when it started), in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Whether the node answered within the deadline (at least the first page of its
    /// counters; those of pages it did not answer are in `missing_counters`).
    pub answered: bool,
    /// Net value the node's load clients issued (0 when unreachable).
    pub issued_value: i64,
    /// Operations the node's load clients issued (0 when unreachable).
    pub issued_operations: u64,
    /// Operations it issued that their destination has not acknowledged yet.
    pub in_flight_operations: u64,
    /// Net value its streams' receivers hold beyond (negative: short of) what its store
    /// issued: after a store on either side was restored from an older copy or lost.
    pub unvouched_value: i64,
    /// Operations its streams' receivers hold beyond (negative: short of) what it issued.
    pub unvouched_operations: i64,
    /// What this node applied from each sender (every run of each), by sender name.
    pub received: Vec<SenderTotals>,
    /// Counter restarts on this node.
    pub counter_restarts: u64,
    /// Where its store is copied, and how far the copy lags (as the node said).
    pub copy: crate::copies::CopyStatus,
    /// Counters that answered, sorted by name.
    pub counters: Vec<CounterReport>,
    /// Counters of this node that did not answer in time (all of them, by name, when
    /// the node is unreachable; at most [`crate::agent::MISSING_NAMES`] in an answer
    /// without per-counter lines).
    pub missing_counters: Vec<String>,
}

/// One counter's line in a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterReport {
    /// Cluster-wide counter name.
    pub name: String,
    /// Value.
    pub value: i64,
    /// Applied operations.
    pub operations: u64,
    /// Refused (overflowing) changes.
    pub rejected: u64,
    /// Lifetime operations per second.
    pub ops_per_sec: f64,
    /// Operations per second over the recent window.
    pub recent_ops_per_sec: f64,
}

crate::wire_type!(ClusterStats);
