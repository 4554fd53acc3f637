//! Summing a collection up: from the membership view and whatever each node answered
//! to the cluster-wide [`ClusterStats`]. Pure (no actors, no clock), so every rule
//! about what counts as complete and what is missing is tested directly.

use std::collections::BTreeMap;

use shared::agent::{Departure, NodeInfo, PeerAddr, MISSING_NAMES};
use shared::stats::{ClusterStats, DepartedNode, NodeStats};

use super::lines::{CounterTotals, LineBudget, NodeCounters};
use crate::cluster::membership::{PeerStatus, PeerView};

/// What one node answered: its description (`None`: no answer in time) and its
/// counters as read.
#[derive(Debug)]
pub(crate) struct NodeAnswer {
    pub(crate) name: String,
    pub(crate) info: Option<NodeInfo>,
    pub(crate) counters: NodeCounters,
}

/// Builds the cluster statistics from the membership view and the nodes' answers.
/// Every node in `peers` is reported, answered or not, and every counter a node is
/// known to host but that did not answer is missing. The lines of the counters go in
/// while `budget` (which the readings charged) has room for them all; otherwise only
/// sums and the first missing names. Pure: timing fields are left at zero for the
/// caller to fill.
pub(crate) fn summarize(
    collected_by: &str,
    peers: Vec<PeerView>,
    nodes: Vec<NodeAnswer>,
    budget: &LineBudget,
) -> ClusterStats {
    let sees = sees_up(&nodes);
    let mut summary = Summary::new(collected_by);
    summary.add_members(peers);
    summary.add_answers(nodes);
    summary.add_seen_by_others(&sees);
    summary.add_unread_counters(budget);
    summary.finish(budget.kept(), missing_links(&sees))
}

/// The members that left (`departed`: each with when, in ms since the Unix epoch, and
/// what it took), and what the answering `nodes` issued to each and it never
/// acknowledged.
pub(crate) fn departed_nodes(
    departed: Vec<(String, u64, Departure)>,
    nodes: &[NodeAnswer],
) -> Vec<DepartedNode> {
    departed
        .into_iter()
        .map(|(name, left_at_ms, d)| DepartedNode {
            in_flight_to_it: nodes
                .iter()
                .filter_map(|n| n.info.as_ref())
                .flat_map(|info| &info.in_flight_to)
                .filter(|to| to.node == name)
                .map(|to| u128::from(to.operations))
                .sum(),
            name,
            for_good: d.for_good,
            left_at_ms,
            counters: d.counters,
            known: d.known,
            value: d.value,
            operations: d.operations,
            issued_value: d.issued_value,
            issued_operations: d.issued_operations,
            in_flight_operations: d.in_flight_operations,
        })
        .collect()
}

/// Whom each answering node sees as up: a node any member sees must be covered, and
/// every member must see every other (a full mesh) for the collection to be complete.
fn sees_up(nodes: &[NodeAnswer]) -> BTreeMap<String, Vec<PeerAddr>> {
    nodes
        .iter()
        .filter_map(|node| Some((node.name.clone(), node.info.as_ref()?.known_peers.clone())))
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
        copy: Default::default(),
        counters: Vec::new(),
        missing_counters: Vec::new(),
    }
}

/// A collection's statistics as they are put together, node by node.
struct Summary {
    collected_by: String,
    by_node: BTreeMap<String, (NodeStats, NodeCounters)>,
    /// How many counters each node is known to host (from the membership or its
    /// answer).
    hosts: BTreeMap<String, u32>,
}

impl Summary {
    fn new(collected_by: &str) -> Self {
        let mut summary = Self {
            collected_by: collected_by.to_string(),
            by_node: BTreeMap::new(),
            hosts: BTreeMap::new(),
        };
        summary.node(collected_by);
        summary
    }

    /// Node `name`'s entry, made empty if it is new.
    fn node(&mut self, name: &str) -> &mut (NodeStats, NodeCounters) {
        if !self.by_node.contains_key(name) {
            let entry = (empty_node(name), NodeCounters::default());
            self.by_node.insert(name.to_string(), entry);
        }
        self.by_node
            .get_mut(name)
            .expect("the entry was just made if it was missing")
    }

    /// Every member of the collecting node's view, up or not.
    fn add_members(&mut self, peers: Vec<PeerView>) {
        for peer in peers {
            let (entry, _) = self.node(&peer.name);
            entry.role = peer.role;
            entry.advertise = Some(peer.addr);
            entry.reachable = peer.status == PeerStatus::Up;
            entry.since_ms = peer.since_ms;
            if let Some(n) = peer.counters {
                self.hosts.insert(peer.name, n);
            }
        }
    }

    /// What each node said of itself (or that it did not answer), and its counters.
    fn add_answers(&mut self, nodes: Vec<NodeAnswer>) {
        for node in nodes {
            let (entry, counters) = self.node(&node.name);
            *counters = node.counters;
            if let Some(info) = node.info {
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
                entry.copy = info.copy;
                self.hosts.insert(node.name, info.counters);
            }
        }
    }

    /// A node seen up by another member but unknown here: missing, never left out.
    fn add_seen_by_others(&mut self, sees: &BTreeMap<String, Vec<PeerAddr>>) {
        for peer in sees.values().flatten() {
            if !self.by_node.contains_key(&peer.name) {
                let (entry, _) = self.node(&peer.name);
                entry.advertise = Some(peer.addr.clone());
                entry.reachable = false;
            }
        }
    }

    /// Counters a node hosts that were not read (it did not answer their page, or at
    /// all) are missing too.
    fn add_unread_counters(&mut self, budget: &LineBudget) {
        for (node, (_, counters)) in &mut self.by_node {
            if let Some(count) = self.hosts.get(node) {
                counters.add_unread(node, *count, budget);
            }
        }
    }

    /// The statistics: nodes and their counters in order, the cluster's sums, and
    /// whether the collection is complete. With `lines` false, sums and the first
    /// missing names only.
    fn finish(self, lines: bool, missing_links: Vec<String>) -> ClusterStats {
        let mut totals = CounterTotals::default();
        let mut missing = 0;
        let mut missing_counters = Vec::new();
        let mut nodes = Vec::with_capacity(self.by_node.len());
        for (_, (mut node, mut counters)) in self.by_node {
            if !lines {
                counters.drop_lines();
            }
            totals.merge(&counters.totals);
            missing += counters.missing_count;
            let room = if lines { usize::MAX } else { MISSING_NAMES };
            let named = room.saturating_sub(missing_counters.len());
            missing_counters.extend(counters.missing.iter().take(named).cloned());
            node.counters = counters.lines;
            node.missing_counters = counters.missing;
            nodes.push(node);
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
            known_counters: answered + missing,
            num_nodes: nodes.len(),
            reachable_nodes,
            complete: missing == 0 && reachable_nodes == nodes.len() && missing_links.is_empty(),
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
            departed: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::counter::CounterStats;
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
            in_flight_to: Vec::new(),
            unvouched_value: 0,
            unvouched_operations: 0,
            received: Vec::new(),
            copy: Default::default(),
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

    /// Node `name`'s answer: its description and its first counters, in order.
    fn answer(name: &str, info: Option<NodeInfo>, page: Vec<Option<CounterStats>>) -> NodeAnswer {
        let mut counters = NodeCounters::default();
        counters.add_page(name, 0, page, &LineBudget::new(usize::MAX));
        NodeAnswer {
            name: name.into(),
            info,
            counters,
        }
    }

    fn full() -> LineBudget {
        LineBudget::new(crate::stats::lines::ANSWER_LIMIT)
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
                answer(
                    "a",
                    Some(knows(info("a", 5, 3), &["b"])),
                    vec![Some(counter("a/0", -1, 1)), Some(counter("a/1", 7, 2))],
                ),
                answer(
                    "b",
                    Some(NodeInfo {
                        counters: 1,
                        ..knows(info("b", -2, 4), &["a"])
                    }),
                    vec![Some(counter("b/0", 4, 6))],
                ),
            ],
            &full(),
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
                answer(
                    "a",
                    Some(NodeInfo {
                        counters: 1,
                        ..info("a", 0, 0)
                    }),
                    vec![Some(counter("a/0", 1, 1))],
                ),
                answer(
                    "b",
                    Some(info("b", 0, 0)),
                    vec![Some(counter("b/0", 2, 2)), None],
                ),
                answer("c", None, vec![]),
            ],
            &full(),
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
        // read; the membership remembers it hosts 3. d never described itself.
        let s = summarize(
            "a",
            vec![
                peer("c", PeerStatus::Unreachable, Some(3)),
                peer("d", PeerStatus::Pending, None),
            ],
            vec![answer(
                "a",
                Some(NodeInfo {
                    counters: 1,
                    ..info("a", 0, 0)
                }),
                vec![Some(counter("a/0", 1, 1))],
            )],
            &full(),
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
                answer("a", Some(knows(info("a", 0, 0), &["b"])), vec![]),
                answer(
                    "b",
                    Some(knows(
                        NodeInfo {
                            counters: 0,
                            ..info("b", 0, 0)
                        },
                        &["a", "c"],
                    )),
                    vec![],
                ),
            ],
            &full(),
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
                answer("a", Some(knows(info("a", 0, 0), &["b"])), vec![]),
                answer(
                    "b",
                    Some(knows(
                        NodeInfo {
                            counters: 0,
                            ..info("b", 0, 0)
                        },
                        &[],
                    )),
                    vec![],
                ),
            ],
            &full(),
        );
        assert!(!s.complete);
        assert_eq!(s.missing_links, ["b -> a"]);
        assert_eq!(s.reachable_nodes, 2);
    }

    /// A node of a million counters gone: the numbers are exact, the lines are left
    /// out and a thousand names are given, overall and under the node.
    #[test]
    fn more_lines_than_an_answer_carries_leave_sums_and_a_thousand_names() {
        let budget = full();
        let s = summarize(
            "a",
            vec![peer("c", PeerStatus::Unreachable, Some(1_000_000))],
            vec![answer(
                "a",
                Some(NodeInfo {
                    counters: 1,
                    ..info("a", 0, 0)
                }),
                vec![Some(counter("a/0", 7, 1))],
            )],
            &budget,
        );
        assert!(!budget.kept());
        assert!(!s.complete);
        assert_eq!((s.num_counters, s.known_counters), (1, 1_000_001));
        assert_eq!(s.total_value, 7);
        assert!(s.nodes.iter().all(|n| n.counters.is_empty()));
        assert_eq!(s.missing_counters.len(), MISSING_NAMES);
        assert_eq!(s.missing_counters[..2], ["c/0", "c/1"]);
        assert_eq!(s.nodes[1].missing_counters.len(), MISSING_NAMES);
    }

    /// A member that left is listed with what it took, and what the nodes that
    /// answered issued to it and it never acknowledged.
    #[test]
    fn a_departed_member_is_listed_with_its_counts_and_what_is_in_flight_to_it() {
        let in_flight = |node: &str, operations| shared::agent::InFlightTo {
            node: node.into(),
            operations,
        };
        let nodes = vec![
            answer(
                "a",
                Some(NodeInfo {
                    in_flight_to: vec![in_flight("gone", 3), in_flight("b", 9)],
                    ..info("a", 0, 0)
                }),
                vec![],
            ),
            answer(
                "b",
                Some(NodeInfo {
                    in_flight_to: vec![in_flight("gone", 4)],
                    ..info("b", 0, 0)
                }),
                vec![],
            ),
            answer("c", None, vec![]),
        ];
        let left = Departure {
            for_good: true,
            counters: 2,
            known: true,
            value: 0,
            operations: 0,
            issued_value: 5,
            issued_operations: 2,
            in_flight_operations: 0,
            store_id: 0,
        };
        let departed = departed_nodes(vec![("gone".into(), 1_000, left)], &nodes);
        assert_eq!(
            departed,
            [DepartedNode {
                name: "gone".into(),
                for_good: true,
                left_at_ms: 1_000,
                counters: 2,
                known: true,
                value: 0,
                operations: 0,
                issued_value: 5,
                issued_operations: 2,
                in_flight_operations: 0,
                in_flight_to_it: 7,
            }]
        );
    }
}
