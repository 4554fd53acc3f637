//! `node-bench sender` (hidden): the client process `node-bench` starts to push
//! increments at a node, or to time calls to it. It runs in its own process so that
//! its peak memory is its own, and prints one JSON [`SenderReport`] on stdout.
//!
//! A push is checked: every counter of the target node is read before and after, and
//! each one's value and operation count must have moved by exactly what was sent to it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::counter::{ApplyOutcome, CounterStats, Delta, StatsOutcome};
use shared::host::{HostMessage, StreamId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use node::call_until;
use node::operation;
use node::ClusterClient;
use node::CommandError;
use node::IssuedTally;
use node::{Mode, Offer, Pusher, Target};

/// How long one acknowledgement (or one counter read) may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The push loop gives way to the sender's other tasks after this many messages.
/// Without it, the loop fills the whole window before the remote actor and the session
/// writer (on the same worker) send anything, so the node idles, then floods.
const YIELD_EVERY: u64 = 64;

/// What a sender measured.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct SenderReport {
    /// Operations pushed (or calls made).
    pub(crate) operations: u64,
    /// Microseconds from the first send to the last acknowledgement.
    pub(crate) elapsed_us: u64,
    /// Network messages sent for the push, or calls made (the untimed warm-up ones
    /// included).
    pub(crate) messages: u64,
    /// Whether every counter moved by exactly what was sent to it.
    pub(crate) exact: bool,
    /// The sender's peak resident memory (VmHWM), in KiB.
    pub(crate) peak_rss_kb: u64,
    /// Call latency percentiles, in microseconds (calls only).
    pub(crate) p50_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
}

/// What the sender does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Measure {
    /// Push increments and decrements, then check the counters.
    Push,
    /// Time sequential `GetStats` calls.
    Calls,
    /// Time sequential changes with ids, each answered once it is committed.
    Applies,
}

/// Runs one measurement against the node at `addr` and prints its report.
pub(crate) async fn run(
    addr: &str,
    cookie: &str,
    measure: Measure,
    mode: Mode,
    operations: u64,
) -> Result<(), CommandError> {
    let client = ClusterClient::connect(addr, cookie, None, Duration::from_secs(10)).await?;
    let result = async {
        let info = client.info(Duration::from_secs(5)).await?;
        let host = client
            .host()
            .ok_or_else(|| CommandError::Local(format!("{addr} has no counter host")))?;
        if info.counters == 0 {
            return Err(CommandError::Local(format!("{addr} hosts no counters")));
        }
        match measure {
            Measure::Push => {
                let sender = client.own_name().to_string();
                push(&info.name, &sender, host, info.counters, mode, operations).await
            }
            Measure::Calls => calls(host, info.counters, operations, false).await,
            Measure::Applies => calls(host, info.counters, operations, true).await,
        }
    }
    .await;
    client.close().await;
    let mut report = result?;
    report.peak_rss_kb = node::status_kb(std::process::id(), "VmHWM").unwrap_or(0);
    let text = serde_json::to_string(&report).map_err(|e| CommandError::Local(e.to_string()))?;
    println!("{text}");
    Ok(())
}

async fn read_all(
    host: &ractor::ActorRef<HostMessage>,
    counters: u32,
) -> Result<Vec<CounterStats>, CommandError> {
    let mut all = Vec::with_capacity(counters as usize);
    for index in 0..counters {
        let until = Instant::now() + ACK_TIMEOUT;
        let StatsOutcome(stats) =
            call_until(host.clone(), |r| HostMessage::GetStats(index, r), until)
                .await
                .ok_or_else(|| CommandError::Local(format!("counter {index} did not answer")))?;
        all.push(stats.map_err(|e| CommandError::Local(e.to_string()))?);
    }
    Ok(all)
}

async fn push(
    node: &str,
    sender: &str,
    host: ractor::ActorRef<HostMessage>,
    counters: u32,
    mode: Mode,
    operations: u64,
) -> Result<SenderReport, CommandError> {
    let before = read_all(&host, counters).await?;
    let (tx, mut acks) = mpsc::unbounded_channel();
    // A stream of its own (no outbox: its batches are issued as they are made), in its
    // session's name: the node takes a client's batches only so.
    let stream = StreamId {
        sender: sender.to_string(),
        origin: fastrand::u64(..),
    };
    let mut pusher = Pusher::new(
        mode,
        stream,
        Arc::new(IssuedTally::default()),
        None,
        Arc::new(move |event| {
            let _ = tx.send(event);
        }),
    );
    pusher.set_targets(vec![Target {
        node: node.to_string(),
        host: host.clone(),
        counters,
    }]);
    let mut expected = vec![(0i64, 0u64); counters as usize];
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
    let mut wait_ack = async |pusher: &mut Pusher| -> Result<(), CommandError> {
        let ack = tokio::time::timeout(ACK_TIMEOUT, acks.recv())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| CommandError::Local("no acknowledgement from the node".into()))?;
        pusher
            .on_event(ack)
            .map_err(|e| CommandError::Local(e.to_string()))
    };

    let started = Instant::now();
    let mut k = 0;
    let mut yielded_at = 0;
    while k < operations {
        let pick = rng.u64(..u64::from(counters));
        let delta = operation(k);
        match pusher.offer(pick, delta) {
            Offer::Accepted => {
                let slot = &mut expected[pick as usize];
                slot.0 += delta.signed() as i64;
                slot.1 += 1;
                k += 1;
                if pusher.messages() >= yielded_at + YIELD_EVERY {
                    yielded_at = pusher.messages();
                    tokio::task::yield_now().await;
                }
            }
            Offer::Blocked => wait_ack(&mut pusher).await?,
            Offer::Failed => return Err(CommandError::Local("the node went away".into())),
        }
    }
    while !pusher.settled() {
        pusher.drain();
        wait_ack(&mut pusher).await?;
    }
    let elapsed = started.elapsed();

    let after = read_all(&host, counters).await?;
    let exact = before.iter().zip(&after).zip(&expected).all(|((b, a), e)| {
        a.value.wrapping_sub(b.value) == e.0 && a.operations - b.operations == e.1
    });
    Ok(SenderReport {
        operations,
        elapsed_us: elapsed.as_micros() as u64,
        messages: pusher.messages(),
        exact,
        ..SenderReport::default()
    })
}

/// Times `calls` sequential calls: `GetStats`, or (`applies`) increments with ids,
/// each answered once committed.
async fn calls(
    host: ractor::ActorRef<HostMessage>,
    counters: u32,
    calls: u64,
    applies: bool,
) -> Result<SenderReport, CommandError> {
    let warmup = calls / 10 + 1;
    let mut latencies = Vec::with_capacity(calls as usize);
    let run = fastrand::u64(..);
    let started = Instant::now();
    for i in 0..warmup + calls {
        let index = (i % u64::from(counters)) as u32;
        let at = Instant::now();
        let answered = if applies {
            let answer = call_until(
                host.clone(),
                |reply| HostMessage::Apply {
                    counter: index,
                    delta: Delta::Increment(1),
                    id: format!("bench-{run:x}-{i}"),
                    reply,
                },
                at + ACK_TIMEOUT,
            )
            .await;
            matches!(answer, Some(ApplyOutcome(Ok(_))))
        } else {
            let answer = call_until(
                host.clone(),
                |r| HostMessage::GetStats(index, r),
                at + ACK_TIMEOUT,
            )
            .await;
            matches!(answer, Some(StatsOutcome(Ok(_))))
        };
        let took = at.elapsed();
        if !answered {
            return Err(CommandError::Local(format!("call {i} failed")));
        }
        if i >= warmup {
            latencies.push(took.as_secs_f64() * 1e6);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok(SenderReport {
        operations: calls,
        elapsed_us: started.elapsed().as_micros() as u64,
        p50_us: at(0.50),
        p99_us: at(0.99),
        messages: warmup + calls,
        exact: true,
        ..SenderReport::default()
    })
}
