//! What a node's counter host answers: the one remote entry point to the node's
//! counters (one host per node, in [`crate::protocol::HOSTS_GROUP`]).
//!
//! Counters are addressed by their index on the node (`worker-1/3` is index 3 on
//! `worker-1`). The host forwards each message to that counter, in arrival order, and
//! the counter handles it like any other: every figure still comes from the counter.
//! A collection asks each node's host ([`HostMessage::Collect`]) for its counters'
//! `GetStats` a page of [`COLLECT_PAGE`] counters at a time, so the network carries one
//! request per page, not per counter, and no answer outgrows a frame.

use ractor::RpcReplyPort;
use ractor_cluster_derive::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::agent::NodeInfo;
use crate::counter::{ApplyOutcome, CounterStats, Delta, StatsOutcome, ValueOutcome};

/// A message to a node's counter host.
///
/// The variant names are the wire tags (ractor sends them as strings): renaming one
/// is a protocol change.
#[derive(RactorClusterMessage)]
pub enum HostMessage {
    /// Batch `seq` of a stream of changes to counters of this node, fire-and-forget:
    /// each entry is one counter's summed delta and how many operations it stands for.
    /// The node applies each batch of a stream exactly once, in order (see [`Batch`]).
    Batch(Batch),
    /// Answered, once every change sent before it (on the same connection) is committed
    /// to the node's store, with where this stream stands in that store ([`StreamMark`]:
    /// its last batch committed and what its batches added up to): the acknowledgement
    /// behind a sender's window, and the sender's check that both sides agree. Below what
    /// the sender sent before it means batches were lost on the way: the sender sends
    /// them again.
    #[rpc]
    Sync(StreamId, RpcReplyPort<StreamMark>),
    /// Apply one change, once per id, and answer (once it is on disk) with the new
    /// value or why it was refused; a change whose id was applied before is answered
    /// with that first result and changes nothing.
    #[rpc]
    Apply {
        /// Counter index on this node.
        counter: u32,
        /// The change.
        delta: Delta,
        /// The change's id, chosen by the client.
        id: String,
        /// Where the outcome goes.
        reply: RpcReplyPort<ApplyOutcome>,
    },
    /// Answer with the counter's value.
    #[rpc]
    GetValue(u32, RpcReplyPort<ValueOutcome>),
    /// Answer with the counter's own statistics.
    #[rpc]
    GetStats(u32, RpcReplyPort<StatsOutcome>),
    /// A page of this node's part of a collection: describe the node and ask counters
    /// `first` onwards (at most [`COLLECT_PAGE`] of them) for their `GetStats`,
    /// answering within `deadline_ms`. The answer says where the next page starts.
    #[rpc]
    Collect {
        /// Milliseconds the host may take.
        deadline_ms: u64,
        /// The page's first counter index.
        first: u32,
        /// Where the page goes.
        reply: RpcReplyPort<CollectReply>,
    },
    /// A batch and the `Sync` after it in one message: the batch is taken as `Batch`'s
    /// is, and the answer is `Sync`'s for its stream. A sender sends the last batch of a
    /// burst this way, where it would send a `Batch` and then a `Sync`.
    #[rpc]
    SyncedBatch(Batch, RpcReplyPort<StreamMark>),
    /// Hand the batches received so far on to the node's journal, in one message. A
    /// host sends it to itself when a batch arrives and none is pending, so it comes
    /// after every message already queued: under load one hand-off carries many
    /// batches, alone it follows its batch at once. (From another node it only makes
    /// the host hand on early.)
    Flush,
}

/// Counters in one page of a collection, at most. A counter's line takes at most 128
/// bytes on the wire (its name at most 73), and at most 130 of a decoder's budget
/// ([`crate::codec::decode_budget`]), so a page stays well inside a frame's bound
/// ([`crate::codec::MAX_MESSAGE_BYTES`]), and a node of a million counters answers in 20
/// pages.
pub const COLLECT_PAGE: u32 = 50_000;

/// One page of a node's part of a collection: the node's description and the `GetStats`
/// answers of consecutive counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalReport {
    /// The node's description of itself, as of this page.
    pub info: NodeInfo,
    /// Index of the page's first counter.
    pub first: u32,
    /// Counters `first`, `first + 1`, ... in order, each with its `GetStats` answer, or
    /// `None` if it did not answer in time.
    pub counters: Vec<Option<CounterStats>>,
    /// Where the next page starts (`first + counters.len()`), or `None` after the
    /// node's last counter.
    pub next: Option<u32>,
}

/// The answer to [`HostMessage::Collect`]: the report, or `None` when the host is
/// already running as many collections as it allows at once (the collector then
/// counts the node as not answering, so the collection says it is incomplete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectReply(pub Option<LocalReport>);

/// One counter's share of a coalesced batch: `operations` changes that sum to `delta`.
///
/// The counter applies it as a whole: if the sum would overflow, all of its operations
/// are refused (and counted as refused), and the value is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Counter index on the receiving node.
    pub counter: u32,
    /// Net change (wider than `i64`, so that summing can never wrap).
    pub delta: i128,
    /// How many increments and decrements `delta` sums up.
    pub operations: u64,
}

/// Where a stream of batches comes from: the sending node, and the store its outbox
/// lives in. A sender restarted from the same store carries on its streams (and sends
/// again what they had not had acknowledged); one with a new store (or in memory) starts
/// new ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// The sending node's name.
    pub sender: String,
    /// The sender's store (random, fixed when the store was made).
    pub origin: u64,
}

impl StreamId {
    /// The stream's key in a receiver's store.
    pub fn key(&self) -> String {
        format!("{}#{:016x}", self.sender, self.origin)
    }
}

/// One batch of a stream (sender → this node). Batches are numbered from 1 in the
/// order the sender made them. The receiver applies batch `seq` only if it is the next
/// one of its stream; one it has applied already is skipped (a sender sends again what
/// it had no acknowledgement for), and one beyond the next is dropped (an earlier one
/// was lost: the sender learns so from [`HostMessage::Sync`] and sends from there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The stream.
    pub stream: StreamId,
    /// This batch's number in the stream.
    pub seq: u64,
    /// Every batch up to this number has been acknowledged to the sender: a receiver
    /// that knows nothing of the stream (its store is new) starts after it.
    pub base: u64,
    /// At most one entry per counter.
    pub changes: Vec<Change>,
}

impl Batch {
    /// The batch's net value and operations, or `None` if they do not add up (only a
    /// sender that lies can make such a batch: an honest one sums at most
    /// [`u64::MAX`] operations of at most [`u64::MAX`] each).
    pub fn totals(&self) -> Option<(i128, u64)> {
        changes_totals(&self.changes)
    }
}

/// What `changes` add up to: net value and operations, or `None` if a sum overflows.
pub fn changes_totals(changes: &[Change]) -> Option<(i128, u64)> {
    changes.iter().try_fold((0i128, 0u64), |(v, o), c| {
        Some((v.checked_add(c.delta)?, o.checked_add(c.operations)?))
    })
}

/// Where a stream stands in its receiver's store: its last batch committed, and the net
/// value and operations of every batch of it committed there (each saturating at the
/// bounds of its type). The answer to [`HostMessage::Sync`]; all zero for a stream the
/// receiver does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMark {
    /// The last batch committed.
    pub seq: u64,
    /// Net value of every batch committed.
    pub value: i64,
    /// Operations in every batch committed.
    pub operations: u64,
}

crate::wire_type!(
    Change,
    StreamId,
    Batch,
    LocalReport,
    CollectReply,
    StreamMark
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, decode_budget, encode, MAX_MESSAGE_BYTES};
    use crate::protocol::{counter_name, MAX_COUNTERS, MAX_NODE_NAME_LEN};

    /// A full page of the longest lines there can be fits a frame with room to spare for
    /// the node's description.
    #[test]
    fn a_full_page_of_the_longest_lines_fits_a_frame() {
        let node = "n".repeat(MAX_NODE_NAME_LEN);
        let line = CounterStats {
            name: counter_name(&node, MAX_COUNTERS - 1),
            value: i64::MIN,
            operations: u64::MAX,
            rejected: u64::MAX,
            ops_per_sec: f64::MAX,
            recent_ops_per_sec: f64::MAX,
            uptime_ms: u64::MAX,
        };
        let one = encode(&Some(line.clone())).unwrap().len();
        assert!(one <= 128, "a line takes {one} bytes");
        let page = vec![Some(line); COLLECT_PAGE as usize];
        let bytes = encode(&page).unwrap();
        assert!(
            bytes.len() + 8 * 1024 * 1024 <= MAX_MESSAGE_BYTES,
            "a page takes {} bytes",
            bytes.len()
        );
        // Decoding counts each value at its size in memory, against the same bound.
        let budget = decode_budget(&page).unwrap();
        assert!(
            budget + 8 * 1024 * 1024 <= MAX_MESSAGE_BYTES,
            "a page takes {budget} bytes to decode"
        );
        let decoded: Vec<Option<CounterStats>> = decode(&bytes).unwrap();
        assert_eq!(decoded, page);
    }
}
