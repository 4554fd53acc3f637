//! The sender's half of exactly-once: what a batch is before it is sent, and where it
//! is kept until its destination acknowledges it.
//!
//! A batch counts as issued once it is committed to the node's outbox (in the node's
//! store, together with the issued tally), and only then is it sent. It stays there
//! until the destination acknowledges it, so a sender that crashes sends it again when
//! it starts (the destination takes each batch once). [`JournalOutbox`] commits through
//! the node's journal, sharing its group commits; a sender without a store (the
//! benchmark's) passes no outbox, and its batches are issued as they are made.

use std::sync::Arc;

use ractor::ActorRef;

use crate::store::journal::{journal_name, JournalMessage, OnCommit, Waiter};
use crate::store::Entry;
pub(crate) use crate::store::{Adopt, OutBatch};

/// Where a sender's batches are kept until acknowledged.
pub trait Outbox: Send + Sync {
    /// Commits `batch` for `dest` (to the outbox, and to the issued tally); `done`
    /// hears whether it was (true), or will never be by this outbox (false: it went
    /// down with it uncommitted, or perhaps not, or refused it as not the next batch).
    fn issue(&self, dest: &str, batch: OutBatch, done: Box<dyn FnOnce(bool) + Send>);

    /// `dest` acknowledged every batch up to `upto`: they may go.
    fn acked(&self, dest: &str, upto: u64);

    /// The sender takes its receiver's side on what the stream holds (see [`Adopt`]);
    /// `done` hears whether it was committed.
    fn adopt(&self, adopt: Adopt, done: Box<dyn FnOnce(bool) + Send>);
}

/// The outbox in the node's store, through its journal.
pub(crate) struct JournalOutbox {
    node: String,
}

impl JournalOutbox {
    /// The outbox of node `node`.
    pub(crate) fn new(node: &str) -> Arc<Self> {
        Arc::new(Self {
            node: node.to_string(),
        })
    }

    fn journal(&self) -> Option<ActorRef<JournalMessage>> {
        ractor::registry::where_is(journal_name(&self.node)).map(ActorRef::from)
    }
}

impl Outbox for JournalOutbox {
    fn issue(&self, dest: &str, batch: OutBatch, done: Box<dyn FnOnce(bool) + Send>) {
        let entry = Entry::Outgoing {
            dest: dest.to_string(),
            batch,
        };
        // If the journal is not running, the message (and with it `done`) is dropped,
        // which tells the sender the batch was not issued.
        if let Some(journal) = self.journal() {
            let _ = journal.cast(JournalMessage::Append(
                entry,
                Waiter::Issued(OnCommit::new(done)),
            ));
        } else {
            done(false);
        }
    }

    fn acked(&self, dest: &str, upto: u64) {
        if let Some(journal) = self.journal() {
            let entry = Entry::Acked {
                dest: dest.to_string(),
                upto,
            };
            let _ = journal.cast(JournalMessage::Append(entry, Waiter::None));
        }
    }

    fn adopt(&self, adopt: Adopt, done: Box<dyn FnOnce(bool) + Send>) {
        // If the journal is not running, the message (and with it `done`) is dropped,
        // which tells the sender the adoption was not committed.
        if let Some(journal) = self.journal() {
            let waiter = Waiter::Issued(OnCommit::new(done));
            let _ = journal.cast(JournalMessage::Append(Entry::Adopt(adopt), waiter));
        } else {
            done(false);
        }
    }
}
