//! Collections say what they cover: a counter that does not answer in time is reported
//! missing, never silently left out, and the collection still ends at its deadline.

use std::time::{Duration, Instant};

use crate::util::{client, Cluster};

#[test]
fn frozen_node_is_reported_missing_within_the_deadline() {
    let cluster = Cluster::start(2, &["--counters", "2"]);
    cluster.wait_complete(0, 3, 6);

    // SIGSTOP keeps the TCP connection open, so the frozen node's counters stay in the
    // process groups: they must show up as missing.
    let frozen = &cluster.nodes[2];
    frozen.signal("STOP");
    let started = Instant::now();
    let out = client(&[
        "stats",
        "--json",
        "--deadline",
        "0.5",
        "--join",
        &cluster.nodes[0].addr,
    ]);
    let elapsed = started.elapsed();
    frozen.signal("CONT");

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        elapsed < Duration::from_secs(3),
        "stats took {elapsed:?} with a 0.5 s deadline"
    );
    assert_eq!(s["complete"], false);
    assert_eq!(
        s["missing_counters"],
        serde_json::json!(["worker-2/0", "worker-2/1"])
    );
    assert_eq!(
        (s["num_counters"].as_u64(), s["known_counters"].as_u64()),
        (Some(4), Some(6))
    );
    assert_eq!(s["num_nodes"], 3);
    let w2 = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "worker-2")
        .unwrap();
    assert_eq!(w2["reachable"], false);

    // Resumed, it answers again.
    cluster.wait_complete(0, 3, 6);
}

#[test]
fn last_collection_comes_from_the_coordinator_only() {
    let cluster = Cluster::start(1, &["--counters", "2", "--stats-interval", "0.2"]);
    cluster.wait_complete(0, 2, 4);
    crate::util::wait_for(
        "a complete periodic collection",
        Duration::from_secs(10),
        || {
            let out = client(&[
                "stats",
                "--last",
                "--json",
                "--join",
                &cluster.nodes[0].addr,
            ]);
            let s: serde_json::Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
            (s["complete"] == true && s["num_nodes"] == 2 && s["collected_by"] == "coordinator")
                .then_some(())
                .ok_or_else(|| format!("last collection: {s}"))
        },
    );
    let out = client(&["stats", "--last", "--join", &cluster.nodes[1].addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runs no aggregator"), "{err}");
}
