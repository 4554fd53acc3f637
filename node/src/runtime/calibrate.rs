//! Whether a busy poll pays on this machine, measured when a program starts.
//!
//! The busy poll saves a thread's wake-up: on a VM whose idle vCPUs halt (and are woken
//! by an interrupt through the hypervisor) that is most of a round trip, and spinning
//! cuts a call's latency several times over. On a VM that packs runnable threads onto
//! as few vCPUs as it can, the same spin holds the vCPU the other side of the
//! conversation was placed on, and every answer waits for the spin to end: there it
//! costs several times over. Both kinds were measured on this project's machines
//! (BENCHMARKS.md, "The busy poll on two kinds of VM"), so the default is to measure.
//!
//! The measure is a ping-pong between two threads of the program: one sends, the other
//! (asleep) wakes and answers; the first waits for the answer asleep, or spinning for at
//! most the window, alternately, with both sides idle for a moment between rounds as
//! between requests. The spin pays if a sleeping round trip is dear and the spinning
//! one clearly shorter ([`Measured::spin_pays`]). On Linux the two threads are held on
//! two different CPUs for the measure (the asking thread on the CPU it is on, the
//! answering one on another): on the VM where this was compared side by side, a node
//! and the client it answered ran on different CPUs while they talked, so the wake-up a
//! spin saves was one across CPUs. Left to the scheduler, the two threads of a measure
//! sometimes shared a CPU and sometimes did not, and the verdict followed that
//! placement, not the machine (BENCHMARKS.md). What a measure across CPUs cannot see is
//! a VM that packs a node and its client onto one CPU while they talk: there the spin
//! holds the CPU the answer needs (docs/operations.md, known limits). A thread allowed
//! one CPU measures on it, with both threads sharing it. A measure takes about 25 ms of
//! wall time and a few of CPU.
//!
//! The program takes the first measure as it starts, on a thread of its own beside
//! its work ([`watch`]; the spin is off until the verdict, and [`first`] waits for it),
//! and takes one again every [`MEASURE_EVERY`], since how dear a wake-up is changes
//! with what else the machine runs. Its work does not wait for the measure: where many
//! nodes start at once on few vCPUs, a measure takes ten times as long, and waiting for
//! it made 100 nodes on two vCPUs form 0.2-0.5 s later (BENCHMARKS.md, "Grow and shrink").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Round trips measured each way.
const ROUNDS: usize = 48;

/// The pause between round trips: long enough for both threads to go idle.
const IDLE: Duration = Duration::from_micros(200);

/// The spin must take a round trip down to this share of the sleeping one, at most.
const CLEAR_WIN: f64 = 0.8;

/// A sleeping round trip across CPUs at least this long: wake-ups are dear here. Below
/// it a spin saves a few microseconds at best, and where the machine packs threads
/// onto few vCPUs (where such cheap wake-ups were measured: 11-27 µs a round trip) it
/// costs far more. A VM whose idle vCPUs halt measured 34-42 µs across CPUs, and there
/// the spin took a call from 83-92 to 35-51 µs.
const DEAR_WAKE_UPS: Duration = Duration::from_micros(30);

/// How often [`watch`] measures again. Each measure wakes two threads about two
/// hundred times: every 10 s that was a fifth of an idle node's CPU (3.0-4.1 against
/// 2.4-3.05 ms/s every 60 s, BENCHMARKS.md); a VM that changes its ways is still
/// followed within a minute.
pub(crate) const MEASURE_EVERY: Duration = Duration::from_secs(60);

/// The last measure taken in this process.
static LAST: Mutex<Option<Measured>> = Mutex::new(None);

/// Whether [`watch`] runs in this process, so a first measure is coming.
static WATCHING: AtomicBool = AtomicBool::new(false);

/// The first measure's outcome once it is taken (`None` inside: it could not be).
static FIRST: OnceLock<Option<Measured>> = OnceLock::new();

/// Wakes those waiting in [`first`] once [`FIRST`] is set.
static FIRST_TAKEN: Notify = Notify::const_new();

/// The medians the verdict came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// A round trip waited for asleep.
    pub sleeping: Duration,
    /// A round trip waited for spinning.
    pub spinning: Duration,
    /// The CPUs the asking and the answering thread were held on, if they were.
    pub cpus: Option<(usize, usize)>,
}

impl Measured {
    /// Whether wake-ups are dear here and spinning clearly shortens a round trip.
    pub fn spin_pays(&self) -> bool {
        self.sleeping >= DEAR_WAKE_UPS
            && self.spinning.as_secs_f64() < CLEAR_WIN * self.sleeping.as_secs_f64()
    }
}

/// The medians of `sleeping` and `spinning` round trips (reordered).
pub(crate) fn medians(sleeping: &mut [Duration], spinning: &mut [Duration]) -> Measured {
    let median = |d: &mut [Duration]| {
        d.sort();
        d.get(d.len() / 2).copied().unwrap_or_default()
    };
    Measured {
        sleeping: median(sleeping),
        spinning: median(spinning),
        cpus: None,
    }
}

/// Measures round trips between two threads, waited for asleep and spinning for at
/// most `window`, [`ROUNDS`] of each, alternately. `None` if either thread could not
/// be started or ended early.
pub(crate) fn measure(window: Duration) -> Option<Measured> {
    let measured = measure_rounds(window, ROUNDS)?;
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(measured);
    Some(measured)
}

/// The last measure taken in this process, if any.
pub fn last() -> Option<Measured> {
    *LAST.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first measure of this process, once it is taken: `None` if it could not be, or
/// if none is taken here (the busy poll was given a window, or this is not a program's
/// runtime).
pub(crate) async fn first() -> Option<Measured> {
    loop {
        let taken = FIRST_TAKEN.notified();
        tokio::pin!(taken);
        // Registered before looking, so a measure taken in between still wakes it.
        taken.as_mut().enable();
        if let Some(&measured) = FIRST.get() {
            return measured;
        }
        if !WATCHING.load(Ordering::Acquire) {
            return None;
        }
        taken.await;
    }
}

/// Records the first measure (`None`: it could not be taken) and wakes [`first`].
fn set_first(measured: Option<Measured>) {
    let _ = FIRST.set(measured);
    FIRST_TAKEN.notify_waiters();
}

/// Starts [`watch`] on a thread of its own. If the thread cannot be started, the first
/// measure counts as not taken.
pub(crate) fn spawn_watch(
    window: Duration,
    apply: impl Fn(bool, Option<&Measured>) + Send + 'static,
) -> std::io::Result<()> {
    WATCHING.store(true, Ordering::Release);
    std::thread::Builder::new()
        .name("busy-poll-measure".into())
        .spawn(move || watch(window, apply))
        .map(drop)
        .inspect_err(|_| set_first(None))
}

/// Measures at once and hands the verdict to `apply` (with `None` if it could not
/// measure), then measures again every [`MEASURE_EVERY`], for as long as the process
/// runs, and hands each verdict that differs from the one before to `apply`.
fn watch(window: Duration, apply: impl Fn(bool, Option<&Measured>)) {
    let measured = measure(window);
    set_first(measured);
    let mut on = measured.is_some_and(|m| m.spin_pays());
    apply(on, measured.as_ref());
    loop {
        std::thread::sleep(MEASURE_EVERY);
        let Some(measured) = measure(window) else {
            continue;
        };
        if measured.spin_pays() != on {
            on = measured.spin_pays();
            apply(on, Some(&measured));
        }
    }
}

fn measure_rounds(window: Duration, rounds: usize) -> Option<Measured> {
    let (ask, asked) = mpsc::channel::<()>();
    let (answer, answers) = mpsc::channel::<()>();
    // Where the answering thread goes: chosen by the asking thread once it is held
    // on the CPU it runs on.
    let (place, placed) = mpsc::channel::<Option<usize>>();
    std::thread::scope(|scope| {
        let answering = std::thread::Builder::new()
            .name("busy-poll-probe".into())
            .spawn_scoped(scope, move || {
                let held = placed.recv().ok().flatten().filter(|&cpu| hold_on(cpu));
                while asked.recv().is_ok() {
                    if answer.send(()).is_err() {
                        break;
                    }
                }
                held
            })
            .ok()?;
        // The asking side is a thread of its own too, so that holding it on a CPU
        // does not hold the caller (the program's main thread at start).
        let asking = std::thread::Builder::new()
            .name("busy-poll-probe".into())
            .spawn_scoped(scope, move || {
                let pair = two_cpus().filter(|&(cpu, _)| hold_on(cpu));
                place.send(pair.map(|(_, other)| other)).ok()?;
                let measured = ping_pong(window, rounds, ask, answers)?;
                Some((measured, pair.map(|(cpu, _)| cpu)))
            })
            .ok()?;
        let (mut measured, asker) = asking.join().ok()??;
        let answerer = answering.join().ok()?;
        measured.cpus = asker.zip(answerer);
        Some(measured)
    })
}

/// The round trips themselves: `rounds` asleep and `rounds` spinning, alternately.
fn ping_pong(
    window: Duration,
    rounds: usize,
    ask: mpsc::Sender<()>,
    answers: mpsc::Receiver<()>,
) -> Option<Measured> {
    let (mut sleeping, mut spinning) = (Vec::new(), Vec::new());
    for round in 0..2 * rounds {
        let spin = round % 2 == 1;
        let sent = Instant::now();
        ask.send(()).ok()?;
        if spin {
            loop {
                match answers.try_recv() {
                    Ok(()) => break,
                    Err(mpsc::TryRecvError::Empty) if sent.elapsed() < window => {
                        std::hint::spin_loop()
                    }
                    Err(mpsc::TryRecvError::Empty) => {
                        answers.recv().ok()?;
                        break;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return None,
                }
            }
            spinning.push(sent.elapsed());
        } else {
            answers.recv().ok()?;
            sleeping.push(sent.elapsed());
        }
        std::thread::sleep(IDLE);
    }
    Some(medians(&mut sleeping, &mut spinning))
}

/// The CPU the calling thread runs on and another it may run on (the next allowed
/// one, wrapping), or `None` if it may run on one only (or where that cannot be known).
#[cfg(target_os = "linux")]
fn two_cpus() -> Option<(usize, usize)> {
    use rustix::thread::{sched_getaffinity, sched_getcpu, CpuSet};
    let allowed = sched_getaffinity(None).ok()?;
    let here = sched_getcpu();
    let other = (here + 1..CpuSet::MAX_CPU)
        .chain(0..here)
        .find(|&cpu| allowed.is_set(cpu))?;
    Some((here, other))
}

#[cfg(not(target_os = "linux"))]
fn two_cpus() -> Option<(usize, usize)> {
    None
}

/// Holds the calling thread on `cpu`; whether it could.
#[cfg(target_os = "linux")]
fn hold_on(cpu: usize) -> bool {
    use rustix::thread::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn hold_on(_cpu: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&u| Duration::from_micros(u)).collect()
    }

    #[test]
    fn the_spin_pays_only_when_it_clearly_shortens_a_round_trip() {
        // A halting VM: waking the waiter is most of the round trip.
        let m = medians(&mut us(&[300, 120, 250, 900]), &mut us(&[90, 60, 400, 70]));
        assert_eq!(m.sleeping, Duration::from_micros(300));
        assert_eq!(m.spinning, Duration::from_micros(90));
        assert!(m.spin_pays());
        // A packing VM: the answer waits for the spin to end.
        let m = medians(&mut us(&[20, 15, 18]), &mut us(&[100, 101, 19]));
        assert!(!m.spin_pays());
        // A little faster is not clearly faster.
        let m = medians(&mut us(&[200]), &mut us(&[170]));
        assert!(!m.spin_pays());
        // Cheap wake-ups: nothing worth spinning for, however the two compare.
        let m = medians(&mut us(&[27]), &mut us(&[15]));
        assert!(!m.spin_pays());
        // A VM whose idle vCPUs halt, measured across CPUs: the spin halves it.
        let m = medians(&mut us(&[38, 34, 42]), &mut us(&[18, 17, 24]));
        assert!(m.spin_pays());
    }

    /// [`first`] has nothing to wait for until a watch runs, and then gives what the
    /// watch measured and handed on.
    #[tokio::test]
    async fn the_first_measure_is_taken_beside_the_work_and_waited_for_only_by_first() {
        assert_eq!(first().await, None, "no watch, no measure");
        let (applied, verdicts) = mpsc::channel();
        spawn_watch(Duration::from_micros(100), move |on, m| {
            let _ = applied.send((on, m.copied()));
        })
        .unwrap();
        let measured = tokio::time::timeout(Duration::from_secs(20), first())
            .await
            .expect("the first measure within 20 s")
            .expect("measured");
        let (on, handed) = verdicts.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(handed, Some(measured));
        assert_eq!(on, measured.spin_pays());
        assert_eq!(last(), Some(measured));
        // Asked again, the same.
        assert_eq!(first().await, Some(measured));
    }

    #[test]
    fn a_measure_gives_both_medians_from_threads_held_on_two_cpus() {
        #[cfg(target_os = "linux")]
        let before = rustix::thread::sched_getaffinity(None).unwrap();
        let m = measure_rounds(Duration::from_micros(100), 4).unwrap();
        assert!(
            m.sleeping > Duration::ZERO && m.spinning > Duration::ZERO,
            "{m:?}"
        );
        #[cfg(target_os = "linux")]
        {
            // Where this thread may use two CPUs (and may be held on one), the two
            // threads were held on two of them.
            let may_hold = std::thread::spawn(|| two_cpus().is_some_and(|(cpu, _)| hold_on(cpu)))
                .join()
                .unwrap();
            if may_hold {
                let (asker, answerer) = m.cpus.expect("held on two CPUs");
                assert_ne!(asker, answerer, "{m:?}");
                assert!(before.is_set(asker) && before.is_set(answerer), "{m:?}");
            } else {
                assert_eq!(m.cpus, None, "{m:?}");
            }
            // The caller is not held: it may still run on every CPU it could before.
            assert_eq!(rustix::thread::sched_getaffinity(None).unwrap(), before);
        }
        #[cfg(not(target_os = "linux"))]
        assert_eq!(m.cpus, None, "{m:?}");
    }
}
