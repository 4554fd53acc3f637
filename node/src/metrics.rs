//! The node's metrics, for `GET /metrics` in Prometheus's text format
//! (prometheus-client). Two kinds:
//!
//! - **recorded** as things happen, in [`NodeMetrics`] (shared through
//!   [`NodeFacts`](crate::cluster::facts::NodeFacts)): operations applied and rejected
//!   by this node's commits, each commit's duration (its fsync) and operations, each
//!   collection's duration, connections refused by reason;
//! - **read** at each scrape from what the node already keeps ([`NodeCollector`]):
//!   issued and in-flight operations, counters and their restarts, each peer's
//!   reachability and gossip round trip, what each sender's batches added here.
//!
//! Names follow Prometheus's conventions: the `counter_cluster_` prefix, base units
//! (seconds), `_total` on counters. Labels stay bounded: `node` on every series,
//! `peer` (members), `sender` (members that sent batches), `reason` (a fixed set).
//! A counter's value can go down, so per-counter values are not exported here (the
//! cluster's totals are in `/stats`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::facts::NodeFacts;
use crate::cluster::membership::PeerStatus;

/// Why an inbound connection was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Refusal {
    /// Every place for connections waiting to authenticate was taken.
    Full,
    /// Dropped to make room for a newer connection.
    Evicted,
    /// It said nothing (or closed) before its handshake deadline.
    Silent,
    /// It broke the limits on what may be sent before authenticating.
    PreauthLimit,
    /// Its TLS handshake failed or took too long.
    Tls,
    /// It did not authenticate (a wrong cookie, or not a cluster node).
    Auth,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::Evicted => "evicted",
            Refusal::Silent => "silent",
            Refusal::PreauthLimit => "preauth_limit",
            Refusal::Tls => "tls",
            Refusal::Auth => "auth",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SenderLabel {
    sender: String,
}

/// Bytes and frames through one session's link, both ways.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    bytes_in: AtomicU64,
    frames_in: AtomicU64,
    bytes_out: AtomicU64,
    frames_out: AtomicU64,
}

impl LinkCounters {
    /// `bytes` arrived, in which `frames` began.
    pub(crate) fn received(&self, bytes: u64, frames: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.frames_in.fetch_add(frames, Ordering::Relaxed);
    }

    /// `bytes` went out, in which `frames` began.
    pub(crate) fn sent(&self, bytes: u64, frames: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        self.frames_out.fetch_add(frames, Ordering::Relaxed);
    }

    /// `[bytes in, frames in, bytes out, frames out]`.
    pub(crate) fn totals(&self) -> [u64; 4] {
        [
            self.bytes_in.load(Ordering::Relaxed),
            self.frames_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.frames_out.load(Ordering::Relaxed),
        ]
    }
}

/// Every session's link, by the peer's socket address until the session says which
/// member it is; a closed link's totals are kept under the member's name, so each
/// member's series only grow. (Clients' links are counted while open and dropped
/// when they close: they are not members.)
#[derive(Debug, Default)]
pub(crate) struct Traffic(Mutex<TrafficTable>);

#[derive(Debug, Default)]
struct TrafficTable {
    /// Open links: peer socket address → (member name once known, counters).
    links: HashMap<String, (Option<String>, Arc<LinkCounters>)>,
    /// Closed links' totals, per member.
    closed: HashMap<String, [u64; 4]>,
}

impl TrafficTable {
    fn fold(&mut self, (name, link): (Option<String>, Arc<LinkCounters>)) {
        if let Some(name) = name {
            add(self.closed.entry(name).or_default(), link.totals());
        }
    }
}

impl Traffic {
    fn table(&self) -> std::sync::MutexGuard<'_, TrafficTable> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new link to the peer at `peer_addr`: its counters. (A link still open at the
    /// same address is folded away first.)
    pub(crate) fn open(&self, peer_addr: &str) -> Arc<LinkCounters> {
        let link = Arc::new(LinkCounters::default());
        let mut table = self.table();
        if let Some(old) = table
            .links
            .insert(peer_addr.to_string(), (None, Arc::clone(&link)))
        {
            table.fold(old);
        }
        link
    }

    /// The link at `peer_addr` is the session with member `name`.
    pub(crate) fn named(&self, peer_addr: &str, name: &str) {
        if let Some(link) = self.table().links.get_mut(peer_addr) {
            link.0 = Some(name.to_string());
        }
    }

    /// The link at `peer_addr` closed.
    pub(crate) fn closed(&self, peer_addr: &str) {
        let mut table = self.table();
        if let Some(old) = table.links.remove(peer_addr) {
            table.fold(old);
        }
    }

    /// Per member, `[bytes in, frames in, bytes out, frames out]`, sorted by name.
    fn by_member(&self) -> BTreeMap<String, [u64; 4]> {
        let table = self.table();
        let mut by: BTreeMap<String, [u64; 4]> = table
            .closed
            .iter()
            .map(|(name, totals)| (name.clone(), *totals))
            .collect();
        for (name, link) in table.links.values() {
            if let Some(name) = name {
                add(by.entry(name.clone()).or_default(), link.totals());
            }
        }
        by
    }
}

/// Adds one link's totals to a member's.
fn add(into: &mut [u64; 4], totals: [u64; 4]) {
    for (sum, value) in into.iter_mut().zip(totals) {
        *sum = sum.saturating_add(value);
    }
}

/// What the node records as it goes; see the module documentation.
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    applied: Counter,
    rejected: Counter,
    commit_seconds: Histogram,
    commit_operations: Histogram,
    collection_seconds: Histogram,
    refused: Family<ReasonLabel, Counter>,
    /// Bytes and frames per session link.
    pub(crate) traffic: Traffic,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            applied: Counter::default(),
            rejected: Counter::default(),
            // 50 µs to about 3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            // 1 to about 4 million operations.
            commit_operations: Histogram::new(exponential_buckets(1.0, 4.0, 12)),
            // 1 ms to about 65 s.
            collection_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            refused: Family::default(),
            traffic: Traffic::default(),
        }
    }
}

impl NodeMetrics {
    /// A commit took `seconds` and applied `applied` operations to counters, refusing
    /// `rejected` (they would have overflowed).
    pub(crate) fn committed(&self, seconds: f64, applied: u64, rejected: u64) {
        self.applied.inc_by(applied);
        self.rejected.inc_by(rejected);
        self.commit_seconds.observe(seconds);
        self.commit_operations.observe((applied + rejected) as f64);
    }

    /// A collection took `seconds`.
    pub(crate) fn collected(&self, seconds: f64) {
        self.collection_seconds.observe(seconds);
    }

    /// An inbound connection was refused.
    pub(crate) fn refused(&self, why: Refusal) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }
}

/// The registry a scrape encodes: the recorded metrics of `facts.metrics` and a
/// collector of the live ones, every series labelled with the node's name.
pub(crate) fn registry(facts: Arc<NodeFacts>) -> Registry {
    let labels = [(
        std::borrow::Cow::Borrowed("node"),
        std::borrow::Cow::Owned(facts.name.clone()),
    )];
    let mut registry = Registry::with_prefix_and_labels("counter_cluster", labels.into_iter());
    let m = &facts.metrics;
    registry.register(
        "operations_applied",
        "Operations this node's commits applied to its counters",
        m.applied.clone(),
    );
    registry.register(
        "operations_rejected",
        "Operations this node's commits refused because they would overflow a counter",
        m.rejected.clone(),
    );
    registry.register_with_unit(
        "commit_duration",
        "Time of each store commit, its fsync included",
        Unit::Seconds,
        m.commit_seconds.clone(),
    );
    registry.register(
        "commit_operations",
        "Operations in each store commit (group commit: many batches per fsync)",
        m.commit_operations.clone(),
    );
    registry.register_with_unit(
        "collection_duration",
        "Time of each collection this node ran (stats over the whole cluster)",
        Unit::Seconds,
        m.collection_seconds.clone(),
    );
    registry.register(
        "connections_refused",
        "Inbound cluster connections refused, by reason",
        m.refused.clone(),
    );
    registry.register_collector(Box::new(NodeCollector { facts }));
    registry
}

/// The metrics read from the node's own records at each scrape.
#[derive(Debug)]
pub(crate) struct NodeCollector {
    facts: Arc<NodeFacts>,
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let facts = &self.facts;
        let (_, issued) = facts.issued.read();
        counter(
            &mut encoder,
            "operations_issued",
            "Operations this node's load clients issued (committed to its outbox)",
            issued,
        )?;
        gauge(
            &mut encoder,
            "operations_in_flight",
            "Issued operations their destination has not acknowledged yet",
            facts.issued.in_flight() as i64,
        )?;
        gauge(
            &mut encoder,
            "operations_unvouched",
            "Operations this node's destinations hold beyond (negative: short of) what its store \
             issued to them: 0 unless a store was restored from an older copy or lost",
            facts.issued.unvouched().1,
        )?;
        gauge(
            &mut encoder,
            "counters",
            "Counters this node hosts",
            i64::from(facts.table.len()),
        )?;
        counter(
            &mut encoder,
            "actor_restarts",
            "Counter actors restarted by this node's supervisor",
            facts.table.restarts(),
        )?;
        counter(
            &mut encoder,
            "store_commits",
            "Store commits (one fsync each) since the node started",
            facts.received.commits(),
        )?;

        let peers = facts.membership.snapshot();
        let mut up = encoder.encode_descriptor(
            "peer_up",
            "Whether this node sees the peer up (1) or not (0)",
            None,
            MetricType::Gauge,
        )?;
        for peer in &peers {
            let label = PeerLabel {
                peer: peer.name.clone(),
            };
            ConstGauge::new(i64::from(peer.status == PeerStatus::Up))
                .encode(up.encode_family(&label)?)?;
        }
        let mut rtt = encoder.encode_descriptor(
            "peer_round_trip",
            "Round trip of the last exchange with the peer's agent (every gossip round, \
             about once a second), over the cluster link heartbeats use",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for peer in peers.iter().filter(|p| p.status == PeerStatus::Up) {
            if let Some(seconds) = peer.round_trip.map(|d| d.as_secs_f64()) {
                let label = PeerLabel {
                    peer: peer.name.clone(),
                };
                ConstGauge::new(seconds).encode(rtt.encode_family(&label)?)?;
            }
        }
        let traffic = facts.metrics.traffic.by_member();
        for (index, (name, help)) in [
            (
                "peer_received_bytes",
                "Bytes received from the peer over cluster links",
            ),
            (
                "peer_received_messages",
                "Messages (frames) received from the peer",
            ),
            (
                "peer_sent_bytes",
                "Bytes sent to the peer over cluster links",
            ),
            ("peer_sent_messages", "Messages (frames) sent to the peer"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (peer, totals) in &traffic {
                let label = PeerLabel { peer: peer.clone() };
                ConstCounter::new(totals[index]).encode(family.encode_family(&label)?)?;
            }
        }
        let mut received = encoder.encode_descriptor(
            "operations_received",
            "Operations this node applied from each sender's batches (every run of it)",
            None,
            MetricType::Counter,
        )?;
        for sender in facts.received.by_sender() {
            let label = SenderLabel {
                sender: sender.sender,
            };
            ConstCounter::new(sender.operations).encode(received.encode_family(&label)?)?;
        }
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// `registry` in the OpenMetrics text format (what Prometheus asks for).
pub(crate) fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// OpenMetrics text as Prometheus's older text format (version 0.0.4, what `promtool
/// check metrics` and clients that do not ask for OpenMetrics read): a counter family's
/// `HELP` and `TYPE` name its `_total` samples, and there are no `UNIT` or `EOF` lines.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|kind| Some((kind, line.strip_prefix(kind)?)));
        match described {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{kind}{name}{suffix} {tail}\n"));
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_text_format_names_counters_by_their_samples() {
        let om = "# HELP a_ops Operations.\n# TYPE a_ops counter\na_ops_total{node=\"n\"} 3\n\
                  # HELP a_t Time.\n# TYPE a_t histogram\n# UNIT a_t seconds\na_t_count 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_ops_total Operations.\n# TYPE a_ops_total counter\na_ops_total{node=\"n\"} 3\n\
             # HELP a_t Time.\n# TYPE a_t histogram\na_t_count 1\n"
        );
    }

    #[test]
    fn every_series_is_labelled_with_the_node_and_commits_are_counted() {
        let facts = Arc::new(NodeFacts::for_tests("m", 3));
        facts.metrics.committed(0.002, 40, 2);
        facts.metrics.refused(Refusal::Silent);
        let text = encode(&registry(Arc::clone(&facts)));
        for expected in [
            "counter_cluster_operations_applied_total{node=\"m\"} 40",
            "counter_cluster_operations_rejected_total{node=\"m\"} 2",
            "counter_cluster_commit_duration_seconds_count{node=\"m\"} 1",
            "counter_cluster_commit_operations_sum{node=\"m\"} 42",
            "counter_cluster_connections_refused_total{node=\"m\",reason=\"silent\"} 1",
            "counter_cluster_counters{node=\"m\"} 3",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
