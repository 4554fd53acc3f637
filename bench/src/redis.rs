//! The yardstick (optional): Redis answering one client's `INCR`s, one at a time
//! (`redis-benchmark -c 1 -P 1 -t incr`), measured in the same run as our calls, so the
//! two latencies meet the same machine: in memory (beside our calls) and with AOF
//! `always`, each `INCR` fsync'd before its answer (beside our durable changes). Needs `redis-server` and `redis-benchmark`
//! (Debian: `redis-server`, `redis-tools`); without them, or if Redis fails, the
//! figure is left out and the output says so.
//!
//! Our timed client sleeps between a call and its answer, as `redis-benchmark` does
//! (`NODE_BUSY_POLL_US` in its environment can make it spin).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node::CommandError;
use tokio::time::Instant;

use super::nodes::free_port;

/// `INCR`s timed in memory.
pub(crate) const REQUESTS: u32 = 20_000;

/// A `redis-server` of our own, killed when dropped.
pub(crate) struct Server(Child);

impl Server {
    /// Starts `redis-server` on a free loopback port with `extra` arguments, and waits
    /// until it listens; returns it with its port.
    pub(crate) async fn start(extra: &[&str]) -> Result<(Server, u16), CommandError> {
        let port = free_port()?;
        let port_arg = port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port_arg, "--bind", "127.0.0.1", "--save", ""])
            .args(["--daemonize", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| CommandError::Local(format!("cannot start redis-server: {e}")))?;
        let mut server = Server(child);
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            if let Ok(Some(status)) = server.0.try_wait() {
                return Err(CommandError::Local(format!(
                    "redis-server exited at once ({status})"
                )));
            }
            if Instant::now() > deadline {
                return Err(CommandError::Local(format!(
                    "redis-server did not listen on {addr} within 10 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((server, port))
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `program` runs (`program --version`).
pub(crate) fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How Redis keeps what it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keeping {
    /// In memory only (`--appendonly no`).
    Memory,
    /// Appended to its AOF and fsync'd before each answer (`--appendfsync always`), in a
    /// directory of its own that is removed afterwards.
    AofAlways,
}

/// Redis's one-client `INCR` p50 over `requests` in microseconds, or `None` where Redis
/// is not installed.
pub(crate) async fn incr_p50_us(
    keeping: Keeping,
    requests: u32,
) -> Result<Option<f64>, CommandError> {
    if !installed("redis-server") || !installed("redis-benchmark") {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("node-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CommandError::Local(format!("cannot create {}: {e}", dir.display())))?;
    let p50 = timed(keeping, requests, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    p50
}

async fn timed(
    keeping: Keeping,
    requests: u32,
    dir: &std::path::Path,
) -> Result<Option<f64>, CommandError> {
    let dir_arg = dir.display().to_string();
    let args: &[&str] = match keeping {
        Keeping::Memory => &["--appendonly", "no"],
        Keeping::AofAlways => &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            &dir_arg,
        ],
    };
    let (_server, port) = Server::start(args).await?;
    let port = port.to_string();
    let output = tokio::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            "1",
            "-P",
            "1",
            "-t",
            "incr",
        ])
        .args(["-n", &requests.to_string(), "--csv"])
        .output()
        .await
        .map_err(|e| CommandError::Local(format!("cannot run redis-benchmark: {e}")))?;
    if !output.status.success() {
        return Err(CommandError::Local(format!(
            "redis-benchmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    parse_p50_us(&text)
        .map(Some)
        .ok_or_else(|| CommandError::Local(format!("unreadable redis-benchmark output: {text:?}")))
}

/// The p50 of the `INCR` line of `redis-benchmark --csv` (milliseconds), in µs.
fn parse_p50_us(csv: &str) -> Option<f64> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()?
        .split(',')
        .map(|f| f.trim_matches('"'))
        .collect();
    let column = header.iter().position(|&f| f == "p50_latency_ms")?;
    let row = lines.find(|l| l.starts_with("\"INCR\""))?;
    let ms: f64 = row.split(',').nth(column)?.trim_matches('"').parse().ok()?;
    Some(ms * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p50_is_read_from_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"INCR\",\"19193.86\",\"0.046\",\"0.024\",\"0.047\",\"0.063\",\"0.127\",\"4.927\"\n";
        let p50 = parse_p50_us(csv).unwrap();
        assert!((p50 - 47.0).abs() < 1e-9, "{p50}");
        assert_eq!(parse_p50_us("garbage"), None);
        assert_eq!(parse_p50_us(""), None);
    }
}
