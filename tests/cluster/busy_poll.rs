//! The busy poll's `auto` default: a node measures at start whether spinning pays on
//! this machine, logs the verdict, and the verdict follows the rule.

use std::time::Duration;

use crate::util::{lines_with, Cluster};

const VERDICT: &str = "busy poll: measured whether it pays on this machine";

/// The value of `name=` on `line`, a whole number.
fn field(line: &str, name: &str) -> u64 {
    line.split(&format!("{name}="))
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[test]
fn auto_measures_at_start_and_spins_only_where_wake_ups_are_dear() {
    let cluster = Cluster::start(0, &["--counters", "1"]);
    let node = &cluster.nodes[0];
    node.wait_for_log("the busy poll's verdict", VERDICT, Duration::from_secs(20));
    let log = node.log();
    let line = log.lines().find(|l| l.contains(VERDICT)).unwrap();
    let asleep = field(line, "round_trip_asleep_ns");
    let spinning = field(line, "round_trip_spinning_ns");
    let pays = asleep >= 30_000 && (spinning as f64) < 0.8 * asleep as f64;
    assert!(line.contains(&format!("on={pays}")), "{line}");
    assert!(asleep > 0 && spinning > 0, "{line}");
    // Measured across two CPUs where the node may use two.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cfg!(target_os = "linux") && cpus >= 2 {
        let held = line
            .split("cpus=Some((")
            .nth(1)
            .and_then(|rest| rest.split_once("))"))
            .and_then(|(pair, _)| pair.split_once(", "))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        let (asker, answerer) = held.unwrap_or_else(|| panic!("not held on two CPUs: {line}"));
        assert_ne!(asker, answerer, "{line}");
    }
    assert_eq!(
        lines_with(&log, VERDICT),
        1,
        "measured once at start:\n{log}"
    );

    // A window given is used as given: nothing is measured.
    let forced = Cluster::start(0, &["--counters", "1", "--busy-poll-us", "0"]);
    forced.wait_mesh(1);
    let log = forced.nodes[0].log();
    assert_eq!(lines_with(&log, "busy poll"), 0, "{log}");
}
