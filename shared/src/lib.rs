//! # shared: what every node and client of the counter cluster agrees on
//!
//! This crate is deliberately small: it holds only what crosses the network.
//!
//! - [`codec`]: the one place that turns wire types into bytes (serde + bincode 2) and
//!   back, plus the macro that plugs a type into ractor's `BytesConvertable`.
//! - [`protocol`]: the protocol version, process-group names and naming rules for nodes
//!   and counters.
//! - [`counter`]: messages a counter actor answers, and its replies.
//! - [`agent`]: messages a node's agent answers: membership gossip and client requests.
//! - [`stats`]: the cluster-wide statistics a collection produces (also the `--json`
//!   output of `node stats`).

pub mod agent;
pub mod codec;
pub mod counter;
pub mod protocol;
pub mod stats;

pub use agent::{AgentMessage, ClientAnswer, ClientError, ClientReply, ClientRequest, NodeInfo};
pub use counter::{ApplyOutcome, CounterError, CounterMessage, CounterStats, Delta};
pub use protocol::Role;
pub use stats::{ClusterStats, CounterReport, NodeStats};
