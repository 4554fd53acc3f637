//! Load clients on every node: once they finish, the cluster's totals equal exactly what
//! they issued.

use std::time::Duration;

use crate::util::{stats, wait_for, Cluster};

#[test]
fn coalesced_load_totals_match_issued_exactly() {
    load_totals_match_issued_exactly("coalesced", &[]);
}

#[test]
fn unbatched_load_totals_match_issued_exactly() {
    load_totals_match_issued_exactly("unbatched", &[]);
}

/// The runtime the defaults replaced (several worker threads, no busy poll) stays a
/// working choice.
#[test]
fn load_on_two_worker_threads_without_busy_poll_is_exact() {
    load_totals_match_issued_exactly(
        "unbatched",
        &["--worker-threads", "2", "--busy-poll-us", "0"],
    );
}

fn load_totals_match_issued_exactly(mode: &str, runtime: &[&str]) {
    const PER_NODE: u64 = 1500;
    let ops = PER_NODE.to_string();
    let args = [
        &[
            "--counters",
            "4",
            "--load",
            "1000",
            "--load-ops",
            &ops,
            "--load-mode",
            mode,
        ],
        runtime,
    ]
    .concat();
    let cluster = Cluster::start(2, &args);
    let s = wait_for(
        "load clients to finish and every operation to be counted",
        Duration::from_secs(30),
        || {
            let s = stats(&cluster.nodes[0].addr)?;
            let issued = s["issued_operations"].as_u64();
            let counted = s["total_operations"].as_u64();
            if s["complete"] == true && issued == Some(3 * PER_NODE) && counted == issued {
                Ok(s)
            } else {
                Err(format!(
                    "issued {issued:?}, counted {counted:?}, complete {}",
                    s["complete"]
                ))
            }
        },
    );
    assert_eq!(s["total_value"], s["issued_value"]);
    assert!(s["total_value"].as_i64().unwrap() > 0);
    for node in s["nodes"].as_array().unwrap() {
        assert_eq!(node["issued_operations"], PER_NODE, "{node}");
        // Load is spread over all nodes' counters, not only local ones.
        for c in node["counters"].as_array().unwrap() {
            assert!(c["operations"].as_u64().unwrap() > 0, "idle counter {c}");
        }
    }
}
