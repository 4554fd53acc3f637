//! # node: one process of the distributed counter cluster
//!
//! Read top-down: `cli` → `config` → `server` (what a node runs) → the actors it starts
//! → `commands`/`client` (the short-lived clients).
//!
//! | module | owns |
//! | --- | --- |
//! | [`cli`] | the command line (clap): node options and client subcommands |
//! | [`config`] | checked node configuration and its defaults (cookie rules, names) |
//! | [`cookie`] | the shared secret: `--cookie`, `NODE_COOKIE`, `--cookie-file` |
//! | [`server`] | starting a node's actors in order and stopping them on shutdown |
//! | [`shutdown`] | the Ctrl-C / SIGTERM signal |
//! | [`counter`] | the counter actor and its arithmetic |
//! | [`rate`] | the sliding-window ops/s behind a counter's recent rate |
//! | [`supervisor`] | the per-node supervisor that spawns (and restarts) counters |
//! | [`host`] | the counter host: how other nodes and clients reach this node's counters |
//! | [`agent`] | the node agent: membership info and client requests |
//! | [`collect`] | one concurrent collection over all counters, with one deadline |
//! | [`aggregator`] | the coordinator's periodic collections and their log line |
//! | [`push`] | coalesced, windowed sending of changes: batches, acknowledgements |
//! | [`load`] | synthetic load clients (rate-limited, through a pusher) |
//! | [`membership`] | the cluster as this node sees it: peers, reachability, since when |
//! | [`mesh`] | dialing, heartbeats, the failure detector, gossip, leaving cleanly |
//! | [`transport`] | accepting and dialing connections, plain or mutual TLS, with deadlines |
//! | [`tls`] | certificate files into rustls configurations |
//! | [`log_limit`] | at most one log line per source address per minute |
//! | [`client`] | a client's short-lived connection to one member |
//! | [`commands`] | `node stats|incr|decr|get|health|bench` |
//! | [`bench`] | `node bench`: the figures, with real node processes |
//! | [`output`] | the stats table and the one-line summary |
//! | [`error`] | typed errors at the node's and the client's edges |
//! | [`panic_hook`] | undecodable frames counted, not printed once each |

pub mod agent;
pub mod aggregator;
pub mod bench;
pub mod cli;
pub mod client;
pub mod collect;
pub mod commands;
pub mod config;
pub mod cookie;
pub mod counter;
pub mod error;
pub mod host;
pub mod load;
pub mod log_limit;
pub mod membership;
pub mod mesh;
pub mod output;
pub mod panic_hook;
pub mod push;
pub mod rate;
pub mod server;
pub mod shutdown;
pub mod supervisor;
pub mod tls;
pub mod transport;
