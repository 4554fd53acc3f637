//! The mesh: cluster membership in motion. All nodes form a full mesh, notice a lost
//! peer within `--failure-timeout`, and form the mesh again by themselves once the
//! fault is over.
//!
//! ractor_cluster runs in `Isolated` mode and this actor does what it does not. Its
//! decisions are the [`Detector`]'s (a plain type, tested on a fake clock); the actor
//! only turns session events, timers and finished tasks into the detector's inputs and
//! carries out its actions:
//! - dialing (each dial in a task that reports back, one per address at most);
//! - finding the seeds a `--join` name gives, again and again ([`seeds`](super::seeds),
//!   in a task that reports each new set and ends with the mesh);
//! - closing sessions (stopping their `NodeSession`);
//! - heartbeats to the agents of the members it watches (and of a suspect it checks),
//!   each answered with the member's own, recorded in the [`Membership`] by a task per
//!   heartbeat as it arrives;
//! - telling every member of a peer this node found silent (`Suspect`), and taking
//!   such word from the agent ([`MeshMessage::Suspected`]);
//! - gossip rounds (in a task that asks a few members' agents `Gossip` with this node's
//!   digest, and reports back);
//! - log lines.
//!
//! **No handler waits.** The session view comes from the `NodeServer`'s session events,
//! never from asking it; dials, gossip and the leave notice run in tasks that report
//! back with a message, so a tick is handled in microseconds and ticks never pile up.
//!
//! **Restarts.** The membership table outlives the mesh. A restarted mesh subscribes
//! again and asks the `NodeServer` (in a task) which sessions are up; dial backoffs
//! start afresh. The leave notice is sent only when the node stops cleanly
//! ([`MeshMessage::Leave`], from the node's root), never when the mesh fails.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage, NodeSessionMessage, RactorMessage};
use shared::agent::{AgentMessage, Beat, Departure, PeerAddr, View};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::detector::{
    detector_timing, Action, Detector, HandshakeEnd, Input, Report, SessionPeer, AUTH_GRACE,
    GOSSIP_EVERY,
};
use super::discovery::remote_agents;
use super::names::{session_node_name, CLIENT_NAME_PREFIX};
use super::rpc::{ask, gather, gather_timed};
use super::seeds::{self, SeedAddrs};
use crate::clock::Ticker;
use crate::facts::NodeFacts;
use crate::net::probe::DialProbe;
use crate::net::tls::Tls;
use crate::net::transport::{self, Inbound};

/// The mesh's registry name on node `node`: the agent hands it what peers suspect.
pub(crate) fn mesh_name(node: &str) -> String {
    format!("{node}/mesh")
}

/// How long one dial (name resolution, TCP connect, TLS) may take.
const DIAL_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a clean leave waits for its peers to acknowledge.
pub(crate) const LEAVE_TIMEOUT: Duration = Duration::from_millis(500);

/// The `HOST:PORT` a peer advertises, from its session's name message. ractor_cluster
/// builds `connection_string` as `{hostname}:{port}` from the peer's `NodeServer`
/// settings and the port its own listener bound. Our nodes give their advertised
/// `HOST:PORT` as the hostname, and accept connections themselves
/// ([`transport`]) while ractor_cluster's listener sits unused on an ephemeral port:
/// so the address is what precedes the last `:`.
pub(crate) fn advertised(peer: &NodeServerSessionInformation) -> Option<&str> {
    Some(advertised_in(&peer.peer_name.as_ref()?.connection_string))
}

fn advertised_in(connection_string: &str) -> &str {
    connection_string
        .rsplit_once(':')
        .map_or(connection_string, |(addr, _)| addr)
}

/// Who is at the other end of a session, once it has named itself.
fn session_peer(ses: &NodeServerSessionInformation) -> Option<SessionPeer> {
    let peer = ses.peer_name.as_ref()?;
    let name = session_node_name(&peer.name);
    Some(SessionPeer {
        member: (!name.starts_with(CLIENT_NAME_PREFIX)).then(|| name.to_string()),
        peer_addr: ses.peer_addr.clone(),
        advertised: advertised(ses)
            .unwrap_or(&peer.connection_string)
            .to_string(),
    })
}

/// The seeds as the detector takes them: each address, and whether it is deferred.
fn seed_list(addrs: &SeedAddrs) -> Vec<(String, bool)> {
    addrs
        .iter()
        .map(|(addr, seed)| (addr.clone(), seed.defer))
        .collect()
}

/// Starts the task that resolves the seeds' names now, every [`seeds::RESOLVE_EVERY`], and
/// sooner when the mesh asks (a dial to an address a name gave failed: the node may
/// have come back elsewhere), at most once every [`seeds::RESOLVE_AGAIN_AFTER`]; if any seed
/// is a name.
fn resolve_seeds(myself: &ActorRef<MeshMessage>, args: &MeshArgs) -> Option<Resolving> {
    if !seeds::any_names(&args.seeds) {
        return None;
    }
    let mesh = myself.clone();
    let (given, listen) = (args.seeds.clone(), args.listen);
    let asked = Arc::new(tokio::sync::Notify::new());
    let waiting = Arc::clone(&asked);
    let task = tokio::spawn(async move {
        let tick = |soon| {
            let waiting = Arc::clone(&waiting);
            async move {
                seeds::next_round(&waiting, soon).await;
                true
            }
        };
        seeds::keep_resolving(given, listen, tick, |addrs| {
            mesh.cast(MeshMessage::Seeds(addrs)).is_ok()
        })
        .await;
    });
    Some(Resolving {
        task: task.abort_handle(),
        asked,
    })
}

/// The mesh behaviour.
#[derive(Debug, Default)]
pub(crate) struct Mesh;

/// The mesh's fixed configuration.
#[derive(Clone)]
pub(crate) struct MeshArgs {
    /// The local `NodeServer`, which owns every session.
    pub(crate) server: ActorRef<NodeServerMessage>,
    /// This node (its name, incarnation and membership table).
    pub(crate) facts: Arc<NodeFacts>,
    /// Seeds (`--join`): `HOST:PORT`, a host being an IP address or a DNS name.
    pub(crate) seeds: Vec<String>,
    /// Where this node's cluster port listens (to leave its own address out of the
    /// seeds a name gives).
    pub(crate) listen: SocketAddr,
    /// Bound on failure detection (`--failure-timeout`).
    pub(crate) failure_timeout: Duration,
    /// Mutual TLS for the links this node dials, if on.
    pub(crate) tls: Option<Tls>,
    /// Inbound connections waiting to authenticate, shared with the accept loop: a
    /// session that authenticates is let through at once, from the session event.
    pub(crate) inbound: Arc<Inbound>,
}

/// The mesh's state.
pub(crate) struct MeshState {
    args: MeshArgs,
    detector: Detector,
    /// Every session the detector knows of, to close one when it says so.
    sessions: HashMap<ActorId, ActorRef<NodeSessionMessage>>,
    /// Dialed connections still in their handshake, by socket address: whether the
    /// peer refused one because it was busy.
    probes: HashMap<String, Arc<DialProbe>>,
    /// Sessions that closed before the start-up snapshot arrived (a restarted mesh).
    closed_early: Option<HashSet<ActorId>>,
    /// The seed addresses now, with what each one's TLS certificate must name.
    seed_addrs: SeedAddrs,
    _ticker: Ticker,
    /// The task that resolves the seeds' names, if any is a name.
    resolving: Option<Resolving>,
}

/// The seed resolver's task, ended with the mesh, and the way to ask it to resolve
/// again soon.
struct Resolving {
    task: tokio::task::AbortHandle,
    asked: Arc<tokio::sync::Notify>,
}

impl Drop for Resolving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `NodeServer` session event.
pub(crate) enum SessionEvent {
    /// A TCP connection opened (inbound or dialed); authentication starts.
    Opened,
    /// The session authenticated.
    Authenticated,
    /// The session finished its handshake and synchronised its process groups.
    Ready,
    /// The session ended.
    Closed,
}

/// Messages to the mesh (local only).
#[derive(RactorMessage)]
pub(crate) enum MeshMessage {
    /// Time to send heartbeats, check deadlines and silence, gossip and dial.
    Tick,
    /// [`AUTH_GRACE`] has passed since a session opened: check handshake deadlines.
    /// (Scheduled per session, so the deadline holds whatever the heartbeat interval.)
    Deadlines,
    /// A session event from the `NodeServer`.
    Session(SessionEvent, Box<NodeServerSessionInformation>),
    /// The sessions already up when this mesh started.
    Snapshot(Vec<NodeServerSessionInformation>),
    /// A dial attempt ended.
    DialFinished {
        /// The address as configured or gossiped.
        addr: String,
        /// The socket address reached and its probe, or why not.
        result: Result<(SocketAddr, Arc<DialProbe>), String>,
    },
    /// A gossip round ended: what the peers said about themselves.
    Gossip(Vec<View>),
    /// Member `by` says it found member `name` silent (from the agent).
    Suspected {
        /// The suspect.
        name: String,
        /// Who says so.
        by: String,
    },
    /// The seeds' names resolved to a set of addresses unlike the one before.
    Seeds(SeedAddrs),
    /// The node is stopping cleanly, taking this with it: tell every peer, then answer
    /// with how many acknowledged (within [`LEAVE_TIMEOUT`]).
    Leave(Departure, RpcReplyPort<usize>),
}

/// Forwards `NodeServer` session events into the mesh's mailbox, and lets an inbound
/// connection out of the accept side's pre-authentication limits the moment it
/// authenticates.
struct SessionEvents {
    mesh: ActorRef<MeshMessage>,
    inbound: Arc<Inbound>,
}

impl SessionEvents {
    fn send(&self, event: SessionEvent, ses: NodeServerSessionInformation) {
        let _ = self.mesh.cast(MeshMessage::Session(event, Box::new(ses)));
    }
}

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEvent::Opened, ses);
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if ses.is_server {
            self.inbound.authenticated(&ses.peer_addr);
        }
        self.send(SessionEvent::Authenticated, ses);
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEvent::Ready, ses);
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEvent::Closed, ses);
    }
}

impl MeshState {
    fn beat(&self) -> Beat {
        self.args.facts.beat()
    }

    fn step(&mut self, myself: &ActorRef<MeshMessage>, input: Input) {
        let now = Instant::now();
        let actions = self.detector.step(now, input, &self.args.facts.membership);
        for action in actions {
            self.act(myself, action, now);
        }
    }

    fn act(&mut self, myself: &ActorRef<MeshMessage>, action: Action, now: Instant) {
        match action {
            Action::Member(change) => self.args.facts.membership.apply(&change, now),
            Action::Dial(addr) => self.dial(myself, addr),
            Action::Close { session, reason } => {
                if let Some(ses) = self.sessions.get(&session) {
                    ses.stop(Some(reason.to_string()));
                }
            }
            Action::Heartbeat(names) => self.heartbeats(&names),
            Action::Suspect(name) => {
                let facts = &self.args.facts;
                let suspect = PeerAddr {
                    addr: facts.membership.addr(&name).unwrap_or_default(),
                    name,
                    incarnation: 0,
                };
                for (node, agent) in remote_agents() {
                    if node != suspect.name {
                        let _ = agent.cast(AgentMessage::Suspect(self.beat(), suspect.clone()));
                    }
                }
            }
            Action::Wake(after) => {
                myself.send_after(after, || MeshMessage::Deadlines);
            }
            Action::AskGossip(names) => {
                let myself = myself.clone();
                let facts = &self.args.facts;
                let membership = facts.membership.clone();
                let digest = membership.digest(&facts.name, &facts.advertise);
                let agents = agents_of(&names);
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let pending = agents
                        .into_iter()
                        .map(|(node, agent)| {
                            let gossip = |reply| AgentMessage::Gossip(digest, reply);
                            (node, ask(&agent, gossip, GOSSIP_EVERY * 2))
                        })
                        .collect();
                    let answers = gather_timed(pending, sent, sent + GOSSIP_EVERY * 2).await;
                    for (node, answer) in &answers {
                        if let Some((_, round_trip)) = answer {
                            membership.round_trip(node, *round_trip);
                        }
                    }
                    // A peer's answer is about itself, or it is not believed.
                    let views = answers
                        .into_iter()
                        .filter_map(|(node, answer)| {
                            answer
                                .map(|(view, _)| view)
                                .filter(|view| super::policy::view_of_itself(&node, view))
                        })
                        .collect();
                    let _ = myself.cast(MeshMessage::Gossip(views));
                });
            }
            Action::Report(report) => {
                let membership = &self.args.facts.membership;
                match &report {
                    Report::Connected { peer, .. } => membership.event(peer, "joined"),
                    Report::Back { peer, .. } => membership.event(peer, "back"),
                    Report::Lost { peer, .. } | Report::Silent { peer, .. } => {
                        membership.event(peer, "unreachable")
                    }
                    Report::Confirmed { peer, .. } => {
                        membership.event(peer, "unreachable");
                        self.args.facts.metrics.suspicion_checked(true);
                    }
                    Report::Refuted { .. } => self.args.facts.metrics.suspicion_checked(false),
                    _ => {}
                }
                log(report)
            }
        }
    }

    /// Sends each of `names` a heartbeat, and records each answer as it arrives, if it
    /// is in that member's own name (a task per heartbeat, each gone within the
    /// silence: an answer late but within it still counts; at most three per watched
    /// member and per suspect at a time).
    fn heartbeats(&self, names: &[String]) {
        let (_, timeout) = detector_timing(self.args.failure_timeout);
        for (node, agent) in agents_of(names) {
            let beat = self.beat();
            let Some(answer) = ask(
                &agent,
                |reply| AgentMessage::Heartbeat(beat, reply),
                timeout,
            ) else {
                continue;
            };
            let membership = self.args.facts.membership.clone();
            tokio::spawn(async move {
                if let Ok(Ok(beat)) = tokio::time::timeout(timeout, answer).await {
                    if beat.from == node {
                        membership.beat(&beat, Instant::now());
                    }
                }
            });
        }
    }

    fn dial(&self, myself: &ActorRef<MeshMessage>, addr: String) {
        let server = self.args.server.clone();
        let tls = self.args.tls.clone();
        let myself = myself.clone();
        let facts = Arc::clone(&self.args.facts);
        // A seed a name gave: its certificate names that name.
        let host = self.seed_addrs.get(&addr).map(|seed| seed.host.clone());
        tokio::spawn(async move {
            let traffic = Some(&facts.metrics.traffic);
            let dialing = transport::dial(&server, &addr, host.as_deref(), tls.as_ref(), traffic);
            let result = tokio::time::timeout(DIAL_TIMEOUT, dialing)
                .await
                .unwrap_or(Err(transport::DialError::TimedOut(DIAL_TIMEOUT)))
                .map_err(|e| e.to_string());
            let _ = myself.cast(MeshMessage::DialFinished { addr, result });
        });
    }

    fn session_event(
        &mut self,
        myself: &ActorRef<MeshMessage>,
        event: SessionEvent,
        ses: NodeServerSessionInformation,
    ) {
        let session = ses.actor.get_id();
        match event {
            SessionEvent::Opened => {
                myself.send_after(AUTH_GRACE + Duration::from_millis(10), || {
                    MeshMessage::Deadlines
                });
                self.sessions.insert(session, ses.actor.clone());
                self.step(
                    myself,
                    Input::Opened {
                        session,
                        peer_addr: ses.peer_addr,
                        inbound: ses.is_server,
                    },
                );
            }
            SessionEvent::Authenticated => {
                let member = session_peer(&ses).and_then(|p| p.member);
                self.step(myself, Input::Authenticated { session, member });
            }
            SessionEvent::Ready => {
                self.probes.remove(&ses.peer_addr);
                let Some(peer) = session_peer(&ses) else {
                    return;
                };
                match &peer.member {
                    Some(name) => self.args.facts.metrics.traffic.named(&ses.peer_addr, name),
                    None => debug!(peer_addr = %ses.peer_addr, "client connected"),
                }
                self.sessions.insert(session, ses.actor.clone());
                self.step(myself, Input::Ready { session, peer });
            }
            SessionEvent::Closed => {
                self.sessions.remove(&session);
                self.args.facts.metrics.traffic.closed(&ses.peer_addr);
                if let Some(early) = &mut self.closed_early {
                    early.insert(session);
                }
                let refusal = match self.probes.remove(&ses.peer_addr) {
                    Some(probe) if probe.refused_busy() => HandshakeEnd::Busy,
                    Some(probe) if !probe.answered() => HandshakeEnd::Silent,
                    _ => HandshakeEnd::Rejected,
                };
                self.step(myself, Input::Closed { session, refusal });
            }
        }
    }
}

/// Failures in a row before a dial that cannot connect is worth a warning: about 4 s of
/// retries (the backoff doubles from 0.1 s to 1 s; failures are reported at the 1st,
/// 2nd, 4th, 8th, ... in a row). Before that, a member that is not
/// up yet is what forming a cluster looks like (a container started before its seed, a
/// new peer's host name not in the network's DNS yet: both seen on Compose and Swarm),
/// and the loss of a peer that was up has been warned of already.
const WARN_AFTER_ATTEMPTS: u32 = 8;

/// The agents of the members named in `names` (each found in the process group).
fn agents_of(names: &[String]) -> Vec<(String, ActorRef<AgentMessage>)> {
    remote_agents()
        .into_iter()
        .filter(|(node, _)| names.contains(node))
        .collect()
}

/// One log line per report, at the level it deserves.
fn log(report: Report) {
    match report {
        Report::Connected { peer, addr } => info!(%peer, %addr, "peer connected"),
        Report::Back { peer, addr } => info!(%peer, %addr, "peer reachable again"),
        Report::Lost { peer, addr } => warn!(%peer, %addr, "peer unreachable: connection closed"),
        Report::Confirmed { peer, addr, by } => warn!(
            %peer,
            %addr,
            %by,
            "peer unreachable: {by} found it silent, and it did not answer a heartbeat from \
             here either; closing its session"
        ),
        Report::Refuted { peer, by, times } if times.is_power_of_two() => info!(
            %peer,
            %by,
            times,
            "{by} found {peer} silent, but it answered a heartbeat from here: still up"
        ),
        Report::Refuted { .. } => {}
        Report::Silent { peer, addr, silent } => warn!(
            %peer,
            %addr,
            silent_ms = silent.as_millis() as u64,
            "peer unreachable: no heartbeat within the failure timeout; closing its session"
        ),
        Report::CannotReach {
            addr,
            error,
            attempts,
        } if attempts < WARN_AFTER_ATTEMPTS => {
            info!(%addr, %error, attempts, "cannot reach peer yet; retrying with backoff")
        }
        Report::CannotReach {
            addr,
            error,
            attempts,
        } => warn!(%addr, %error, attempts, "cannot reach peer; retrying with backoff"),
        Report::AuthFailed { addr, attempts } => error!(
            %addr,
            attempts,
            "cannot join {addr}: the peer closed the connection during authentication \
             (wrong cookie, or it requires TLS or rejected our certificate, or not a \
             counter-cluster node); retrying with backoff"
        ),
        Report::Busy { addr, attempts } => warn!(
            %addr,
            attempts,
            "{addr} refused the connection before the handshake: it is busy (too many \
             connections waiting to authenticate) or not a counter-cluster node; retrying \
             with backoff"
        ),
        Report::HandshakeTimeout { addr, attempts } => warn!(
            %addr,
            attempts,
            "peer accepted the connection but did not complete the handshake within \
             {AUTH_GRACE:?}; retrying with backoff"
        ),
        Report::Forgotten { peer } => {
            info!(%peer, "forgetting peer: not reachable for {:?}", super::membership::FORGET_AFTER)
        }
        Report::Learned { peer, addr } => debug!(%peer, %addr, "learned peer"),
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
            subscription: Box::new(SessionEvents {
                mesh: myself.clone(),
                inbound: Arc::clone(&args.inbound),
            }),
        })?;
        // Sessions already up (this mesh may be a restarted one). The server answers
        // after it has registered the subscription, so every session is either in the
        // answer or reported by an event; asked from a task, so nothing here waits.
        let server = args.server.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let sessions = ractor::call_t!(server, NodeServerMessage::GetSessions, 5000)
                .map(|s| s.into_values().collect())
                .unwrap_or_default();
            let _ = me.cast(MeshMessage::Snapshot(sessions));
        });
        let (interval, silence) = detector_timing(args.failure_timeout);
        // A random seed for the jitter: nodes restarted together must not redial in
        // lockstep.
        let seed = fastrand::u64(..);
        let seed_addrs = seeds::literals(&args.seeds, args.listen);
        // The seeds given as addresses (never deferred); the names' come later.
        let given = seed_addrs.keys().cloned().collect();
        let detector = Detector::new(args.facts.name.clone(), given, silence, seed);
        let _ = myself.cast(MeshMessage::Tick);
        Ok(MeshState {
            _ticker: Ticker::every(&myself, interval, || MeshMessage::Tick),
            resolving: resolve_seeds(&myself, &args),
            args,
            detector,
            sessions: HashMap::new(),
            probes: HashMap::new(),
            closed_early: Some(HashSet::new()),
            seed_addrs,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
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
            MeshMessage::Tick => state.step(&myself, Input::Tick),
            MeshMessage::Deadlines => state.step(&myself, Input::Deadlines),
            MeshMessage::Session(event, ses) => state.session_event(&myself, event, *ses),
            MeshMessage::Snapshot(sessions) => {
                let early = state.closed_early.take().unwrap_or_default();
                for ses in sessions {
                    let id = ses.actor.get_id();
                    if !early.contains(&id) && !state.sessions.contains_key(&id) {
                        state.session_event(&myself, SessionEvent::Ready, ses);
                    }
                }
            }
            MeshMessage::DialFinished { addr, result } => {
                // An address a name gave that does not answer: its node may have come
                // back at another address (a container recreated), so resolve again.
                let from_name = state.seed_addrs.get(&addr).is_some_and(|s| s.host != addr);
                if result.is_err() && from_name {
                    if let Some(resolving) = &state.resolving {
                        resolving.asked.notify_one();
                    }
                }
                let result = result.map(|(reached, probe)| {
                    state.probes.insert(reached.to_string(), probe);
                    reached
                });
                state.step(&myself, Input::Dialed { addr, result });
            }
            MeshMessage::Gossip(views) => state.step(&myself, Input::Gossip(views)),
            MeshMessage::Suspected { name, by } => {
                state.step(&myself, Input::Suspected { name, by })
            }
            MeshMessage::Seeds(addrs) => {
                let seeds = seed_list(&addrs);
                state.seed_addrs = addrs;
                state.step(&myself, Input::Seeds(seeds));
            }
            MeshMessage::Leave(departure, reply) => {
                let beat = state.beat();
                tokio::spawn(async move {
                    let pending = remote_agents()
                        .into_iter()
                        .map(|(node, agent)| {
                            let beat = beat.clone();
                            (
                                node,
                                ask(
                                    &agent,
                                    |r| AgentMessage::Leaving(beat, departure, r),
                                    LEAVE_TIMEOUT,
                                ),
                            )
                        })
                        .collect();
                    let answers = gather(pending, Instant::now() + LEAVE_TIMEOUT).await;
                    let told = answers.iter().filter(|(_, a)| a.is_some()).count();
                    info!(peers = told, "told peers this node is leaving");
                    let _ = reply.send(told);
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Hoarder;

    /// The mesh never waits on the `NodeServer` (or anything else) in a handler: with a
    /// server that never answers, ten thousand ticks are still handled at once.
    #[tokio::test]
    async fn a_server_that_never_answers_never_stalls_the_mesh() {
        let (server, server_handle) = Hoarder::<NodeServerMessage>::start(None, None).await;
        let args = MeshArgs {
            server: server.clone(),
            facts: Arc::new(NodeFacts::for_tests("mesh-deaf", 0)),
            seeds: vec!["127.0.0.1:1".into()],
            listen: "127.0.0.1:0".parse().unwrap(),
            failure_timeout: Duration::from_millis(200),
            tls: None,
            inbound: Arc::default(),
        };
        let (mesh, mesh_handle) = Actor::spawn(None, Mesh, args).await.unwrap();
        let started = Instant::now();
        for _ in 0..10_000 {
            mesh.cast(MeshMessage::Tick).unwrap();
        }
        // Answered after every tick before it has been handled.
        let departure = Departure {
            for_good: false,
            counters: 0,
            known: true,
            value: 0,
            operations: 0,
            issued_value: 0,
            issued_operations: 0,
            in_flight_operations: 0,
            store_id: 0,
        };
        let told = ractor::call_t!(mesh, MeshMessage::Leave, 5000, departure).unwrap();
        assert_eq!(told, 0);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "10,000 ticks took {took:?}");
        mesh.stop(None);
        mesh_handle.await.unwrap();
        server.stop(None);
        server_handle.await.unwrap();
    }

    #[test]
    fn the_advertised_address_precedes_the_unused_port() {
        assert_eq!(advertised_in("worker-1:4697:40111"), "worker-1:4697");
        assert_eq!(advertised_in("[::1]:4697:40111"), "[::1]:4697");
        assert_eq!(advertised_in("10.0.0.2:4698:0"), "10.0.0.2:4698");
    }
}
