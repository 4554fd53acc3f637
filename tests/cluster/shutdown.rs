//! Ctrl-C and SIGTERM stop a node cleanly and promptly.

use std::time::Duration;

use crate::util::{client_ok, Cluster};

#[test]
fn sigterm_and_sigint_stop_nodes_cleanly_with_final_values() {
    let mut cluster = Cluster::start(1, &["--counters", "3"]);
    cluster.wait_complete(0, 2, 6);
    client_ok(&[
        "incr",
        "worker-1/1",
        "--by",
        "42",
        "--join",
        &cluster.nodes[0].addr,
    ]);

    for (node, signal) in cluster.nodes.iter_mut().rev().zip(["TERM", "INT"]) {
        node.signal(signal);
        let code = node.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{} exit code after SIG{signal}", node.name);
        let log = node.log();
        for i in 0..3 {
            let counter = format!("{}/{i}", node.name);
            assert!(
                log.lines().any(
                    |l| l.contains("final value") && l.contains(&format!("counter={counter} "))
                ),
                "{counter} did not log its final value:\n{log}"
            );
        }
        assert!(log.contains("node stopped"), "{log}");
    }
    assert!(cluster.nodes[1].log().contains("final value 42"));
}
