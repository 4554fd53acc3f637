//! The shipper: this node's half of keeping its own store copied. It follows the
//! placement ([`keeper_of`]) and keeps one session open with the keeper it names: a
//! state transfer first (every row of the store, between two commits), then each
//! commit's writes as the store makes them ([`Outgoing`]), several commits to a
//! shipment when they queue up meanwhile. Each shipment answered tells the journal how
//! far the copy covers the commits ([`Outgoing::covered`]): it acknowledges a commit
//! only once it is on both disks.
//!
//! **While no copy is in step** (one copy wanted; no other member up; the keeper did
//! not answer within the failure timeout, or asked for a transfer; a transfer under
//! way) commits are acknowledged on this node's disk alone, the only current copy, as
//! Kafka's in-sync replicas shrink to the leader. A keeper that did not answer is tried
//! again with a new transfer, and once the detector finds it down the placement names
//! the next member up, which gets the transfer instead.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use shared::copies::{CopiesMessage, ShipReply, Shipment, TRANSFER_PART_OPS};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::outgoing::Outgoing;
use super::placement::keeper_of;
use crate::cluster::discovery::keeper as keeper_named;
use crate::cluster::rpc::call_until;
use crate::facts::NodeFacts;
use crate::runtime::busy_poll::spawn_blocking;
use crate::store::{Op, Store};

/// How often the placement is looked at again while nothing is shipped.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// How long after a failed attempt the keeper is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The shipper behaviour.
#[derive(Debug, Default)]
pub(crate) struct Shipper;

/// What the shipper works with.
#[derive(Clone)]
pub(crate) struct ShipperArgs {
    /// The node: its name and membership.
    pub(crate) facts: Arc<NodeFacts>,
    /// The store shipped.
    pub(crate) store: Arc<Store>,
    /// Its commits not shipped yet, and how far the copy covers them.
    pub(crate) outgoing: Arc<Outgoing>,
    /// Copies wanted (`--copies`), this node's store included.
    pub(crate) copies: u32,
    /// How long a keeper may take to answer a shipment (the failure timeout).
    pub(crate) timeout: Duration,
}

/// The open session with a keeper.
struct Session {
    keeper: String,
    actor: ActorRef<CopiesMessage>,
    id: u64,
    seq: u64,
}

/// Why a session ended.
enum Ended {
    /// The placement names another keeper, or none.
    Moved,
    /// The keeper did not answer in time, asked for a transfer, or failed.
    Failed(String),
}

impl ShipperArgs {
    /// The keeper the placement names now.
    fn placed(&self) -> Option<String> {
        let me = &self.facts.name;
        keeper_of(me, &self.facts.membership.up_names(), self.copies)
    }

    /// Sends `shipment` to the session's keeper, within the timeout.
    async fn send(&self, session: &Session, shipment: Shipment) -> Result<(), String> {
        let until = Instant::now() + self.timeout;
        match call_until(
            session.actor.clone(),
            |r| CopiesMessage::Ship(shipment, r),
            until,
        )
        .await
        {
            Some(ShipReply::Applied) => Ok(()),
            Some(ShipReply::NeedTransfer) => Err("the keeper asked for a new transfer".into()),
            Some(ShipReply::Failed(why)) => Err(format!("the keeper failed: {why}")),
            None => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Opens a session with `keeper`: every row of the store, in parts; commits made
    /// meanwhile are queued, and acknowledged on this node's disk alone.
    async fn transfer(&self, keeper: String) -> Result<Session, String> {
        let actor = keeper_named(&keeper)
            .ok_or_else(|| format!("{keeper} has no keeper of copies running"))?;
        self.outgoing.alone();
        self.outgoing.keep();
        let store = Arc::clone(&self.store);
        let outgoing = Arc::clone(&self.outgoing);
        let (through, rows) =
            spawn_blocking(move || store.rows_then(|last| outgoing.drop_through(last)))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("reading the store: {e}"))?;
        let mut session = Session {
            keeper,
            actor,
            id: fastrand::u64(..),
            seq: 0,
        };
        let parts: Vec<&[Op]> = rows.chunks(TRANSFER_PART_OPS).collect();
        let count = parts.len().max(1);
        for i in 0..count {
            let ops = parts.get(i).copied().unwrap_or(&[]);
            let shipment = Shipment {
                from: self.facts.name.clone(),
                session: session.id,
                seq: i as u64,
                reset: i == 0,
                whole: i + 1 == count,
                through,
                ops: shared::codec::encode(&ops.to_vec()).map_err(|e| e.to_string())?,
            };
            self.send(&session, shipment).await?;
            session.seq = i as u64;
        }
        self.outgoing.covered(through);
        Ok(session)
    }

    /// Ships each commit as it comes, until the placement moves or the keeper fails.
    async fn keep_in_step(&self, session: &mut Session) -> Ended {
        loop {
            let next = tokio::select! {
                next = self.outgoing.take() => Some(next),
                () = tokio::time::sleep(LOOK_EVERY) => None,
            };
            if let Some((through, ops)) = next {
                let shipment = Shipment {
                    from: self.facts.name.clone(),
                    session: session.id,
                    seq: session.seq + 1,
                    reset: false,
                    whole: true,
                    through,
                    ops: match shared::codec::encode(&ops) {
                        Ok(ops) => ops,
                        Err(e) => return Ended::Failed(e.to_string()),
                    },
                };
                if let Err(why) = self.send(session, shipment).await {
                    return Ended::Failed(why);
                }
                session.seq += 1;
                self.outgoing.covered(through);
            }
            if self.placed().as_deref() != Some(session.keeper.as_str()) {
                return Ended::Moved;
            }
        }
    }

    /// The shipper's life: follow the placement, keep a session in step.
    async fn run(self) {
        let mut troubled = false;
        loop {
            let Some(keeper) = self.placed() else {
                self.outgoing.alone();
                tokio::time::sleep(LOOK_EVERY).await;
                continue;
            };
            match self.transfer(keeper.clone()).await {
                Ok(mut session) => {
                    if troubled {
                        info!(%keeper, "this node's store is copied again: changes are acknowledged once on both disks");
                        troubled = false;
                    } else {
                        info!(%keeper, "this node's store is copied: changes are acknowledged once on both disks");
                    }
                    match self.keep_in_step(&mut session).await {
                        Ended::Moved => {
                            info!(from = %keeper, "the copy of this node's store moves");
                        }
                        Ended::Failed(why) => {
                            if !troubled {
                                warn!(%keeper, %why, "the copy of this node's store is not in step: changes are acknowledged on this node's disk alone until it is");
                            }
                            troubled = true;
                            self.outgoing.alone();
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                    }
                }
                Err(why) => {
                    if !troubled {
                        warn!(%keeper, %why, "the copy of this node's store could not be made: changes are acknowledged on this node's disk alone until it is");
                    }
                    troubled = true;
                    self.outgoing.alone();
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

impl Actor for Shipper {
    type Msg = ();
    /// The shipping task, and what it ships.
    type State = (JoinHandle<()>, Arc<Outgoing>);
    type Arguments = ShipperArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ShipperArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let outgoing = Arc::clone(&args.outgoing);
        Ok((tokio::spawn(args.run()), outgoing))
    }

    /// Commits waiting for the copy are acknowledged on this node's disk alone: the
    /// shipper that starts next (or the node's next run) begins with a transfer.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        (task, outgoing): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        task.abort();
        outgoing.alone();
        Ok(())
    }
}
