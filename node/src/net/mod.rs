//! The network edge: what reaches a node from outside the cluster, and how.
//!
//! | module | owns |
//! | --- | --- |
//! | [`transport`] | the accept loop (an actor) and dialing, plain or mutual TLS, with deadlines |
//! | [`admission`] | places for connections waiting to authenticate; who is dropped when full |
//! | [`screen`] | what an inbound connection may send before it authenticates |
//! | [`probe`] | the dialing side: a "busy" marker told apart from a wrong cookie |
//! | [`conn`] | what both ends share: frame boundaries, the "busy" marker, the split stream |
//! | [`listener`] | listening sockets with room for a burst of connections |
//! | [`metered`] | bytes and frames through each session's link, for the metrics |
//! | [`tls`] | certificate files into rustls configurations |
//! | [`cookie`] | the shared secret: `--cookie`, `NODE_COOKIE`, `--cookie-file` |
//! | [`log_limit`] | at most one log line per source address per minute |
//! | [`panic_hook`] | undecodable frames counted, not printed once each |
//! | [`port`] | free loopback ports for the nodes a test or `node-bench` starts |

pub(crate) mod admission;
pub(crate) mod conn;
pub(crate) mod cookie;
pub(crate) mod listener;
pub(crate) mod log_limit;
pub(crate) mod metered;
pub(crate) mod panic_hook;
pub(crate) mod port;
pub(crate) mod probe;
pub(crate) mod screen;
pub(crate) mod tls;
pub(crate) mod transport;
