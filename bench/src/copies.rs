//! `--copies`: what a second copy of every store costs, and how fast a node that lost
//! its disk is back. Two pairs of nodes side by side, one with `--copies 1` and one with
//! `--copies 2` (each node of the second keeps the other's copy), measured in
//! alternated rounds so both meet the same seconds of a noisy machine: coalesced durable
//! increments per second, and one client's durable changes (each answered once on every
//! copy's disk) p50. Then a node of `--restart-counters` counters, every one of them
//! changed, killed with its data dir deleted and started again: the time until it is
//! back in a complete collection, its store fetched from its copy.

use std::path::Path;
use std::time::Duration;

use node::{ClusterClient, CommandError, Mode, DEV_COOKIE};
use serde::Serialize;
use tokio::time::Instant;

use super::nodes::BenchNode;
use super::sender::Measure;
use super::{median, per_sec, run_sender, step, wait_for_cluster};

/// Alternated rounds of each measure.
const ROUNDS: u64 = 6;

/// Counters on each node of the pairs.
const COUNTERS: u32 = 100;

/// What `--copies` measures.
#[derive(Debug, Default, Serialize)]
pub(crate) struct CopiesReport {
    /// Coalesced durable increments per second, one copy (median of the rounds).
    pub(crate) increments_per_sec_1: f64,
    /// The same with two copies.
    pub(crate) increments_per_sec_2: f64,
    /// Two copies' against one's.
    pub(crate) increments_ratio: f64,
    /// One client's durable change p50, one copy (median of the rounds' p50s).
    pub(crate) change_p50_us_1: f64,
    /// The same with two copies.
    pub(crate) change_p50_us_2: f64,
    /// Two copies' against one's.
    pub(crate) change_ratio: f64,
    /// Counters of the node whose disk is lost (every one changed).
    pub(crate) restore_counters: u32,
    /// From its start on a blank data dir until a collection is complete again.
    pub(crate) restore_complete_ms: f64,
    /// Whether its counters held what they held before (the sum of values).
    pub(crate) restore_exact: bool,
}

/// Starts a pair with `copies` copies, and waits until it formed and, with two, the
/// first node's copy is in step.
async fn pair(dir: &Path, copies: u32) -> Result<[BenchNode; 2], CommandError> {
    let flag = copies.to_string();
    let extra = ["--copies", flag.as_str()];
    let first = BenchNode::start_with(dir, &format!("copies{copies}-a"), COUNTERS, None, &extra)?;
    let second = BenchNode::start_with(
        dir,
        &format!("copies{copies}-b"),
        COUNTERS,
        Some(&first.addr),
        &extra,
    )?;
    wait_for_cluster(&first.addr, 2, 2 * COUNTERS, Duration::from_secs(30)).await?;
    if copies >= 2 {
        wait_copied(&first.addr, Duration::from_secs(30)).await?;
    }
    Ok([first, second])
}

/// Waits until node `addr` says its copy is in step.
async fn wait_copied(addr: &str, within: Duration) -> Result<(), CommandError> {
    let deadline = Instant::now() + within;
    loop {
        let client = ClusterClient::connect(addr, DEV_COOKIE, None, Duration::from_secs(5)).await?;
        let info = client.info(Duration::from_secs(5)).await;
        client.close().await;
        if info?.copy.kept_by.is_some() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CommandError::Local(format!(
                "{addr}'s copy was not in step within {within:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of the values of `addr`'s cluster's counters, in a complete collection.
async fn total_value(addr: &str) -> Result<i128, CommandError> {
    let client = ClusterClient::connect(addr, DEV_COOKIE, None, Duration::from_secs(10)).await?;
    let request = shared::agent::ClientRequest::Stats {
        deadline_ms: 5_000,
        per_counter: false,
    };
    let answer = client.request(request, Duration::from_secs(10)).await;
    client.close().await;
    match answer? {
        shared::agent::ClientAnswer::Stats(stats) if stats.complete => Ok(stats.total_value),
        _ => Err(CommandError::Local("no complete collection".into())),
    }
}

/// Runs `--copies` (see the module documentation).
pub(crate) async fn copies(
    dir: &Path,
    ops: u64,
    applies: u64,
    restore_counters: u32,
) -> Result<CopiesReport, CommandError> {
    step("two pairs of nodes: --copies 1 and --copies 2");
    let one = pair(dir, 1).await?;
    let two = pair(dir, 2).await?;
    let (mut pushes, mut changes) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let per_round_ops = (ops / ROUNDS).max(1);
    let per_round_applies = (applies / ROUNDS).max(1);
    for round in 0..ROUNDS {
        step(&format!(
            "round {} of {ROUNDS}: pushes and durable changes, 1 and 2 copies",
            round + 1
        ));
        // Each round starts with the other side.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let addr = if side == 0 {
                &one[0].addr
            } else {
                &two[0].addr
            };
            let push = run_sender(addr, Measure::Push, Mode::Coalesced, per_round_ops).await?;
            pushes[side].push(per_sec(&push));
            let applied =
                run_sender(addr, Measure::Applies, Mode::Coalesced, per_round_applies).await?;
            changes[side].push(applied.p50_us);
        }
    }
    drop(one);
    drop(two);
    let mut report = CopiesReport {
        increments_per_sec_1: median(&mut pushes[0]),
        increments_per_sec_2: median(&mut pushes[1]),
        change_p50_us_1: median(&mut changes[0]),
        change_p50_us_2: median(&mut changes[1]),
        restore_counters,
        ..CopiesReport::default()
    };
    report.increments_ratio = report.increments_per_sec_2 / report.increments_per_sec_1.max(1.0);
    report.change_ratio = report.change_p50_us_2 / report.change_p50_us_1.max(1.0);
    restore(dir, restore_counters, &mut report).await?;
    Ok(report)
}

/// A node of `counters` counters, each changed, its disk lost: until complete again.
async fn restore(dir: &Path, counters: u32, report: &mut CopiesReport) -> Result<(), CommandError> {
    step(&format!(
        "a node of {counters} counters, every one changed, killed with its data dir deleted"
    ));
    let extra = ["--copies", "2"];
    let seed = BenchNode::start_with(dir, "restore-seed", 1, None, &extra)?;
    let mut lost = BenchNode::start_with(dir, "restore-lost", counters, Some(&seed.addr), &extra)?;
    let all = counters + 1;
    wait_for_cluster(&seed.addr, 2, all, Duration::from_secs(300)).await?;
    wait_copied(&lost.addr, Duration::from_secs(60)).await?;
    // Every counter changed: pushes pick counters at random, so ten per counter reach
    // nearly all of them.
    run_sender(
        &lost.addr,
        Measure::Push,
        Mode::Coalesced,
        u64::from(counters) * 10,
    )
    .await?;
    let before = total_value(&seed.addr).await?;
    lost.kill();
    let data = lost
        .data_dir()
        .ok_or_else(|| CommandError::Local("no data dir".into()))?;
    std::fs::remove_dir_all(&data)
        .map_err(|e| CommandError::Local(format!("cannot remove {}: {e}", data.display())))?;
    let started = Instant::now();
    lost.restart()?;
    wait_for_cluster(&seed.addr, 2, all, Duration::from_secs(300)).await?;
    report.restore_complete_ms = started.elapsed().as_secs_f64() * 1e3;
    report.restore_exact = total_value(&seed.addr).await? == before;
    Ok(())
}

/// The report as a table, each figure beside its goal.
pub(crate) fn copies_table(r: &CopiesReport) -> String {
    let rows = [
        (
            "coalesced durable increments/s".to_string(),
            format!(
                "{:.1}M/s with 2 copies, {:.1}M/s with 1: {:.0}%",
                r.increments_per_sec_2 / 1e6,
                r.increments_per_sec_1 / 1e6,
                r.increments_ratio * 100.0
            ),
            ">= 50% of 1 copy".to_string(),
        ),
        (
            "durable change p50".to_string(),
            format!(
                "{:.0} us with 2 copies, {:.0} us with 1: {:.2}x",
                r.change_p50_us_2, r.change_p50_us_1, r.change_ratio
            ),
            "<= 1.5x 1 copy".to_string(),
        ),
        (
            format!("blank disk, {} counters: complete", r.restore_counters),
            format!(
                "{:.0} ms ({})",
                r.restore_complete_ms,
                if r.restore_exact {
                    "exact"
                } else {
                    "NOT the counts it had"
                }
            ),
            "<= 5,000 ms".to_string(),
        ),
    ];
    let mut text = format!(
        "--copies 1 against --copies 2, {ROUNDS} alternated rounds, {COUNTERS} counters a node\n{:<40} {:<52} goal\n",
        "figure", "value"
    );
    for (figure, value, goal) in rows {
        text.push_str(&format!("{figure:<40} {value:<52} {goal}\n"));
    }
    text
}
