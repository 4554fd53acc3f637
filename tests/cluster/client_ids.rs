//! Client changes with ids: applied once per id, durably; a second request with the
//! same id reports the first result and says so; a change whose fate is unknown when
//! the client gives up exits with its own code and says how to retry safely.

use crate::util::{client, client_ok, Cluster};

/// `node ARGS`: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = client(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn a_change_is_applied_once_per_id_even_across_a_crash() {
    let mut cluster = Cluster::start(1, &["--counters", "2"]);
    cluster.wait_mesh(4);
    let via = cluster.nodes[0].addr.clone();
    let incr = |id: &str| {
        run(&[
            "incr",
            "worker-1/0",
            "--by",
            "5",
            "--id",
            id,
            "--join",
            &via,
        ])
    };

    let (code, value, note) = incr("order-17");
    assert_eq!((code, value.as_str()), (Some(0), "5"), "{note}");
    assert!(!note.contains("applied before"), "{note}");
    // The same id again: the first result, said so, and nothing changes.
    let (code, value, note) = incr("order-17");
    assert_eq!((code, value.as_str()), (Some(0), "5"));
    assert!(note.contains("id order-17 was applied before"), "{note}");
    // Another id is another change.
    assert_eq!(incr("order-18").1, "10");
    // The same id for a different change is refused.
    let (code, _, error) = run(&["decr", "worker-1/0", "--id", "order-17", "--join", &via]);
    assert_eq!(code, Some(1), "{error}");
    assert!(
        error.contains("was used before for another change"),
        "{error}"
    );

    // The ids are on disk with the counters: after kill -9 they still count.
    cluster.nodes[1].kill();
    cluster.nodes[1].restart();
    cluster.wait_mesh(4);
    let (code, value, note) = incr("order-17");
    assert_eq!((code, value.as_str()), (Some(0), "5"), "{note}");
    assert!(note.contains("applied before"), "{note}");
    assert_eq!(client_ok(&["get", "worker-1/0", "--join", &via]), "10");
}

#[test]
fn a_change_whose_fate_is_unknown_is_in_doubt_and_safe_to_retry() {
    let cluster = Cluster::start(1, &["--counters", "2"]);
    cluster.wait_mesh(4);
    let via = cluster.nodes[0].addr.clone();
    let incr_maybe = |timeout: &str| {
        run(&[
            "incr",
            "worker-1/1",
            "--by",
            "7",
            "--id",
            "maybe-1",
            "--timeout",
            timeout,
            "--join",
            &via,
        ])
    };
    // The counter's node freezes: the change is handed to it and no answer comes.
    cluster.nodes[1].signal("STOP");
    let (code, value, error) = incr_maybe("2");
    cluster.nodes[1].signal("CONT");
    assert_eq!(
        code,
        Some(3),
        "exit code of a change in doubt: {value} {error}"
    );
    assert!(
        error.contains("in doubt") && error.contains("retry with --id maybe-1"),
        "{error}"
    );
    // Retried with the same id, it is applied exactly once, whatever became of the
    // first attempt.
    cluster.wait_mesh(4);
    let (code, value, note) = incr_maybe("10");
    assert_eq!((code, value.as_str()), (Some(0), "7"), "{note}");
    let stats = cluster.wait_complete(0, 2, 4);
    let counter = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["counters"].as_array().unwrap())
        .find(|c| c["name"] == "worker-1/1")
        .cloned()
        .unwrap();
    assert_eq!(
        (counter["value"].as_i64(), counter["operations"].as_u64()),
        (Some(7), Some(1))
    );
    // An id nobody used, with a counter that does not exist: refused at once, exit 1.
    let (code, _, error) = run(&["incr", "worker-1/9", "--timeout", "1", "--join", &via]);
    assert_eq!(code, Some(1), "{error}");
}
