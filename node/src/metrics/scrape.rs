//! What a scrape encodes: the recorded figures of [`NodeMetrics`](super::NodeMetrics)
//! and a collector of the figures read from what the node already keeps.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::membership::PeerStatus;
use crate::facts::NodeFacts;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SenderLabel {
    sender: String,
}

/// The registry a scrape encodes: the recorded metrics of `facts.metrics` and a
/// collector of the live ones, every series labelled with the node's name.
pub(crate) fn registry(facts: Arc<NodeFacts>) -> Registry {
    let labels = [(
        std::borrow::Cow::Borrowed("node"),
        std::borrow::Cow::Owned(facts.name.clone()),
    )];
    let mut registry = Registry::with_prefix_and_labels("counter_cluster", labels.into_iter());
    facts.metrics.register(&mut registry);
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
        self.node_figures(&mut encoder)?;
        self.peers(&mut encoder)?;
        self.traffic(&mut encoder)?;
        self.received(&mut encoder)
    }
}

impl NodeCollector {
    /// What the node issued, hosts and committed.
    fn node_figures(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let facts = &self.facts;
        let issued = facts.issued.read().operations;
        counter(
            encoder,
            "operations_issued",
            "Operations this node's load clients issued (committed to its outbox)",
            issued,
        )?;
        gauge(
            encoder,
            "operations_in_flight",
            "Issued operations their destination has not acknowledged yet",
            facts.issued.in_flight() as i64,
        )?;
        gauge(
            encoder,
            "operations_unvouched",
            "Operations this node's destinations hold beyond (negative: short of) what its store \
             issued to them: 0 unless a store was restored from an older copy or lost",
            facts.issued.unvouched().operations,
        )?;
        gauge(
            encoder,
            "counters",
            "Counters this node hosts",
            i64::from(facts.table.len()),
        )?;
        gauge(
            encoder,
            "counters_active",
            "Counters whose actor runs now (used within --counter-idle-secs); the others are \
             in the store only",
            i64::try_from(facts.table.active()).unwrap_or(i64::MAX),
        )?;
        counter(
            encoder,
            "actor_restarts",
            "Counter actors restarted by this node's supervisor",
            facts.table.restarts(),
        )?;
        counter(
            encoder,
            "store_commits",
            "Store commits (one fsync each) since the node started",
            facts.received.commits(),
        )?;
        gauge(
            encoder,
            "store_recovered_commit",
            "The store's last commit when the node started: 0 for a new store (or \
             memory-only), else the node recovered its counters from the store",
            i64::try_from(facts.recovered_commit).unwrap_or(i64::MAX),
        )?;
        if let Some(faults) = &facts.disk_faults {
            counter(
                encoder,
                "store_faults_injected",
                "Disk errors the fault hook injected (only with --enable-fault-injection)",
                faults.injected(),
            )?;
        }
        counter(
            encoder,
            "messages_undecodable",
            "Message fields from peers that did not decode and were dropped",
            crate::net::panic_hook::dropped(),
        )?;
        Ok(())
    }

    /// Each peer: whether it is up, and the round trip to its agent.
    fn peers(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let facts = &self.facts;
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
             every 500 ms), over the cluster link heartbeats use",
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
        Ok(())
    }

    /// Bytes and frames each way, per member.
    fn traffic(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let facts = &self.facts;
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
        Ok(())
    }

    /// What each sender's batches added here.
    fn received(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let facts = &self.facts;
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
    use crate::metrics::ConnectionRefusal;

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
        facts.metrics.refused(ConnectionRefusal::Silent);
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

    #[test]
    fn a_failed_commit_makes_the_store_unwritable_until_one_succeeds() {
        use crate::metrics::BatchRefusal;
        let facts = Arc::new(NodeFacts::for_tests("m", 1));
        let writable = "counter_cluster_store_writable{node=\"m\"} ";
        let text = encode(&registry(Arc::clone(&facts)));
        assert!(text.contains(&format!("{writable}1\n")), "{text}");
        facts.metrics.commit_failed();
        facts.metrics.commit_failed();
        facts.metrics.batch_refused(BatchRefusal::SumsOverflow);
        let text = encode(&registry(Arc::clone(&facts)));
        for expected in [
            format!("{writable}0\n"),
            "counter_cluster_store_commits_failed_total{node=\"m\"} 2\n".to_string(),
            "counter_cluster_batches_refused_total{node=\"m\",reason=\"sums_overflow\"} 1\n"
                .to_string(),
            "counter_cluster_store_recovered_commit{node=\"m\"} 0\n".to_string(),
        ] {
            assert!(text.contains(&expected), "{expected} missing from\n{text}");
        }
        assert!(!text.contains("store_faults_injected"), "{text}");
        facts.metrics.committed(0.001, 1, 0);
        let text = encode(&registry(facts));
        assert!(text.contains(&format!("{writable}1\n")), "{text}");
    }
}
