//! One collection: discover every node agent and counter through the process groups,
//! ask every node at once for its part, and sum what answered before one shared deadline.
//!
//! Each node's agent answers `CollectLocal` by calling `GetStats` on all of its own
//! counters at once ([`local_report`]), so the network carries one request and one
//! answer per node instead of one per counter. Every call's timeout is the time left
//! until the same deadline, so a collection never takes much longer than its deadline
//! whatever the peers do. Whoever does not answer in time is reported, never silently
//! dropped: a missing counter is listed in `missing_counters` and makes the collection
//! incomplete, and so is every counter of a node that is unreachable.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::rpc::CallResult;
use ractor::{pg, ActorCell, ActorRef, Message, RpcReplyPort};
use shared::agent::{AgentMessage, LocalReport, NodeInfo};
use shared::counter::{CounterStats, StatsOutcome};
use shared::host::HostMessage;
use shared::protocol::{counter_name, owner_node, COUNTERS_GROUP, HOSTS_GROUP, NODES_GROUP};
use shared::stats::{ClusterStats, CounterReport, NodeStats};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::counter::CounterMessage;
use crate::membership::{Membership, PeerStatus, PeerView};

/// Calls `actor` and waits at most until `until`. Any failure (timeout, dropped reply,
/// a peer that went away) is `None`: the caller only needs to know it has no answer.
pub async fn call_until<M, R>(
    actor: ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<R>) -> M,
    until: Instant,
) -> Option<R>
where
    M: Message,
    R: Send + 'static,
{
    let remaining = until.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return None;
    }
    match tokio::time::timeout_at(until, actor.call(build, Some(remaining))).await {
        Ok(Ok(CallResult::Success(reply))) => Some(reply),
        _ => None,
    }
}

/// Process-group members that follow the naming scheme, one per name (a peer that is
/// briefly connected twice shows its actors twice).
fn named_members(group: &str) -> Vec<(String, ActorCell)> {
    let mut seen = HashSet::new();
    pg::get_members(&group.to_string())
        .into_iter()
        .filter_map(|cell| cell.get_name().map(|name| (name, cell)))
        .filter(|(name, _)| seen.insert(name.clone()))
        .collect()
}

/// Counter hosts currently known (this node's and its peers'), by node name, sorted.
pub fn hosts() -> Vec<(String, ActorRef<HostMessage>)> {
    let mut hosts: Vec<(String, ActorRef<HostMessage>)> = named_members(HOSTS_GROUP)
        .into_iter()
        .filter_map(|(name, cell)| owner_node(&name).map(|n| (n.to_string(), cell.into())))
        .collect();
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    hosts
}

/// The counter host of `node`, if it is known.
pub fn find_host(node: &str) -> Option<ActorRef<HostMessage>> {
    hosts()
        .into_iter()
        .find(|(n, _)| n == node)
        .map(|(_, host)| host)
}

/// Remote node agents currently known, by node name.
pub fn remote_agents() -> Vec<(String, ActorRef<AgentMessage>)> {
    named_members(NODES_GROUP)
        .into_iter()
        .filter(|(_, cell)| !cell.get_id().is_local())
        .filter_map(|(name, cell)| owner_node(&name).map(|n| (n.to_string(), cell.into())))
        .collect()
}

/// Share of a collection's remaining time a node gets for its own counters; the rest is
/// for its answer to travel back.
const NODE_SHARE: f64 = 0.8;

/// This node's part of a collection: `GetStats` on every local counter (found through
/// the counters group) at once, each call bounded by `until`.
pub async fn local_report(info: NodeInfo, until: Instant) -> LocalReport {
    let mut calls = JoinSet::new();
    for (name, cell) in named_members(COUNTERS_GROUP) {
        let counter: ActorRef<CounterMessage> = cell.into();
        calls.spawn(async move {
            let stats = call_until(counter, CounterMessage::GetStats, until).await;
            (name, stats.and_then(|StatsOutcome(s)| s.ok()))
        });
    }
    let mut counters = Vec::new();
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok(probe) => counters.push(probe),
            Err(error) => tracing::error!(%error, "a counter probe failed"),
        }
    }
    LocalReport { info, counters }
}

/// Runs one collection with the given deadline. `collected_by` names this node, and
/// `membership` says which peers it expects (reachable or not).
///
/// Nodes are discovered through the nodes group. Each node's agent gets one
/// `CollectLocal` call and answers for its own counters, which it discovers through its
/// counters group (each figure is still that counter's own `GetStats`), so a collection
/// costs one round trip per node, not one per counter. A node that does not answer has
/// every counter it is known to host listed missing.
pub async fn collect(
    collected_by: &str,
    membership: &Membership,
    deadline: Duration,
) -> ClusterStats {
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let until = started + deadline;
    let node_ms = deadline.mul_f64(NODE_SHARE).as_millis() as u64;

    let mut probes = JoinSet::new();
    for (name, cell) in named_members(NODES_GROUP) {
        let Some(node) = owner_node(&name).map(str::to_string) else {
            continue;
        };
        let agent: ActorRef<AgentMessage> = cell.into();
        probes.spawn(async move {
            let report = call_until(
                agent,
                |reply| AgentMessage::CollectLocal(node_ms, reply),
                until,
            )
            .await;
            (node, report)
        });
    }

    let mut nodes = Vec::new();
    let mut counters = Vec::new();
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok((node, Some(report))) => {
                nodes.push((node, Some(report.info)));
                counters.extend(report.counters);
            }
            Ok((node, None)) => nodes.push((node, None)),
            Err(error) => tracing::error!(%error, "a collection probe failed"),
        }
    }

    finish(
        collected_by,
        membership,
        (started, started_wall),
        deadline,
        nodes,
        counters,
    )
}

/// A collection the way the original article does it, kept as the baseline `node
/// bench` measures against: every node's agent asked for its description, then every
/// counter of every node (through its node's host) asked for its statistics, one call
/// after another, all within `deadline`.
pub async fn collect_sequential(
    collected_by: &str,
    membership: &Membership,
    deadline: Duration,
) -> ClusterStats {
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let until = started + deadline;
    let mut nodes = Vec::new();
    let mut counters = Vec::new();
    let hosts = hosts();
    for (name, cell) in named_members(NODES_GROUP) {
        let Some(node) = owner_node(&name).map(str::to_string) else {
            continue;
        };
        let agent: ActorRef<AgentMessage> = cell.into();
        let info = call_until(agent, AgentMessage::GetInfo, until).await;
        let host = hosts.iter().find(|(n, _)| *n == node).map(|(_, h)| h);
        if let (Some(info), Some(host)) = (&info, host) {
            for index in 0..info.counters {
                let stats = call_until(host.clone(), |r| HostMessage::GetStats(index, r), until)
                    .await
                    .and_then(|StatsOutcome(s)| s.ok());
                counters.push((counter_name(&node, index), stats));
            }
        }
        nodes.push((node, info));
    }
    finish(
        collected_by,
        membership,
        (started, started_wall),
        deadline,
        nodes,
        counters,
    )
}

/// Sums the answers and fills in the timing fields.
fn finish(
    collected_by: &str,
    membership: &Membership,
    (started, started_wall): (Instant, SystemTime),
    deadline: Duration,
    nodes: Vec<(String, Option<NodeInfo>)>,
    counters: Vec<(String, Option<CounterStats>)>,
) -> ClusterStats {
    let collected_at_ms = started_wall
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut stats = summarize(collected_by, membership.snapshot(), nodes, counters);
    if let Some(me) = stats.nodes.iter_mut().find(|n| n.name == collected_by) {
        me.since_ms = membership.started_ms();
    }
    stats.collected_at_ms = collected_at_ms;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    stats.deadline_ms = deadline.as_millis() as u64;
    stats
}

/// Builds the cluster statistics from the membership view and the probes' answers
/// (`None` = no answer in time). Every node in `peers` is reported, answered or not,
/// and every counter a node is known to host but that did not answer is listed
/// missing. Pure: timing fields are left at zero for the caller to fill.
pub fn summarize(
    collected_by: &str,
    peers: Vec<PeerView>,
    nodes: Vec<(String, Option<NodeInfo>)>,
    counters: Vec<(String, Option<CounterStats>)>,
) -> ClusterStats {
    let mut by_node: BTreeMap<String, NodeStats> = BTreeMap::new();
    // How many counters each node is known to host (from the membership or its answer).
    let mut hosts: BTreeMap<String, u32> = BTreeMap::new();
    let empty_node = |name: &str| NodeStats {
        name: name.to_string(),
        role: None,
        advertise: None,
        // Seen in the process groups but not (yet) in the membership: a session that
        // has just come up. Reachable, as far as anyone knows.
        reachable: true,
        since_ms: 0,
        answered: false,
        issued_value: 0,
        issued_operations: 0,
        counter_restarts: 0,
        counters: Vec::new(),
        missing_counters: Vec::new(),
    };

    by_node.insert(collected_by.to_string(), empty_node(collected_by));
    for peer in peers {
        let mut entry = empty_node(&peer.name);
        entry.role = peer.role;
        entry.advertise = Some(peer.addr);
        entry.reachable = peer.status == PeerStatus::Up;
        entry.since_ms = peer.since_ms;
        if let Some(n) = peer.counters {
            hosts.insert(peer.name.clone(), n);
        }
        by_node.insert(peer.name, entry);
    }

    for (name, info) in nodes {
        let entry = by_node
            .entry(name.clone())
            .or_insert_with(|| empty_node(&name));
        if let Some(info) = info {
            entry.role = Some(info.role);
            entry.advertise = Some(info.advertise);
            entry.answered = true;
            entry.issued_value = info.issued_value;
            entry.issued_operations = info.issued_operations;
            entry.counter_restarts = info.counter_restarts;
            hosts.insert(name, info.counters);
        }
    }

    let mut total_value: i128 = 0;
    let mut total_operations: u128 = 0;
    let mut lifetime_rates = 0.0;
    let mut recent_ops_per_sec = 0.0;
    let mut answered = 0;
    for (name, stats) in counters {
        let node = owner_node(&name).unwrap_or("?").to_string();
        let entry = by_node
            .entry(node.clone())
            .or_insert_with(|| empty_node(&node));
        match stats {
            Some(s) => {
                answered += 1;
                total_value += i128::from(s.value);
                total_operations += u128::from(s.operations);
                lifetime_rates += s.ops_per_sec;
                recent_ops_per_sec += s.recent_ops_per_sec;
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

    // Counters a node hosts that were not even discovered (its session is down) are
    // missing too, by name.
    for (node, count) in hosts {
        let Some(entry) = by_node.get_mut(&node) else {
            continue;
        };
        let seen: HashSet<String> = entry
            .counters
            .iter()
            .map(|c| c.name.clone())
            .chain(entry.missing_counters.iter().cloned())
            .collect();
        for index in 0..count {
            let name = counter_name(&node, index);
            if !seen.contains(&name) {
                entry.missing_counters.push(name);
            }
        }
    }

    let mut nodes: Vec<NodeStats> = by_node.into_values().collect();
    let mut missing_counters = Vec::new();
    for node in &mut nodes {
        node.counters
            .sort_by(|a, b| natural_key(&a.name).cmp(&natural_key(&b.name)));
        node.missing_counters
            .sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        missing_counters.extend(node.missing_counters.iter().cloned());
    }

    let reachable_nodes = nodes.iter().filter(|n| n.reachable && n.answered).count();
    ClusterStats {
        collected_by: collected_by.to_string(),
        collected_at_ms: 0,
        duration_ms: 0,
        deadline_ms: 0,
        total_value,
        total_operations,
        num_counters: answered,
        known_counters: answered + missing_counters.len(),
        num_nodes: nodes.len(),
        reachable_nodes,
        complete: missing_counters.is_empty() && reachable_nodes == nodes.len(),
        avg_ops_per_sec: if answered > 0 {
            lifetime_rates / answered as f64
        } else {
            0.0
        },
        recent_ops_per_sec,
        issued_value: nodes.iter().map(|n| i128::from(n.issued_value)).sum(),
        issued_operations: nodes.iter().map(|n| u128::from(n.issued_operations)).sum(),
        missing_counters,
        nodes,
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
        }
    }

    #[test]
    fn sums_complete_collection() {
        let s = summarize(
            "a",
            vec![peer("b", PeerStatus::Up, Some(1))],
            vec![
                ("a".into(), Some(info("a", 5, 3))),
                (
                    "b".into(),
                    Some(NodeInfo {
                        counters: 1,
                        ..info("b", -2, 4)
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
}
