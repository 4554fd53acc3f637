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
use serde::{Deserialize, Serialize};
use shared::host::Change;

use crate::store::journal::{journal_name, JournalMessage, OnCommit, Waiter};
use crate::store::Entry;

/// One batch a sender made: its number in its stream, its changes, and what they add up
/// to. Kept in the sender's outbox until the destination acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutBatch {
    /// Its number in the stream (from 1).
    pub seq: u64,
    /// At most one entry per counter.
    pub changes: Vec<Change>,
    /// Net value.
    pub value: i64,
    /// Operations.
    pub operations: u64,
}

/// Whether a batch handed to [`Outbox::issue`] was committed (`Ok`) or will never be by
/// this outbox (`Err`: it went down with it uncommitted, or perhaps not).
pub type IssueFate = Result<(), ()>;

/// Where a sender's batches are kept until acknowledged.
pub trait Outbox: Send + Sync {
    /// Commits `batch` for `dest` (to the outbox, and to the issued tally); `done`
    /// hears its fate.
    fn issue(&self, dest: &str, batch: OutBatch, done: Box<dyn FnOnce(IssueFate) + Send>);

    /// `dest` acknowledged every batch up to `upto`: they may go.
    fn acked(&self, dest: &str, upto: u64);
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
    fn issue(&self, dest: &str, batch: OutBatch, done: Box<dyn FnOnce(IssueFate) + Send>) {
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
            done(Err(()));
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
}
