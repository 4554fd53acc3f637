//! Two copies of every node's store (`--copies 2`): a change is
//! acknowledged once it is on both disks, and a node whose disk is lost starts from its
//! copy, so nothing it acknowledged, applied or issued is lost, and nothing is applied
//! twice.

use std::time::Duration;

use crate::exactly_once::{
    budget, lab_cluster, loaded_cluster_with, settles_exactly, three_times, wait_issued,
    wait_recovered, ClientLoop,
};
use crate::netns::lab_or_skip;
use crate::util::{client_ok, node_entry, stats, timing_lock, wait_for, Cluster, NodeProc};

/// The line a node logs when it starts from its copy.
const RESTORED: &str = "started this node's store from its copy";

/// Deletes a data dir (its node is not running).
fn lose_disk(dir: &std::path::Path) {
    std::fs::remove_dir_all(dir).expect("removing the data dir");
}

/// Kills `node` (`kill -9`), does `to_disk` to its data dir, and starts it again.
fn restart_with(node: &mut NodeProc, to_disk: impl FnOnce(&std::path::Path)) {
    node.kill();
    to_disk(
        node.data_dir
            .as_ref()
            .expect("the harness gave it a data dir"),
    );
    node.restart();
}

/// [`restart_with`], then waits until the node says it started from its copy.
fn restart_from_copy(node: &mut NodeProc, to_disk: impl FnOnce(&std::path::Path)) {
    restart_with(node, to_disk);
    let what = format!("{} to start from its copy", node.name);
    node.wait_for_log(&what, RESTORED, Duration::from_secs(20));
}

/// Waits until every node of `cluster` says its copy is in step on another node, with
/// no commit missing from it: after a fault, the copies are whole again.
fn copies_in_step(cluster: &Cluster, what: &str) {
    let via = cluster.nodes[0].addr.clone();
    wait_for(
        &format!("every copy in step after {what}"),
        Duration::from_secs(20),
        || {
            let s = stats(&via)?;
            for node in &cluster.nodes {
                let entry = node_entry(&s, &node.name)
                    .ok_or_else(|| format!("{} not in the stats: {s}", node.name))?;
                let copy = &entry["copy"];
                let kept_by = copy["kept_by"].as_str();
                if kept_by.is_none() || kept_by == Some(node.name.as_str()) {
                    return Err(format!("{}'s copy is not in step: {copy}", node.name));
                }
                if copy["lag_commits"] != 0 {
                    return Err(format!("{}'s copy lags: {copy}", node.name));
                }
            }
            Ok(())
        },
    );
}

/// A fault under load: once `issuer` has issued `ops / share`, client changes with
/// ids go through random nodes while `fault` runs; then the cluster must settle
/// exactly (every acknowledged change applied once, nothing lost or doubled) and every
/// copy be in step again.
fn exact_through(
    cluster: &mut Cluster,
    ops: u64,
    (issuer, share): (&str, u64),
    what: &str,
    fault: impl FnOnce(&mut Cluster),
) {
    let via = cluster.nodes[0].addr.clone();
    wait_issued(&via, issuer, ops / share);
    let clients = ClientLoop::start(cluster);
    fault(cluster);
    let clients = clients.finish();
    settles_exactly(cluster, ops, clients, what);
    copies_in_step(cluster, what);
}

/// Counter `counter`'s value, read through `via`.
fn value_of(counter: &str, via: &str) -> i64 {
    client_ok(&["get", counter, "--join", via]).parse().unwrap()
}

#[test]
fn a_node_whose_disk_is_lost_starts_from_its_copy() {
    let mut cluster = Cluster::start(2, &["--counters", "4", "--copies", "2"]);
    cluster.wait_mesh(12);
    // Acknowledged changes to worker-1's counters, through another node.
    let via = cluster.nodes[0].addr.clone();
    let mut value = 0i64;
    for k in 1..=30i64 {
        let printed: i64 =
            client_ok(&["incr", "worker-1/2", "--by", &k.to_string(), "--join", &via])
                .parse()
                .unwrap();
        value += k;
        assert_eq!(printed, value);
    }
    restart_from_copy(&mut cluster.nodes[1], lose_disk);
    cluster.wait_mesh(12);
    assert_eq!(
        value_of("worker-1/2", &via),
        value,
        "worker-1/2 after its disk was lost"
    );
    copies_in_step(&cluster, "a lost disk");
    // Each node says where its copy is: on the next member on the ring of names.
    let ring = [
        ("coordinator", "worker-1"),
        ("worker-1", "worker-2"),
        ("worker-2", "coordinator"),
    ];
    for (node, keeper) in ring {
        wait_for(
            &format!("{node}'s copy on {keeper}"),
            Duration::from_secs(10),
            || {
                let s = stats(&via)?;
                let copy = &node_entry(&s, node).ok_or("not in the stats")?["copy"];
                (copy["kept_by"] == keeper && copy["copies"] == 2)
                    .then_some(())
                    .ok_or(format!("copy: {copy}"))
            },
        );
    }
    // And with one copy, the same loss starts the node from nothing: the test above
    // would fail without the copy.
    let mut single = Cluster::start(1, &["--counters", "4", "--copies", "1"]);
    single.wait_mesh(8);
    let via = single.nodes[0].addr.clone();
    client_ok(&["incr", "worker-1/0", "--by", "5", "--join", &via]);
    restart_with(&mut single.nodes[1], lose_disk);
    single.wait_mesh(8);
    assert_eq!(
        value_of("worker-1/0", &via),
        0,
        "with one copy a lost disk loses the counts"
    );
}

/// A node that leaves for good (holding no count) leaves no stale copy behind: its
/// keeper removes it, and the copy it kept moves to the next member on the ring.
#[test]
fn the_copy_of_a_node_that_leaves_for_good_is_removed() {
    let mut cluster = Cluster::start(2, &["--counters", "4", "--copies", "2"]);
    cluster.wait_mesh(12);
    copies_in_step(&cluster, "the start");
    let data = |k: usize| cluster.nodes[k].data_dir.clone().expect("a data dir");
    // worker-2's store is copied on the coordinator, and it keeps worker-1's.
    let copy = data(0).join("copies").join("worker-2");
    assert!(copy.exists(), "no copy of worker-2 at {}", copy.display());
    let worker_2 = cluster.nodes[2].addr.clone();
    let left = client_ok(&["leave", "--for-good", "--join", &worker_2]);
    assert!(left.contains("leaving the cluster for good"), "{left}");
    assert_eq!(cluster.nodes[2].wait_exit(Duration::from_secs(20)), Some(0));
    wait_for(
        "the coordinator to remove worker-2's copy",
        Duration::from_secs(10),
        || (!copy.exists()).then_some(()).ok_or(cluster.nodes[0].log()),
    );
    cluster.nodes[0].wait_for_log(
        "the coordinator to say it removed the copy",
        "removed the copy of a node's store: it left the cluster for good",
        Duration::from_secs(1),
    );
    cluster.nodes.truncate(2);
    copies_in_step(&cluster, "worker-2 left for good");
    let via = cluster.nodes[0].addr.clone();
    let s = stats(&via).unwrap();
    assert_eq!(
        node_entry(&s, "worker-1").unwrap()["copy"]["kept_by"],
        "coordinator",
        "{s}"
    );
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_worker_whose_disk_is_lost_mid_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(8);
    let (mut cluster, https) = loaded_cluster_with(ops, &["--copies", "2"]);
    let what = "kill -9 worker-1 mid-load, its disk lost, restart";
    exact_through(&mut cluster, ops, ("worker-1", 3), what, |cluster| {
        restart_from_copy(&mut cluster.nodes[1], lose_disk);
        wait_recovered(&https[1], "worker-1");
        cluster.wait_mesh(12);
    });
}

/// Copies `from` (a data dir) to `to`, as a backup of it.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("running cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

#[test]
fn a_node_whose_data_dir_is_put_back_from_an_older_backup_starts_from_its_copy() {
    let mut cluster = Cluster::start(2, &["--counters", "4", "--copies", "2"]);
    cluster.wait_mesh(12);
    let via = cluster.nodes[0].addr.clone();
    let incr = |by: i64| -> i64 {
        client_ok(&[
            "incr",
            "worker-1/3",
            "--by",
            &by.to_string(),
            "--join",
            &via,
        ])
        .parse()
        .unwrap()
    };
    assert_eq!(incr(7), 7);
    // A backup of worker-1's data dir, taken while it is stopped.
    let worker = &mut cluster.nodes[1];
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(15)), Some(0));
    let dir = worker.data_dir.clone().unwrap();
    let backup = dir.with_extension("backup");
    copy_dir(&dir, &backup);
    worker.restart();
    cluster.wait_mesh(12);
    assert_eq!(incr(5), 12);
    assert_eq!(incr(4), 16);
    // The backup put back: older than its copy.
    restart_from_copy(&mut cluster.nodes[1], |dir| {
        lose_disk(dir);
        std::fs::rename(&backup, dir).unwrap();
    });
    cluster.wait_mesh(12);
    assert_eq!(
        value_of("worker-1/3", &via),
        16,
        "worker-1/3 after its data dir was put back from a backup"
    );
    assert_eq!(incr(1), 17);
    copies_in_step(&cluster, "a backup put back");
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_keeper_frozen_three_times_mid_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(15);
    let (mut cluster, _) = loaded_cluster_with(ops, &["--copies", "2"]);
    let what = "--copies 2: SIGSTOP worker-2 (worker-1's keeper) 3 s, three times";
    // worker-2 keeps worker-1's copy: worker-1's changes wait for it, then move to the
    // coordinator once it is found down, and back once it is up again.
    exact_through(&mut cluster, ops, ("worker-2", 10), what, |cluster| {
        three_times(cluster, 12, |on| {
            cluster.nodes[2].signal(if on { "STOP" } else { "CONT" })
        });
    });
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn both_copies_nodes_frozen_in_turn_lose_and_double_nothing() {
    let _serial = timing_lock();
    let ops = budget(15);
    let (mut cluster, _) = loaded_cluster_with(ops, &["--copies", "2"]);
    let what = "--copies 2: worker-1 and its keeper worker-2 frozen 3 s in turn";
    // worker-1's store and its copy (on worker-2), frozen one after the other.
    exact_through(&mut cluster, ops, ("worker-1", 10), what, |cluster| {
        let mut turn = 0;
        three_times(cluster, 12, |on| {
            let node = &cluster.nodes[1 + turn % 2];
            node.signal(if on { "STOP" } else { "CONT" });
            if !on {
                turn += 1;
            }
        });
    });
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_rolling_restart_with_copies_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let ops = budget(12);
    let (mut cluster, _) = loaded_cluster_with(ops, &["--copies", "2"]);
    let what = "--copies 2: a rolling restart of every node";
    exact_through(&mut cluster, ops, ("worker-2", 10), what, |cluster| {
        for k in [1, 2, 0] {
            let node = &mut cluster.nodes[k];
            node.signal("TERM");
            assert_eq!(
                node.wait_exit(Duration::from_secs(15)),
                Some(0),
                "{} stopped cleanly",
                node.name
            );
            node.restart();
            cluster.wait_mesh(12);
        }
    });
}

#[test]
#[ignore = "slow suite: run by .ci/run"]
fn a_keeper_cut_off_three_times_mid_load_loses_and_doubles_nothing() {
    let _serial = timing_lock();
    let test = "a_keeper_cut_off_three_times_mid_load_loses_and_doubles_nothing";
    let Some(mut lab) = lab_or_skip(test) else {
        return;
    };
    let ops = budget(15);
    let mut cluster = lab_cluster(&lab, ops, &["--copies", "2"]);
    copies_in_step(&cluster, "the start");
    let what = "--copies 2: worker-2 (worker-1's keeper) cut off 3 s, three times";
    // worker-2 keeps worker-1's copy, and its own is on the coordinator: cut off, its
    // keeper and its copy are both out of reach (and worker-1's copy with it), while
    // it takes changes alone until it finds every member down.
    exact_through(&mut cluster, ops, ("worker-2", 10), what, |cluster| {
        three_times(cluster, 12, |on| if on { lab.cut() } else { lab.heal() });
    });
}
