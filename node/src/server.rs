//! Running a node: start its actors in dependency order, wait for the shutdown signal,
//! stop them in reverse order.
//!
//! What runs on every node: the ractor_cluster `NodeServer` (sessions with peers), the
//! [`CounterSupervisor`] and its counters, the [`CounterHost`], the [`NodeAgent`], the [`Mesh`] (dialing and
//! gossip) and, with `--load`, a [`LoadClient`]. The coordinator adds the [`Aggregator`].

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer};
use shared::protocol::{agent_name, host_name, Role};
use tracing::{info, warn};

use crate::agent::{AgentArgs, NodeAgent};
use crate::aggregator::{Aggregator, AggregatorArgs};
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::host::{CounterHost, HostArgs};
use crate::load::{IssuedTally, LoadArgs, LoadClient};
use crate::membership::Membership;
use crate::mesh::{Mesh, MeshArgs};
use crate::supervisor::{CounterSupervisor, SupervisorArgs};
use crate::transport;

/// How long each part may take to stop before the node moves on.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

fn spawn_err(what: &'static str) -> impl FnOnce(ractor::SpawnErr) -> NodeError {
    move |e| NodeError::Spawn {
        what,
        reason: e.to_string(),
    }
}

/// Runs a node until `shutdown` completes, then stops it cleanly: load clients first,
/// counters last (each logs its final value), then the network.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    if config.cookie.is_development() {
        warn!("no cookie given: using the development cookie (loopback only)");
    }
    // Take the port first: a port that is taken fails the start before (perhaps many)
    // counters start. Connections are accepted only once the counters, host and agent
    // are up (until then they wait in the kernel's backlog), so a peer never meets a
    // node that cannot answer its heartbeats yet.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| NodeError::Listen {
            addr: config.listen.to_string(),
            reason: e.to_string(),
        })?;

    // Identifies this run: peers tell a restart under the same name by it.
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let membership = Membership::default();
    let restarts = Arc::default();
    let (supervisor, _) = Actor::spawn(
        None,
        CounterSupervisor,
        SupervisorArgs {
            node_name: config.name.clone(),
            counters: config.counters,
            restarts: Arc::clone(&restarts),
            fault_injection: config.fault_injection,
        },
    )
    .await
    .map_err(spawn_err("counter supervisor"))?;

    let (host, _) = Actor::spawn(
        Some(host_name(&config.name)),
        CounterHost,
        HostArgs {
            node_name: config.name.clone(),
            counters: config.counters,
        },
    )
    .await
    .map_err(spawn_err("counter host"))?;

    let aggregator = match config.role {
        Role::Coordinator => Some(
            Actor::spawn(
                None,
                Aggregator,
                AggregatorArgs {
                    node_name: config.name.clone(),
                    interval: config.stats_interval,
                    deadline: config.collect_timeout,
                    membership: membership.clone(),
                },
            )
            .await
            .map_err(spawn_err("aggregator"))?
            .0,
        ),
        Role::Worker => None,
    };

    let issued = Arc::new(IssuedTally::default());
    let (agent, _) = Actor::spawn(
        Some(agent_name(&config.name)),
        NodeAgent,
        AgentArgs {
            name: config.name.clone(),
            role: config.role,
            incarnation,
            advertise: config.advertise(),
            counters: config.counters,
            restarts,
            issued: Arc::clone(&issued),
            membership: membership.clone(),
            aggregator: aggregator.clone(),
            fault_injection: config.fault_injection,
        },
    )
    .await
    .map_err(spawn_err("node agent"))?;

    // Connections are accepted by `transport`, which hands them over; the server's own
    // listener sits unused on an ephemeral loopback port (demanding TLS too, when on).
    // Its "hostname" is our whole advertised address: peers read it back as
    // `HOST:PORT:EPHEMERAL` and take what precedes the last `:` (`mesh::advertised`).
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
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (server, server_handle) =
        Actor::spawn(None, server, ())
            .await
            .map_err(|e| NodeError::Spawn {
                what: "cluster server",
                reason: root_cause(&e),
            })?;
    let inbound = Arc::new(transport::Inbound::default());

    let (mesh, _) = Actor::spawn(
        None,
        Mesh,
        MeshArgs {
            server: server.clone(),
            name: config.name.clone(),
            incarnation,
            seeds: config.seeds.clone(),
            membership: membership.clone(),
            failure_timeout: config.failure_timeout,
            tls: config.tls.clone(),
            inbound: Arc::clone(&inbound),
        },
    )
    .await
    .map_err(spawn_err("mesh"))?;
    // Only now: the mesh sees every session from its first moment (its handshake
    // deadline, and settling its place among those waiting to authenticate).
    let accepting = transport::accept_loop(listener, server.clone(), config.tls.clone(), inbound);

    let load = match config.load {
        Some(spec) => Some(
            Actor::spawn(
                None,
                LoadClient,
                LoadArgs {
                    rate: spec.rate,
                    max_ops: spec.max_ops,
                    mode: spec.mode,
                    tally: issued,
                    seed: seed_of(&config.name),
                    node_name: config.name.clone(),
                    counters: config.counters,
                    membership: membership.clone(),
                },
            )
            .await
            .map_err(spawn_err("load clients"))?
            .0,
        ),
        None => None,
    };

    info!(
        node = %config.name,
        role = %config.role,
        listen = %config.listen,
        advertise = %config.advertise(),
        counters = config.counters,
        seeds = ?config.seeds,
        failure_timeout = ?config.failure_timeout,
        tls = config.tls.is_some(),
        "node started"
    );

    shutdown.await;

    accepting.abort();
    if let Some(load) = load {
        stop(load.get_cell(), "load clients").await;
    }
    stop(mesh.get_cell(), "mesh").await;
    if let Some(aggregator) = aggregator {
        stop(aggregator.get_cell(), "aggregator").await;
    }
    stop(agent.get_cell(), "node agent").await;
    stop(host.get_cell(), "counter host").await;
    supervisor
        .stop_children_and_wait(Some("node shutting down".into()), Some(STOP_TIMEOUT))
        .await;
    stop(supervisor.get_cell(), "counter supervisor").await;
    stop(server.get_cell(), "cluster server").await;
    let _ = server_handle.await;
    info!(node = %config.name, "node stopped");
    Ok(())
}

async fn stop(actor: ractor::ActorCell, what: &str) {
    if let Err(error) = actor
        .stop_and_wait(Some("node shutting down".into()), Some(STOP_TIMEOUT))
        .await
    {
        warn!(%error, "the {what} did not stop in time");
    }
}

fn seed_of(name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    hasher.finish()
}

/// ractor wraps a failed `pre_start` in layers; the innermost message is the useful one
/// ("Address already in use").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
