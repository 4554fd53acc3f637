//! The process's async runtime: how many worker threads run the actors, and the busy
//! poll that keeps a worker awake for a moment after the network spoke.
//!
//! | module | owns |
//! | --- | --- |
//! | [`busy_poll`] | the spin window (a pure core on a fake clock), the task that spins, the reader wrapper that reports traffic, and the counted `spawn_blocking` the spin gives way to |
//! | [`calibrate`] | whether a busy poll pays on this machine, measured at start and every minute |
//!
//! **Why one worker and a busy poll.** Per message, this node's time on a virtual
//! machine goes mostly to waking threads: a thread that sleeps in `epoll_wait` or on a
//! futex gives its vCPU back, the vCPU halts, and waking it is an interrupt through the
//! hypervisor (tens of microseconds, paid by the waker as well as the woken). A call
//! that crosses several tasks on two worker threads wakes a thread at every hand-off
//! between them. So by default a node runs every actor on **one worker thread** (the
//! disk's fsyncs go to tokio's blocking pool, through [`busy_poll::spawn_blocking`], and a
//! spin gives way to them), and after each read from a
//! cluster connection that worker **polls for [`RuntimeOptions::busy_poll`]** before it
//! sleeps: a request or answer that arrives meanwhile is picked up without waking
//! anything. Erlang's schedulers do the same by default (`+sbwt`). An idle node does
//! not spin: only traffic starts a window, and the window ends that long after the last
//! read. Whether the spin pays depends on the machine: on a VM that packs threads onto
//! few vCPUs it holds the vCPU the other side needs, and costs as much as it saves
//! elsewhere. So by default (`auto`) each program measures it as it starts, beside its
//! work ([`calibrate`]), and spins only once a measure says it pays. Commits that
//! clients wait for, one closely after another, are the exception: the worker spins for
//! a moment after each, whatever the measure said (see [`busy_poll`]), because there
//! the wake-up it saves is a tenth of a durable change, for no more CPU.
//! `BENCHMARKS.md` has the measurements; `--busy-poll-us 0` and `--worker-threads N`
//! restore a plain multi-threaded runtime.
//!
//! Every program of this crate (the node, its client commands, `node-bench`) runs its
//! work through [`run`], which also keeps that work off the thread that blocks on it:
//! a future polled by `block_on` runs on the main thread, and every message between it
//! and the actors would wake another thread.

pub(crate) mod busy_poll;
pub(crate) mod calibrate;

use std::future::Future;
use std::time::Duration;

/// The default busy-poll window after a read from a cluster connection.
pub(crate) const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

/// The longest busy-poll window accepted.
pub(crate) const MAX_BUSY_POLL_US: u64 = 10_000;

/// Environment variable with the worker threads (all programs; the node's
/// `--worker-threads` reads it too).
pub(crate) const WORKER_THREADS_ENV: &str = "NODE_WORKER_THREADS";

/// Environment variable with the busy poll, `auto` or a window in microseconds (all
/// programs; the node's `--busy-poll-us` reads it too).
pub(crate) const BUSY_POLL_ENV: &str = "NODE_BUSY_POLL_US";

/// The busy poll asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyPoll {
    /// Spin for [`DEFAULT_BUSY_POLL`] if a measure at start says it pays here.
    Auto,
    /// Spin this long after each read (zero: never).
    Window(Duration),
}

/// How the runtime is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Threads that run tasks and actors (tokio's workers; blocking work has its own).
    pub worker_threads: usize,
    /// How long a worker keeps polling after a read from a cluster connection.
    pub busy_poll: BusyPoll,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            worker_threads: 1,
            busy_poll: BusyPoll::Auto,
        }
    }
}

impl RuntimeOptions {
    /// The defaults, with `busy_poll` as the busy poll, overridden by
    /// [`WORKER_THREADS_ENV`] and [`BUSY_POLL_ENV`] where they are set (for client
    /// programs, which have no flags for it).
    pub fn from_env(busy_poll: BusyPoll) -> Result<Self, String> {
        let mut options = Self {
            busy_poll,
            ..Self::default()
        };
        if let Ok(text) = std::env::var(WORKER_THREADS_ENV) {
            options.worker_threads = parse_worker_threads(&text)?;
        }
        if let Ok(text) = std::env::var(BUSY_POLL_ENV) {
            options.busy_poll = parse_busy_poll(&text)?;
        }
        Ok(options)
    }
}

/// Parses a worker thread count: 1 to 256.
pub(crate) fn parse_worker_threads(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n @ 1..=256) => Ok(n),
        _ => Err(format!(
            "worker threads must be a whole number from 1 to 256, not {text:?}"
        )),
    }
}

/// Parses a busy poll: `auto`, or a window in microseconds, 0 (off) to
/// [`MAX_BUSY_POLL_US`].
pub(crate) fn parse_busy_poll(text: &str) -> Result<BusyPoll, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(BusyPoll::Auto);
    }
    match text.trim().parse::<u64>() {
        Ok(us) if us <= MAX_BUSY_POLL_US => Ok(BusyPoll::Window(Duration::from_micros(us))),
        _ => Err(format!(
            "the busy poll must be `auto` or a whole number of microseconds from 0 to \
             {MAX_BUSY_POLL_US}, not {text:?}"
        )),
    }
}

/// Builds the runtime, starts its busy poll (unless off), runs `work` on it (on a
/// worker, not on this thread) and returns its output. Tasks still running when `work`
/// ends are dropped, not waited for.
pub fn run<F>(options: RuntimeOptions, work: F) -> std::io::Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.worker_threads)
        .enable_all()
        .build()?;
    match options.busy_poll {
        BusyPoll::Window(window) if window.is_zero() => {}
        BusyPoll::Window(window) => busy_poll::start(&runtime, window, true),
        BusyPoll::Auto => {
            // Off until the first measure, which runs beside the work (see calibrate).
            busy_poll::start(&runtime, DEFAULT_BUSY_POLL, false);
            let watching = calibrate::spawn_watch(DEFAULT_BUSY_POLL, |on, measured| {
                busy_poll::enable(on);
                // The first verdict is the program's to report (a node logs it once it
                // has started and it is in: one that refuses to start says only why).
                match measured {
                    None => tracing::warn!("busy poll: cannot measure whether it pays; off"),
                    Some(m) => tracing::debug!(
                        on,
                        round_trip_asleep_ns = m.sleeping.as_nanos() as u64,
                        round_trip_spinning_ns = m.spinning.as_nanos() as u64,
                        cpus = ?m.cpus,
                        "busy poll: measured"
                    ),
                }
            });
            if let Err(error) = watching {
                tracing::warn!(%error, "busy poll: cannot measure whether it pays; off");
            }
        }
    }
    let handle = runtime.spawn(work);
    let output = runtime.block_on(handle);
    runtime.shutdown_background();
    output.map_err(|e| {
        // A panic in `work` was already printed by the panic hook.
        std::io::Error::other(format!("the program's main task failed: {e}"))
    })
}
