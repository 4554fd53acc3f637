//! What every supervisor of the node shares, below all of them: how a child's end is
//! read from its supervision event, the restart budget, and the drills (fault
//! injection) a child may hand to the root. The tree itself is in [`crate::root`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::oneshot;
use ractor::{ActorId, RpcReplyPort, SupervisionEvent};
use shared::agent::{ClientError, CrashTarget};
use tokio::time::Instant;

/// Why a load client stops by itself when its `--load-ops` are done (not a failure).
pub(crate) const LOAD_FINISHED: &str = "load finished";

/// How a supervised actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    /// The actor.
    pub(crate) id: ActorId,
    /// Why it ended ("stopped" if it gave no reason).
    pub(crate) reason: String,
    /// Whether it failed (rather than stopped).
    pub(crate) failed: bool,
}

/// How a supervised actor ended, from its supervision event; `None` for other events.
pub(crate) fn exit_of(event: SupervisionEvent) -> Option<Exit> {
    match event {
        SupervisionEvent::ActorFailed(cell, reason) => Some(Exit {
            id: cell.get_id(),
            reason: reason.to_string(),
            failed: true,
        }),
        SupervisionEvent::ActorTerminated(cell, _, reason) => Some(Exit {
            id: cell.get_id(),
            reason: reason.unwrap_or_else(|| "stopped".into()),
            failed: false,
        }),
        _ => None,
    }
}

/// ractor wraps a failed `pre_start` in layers; the innermost message is the useful one
/// ("Address already in use").
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// The most restarts allowed in a sliding window of time; a plain type.
#[derive(Debug)]
pub(crate) struct RestartBudget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// At most `max` restarts within any `window`.
    pub(crate) fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; false if that is one too many.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max
    }
}

/// A fault a client asks the node to inject (only with `--enable-fault-injection`).
#[derive(Debug, Clone)]
pub(crate) enum Drill {
    /// Make this actor fail the way a panic would.
    Crash(CrashTarget),
    /// Make the store's disk report errors (see [`crate::store::faults`]).
    DiskErrors {
        /// Syncs that go through first.
        pass: u64,
        /// Commits made to fail.
        fail: u64,
    },
}

/// What became of a drill.
pub(crate) type DrillAnswer = Result<(), ClientError>;

/// Where a child hands drills to whoever carries them out (the root), without naming
/// its message type.
#[derive(Clone)]
pub(crate) struct DrillPort(Arc<dyn Fn(Drill, RpcReplyPort<DrillAnswer>) + Send + Sync>);

impl DrillPort {
    /// A port that hands each drill, with where its answer goes, to `carry_out`.
    pub(crate) fn new(
        carry_out: impl Fn(Drill, RpcReplyPort<DrillAnswer>) + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(carry_out))
    }

    /// Hands over `drill` and waits up to `within` for its answer; `None` if none came.
    pub(crate) async fn ask(&self, drill: Drill, within: Duration) -> Option<DrillAnswer> {
        let (reply, answer) = oneshot();
        (self.0)(drill, reply.into());
        tokio::time::timeout(within, answer).await.ok()?.ok()
    }
}

impl std::fmt::Debug for DrillPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrillPort")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_bursts_up_to_its_size_in_any_window() {
        let mut budget = RestartBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert!(budget.allow(t0));
        assert!(budget.allow(t0 + s));
        assert!(budget.allow(t0 + 2 * s));
        assert!(!budget.allow(t0 + 3 * s), "a fourth within 10 s");
        // Once the first ones are older than the window, restarts are allowed again.
        assert!(budget.allow(t0 + 12 * s + s / 2));
    }

    #[tokio::test]
    async fn a_drill_port_carries_the_answer_back() {
        let port = DrillPort::new(|drill, reply| {
            let answer = match drill {
                Drill::Crash(_) => Ok(()),
                Drill::DiskErrors { .. } => Err(ClientError::Internal("no disk".into())),
            };
            let _ = reply.send(answer);
        });
        let crash = port
            .ask(Drill::Crash(CrashTarget::Host), Duration::from_secs(1))
            .await;
        assert_eq!(crash, Some(Ok(())));
        let silent = DrillPort::new(|_, _| {});
        let none = silent
            .ask(
                Drill::DiskErrors { pass: 0, fail: 1 },
                Duration::from_millis(10),
            )
            .await;
        assert_eq!(none, None);
    }
}
