//! The slow suite, `#[ignore]`d so that `cargo test` stays quick; `.ci/run` runs it
//! with `cargo test --release --test cluster -- --ignored --nocapture`.
//!
//! - `no_false_alarm_under_full_load`: every node runs load clients flat out (the rate
//!   is capped only by backpressure, i.e. by what the receivers sustain) for
//!   `SOAK_SECS` (default 60); not one peer may be declared unreachable.
//! - `fault_timings`: each fault `FAULT_RUNS` times (default 5); prints the median and
//!   worst detection and recovery times (the figures in BENCHMARKS.md).

use std::time::{Duration, Instant};

use crate::faults::{freeze_worker, kill_coordinator, kill_worker, FaultTimes, DETECT, REJOIN};
use crate::partition::partition;
use crate::util::{stats, timing_lock, Cluster};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn no_false_alarm_under_full_load() {
    let _serial = timing_lock();
    let secs = env_or("SOAK_SECS", 60);
    let cluster = Cluster::start(
        2,
        &[
            "--counters",
            "4",
            "--load",
            "10000000",
            "--stats-interval",
            "1",
        ],
    );
    cluster.wait_mesh(12);
    let started = Instant::now();
    let mut rates = Vec::new();
    let mut polls = 0;
    let mut next_report = Duration::ZERO;
    // Poll the cluster throughout; every collection must stay complete.
    while started.elapsed() < Duration::from_secs(secs) {
        let s = stats(&cluster.nodes[0].addr).unwrap();
        assert_eq!(
            s["complete"],
            true,
            "incomplete under load after {:?}: {s}",
            started.elapsed()
        );
        rates.push(s["recent_ops_per_sec"].as_f64().unwrap_or(0.0));
        polls += 1;
        let rss: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("{}={:.1}MiB", n.name, rss_mib(n.child.id())))
            .collect();
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(10);
            println!(
                "t={:>4.1}s recent_ops_per_sec={:.0} total_operations={} rss: {}",
                started.elapsed().as_secs_f64(),
                rates.last().unwrap(),
                s["total_operations"],
                rss.join(" ")
            );
        }
    }
    for node in &cluster.nodes {
        let log = node.log();
        for bad in ["peer unreachable", "complete=false", "peer reachable again"] {
            assert!(
                !log.contains(bad),
                "{}: '{bad}' under load:\n{}",
                node.name,
                log.lines()
                    .filter(|l| l.contains(bad))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "no false alarm: {secs} s at full load, {polls} complete collections, median {:.0} ops/s",
        rates[rates.len() / 2]
    );
}

fn summarize(name: &str, runs: &[FaultTimes]) {
    let median = |mut v: Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (d_med, d_max) = median(runs.iter().map(|t| t.detected).collect());
    let (r_med, r_max) = median(runs.iter().map(|t| t.recovered).collect());
    println!(
        "| {name:<24} | {:>5} | {:>7} | {:>7} | {:>7} | {:>7} |",
        runs.len(),
        d_med.as_millis(),
        d_max.as_millis(),
        r_med.as_millis(),
        r_max.as_millis()
    );
    assert!(
        d_max <= DETECT && r_max <= REJOIN,
        "{name}: over the bounds"
    );
}

type Scenario = fn() -> FaultTimes;

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn fault_timings() {
    let _serial = timing_lock();
    let n = env_or("FAULT_RUNS", 5) as usize;
    let mut table = Vec::new();
    let scenarios: [(&str, Scenario); 3] = [
        ("kill -9 worker", kill_worker),
        ("kill -9 coordinator", kill_coordinator),
        ("SIGSTOP/SIGCONT worker", freeze_worker),
    ];
    for (name, run) in scenarios {
        table.push((name, (0..n).map(|_| run()).collect::<Vec<_>>()));
    }
    let parts: Vec<FaultTimes> = (0..n).filter_map(|_| partition("fault_timings")).collect();
    println!(
        "\n| fault                    | runs  | detect median ms | max | recover median ms | max |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, runs) in &table {
        summarize(name, runs);
    }
    if !parts.is_empty() {
        summarize("silent partition (netns)", &parts);
    }
}
