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
//! - for every sender, what all nodes applied from it is exactly what it issued;
//! - every client change (`node incr --id` in a loop through random nodes during the
//!   fault, each retried with its id until it reports a value) is applied exactly once:
//!   the totals are what was issued plus exactly the client changes.
//!
//! The slow suite (`#[ignore]`d; `.ci/run` runs it). Each test prints how long the
//! cluster took to settle after the fault.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::{lab_or_skip, NetLab};
use crate::util::{
    applied_from, client, free_port, stats_within, timing_lock, wait_for, Cluster, NodeProc,
};

/// One client change of the loop.
pub struct ClientChange {
    id: String,
    counter: String,
    by: u64,
    applied: bool,
}

/// `node incr --id` in a loop through random nodes on random counters, one at a time,
/// while a fault runs.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    handle: JoinHandle<Vec<ClientChange>>,
    addrs: Vec<String>,
}

/// `node incr COUNTER --by BY --id ID --join VIA`: whether it printed a value.
fn incr_with_id(change: &ClientChange, via: &str, timeout: &str) -> bool {
    let by = change.by.to_string();
    let out = client(&[
        "incr",
        &change.counter,
        "--by",
        &by,
        "--id",
        &change.id,
        "--timeout",
        timeout,
        "--join",
        via,
    ]);
    out.status.success()
}

impl ClientLoop {
    /// Starts the loop over `cluster`'s nodes (each with 4 counters).
    pub fn start(cluster: &Cluster) -> ClientLoop {
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
        let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let (flag, count, via) = (Arc::clone(&stop), Arc::clone(&made), addrs.clone());
        let handle = std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(7);
            let mut changes = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let mut change = ClientChange {
                    id: format!("loop-{}", changes.len()),
                    counter: format!("{}/{}", names[rng.usize(..names.len())], rng.u32(..4)),
                    by: 1_000 + rng.u64(..1_000),
                    applied: false,
                };
                change.applied = incr_with_id(&change, &via[rng.usize(..via.len())], "2");
                changes.push(change);
                count.store(changes.len(), Ordering::Relaxed);
            }
            changes
        });
        ClientLoop {
            stop,
            made,
            handle,
            addrs,
        }
    }

    /// Stops the loop (once it has made at least 20 changes), then retries every change that did not report a value, with its
    /// id, until it does; returns the client changes' total and count.
    pub fn finish(self) -> (i64, u64) {
        // Enough changes to mean something, also when the fault was brief.
        wait_for(
            "the client loop to make 20 changes",
            Duration::from_secs(60),
            || {
                let made = self.made.load(Ordering::Relaxed);
                (made >= 20).then_some(()).ok_or(format!("{made} so far"))
            },
        );
        self.stop.store(true, Ordering::Relaxed);
        let mut changes = self.handle.join().expect("the client loop");
        let unsure = changes.iter().filter(|c| !c.applied).count();
        for change in changes.iter_mut().filter(|c| !c.applied) {
            let addrs = &self.addrs;
            wait_for(
                &format!("client change {} to be applied", change.id),
                Duration::from_secs(60),
                || {
                    incr_with_id(change, &addrs[0], "5")
                        .then_some(())
                        .ok_or_else(|| "not yet".to_string())
                },
            );
            change.applied = true;
        }
        let total: i64 = changes.iter().map(|c| c.by as i64).sum();
        println!(
            "  client loop: {} changes with ids, {unsure} retried after the fault",
            changes.len()
        );
        assert!(!changes.is_empty(), "the client loop made no change");
        (total, changes.len() as u64)
    }
}

/// Load per node, in operations per second.
pub const RATE: u64 = 20_000;

/// How long the faults take, at most, and how long the cluster may take to settle.
const SETTLE: Duration = Duration::from_secs(90);

/// The load budget per node: `seconds` of load at [`RATE`].
pub fn budget(seconds: u64) -> u64 {
    RATE * seconds
}

pub fn load_args(ops: u64) -> Vec<String> {
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

/// Three nodes under load, each to issue `ops` operations; and their HTTP sides.
fn loaded_cluster(ops: u64) -> (Cluster, Vec<String>) {
    loaded_cluster_with(ops, &[])
}

/// Three nodes under load, each to issue `ops` operations, each with `extra` arguments
/// and an HTTP side on loopback; returns them with their HTTP addresses, in order
/// (coordinator, worker-1, worker-2).
pub fn loaded_cluster_with(ops: u64, extra: &[&str]) -> (Cluster, Vec<String>) {
    let args = load_args(ops);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (cluster, https) = Cluster::start_with_http(
        &["coordinator", "worker-1", "worker-2"],
        &[&args[..], extra].concat(),
    );
    cluster.wait_mesh(12);
    (cluster, https)
}

/// Waits until node `node`, whose HTTP side is `http`, serves its metrics having
/// opened a store that holds commits (recovered, or started from its copy), not a new
/// one.
pub fn wait_recovered(http: &str, node: &str) {
    wait_metric(
        &format!("{node} to open a store that holds commits"),
        http,
        &format!(r#"counter_cluster_store_recovered_commit{{node="{node}"}}"#),
        Duration::from_secs(10),
        |commit| commit > 0.0,
    );
}

/// The value of `series` on the node whose HTTP side is `http`, once the node serves
/// its metrics and `ok` holds of it (within `timeout`); `what` says what is awaited.
pub fn wait_metric(
    what: &str,
    http: &str,
    series: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    wait_for(what, timeout, || {
        let value = crate::metrics::counter_value(http, series)?;
        ok(value)
            .then_some(value)
            .ok_or(format!("{series} is {value}"))
    })
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
pub fn wait_issued(via: &str, name: &str, at_least: u64) {
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
/// invariant exactly, with the client changes `(total, count)` on top of what was
/// issued; returns how long settling took.
pub fn settles_exactly(cluster: &Cluster, ops: u64, clients: (i64, u64), what: &str) -> Duration {
    let (took, s) = settles(cluster, ops, clients, what);
    assert_eq!(
        (&s["unvouched_value"], &s["unvouched_operations"]),
        (&Value::from(0), &Value::from(0)),
        "{what}: something is unvouched: {s}"
    );
    took
}

/// Waits until every node has issued `ops`, nothing is in flight and the totals are
/// what was issued plus the client changes `(total, count)` plus what the nodes report
/// as unvouched; then checks that exactly, and per sender: what every node applied from
/// it is what it issued plus what it reports unvouched. Returns how long settling took,
/// and the last collection.
pub fn settles(cluster: &Cluster, ops: u64, clients: (i64, u64), what: &str) -> (Duration, Value) {
    let started = Instant::now();
    let via = cluster.nodes[0].addr.clone();
    let n = cluster.nodes.len() as u64;
    let num = |v: &Value| v.as_i64().map(i128::from).or(v.as_u64().map(i128::from));
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
            let accounted = num(&s["issued_operations"])
                .zip(num(&s["unvouched_operations"]))
                .map(|(i, u)| i + u + i128::from(clients.1));
            let done = s["complete"] == true
                && s["num_nodes"] == n
                && issued.iter().all(|i| *i == Some(ops))
                && s["in_flight_operations"] == 0
                && num(&s["total_operations"]) == accounted;
            if done {
                Ok(s)
            } else {
                Err(format!(
                    "complete {}, issued {issued:?}, in flight {}, total {} of {} (+ unvouched {})",
                    s["complete"],
                    s["in_flight_operations"],
                    s["total_operations"],
                    s["issued_operations"],
                    s["unvouched_operations"]
                ))
            }
        },
    );
    let took = started.elapsed();
    assert_eq!(s["issued_operations"], n * ops, "{what}: {s}");
    let figure = |key: &str| num(&s[key]).unwrap();
    assert_eq!(
        (figure("total_value"), figure("total_operations")),
        (
            figure("issued_value") + figure("unvouched_value") + i128::from(clients.0),
            figure("issued_operations") + figure("unvouched_operations") + i128::from(clients.1)
        ),
        "{what}: totals are not what was issued plus the client changes plus what is \
         reported unvouched: {s}"
    );
    assert_eq!(s["in_flight_operations"], 0, "{what}: {s}");
    // Per sender: what every node applied from it is what it issued, plus what it
    // reports unvouched.
    for sender in s["nodes"].as_array().unwrap() {
        let name = sender["name"].as_str().unwrap();
        let (value, operations) = applied_from(&s, name);
        let own = |key: &str| num(&sender[key]).unwrap();
        assert_eq!(
            (value, operations),
            (
                own("issued_value") + own("unvouched_value"),
                own("issued_operations") + own("unvouched_operations")
            ),
            "{what}: what the nodes applied from {name}: {s}"
        );
    }
    println!(
        "{what}: exact ({} operations, value {}, unvouched {} operations), settled {} ms after the fault",
        s["total_operations"],
        s["total_value"],
        s["unvouched_operations"],
        took.as_millis()
    );
    (took, s)
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn kill_9_of_a_worker_mid_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(8);
    let (mut cluster, https) = loaded_cluster(ops);
    let via = cluster.nodes[0].addr.clone();
    wait_issued(&via, "worker-1", ops / 3);
    let clients = ClientLoop::start(&cluster);
    cluster.nodes[1].kill();
    cluster.nodes[1].restart();
    // The restarted worker serves its metrics once it has opened its store: it
    // recovered commits, not a new store.
    wait_recovered(&https[1], "worker-1");
    cluster.wait_mesh(12);
    let clients = clients.finish();
    settles_exactly(&cluster, ops, clients, "kill -9 worker-1 mid-load, restart");
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn kill_9_of_the_coordinator_mid_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(8);
    let (mut cluster, _) = loaded_cluster(ops);
    let via = cluster.nodes[1].addr.clone();
    wait_issued(&via, "coordinator", ops / 3);
    let clients = ClientLoop::start(&cluster);
    cluster.nodes[0].kill();
    cluster.nodes[0].restart();
    cluster.wait_mesh(12);
    let clients = clients.finish();
    settles_exactly(
        &cluster,
        ops,
        clients,
        "kill -9 coordinator mid-load, restart",
    );
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_worker_frozen_three_times_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(15);
    let (cluster, _) = loaded_cluster(ops);
    let via = cluster.nodes[0].addr.clone();
    wait_issued(&via, "worker-1", ops / 10);
    let clients = ClientLoop::start(&cluster);
    three_times(&cluster, 12, |on| {
        cluster.nodes[1].signal(if on { "STOP" } else { "CONT" })
    });
    let clients = clients.finish();
    settles_exactly(&cluster, ops, clients, "SIGSTOP worker-1 3 s, three times");
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
    let cluster = lab_cluster(&lab, ops, &[]);
    let seed = cluster.nodes[0].addr.clone();
    wait_issued(&seed, "worker-2", ops / 10);
    let clients = ClientLoop::start(&cluster);
    three_times(&cluster, 12, |on| if on { lab.cut() } else { lab.heal() });
    let clients = clients.finish();
    settles_exactly(&cluster, ops, clients, "worker-2 cut off 3 s, three times");
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn sixteen_nodes_through_two_kills_and_a_quarter_cut_off_lose_and_double_nothing() {
    let _serial = timing_lock();
    let Some(mut lab) = lab_or_skip("sixteen_nodes_through_two_kills_and_a_quarter_cut_off") else {
        return;
    };
    // Sixteen nodes, each loading the cluster at 1,000 ops/s: twelve on the host's end
    // of the link, a quarter of the cluster (four) in the namespace on its far end.
    let ops = 1_000 * 25;
    let load = [
        "--counters",
        "4",
        "--load",
        "1000",
        "--load-ops",
        &ops.to_string(),
    ]
    .map(str::to_string);
    let load: Vec<&str> = load.iter().map(String::as_str).collect();
    let coordinator = lab_node(&lab, "coordinator", false, &load, None);
    let seed = coordinator.addr.clone();
    let mut nodes = vec![coordinator];
    for k in 1..16 {
        let name = format!("worker-{k:02}");
        nodes.push(lab_node(&lab, &name, k >= 12, &load, Some(&seed)));
    }
    let mut cluster = Cluster { nodes };
    let counters = 16 * 4;
    let formed = Instant::now();
    cluster.wait_mesh(counters);
    println!("16 nodes: full mesh in {} ms", formed.elapsed().as_millis());
    wait_issued(&seed, "worker-15", ops / 10);
    let clients = ClientLoop::start(&cluster);
    // Two nodes killed with -9 at once (one of them in the far quarter) and restarted.
    for k in [3, 13] {
        cluster.nodes[k].kill();
    }
    for k in [3, 13] {
        cluster.nodes[k].restart();
    }
    cluster.wait_mesh(counters);
    // The far quarter cut off silently, three times.
    three_times(
        &cluster,
        counters,
        |on| {
            if on {
                lab.cut()
            } else {
                lab.heal()
            }
        },
    );
    let clients = clients.finish();
    settles_exactly(
        &cluster,
        ops,
        clients,
        "16 nodes: kill -9 of two, a quarter cut off 3 s three times",
    );
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn sigterm_and_restart_of_the_last_worker_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(8);
    let (mut cluster, _) = loaded_cluster(ops);
    let via = cluster.nodes[0].addr.clone();
    // worker-2: not the others' seed, and its name sorts last.
    wait_issued(&via, "worker-2", ops / 3);
    let clients = ClientLoop::start(&cluster);
    cluster.nodes[2].signal("TERM");
    assert_eq!(cluster.nodes[2].wait_exit(Duration::from_secs(15)), Some(0));
    cluster.nodes[2].restart();
    cluster.wait_mesh(12);
    let clients = clients.finish();
    settles_exactly(&cluster, ops, clients, "SIGTERM worker-2 mid-load, restart");
}

/// The loaded cluster (see [`load_args`], and `extra`) with worker-2 in the lab's
/// namespace, beyond the link a cut silences; formed.
pub fn lab_cluster(lab: &NetLab, ops: u64, extra: &[&str]) -> Cluster {
    let args = load_args(ops);
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    let coordinator = lab_node(lab, "coordinator", false, &args, None);
    let seed = coordinator.addr.clone();
    let w1 = lab_node(lab, "worker-1", false, &args, Some(&seed));
    let w2 = lab_node(lab, "worker-2", true, &args, Some(&seed));
    let cluster = Cluster {
        nodes: vec![coordinator, w1, w2],
    };
    cluster.wait_mesh(12);
    cluster
}

/// Node `name` with `args`, joining `seed` (else the coordinator), on the host's end of
/// the lab's link, or (`far`) in its namespace, beyond the link a cut silences.
fn lab_node(lab: &NetLab, name: &str, far: bool, args: &[&str], seed: Option<&str>) -> NodeProc {
    let role: &[&str] = match seed {
        Some(seed) => &["--join", seed],
        None => &["--role", "coordinator"],
    };
    let args = [role, args].concat();
    if far {
        let addr = format!("{}:{}", lab.ns_ip, free_port());
        NodeProc::start_at(name, &addr, &args, &lab.prefix())
    } else {
        let addr = format!("{}:{}", lab.host_ip, free_port());
        NodeProc::start_at(name, &addr, &args, &[])
    }
}

/// Three episodes of a fault: `fault(true)` starts it, it lasts 3 s, `fault(false)`
/// ends it, and the full mesh (of `counters` counters) is back before the next.
pub fn three_times(cluster: &Cluster, counters: u64, mut fault: impl FnMut(bool)) {
    for _ in 0..3 {
        fault(true);
        // The fault lasts 3 s (its length, not a wait for anything).
        std::thread::sleep(Duration::from_secs(3));
        fault(false);
        cluster.wait_mesh(counters);
    }
}

/// A small filesystem of its own (tmpfs), unmounted when dropped: a disk that can be
/// filled up. Needs root; where it cannot be made, the test is skipped loudly, except
/// under `CI=true`, where it fails.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(test: &str, mib: u32) -> Option<SmallDisk> {
        let path = crate::util::data_dir("small-disk");
        std::fs::create_dir_all(&path).expect("cannot make the mount point");
        let size = format!("size={mib}m");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { path }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{test}: cannot mount a small filesystem ({why}), and CI must run this");
                }
                eprintln!("SKIPPED {test}: cannot mount a small filesystem ({why}); run as root, as .ci/run does");
                None
            }
        }
    }

    /// Fills the filesystem; returns the filler file.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("cannot create the filler");
        for chunk in [1 << 20, 4096, 512] {
            let block = vec![0u8; chunk];
            while file.write_all(&block).is_ok() {}
        }
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_full_disk_refuses_changes_serves_reads_and_loses_nothing_once_freed() {
    let _serial = timing_lock();
    let test = "a_full_disk_refuses_changes_serves_reads_and_loses_nothing_once_freed";
    let Some(disk) = SmallDisk::mount(test, 16) else {
        return;
    };
    let ops = budget(10);
    let args = load_args(ops);
    let load: Vec<&str> = args.iter().map(String::as_str).collect();
    let coordinator = NodeProc::start(
        "coordinator",
        &[&["--role", "coordinator"], &load[..]].concat(),
    );
    let seed = coordinator.addr.clone();
    let store = disk.path.join("worker-1");
    let store = store.display().to_string();
    let http = format!("127.0.0.1:{}", free_port());
    let worker = NodeProc::start(
        "worker-1",
        &[
            &[
                "--join",
                seed.as_str(),
                "--data-dir",
                store.as_str(),
                "--http",
                http.as_str(),
            ],
            &load[..],
        ]
        .concat(),
    );
    let other = NodeProc::start(
        "worker-2",
        &[&["--join", seed.as_str()], &load[..]].concat(),
    );
    let cluster = Cluster {
        nodes: vec![coordinator, worker, other],
    };
    cluster.wait_mesh(12);
    wait_issued(&seed, "worker-1", ops / 5);
    let clients = ClientLoop::start(&cluster);

    let filler = disk.fill();
    // A full disk only bites a store that needs new space, and under a steady load
    // worker-1's store does not grow (it reuses its pages). Client changes with new ids
    // do grow it (each id is kept for a day), so they are made until one is refused:
    // a change is not acknowledged, and says why.
    let mut fill_changes: Vec<ClientChange> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let change = ClientChange {
            id: format!("fill-{:0>120}", fill_changes.len()),
            counter: format!("worker-1/{}", fill_changes.len() % 4),
            by: 1,
            applied: false,
        };
        let by = change.by.to_string();
        let out = client(&[
            "incr",
            &change.counter,
            "--by",
            &by,
            "--id",
            &change.id,
            "--timeout",
            "2",
            "--join",
            &seed,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let applied = out.status.success();
        fill_changes.push(ClientChange { applied, ..change });
        if stderr.contains("store takes no writes") {
            break stderr;
        }
        assert!(
            Instant::now() < deadline,
            "worker-1 took {} changes with new ids on a full disk in 60 s; last: {stderr}",
            fill_changes.len()
        );
    };
    assert!(
        refused.contains("No space left on device"),
        "refused for another reason: {refused}"
    );
    // The operator reads why in the log.
    cluster.nodes[1].wait_for_log(
        "worker-1 to log its full disk",
        "No space left on device",
        Duration::from_secs(10),
    );
    let writable = r#"counter_cluster_store_writable{node="worker-1"}"#;
    let failed = r#"counter_cluster_store_commits_failed_total{node="worker-1"}"#;
    let text = crate::metrics::scrape(&http).unwrap();
    assert_eq!(
        (
            crate::metrics::sample(&text, writable),
            crate::metrics::sample(&text, failed).is_some_and(|n| n >= 1.0)
        ),
        (Some(0.0), true),
        "worker-1's metrics do not say its commits fail:\n{text}"
    );
    // Reads go on: worker-1's counters answer, and so do collections through it.
    crate::util::client_ok(&["get", "worker-1/0", "--join", &cluster.nodes[1].addr]);
    let s = stats_within(&cluster.nodes[1].addr, "1").unwrap();
    assert_eq!(s["complete"], true, "{s}");
    // The disk stays full for 3 s (its length, not a wait for anything), then is freed.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(&filler).unwrap();
    wait_metric(
        "worker-1's store to take writes again",
        &http,
        writable,
        Duration::from_secs(10),
        |w| w == 1.0,
    );
    // The refused change (and any whose fate was unknown), retried with its id, is
    // applied once.
    for change in fill_changes.iter().filter(|c| !c.applied) {
        wait_for(
            &format!("the refused change {} to be applied", change.id),
            Duration::from_secs(30),
            || {
                incr_with_id(change, &seed, "5")
                    .then_some(())
                    .ok_or_else(|| "not yet".to_string())
            },
        );
    }
    println!(
        "  {} changes with new ids until worker-1's full disk refused one",
        fill_changes.len()
    );
    let (total, count) = clients.finish();
    let filled = fill_changes.len() as i64;
    settles_exactly(
        &cluster,
        ops,
        (total + filled, count + filled as u64),
        "worker-1's disk full for 3 s",
    );
}
