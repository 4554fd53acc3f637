//! `node-bench --nodes N`: a cluster of N nodes on loopback, one process each with 4
//! counters, a data dir and the coordinator's periodic collections on, and what it
//! takes to run it:
//!
//! - formed: from the first process started to a complete collection of every node, and
//!   from the last one started (the first is started alone, the others from a few
//!   threads at once, as an orchestrator starts replicas);
//! - a full collection (the median of several, all complete);
//! - idle CPU, wake-ups and messages sent to peers per node over `--light-seconds`
//!   (heartbeats, gossip and collections are all an idle node does, so they are its
//!   cost; the messages are the frames its member links carried out, from each node's
//!   `/metrics`);
//! - false alarms: members declared unreachable (a `peer unreachable` line in any
//!   node's log) from formation to the end of the idle window, while every node runs;
//! - a `kill -9` seen by every member (none lists the node as up any more), a frozen
//!   node (SIGSTOP) declared by every member, against `--failure-timeout` (2 s);
//! - the killed node restarted: the cluster complete again.

use std::path::Path;
use std::time::Duration;

use node::{ClusterClient, CommandError, DEV_COOKIE};
use serde::Serialize;
use tokio::time::Instant;

use super::light::{info, max, mean, measure};
use super::nodes::{free_port, BenchNode};
use super::{median, stats, step, wait_for_cluster};

/// Counters per node.
const COUNTERS: u32 = 4;
/// Collections timed.
const COLLECTIONS: usize = 9;
/// The nodes' failure timeout (their default).
const FAILURE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `--nodes` measures.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ManyReport {
    /// Nodes in the cluster.
    pub(crate) many_nodes: u32,
    /// From the first process started to a complete collection of all, ms.
    pub(crate) formed_ms: f64,
    /// From the last process started to a complete collection of all, ms.
    pub(crate) formed_after_last_start_ms: f64,
    /// Median time of a full collection (all complete), ms.
    pub(crate) collection_ms: f64,
    /// Idle CPU per node, mean and busiest, ms/s.
    pub(crate) idle_cpu_ms_per_s: f64,
    pub(crate) idle_cpu_ms_per_s_max: f64,
    /// Idle wake-ups per node per second, mean.
    pub(crate) idle_wakeups_per_s: f64,
    /// Messages (frames) an idle node sent to its peers per second, mean and busiest.
    pub(crate) idle_messages_per_s: f64,
    pub(crate) idle_messages_per_s_max: f64,
    /// Members declared unreachable while all ran (formation to the end of the idle
    /// window), over every node's log.
    pub(crate) false_alarms: u64,
    /// How long the nodes ran before the false alarms were counted, s.
    pub(crate) false_alarm_window_s: f64,
    /// From `kill -9` of a node until no member lists it as up, ms.
    pub(crate) kill_seen_by_all_ms: f64,
    /// From SIGSTOP of a node until no member lists it as up, ms.
    pub(crate) frozen_declared_by_all_ms: f64,
    /// From the killed node's restart to a complete collection of all, ms.
    pub(crate) rejoined_ms: f64,
}

/// Runs the many-node measurements.
pub(crate) async fn many(
    dir: &Path,
    nodes: u32,
    window: Duration,
) -> Result<ManyReport, CommandError> {
    let mut report = ManyReport {
        many_nodes: nodes,
        ..ManyReport::default()
    };
    step(&format!("{nodes} nodes, one process each: formation"));
    let began = Instant::now();
    let (mut cluster, https) = start_all(dir, nodes)?;
    let all_started = Instant::now();
    let seed = cluster[0].addr.clone();
    let counters = nodes * COUNTERS;
    wait_for_cluster(&seed, nodes as usize, counters, Duration::from_secs(120)).await?;
    report.formed_ms = began.elapsed().as_secs_f64() * 1e3;
    report.formed_after_last_start_ms = all_started.elapsed().as_secs_f64() * 1e3;

    step(&format!(
        "{COLLECTIONS} full collections of {counters} counters"
    ));
    report.collection_ms = time_collections(&seed, counters).await?;

    step(&format!(
        "idle CPU, wake-ups and messages per node over {window:?}"
    ));
    let sent_before = messages_sent(&https).await?;
    let at = Instant::now();
    let costs = measure(&cluster, window).await?;
    let sent_after = messages_sent(&https).await?;
    let seconds = at.elapsed().as_secs_f64();
    let rates: Vec<f64> = sent_before
        .iter()
        .zip(&sent_after)
        .map(|(before, after)| (after - before) / seconds)
        .collect();
    report.idle_cpu_ms_per_s = mean(costs.iter().map(|c| c.cpu_ms_per_s));
    report.idle_cpu_ms_per_s_max = max(costs.iter().map(|c| c.cpu_ms_per_s));
    report.idle_wakeups_per_s = mean(costs.iter().map(|c| c.wakeups_per_s));
    report.idle_messages_per_s = mean(rates.iter().copied());
    report.idle_messages_per_s_max = max(rates.iter().copied());
    report.false_alarms = false_alarms(&cluster)?;
    report.false_alarm_window_s = began.elapsed().as_secs_f64();

    // The last node is killed, the one before it frozen; the others watch.
    let (killed, frozen) = (cluster.len() - 1, cluster.len() - 2);
    step(&format!("kill -9 of {}", cluster[killed].name));
    let at = Instant::now();
    cluster[killed].kill();
    let watchers: Vec<String> = cluster[..frozen].iter().map(|n| n.addr.clone()).collect();
    let name = cluster[killed].name.clone();
    seen_gone_by_all(&watchers, &name, Duration::from_secs(10)).await?;
    report.kill_seen_by_all_ms = at.elapsed().as_secs_f64() * 1e3;

    step(&format!("SIGSTOP of {}", cluster[frozen].name));
    let at = Instant::now();
    cluster[frozen].signal("STOP")?;
    let name = cluster[frozen].name.clone();
    let declared = seen_gone_by_all(&watchers, &name, FAILURE_TIMEOUT * 5).await;
    report.frozen_declared_by_all_ms = at.elapsed().as_secs_f64() * 1e3;
    cluster[frozen].signal("CONT")?;
    declared?;

    step(&format!("{} restarted", cluster[killed].name));
    let at = Instant::now();
    cluster[killed].restart()?;
    wait_for_cluster(&seed, nodes as usize, counters, Duration::from_secs(60)).await?;
    report.rejoined_ms = at.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Threads that start the nodes after the first.
const STARTERS: usize = 8;

/// Starts `nodes` nodes: the first (the seed), then the others from [`STARTERS`]
/// threads at once, as an orchestrator starts replicas in parallel. Started one after
/// another, each start waits for its process to be scheduled and exec the binary, and
/// with the nodes already started taking both CPUs, 100 starts took 0.8-1.45 s of
/// the formation measured. Each node with its HTTP address, in name order.
fn start_all(dir: &Path, nodes: u32) -> Result<(Vec<BenchNode>, Vec<String>), CommandError> {
    let start = |i: u32, seed: Option<&str>| -> Result<(BenchNode, String), CommandError> {
        let http = format!("127.0.0.1:{}", free_port()?);
        let extra = ["--stats-interval", "2", "--http", http.as_str()];
        let node = BenchNode::start_with(dir, &format!("n-{i:02}"), COUNTERS, seed, &extra)?;
        Ok((node, http))
    };
    let first = start(0, None)?;
    let seed = first.0.addr.clone();
    let rest: Vec<u32> = (1..nodes).collect();
    let chunk = rest.len().div_ceil(STARTERS).max(1);
    let started: Vec<Result<(BenchNode, String), CommandError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = rest
            .chunks(chunk)
            .map(|some| {
                let (start, seed) = (&start, seed.as_str());
                scope.spawn(move || {
                    some.iter()
                        .map(|&i| start(i, Some(seed)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| {
                t.join().unwrap_or_else(|_| {
                    vec![Err(CommandError::Local("a starting thread failed".into()))]
                })
            })
            .collect()
    });
    let (mut cluster, mut https) = (vec![first.0], vec![first.1]);
    for result in started {
        let (node, http) = result?;
        cluster.push(node);
        https.push(http);
    }
    Ok((cluster, https))
}

/// The metric of the messages (frames) a node sent to each peer over its member links.
const SENT_MESSAGES: &str = "counter_cluster_peer_sent_messages_total{";

/// Each node's messages sent to its peers so far, from its `/metrics` (their sum over
/// peers), in the order of `https`.
async fn messages_sent(https: &[String]) -> Result<Vec<f64>, CommandError> {
    let mut sent = Vec::new();
    for http in https {
        let (status, body) = node::http_get(http, "/metrics", Duration::from_secs(10)).await?;
        if status != 200 {
            return Err(CommandError::Local(format!(
                "GET {http}/metrics answered {status}"
            )));
        }
        let text = String::from_utf8_lossy(&body);
        let total: f64 = text
            .lines()
            .filter(|line| line.starts_with(SENT_MESSAGES))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        sent.push(total);
    }
    Ok(sent)
}

/// The median of [`COLLECTIONS`] full collections through `addr`, after one not timed.
async fn time_collections(addr: &str, counters: u32) -> Result<f64, CommandError> {
    let client = ClusterClient::connect(addr, DEV_COOKIE, None, Duration::from_secs(10)).await?;
    let mut times = Vec::new();
    for run in 0..=COLLECTIONS {
        let at = Instant::now();
        let collected = stats(&client, Duration::from_secs(10)).await;
        let took = at.elapsed().as_secs_f64() * 1e3;
        let collected = match collected {
            Ok(s) => s,
            Err(e) => {
                client.close().await;
                return Err(e);
            }
        };
        if !collected.complete || collected.num_counters != counters as usize {
            client.close().await;
            return Err(CommandError::Local(format!(
                "an incomplete collection ({} of {counters} counters)",
                collected.num_counters
            )));
        }
        if run > 0 {
            times.push(took);
        }
    }
    client.close().await;
    Ok(median(&mut times))
}

/// Waits until no node at `watchers` lists `name` among the peers it has up, asking
/// them all at once, round after round.
/// `peer unreachable` lines in the nodes' logs (a member declared unreachable, by its
/// silence, a confirmed suspicion or a closed connection).
fn false_alarms(cluster: &[BenchNode]) -> Result<u64, CommandError> {
    let mut alarms = 0;
    for node in cluster {
        let log = std::fs::read_to_string(&node.log)
            .map_err(|e| CommandError::Local(format!("cannot read {}: {e}", node.log.display())))?;
        alarms += log
            .lines()
            .filter(|l| l.contains("peer unreachable"))
            .count() as u64;
    }
    Ok(alarms)
}

async fn seen_gone_by_all(
    watchers: &[String],
    name: &str,
    within: Duration,
) -> Result<(), CommandError> {
    let deadline = Instant::now() + within;
    loop {
        let asked: Vec<_> = watchers
            .iter()
            .map(|addr| {
                let addr = addr.clone();
                tokio::spawn(async move { info(&addr).await })
            })
            .collect();
        let mut views = Vec::new();
        for view in asked {
            views.push(
                view.await
                    .unwrap_or_else(|e| Err(CommandError::Local(e.to_string()))),
            );
        }
        let still: Vec<&String> = watchers
            .iter()
            .zip(&views)
            .filter(|(_, view)| match view {
                Ok(info) => info.known_peers.iter().any(|p| p.name == name),
                Err(_) => true,
            })
            .map(|(addr, _)| addr)
            .collect();
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CommandError::Local(format!(
                "{} node(s) still list {name} as up after {within:?} (e.g. {})",
                still.len(),
                still[0]
            )));
        }
    }
}

/// The figures beside their goals (issue 25's, for 64 nodes).
pub(crate) fn many_table(r: &ManyReport) -> String {
    let rows = [
        (
            "formed, complete",
            format!(
                "{:.0} ms ({:.0} after the last start)",
                r.formed_ms, r.formed_after_last_start_ms
            ),
            "<= 3,000 ms (64 nodes)".to_string(),
        ),
        (
            "full collection",
            format!(
                "{:.1} ms ({} counters)",
                r.collection_ms,
                r.many_nodes * COUNTERS
            ),
            "<= 50 ms (64 x 4)".to_string(),
        ),
        (
            "idle CPU per node",
            format!(
                "{:.1} ms/s (busiest {:.1})",
                r.idle_cpu_ms_per_s, r.idle_cpu_ms_per_s_max
            ),
            "reported; grows with N only by the coordinator's collections".to_string(),
        ),
        (
            "idle wake-ups per node",
            format!("{:.1}/s", r.idle_wakeups_per_s),
            "reported (heartbeats, gossip, collections)".to_string(),
        ),
        (
            "idle messages sent per node",
            format!(
                "{:.1}/s (busiest {:.1})",
                r.idle_messages_per_s, r.idle_messages_per_s_max
            ),
            "constant in N (heartbeats, gossip; collections)".to_string(),
        ),
        (
            "false alarms while all ran",
            format!("{} in {:.0} s", r.false_alarms, r.false_alarm_window_s),
            "0 (64 nodes, 60 s)".to_string(),
        ),
        (
            "kill -9 seen by every member",
            format!("{:.0} ms", r.kill_seen_by_all_ms),
            "<= 500 ms".to_string(),
        ),
        (
            "SIGSTOP declared by every member",
            format!("{:.0} ms", r.frozen_declared_by_all_ms),
            format!("<= {} ms (--failure-timeout)", FAILURE_TIMEOUT.as_millis()),
        ),
        (
            "killed node restarted: complete again",
            format!("{:.0} ms", r.rejoined_ms),
            "reported".to_string(),
        ),
    ];
    let mut out = format!(
        "{} nodes on loopback, {COUNTERS} counters and a data dir each\n{:<40} {:<32} goal\n",
        r.many_nodes, "figure", "value"
    );
    for (figure, value, goal) in rows {
        out.push_str(&format!("{figure:<40} {value:<32} {goal}\n"));
    }
    out
}
