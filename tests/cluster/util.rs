//! Test harness: start node processes on free ports, run client commands, and wait on
//! conditions with a deadline (never a fixed sleep).

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The cookie every test cluster uses.
pub const COOKIE: &str = "cluster-test-cookie";

/// The `node` binary cargo built for this test run.
pub fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_node"))
}

/// A port nobody listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind an ephemeral port")
        .port()
}

fn log_path(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}-{n}-{name}.log", std::process::id()))
}

/// One running node process; killed when dropped, its log printed if a test failed.
pub struct NodeProc {
    pub name: String,
    pub addr: String,
    pub child: Child,
    pub log: PathBuf,
}

impl NodeProc {
    /// Starts `node --name NAME --listen 127.0.0.1:PORT --cookie COOKIE EXTRA...`.
    pub fn start(name: &str, extra: &[&str]) -> NodeProc {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = log_path(name);
        let stderr = File::create(&log).expect("cannot create node log");
        let child = Command::new(node_bin())
            .args(["--name", name, "--listen", &addr, "--cookie", COOKIE])
            .args(extra)
            .env("RUST_LOG", "info,ractor_cluster=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("cannot start node");
        NodeProc {
            name: name.to_string(),
            addr,
            child,
            log,
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal with the system's `kill` (no unsafe code in tests).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, at most `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = &mut self.child;
        wait_for(&format!("{} to exit", self.name), timeout, || {
            match child.try_wait() {
                Ok(Some(status)) => Ok(status.code()),
                Ok(None) => Err("still running".to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- last log lines of {} ----", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A coordinator and workers, each its own process.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
}

impl Cluster {
    /// Starts `coordinator`, then `worker-1..=workers` joining the coordinator, each with
    /// `extra` arguments.
    pub fn start(workers: usize, extra: &[&str]) -> Cluster {
        let coordinator =
            NodeProc::start("coordinator", &[&["--role", "coordinator"], extra].concat());
        let seed = coordinator.addr.clone();
        let mut nodes = vec![coordinator];
        for i in 1..=workers {
            let name = format!("worker-{i}");
            nodes.push(NodeProc::start(
                &name,
                &[&["--join", seed.as_str()], extra].concat(),
            ));
        }
        Cluster { nodes }
    }

    /// Waits until a collection through node `via` sees `nodes` nodes and `counters`
    /// counters, complete.
    pub fn wait_complete(&self, via: usize, nodes: u64, counters: u64) -> Value {
        let addr = &self.nodes[via].addr;
        wait_for(
            &format!("a complete view of {nodes} nodes and {counters} counters via {addr}"),
            Duration::from_secs(20),
            || {
                let s = stats(addr)?;
                let seen = (
                    s["num_nodes"].as_u64(),
                    s["num_counters"].as_u64(),
                    s["complete"].as_bool(),
                );
                if seen == (Some(nodes), Some(counters), Some(true)) {
                    Ok(s)
                } else {
                    Err(format!("saw (nodes, counters, complete) = {seen:?}"))
                }
            },
        )
    }
}

impl Cluster {
    /// Waits until *every* node's own collection is complete: the mesh is full.
    pub fn wait_mesh(&self, counters: u64) -> Value {
        let n = self.nodes.len() as u64;
        let mut last = Value::Null;
        for via in 0..self.nodes.len() {
            last = self.wait_complete(via, n, counters);
        }
        last
    }
}

/// Runs `node ARGS... --cookie COOKIE` as a client and returns its output.
pub fn client(args: &[&str]) -> Output {
    Command::new(node_bin())
        .args(args)
        .args(["--cookie", COOKIE])
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot run the node client")
}

/// `node stats --json` through `addr`, parsed.
pub fn stats(addr: &str) -> Result<Value, String> {
    let out = client(&["stats", "--json", "--join", addr]);
    if !out.status.success() {
        return Err(format!(
            "stats exited with {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("stats printed invalid JSON: {e}"))
}

/// A successful client command's stdout, trimmed; panics with its stderr otherwise.
pub fn client_ok(args: &[&str]) -> String {
    let out = client(args);
    assert!(
        out.status.success(),
        "`node {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Retries `check` until it returns `Ok` or `timeout` passes; then panics with `what`
/// and the last error.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        }
    }
}
