//! A silent partition: worker-2 runs in its own network namespace and the link to it is
//! cut with iptables DROP (no reset, no refusal: packets vanish). It must be declared
//! unreachable within the failure timeout on both sides, and the full mesh must form
//! again within 5 s of the link being restored.

use std::time::{Duration, Instant};

use crate::netns::lab_or_skip;
use crate::util::{
    free_port, node_entry, stats_within, time_until, timing_lock, Cluster, NodeProc,
};

use crate::faults::{FaultTimes, DETECT, REJOIN};

fn reachable_in(via: &str, name: &str) -> Result<bool, String> {
    let s = stats_within(via, "0.3")?;
    let node = node_entry(&s, name).ok_or_else(|| format!("{name} not in {via}'s view"))?;
    node["reachable"]
        .as_bool()
        .ok_or_else(|| format!("no reachable field: {node}"))
}

fn full_mesh(cluster: &Cluster) -> Result<(), String> {
    for node in &cluster.nodes {
        let s = stats_within(&node.addr, "0.3")?;
        if s["complete"] != true || s["num_nodes"] != 3 || s["num_counters"] != 6 {
            return Err(format!("{}'s view is not the full cluster: {s}", node.name));
        }
    }
    Ok(())
}

#[test]
fn silent_partition_is_detected_and_heals() {
    let _serial = timing_lock();
    let Some(times) = partition("silent_partition_is_detected_and_heals") else {
        return;
    };
    println!(
        "silent partition: detected in {} ms, full mesh {} ms after healing",
        times.detected.as_millis(),
        times.recovered.as_millis()
    );
    assert!(
        times.detected <= DETECT,
        "detection took {:?}",
        times.detected
    );
    assert!(
        times.recovered <= REJOIN,
        "healing took {:?}",
        times.recovered
    );
}

/// Runs the partition scenario; `None` if no namespace can be made (said loudly).
pub fn partition(test: &str) -> Option<FaultTimes> {
    let mut lab = lab_or_skip(test)?;
    let host = |port: u16| format!("{}:{port}", lab.host_ip);
    let coordinator = NodeProc::start_at(
        "coordinator",
        &host(free_port()),
        &["--role", "coordinator", "--counters", "2"],
        &[],
    );
    let seed = coordinator.addr.clone();
    let w1 = NodeProc::start_at(
        "worker-1",
        &host(free_port()),
        &["--join", &seed, "--counters", "2"],
        &[],
    );
    let w2 = NodeProc::start_at(
        "worker-2",
        &format!("{}:{}", lab.ns_ip, free_port()),
        &["--join", &seed, "--counters", "2"],
        &lab.prefix(),
    );
    let cluster = Cluster {
        nodes: vec![coordinator, w1, w2],
    };
    time_until("the full mesh", Duration::from_secs(20), || {
        full_mesh(&cluster)
    });

    lab.cut();
    let cut_at = Instant::now();
    let (c0, w1a, w2a) = (
        cluster.nodes[0].addr.clone(),
        cluster.nodes[1].addr.clone(),
        cluster.nodes[2].addr.clone(),
    );
    time_until(
        "the coordinator to declare worker-2 unreachable",
        REJOIN,
        || match reachable_in(&c0, "worker-2")? {
            false => Ok(()),
            true => Err("worker-2 still reachable".into()),
        },
    );
    let detected = cut_at.elapsed();
    // worker-1 sees the same; collections through it do not wait for worker-2.
    time_until(
        "worker-1 to declare worker-2 unreachable",
        DETECT,
        || match reachable_in(&w1a, "worker-2")? {
            false => Ok(()),
            true => Err("worker-2 still reachable".into()),
        },
    );
    let s = stats_within(&c0, "0.5").unwrap();
    assert_eq!(s["complete"], false);
    assert_eq!(
        s["missing_counters"],
        serde_json::json!(["worker-2/0", "worker-2/1"])
    );
    // The coordinator's log names the peer and its address, once.
    let log = cluster.nodes[0].log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("peer unreachable"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("worker-2") && lines[0].contains(&w2a),
        "{}",
        lines[0]
    );

    lab.heal();
    let ((), recovered) = time_until("the full mesh after healing", 2 * REJOIN, || {
        full_mesh(&cluster)
    });
    Some(FaultTimes {
        detected,
        recovered,
    })
}
