//! Cluster membership: dialing seeds and every peer the cluster knows, so that all
//! nodes form a full mesh whichever node each one joined.
//!
//! ractor_cluster runs in `Isolated` mode (its `Transitive` mode dials the peers of a
//! peer only once, and only in plain TCP), and this actor does the dialing:
//! - every seed (`--join`) is dialed until a session to it is authenticated, with
//!   capped, jittered exponential backoff, and again if that session is lost;
//! - every [`MESH_TICK`] it asks each connected peer's agent whom it knows (gossip)
//!   and records them in the [`PeerDirectory`];
//! - a known peer that is not connected is dialed by the node whose name sorts first.
//!   Only one side dials, so two nodes never open two sessions to each other (which
//!   ractor_cluster resolves by closing one, dropping whatever was in flight on it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage, RactorMessage};
use shared::agent::{AgentMessage, NodeInfo, PeerAddr};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::collect::{call_until, remote_agents};

/// How often the mesh gossips and checks its connections.
pub const MESH_TICK: Duration = Duration::from_millis(500);
/// First retry delay after a failed dial.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one dial (name resolution + TCP connect) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an opened session may take to authenticate before the peer is dialed again.
const AUTH_GRACE: Duration = Duration::from_secs(3);

/// Node names of short-lived clients start with this (a character node names may not
/// contain), so their sessions are told apart from cluster members in logs.
pub const CLIENT_NAME_PREFIX: &str = "~client";

/// The peers a node knows how to reach, by name. Shared between the mesh (which learns
/// them) and the agent (which gossips them).
#[derive(Debug, Clone, Default)]
pub struct PeerDirectory(Arc<Mutex<BTreeMap<String, String>>>);

impl PeerDirectory {
    /// Records that `name` is reachable at `addr`; true if that is news.
    pub fn learn(&self, name: &str, addr: &str) -> bool {
        let mut peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        peers.insert(name.to_string(), addr.to_string()).as_deref() != Some(addr)
    }

    /// All known peers, sorted by name.
    pub fn snapshot(&self) -> Vec<PeerAddr> {
        let peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .map(|(name, addr)| PeerAddr {
                name: name.clone(),
                addr: addr.clone(),
            })
            .collect()
    }
}

/// The node-name part of ractor_cluster's `name@host` session names.
pub fn session_node_name(session_name: &str) -> &str {
    session_name
        .split_once('@')
        .map_or(session_name, |(name, _)| name)
}

/// The mesh behaviour.
#[derive(Debug, Default)]
pub struct Mesh;

/// The mesh's fixed configuration.
pub struct MeshArgs {
    /// The local `NodeServer`, which owns every session.
    pub server: ActorRef<NodeServerMessage>,
    /// This node's name.
    pub name: String,
    /// Seed addresses (`--join`).
    pub seeds: Vec<String>,
    /// Where learned peers are recorded.
    pub directory: PeerDirectory,
}

/// Retry bookkeeping for one address.
#[derive(Debug)]
struct DialState {
    dialing: bool,
    next_attempt: Instant,
    backoff: Duration,
    failures: u32,
    /// The address the last successful dial reached (to recognise its session).
    resolved: Option<SocketAddr>,
}

impl DialState {
    fn new(now: Instant) -> Self {
        Self {
            dialing: false,
            next_attempt: now,
            backoff: BACKOFF_MIN,
            failures: 0,
            resolved: None,
        }
    }
}

/// The mesh's state.
pub struct MeshState {
    args: MeshArgs,
    dials: HashMap<String, DialState>,
    gossip_in_flight: bool,
    ticker: Option<JoinHandle<()>>,
    rng: u64,
}

/// Messages to the mesh (local only).
#[derive(RactorMessage)]
pub enum MeshMessage {
    /// Time to gossip and check connections.
    Tick,
    /// Answers from peers' agents.
    Gossip(Vec<NodeInfo>),
    /// A dial attempt to `addr` ended.
    DialFinished {
        /// The address as configured or gossiped.
        addr: String,
        /// The socket address reached, or why not.
        result: Result<SocketAddr, String>,
    },
    /// A session finished its handshake and synchronised its process groups.
    PeerUp {
        /// ractor_cluster's `name@host` of the peer.
        peer: String,
        /// The socket address of the peer.
        peer_addr: String,
    },
    /// A session ended.
    PeerDown {
        /// ractor_cluster's `name@host` of the peer, if it had authenticated.
        peer: Option<String>,
        /// The socket address of the peer.
        peer_addr: String,
    },
}

/// Forwards `NodeServer` session events into the mesh's mailbox.
struct SessionEvents(ActorRef<MeshMessage>);

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MeshMessage::PeerUp {
            peer: ses.peer_name.map(|p| p.name).unwrap_or_default(),
            peer_addr: ses.peer_addr,
        });
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MeshMessage::PeerDown {
            peer: ses.peer_name.map(|p| p.name),
            peer_addr: ses.peer_addr,
        });
    }
}

/// What the `NodeServer` says is connected right now.
struct Connected {
    names: HashSet<String>,
    addrs: HashSet<String>,
}

async fn connected(server: &ActorRef<NodeServerMessage>) -> Option<Connected> {
    let sessions = ractor::call_t!(server, NodeServerMessage::GetSessions, 1000).ok()?;
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for ses in sessions.into_values() {
        addrs.insert(ses.peer_addr.clone());
        if let Some(peer) = ses.peer_name {
            names.insert(session_node_name(&peer.name).to_string());
            addrs.insert(peer.connection_string);
        }
    }
    Some(Connected { names, addrs })
}

impl MeshState {
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift; +-20% so that restarted nodes do not redial in lockstep.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.8 + (self.rng % 401) as f64 / 1000.0;
        d.mul_f64(factor)
    }

    fn dial(&mut self, myself: &ActorRef<MeshMessage>, addr: String, now: Instant) {
        let state = self
            .dials
            .entry(addr.clone())
            .or_insert_with(|| DialState::new(now));
        if state.dialing || state.next_attempt > now {
            return;
        }
        state.dialing = true;
        let server = self.args.server.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(DIAL_TIMEOUT, dial(&server, &addr))
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {DIAL_TIMEOUT:?}")));
            let _ = myself.cast(MeshMessage::DialFinished { addr, result });
        });
    }

    async fn tick(&mut self, myself: &ActorRef<MeshMessage>) {
        let now = Instant::now();
        if !self.gossip_in_flight {
            self.gossip_in_flight = true;
            let myself = myself.clone();
            tokio::spawn(async move {
                let until = Instant::now() + MESH_TICK * 2;
                let mut infos = Vec::new();
                let mut set = tokio::task::JoinSet::new();
                for (_, agent) in remote_agents() {
                    set.spawn(call_until(agent, AgentMessage::GetInfo, until));
                }
                while let Some(joined) = set.join_next().await {
                    if let Ok(Some(info)) = joined {
                        infos.push(info);
                    }
                }
                let _ = myself.cast(MeshMessage::Gossip(infos));
            });
        }

        let Some(connected) = connected(&self.args.server).await else {
            return;
        };
        for seed in self.args.seeds.clone() {
            let reached = self
                .dials
                .get(&seed)
                .and_then(|d| d.resolved)
                .is_some_and(|sa| connected.addrs.contains(&sa.to_string()))
                || connected.addrs.contains(&seed);
            if !reached {
                self.dial(myself, seed, now);
            }
        }
        for peer in self.args.directory.snapshot() {
            let my_turn = self.args.name < peer.name;
            if my_turn && !connected.names.contains(&peer.name) {
                self.dial(myself, peer.addr, now);
            }
        }
    }
}

/// Resolves `addr` and opens a session to it through `server`.
async fn dial(server: &ActorRef<NodeServerMessage>, addr: &str) -> Result<SocketAddr, String> {
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "name resolves to no address".to_string())?;
    ractor_cluster::client_connect(server, target)
        .await
        .map_err(|e| e.to_string())?;
    Ok(target)
}

impl Actor for Mesh {
    type Msg = MeshMessage;
    type State = MeshState;
    type Arguments = MeshArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MeshArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.server.cast(NodeServerMessage::SubscribeToEvents {
            id: "mesh".to_string(),
            subscription: Box::new(SessionEvents(myself.clone())),
        })?;
        let rng = args.name.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) ^ u64::from(std::process::id());
        let _ = myself.cast(MeshMessage::Tick);
        Ok(MeshState {
            ticker: Some(myself.send_interval(MESH_TICK, || MeshMessage::Tick)),
            args,
            dials: HashMap::new(),
            gossip_in_flight: false,
            rng: rng | 1,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        let _ = state
            .args
            .server
            .cast(NodeServerMessage::UnsubscribeToEvents("mesh".to_string()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MeshMessage::Tick => state.tick(&myself).await,
            MeshMessage::Gossip(infos) => {
                state.gossip_in_flight = false;
                for info in infos {
                    let mut learned = vec![PeerAddr {
                        name: info.name.clone(),
                        addr: info.advertise.clone(),
                    }];
                    learned.extend(info.known_peers);
                    for peer in learned {
                        if peer.name != state.args.name
                            && state.args.directory.learn(&peer.name, &peer.addr)
                        {
                            debug!(peer = %peer.name, addr = %peer.addr, "learned peer");
                        }
                    }
                }
            }
            MeshMessage::DialFinished { addr, result } => {
                let now = Instant::now();
                let Some(mut dial) = state.dials.remove(&addr) else {
                    return Ok(());
                };
                dial.dialing = false;
                match result {
                    Ok(reached) => {
                        debug!(%addr, %reached, "connection opened");
                        dial.resolved = Some(reached);
                        dial.failures = 0;
                        dial.backoff = BACKOFF_MIN;
                        // Give the handshake time before this address is dialed again.
                        dial.next_attempt = now + AUTH_GRACE;
                    }
                    Err(error) => {
                        dial.failures += 1;
                        if dial.failures == 1 || dial.failures.is_power_of_two() {
                            warn!(%addr, %error, attempts = dial.failures, "cannot reach peer; retrying with backoff");
                        }
                        dial.next_attempt = now + state.jitter(dial.backoff);
                        dial.backoff = (dial.backoff * 2).min(BACKOFF_MAX);
                    }
                }
                state.dials.insert(addr, dial);
            }
            MeshMessage::PeerUp { peer, peer_addr } => {
                if peer.starts_with(CLIENT_NAME_PREFIX) {
                    debug!(client = %peer, %peer_addr, "client connected");
                } else {
                    info!(peer = %session_node_name(&peer), %peer_addr, "peer connected");
                }
            }
            MeshMessage::PeerDown { peer, peer_addr } => match peer {
                Some(p) if p.starts_with(CLIENT_NAME_PREFIX) => {
                    debug!(client = %p, %peer_addr, "client disconnected")
                }
                Some(p) => warn!(peer = %session_node_name(&p), %peer_addr, "peer disconnected"),
                None => debug!(%peer_addr, "connection closed before authentication"),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_reports_news_once() {
        let dir = PeerDirectory::default();
        assert!(dir.learn("b", "h:2"));
        assert!(!dir.learn("b", "h:2"));
        assert!(dir.learn("a", "h:1"));
        assert!(dir.learn("b", "h:3"));
        let names: Vec<_> = dir.snapshot().into_iter().map(|p| p.addr).collect();
        assert_eq!(names, ["h:1", "h:3"]);
    }

    #[test]
    fn session_names_map_to_node_names() {
        assert_eq!(session_node_name("worker-1@10.0.0.2"), "worker-1");
        assert_eq!(session_node_name("plain"), "plain");
    }
}
