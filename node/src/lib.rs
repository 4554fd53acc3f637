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
//! | [`copies`] | each node's store copied on a second node, and started from after a loss |
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
//! | [`supervision`] | what every supervisor shares: exits, the restart budget, drills |
//! | [`facts`] | what a node says about itself (`NodeInfo`), outliving its actors |
//! | [`retry`] | a client change tried, with its id, until its fate is known |
//!
//! The public surface is the short list of re-exports below: what the `node` binary,
//! the benchmark (`node-bench`, a crate of its own) and the tests need. Everything
//! else is private to the crate.

#![forbid(unsafe_code)]

mod cli;
mod client;
mod clock;
mod cluster;
mod config;
mod copies;
mod counters;
mod error;
mod facts;
mod http;
mod load;
mod logging;
mod metrics;
mod net;
mod program;
mod retry;
mod root;
mod runtime;
mod server;
mod shutdown;
mod stats;
mod store;
mod supervision;
mod sys;
#[cfg(test)]
mod testing;

// The `node` program: its command line, and running what it asks for.
pub use cli::Cli;
pub use program::main;

// The runtime and logging every program of the workspace runs on.
pub use logging::init as init_logging;
pub use runtime::{run as run_on_runtime, BusyPoll, RuntimeOptions};

// Talking to a cluster from another program: a client's connection, calls with a
// deadline, finding a node's actors.
pub use client::connection::ClusterClient;
pub use client::http_probe::http_get;
pub use cluster::discovery::{find_host, remote_agents};
pub use cluster::rpc::call_until;
pub use error::CommandError;
pub use net::cookie::DEV_COOKIE;
pub use net::tls::{server_name, Tls};

// The write path without a node, for the benchmark: the pusher and what it sends.
pub use load::client::operation;
pub use load::push::{Mode, Offer, Pusher, Target};
pub use load::tally::IssuedTally;

// What the benchmark and the tests measure and start processes with.
pub use net::conn::BUSY_MARKER;
pub use net::port::unused_loopback_port;
pub use runtime::busy_poll::enabled as busy_poll_enabled;
pub use runtime::calibrate::{last as busy_poll_verdict, Measured};
pub use sys::{cpu_time, sleeps, status_kb, status_mib, Sleeps};
