//! Normal client traffic leaves nothing at WARN or above in a node's log, even at
//! `RUST_LOG=info` (what a person turning logging up would set): a node polled by a
//! dashboard or a healthcheck keeps a quiet log.

use crate::util::{client_ok, lines_with, Cluster, NodeProc};

#[test]
fn a_hundred_client_commands_log_no_warning() {
    let info = ["env", "RUST_LOG=info"];
    let coordinator = NodeProc::start_at(
        "coordinator",
        &format!("127.0.0.1:{}", crate::util::free_port()),
        &["--role", "coordinator", "--counters", "2"],
        &info,
    );
    let worker = NodeProc::start_at(
        "worker-1",
        &format!("127.0.0.1:{}", crate::util::free_port()),
        &["--counters", "2", "--join", &coordinator.addr],
        &info,
    );
    let cluster = Cluster {
        nodes: vec![coordinator, worker],
    };
    cluster.wait_mesh(4);
    // Only what the client traffic adds counts (a worker that starts before its seed
    // may warn once that it cannot reach it yet).
    let before: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| n.log().lines().count())
        .collect();
    let addr = cluster.nodes[0].addr.clone();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let addr = &addr;
            scope.spawn(move || {
                for i in 0..25 {
                    match (thread + i) % 4 {
                        0 => client_ok(&["incr", "worker-1/1", "--join", addr]),
                        1 => client_ok(&["get", "coordinator/0", "--join", addr]),
                        2 => client_ok(&["stats", "--totals", "--join", addr]),
                        _ => client_ok(&["health", "--join", addr]),
                    };
                }
            });
        }
    });
    // One more, from a new process: every earlier client had closed its session before
    // its process exited, so the node has seen them all end by the time it serves this.
    let value = client_ok(&["get", "worker-1/1", "--join", &addr]);
    assert_eq!(value, "25", "every increment counted");
    for (node, before) in cluster.nodes.iter().zip(before) {
        let log = node.log();
        assert!(lines_with(&log, "node started") == 1, "{log}");
        let loud: Vec<&str> = log
            .lines()
            .skip(before)
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(loud.is_empty(), "{}: {loud:#?}", node.name);
    }
}
