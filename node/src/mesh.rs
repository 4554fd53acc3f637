//! Cluster membership in motion: dialing, heartbeats and the failure detector, so that
//! all nodes form a full mesh, notice a lost peer within `--failure-timeout`, and form
//! the mesh again by themselves once the fault is over.
//!
//! ractor_cluster runs in `Isolated` mode and this actor does what it does not:
//! - **Dialing.** Every seed (`--join`) is dialed until a session to it is
//!   authenticated, and again whenever it is lost. A known peer that is not up is
//!   dialed by the node whose name sorts first, so a pair never opens two sessions
//!   (ractor_cluster would close one, dropping whatever was in flight on it). Failed
//!   dials back off from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] with ±20% jitter.
//! - **Handshake deadlines.** A session that has not authenticated [`AUTH_GRACE`]
//!   after it opened is closed: a frozen peer or a silent client cannot hold one open.
//!   A dialed session that closes during authentication is reported once as a
//!   probable wrong cookie.
//! - **Heartbeats.** Every `failure_timeout / 10` the mesh casts a heartbeat to every
//!   peer's agent, which records it in the [`Membership`]. A peer not heard from for
//!   `0.6 × failure_timeout` is declared unreachable: logged once, its session is torn
//!   down (so its counters leave the process groups at once), and it is redialed. A
//!   closed session is noticed at once.
//! - **Gossip.** Every [`GOSSIP_EVERY`] it asks each peer's agent whom it knows.
//! - **Leaving.** When the node stops cleanly it tells its peers, which then forget it
//!   instead of reporting it unreachable.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage, NodeSessionMessage, RactorMessage};
use shared::agent::{AgentMessage, Beat, NodeInfo};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::collect::{call_until, remote_agents};
use crate::membership::{Membership, PeerStatus, FORGET_AFTER};

/// How often the mesh asks its peers whom they know.
pub const GOSSIP_EVERY: Duration = Duration::from_millis(500);
/// First retry delay after a failed dial.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay (before jitter): a peer that comes back is redialed within
/// about a second.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long one dial (name resolution + TCP connect) may take.
const DIAL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a session may take from TCP connect to authenticated.
pub const AUTH_GRACE: Duration = Duration::from_secs(2);
/// How long a clean leave waits for its peers to acknowledge.
const LEAVE_TIMEOUT: Duration = Duration::from_millis(500);

/// Node names of short-lived clients start with this (a character node names may not
/// contain), so their sessions are told apart from cluster members.
pub const CLIENT_NAME_PREFIX: &str = "~client";

/// The node-name part of ractor_cluster's `name@host` session names.
pub fn session_node_name(session_name: &str) -> &str {
    session_name
        .split_once('@')
        .map_or(session_name, |(name, _)| name)
}

/// The `HOST:PORT` a peer advertises, from its session's name message. ractor_cluster
/// builds `connection_string` as `{hostname}:{port}` from the peer's `NodeServer`
/// settings and the port its own listener bound. Our nodes give their advertised
/// `HOST:PORT` as the hostname, and accept connections themselves
/// ([`crate::transport`]) while ractor_cluster's listener sits unused on an ephemeral
/// port: so the address is what precedes the last `:`.
pub fn advertised(peer: &NodeServerSessionInformation) -> Option<&str> {
    Some(advertised_in(&peer.peer_name.as_ref()?.connection_string))
}

fn advertised_in(connection_string: &str) -> &str {
    connection_string
        .rsplit_once(':')
        .map_or(connection_string, |(addr, _)| addr)
}

/// The heartbeat interval and the silence after which a peer is declared unreachable,
/// for a given `--failure-timeout`. The silence leaves room for the detection tick
/// and for a collection to report it, all within the timeout.
pub fn detector_timing(failure_timeout: Duration) -> (Duration, Duration) {
    let interval = (failure_timeout / 10).max(Duration::from_millis(10));
    (interval, failure_timeout.mul_f64(0.6))
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
    /// This run of the node (see `NodeInfo::incarnation`).
    pub incarnation: u64,
    /// Seed addresses (`--join`).
    pub seeds: Vec<String>,
    /// The membership table this actor keeps.
    pub membership: Membership,
    /// Bound on failure detection (`--failure-timeout`).
    pub failure_timeout: Duration,
    /// Mutual TLS for the links this node dials, if on.
    pub tls: Option<crate::tls::Tls>,
    /// Inbound connections, shared with the accept loop: the mesh settles those that
    /// were waiting to authenticate, and logs refusals through it.
    pub inbound: std::sync::Arc<crate::transport::Inbound>,
}

/// Retry bookkeeping for one address.
#[derive(Debug)]
struct DialState {
    dialing: bool,
    next_attempt: Instant,
    backoff: Duration,
    failures: u32,
    /// The socket address the last dial reached (to recognise its session).
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

/// A session that has opened but not authenticated yet.
struct Handshake {
    session: ActorRef<NodeSessionMessage>,
    opened: Instant,
    peer_addr: String,
    inbound: bool,
}

/// The mesh's state.
pub struct MeshState {
    args: MeshArgs,
    silence: Duration,
    dials: HashMap<String, DialState>,
    handshakes: HashMap<ActorId, Handshake>,
    gossip_in_flight: bool,
    last_gossip: Option<Instant>,
    ticker: Option<JoinHandle<()>>,
    rng: u64,
}

/// Messages to the mesh (local only).
#[derive(RactorMessage)]
pub enum MeshMessage {
    /// Time to send heartbeats, check deadlines, gossip and dial.
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
    /// A TCP connection opened (inbound or dialed); authentication starts.
    SessionOpened(Box<NodeServerSessionInformation>),
    /// A session authenticated.
    SessionAuthenticated(ActorId),
    /// A session finished its handshake and synchronised its process groups.
    PeerUp(Box<NodeServerSessionInformation>),
    /// A session ended.
    PeerDown(Box<NodeServerSessionInformation>),
    /// [`AUTH_GRACE`] has passed since a session opened: close it unless it has
    /// authenticated. (Scheduled per session, so the deadline holds whatever the
    /// heartbeat interval.)
    HandshakeDeadline,
}

/// Forwards `NodeServer` session events into the mesh's mailbox.
struct SessionEvents(ActorRef<MeshMessage>);

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MeshMessage::SessionOpened(Box::new(ses)));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .cast(MeshMessage::SessionAuthenticated(ses.actor.get_id()));
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MeshMessage::PeerUp(Box::new(ses)));
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(MeshMessage::PeerDown(Box::new(ses)));
    }
}

/// Authenticated sessions, as the `NodeServer` lists them.
async fn sessions(
    server: &ActorRef<NodeServerMessage>,
) -> Option<Vec<NodeServerSessionInformation>> {
    ractor::call_t!(server, NodeServerMessage::GetSessions, 1000)
        .ok()
        .map(|s| s.into_values().collect())
}

/// What is connected right now: node names, and every address they are known by.
struct Connected {
    names: HashSet<String>,
    addrs: HashSet<String>,
}

fn connected(sessions: &[NodeServerSessionInformation]) -> Connected {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for ses in sessions {
        addrs.insert(ses.peer_addr.clone());
        if let Some(peer) = &ses.peer_name {
            names.insert(session_node_name(&peer.name).to_string());
            addrs.insert(
                advertised(ses)
                    .unwrap_or(&peer.connection_string)
                    .to_string(),
            );
        }
    }
    Connected { names, addrs }
}

/// A peer's node name, if the session is a cluster member's (not a client's).
fn member_name(ses: &NodeServerSessionInformation) -> Option<&str> {
    let name = session_node_name(&ses.peer_name.as_ref()?.name);
    (!name.starts_with(CLIENT_NAME_PREFIX)).then_some(name)
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

    fn beat(&self) -> Beat {
        Beat {
            from: self.args.name.clone(),
            incarnation: self.args.incarnation,
        }
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
        let tls = self.args.tls.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let dialing = crate::transport::dial(&server, &addr, tls.as_ref());
            let result = tokio::time::timeout(DIAL_TIMEOUT, async {
                dialing.await.map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {DIAL_TIMEOUT:?}")));
            let _ = myself.cast(MeshMessage::DialFinished { addr, result });
        });
    }

    /// Schedules the next attempt at `addr` after a failure; true if it is worth a log
    /// line (the first failure, then every power of two).
    fn dial_failed(&mut self, addr: &str, now: Instant) -> Option<u32> {
        let backoff = self.dials.get(addr)?.backoff;
        let delay = self.jitter(backoff);
        let dial = self.dials.get_mut(addr)?;
        dial.failures += 1;
        dial.next_attempt = now + delay;
        dial.backoff = (dial.backoff * 2).min(BACKOFF_MAX);
        (dial.failures == 1 || dial.failures.is_power_of_two()).then_some(dial.failures)
    }

    /// The configured or gossiped address whose last dial reached `peer_addr`.
    fn dialed_as(&self, peer_addr: &str) -> Option<String> {
        self.dials
            .iter()
            .find(|(_, d)| d.resolved.is_some_and(|r| r.to_string() == peer_addr))
            .map(|(addr, _)| addr.clone())
    }

    fn send_heartbeats(&self) {
        for (_, agent) in remote_agents() {
            let _ = agent.cast(AgentMessage::Heartbeat(self.beat()));
        }
    }

    fn gossip(&mut self, myself: &ActorRef<MeshMessage>, now: Instant) {
        if self.gossip_in_flight || self.last_gossip.is_some_and(|t| now - t < GOSSIP_EVERY) {
            return;
        }
        self.gossip_in_flight = true;
        self.last_gossip = Some(now);
        let myself = myself.clone();
        tokio::spawn(async move {
            let until = Instant::now() + GOSSIP_EVERY * 2;
            let mut infos = Vec::new();
            let mut set = JoinSet::new();
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
        for name in self.args.membership.forget_stale(FORGET_AFTER, now) {
            info!(peer = %name, "forgetting peer: not reachable for {FORGET_AFTER:?}");
        }
        // Bookkeeping for addresses nobody needs any more goes too, so neither map
        // grows with every peer or source address ever seen.
        let wanted: HashSet<String> = self
            .args
            .seeds
            .iter()
            .cloned()
            .chain(self.args.membership.snapshot().into_iter().map(|p| p.addr))
            .collect();
        self.dials
            .retain(|addr, dial| dial.dialing || wanted.contains(addr));
    }

    /// Closes every session with `name` (its remote actors leave the process groups).
    fn tear_down(&self, sessions: &[NodeServerSessionInformation], name: &str, why: &str) {
        for ses in sessions {
            if member_name(ses) == Some(name) {
                ses.actor.stop(Some(why.to_string()));
            }
        }
    }

    /// A session's handshake is over (authenticated, failed or timed out): an inbound
    /// one no longer counts against the accept loop's bound on unauthenticated
    /// connections.
    fn end_handshake(&mut self, id: ActorId) -> Option<Handshake> {
        let h = self.handshakes.remove(&id)?;
        if h.inbound {
            self.args.inbound.settled(&h.peer_addr);
        }
        Some(h)
    }

    fn expire_handshakes(&mut self, now: Instant) {
        let late: Vec<ActorId> = self
            .handshakes
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.opened) > AUTH_GRACE)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(h) = self.end_handshake(id) else {
                continue;
            };
            debug!(peer_addr = %h.peer_addr, inbound = h.inbound, "handshake deadline passed; closing the connection");
            h.session.stop(Some("handshake timed out".into()));
            if h.inbound {
                continue;
            }
            if let Some(addr) = self.dialed_as(&h.peer_addr) {
                if let Some(attempts) = self.dial_failed(&addr, now) {
                    warn!(%addr, attempts, "peer accepted the connection but did not complete the handshake within {AUTH_GRACE:?}; retrying with backoff");
                }
            }
        }
    }

    async fn tick(&mut self, myself: &ActorRef<MeshMessage>) {
        let now = Instant::now();
        self.send_heartbeats();
        self.gossip(myself, now);

        let Some(sessions) = sessions(&self.args.server).await else {
            return;
        };
        for (peer, quiet) in self.args.membership.expire_silent(self.silence, now) {
            warn!(
                peer = %peer.name,
                addr = %peer.addr,
                silent_ms = quiet.as_millis() as u64,
                "peer unreachable: no heartbeat within the failure timeout; closing its session"
            );
            self.tear_down(&sessions, &peer.name, "peer unreachable");
        }

        let connected = connected(&sessions);
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
        for peer in self.args.membership.snapshot() {
            let my_turn = self.args.name < peer.name;
            if my_turn && peer.status != PeerStatus::Up && !connected.names.contains(&peer.name) {
                self.dial(myself, peer.addr, now);
            }
        }
    }

    /// A session closed before it authenticated.
    async fn handshake_failed(&mut self, h: Handshake, now: Instant) {
        if h.inbound {
            if let Ok(peer) = h.peer_addr.parse() {
                self.args.inbound.refused(
                    peer,
                    "it failed to authenticate (wrong cookie, or not a cluster node)",
                );
            }
            return;
        }
        let Some(addr) = self.dialed_as(&h.peer_addr) else {
            return;
        };
        // Lost a duplicate-connection election: the peer is connected another way.
        let already = sessions(&self.args.server)
            .await
            .is_some_and(|s| connected(&s).addrs.contains(&h.peer_addr));
        if already {
            debug!(%addr, "a duplicate connection was closed during its handshake");
            return;
        }
        if let Some(attempts) = self.dial_failed(&addr, now) {
            error!(
                %addr,
                attempts,
                "cannot join {addr}: the peer closed the connection during authentication \
                 (wrong cookie, or it requires TLS or rejected our certificate, or not a \
                 counter-cluster node); retrying with backoff"
            );
        }
    }
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
        // The server has been accepting connections since before this node's counters
        // started: a peer that connected meanwhile sent its events to nobody. The
        // server handles this call after the subscription, so every session is either
        // listed here or reported by an event from now on.
        for ses in sessions(&args.server).await.unwrap_or_default() {
            if ses.peer_name.is_some() {
                let _ = myself.cast(MeshMessage::PeerUp(Box::new(ses)));
            }
        }
        let rng = args.name.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) ^ args.incarnation;
        let (interval, silence) = detector_timing(args.failure_timeout);
        let _ = myself.cast(MeshMessage::Tick);
        Ok(MeshState {
            ticker: Some(myself.send_interval(interval, || MeshMessage::Tick)),
            args,
            silence,
            dials: HashMap::new(),
            handshakes: HashMap::new(),
            gossip_in_flight: false,
            last_gossip: None,
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
        // Say goodbye, so peers forget this node rather than report it unreachable.
        let until = Instant::now() + LEAVE_TIMEOUT;
        let mut set = JoinSet::new();
        for (_, agent) in remote_agents() {
            let beat = state.beat();
            set.spawn(call_until(
                agent,
                move |reply| AgentMessage::Leaving(beat, reply),
                until,
            ));
        }
        let told = set.join_all().await.into_iter().flatten().count();
        info!(peers = told, "told peers this node is leaving");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match message {
            MeshMessage::Tick => state.tick(&myself).await,
            MeshMessage::HandshakeDeadline => state.expire_handshakes(now),
            MeshMessage::Gossip(infos) => {
                state.gossip_in_flight = false;
                let membership = &state.args.membership;
                for info in infos {
                    membership.describe(&info, now);
                    for peer in info.known_peers {
                        if peer.name != state.args.name
                            && membership.learn(&peer.name, &peer.addr, now)
                        {
                            debug!(peer = %peer.name, addr = %peer.addr, "learned peer");
                        }
                    }
                }
            }
            MeshMessage::DialFinished { addr, result } => {
                let Some(dial) = state.dials.get_mut(&addr) else {
                    return Ok(());
                };
                dial.dialing = false;
                match result {
                    Ok(reached) => {
                        debug!(%addr, %reached, "connection opened");
                        dial.resolved = Some(reached);
                        // Whether this dial worked is decided by the handshake: the
                        // session becoming ready resets the backoff; a failed
                        // authentication or the handshake deadline counts a failure.
                        dial.next_attempt = now + AUTH_GRACE;
                    }
                    Err(error) => {
                        if let Some(attempts) = state.dial_failed(&addr, now) {
                            warn!(%addr, %error, attempts, "cannot reach peer; retrying with backoff");
                        }
                    }
                }
            }
            MeshMessage::SessionOpened(ses) => {
                myself.send_after(AUTH_GRACE + Duration::from_millis(10), || {
                    MeshMessage::HandshakeDeadline
                });
                state.handshakes.insert(
                    ses.actor.get_id(),
                    Handshake {
                        session: ses.actor.clone(),
                        opened: now,
                        peer_addr: ses.peer_addr.clone(),
                        inbound: ses.is_server,
                    },
                );
            }
            MeshMessage::SessionAuthenticated(id) => {
                state.end_handshake(id);
            }
            MeshMessage::PeerUp(ses) => {
                let Some(peer) = ses.peer_name.as_ref() else {
                    return Ok(());
                };
                let Some(name) = member_name(&ses) else {
                    debug!(client = %peer.name, peer_addr = %ses.peer_addr, "client connected");
                    return Ok(());
                };
                for dial in state.dials.values_mut() {
                    if dial
                        .resolved
                        .is_some_and(|r| r.to_string() == ses.peer_addr)
                    {
                        dial.next_attempt = now;
                        dial.failures = 0;
                        dial.backoff = BACKOFF_MIN;
                    }
                }
                let addr = advertised(&ses).unwrap_or(&peer.connection_string);
                match state.args.membership.session_up(name, addr, now) {
                    Some(PeerStatus::Unreachable) => {
                        info!(peer = %name, %addr, "peer reachable again")
                    }
                    Some(_) => {
                        info!(peer = %name, %addr, "peer connected")
                    }
                    None => {}
                }
            }
            MeshMessage::PeerDown(ses) => {
                let id = ses.actor.get_id();
                if let Some(h) = state.end_handshake(id) {
                    state.handshake_failed(h, now).await;
                    return Ok(());
                }
                let Some(name) = member_name(&ses) else {
                    return Ok(());
                };
                // Another session to the same peer may still be up (an election loser).
                let still = sessions(&state.args.server)
                    .await
                    .is_some_and(|s| connected(&s).names.contains(name));
                if !still && state.args.membership.lost(name, now) {
                    let addr = advertised(&ses).unwrap_or(ses.peer_addr.as_str());
                    warn!(peer = %name, %addr, "peer unreachable: connection closed");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_map_to_node_names() {
        assert_eq!(session_node_name("worker-1@10.0.0.2:4697"), "worker-1");
        assert_eq!(session_node_name("plain"), "plain");
    }

    #[test]
    fn the_advertised_address_precedes_the_unused_port() {
        assert_eq!(advertised_in("worker-1:4697:40111"), "worker-1:4697");
        assert_eq!(advertised_in("[::1]:4697:40111"), "[::1]:4697");
        assert_eq!(advertised_in("10.0.0.2:4698:0"), "10.0.0.2:4698");
    }

    #[test]
    fn detection_fits_in_the_failure_timeout() {
        let timeout = Duration::from_secs(2);
        let (interval, silence) = detector_timing(timeout);
        assert_eq!(interval, Duration::from_millis(200));
        // Declared at most one tick after the silence, with room left to report it.
        assert!(silence + interval <= timeout.mul_f64(0.75));
        // Several heartbeats must be lost before a healthy peer is declared down.
        assert!(silence >= interval * 5);
    }
}
