//! Real faults, injected into real processes: a node killed and restarted, a frozen
//! node, a clean leave, a wrong cookie. Each is detected within the failure timeout
//! (2 s by default) and the full mesh re-forms within 5 s of the fault ending, with no
//! command typed.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{node_entry, stats_within, time_until, timing_lock, wait_for, Cluster, NodeProc};

/// Detection bound (the default `--failure-timeout`).
pub const DETECT: Duration = Duration::from_secs(2);
/// Recovery bound, from the end of the fault.
pub const REJOIN: Duration = Duration::from_secs(5);

/// A collection through `via` (short deadline, so polling stays fast even while a
/// node is frozen) in which `name` has been declared unreachable.
fn declared_unreachable(via: &str, name: &str) -> Result<Value, String> {
    let s = stats_within(via, "0.3")?;
    let node = node_entry(&s, name).ok_or_else(|| format!("{name} is not in the view: {s}"))?;
    if node["reachable"] == false {
        Ok(s)
    } else {
        Err(format!("{name} is still reachable in {via}'s view"))
    }
}

/// Every node's own collection is complete with all nodes and counters.
fn full_mesh(cluster: &Cluster, counters: u64) -> Result<(), String> {
    let n = cluster.nodes.len() as u64;
    for node in &cluster.nodes {
        let s = stats_within(&node.addr, "0.3")?;
        let seen = (
            s["num_nodes"].as_u64(),
            s["num_counters"].as_u64(),
            s["complete"].as_bool(),
        );
        if seen != (Some(n), Some(counters), Some(true)) {
            return Err(format!(
                "{} sees (nodes, counters, complete) = {seen:?}",
                node.name
            ));
        }
    }
    Ok(())
}

/// Detection and recovery times of one fault.
pub struct FaultTimes {
    pub detected: Duration,
    pub recovered: Duration,
}

/// `kill -9` worker-2, then restart it under the same name and address.
pub fn kill_worker() -> FaultTimes {
    let mut cluster = Cluster::start(2, &["--counters", "2"]);
    cluster.wait_mesh(6);
    let coordinator = cluster.nodes[0].addr.clone();

    cluster.nodes[2].kill();
    let (s, detected) = time_until("worker-2 declared unreachable", REJOIN, || {
        declared_unreachable(&coordinator, "worker-2")
    });
    assert_eq!(s["complete"], false);
    assert_eq!(
        s["missing_counters"],
        serde_json::json!(["worker-2/0", "worker-2/1"])
    );
    let w2 = node_entry(&s, "worker-2").unwrap();
    assert!(w2["since_ms"].as_u64().unwrap() > 0, "{w2}");

    cluster.nodes[2].restart();
    let ((), recovered) = time_until("the full mesh again", 2 * REJOIN, || full_mesh(&cluster, 6));
    let log = cluster.nodes[0].log();
    assert_eq!(
        log.matches("peer unreachable").count(),
        1,
        "the loss is logged once:\n{log}"
    );
    FaultTimes {
        detected,
        recovered,
    }
}

/// `kill -9` the coordinator, then restart it.
pub fn kill_coordinator() -> FaultTimes {
    let mut cluster = Cluster::start(2, &["--counters", "2"]);
    cluster.wait_mesh(6);
    let worker = cluster.nodes[1].addr.clone();

    cluster.nodes[0].kill();
    let (_, detected) = time_until("the coordinator declared unreachable", REJOIN, || {
        declared_unreachable(&worker, "coordinator")
    });
    cluster.nodes[0].restart();
    let ((), recovered) = time_until("the full mesh again", 2 * REJOIN, || full_mesh(&cluster, 6));
    FaultTimes {
        detected,
        recovered,
    }
}

/// SIGSTOP worker-2 (its connections stay open), then SIGCONT.
pub fn freeze_worker() -> FaultTimes {
    let cluster = Cluster::start(2, &["--counters", "2"]);
    cluster.wait_mesh(6);
    let coordinator = cluster.nodes[0].addr.clone();
    let frozen = &cluster.nodes[2];

    frozen.signal("STOP");
    let stopped = Instant::now();
    let started = Instant::now();
    let s = stats_within(&coordinator, "0.5").unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "stats took {took:?} with a 0.5 s deadline"
    );
    assert_eq!(s["complete"], false);
    assert_eq!(s["num_nodes"], 3);

    let (s, _) = time_until("worker-2 declared unreachable", REJOIN, || {
        declared_unreachable(&coordinator, "worker-2")
    });
    let detected = stopped.elapsed();
    assert_eq!(
        s["missing_counters"],
        serde_json::json!(["worker-2/0", "worker-2/1"])
    );
    // Once declared, its session is gone and collections no longer wait for it.
    let started = Instant::now();
    stats_within(&coordinator, "1").unwrap();
    assert!(started.elapsed() < Duration::from_millis(900));

    frozen.signal("CONT");
    let ((), recovered) = time_until("the full mesh again", 2 * REJOIN, || full_mesh(&cluster, 6));
    FaultTimes {
        detected,
        recovered,
    }
}

fn check(what: &str, times: FaultTimes) {
    println!(
        "{what}: detected in {} ms, full mesh {} ms after the fault ended",
        times.detected.as_millis(),
        times.recovered.as_millis()
    );
    assert!(
        times.detected <= DETECT,
        "{what}: detection took {:?}",
        times.detected
    );
    assert!(
        times.recovered <= REJOIN,
        "{what}: recovery took {:?}",
        times.recovered
    );
}

#[test]
fn killed_worker_is_detected_and_rejoins_when_restarted() {
    let _serial = timing_lock();
    check("kill -9 worker", kill_worker());
}

#[test]
fn killed_coordinator_gets_both_workers_back_when_restarted() {
    let _serial = timing_lock();
    check("kill -9 coordinator", kill_coordinator());
}

#[test]
fn frozen_worker_is_reported_while_stats_keep_answering() {
    let _serial = timing_lock();
    check("SIGSTOP worker", freeze_worker());
}

#[test]
fn a_node_that_stops_cleanly_is_forgotten_not_reported() {
    let (mut cluster, https) = Cluster::start_with_http(
        &["coordinator", "worker-1", "worker-2"],
        &["--counters", "2"],
    );
    cluster.wait_mesh(6);
    cluster.nodes[2].signal("TERM");
    assert_eq!(cluster.nodes[2].wait_exit(Duration::from_secs(10)), Some(0));
    let _left = cluster.nodes.pop().unwrap();
    cluster.wait_mesh(4);
    // The coordinator was told worker-2 left, and never saw a peer unreachable: its
    // membership events (all of them: fewer than it keeps) say so.
    let (events, members) = crate::http::member_events(&https[0]);
    assert!(
        events
            .iter()
            .any(|e| e["peer"] == "worker-2" && e["kind"] == "left"),
        "the coordinator was not told worker-2 left: {}",
        members
    );
    assert!(
        !events.iter().any(|e| e["kind"] == "unreachable"),
        "the coordinator saw a peer unreachable: {}",
        members
    );
}

#[test]
fn a_wrong_cookie_is_reported_and_retried() {
    let coordinator = NodeProc::start("coordinator", &["--role", "coordinator"]);
    let intruder = NodeProc::start(
        "intruder",
        &["--join", &coordinator.addr, "--cookie", "not-the-cookie"],
    );
    wait_for(
        "the joining node to report the failed authentication and retry",
        Duration::from_secs(10),
        || {
            let log = intruder.log();
            let reported = log.lines().any(|l| {
                l.contains("ERROR")
                    && l.contains(&format!("cannot join {}", coordinator.addr))
                    && l.contains("authentication")
            });
            let retried = log.contains("attempts=2");
            (reported && retried)
                .then_some(())
                .ok_or_else(|| format!("intruder log so far:\n{log}"))
        },
    );
    let log = coordinator.log();
    assert!(log.contains("failed to authenticate"), "{log}");
    // Logged once, not once per attempt.
    assert_eq!(log.matches("failed to authenticate").count(), 1, "{log}");
    let s = stats_within(&coordinator.addr, "0.5").unwrap();
    assert_eq!(
        (s["num_nodes"].as_u64(), s["complete"].as_bool()),
        (Some(1), Some(true))
    );
}

#[test]
fn an_unreachable_seed_is_logged_and_retried_until_it_comes_up() {
    let seed = format!("127.0.0.1:{}", crate::util::free_port());
    let worker = NodeProc::start("worker-1", &["--join", &seed, "--counters", "1"]);
    // The first failures are what a cluster forming looks like (INFO); once they have
    // lasted about 4 s (the eighth in a row), a warning.
    let line = |level: &str, attempts: &str| {
        wait_for(
            &format!("the worker to log the unreachable seed at {level}, attempts={attempts}"),
            Duration::from_secs(15),
            || {
                let log = worker.log();
                log.lines()
                    .find(|l| {
                        l.contains("cannot reach peer")
                            && l.contains(&seed)
                            && l.contains(&format!("attempts={attempts}"))
                    })
                    .map(str::to_string)
                    .ok_or_else(|| format!("worker log so far:\n{log}"))
            },
        )
        .contains(&format!(" {level} "))
    };
    assert!(line("INFO", "2"), "{}", worker.log());
    assert!(line("WARN", "8"), "{}", worker.log());
    // The seed comes up later, on that address: the worker joins it by itself.
    let coordinator = NodeProc::start_at(
        "coordinator",
        &seed,
        &["--role", "coordinator", "--counters", "1"],
        &[],
    );
    let cluster = Cluster {
        nodes: vec![coordinator, worker],
    };
    cluster.wait_mesh(2);
}
