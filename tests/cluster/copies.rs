//! Two copies of every node's store (`--copies 2`): a change is
//! acknowledged once it is on both disks, and a node whose disk is lost starts from its
//! copy, so nothing it acknowledged, applied or issued is lost, and nothing is applied
//! twice.

use std::time::Duration;

use crate::exactly_once::{
    budget, loaded_cluster_with, settles_exactly, wait_issued, wait_metric, ClientLoop,
};
use crate::util::{client_ok, timing_lock, Cluster, NodeProc};

/// The line a node logs when it starts from its copy.
const RESTORED: &str = "started this node's store from its copy";

/// Deletes `node`'s data dir (the node is not running).
fn lose_disk(node: &NodeProc) {
    let dir = node
        .data_dir
        .as_ref()
        .expect("the harness gave it a data dir");
    std::fs::remove_dir_all(dir).expect("removing the data dir");
}

#[test]
fn a_node_whose_disk_is_lost_starts_from_its_copy() {
    let mut cluster = Cluster::start(2, &["--counters", "4", "--copies", "2"]);
    cluster.wait_mesh(12);
    // Acknowledged changes to worker-1's counters, through another node.
    let via = cluster.nodes[0].addr.clone();
    let mut value = 0i64;
    for k in 1..=30i64 {
        let printed: i64 =
            client_ok(&["incr", "worker-1/2", "--by", &k.to_string(), "--join", &via])
                .parse()
                .unwrap();
        value += k;
        assert_eq!(printed, value);
    }
    let worker = &mut cluster.nodes[1];
    worker.kill();
    lose_disk(worker);
    worker.restart();
    worker.wait_for_log(
        "worker-1 to start from its copy",
        RESTORED,
        Duration::from_secs(20),
    );
    cluster.wait_mesh(12);
    let got: i64 = client_ok(&["get", "worker-1/2", "--join", &via])
        .parse()
        .unwrap();
    assert_eq!(got, value, "worker-1/2 after its disk was lost");
    // And with one copy, the same loss starts the node from nothing: the test above
    // would fail without the copy.
    let mut single = Cluster::start(1, &["--counters", "4", "--copies", "1"]);
    single.wait_mesh(8);
    let via = single.nodes[0].addr.clone();
    client_ok(&["incr", "worker-1/0", "--by", "5", "--join", &via]);
    let worker = &mut single.nodes[1];
    worker.kill();
    lose_disk(worker);
    worker.restart();
    single.wait_mesh(8);
    let got: i64 = client_ok(&["get", "worker-1/0", "--join", &via])
        .parse()
        .unwrap();
    assert_eq!(got, 0, "with one copy a lost disk loses the counts");
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_worker_whose_disk_is_lost_mid_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(8);
    let (mut cluster, https) = loaded_cluster_with(ops, &["--copies", "2"]);
    let via = cluster.nodes[0].addr.clone();
    wait_issued(&via, "worker-1", ops / 3);
    let clients = ClientLoop::start(&cluster);
    cluster.nodes[1].kill();
    lose_disk(&cluster.nodes[1]);
    cluster.nodes[1].restart();
    cluster.nodes[1].wait_for_log(
        "worker-1 to start from its copy",
        RESTORED,
        Duration::from_secs(20),
    );
    wait_metric(
        "worker-1 to open the store it started from",
        &https[1],
        r#"counter_cluster_store_recovered_commit{node="worker-1"}"#,
        Duration::from_secs(10),
        |commit| commit > 0.0,
    );
    cluster.wait_mesh(12);
    let clients = clients.finish();
    settles_exactly(
        &cluster,
        ops,
        clients,
        "kill -9 worker-1 mid-load, its disk lost, restart",
    );
}
