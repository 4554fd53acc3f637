//! A counter that fails is restarted by its node's supervisor under the same name, in
//! the same group, with the state of the last message it completed.

use std::time::Duration;

use crate::util::{client, client_ok, node_entry, stats, wait_for, Cluster};

#[test]
fn a_crashed_counter_is_restarted_with_its_value() {
    let cluster = Cluster::start(1, &["--counters", "2", "--enable-fault-injection"]);
    cluster.wait_complete(0, 2, 4);
    let worker = cluster.nodes[1].addr.clone();
    client_ok(&["incr", "worker-1/0", "--by", "42", "--join", &worker]);

    let out = client_ok(&["debug", "crash-counter", "worker-1/0", "--join", &worker]);
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
    assert!(cluster.nodes[1].log().contains("counter failed"));
}

#[test]
fn fault_injection_is_off_by_default() {
    let cluster = Cluster::start(0, &["--counters", "1"]);
    cluster.wait_complete(0, 1, 1);
    let out = client(&[
        "debug",
        "crash-counter",
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
