//! Busy polling after network traffic (see [the runtime](super) for why).
//!
//! Every read that brings bytes from a cluster connection goes through [`Noted`], which
//! counts it and, if nothing is spinning, wakes the spinner. The spinner is one task: it
//! yields to every other task and lets the runtime poll its sockets without sleeping,
//! again and again, until its [`SpinWindow`] has seen no read for the whole window; then
//! it waits for the next read like any idle task, and the worker sleeps. A yielded task
//! runs again only once the worker has nothing else to run, so a spin never delays
//! work: it fills the worker's idle moments.
//!
//! While blocking work runs ([`spawn_blocking`]: a commit and its fsync), the spinner
//! also gives its thread's CPU back to the operating system on every turn. On two vCPUs
//! a spinning worker and a spinning client left a commit's thread waiting for a CPU,
//! and a durable change took a whole window longer (BENCHMARKS.md). Yielding the
//! thread on every turn regardless cost calls and one-message-per-operation pushes.
//!
//! **A client waiting on a commit** ([`spawn_awaited`]) keeps the spinner spinning
//! (yielding its thread on every turn) until the commit has reported back, for at most
//! [`AWAITED_SPIN_LONGEST`], and [`AFTER_AWAITED`] after, whether reads start spins or
//! not: the commit's report then finds the worker awake, the client's answer leaves
//! without a wake-up, and so does its next change if it follows at once. On a VM
//! whose idle vCPUs halt, that wake-up and the one before it made a durable change take
//! a third longer than Redis's (BENCHMARKS.md). Only commits a client waits for do this,
//! so the traffic between nodes, committed every group interval, costs no spinning.
//!
//! **The window adapts**, as the kernel's haltpoll governs its guest poll: a spin's
//! window is [`SpinLength`], which grows (doubling, up to the configured window) while
//! reads keep arriving soon after a spin gave up, when a longer spin would have caught
//! them, and shrinks (halving, down to no spin at all) while reads arrive later than the
//! longest spin could wait. So request-and-answer traffic gets the whole window, and a
//! trickle (a few hundred reads a second, milliseconds apart) costs no spinning: a host
//! running many quiet nodes does not spend a core per node on spins that find nothing.
//!
//! The spinner is one per process (the runtime that [`start`]ed it); [`Noted`] is a
//! no-op where none was started (tests, other runtimes) and while it is off
//! ([`enable`]: with `auto`, until a measure says spinning pays).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

/// When a spin ends: `window` after the last activity it saw. A pure core: driven by
/// the activity count and the time it is handed.
#[derive(Debug, Clone)]
pub(crate) struct SpinWindow {
    window: Duration,
    seen: u64,
    until: Instant,
}

impl SpinWindow {
    /// A spin starting at `now`, with the activity count at `activity`.
    pub(crate) fn start(window: Duration, activity: u64, now: Instant) -> Self {
        Self {
            window,
            seen: activity,
            until: now + window,
        }
    }

    /// The activity count it last saw.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// One turn of the spin, with the activity count and the time now: whether to go
    /// on spinning. New activity moves the end to `window` from now.
    pub(crate) fn go_on(&mut self, activity: u64, now: Instant) -> bool {
        if activity != self.seen {
            self.seen = activity;
            self.until = now + self.window;
        }
        now < self.until
    }
}

/// The longest the spinner spins for one commit a client waits for: a disk slower than
/// this pays one thread's wake-up on top, a small part of its sync.
pub(crate) const AWAITED_SPIN_LONGEST: Duration = Duration::from_millis(1);

/// How long the spinner goes on after a commit a client waited for has reported back:
/// the client's answer is on its way, and its next change comes one round trip later.
pub(crate) const AFTER_AWAITED: Duration = super::DEFAULT_BUSY_POLL;

/// Blocking work a client waits for, as the spinner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Awaited {
    /// Running now.
    pub(crate) running: usize,
    /// Since the last of it started.
    pub(crate) since_start: Duration,
    /// Since the last of it ended.
    pub(crate) since_end: Duration,
}

impl Awaited {
    /// Whether it keeps a spin going: running for less than [`AWAITED_SPIN_LONGEST`], or
    /// ended less than [`AFTER_AWAITED`] ago. A pure core.
    pub(crate) fn keeps_spinning(&self) -> bool {
        if self.running > 0 {
            self.since_start < AWAITED_SPIN_LONGEST
        } else {
            self.since_end < AFTER_AWAITED
        }
    }
}

/// The shortest spin worth starting: below it, none.
const SHORTEST_SPIN: Duration = Duration::from_micros(10);

/// How long the next spin lasts, adapted to how soon reads follow the spins' ends. A
/// pure core: driven by the silences it is told of.
#[derive(Debug, Clone)]
pub(crate) struct SpinLength {
    current: Duration,
    longest: Duration,
}

impl SpinLength {
    /// Spins of at most `longest`, starting at that.
    pub(crate) fn new(longest: Duration) -> Self {
        Self {
            current: longest,
            longest,
        }
    }

    /// The next spin's window (zero: no spin).
    pub(crate) fn current(&self) -> Duration {
        self.current
    }

    /// A read came `silence` after the last spin gave up: within the longest window,
    /// a longer spin would have caught it (grow); beyond it, none could have (shrink).
    pub(crate) fn after_silence(&mut self, silence: Duration) {
        self.current = if silence <= self.longest {
            (self.current * 2).max(SHORTEST_SPIN).min(self.longest)
        } else {
            let halved = self.current / 2;
            if halved < SHORTEST_SPIN {
                Duration::ZERO
            } else {
                halved
            }
        };
    }
}

/// What [`Noted`] readers and the spinner share.
struct Spinner {
    /// Whether reads start spins (off until a measure says they pay, with
    /// `--busy-poll-us auto`).
    enabled: AtomicBool,
    /// Reads with bytes so far.
    activity: AtomicU64,
    /// Whether the spinner is spinning (then a read need not wake it).
    spinning: AtomicBool,
    /// Spins started so far.
    spins: AtomicU64,
    wake: Notify,
}

static SPINNER: OnceLock<Spinner> = OnceLock::new();

/// Blocking tasks started through [`spawn_blocking`] and not finished.
static BLOCKING: AtomicUsize = AtomicUsize::new(0);

/// Of them, those started through [`spawn_awaited`].
static AWAITED: AtomicUsize = AtomicUsize::new(0);

/// When the last of those started, and when the last ended (see [`since_start`]; 0:
/// never).
static AWAITED_STARTED: AtomicU64 = AtomicU64::new(0);
static AWAITED_ENDED: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds since this process first asked: a clock that fits in an atomic.
fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// tokio's `spawn_blocking`, counted: while the task runs, the spinner yields its
/// thread to the operating system on every turn, so the blocking thread does not wait
/// for a CPU behind it.
pub(crate) fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    spawn_counted(&BLOCKING, f)
}

/// [`spawn_blocking`] for work a client waits for (a commit holding a client's change):
/// the spinner, if there is one, spins until it is done (see the module documentation).
pub(crate) fn spawn_awaited<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    AWAITED_STARTED.store(since_start(), Ordering::Relaxed);
    // Counted from now, not from when a blocking thread takes it up: a spinner woken
    // below sees it at once.
    let awaited = Counted::new(&AWAITED);
    let task = spawn_counted(&BLOCKING, move || {
        let result = f();
        AWAITED_ENDED.store(since_start(), Ordering::Relaxed);
        drop(awaited);
        result
    });
    // SeqCst with the spinner's store-then-load, as for a read (see `note`).
    if let Some(spinner) = SPINNER.get() {
        if !spinner.spinning.load(Ordering::SeqCst) {
            spinner.wake.notify_one();
        }
    }
    task
}

/// One more in a count, for as long as it is held.
struct Counted(&'static AtomicUsize);

impl Counted {
    fn new(count: &'static AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Blocking work a client waits for, now.
fn awaited() -> Awaited {
    let now = since_start();
    let since = |at: &AtomicU64| match at.load(Ordering::Relaxed) {
        0 => Duration::MAX,
        at => Duration::from_nanos(now.saturating_sub(at)),
    };
    Awaited {
        running: AWAITED.load(Ordering::SeqCst),
        since_start: since(&AWAITED_STARTED),
        since_end: since(&AWAITED_ENDED),
    }
}

/// `spawn_blocking`, with `count` one higher until `f` has run, panicked, or been
/// dropped unrun.
fn spawn_counted<F, R>(count: &'static AtomicUsize, f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let running = Counted::new(count);
    tokio::task::spawn_blocking(move || {
        let _running = running;
        f()
    })
}

/// Blocking tasks started through [`spawn_blocking`] and still running.
pub(crate) fn blocking_running() -> usize {
    BLOCKING.load(Ordering::Relaxed)
}

/// Starts this process's spinner on `runtime`, with spins of `window` after the last
/// read, `enabled` or not (see [`enable`]). Once per process: the spinner belongs to the
/// first runtime it was started on (each program builds one, in [`super::run`]), and a
/// second call does nothing.
pub(crate) fn start(runtime: &tokio::runtime::Runtime, window: Duration, enabled: bool) {
    let mut fresh = false;
    let spinner = SPINNER.get_or_init(|| {
        fresh = true;
        Spinner {
            enabled: AtomicBool::new(enabled),
            activity: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
            spins: AtomicU64::new(0),
            wake: Notify::new(),
        }
    });
    if fresh {
        runtime.spawn(spin(spinner, window));
    }
}

/// Turns the spins on or off from now on (a spin under way runs to its end).
pub(crate) fn enable(on: bool) {
    if let Some(spinner) = SPINNER.get() {
        spinner.enabled.store(on, Ordering::Relaxed);
    }
}

/// Whether this process's reads start spins (false where there is no spinner).
pub fn enabled() -> bool {
    SPINNER
        .get()
        .is_some_and(|s| s.enabled.load(Ordering::Relaxed))
}

/// Notes a read that brought bytes.
fn note() {
    if let Some(spinner) = SPINNER.get().filter(|s| s.enabled.load(Ordering::Relaxed)) {
        // SeqCst with the spinner's own store-then-load: either the spinner sees this
        // read after it stops, or this read sees it stopped and wakes it.
        spinner.activity.fetch_add(1, Ordering::SeqCst);
        if !spinner.spinning.load(Ordering::SeqCst) {
            spinner.wake.notify_one();
        }
    }
}

/// Whether this process's spinner is spinning now (false where there is none).
#[cfg(test)]
pub(crate) fn spinning() -> bool {
    SPINNER
        .get()
        .is_some_and(|s| s.spinning.load(Ordering::SeqCst))
}

/// Spins this process's spinner has started (0 where there is none).
#[cfg(test)]
pub(crate) fn spins_started() -> u64 {
    SPINNER.get().map_or(0, |s| s.spins.load(Ordering::Relaxed))
}

async fn spin(spinner: &'static Spinner, window: Duration) {
    let mut length = SpinLength::new(window);
    let mut gave_up: Option<Instant> = None;
    loop {
        spinner.wake.notified().await;
        spinner.spinning.store(true, Ordering::SeqCst);
        spinner.spins.fetch_add(1, Ordering::Relaxed);
        if let Some(at) = gave_up {
            length.after_silence(at.elapsed());
        }
        // Reads extend a spin only while they start spins; otherwise this one is for
        // a commit a client waits for, and lasts as long as it does.
        let window = if spinner.enabled.load(Ordering::Relaxed) {
            length.current()
        } else {
            Duration::ZERO
        };
        let mut spin = SpinWindow::start(
            window,
            spinner.activity.load(Ordering::SeqCst),
            Instant::now(),
        );
        loop {
            // A blocking task (a commit) may be waiting for this CPU: it goes first.
            if blocking_running() > 0 {
                std::thread::yield_now();
            }
            // Back after every other task ready now has run and the sockets have been
            // polled (without sleeping: this task is ready again).
            tokio::task::yield_now().await;
            let window_open = spin.go_on(spinner.activity.load(Ordering::SeqCst), Instant::now());
            if window_open || awaited().keeps_spinning() {
                continue;
            }
            spinner.spinning.store(false, Ordering::SeqCst);
            // A read (or a commit a client waits for) between the last turn and that
            // store saw a spinner still spinning and woke nothing: it gets its spin now.
            let activity = spinner.activity.load(Ordering::SeqCst);
            if activity == spin.seen() && !awaited().keeps_spinning() {
                gave_up = Some(Instant::now());
                break;
            }
            spinner.spinning.store(true, Ordering::SeqCst);
            spin = SpinWindow::start(window, activity, Instant::now());
        }
    }
}

/// A reader whose reads with bytes start (or extend) a spin.
pub(crate) struct Noted<R>(pub(crate) R);

impl<R: AsyncRead + Unpin> AsyncRead for Noted<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.get_mut().0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            note();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn a_spin_lasts_the_window_after_the_last_activity() {
        let t0 = Instant::now();
        let mut spin = SpinWindow::start(100 * US, 7, t0);
        assert!(spin.go_on(7, t0 + 50 * US));
        assert!(spin.go_on(7, t0 + 99 * US));
        // Activity at 99 µs: the spin now lasts until 199 µs.
        assert!(spin.go_on(8, t0 + 99 * US));
        assert!(spin.go_on(8, t0 + 150 * US));
        assert!(spin.go_on(8, t0 + 198 * US));
        assert!(!spin.go_on(8, t0 + 199 * US));
    }

    /// A blocking task is counted while it runs, and no longer once it has returned
    /// or panicked.
    #[tokio::test]
    async fn blocking_tasks_are_counted_while_they_run() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let task = spawn_counted(&COUNT, move || wait.recv().is_ok());
        assert_eq!(COUNT.load(Ordering::Relaxed), 1);
        release.send(()).unwrap();
        assert!(task.await.unwrap());
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
        let panicked = spawn_counted(&COUNT, || panic!("on purpose"));
        assert!(panicked.await.is_err());
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn spins_grow_while_reads_follow_closely_and_stop_while_they_do_not() {
        let mut length = SpinLength::new(100 * US);
        assert_eq!(length.current(), 100 * US);
        // A trickle: reads milliseconds apart. Halved each time, then no spin at all.
        for expected_ns in [50_000, 25_000, 12_500, 0, 0] {
            length.after_silence(5_000 * US);
            assert_eq!(length.current(), Duration::from_nanos(expected_ns));
        }
        // Request and answer traffic: a read soon after the spin gave up. From the
        // shortest spin, doubled up to the configured window, and kept there.
        for expected in [10, 20, 40, 80, 100, 100] {
            length.after_silence(30 * US);
            assert_eq!(length.current(), expected * US);
        }
        // A read just within the longest window still grows it; one beyond shrinks it.
        length.after_silence(100 * US);
        assert_eq!(length.current(), 100 * US);
        length.after_silence(101 * US);
        assert_eq!(length.current(), 50 * US);
    }

    #[test]
    fn a_commit_a_client_waits_for_keeps_a_spin_going_while_it_runs_and_just_after() {
        let awaited = |running, since_start: u32, since_end: u32| Awaited {
            running,
            since_start: US * since_start,
            since_end: US * since_end,
        };
        // Running: up to the longest spin for one commit, then the spin gives up.
        assert!(awaited(1, 0, 5_000).keeps_spinning());
        assert!(awaited(1, 999, 5_000).keeps_spinning());
        assert!(!awaited(1, 1_000, 5_000).keeps_spinning());
        // Done: the answer's round trip more, for the client's next change.
        assert!(awaited(0, 150, 0).keeps_spinning());
        assert!(awaited(0, 150, 99).keeps_spinning());
        assert!(!awaited(0, 150, 100).keeps_spinning());
        // None yet.
        let never = Awaited {
            running: 0,
            since_start: Duration::MAX,
            since_end: Duration::MAX,
        };
        assert!(!never.keeps_spinning());
    }

    #[test]
    fn a_spin_without_activity_ends_after_one_window() {
        let t0 = Instant::now();
        let mut spin = SpinWindow::start(100 * US, 0, t0);
        assert!(spin.go_on(0, t0));
        assert!(!spin.go_on(0, t0 + 100 * US));
        assert!(!spin.go_on(0, t0 + 10_000 * US));
    }

    /// The spinner of this test process: reads start spins, and it stops (the worker
    /// may sleep) once reads stop. Real time, so deadlines are generous; spins are
    /// counted, so a spin is seen however briefly the test thread looks.
    #[test]
    fn reads_start_the_spinner_and_silence_stops_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Off at first, as while `auto` is measuring.
        start(&runtime, Duration::from_millis(20), false);
        runtime.block_on(async {
            let deadline = || Instant::now() + Duration::from_secs(5);
            let until = deadline();
            while spinning() {
                assert!(Instant::now() < until, "the spinner idle within 5 s");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let (mut a, b) = tokio::io::duplex(64);
            let mut reader = Noted(b);
            let mut byte = [0u8; 1];
            a.write_all(b"x").await.unwrap();
            reader.read_exact(&mut byte).await.unwrap();
            // The read was not even counted, so nothing can have woken the spinner.
            let activity = SPINNER.get().unwrap().activity.load(Ordering::SeqCst);
            assert_eq!(activity, 0, "a read reached the spinner while it was off");
            // A commit a client waits for starts a spin even so (how long it lasts is
            // the pure core's, above: real time here is too coarse for 1 ms).
            let (release, wait) = std::sync::mpsc::channel::<()>();
            // Counted from here: a test running beside this one (`cargo test` runs them
            // as threads of one process) may start spins of its own.
            let before = spins_started();
            let commit = spawn_awaited(move || wait.recv().is_ok());
            let until = deadline();
            while spins_started() == before {
                assert!(Instant::now() < until, "a commit starts a spin within 5 s");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            release.send(()).unwrap();
            assert!(commit.await.unwrap());
            let until = deadline();
            while spinning() {
                assert!(
                    Instant::now() < until,
                    "the spin ends once the commit is done (100 µs), within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            enable(true);
            assert!(enabled());
            let before = spins_started();
            a.write_all(b"x").await.unwrap();
            reader.read_exact(&mut byte).await.unwrap();
            let until = deadline();
            while spins_started() == before {
                assert!(Instant::now() < until, "a read starts a spin within 5 s");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let until = deadline();
            while spinning() {
                assert!(
                    Instant::now() < until,
                    "the spin ends once reads stop (20 ms), within 5 s"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
}
