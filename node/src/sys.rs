//! This process's (or another's) resident memory, from `/proc/PID/status` (Linux):
//! what `node-bench` and the tests report and bound.

/// A `kB` line of `/proc/PID/status`, e.g. `VmRSS` (resident now) or `VmHWM` (peak), in
/// KiB; `None` if the process or the line is not there.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `status_kb` in MiB, 0 if unknown.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    status_kb(pid, field).unwrap_or(0) as f64 / 1024.0
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
}
