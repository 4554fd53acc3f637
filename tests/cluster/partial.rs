//! The coordinator's last periodic collection, and who may answer for it. (How a
//! collection reports what it does not cover is tested with real faults in `faults`.)

use std::time::Duration;

use crate::util::{client, Cluster};

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
