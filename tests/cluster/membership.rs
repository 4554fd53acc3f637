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
