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

/// A node whose wall clock (libfaketime's, preloaded) starts at `unix_secs`, with a
/// store in `dir`; `None` (skipped loudly) where libfaketime is missing, except under
/// `CI=true`. (`env` execs the node, so the harness's process is the node itself.)
fn node_at(unix_secs: u64, dir: &std::path::Path) -> Option<crate::util::NodeProc> {
    const LIBFAKETIME: &str = "/usr/$LIB/faketime/libfaketime.so.1";
    if std::process::Command::new("faketime")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "faketime is not installed, and CI must run the clock tests (apt-get install faketime)"
        );
        eprintln!("SKIPPED a clock test: faketime is not installed (apt-get install faketime)");
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let offset = unix_secs as i64 - now as i64;
    let addr = format!("127.0.0.1:{}", crate::util::free_port());
    let dir = dir.display().to_string();
    let preload = format!("LD_PRELOAD={LIBFAKETIME}");
    let faketime = format!("FAKETIME={offset:+}");
    let node = crate::util::NodeProc::start_at(
        "clock",
        &addr,
        &["--counters", "1", "--data-dir", &dir],
        &["env", &preload, &faketime],
    );
    crate::util::wait_for(
        "the node to serve",
        std::time::Duration::from_secs(20),
        || crate::util::stats(&node.addr).map(|_| ()),
    );
    let log = node.log();
    let day = format!("2026-12-{:02}", 1 + (unix_secs - 1_796_083_200) / 86_400);
    assert!(
        log.contains(&day),
        "the node's clock is not on {day}:\n{log}"
    );
    Some(node)
}

/// Ids are kept by the store's own clock, not the wall clock: a change retried with its
/// id after the wall clock stepped back across midnight, or forward by days, is applied
/// once (and an id made on the earlier day is found on the later one).
#[test]
fn an_id_is_applied_once_whatever_the_wall_clock_does() {
    let dir = crate::util::data_dir("clock");
    let incr = |node: &crate::util::NodeProc, id: &str, by: &str| {
        run(&[
            "incr", "clock/0", "--by", by, "--id", id, "--join", &node.addr,
        ])
    };
    // 2026-12-07 00:00:05 UTC.
    let Some(node) = node_at(1_796_601_605, &dir) else {
        return;
    };
    assert_eq!(incr(&node, "step-1", "5").1, "5");
    drop(node);

    // Stepped back across midnight.
    // 2026-12-06 23:59:50.
    let node = node_at(1_796_601_590, &dir).unwrap();
    let (code, value, note) = incr(&node, "step-1", "5");
    assert_eq!((code, value.as_str()), (Some(0), "5"), "{note}");
    assert!(note.contains("applied before"), "after a step back: {note}");
    assert_eq!(incr(&node, "step-2", "1").1, "6");
    drop(node);

    // Forward by three days: nothing is forgotten early, even once a new id is stored
    // (which is when forgotten ids are removed).
    // 2026-12-10 00:00:05.
    let node = node_at(1_796_860_805, &dir).unwrap();
    assert_eq!(incr(&node, "step-3", "1").1, "7");
    for (id, by, first) in [("step-1", "5", "5"), ("step-2", "1", "6")] {
        let (code, value, note) = incr(&node, id, by);
        assert_eq!((code, value.as_str()), (Some(0), first), "{id}: {note}");
        assert!(note.contains("applied before"), "{id} after a jump: {note}");
    }
    assert_eq!(client_ok(&["get", "clock/0", "--join", &node.addr]), "7");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
