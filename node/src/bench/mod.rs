//! `node bench`: measures this machine's cluster against its own raw TCP, with real
//! node processes (one per node) on loopback, and prints a table or one JSON object.
//!
//! | part | what it measures |
//! | --- | --- |
//! | [`raw_tcp`] | the reference: length-prefixed bincode frames over one loopback connection |
//! | [`nodes`] | starting node processes and reading their memory |
//! | [`sender`] | the client process that pushes increments or times calls |
//!
//! Figures are reported, never asserted: the goals are printed beside them. What each
//! figure means is in `BENCHMARKS.md`.

pub mod nodes;
pub mod raw_tcp;
pub mod sender;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use shared::agent::{ClientAnswer, ClientRequest};
use shared::stats::ClusterStats;
use tokio::time::Instant;

use crate::client::ClusterClient;
use crate::cookie::DEV_COOKIE;
use crate::error::CommandError;
use crate::push::Mode;
use nodes::BenchNode;
use sender::{Measure, SenderReport};

/// What `node bench` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Print one JSON object instead of a table.
    pub json: bool,
    /// Run the scale scenario instead of the figures.
    pub scale: bool,
    /// Increments pushed, coalesced.
    pub ops: u64,
    /// Increments pushed one message each.
    pub unbatched_ops: u64,
    /// Sequential calls timed.
    pub calls: u64,
    /// Collections timed.
    pub collections: u32,
    /// Counters over the 3-node cluster the collections run on.
    pub counters: u32,
    /// Counters on the node the pushes go to.
    pub push_counters: u32,
    /// Counters per node in the scale scenario.
    pub scale_counters: u32,
    /// Raw TCP frames sent for the reference.
    pub raw_frames: u64,
}

/// The figures of one `node bench` run (the `--json` output).
#[derive(Debug, Default, Serialize)]
pub struct BenchReport {
    /// Logical CPUs the machine offers.
    pub cpus: usize,
    /// Length-prefixed bincode frames per second over one loopback TCP connection.
    pub raw_tcp_frames_per_sec: f64,
    /// Coalesced increments per second from a client process to a node, checked exact.
    pub remote_increments_per_sec: f64,
    /// `remote_increments_per_sec / raw_tcp_frames_per_sec`.
    pub remote_increments_vs_raw_tcp: f64,
    /// Operations carried per network message in the coalesced push.
    pub remote_increments_ops_per_message: f64,
    /// Whether every counter moved by exactly what was pushed (both pushes).
    pub remote_increments_exact: bool,
    /// Increments per second, one network message each.
    pub remote_increments_per_sec_unbatched: f64,
    /// Median round trip of a `GetStats` call from a client process to a node.
    pub remote_call_p50_us: f64,
    /// 99th percentile of the same.
    pub remote_call_p99_us: f64,
    /// Median time of one collection of all counters (one request per node).
    pub aggregate_10k_ms: f64,
    /// Median time of one collection calling every counter one after another.
    pub aggregate_10k_sequential_ms: f64,
    /// Counters the collections covered (3 nodes).
    pub aggregate_counters: u32,
    /// The pushing client's peak resident memory, in MiB.
    pub sender_peak_rss_mb: f64,
    /// Increments in the coalesced push.
    pub push_operations: u64,
    /// Counters on the node the pushes went to.
    pub push_counters: u32,
    /// Resident memory per counter, in KiB: (a cluster node's RSS minus an empty
    /// node's) over its counters.
    pub rss_per_counter_kb: f64,
}

/// The figures of `node bench --scale`.
#[derive(Debug, Default, Serialize)]
pub struct ScaleReport {
    /// Nodes started.
    pub scale_nodes: u32,
    /// Counters per node.
    pub scale_counters_per_node: u32,
    /// From starting the processes to the first complete collection.
    pub scale_form_ms: f64,
    /// Median time of a full collection of every counter (totals only).
    pub scale_collect_ms: f64,
    /// Counters in the last collection.
    pub scale_collected_counters: usize,
    /// Whether the last collection was complete.
    pub scale_complete: bool,
    /// Largest resident memory of any node after the collections, in MiB.
    pub scale_rss_mb_max: f64,
    /// Largest peak resident memory of any node, in MiB.
    pub scale_peak_rss_mb_max: f64,
}

/// Runs the benchmark and prints its figures.
pub async fn run(options: BenchOptions) -> Result<(), CommandError> {
    let dir = std::env::temp_dir().join(format!("node-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CommandError::Local(format!("cannot create {}: {e}", dir.display())))?;
    eprintln!("node bench: node logs in {}", dir.display());
    let text = if options.scale {
        let report = scale(&options, &dir).await?;
        if options.json {
            json(&report)?
        } else {
            scale_table(&report)
        }
    } else {
        let report = figures(&options, &dir).await?;
        if options.json {
            json(&report)?
        } else {
            table(&report)
        }
    };
    println!("{text}");
    Ok(())
}

fn json(value: &impl Serialize) -> Result<String, CommandError> {
    serde_json::to_string_pretty(value).map_err(|e| CommandError::Local(e.to_string()))
}

fn step(what: &str) {
    eprintln!("node bench: {what}");
}

async fn figures(
    options: &BenchOptions,
    dir: &std::path::Path,
) -> Result<BenchReport, CommandError> {
    let mut report = BenchReport {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        push_operations: options.ops,
        push_counters: options.push_counters,
        aggregate_counters: options.counters,
        ..BenchReport::default()
    };

    step("raw TCP reference");
    report.raw_tcp_frames_per_sec = raw_tcp::frames_per_sec(options.raw_frames).await?;

    step("pushes and calls to a single node");
    {
        let sink = BenchNode::start(dir, "sink", options.push_counters, None)?;
        wait_for_cluster(
            &sink.addr,
            1,
            options.push_counters,
            Duration::from_secs(30),
        )
        .await?;
        let coalesced = run_sender(&sink.addr, Measure::Push, Mode::Coalesced, options.ops).await?;
        report.remote_increments_per_sec = per_sec(&coalesced);
        report.remote_increments_ops_per_message =
            coalesced.operations as f64 / coalesced.messages.max(1) as f64;
        report.sender_peak_rss_mb = coalesced.peak_rss_kb as f64 / 1024.0;
        let unbatched = run_sender(
            &sink.addr,
            Measure::Push,
            Mode::Unbatched,
            options.unbatched_ops,
        )
        .await?;
        report.remote_increments_per_sec_unbatched = per_sec(&unbatched);
        report.remote_increments_exact = coalesced.exact && unbatched.exact;
        let calls = run_sender(&sink.addr, Measure::Calls, Mode::Coalesced, options.calls).await?;
        report.remote_call_p50_us = calls.p50_us;
        report.remote_call_p99_us = calls.p99_us;
    }
    if report.raw_tcp_frames_per_sec > 0.0 {
        report.remote_increments_vs_raw_tcp =
            report.remote_increments_per_sec / report.raw_tcp_frames_per_sec;
    }

    step("memory of an empty node");
    let empty_rss = {
        let empty = BenchNode::start(dir, "empty", 0, None)?;
        wait_for_cluster(&empty.addr, 1, 0, Duration::from_secs(30)).await?;
        empty.rss_mb()
    };

    step("collections over a 3-node cluster");
    // As even as it gets: no node gets more than a third, rounded up.
    let shares: [u32; 3] = std::array::from_fn(|i| {
        options.counters / 3 + u32::from((i as u32) < options.counters % 3)
    });
    let nodes = start_cluster(dir, &shares)?;
    let seed = nodes[0].addr.clone();
    wait_for_cluster(&seed, 3, options.counters, Duration::from_secs(60)).await?;
    // The workers' memory over their counters (the coordinator also aggregates).
    let worker_rss: f64 = nodes[1..].iter().map(BenchNode::rss_mb).sum();
    let worker_counters = f64::from(shares[1] + shares[2]);
    report.rss_per_counter_kb = (worker_rss - 2.0 * empty_rss) * 1024.0 / worker_counters;
    let client = ClusterClient::connect(&seed, DEV_COOKIE, None, Duration::from_secs(10)).await?;
    let timed = async {
        let fast = time_collections(&client, options.collections, false, options.counters).await?;
        let slow = time_collections(&client, 3, true, options.counters).await?;
        Ok::<_, CommandError>((fast, slow))
    }
    .await;
    client.close().await;
    let (fast, slow) = timed?;
    report.aggregate_10k_ms = fast;
    report.aggregate_10k_sequential_ms = slow;
    drop(nodes);
    Ok(report)
}

async fn scale(options: &BenchOptions, dir: &std::path::Path) -> Result<ScaleReport, CommandError> {
    let per_node = options.scale_counters;
    let total = per_node * 3;
    step(&format!("3 nodes x {per_node} counters"));
    let started = Instant::now();
    let mut nodes = start_cluster(dir, &[per_node; 3])?;
    let seed = nodes[0].addr.clone();
    let formed = wait_for_cluster(&seed, 3, total, Duration::from_secs(900)).await;
    for node in &mut nodes {
        node.check_running()?;
    }
    formed?;
    let mut report = ScaleReport {
        scale_nodes: 3,
        scale_counters_per_node: per_node,
        scale_form_ms: started.elapsed().as_secs_f64() * 1e3,
        ..ScaleReport::default()
    };
    step("timing full collections");
    let client = ClusterClient::connect(&seed, DEV_COOKIE, None, Duration::from_secs(30)).await?;
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let at = Instant::now();
        let stats = stats(&client, false, Duration::from_secs(60)).await;
        times.push(at.elapsed().as_secs_f64() * 1e3);
        last = Some(stats);
    }
    client.close().await;
    let last = last.ok_or_else(|| CommandError::Local("no collection ran".into()))??;
    report.scale_collect_ms = median(&mut times);
    report.scale_collected_counters = last.num_counters;
    report.scale_complete = last.complete;
    report.scale_rss_mb_max = nodes.iter().map(BenchNode::rss_mb).fold(0.0, f64::max);
    report.scale_peak_rss_mb_max = nodes.iter().map(BenchNode::peak_rss_mb).fold(0.0, f64::max);
    Ok(report)
}

/// A coordinator and two workers joined to it, with these counter counts.
fn start_cluster(
    dir: &std::path::Path,
    counters: &[u32; 3],
) -> Result<Vec<BenchNode>, CommandError> {
    let coordinator = BenchNode::start(dir, "coordinator", counters[0], None)?;
    let seed = coordinator.addr.clone();
    let mut nodes = vec![coordinator];
    for (i, &n) in counters[1..].iter().enumerate() {
        nodes.push(BenchNode::start(
            dir,
            &format!("worker-{}", i + 1),
            n,
            Some(&seed),
        )?);
    }
    Ok(nodes)
}

/// Waits until a collection through `addr` sees `nodes` nodes and `counters` counters,
/// all answering.
async fn wait_for_cluster(
    addr: &str,
    nodes: usize,
    counters: u32,
    within: Duration,
) -> Result<(), CommandError> {
    let deadline = Instant::now() + within;
    let mut last = String::from("no connection yet");
    while Instant::now() < deadline {
        match ClusterClient::connect(addr, DEV_COOKIE, None, Duration::from_secs(5)).await {
            Ok(client) => {
                let stats = stats(&client, false, Duration::from_secs(30)).await;
                client.close().await;
                match stats {
                    Ok(s)
                        if s.complete
                            && s.num_nodes == nodes
                            && s.num_counters == counters as usize =>
                    {
                        return Ok(())
                    }
                    Ok(s) => {
                        last = format!(
                            "{} of {nodes} nodes, {} of {counters} counters, complete={}",
                            s.num_nodes, s.num_counters, s.complete
                        )
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(CommandError::Local(format!(
        "the cluster at {addr} did not form within {within:?}: {last}"
    )))
}

async fn stats(
    client: &ClusterClient,
    sequential: bool,
    deadline: Duration,
) -> Result<ClusterStats, CommandError> {
    let request = ClientRequest::Stats {
        deadline_ms: deadline.as_millis() as u64,
        per_counter: false,
        sequential,
    };
    match client
        .request(request, deadline + Duration::from_secs(5))
        .await?
    {
        ClientAnswer::Stats(stats) => Ok(*stats),
        _ => Err(CommandError::Local("unexpected answer to stats".into())),
    }
}

/// Median milliseconds of `runs` complete collections (after one unmeasured run).
async fn time_collections(
    client: &ClusterClient,
    runs: u32,
    sequential: bool,
    counters: u32,
) -> Result<f64, CommandError> {
    let deadline = Duration::from_secs(if sequential { 60 } else { 10 });
    let mut times = Vec::new();
    for run in 0..=runs {
        let at = Instant::now();
        let stats = stats(client, sequential, deadline).await?;
        let took = at.elapsed().as_secs_f64() * 1e3;
        if !stats.complete || stats.num_counters != counters as usize {
            return Err(CommandError::Local(format!(
                "an incomplete collection ({} of {counters} counters)",
                stats.num_counters
            )));
        }
        if run > 0 {
            times.push(took);
        }
    }
    Ok(median(&mut times))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn per_sec(report: &SenderReport) -> f64 {
    report.operations as f64 / (report.elapsed_us.max(1) as f64 / 1e6)
}

/// Starts `node bench-sender` against `addr` and reads its report.
async fn run_sender(
    addr: &str,
    measure: Measure,
    mode: Mode,
    operations: u64,
) -> Result<SenderReport, CommandError> {
    let what = format!("{measure:?} {mode:?} x {operations}").to_lowercase();
    step(&what);
    let exe: PathBuf = std::env::current_exe()
        .map_err(|e| CommandError::Local(format!("cannot find this program: {e}")))?;
    let measure = if measure == Measure::Push {
        "push"
    } else {
        "calls"
    };
    let mode = if mode == Mode::Coalesced {
        "coalesced"
    } else {
        "unbatched"
    };
    let mut command = tokio::process::Command::new(exe);
    command
        .args([
            "bench-sender",
            "--join",
            addr,
            "--measure",
            measure,
            "--mode",
            mode,
        ])
        .args(["--ops", &operations.to_string()])
        .env_remove("NODE_COOKIE")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .map_err(|_| CommandError::Local(format!("{what} took over 10 minutes")))?
        .map_err(|e| CommandError::Local(format!("cannot run the sender: {e}")))?;
    if !output.status.success() {
        return Err(CommandError::Local(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let report: SenderReport = serde_json::from_slice(&output.stdout)
        .map_err(|e| CommandError::Local(format!("{what}: unreadable report: {e}")))?;
    if !report.exact {
        return Err(CommandError::Local(format!(
            "{what}: the counters did not move by exactly what was sent"
        )));
    }
    Ok(report)
}

fn table(r: &BenchReport) -> String {
    let rows = [
        (
            "raw_tcp_frames_per_sec",
            format!("{:.0}", r.raw_tcp_frames_per_sec),
            "reference".to_string(),
        ),
        (
            "remote_increments_per_sec",
            format!(
                "{:.0} ({:.0}% of raw TCP, {:.0} ops/message)",
                r.remote_increments_per_sec,
                100.0 * r.remote_increments_vs_raw_tcp,
                r.remote_increments_ops_per_message
            ),
            ">= 5,000,000 and >= 30% of raw TCP".to_string(),
        ),
        (
            "remote_increments_per_sec_unbatched",
            format!("{:.0}", r.remote_increments_per_sec_unbatched),
            "baseline".to_string(),
        ),
        (
            "remote_call_p50_us",
            format!("{:.0}", r.remote_call_p50_us),
            "<= 150".to_string(),
        ),
        (
            "remote_call_p99_us",
            format!("{:.0}", r.remote_call_p99_us),
            "<= 500".to_string(),
        ),
        (
            "aggregate_10k_ms",
            format!("{:.1}", r.aggregate_10k_ms),
            "<= 50".to_string(),
        ),
        (
            "aggregate_10k_sequential_ms",
            format!("{:.1}", r.aggregate_10k_sequential_ms),
            "baseline".to_string(),
        ),
        (
            "sender_peak_rss_mb",
            format!("{:.1}", r.sender_peak_rss_mb),
            "<= 64".to_string(),
        ),
        (
            "rss_per_counter_kb",
            format!("{:.1}", r.rss_per_counter_kb),
            "reported".to_string(),
        ),
    ];
    let mut out = format!(
        "{} cpus; push: {} ops to {} counters (exact: {}); collections over {} counters on 3 nodes\n",
        r.cpus, r.push_operations, r.push_counters, r.remote_increments_exact, r.aggregate_counters
    );
    out.push_str(&format!("{:<38} {:<52} {}\n", "figure", "value", "goal"));
    for (name, value, goal) in rows {
        out.push_str(&format!("{name:<38} {value:<52} {goal}\n"));
    }
    out
}

fn scale_table(r: &ScaleReport) -> String {
    format!(
        "{} nodes x {} counters\n\
         {:<28} {:.0} ms\n{:<28} {:.0} ms ({} counters, complete: {})\n\
         {:<28} {:.0} MiB (peak {:.0} MiB; goal <= 2048)\n",
        r.scale_nodes,
        r.scale_counters_per_node,
        "formed (all answering) in",
        r.scale_form_ms,
        "full collection",
        r.scale_collect_ms,
        r.scale_collected_counters,
        r.scale_complete,
        "largest node RSS",
        r.scale_rss_mb_max,
        r.scale_peak_rss_mb_max,
    )
}
