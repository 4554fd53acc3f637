//! The node's supervision tree: one root actor owns every long-lived actor of the node,
//! linked, and decides what each one's failure does. Nothing runs on beside a dead part:
//! a child that fails (or stops when it should not) is either started again with its
//! state rebuilt, or the whole node stops cleanly with a non-zero exit.
//!
//! ```text
//! NodeRoot                         restarts a child; more than 10 restarts in 10 s stop the node
//! ├── NodeServer (ractor_cluster)  fatal: the node stops (exit 1); it owns every session
//! ├── CounterSupervisor            restarted: every counter resumes from the store
//! │   └── Counter × --counters     restarted by the supervisor from the store
//! ├── Journal      NAME/journal    restarted: it resumes after the store's last commit;
//! │                                changes it held uncommitted were never acknowledged
//! ├── CounterHost  NAME/host       restarted: its state is a cache (counters, journal)
//! ├── Aggregator   (coordinator)   restarted: the next tick collects again
//! ├── NodeAgent    NAME/agent      restarted: it keeps no state of its own
//! ├── Mesh                         restarted: the membership table outlives it; the
//! │                                sessions that are up are read back from the NodeServer
//! ├── Acceptor                     restarted on the same bound socket
//! └── LoadClient   (--load)        restarted: carries on from the issued tally
//! ```
//!
//! A child that cannot start again only because the store cannot be read (its disk is
//! failing) is not a failure of the node: the root tries again every half second,
//! outside the restart budget, and the node goes on without it meanwhile (its counters
//! answer that they are not running, changes are refused or sent again).
//!
//! What survives every restart lives outside the actors, owned here: the
//! [`NodeFacts`] (counter table, issued tally, membership), the [`Store`] (every
//! counter's committed figures), the bound cluster port, and the places of connections
//! waiting to authenticate. What a restart loses is the failed actor's mailbox (see the
//! README's table).
//!
//! The root also stops the node in order ([`RootMessage::Shutdown`]: the accept loop,
//! load, a leave notice to the peers, mesh, aggregator, agent, host, journal (its last
//! commit), counters, then the network) and carries out fault injection
//! ([`RootMessage::Crash`], [`RootMessage::DiskErrors`], only with
//! `--enable-fault-injection`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage, RactorMessage};
use shared::agent::{AgentMessage, ClientError, CrashTarget};
use shared::host::HostMessage;
use shared::protocol::{agent_name, host_name, Role};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::cluster::agent::{AgentArgs, NodeAgent};
use crate::cluster::facts::NodeFacts;
use crate::cluster::mesh::{Mesh, MeshArgs, MeshMessage, LEAVE_TIMEOUT};
use crate::config::NodeConfig;
use crate::counters::counter::CounterMessage;
use crate::counters::host::CounterHost;
use crate::counters::supervisor::{CounterSupervisor, SupervisorArgs, SupervisorMessage};
use crate::error::NodeError;
use crate::load::client::{LoadArgs, LoadClient, LoadMessage, LoadSpec};
use crate::net::transport::{Acceptor, AcceptorArgs, AcceptorMessage, Inbound};
use crate::stats::aggregator::{Aggregator, AggregatorArgs, AggregatorMessage};
use crate::store::journal::{journal_name, Journal, JournalArgs, JournalMessage};
use crate::store::Store;

/// Restarts allowed within [`RESTART_WINDOW`] before the root gives up and stops the
/// node: a part that keeps failing is a node that does not work.
pub(crate) const MAX_RESTARTS: usize = 10;
/// See [`MAX_RESTARTS`].
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(10);
/// How long each part may take to stop before the node moves on.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after answering a request to crash it the agent is made to fail.
const AGENT_CRASH_DELAY: Duration = Duration::from_millis(200);
/// Why a load client stops by itself when its `--load-ops` are done (not a failure).
pub(crate) const LOAD_FINISHED: &str = "load finished";

/// The long-lived actors of a node, one of each (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Child {
    /// ractor_cluster's `NodeServer`.
    ClusterServer,
    /// The counters' supervisor.
    CounterSupervisor,
    /// The journal.
    Journal,
    /// The counter host.
    Host,
    /// The aggregator (coordinator only).
    Aggregator,
    /// The node agent.
    Agent,
    /// The mesh.
    Mesh,
    /// The accept loop.
    Acceptor,
    /// The load clients (with `--load` only).
    LoadClient,
}

impl Child {
    /// How the child is named in log lines.
    fn what(self) -> &'static str {
        match self {
            Child::ClusterServer => "cluster server",
            Child::CounterSupervisor => "counter supervisor",
            Child::Journal => "journal",
            Child::Host => "counter host",
            Child::Aggregator => "aggregator",
            Child::Agent => "node agent",
            Child::Mesh => "mesh",
            Child::Acceptor => "accept loop",
            Child::LoadClient => "load clients",
        }
    }

    /// Whether the node can carry on without it by starting it again.
    fn restartable(self) -> bool {
        self != Child::ClusterServer
    }
}

/// The most restarts allowed in a sliding window of time; a plain type.
#[derive(Debug)]
pub(crate) struct RestartBudget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// At most `max` restarts within any `window`.
    pub(crate) fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; false if that is one too many.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max
    }
}

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
}

/// The running children.
#[derive(Default)]
struct Children {
    server: Option<ActorRef<NodeServerMessage>>,
    supervisor: Option<ActorRef<SupervisorMessage>>,
    journal: Option<ActorRef<JournalMessage>>,
    host: Option<ActorRef<HostMessage>>,
    aggregator: Option<ActorRef<AggregatorMessage>>,
    agent: Option<ActorRef<AgentMessage>>,
    mesh: Option<ActorRef<MeshMessage>>,
    acceptor: Option<ActorRef<AcceptorMessage>>,
    load: Option<ActorRef<LoadMessage>>,
}

impl Children {
    /// Forgets a child that is gone.
    fn clear(&mut self, child: Child) {
        match child {
            Child::ClusterServer => self.server = None,
            Child::CounterSupervisor => self.supervisor = None,
            Child::Journal => self.journal = None,
            Child::Host => self.host = None,
            Child::Aggregator => self.aggregator = None,
            Child::Agent => self.agent = None,
            Child::Mesh => self.mesh = None,
            Child::Acceptor => self.acceptor = None,
            Child::LoadClient => self.load = None,
        }
    }

    fn cell(&self, child: Child) -> Option<ActorCell> {
        match child {
            Child::ClusterServer => self.server.as_ref().map(|a| a.get_cell()),
            Child::CounterSupervisor => self.supervisor.as_ref().map(|a| a.get_cell()),
            Child::Journal => self.journal.as_ref().map(|a| a.get_cell()),
            Child::Host => self.host.as_ref().map(|a| a.get_cell()),
            Child::Aggregator => self.aggregator.as_ref().map(|a| a.get_cell()),
            Child::Agent => self.agent.as_ref().map(|a| a.get_cell()),
            Child::Mesh => self.mesh.as_ref().map(|a| a.get_cell()),
            Child::Acceptor => self.acceptor.as_ref().map(|a| a.get_cell()),
            Child::LoadClient => self.load.as_ref().map(|a| a.get_cell()),
        }
    }
}

/// The root's state.
pub(crate) struct RootState {
    args: RootArgs,
    inbound: Arc<Inbound>,
    children: Children,
    ids: HashMap<ActorId, Child>,
    budget: RestartBudget,
    stopping: bool,
}

/// Messages to the root (local only).
#[derive(RactorMessage)]
pub(crate) enum RootMessage {
    /// Fault injection: make this actor fail (only sent with `--enable-fault-injection`).
    Crash(CrashTarget, RpcReplyPort<Result<(), ClientError>>),
    /// Fault injection: make the store's disk report errors (see
    /// [`crate::store::faults`]; only sent with `--enable-fault-injection`).
    DiskErrors {
        /// Syncs that go through first.
        pass: u64,
        /// Commits made to fail.
        fail: u64,
        /// Where the answer goes.
        reply: RpcReplyPort<Result<(), ClientError>>,
    },
    /// Stop every child in order; answered when done.
    Shutdown(RpcReplyPort<()>),
    /// Try again to start a part that could not start because the store could not be
    /// read (a disk fault).
    Respawn(Child),
}

/// How often a part that waits for the store tries to start again.
const RESPAWN_EVERY: Duration = Duration::from_millis(500);

fn spawn_error(what: &'static str) -> impl FnOnce(ractor::SpawnErr) -> ActorProcessingErr {
    move |e| {
        Box::new(NodeError::Spawn {
            what,
            reason: root_cause(&e),
            store: caused_by_store(&e),
        })
    }
}

/// Whether `error` comes from the node's store (a read or commit that failed).
fn caused_by_store(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<crate::store::StoreError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Whether a part could not start only because the store could not be read.
fn store_unavailable(error: &ActorProcessingErr) -> bool {
    matches!(
        error.downcast_ref::<NodeError>(),
        Some(NodeError::Spawn { store: true, .. })
    )
}

/// ractor wraps a failed `pre_start` in layers; the innermost message is the useful one
/// ("Address already in use").
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

impl RootState {
    fn config(&self) -> &NodeConfig {
        &self.args.config
    }

    fn server(&self) -> Result<ActorRef<NodeServerMessage>, ActorProcessingErr> {
        self.children
            .server
            .clone()
            .ok_or_else(|| "the cluster server is not running".into())
    }

    /// Starts (or starts again) one child, linked to the root.
    async fn spawn(
        &mut self,
        child: Child,
        root: &ActorRef<RootMessage>,
    ) -> Result<(), ActorProcessingErr> {
        let facts = Arc::clone(&self.args.facts);
        let config = self.args.config.clone();
        let me = root.get_cell();
        let what = child.what();
        let cell = match child {
            Child::ClusterServer => {
                // The node accepts and dials connections itself (`net::transport`); the
                // server's own listener sits unused on an ephemeral loopback port
                // (demanding TLS too, when on). Its "hostname" is our whole advertised
                // address: peers read it back as `HOST:PORT:EPHEMERAL`.
                let server = NodeServer::new(
                    0,
                    config.cookie.secret().to_string(),
                    config.name.clone(),
                    config.advertise(),
                    config
                        .tls
                        .as_ref()
                        .map(|tls| IncomingEncryptionMode::Tls(tls.acceptor().clone())),
                    Some(NodeConnectionMode::Isolated),
                )
                .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into())
                .with_peer_policy(Arc::new(
                    crate::cluster::policy::MemberPolicy::new(&config.name, config.tls.clone()),
                ));
                let (server, _) = Actor::spawn_linked(None, server, (), me)
                    .await
                    .map_err(spawn_error(what))?;
                self.children.server = Some(server.clone());
                server.get_cell()
            }
            Child::CounterSupervisor => {
                let args = SupervisorArgs {
                    table: Arc::clone(&facts.table),
                    store: Arc::clone(&self.args.store),
                    fault_injection: config.fault_injection,
                };
                let (actor, _) = Actor::spawn_linked(None, CounterSupervisor, args, me)
                    .await
                    .map_err(spawn_error(what))?;
                self.children.supervisor = Some(actor.clone());
                actor.get_cell()
            }
            Child::Journal => {
                let args = JournalArgs {
                    store: Arc::clone(&self.args.store),
                    table: Arc::clone(&facts.table),
                    received: Arc::clone(&facts.received),
                    metrics: Arc::clone(&facts.metrics),
                };
                let (actor, _) =
                    Actor::spawn_linked(Some(journal_name(&config.name)), Journal, args, me)
                        .await
                        .map_err(spawn_error(what))?;
                self.children.journal = Some(actor.clone());
                actor.get_cell()
            }
            Child::Host => {
                let (actor, _) =
                    Actor::spawn_linked(Some(host_name(&config.name)), CounterHost, facts, me)
                        .await
                        .map_err(spawn_error(what))?;
                self.children.host = Some(actor.clone());
                actor.get_cell()
            }
            Child::Aggregator => {
                let args = AggregatorArgs {
                    facts,
                    interval: config.stats_interval,
                    deadline: config.collect_timeout,
                };
                let (actor, _) =
                    Actor::spawn_linked(Some(aggregator_name(&config.name)), Aggregator, args, me)
                        .await
                        .map_err(spawn_error(what))?;
                self.children.aggregator = Some(actor.clone());
                actor.get_cell()
            }
            Child::Agent => {
                let args = AgentArgs {
                    facts,
                    aggregator: (config.role == Role::Coordinator)
                        .then(|| aggregator_name(&config.name)),
                    fault_injection: config.fault_injection.then(|| root.clone()),
                };
                let (actor, _) =
                    Actor::spawn_linked(Some(agent_name(&config.name)), NodeAgent, args, me)
                        .await
                        .map_err(spawn_error(what))?;
                self.children.agent = Some(actor.clone());
                actor.get_cell()
            }
            Child::Mesh => {
                let args = MeshArgs {
                    server: self.server()?,
                    facts,
                    seeds: config.seeds.clone(),
                    failure_timeout: config.failure_timeout,
                    tls: config.tls.clone(),
                    inbound: Arc::clone(&self.inbound),
                };
                let (actor, _) = Actor::spawn_linked(None, Mesh, args, me)
                    .await
                    .map_err(spawn_error(what))?;
                self.children.mesh = Some(actor.clone());
                actor.get_cell()
            }
            Child::Acceptor => {
                let args = AcceptorArgs {
                    listener: Arc::clone(&self.args.listener),
                    server: self.server()?,
                    tls: config.tls.clone(),
                    inbound: Arc::clone(&self.inbound),
                };
                let (actor, _) = Actor::spawn_linked(None, Acceptor, args, me)
                    .await
                    .map_err(spawn_error(what))?;
                self.children.acceptor = Some(actor.clone());
                actor.get_cell()
            }
            Child::LoadClient => {
                let Some(spec) = self.load_spec().await else {
                    return Ok(());
                };
                let args = LoadArgs {
                    spec,
                    facts,
                    store: Arc::clone(&self.args.store),
                };
                let (actor, _) = Actor::spawn_linked(None, LoadClient, args, me)
                    .await
                    .map_err(spawn_error(what))?;
                self.children.load = Some(actor.clone());
                actor.get_cell()
            }
        };
        self.ids.insert(cell.get_id(), child);
        Ok(())
    }

    /// What the load clients are to do: `--load`, or, without it, deliver what the
    /// outbox holds from an earlier run (and stop); `None` if there is nothing to do.
    async fn load_spec(&self) -> Option<LoadSpec> {
        if self.config().load.is_some() {
            return self.config().load;
        }
        let store = Arc::clone(&self.args.store);
        let outbox = crate::runtime::busy_poll::spawn_blocking(move || store.outbox()).await;
        // An outbox that cannot be read now may hold batches: the load client reads it
        // itself (and waits for the store if need be).
        let waiting = match outbox {
            Ok(Ok((streams, _))) => streams.values().any(|s| !s.batches.is_empty()),
            _ => true,
        };
        waiting.then_some(LoadSpec {
            rate: 0,
            max_ops: Some(0),
            mode: crate::load::push::Mode::Coalesced,
        })
    }

    /// A child stopped or failed while the node was running.
    async fn lost(
        &mut self,
        root: &ActorRef<RootMessage>,
        id: ActorId,
        reason: String,
        failed: bool,
    ) {
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
            Ok(()) => info!(part = what, "the {what} restarted"),
            Err(e) if store_unavailable(&e) => {
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
        let _ = self.args.fatal.send(NodeError::Failed(why));
    }

    /// Stops every child in order: nothing new comes in, load stops, peers are told,
    /// then the rest from the edges inwards; counters log their final values.
    async fn shutdown(&mut self) {
        self.stopping = true;
        let c = &self.children;
        if let Some(acceptor) = &c.acceptor {
            stop(acceptor.get_cell(), Child::Acceptor).await;
        }
        if let Some(load) = &c.load {
            stop(load.get_cell(), Child::LoadClient).await;
        }
        if let Some(mesh) = &c.mesh {
            let left = ractor::call_t!(
                mesh,
                MeshMessage::Leave,
                (LEAVE_TIMEOUT * 2).as_millis() as u64
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
        if let Some(journal) = &c.journal {
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
        if let Some(supervisor) = &c.supervisor {
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
        if let Some(server) = &c.server {
            stop(server.get_cell(), Child::ClusterServer).await;
        }
    }

    /// Fault injection: makes `target` fail the way a panic would.
    fn crash(&self, target: CrashTarget) -> Result<(), ClientError> {
        let name = &self.config().name;
        let child = match target {
            CrashTarget::Counter(counter) => {
                let table = &self.args.facts.table;
                let index = table.index_of(&counter).ok_or_else(|| {
                    ClientError::Internal(format!("'{counter}' is not a counter of node '{name}'"))
                })?;
                let actor = table
                    .actor(index)
                    .ok_or(ClientError::CounterTimeout(counter))?;
                let _ = actor.cast(CounterMessage::Crash);
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

/// How a supervised actor ended, from its supervision event: its id, why, and whether it
/// failed (rather than stopped); `None` for other events.
pub(crate) fn exit_of(event: SupervisionEvent) -> Option<(ActorId, String, bool)> {
    match event {
        SupervisionEvent::ActorFailed(cell, reason) => {
            Some((cell.get_id(), reason.to_string(), true))
        }
        SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell.get_id(),
            reason.unwrap_or_else(|| "stopped".into()),
            false,
        )),
        _ => None,
    }
}

/// The registry name of a node's aggregator (local only: the agent finds it by name,
/// so a restarted aggregator is found again).
pub(crate) fn aggregator_name(node: &str) -> String {
    format!("{node}/aggregator")
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

impl Actor for NodeRoot {
    type Msg = RootMessage;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let inbound = Arc::new(Inbound::new(Arc::clone(&args.facts.metrics)));
        let mut state = RootState {
            args,
            inbound,
            children: Children::default(),
            ids: HashMap::new(),
            budget: RestartBudget::new(MAX_RESTARTS, RESTART_WINDOW),
            stopping: false,
        };
        let coordinator = state.config().role == Role::Coordinator;
        // In dependency order. Connections are accepted only once the mesh runs, so it
        // sees every session from its first moment; until then they wait in the
        // kernel's backlog, and a peer never meets a node that cannot answer yet.
        let mut order = vec![
            Child::ClusterServer,
            Child::CounterSupervisor,
            Child::Journal,
            Child::Host,
        ];
        if coordinator {
            order.push(Child::Aggregator);
        }
        order.extend([
            Child::Agent,
            Child::Mesh,
            Child::Acceptor,
            Child::LoadClient,
        ]);
        for child in order {
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
            RootMessage::Crash(CrashTarget::Agent, reply) => {
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
            RootMessage::Crash(target, reply) => {
                let _ = reply.send(state.crash(target));
            }
            RootMessage::DiskErrors { pass, fail, reply } => {
                let answer = match state.args.store.faults() {
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
        if let Some((id, reason, failed)) = exit_of(event) {
            state.lost(&myself, id, reason, failed).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_bursts_up_to_its_size_in_any_window() {
        let mut budget = RestartBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert!(budget.allow(t0));
        assert!(budget.allow(t0 + s));
        assert!(budget.allow(t0 + 2 * s));
        assert!(!budget.allow(t0 + 3 * s), "a fourth within 10 s");
        // Once the first ones are older than the window, restarts are allowed again.
        assert!(budget.allow(t0 + 12 * s + s / 2));
    }

    #[test]
    fn only_the_cluster_server_is_fatal() {
        for child in [
            Child::CounterSupervisor,
            Child::Journal,
            Child::Host,
            Child::Aggregator,
            Child::Agent,
            Child::Mesh,
            Child::Acceptor,
            Child::LoadClient,
        ] {
            assert!(child.restartable(), "{child:?}");
        }
        assert!(!Child::ClusterServer.restartable());
    }
}
