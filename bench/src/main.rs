//! `node-bench`: measures this machine's cluster against its own raw TCP, with real
//! node processes (one per node, the `node` binary beside this one) on loopback, and
//! prints a table or one JSON object. Figures are reported, never asserted: the goals
//! are printed beside them. What each figure means is in `BENCHMARKS.md`.
//!
//! | module | what it does |
//! | --- | --- |
//! | [`raw_tcp`] | the reference: length-prefixed bincode frames over one loopback connection |
//! | [`nodes`] | starting node processes and reading their memory |
//! | [`sender`] | the client process that pushes increments or times calls |
//! | [`redis`] | the optional yardstick: Redis's one-client `INCR` latency, in the same run |
//! | [`sequential`] | the baseline collection: one remote call per counter, one after another |
//! | [`light`] | `--light`: what a node costs at light load, beside Redis |
//! | [`big_node`] | `--big-node`: a node of a million counters |
//! | [`many`] | `--nodes N`: formation, collection, detection and rejoin of N nodes |
//! | [`copies`] | `--copies`: one copy against two, and a node back from a lost disk |
//! | [`report`] | the figures, as a table or JSON |
//!
//! Nothing here is part of a running node: the one-call-after-another baseline in
//! particular runs in this process, over its own connections to every node.

#![forbid(unsafe_code)]

mod big_node;
mod copies;
mod light;
mod many;
mod nodes;
mod raw_tcp;
mod redis;
mod report;
mod sender;
mod sequential;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use node::ClusterClient;
use node::CommandError;
use node::Mode;
use node::DEV_COOKIE;
use serde::Serialize;
use shared::agent::{ClientAnswer, ClientRequest};
use shared::stats::ClusterStats;
use tokio::time::Instant;

use nodes::BenchNode;
use report::{scale_table, table, BenchReport, ScaleReport};
use sender::{Measure, SenderReport};

/// Measure this machine's cluster: start node processes on loopback, push increments,
/// time calls and collections, and print the figures beside their goals (see
/// BENCHMARKS.md). Takes 10 to 30 seconds; with --scale, about as long but several GB
/// of memory; with --light, about three windows of --light-seconds. Needs the `node` binary beside this one (`cargo build --release` builds
/// both).
#[derive(Debug, Parser)]
#[command(name = "node-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The client process the benchmark starts (internal).
    #[command(subcommand)]
    sender: Option<Internal>,
    #[command(flatten)]
    options: BenchOptions,
}

/// What `node-bench` was asked to do.
#[derive(Debug, Clone, clap::Args)]
struct BenchOptions {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Instead: start 3 nodes with --scale-counters counters each, and report how long
    /// they take to form, a full collection, and their memory.
    #[arg(long)]
    scale: bool,
    /// Instead: what a node costs at light load. --light-nodes nodes (4 counters and a
    /// data dir each), idle and then with load clients at --light-rate operations per
    /// second on every node: CPU per node, fsync'd commits per node, beside Redis with
    /// AOF `always` taking one client's INCRs at the same rate.
    #[arg(long, conflicts_with = "scale")]
    light: bool,
    /// Instead: a node of --big-counters counters, --big-active of them running, and
    /// a coordinator: their memory after full collections, and how long a collection
    /// takes.
    #[arg(long, conflicts_with_all = ["scale", "light"])]
    big_node: bool,
    /// Instead: N nodes on loopback (one process each, 4 counters and a data dir):
    /// how long they take to form, a full collection, their idle CPU and wake-ups
    /// (over --light-seconds), a kill -9 and a SIGSTOP seen by every member, and the
    /// killed node's rejoin.
    #[arg(long, value_name = "N", conflicts_with_all = ["scale", "light", "big_node"],
          value_parser = clap::value_parser!(u32).range(3..=128))]
    nodes: Option<u32>,
    /// Instead: --copies 1 against --copies 2, side by side (coalesced durable
    /// increments/s, a durable change's p50), and a node of --restart-counters counters
    /// whose disk is lost: how long until it is back, from its copy.
    #[arg(long, conflicts_with_all = ["scale", "light", "big_node", "nodes"])]
    copies: bool,
    /// Counters on the worker with --big-node.
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    big_counters: u32,
    /// Of them, counters started (running as actors) with --big-node.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    big_active: u32,
    /// With --big-node: the big node is the coordinator itself, alone.
    #[arg(long, requires = "big_node")]
    big_alone: bool,
    /// Nodes with --light.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    light_nodes: u32,
    /// Operations per second per node with --light.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    light_rate: u32,
    /// Seconds each --light measurement lasts.
    #[arg(long, value_name = "S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    light_seconds: u64,
    /// Increments in the coalesced push.
    #[arg(long, value_name = "N", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    ops: u64,
    /// Increments in the unbatched push (one message each, so much slower).
    #[arg(long, value_name = "N", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    unbatched_ops: u64,
    /// Sequential calls timed for the latency percentiles.
    #[arg(long, value_name = "N", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,
    /// Sequential durable changes (each answered once on disk) timed for their
    /// percentiles.
    #[arg(long, value_name = "N", default_value_t = 4_000, value_parser = clap::value_parser!(u64).range(1..))]
    applies: u64,
    /// Counters on the node that is killed and restarted.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    restart_counters: u32,
    /// Collections timed (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    collections: u32,
    /// Counters spread evenly over the 3 nodes the collections run on.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(3..=300_000))]
    counters: u32,
    /// Counters on the node the pushes go to.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    push_counters: u32,
    /// Counters per node with --scale.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    scale_counters: u32,
    /// Frames sent for the raw TCP reference.
    #[arg(long, value_name = "N", default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    raw_frames: u64,
}

/// The benchmark's own helper processes.
#[derive(Debug, Subcommand)]
enum Internal {
    /// One measurement against one node, its report as JSON on stdout.
    #[command(hide = true)]
    Sender {
        /// The node to push to or call.
        #[arg(long = "join", value_name = "HOST:PORT")]
        join: String,
        /// Push increments, or time calls.
        #[arg(long, value_enum)]
        measure: Measure,
        /// How pushes are sent.
        #[arg(long, value_enum, default_value_t = Mode::Coalesced)]
        mode: Mode,
        /// Operations (or calls).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        ops: u64,
    },
}

/// mimalloc rather than glibc's malloc: every message allocates, and a profile of a
/// collection put a third of its CPU in glibc's malloc and free (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    node::init_logging(true);
    // A timed client sleeps while it waits, as redis-benchmark's does (the yardstick):
    // one that spins answers calls sooner (15 µs p50 where a sleeping one took 45-85
    // on one VM), and on two vCPUs takes the CPU a node's commit needs (durable
    // changes 370 µs against 250). A pushing client may spin.
    let busy_poll = match &cli.sender {
        Some(Internal::Sender {
            measure: Measure::Calls | Measure::Applies,
            ..
        }) => node::BusyPoll::Window(Duration::ZERO),
        _ => node::BusyPoll::Auto,
    };
    let options = match node::RuntimeOptions::from_env(busy_poll) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("node-bench: error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let work = async move {
        match cli.sender {
            Some(Internal::Sender {
                join,
                measure,
                mode,
                ops,
            }) => sender::run(&join, DEV_COOKIE, measure, mode, ops).await,
            None => run(cli.options).await,
        }
    };
    let result = node::run_on_runtime(options, work)
        .unwrap_or_else(|e| Err(CommandError::Local(format!("cannot run: {e}"))));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("node-bench: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark and prints its figures.
async fn run(options: BenchOptions) -> Result<(), CommandError> {
    let dir = std::env::temp_dir().join(format!("node-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CommandError::Local(format!("cannot create {}: {e}", dir.display())))?;
    eprintln!("node-bench: node logs in {}", dir.display());
    let text = if options.copies {
        let report =
            copies::copies(&dir, options.ops, options.applies, options.restart_counters).await?;
        if options.json {
            json(&report)?
        } else {
            copies::copies_table(&report)
        }
    } else if let Some(nodes) = options.nodes {
        let window = Duration::from_secs(options.light_seconds);
        let report = many::many(&dir, nodes, window).await?;
        if options.json {
            json(&report)?
        } else {
            many::many_table(&report)
        }
    } else if options.light {
        let window = Duration::from_secs(options.light_seconds);
        let report = light::light(&dir, options.light_nodes, options.light_rate, window).await?;
        if options.json {
            json(&report)?
        } else {
            light::light_table(&report)
        }
    } else if options.big_node {
        let report = big_node::big_node(
            &dir,
            options.big_counters,
            options.big_active,
            options.big_alone,
        )
        .await?;
        if options.json {
            json(&report)?
        } else {
            big_node::big_node_table(&report)
        }
    } else if options.scale {
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
    remove_stores(&dir);
    Ok(())
}

/// Removes the nodes' stores (`*.data`) from a run that succeeded, keeping their logs:
/// a run of 100 nodes leaves about 100 MiB of stores, and nothing reads them again. A
/// run that failed keeps them, to be looked at.
fn remove_stores(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "data") && path.is_dir() {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                eprintln!("node-bench: cannot remove {}: {e}", path.display());
            }
        }
    }
    eprintln!(
        "node-bench: the nodes' stores removed; their logs stay in {}",
        dir.display()
    );
}

fn json(value: &impl Serialize) -> Result<String, CommandError> {
    serde_json::to_string_pretty(value).map_err(|e| CommandError::Local(e.to_string()))
}

pub(crate) fn step(what: &str) {
    eprintln!("node-bench: {what}");
}

/// Has the kernel write every dirty page back now (`sync`), so that a measure of fsyncs
/// does not meet another process's writeback; a line says so if it cannot.
async fn flush_dirty_pages() {
    step("flushing the machine's dirty pages before the durable measures (sync)");
    match tokio::process::Command::new("sync").status().await {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("node-bench: sync exited with {status}; measuring anyway"),
        Err(e) => eprintln!("node-bench: cannot run sync ({e}); measuring anyway"),
    }
}

async fn figures(
    options: &BenchOptions,
    dir: &std::path::Path,
) -> Result<BenchReport, CommandError> {
    let mut report = BenchReport {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        busy_poll: busy_poll(),
        push_operations: options.ops,
        push_counters: options.push_counters,
        aggregate_counters: options.counters,
        ..BenchReport::default()
    };
    step("raw TCP reference");
    report.raw_tcp_frames_per_sec = raw_tcp::frames_per_sec(options.raw_frames).await?;

    durable_node(options, dir, &mut report).await?;
    if report.raw_tcp_frames_per_sec > 0.0 {
        report.remote_increments_vs_raw_tcp =
            report.remote_increments_per_sec / report.raw_tcp_frames_per_sec;
    }
    memory_node(options, dir, &mut report).await?;
    restart(options, dir, &mut report).await?;
    collections(options, dir, &mut report).await?;
    Ok(report)
}

/// Pushes, calls and durable changes to a single node, and the Redis yardstick.
async fn durable_node(
    options: &BenchOptions,
    dir: &std::path::Path,
    report: &mut BenchReport,
) -> Result<(), CommandError> {
    step("pushes and calls to a single node (durable)");
    let sink = sink(dir, "sink", options.push_counters, &[]).await?;
    let commits_before = store_commits(&sink.addr).await?;
    let coalesced = run_sender(&sink.addr, Measure::Push, Mode::Coalesced, options.ops).await?;
    let commits = store_commits(&sink.addr)
        .await?
        .saturating_sub(commits_before);
    report.remote_increments_per_sec = per_sec(&coalesced);
    report.ops_per_fsync = coalesced.operations as f64 / commits.max(1) as f64;
    report.fsyncs_per_sec = commits as f64 / (coalesced.elapsed_us.max(1) as f64 / 1e6);
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
    // Both sides of the durable comparison meet a disk with nothing else to write: a
    // build's freshly linked binaries written back meanwhile (the kernel starts 30 s after)
    // once tripled one side's fsyncs and not the other's.
    flush_dirty_pages().await;
    step("the yardstick: Redis, one client's INCRs one at a time, in memory (optional)");
    report.redis_incr_p50_us = redis_p50(redis::Keeping::Memory, redis::REQUESTS).await;
    durable_rounds(options, &sink.addr, report).await?;
    // Clients at once share commits (one fsync for whatever arrived during the one
    // before): a lone client's change committed on the journal's own thread must not
    // hold the others' back.
    let commits_before = store_commits(&sink.addr).await?;
    let together = run_senders(&sink.addr, CLIENTS_AT_ONCE, options.applies).await?;
    let commits = store_commits(&sink.addr)
        .await?
        .saturating_sub(commits_before);
    let mut p50s: Vec<f64> = together.iter().map(|r| r.p50_us).collect();
    report.durable_change_clients_at_once = CLIENTS_AT_ONCE;
    report.durable_change_at_once_p50_us = median(&mut p50s);
    let changes: u64 = together.iter().map(|r| r.messages).sum();
    report.durable_changes_per_commit_at_once = changes as f64 / commits.max(1) as f64;
    Ok(())
}

/// Rounds of durable changes, each right after a round of Redis AOF `always`.
const DURABLE_ROUNDS: u64 = 10;

/// Redis AOF `always` `INCR`s per round.
const AOF_REQUESTS_PER_ROUND: u32 = 1_000;

/// Our durable changes and Redis AOF `always`'s, alternated in [`DURABLE_ROUNDS`]
/// short rounds (Redis first in each), so that both meet the same seconds of a noisy
/// machine: the medians of the rounds' p50s (and of our p99s) are the figures, and the
/// comparison is the median of each round's ratio (a pair measured a second apart,
/// so a disk or a neighbour that slows both for a while cancels out).
async fn durable_rounds(
    options: &BenchOptions,
    addr: &str,
    report: &mut BenchReport,
) -> Result<(), CommandError> {
    let per_round = (options.applies / DURABLE_ROUNDS).max(1);
    // Once a round of Redis fails (or Redis is not installed), the yardstick is left
    // out altogether: rounds of it not alternated with ours would compare nothing.
    let mut redis_left_out = false;
    let (mut ours, mut p99s, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=DURABLE_ROUNDS {
        step(&format!(
            "durable changes, round {round} of {DURABLE_ROUNDS}: Redis AOF always (optional), then ours"
        ));
        if !redis_left_out {
            match redis_p50(redis::Keeping::AofAlways, AOF_REQUESTS_PER_ROUND).await {
                Some(p50) => theirs.push(p50),
                None => redis_left_out = true,
            }
        }
        let applies = run_sender(addr, Measure::Applies, Mode::Coalesced, per_round).await?;
        ours.push(applies.p50_us);
        p99s.push(applies.p99_us);
    }
    report.durable_change_p50_us = median(&mut ours.clone());
    report.durable_change_p99_us = median(&mut p99s);
    if !redis_left_out {
        let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| o / t).collect();
        report.durable_vs_redis_aof = Some(median(&mut ratios.clone()));
        report.durable_vs_redis_aof_rounds = ratios;
        report.redis_aof_incr_p50_us = Some(median(&mut theirs.clone()));
        report.redis_aof_rounds_p50_us = theirs;
    }
    report.durable_change_rounds_p50_us = ours;
    Ok(())
}

/// Clients sending durable changes at once, for the figure of changes per commit.
const CLIENTS_AT_ONCE: usize = 4;

/// `clients` senders of `operations` durable changes each (one after another), all at
/// once against node `addr`.
async fn run_senders(
    addr: &str,
    clients: usize,
    operations: u64,
) -> Result<Vec<SenderReport>, CommandError> {
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let addr = addr.to_string();
        senders.spawn(async move {
            run_sender(&addr, Measure::Applies, Mode::Coalesced, operations).await
        });
    }
    let mut reports = Vec::with_capacity(clients);
    while let Some(report) = senders.join_next().await {
        reports.push(report.map_err(|e| CommandError::Local(format!("a sender task: {e}")))??);
    }
    Ok(reports)
}

/// Redis's one-client `INCR` p50 kept as `keeping` says, or `None` (and a line saying
/// why) where it cannot be had.
async fn redis_p50(keeping: redis::Keeping, requests: u32) -> Option<f64> {
    match redis::incr_p50_us(keeping, requests).await {
        Ok(Some(p50)) => Some(p50),
        Ok(None) => {
            step("redis-server or redis-benchmark is not installed: the Redis yardstick is left out (optional; Debian: redis-server redis-tools)");
            None
        }
        Err(error) => {
            step(&format!(
                "the Redis yardstick ({keeping:?}) is left out (optional): {error}"
            ));
            None
        }
    }
}

/// The same pushes and changes to a memory-only node, and durable against memory.
async fn memory_node(
    options: &BenchOptions,
    dir: &std::path::Path,
    report: &mut BenchReport,
) -> Result<(), CommandError> {
    step("the same pushes and changes to a memory-only node");
    let sink = sink(
        dir,
        "sink-memory",
        options.push_counters,
        &["--memory-only"],
    )
    .await?;
    let coalesced = run_sender(&sink.addr, Measure::Push, Mode::Coalesced, options.ops).await?;
    report.remote_increments_per_sec_memory = per_sec(&coalesced);
    report.remote_increments_exact &= coalesced.exact;
    let applies = run_sender(
        &sink.addr,
        Measure::Applies,
        Mode::Coalesced,
        options.applies,
    )
    .await?;
    report.memory_change_p50_us = applies.p50_us;
    if report.remote_increments_per_sec_memory > 0.0 {
        report.durable_vs_memory =
            report.remote_increments_per_sec / report.remote_increments_per_sec_memory;
    }
    Ok(())
}

/// A node with `--restart-counters` counters killed and restarted: until complete.
async fn restart(
    options: &BenchOptions,
    dir: &std::path::Path,
    report: &mut BenchReport,
) -> Result<(), CommandError> {
    step("a node with --restart-counters counters killed and restarted");
    let mut nodes = vec![BenchNode::start(dir, "restart-seed", 1, None)?];
    let seed = nodes[0].addr.clone();
    nodes.push(BenchNode::start(
        dir,
        "restart-big",
        options.restart_counters,
        Some(&seed),
    )?);
    let counters = options.restart_counters + 1;
    wait_for_cluster(&seed, 2, counters, Duration::from_secs(300)).await?;
    nodes[1].kill_and_restart()?;
    let started = Instant::now();
    wait_for_cluster(&seed, 2, counters, Duration::from_secs(300)).await?;
    report.restart_complete_ms = started.elapsed().as_secs_f64() * 1e3;
    report.restart_counters = options.restart_counters;
    Ok(())
}

/// Collections over a 3-node cluster, and the memory of each counter.
async fn collections(
    options: &BenchOptions,
    dir: &std::path::Path,
    report: &mut BenchReport,
) -> Result<(), CommandError> {
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
    let client = ClusterClient::connect(&seed, DEV_COOKIE, None, Duration::from_secs(10)).await?;
    let fast = time_collections(&client, options.collections, options.counters).await;
    client.close().await;
    report.aggregate_10k_ms = fast?;
    // The workers' memory over their counters (the coordinator also aggregates): idle
    // (collections read them from the store), then running (each called once).
    let worker_counters = f64::from(shares[1] + shares[2]);
    let per_counter_kb = |nodes: &[BenchNode]| {
        let worker_rss: f64 = nodes[1..].iter().map(BenchNode::rss_mb).sum();
        (worker_rss - 2.0 * empty_rss) * 1024.0 / worker_counters
    };
    report.rss_per_idle_counter_kb = per_counter_kb(&nodes);
    step("the same, one call per counter, one after another");
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let timed = sequential::median_ms(&addrs, 3, options.counters).await?;
    report.aggregate_10k_sequential_ms = timed.median_ms;
    report.activation_us =
        (timed.first_ms - timed.median_ms) * 1e3 / f64::from(options.counters.max(1));
    report.rss_per_counter_kb = per_counter_kb(&nodes);
    drop(nodes);
    Ok(())
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
        let stats = stats(&client, Duration::from_secs(60)).await;
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

/// A node of its own, with `counters` counters and `extra` arguments, once it serves.
async fn sink(
    dir: &std::path::Path,
    name: &str,
    counters: u32,
    extra: &[&str],
) -> Result<BenchNode, CommandError> {
    let node = BenchNode::start_with(dir, name, counters, None, extra)?;
    wait_for_cluster(&node.addr, 1, counters, Duration::from_secs(30)).await?;
    Ok(node)
}

/// The store commits (fsyncs) node `addr` has made so far.
async fn store_commits(addr: &str) -> Result<u64, CommandError> {
    let client = ClusterClient::connect(addr, DEV_COOKIE, None, Duration::from_secs(10)).await?;
    let info = client.info(Duration::from_secs(5)).await;
    client.close().await;
    Ok(info?.store_commits)
}

/// Waits until a collection through `addr` sees `nodes` nodes and `counters` counters,
/// all answering.
pub(crate) async fn wait_for_cluster(
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
                let stats = stats(&client, Duration::from_secs(30)).await;
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

pub(crate) async fn stats(
    client: &ClusterClient,
    deadline: Duration,
) -> Result<ClusterStats, CommandError> {
    let request = ClientRequest::Stats {
        deadline_ms: deadline.as_millis() as u64,
        per_counter: false,
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
    counters: u32,
) -> Result<f64, CommandError> {
    let deadline = Duration::from_secs(10);
    let mut times = Vec::new();
    for run in 0..=runs {
        let at = Instant::now();
        let stats = stats(client, deadline).await?;
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

/// This process's busy poll, as the report says it.
fn busy_poll() -> String {
    let on = |on: bool| if on { "on" } else { "off" };
    match node::busy_poll_verdict() {
        Some(m) => format!(
            "auto, {} (a wake-up round trip {}: {} µs asleep, {} µs spinning)",
            on(node::busy_poll_enabled()),
            match m.cpus {
                Some((asker, answerer)) => format!("across CPUs {asker} and {answerer}"),
                None => "(threads not held on two CPUs)".to_string(),
            },
            m.sleeping.as_micros(),
            m.spinning.as_micros()
        ),
        None => format!("{} (set)", on(node::busy_poll_enabled())),
    }
}

/// The median: the middle value, or the mean of the two middle ones.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub(crate) fn per_sec(report: &SenderReport) -> f64 {
    report.operations as f64 / (report.elapsed_us.max(1) as f64 / 1e6)
}

/// Starts `node-bench sender` against `addr` and reads its report.
pub(crate) async fn run_sender(
    addr: &str,
    measure: Measure,
    mode: Mode,
    operations: u64,
) -> Result<SenderReport, CommandError> {
    let what = format!("{measure:?} {mode:?} x {operations}").to_lowercase();
    step(&what);
    let exe: PathBuf = std::env::current_exe()
        .map_err(|e| CommandError::Local(format!("cannot find this program: {e}")))?;
    let measure = match measure {
        Measure::Push => "push",
        Measure::Calls => "calls",
        Measure::Applies => "applies",
    };
    let mode = if mode == Mode::Coalesced {
        "coalesced"
    } else {
        "unbatched"
    };
    let mut command = tokio::process::Command::new(exe);
    command
        .args([
            "sender",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_succeeded_leaves_its_logs_and_not_its_stores() {
        let dir = std::env::temp_dir().join(format!("node-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("n-00-0.data/inner")).unwrap();
        std::fs::write(dir.join("n-00-0.data/inner/store.redb"), b"x").unwrap();
        std::fs::write(dir.join("n-00.log"), b"log").unwrap();
        // A file named like a store is not one of the stores.
        std::fs::write(dir.join("odd.data"), b"file").unwrap();
        remove_stores(&dir);
        assert!(!dir.join("n-00-0.data").exists());
        assert!(dir.join("n-00.log").exists());
        assert!(dir.join("odd.data").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
