//! The journal: every change to this node's store goes through it (changes to counters
//! from other nodes and from clients, this node's outgoing batches and their
//! acknowledgements), and reaches the counters only once it is committed.
//!
//! **Exactly once, receiving.** A batch of a stream is taken only if it is the next one
//! ([`Batch`]): one taken already (sent again by a sender that had no acknowledgement)
//! is dropped, and so is one beyond the next (an earlier one was lost on the way: the
//! sender learns from its next `Sync` where the stream stands, and sends again from
//! there). The batch's changes and the stream's new last batch are one commit, so a
//! crash can never separate them. A stream the store does not know starts after the
//! batch the sender says was acknowledged (its `base`): a new stream at 0.
//!
//! **Group commit.** Entries are appended to a queue. When no commit is running, the
//! whole queue becomes the next commit, written in a blocking task (the journal never
//! waits on the disk itself) that reports back; entries that arrive meanwhile wait for
//! the next one. So one fsync carries however many changes arrived during the previous
//! one: few under light load (low latency), many under heavy load (high throughput).
//!
//! **After a commit** the journal hands each counter the commit changed its new record,
//! one message per counter however many changes the commit held for it (a counter that
//! holds that commit already, because it was started from the store since, skips it),
//! answers every client waiting on a change in it with
//! the outcome the commit computed, tells the load clients their batches are issued, and
//! answers every `Sync` that was waiting for it: an acknowledgement means on disk.
//!
//! **A journal that starts** (again, after a failure) first waits for a commit its
//! predecessor may have left running, then resumes after the store's last commit and
//! hands every counter its record ([`CounterMessage::Resume`]): changes committed but
//! never handed on reach the counters that way. What its predecessor held uncommitted
//! was never acknowledged: senders send it again, clients were told nothing (and retry
//! with their id).
//!
//! **A failed commit** (a full or failing disk) applies nothing. Its entries stay at the
//! head of the queue and the commit is tried again every [`RETRY_EVERY`]; meanwhile new
//! client changes are refused at once, with the reason, and nothing is acknowledged
//! (senders' windows fill, and they wait). Reads go on (they never come here). When the
//! disk takes writes again, the queue is committed and everything proceeds.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use shared::counter::{ApplyOutcome, CounterError};
use shared::host::{Batch, StreamId};
use tracing::{error, info, warn};

use super::{CommitOutcome, Entry, ReceivedTotals, Store};
use crate::counters::counter::CounterMessage;
use crate::counters::table::CounterTable;
use crate::load::outbox::IssueFate;
use crate::metrics::NodeMetrics;

/// The registered name of node `node`'s journal (the host and the load clients find it
/// by this name).
pub(crate) fn journal_name(node: &str) -> String {
    format!("{node}/journal")
}

/// Now, in milliseconds since the Unix epoch (when a commit records client ids).
fn now_ms() -> u64 {
    crate::clock::unix_millis()
}

/// How often a commit that failed is tried again.
pub(crate) const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The journal behaviour.
#[derive(Debug, Default)]
pub(crate) struct Journal;

/// What the journal works with.
#[derive(Clone)]
pub(crate) struct JournalArgs {
    /// The store it commits to.
    pub(crate) store: Arc<Store>,
    /// Where the counters are.
    pub(crate) table: Arc<CounterTable>,
    /// What this node applied per incoming stream, for its description.
    pub(crate) received: Arc<ReceivedTotals>,
    /// Where each commit's duration and operations are recorded.
    pub(crate) metrics: Arc<NodeMetrics>,
}

/// Called once when an entry is committed (`Ok`), or with `Err` if it never will be by
/// this journal (it failed, or stopped, with the entry uncommitted).
pub(crate) struct OnCommit(Option<Box<dyn FnOnce(IssueFate) + Send>>);

impl OnCommit {
    /// Calls `f` with the entry's fate.
    pub(crate) fn new(f: impl FnOnce(IssueFate) + Send + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    fn committed(mut self) {
        if let Some(f) = self.0.take() {
            f(Ok(()));
        }
    }
}

impl Drop for OnCommit {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(()));
        }
    }
}

/// Who waits for an entry's commit.
pub(crate) enum Waiter {
    /// Nobody.
    None,
    /// A client, for the outcome of its [`Entry::Apply`].
    Client(RpcReplyPort<ApplyOutcome>),
    /// A load client, for its [`Entry::Outgoing`] to be issued.
    Issued(OnCommit),
}

/// Entries waiting for their commit, and who waits for each (the two in step).
#[derive(Default)]
pub(crate) struct Queue {
    entries: Vec<Entry>,
    waiters: Vec<Waiter>,
}

impl Queue {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn push(&mut self, entry: Entry, waiter: Waiter) {
        self.entries.push(entry);
        self.waiters.push(waiter);
    }

    /// Puts `later` after this queue's entries.
    fn append(&mut self, later: &mut Queue) {
        self.entries.append(&mut later.entries);
        self.waiters.append(&mut later.waiters);
    }

    /// Empties the queue, keeping its memory for the next commit (a commit can hold
    /// tens of thousands of entries: a new queue each time costs page faults).
    fn recycle(mut self) -> Queue {
        self.entries.clear();
        self.waiters.clear();
        self
    }
}

/// What a `Sync` waits for, and how it is answered.
enum SyncReply {
    /// With its own number.
    Plain(u64, RpcReplyPort<u64>),
    /// With the stream's last committed batch.
    Stream(String, RpcReplyPort<u64>),
}

/// Where an incoming stream stands.
#[derive(Debug, Clone, Copy, Default)]
struct InStream {
    /// The last batch taken (committed or queued).
    queued: u64,
    /// The last batch committed.
    committed: u64,
}

/// The journal's state.
pub(crate) struct JournalState {
    args: JournalArgs,
    queue: Queue,
    /// An empty queue, with the memory of an earlier commit's.
    spare: Queue,
    /// Entries appended and committed so far (a `Sync` waits for the first to reach it).
    appended: u64,
    committed: u64,
    next_commit: u64,
    in_flight: bool,
    streams: HashMap<Arc<str>, InStream>,
    /// Each incoming stream's key, made once ([`StreamId::key`]).
    keys: HashMap<StreamId, Arc<str>>,
    /// `Sync`s waiting: answered once `committed` reaches the first number.
    syncs: VecDeque<(u64, SyncReply)>,
    /// Why the last commit failed, while commits fail.
    failing: Option<String>,
    retry_scheduled: bool,
    /// `Drain`s waiting for the queue to empty.
    drains: Vec<RpcReplyPort<()>>,
}

/// Messages to the journal (local only).
#[derive(RactorMessage)]
pub(crate) enum JournalMessage {
    /// Commit this entry; whoever waits on it hears after the commit.
    Append(Entry, Waiter),
    /// Batches of incoming streams, in arrival order: each taken if it is its stream's
    /// next.
    Batches(Vec<Batch>),
    /// Answer with the number once every entry appended before it is committed.
    Sync(u64, RpcReplyPort<u64>),
    /// Answer with stream `key`'s last committed batch once every entry appended
    /// before it is committed.
    SyncStream(String, RpcReplyPort<u64>),
    /// A commit ended.
    Committed {
        /// Its number.
        number: u64,
        /// Its entries, in order (boxed: the message stays small).
        batch: Box<Queue>,
        /// What it did, or why it failed.
        result: Result<CommitOutcome, String>,
        /// How long it took, in seconds.
        seconds: f64,
    },
    /// Time to try a failed commit again.
    Retry,
    /// Answer once everything appended so far is committed (a clean stop waits for it).
    Drain(RpcReplyPort<()>),
}

impl JournalState {
    /// Starts the next commit if none is running and something is queued.
    fn commit_next(&mut self, myself: &ActorRef<JournalMessage>) {
        if self.in_flight
            || self.queue.is_empty()
            || (self.failing.is_some() && self.retry_scheduled)
        {
            return;
        }
        self.in_flight = true;
        let number = self.next_commit;
        let batch = std::mem::replace(&mut self.queue, std::mem::take(&mut self.spare));
        let store = Arc::clone(&self.args.store);
        if !store.is_durable() {
            let started = std::time::Instant::now();
            let result = store
                .commit(number, now_ms(), &batch.entries)
                .map_err(|e| e.to_string());
            let _ = myself.cast(JournalMessage::Committed {
                number,
                batch: Box::new(batch),
                result,
                seconds: started.elapsed().as_secs_f64(),
            });
            return;
        }
        let myself = myself.clone();
        // Counted before it leaves this thread: a journal that replaces this one (if it
        // fails now) waits for the commit, even one that has not begun yet.
        let handed_off = Store::hand_off(&store);
        // The blocking thread reports back itself: one hand-off fewer than awaiting it
        // from a task, and each costs tens of microseconds on a small machine.
        crate::runtime::busy_poll::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let commit =
                std::panic::AssertUnwindSafe(|| store.commit(number, now_ms(), &batch.entries));
            let result = match std::panic::catch_unwind(commit) {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("the commit panicked".to_string()),
            };
            drop(handed_off);
            let _ = myself.cast(JournalMessage::Committed {
                number,
                batch: Box::new(batch),
                result,
                seconds: started.elapsed().as_secs_f64(),
            });
        });
    }

    /// Takes batch `batch` if it is its stream's next; see the module documentation.
    fn take(&mut self, batch: Batch) -> Option<Entry> {
        let key = self.key(batch.stream);
        let stream = self.streams.entry(Arc::clone(&key)).or_insert(InStream {
            queued: batch.base,
            committed: batch.base,
        });
        if batch.base > stream.queued {
            warn!(stream = %key, base = batch.base, held = stream.queued,
                "the sender had batches acknowledged that this store does not hold (was it \
                 restored from an older copy?): carrying on after them");
            stream.queued = batch.base;
            stream.committed = stream.committed.max(batch.base);
        }
        if batch.seq != stream.queued + 1 {
            return None;
        }
        stream.queued = batch.seq;
        Some(Entry::Batch {
            stream: key,
            seq: batch.seq,
            changes: batch.changes,
        })
    }

    /// The key of stream `id`, made the first time it is seen.
    fn key(&mut self, id: StreamId) -> Arc<str> {
        let key = self.keys.entry(id).or_insert_with_key(|id| id.key().into());
        Arc::clone(key)
    }

    fn append(&mut self, entry: Entry, waiter: Waiter, myself: &ActorRef<JournalMessage>) {
        self.queue_entry(entry, waiter);
        self.commit_next(myself);
    }

    /// Queues `entry` for the next commit without starting one.
    fn queue_entry(&mut self, entry: Entry, waiter: Waiter) {
        self.appended += 1;
        self.queue.push(entry, waiter);
    }

    /// Answers `reply` now if everything appended is committed, else once it is.
    fn sync(&mut self, reply: SyncReply) {
        if self.committed >= self.appended {
            self.answer(reply);
        } else {
            self.syncs.push_back((self.appended, reply));
        }
    }

    fn answer(&self, reply: SyncReply) {
        match reply {
            SyncReply::Plain(n, reply) => {
                let _ = reply.send(n);
            }
            SyncReply::Stream(key, reply) => {
                let committed = self.streams.get(key.as_str()).map_or(0, |s| s.committed);
                let _ = reply.send(committed);
            }
        }
    }

    /// A commit returned: hand its changes on and answer whoever waited for them.
    fn committed(&mut self, number: u64, mut batch: Queue, outcome: CommitOutcome) {
        if let Some(why) = self.failing.take() {
            info!("the store takes writes again (it had failed: {why})");
        }
        self.next_commit = number + 1;
        self.committed += batch.len() as u64;
        for (key, record) in &outcome.streams {
            let stream = match self.streams.get_mut(key.as_str()) {
                Some(stream) => stream,
                None => self.streams.entry(key.as_str().into()).or_default(),
            };
            stream.committed = stream.committed.max(record.seq);
            stream.queued = stream.queued.max(record.seq);
        }
        self.args.received.update(outcome.streams);
        self.args.received.committed();
        // The counters first: a client that reads right after its answer sees its
        // change (its read reaches the counter after its new record). A counter that is
        // not running (it is being restarted) resumes from the store, which holds this
        // commit already.
        let table = &self.args.table;
        for (index, record) in outcome.counters {
            if let Some(actor) = table.actor(index) {
                let _ = actor.cast(CounterMessage::Committed(record));
            }
        }
        let mut applied = outcome.applied.into_iter();
        for (entry, waiter) in batch.entries.iter().zip(batch.waiters.drain(..)) {
            let result = matches!(entry, Entry::Apply { .. })
                .then(|| applied.next())
                .flatten();
            match (waiter, result) {
                (Waiter::Client(reply), Some(result)) => {
                    let _ = reply.send(ApplyOutcome(result));
                }
                (Waiter::Issued(on_commit), _) => on_commit.committed(),
                _ => {}
            }
        }
        if self.spare.entries.capacity() < batch.entries.capacity() {
            self.spare = batch.recycle();
        }
        if self.queue.is_empty() {
            for reply in self.drains.drain(..) {
                let _ = reply.send(());
            }
        }
        while self
            .syncs
            .front()
            .is_some_and(|(upto, _)| *upto <= self.committed)
        {
            if let Some((_, reply)) = self.syncs.pop_front() {
                self.answer(reply);
            }
        }
    }
}

impl Actor for Journal {
    type Msg = JournalMessage;
    type State = JournalState;
    type Arguments = JournalArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: JournalArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = Arc::clone(&args.store);
        let counters = args.table.len();
        let settled =
            crate::runtime::busy_poll::spawn_blocking(move || store.settled(counters)).await??;
        for (index, record) in (0..counters).zip(settled.records) {
            if let Some(counter) = args.table.actor(index) {
                let _ = counter.cast(CounterMessage::Resume(record));
            }
        }
        let streams = settled
            .streams
            .iter()
            .map(|(key, record)| {
                let at = InStream {
                    queued: record.seq,
                    committed: record.seq,
                };
                (Arc::from(key.as_str()), at)
            })
            .collect();
        args.received.update(settled.streams);
        Ok(JournalState {
            args,
            queue: Queue::default(),
            spare: Queue::default(),
            appended: 0,
            committed: 0,
            next_commit: settled.last_commit + 1,
            in_flight: false,
            streams,
            keys: HashMap::new(),
            syncs: VecDeque::new(),
            failing: None,
            retry_scheduled: false,
            drains: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JournalMessage::Append(entry, waiter) => {
                if let (Some(why), Entry::Apply { .. }, Waiter::Client(_)) =
                    (&state.failing, &entry, &waiter)
                {
                    let refused =
                        CounterError::Unavailable(format!("the store takes no writes: {why}"));
                    if let Waiter::Client(reply) = waiter {
                        let _ = reply.send(ApplyOutcome(Err(refused)));
                    }
                    return Ok(());
                }
                state.append(entry, waiter, &myself);
            }
            JournalMessage::Batches(batches) => {
                // The whole group is queued before a commit starts: one fsync for all.
                for batch in batches {
                    if let Some(entry) = state.take(batch) {
                        state.queue_entry(entry, Waiter::None);
                    }
                }
                state.commit_next(&myself);
            }
            JournalMessage::Sync(n, reply) => state.sync(SyncReply::Plain(n, reply)),
            JournalMessage::SyncStream(key, reply) => state.sync(SyncReply::Stream(key, reply)),
            JournalMessage::Committed {
                number,
                mut batch,
                result,
                seconds,
            } => {
                state.in_flight = false;
                match result {
                    Ok(outcome) => {
                        let ops = outcome.operations;
                        state
                            .args
                            .metrics
                            .committed(seconds, ops.applied, ops.rejected);
                        state.committed(number, *batch, outcome);
                    }
                    Err(why) => {
                        if state.failing.is_none() {
                            error!(error = %why, "a commit failed: nothing is acknowledged until the store takes writes again; client changes are refused meanwhile, reads go on");
                        }
                        state.failing = Some(why);
                        // Nothing of it was applied: it goes first in the next try.
                        batch.append(&mut state.queue);
                        state.queue = *batch;
                        if !state.retry_scheduled {
                            state.retry_scheduled = true;
                            myself.send_after(RETRY_EVERY, || JournalMessage::Retry);
                        }
                    }
                }
                state.commit_next(&myself);
            }
            JournalMessage::Drain(reply) => {
                if state.queue.is_empty() && !state.in_flight {
                    let _ = reply.send(());
                } else {
                    state.drains.push(reply);
                }
            }
            JournalMessage::Retry => {
                state.retry_scheduled = false;
                state.commit_next(&myself);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::{Counter, CounterArgs};
    use shared::counter::Delta;
    use shared::host::{Change, StreamId};

    fn batch(seq: u64, base: u64, delta: i128) -> JournalMessage {
        JournalMessage::Batches(vec![Batch {
            stream: StreamId {
                sender: "s".into(),
                origin: 7,
            },
            seq,
            base,
            changes: vec![Change {
                counter: 1,
                delta,
                operations: 1,
            }],
        }])
    }

    #[tokio::test]
    async fn each_batch_of_a_stream_is_applied_once_in_order_and_only_after_its_commit() {
        let table = Arc::new(CounterTable::new("journal-test", 2));
        let (store, _) = Store::memory(2);
        let store = Arc::new(store);
        let mut counters = Vec::new();
        for index in 0..2 {
            let (actor, handle) = Actor::spawn(
                None,
                Counter,
                CounterArgs::new(table.name(index).unwrap().to_string()),
            )
            .await
            .unwrap();
            table.set_actor(index, Some(actor.clone()));
            counters.push((actor, handle));
        }
        let received = Arc::new(ReceivedTotals::default());
        let (journal, handle) = Actor::spawn(
            None,
            Journal,
            JournalArgs {
                store: Arc::clone(&store),
                table: Arc::clone(&table),
                received: Arc::clone(&received),
                metrics: Arc::default(),
            },
        )
        .await
        .unwrap();
        let stream_at = async || {
            ractor::call!(journal, |r| JournalMessage::SyncStream(
                "s#0000000000000007".into(),
                r
            ))
        };
        // 1 and 2 in order; 2 again (a resend): skipped; 4 beyond a gap: dropped.
        for (seq, delta) in [(1, 40), (2, 2), (2, 2), (4, 1000)] {
            journal.cast(batch(seq, 0, delta)).unwrap();
        }
        assert_eq!(stream_at().await.unwrap(), 2, "the sender must send from 3");
        for (seq, delta) in [(3, 5), (4, 1)] {
            journal.cast(batch(seq, 0, delta)).unwrap();
        }
        let decrement = async || {
            ractor::call!(journal, |r| JournalMessage::Append(
                Entry::Apply {
                    counter: 1,
                    delta: Delta::Decrement(8),
                    id: Some("c-1".into()),
                },
                Waiter::Client(r)
            ))
            .unwrap()
        };
        let applied = |repeated| {
            ApplyOutcome(Ok(shared::counter::Applied {
                value: 40,
                repeated,
            }))
        };
        assert_eq!(decrement().await, applied(false));
        // Sent again with its id: the first result, and the counter does not move.
        assert_eq!(decrement().await, applied(true));
        assert_eq!(stream_at().await.unwrap(), 4);
        assert_eq!(
            ractor::call!(journal, |r| JournalMessage::Sync(9, r)).unwrap(),
            9
        );
        let value = ractor::call!(counters[1].0, CounterMessage::GetValue).unwrap();
        assert_eq!(value, shared::counter::ValueOutcome(Ok(40)));
        let record = store.record(1).unwrap();
        assert_eq!((record.value, record.operations), (40, 5));
        let from = received.by_sender();
        assert_eq!(
            (from[0].sender.as_str(), from[0].value, from[0].operations),
            ("s", 48, 4)
        );

        // A journal started again knows where the stream stands; a stream it has never
        // seen starts after the batch its sender says was acknowledged.
        journal.stop(None);
        handle.await.unwrap();
        let (journal, handle) = Actor::spawn(
            None,
            Journal,
            JournalArgs {
                store: Arc::clone(&store),
                table: Arc::clone(&table),
                received,
                metrics: Arc::default(),
            },
        )
        .await
        .unwrap();
        journal.cast(batch(4, 3, 1000)).unwrap();
        let other = |seq: u64, base: u64| {
            JournalMessage::Batches(vec![Batch {
                stream: StreamId {
                    sender: "t".into(),
                    origin: 1,
                },
                seq,
                base,
                changes: vec![Change {
                    counter: 0,
                    delta: 1,
                    operations: 1,
                }],
            }])
        };
        journal.cast(other(12, 11)).unwrap();
        assert_eq!(
            ractor::call!(journal, |r| JournalMessage::SyncStream(
                "t#0000000000000001".into(),
                r
            ))
            .unwrap(),
            12
        );
        assert_eq!(
            store.record(1).unwrap().value,
            40,
            "batch 4 was applied before"
        );
        assert_eq!(store.record(0).unwrap().value, 1);
        journal.stop(None);
        handle.await.unwrap();
        for (actor, handle) in counters {
            actor.stop(None);
            handle.await.unwrap();
        }
    }

    #[tokio::test]
    async fn an_entry_never_committed_says_so() {
        let (tx, rx) = std::sync::mpsc::channel();
        let on_commit = OnCommit::new(move |fate| {
            let _ = tx.send(fate);
        });
        drop(on_commit);
        assert_eq!(rx.recv().unwrap(), Err(()));
    }
}
