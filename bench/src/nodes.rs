//! Real node processes for `node-bench`: the `node` binary beside this one, started
//! once per node on loopback, with its log in a file, killed when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use node::status_mib;
use node::CommandError;

/// Starts `command` with its log (appended to) in `log`.
fn spawn(command: &mut Command, name: &str, log: &Path) -> Result<Child, CommandError> {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| CommandError::Local(format!("cannot create {}: {e}", log.display())))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| CommandError::Local(format!("cannot start node {name}: {e}")))
}

/// Nodes started so far in this run (each gets its own data dir).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// One running node process.
pub(crate) struct BenchNode {
    /// Node name.
    pub(crate) name: String,
    /// `127.0.0.1:PORT` it listens on.
    pub(crate) addr: String,
    /// Where its log goes.
    pub(crate) log: PathBuf,
    child: Child,
    /// How it was started (for [`BenchNode::kill_and_restart`]).
    command: Vec<std::ffi::OsString>,
    /// Its data dir (none with `--memory-only`).
    data: Option<PathBuf>,
}

impl BenchNode {
    /// Starts `node --name NAME --listen ADDR --counters N [--join SEED]` with no load
    /// and no periodic collections (they would compete with what is measured).
    pub(crate) fn start(
        dir: &Path,
        name: &str,
        counters: u32,
        join: Option<&str>,
    ) -> Result<Self, CommandError> {
        Self::start_with(dir, name, counters, join, &[])
    }

    /// [`BenchNode::start`] with `extra` arguments.
    pub(crate) fn start_with(
        dir: &Path,
        name: &str,
        counters: u32,
        join: Option<&str>,
        extra: &[&str],
    ) -> Result<Self, CommandError> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(node_binary()?);
        command
            .args(extra)
            .args(["--name", name, "--listen", &addr])
            .args(["--counters", &counters.to_string()])
            .env_remove("NODE_COOKIE")
            .env_remove("NODE_DATA_DIR")
            .env("RUST_LOG", "warn");
        // No load and no periodic collections unless asked for: they would compete
        // with what is measured.
        if !extra.contains(&"--stats-interval") {
            command.args(["--stats-interval", "3600"]);
        }
        if !extra.contains(&"--load") {
            command.args(["--load", "0"]);
        }
        let mut data = None;
        if !extra.contains(&"--memory-only") {
            // A fresh store for every node started, in the run's own directory.
            let n = STARTED.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{name}-{n}.data"));
            command.arg("--data-dir").arg(&path);
            data = Some(path);
        }
        match join {
            Some(seed) => command.args(["--join", seed]),
            None => command.args(["--role", "coordinator"]),
        };
        let child = spawn(&mut command, name, &log)?;
        let command = std::iter::once(command.get_program().to_owned())
            .chain(command.get_args().map(ToOwned::to_owned))
            .collect();
        Ok(Self {
            name: name.to_string(),
            addr,
            log,
            child,
            command,
            data,
        })
    }

    /// Its data dir (none with `--memory-only`).
    pub(crate) fn data_dir(&self) -> Option<PathBuf> {
        self.data.clone()
    }

    /// Kills the process (SIGKILL) and starts it again with the same arguments (the
    /// same address and data dir).
    pub(crate) fn kill_and_restart(&mut self) -> Result<(), CommandError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut command = Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .env_remove("NODE_COOKIE")
            .env_remove("NODE_DATA_DIR")
            .env("RUST_LOG", "warn");
        self.child = spawn(&mut command, &self.name, &self.log)?;
        Ok(())
    }

    /// Kills the process (SIGKILL) and waits for it to be gone.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again with the same arguments (the same address and data
    /// dir), killing it first if it still runs.
    pub(crate) fn restart(&mut self) -> Result<(), CommandError> {
        self.kill_and_restart()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) with the system's `kill`.
    pub(crate) fn signal(&self, signal: &str) -> Result<(), CommandError> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .map_err(|e| CommandError::Local(format!("cannot run kill: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(CommandError::Local(format!(
                "kill -{signal} {} failed ({status})",
                self.name
            )))
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's current resident memory, in MiB.
    pub(crate) fn rss_mb(&self) -> f64 {
        status_mib(self.child.id(), "VmRSS")
    }

    /// The process's peak resident memory, in MiB.
    pub(crate) fn peak_rss_mb(&self) -> f64 {
        status_mib(self.child.id(), "VmHWM")
    }

    /// Fails with a pointer to the log if the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<(), CommandError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(CommandError::Local(format!(
                "node {} exited ({status}); see {}",
                self.name,
                self.log.display()
            ))),
            Err(e) => Err(CommandError::Local(format!("node {}: {e}", self.name))),
        }
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `node` binary: beside this one (cargo builds both into the same directory).
fn node_binary() -> Result<PathBuf, CommandError> {
    let me = std::env::current_exe()
        .map_err(|e| CommandError::Local(format!("cannot find this program: {e}")))?;
    let node = me.with_file_name(format!("node{}", std::env::consts::EXE_SUFFIX));
    if node.is_file() {
        Ok(node)
    } else {
        Err(CommandError::Local(format!(
            "{} is missing: build it with `cargo build --release` (it builds node and node-bench)",
            node.display()
        )))
    }
}

/// A loopback port nobody is listening on right now, and no other node of this run
/// was given.
pub(crate) fn free_port() -> Result<u16, CommandError> {
    node::unused_loopback_port()
        .map_err(|e| CommandError::Local(format!("no free loopback port: {e}")))
}
