//! The shipper: this node's half of keeping its own store copied. It follows the
//! placement ([`keeper_of`]) and keeps one session open with the keeper it names: a
//! state transfer first (every row of the store, between two commits), then each
//! commit's writes as the store makes them ([`Outgoing`]), several commits to a
//! shipment when they queue up meanwhile. Each shipment answered tells the journal how
//! far the copy covers the commits ([`Outgoing::covered`]): it acknowledges a commit
//! only once it is on both disks.
//!
//! **While the copy is not in step** (the keeper did not answer within the failure
//! timeout, asked for a transfer, or failed; a transfer under way) commits wait: a
//! keeper that did not answer is tried again with a new transfer, and once the
//! detector finds it down the placement names the next member up, which gets the
//! transfer instead. So changes stall for at most the failure timeout and a transfer.
//! Only with no other member up (or one copy wanted) is a commit acknowledged on this
//! node's disk alone, the one current copy; a node that starts waits the failure
//! timeout for its peers before it does (until then, and until its first transfer,
//! nothing is acknowledged: what its store holds may not be on its copy yet).

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
    /// The session's id on the wire.
    id: u64,
    /// The last shipment sent in it.
    seq: u64,
    /// Its epoch in [`Outgoing`]: answers count only while it is the current one.
    epoch: u64,
}

/// Why a session ends when a commit failed under it.
const COMMIT_FAILED: &str = "a commit failed here: the copy starts again from a transfer";

/// Why a session ended, or did not begin.
enum Ended {
    /// The placement names another keeper, or none.
    Moved,
    /// The keeper's node has no keeper of copies in the process groups any more.
    NoKeeper,
    /// The keeper did not answer in time, asked for a transfer, or failed.
    Failed(String),
}

impl ShipperArgs {
    /// The keeper the placement names now: among the members up that run a keeper of
    /// copies (a member started with `--copies 1` keeps none).
    fn placed(&self) -> Option<String> {
        let me = &self.facts.name;
        let keeping: Vec<String> = crate::cluster::discovery::keepers()
            .into_iter()
            .map(|(node, _)| node)
            .collect();
        let mut up = self.facts.membership.up_names();
        up.retain(|n| keeping.contains(n));
        keeper_of(me, &up, self.copies)
    }

    /// Sends `shipment` to the session's keeper, within the timeout; gives up at once
    /// if the placement moves meanwhile (the keeper left, or was found down).
    async fn send(&self, session: &Session, shipment: Shipment) -> Result<(), Ended> {
        let until = Instant::now() + self.timeout;
        let call = call_until(
            session.actor.clone(),
            |r| CopiesMessage::Ship(shipment, r),
            until,
        );
        tokio::pin!(call);
        let answer = loop {
            tokio::select! {
                answer = &mut call => break answer,
                () = tokio::time::sleep(LOOK_EVERY) => {
                    if self.placed().as_deref() != Some(session.keeper.as_str()) {
                        return Err(Ended::Moved);
                    }
                }
            }
        };
        // A keeper that left (a clean stop) answers nothing: the placement has moved.
        if answer.is_none() && self.placed().as_deref() != Some(session.keeper.as_str()) {
            return Err(Ended::Moved);
        }
        match answer {
            Some(ShipReply::Applied) => Ok(()),
            Some(ShipReply::NeedTransfer) => {
                Err(Ended::Failed("the keeper asked for a new transfer".into()))
            }
            Some(ShipReply::Failed(why)) => Err(Ended::Failed(format!("the keeper failed: {why}"))),
            None if Instant::now() < until => {
                Err(Ended::Failed("the keeper's node went away".into()))
            }
            None => Err(Ended::Failed(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Opens a session with `keeper`: every row of the store, in parts; commits made
    /// meanwhile are queued, and wait for it.
    async fn transfer(&self, keeper: String) -> Result<Session, Ended> {
        let Some(actor) = keeper_named(&keeper) else {
            return Err(Ended::NoKeeper);
        };
        self.transfer_to(keeper, actor).await
    }

    async fn transfer_to(
        &self,
        keeper: String,
        actor: ActorRef<CopiesMessage>,
    ) -> Result<Session, Ended> {
        let failed = |why: String| Ended::Failed(why);
        self.outgoing.keep();
        let store = Arc::clone(&self.store);
        let outgoing = Arc::clone(&self.outgoing);
        let shipper = outgoing.shipper();
        let (through, rows, epoch) = spawn_blocking(move || {
            let mut epoch = None;
            let (through, rows) =
                store.rows_then(|last| epoch = outgoing.start_session(last, shipper))?;
            Ok::<_, crate::store::StoreError>((through, rows, epoch))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("reading the store: {e}")))?;
        let epoch = epoch.ok_or_else(|| failed("the shipper stopped".into()))?;
        let mut session = Session {
            keeper,
            actor,
            id: fastrand::u64(..),
            seq: 0,
            epoch,
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
                ops: shared::codec::encode(&ops.to_vec()).map_err(|e| failed(e.to_string()))?,
            };
            self.send(&session, shipment).await?;
            session.seq = i as u64;
        }
        if !self.outgoing.covered_in(session.epoch, through) {
            return Err(failed(COMMIT_FAILED.into()));
        }
        Ok(session)
    }

    /// Ships each commit as it comes, until the placement moves or the keeper fails.
    async fn keep_in_step(&self, session: &mut Session) -> Ended {
        loop {
            let next = tokio::select! {
                next = self.outgoing.take() => Some(next),
                () = tokio::time::sleep(LOOK_EVERY) => None,
            };
            if let Some((epoch, through, ops)) = next {
                // A commit failed since (its retry may be among these): not this
                // session's to ship.
                if epoch != session.epoch {
                    return Ended::Failed(COMMIT_FAILED.into());
                }
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
                if let Err(ended) = self.send(session, shipment).await {
                    return ended;
                }
                session.seq += 1;
                if !self.outgoing.covered_in(session.epoch, through) {
                    return Ended::Failed(COMMIT_FAILED.into());
                }
            } else if self.outgoing.epoch() != session.epoch {
                return Ended::Failed(COMMIT_FAILED.into());
            }
            if self.placed().as_deref() != Some(session.keeper.as_str()) {
                return Ended::Moved;
            }
        }
    }

    /// The shipper's life: follow the placement, keep a session in step.
    async fn run(self) {
        let mut troubled = false;
        let started = Instant::now();
        let mut no_keeper_since: Option<Instant> = None;
        loop {
            let Some(keeper) = self.placed() else {
                let alone = self.facts.membership.up_names().is_empty();
                // A node that starts gives its peers the failure timeout to come up
                // before it acknowledges on its own disk alone; a member up whose
                // keeper is not seen (a moment's disconnection, a keeper starting
                // again) is waited for, never passed over for this disk alone.
                if !alone || started.elapsed() < self.timeout {
                    let since = *no_keeper_since.get_or_insert_with(Instant::now);
                    if !alone && !troubled && since.elapsed() > self.timeout {
                        warn!("members are up but none keeps copies (are they started with --copies 1?): changes wait until one does");
                        troubled = true;
                    }
                    tokio::time::sleep(LOOK_EVERY).await;
                    continue;
                }
                if self.outgoing.keeping() {
                    info!("no other member up: changes are acknowledged on this node's disk alone until one is");
                }
                self.outgoing.alone();
                tokio::time::sleep(LOOK_EVERY).await;
                continue;
            };
            no_keeper_since = None;
            let ended = match self.transfer(keeper.clone()).await {
                Ok(mut session) => {
                    self.outgoing.kept_by(Some(&keeper));
                    let again = if troubled { " again" } else { "" };
                    info!(%keeper, "this node's store is copied{again}: changes are acknowledged once on both disks");
                    troubled = false;
                    self.keep_in_step(&mut session).await
                }
                Err(ended) => ended,
            };
            self.outgoing.kept_by(None);
            match ended {
                Ended::Moved => info!(from = %keeper, "the copy of this node's store moves"),
                // Gone from the groups since the placement was worked out: the next
                // look names another.
                Ended::NoKeeper => tokio::time::sleep(LOOK_EVERY).await,
                Ended::Failed(why) => {
                    if !troubled {
                        warn!(%keeper, %why, "the copy of this node's store is not in step: changes wait until it is (on the next member up once this one is found down)");
                    }
                    troubled = true;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

/// The shipping task, aborted when dropped (however the actor ends).
pub(crate) struct Shipping(JoinHandle<()>);

impl Drop for Shipping {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Actor for Shipper {
    type Msg = ();
    /// The shipping task, and what it ships.
    type State = (Shipping, Arc<Outgoing>);
    type Arguments = ShipperArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ShipperArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let outgoing = Arc::clone(&args.outgoing);
        Ok((Shipping(tokio::spawn(args.run())), outgoing))
    }

    /// Commits waiting for the copy are acknowledged on this node's disk alone (the
    /// node is stopping, or the shipper failed), until the shipper that starts next (or
    /// the node's next run) opens a session, with a transfer.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        (task, outgoing): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        task.0.abort();
        // Stopped at its next await: after this, it changes nothing (an answer for its
        // session no longer counts once the session ends, and a read of the store for
        // a transfer still running on a blocking thread starts none).
        let _ = (&mut task.0).await;
        outgoing.stop();
        Ok(())
    }
}
