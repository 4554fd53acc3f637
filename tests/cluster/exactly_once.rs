//! Exactly once through real faults: three real node processes under load, each with a
//! `--load-ops` budget, and a fault while the load runs (`kill -9` of a worker or of
//! the coordinator and a restart, SIGSTOP three times, a silent partition three times
//! in a network namespace, SIGTERM and a restart of the worker that sorts last). Once
//! the load has stopped and the fault has healed, the invariant holds exactly:
//!
//! - every node issued exactly its budget (a restarted node counts what it issued
//!   before the crash);
//! - `total_value == issued_value`, `total_operations == issued_operations`,
//!   `in_flight_operations == 0`, and the collection is complete;
//! - for every sender, what all nodes applied from it is exactly what it issued.
//!
//! The slow suite (`#[ignore]`d; `.ci/run` runs it). Each test prints how long the
//! cluster took to settle after the fault.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::lab_or_skip;
use crate::util::{free_port, stats_within, timing_lock, wait_for, Cluster, NodeProc};

/// Load per node, in operations per second.
const RATE: u64 = 20_000;

/// How long the faults take, at most, and how long the cluster may take to settle.
const SETTLE: Duration = Duration::from_secs(90);

/// The load budget per node: `seconds` of load at [`RATE`].
fn budget(seconds: u64) -> u64 {
    RATE * seconds
}

fn load_args(ops: u64) -> Vec<String> {
    [
        "--counters",
        "4",
        "--load",
        &RATE.to_string(),
        "--load-ops",
        &ops.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Three nodes under load, each to issue `ops` operations.
fn loaded_cluster(ops: u64) -> Cluster {
    let args = load_args(ops);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = Cluster::start(2, &args);
    cluster.wait_mesh(12);
    cluster
}

/// Operations node `name` has issued, per a collection through `via`.
fn issued_by(via: &str, name: &str) -> Result<u64, String> {
    let s = stats_within(via, "0.5")?;
    crate::util::node_entry(&s, name)
        .and_then(|n| n["issued_operations"].as_u64())
        .ok_or_else(|| format!("{name} did not answer"))
}

/// Waits until `name` has issued at least `at_least` operations (the fault then strikes
/// mid-load).
fn wait_issued(via: &str, name: &str, at_least: u64) {
    wait_for(
        &format!("{name} to issue {at_least} operations"),
        Duration::from_secs(30),
        || {
            let n = issued_by(via, name)?;
            (n >= at_least).then_some(()).ok_or(format!("{n} so far"))
        },
    );
}

/// Waits until every node has issued `ops` and nothing is in flight, then checks the
/// invariant exactly; returns how long settling took.
fn settles_exactly(cluster: &Cluster, ops: u64, what: &str) -> Duration {
    let started = Instant::now();
    let via = cluster.nodes[0].addr.clone();
    let n = cluster.nodes.len() as u64;
    let s: Value = wait_for(
        &format!("{what}: the load to finish and everything to be acknowledged"),
        SETTLE,
        || {
            let s = stats_within(&via, "1")?;
            let issued: Vec<Option<u64>> = s["nodes"]
                .as_array()
                .map(|nodes| {
                    nodes
                        .iter()
                        .map(|n| n["issued_operations"].as_u64())
                        .collect()
                })
                .unwrap_or_default();
            let done = s["complete"] == true
                && s["num_nodes"] == n
                && issued.iter().all(|i| *i == Some(ops))
                && s["in_flight_operations"] == 0
                && s["total_operations"] == s["issued_operations"];
            if done {
                Ok(s)
            } else {
                Err(format!(
                    "complete {}, issued {issued:?}, in flight {}, total {} of {}",
                    s["complete"],
                    s["in_flight_operations"],
                    s["total_operations"],
                    s["issued_operations"]
                ))
            }
        },
    );
    let took = started.elapsed();
    assert_eq!(s["issued_operations"], n * ops, "{what}: {s}");
    assert_eq!(s["total_operations"], s["issued_operations"], "{what}: {s}");
    assert_eq!(s["total_value"], s["issued_value"], "{what}: {s}");
    assert_eq!(s["in_flight_operations"], 0, "{what}: {s}");
    // Per sender: what every node applied from it is what it issued.
    let nodes = s["nodes"].as_array().unwrap();
    for sender in nodes {
        let name = sender["name"].as_str().unwrap();
        let (mut value, mut operations) = (0i64, 0u64);
        for receiver in nodes {
            for from in receiver["received"].as_array().unwrap() {
                if from["sender"] == name {
                    value += from["value"].as_i64().unwrap();
                    operations += from["operations"].as_u64().unwrap();
                }
            }
        }
        assert_eq!(
            (value, operations),
            (
                sender["issued_value"].as_i64().unwrap(),
                sender["issued_operations"].as_u64().unwrap()
            ),
            "{what}: what the nodes applied from {name}: {s}"
        );
    }
    println!(
        "{what}: exact ({} operations, value {}), settled {} ms after the fault",
        s["total_operations"],
        s["total_value"],
        took.as_millis()
    );
    took
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn kill_9_of_a_worker_mid_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(8);
    let mut cluster = loaded_cluster(ops);
    let via = cluster.nodes[0].addr.clone();
    wait_issued(&via, "worker-1", ops / 3);
    cluster.nodes[1].kill();
    cluster.nodes[1].restart();
    let log = || cluster.nodes[1].log();
    wait_for(
        "worker-1 to recover its store",
        Duration::from_secs(10),
        || {
            log()
                .contains("recovered the counters from the store")
                .then_some(())
                .ok_or_else(log)
        },
    );
    settles_exactly(&cluster, ops, "kill -9 worker-1 mid-load, restart");
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn kill_9_of_the_coordinator_mid_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(8);
    let mut cluster = loaded_cluster(ops);
    let via = cluster.nodes[1].addr.clone();
    wait_issued(&via, "coordinator", ops / 3);
    cluster.nodes[0].kill();
    cluster.nodes[0].restart();
    settles_exactly(&cluster, ops, "kill -9 coordinator mid-load, restart");
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_worker_frozen_three_times_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(15);
    let cluster = loaded_cluster(ops);
    let via = cluster.nodes[0].addr.clone();
    wait_issued(&via, "worker-1", ops / 10);
    for _ in 0..3 {
        cluster.nodes[1].signal("STOP");
        // The fault itself lasts 3 s (this is its length, not a wait for anything).
        std::thread::sleep(Duration::from_secs(3));
        cluster.nodes[1].signal("CONT");
        cluster.wait_mesh(12);
    }
    settles_exactly(&cluster, ops, "SIGSTOP worker-1 3 s, three times");
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_worker_cut_off_three_times_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let Some(mut lab) = lab_or_skip("a_worker_cut_off_three_times_loses_and_doubles_nothing")
    else {
        return;
    };
    let ops = budget(15);
    let args = load_args(ops);
    let load: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = |port: u16| format!("{}:{port}", lab.host_ip);
    let coordinator = NodeProc::start_at(
        "coordinator",
        &host(free_port()),
        &[&["--role", "coordinator"], &load[..]].concat(),
        &[],
    );
    let seed = coordinator.addr.clone();
    let w1 = NodeProc::start_at(
        "worker-1",
        &host(free_port()),
        &[&["--join", seed.as_str()], &load[..]].concat(),
        &[],
    );
    let w2 = NodeProc::start_at(
        "worker-2",
        &format!("{}:{}", lab.ns_ip, free_port()),
        &[&["--join", seed.as_str()], &load[..]].concat(),
        &lab.prefix(),
    );
    let cluster = Cluster {
        nodes: vec![coordinator, w1, w2],
    };
    cluster.wait_mesh(12);
    wait_issued(&seed, "worker-2", ops / 10);
    for _ in 0..3 {
        lab.cut();
        // The partition lasts 3 s (its length, not a wait for anything).
        std::thread::sleep(Duration::from_secs(3));
        lab.heal();
        cluster.wait_mesh(12);
    }
    settles_exactly(&cluster, ops, "worker-2 cut off 3 s, three times");
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn sigterm_and_restart_of_the_last_worker_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(8);
    let mut cluster = loaded_cluster(ops);
    let via = cluster.nodes[0].addr.clone();
    // worker-2: not the others' seed, and its name sorts last.
    wait_issued(&via, "worker-2", ops / 3);
    cluster.nodes[2].signal("TERM");
    assert_eq!(cluster.nodes[2].wait_exit(Duration::from_secs(15)), Some(0));
    cluster.nodes[2].restart();
    cluster.wait_mesh(12);
    settles_exactly(&cluster, ops, "SIGTERM worker-2 mid-load, restart");
}
