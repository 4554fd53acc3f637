//! The journal: every change to this node's counters goes through it, and reaches the
//! counters only once it is committed to the store.
//!
//! **Group commit.** Changes are appended to a queue. When no commit is running, the
//! whole queue becomes the next commit, written in a blocking task (the journal never
//! waits on the disk itself) that reports back; changes that arrive meanwhile wait for
//! the next one. So one fsync carries however many changes arrived during the previous
//! one: few under light load (low latency), many under heavy load (high throughput).
//!
//! **After a commit** the journal hands each change to its counter, stamped with the
//! commit's number (a counter that holds that commit already, because it was started
//! from the store since, skips it), answers every client waiting on a change in it
//! with the outcome the commit computed, and answers every `Sync` that was waiting for
//! it: an acknowledgement means the change is on disk.
//!
//! **A journal that starts** (again, after a failure) first waits for a commit its
//! predecessor may have left running, then resumes after the store's last commit and
//! hands every counter its record ([`CounterMessage::Resume`]): changes committed but
//! never handed on reach the counters that way. Changes its predecessor held
//! uncommitted were never acknowledged: their senders send them again.
//!
//! **A failed commit** (a full or failing disk) applies nothing. Its changes stay at the
//! head of the queue and the commit is tried again every [`RETRY_EVERY`]; meanwhile new
//! client changes are refused at once, with the reason, and nothing is acknowledged.
//! Reads go on (they never come here). When the disk takes writes again, the queue is
//! committed and everything proceeds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use shared::counter::{CounterError, ValueOutcome};
use tracing::{error, info};

use super::{ApplyOutcome, Entry, Store};
use crate::counters::counter::CounterMessage;
use crate::counters::table::CounterTable;

/// The registered name of node `node`'s journal (the host finds it by this name).
pub(crate) fn journal_name(node: &str) -> String {
    format!("{node}/journal")
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
}

/// A change waiting for its commit, and who waits for its outcome.
pub(crate) struct Queued {
    entry: Entry,
    reply: Option<RpcReplyPort<ValueOutcome>>,
}

/// The journal's state.
pub(crate) struct JournalState {
    args: JournalArgs,
    queue: Vec<Queued>,
    /// Changes appended and committed so far (a `Sync` waits for the first to reach it).
    appended: u64,
    committed: u64,
    next_commit: u64,
    in_flight: bool,
    /// `Sync(n)`s waiting: answered `n` once `committed` reaches the first number.
    syncs: VecDeque<(u64, u64, RpcReplyPort<u64>)>,
    /// Why the last commit failed, while commits fail.
    failing: Option<String>,
    retry_scheduled: bool,
    /// `Drain`s waiting for the queue to empty.
    drains: Vec<RpcReplyPort<()>>,
}

/// Messages to the journal (local only).
#[derive(RactorMessage)]
pub(crate) enum JournalMessage {
    /// Commit this change; the client waiting on it (if any) gets the outcome.
    Append(Entry, Option<RpcReplyPort<ValueOutcome>>),
    /// Answer with the number once every change appended before it is committed.
    Sync(u64, RpcReplyPort<u64>),
    /// A commit ended.
    Committed {
        /// Its number.
        number: u64,
        /// Its changes, in order.
        batch: Vec<Queued>,
        /// The outcome of each client change in it, or why the commit failed.
        result: Result<Vec<ApplyOutcome>, String>,
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
        let batch = std::mem::take(&mut self.queue);
        let store = Arc::clone(&self.args.store);
        if !store.is_durable() {
            let entries: Vec<Entry> = batch.iter().map(|q| q.entry.clone()).collect();
            let result = store.commit(number, &entries).map_err(|e| e.to_string());
            let _ = myself.cast(JournalMessage::Committed {
                number,
                batch,
                result,
            });
            return;
        }
        let myself = myself.clone();
        tokio::spawn(async move {
            let (batch, result) = tokio::task::spawn_blocking(move || {
                let entries: Vec<Entry> = batch.iter().map(|q| q.entry.clone()).collect();
                let result = store.commit(number, &entries).map_err(|e| e.to_string());
                (batch, result)
            })
            .await
            .unwrap_or_else(|e| (Vec::new(), Err(format!("the commit task failed: {e}"))));
            let _ = myself.cast(JournalMessage::Committed {
                number,
                batch,
                result,
            });
        });
    }

    /// A commit returned: hand its changes on and answer whoever waited for them.
    fn committed(&mut self, number: u64, batch: Vec<Queued>, outcomes: Vec<ApplyOutcome>) {
        if let Some(why) = self.failing.take() {
            info!("the store takes writes again (it had failed: {why})");
        }
        self.next_commit = number + 1;
        self.committed += batch.len() as u64;
        let table = &self.args.table;
        let mut outcomes = outcomes.into_iter();
        for Queued { entry, reply } in batch {
            // The counters first: a client that reads right after its answer sees its
            // change (its read reaches the counter after this `Add`).
            for (counter, delta, operations) in entry.changes() {
                // A counter that is not running (it is being restarted) resumes from
                // the store, which holds this commit already.
                if let Some(actor) = table.actor(counter) {
                    let _ = actor.cast(CounterMessage::Add {
                        delta,
                        operations,
                        commit: number,
                    });
                }
            }
            if let Entry::Apply { .. } = entry {
                if let (Some(reply), Some(outcome)) = (reply, outcomes.next()) {
                    let _ = reply.send(ValueOutcome(outcome));
                }
            }
        }
        if self.queue.is_empty() {
            for reply in self.drains.drain(..) {
                let _ = reply.send(());
            }
        }
        while self
            .syncs
            .front()
            .is_some_and(|(upto, _, _)| *upto <= self.committed)
        {
            if let Some((_, n, reply)) = self.syncs.pop_front() {
                let _ = reply.send(n);
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
        let (last, records) =
            tokio::task::spawn_blocking(move || store.settled(counters)).await??;
        for (index, record) in (0..counters).zip(records) {
            if let Some(counter) = args.table.actor(index) {
                let _ = counter.cast(CounterMessage::Resume(record));
            }
        }
        Ok(JournalState {
            args,
            queue: Vec::new(),
            appended: 0,
            committed: 0,
            next_commit: last + 1,
            in_flight: false,
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
            JournalMessage::Append(entry, reply) => {
                if let (Some(why), Entry::Apply { .. }) = (&state.failing, &entry) {
                    let refused =
                        CounterError::Unavailable(format!("the store takes no writes: {why}"));
                    if let Some(reply) = reply {
                        let _ = reply.send(ValueOutcome(Err(refused)));
                    }
                    return Ok(());
                }
                state.appended += 1;
                state.queue.push(Queued { entry, reply });
                state.commit_next(&myself);
            }
            JournalMessage::Sync(n, reply) => {
                if state.committed >= state.appended {
                    let _ = reply.send(n);
                } else {
                    state.syncs.push_back((state.appended, n, reply));
                }
            }
            JournalMessage::Committed {
                number,
                mut batch,
                result,
            } => {
                state.in_flight = false;
                match result {
                    Ok(outcomes) => state.committed(number, batch, outcomes),
                    Err(why) => {
                        if state.failing.is_none() {
                            error!(error = %why, "a commit failed: nothing is acknowledged until the store takes writes again; client changes are refused meanwhile, reads go on");
                        }
                        state.failing = Some(why);
                        // Nothing of it was applied: it goes first in the next try.
                        batch.append(&mut state.queue);
                        state.queue = batch;
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
    use shared::host::Change;

    #[tokio::test]
    async fn changes_reach_the_counters_after_their_commit_and_syncs_wait_for_it() {
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
        let (journal, handle) = Actor::spawn(
            None,
            Journal,
            JournalArgs {
                store: Arc::clone(&store),
                table: Arc::clone(&table),
            },
        )
        .await
        .unwrap();
        journal
            .cast(JournalMessage::Append(
                Entry::Changes(vec![Change {
                    counter: 1,
                    delta: 40,
                    operations: 4,
                }]),
                None,
            ))
            .unwrap();
        let applied = ractor::call!(journal, |r| JournalMessage::Append(
            Entry::Apply {
                counter: 1,
                delta: Delta::Decrement(2),
            },
            Some(r)
        ))
        .unwrap();
        assert_eq!(applied, ValueOutcome(Ok(38)));
        assert_eq!(
            ractor::call!(journal, |r| JournalMessage::Sync(9, r)).unwrap(),
            9
        );
        let value = ractor::call!(counters[1].0, CounterMessage::GetValue).unwrap();
        assert_eq!(value, ValueOutcome(Ok(38)));
        let record = store.record(1).unwrap();
        assert_eq!((record.value, record.operations), (38, 5));
        journal.stop(None);
        handle.await.unwrap();
        for (actor, handle) in counters {
            actor.stop(None);
            handle.await.unwrap();
        }
    }
}
