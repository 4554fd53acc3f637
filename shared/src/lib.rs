//! # shared: what every node and client of the counter cluster agrees on
//!
//! This crate is deliberately small: it holds only what crosses the network.
//!
//! - [`codec`]: the one place that turns wire types into bytes (serde + bincode 2) and
//!   back, plus the macro that plugs a type into ractor's `BytesConvertable`.
//! - [`protocol`]: the protocol version, process-group names and naming rules for nodes
//!   and counters.
//! - [`counter`]: a counter's changes, outcomes and statistics.
//! - [`host`]: messages a node's counter host answers: the one remote entry point to
//!   the node's counters, with coalesced batches, the acknowledgements behind
//!   backpressure, and a node's part of a collection.
//! - [`copies`]: messages a node's keeper of copies answers: other nodes' stores,
//!   shipped commit by commit, and fetched back by a node that lost its own.
//! - [`agent`]: messages a node's agent answers: membership gossip, heartbeats and
//!   client requests.
//! - [`stats`]: the cluster-wide statistics a collection produces (also the `--json`
//!   output of `node stats`).

#![forbid(unsafe_code)]

pub mod agent;
pub mod codec;
pub mod copies;
pub mod counter;
pub mod host;
pub mod protocol;
pub mod stats;

pub use agent::{
    AgentMessage, ClientAnswer, ClientError, ClientReply, ClientRequest, CrashTarget, NodeInfo,
};
pub use counter::{
    Applied, ApplyOutcome, CounterError, CounterStats, Delta, StatsOutcome, ValueOutcome,
};
pub use host::{Batch, Change, CollectReply, HostMessage, LocalReport, StreamId, StreamMark};
pub use protocol::Role;
pub use stats::{ClusterStats, CounterReport, NodeStats};
