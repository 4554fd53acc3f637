//! This process's (or another's) resident memory, CPU time and sleeps, from `/proc`
//! (Linux): what `node-bench` and the tests report and bound.

use std::time::Duration;

/// A `kB` line of `/proc/PID/status`, e.g. `VmRSS` (resident now) or `VmHWM` (peak), in
/// KiB; `None` if the process or the line is not there.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The times each thread of process `pid` has gone to sleep so far, by thread id (its
/// voluntary context switches, `/proc/PID/task/TID/status`): each sleep ends in a
/// wake-up, which is what an idle node's CPU goes on. `None` if the process is not there.
pub fn sleeps(pid: u32) -> Option<Sleeps> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let by_thread = tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let count = status.lines().find_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")?
                    .trim()
                    .parse()
                    .ok()
            })?;
            Some((tid, count))
        })
        .collect();
    Some(Sleeps(by_thread))
}

/// A process's sleeps so far, per thread: see [`sleeps`].
#[derive(Debug, Clone, Default)]
pub struct Sleeps(std::collections::HashMap<u32, u64>);

impl Sleeps {
    /// The sleeps since `earlier`, of the threads there now. A thread that ended between
    /// the two loses its sleeps in between (not those before `earlier`), so this is a
    /// lower bound.
    pub fn since(&self, earlier: &Sleeps) -> u64 {
        self.0
            .iter()
            .map(|(tid, now)| now.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum()
    }

    /// The sleeps of one thread so far.
    #[cfg(test)]
    fn of(&self, tid: u32) -> Option<u64> {
        self.0.get(&tid).copied()
    }
}

/// `status_kb` in MiB, 0 if unknown.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    status_kb(pid, field).unwrap_or(0) as f64 / 1024.0
}

/// CPU time process `pid` has used so far, user and system (`/proc/PID/stat`); `None`
/// if the process is not there.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count the
    // fields after its closing one. utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_nanos(
        (user + system).saturating_mul(1_000_000_000) / ticks,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = status_kb(std::process::id(), "VmRSS").unwrap();
        assert!(rss > 0);
        assert!(status_kb(std::process::id(), "NoSuchField").is_none());
        assert_eq!(status_mib(u32::MAX, "VmRSS"), 0.0);
    }

    #[test]
    fn a_thread_that_sleeps_is_counted_and_one_that_ends_takes_nothing_away() {
        let pid = std::process::id();
        let before = sleeps(pid).unwrap();
        // A thread that sleeps and ends: what it slept before is not subtracted later.
        std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(1)))
            .join()
            .unwrap();
        let (tid, own_before, own_after, all_after) = std::thread::spawn(move || {
            // `/proc/thread-self` links to `PID/task/TID`.
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
            let own_before = sleeps(pid).unwrap().of(tid).unwrap();
            for _ in 0..5 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            (
                tid,
                own_before,
                sleeps(pid).unwrap().of(tid).unwrap(),
                sleeps(pid).unwrap(),
            )
        })
        .join()
        .unwrap();
        assert!(
            own_after >= own_before + 5,
            "thread {tid}: {own_before}, then {own_after}"
        );
        assert!(
            all_after.since(&before) >= 5,
            "{:?} since {before:?}",
            all_after
        );
        assert!(sleeps(u32::MAX).is_none());
    }

    #[test]
    fn this_process_has_used_cpu_time_that_grows_with_work() {
        let before = cpu_time(std::process::id()).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_time(std::process::id()).unwrap();
        assert!(after > before, "{before:?} then {after:?}");
        assert!(cpu_time(u32::MAX).is_none());
    }
}
