//! The keeper of copies: this node's half of keeping other nodes' stores. It holds a
//! copy of the store of each node that ships to it, under `DATA/copies/NODE/` (a store
//! like the node's own: redb file and redo log), applies each shipment in its session's
//! order and answers once it is on disk, and hands a copy back, part by part, to the
//! node that lost its own (see [`shared::copies`]).
//!
//! A copy of a node that left the cluster for good (a decision it takes only holding
//! no count) is of no more use: a keeper that hears it leave removes it (looking every
//! [`SWEEP_EVERY`]), if it is a copy of the store the node said it left from (a node
//! that takes the name later has a store of its own). A keeper that was down or cut
//! off as the node left keeps the copy.
//!
//! Sessions are held in memory: a keeper that starts again asks every node shipping to
//! it for a state transfer first ([`ShipReply::NeedTransfer`]), so a shipment it did
//! not apply is never skipped. A copy being transferred into is marked so on its disk,
//! and is neither offered nor fetched until the transfer's last part.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{pg, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use shared::copies::{
    CopiesMessage, CopyPart, Fetched, Held, HeldCopy, ShipReply, Shipment, COPIES_GROUP,
    TRANSFER_PART_OPS,
};
use shared::protocol::validate_node_name;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::clock::Ticker;
use crate::cluster::discovery::keeper as keeper_named;
use crate::cluster::membership::Membership;
use crate::cluster::rpc::call_until;
use crate::facts::NodeFacts;
use crate::runtime::busy_poll::spawn_blocking;
use crate::store::{Op, Store, StoreError};

/// Where in a node's data dir the copies it keeps are: one dir per node.
pub(crate) const COPIES_DIR: &str = "copies";

/// The keeper behaviour.
#[derive(Debug, Default)]
pub(crate) struct Keeper;

/// What the keeper starts with.
pub(crate) struct KeeperArgs {
    /// This node's name (it keeps no copy of its own store).
    pub(crate) me: String,
    /// Where the copies are: `DATA/copies`.
    pub(crate) dir: PathBuf,
    /// The cluster as this node sees it: which nodes left for good.
    pub(crate) membership: Membership,
}

/// How often the keeper looks for copies of nodes that left for good.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// A copy held, and the session that ships to it.
struct Kept {
    store: Arc<Store>,
    /// The session and the last shipment applied in it.
    session: Option<(u64, u64)>,
    /// Whether the copy is whole (no transfer into it under way).
    whole: bool,
}

/// The keeper's state.
pub(crate) struct KeeperState {
    /// The sweeps' ticks (see [`SWEEP_EVERY`]).
    _sweeping: Option<Ticker>,
    args: KeeperArgs,
    kept: HashMap<String, Kept>,
    /// The rows of the last copy fetched.
    fetched: Option<FetchedRows>,
    /// Copies of nodes that left for good that could not be removed (said once).
    unremovable: HashSet<String>,
}

impl KeeperState {
    /// The copy of `node`'s store, opened (made, if `make`) the first time it is needed;
    /// `None` if there is none and `make` is false.
    async fn copy(&mut self, node: &str, make: bool) -> Result<Option<&mut Kept>, StoreError> {
        let Some(dir) = self.dir_of(node) else {
            return Err(StoreError::write(format!("no copy is kept for '{node}'")));
        };
        if !self.kept.contains_key(node) {
            if !make && !dir.join(crate::store::FILE_NAME).exists() {
                return Ok(None);
            }
            let name = node.to_string();
            let (store, whole) = spawn_blocking(move || {
                let (store, _) = Store::open(&dir, &name, 0, Arc::default())?;
                let whole = store.copy_whole()?;
                Ok::<_, StoreError>((store, whole))
            })
            .await
            .map_err(|e| StoreError::write(e.to_string()))??;
            let kept = Kept {
                store: Arc::new(store),
                session: None,
                whole,
            };
            self.kept.insert(node.to_string(), kept);
        }
        Ok(self.kept.get_mut(node))
    }

    /// Where the copy of `node`'s store is: `None` unless `node` is another node's
    /// name. A name from the wire becomes a directory, so never a path of its own
    /// ("." or "..", which node names allow).
    fn dir_of(&self, node: &str) -> Option<PathBuf> {
        let named = validate_node_name(node).is_ok() && !matches!(node, "." | "..");
        (named && node != self.args.me).then(|| self.args.dir.join(node))
    }

    /// Removes the copies of the nodes that left for good: each the copy of the store
    /// the node said it left from, never a later store of a node that took its name.
    async fn sweep(&mut self) {
        let gone = self.args.membership.departed().into_iter();
        for (node, _, departure) in gone.filter(|(_, _, d)| d.for_good && d.store_id != 0) {
            let Some(dir) = self.dir_of(&node).filter(|dir| dir.exists()) else {
                continue;
            };
            if self.unremovable.contains(&node) {
                continue;
            }
            let Ok(Some(kept)) = self.copy(&node, false).await else {
                continue;
            };
            let store = Arc::clone(&kept.store);
            let id = spawn_blocking(move || store.store_id()).await;
            if !matches!(id, Ok(Ok(Some((id, _)))) if id == departure.store_id) {
                continue;
            }
            self.fetched.take_if(|f| f.node == node);
            let kept = self.kept.remove(&node);
            // Closing the copy syncs its file: off the async worker, as every disk wait.
            let removed = spawn_blocking(move || {
                drop(kept);
                std::fs::remove_dir_all(dir)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|removed| removed);
            match removed {
                Ok(()) => info!(%node, counters = departure.counters,
                    "removed the copy of a node's store: it left the cluster for good"),
                Err(error) => {
                    warn!(%node, %error, "cannot remove the copy of a node that left for good: it stays");
                    self.unremovable.insert(node);
                }
            }
        }
    }

    /// Applies `shipment` if it is its session's next (or starts one), and answers
    /// `reply`.
    async fn ship(&mut self, shipment: Shipment, reply: RpcReplyPort<ShipReply>) {
        let ops: Vec<Op> = match shared::codec::decode(&shipment.ops) {
            Ok(ops) => ops,
            Err(e) => {
                let _ = reply.send(ShipReply::Failed(format!("unreadable writes: {e}")));
                return;
            }
        };
        let kept = match self.copy(&shipment.from, shipment.reset).await {
            Ok(Some(kept)) => kept,
            Ok(None) => {
                let _ = reply.send(ShipReply::NeedTransfer);
                return;
            }
            Err(e) => {
                let _ = reply.send(ShipReply::Failed(e.to_string()));
                return;
            }
        };
        let next = kept.session.map(|(session, seq)| (session, seq + 1));
        if !shipment.reset && next != Some((shipment.session, shipment.seq)) {
            kept.session = None;
            let _ = reply.send(ShipReply::NeedTransfer);
            return;
        }
        // The mark changes only at a transfer's first and last parts.
        let state = match (shipment.reset, shipment.whole) {
            (_, false) => shipment.reset.then_some(0),
            (true, true) => Some(1),
            (false, true) => (!kept.whole).then_some(1),
        };
        let store = Arc::clone(&kept.store);
        let reset = shipment.reset;
        // On a blocking thread: the node's async workers (one, by default) also carry
        // its heartbeats and its own journal, and a sync may take long on a slow disk.
        // It answers the shipper itself as soon as the copy is on disk, before this
        // actor is woken to note it: the next shipment waits in the mailbox meanwhile.
        let applied = spawn_blocking(move || {
            let applied = store.apply_copied(&ops, reset, state);
            let answer = match &applied {
                Ok(()) => ShipReply::Applied,
                Err(e) => ShipReply::Failed(e.to_string()),
            };
            let _ = reply.send(answer);
            applied
        })
        .await;
        match applied {
            Ok(Ok(())) => {
                kept.session = Some((shipment.session, shipment.seq));
                kept.whole = shipment.whole;
                if shipment.reset {
                    info!(node = %shipment.from, through = shipment.through,
                        "keeping a copy of this node's store: a transfer begins");
                }
            }
            Ok(Err(e)) => {
                kept.session = None;
                warn!(node = %shipment.from, error = %e, "a copy could not take a shipment");
            }
            // It panicked: its answer went unsent, which the shipper takes as a failure.
            Err(_) => kept.session = None,
        }
    }

    /// The whole copy of `node`'s store, if one is kept here: its last commit, its id.
    async fn held(&mut self, node: &str) -> Option<Held> {
        let kept = self.copy(node, false).await.ok()??;
        if !kept.whole {
            return None;
        }
        let store = Arc::clone(&kept.store);
        let read = spawn_blocking(move || {
            let through = store.last_commit()?;
            let id = store.store_id()?;
            Ok::<_, StoreError>(id.map(|(store_id, made_ms)| Held {
                through,
                store_id,
                made_ms,
            }))
        });
        read.await.ok()?.ok()?
    }

    /// Part `part` of the whole copy of `node`'s store, if one is kept here. The copy's
    /// rows are read once for all the parts of a fetch, and again only if the copy
    /// changed meanwhile.
    async fn fetch(&mut self, node: &str, part: u32) -> Option<CopyPart> {
        let kept = self.copy(node, false).await.ok()??;
        if !kept.whole {
            return None;
        }
        let store = Arc::clone(&kept.store);
        let cached = self.fetched.take().filter(|f| f.node == node);
        let read = spawn_blocking(move || {
            let through = store.last_commit()?;
            if let Some(fetched) = cached.filter(|f| f.through == through) {
                return Ok(fetched);
            }
            let (through, rows) = store.rows_then(|_| ())?;
            let (store_id, _) = store
                .store_id()?
                .ok_or_else(|| StoreError::write("the copy holds no store id"))?;
            Ok::<_, StoreError>(FetchedRows {
                node: String::new(),
                through,
                store_id,
                rows: Arc::new(rows),
            })
        });
        let mut fetched = read.await.ok()?.ok()?;
        fetched.node = node.to_string();
        let chunks: Vec<&[Op]> = fetched.rows.chunks(TRANSFER_PART_OPS).collect();
        let parts = chunks.len().max(1) as u32;
        let ops = chunks.get(part as usize).copied().unwrap_or(&[]);
        let answer = (part < parts).then(|| {
            let ops = shared::codec::encode(&ops.to_vec()).ok()?;
            Some(CopyPart {
                through: fetched.through,
                store_id: fetched.store_id,
                parts,
                ops,
            })
        });
        self.fetched = Some(fetched);
        answer.flatten()
    }
}

/// A copy's rows read for a fetch, kept for its next parts.
struct FetchedRows {
    node: String,
    through: u64,
    store_id: u64,
    rows: Arc<Vec<Op>>,
}

/// Keepers asked for a node's copy: the members after it on the ring, this one
/// included (a copy is kept on the node's successor; one that joined since, or went
/// down, moved it one or two places on).
const ASKED: usize = 3;

/// How long keepers have to answer what they hold.
const HELD_WITHIN: Duration = Duration::from_secs(2);

/// Which copy a node that starts from its copy will take.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wanted {
    /// Only one further on than this commit.
    pub(crate) after: Option<u64>,
    /// Only a copy of this store.
    pub(crate) store_id: Option<u64>,
    /// From this keeper (the one the first part came from), not the best one.
    pub(crate) keeper: Option<String>,
}

/// Part `part` of the best copy of `node`'s store among the keepers after it on the
/// ring (the latest store's, furthest on; or `wanted.keeper`'s), and which keeper it
/// is; `None` if none of them has a whole copy as `wanted`.
pub(crate) async fn best_copy(
    facts: &NodeFacts,
    node: &str,
    part: u32,
    wanted: Wanted,
) -> Option<(String, CopyPart)> {
    let (name, keeper) = match wanted.keeper {
        Some(name) => {
            let keeper = keeper_named(&name)?;
            (name, keeper)
        }
        None => best_keeper(facts, node, wanted.store_id).await?,
    };
    let until = Instant::now() + FETCH_WITHIN;
    let Fetched(part) = call_until(
        keeper,
        |r| CopiesMessage::Fetch(node.to_string(), part, r),
        until,
    )
    .await?;
    let fits = |p: &CopyPart| {
        wanted.store_id.is_none_or(|id| id == p.store_id)
            && wanted.after.is_none_or(|after| p.through > after)
    };
    Some((name, part.filter(fits)?))
}

/// The keeper of the best whole copy of `node`'s store among the keepers after it on
/// the ring (of store `store_id`, if given): the latest store's (see
/// `Held::made_ms`), furthest on.
async fn best_keeper(
    facts: &NodeFacts,
    node: &str,
    store_id: Option<u64>,
) -> Option<(String, ActorRef<CopiesMessage>)> {
    let mut ring = facts.membership.up_names();
    ring.push(facts.name.clone());
    ring.retain(|n| n != node);
    ring.sort();
    ring.dedup();
    let split = ring.partition_point(|n| n.as_str() < node);
    ring.rotate_left(split);
    let until = Instant::now() + HELD_WITHIN;
    let mut best: Option<((u64, u64), String, ActorRef<CopiesMessage>)> = None;
    for name in ring.into_iter().take(ASKED) {
        let Some(keeper) = keeper_named(&name) else {
            continue;
        };
        let held = call_until(
            keeper.clone(),
            |r| CopiesMessage::Held(node.to_string(), r),
            until,
        )
        .await;
        if let Some(HeldCopy(Some(held))) = held {
            let same = store_id.is_none_or(|id| id == held.store_id);
            let rank = (held.made_ms, held.through);
            if same && best.as_ref().is_none_or(|(b, _, _)| rank > *b) {
                best = Some((rank, name, keeper));
            }
        }
    }
    best.map(|(_, name, keeper)| (name, keeper))
}

/// How long a keeper has to hand over a part of a copy.
const FETCH_WITHIN: Duration = Duration::from_secs(20);

impl Actor for Keeper {
    type Msg = CopiesMessage;
    type State = KeeperState;
    type Arguments = KeeperArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: KeeperArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(COPIES_GROUP.to_string(), vec![myself.get_cell()]);
        let sweeping = Ticker::every(&myself, SWEEP_EVERY, || CopiesMessage::Sweep);
        Ok(KeeperState {
            _sweeping: Some(sweeping),
            args,
            kept: HashMap::new(),
            fetched: None,
            unremovable: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CopiesMessage::Ship(shipment, reply) => {
                state.ship(shipment, reply).await;
            }
            CopiesMessage::Held(node, reply) => {
                let _ = reply.send(HeldCopy(state.held(&node).await));
            }
            CopiesMessage::Fetch(node, part, reply) => {
                let _ = reply.send(Fetched(state.fetch(&node, part).await));
            }
            CopiesMessage::Sweep => state.sweep().await,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name from the wire never opens this node's own store, or one outside the
    /// copies' directory.
    #[tokio::test]
    async fn only_another_nodes_name_opens_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = KeeperState {
            _sweeping: None,
            args: KeeperArgs {
                me: "a".into(),
                dir: dir.path().join(COPIES_DIR),
                membership: Membership::default(),
            },
            kept: HashMap::new(),
            fetched: None,
            unremovable: HashSet::new(),
        };
        for name in ["a", "..", ".", "x/y", ""] {
            assert!(state.copy(name, true).await.is_err(), "{name:?}");
        }
        assert!(state.copy("b", false).await.unwrap().is_none());
        assert!(state.copy("b", true).await.unwrap().is_some());
    }

    /// The copy of a node that left for good is removed; one that left for a while
    /// keeps its copy (it may come back, or come back with a lost disk), and so does a
    /// copy of another store than the one the node left from (a node that took its
    /// name since, with a new store).
    #[tokio::test]
    async fn the_copy_of_a_node_that_left_for_good_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let membership = Membership::default();
        let mut state = KeeperState {
            _sweeping: None,
            args: KeeperArgs {
                me: "a".into(),
                dir: dir.path().join(COPIES_DIR),
                membership: membership.clone(),
            },
            kept: HashMap::new(),
            fetched: None,
            unremovable: HashSet::new(),
        };
        let now = Instant::now();
        for (node, for_good, same_store) in
            [("b", true, true), ("c", false, true), ("d", true, false)]
        {
            let kept = state.copy(node, true).await.unwrap().unwrap();
            let (id, _) = kept.store.store_id().unwrap().unwrap();
            membership.session_up(node, "127.0.0.1:1", now);
            let departure = shared::agent::Departure {
                for_good,
                counters: 4,
                known: true,
                value: 0,
                operations: 0,
                issued_value: 0,
                issued_operations: 0,
                in_flight_operations: 0,
                store_id: if same_store { id } else { id ^ 1 },
            };
            assert!(membership.left(node, 1, departure, now));
        }
        state.sweep().await;
        let held = |node: &str| dir.path().join(COPIES_DIR).join(node).exists();
        assert!(!held("b"), "the copy of the store b left for good from");
        assert!(state.copy("b", false).await.unwrap().is_none());
        assert!(held("c"), "the copy of c, which left for a while");
        assert!(
            held("d"),
            "a copy of another store than the one d left from"
        );
        assert!(state.copy("d", false).await.unwrap().is_some());
    }
}
