//! The slow suite, `#[ignore]`d so that `cargo test` stays quick; `.ci/run` runs it
//! with `cargo test --release --test cluster -- --ignored --nocapture`.
//!
//! - `no_false_alarm_under_full_load` and `no_false_alarm_under_unbatched_overload`: every
//!   node runs load clients at the highest `--load` rate (10M ops/s each), coalesced and
//!   then one message per operation, for `SOAK_SECS` (default 60) each. Unbatched, the
//!   receivers cannot keep up and backpressure holds the senders back. Not one peer may be
//!   declared unreachable, every collection must be complete, and no node's memory may
//!   grow: its median in the second half of the soak stays within `SOAK_RSS_GROWTH_MIB` of
//!   its median in the first (after `SOAK_WARM_UP`), and it never reaches
//!   `SOAK_RSS_LIMIT_MIB`.
//! - `fault_timings`: each fault `FAULT_RUNS` times (default 5); prints the median and
//!   worst detection and recovery times (the figures in BENCHMARKS.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::faults::{freeze_worker, kill_coordinator, kill_worker, FaultTimes, DETECT, REJOIN};
use crate::partition::partition;
use crate::util::{rss_mib, stats, timing_lock, Cluster};

/// The median and the largest of `samples` (not empty).
fn median_and_peak(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn no_false_alarm_under_full_load() {
    soak("coalesced");
}

/// One network message per operation: here the receivers, not the rate limit, are the
/// bottleneck, so this is the overload that backpressure must absorb.
#[test]
#[ignore = "slow suite: run by .ci/run"]
fn no_false_alarm_under_unbatched_overload() {
    soak("unbatched");
}

/// What no node's resident memory may reach, ever: unbounded queues at these rates
/// would pass it within seconds. Under the unbatched overload a node holds 24-31 MiB
/// (6 December 2026, with freed memory returned at once: `node/src/main.rs`); with
/// mimalloc's default one-second purge delay it drifted to 56-65 MiB in two minutes
/// and went on, which this bound and the growth check below both catch.
const SOAK_RSS_LIMIT_MIB: f64 = 64.0;

/// How much a node's median memory in the soak's second half may exceed its median in
/// the first. A leak moves the whole of a node's memory, and so its median: one byte
/// per message, at the hundreds of thousands of messages a second of this soak, is
/// more than this over 30 s. Peaks are not compared: under the overload a node's
/// memory jumps by 10-25 MiB for a moment now and then (the allocator's caches, a
/// commit of a large group), in either half, and a peak in the second half alone is
/// not a leak (one run measured 64.8 then 79.5 MiB peaks, with medians 50.5 and 52.5).
const SOAK_RSS_GROWTH_MIB: f64 = 8.0;

/// Memory before this is not compared (start-up, the windows filling); at most a
/// quarter of the soak.
const SOAK_WARM_UP: Duration = Duration::from_secs(10);

fn soak(mode: &str) {
    let _serial = timing_lock();
    let secs = env_or("SOAK_SECS", 60);
    // Every node also serves HTTP, and its /metrics is scraped every second throughout
    // (as Prometheus would): that must cost the cluster path no false alarm.
    let (cluster, https) = Cluster::start_with_http(
        &["coordinator", "worker-1", "worker-2"],
        &[
            "--counters",
            "4",
            "--load",
            "10000000",
            "--load-mode",
            mode,
            "--stats-interval",
            "1",
        ],
    );
    cluster.wait_mesh(12);
    let scraping = Arc::new(AtomicBool::new(true));
    let scraper = {
        let scraping = Arc::clone(&scraping);
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            let mut next = Instant::now();
            while scraping.load(Ordering::Relaxed) {
                for addr in &https {
                    let text = crate::metrics::http_get(addr, "/metrics")
                        .unwrap_or_else(|e| panic!("scraping {addr}/metrics failed: {e}"));
                    assert!(text.contains("counter_cluster_operations_applied_total"));
                    scrapes += 1;
                }
                // Paced at one round a second (a rate, not a wait for anything).
                next += Duration::from_secs(1);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            scrapes
        })
    };
    let started = Instant::now();
    // Per node, its memory samples in the first half (after the warm-up) and the second.
    let mut samples = vec![(Vec::new(), Vec::new()); cluster.nodes.len()];
    let half = Duration::from_secs(secs) / 2;
    let warm_up = SOAK_WARM_UP.min(half / 2);
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
            .zip(samples.iter_mut())
            .map(|(n, (first, second))| {
                let mib = rss_mib(n.child.id());
                let at = started.elapsed();
                assert!(
                    mib < SOAK_RSS_LIMIT_MIB,
                    "{}: {mib:.1} MiB resident after {at:?} of {mode} load",
                    n.name,
                );
                if at >= half {
                    second.push(mib);
                } else if at >= warm_up {
                    first.push(mib);
                }
                format!("{}={mib:.1}MiB", n.name)
            })
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
    scraping.store(false, Ordering::Relaxed);
    let scrapes = scraper.join().expect("the scraper failed");
    for (node, (first, second)) in cluster.nodes.iter().zip(&mut samples) {
        assert!(
            !first.is_empty() && !second.is_empty(),
            "{}: no memory samples in a half of the soak ({} and {})",
            node.name,
            first.len(),
            second.len()
        );
        let (first_median, first_peak) = median_and_peak(first);
        let (second_median, second_peak) = median_and_peak(second);
        assert!(
            second_median <= first_median + SOAK_RSS_GROWTH_MIB,
            "{}: memory grew under {mode} load: median {first_median:.1} MiB in the first \
             half, {second_median:.1} MiB in the second",
            node.name
        );
        println!(
            "{}: median {first_median:.1} MiB (peak {first_peak:.1}) in the first half, \
             {second_median:.1} MiB (peak {second_peak:.1}) in the second",
            node.name
        );
    }
    assert!(
        scrapes >= 3 * secs * 8 / 10,
        "only {scrapes} scrapes of /metrics in {secs} s"
    );
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
        "no false alarm: {secs} s of {mode} load, {polls} complete collections, median {:.0} ops/s, \
         {scrapes} scrapes of /metrics",
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
