//! The node's counters by index: which actor runs counter `N` right now, when it first
//! started, and how many restarts there have been. (Their figures are in the store,
//! where a restarted counter resumes from.)
//!
//! The table outlives every actor of the node: the [`CounterSupervisor`] fills a slot
//! when it starts a counter and empties it when the counter fails. The [`CounterHost`],
//! the journal and collections read it; nobody looks counters up by name or through a
//! process group.
//!
//! [`CounterSupervisor`]: super::supervisor::CounterSupervisor
//! [`CounterHost`]: super::host::CounterHost

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use ractor::concurrency::{oneshot, OneshotReceiver};
use ractor::{ActorRef, RpcReplyPort};
use shared::counter::{CounterStats, StatsOutcome};
use shared::protocol::counter_name;
use tokio::time::Instant;

use super::counter::CounterMessage;

/// Counter calls one collection keeps in flight at once on this node: enough to keep
/// every counter busy, few enough that a collection of 100,000 counters holds a few
/// hundred KB of pending replies rather than megabytes.
const FAN_OUT: usize = 1024;

/// One counter's place in the table.
#[derive(Debug)]
struct Slot {
    name: String,
    started: std::time::Instant,
    actor: Mutex<Option<ActorRef<CounterMessage>>>,
}

/// The node's counters, indices `0..len()`; see the module documentation.
#[derive(Debug)]
pub(crate) struct CounterTable {
    slots: Vec<Slot>,
    restarts: AtomicU64,
}

impl CounterTable {
    /// `counters` counters named `node/0..`, starting now.
    pub(crate) fn new(node: &str, counters: u32) -> Self {
        let now = std::time::Instant::now();
        Self {
            slots: (0..counters)
                .map(|index| Slot {
                    name: counter_name(node, index),
                    started: now,
                    actor: Mutex::new(None),
                })
                .collect(),
            restarts: AtomicU64::new(0),
        }
    }

    /// How many counters the node hosts.
    pub(crate) fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Counter `index`'s cluster-wide name.
    pub(crate) fn name(&self, index: u32) -> Option<&str> {
        self.slots.get(index as usize).map(|s| s.name.as_str())
    }

    /// When counter `index` first started on this node.
    pub(crate) fn started(&self, index: u32) -> Option<std::time::Instant> {
        self.slots.get(index as usize).map(|s| s.started)
    }

    /// The actor running counter `index`, if one is running.
    pub(crate) fn actor(&self, index: u32) -> Option<ActorRef<CounterMessage>> {
        self.slots.get(index as usize).and_then(|s| lock(s).clone())
    }

    /// Records which actor runs counter `index` (`None`: none, until a restart).
    pub(crate) fn set_actor(&self, index: u32, actor: Option<ActorRef<CounterMessage>>) {
        if let Some(slot) = self.slots.get(index as usize) {
            *lock(slot) = actor;
        }
    }

    /// The index of the counter named `name` on this node.
    pub(crate) fn index_of(&self, name: &str) -> Option<u32> {
        let (_, index) = shared::protocol::parse_counter_name(name)?;
        (self.name(index) == Some(name)).then_some(index)
    }

    /// Counts one restart of a counter.
    pub(crate) fn restarted(&self) -> u64 {
        self.restarts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counter restarts so far.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Every counter's own `GetStats` answer, or `None` for a counter that is not
    /// running or did not answer by `until`. At most [`FAN_OUT`] calls are in flight
    /// at once; no task is spawned per counter.
    pub(crate) async fn ask_all_stats(
        &self,
        until: Instant,
    ) -> Vec<(String, Option<CounterStats>)> {
        let mut answers = Vec::with_capacity(self.slots.len());
        let mut pending: VecDeque<(usize, OneshotReceiver<StatsOutcome>)> = VecDeque::new();
        for (index, slot) in self.slots.iter().enumerate() {
            answers.push((slot.name.clone(), None));
            if pending.len() >= FAN_OUT {
                settle_oldest(&mut pending, &mut answers, until).await;
            }
            let Some(actor) = lock(slot).clone() else {
                continue;
            };
            let (tx, rx) = oneshot();
            let port = RpcReplyPort::from(tx);
            if actor.cast(CounterMessage::GetStats(port)).is_ok() {
                pending.push_back((index, rx));
            }
        }
        while !pending.is_empty() {
            settle_oldest(&mut pending, &mut answers, until).await;
        }
        answers
    }
}

/// Waits (until `until` at most) for the oldest pending answer and records it.
async fn settle_oldest(
    pending: &mut VecDeque<(usize, OneshotReceiver<StatsOutcome>)>,
    answers: &mut [(String, Option<CounterStats>)],
    until: Instant,
) {
    let Some((index, rx)) = pending.pop_front() else {
        return;
    };
    if let Ok(Ok(StatsOutcome(Ok(stats)))) = tokio::time::timeout_at(until, rx).await {
        answers[index].1 = Some(stats);
    }
}

fn lock(slot: &Slot) -> MutexGuard<'_, Option<ActorRef<CounterMessage>>> {
    // Each critical section replaces or clones one reference: nothing can be left
    // half-done by a panic elsewhere.
    slot.actor.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::{Counter, CounterArgs};
    use crate::counters::record::CounterRecord;
    use ractor::Actor;
    use std::time::Duration;

    #[tokio::test]
    async fn stats_come_from_every_running_counter_and_none_for_the_rest() {
        let table = CounterTable::new("table-test", 3);
        assert_eq!(table.len(), 3);
        assert_eq!(table.index_of("table-test/2"), Some(2));
        assert_eq!(table.index_of("table-test/3"), None);
        assert_eq!(table.index_of("other/1"), None);
        let mut running = Vec::new();
        for index in [0, 2] {
            let (actor, handle) = Actor::spawn(
                None,
                Counter,
                CounterArgs::new(table.name(index).unwrap().to_string()),
            )
            .await
            .unwrap();
            let record = CounterRecord {
                value: i64::from(index) + 1,
                operations: 1,
                rejected: 0,
                commit: 1,
            };
            actor.cast(CounterMessage::Committed(record)).unwrap();
            table.set_actor(index, Some(actor.clone()));
            running.push((actor, handle));
        }
        let stats = table
            .ask_all_stats(Instant::now() + Duration::from_secs(5))
            .await;
        let values: Vec<_> = stats
            .iter()
            .map(|(name, s)| (name.as_str(), s.as_ref().map(|s| s.value)))
            .collect();
        assert_eq!(
            values,
            [
                ("table-test/0", Some(1)),
                ("table-test/1", None),
                ("table-test/2", Some(3))
            ]
        );
        for (actor, handle) in running {
            actor.stop(None);
            handle.await.unwrap();
        }
        // A deadline that has passed gets no answer, and does not wait.
        let stats = table.ask_all_stats(Instant::now()).await;
        assert!(stats.iter().all(|(_, s)| s.is_none()));
    }
}
