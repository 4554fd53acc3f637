//! # node: one process of the distributed counter cluster
//!
//! A node runs a supervision tree ([`root`]) of actors; the folders follow the three
//! paths through it:
//!
//! - **write path**: [`load`] (load client → pusher, coalesced and windowed) →
//!   [`counters`] (host) → [`store`] (journal: group commit to disk) → [`counters`]
//!   (counter);
//! - **read path**: [`stats`] (aggregator → one `Collect` per node) → [`counters`]
//!   (host → every counter's `GetStats`) → back up to the totals;
//! - **control plane**: [`cluster`] (mesh and its failure detector, membership, agent,
//!   discovery) over [`net`] (accepting, dialing, TLS, cookie, admission);
//! - **the outside**: [`http`] (probes, stats, members and counters over HTTP, through
//!   the agent).
//!
//! | module | owns |
//! | --- | --- |
//! | [`cli`] | the command line (clap): node options and client subcommands |
//! | [`config`] | checked node configuration and its defaults (cookie rules, names) |
//! | [`server`] | running a node: bind, start the tree, wait, stop in order |
//! | [`root`] | the supervision tree: every long-lived actor, and what its failure does |
//! | [`counters`] | counters, their table and supervisor, and the counter host |
//! | [`store`] | the durable store (redb) and the journal every change is committed by |
//! | [`load`] | load clients, the pusher and its windows, the issued tally |
//! | [`stats`] | collections, the aggregator, summing up, output |
//! | [`cluster`] | mesh, failure detector, membership, agent, discovery, calls |
//! | [`net`] | accept loop and dialing, admission and pre-auth limits, TLS, cookie |
//! | [`client`] | a client's connection to the node it dials, and the commands |
//! | [`http`] | the HTTP side: health probes, stats, members, counters (`--http`) |
//! | [`metrics`] | what `GET /metrics` exports: recorded as it happens, or read at each scrape |
//! | [`runtime`] | the async runtime: its worker threads, and the busy poll after network reads |
//! | [`logging`] | tracing to stderr, with ractor_cluster's routine warnings held back |
//! | [`shutdown`] | the Ctrl-C / SIGTERM signal |
//! | [`error`] | typed errors at the node's and the client's edges |
//! | [`clock`] | wall-clock timestamps for reports |
//! | [`sys`] | this process's memory, from `/proc` |
//!
//! The benchmark is its own binary (`node-bench`, in `src/bin/node-bench/`), built on
//! the public parts of this library; none of it is compiled into the node.

pub mod cli;
pub mod client;
pub(crate) mod clock;
pub mod cluster;
pub mod config;
pub(crate) mod counters;
pub mod error;
pub mod http;
pub mod load;
pub mod logging;
pub(crate) mod metrics;
pub mod net;
pub(crate) mod root;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub(crate) mod stats;
pub(crate) mod store;
pub mod sys;
#[cfg(test)]
pub(crate) mod testing;
