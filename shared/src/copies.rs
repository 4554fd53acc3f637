//! What a node's keeper of copies answers: it keeps, on its own disk, a copy of the
//! store of each node that ships its commits to it (one keeper per node, in
//! [`COPIES_GROUP`]).
//!
//! A node ships its store to the keeper its placement names: first the whole store
//! (a state transfer, in parts of at most [`TRANSFER_PART_OPS`] writes), then each
//! commit's writes as the commit makes them. The writes are the records of the node's
//! redo log, each the new value of a key (never an amount to add): applied in order,
//! they leave the copy as the store was after the commit numbered
//! [`Shipment::through`]. A keeper applies a session's shipments only in order and
//! only after the transfer that started the session; anything else it refuses with
//! [`ShipReply::NeedTransfer`], and the node starts a new session with a transfer.

use ractor::RpcReplyPort;
use ractor_cluster_derive::RactorClusterMessage;
use serde::{Deserialize, Serialize};

/// The process group of keepers of copies, one per node.
pub const COPIES_GROUP: &str = "counter-cluster.copies";

/// The most writes a part of a state transfer carries (each at most a few hundred
/// bytes: a part stays far below the frame limit).
pub const TRANSFER_PART_OPS: usize = 20_000;

/// The registered name of node `node`'s keeper of copies.
pub fn keeper_name(node: &str) -> String {
    format!("{node}/copies")
}

/// A message to a node's keeper of copies.
///
/// The variant names are the wire tags (ractor sends them as strings): renaming one
/// is a protocol change.
#[derive(RactorClusterMessage)]
pub enum CopiesMessage {
    /// Apply a shipment to the copy of its node's store; answered once it is on disk.
    #[rpc]
    Ship(Shipment, RpcReplyPort<ShipReply>),
    /// What whole copy of node `node`'s store this keeper holds: the number of the
    /// last commit in it and the store's id, or `None` (no copy, or a transfer into it
    /// under way).
    #[rpc]
    Held(String, RpcReplyPort<HeldCopy>),
    /// Part `part` of the copy of node `node`'s store (for the node to start again
    /// from, its own store lost or older): `None` if this keeper holds no whole copy.
    #[rpc]
    Fetch(String, u32, RpcReplyPort<Fetched>),
    /// Remove the copies of nodes that left the cluster for good. The keeper sends it
    /// to itself every few seconds; which copies go is decided by its own node's
    /// membership, whoever sends it.
    Sweep,
}

/// A part of a node's store, shipped to the keeper of its copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    /// The node whose store it is.
    pub from: String,
    /// The shipping session, a random number: one session, one ordered stream.
    pub session: u64,
    /// Its place in the session: 0 for the first part of the transfer that starts it,
    /// one more for each shipment after.
    pub seq: u64,
    /// The first part of a state transfer: the copy is emptied first.
    pub reset: bool,
    /// After this shipment the copy is whole: the transfer's last part, and every
    /// commit's shipment after it.
    pub whole: bool,
    /// The number of the node's last commit in the copy once this is applied.
    pub through: u64,
    /// The writes, encoded (the node's redo-log records; opaque to the wire).
    pub ops: Vec<u8>,
}

/// A keeper's answer to a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipReply {
    /// On the keeper's disk.
    Applied,
    /// Not the session's next shipment (or a session the keeper does not know): start
    /// again with a state transfer.
    NeedTransfer,
    /// The keeper could not apply it (its disk, or writes it cannot read).
    Failed(String),
}

/// A part of a copy, fetched by the node whose store it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyPart {
    /// The number of the last commit in the copy.
    pub through: u64,
    /// The store's id.
    pub store_id: u64,
    /// How many parts the copy is in.
    pub parts: u32,
    /// The writes that make this part's rows, encoded as in [`Shipment::ops`].
    pub ops: Vec<u8>,
}

/// Where a node's store is copied, as the node says in its description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStatus {
    /// Copies wanted, the node's own store included (`--copies`).
    pub copies: u32,
    /// The member whose copy is in step (every commit acknowledged is on its disk), if
    /// any: with none, and copies wanted, commits wait for one (or, with no other
    /// member up, are on this node's disk alone).
    pub kept_by: Option<String>,
    /// Commits made on the node that its copy does not hold yet.
    pub lag_commits: u64,
}

/// What whole copy of a node's store a keeper holds, or `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCopy(pub Option<Held>);

/// A whole copy of a node's store, as its keeper describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The number of the last commit in it.
    pub through: u64,
    /// The store's id (a store made anew, on a blank disk, has another).
    pub store_id: u64,
    /// When the store was made (wall-clock milliseconds; 0 if it does not say): of
    /// copies of two stores of one node, the later store's is the node's.
    pub made_ms: u64,
}

/// A part of a copy, or `None` if the keeper holds no whole copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched(pub Option<CopyPart>);

crate::wire_type!(Shipment, ShipReply, CopyPart, HeldCopy, Fetched, Held);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn shipments_and_parts_cross_the_wire_unchanged() {
        let shipment = Shipment {
            from: "w1".into(),
            session: 7,
            seq: 3,
            reset: false,
            whole: true,
            through: 42,
            ops: vec![1, 2, 3],
        };
        assert_eq!(
            decode::<Shipment>(&encode(&shipment).unwrap()).unwrap(),
            shipment
        );
        let part = CopyPart {
            through: 42,
            store_id: 9,
            parts: 2,
            ops: vec![9; 100],
        };
        assert_eq!(decode::<CopyPart>(&encode(&part).unwrap()).unwrap(), part);
        for reply in [
            ShipReply::Applied,
            ShipReply::NeedTransfer,
            ShipReply::Failed("x".into()),
        ] {
            assert_eq!(
                decode::<ShipReply>(&encode(&reply).unwrap()).unwrap(),
                reply
            );
        }
    }
}
