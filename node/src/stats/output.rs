//! What the user sees: the aggregator's one-line summary and `node stats`' table.
//! (JSON output is the serde form of [`ClusterStats`].)

use std::fmt::Write;

use shared::stats::ClusterStats;

/// Missing counters a summary line names, at most.
const LOGGED_MISSING: usize = 20;

/// One line summing up a collection, for the coordinator's periodic log.
pub(crate) fn summary_line(s: &ClusterStats) -> String {
    let mut line = format!(
        "cluster: total_value={} total_operations={} counters={}/{} nodes={}/{} \
         avg_ops_per_sec={:.1} recent_ops_per_sec={:.1} issued_value={} issued_operations={} \
         in_flight_operations={} complete={} took={}ms",
        s.total_value,
        s.total_operations,
        s.num_counters,
        s.known_counters,
        s.reachable_nodes,
        s.num_nodes,
        s.avg_ops_per_sec,
        s.recent_ops_per_sec,
        s.issued_value,
        s.issued_operations,
        s.in_flight_operations,
        s.complete,
        s.duration_ms,
    );
    let unreachable: Vec<String> = s
        .nodes
        .iter()
        .filter(|n| !n.reachable)
        .map(|n| {
            let secs = s.collected_at_ms.saturating_sub(n.since_ms) as f64 / 1000.0;
            format!("{} for {secs:.1}s", n.name)
        })
        .collect();
    if !unreachable.is_empty() {
        let _ = write!(line, " unreachable=[{}]", unreachable.join(","));
    }
    let silent: Vec<&str> = s
        .nodes
        .iter()
        .filter(|n| n.reachable && !n.answered)
        .map(|n| n.name.as_str())
        .collect();
    if !silent.is_empty() {
        let _ = write!(line, " not_answering=[{}]", silent.join(","));
    }
    if !s.missing_counters.is_empty() {
        // A node of a million counters gone would make a line of megabytes: the first
        // names, and how many more.
        let missing = s.known_counters.saturating_sub(s.num_counters);
        let named: Vec<&str> = s
            .missing_counters
            .iter()
            .take(LOGGED_MISSING)
            .map(String::as_str)
            .collect();
        let more = missing.saturating_sub(named.len());
        let rest = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let _ = write!(line, " missing=[{}{rest}]", named.join(","));
    }
    if !s.missing_links.is_empty() {
        let _ = write!(line, " not_linked=[{}]", s.missing_links.join(","));
    }
    if !s.departed.is_empty() {
        let _ = write!(line, " departed=[{}]", departed_list(s).join(","));
    }
    line
}

/// Each departed member, what it took with it, and what is in flight to it: one item
/// each.
fn departed_list(s: &ClusterStats) -> Vec<String> {
    s.departed
        .iter()
        .map(|d| {
            let how = if d.for_good {
                "for good"
            } else {
                "for a while"
            };
            let held = if d.known {
                format!("value {} in {} operations", d.value, d.operations)
            } else {
                "counts unknown".to_string()
            };
            let mut item = format!("{} {how} with {held}", d.name);
            if d.in_flight_to_it > 0 {
                let _ = write!(item, ", {} operations in flight to it", d.in_flight_to_it);
            }
            item
        })
        .collect()
}

/// The human-readable `node stats` output: totals, then a table per node.
pub(crate) fn stats_table(s: &ClusterStats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster (collected by {} in {} ms, deadline {} ms): {}",
        s.collected_by,
        s.duration_ms,
        s.deadline_ms,
        if s.complete { "complete" } else { "INCOMPLETE" }
    );
    let _ = writeln!(
        out,
        "  total value {}   total operations {}   counters {}/{}   nodes {}/{}",
        s.total_value,
        s.total_operations,
        s.num_counters,
        s.known_counters,
        s.reachable_nodes,
        s.num_nodes
    );
    let _ = writeln!(
        out,
        "  avg ops/s per counter {:.1}   recent ops/s {:.1}   load issued: value {} in {} operations ({} in flight)",
        s.avg_ops_per_sec,
        s.recent_ops_per_sec,
        s.issued_value,
        s.issued_operations,
        s.in_flight_operations
    );
    if !s.missing_links.is_empty() {
        let _ = writeln!(
            out,
            "  members that do not see each other: {}",
            s.missing_links.join(", ")
        );
    }
    if !s.departed.is_empty() {
        let _ = writeln!(
            out,
            "  departed (their counts are in none of the sums): {}",
            departed_list(s).join("; ")
        );
    }
    for node in &s.nodes {
        let role = node.role.map_or("?", |r| r.as_str());
        let _ = writeln!(
            out,
            "\nnode {} ({}, {}){}  issued value {} in {} ops ({} in flight), counter restarts {}",
            node.name,
            role,
            node.advertise.as_deref().unwrap_or("address unknown"),
            match (node.reachable, node.answered) {
                (true, true) => "",
                (true, false) => "  NOT ANSWERING",
                (false, _) => "  UNREACHABLE",
            },
            node.issued_value,
            node.issued_operations,
            node.in_flight_operations,
            node.counter_restarts
        );
        if node.copy.copies >= 2 {
            let _ = match &node.copy.kept_by {
                Some(keeper) => writeln!(
                    out,
                    "  copy of its store on {keeper} (lag {} commits)",
                    node.copy.lag_commits
                ),
                None => writeln!(out, "  copy of its store: none in step"),
            };
        }
        if !node.received.is_empty() {
            let from: Vec<String> = node
                .received
                .iter()
                .map(|r| format!("{} {} ops (value {})", r.sender, r.operations, r.value))
                .collect();
            let _ = writeln!(out, "  applied from: {}", from.join(", "));
        }
        let _ = writeln!(
            out,
            "  {:<24} {:>14} {:>12} {:>12} {:>12}",
            "counter", "value", "operations", "ops/s", "recent ops/s"
        );
        for c in &node.counters {
            let _ = writeln!(
                out,
                "  {:<24} {:>14} {:>12} {:>12.1} {:>12.1}",
                c.name, c.value, c.operations, c.ops_per_sec, c.recent_ops_per_sec
            );
        }
        for missing in &node.missing_counters {
            let _ = writeln!(out, "  {missing:<24} {:>14}", "MISSING");
        }
    }
    out
}
