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
//! whole queue becomes the next commit, written in a blocking task that reports back;
//! entries that arrive meanwhile wait for the next one. So one fsync carries however
//! many changes arrived during the previous one: few under light load (low latency),
//! many under heavy load (high throughput).
//! A queue that holds only traffic between nodes also waits until the group commit
//! interval since the last commit is over ([`pace`](super::pace)), so a trickle from
//! many senders costs at most one fsync per interval; a client's change goes at once.
//!
//! **One client's change alone** (a client sending one change after another, or a
//! single change on a quiet node) is committed by the journal itself, on its own
//! thread, while nothing else competes ([`own_thread`](super::own_thread)): two
//! threads fewer to wake per change.
//!
//! **After a commit** (once it is durable: its record in the store's redo log; the
//! store file takes it right after, and the next commit waits for that) the journal
//! hands each counter the commit changed its new record,
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
//! **A failed commit** (a full or failing disk) may or may not have reached the disk: a
//! sync can report an error after the data landed. Its entries stay at the head of the
//! queue and the commit is tried again every [`RETRY_EVERY`]; meanwhile new client
//! changes are refused at once, with the reason, and nothing is acknowledged (senders'
//! windows fill, and they wait). Reads go on (they never come here). Each retry first
//! learns from the store itself what it holds (the last commit, every counter's record,
//! every stream's), never from what this journal sent it, and hands the counters their
//! records; then it commits the same entries, each idempotent against the store (see
//! [`plan`](super::plan)): what landed the first time applies nothing now. When the disk
//! takes writes again, everything proceeds.
//!
//! **Bounds.** A stream is a permanent record, so a sender makes at most
//! [`MAX_STREAMS_PER_SENDER`] and all senders at most [`MAX_STREAMS`]; a batch that
//! would start one more is dropped, with an ERROR. An honest node starts a new stream
//! only when its store is new.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use shared::counter::{ApplyOutcome, CounterError};
use shared::host::{Batch, StreamId, StreamMark};
use tracing::{error, info};

use super::own_thread::{Next, OwnThread};
use super::pace::{Pace, Queued, Start};
use super::{CommitOutcome, Cover, Entry, InRecord, Outcome, ReceivedTotals, Settled, Store};
use crate::counters::counter::CounterMessage;
use crate::counters::table::CounterTable;
use crate::metrics::{BatchRefusal, NodeMetrics};
use crate::runtime::busy_poll;

/// The registered name of node `node`'s journal (the host and the load clients find it
/// by this name).
pub(crate) fn journal_name(node: &str) -> String {
    format!("{node}/journal")
}

/// How often a commit that failed is tried again.
pub(crate) const RETRY_EVERY: Duration = Duration::from_millis(500);

#[cfg(test)]
thread_local! {
    /// Commits a journal ran on this thread, its own (for the tests).
    static COMMITS_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The most incoming streams one sender may have in this node's store.
pub(crate) const MAX_STREAMS_PER_SENDER: usize = 64;

/// The most incoming streams this node's store keeps.
pub(crate) const MAX_STREAMS: usize = 4096;

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
    /// Where each commit's duration and operations, failed commits and refused
    /// streams are recorded.
    pub(crate) metrics: Arc<NodeMetrics>,
    /// The least time between two commits that hold only traffic between nodes
    /// (`--group-commit-ms`; zero: no pacing).
    pub(crate) group_commit: Duration,
    /// How far the copy of the store on another node covers the commits (see
    /// `crate::copies`): a commit is answered only once covered. `None`: one copy.
    pub(crate) covered: Option<Arc<Cover>>,
}

/// Called once with `true` when an entry is committed, or with `false` if it never will
/// be by this journal (it failed, or stopped, with the entry uncommitted; or the store
/// refused it).
pub(crate) struct OnCommit(Option<Box<dyn FnOnce(bool) + Send>>);

impl OnCommit {
    /// Calls `f` with the entry's fate.
    pub(crate) fn new(f: impl FnOnce(bool) + Send + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    fn committed(mut self) {
        if let Some(f) = self.0.take() {
            f(true);
        }
    }
}

impl Drop for OnCommit {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(false);
        }
    }
}

/// Who waits for an entry's commit.
pub(crate) enum Waiter {
    /// Nobody.
    None,
    /// A client, for the outcome of its [`Entry::Apply`].
    Client(RpcReplyPort<ApplyOutcome>),
    /// A load client, for its [`Entry::Outgoing`] to be issued (or its [`Entry::Adopt`]
    /// committed).
    Issued(OnCommit),
}

/// Entries waiting for their commit, and who waits for each (the two in step).
#[derive(Default)]
pub(crate) struct Queue {
    entries: Vec<Entry>,
    waiters: Vec<Waiter>,
    /// How many of the waiters are clients.
    clients: usize,
    /// Operations the entries carry.
    operations: u64,
    /// Entries that carry operations.
    changes: usize,
}

impl Queue {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn push(&mut self, entry: Entry, waiter: Waiter) {
        self.clients += usize::from(matches!(waiter, Waiter::Client(_)));
        let operations = entry.operations();
        self.operations += operations;
        self.changes += usize::from(operations > 0);
        self.entries.push(entry);
        self.waiters.push(waiter);
    }

    /// Puts `later` after this queue's entries.
    fn append(&mut self, later: &mut Queue) {
        self.entries.append(&mut later.entries);
        self.waiters.append(&mut later.waiters);
        self.clients += std::mem::take(&mut later.clients);
        self.operations += std::mem::take(&mut later.operations);
        self.changes += std::mem::take(&mut later.changes);
    }

    /// Empties the queue, keeping its memory for the next commit (a commit can hold
    /// tens of thousands of entries: a new queue each time costs page faults).
    fn recycle(mut self) -> Queue {
        self.entries.clear();
        self.waiters.clear();
        self.clients = 0;
        self.operations = 0;
        self.changes = 0;
        self
    }
}

/// What a `Sync` waits for, and how it is answered.
enum SyncReply {
    /// With its own number.
    Plain(u64, RpcReplyPort<u64>),
    /// With where the stream stands in the store.
    Stream(String, RpcReplyPort<StreamMark>),
}

/// Where an incoming stream stands.
#[derive(Debug, Clone, Copy, Default)]
struct InStream {
    /// The last batch taken (committed or queued).
    queued: u64,
    /// The stream's record as of the last commit.
    committed: InRecord,
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
    /// A commit reported, and its task (on a blocking thread, or this one) still landing
    /// it in the store file; the next waits for it, so that one thread at a time commits
    /// (each thread keeps memory of its own for what it allocates).
    landing: bool,
    /// When the next commit may start.
    pace: Pace,
    /// Whether a [`JournalMessage::Due`] is on its way.
    due_scheduled: bool,
    streams: HashMap<Arc<str>, InStream>,
    /// Each incoming stream's key, made once ([`StreamId::key`]).
    keys: HashMap<StreamId, Arc<str>>,
    /// Streams per sender, in the store or queued.
    senders: HashMap<String, usize>,
    /// Batches dropped because they would have started a stream beyond the bounds.
    refused_streams: u64,
    /// `Sync`s waiting: answered once `committed` reaches the first number.
    syncs: VecDeque<(u64, SyncReply)>,
    /// Whether a commit runs on the journal's own thread.
    own_thread: OwnThread,
    /// A commit for the journal's own thread: run at the end of the message that
    /// started it, whatever the message (see [`Journal::handle`]).
    here: Option<Box<dyn FnOnce() + Send>>,
    /// Why the last commit failed, while commits fail.
    failing: Option<String>,
    retry_scheduled: bool,
    /// `Drain`s waiting for the queue to empty.
    drains: Vec<RpcReplyPort<()>>,
    /// Commits durable here and waiting for the copy to cover them, in order.
    parked: VecDeque<(u64, Queue, CommitOutcome)>,
    /// Whether a [`JournalMessage::Covered`] is on its way.
    cover_awaited: bool,
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
    /// Answer with where stream `key` stands in the store once every entry appended
    /// before it is committed.
    SyncStream(String, RpcReplyPort<StreamMark>),
    /// A commit ended.
    Committed {
        /// Its number.
        number: u64,
        /// Its entries, in order (boxed: the message stays small).
        batch: Box<Queue>,
        /// What the store held before it, when the commit was a retry after a failure.
        learned: Option<Box<Settled>>,
        /// What it did, or why it failed.
        result: Result<CommitOutcome, String>,
        /// How long it took, in seconds.
        seconds: f64,
    },
    /// The commit reported last is in the store file too (its blocking task ended):
    /// the next may start.
    Landed,
    /// Time to try a failed commit again.
    Retry,
    /// The group commit interval is over: commit what is queued.
    Due,
    /// Answer once everything appended so far is committed (a clean stop waits for it).
    Drain(RpcReplyPort<()>),
    /// The copy covers more commits: those parked that it covers are answered.
    Covered,
}

impl JournalState {
    /// Starts the next commit if none is running, something is queued, and the group
    /// commit interval allows it now (else makes sure a [`JournalMessage::Due`] comes
    /// when it will). After a failure, the commit first learns what the store holds (see
    /// the module documentation).
    fn commit_next(&mut self, myself: &ActorRef<JournalMessage>) {
        if self.in_flight || self.landing || (self.failing.is_some() && self.retry_scheduled) {
            return;
        }
        let now = std::time::Instant::now();
        let queued = Queued {
            entries: self.queue.len(),
            changes: self.queue.changes,
            operations: self.queue.operations,
            urgent: self.queue.clients > 0 || !self.drains.is_empty() || self.failing.is_some(),
        };
        match self.pace.check(now, queued) {
            Start::Now => self.pace.started(now),
            Start::Idle => return,
            Start::After(wait) => {
                if !self.due_scheduled {
                    self.due_scheduled = true;
                    myself.send_after(wait, || JournalMessage::Due);
                }
                return;
            }
        }
        self.in_flight = true;
        let number = self.next_commit;
        let relearn = self.failing.is_some().then(|| self.args.table.len());
        let batch = std::mem::replace(&mut self.queue, std::mem::take(&mut self.spare));
        let store = Arc::clone(&self.args.store);
        let reporter = myself.clone();
        // Reports the commit as soon as it is durable: the store file takes it after.
        let commit = move |batch: Queue| {
            let started = std::time::Instant::now();
            commit_to(
                &store,
                number,
                relearn,
                batch,
                |batch, number, learned, result| {
                    let _ = reporter.cast(JournalMessage::Committed {
                        number,
                        batch: Box::new(batch),
                        learned,
                        result,
                        seconds: started.elapsed().as_secs_f64(),
                    });
                },
            );
        };
        if !self.args.store.is_durable() {
            commit(batch);
            return;
        }
        let myself = myself.clone();
        self.landing = true;
        // Counted before the commit begins (on another thread, or at the end of this
        // message): a journal that replaces this one (if it fails now) waits for it.
        let handed_off = Store::hand_off(&self.args.store);
        let awaited = batch.clients > 0;
        let next = Next {
            entries: batch.len(),
            clients: batch.clients,
            failing: self.failing.is_some(),
        };
        // With a copy in step, never here: the commit ships its writes before its sync,
        // and the shipper, woken from this worker, would wait in its queue until the
        // sync is over; from a blocking thread it ships while this one syncs.
        let here = self
            .args
            .covered
            .as_ref()
            .is_none_or(|c| c.get() == u64::MAX)
            && self
                .own_thread
                .here(next, now, || self.args.store.plain_next());
        // Whichever thread commits reports back itself: one hand-off fewer than awaiting it
        // from a task, and each costs tens of microseconds on a small machine.
        let job = move |end: Option<busy_poll::AwaitedEnd>| {
            // The store turns a panic of the commit (or of reading it) into its error;
            // one here is of the report itself, and the batch went with it: its waiters
            // hear that it failed as they are dropped, and the journal is restarted. A
            // commit not landed in the store file because of it marked the file broken,
            // so the successor reads the store only after the log is replayed into it.
            let attempt = std::panic::AssertUnwindSafe(|| commit(batch));
            if std::panic::catch_unwind(attempt).is_err() {
                error!("reporting a commit panicked; the journal restarts");
                myself.stop(Some("reporting a commit panicked".into()));
            }
            drop(handed_off);
            // Before `Landed`, which may start the next commit: that one sees this end.
            if let Some(end) = end {
                end.ended();
            }
            let _ = myself.cast(JournalMessage::Landed);
        };
        // A client waits for this commit: while clients keep the node busy, the worker
        // spins a moment after it (see the busy poll), so the client's next change
        // finds it awake.
        if here {
            debug_assert!(self.here.is_none(), "one commit at a time");
            self.here = Some(Box::new(move || {
                busy_poll::run_awaited(|end| job(Some(end)));
            }));
        } else if awaited {
            busy_poll::spawn_awaited(move |end| job(Some(end)));
        } else {
            busy_poll::spawn_blocking(move || job(None));
        }
    }

    /// Takes batch `batch` if it is its stream's next; see the module documentation.
    fn take(&mut self, batch: Batch) -> Option<Entry> {
        let key = self.key(&batch.stream);
        if !self.streams.contains_key(&key) && !self.room_for_stream(&batch.stream) {
            return None;
        }
        let stream = self.streams.entry(Arc::clone(&key)).or_insert_with(|| {
            let at = InRecord {
                seq: batch.base,
                ..InRecord::default()
            };
            InStream {
                queued: batch.base,
                committed: at,
            }
        });
        if batch.base > stream.queued {
            error!(stream = %key, base = batch.base, held = stream.queued,
                "the sender had batches acknowledged that this store does not hold (was it \
                 restored from an older copy, or lost?): carrying on after them; the sender \
                 reports what they held as unvouched");
            stream.queued = batch.base;
        }
        if stream.queued.checked_add(1) != Some(batch.seq) {
            return None;
        }
        stream.queued = batch.seq;
        Some(Entry::Batch {
            stream: key,
            seq: batch.seq,
            changes: batch.changes,
        })
    }

    /// Whether a new stream from `id`'s sender stays within the bounds; counts it if so.
    fn room_for_stream(&mut self, id: &StreamId) -> bool {
        let from_sender = self.senders.get(&id.sender).copied().unwrap_or(0);
        if from_sender >= MAX_STREAMS_PER_SENDER || self.streams.len() >= MAX_STREAMS {
            self.refused_streams += 1;
            self.args
                .metrics
                .batch_refused(BatchRefusal::TooManyStreams);
            if self.refused_streams.is_power_of_two() {
                error!(sender = %id.sender, origin = id.origin, from_sender,
                    streams = self.streams.len(), refused = self.refused_streams,
                    "dropped a batch that would start one stream too many (at most \
                     {MAX_STREAMS_PER_SENDER} per sender and {MAX_STREAMS} in all): a sender \
                     whose store was made anew that many times, or one that lies");
            }
            return false;
        }
        *self.senders.entry(id.sender.clone()).or_default() += 1;
        true
    }

    /// The key of stream `id`, made the first time it is seen.
    fn key(&mut self, id: &StreamId) -> Arc<str> {
        if let Some(key) = self.keys.get(id) {
            return Arc::clone(key);
        }
        let key: Arc<str> = id.key().into();
        self.keys.insert(id.clone(), Arc::clone(&key));
        key
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

    /// Answers `reply` now if everything appended is committed (and covered by the
    /// copy), else once it is.
    fn sync(&mut self, reply: SyncReply) {
        if self.committed >= self.appended && self.parked.is_empty() {
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
                let committed = self
                    .streams
                    .get(key.as_str())
                    .map_or_else(StreamMark::default, |s| s.committed.mark());
                let _ = reply.send(committed);
            }
        }
    }

    /// A retried commit learned what the store held: the counters get their records
    /// (changes of a commit that failed may have landed), and each stream's mark is the
    /// store's.
    fn learned(&mut self, settled: Settled) {
        let table = &self.args.table;
        for (index, record) in (0..table.len()).zip(settled.records) {
            table.send_if_active(index, CounterMessage::Resume(record));
        }
        for (key, record) in &settled.streams {
            self.note_committed(key, *record);
        }
        self.args.received.update(settled.streams);
    }

    /// Stream `key`'s record as of the last commit is `record`.
    fn note_committed(&mut self, key: &str, record: InRecord) {
        let stream = match self.streams.get_mut(key) {
            Some(stream) => stream,
            None => self.streams.entry(key.into()).or_default(),
        };
        stream.committed = record;
        stream.queued = stream.queued.max(record.seq);
    }

    /// A commit returned: hand its changes on and answer whoever waited for them.
    fn committed(&mut self, mut batch: Queue, outcome: CommitOutcome) {
        self.committed += batch.len() as u64;
        for (key, record) in &outcome.streams {
            self.note_committed(key, *record);
        }
        self.args.received.update(outcome.streams);
        self.args.received.committed();
        // The counters first: a client that reads right after its answer sees its
        // change (its read reaches the counter after its new record, or after the
        // counter's start from the store, which holds this commit). A change is a use:
        // a counter that is not running is started (and one that cannot be, being
        // restarted, resumes from the store, which holds this commit already).
        let table = &self.args.table;
        for (index, record) in outcome.counters {
            let _ = table.deliver(index, CounterMessage::Committed(record));
        }
        for (waiter, outcome) in batch.waiters.drain(..).zip(outcome.outcomes) {
            match (waiter, outcome) {
                (Waiter::Client(reply), Outcome::Applied(result)) => {
                    let _ = reply.send(ApplyOutcome(result));
                }
                (Waiter::Issued(on_commit), Outcome::Issued(true) | Outcome::Done) => {
                    on_commit.committed()
                }
                // Refused (not the next of its stream): its sender hears it was not
                // issued, and takes up the outbox again.
                (Waiter::Issued(on_commit), _) => drop(on_commit),
                _ => {}
            }
        }
        if self.spare.entries.capacity() < batch.entries.capacity() {
            self.spare = batch.recycle();
        }
        if self.queue.is_empty() && self.parked.is_empty() {
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

impl JournalState {
    /// Commit `number` is durable here: answered now if the copy covers it (or there
    /// is none), else parked until it does, behind any commit parked before it.
    fn durable(
        &mut self,
        number: u64,
        batch: Queue,
        outcome: CommitOutcome,
        myself: &ActorRef<JournalMessage>,
    ) {
        if let Some(why) = self.failing.take() {
            info!("the store takes writes again (it had failed: {why})");
        }
        self.next_commit = number + 1;
        let covered = self.args.covered.as_ref().map_or(u64::MAX, |c| c.get());
        if self.parked.is_empty() && covered >= number {
            return self.committed(batch, outcome);
        }
        self.parked.push_back((number, batch, outcome));
        self.await_cover(myself);
    }

    /// Answers the parked commits the copy covers now, in order.
    fn covered(&mut self, myself: &ActorRef<JournalMessage>) {
        let covered = self.args.covered.as_ref().map_or(u64::MAX, |c| c.get());
        while self.parked.front().is_some_and(|(n, _, _)| *n <= covered) {
            if let Some((_, batch, outcome)) = self.parked.pop_front() {
                self.committed(batch, outcome);
            }
        }
        self.await_cover(myself);
    }

    /// Makes sure a [`JournalMessage::Covered`] comes once the copy covers the first
    /// parked commit.
    fn await_cover(&mut self, myself: &ActorRef<JournalMessage>) {
        let (Some((first, _, _)), Some(covered), false) =
            (self.parked.front(), &self.args.covered, self.cover_awaited)
        else {
            return;
        };
        let (first, myself) = (*first, myself.clone());
        self.cover_awaited = true;
        covered.wake_at(
            first,
            Box::new(move || {
                let _ = myself.cast(JournalMessage::Covered);
            }),
        );
    }
}

/// Commits `batch` as commit `number`; after a failure (`relearn`: the number of
/// counters), first reads what the store holds, and commits after its last commit.
/// Hands `report` the batch, the number used, what was learned, and what the commit
/// did or why it failed, as soon as the commit is durable or has failed.
fn commit_to(
    store: &Store,
    number: u64,
    relearn: Option<u32>,
    batch: Queue,
    report: impl FnOnce(Queue, u64, Option<Box<Settled>>, Result<CommitOutcome, String>),
) {
    let read = std::panic::AssertUnwindSafe(|| relearn.map(|n| store.current(n)).transpose());
    let learned = match std::panic::catch_unwind(read) {
        Ok(Ok(learned)) => learned,
        Ok(Err(e)) => return report(batch, number, None, Err(e.to_string())),
        Err(_) => {
            return report(
                batch,
                number,
                None,
                Err("reading the store panicked".into()),
            )
        }
    };
    let number = learned.as_ref().map_or(number, |s| s.last_commit + 1);
    store.commit_then(number, batch, |batch, result| {
        report(
            batch,
            number,
            learned.map(Box::new),
            result.map_err(|e| e.to_string()),
        )
    });
}

impl AsRef<[Entry]> for Queue {
    fn as_ref(&self) -> &[Entry] {
        &self.entries
    }
}

impl Actor for Journal {
    type Msg = JournalMessage;
    type State = JournalState;
    type Arguments = JournalArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: JournalArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let store = Arc::clone(&args.store);
        let counters = args.table.len();
        let settled =
            crate::runtime::busy_poll::spawn_blocking(move || store.settled(counters)).await??;
        for (index, record) in (0..counters).zip(settled.records) {
            args.table
                .send_if_active(index, CounterMessage::Resume(record));
        }
        let streams: HashMap<Arc<str>, InStream> = settled
            .streams
            .iter()
            .map(|(key, record)| {
                let at = InStream {
                    queued: record.seq,
                    committed: *record,
                };
                (Arc::from(key.as_str()), at)
            })
            .collect();
        let mut senders: HashMap<String, usize> = HashMap::new();
        for key in streams.keys() {
            let sender = key.split_once('#').map_or(&**key, |(sender, _)| sender);
            *senders.entry(sender.to_string()).or_default() += 1;
        }
        args.received.update(settled.streams);
        let pace = Pace::new(args.group_commit);
        // What the store holds may not all be on the copy yet (this node stopped, or
        // the journal failed, before the copy had it): nothing is answered from it
        // (a sender's `Sync` above all) until the copy covers it.
        let mut parked = VecDeque::new();
        if args
            .covered
            .as_ref()
            .is_some_and(|c| c.get() < settled.last_commit)
        {
            parked.push_back((
                settled.last_commit,
                Queue::default(),
                CommitOutcome::default(),
            ));
        }
        let mut state = JournalState {
            args,
            queue: Queue::default(),
            spare: Queue::default(),
            appended: 0,
            committed: 0,
            next_commit: settled.last_commit + 1,
            in_flight: false,
            landing: false,
            pace,
            due_scheduled: false,
            streams,
            keys: HashMap::new(),
            senders,
            refused_streams: 0,
            syncs: VecDeque::new(),
            own_thread: OwnThread::default(),
            here: None,
            failing: None,
            retry_scheduled: false,
            drains: Vec::new(),
            parked,
            cover_awaited: false,
        };
        state.await_cover(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JournalMessage::Append(entry, waiter) => match (&state.failing, &entry, waiter) {
                (Some(why), Entry::Apply { .. }, Waiter::Client(reply)) => {
                    let refused =
                        CounterError::Unavailable(format!("the store takes no writes: {why}"));
                    let _ = reply.send(ApplyOutcome(Err(refused)));
                }
                (_, _, waiter) => state.append(entry, waiter, &myself),
            },
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
                learned,
                result,
                seconds,
            } => {
                state.in_flight = false;
                // Whatever was queued meanwhile came while it ran: others compete.
                state.own_thread.ended(
                    Duration::from_secs_f64(seconds),
                    !state.queue.is_empty(),
                    std::time::Instant::now(),
                );
                if let Some(settled) = learned {
                    state.learned(*settled);
                }
                match result {
                    Ok(outcome) => {
                        let ops = outcome.operations;
                        state
                            .args
                            .metrics
                            .committed(seconds, ops.applied, ops.rejected);
                        state.durable(number, *batch, outcome, &myself);
                    }
                    Err(why) => {
                        state.args.metrics.commit_failed();
                        if state.failing.is_none() {
                            error!(error = %why, "a commit failed: nothing is acknowledged until the store takes writes again; client changes are refused meanwhile, reads go on");
                        }
                        state.failing = Some(why);
                        // It may or may not have landed: it goes first in the next try,
                        // which learns from the store which, and applies nothing twice.
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
            JournalMessage::Landed => {
                state.landing = false;
                state.commit_next(&myself);
            }
            JournalMessage::Covered => {
                state.cover_awaited = false;
                state.covered(&myself);
            }
            JournalMessage::Drain(reply) => {
                if state.queue.is_empty() && !state.in_flight && state.parked.is_empty() {
                    let _ = reply.send(());
                } else {
                    state.drains.push(reply);
                    state.commit_next(&myself);
                }
            }
            JournalMessage::Due => {
                state.due_scheduled = false;
                state.commit_next(&myself);
            }
            JournalMessage::Retry => {
                state.retry_scheduled = false;
                state.commit_next(&myself);
            }
        }
        // Every message comes here (no arm above returns early): a commit started for
        // this thread runs now.
        if let Some(commit) = state.here.take() {
            // Every task ready on this worker runs first (the answers of the commit
            // before, above all), so that none waits behind this one's sync.
            tokio::task::yield_now().await;
            let started = std::time::Instant::now();
            commit();
            state.own_thread.held_here(started.elapsed());
            #[cfg(test)]
            COMMITS_HERE.with(|n| n.set(n.get() + 1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::{Counter, CounterArgs};
    use crate::store::{OutboxRecord, Sum};
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

    /// A counter actor for each of `table`'s counters, recorded in it.
    async fn spawn_counters(
        table: &CounterTable,
    ) -> Vec<(
        ActorRef<CounterMessage>,
        ractor::concurrency::JoinHandle<()>,
    )> {
        let mut counters = Vec::new();
        for index in 0..table.len() {
            let name = table.name(index).unwrap().to_string();
            let (actor, handle) = Actor::spawn(None, Counter, CounterArgs::new(name))
                .await
                .unwrap();
            table.set_actor(index, Some(actor.clone()));
            counters.push((actor, handle));
        }
        counters
    }

    /// With a group commit interval (an hour here, so only urgency can start a second
    /// commit), traffic between nodes waits for it and a client's change does not: it
    /// takes the waiting batch along in its commit.
    #[tokio::test]
    async fn stream_traffic_waits_for_the_interval_and_a_client_change_goes_at_once() {
        let table = Arc::new(CounterTable::new("journal-pace", 2));
        let (store, _) = Store::memory(2);
        let counters = spawn_counters(&table).await;
        let (journal, handle) = Actor::spawn(
            None,
            Journal,
            JournalArgs {
                store: Arc::new(store),
                table: Arc::clone(&table),
                received: Arc::default(),
                metrics: Arc::default(),
                group_commit: Duration::from_secs(3600),
                covered: None,
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
        // The first commit in a while goes at once.
        journal.cast(batch(1, 0, 5)).unwrap();
        assert_eq!(stream_at().await.unwrap().seq, 1);
        // The next waits for the interval: its acknowledgement does not come.
        journal.cast(batch(2, 0, 7)).unwrap();
        let waiting = ractor::call_t!(
            journal,
            |r| JournalMessage::SyncStream("s#0000000000000007".into(), r),
            300
        );
        assert!(
            waiting.is_err(),
            "a paced batch was acknowledged before the interval: {waiting:?}"
        );
        // A client's change is committed at once, with the batch waiting before it.
        let applied = ractor::call_t!(
            journal,
            |r| JournalMessage::Append(
                Entry::Apply {
                    counter: 1,
                    delta: Delta::Increment(1),
                    id: "c-1".into(),
                },
                Waiter::Client(r)
            ),
            5000
        )
        .expect("a client's change committed within 5 s, not after the interval");
        assert_eq!(
            applied,
            ApplyOutcome(Ok(shared::counter::Applied {
                value: 13,
                repeated: false,
            }))
        );
        assert_eq!(stream_at().await.unwrap().seq, 2);
        journal.stop(None);
        handle.await.unwrap();
        for (counter, handle) in counters {
            counter.stop(None);
            handle.await.unwrap();
        }
    }

    #[tokio::test]
    async fn each_batch_of_a_stream_is_applied_once_in_order_and_only_after_its_commit() {
        let table = Arc::new(CounterTable::new("journal-test", 2));
        let (store, _) = Store::memory(2);
        let store = Arc::new(store);
        let counters = spawn_counters(&table).await;
        let received = Arc::new(ReceivedTotals::default());
        let (journal, handle) = Actor::spawn(
            None,
            Journal,
            JournalArgs {
                store: Arc::clone(&store),
                table: Arc::clone(&table),
                received: Arc::clone(&received),
                metrics: Arc::default(),
                group_commit: Duration::ZERO,
                covered: None,
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
        assert_eq!(
            stream_at().await.unwrap().seq,
            2,
            "the sender must send from 3"
        );
        for (seq, delta) in [(3, 5), (4, 1)] {
            journal.cast(batch(seq, 0, delta)).unwrap();
        }
        let decrement = async || {
            ractor::call!(journal, |r| JournalMessage::Append(
                Entry::Apply {
                    counter: 1,
                    delta: Delta::Decrement(8),
                    id: "c-1".into(),
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
        assert_eq!(
            stream_at().await.unwrap(),
            StreamMark {
                seq: 4,
                value: 48,
                operations: 4
            },
            "where the stream stands, and what its batches added up to"
        );
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
                group_commit: Duration::ZERO,
                covered: None,
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
            .unwrap()
            .seq,
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
        assert!(!rx.recv().unwrap());
    }

    /// Counters and a journal over a store file in `dir`; the counters' actors, and
    /// the journal.
    async fn file_path(
        dir: &std::path::Path,
        counters: u32,
    ) -> (
        Arc<Store>,
        Arc<CounterTable>,
        ActorRef<JournalMessage>,
        Vec<ActorRef<CounterMessage>>,
    ) {
        file_path_covered(dir, counters, None).await
    }

    /// [`file_path`] with a copy whose cover the journal waits on.
    async fn file_path_covered(
        dir: &std::path::Path,
        counters: u32,
        covered: Option<Arc<Cover>>,
    ) -> (
        Arc<Store>,
        Arc<CounterTable>,
        ActorRef<JournalMessage>,
        Vec<ActorRef<CounterMessage>>,
    ) {
        let table = Arc::new(CounterTable::new("journal-disk", counters));
        let (store, _) = Store::open(dir, "journal-disk", counters, Arc::default()).unwrap();
        let store = Arc::new(store);
        let actors = spawn_counters(&table)
            .await
            .into_iter()
            .map(|(actor, _)| actor)
            .collect();
        let (journal, _) = Actor::spawn(
            None,
            Journal,
            JournalArgs {
                store: Arc::clone(&store),
                table: Arc::clone(&table),
                received: Arc::default(),
                metrics: Arc::default(),
                group_commit: Duration::ZERO,
                covered,
            },
        )
        .await
        .unwrap();
        (store, table, journal, actors)
    }

    /// Waits (10 s at most) until the store's last commit is `number` or later.
    async fn committed_through(store: &Arc<Store>, number: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.last_commit().unwrap() < number {
            assert!(
                std::time::Instant::now() < deadline,
                "commit {number} was not made within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// With a copy, a change is answered only once the copy covers its commit; the
    /// commits after it are made meanwhile, and answered in order as the cover grows.
    #[tokio::test]
    async fn a_change_is_answered_only_once_the_copy_covers_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let cover = Arc::new(Cover::default());
        let (store, _table, journal, _counters) =
            file_path_covered(dir.path(), 1, Some(Arc::clone(&cover))).await;
        let ask = |id: &str| {
            let (journal, id) = (journal.clone(), id.to_string());
            tokio::spawn(async move { change(&journal, &id, 1).await })
        };
        let first = ask("a");
        // Committed here, and not answered: the copy does not cover it.
        committed_through(&store, 1).await;
        let second = ask("b");
        committed_through(&store, 2).await;
        assert!(!first.is_finished() && !second.is_finished());
        cover.set(|_| 1);
        assert!(
            !first.await.unwrap(),
            "the first is answered, as applied once"
        );
        assert!(!second.is_finished(), "the second waits for its own cover");
        cover.set(|_| 2);
        assert!(!second.await.unwrap());
    }

    /// Under disk errors of every kind (a sync that fails after the data landed, one
    /// that fails instead, a write that fails), batches, client changes and outgoing
    /// batches are each applied once: in the store, in the counters (which learn the
    /// records of commits that failed but landed), and in what waiters hear.
    #[tokio::test]
    async fn disk_errors_of_every_kind_apply_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _table, journal, counters) = file_path(dir.path(), 2).await;
        let faults = store.faults().unwrap();
        faults.arm(3, 9);
        let mut issued = Vec::new();
        let mut answers = Vec::new();
        for seq in 1..=60u64 {
            journal.cast(batch(seq, 0, 2)).unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let entry = Entry::Outgoing {
                dest: "d".into(),
                batch: super::super::OutBatch {
                    seq,
                    changes: Vec::new(),
                    value: 1,
                    operations: 1,
                },
            };
            let on_commit = OnCommit::new(move |done| {
                let _ = tx.send(done);
            });
            journal
                .cast(JournalMessage::Append(entry, Waiter::Issued(on_commit)))
                .unwrap();
            issued.push(rx);
            if seq % 10 == 0 {
                // A client change, retried with its id until it is answered.
                let id = format!("c-{seq}");
                let outcome = loop {
                    let outcome = ractor::call!(journal, |r| JournalMessage::Append(
                        Entry::Apply {
                            counter: 0,
                            delta: Delta::Increment(100),
                            id: id.clone(),
                        },
                        Waiter::Client(r)
                    ))
                    .unwrap();
                    if !matches!(outcome.0, Err(CounterError::Unavailable(_))) {
                        break outcome;
                    }
                    tokio::time::sleep(RETRY_EVERY).await;
                };
                answers.push(outcome.0.unwrap().repeated);
            }
        }
        for rx in issued {
            assert!(rx.await.unwrap(), "an outgoing batch was not issued");
        }
        let mark = ractor::call!(journal, |r| JournalMessage::SyncStream(
            "s#0000000000000007".into(),
            r
        ))
        .unwrap();
        assert_eq!(faults.injected(), 9, "every fault was injected");
        assert_eq!(
            mark,
            StreamMark {
                seq: 60,
                value: 120,
                operations: 60
            }
        );
        let record = store.record(1).unwrap();
        assert_eq!((record.value, record.operations), (120, 60));
        let record = store.record(0).unwrap();
        assert_eq!((record.value, record.operations), (600, 6));
        let OutboxRecord {
            streams: outbox,
            issued: tally,
        } = store.outbox().unwrap();
        assert_eq!(tally, Sum::new(60, 60), "each outgoing batch issued once");
        assert_eq!(outbox["d"].record.last_seq, 60);
        for (index, want) in [(0, 600), (1, 120)] {
            let value = ractor::call!(counters[index], CounterMessage::GetValue).unwrap();
            assert_eq!(
                value,
                shared::counter::ValueOutcome(Ok(want)),
                "counter {index}"
            );
        }
        assert_eq!(answers.len(), 6);
    }

    /// Client change `id` of `delta` to counter 0, retried with its id while the store
    /// takes no writes; whether it was answered as a repeat.
    async fn change(journal: &ActorRef<JournalMessage>, id: &str, delta: u64) -> bool {
        loop {
            let outcome = ractor::call!(journal, |r| JournalMessage::Append(
                Entry::Apply {
                    counter: 0,
                    delta: Delta::Increment(delta),
                    id: id.to_string(),
                },
                Waiter::Client(r)
            ))
            .unwrap();
            if !matches!(outcome.0, Err(CounterError::Unavailable(_))) {
                return outcome.0.unwrap().repeated;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// A client sending one change after another has them committed on the journal's
    /// own thread, but for the probes, and not while the disk fails; each is applied
    /// once through every kind of disk error, each met by a commit on that thread.
    #[tokio::test]
    async fn a_client_alone_is_committed_on_the_journals_thread_exactly_once() {
        use super::super::faults::DiskFault;
        let dir = tempfile::tempdir().unwrap();
        let (store, _table, journal, counters) = file_path(dir.path(), 1).await;
        let faults = store.faults().unwrap();
        let here = || COMMITS_HERE.with(|n| n.get());
        let (mut changes, mut want, mut repeats) = (0u64, 0u64, 0u64);
        let mut next = async || {
            changes += 1;
            want += changes;
            u64::from(change(&journal, &format!("c-{changes}"), changes).await)
        };
        for _ in 0..24 {
            repeats += next().await;
        }
        let quiet = here();
        assert!(
            quiet >= 12 && quiet <= 24 - 24 / u64::from(super::super::own_thread::PROBE_EVERY),
            "{quiet} of 24 lone changes committed on the journal's thread: want most, but \
             not the probes"
        );
        for kind in DiskFault::ALL {
            // Until the fault meets a commit on this thread (not a probe's).
            let met_here = 'tries: {
                for _ in 0..10 {
                    // First a change committed here again: the last fault's retries
                    // met the client's, which paused commits here for a while.
                    for _ in 0..200 {
                        let before = here();
                        repeats += next().await;
                        if here() > before {
                            break;
                        }
                    }
                    faults.arm_one(kind);
                    loop {
                        let (before, injected) = (here(), faults.injected());
                        repeats += next().await;
                        if faults.injected() > injected {
                            // The retries after it run on blocking threads.
                            if here() == before + 1 {
                                break 'tries true;
                            }
                            break;
                        }
                    }
                }
                false
            };
            assert!(
                met_here,
                "a {kind:?} fault never met a commit on the journal's thread"
            );
        }
        let record = store.record(0).unwrap();
        assert_eq!((record.value, record.operations), (want as i64, changes));
        let value = ractor::call!(counters[0], CounterMessage::GetValue).unwrap();
        assert_eq!(value, shared::counter::ValueOutcome(Ok(want as i64)));
        assert!(
            repeats <= faults.injected(),
            "{repeats} repeats: at most one per fault"
        );
    }

    /// Clients sending at once share commits: none waits alone behind another's sync
    /// on the journal's thread.
    #[tokio::test]
    async fn clients_sending_at_once_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _table, journal, _counters) = file_path(dir.path(), 1).await;
        let (clients, each) = (4u64, 40u64);
        let before = store.last_commit().unwrap();
        let sending = (0..clients).map(|c| {
            let journal = journal.clone();
            tokio::spawn(async move {
                for n in 0..each {
                    assert!(!change(&journal, &format!("c{c}-{n}"), 1).await);
                }
            })
        });
        for client in sending.collect::<Vec<_>>() {
            client.await.unwrap();
        }
        let commits = store.last_commit().unwrap() - before;
        assert_eq!(store.record(0).unwrap().value, (clients * each) as i64);
        assert!(
            commits <= clients * each * 3 / 4,
            "{commits} commits for {} changes from {clients} clients at once: they \
             should share commits",
            clients * each
        );
    }

    /// A sender gets at most so many streams: a batch that would start one more is
    /// dropped, and other senders are not affected.
    #[tokio::test]
    async fn streams_per_sender_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _table, journal, _counters) = file_path(dir.path(), 1).await;
        let from = |sender: &str, origin: u64| Batch {
            stream: StreamId {
                sender: sender.into(),
                origin,
            },
            seq: 1,
            base: 0,
            changes: vec![Change {
                counter: 0,
                delta: 1,
                operations: 1,
            }],
        };
        let flood: Vec<Batch> = (0..MAX_STREAMS_PER_SENDER as u64 + 10)
            .map(|origin| from("liar", origin))
            .collect();
        journal.cast(JournalMessage::Batches(flood)).unwrap();
        journal
            .cast(JournalMessage::Batches(vec![from("honest", 1)]))
            .unwrap();
        let at = async |key: String| ractor::call!(journal, |r| JournalMessage::SyncStream(key, r));
        let last = StreamId {
            sender: "liar".into(),
            origin: MAX_STREAMS_PER_SENDER as u64 + 9,
        };
        assert_eq!(at(last.key()).await.unwrap().seq, 0, "beyond the bound");
        let first = StreamId {
            sender: "liar".into(),
            origin: 0,
        };
        assert_eq!(at(first.key()).await.unwrap().seq, 1);
        let honest = StreamId {
            sender: "honest".into(),
            origin: 1,
        };
        assert_eq!(at(honest.key()).await.unwrap().seq, 1);
    }
}
