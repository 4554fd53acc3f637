//! One collection over the whole cluster: ask every node's counter host at once for
//! its part, and sum what answered before one shared deadline.
//!
//! Nodes are discovered through the hosts group. Each host answers `Collect` with its
//! node's description and every one of its counters' own `GetStats` (see
//! [`CounterHost`](crate::counters::host::CounterHost)), so the network carries one
//! request and one answer per node instead of one per counter. Every call's timeout is
//! the time left until the same deadline, so a collection never takes much longer than
//! its deadline whatever the peers do, and no task is spawned per node. Whoever does not
//! answer in time is reported, never silently dropped: a missing counter is listed in
//! `missing_counters` and makes the collection incomplete, and so is every counter of a
//! node that is unreachable or busy.

use std::time::Duration;

use shared::host::{CollectReply, HostMessage, LocalReport};
use shared::protocol::parse_counter_name;
use shared::stats::ClusterStats;
use tokio::time::Instant;

use super::summarize::summarize;
use crate::clock::unix_millis;
use crate::cluster::discovery::hosts;
use crate::cluster::rpc::{ask, gather};
use crate::facts::NodeFacts;

/// Share of a collection's time a node gets for its own counters; the rest is for its
/// answer to travel back.
const NODE_SHARE: f64 = 0.8;

/// Whether node `node`'s report speaks for that node only: its description (see
/// [`crate::cluster::policy::of_itself`]), and at most as many counters as it says it
/// has, each named after it, within them, and once. Any other report counts as no
/// answer.
fn of_itself(node: &str, report: &LocalReport) -> bool {
    let counters = report.info.counters;
    let mut seen = std::collections::HashSet::with_capacity(report.counters.len());
    crate::cluster::policy::of_itself(node, &report.info)
        && report.counters.len() <= counters as usize
        && report.counters.iter().all(|(name, _)| {
            parse_counter_name(name).is_some_and(|(owner, index)| {
                owner == node && index < counters && seen.insert(index)
            })
        })
}

/// Runs one collection with the given deadline, as seen from this node (`facts`: who
/// collects, and which peers it expects, reachable or not).
pub(crate) async fn collect(facts: &NodeFacts, deadline: Duration) -> ClusterStats {
    let started = Instant::now();
    let collected_at_ms = unix_millis();
    let until = started + deadline;
    let node_ms = deadline.mul_f64(NODE_SHARE).as_millis() as u64;

    let pending = hosts()
        .into_iter()
        .map(|(node, host)| {
            let rx = ask(
                &host,
                |reply| HostMessage::Collect(node_ms, reply),
                deadline,
            );
            (node, rx)
        })
        .collect();
    let mut nodes = Vec::new();
    let mut counters = Vec::new();
    for (node, answer) in gather(pending, until).await {
        match answer {
            Some(CollectReply(Some(report))) if of_itself(&node, &report) => {
                // What a peer says of itself here is as good as gossip, and newer.
                if report.info.name != facts.name {
                    facts.membership.describe(&report.info, Instant::now());
                }
                nodes.push((node, Some(report.info)));
                counters.extend(report.counters);
            }
            // No answer, or too busy to collect: the node did not answer.
            _ => nodes.push((node, None)),
        }
    }

    let membership = &facts.membership;
    let mut stats = summarize(&facts.name, membership.snapshot(), nodes, counters);
    if let Some(me) = stats.nodes.iter_mut().find(|n| n.name == facts.name) {
        me.since_ms = membership.started_ms();
    }
    stats.collected_at_ms = collected_at_ms;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    stats.deadline_ms = deadline.as_millis() as u64;
    facts.metrics.collected(started.elapsed().as_secs_f64());
    stats
}
