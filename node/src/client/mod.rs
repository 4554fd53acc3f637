//! The short-lived clients: `node stats|incr|decr|get|health` (and the hidden `node
//! debug crash`), each one connection to one member.
//!
//! | module | owns |
//! | --- | --- |
//! | [`connection`] | a client's connection to the node it dialed, and its requests |
//! | [`commands`] | running a command and printing its answer |
//! | [`http_probe`] | a `GET` of a node's HTTP side: `node health --http`, `node-bench`'s metrics |

pub(crate) mod commands;
pub(crate) mod connection;
pub(crate) mod http_probe;
