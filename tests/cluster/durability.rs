//! Durable counters: what a node acknowledged is on disk and survives `kill -9`; a data
//! dir holds one node's data; a store that cannot be read is never silently replaced;
//! `--memory-only` keeps nothing.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{client_ok, data_dir, node_bin, wait_for, Cluster, NodeProc, COOKIE};

/// `(value, operations)` of counter `name` in a collection.
fn figures(stats: &Value, name: &str) -> Option<(i64, u64)> {
    let counter = stats["nodes"]
        .as_array()?
        .iter()
        .filter_map(|node| node["counters"].as_array())
        .flatten()
        .find(|c| c["name"] == name)?;
    Some((counter["value"].as_i64()?, counter["operations"].as_u64()?))
}

#[test]
fn acknowledged_changes_survive_kill_9_and_a_clean_restart() {
    let (mut cluster, https) = Cluster::start_with_http(&["coordinator", "worker-1"], &[]);
    cluster.wait_mesh(8);
    let via = |k: usize| cluster.nodes[k % 2].addr.clone();
    // Known changes to the worker's counters, through either node: every one
    // acknowledged by the time `incr`/`decr` prints.
    let mut expected = [(0i64, 0u64); 4];
    for k in 0..40usize {
        let counter = k % 4;
        let name = format!("worker-1/{counter}");
        let amount = (k as i64 + 1) * 3;
        let (verb, signed) = if k % 5 == 4 {
            ("decr", -amount)
        } else {
            ("incr", amount)
        };
        let printed: i64 =
            client_ok(&[verb, &name, "--by", &amount.to_string(), "--join", &via(k)])
                .parse()
                .unwrap();
        expected[counter].0 += signed;
        expected[counter].1 += 1;
        assert_eq!(printed, expected[counter].0, "{verb} {name}");
    }

    for how in ["KILL", "TERM"] {
        let worker = &mut cluster.nodes[1];
        if how == "KILL" {
            worker.kill();
        } else {
            worker.signal("TERM");
            assert_eq!(worker.wait_exit(Duration::from_secs(15)), Some(0));
        }
        worker.restart();
        let stats = cluster.wait_mesh(8);
        for (counter, want) in expected.iter().enumerate() {
            let name = format!("worker-1/{counter}");
            assert_eq!(
                figures(&stats, &name),
                Some(*want),
                "{name} after SIG{how} and restart: {stats}"
            );
        }
        // It recovered its counters from its store (not from a new one).
        let series = r#"counter_cluster_store_recovered_commit{node="worker-1"}"#;
        let text = wait_for("worker-1's metrics", Duration::from_secs(10), || {
            crate::metrics::scrape(&https[1])
        });
        assert!(
            crate::metrics::sample(&text, series).is_some_and(|commit| commit > 0.0),
            "after SIG{how}, no commit recovered:\n{text}"
        );
    }
}

/// Runs `node ARGS --cookie COOKIE` as a node expected to refuse to start; returns its
/// exit code and stderr.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(node_bin())
        .args(args)
        .args(["--cookie", COOKIE])
        .env_remove("NODE_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_data_dir_holds_one_nodes_data_and_garbage_is_never_replaced() {
    let dir = data_dir("alpha");
    let dir_arg = dir.display().to_string();
    let mut alpha = NodeProc::start("alpha", &["--data-dir", &dir_arg]);
    wait_for("alpha to serve", Duration::from_secs(10), || {
        crate::util::stats(&alpha.addr).map(|_| ())
    });
    // The same data dir, while alpha runs.
    let listen = format!("127.0.0.1:{}", crate::util::free_port());
    let start_on_dir =
        |name: &str| refused_start(&["--name", name, "--listen", &listen, "--data-dir", &dir_arg]);
    let (code, stderr) = start_on_dir("alpha");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    alpha.kill();

    // Another node's name on it.
    let (code, stderr) = start_on_dir("beta");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("belongs to node 'alpha', not 'beta'"),
        "{stderr}"
    );

    // A store that cannot be read: refused, and left as it was.
    let file = dir.join("store.redb");
    let garbage = vec![0x5au8; 64 * 1024];
    std::fs::write(&file, &garbage).unwrap();
    let (code, stderr) = start_on_dir("alpha");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot be read") && stderr.contains("will not replace it"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the store was touched"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store left in `data/` itself (where the Docker image used to keep it, through
/// NODE_DATA_DIR=/data) is never passed over for an empty `data/NAME`.
#[test]
fn a_store_left_at_the_top_of_data_is_not_passed_over_for_an_empty_one() {
    let work = tempfile::tempdir().unwrap();
    let old = work.path().join("data");
    let old_arg = old.display().to_string();
    let mut node = NodeProc::start("kept", &["--data-dir", &old_arg]);
    wait_for("the node to serve", Duration::from_secs(10), || {
        crate::util::stats(&node.addr).map(|_| ())
    });
    node.kill();
    let listen = format!("127.0.0.1:{}", crate::util::free_port());
    let out = Command::new(node_bin())
        .args(["--name", "kept", "--listen", &listen, "--cookie", COOKIE])
        .current_dir(work.path())
        .env_remove("NODE_DATA_DIR")
        .env_remove("NODE_DATA_SLOTS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds a node's store") && stderr.contains("--data-dir data"),
        "{stderr}"
    );
    assert!(
        !work.path().join("data/kept").exists(),
        "an empty store was made"
    );
}

#[test]
fn memory_only_keeps_nothing_across_a_restart() {
    let mut node = NodeProc::start("ephemeral", &["--memory-only"]);
    wait_for("the node to serve", Duration::from_secs(10), || {
        crate::util::stats(&node.addr).map(|_| ())
    });
    assert_eq!(
        client_ok(&["incr", "ephemeral/0", "--by", "5", "--join", &node.addr]),
        "5"
    );
    node.restart();
    let value = wait_for(
        "the restarted node to answer",
        Duration::from_secs(10),
        || {
            let out = crate::util::client(&["get", "ephemeral/0", "--join", &node.addr]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
        },
    );
    assert_eq!(value, "0", "a memory-only node kept a value");
    assert!(node.log().contains("memory-only"), "{}", node.log());
}

/// The name a node took (from its "node started" line).
fn started_as(node: &NodeProc) -> Option<String> {
    let log = node.log();
    let line = log.lines().find(|l| l.contains("node started"))?;
    let name = line.split("node=").nth(1)?.split_whitespace().next()?;
    Some(name.to_string())
}

#[test]
fn replicas_sharing_data_slots_keep_a_replaced_replicas_name_and_counts() {
    // Replicas of one service, all given the same --data-slots directory and nothing
    // else that tells them apart (as `docker compose up --scale` starts them).
    let coordinator = NodeProc::start("coordinator", &["--role", "coordinator"]);
    let slots = data_dir("slots");
    let slots_arg = slots.to_str().unwrap().to_string();
    let join = coordinator.addr.clone();
    let replica = |label: &str| {
        NodeProc::start(
            label,
            &["--join", join.as_str(), "--data-slots", slots_arg.as_str()],
        )
    };
    let mut replicas = vec![replica("replica-a"), replica("replica-b")];
    let names: Vec<String> = replicas
        .iter()
        .map(|r| {
            wait_for("a replica's first line", Duration::from_secs(10), || {
                started_as(r).ok_or_else(|| r.log())
            })
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["worker-1", "worker-2"], "each took its own slot");
    let cluster = Cluster {
        nodes: vec![coordinator],
    };
    cluster.wait_complete(0, 3, 12);
    let addr = cluster.nodes[0].addr.clone();
    assert_eq!(
        client_ok(&["incr", "worker-2/0", "--by", "7", "--join", &addr]),
        "7"
    );
    assert_eq!(
        client_ok(&["incr", "worker-1/0", "--by", "5", "--join", &addr]),
        "5"
    );

    // The replica holding worker-2 dies (kill -9); a new one takes its free slot, and
    // with it worker-2's name and counts. Another new one takes a slot of its own.
    let holder = names.iter().position(|n| n == "worker-2").unwrap();
    replicas[holder].kill();
    let newcomer = replica("replica-c");
    let name = wait_for("the newcomer's first line", Duration::from_secs(10), || {
        started_as(&newcomer).ok_or_else(|| newcomer.log())
    });
    assert_eq!(name, "worker-2", "the freed slot is taken again");
    let third = replica("replica-d");
    let name = wait_for("the third's first line", Duration::from_secs(10), || {
        started_as(&third).ok_or_else(|| third.log())
    });
    assert_eq!(name, "worker-3");
    // Every node's own view is complete: worker-1, which had worker-2 at the address
    // of the replica that died, found it at the newcomer's (others' gossip told it).
    let survivor = replicas.swap_remove(1 - holder);
    let mut nodes = cluster.nodes;
    nodes.extend([survivor, newcomer, third]);
    let cluster = Cluster { nodes };
    let stats = cluster.wait_mesh(16);
    assert_eq!(figures(&stats, "worker-2/0"), Some((7, 1)), "{stats}");
    assert_eq!(figures(&stats, "worker-1/0"), Some((5, 1)), "{stats}");
    assert!(slots.join("worker-2").is_dir() && slots.join("worker-3").is_dir());
    drop((cluster, replicas));
    let _ = std::fs::remove_dir_all(&slots);
}
