//! The root's children: which they are, how each is started (its arguments, its
//! registry name), and which of them are running.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use shared::copies::keeper_name;
use shared::protocol::{agent_name, host_name, Role};
use tokio::net::TcpListener;

use crate::cluster::agent::{AgentArgs, NodeAgent};
use crate::cluster::mesh::{mesh_name, Mesh, MeshArgs};
use crate::cluster::policy::MemberPolicy;
use crate::config::{NodeConfig, Storage};
use crate::copies::keeper::{Keeper, KeeperArgs, COPIES_DIR};
use crate::copies::outgoing::Outgoing;
use crate::copies::shipper::{Shipper, ShipperArgs};
use crate::counters::host::{CounterHost, HostArgs};
use crate::counters::supervisor::{CounterSupervisor, SupervisorArgs};
use crate::error::NodeError;
use crate::facts::NodeFacts;
use crate::load::client::{LoadArgs, LoadClient, LoadSpec};
use crate::net::transport::{Acceptor, AcceptorArgs, Inbound};
use crate::stats::aggregator::{Aggregator, AggregatorArgs};
use crate::store::journal::{journal_name, Journal, JournalArgs};
use crate::store::Store;
use crate::supervision::DrillPort;

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
    /// The keeper of other nodes' copies (with a data dir and `--copies` 2 or more).
    Keeper,
    /// The shipper of this node's store to its copy (as the keeper).
    Shipper,
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
    /// The children of a node with role `role`, in the order they start. Connections
    /// are accepted only once the mesh runs, so it sees every session from its first
    /// moment; until then they wait in the kernel's backlog, and a peer never meets a
    /// node that cannot answer yet.
    pub(crate) fn start_order(role: Role) -> Vec<Child> {
        let mut order = vec![
            Child::ClusterServer,
            Child::CounterSupervisor,
            Child::Journal,
            Child::Host,
            Child::Keeper,
            Child::Shipper,
        ];
        if role == Role::Coordinator {
            order.push(Child::Aggregator);
        }
        order.extend([
            Child::Agent,
            Child::Mesh,
            Child::Acceptor,
            Child::LoadClient,
        ]);
        order
    }

    /// How the child is named in log lines.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Child::ClusterServer => "cluster server",
            Child::CounterSupervisor => "counter supervisor",
            Child::Journal => "journal",
            Child::Host => "counter host",
            Child::Keeper => "keeper of copies",
            Child::Shipper => "shipper of the store's copy",
            Child::Aggregator => "aggregator",
            Child::Agent => "node agent",
            Child::Mesh => "mesh",
            Child::Acceptor => "accept loop",
            Child::LoadClient => "load clients",
        }
    }

    /// Whether the node can carry on without it by starting it again.
    pub(crate) fn restartable(self) -> bool {
        self != Child::ClusterServer
    }
}

/// The running children, by which child they are.
#[derive(Default)]
pub(crate) struct Children(HashMap<Child, ActorCell>);

impl Children {
    /// The child's actor, if it runs.
    pub(crate) fn cell(&self, child: Child) -> Option<ActorCell> {
        self.0.get(&child).cloned()
    }

    /// The child's actor with its message type, if it runs.
    pub(crate) fn actor<M: ractor::Message>(&self, child: Child) -> Option<ActorRef<M>> {
        self.cell(child).map(ActorRef::from)
    }

    /// Records a child that started.
    pub(crate) fn started(&mut self, child: Child, cell: ActorCell) {
        self.0.insert(child, cell);
    }

    /// Forgets a child that is gone.
    pub(crate) fn clear(&mut self, child: Child) {
        self.0.remove(&child);
    }
}

/// The registry name of a node's aggregator (local only: the agent finds it by name,
/// so a restarted aggregator is found again).
pub(crate) fn aggregator_name(node: &str) -> String {
    format!("{node}/aggregator")
}

/// Spawns `actor` linked to `root`, under `name` if given.
async fn link<A: Actor>(
    name: Option<String>,
    actor: A,
    args: A::Arguments,
    root: ActorCell,
) -> Result<ActorCell, SpawnErr> {
    Actor::spawn_linked(name, actor, args, root)
        .await
        .map(|(actor, _)| actor.get_cell())
}

/// What every child is made from: it outlives them all, so a restarted child gets the
/// same table, tally, membership, store and bound port as the one before it.
pub(crate) struct Kit {
    /// The checked configuration.
    pub(crate) config: NodeConfig,
    /// The cluster port, already bound.
    pub(crate) listener: Arc<TcpListener>,
    /// What survives restarts: counter table, issued tally, membership.
    pub(crate) facts: Arc<NodeFacts>,
    /// The node's store, open.
    pub(crate) store: Arc<Store>,
    /// The places of connections waiting to authenticate.
    pub(crate) inbound: Arc<Inbound>,
    /// Where the agent hands drills (only with `--enable-fault-injection`).
    pub(crate) drills: Option<DrillPort>,
    /// The commits the copy of the store does not hold yet (`None`: one copy).
    pub(crate) outgoing: Option<Arc<Outgoing>>,
}

impl Kit {
    /// Starts one child, linked to `root`; `None` if there is nothing for it to do
    /// (load clients without `--load` and with an empty outbox). The mesh and the
    /// accept loop need the running cluster server from `children`.
    pub(crate) async fn start(
        &self,
        child: Child,
        children: &Children,
        me: ActorCell,
    ) -> Result<Option<ActorCell>, ActorProcessingErr> {
        let name = &self.config.name;
        let started = match child {
            Child::ClusterServer => link(None, self.cluster_server(), (), me).await,
            Child::CounterSupervisor => {
                link(None, CounterSupervisor, self.supervisor_args(), me).await
            }
            Child::Journal => {
                link(Some(journal_name(name)), Journal, self.journal_args(), me).await
            }
            Child::Host => {
                let args = HostArgs {
                    facts: Arc::clone(&self.facts),
                    store: Arc::clone(&self.store),
                };
                link(Some(host_name(name)), CounterHost, args, me).await
            }
            Child::Keeper => match self.keeper_args() {
                Some(args) => link(Some(keeper_name(name)), Keeper, args, me).await,
                None => return Ok(None),
            },
            Child::Shipper => match self.shipper_args() {
                Some(args) => link(None, Shipper, args, me).await,
                None => return Ok(None),
            },
            Child::Aggregator => {
                let args = self.aggregator_args();
                link(Some(aggregator_name(name)), Aggregator, args, me).await
            }
            Child::Agent => link(Some(agent_name(name)), NodeAgent, self.agent_args(), me).await,
            Child::Mesh => {
                let args = self.mesh_args(server(children)?);
                link(Some(mesh_name(name)), Mesh, args, me).await
            }
            Child::Acceptor => {
                let args = self.acceptor_args(server(children)?);
                link(None, Acceptor, args, me).await
            }
            Child::LoadClient => match self.load_spec().await {
                Some(spec) => link(None, LoadClient, self.load_args(spec), me).await,
                None => return Ok(None),
            },
        };
        started.map(Some).map_err(|e| spawn_error(child, &e))
    }

    /// ractor_cluster's server. The node accepts and dials connections itself
    /// (`net::transport`); the server's own listener sits unused on an ephemeral
    /// loopback port (demanding TLS too, when on). Its "hostname" is the whole
    /// advertised address: peers read it back as `HOST:PORT:EPHEMERAL`.
    fn cluster_server(&self) -> NodeServer {
        let config = &self.config;
        NodeServer::new(
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
        .with_peer_policy(Arc::new(MemberPolicy::new(
            &config.name,
            config.tls.clone(),
            Arc::clone(&self.facts.metrics),
        )))
    }

    fn supervisor_args(&self) -> SupervisorArgs {
        SupervisorArgs {
            table: Arc::clone(&self.facts.table),
            store: Arc::clone(&self.store),
            fault_injection: self.config.fault_injection,
            idle: self.config.counter_idle,
        }
    }

    fn journal_args(&self) -> JournalArgs {
        let facts = &self.facts;
        JournalArgs {
            store: Arc::clone(&self.store),
            table: Arc::clone(&facts.table),
            received: Arc::clone(&facts.received),
            metrics: Arc::clone(&facts.metrics),
            // Only an fsync is worth gathering for.
            group_commit: if self.store.is_durable() {
                self.config.group_commit
            } else {
                std::time::Duration::ZERO
            },
            covered: self.outgoing.as_ref().map(|o| o.cover()),
        }
    }

    /// With copies kept, and a disk to keep them on.
    fn keeper_args(&self) -> Option<KeeperArgs> {
        let Storage::Dir(dir) = &self.config.storage else {
            return None;
        };
        (self.config.copies >= 2).then(|| KeeperArgs {
            me: self.config.name.clone(),
            dir: dir.join(COPIES_DIR),
            membership: self.facts.membership.clone(),
        })
    }

    /// With copies kept (an outgoing queue installed in the store).
    fn shipper_args(&self) -> Option<ShipperArgs> {
        Some(ShipperArgs {
            facts: Arc::clone(&self.facts),
            store: Arc::clone(&self.store),
            outgoing: Arc::clone(self.outgoing.as_ref()?),
            copies: self.config.copies,
            timeout: self.config.failure_timeout,
        })
    }

    fn aggregator_args(&self) -> AggregatorArgs {
        AggregatorArgs {
            facts: Arc::clone(&self.facts),
            interval: self.config.stats_interval,
            deadline: self.config.collect_timeout,
        }
    }

    fn agent_args(&self) -> AgentArgs {
        let config = &self.config;
        AgentArgs {
            facts: Arc::clone(&self.facts),
            aggregator: (config.role == Role::Coordinator).then(|| aggregator_name(&config.name)),
            drills: self.drills.clone(),
            store: Arc::clone(&self.store),
        }
    }

    fn mesh_args(&self, server: ActorRef<NodeServerMessage>) -> MeshArgs {
        let config = &self.config;
        MeshArgs {
            server,
            facts: Arc::clone(&self.facts),
            seeds: config.seeds.clone(),
            listen: config.listen,
            failure_timeout: config.failure_timeout,
            tls: config.tls.clone(),
            inbound: Arc::clone(&self.inbound),
        }
    }

    fn acceptor_args(&self, server: ActorRef<NodeServerMessage>) -> AcceptorArgs {
        AcceptorArgs {
            listener: Arc::clone(&self.listener),
            server,
            tls: self.config.tls.clone(),
            inbound: Arc::clone(&self.inbound),
        }
    }

    fn load_args(&self, spec: LoadSpec) -> LoadArgs {
        LoadArgs {
            spec,
            facts: Arc::clone(&self.facts),
            store: Arc::clone(&self.store),
        }
    }

    /// What the load clients are to do: `--load`, or, without it, deliver what the
    /// outbox holds from an earlier run (and stop); `None` if there is nothing to do.
    async fn load_spec(&self) -> Option<LoadSpec> {
        if self.config.load.is_some() {
            return self.config.load;
        }
        let store = Arc::clone(&self.store);
        let outbox = crate::runtime::busy_poll::spawn_blocking(move || store.outbox()).await;
        // An outbox that cannot be read now may hold batches: the load client reads it
        // itself (and waits for the store if need be).
        let waiting = match outbox {
            Ok(Ok(outbox)) => outbox.streams.values().any(|s| !s.batches.is_empty()),
            _ => true,
        };
        waiting.then_some(LoadSpec {
            rate: 0,
            max_ops: Some(0),
            mode: crate::load::push::Mode::Coalesced,
        })
    }
}

/// The cluster server, which the mesh and the accept loop need.
fn server(children: &Children) -> Result<ActorRef<NodeServerMessage>, ActorProcessingErr> {
    children
        .actor(Child::ClusterServer)
        .ok_or_else(|| "the cluster server is not running".into())
}

/// Why `child` could not start, and whether that is only because the store cannot be
/// read.
fn spawn_error(child: Child, error: &SpawnErr) -> ActorProcessingErr {
    Box::new(NodeError::Spawn {
        what: child.what(),
        reason: crate::supervision::root_cause(error),
        store: caused_by_store(error),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cluster_server_is_fatal() {
        for child in Child::start_order(Role::Coordinator) {
            assert_eq!(
                child.restartable(),
                child != Child::ClusterServer,
                "{child:?}"
            );
        }
    }

    #[test]
    fn the_aggregator_runs_on_the_coordinator_only() {
        assert!(Child::start_order(Role::Coordinator).contains(&Child::Aggregator));
        assert!(!Child::start_order(Role::Worker).contains(&Child::Aggregator));
        assert_eq!(
            Child::start_order(Role::Worker).last(),
            Some(&Child::LoadClient)
        );
    }
}
