//! The short-lived clients: `node stats|incr|decr|get|health` (and the hidden `node
//! debug crash`), each one connection to one member.
//!
//! | module | owns |
//! | --- | --- |
//! | [`connection`] | a client's connection to the node it dialed, and its requests |
//! | [`commands`] | running a command and printing its answer |
//! | [`http_probe`] | `node health --http`: readiness from a node's HTTP side |

pub(crate) mod commands;
pub(crate) mod connection;
mod http_probe;
