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
//! While blocking work runs ([`spawn_blocking`], [`run_awaited`]: a commit and its
//! fsync), the spinner also gives its thread's CPU back to the operating system on
//! every turn. On two vCPUs a spinning worker and a spinning client left a commit's
//! thread waiting for a CPU, and a durable change took a whole window longer
//! (BENCHMARKS.md). Yielding the thread on every turn regardless cost calls and
//! one-message-per-operation pushes.
//!
//! **After a commit a client waited for** ([`spawn_awaited`]) the spinner spins for
//! [`AFTER_AWAITED`] (or the reads' window, if reads start spins and it is longer):
//! the client's answer is on its way, and its next change, one round trip later, finds
//! the worker awake. On a VM whose idle vCPUs halt, each wake-up of a sleeping thread
//! costs tens of microseconds, and a durable change took a third longer than Redis's
//! (BENCHMARKS.md). Only while clients
//! keep the node busy: a commit that starts less than [`BUSY_CLIENTS_GAP`] after the
//! last one a client waited for ended. So a trickle of client changes, like the traffic
//! between nodes (committed every group interval), costs no spinning. (Spinning while
//! the commit runs as well saved its report's wake-up too, but cost the node twice the
//! CPU for no better median.)
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

/// How long the spinner spins after a commit a client waited for has ended (landed in
/// the store file; its report left before): the client's answer is on its way, and its
/// next change comes one round trip later.
pub(crate) const AFTER_AWAITED: Duration = Duration::from_micros(100);

/// A commit a client waits for is followed by a spin only if it starts less than this
/// after the last such commit ended: clients keep the node busy.
pub(crate) const BUSY_CLIENTS_GAP: Duration = Duration::from_millis(1);

/// Whether a commit a client waits for, starting `since_last_end` after the last such
/// commit ended, is followed by a spin. A pure core.
pub(crate) fn spins_after(since_last_end: Duration) -> bool {
    since_last_end < BUSY_CLIENTS_GAP
}

/// Whether the spin after such a commit goes on, `since_end` after the commit ended.
/// A pure core.
pub(crate) fn after_awaited(since_end: Duration) -> bool {
    since_end < AFTER_AWAITED
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

/// Blocking work started through [`spawn_blocking`], [`spawn_awaited`] or
/// [`run_awaited`] and not finished.
static BLOCKING: AtomicUsize = AtomicUsize::new(0);

/// When the last commit a client waited for ended (see [`since_start`]; 0: never).
static AWAITED_ENDED: AtomicU64 = AtomicU64::new(0);

/// When the last such commit that is followed by a spin ended (0: never).
static SPIN_AFTER_FROM: AtomicU64 = AtomicU64::new(0);

/// Turns of the spinner after a commit a client waited for (for the tests).
#[cfg(test)]
static AFTER_TURNS: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds since this process first asked, at least 1: a clock that fits in an
/// atomic, where 0 means never.
fn since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    (START.get_or_init(Instant::now).elapsed().as_nanos() as u64).max(1)
}

/// How long ago `at` (a [`since_start`] reading) was, as of `now`; `Duration::MAX` for
/// never.
fn since(at: &AtomicU64, now: u64) -> Duration {
    match at.load(Ordering::SeqCst) {
        0 => Duration::MAX,
        at => Duration::from_nanos(now.saturating_sub(at)),
    }
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
/// while clients keep the node busy, the spinner, if there is one, spins for a moment
/// after it (see the module documentation). `f` marks where the work ends with the
/// [`AwaitedEnd`] it is given (before it tells anyone it is done, so that the next
/// commit sees the end); if it does not, the end is where `f` returns.
pub(crate) fn spawn_awaited<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce(AwaitedEnd) -> R + Send + 'static,
    R: Send + 'static,
{
    let end = awaited_starts();
    spawn_counted(&BLOCKING, move || f(end))
}

/// [`spawn_awaited`] on the caller's own thread (a commit of one client's change, run
/// by the journal itself): counted as blocking work while `f` runs, so that a spinning
/// worker gives its CPU back meanwhile (with more than one worker: with one, the
/// spinner shares the caller's thread and cannot run meanwhile anyway).
pub(crate) fn run_awaited<R>(f: impl FnOnce(AwaitedEnd) -> R) -> R {
    let end = awaited_starts();
    let _running = Counted::new(&BLOCKING);
    f(end)
}

/// The end of work a client waits for that starts now.
fn awaited_starts() -> AwaitedEnd {
    AwaitedEnd {
        spins: spins_after(since(&AWAITED_ENDED, since_start())),
    }
}

/// The end of a commit a client waited for ([`spawn_awaited`], [`run_awaited`]): marked by
/// [`AwaitedEnd::ended`], or wherever it is dropped.
pub(crate) struct AwaitedEnd {
    /// Whether a spin follows it.
    spins: bool,
}

impl AwaitedEnd {
    /// The work is done: the next commit's gap counts from now, and the spin after it
    /// (if any) starts.
    pub(crate) fn ended(self) {}
}

impl Drop for AwaitedEnd {
    fn drop(&mut self) {
        let now = since_start();
        AWAITED_ENDED.fetch_max(now, Ordering::Relaxed);
        if self.spins {
            // SeqCst with the spinner's store-then-load, as for a read (see `note`).
            SPIN_AFTER_FROM.fetch_max(now, Ordering::SeqCst);
            if let Some(spinner) = SPINNER.get() {
                spinner.wake_unless_spinning();
            }
        }
    }
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

/// Whether the spin after a commit a client waited for goes on now.
fn spinning_after_awaited() -> bool {
    after_awaited(since(&SPIN_AFTER_FROM, since_start()))
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

/// Blocking work (see [`BLOCKING`]) still running.
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
        spinner.wake_unless_spinning();
    }
}

impl Spinner {
    /// Wakes the spinner unless it is spinning (then it sees what the caller stored
    /// before, SeqCst, on its next turn or when it stops).
    fn wake_unless_spinning(&self) {
        if !self.spinning.load(Ordering::SeqCst) {
            self.wake.notify_one();
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
    // When the last spin gave up, and the reads it had seen by then.
    let mut gave_up: Option<(Instant, u64)> = None;
    loop {
        spinner.wake.notified().await;
        spinner.spinning.store(true, Ordering::SeqCst);
        spinner.spins.fetch_add(1, Ordering::Relaxed);
        // Only a read adapts the reads' window: a wake for a commit says nothing of
        // how soon reads follow.
        if let Some((at, seen)) = gave_up {
            if spinner.activity.load(Ordering::SeqCst) != seen {
                length.after_silence(at.elapsed());
            }
        }
        // Reads extend a spin only while they start spins; otherwise this one is for
        // after a commit a client waited for, and lasts as long as that says.
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
            let after_awaited = spinning_after_awaited();
            #[cfg(test)]
            if after_awaited {
                AFTER_TURNS.fetch_add(1, Ordering::Relaxed);
            }
            if window_open || after_awaited {
                continue;
            }
            spinner.spinning.store(false, Ordering::SeqCst);
            // A read (or the end of a commit a client waited for) between the last turn
            // and that store saw a spinner still spinning and woke nothing: it gets its
            // spin now.
            let activity = spinner.activity.load(Ordering::SeqCst);
            if activity == spin.seen() && !spinning_after_awaited() {
                gave_up = Some((Instant::now(), activity));
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
    fn a_commit_a_client_waited_for_is_followed_by_a_spin_while_clients_keep_it_busy() {
        // Only a commit that follows the last closely.
        assert!(spins_after(Duration::ZERO));
        assert!(spins_after(999 * US));
        assert!(!spins_after(1_000 * US));
        assert!(!spins_after(Duration::MAX));
        // Then for the answer's round trip.
        assert!(after_awaited(Duration::ZERO));
        assert!(after_awaited(99 * US));
        assert!(!after_awaited(100 * US));
        assert!(!after_awaited(Duration::MAX));
    }

    #[test]
    fn a_spin_without_activity_ends_after_one_window() {
        let t0 = Instant::now();
        let mut spin = SpinWindow::start(100 * US, 0, t0);
        assert!(spin.go_on(0, t0));
        assert!(!spin.go_on(0, t0 + 100 * US));
        assert!(!spin.go_on(0, t0 + 10_000 * US));
    }

    /// Waits until `done`, checking every millisecond; fails after 5 s (real time, so
    /// generous) saying `what` did not happen.
    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < until, "{what}: not within 5 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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
            wait_until("the spinner idle", || !spinning()).await;
            let (mut a, b) = tokio::io::duplex(64);
            let mut reader = Noted(b);
            let mut byte = [0u8; 1];
            a.write_all(b"x").await.unwrap();
            reader.read_exact(&mut byte).await.unwrap();
            // The read was not even counted, so nothing can have woken the spinner.
            let activity = SPINNER.get().unwrap().activity.load(Ordering::SeqCst);
            assert_eq!(activity, 0, "a read reached the spinner while it was off");
            // A commit a client waited for is followed by a spin even so, if it
            // followed another closely (how long it spins is the pure core's, above:
            // real time here is too coarse). Counted in turns of that spin, so that
            // tests running beside this one (`cargo test` runs them as threads of one
            // process) cannot hide it; tried again until one follows closely enough,
            // in case this thread is slow.
            let until = deadline();
            loop {
                assert!(
                    Instant::now() < until,
                    "a commit soon after another is followed by a spin within 5 s"
                );
                spawn_awaited(drop).await.unwrap();
                let before = AFTER_TURNS.load(Ordering::Relaxed);
                let from = since_start();
                spawn_awaited(drop).await.unwrap();
                // This test's commit was followed by a spin (not only another test's).
                if SPIN_AFTER_FROM.load(Ordering::SeqCst) < from {
                    continue;
                }
                let tried = Instant::now() + Duration::from_millis(50);
                while AFTER_TURNS.load(Ordering::Relaxed) == before && Instant::now() < tried {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if AFTER_TURNS.load(Ordering::Relaxed) > before {
                    break;
                }
            }
            wait_until("the spin after the commit ends (100 µs)", || !spinning()).await;
            enable(true);
            assert!(enabled());
            let before = spins_started();
            a.write_all(b"x").await.unwrap();
            reader.read_exact(&mut byte).await.unwrap();
            let activity = SPINNER.get().unwrap().activity.load(Ordering::SeqCst);
            assert_eq!(
                activity, 1,
                "a read did not reach the spinner while it was on"
            );
            // Or a spin already under way (another test's commit) took the read on.
            wait_until("a read starts a spin", || {
                spins_started() != before || spinning()
            })
            .await;
            wait_until("the spin ends once reads stop (20 ms)", || !spinning()).await;
        });
        // The spinner stays on, its runtime gone: later tests' reads and commits wake
        // nothing that runs.
    }
}
