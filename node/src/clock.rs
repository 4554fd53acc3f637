//! Time for actors: a [`Ticker`] that sends an actor a message at a fixed interval for as
//! long as the actor lives, and wall-clock timestamps for what is reported to people and
//! peers (`since_ms`, `collected_at_ms`, a node's incarnation). Durations and deadlines
//! use `tokio::time::Instant` instead, which never jumps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::concurrency::JoinHandle;
use ractor::{ActorRef, Message};

/// Sends an actor a message every period; stops when dropped (keep it in the actor's
/// state: it goes with the state, however the actor ends, even killed).
///
/// On Linux the period comes from a `timerfd` on the monotonic clock, which the kernel
/// fires at its instant: one wake-up of the worker per tick. A tokio timer whose
/// deadline lies past the next 64 ms boundary of tokio's timer wheel sits in the
/// wheel's second level: the worker wakes at the start of the timer's 64 ms slot to move
/// it down a level, and again when it is due. For the mesh's 200 ms ticks that was two
/// wake-ups per tick, which with ractor_cluster's pings were nearly half of an idle
/// node's wake-ups (BENCHMARKS.md, "Cost at light load").
///
/// Needs a runtime with IO enabled (every runtime here enables everything), and ticks
/// in real time even where tokio's clock is paused. Where no timerfd can be had, or one
/// fails, a tokio interval takes over, with those extra wake-ups.
#[derive(Debug)]
pub(crate) struct Ticker {
    task: JoinHandle<()>,
    /// Whether the ticks come from a timerfd (for the tests).
    #[cfg(test)]
    kernel: bool,
}

impl Ticker {
    /// Sends `actor` `message()` every `period`, the first one a period from now. With a
    /// timerfd, periods missed while the worker was held give one message, not one each:
    /// it says that at least a period has passed.
    pub(crate) fn every<M: Message>(
        actor: &ActorRef<M>,
        period: Duration,
        message: impl Fn() -> M + Send + 'static,
    ) -> Self {
        #[cfg(target_os = "linux")]
        match kernel_timer::Periodic::new(period) {
            Ok(timer) => {
                return Self {
                    task: tokio::spawn(kernel_ticks(timer, actor.clone(), period, message)),
                    #[cfg(test)]
                    kernel: true,
                }
            }
            Err(error) => tracing::debug!(%error, "no timerfd: ticking with a tokio interval"),
        }
        Self {
            task: actor.send_interval(period, message),
            #[cfg(test)]
            kernel: false,
        }
    }
}

/// A ticker's task on Linux: a message to `actor` each time `timer` fires, until the
/// actor is gone; should the timer fail, a tokio interval's ticks instead.
#[cfg(target_os = "linux")]
async fn kernel_ticks<M: Message>(
    timer: kernel_timer::Periodic,
    actor: ActorRef<M>,
    period: Duration,
    message: impl Fn() -> M + Send + 'static,
) {
    let failed = loop {
        match timer.next().await {
            Ok(()) if actor.cast(message()).is_err() => return,
            Ok(()) => {}
            Err(error) => break error,
        }
    };
    tracing::warn!(%failed, ?period, "a timerfd failed: ticking with a tokio interval");
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if actor.cast(message()).is_err() {
            return;
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(target_os = "linux")]
mod kernel_timer {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    /// A periodic `timerfd` (monotonic clock) registered with tokio's reactor.
    pub(super) struct Periodic(AsyncFd<OwnedFd>);

    impl Periodic {
        pub(super) fn new(period: Duration) -> io::Result<Self> {
            let period = period.max(Duration::from_millis(1));
            let fd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            let every = Timespec {
                tv_sec: period.as_secs() as i64,
                tv_nsec: i64::from(period.subsec_nanos()),
            };
            let spec = Itimerspec {
                it_interval: every,
                it_value: every,
            };
            timerfd_settime(&fd, TimerfdTimerFlags::empty(), &spec)?;
            // Deprecated as unsound for a type that does not own its descriptor, so that
            // safe code could close it while it is registered; `OwnedFd` owns it, and
            // nothing here can take it out of the `AsyncFd`.
            #[allow(deprecated)]
            let fd = AsyncFd::with_interest(fd, Interest::READABLE)?;
            Ok(Self(fd))
        }

        /// Waits for the timer to fire (once or more since the last call).
        pub(super) async fn next(&self) -> io::Result<()> {
            loop {
                let mut ready = self.0.readable().await?;
                let mut expirations = [0u8; 8];
                match ready.try_io(|fd| Ok(rustix::io::read(fd, &mut expirations)?)) {
                    Ok(Ok(_)) => {
                        // Read out: the next call waits for the next firing rather than
                        // first trying a read that would block (tokio keeps a readiness
                        // that came meanwhile).
                        ready.clear_ready();
                        return Ok(());
                    }
                    Ok(Err(error)) => return Err(error),
                    Err(_would_block) => continue,
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub(crate) fn unix_millis() -> u64 {
    since_epoch().as_millis().try_into().unwrap_or(u64::MAX)
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn unix_micros() -> u64 {
    since_epoch().as_micros().try_into().unwrap_or(u64::MAX)
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    /// Forwards each message it gets (who sent it) with the instant it came.
    struct Stamps;

    #[derive(Debug, PartialEq)]
    enum From {
        Ticker,
        Test,
    }

    impl ractor::Message for From {}

    impl Actor for Stamps {
        type Msg = From;
        type State = mpsc::UnboundedSender<(From, Instant)>;
        type Arguments = Self::State;

        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            out: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(out)
        }

        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            from: Self::Msg,
            out: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let _ = out.send((from, Instant::now()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_ticker_sends_a_message_each_period_never_early_and_stops_when_dropped() {
        let (out, mut stamps) = mpsc::unbounded_channel();
        let (actor, handle) = Actor::spawn(None, Stamps, out).await.unwrap();
        let period = Duration::from_millis(30);
        let started = Instant::now();
        let ticker = Ticker::every(&actor, period, || From::Ticker);
        assert_eq!(
            ticker.kernel,
            cfg!(target_os = "linux"),
            "on Linux the ticks come from a timerfd"
        );
        for k in 1..=4u32 {
            let (_, at) = tokio::time::timeout(Duration::from_secs(5), stamps.recv())
                .await
                .unwrap_or_else(|_| panic!("tick {k} did not come within 5 s"))
                .expect("the actor is running");
            assert!(
                at >= started + period * k,
                "tick {k} came {:?} after the start, before {k} periods",
                at - started
            );
        }
        drop(ticker);
        // Ticks sent before the drop may still be in the mailbox: they come before ours.
        actor.cast(From::Test).unwrap();
        while stamps.recv().await.expect("the actor is running").0 != From::Test {}
        let later = tokio::time::timeout(period * 4, stamps.recv()).await;
        assert!(later.is_err(), "a dropped ticker sent {later:?}");
        actor.stop(None);
        handle.await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_held_thread_gets_one_tick_for_the_periods_it_missed_not_a_burst() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let period = Duration::from_millis(200);
            let timer = kernel_timer::Periodic::new(period).expect("a timerfd");
            // The thread is held (a long sync on the only worker, a SIGSTOP) for five
            // periods: the fault itself, not a wait for something.
            std::thread::sleep(period * 5);
            let held = std::time::Instant::now();
            timer.next().await.unwrap();
            assert!(
                held.elapsed() < period,
                "the missed periods gave no tick at once"
            );
            // `timeout` polls the tick once before it looks at its (zero) deadline.
            let burst = tokio::time::timeout(Duration::ZERO, timer.next()).await;
            assert!(
                burst.is_err(),
                "a second tick came at once: the missed periods came as a burst"
            );
            timer.next().await.unwrap();
        });
    }
}
