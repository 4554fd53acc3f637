//! One collection over the whole cluster: ask every node's counter host at once for
//! its part, page by page, and sum what answered before one shared deadline.
//!
//! Nodes are discovered through the hosts group. Each host answers `Collect` with its
//! node's description and the `GetStats` of up to [`COLLECT_PAGE`] of its counters
//! (see [`CounterHost`](crate::counters::host::CounterHost)), and where its next page
//! starts; so the network carries one request and one answer per page instead of one
//! per counter, and no answer outgrows a frame. Each node's pages are asked one after
//! another, the next as soon as the one before it is in, every node at once (a task
//! per node, as many as there are members): a slow node does not hold up another's
//! pages. Every call's timeout is the time left until the same deadline, and no page is
//! asked once it has passed, so a collection never takes much longer than its deadline
//! whatever the peers do. Whoever does not
//! answer in time is reported, never silently dropped: a missing counter is listed in
//! `missing_counters` and makes the collection incomplete, and so is every counter of a
//! node that is unreachable or busy, and every counter of the pages a node did not
//! answer.
//!
//! Each counter's line is kept while all of them fit in one answer; past that, only
//! sums and the first missing names (see [`super::lines`]), so a node of a million
//! counters passes through the collecting node a page at a time.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use shared::agent::NodeInfo;
use shared::host::{CollectReply, HostMessage, LocalReport, COLLECT_PAGE};
use shared::protocol::parse_counter_name;
use shared::stats::ClusterStats;
use tokio::time::Instant;

use super::lines::{LineBudget, NodeCounters, ANSWER_LIMIT};
use super::summarize::{departed_nodes, summarize, NodeAnswer};
use crate::clock::unix_millis;
use crate::cluster::discovery::hosts;
use crate::cluster::rpc::ask;
use crate::facts::NodeFacts;

/// Share of a page's time a node gets for its own counters; the rest is for its answer
/// to travel back.
const NODE_SHARE: f64 = 0.8;

/// Whether node `node`'s page, asked from counter `first`, speaks for that node only:
/// its description (see [`crate::cluster::policy::of_itself`]), and the counters it
/// says it has from `first` on, each named after it and its place, at most a page of
/// them, with the next page after them and within them. Any other page counts as no
/// answer.
fn of_itself(node: &str, first: u32, report: &LocalReport) -> bool {
    let counters = u64::from(report.info.counters);
    let end = u64::from(first) + report.counters.len() as u64;
    let next_fits = match report.next {
        None => true,
        Some(next) => u64::from(next) == end && end < counters && end > u64::from(first),
    };
    crate::cluster::policy::of_itself(node, &report.info)
        && report.first == first
        && report.counters.len() <= COLLECT_PAGE as usize
        && end <= counters
        && next_fits
        && report.counters.iter().zip(first..).all(|(stats, index)| {
            stats.as_ref().is_none_or(|stats| {
                parse_counter_name(&stats.name)
                    .is_some_and(|(owner, at)| owner == node && at == index)
            })
        })
}

/// One node's part of a collection as its pages come in.
struct Reading {
    node: String,
    host: ActorRef<HostMessage>,
    /// The node's description, from its first page (`None`: it did not answer).
    info: Option<NodeInfo>,
    /// Its counters so far.
    counters: NodeCounters,
    /// The next page to ask for, if any.
    next: Option<u32>,
    /// The collection's lines, over every node.
    budget: Arc<LineBudget>,
}

impl Reading {
    fn new(node: String, host: ActorRef<HostMessage>, budget: Arc<LineBudget>) -> Self {
        Self {
            node,
            host,
            info: None,
            counters: NodeCounters::default(),
            next: Some(0),
            budget,
        }
    }

    /// Takes the answer to page `first`; a page missing or not of the node's own ends
    /// the node's reading there (its other counters are then missing).
    fn take(&mut self, first: u32, answer: Option<CollectReply>) {
        let report = match answer {
            Some(CollectReply(Some(report)))
                if of_itself(&self.node, first, &report) && self.same_node(&report.info) =>
            {
                report
            }
            // No answer, too busy to collect, or another run of the node than its first
            // page's.
            _ => {
                self.next = None;
                return;
            }
        };
        self.next = report.next;
        self.counters
            .add_page(&self.node, first, report.counters, &self.budget);
        // The first page's description: what the node says it applied is no more
        // recent than what its counters hold on every page after it.
        self.info.get_or_insert(report.info);
    }

    /// Whether a page's description is of the same run of the node, with as many
    /// counters, as its first page's.
    fn same_node(&self, info: &NodeInfo) -> bool {
        self.info.as_ref().is_none_or(|first| {
            first.incarnation == info.incarnation && first.counters == info.counters
        })
    }

    /// Asks for the node's pages, each as soon as the one before it is in, until its
    /// last page or `until`.
    async fn read(mut self, until: Instant) -> Self {
        while let Some(first) = self.next {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.next = None;
                break;
            }
            let node_ms = left.mul_f64(NODE_SHARE).as_millis() as u64;
            let page = |reply| HostMessage::Collect {
                deadline_ms: node_ms,
                first,
                reply,
            };
            let answer = match ask(&self.host, page, left) {
                Some(rx) => tokio::time::timeout_at(until, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
                None => None,
            };
            self.take(first, answer);
        }
        self
    }
}

/// Runs one collection with the given deadline, as seen from this node (`facts`: who
/// collects, and which peers it expects, reachable or not).
pub(crate) async fn collect(facts: &NodeFacts, deadline: Duration) -> Collection {
    let started = Instant::now();
    let collected_at_ms = unix_millis();
    let until = started + deadline;
    let budget = Arc::new(LineBudget::new(ANSWER_LIMIT));

    // A chain of pages per node, in a task each (as many as there are members, each
    // gone by the deadline): a slow node does not hold up another's next page.
    // A member that said it left is counted under `departed` with what it took: its
    // host, still up for the moment it takes to stop, is not read as well.
    let departed: Vec<String> = facts
        .membership
        .departed()
        .into_iter()
        .map(|(name, ..)| name)
        .collect();
    let mut reading = tokio::task::JoinSet::new();
    for (node, host) in hosts()
        .into_iter()
        .filter(|(node, _)| !departed.contains(node))
    {
        reading.spawn(Reading::new(node, host, Arc::clone(&budget)).read(until));
    }
    let mut readings = Vec::new();
    while let Some(done) = reading.join_next().await {
        match done {
            Ok(done) => readings.push(done),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: nobody waits for this collection.
            Err(_) => std::future::pending::<()>().await,
        }
    }
    readings.sort_by(|a, b| a.node.cmp(&b.node));
    let mut nodes = Vec::with_capacity(readings.len());
    for reading in readings {
        if let Some(info) = &reading.info {
            // What a peer says of itself here is as good as gossip, and newer.
            if info.name != facts.name {
                facts.membership.describe(info, Instant::now());
            }
        }
        nodes.push(NodeAnswer {
            name: reading.node,
            info: reading.info,
            counters: reading.counters,
        });
    }

    let (me, peers, started_ms) = (
        facts.name.clone(),
        facts.membership.snapshot(),
        facts.membership.started_ms(),
    );
    // Names for the counters of nodes that did not answer (a million, for a node of a
    // million counters gone) take long enough to hold up an async worker, and with it
    // heartbeats: then the summing runs on a blocking thread.
    let unread = peers
        .iter()
        .map(|p| p.counters.unwrap_or(0) as usize)
        .chain(
            nodes
                .iter()
                .filter_map(|n| n.info.as_ref())
                .map(|i| i.counters as usize),
        )
        .sum::<usize>()
        .saturating_sub(nodes.iter().map(|n| n.counters.read as usize).sum());
    let departed = departed_nodes(facts.membership.departed(), &nodes);
    let sum = {
        let budget = Arc::clone(&budget);
        move || {
            let mut stats = summarize(&me, peers, nodes, &budget);
            stats.departed = departed;
            if let Some(mine) = stats.nodes.iter_mut().find(|n| n.name == me) {
                mine.since_ms = started_ms;
            }
            stats
        }
    };
    let mut stats = if unread <= COLLECT_PAGE as usize {
        sum()
    } else {
        match crate::runtime::busy_poll::spawn_blocking(sum).await {
            Ok(stats) => stats,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: nobody waits for this collection.
            Err(_) => std::future::pending().await,
        }
    };
    stats.collected_at_ms = collected_at_ms;
    stats.duration_ms = started.elapsed().as_millis() as u64;
    stats.deadline_ms = deadline.as_millis() as u64;
    facts.metrics.collected(started.elapsed().as_secs_f64());
    Collection {
        stats,
        lines_left_out: (!budget.kept()).then(|| budget.used()),
    }
}

/// A collection's result.
#[derive(Debug)]
pub(crate) struct Collection {
    /// The statistics: with a line per counter unless they were left out.
    pub(crate) stats: ClusterStats,
    /// When the lines were more than one answer carries, and were left out: what
    /// decoding them would take.
    pub(crate) lines_left_out: Option<usize>,
}

#[cfg(test)]
mod tests {
    use shared::counter::CounterStats;

    use super::*;

    fn stats(name: &str) -> CounterStats {
        CounterStats {
            name: name.to_string(),
            value: 1,
            operations: 1,
            rejected: 0,
            ops_per_sec: 0.0,
            recent_ops_per_sec: 0.0,
            uptime_ms: 1,
        }
    }

    /// Node `w` of 5 counters, page from `first` with these lines.
    fn page(first: u32, lines: &[Option<&str>], next: Option<u32>) -> LocalReport {
        LocalReport {
            info: NodeFacts::for_tests("w", 5).info(),
            first,
            counters: lines.iter().map(|l| l.map(stats)).collect(),
            next,
        }
    }

    /// A page is taken only as the node's own counters in their places, with the next
    /// page right after them and within the node's counters.
    #[test]
    fn a_page_speaks_only_for_its_node_and_its_places() {
        let good = page(2, &[Some("w/2"), None], Some(4));
        assert!(of_itself("w", 2, &good));
        assert!(of_itself(
            "w",
            3,
            &page(3, &[Some("w/3"), Some("w/4")], None)
        ));
        // Asked for another page; another node's name; a counter out of its place.
        assert!(!of_itself("w", 0, &good));
        assert!(!of_itself("x", 2, &good));
        assert!(!of_itself("w", 2, &page(2, &[Some("w/3")], Some(3))));
        assert!(!of_itself("w", 2, &page(2, &[Some("x/2")], Some(3))));
        // Beyond the node's counters; a next page that skips, repeats or is past the end.
        assert!(!of_itself("w", 4, &page(4, &[None, None], None)));
        assert!(!of_itself("w", 2, &page(2, &[None], Some(4))));
        assert!(!of_itself("w", 2, &page(2, &[], Some(2))));
        assert!(!of_itself("w", 4, &page(4, &[None], Some(5))));
    }

    /// A node's pages add up to its counters in order; a page that does not answer ends
    /// the node's reading there.
    #[tokio::test]
    async fn a_reading_takes_pages_in_order_and_stops_at_a_missing_one() {
        let (host, handle) = crate::testing::Hoarder::<HostMessage>::start(None, None).await;
        let budget = Arc::new(LineBudget::new(ANSWER_LIMIT));
        let mut reading = Reading::new("w".into(), host.clone(), budget);
        reading.take(
            0,
            Some(CollectReply(Some(page(0, &[Some("w/0"), None], Some(2))))),
        );
        assert_eq!(reading.next, Some(2));
        // A page of another run of the node (here: with more counters) ends it too.
        let mut other = page(2, &[Some("w/2")], Some(3));
        other.info.counters = 6;
        reading.take(2, Some(CollectReply(Some(other))));
        assert_eq!(reading.next, None);
        assert_eq!(reading.counters.read, 2);
        reading.next = Some(2);
        reading.take(2, Some(CollectReply(None)));
        assert_eq!(reading.next, None);
        let lines: Vec<_> = reading.counters.lines.iter().map(|l| &l.name).collect();
        assert_eq!(lines, ["w/0"]);
        assert_eq!(reading.counters.missing, ["w/1"]);
        assert_eq!(reading.info.map(|i| i.counters), Some(5));
        host.stop(None);
        handle.await.unwrap();
    }
}
