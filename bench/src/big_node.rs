//! `node-bench --big-node`: what a node of a million counters costs. A coordinator (4
//! counters) and a worker with `--big-counters` counters, `--big-active` of them
//! started by a call each (spread over the whole range) and so running as actors, the
//! rest idle records in the store. Reported: how long the two take to form, a full
//! collection of every counter (the worker answers in pages), and both nodes' memory
//! after the collections. With `--big-alone` the big node is the coordinator itself,
//! and also holds the last collection (a line per counter).

use std::path::Path;
use std::time::Duration;

use node::call_until;
use node::ClusterClient;
use node::CommandError;
use node::DEV_COOKIE;
use serde::Serialize;
use shared::counter::ValueOutcome;
use shared::host::HostMessage;
use tokio::time::Instant;

use crate::nodes::BenchNode;
use crate::{median, stats, step, wait_for_cluster};

/// The worker's resident memory after the collections, at most (MiB).
const RSS_GOAL_MIB: f64 = 300.0;

/// A full collection, at most (ms).
const COLLECT_GOAL_MS: f64 = 2_000.0;

/// Collections timed (the median is reported).
const COLLECTIONS: usize = 5;

/// What `--big-node` measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct BigNodeReport {
    /// Counters on the worker.
    pub(crate) big_counters: u32,
    /// Of them, started (running as actors) during the measurement.
    pub(crate) big_active: u32,
    /// Whether the big node was the coordinator itself (then it also holds the last
    /// collection).
    pub(crate) big_alone: bool,
    /// From starting the processes to the first complete collection.
    pub(crate) big_form_ms: f64,
    /// Starting the active counters, one call each, per call.
    pub(crate) big_activation_us: f64,
    /// Median time of a full collection (totals only asked back).
    pub(crate) big_collect_ms: f64,
    /// Counters in the last collection.
    pub(crate) big_collected_counters: usize,
    /// Whether every collection was complete.
    pub(crate) big_complete: bool,
    /// The worker's resident memory after the collections, in MiB.
    pub(crate) big_worker_rss_mb: f64,
    /// Its peak, start-up included.
    pub(crate) big_worker_peak_rss_mb: f64,
    /// The coordinator's (which holds the last collection, a line per counter).
    pub(crate) big_coordinator_rss_mb: f64,
}

/// Runs `--big-node`.
pub(crate) async fn big_node(
    dir: &Path,
    counters: u32,
    active: u32,
    alone: bool,
) -> Result<BigNodeReport, CommandError> {
    let started = Instant::now();
    let (coordinator, mut worker, nodes, total) = if alone {
        step(&format!("a coordinator of {counters} counters, alone"));
        let node = BenchNode::start(dir, "coordinator", counters, None)?;
        (None, node, 1, counters)
    } else {
        step(&format!(
            "a coordinator and a worker of {counters} counters"
        ));
        let coordinator = BenchNode::start(dir, "coordinator", 4, None)?;
        let worker = BenchNode::start(dir, "worker-1", counters, Some(&coordinator.addr))?;
        (Some(coordinator), worker, 2, counters + 4)
    };
    let seed = coordinator.as_ref().unwrap_or(&worker).addr.clone();
    let formed = wait_for_cluster(&seed, nodes, total, Duration::from_secs(300)).await;
    worker.check_running()?;
    formed?;
    let mut report = BigNodeReport {
        big_counters: counters,
        big_active: active,
        big_alone: alone,
        big_form_ms: started.elapsed().as_secs_f64() * 1e3,
        big_complete: true,
        ..BigNodeReport::default()
    };

    step(&format!("starting {active} of them with a call each"));
    let at = Instant::now();
    activate(&worker.addr, counters, active).await?;
    report.big_activation_us = at.elapsed().as_secs_f64() * 1e6 / f64::from(active.max(1));

    step("timing full collections");
    let client = ClusterClient::connect(&seed, DEV_COOKIE, None, Duration::from_secs(30)).await?;
    let mut times = Vec::new();
    for _ in 0..COLLECTIONS {
        let at = Instant::now();
        let collected = stats(&client, Duration::from_secs(30)).await;
        times.push(at.elapsed().as_secs_f64() * 1e3);
        let collected = collected?;
        report.big_complete &= collected.complete;
        report.big_collected_counters = collected.num_counters;
    }
    client.close().await;
    worker.check_running()?;
    report.big_collect_ms = median(&mut times);
    report.big_worker_rss_mb = worker.rss_mb();
    report.big_worker_peak_rss_mb = worker.peak_rss_mb();
    report.big_coordinator_rss_mb = coordinator.as_ref().unwrap_or(&worker).rss_mb();
    Ok(report)
}

/// Starts `active` of the node's `counters` counters, spread evenly, with a `GetValue`
/// each.
async fn activate(addr: &str, counters: u32, active: u32) -> Result<(), CommandError> {
    let client = ClusterClient::connect(addr, DEV_COOKIE, None, Duration::from_secs(30)).await?;
    let host = client
        .host()
        .ok_or_else(|| CommandError::Local(format!("{addr} has no counter host")))?;
    let stride = (counters / active.max(1)).max(1);
    let mut answered = 0;
    for index in (0..counters).step_by(stride as usize).take(active as usize) {
        let until = Instant::now() + Duration::from_secs(10);
        let value = call_until(host.clone(), |r| HostMessage::GetValue(index, r), until).await;
        if matches!(value, Some(ValueOutcome(Ok(_)))) {
            answered += 1;
        }
    }
    client.close().await;
    if answered != active.min(counters) {
        return Err(CommandError::Local(format!(
            "{answered} of {active} counters answered their first call"
        )));
    }
    Ok(())
}

/// The report beside its goals.
pub(crate) fn big_node_table(r: &BigNodeReport) -> String {
    let met = |ok: bool| if ok { "met" } else { "NOT MET" };
    let rss_ok = r.big_worker_rss_mb <= RSS_GOAL_MIB;
    let collect_ok = r.big_collect_ms <= COLLECT_GOAL_MS && r.big_complete;
    let what = if r.big_alone {
        "a coordinator alone, holding the last collection too"
    } else {
        "and a coordinator"
    };
    format!(
        "a node of {} counters, {} of them running, {what}\n\
         {:<34} {:.0} ms\n\
         {:<34} {:.0} us per counter\n\
         {:<34} {:.0} ms ({} counters, complete: {}; goal <= {:.0} ms, complete) {}\n\
         {:<34} {:.0} MiB (peak {:.0} MiB; goal <= {:.0} MiB) {}\n\
         {:<34} {:.0} MiB (holds the last collection)\n",
        r.big_counters,
        r.big_active,
        "formed (all answering) in",
        r.big_form_ms,
        "first call of an idle counter",
        r.big_activation_us,
        "full collection",
        r.big_collect_ms,
        r.big_collected_counters,
        r.big_complete,
        COLLECT_GOAL_MS,
        met(collect_ok),
        "its RSS after collections",
        r.big_worker_rss_mb,
        r.big_worker_peak_rss_mb,
        RSS_GOAL_MIB,
        met(rss_ok),
        "coordinator RSS",
        r.big_coordinator_rss_mb,
    )
}
