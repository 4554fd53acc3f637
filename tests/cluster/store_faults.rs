//! Exactly once when a node's store misbehaves: its disk reports errors (some after the
//! data landed), its journal is crashed again and again under load, or its data dir is
//! replaced by an older copy. Three real node processes under load, as in
//! [`exactly_once`](crate::exactly_once); the slow suite (`.ci/run` runs it).

use std::time::Duration;

use crate::exactly_once::{
    budget, loaded_cluster_with, settles, settles_exactly, wait_issued, wait_metric, ClientLoop,
};
use crate::metrics::{counter_value, sample, scrape};
use crate::util::{client_ok, lines_with, timing_lock, wait_for, NodeProc};

/// Disk errors armed on every node: after `pass` more syncs, `fail` commits fail, each
/// kind in turn (the sync ran and reports an error, the sync did not run and reports
/// one, a write fails).
fn arm_disk_errors(node: &NodeProc, pass: u64, fail: u64) {
    let (pass, fail) = (pass.to_string(), fail.to_string());
    client_ok(&[
        "debug",
        "disk-errors",
        "--pass",
        &pass,
        "--fail",
        &fail,
        "--join",
        &node.addr,
    ]);
}

/// Waits until `node`, whose HTTP side is `http`, has injected `n` disk errors.
fn wait_injected(node: &NodeProc, http: &str, n: usize) {
    wait_metric(
        &format!("{} to inject {n} disk errors", node.name),
        http,
        &format!(
            "counter_cluster_store_faults_injected_total{{node=\"{}\"}}",
            node.name
        ),
        Duration::from_secs(60),
        |seen| seen >= n as f64,
    );
}

/// Every node's disk reports errors under load, some after the data reached the disk:
/// nothing is applied twice, nothing is lost, and every client change is applied once.
#[test]
#[ignore = "slow suite: run by .ci/run"]
fn disk_errors_under_load_apply_nothing_twice() {
    let _serial = timing_lock();
    let ops = budget(10);
    let (cluster, https) = loaded_cluster_with(ops, &["--enable-fault-injection"]);
    wait_issued(&cluster.nodes[0].addr, "worker-1", ops / 10);
    let clients = ClientLoop::start(&cluster);
    // Twice on each node: 6 failed commits each time, two of each kind.
    for round in 0..2 {
        for node in &cluster.nodes {
            arm_disk_errors(node, 200, 6);
        }
        for (node, http) in cluster.nodes.iter().zip(&https) {
            wait_injected(node, http, 6 * (round + 1));
        }
    }
    let clients = clients.finish();
    settles_exactly(&cluster, ops, clients, "disk errors on every node, 12 each");
    // Every node failed commits, and its store takes writes again.
    for (node, http) in cluster.nodes.iter().zip(&https) {
        let text = scrape(http).unwrap();
        let series = |name: &str| format!("counter_cluster_{name}{{node=\"{}\"}}", node.name);
        assert!(
            sample(&text, &series("store_commits_failed_total")).is_some_and(|n| n >= 1.0),
            "{} never failed a commit:\n{text}",
            node.name
        );
        assert_eq!(
            sample(&text, &series("store_writable")),
            Some(1.0),
            "{}'s store takes no writes:\n{text}",
            node.name
        );
    }
}

/// A worker's journal crashed five times under load (below the root's restart budget):
/// each time it resumes from the store, senders send again what it had not committed,
/// and its load client takes up its outbox again.
#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_journal_crashed_again_and_again_under_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(10);
    let (cluster, https) = loaded_cluster_with(ops, &["--enable-fault-injection"]);
    let worker = &cluster.nodes[1];
    wait_issued(&cluster.nodes[0].addr, "worker-1", ops / 10);
    let clients = ClientLoop::start(&cluster);
    for round in 1..=5 {
        client_ok(&["debug", "crash", "journal", "--join", &worker.addr]);
        wait_metric(
            &format!("worker-1's journal to restart ({round})"),
            &https[1],
            r#"counter_cluster_part_restarts_total{node="worker-1",part="journal"}"#,
            Duration::from_secs(10),
            |seen| seen >= f64::from(round),
        );
        // Let the load run against the new journal before the next crash.
        wait_issued(
            &cluster.nodes[0].addr,
            "worker-1",
            ops / 10 + round as u64 * 5_000,
        );
    }
    let clients = clients.finish();
    settles_exactly(&cluster, ops, clients, "worker-1's journal crashed 5 times");
}

/// A worker's data dir is replaced by an older copy of itself (taken while the node
/// was down, mid-load). Nobody can vouch for what happened between the copy and the
/// replacement, but nothing of it is hidden: the worker finds its destinations holding
/// batches its store never issued and carries on after them, its senders find it
/// short of batches it had acknowledged, and each reports the difference by name and
/// number (an ERROR line, and `unvouched_*` in every collection), which accounts for
/// the totals exactly.
#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_data_dir_restored_from_an_older_copy_is_reported_by_name_and_number() {
    let _serial = timing_lock();
    let ops = budget(12);
    let (mut cluster, _) = loaded_cluster_with(ops, &[]);
    let via = cluster.nodes[0].addr.clone();
    wait_issued(&via, "worker-1", ops / 4);
    let dir = cluster.nodes[1]
        .data_dir
        .clone()
        .expect("the harness's data dir");
    let copy = dir.with_extension("copy");
    cluster.nodes[1].kill();
    copy_dir(&dir, &copy);
    cluster.nodes[1].restart();
    cluster.wait_mesh(12);
    // The worker goes on issuing, and taking batches from the others, past the copy.
    wait_issued(&via, "worker-1", ops / 2);
    cluster.nodes[1].kill();
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&copy, &dir);
    std::fs::remove_dir_all(&copy).unwrap();
    cluster.nodes[1].restart();
    cluster.wait_mesh(12);
    let (_, s) = settles(&cluster, ops, (0, 0), "worker-1's data dir restored");
    // The worker's destinations hold what its restored store never issued; its
    // senders know what it lost. Both are reported, never hidden.
    let worker = crate::util::node_entry(&s, "worker-1").unwrap();
    let ahead = worker["unvouched_operations"].as_i64().unwrap();
    assert!(ahead > 0, "worker-1 reports nothing unvouched: {s}");
    let behind: i64 = ["coordinator", "worker-2"]
        .iter()
        .map(|name| {
            crate::util::node_entry(&s, name).unwrap()["unvouched_operations"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert!(behind < 0, "its senders report nothing it lost: {s}");
    let log = cluster.nodes[1].log();
    assert!(
        lines_with(&log, "this node's stream and its destination disagree") >= 1,
        "{log}"
    );
    for sender in [&cluster.nodes[0], &cluster.nodes[2]] {
        let log = sender.log();
        assert!(
            lines_with(&log, "destination=worker-1") >= 1,
            "{} did not name worker-1:\n{log}",
            sender.name
        );
    }
    println!("  unvouched: worker-1 +{ahead} operations, its senders {behind}");
}

/// Copies directory `from` (files only, as a data dir holds) to `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Parts that read the store when they start are restarted while its disk keeps
/// failing, under load: the node does not stop (a part that cannot read the store, or
/// whose journal cannot start, waits for it, outside the restart budget), goes on
/// serving what it can, and once the disk works the parts come back; the load ends
/// exact, and the change refused meanwhile, retried with its id, applies once.
#[test]
fn a_restart_during_a_disk_fault_waits_for_the_store() {
    let http = format!("127.0.0.1:{}", crate::util::free_port());
    let mut cluster = crate::util::Cluster::start(
        0,
        &[
            "--http",
            &http,
            "--counters",
            "2",
            "--enable-fault-injection",
            "--load",
            "500",
            "--load-ops",
            "3000",
        ],
    );
    cluster.wait_mesh(2);
    let node = &cluster.nodes[0];
    // Every commit from now on fails, in turn after the sync, instead of it, and at a
    // write, until the hook is disarmed.
    arm_disk_errors(node, 0, 1_000_000);
    let incr = || {
        crate::util::client(&[
            "incr",
            "coordinator/1",
            "--by",
            "5",
            "--id",
            "during-the-fault",
            "--timeout",
            "1",
            "--join",
            &node.addr,
        ])
    };
    let first = incr();
    assert!(
        !first.status.success(),
        "a change was acknowledged on a failing disk"
    );
    wait_metric(
        "a commit to fail",
        &http,
        r#"counter_cluster_store_commits_failed_total{node="coordinator"}"#,
        Duration::from_secs(10),
        |failed| failed >= 1.0,
    );
    let part_series = |name: &str, part: &str| {
        format!("counter_cluster_{name}{{node=\"coordinator\",part=\"{part}\"}}")
    };
    for (crash, part) in [
        ("counter-supervisor", "counter_supervisor"),
        ("journal", "journal"),
    ] {
        client_ok(&["debug", "crash", crash, "--join", &node.addr]);
        let (waiting, back) = (
            part_series("part_waiting_for_store", part),
            part_series("part_restarts_total", part),
        );
        wait_for(
            &format!("the {part} to restart or wait for the store"),
            Duration::from_secs(10),
            || {
                let text = scrape(&http)?;
                let (waits, restarts) = (sample(&text, &waiting), sample(&text, &back));
                (waits == Some(1.0) || restarts.is_some_and(|n| n >= 1.0))
                    .then_some(())
                    .ok_or(format!("{waiting} is {waits:?}, {back} is {restarts:?}"))
            },
        );
    }
    // The node serves meanwhile (a collection says what is missing).
    crate::util::stats(&node.addr).expect("the node stopped serving");
    arm_disk_errors(node, 0, 0);
    for part in ["counter_supervisor", "journal"] {
        let series = part_series("part_restarts_total", part);
        wait_for(
            &format!("the {part} to be back"),
            Duration::from_secs(30),
            || {
                let restarts = counter_value(&http, &series)?;
                (restarts >= 1.0)
                    .then_some(())
                    .ok_or(format!("{series} is {restarts}"))
            },
        );
    }
    wait_for("the change to be applied", Duration::from_secs(30), || {
        let out = incr();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
    });
    settles_exactly(
        &cluster,
        3000,
        (5, 1),
        "a node's parts restarted during a disk fault",
    );
    // The node never gave up: it is still running.
    let node = &mut cluster.nodes[0];
    assert_eq!(
        node.child.try_wait().expect("the node's status"),
        None,
        "the node stopped"
    );
}
