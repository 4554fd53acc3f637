//! Summing a collection up: from the membership view and whatever each node answered
//! to the cluster-wide [`ClusterStats`]. Pure (no actors, no clock), so every rule
//! about what counts as complete and what is missing is tested directly.

use std::collections::BTreeMap;

use shared::agent::{NodeInfo, PeerAddr};
use shared::counter::CounterStats;
use shared::protocol::{counter_name, owner_node, parse_counter_name};
use shared::stats::{ClusterStats, CounterReport, NodeStats};

use crate::cluster::membership::{PeerStatus, PeerView};

/// Builds the cluster statistics from the membership view and the probes' answers
/// (`None` = no answer in time). Every node in `peers` is reported, answered or not,
/// and every counter a node is known to host but that did not answer is listed
/// missing. Pure: timing fields are left at zero for the caller to fill.
pub(crate) fn summarize(
    collected_by: &str,
    peers: Vec<PeerView>,
    nodes: Vec<(String, Option<NodeInfo>)>,
    counters: impl IntoIterator<Item = (String, Option<CounterStats>)>,
) -> ClusterStats {
    let sees = sees_up(&nodes);
    let mut summary = Summary::new(collected_by);
    summary.add_members(peers);
    summary.add_answers(nodes);
    summary.add_seen_by_others(&sees);
    let totals = summary.add_counters(counters);
    summary.name_undiscovered_counters();
    summary.finish(totals, missing_links(&sees))
}

/// Whom each answering node sees as up: a node any member sees must be covered, and
/// every member must see every other (a full mesh) for the collection to be complete.
fn sees_up(nodes: &[(String, Option<NodeInfo>)]) -> BTreeMap<String, Vec<PeerAddr>> {
    nodes
        .iter()
        .filter_map(|(name, info)| Some((name.clone(), info.as_ref()?.known_peers.clone())))
        .collect()
}

/// Every `member -> other` pair of answering nodes where the member does not see the
/// other up.
fn missing_links(sees: &BTreeMap<String, Vec<PeerAddr>>) -> Vec<String> {
    let mut missing = Vec::new();
    for (member, peers) in sees {
        for other in sees.keys().filter(|other| *other != member) {
            if !peers.iter().any(|p| &p.name == other) {
                missing.push(format!("{member} -> {other}"));
            }
        }
    }
    missing
}

/// A node's line before anything is known of it. Seen in the process groups but not
/// (yet) in the membership is a session that has just come up: reachable, as far as
/// anyone knows.
fn empty_node(name: &str) -> NodeStats {
    NodeStats {
        name: name.to_string(),
        role: None,
        advertise: None,
        reachable: true,
        since_ms: 0,
        answered: false,
        issued_value: 0,
        issued_operations: 0,
        in_flight_operations: 0,
        unvouched_value: 0,
        unvouched_operations: 0,
        received: Vec::new(),
        counter_restarts: 0,
        counters: Vec::new(),
        missing_counters: Vec::new(),
    }
}

/// What the counters that answered add up to.
#[derive(Debug, Default)]
struct CounterTotals {
    value: i128,
    operations: u128,
    lifetime_rates: f64,
    recent_ops_per_sec: f64,
    answered: usize,
}

/// A collection's statistics as they are put together, node by node.
struct Summary {
    collected_by: String,
    by_node: BTreeMap<String, NodeStats>,
    /// How many counters each node is known to host (from the membership or its
    /// answer).
    hosts: BTreeMap<String, u32>,
}

impl Summary {
    fn new(collected_by: &str) -> Self {
        let mut by_node = BTreeMap::new();
        by_node.insert(collected_by.to_string(), empty_node(collected_by));
        Self {
            collected_by: collected_by.to_string(),
            by_node,
            hosts: BTreeMap::new(),
        }
    }

    /// Every member of the collecting node's view, up or not.
    fn add_members(&mut self, peers: Vec<PeerView>) {
        for peer in peers {
            let mut entry = empty_node(&peer.name);
            entry.role = peer.role;
            entry.advertise = Some(peer.addr);
            entry.reachable = peer.status == PeerStatus::Up;
            entry.since_ms = peer.since_ms;
            if let Some(n) = peer.counters {
                self.hosts.insert(peer.name.clone(), n);
            }
            self.by_node.insert(peer.name, entry);
        }
    }

    /// What each node said of itself (or that it did not answer).
    fn add_answers(&mut self, nodes: Vec<(String, Option<NodeInfo>)>) {
        for (name, info) in nodes {
            let entry = self
                .by_node
                .entry(name.clone())
                .or_insert_with(|| empty_node(&name));
            if let Some(info) = info {
                entry.role = Some(info.role);
                entry.advertise = Some(info.advertise);
                entry.answered = true;
                entry.issued_value = info.issued_value;
                entry.issued_operations = info.issued_operations;
                entry.in_flight_operations = info.in_flight_operations;
                entry.unvouched_value = info.unvouched_value;
                entry.unvouched_operations = info.unvouched_operations;
                entry.received = info.received;
                entry.counter_restarts = info.counter_restarts;
                self.hosts.insert(name, info.counters);
            }
        }
    }

    /// A node seen up by another member but unknown here: missing, never left out.
    fn add_seen_by_others(&mut self, sees: &BTreeMap<String, Vec<PeerAddr>>) {
        for peer in sees.values().flatten() {
            self.by_node.entry(peer.name.clone()).or_insert_with(|| {
                let mut entry = empty_node(&peer.name);
                entry.advertise = Some(peer.addr.clone());
                entry.reachable = false;
                entry
            });
        }
    }

    /// Each discovered counter's answer, under its node, or its name as missing.
    fn add_counters(
        &mut self,
        counters: impl IntoIterator<Item = (String, Option<CounterStats>)>,
    ) -> CounterTotals {
        let mut totals = CounterTotals::default();
        for (name, stats) in counters {
            // Looked up by `&str`: a node's name is allocated once, not once per counter.
            let node = owner_node(&name).unwrap_or("?");
            if !self.by_node.contains_key(node) {
                self.by_node.insert(node.to_string(), empty_node(node));
            }
            let Some(entry) = self.by_node.get_mut(node) else {
                continue;
            };
            if entry.counters.capacity() == 0 {
                // Room for all of the node's counters at once: no line is moved.
                let hosts = self.hosts.get(node).copied().unwrap_or(0);
                entry.counters.reserve_exact(hosts as usize);
            }
            match stats {
                Some(s) => {
                    totals.answered += 1;
                    totals.value += i128::from(s.value);
                    totals.operations += u128::from(s.operations);
                    totals.lifetime_rates += s.ops_per_sec;
                    totals.recent_ops_per_sec += s.recent_ops_per_sec;
                    entry.counters.push(CounterReport {
                        name,
                        value: s.value,
                        operations: s.operations,
                        rejected: s.rejected,
                        ops_per_sec: s.ops_per_sec,
                        recent_ops_per_sec: s.recent_ops_per_sec,
                    });
                }
                None => entry.missing_counters.push(name),
            }
        }
        totals
    }

    /// Counters a node hosts that were not even discovered (its session is down) are
    /// missing too, by name. Only the indices not seen (answered or listed missing)
    /// get a name made.
    fn name_undiscovered_counters(&mut self) {
        for (node, count) in &self.hosts {
            let Some(entry) = self.by_node.get_mut(node) else {
                continue;
            };
            let mut seen = vec![false; *count as usize];
            let names = entry.counters.iter().map(|c| c.name.as_str());
            for name in names.chain(entry.missing_counters.iter().map(String::as_str)) {
                if let Some((owner, index)) = parse_counter_name(name) {
                    if owner == node && index < *count {
                        seen[index as usize] = true;
                    }
                }
            }
            for (index, _) in seen.iter().enumerate().filter(|(_, seen)| !**seen) {
                entry
                    .missing_counters
                    .push(counter_name(node, index as u32));
            }
        }
    }

    /// The statistics: nodes and their counters in natural order, the cluster's sums,
    /// and whether the collection is complete.
    fn finish(self, totals: CounterTotals, missing_links: Vec<String>) -> ClusterStats {
        let mut nodes: Vec<NodeStats> = self.by_node.into_values().collect();
        let mut missing_counters = Vec::new();
        for node in &mut nodes {
            node.counters
                .sort_by(|a, b| natural_key(&a.name).cmp(&natural_key(&b.name)));
            node.missing_counters
                .sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
            missing_counters.extend(node.missing_counters.iter().cloned());
        }
        let answered = totals.answered;
        let reachable_nodes = nodes.iter().filter(|n| n.reachable && n.answered).count();
        ClusterStats {
            collected_by: self.collected_by,
            collected_at_ms: 0,
            duration_ms: 0,
            deadline_ms: 0,
            total_value: totals.value,
            total_operations: totals.operations,
            num_counters: answered,
            known_counters: answered + missing_counters.len(),
            num_nodes: nodes.len(),
            reachable_nodes,
            complete: missing_counters.is_empty()
                && reachable_nodes == nodes.len()
                && missing_links.is_empty(),
            avg_ops_per_sec: if answered > 0 {
                totals.lifetime_rates / answered as f64
            } else {
                0.0
            },
            recent_ops_per_sec: totals.recent_ops_per_sec,
            issued_value: nodes.iter().map(|n| i128::from(n.issued_value)).sum(),
            issued_operations: nodes.iter().map(|n| u128::from(n.issued_operations)).sum(),
            in_flight_operations: nodes
                .iter()
                .map(|n| u128::from(n.in_flight_operations))
                .sum(),
            unvouched_value: nodes.iter().map(|n| i128::from(n.unvouched_value)).sum(),
            unvouched_operations: nodes
                .iter()
                .map(|n| i128::from(n.unvouched_operations))
                .sum(),
            missing_counters,
            missing_links,
            nodes,
        }
    }
}

/// Sort key that puts `node/2` before `node/10`.
fn natural_key(name: &str) -> (&str, u64, &str) {
    match name.rsplit_once('/') {
        Some((node, index)) => (node, index.parse().unwrap_or(u64::MAX), index),
        None => (name, u64::MAX, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::{Role, PROTOCOL_VERSION};

    fn knows(info: NodeInfo, peers: &[&str]) -> NodeInfo {
        NodeInfo {
            known_peers: peers
                .iter()
                .map(|p| PeerAddr {
                    name: p.to_string(),
                    addr: format!("{p}:4697"),
                    incarnation: 1,
                })
                .collect(),
            ..info
        }
    }

    fn info(name: &str, issued_value: i64, issued_operations: u64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            role: Role::Worker,
            advertise: format!("{name}:4697"),
            protocol_version: PROTOCOL_VERSION,
            incarnation: 1,
            counters: 2,
            counter_restarts: 0,
            issued_value,
            issued_operations,
            in_flight_operations: 0,
            unvouched_value: 0,
            unvouched_operations: 0,
            received: Vec::new(),
            store_commits: 0,
            known_peers: vec![],
        }
    }

    fn counter(name: &str, value: i64, operations: u64) -> CounterStats {
        CounterStats {
            name: name.into(),
            value,
            operations,
            rejected: 0,
            ops_per_sec: operations as f64,
            recent_ops_per_sec: 1.0,
            uptime_ms: 1000,
        }
    }

    fn peer(name: &str, status: PeerStatus, counters: Option<u32>) -> PeerView {
        PeerView {
            name: name.into(),
            addr: format!("{name}:4697"),
            status,
            since_ms: 42,
            role: Some(Role::Worker),
            counters,
            sees_up: None,
            round_trip: None,
        }
    }

    #[test]
    fn sums_complete_collection() {
        let s = summarize(
            "a",
            vec![peer("b", PeerStatus::Up, Some(1))],
            vec![
                ("a".into(), Some(knows(info("a", 5, 3), &["b"]))),
                (
                    "b".into(),
                    Some(NodeInfo {
                        counters: 1,
                        ..knows(info("b", -2, 4), &["a"])
                    }),
                ),
            ],
            vec![
                ("a/1".into(), Some(counter("a/1", 7, 2))),
                ("a/0".into(), Some(counter("a/0", -1, 1))),
                ("b/0".into(), Some(counter("b/0", 4, 6))),
            ],
        );
        assert_eq!((s.total_value, s.total_operations), (10, 9));
        assert_eq!((s.num_counters, s.known_counters), (3, 3));
        assert_eq!((s.num_nodes, s.reachable_nodes), (2, 2));
        assert_eq!((s.issued_value, s.issued_operations), (3, 7));
        assert!(s.complete, "{s:?}");
        assert!((s.avg_ops_per_sec - 3.0).abs() < 1e-9);
        assert!((s.recent_ops_per_sec - 3.0).abs() < 1e-9);
        let a: Vec<_> = s.nodes[0]
            .counters
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(a, ["a/0", "a/1"]);
        assert_eq!(s.nodes[1].since_ms, 42);
    }

    #[test]
    fn silent_counters_make_it_incomplete() {
        // b is up but one of its counters did not answer; c's agent did not answer.
        let s = summarize(
            "a",
            vec![
                peer("b", PeerStatus::Up, None),
                peer("c", PeerStatus::Up, None),
            ],
            vec![
                (
                    "a".into(),
                    Some(NodeInfo {
                        counters: 1,
                        ..info("a", 0, 0)
                    }),
                ),
                ("b".into(), Some(info("b", 0, 0))),
                ("c".into(), None),
            ],
            vec![
                ("a/0".into(), Some(counter("a/0", 1, 1))),
                ("b/0".into(), Some(counter("b/0", 2, 2))),
                ("b/1".into(), None),
            ],
        );
        assert!(!s.complete);
        assert_eq!(s.missing_counters, ["b/1"]);
        assert_eq!((s.num_counters, s.known_counters), (2, 3));
        assert_eq!((s.total_value, s.total_operations), (3, 3));
        assert_eq!((s.num_nodes, s.reachable_nodes), (3, 2));
        let c = &s.nodes[2];
        assert_eq!(
            (c.name.as_str(), c.reachable, c.answered),
            ("c", true, false)
        );
    }

    #[test]
    fn unreachable_nodes_report_all_their_counters_missing() {
        // c is unreachable: its session is gone, so none of its counters were even
        // discovered; the membership remembers it hosts 3. d never described itself.
        let s = summarize(
            "a",
            vec![
                peer("c", PeerStatus::Unreachable, Some(3)),
                peer("d", PeerStatus::Pending, None),
            ],
            vec![(
                "a".into(),
                Some(NodeInfo {
                    counters: 1,
                    ..info("a", 0, 0)
                }),
            )],
            vec![("a/0".into(), Some(counter("a/0", 1, 1)))],
        );
        assert!(!s.complete);
        assert_eq!(s.missing_counters, ["c/0", "c/1", "c/2"]);
        assert_eq!((s.num_counters, s.known_counters), (1, 4));
        assert_eq!((s.num_nodes, s.reachable_nodes), (3, 1));
        let c = &s.nodes[1];
        assert_eq!((c.reachable, c.answered, c.since_ms), (false, false, 42));
        assert_eq!(c.missing_counters, ["c/0", "c/1", "c/2"]);
        assert!(!s.nodes[2].reachable);
    }

    /// A node that another member sees as up is covered, answered or not; and members
    /// that do not see each other make a collection incomplete, however much answered.
    #[test]
    fn nobody_any_member_sees_is_hidden_and_the_mesh_must_be_full() {
        // a collects; b answers and sees c, whom a does not know at all.
        let s = summarize(
            "a",
            vec![peer("b", PeerStatus::Up, Some(0))],
            vec![
                ("a".into(), Some(knows(info("a", 0, 0), &["b"]))),
                (
                    "b".into(),
                    Some(knows(
                        NodeInfo {
                            counters: 0,
                            ..info("b", 0, 0)
                        },
                        &["a", "c"],
                    )),
                ),
            ],
            vec![],
        );
        assert!(!s.complete);
        assert_eq!((s.num_nodes, s.reachable_nodes), (3, 2));
        let c = s.nodes.iter().find(|n| n.name == "c").unwrap();
        assert_eq!((c.reachable, c.answered), (false, false));
        assert_eq!(c.advertise.as_deref(), Some("c:4697"));
        assert!(s.missing_links.is_empty(), "{:?}", s.missing_links);

        // Both answer, but b does not see a (yet): not complete.
        let s = summarize(
            "a",
            vec![peer("b", PeerStatus::Up, Some(0))],
            vec![
                ("a".into(), Some(knows(info("a", 0, 0), &["b"]))),
                (
                    "b".into(),
                    Some(knows(
                        NodeInfo {
                            counters: 0,
                            ..info("b", 0, 0)
                        },
                        &[],
                    )),
                ),
            ],
            vec![],
        );
        assert!(!s.complete);
        assert_eq!(s.missing_links, ["b -> a"]);
        assert_eq!(s.reachable_nodes, 2);
    }
}
