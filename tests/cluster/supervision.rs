//! A counter that fails is restarted by its node's supervisor under the same name, in
//! the same group, with the state of the last message it completed.

use std::time::Duration;

use crate::metrics::{counter_value, sample, scrape};
use crate::util::{client, client_ok, node_entry, stats, wait_for, Cluster};

#[test]
fn a_crashed_counter_is_restarted_with_its_value() {
    let cluster = Cluster::start(1, &["--counters", "2", "--enable-fault-injection"]);
    cluster.wait_complete(0, 2, 4);
    let worker = cluster.nodes[1].addr.clone();
    client_ok(&["incr", "worker-1/0", "--by", "42", "--join", &worker]);

    let out = client_ok(&["debug", "crash", "counter", "worker-1/0", "--join", &worker]);
    assert!(out.contains("worker-1/0"), "{out}");

    let s = wait_for(
        "the restart to show in stats",
        Duration::from_secs(10),
        || {
            let s = stats(&cluster.nodes[0].addr)?;
            let restarts = node_entry(&s, "worker-1").map(|n| n["counter_restarts"].clone());
            (s["complete"] == true && restarts == Some(1.into()))
                .then_some(s.clone())
                .ok_or_else(|| format!("restarts {restarts:?} in {s}"))
        },
    );
    let w1 = node_entry(&s, "worker-1").unwrap();
    let c0 = &w1["counters"][0];
    assert_eq!(
        (c0["name"].as_str(), c0["value"].as_i64()),
        (Some("worker-1/0"), Some(42))
    );
    assert_eq!(c0["operations"], 1);
    // Still reachable by name, through another node, and still counting.
    let value = client_ok(&["incr", "worker-1/0", "--join", &cluster.nodes[0].addr]);
    assert_eq!(value, "43");
    // The one failure is the one restart, and serving the change made no other.
    let s = stats(&cluster.nodes[1].addr).unwrap();
    let restarts = node_entry(&s, "worker-1").map(|n| n["counter_restarts"].clone());
    assert_eq!(restarts, Some(1.into()), "{s}");
}

#[test]
fn fault_injection_is_off_by_default() {
    let cluster = Cluster::start(0, &["--counters", "1"]);
    cluster.wait_complete(0, 1, 1);
    let out = client(&[
        "debug",
        "crash",
        "counter",
        "coordinator/0",
        "--join",
        &cluster.nodes[0].addr,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--enable-fault-injection"), "{err}");
    let s = stats(&cluster.nodes[0].addr).unwrap();
    assert_eq!(s["nodes"][0]["counter_restarts"], 0);
}

/// The `part_restarts` series of `node`'s part `what` ("counter host": `counter_host`).
fn part_restarts_series(node: &crate::util::NodeProc, what: &str) -> String {
    format!(
        "counter_cluster_part_restarts_total{{node=\"{}\",part=\"{}\"}}",
        node.name,
        what.replace(' ', "_")
    )
}

/// Makes `part` of `node` fail (fault injection), and waits for its root to have
/// restarted it, as its metrics (at `http`) say.
fn crash_and_wait_restart(node: &crate::util::NodeProc, http: &str, part: &str, what: &str) {
    let series = part_restarts_series(node, what);
    let before = counter_value(http, &series).unwrap();
    client_ok(&["debug", "crash", part, "--join", &node.addr]);
    wait_for(
        &format!("the {what} of {} to be restarted", node.name),
        Duration::from_secs(10),
        || {
            let now = counter_value(http, &series)?;
            (now > before)
                .then_some(())
                .ok_or(format!("{series} is {now}, was {before}"))
        },
    );
}

/// Every part the root restarts comes back, and the node goes on as before: counters
/// keep their values, clients and peers are served, heartbeats never stop long enough
/// for a peer to declare it unreachable, and the load goes on. (Exact totals through a
/// host's restart rest on resending: a restarted host loses what was queued at it.)
#[test]
fn every_restartable_part_comes_back_and_the_node_keeps_serving() {
    let (cluster, https) = Cluster::start_with_http(
        &["coordinator", "worker-1"],
        &[
            "--counters",
            "2",
            "--enable-fault-injection",
            "--load",
            "200",
            "--stats-interval",
            "0.5",
        ],
    );
    cluster.wait_mesh(4);
    let coordinator = &cluster.nodes[0];
    let worker = &cluster.nodes[1];
    // The load moves every counter a little, either way (a few thousand in all; early
    // on, a counter that got only a decrement is below zero); these steps of a million
    // show whether a counter kept its value through each failure.
    const STEP: i64 = 1_000_000;
    let value_after_step = |k: i64, via: &str| {
        let by = STEP.to_string();
        let value: i64 = client_ok(&["incr", "coordinator/1", "--by", &by, "--join", via])
            .parse()
            .unwrap();
        assert!(
            (k * STEP - STEP / 10..k * STEP + STEP / 10).contains(&value),
            "step {k}: coordinator/1 is {value}"
        );
    };
    value_after_step(1, &worker.addr);

    let parts = [
        ("host", "counter host"),
        ("journal", "journal"),
        ("agent", "node agent"),
        ("mesh", "mesh"),
        ("aggregator", "aggregator"),
        ("load-client", "load clients"),
        ("listener", "accept loop"),
        ("counter-supervisor", "counter supervisor"),
    ];
    for (k, (part, what)) in (2..).zip(parts) {
        crash_and_wait_restart(coordinator, &https[0], part, what);
        // Changes reach the restarted part, through either node, and the value moves
        // on from where it was.
        let via = [&coordinator.addr, &worker.addr][k as usize % 2];
        value_after_step(k, via);
        cluster.wait_mesh(4);
    }

    // The load went on throughout (a restarted load client carries on from the tally).
    let issued = |s: &serde_json::Value| s["issued_operations"].as_u64().unwrap_or(0);
    let before = issued(&stats(&coordinator.addr).unwrap());
    wait_for("the load to go on", Duration::from_secs(10), || {
        let s = stats(&coordinator.addr)?;
        (issued(&s) > before).then_some(()).ok_or(format!("{s}"))
    });
    // One restart per failure, and nothing else failed: no other part, no counter.
    let metrics = scrape(&https[0]).unwrap();
    for (_, what) in parts {
        let series = part_restarts_series(coordinator, what);
        assert_eq!(sample(&metrics, &series), Some(1.0), "{series}:\n{metrics}");
    }
    let restarted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("counter_cluster_part_restarts_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(restarted, 8.0, "parts restarted:\n{metrics}");
    let series = "counter_cluster_actor_restarts_total{node=\"coordinator\"}";
    assert_eq!(sample(&metrics, series), Some(0.0), "{series}:\n{metrics}");
    // No peer ever saw the coordinator as gone: the worker's membership events (all of
    // them: fewer than it keeps) hold no `unreachable`.
    let (events, members) = crate::http::member_events(&https[1]);
    assert!(
        !events.iter().any(|e| e["kind"] == "unreachable"),
        "the worker saw a peer unreachable: {}",
        members
    );
}

/// A part the node cannot do without (ractor_cluster's NodeServer owns every session)
/// stops the node cleanly: one error line, counters' final values, exit code 1.
#[test]
fn a_failed_cluster_server_stops_the_node_with_an_error() {
    let mut cluster = Cluster::start(1, &["--counters", "2", "--enable-fault-injection"]);
    cluster.wait_mesh(4);
    let out = client(&[
        "debug",
        "crash",
        "cluster-server",
        "--join",
        &cluster.nodes[1].addr,
    ]);
    // The node may close the connection before the answer gets out: either is fine.
    let _ = out;
    let code = cluster.nodes[1].wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(1), "the exit code of a node that failed");
    let log = cluster.nodes[1].log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one clear line:\n{log}");
    assert!(
        errors[0].contains("the cluster server failed") && errors[0].contains("stopping the node"),
        "{}",
        errors[0]
    );
    assert_eq!(
        crate::util::lines_with(&log, "final value"),
        2,
        "a clean stop:\n{log}"
    );
    assert!(log.contains("node stopped"), "{log}");
    // The rest of the cluster notices (the node could not say goodbye: its sessions
    // went with the server) and goes on.
    let coordinator = cluster.nodes[0].addr.clone();
    wait_for(
        "the coordinator to see worker-1 gone",
        Duration::from_secs(10),
        || {
            let s = stats(&coordinator)?;
            let reachable = node_entry(&s, "worker-1").map(|n| n["reachable"].clone());
            (reachable == Some(false.into()))
                .then_some(())
                .ok_or(format!("{s}"))
        },
    );
    assert_eq!(
        client_ok(&["get", "coordinator/0", "--join", &coordinator]),
        "0"
    );
}

/// A part that keeps failing is a node that does not work: past the restart budget the
/// node stops instead of restarting it forever.
#[test]
fn a_part_that_keeps_failing_stops_the_node() {
    let mut cluster = Cluster::start(0, &["--counters", "1", "--enable-fault-injection"]);
    cluster.wait_complete(0, 1, 1);
    let addr = cluster.nodes[0].addr.clone();
    for _ in 0..11 {
        if cluster.nodes[0].child.try_wait().unwrap().is_some() {
            break;
        }
        let _ = client(&["debug", "crash", "host", "--join", &addr]);
    }
    let code = cluster.nodes[0].wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(1));
    let log = cluster.nodes[0].log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("more than 10 times")),
        "{log}"
    );
}
