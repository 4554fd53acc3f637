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

/// Counters retire and start again all the time (an idle period of 50 ms under load):
/// a clean stop in the middle of it logs every counter's final value exactly once,
/// whether its actor was running, retiring or gone.
#[test]
fn a_stop_amid_retirements_logs_each_final_value_once() {
    let counters = 300;
    let mut node = crate::util::NodeProc::start(
        "churn",
        &[
            "--role",
            "coordinator",
            "--counters",
            &counters.to_string(),
            "--counter-idle-secs",
            "0.05",
            "--load",
            "3000",
        ],
    );
    let addr = node.addr.clone();
    crate::util::wait_for(
        "counters retired and started again under load",
        Duration::from_secs(20),
        || {
            let stats = crate::util::stats(&addr)?;
            let applied = stats["total_operations"].as_u64().unwrap_or(0);
            (applied > 3000)
                .then_some(())
                .ok_or(format!("{applied} operations applied so far"))
        },
    );
    node.signal("TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(15)), Some(0));
    let log = node.log();
    for i in 0..counters {
        let counter = format!("counter=churn/{i} ");
        let lines = log
            .lines()
            .filter(|l| l.contains("final value") && l.contains(&counter))
            .count();
        assert_eq!(
            lines, 1,
            "churn/{i} logged its final value {lines} times:\n{log}"
        );
    }
}
