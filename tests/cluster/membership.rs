//! Three processes form one cluster, and every node sees every counter.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::util::{wait_for, Cluster, NodeProc};

fn names(stats: &serde_json::Value) -> BTreeSet<String> {
    stats["nodes"]
        .as_array()
        .expect("nodes is an array")
        .iter()
        .map(|n| n["name"].as_str().expect("node name").to_string())
        .collect()
}

#[test]
fn coordinator_and_two_workers_aggregate_all_counters() {
    let cluster = Cluster::start(2, &["--counters", "4", "--stats-interval", "0.5"]);
    let s = cluster.wait_complete(0, 3, 12);

    assert_eq!(
        names(&s),
        ["coordinator", "worker-1", "worker-2"]
            .map(String::from)
            .into()
    );
    for node in s["nodes"].as_array().unwrap() {
        assert_eq!(node["reachable"], true, "{node}");
        assert_eq!(node["answered"], true, "{node}");
        let since = node["since_ms"].as_u64().unwrap();
        // The membership is read at the end of the collection: a peer may come up
        // while it runs.
        let end = s["collected_at_ms"].as_u64().unwrap() + s["duration_ms"].as_u64().unwrap();
        assert!(
            since > 0 && since <= end + 1,
            "since_ms {since}, collection ended {end}"
        );
        let counters = node["counters"].as_array().unwrap();
        assert_eq!(counters.len(), 4, "{node}");
        for c in counters {
            for key in ["name", "value", "operations", "ops_per_sec"] {
                assert!(!c[key].is_null(), "counter lacks {key}: {c}");
            }
        }
    }
    assert_eq!(s["missing_counters"].as_array().map(Vec::len), Some(0));
    // The stats command is itself a connected client: it is not counted as a node.
    assert_eq!(s["num_nodes"], 3);

    // `node health` describes the one node it reaches (a container healthcheck).
    let health = crate::util::client_ok(&["health", "--join", &cluster.nodes[0].addr]);
    assert!(
        health.starts_with("healthy: coordinator (coordinator)") && health.contains("2 peer(s) up"),
        "{health}"
    );

    // The coordinator's aggregator logs the totals periodically.
    let coordinator = &cluster.nodes[0];
    wait_for(
        "the aggregator's summary line",
        Duration::from_secs(10),
        || {
            coordinator
                .log()
                .lines()
                .any(|l| {
                    l.contains("cluster: total_value=0") && l.contains("counters=12/12 nodes=3/3")
                })
                .then_some(())
                .ok_or_else(|| "no complete summary line yet".to_string())
        },
    );
}

#[test]
fn mesh_is_full_whichever_node_was_joined() {
    // worker-2 joins worker-1, not the coordinator: it must still reach everyone, and
    // every node's own collection must see all three nodes.
    let coordinator = NodeProc::start("coordinator", &["--role", "coordinator"]);
    let w1 = NodeProc::start("worker-1", &["--join", &coordinator.addr]);
    let w2 = NodeProc::start("worker-2", &["--join", &w1.addr]);
    let cluster = Cluster {
        nodes: vec![coordinator, w1, w2],
    };
    cluster.wait_mesh(12);
    for (via, node) in cluster.nodes.iter().enumerate() {
        let s = cluster.wait_complete(via, 3, 12);
        assert_eq!(s["collected_by"], node.name.as_str());
    }
}

#[test]
fn a_peer_that_connects_while_a_node_is_starting_is_not_missed() {
    // Starting 10,000 counters takes a while, and the cluster port is bound meanwhile:
    // the worker connects while the coordinator is still starting (its connection
    // waits until the coordinator accepts, once its mesh is running). The coordinator
    // must still count it as up (and gossip it to others).
    let coordinator = NodeProc::start(
        "coordinator",
        &["--role", "coordinator", "--counters", "10000"],
    );
    let worker = NodeProc::start(
        "worker-1",
        &["--join", &coordinator.addr, "--counters", "1"],
    );
    let cluster = Cluster {
        nodes: vec![coordinator, worker],
    };
    let s = cluster.wait_mesh(10_001);
    assert_eq!(s["reachable_nodes"], 2, "{s}");
}

/// A node that left cleanly and comes back (a new run, same name and address) is
/// admitted and dialed again by everyone at once, even by a peer whose name sorts first
/// and that the returning node does not dial itself; and as soon as the coordinator
/// says the cluster is complete, a change through any node reaches any counter.
#[test]
fn a_node_that_left_and_came_back_is_everyones_peer_again() {
    let mut cluster = Cluster::start(2, &["--counters", "2"]);
    cluster.wait_mesh(6);
    // worker-2 sorts last and is nobody's seed.
    cluster.nodes[2].signal("TERM");
    assert_eq!(cluster.nodes[2].wait_exit(Duration::from_secs(10)), Some(0));
    cluster.wait_complete(0, 2, 4);
    cluster.wait_complete(1, 2, 4);
    cluster.nodes[2].restart();
    let coordinator = cluster.nodes[0].addr.clone();
    let worker_1 = cluster.nodes[1].addr.clone();
    cluster.wait_complete(0, 3, 6);
    // Complete means every member sees every other: worker-1 reaches worker-2's counter.
    let value = crate::util::client_ok(&["incr", "worker-2/1", "--by", "3", "--join", &worker_1]);
    assert_eq!(value, "3");
    let value = crate::util::client_ok(&["incr", "worker-1/0", "--join", &cluster.nodes[2].addr]);
    assert_eq!(value, "1");
    cluster.wait_mesh(6);
    let s = crate::util::stats(&coordinator).unwrap();
    assert_eq!(s["missing_links"], serde_json::json!([]), "{s}");
}

/// A counter whose node this node cannot reach right now is reported as such, never as
/// a counter that does not exist.
#[test]
fn a_counter_on_an_unreachable_node_is_not_called_unknown() {
    let cluster = Cluster::start(2, &["--counters", "1"]);
    cluster.wait_mesh(3);
    let worker_1 = cluster.nodes[1].addr.clone();
    cluster.nodes[2].signal("STOP");
    let err = wait_for(
        "worker-1 to find worker-2 unreachable",
        Duration::from_secs(10),
        || {
            let out = crate::util::client(&["get", "worker-2/0", "--join", &worker_1]);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            (!out.status.success() && err.contains("not reachable"))
                .then_some(err.clone())
                .ok_or(err)
        },
    );
    cluster.nodes[2].signal("CONT");
    assert!(
        err.contains("'worker-2' is not reachable from 'worker-1'")
            && !err.contains("no counter named"),
        "{err}"
    );
}
