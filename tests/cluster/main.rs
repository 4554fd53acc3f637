//! Cluster tests: every node is a real `node` process on loopback (process groups are
//! process-global, so nodes must not share a process), and every client command is a
//! real `node stats|incr|decr|get` process.
//!
//! Built as the `node` package's `cluster` test target, so `cargo test` at the workspace
//! root builds the binary first and runs these.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]
// Test helpers are `pub` for the test modules; the test binary has no public API.
#![allow(unreachable_pub)]

mod util;

mod busy_poll;
mod cli_errors;
mod client_ids;
mod copies;
mod dashboard;
mod dns;
mod durability;
mod exactly_once;
mod faults;
mod hostile;
mod http;
mod k8s;
mod large;
mod leaving;
mod load;
mod lying_member;
mod membership;
mod metrics;
mod netns;
mod operations;
mod partial;
mod partition;
mod quiet;
mod security;
mod shutdown;
mod slow;
mod store_faults;
mod supervision;
mod tls;
