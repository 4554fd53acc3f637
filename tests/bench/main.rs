//! `node-bench` end to end, small: it starts its own node processes, pushes, calls and
//! collects, and reports every figure the benchmark promises. Only correctness is checked
//! here (keys present, figures positive, pushes exact, collections complete); the speeds
//! themselves are reported by the benchmark, never asserted in a test.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The benchmark, with the `node` binary it starts beside it (built by the workspace's
/// `cargo test`, or `cargo build -p node`).
fn bench_bin() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_node-bench"));
    let node = bench.with_file_name(format!("node{}", std::env::consts::EXE_SUFFIX));
    assert!(
        node.is_file(),
        "{} is missing: run the tests from the workspace (`cargo test`), which builds it",
        node.display()
    );
    bench
}

fn bench(args: &[&str]) -> Value {
    let out = Command::new(bench_bin())
        .arg("--json")
        .args(args)
        .output()
        .expect("run node-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node-bench failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("node-bench --json printed no JSON object ({e}):\n{stdout}"))
}

fn positive(report: &Value, key: &str) -> f64 {
    let value = report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is missing or not a number in {report}"));
    assert!(value > 0.0, "`{key}` is {value}, expected > 0 in {report}");
    value
}

#[test]
fn bench_reports_every_figure_and_its_pushes_are_exact() {
    let report = bench(&[
        "--ops",
        "200000",
        "--unbatched-ops",
        "20000",
        "--calls",
        "200",
        "--collections",
        "2",
        "--counters",
        "300",
        "--raw-frames",
        "100000",
        "--applies",
        "1000",
        "--restart-counters",
        "500",
    ]);
    for key in [
        "raw_tcp_frames_per_sec",
        "remote_increments_per_sec",
        "remote_increments_per_sec_unbatched",
        "remote_call_p50_us",
        "remote_call_p99_us",
        "aggregate_10k_ms",
        "aggregate_10k_sequential_ms",
        "sender_peak_rss_mb",
        "rss_per_counter_kb",
        "remote_increments_per_sec_memory",
        "durable_vs_memory",
        "ops_per_fsync",
        "fsyncs_per_sec",
        "durable_change_p50_us",
        "durable_change_p99_us",
        "durable_change_at_once_p50_us",
        "memory_change_p50_us",
        "restart_complete_ms",
    ] {
        positive(&report, key);
    }
    assert_eq!(
        report["remote_increments_exact"], true,
        "a push was not exact: {report}"
    );
    assert_eq!(report["aggregate_counters"], 300, "{report}");
    assert_eq!(report["push_operations"], 200_000, "{report}");
    assert_eq!(report["restart_counters"], 500, "{report}");
    // The durable changes come in rounds, each after one of Redis's (where installed).
    let rounds = report["durable_change_rounds_p50_us"]
        .as_array()
        .unwrap_or_else(|| panic!("no rounds: {report}"));
    assert_eq!(rounds.len(), 10, "{report}");
    assert!(rounds
        .iter()
        .all(|p50| p50.as_f64().is_some_and(|v| v > 0.0)));
    // Against Redis, each round is its own ratio and the figure is their median.
    if !report["redis_aof_incr_p50_us"].is_null() {
        let ratios: Vec<f64> = report["durable_vs_redis_aof_rounds"]
            .as_array()
            .unwrap_or_else(|| panic!("no ratios: {report}"))
            .iter()
            .map(|ratio| ratio.as_f64().unwrap_or(0.0))
            .collect();
        assert_eq!(ratios.len(), 10, "{report}");
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let median = (sorted[4] + sorted[5]) / 2.0;
        assert!(sorted[0] > 0.0, "{report}");
        assert!(
            (positive(&report, "durable_vs_redis_aof") - median).abs() < 1e-9,
            "the ratio is not the median of the rounds' ratios: {report}"
        );
    }
    assert!(
        positive(&report, "remote_call_p99_us") >= positive(&report, "remote_call_p50_us"),
        "p99 below p50: {report}"
    );
    // Clients sending at once share commits (about 2 changes per commit with 4 on this
    // machine kind): about one would mean each waited alone behind another's sync (a
    // lone client's change is committed on the journal's own thread, which must stop
    // while others send; without that stop, 1.17). Run beside other tests on two vCPUs
    // (`cargo nextest run --workspace`, 7 December) fewer clients overlap: 1.37 in three
    // runs of four, of this code and of the code of the day before alike; so the bound
    // sits between what a regression gives and that.
    // Only where the disk's sync takes long enough for others to arrive meanwhile (not
    // on a tmpfs, say).
    let sync_costs =
        positive(&report, "durable_change_p50_us") - positive(&report, "memory_change_p50_us");
    let per_commit = positive(&report, "durable_changes_per_commit_at_once");
    if sync_costs >= 50.0 {
        assert!(
            per_commit > 1.25,
            "clients at once did not share commits: {report}"
        );
    } else {
        eprintln!(
            "a sync costs {sync_costs:.0} µs here: {per_commit:.2} changes per commit not checked"
        );
    }
    // Coalescing is what the figure measures: a message must carry more than one operation.
    assert!(
        positive(&report, "remote_increments_ops_per_message") > 1.0,
        "the coalesced push sent one operation per message: {report}"
    );
}

#[test]
fn bench_scale_forms_and_collects_every_counter() {
    let report = bench(&["--scale", "--scale-counters", "2000"]);
    assert_eq!(report["scale_nodes"], 3, "{report}");
    assert_eq!(report["scale_counters_per_node"], 2000, "{report}");
    assert_eq!(report["scale_collected_counters"], 6000, "{report}");
    assert_eq!(report["scale_complete"], true, "{report}");
    positive(&report, "scale_form_ms");
    positive(&report, "scale_collect_ms");
    positive(&report, "scale_rss_mb_max");
}

#[test]
fn big_node_mode_pages_through_a_node_larger_than_a_page() {
    // 120,000 counters: three pages of a collection.
    for alone in [false, true] {
        let mut args = vec![
            "--big-node",
            "--big-counters",
            "120000",
            "--big-active",
            "50",
        ];
        if alone {
            args.push("--big-alone");
        }
        let report = bench(&args);
        let others = if alone { 0 } else { 4 };
        assert_eq!(
            report["big_collected_counters"],
            120_000 + others,
            "{report}"
        );
        assert_eq!(report["big_complete"], true, "{report}");
        assert_eq!(report["big_alone"], alone, "{report}");
        positive(&report, "big_collect_ms");
        positive(&report, "big_activation_us");
        positive(&report, "big_worker_rss_mb");
        positive(&report, "big_coordinator_rss_mb");
    }
}

#[test]
fn bench_checks_its_options_and_explains_them() {
    // The benchmark is its own program, with its own checked options.
    let bench = bench_bin();
    for args in [
        vec!["--scale-counters", "100001"],
        vec!["--big-counters", "1000001"],
        vec!["--big-alone"],
        vec!["--counters", "2"],
        vec!["--ops", "0"],
        vec!["--light", "--scale"],
        vec!["--light", "--light-rate", "0"],
    ] {
        let out = Command::new(&bench).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "node-bench {args:?}");
    }
    let help = Command::new(&bench).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--json",
        "--scale",
        "--light",
        "--light-nodes",
        "--big-node",
        "--ops",
        "--counters",
        "BENCHMARKS.md",
    ] {
        assert!(
            text.contains(flag),
            "node-bench --help does not explain {flag}"
        );
    }
    assert!(
        !text.contains("sender"),
        "the internal sender is hidden: {text}"
    );
}

/// `--light`: every figure of the light-load mode is there, the load clients met the
/// rate asked for, and the nodes' CPU and commits were seen (the figures themselves are
/// compared with their goals by the benchmark, not here).
#[test]
fn light_mode_reports_cost_at_light_load() {
    let report = bench(&["--light", "--light-seconds", "2", "--light-rate", "200"]);
    for key in [
        "load_cpu_ms_per_s",
        "load_cpu_ms_per_s_max",
        "load_commits_per_s",
    ] {
        positive(&report, key);
    }
    for key in ["idle_cpu_ms_per_s", "idle_cpu_ms_per_s_max"] {
        let value = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("`{key}` is missing or not a number in {report}"));
        assert!(value >= 0.0, "`{key}` is {value} in {report}");
    }
    let issued = positive(&report, "load_issued_per_s");
    assert!(
        (100.0..=300.0).contains(&issued),
        "the load clients issued {issued} ops/s per node, asked for 200: {report}"
    );
    assert_eq!(report["light_nodes"], 3, "{report}");
}

#[test]
fn nodes_mode_forms_collects_detects_and_rejoins() {
    let report = bench(&["--nodes", "4", "--light-seconds", "1"]);
    assert_eq!(report["many_nodes"], 4, "{report}");
    for key in [
        "formed_ms",
        "formed_after_last_start_ms",
        "collection_ms",
        "kill_seen_by_all_ms",
        "frozen_declared_by_all_ms",
        "rejoined_ms",
        "idle_messages_per_s",
    ] {
        positive(&report, key);
    }
    // A frozen node is declared by silence: 1.2 s (0.6 of the failure timeout) after
    // the last heartbeat heard, which went at most 0.4 s before the freeze. A killed
    // one is seen by its closed connections.
    let frozen = positive(&report, "frozen_declared_by_all_ms");
    assert!(frozen >= 700.0, "declared before the silence: {report}");
    assert!(
        positive(&report, "kill_seen_by_all_ms") < frozen,
        "a kill should be seen before a freeze: {report}"
    );
    assert_eq!(report["false_alarms"], 0, "{report}");
    positive(&report, "false_alarm_window_s");
}
