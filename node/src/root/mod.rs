//! The node's supervision tree: one root actor owns every long-lived actor of the node,
//! linked, and decides what each one's failure does. Nothing runs on beside a dead part:
//! a child that fails (or stops when it should not) is either started again with its
//! state rebuilt, or the whole node stops cleanly with a non-zero exit.
//!
//! The tree, and what each child's failure does, is drawn in `docs/architecture.md`
//! ("The supervision tree"); [`Child`] lists the children in the order they start.
//!
//! A child that cannot start again only because the store cannot be read (its disk is
//! failing) is not a failure of the node: the root tries again every half second,
//! outside the restart budget, and the node goes on without it meanwhile (its counters
//! answer that they are not running, changes are refused or sent again).
//!
//! What survives every restart lives outside the actors, owned here: the
//! [`NodeFacts`] (counter table, issued tally, membership), the [`Store`] (every
//! counter's committed figures), the bound cluster port, and the places of connections
//! waiting to authenticate. What a restart loses is the failed actor's mailbox.
//!
//! The root also stops the node in order ([`RootMessage::Shutdown`]: the accept loop,
//! load; the node closed to changes and what it took committed; a leave notice to the
//! peers saying what it takes with it (see [`crate::cluster::leave`]); mesh, aggregator,
//! agent, host, journal (its last commit), counters, then the network) and carries out fault injection
//! ([`RootMessage::Drill`], only with `--enable-fault-injection`).

mod children;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use ractor_cluster::RactorMessage;
use shared::agent::{ClientError, CrashTarget};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::cluster::leave;
use crate::cluster::mesh::{MeshMessage, LEAVE_TIMEOUT};
use crate::config::NodeConfig;
use crate::copies::outgoing::Outgoing;
use crate::counters::counter::CounterMessage;
use crate::counters::supervisor::SupervisorMessage;
use crate::error::NodeError;
use crate::facts::NodeFacts;
use crate::net::transport::Inbound;
use crate::store::journal::JournalMessage;
use crate::store::Store;
use crate::supervision::{
    exit_of, Drill, DrillAnswer, DrillPort, Exit, RestartBudget, LOAD_FINISHED,
};
pub(crate) use children::Child;
use children::{Children, Kit};

/// Restarts allowed within [`RESTART_WINDOW`] before the root gives up and stops the
/// node: a part that keeps failing is a node that does not work.
pub(crate) const MAX_RESTARTS: usize = 10;
/// See [`MAX_RESTARTS`].
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(10);
/// How long each part may take to stop before the node moves on.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after answering a request to crash it the agent is made to fail.
const AGENT_CRASH_DELAY: Duration = Duration::from_millis(200);

/// The root behaviour.
#[derive(Debug, Default)]
pub(crate) struct NodeRoot;

/// What the root starts with.
pub(crate) struct RootArgs {
    /// The checked configuration.
    pub(crate) config: NodeConfig,
    /// The cluster port, already bound.
    pub(crate) listener: Arc<TcpListener>,
    /// What survives restarts: counter table, issued tally, membership.
    pub(crate) facts: Arc<NodeFacts>,
    /// The node's store, open.
    pub(crate) store: Arc<Store>,
    /// Where the root reports that the node cannot go on (the node then stops).
    pub(crate) fatal: mpsc::UnboundedSender<NodeError>,
    /// The commits the copy of the store does not hold yet (`None`: one copy).
    pub(crate) outgoing: Option<Arc<Outgoing>>,
}

/// The root's state.
pub(crate) struct RootState {
    kit: Kit,
    fatal: mpsc::UnboundedSender<NodeError>,
    children: Children,
    ids: HashMap<ActorId, Child>,
    budget: RestartBudget,
    stopping: bool,
}

/// Messages to the root (local only).
#[derive(RactorMessage)]
pub(crate) enum RootMessage {
    /// Fault injection, from the agent (only with `--enable-fault-injection`).
    Drill(Drill, RpcReplyPort<DrillAnswer>),
    /// Stop every child in order; answered when done.
    Shutdown(RpcReplyPort<()>),
    /// Try again to start a part that could not start because the store could not be
    /// read (a disk fault).
    Respawn(Child),
}

/// How often a part that waits for the store tries to start again.
const RESPAWN_EVERY: Duration = Duration::from_millis(500);

/// Whether a part could not start only because the store could not be read.
fn store_unavailable(error: &ActorProcessingErr) -> bool {
    matches!(
        error.downcast_ref::<NodeError>(),
        Some(NodeError::Spawn { store: true, .. })
    )
}

impl RootState {
    fn config(&self) -> &NodeConfig {
        &self.kit.config
    }

    /// Starts (or starts again) one child, linked to the root, and records it.
    async fn spawn(
        &mut self,
        child: Child,
        root: &ActorRef<RootMessage>,
    ) -> Result<(), ActorProcessingErr> {
        let started = self.kit.start(child, &self.children, root.get_cell());
        if let Some(cell) = started.await? {
            self.ids.insert(cell.get_id(), child);
            self.children.started(child, cell);
        }
        Ok(())
    }

    /// A child stopped or failed while the node was running.
    async fn lost(&mut self, root: &ActorRef<RootMessage>, exit: Exit) {
        let Exit { id, reason, failed } = exit;
        let Some(child) = self.ids.remove(&id) else {
            return;
        };
        self.children.clear(child);
        if self.stopping {
            return;
        }
        if child == Child::LoadClient && !failed && reason == LOAD_FINISHED {
            return;
        }
        let what = child.what();
        if !child.restartable() {
            return self.give_up(format!("the {what} failed ({reason})"));
        }
        if !self.budget.allow(Instant::now()) {
            return self.give_up(format!(
                "the {what} failed ({reason}), and parts of the node failed more than \
                 {MAX_RESTARTS} times in {RESTART_WINDOW:?}"
            ));
        }
        error!(part = what, %reason, "the {what} failed; restarting it");
        self.respawn(child, root, true).await;
    }

    /// Starts `child` again; if it cannot start only because the store cannot be read
    /// (a disk fault), tries again every [`RESPAWN_EVERY`] without spending the restart
    /// budget (saying so once, when `first`), and meanwhile the node goes on without it
    /// (reads of its counters say they are not running, changes are refused or resent).
    async fn respawn(&mut self, child: Child, root: &ActorRef<RootMessage>, first: bool) {
        let what = child.what();
        match self.spawn(child, root).await {
            Ok(()) => {
                self.kit.facts.metrics.part_restarted(what);
                info!(part = what, "the {what} restarted");
            }
            Err(e) if store_unavailable(&e) => {
                self.kit.facts.metrics.part_waits_for_store(what);
                if first {
                    error!(part = what, error = %e, "the {what} cannot start until the store can be \
                        read again; trying again every {RESPAWN_EVERY:?}");
                }
                root.send_after(RESPAWN_EVERY, move || RootMessage::Respawn(child));
            }
            Err(e) => self.give_up(format!("the {what} could not be restarted: {e}")),
        }
    }

    /// The node cannot go on: one line, then a clean stop with a non-zero exit.
    fn give_up(&mut self, why: String) {
        error!("{why}; stopping the node");
        self.stopping = true;
        let _ = self.fatal.send(NodeError::Failed { why });
    }

    /// Stops every child in order: nothing new comes in, load stops, peers are told,
    /// then the rest from the edges inwards; the counters' final values are logged.
    async fn shutdown(&mut self) {
        self.stopping = true;
        let c = &self.children;
        for child in [Child::Acceptor, Child::LoadClient] {
            if let Some(cell) = c.cell(child) {
                stop(cell, child).await;
            }
        }
        if let Some(mesh) = c.actor::<MeshMessage>(Child::Mesh) {
            // Nothing changes a counter from here on, and what was taken is committed:
            // what the leave notice says the node takes with it is final.
            let facts = &self.kit.facts;
            let for_good = facts.departing.stop();
            let settled = leave::quiesce(&facts.name).await;
            let mut departure = leave::departure(facts, &self.kit.store, for_good).await;
            if !settled {
                // A commit may still land after the totals were read: not known.
                warn!("the node's last changes were not committed before its leave notice");
                departure.known = false;
            }
            let left = ractor::call_t!(
                mesh,
                MeshMessage::Leave,
                (LEAVE_TIMEOUT * 2).as_millis() as u64,
                departure
            );
            if left.is_err() {
                warn!("could not tell peers this node is leaving");
            }
            stop(mesh.get_cell(), Child::Mesh).await;
        }
        for child in [Child::Aggregator, Child::Agent, Child::Host] {
            if let Some(cell) = c.cell(child) {
                stop(cell, child).await;
            }
        }
        if let Some(journal) = c.actor::<JournalMessage>(Child::Journal) {
            // What was appended is committed (and reaches the counters) before they stop.
            let drained = ractor::call_t!(
                journal,
                JournalMessage::Drain,
                STOP_TIMEOUT.as_millis() as u64
            );
            if drained.is_err() {
                warn!("the journal could not commit its last changes in time");
            }
            stop(journal.get_cell(), Child::Journal).await;
        }
        // After the journal: its last commits went to the copy as well.
        for child in [Child::Shipper, Child::Keeper] {
            if let Some(cell) = c.cell(child) {
                stop(cell, child).await;
            }
        }
        if let Some(supervisor) = c.actor::<SupervisorMessage>(Child::CounterSupervisor) {
            let _ = ractor::call_t!(
                supervisor,
                SupervisorMessage::Drain,
                STOP_TIMEOUT.as_millis() as u64
            );
            supervisor
                .stop_children_and_wait(Some("node shutting down".into()), Some(STOP_TIMEOUT))
                .await;
            stop(supervisor.get_cell(), Child::CounterSupervisor).await;
        }
        if let Some(server) = c.cell(Child::ClusterServer) {
            stop(server, Child::ClusterServer).await;
        }
    }

    /// Fault injection: makes `target` fail the way a panic would.
    fn crash(&self, target: CrashTarget) -> Result<(), ClientError> {
        let name = &self.config().name;
        let child = match target {
            CrashTarget::Counter(counter) => {
                let table = &self.kit.facts.table;
                let index = table.index_of(&counter).ok_or_else(|| {
                    ClientError::Internal(format!("'{counter}' is not a counter of node '{name}'"))
                })?;
                // Started first if it is not running.
                table
                    .deliver(index, CounterMessage::Crash)
                    .map_err(|_| ClientError::CounterTimeout(counter))?;
                return Ok(());
            }
            CrashTarget::CounterSupervisor => Child::CounterSupervisor,
            CrashTarget::Host => Child::Host,
            CrashTarget::Journal => Child::Journal,
            CrashTarget::Agent => Child::Agent,
            CrashTarget::Mesh => Child::Mesh,
            CrashTarget::Aggregator => Child::Aggregator,
            CrashTarget::LoadClient => Child::LoadClient,
            CrashTarget::Listener => Child::Acceptor,
            CrashTarget::ClusterServer => Child::ClusterServer,
        };
        let cell = self.children.cell(child).ok_or_else(|| {
            ClientError::Internal(format!("node '{name}' runs no {}", child.what()))
        })?;
        warn!(part = child.what(), "failing on request (fault injection)");
        // Killed: its handlers are cut short and `post_stop` does not run, as after a
        // panic; its supervisor sees it stop unasked.
        cell.kill();
        Ok(())
    }
}

async fn stop(cell: ActorCell, child: Child) {
    match cell
        .stop_and_wait(Some("node shutting down".into()), Some(STOP_TIMEOUT))
        .await
    {
        // Already gone (it failed just before): nothing to stop.
        Ok(()) | Err(ractor::RactorErr::Messaging(_)) => {}
        Err(error) => warn!(%error, "the {} did not stop in time", child.what()),
    }
}

/// What the children are made from; drills go to `root` only with
/// `--enable-fault-injection`.
fn kit(args: RootArgs, root: &ActorRef<RootMessage>) -> (Kit, mpsc::UnboundedSender<NodeError>) {
    let RootArgs {
        config,
        listener,
        facts,
        store,
        fatal,
        outgoing,
    } = args;
    let root = root.clone();
    let drills = config.fault_injection.then(|| {
        DrillPort::new(move |drill, reply| {
            let _ = root.cast(RootMessage::Drill(drill, reply));
        })
    });
    let kit = Kit {
        inbound: Arc::new(Inbound::new(Arc::clone(&facts.metrics))),
        config,
        listener,
        facts,
        store,
        drills,
        outgoing,
    };
    (kit, fatal)
}

impl Actor for NodeRoot {
    type Msg = RootMessage;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (kit, fatal) = kit(args, &myself);
        let mut state = RootState {
            kit,
            fatal,
            children: Children::default(),
            ids: HashMap::new(),
            budget: RestartBudget::new(MAX_RESTARTS, RESTART_WINDOW),
            stopping: false,
        };
        for child in Child::start_order(state.config().role) {
            state.spawn(child, &myself).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMessage::Drill(Drill::Crash(CrashTarget::Agent), reply) => {
                // The agent relays this answer to the client: it fails a moment later,
                // once the answer is on its way (ractor_cluster drops a reply from an
                // actor already gone).
                let _ = reply.send(Ok(()));
                if let Some(agent) = state.children.cell(Child::Agent) {
                    warn!(
                        part = Child::Agent.what(),
                        "failing on request (fault injection)"
                    );
                    tokio::spawn(async move {
                        tokio::time::sleep(AGENT_CRASH_DELAY).await;
                        agent.kill();
                    });
                }
            }
            RootMessage::Drill(Drill::Crash(target), reply) => {
                let _ = reply.send(state.crash(target));
            }
            RootMessage::Drill(Drill::DiskErrors { pass, fail }, reply) => {
                let answer = match state.kit.store.faults() {
                    Some(faults) => {
                        warn!(pass, fail, "arming disk errors (fault injection)");
                        faults.arm(pass, fail);
                        Ok(())
                    }
                    None => Err(ClientError::Internal(
                        "this node keeps no store on disk (--memory-only)".into(),
                    )),
                };
                let _ = reply.send(answer);
            }
            RootMessage::Shutdown(reply) => {
                state.shutdown().await;
                let _ = reply.send(());
            }
            RootMessage::Respawn(child) => {
                if !state.stopping && state.children.cell(child).is_none() {
                    state.respawn(child, &myself, false).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(exit) = exit_of(event) {
            state.lost(&myself, exit).await;
        }
        Ok(())
    }
}
