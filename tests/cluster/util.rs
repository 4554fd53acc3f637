//! Test harness: start node processes on free ports, run client commands, and wait on
//! conditions with a deadline (never a fixed sleep).

use std::fs::File;
use std::path::{Path, PathBuf};
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

/// A port nobody listens on right now, and no other node of this test run was given.
pub fn free_port() -> u16 {
    node::unused_loopback_port().expect("cannot pick a loopback port")
}

/// A path under cargo's temporary directory unique to this test process, ending in
/// `name` and `suffix`.
fn temp_path(name: &str, suffix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{}-{n}-{name}{suffix}", std::process::id()))
}

fn log_path(name: &str) -> PathBuf {
    temp_path(name, ".log")
}

/// A fresh data dir for node `name` (not created: the node creates it).
pub fn data_dir(name: &str) -> PathBuf {
    temp_path(name, ".data")
}

/// One running node process; killed when dropped, its log printed if a test failed.
pub struct NodeProc {
    pub name: String,
    pub addr: String,
    pub child: Child,
    pub log: PathBuf,
    /// The data dir the harness gave it (kept across [`NodeProc::restart`], removed
    /// when dropped), unless the test gave its own or `--memory-only`.
    pub data_dir: Option<PathBuf>,
    /// The full argument list, for [`NodeProc::restart`].
    args: Vec<String>,
    /// A command prefix (e.g. `ip netns exec NS`), if any.
    prefix: Vec<String>,
}

impl NodeProc {
    /// Starts `node --name NAME --listen 127.0.0.1:PORT --cookie COOKIE EXTRA...`.
    pub fn start(name: &str, extra: &[&str]) -> NodeProc {
        let addr = format!("127.0.0.1:{}", free_port());
        Self::start_at(name, &addr, extra, &[])
    }

    /// Starts a node listening on `addr`, run through `prefix` if not empty (e.g.
    /// `ip netns exec NS`, or `env NODE_COOKIE=...`). Without a cookie of its own in
    /// `extra` or `prefix`, the node gets `--cookie COOKIE`.
    ///
    /// A node given `--data-slots` in `extra` names itself after its slot: `name` is
    /// then only the label of its log, and it gets neither `--name` nor a data dir.
    pub fn start_at(name: &str, addr: &str, extra: &[&str], prefix: &[&str]) -> NodeProc {
        let slotted = extra.contains(&"--data-slots");
        let mut args: Vec<String> = ["--listen", addr].iter().map(|s| s.to_string()).collect();
        if !slotted {
            args.extend(["--name".to_string(), name.to_string()]);
        }
        let own_cookie = extra.iter().any(|a| a.starts_with("--cookie"))
            || prefix.iter().any(|a| a.starts_with("NODE_COOKIE"));
        if !own_cookie {
            args.extend(["--cookie".to_string(), COOKIE.to_string()]);
        }
        let own_store = slotted
            || extra
                .iter()
                .any(|a| a.starts_with("--data-dir") || *a == "--memory-only");
        let data_dir = (!own_store).then(|| data_dir(name));
        if let Some(dir) = &data_dir {
            args.extend(["--data-dir".to_string(), dir.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        let log = log_path(name);
        let child = spawn_node(&prefix, &args, &log);
        NodeProc {
            name: name.to_string(),
            addr: addr.to_string(),
            child,
            log,
            data_dir,
            args,
            prefix,
        }
    }

    /// Kills the process (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the node again with the same name, address and arguments (a new
    /// incarnation); the log continues in a new file.
    pub fn restart(&mut self) {
        self.kill();
        self.log = log_path(&self.name);
        self.child = spawn_node(&self.prefix, &self.args, &self.log);
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the node's log mentions `needle`.
    pub fn wait_for_log(&self, what: &str, needle: &str, timeout: Duration) {
        wait_for(what, timeout, || {
            let log = self.log();
            (lines_with(&log, needle) > 0).then_some(()).ok_or(log)
        });
    }

    /// Sends a signal with the system's `kill` (no unsafe code in tests).
    ///
    /// `STOP` returns once every thread of the process has stopped, `CONT` once none
    /// is stopped: the kernel stops a process only when its threads next pass through
    /// their signal handling, and on a busy machine a thread may first run on for a
    /// while (long enough to answer a request sent right after `kill` returned). A
    /// prefix the node is started through must exec it (as `env` and `ip netns exec`
    /// do), so that the child is the node itself.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} failed");
        let want_stopped = match signal {
            "STOP" => true,
            "CONT" => false,
            _ => return,
        };
        wait_for(
            &format!("{} to be {signal}ped", self.name),
            Duration::from_secs(10),
            || {
                // The process's own state: a thread of it may show `X` as it exits.
                let own = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                assert!(
                    !matches!(state_of(&own), None | Some('Z' | 'X')),
                    "{} has exited",
                    self.name
                );
                let states = thread_states(pid);
                // `t`: stopped by a debugger that traces it.
                let stopped = states.iter().filter(|s| matches!(s, 'T' | 't')).count();
                let done = if want_stopped {
                    !states.is_empty() && stopped == states.len()
                } else {
                    stopped == 0
                };
                done.then_some(())
                    .ok_or(format!("thread states {states:?}"))
            },
        );
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
        } else if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn spawn_node(prefix: &[String], args: &[String], log: &PathBuf) -> Child {
    let stderr = File::create(log).expect("cannot create node log");
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(node_bin());
            c
        }
        None => Command::new(node_bin()),
    };
    command
        .args(args)
        .env("RUST_LOG", "info,ractor_cluster=error")
        // Whatever the person running the tests has set must not leak in.
        .env_remove("NODE_COOKIE")
        .env_remove("NODE_COOKIE_FILE")
        .env_remove("NODE_DATA_DIR")
        .env_remove("NODE_DATA_SLOTS")
        .env_remove("NODE_NAME")
        .env_remove("NODE_HTTP")
        .env_remove("NODE_HTTP_TOKEN")
        .env_remove("NODE_HTTP_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("cannot start node")
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

    /// Starts `names[0]` as the coordinator and the others joining it, each with an HTTP
    /// side on its own loopback port and `extra` arguments; returns the cluster and the
    /// nodes' HTTP addresses, in the same order. (Does not wait for the mesh.)
    pub fn start_with_http(names: &[&str], extra: &[&str]) -> (Cluster, Vec<String>) {
        let mut nodes: Vec<NodeProc> = Vec::new();
        let mut https = Vec::new();
        for name in names {
            let http = format!("127.0.0.1:{}", free_port());
            let seed = nodes.first().map(|n| n.addr.clone());
            let mut args = vec!["--http", http.as_str()];
            match &seed {
                None => args.extend(["--role", "coordinator"]),
                Some(seed) => args.extend(["--join", seed.as_str()]),
            }
            args.extend_from_slice(extra);
            nodes.push(NodeProc::start(name, &args));
            https.push(http);
        }
        (Cluster { nodes }, https)
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
        .env_remove("NODE_COOKIE_FILE")
        .output()
        .expect("cannot run the node client")
}

/// `node stats --json` through `addr`, parsed.
pub fn stats(addr: &str) -> Result<Value, String> {
    stats_within(addr, "1")
}

/// `node stats --json --deadline SECS` through `addr`, parsed.
pub fn stats_within(addr: &str, deadline_secs: &str) -> Result<Value, String> {
    let out = client(&[
        "stats",
        "--json",
        "--deadline",
        deadline_secs,
        "--join",
        addr,
    ]);
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

/// The entry for node `name` in a collection.
pub fn node_entry<'a>(stats: &'a Value, name: &str) -> Option<&'a Value> {
    stats["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

/// Like [`wait_for`] but polling steadily (every 20 ms), and also returns how long it
/// took: for measuring how soon something happens.
pub fn time_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return (value, started.elapsed()),
            Err(last) if started.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Serialises the tests that measure detection and recovery times, so that they do
/// not compete with each other for the machine's two cores.
pub fn timing_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    node::status_mib(pid, "VmRSS")
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    node::status_mib(pid, "VmHWM")
}

/// Lines of `log` that mention `needle`.
pub fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Serialises the tests that run a cluster client inside the test process: process
/// groups are process-global, so two such clients would see each other's peers.
pub fn in_process_client_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the other end has closed `stream` (a read sees the end, or a reset).
pub fn is_closed(mut stream: &std::net::TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut buf = [0u8; 256];
    loop {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// The state letter (`R`, `S`, `T`, ...) of each thread of process `pid`, from
/// `/proc/PID/task/*/stat`; empty if the process is gone.
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            state_of(&stat)
        })
        .collect()
}

/// The state letter in a `/proc/.../stat` line: after the command name, which is in
/// parentheses.
fn state_of(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `n` connections to `addr` kept open by a thread of their own, each reopened (with
/// `open`) as soon as the other end closes it: a flood that holds places and renews
/// them. Stops when [`Flood::stop`] is called, which says how many it reopened.
pub struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Flood {
    /// Starts the flood.
    pub fn start(addr: &str, n: usize, open: fn(&str) -> Option<std::net::TcpStream>) -> Flood {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (addr, flag) = (addr.to_string(), std::sync::Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut held: Vec<Option<std::net::TcpStream>> = (0..n).map(|_| open(&addr)).collect();
            let mut reopened = 0u64;
            while !flag.load(Ordering::Relaxed) {
                for slot in &mut held {
                    if slot.as_ref().is_none_or(is_closed) {
                        *slot = open(&addr);
                        reopened += 1;
                    }
                }
                // The pace of the renewal, not a wait for anything.
                std::thread::sleep(Duration::from_millis(5));
            }
            reopened
        });
        Flood { stop, thread }
    }

    /// Stops the flood; returns how many connections it reopened.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the flood thread")
    }
}

/// Runs `program` with `args` (for the container tests' `docker` and Compose commands).
#[allow(dead_code)] // the container tests' (compose, swarm)
pub fn run_program(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// The stdout of a command that must have succeeded (trimmed); `what` names it when it
/// did not, with its output.
#[allow(dead_code)] // the container tests' (compose, swarm)
pub fn succeeded(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A figure of a collection as an integer (the wide ones come as strings).
pub fn figure(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// What every node of collection `s` applied from sender `name`: (value, operations).
pub fn applied_from(s: &Value, name: &str) -> (i128, i128) {
    let (mut value, mut operations) = (0i128, 0i128);
    for receiver in s["nodes"].as_array().into_iter().flatten() {
        for from in receiver["received"].as_array().into_iter().flatten() {
            if from["sender"] == name {
                value += figure(&from["value"]).unwrap_or(0);
                operations += figure(&from["operations"]).unwrap_or(0);
            }
        }
    }
    (value, operations)
}

/// A CA and certificates made by the project's script, in a temporary directory.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Certificates for `names` (see `scripts/make-certs.sh`).
    pub fn make(names: &[&str]) -> Certs {
        Self::make_with_san(names, "")
    }

    /// [`Certs::make`], each certificate also naming `san` (the script's `SAN`, where
    /// `{}` stands for each name).
    pub fn make_with_san(names: &[&str], san: &str) -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-certs.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .args(names)
            .env("SAN", san)
            .output()
            .expect("cannot run bash");
        assert!(
            out.status.success(),
            "scripts/make-certs.sh failed (the TLS tests need openssl): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs { dir }
    }

    /// The directory they are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of one of them.
    pub fn path(&self, file: &str) -> String {
        let path: PathBuf = self.dir.path().join(file);
        path.to_str().unwrap().to_string()
    }

    /// `--tls-cert NAME.pem --tls-key NAME-key.pem --tls-ca ca.pem`.
    pub fn args(&self, name: &str) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path(&format!("{name}.pem")),
            "--tls-key".into(),
            self.path(&format!("{name}-key.pem")),
            "--tls-ca".into(),
            self.path("ca.pem"),
        ]
    }
}
