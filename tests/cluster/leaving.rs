//! Leaving the cluster, for a while and for good, with real processes: a node that
//! holds counts refuses to leave for good (by the command and over HTTP) and goes on
//! taking changes; one that holds none leaves for good, stops, and never starts again
//! on its data dir; one that leaves for a while is listed as departed with what its
//! counters held until it comes back with them.

use std::time::Duration;

use serde_json::Value;

use crate::http::{post, TOKEN};
use crate::util::{client, client_ok, Cluster};

/// The departed members of a collection, by name.
fn departed<'a>(stats: &'a Value, name: &str) -> Option<&'a Value> {
    stats["departed"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)
}

#[test]
fn a_node_leaves_for_a_while_or_for_good_and_stats_say_what_left_with_whom() {
    let (mut cluster, https) = Cluster::start_with_http(
        &["coordinator", "worker-1", "worker-2"],
        &["--http-token", TOKEN, "--counters", "2"],
    );
    cluster.wait_mesh(6);
    let via = cluster.nodes[0].addr.clone();
    let (worker_1, worker_2) = (cluster.nodes[1].addr.clone(), cluster.nodes[2].addr.clone());
    client_ok(&["incr", "worker-1/0", "--by", "5", "--join", &via]);

    // worker-1 holds counts: it refuses to leave for good, by the command and over
    // HTTP, says why, and goes on taking changes.
    let refused = client(&["leave", "--for-good", "--join", &worker_1]);
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success(), "left with counts: {said}");
    assert!(
        said.contains("worker-1 cannot leave the cluster for good")
            && said.contains("hold counts (value 5, from 1 operations)"),
        "{said}"
    );
    let over_http = post(&https[1], "/cluster/leave?for_good=true", None, "");
    assert_eq!(over_http.status, 409, "{}", over_http.text);
    assert!(over_http.text.contains("hold counts"), "{}", over_http.text);
    let changed = client_ok(&["incr", "worker-1/1", "--by", "2", "--join", &via]);
    assert_eq!(changed, "2", "worker-1 takes changes again");

    // worker-2 holds none: it leaves for good and stops.
    let left = client_ok(&["leave", "--for-good", "--join", &worker_2]);
    assert!(
        left.contains("worker-2 is leaving the cluster for good"),
        "{left}"
    );
    assert_eq!(cluster.nodes[2].wait_exit(Duration::from_secs(20)), Some(0));
    let stats = cluster.wait_complete(0, 2, 4);
    let gone = departed(&stats, "worker-2").unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(gone["for_good"], true, "{stats}");
    assert_eq!(
        (gone["known"].as_bool(), gone["value"].as_i64()),
        (Some(true), Some(0))
    );
    assert_eq!(gone["operations"], 0, "{stats}");
    assert_eq!(stats["total_value"], 7, "{stats}");
    // It never starts again on its data dir, and says why.
    cluster.nodes[2].restart();
    let exit = cluster.nodes[2].wait_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|code| code != 0),
        "started again: {exit:?}"
    );
    let log = cluster.nodes[2].log();
    assert!(log.contains("left the cluster for good"), "{log}");

    // worker-1 leaves for a while: its counts go with it, and the stats say so.
    let left = client_ok(&["leave", "--join", &worker_1]);
    assert!(
        left.contains("worker-1 is leaving the cluster for a while"),
        "{left}"
    );
    assert_eq!(cluster.nodes[1].wait_exit(Duration::from_secs(20)), Some(0));
    let stats = cluster.wait_complete(0, 1, 2);
    let away = departed(&stats, "worker-1").unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(away["for_good"], false, "{stats}");
    assert_eq!(
        (away["value"].as_i64(), away["operations"].as_i64()),
        (Some(7), Some(2))
    );
    assert_eq!(stats["total_value"], 0, "{stats}");
    let table = client_ok(&["stats", "--join", &via]);
    assert!(
        table.contains("worker-1 for a while with value 7 in 2 operations"),
        "{table}"
    );

    // It comes back with its counts: a node again, departed no more.
    cluster.nodes[1].restart();
    let stats = cluster.wait_complete(0, 2, 4);
    assert!(departed(&stats, "worker-1").is_none(), "{stats}");
    assert!(departed(&stats, "worker-2").is_some(), "{stats}");
    assert_eq!(stats["total_value"], 7, "{stats}");
}
