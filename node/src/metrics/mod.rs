//! The node's metrics, for `GET /metrics` in Prometheus's text format
//! (prometheus-client). Two kinds:
//!
//! - **recorded** as things happen, in [`NodeMetrics`] (shared through
//!   [`NodeFacts`](crate::facts::NodeFacts)): operations applied and rejected
//!   by this node's commits, each commit's duration (its fsync) and operations, failed
//!   commits and whether the store takes writes, each collection's duration,
//!   connections refused by reason, what the member policy refused by reason, batches
//!   refused whole by reason, parts restarted, and parts waiting for the store, by part;
//! - **read** at each scrape from what the node already keeps ([`NodeCollector`]):
//!   issued and in-flight operations, counters and their restarts, each peer's
//!   reachability and gossip round trip, what each sender's batches added here, the
//!   store's last commit when the node started, disk errors injected (fault injection).
//!
//! Names follow Prometheus's conventions: the `counter_cluster_` prefix, base units
//! (seconds), `_total` on counters. Labels stay bounded: `node` on every series,
//! `peer` (members), `sender` (members that sent batches), `reason` (a fixed set).
//! A counter's value can go down, so per-counter values are not exported here (the
//! cluster's totals are in `/stats`).
//!
//! | module | owns |
//! | --- | --- |
//! | [`recorded`] | the figures recorded as things happen ([`NodeMetrics`]) |
//! | [`scrape`] | the registry a scrape encodes, with the figures read at each scrape |

mod recorded;
mod scrape;

pub(crate) use recorded::{
    BatchRefusal, ConnectionRefusal, LinkCounters, NodeMetrics, PolicyRefusal, Traffic,
};
pub(crate) use scrape::{encode, registry, to_prometheus_text};
