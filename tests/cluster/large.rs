//! A node of more counters than one message can report: collections page through it.

use std::time::Duration;

use serde_json::Value;

use crate::http::request;
use crate::util::{client, client_ok, free_port, wait_for, NodeProc};

/// Counters on the large worker: eight pages of a collection, and per-counter lines
/// too many for one client message.
const COUNTERS: u64 = 400_000;

/// `node stats --totals --json` through `addr`, parsed.
fn totals(addr: &str) -> Result<Value, String> {
    let out = client(&[
        "stats",
        "--totals",
        "--json",
        "--deadline",
        "10",
        "--join",
        addr,
    ]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("invalid JSON: {e}"))
}

/// A coordinator and a worker of 400,000 counters: a collection counts every counter
/// once and is complete; a change to the very last counter is in its totals; lines for
/// every counter, too many for one message, are refused with what to ask instead, and
/// served over HTTP as totals (and refused there too as lines).
#[test]
fn a_node_of_many_counters_is_collected_in_pages() {
    let http = format!("127.0.0.1:{}", free_port());
    let coordinator = NodeProc::start(
        "coordinator",
        &["--role", "coordinator", "--counters", "2", "--http", &http],
    );
    let counters = COUNTERS.to_string();
    let _worker = NodeProc::start(
        "worker-1",
        &["--counters", &counters, "--join", &coordinator.addr],
    );
    let addr = coordinator.addr.as_str();
    let expected = COUNTERS + 2;
    wait_for(
        &format!("a complete collection of {expected} counters"),
        Duration::from_secs(60),
        || {
            let s = totals(addr)?;
            let seen = (s["num_counters"].as_u64(), s["complete"].as_bool());
            (seen == (Some(expected), Some(true)))
                .then_some(())
                .ok_or(format!("saw (counters, complete) = {seen:?}"))
        },
    );

    let last = format!("worker-1/{}", COUNTERS - 1);
    client_ok(&["incr", &last, "--by", "5", "--join", addr]);
    let s = totals(addr).unwrap();
    assert_eq!(s["total_value"].as_i64(), Some(5), "{s}");
    assert_eq!(s["known_counters"].as_u64(), Some(expected), "{s}");
    assert_eq!(s["complete"].as_bool(), Some(true), "{s}");
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["counters"].as_array().unwrap().is_empty()),
        "totals only carry no per-counter lines"
    );

    let out = client(&["stats", "--json", "--deadline", "10", "--join", addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "every line in one message: {stderr}");
    assert!(stderr.contains("node stats --totals"), "{stderr}");

    let reply = request(&http, "GET", "/stats?totals=true&deadline=10", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body["num_counters"].as_u64(),
        Some(expected),
        "{}",
        reply.body["nodes"]
    );
    let reply = request(&http, "GET", "/stats?deadline=10", &[], b"");
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("totals=true"), "{}", reply.text);
}
