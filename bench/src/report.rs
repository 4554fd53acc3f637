//! The figures `node-bench` reports, and how they are printed: a table beside the
//! goals, or one JSON object with the same keys.

use serde::Serialize;

/// The figures of one `node-bench` run (the `--json` output).
#[derive(Debug, Default, Serialize)]
pub(crate) struct BenchReport {
    /// Logical CPUs the machine offers.
    pub(crate) cpus: usize,
    /// This process's busy poll and, with `auto`, the measure it came from (each node
    /// the bench starts measures its own).
    pub(crate) busy_poll: String,
    /// Length-prefixed bincode frames per second over one loopback TCP connection.
    pub(crate) raw_tcp_frames_per_sec: f64,
    /// Coalesced increments per second from a client process to a node, checked exact;
    /// each batch acknowledged once committed to the node's store.
    pub(crate) remote_increments_per_sec: f64,
    /// The same to a `--memory-only` node, in the same run.
    pub(crate) remote_increments_per_sec_memory: f64,
    /// `remote_increments_per_sec / remote_increments_per_sec_memory`.
    pub(crate) durable_vs_memory: f64,
    /// Operations per store commit (one fsync) during the coalesced push.
    pub(crate) ops_per_fsync: f64,
    /// Store commits per second during the coalesced push.
    pub(crate) fsyncs_per_sec: f64,
    /// Median round trip of one change with an id (client process → host → journal →
    /// commit → reply), durable: the median of the rounds' p50s, each round right after
    /// one of Redis AOF `always`.
    pub(crate) durable_change_p50_us: f64,
    /// 99th percentile of the same (the median of the rounds').
    pub(crate) durable_change_p99_us: f64,
    /// Each round's p50.
    pub(crate) durable_change_rounds_p50_us: Vec<f64>,
    /// Median of the same to a memory-only node.
    pub(crate) memory_change_p50_us: f64,
    /// Clients sending durable changes at once (each one after another)...
    pub(crate) durable_change_clients_at_once: usize,
    /// ...the median of their medians...
    pub(crate) durable_change_at_once_p50_us: f64,
    /// ...and their changes per store commit (clients at once share commits).
    pub(crate) durable_changes_per_commit_at_once: f64,
    /// From restarting a node killed with `kill -9` to a complete collection.
    pub(crate) restart_complete_ms: f64,
    /// Counters on that node.
    pub(crate) restart_counters: u32,
    /// `remote_increments_per_sec / raw_tcp_frames_per_sec`.
    pub(crate) remote_increments_vs_raw_tcp: f64,
    /// Operations carried per network message in the coalesced push.
    pub(crate) remote_increments_ops_per_message: f64,
    /// Whether every counter moved by exactly what was pushed (both pushes).
    pub(crate) remote_increments_exact: bool,
    /// Increments per second, one network message each.
    pub(crate) remote_increments_per_sec_unbatched: f64,
    /// Median round trip of a `GetStats` call from a client process to a node.
    pub(crate) remote_call_p50_us: f64,
    /// 99th percentile of the same.
    pub(crate) remote_call_p99_us: f64,
    /// Redis's median `INCR` round trip for one client, no pipelining, measured right
    /// after the calls (`None`: Redis is not installed; the yardstick is optional).
    pub(crate) redis_incr_p50_us: Option<f64>,
    /// The same with AOF `always` (an fsync before each answer), in rounds alternated
    /// with our durable changes: the median of the rounds' p50s.
    pub(crate) redis_aof_incr_p50_us: Option<f64>,
    /// Each round's p50 (empty where Redis was left out).
    pub(crate) redis_aof_rounds_p50_us: Vec<f64>,
    /// Our durable change p50 over Redis AOF `always`'s, the median of the rounds'
    /// ratios (each round's pair measured back to back): the figure the goal is on.
    pub(crate) durable_vs_redis_aof: Option<f64>,
    /// Each round's ratio.
    pub(crate) durable_vs_redis_aof_rounds: Vec<f64>,
    /// Median time of one collection of all counters (one request per node).
    pub(crate) aggregate_10k_ms: f64,
    /// Median time of one collection calling every counter one after another.
    pub(crate) aggregate_10k_sequential_ms: f64,
    /// Counters the collections covered (3 nodes).
    pub(crate) aggregate_counters: u32,
    /// The pushing client's peak resident memory, in MiB.
    pub(crate) sender_peak_rss_mb: f64,
    /// Increments in the coalesced push.
    pub(crate) push_operations: u64,
    /// Counters on the node the pushes went to.
    pub(crate) push_counters: u32,
    /// Resident memory per running counter, in KiB: (a cluster node's RSS minus an
    /// empty node's) over its counters, once each has been called.
    pub(crate) rss_per_counter_kb: f64,
    /// The same while every counter is idle (its actor retired or never started;
    /// collections read it from the store).
    pub(crate) rss_per_idle_counter_kb: f64,
    /// What starting an idle counter adds to a call, in µs: the sequential collection's
    /// first run (each counter started on its call) over the median of the later ones,
    /// per counter.
    pub(crate) activation_us: f64,
}

/// The figures of `node-bench --scale`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ScaleReport {
    /// Nodes started.
    pub(crate) scale_nodes: u32,
    /// Counters per node.
    pub(crate) scale_counters_per_node: u32,
    /// From starting the processes to the first complete collection.
    pub(crate) scale_form_ms: f64,
    /// Median time of a full collection of every counter (totals only).
    pub(crate) scale_collect_ms: f64,
    /// Counters in the last collection.
    pub(crate) scale_collected_counters: usize,
    /// Whether the last collection was complete.
    pub(crate) scale_complete: bool,
    /// Largest resident memory of any node after the collections, in MiB.
    pub(crate) scale_rss_mb_max: f64,
    /// Largest peak resident memory of any node, in MiB.
    pub(crate) scale_peak_rss_mb_max: f64,
}

pub(crate) fn table(r: &BenchReport) -> String {
    let rows = [
        (
            "raw_tcp_frames_per_sec",
            format!("{:.0}", r.raw_tcp_frames_per_sec),
            "reference".to_string(),
        ),
        (
            "remote_increments_per_sec",
            format!(
                "{:.0} ({:.0}% of raw TCP, {:.0} ops/message)",
                r.remote_increments_per_sec,
                100.0 * r.remote_increments_vs_raw_tcp,
                r.remote_increments_ops_per_message
            ),
            ">= 15,000,000 and >= 30% of raw TCP".to_string(),
        ),
        (
            "remote_increments_per_sec_memory",
            format!(
                "{:.0} (durable: {:.0}% of it)",
                r.remote_increments_per_sec_memory,
                100.0 * r.durable_vs_memory
            ),
            "durable >= 50% of it".to_string(),
        ),
        (
            "ops_per_fsync",
            format!("{:.0} ({:.0} fsyncs/s)", r.ops_per_fsync, r.fsyncs_per_sec),
            "reported".to_string(),
        ),
        (
            "durable_change_p50_us",
            format!(
                "{:.0} (p99 {:.0}; memory-only p50 {:.0}; {})",
                r.durable_change_p50_us,
                r.durable_change_p99_us,
                r.memory_change_p50_us,
                match (r.redis_aof_incr_p50_us, r.durable_vs_redis_aof) {
                    (Some(redis), Some(ratio)) => format!(
                        "rounds {}; Redis AOF always p50 {redis:.0}, rounds {}; \
                         each round's ratio {:.2}-{:.2}, median {ratio:.2}x \
                         (the medians' ratio {:.2}x)",
                        range(&r.durable_change_rounds_p50_us),
                        range(&r.redis_aof_rounds_p50_us),
                        min(&r.durable_vs_redis_aof_rounds),
                        max(&r.durable_vs_redis_aof_rounds),
                        r.durable_change_p50_us / redis
                    ),
                    _ => "Redis AOF not measured".to_string(),
                }
            ),
            "<= 700 and <= 1.2x Redis AOF (median of the rounds' ratios)".to_string(),
        ),
        (
            "durable_change_at_once_p50_us",
            format!(
                "{:.0} ({} clients at once; {:.2} changes per commit)",
                r.durable_change_at_once_p50_us,
                r.durable_change_clients_at_once,
                r.durable_changes_per_commit_at_once
            ),
            "reported; clients share commits (> 1 per commit)".to_string(),
        ),
        (
            "restart_complete_ms",
            format!(
                "{:.0} ({} counters)",
                r.restart_complete_ms, r.restart_counters
            ),
            "<= 5000".to_string(),
        ),
        (
            "remote_increments_per_sec_unbatched",
            format!("{:.0}", r.remote_increments_per_sec_unbatched),
            ">= 500,000".to_string(),
        ),
        (
            "remote_call_p50_us",
            match r.redis_incr_p50_us {
                Some(redis) => format!(
                    "{:.0} (Redis INCR p50 {redis:.0}: {:.2}x)",
                    r.remote_call_p50_us,
                    r.remote_call_p50_us / redis
                ),
                None => format!("{:.0} (Redis not installed)", r.remote_call_p50_us),
            },
            "<= 100 and <= 1.5x Redis".to_string(),
        ),
        (
            "remote_call_p99_us",
            format!("{:.0}", r.remote_call_p99_us),
            "<= 250".to_string(),
        ),
        (
            "aggregate_10k_ms",
            format!("{:.1}", r.aggregate_10k_ms),
            "<= 25".to_string(),
        ),
        (
            "aggregate_10k_sequential_ms",
            format!(
                "{:.1} (first run, starting each counter: +{:.0} µs a call)",
                r.aggregate_10k_sequential_ms, r.activation_us
            ),
            "<= 600".to_string(),
        ),
        (
            "sender_peak_rss_mb",
            format!("{:.1}", r.sender_peak_rss_mb),
            "<= 64".to_string(),
        ),
        (
            "rss_per_counter_kb",
            format!(
                "{:.1} running ({:.2} idle)",
                r.rss_per_counter_kb, r.rss_per_idle_counter_kb
            ),
            "reported".to_string(),
        ),
    ];
    let mut out = format!(
        "{} cpus; push: {} ops to {} counters (exact: {}); collections over {} counters on 3 nodes\n\
         busy poll of this process: {}\n",
        r.cpus,
        r.push_operations,
        r.push_counters,
        r.remote_increments_exact,
        r.aggregate_counters,
        r.busy_poll
    );
    out.push_str(&format!("{:<38} {:<52} {}\n", "figure", "value", "goal"));
    for (name, value, goal) in rows {
        out.push_str(&format!("{name:<38} {value:<52} {goal}\n"));
    }
    out
}

pub(crate) fn scale_table(r: &ScaleReport) -> String {
    format!(
        "{} nodes x {} counters\n\
         {:<28} {:.0} ms\n{:<28} {:.0} ms ({} counters, complete: {})\n\
         {:<28} {:.0} MiB (peak {:.0} MiB; goal <= 2048)\n",
        r.scale_nodes,
        r.scale_counters_per_node,
        "formed (all answering) in",
        r.scale_form_ms,
        "full collection",
        r.scale_collect_ms,
        r.scale_collected_counters,
        r.scale_complete,
        "largest node RSS",
        r.scale_rss_mb_max,
        r.scale_peak_rss_mb_max,
    )
}

/// `min-max` of `values`, whole numbers.
fn range(values: &[f64]) -> String {
    format!("{:.0}-{:.0}", min(values), max(values))
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}
