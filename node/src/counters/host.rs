//! The counter host: the one actor through which other nodes and clients reach this
//! node's counters, for changes and reads alike (one per node, in [`HOSTS_GROUP`],
//! named `NODE/host`).
//!
//! **Changes** (`Batch`, `Apply`) go to the node's [journal](crate::store::journal), in
//! arrival order, which takes each stream's batches exactly once, commits them to the
//! store and only then hands each counter it changed its new record. `Sync` goes the
//! same way and is answered once every change before it is on disk, with where the
//! sender's stream stands: the acknowledgement behind the senders' windows
//! ([`crate::load`]). A change naming no counter of this node is dropped here (and
//! logged), an `Apply` answered at once.
//!
//! Batches are handed on in groups: the first one pending makes the host send itself a
//! `Flush`, which comes after every message already queued, so under load one message
//! to the journal carries many batches; anything else bound for the journal goes after
//! the pending batches.
//!
//! **Reads** (`GetValue`, `GetStats`) go straight to the counter, which answers the
//! caller itself: counters are node-local actors (see [`counter`](super::counter)),
//! and the host hands over the caller's reply port. A counter that is not running is
//! started from the store first ([`CounterTable::deliver`]).
//!
//! A collection asks the host (`Collect`) for its counters' `GetStats`, a page of
//! [`COLLECT_PAGE`] counters at a time, each page answered with where the next one
//! starts. The host never waits for them itself: it starts the fan-out in a task and goes on forwarding
//! changes. At most [`MAX_COLLECTIONS`] such tasks collect at once (a semaphore whose
//! permits free themselves when a task ends); up to [`MAX_WAITING_COLLECTIONS`] more
//! wait for a permit until their own deadline. Beyond that the host answers at once that
//! it is busy, and the collector reports this node as not answering.
//!
//! Counters are reached through the node's [`CounterTable`]; a collection reads the
//! counters that are not running from the store, without starting them. The journal
//! is found by its registered name, and cached; a journal restarted since is looked up
//! again on the first failed send.
//!
//! [`CounterTable`]: super::table::CounterTable
//! [`COLLECT_PAGE`]: shared::host::COLLECT_PAGE
//! [`CounterTable::deliver`]: super::table::CounterTable::deliver

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{pg, Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use shared::counter::{ApplyOutcome, CounterError, StatsOutcome, ValueOutcome};
use shared::host::{Batch, CollectReply, HostMessage, LocalReport, StreamMark, COLLECT_PAGE};
use shared::protocol::{counter_name, validate_change_id, HOSTS_GROUP};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{error, warn};

use super::counter::CounterMessage;
use super::table::Undelivered;
use crate::facts::NodeFacts;
use crate::metrics::BatchRefusal;
use crate::store::journal::{journal_name, JournalMessage, Waiter};
use crate::store::{Entry, Store};

/// Collections this host runs at once.
pub(crate) const MAX_COLLECTIONS: usize = 8;

/// Collections waiting for a running one to finish, at most.
pub(crate) const MAX_WAITING_COLLECTIONS: usize = 64;

/// The longest a collection may take, whatever the caller asks.
pub(crate) const MAX_COLLECT_DEADLINE: Duration = Duration::from_secs(60);

/// The counter host behaviour.
#[derive(Debug, Default)]
pub(crate) struct CounterHost;

/// What the host works with.
#[derive(Clone)]
pub(crate) struct HostArgs {
    /// The node: its counters' table, and its description for collection reports.
    pub(crate) facts: Arc<NodeFacts>,
    /// The store, where a collection reads the counters that are not running.
    pub(crate) store: Arc<Store>,
}

/// The host's state.
pub(crate) struct HostState {
    /// The node: its counters' table, and its description for collection reports.
    facts: Arc<NodeFacts>,
    store: Arc<Store>,
    /// The journal, once found (see [`journal_name`]).
    journal: Option<ActorRef<JournalMessage>>,
    collections: Arc<Semaphore>,
    /// Collections waiting for a permit.
    waiting: Arc<AtomicUsize>,
    /// Operations in changes that named no counter of this node (logged per batch).
    unknown: u64,
    /// Batches dropped because their sums overflow.
    malformed: u64,
    /// Batches received and not yet handed to the journal (a `Flush` is on its way).
    pending: Vec<Batch>,
    /// Syncs held unanswered while the node is closed (see [`HostState::closed`]).
    held_syncs: Vec<RpcReplyPort<StreamMark>>,
}

/// Syncs a closed host holds unanswered, at most (beyond, it drops them).
const MAX_HELD_SYNCS: usize = 1_024;

impl HostState {
    /// While the node is closed ([`crate::cluster::departure`]), what would change a
    /// counter is not taken: a batch is dropped, a sync is held unanswered (so that its
    /// sender waits out its fence's timeout, as for a node that does not answer, rather
    /// than send again at once), and a client's change is refused with nothing
    /// applied; each batch and sync turned away is counted. Everything else passes (a
    /// flush of batches taken before among it); syncs held are let go once the node is
    /// open again. `None`: the message was dealt with here.
    fn closed(&mut self, message: HostMessage) -> Option<HostMessage> {
        let departing = &self.facts.departing;
        if !departing.closing() {
            self.held_syncs.clear();
            return Some(message);
        }
        match message {
            HostMessage::Batch(_) => departing.dropped_one(),
            HostMessage::Sync(_, reply) | HostMessage::SyncedBatch(_, reply) => {
                departing.dropped_one();
                if self.held_syncs.len() < MAX_HELD_SYNCS {
                    self.held_syncs.push(reply);
                }
            }
            HostMessage::Apply { reply, .. } => {
                let _ = reply.send(ApplyOutcome(Err(CounterError::Unavailable(
                    "the node is leaving the cluster".into(),
                ))));
            }
            other => return Some(other),
        }
        None
    }

    fn name(&self, index: u32) -> String {
        counter_name(&self.facts.name, index)
    }

    /// Hands `message` to counter `index` (started if it is not running); on failure
    /// gives the message back with the reason, so a reply port inside can still be
    /// answered.
    fn forward(&self, index: u32, message: CounterMessage) -> Result<(), Undelivered> {
        self.facts.table.deliver(index, message)
    }

    /// Hands `message` to the journal, after the pending batches; gives it back if no
    /// journal is running (it is being restarted).
    fn journal(&mut self, message: JournalMessage) -> Result<(), JournalMessage> {
        self.flush();
        self.send_journal(message)
    }

    /// Hands the pending batches to the journal. Without a journal they are lost here:
    /// never acknowledged, so their senders send them again.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let batches = std::mem::take(&mut self.pending);
            let _ = self.send_journal(JournalMessage::Batches(batches));
        }
    }

    fn send_journal(&mut self, message: JournalMessage) -> Result<(), JournalMessage> {
        let mut message = message;
        // Twice: a cached reference may belong to a journal that was restarted since.
        for fresh in [false, true] {
            if fresh || self.journal.is_none() {
                self.journal =
                    ractor::registry::where_is(journal_name(&self.facts.name)).map(ActorRef::from);
            }
            let Some(journal) = self.journal.as_ref() else {
                break;
            };
            match journal.send_message(message) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(back)) => message = back,
                Err(_) => return Err(JournalMessage::Retry),
            }
        }
        Err(message)
    }

    /// Queues batch `batch` for the journal, without the changes that name no counter
    /// of this node (they are logged). A batch whose sums overflow (only a sender that
    /// lies makes one) is dropped whole, with an ERROR.
    fn batch(&mut self, mut batch: Batch, myself: &ActorRef<HostMessage>) {
        let counters = self.facts.table.len();
        let before = batch.changes.len();
        let mut unknown = 0u64;
        batch.changes.retain(|c| {
            let known = c.counter < counters;
            if !known {
                unknown = unknown.saturating_add(c.operations);
            }
            known
        });
        if batch.changes.len() < before {
            self.unknown = self.unknown.saturating_add(unknown);
            warn!(
                operations = unknown,
                unknown_total = self.unknown,
                sender = %batch.stream.sender,
                "dropped changes for counters that do not exist on this node"
            );
        }
        if batch.totals().is_none() {
            self.malformed += 1;
            self.facts.metrics.batch_refused(BatchRefusal::SumsOverflow);
            if self.malformed.is_power_of_two() {
                error!(sender = %batch.stream.sender, seq = batch.seq, dropped = self.malformed,
                    "dropped a batch whose changes do not add up (their sums overflow): its \
                     sender is not an honest node");
            }
            return;
        }
        let first = self.pending.is_empty();
        self.pending.push(batch);
        // Should the host be unable to reach itself (it is stopping), the batch goes
        // on at once rather than wait for a `Flush` that never comes.
        if first && myself.cast(HostMessage::Flush).is_err() {
            self.flush();
        }
    }

    /// Starts a page of this node's part of a collection, counters `first` onwards, in a
    /// task (which may first wait, until the collection's deadline, for one of the
    /// running ones to end), or answers `None` at once if as many are running and
    /// waiting as allowed.
    fn collect(&self, deadline: Duration, first: u32, reply: ractor::RpcReplyPort<CollectReply>) {
        let semaphore = Arc::clone(&self.collections);
        let permit = match Arc::clone(&semaphore).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if self.waiting.load(Ordering::Relaxed) >= MAX_WAITING_COLLECTIONS => {
                let _ = reply.send(CollectReply(None));
                return;
            }
            Err(_) => {
                self.waiting.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let until = Instant::now() + deadline.min(MAX_COLLECT_DEADLINE);
        let info = self.facts.info();
        let table = Arc::clone(&self.facts.table);
        let store = Arc::clone(&self.store);
        let waiting = Arc::clone(&self.waiting);
        tokio::spawn(async move {
            let permit = match permit {
                Some(permit) => permit,
                None => {
                    let got = tokio::time::timeout_at(until, semaphore.acquire_owned()).await;
                    waiting.fetch_sub(1, Ordering::Relaxed);
                    match got {
                        Ok(Ok(permit)) => permit,
                        _ => {
                            let _ = reply.send(CollectReply(None));
                            return;
                        }
                    }
                }
            };
            // A page asked too late, or that waited past its deadline: nobody waits
            // for it.
            if Instant::now() >= until {
                let _ = reply.send(CollectReply(None));
                return;
            }
            // Read after `info`: what the counters hold is at least as recent as what
            // the node says it applied. Read even if every counter runs now: one may be
            // retired while the collection goes on.
            let len = table.len();
            let first = first.min(len);
            let page = first..len.min(first.saturating_add(COLLECT_PAGE));
            let indices = page.clone();
            let read = crate::runtime::busy_poll::spawn_blocking(move || store.records(indices));
            let records = match read.await {
                Ok(Ok(records)) => records,
                failed => {
                    // Idle counters are then reported missing: the collection says so.
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => String::new(),
                    };
                    warn!(error = %why, "a collection could not read the idle counters from the store");
                    Vec::new()
                }
            };
            let counters = table.ask_stats(page.clone(), &records, until).await;
            let next = (page.end < len).then_some(page.end);
            let report = LocalReport {
                info,
                first,
                counters,
                next,
            };
            let _ = reply.send(CollectReply(Some(report)));
            drop(permit);
        });
    }
}

impl Actor for CounterHost {
    type Msg = HostMessage;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        HostArgs { facts, store }: HostArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(HOSTS_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(HostState {
            journal: None,
            facts,
            store,
            collections: Arc::new(Semaphore::new(MAX_COLLECTIONS)),
            waiting: Arc::default(),
            unknown: 0,
            malformed: 0,
            pending: Vec::new(),
            held_syncs: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that gave up has dropped its reply port: failing to answer it is not
        // the host's problem, so send errors on reply ports are ignored.
        let Some(message) = state.closed(message) else {
            return Ok(());
        };
        match message {
            HostMessage::Batch(batch) => state.batch(batch, &myself),
            HostMessage::Flush => state.flush(),
            HostMessage::Sync(stream, reply) => {
                // Without a journal there is no answer: the sender's wait runs out, as
                // for a node that does not answer, and it sends again.
                let _ = state.journal(JournalMessage::SyncStream(stream.key(), reply));
            }
            HostMessage::SyncedBatch(batch, reply) => {
                let stream = batch.stream.key();
                state.batch(batch, &myself);
                // After the batch: the journal gets the pending batches first.
                let _ = state.journal(JournalMessage::SyncStream(stream, reply));
            }
            HostMessage::Apply {
                counter,
                delta,
                id,
                reply,
            } => {
                if counter >= state.facts.table.len() {
                    let _ = reply.send(ApplyOutcome(Err(CounterError::NoSuchCounter(
                        state.name(counter),
                    ))));
                } else if let Err(why) = validate_change_id(&id) {
                    // The agent checks ids too; a member that sends here directly is held
                    // to the same rule.
                    let _ = reply.send(ApplyOutcome(Err(CounterError::Unavailable(why))));
                } else {
                    let entry = Entry::Apply { counter, delta, id };
                    if let Err(JournalMessage::Append(_, Waiter::Client(reply))) =
                        state.journal(JournalMessage::Append(entry, Waiter::Client(reply)))
                    {
                        let _ = reply.send(ApplyOutcome(Err(CounterError::Unavailable(
                            "the node's journal is restarting".into(),
                        ))));
                    }
                }
            }
            HostMessage::GetValue(counter, reply) => {
                if let Err((Some(CounterMessage::GetValue(reply)), error)) =
                    state.forward(counter, CounterMessage::GetValue(reply))
                {
                    let _ = reply.send(ValueOutcome(Err(error)));
                }
            }
            HostMessage::GetStats(counter, reply) => {
                if let Err((Some(CounterMessage::GetStats(reply)), error)) =
                    state.forward(counter, CounterMessage::GetStats(reply))
                {
                    let _ = reply.send(StatsOutcome(Err(error)));
                }
            }
            HostMessage::Collect {
                deadline_ms,
                first,
                reply,
            } => {
                state.collect(Duration::from_millis(deadline_ms), first, reply);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::{Counter, CounterArgs};
    use crate::testing::{Hoarder, WritePath};
    use shared::counter::Delta;
    use shared::host::{Change, StreamId};

    fn batch(seq: u64, changes: Vec<Change>) -> HostMessage {
        HostMessage::Batch(Batch {
            stream: stream(),
            seq,
            base: 0,
            changes,
        })
    }

    fn stream() -> StreamId {
        StreamId {
            sender: "elsewhere".into(),
            origin: 3,
        }
    }

    #[tokio::test]
    async fn forwards_in_order_collects_and_answers_for_missing_counters() {
        let facts = Arc::new(NodeFacts::for_tests("host-test", 2));
        let table = Arc::clone(&facts.table);
        let (counter, counter_handle) = Actor::spawn(
            None,
            Counter,
            CounterArgs::new(counter_name("host-test", 0)),
        )
        .await
        .unwrap();
        table.set_actor(0, Some(counter.clone()));
        let path = WritePath::start(&facts).await;
        let host = path.host.clone();

        // Counter 7 does not exist: that change is dropped, the rest applies.
        let changes = |delta: i128, operations: u64| {
            vec![
                Change {
                    counter: 0,
                    delta,
                    operations,
                },
                Change {
                    counter: 7,
                    delta: 1,
                    operations: 1,
                },
            ]
        };
        host.cast(batch(1, changes(40, 8))).unwrap();
        host.cast(batch(2, changes(-2, 1))).unwrap();
        // Sent again: applied once.
        host.cast(batch(2, changes(-2, 1))).unwrap();
        let applied = ractor::call!(host, |reply| HostMessage::Apply {
            counter: 0,
            delta: Delta::Increment(1),
            id: "one".into(),
            reply
        })
        .unwrap();
        assert_eq!(
            applied,
            ApplyOutcome(Ok(shared::counter::Applied {
                value: 39,
                repeated: false
            }))
        );
        let StatsOutcome(stats) = ractor::call!(host, |r| HostMessage::GetStats(0, r)).unwrap();
        assert_eq!(stats.unwrap().operations, 10);
        assert_eq!(
            ractor::call!(host, |r| HostMessage::Sync(stream(), r))
                .unwrap()
                .seq,
            2
        );
        // Answered `Sync`: every change before it is in the store.
        let record = path.store.record(0).unwrap();
        assert_eq!((record.value, record.operations), (39, 10));
        // A change for a counter that does not exist is refused (and never stored).
        let refused = ractor::call!(host, |reply| HostMessage::Apply {
            counter: 5,
            delta: Delta::Increment(1),
            id: "two".into(),
            reply
        })
        .unwrap();
        assert_eq!(
            refused,
            ApplyOutcome(Err(CounterError::NoSuchCounter("host-test/5".into())))
        );

        // Index 1 is in range but not running; index 5 does not exist.
        assert_eq!(
            ractor::call!(host, |r| HostMessage::GetValue(1, r)).unwrap(),
            ValueOutcome(Err(CounterError::NotRunning("host-test/1".into())))
        );
        assert_eq!(
            ractor::call!(host, |r| HostMessage::GetValue(5, r)).unwrap(),
            ValueOutcome(Err(CounterError::NoSuchCounter("host-test/5".into())))
        );

        // One call collects every counter (they fit one page): the running one
        // answers, the other is read from the store.
        let report = collect_page(&host, 0).await;
        assert_eq!(report.info.name, "host-test");
        assert_eq!((report.first, report.next), (0, None));
        let values: Vec<_> = report
            .counters
            .iter()
            .map(|s| s.as_ref().map(|s| (s.name.as_str(), s.value)))
            .collect();
        assert_eq!(
            values,
            [Some(("host-test/0", 39)), Some(("host-test/1", 0))]
        );

        // A counter restarted since is found again.
        counter.stop(None);
        counter_handle.await.unwrap();
        let (again, again_handle) = Actor::spawn(
            None,
            Counter,
            CounterArgs::new(counter_name("host-test", 0)),
        )
        .await
        .unwrap();
        table.set_actor(0, Some(again.clone()));
        assert_eq!(
            ractor::call!(host, |r| HostMessage::GetValue(0, r)).unwrap(),
            ValueOutcome(Ok(0))
        );
        // A batch and its `Sync` in one message: taken, and answered once committed.
        let synced = Batch {
            stream: stream(),
            seq: 3,
            base: 0,
            changes: vec![Change {
                counter: 0,
                delta: 5,
                operations: 1,
            }],
        };
        let mark = ractor::call!(host, |r| HostMessage::SyncedBatch(synced, r)).unwrap();
        assert_eq!((mark.seq, mark.value, mark.operations), (3, 43, 10));
        assert_eq!(path.store.record(0).unwrap().value, 44);
        again.stop(None);
        again_handle.await.unwrap();
        path.stop().await;
    }

    /// Past the collections running and waiting, one more is refused at once; changes
    /// flow meanwhile; and the waiting ones are served as the running ones end.
    #[tokio::test]
    async fn collections_beyond_the_bound_are_refused_and_the_waiting_served_in_turn() {
        let facts = Arc::new(NodeFacts::for_tests("host-busy", 1));
        // A counter that never answers keeps every collection waiting on it.
        let (silent, silent_handle) = Hoarder::<CounterMessage>::start(None, None).await;
        facts.table.set_actor(0, Some(silent.clone()));
        let path = WritePath::start(&facts).await;
        let host = path.host.clone();
        let mut running = Vec::new();
        for _ in 0..MAX_COLLECTIONS + MAX_WAITING_COLLECTIONS {
            let (tx, rx) = ractor::concurrency::oneshot();
            let ask = HostMessage::Collect {
                deadline_ms: 60_000,
                first: 0,
                reply: tx.into(),
            };
            host.cast(ask).unwrap();
            running.push(rx);
        }
        let CollectReply(refused) = ractor::call!(host, |reply| HostMessage::Collect {
            deadline_ms: 60_000,
            first: 0,
            reply
        })
        .unwrap();
        assert!(
            refused.is_none(),
            "a collection beyond the bound was queued"
        );
        // Changes still flow meanwhile: the host never waits for a collection.
        assert_eq!(
            ractor::call!(host, |r| HostMessage::Sync(stream(), r))
                .unwrap()
                .seq,
            0
        );
        // The silent counter goes: the running collections end, and the waiting ones
        // get their turn.
        silent.stop(None);
        silent_handle.await.unwrap();
        for rx in running {
            let CollectReply(report) = rx.await.unwrap();
            assert!(report.is_some());
        }
        path.stop().await;
    }

    /// Page `first` of the host's part of a collection.
    async fn collect_page(host: &ActorRef<HostMessage>, first: u32) -> LocalReport {
        let CollectReply(report) = ractor::call!(host, |reply| HostMessage::Collect {
            deadline_ms: 10_000,
            first,
            reply
        })
        .unwrap();
        report.expect("not busy")
    }

    /// A node of more counters than a page answers in consecutive pages, each saying
    /// where the next starts, every counter once and by its own name; a page asked past
    /// the end is empty.
    #[tokio::test]
    async fn a_large_node_answers_in_pages() {
        let counters = 2 * COLLECT_PAGE + 7;
        let facts = Arc::new(NodeFacts::for_tests("host-pages", counters));
        let path = WritePath::start(&facts).await;
        let host = path.host.clone();
        let (mut first, mut pages, mut seen) = (Some(0), 0, 0u32);
        while let Some(at) = first {
            let report = collect_page(&host, at).await;
            assert_eq!(report.first, at);
            assert!(report.counters.len() <= COLLECT_PAGE as usize);
            for (offset, stats) in report.counters.iter().enumerate() {
                let stats = stats
                    .as_ref()
                    .expect("an idle counter is read from the store");
                assert_eq!(stats.name, counter_name("host-pages", at + offset as u32));
            }
            seen += report.counters.len() as u32;
            pages += 1;
            first = report.next;
            if let Some(next) = first {
                assert_eq!(next, at + report.counters.len() as u32);
            }
        }
        assert_eq!((pages, seen), (3, counters));
        let past = collect_page(&host, counters + 5).await;
        assert_eq!(
            (past.first, past.counters.len(), past.next),
            (counters, 0, None)
        );
        // A page whose deadline has passed is not worth reading: nobody waits for it.
        let CollectReply(late) = ractor::call!(host, |reply| HostMessage::Collect {
            deadline_ms: 0,
            first: 0,
            reply
        })
        .unwrap();
        assert!(late.is_none());
        path.stop().await;
    }
}
