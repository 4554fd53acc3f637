//! The node's counters by index: which actor runs counter `N` right now (if any), when
//! each was last used, and how many restarts there have been. (Their figures are in the
//! store, which an actor starts from.)
//!
//! **Counters are virtual actors.** A counter's actor exists only while the counter is
//! used: [`CounterTable::deliver`] hands a message to the running actor, or, when none
//! runs, to the [`CounterSupervisor`], which activates the counter from its record in
//! the store and delivers the message (the activator it installs here). The supervisor
//! retires a counter that has not been used for the idle period
//! ([`CounterTable::retire_if_idle`]). Whatever runs, the store holds every counter's
//! committed figures, and a collection reads an idle counter's from there
//! ([`CounterTable::ask_stats`]), without activating it.
//!
//! Handing a message to a running actor (a delivery, a collection's question),
//! retiring it and installing a new one all happen under the counter's slot lock: a
//! message handed to an actor is in its mailbox before the retirement, which the actor
//! handles after every message before it; a message after the retirement goes to the
//! supervisor. So no message is lost to a counter going idle.
//!
//! The table outlives every actor of the node. The [`CounterHost`], the journal and
//! collections read it; nobody looks counters up by name or through a process group.
//!
//! [`CounterSupervisor`]: super::supervisor::CounterSupervisor
//! [`CounterHost`]: super::host::CounterHost

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use ractor::concurrency::{oneshot, OneshotReceiver};
use ractor::{ActorId, ActorRef, MessagingErr, RpcReplyPort};
use shared::counter::{CounterError, CounterStats, StatsOutcome};
use shared::protocol::counter_name;
use tokio::time::Instant;

use super::counter::{stats_of, CounterMessage};
use super::record::CounterRecord;

/// Counter calls one collection keeps in flight at once on this node: enough to keep
/// every counter busy, few enough that a collection of 100,000 counters holds a few
/// hundred KB of pending replies rather than megabytes.
const FAN_OUT: usize = 1024;

/// Hands a message for a counter that is not running to whoever activates counters
/// (the supervisor); gives the message back if it cannot.
pub(crate) type Activator =
    Box<dyn Fn(u32, CounterMessage) -> Result<(), Option<CounterMessage>> + Send + Sync>;

/// Why a message did not reach a counter, and the message back if it still holds a
/// reply port to answer.
pub(crate) type Undelivered = (Option<CounterMessage>, CounterError);

/// One counter's place in the table: its actor while it runs, and its last use.
#[derive(Debug, Default)]
struct Slot {
    actor: Mutex<Option<ActorRef<CounterMessage>>>,
    /// Milliseconds since the table's epoch.
    used_ms: AtomicU64,
}

/// The node's counters, indices `0..len()`; see the module documentation.
pub(crate) struct CounterTable {
    node: String,
    /// When the table was made: every counter's start on this node.
    epoch: std::time::Instant,
    slots: Vec<Slot>,
    restarts: AtomicU64,
    activator: Mutex<Option<Activator>>,
}

impl std::fmt::Debug for CounterTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterTable")
            .field("node", &self.node)
            .field("counters", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl CounterTable {
    /// `counters` counters named `node/0..`, starting now, none running.
    pub(crate) fn new(node: &str, counters: u32) -> Self {
        Self {
            node: node.to_string(),
            epoch: std::time::Instant::now(),
            slots: (0..counters).map(|_| Slot::default()).collect(),
            restarts: AtomicU64::new(0),
            activator: Mutex::new(None),
        }
    }

    /// How many counters the node hosts.
    pub(crate) fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Counter `index`'s cluster-wide name.
    pub(crate) fn name(&self, index: u32) -> Option<String> {
        (index < self.len()).then(|| counter_name(&self.node, index))
    }

    /// When the node's counters started (the table's making).
    pub(crate) fn started(&self) -> std::time::Instant {
        self.epoch
    }

    /// The actor running counter `index`, if one is running.
    pub(crate) fn actor(&self, index: u32) -> Option<ActorRef<CounterMessage>> {
        self.slots.get(index as usize).and_then(|s| lock(s).clone())
    }

    /// Records which actor runs counter `index` (`None`: none), as a test sets up a
    /// node (the supervisor installs actors with [`CounterTable::install`]).
    #[cfg(test)]
    pub(crate) fn set_actor(&self, index: u32, actor: Option<ActorRef<CounterMessage>>) {
        if let Some(slot) = self.slots.get(index as usize) {
            *lock(slot) = actor;
        }
    }

    /// Puts `actor` in counter `index`'s slot, first handing it the store's record as it
    /// is now (`latest`), under the slot's lock: no message reaches the actor through
    /// the table before that record, and a commit that lands after the read is handed
    /// on to it (its delivery waits for the lock). Nothing is installed if the read
    /// fails.
    pub(crate) fn install<E>(
        &self,
        index: u32,
        actor: ActorRef<CounterMessage>,
        latest: impl FnOnce() -> Result<CounterRecord, E>,
    ) -> Result<(), E> {
        let Some(slot) = self.slots.get(index as usize) else {
            return Ok(());
        };
        let mut held = lock(slot);
        let record = latest()?;
        let _ = actor.cast(CounterMessage::Resume(record));
        *held = Some(actor);
        Ok(())
    }

    /// Empties counter `index`'s slot if actor `id` still holds it (a newer actor may
    /// have taken it since `id` stopped).
    pub(crate) fn clear_if(&self, index: u32, id: ActorId) {
        if let Some(slot) = self.slots.get(index as usize) {
            let mut actor = lock(slot);
            if actor.as_ref().is_some_and(|a| a.get_id() == id) {
                *actor = None;
            }
        }
    }

    /// Empties every slot (a new supervisor starts with no counter running).
    pub(crate) fn clear_all(&self) {
        for slot in &self.slots {
            *lock(slot) = None;
        }
    }

    /// Counters with an actor now.
    pub(crate) fn active(&self) -> usize {
        self.slots.iter().filter(|s| lock(s).is_some()).count()
    }

    /// Who activates counters that are not running (`None`: nobody, for now).
    pub(crate) fn set_activator(&self, activator: Option<Activator>) {
        *self.activator.lock().unwrap_or_else(|e| e.into_inner()) = activator;
    }

    /// Hands `message` to counter `index`: to its actor if one runs, else to the
    /// activator, which starts one from the store. Counts as a use of the counter.
    pub(crate) fn deliver(&self, index: u32, message: CounterMessage) -> Result<(), Undelivered> {
        let Some(slot) = self.slots.get(index as usize) else {
            let name = counter_name(&self.node, index);
            return Err((Some(message), CounterError::NoSuchCounter(name)));
        };
        slot.used_ms.store(self.now_ms(), Ordering::Relaxed);
        let mut message = message;
        {
            let actor = lock(slot);
            if let Some(actor) = actor.as_ref() {
                match actor.send_message(message) {
                    Ok(()) => return Ok(()),
                    // It stopped (failed, or retired): activated afresh below.
                    Err(MessagingErr::SendErr(back)) => message = back,
                    Err(_) => return Err((None, self.not_running(index))),
                }
            }
        }
        self.activate(index, message)
    }

    /// Hands `message` to counter `index` only if its actor runs (what is sent to a
    /// counter that is not running is in the store already, which it starts from).
    pub(crate) fn send_if_active(&self, index: u32, message: CounterMessage) {
        if let Some(slot) = self.slots.get(index as usize) {
            if let Some(actor) = lock(slot).as_ref() {
                let _ = actor.send_message(message);
            }
        }
    }

    fn activate(&self, index: u32, message: CounterMessage) -> Result<(), Undelivered> {
        let activator = self.activator.lock().unwrap_or_else(|e| e.into_inner());
        match activator.as_ref() {
            Some(activate) => {
                activate(index, message).map_err(|back| (back, self.not_running(index)))
            }
            None => Err((Some(message), self.not_running(index))),
        }
    }

    fn not_running(&self, index: u32) -> CounterError {
        CounterError::NotRunning(counter_name(&self.node, index))
    }

    /// Retires counter `index` if its actor has not been used for `idle`: empties its
    /// slot and tells the actor to stop once it has handled every message before this
    /// one ([`CounterMessage::Retire`]), under the slot's lock. Returns the actor.
    pub(crate) fn retire_if_idle(
        &self,
        index: u32,
        idle: std::time::Duration,
    ) -> Option<ActorRef<CounterMessage>> {
        let slot = self.slots.get(index as usize)?;
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let mut actor = lock(slot);
        let used = slot.used_ms.load(Ordering::Relaxed);
        if actor.is_none() || self.now_ms().saturating_sub(used) < idle_ms {
            return None;
        }
        let retired = actor.take()?;
        // An actor that is gone already failed: its end is the supervisor's business as
        // a failure, not a retirement.
        retired.cast(CounterMessage::Retire).ok()?;
        Some(retired)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The index of the counter named `name` on this node.
    pub(crate) fn index_of(&self, name: &str) -> Option<u32> {
        let (_, index) = shared::protocol::parse_counter_name(name)?;
        (self.name(index).as_deref() == Some(name)).then_some(index)
    }

    /// Counts one restart of a counter.
    pub(crate) fn restarted(&self) -> u64 {
        self.restarts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counter restarts so far.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The statistics of counters `indices`, in order: a running counter's own
    /// `GetStats` answer (`None` if it did not answer by `until`), an idle counter's from
    /// `records` (the store's records of `indices`, read after the collection began),
    /// computed as the counter would (its recent rate 0: it has had no change for the
    /// idle period). At most [`FAN_OUT`] calls are in flight at once; no task is spawned
    /// per counter, and no idle counter is activated.
    pub(crate) async fn ask_stats(
        &self,
        indices: Range<u32>,
        records: &[CounterRecord],
        until: Instant,
    ) -> Vec<Option<CounterStats>> {
        let first = indices.start;
        let end = (indices.end as usize).min(self.slots.len());
        let slots = self.slots.get(first as usize..end).unwrap_or_default();
        let mut answers = Vec::with_capacity(slots.len());
        let mut pending: VecDeque<(usize, OneshotReceiver<StatsOutcome>)> = VecDeque::new();
        let now = std::time::Instant::now();
        for (at, slot) in slots.iter().enumerate() {
            if pending.len() >= FAN_OUT {
                settle_oldest(&mut pending, &mut answers, until).await;
            }
            // Asked under the slot's lock, as `deliver` does: a retirement cannot come
            // between the look and the question.
            let asked = {
                let actor = lock(slot);
                actor.as_ref().and_then(|actor| {
                    let (tx, rx) = oneshot();
                    let port = RpcReplyPort::from(tx);
                    actor.cast(CounterMessage::GetStats(port)).ok().map(|()| rx)
                })
            };
            match asked {
                Some(rx) => {
                    answers.push(None);
                    pending.push_back((at, rx));
                }
                // Idle (or its actor just gone): its figures are the store's.
                None => {
                    let index = first + at as u32;
                    answers.push(records.get(at).map(|record| {
                        stats_of(
                            counter_name(&self.node, index),
                            record,
                            self.epoch,
                            now,
                            0.0,
                        )
                    }));
                }
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
    answers: &mut [Option<CounterStats>],
    until: Instant,
) {
    let Some((at, rx)) = pending.pop_front() else {
        return;
    };
    if let Ok(Ok(StatsOutcome(Ok(stats)))) = tokio::time::timeout_at(until, rx).await {
        answers[at] = Some(stats);
    }
}

fn lock(slot: &Slot) -> MutexGuard<'_, Option<ActorRef<CounterMessage>>> {
    // Each critical section replaces, clones or sends to one reference: nothing can be
    // left half-done by a panic elsewhere.
    slot.actor.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::{Counter, CounterArgs};
    use ractor::Actor;
    use std::time::Duration;

    fn record(value: i64, commit: u64) -> CounterRecord {
        CounterRecord {
            value,
            operations: 1,
            rejected: 0,
            commit,
        }
    }

    #[tokio::test]
    async fn stats_come_from_running_counters_and_from_the_store_for_idle_ones() {
        let table = CounterTable::new("table-test", 3);
        assert_eq!(table.len(), 3);
        assert_eq!(table.name(2).as_deref(), Some("table-test/2"));
        assert_eq!(table.name(3), None);
        assert_eq!(table.index_of("table-test/2"), Some(2));
        assert_eq!(table.index_of("table-test/3"), None);
        assert_eq!(table.index_of("other/1"), None);
        let mut running = Vec::new();
        for index in [0, 2] {
            let (actor, handle) =
                Actor::spawn(None, Counter, CounterArgs::new(table.name(index).unwrap()))
                    .await
                    .unwrap();
            let record = record(i64::from(index) + 1, 2);
            actor.cast(CounterMessage::Committed(record)).unwrap();
            table.set_actor(index, Some(actor.clone()));
            running.push((actor, handle));
        }
        assert_eq!(table.active(), 2);
        // The store's records: counter 1 is idle, and read from them.
        let records = [record(100, 1), record(7, 1), record(300, 1)];
        let stats = table
            .ask_stats(0..3, &records, Instant::now() + Duration::from_secs(5))
            .await;
        let values: Vec<_> = stats
            .iter()
            .map(|s| s.as_ref().map(|s| (s.name.as_str(), s.value)))
            .collect();
        assert_eq!(
            values,
            [
                Some(("table-test/0", 1)),
                Some(("table-test/1", 7)),
                Some(("table-test/2", 3))
            ]
        );
        assert_eq!(stats[1].as_ref().unwrap().recent_ops_per_sec, 0.0);
        // A page from the middle: its records are the page's, and it ends with the
        // table.
        let page = table
            .ask_stats(1..5, &records[1..], Instant::now() + Duration::from_secs(5))
            .await;
        let values: Vec<_> = page
            .iter()
            .map(|s| s.as_ref().map(|s| (s.name.as_str(), s.value)))
            .collect();
        assert_eq!(
            values,
            [Some(("table-test/1", 7)), Some(("table-test/2", 3))]
        );
        // Actors that are gone answer nothing, and a deadline that has passed does not
        // wait for them; an idle counter without a record has no figures either.
        for (actor, handle) in running {
            actor.stop(None);
            handle.await.unwrap();
        }
        let stats = table.ask_stats(0..3, &[], Instant::now()).await;
        assert_eq!(stats.len(), 3);
        assert!(stats.iter().all(Option::is_none), "{stats:?}");
    }

    /// An actor started from an older record is installed with the store's latest
    /// handed to it first: a message through the table after the install sees it; a
    /// failed read installs nothing.
    #[tokio::test]
    async fn an_installed_counter_holds_the_latest_record_before_any_message() {
        let table = CounterTable::new("table-install", 1);
        let mut args = CounterArgs::new(table.name(0).unwrap());
        args.record = record(1, 1);
        let (actor, handle) = Actor::spawn(None, Counter, args).await.unwrap();
        let failed: Result<(), &str> = table.install(0, actor.clone(), || Err("disk"));
        assert_eq!(failed, Err("disk"));
        assert_eq!(table.active(), 0, "nothing installed after a failed read");
        let installed: Result<(), &str> = table.install(0, actor.clone(), || Ok(record(5, 2)));
        assert_eq!(installed, Ok(()));
        let (tx, rx) = oneshot();
        table
            .deliver(0, CounterMessage::GetValue(RpcReplyPort::from(tx)))
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(rx.await.unwrap(), shared::counter::ValueOutcome(Ok(5)));
        actor.stop(None);
        handle.await.unwrap();
    }

    /// Messages for a counter that is not running go to the activator; a counter used
    /// within the idle period is kept, one idle beyond it retired after the messages
    /// before the retirement.
    #[tokio::test]
    async fn deliveries_activate_and_idle_counters_are_retired_after_their_messages() {
        let table = CounterTable::new("table-idle", 2);
        // Nobody activates: the message comes back with the reason.
        let undelivered = table.deliver(0, CounterMessage::Crash);
        assert!(matches!(
            undelivered,
            Err((Some(_), CounterError::NotRunning(_)))
        ));
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&asked);
        table.set_activator(Some(Box::new(move |index, _| {
            seen.lock().unwrap().push(index);
            Ok(())
        })));
        table
            .deliver(1, CounterMessage::Crash)
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(*asked.lock().unwrap(), [1]);
        assert!(matches!(
            table.deliver(5, CounterMessage::Crash),
            Err((Some(_), CounterError::NoSuchCounter(_)))
        ));
        // A running counter gets its messages itself.
        let (actor, handle) = Actor::spawn(None, Counter, CounterArgs::new(table.name(0).unwrap()))
            .await
            .unwrap();
        table.set_actor(0, Some(actor.clone()));
        table
            .deliver(0, CounterMessage::Committed(record(5, 1)))
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(
            *asked.lock().unwrap(),
            [1],
            "no activation for a running counter"
        );
        assert!(table.retire_if_idle(0, Duration::from_secs(3600)).is_none());
        // Idle for zero time: retired, after the message before it.
        let (tx, rx) = oneshot();
        table
            .deliver(0, CounterMessage::GetValue(RpcReplyPort::from(tx)))
            .map_err(|(_, e)| e)
            .unwrap();
        let retired = table.retire_if_idle(0, Duration::ZERO).unwrap();
        assert_eq!(retired.get_id(), actor.get_id());
        assert_eq!(table.active(), 0);
        let value = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert_eq!(
            value.expect("answered within 5 s").unwrap(),
            shared::counter::ValueOutcome(Ok(5)),
            "a message before the retirement is handled"
        );
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("a retired counter stops")
            .unwrap();
        // After it, the next message goes to the activator again.
        table
            .deliver(0, CounterMessage::Crash)
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(*asked.lock().unwrap(), [1, 0]);
    }
}
