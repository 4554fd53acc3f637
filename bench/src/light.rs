//! `node-bench --light`: what a node costs at the loads most deployments see, rather than
//! at full speed. A cluster of `--light-nodes` nodes on loopback, each with 4 counters, a
//! data dir and the coordinator's periodic collections on, first idle and then with load
//! clients issuing `--light-rate` operations per second on every node; and, beside it,
//! Redis with AOF `always` taking one client's `INCR`s at the same rate. Over a window of
//! `--light-seconds`:
//!
//! - CPU per node (user + system, from `/proc/PID/stat`), in ms per second of wall time;
//! - idle, the times per second a node's threads went to sleep, each ending in a wake-up
//!   (voluntary context switches, `/proc/PID/task/*/status`; a thread that ends in the
//!   window loses its sleeps in it), and the CPU per wake-up;
//! - fsync'd commits per node per second (the store's commit count: one fsync each);
//! - the operations each node's load clients issued per second (that the rate was met).

use std::path::Path;
use std::time::Duration;

use node::{cpu_time, sleeps, ClusterClient, CommandError, Sleeps, DEV_COOKIE};
use serde::Serialize;
use shared::agent::NodeInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::nodes::BenchNode;
use super::redis::{installed, Server};
use super::{step, wait_for_cluster};

/// Counters per node.
const COUNTERS: u32 = 4;

/// What `--light` measures.
#[derive(Debug, Default, Serialize)]
pub(crate) struct LightReport {
    /// Nodes in the cluster.
    pub(crate) light_nodes: u32,
    /// Operations per second each node's load clients were asked to issue.
    pub(crate) light_rate_per_node: u32,
    /// The measurement window, in seconds.
    pub(crate) light_window_s: f64,
    /// CPU per node with no load (the coordinator's collections on), mean, ms/s.
    pub(crate) idle_cpu_ms_per_s: f64,
    /// The same, the busiest node.
    pub(crate) idle_cpu_ms_per_s_max: f64,
    /// Times per second a node's threads went to sleep (and so woke up) with no load,
    /// mean: what an idle node's CPU goes on.
    pub(crate) idle_wakeups_per_s: f64,
    /// CPU per node at the rate, mean, ms/s.
    pub(crate) load_cpu_ms_per_s: f64,
    /// The same, the busiest node.
    pub(crate) load_cpu_ms_per_s_max: f64,
    /// Store commits (one fsync each) per node per second at the rate, mean.
    pub(crate) load_commits_per_s: f64,
    /// Operations issued per node per second at the rate, mean (should be the rate).
    pub(crate) load_issued_per_s: f64,
    /// Redis (AOF `always`) CPU taking one client's `INCR`s at the rate, ms/s; `None`
    /// where Redis is not installed.
    pub(crate) redis_aof_cpu_ms_per_s: Option<f64>,
    /// The `INCR`s per second Redis answered.
    pub(crate) redis_aof_incr_per_s: Option<f64>,
}

/// Runs the light-load measurements.
pub(crate) async fn light(
    dir: &Path,
    nodes: u32,
    rate: u32,
    window: Duration,
) -> Result<LightReport, CommandError> {
    let mut report = LightReport {
        light_nodes: nodes,
        light_rate_per_node: rate,
        light_window_s: window.as_secs_f64(),
        ..LightReport::default()
    };
    step(&format!(
        "{nodes} idle nodes (collections on): CPU over {window:?}"
    ));
    {
        let cluster = start(dir, "idle", nodes, 0).await?;
        let costs = measure(&cluster, window).await?;
        report.idle_cpu_ms_per_s = mean(costs.iter().map(|c| c.cpu_ms_per_s));
        report.idle_cpu_ms_per_s_max = max(costs.iter().map(|c| c.cpu_ms_per_s));
        report.idle_wakeups_per_s = mean(costs.iter().map(|c| c.wakeups_per_s));
    }
    step(&format!(
        "{nodes} nodes, {rate} ops/s each: CPU and commits over {window:?}"
    ));
    {
        let cluster = start(dir, "light", nodes, rate).await?;
        wait_for_load(&cluster).await?;
        let costs = measure(&cluster, window).await?;
        report.load_cpu_ms_per_s = mean(costs.iter().map(|c| c.cpu_ms_per_s));
        report.load_cpu_ms_per_s_max = max(costs.iter().map(|c| c.cpu_ms_per_s));
        report.load_commits_per_s = mean(costs.iter().map(|c| c.commits_per_s));
        report.load_issued_per_s = mean(costs.iter().map(|c| c.issued_per_s));
    }
    if installed("redis-server") {
        step(&format!(
            "Redis, AOF always, one client's INCRs at {rate}/s over {window:?}"
        ));
        let (cpu, incrs) = redis_aof(dir, rate, window).await?;
        report.redis_aof_cpu_ms_per_s = Some(cpu);
        report.redis_aof_incr_per_s = Some(incrs);
    } else {
        step("redis-server is not installed: the Redis yardstick is left out (optional)");
    }
    Ok(report)
}

/// Starts `nodes` nodes (a coordinator and workers joining it) with load clients at
/// `rate` each (none for 0), and waits until they form a complete cluster.
async fn start(
    dir: &Path,
    prefix: &str,
    nodes: u32,
    rate: u32,
) -> Result<Vec<BenchNode>, CommandError> {
    let rate = rate.to_string();
    let extra = ["--stats-interval", "2", "--load", rate.as_str()];
    let mut cluster = vec![BenchNode::start_with(
        dir,
        &format!("{prefix}-0"),
        COUNTERS,
        None,
        &extra,
    )?];
    let seed = cluster[0].addr.clone();
    for i in 1..nodes {
        let name = format!("{prefix}-{i}");
        cluster.push(BenchNode::start_with(
            dir,
            &name,
            COUNTERS,
            Some(&seed),
            &extra,
        )?);
    }
    wait_for_cluster(
        &seed,
        nodes as usize,
        nodes * COUNTERS,
        Duration::from_secs(60),
    )
    .await?;
    Ok(cluster)
}

/// Waits until every node's load clients have issued something.
async fn wait_for_load(cluster: &[BenchNode]) -> Result<(), CommandError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in cluster {
        loop {
            let info = info(&node.addr).await?;
            if info.issued_operations > 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(CommandError::Local(format!(
                    "{}'s load clients issued nothing within 30 s (log: {})",
                    node.name,
                    node.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// One node's cost over the window.
pub(crate) struct Cost {
    pub(crate) cpu_ms_per_s: f64,
    pub(crate) wakeups_per_s: f64,
    pub(crate) commits_per_s: f64,
    pub(crate) issued_per_s: f64,
}

/// Each node's CPU, commits and issued operations over `window`. The node's own
/// figures are read just outside the CPU readings, so the client's visits are not
/// counted as the node's work.
pub(crate) async fn measure(
    cluster: &[BenchNode],
    window: Duration,
) -> Result<Vec<Cost>, CommandError> {
    let mut before = Vec::new();
    for node in cluster {
        before.push(info(&node.addr).await?);
    }
    let cpu_before = cpu_of(cluster)?;
    let sleeps_before = sleeps_of(cluster);
    let began = Instant::now();
    tokio::time::sleep(window).await;
    let cpu_after = cpu_of(cluster)?;
    let sleeps_after = sleeps_of(cluster);
    let elapsed = began.elapsed().as_secs_f64();
    let mut costs = Vec::new();
    for (((node, was), (cpu0, cpu1)), (sleeps0, sleeps1)) in cluster
        .iter()
        .zip(before)
        .zip(cpu_before.into_iter().zip(cpu_after))
        .zip(sleeps_before.into_iter().zip(sleeps_after))
    {
        let now = info(&node.addr).await?;
        costs.push(Cost {
            cpu_ms_per_s: (cpu1 - cpu0).as_secs_f64() * 1e3 / elapsed,
            wakeups_per_s: sleeps1.since(&sleeps0) as f64 / elapsed,
            commits_per_s: now.store_commits.saturating_sub(was.store_commits) as f64 / elapsed,
            issued_per_s: now.issued_operations.saturating_sub(was.issued_operations) as f64
                / elapsed,
        });
    }
    Ok(costs)
}

/// Every node's CPU time so far.
fn cpu_of(cluster: &[BenchNode]) -> Result<Vec<Duration>, CommandError> {
    cluster
        .iter()
        .map(|node| {
            cpu_time(node.pid()).ok_or_else(|| {
                CommandError::Local(format!(
                    "{} is not running (log: {})",
                    node.name,
                    node.log.display()
                ))
            })
        })
        .collect()
}

/// Every node's sleeps so far, per thread (none for one that is gone: `cpu_of` says so).
fn sleeps_of(cluster: &[BenchNode]) -> Vec<Sleeps> {
    cluster
        .iter()
        .map(|node| sleeps(node.pid()).unwrap_or_default())
        .collect()
}

/// What the node at `addr` says about itself (and the peers it has up).
pub(crate) async fn info(addr: &str) -> Result<NodeInfo, CommandError> {
    let client = ClusterClient::connect(addr, DEV_COOKIE, None, Duration::from_secs(10)).await?;
    let info = client.info(Duration::from_secs(5)).await;
    client.close().await;
    info
}

/// Redis with AOF `always` (an fsync before each reply), one client's `INCR`s at
/// `rate` per second over `window`: the server's CPU in ms/s, and the `INCR`s it
/// answered per second.
async fn redis_aof(dir: &Path, rate: u32, window: Duration) -> Result<(f64, f64), CommandError> {
    let aof_dir = dir.join("redis-aof");
    std::fs::create_dir_all(&aof_dir)
        .map_err(|e| CommandError::Local(format!("cannot create {}: {e}", aof_dir.display())))?;
    let aof_dir = aof_dir.to_string_lossy().into_owned();
    let (server, port) = Server::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &aof_dir,
    ])
    .await?;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| CommandError::Local(format!("cannot reach redis-server: {e}")))?;
    let _ = stream.set_nodelay(true);
    let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cpu = |pid| {
        cpu_time(pid).ok_or_else(|| CommandError::Local("redis-server is not running".into()))
    };
    let cpu0 = cpu(server.pid())?;
    let began = Instant::now();
    let mut answered = 0u64;
    let mut reply = [0u8; 64];
    while began.elapsed() < window {
        ticks.tick().await;
        stream
            .write_all(b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n")
            .await
            .map_err(|e| CommandError::Local(format!("redis-server: {e}")))?;
        // An integer reply (`:N\r\n`) fits one read on loopback.
        let n = stream
            .read(&mut reply)
            .await
            .map_err(|e| CommandError::Local(format!("redis-server: {e}")))?;
        if n == 0 || reply[0] != b':' {
            return Err(CommandError::Local(format!(
                "redis-server answered {:?}",
                String::from_utf8_lossy(&reply[..n])
            )));
        }
        answered += 1;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let cpu1 = cpu(server.pid())?;
    Ok((
        (cpu1 - cpu0).as_secs_f64() * 1e3 / elapsed,
        answered as f64 / elapsed,
    ))
}

pub(crate) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / f64::from(n)
    }
}

pub(crate) fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

/// The figures beside their goals.
pub(crate) fn light_table(r: &LightReport) -> String {
    let redis = match (r.redis_aof_cpu_ms_per_s, r.redis_aof_incr_per_s) {
        (Some(cpu), Some(incrs)) => format!(
            "{cpu:.1} ms/s at {incrs:.0} INCR/s; node/Redis {:.1}x",
            r.load_cpu_ms_per_s / cpu.max(f64::MIN_POSITIVE)
        ),
        _ => "not installed".to_string(),
    };
    let load_goal = if r.light_nodes >= 10 {
        "<= 40 ms/s"
    } else {
        "<= 25 ms/s and <= 3x Redis"
    };
    let rows = [
        (
            "idle CPU per node".to_string(),
            format!(
                "{:.1} ms/s (busiest {:.1})",
                r.idle_cpu_ms_per_s, r.idle_cpu_ms_per_s_max
            ),
            "<= 3 ms/s".to_string(),
        ),
        (
            "idle wake-ups per node".to_string(),
            format!(
                "{:.1}/s ({:.0} us of CPU each)",
                r.idle_wakeups_per_s,
                r.idle_cpu_ms_per_s * 1e3 / r.idle_wakeups_per_s.max(f64::MIN_POSITIVE)
            ),
            "reported".to_string(),
        ),
        (
            format!("CPU per node at {}/s", r.light_rate_per_node),
            format!(
                "{:.1} ms/s (busiest {:.1})",
                r.load_cpu_ms_per_s, r.load_cpu_ms_per_s_max
            ),
            load_goal.to_string(),
        ),
        (
            "Redis AOF always, same rate".to_string(),
            redis,
            "yardstick".to_string(),
        ),
        (
            "fsync'd commits per node".to_string(),
            format!("{:.0}/s", r.load_commits_per_s),
            "<= 100/s".to_string(),
        ),
        (
            "issued per node".to_string(),
            format!("{:.0} ops/s", r.load_issued_per_s),
            format!("{} (the rate asked for)", r.light_rate_per_node),
        ),
    ];
    let mut text = format!(
        "{} nodes on loopback, {} counters and a data dir each, window {:.0} s\n{:<32} {:<52} goal\n",
        r.light_nodes, COUNTERS, r.light_window_s, "figure", "value"
    );
    for (figure, value, goal) in rows {
        text.push_str(&format!("{figure:<32} {value:<52} {goal}\n"));
    }
    text
}
