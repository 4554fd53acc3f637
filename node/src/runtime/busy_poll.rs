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

/// `spawn_blocking`, with `count` one higher until `f` has run, panicked, or been
/// dropped unrun.
fn spawn_counted<F, R>(count: &'static AtomicUsize, f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    struct Running(&'static AtomicUsize);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    count.fetch_add(1, Ordering::Relaxed);
    let running = Running(count);
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
        let window = length.current();
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
            if spin.go_on(spinner.activity.load(Ordering::SeqCst), Instant::now()) {
                continue;
            }
            spinner.spinning.store(false, Ordering::SeqCst);
            // A read between the last turn and that store saw a spinner still spinning
            // and woke nothing: it gets its window now.
            let activity = spinner.activity.load(Ordering::SeqCst);
            if activity == spin.seen() {
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
            assert_eq!(spins_started(), 0);
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
