//! The client side of `node stats|incr|decr|get|health`: a short-lived connection to
//! one cluster member, which serves the command.
//!
//! The client runs its own `NodeServer` (ractor_cluster needs one to own a session),
//! listening on an ephemeral loopback port, under a `~client-…` name. It joins no
//! process group, so no node counts it as a member, and nobody dials it back.
//!
//! The client dials the node itself ([`transport::dial`]) and hands the connection to
//! its `NodeServer`, which runs the cookie handshake; a handed-over connection is open
//! before the cookie is checked, so the client waits for the session's `ready` event
//! and reports a session that closes first as an authentication failure, unless the
//! node said it was busy (then the client tries again, with a new connection, until its
//! timeout).
//!
//! Requests go to the agent of the node this client connected to, found among the
//! remote actors of the session itself (never through the process-wide groups): a
//! process may hold several clients at once (a benchmark connects to every node), each
//! with its own `NodeServer`, whose remote actor ids can coincide, so a process group
//! may show one node's actor in place of another's. A client talks to the node it
//! dialed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::NodeSessionMessage;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use shared::agent::{AgentMessage, ClientAnswer, ClientReply, ClientRequest, NodeInfo};
use shared::host::HostMessage;
use shared::protocol::{agent_name, host_name};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::cluster::names::{session_node_name, CLIENT_NAME_PREFIX};
use crate::cluster::rpc::call_until;
use crate::error::CommandError;
use crate::net::tls::Tls;
use crate::net::transport::{self, DialError};

/// Pause before trying again after a node said it was busy (jittered up to twice).
const BUSY_RETRY: Duration = Duration::from_millis(5);

/// A connection to one cluster member, ready to serve commands.
pub struct ClusterClient {
    server: ActorRef<NodeServerMessage>,
    agent: ActorRef<AgentMessage>,
    host: Option<ActorRef<HostMessage>>,
    node: String,
    addr: String,
    /// This client's own name in its session (`~client-…`).
    name: String,
}

enum SessionEvent {
    Authenticated,
    /// Ready: the session, and the name of the node at its other end.
    Ready(ActorRef<NodeSessionMessage>, String),
    Closed,
}

struct Events(mpsc::UnboundedSender<SessionEvent>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, _ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Authenticated);
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let node = ses
            .peer_name
            .as_ref()
            .map(|peer| session_node_name(&peer.name).to_string())
            .unwrap_or_default();
        let _ = self.0.send(SessionEvent::Ready(ses.actor, node));
    }
    fn node_session_disconnected(&self, _ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Closed);
    }
}

/// Why one connection attempt failed: busy (worth another attempt), closed before the
/// node said a word (worth another, a few times), or for good.
enum Attempt {
    Busy,
    NoAnswer,
    Failed(CommandError),
}

/// Attempts that end before the node answered at all, at most (a node too busy to
/// check a name in time closes without a word; so does a TLS node to a plain client).
const NO_ANSWER_ATTEMPTS: u32 = 3;

impl ClusterClient {
    /// Connects to the member at `addr` with `cookie`, within `timeout`. A node that is
    /// busy (too many connections waiting to authenticate) is tried again until then.
    pub async fn connect(
        addr: &str,
        cookie: &str,
        tls: Option<&Tls>,
        timeout: Duration,
    ) -> Result<Self, CommandError> {
        let begun = Instant::now();
        let deadline = begun + timeout;
        let mut rng = fastrand::Rng::new();
        let mut turned_away = false;
        let mut unanswered = 0;
        let mut attempt = 0u32;
        // Each attempt logs its steps at DEBUG, in a span that numbers it.
        let outcome = loop {
            attempt += 1;
            let span = tracing::debug_span!("attempt", n = attempt);
            let last = match Self::attempt(addr, cookie, tls, timeout, deadline)
                .instrument(span.clone())
                .await
            {
                Ok(client) => break Ok(client),
                // Out of time on a later attempt: the node's answer was "busy".
                Err(Attempt::Failed(CommandError::ConnectTimeout { .. })) if turned_away => {
                    break Err(CommandError::Busy {
                        addr: addr.to_string(),
                    });
                }
                Err(Attempt::Failed(error)) => break Err(error),
                Err(Attempt::Busy) => {
                    turned_away = true;
                    CommandError::Busy {
                        addr: addr.to_string(),
                    }
                }
                Err(Attempt::NoAnswer) => {
                    unanswered += 1;
                    let error = CommandError::NoAnswer {
                        addr: addr.to_string(),
                    };
                    if unanswered >= NO_ANSWER_ATTEMPTS {
                        break Err(error);
                    }
                    error
                }
            };
            let pause = BUSY_RETRY.mul_f64(1.0 + rng.f64());
            if Instant::now() + pause >= deadline {
                break Err(last);
            }
            span.in_scope(|| {
                tracing::debug!(outcome = %last, elapsed = ?begun.elapsed(), ?pause, "trying again")
            });
            tokio::time::sleep(pause).await;
        };
        match &outcome {
            Ok(_) => tracing::debug!(elapsed = ?begun.elapsed(), "connected to {addr}"),
            Err(error) => tracing::debug!(elapsed = ?begun.elapsed(), %error, "gave up"),
        }
        outcome
    }

    /// One connection attempt, with its own client node (a fresh name each time: a
    /// node refuses a second session under a name that still has one open or
    /// closing, and `node-bench` opens one connection after another).
    async fn attempt(
        addr: &str,
        cookie: &str,
        tls: Option<&Tls>,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Self, Attempt> {
        let (server, name, mut events) = client_server(cookie).await?;
        let dialed = Dialing {
            addr,
            timeout,
            deadline,
            began: Instant::now(),
        };
        let result = async {
            let probe = dialed.connect(&server, tls).await?;
            let (session, node) = dialed.ready(&mut events, &probe).await?;
            let (agent, host) = dialed.agents(&session, &node)?;
            Ok((agent, host, node))
        }
        .await;
        match result {
            Ok((agent, host, node)) => Ok(ClusterClient {
                server,
                agent,
                host,
                node,
                addr: addr.to_string(),
                name,
            }),
            Err(error) => {
                server.stop(None);
                Err(error)
            }
        }
    }

    /// Sends `request` and waits at most `timeout` for the answer.
    pub async fn request(
        &self,
        request: ClientRequest,
        timeout: Duration,
    ) -> Result<ClientAnswer, CommandError> {
        let until = Instant::now() + timeout;
        let ClientReply(answer) = call_until(
            self.agent.clone(),
            |reply| AgentMessage::Client(request, reply),
            until,
        )
        .await
        .ok_or_else(|| CommandError::RequestTimeout {
            addr: self.addr.clone(),
            within: timeout,
        })?;
        answer.map_err(CommandError::Rejected)
    }

    /// Asks the member to describe itself (what `node health` prints).
    pub async fn info(&self, timeout: Duration) -> Result<NodeInfo, CommandError> {
        call_until(
            self.agent.clone(),
            AgentMessage::GetInfo,
            Instant::now() + timeout,
        )
        .await
        .ok_or_else(|| CommandError::RequestTimeout {
            addr: self.addr.clone(),
            within: timeout,
        })
    }

    /// The name of the node this client is connected to.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This client's own name in its session: a stream of batches it sends must carry
    /// it as its sender (members speak only for themselves, and so do clients).
    pub fn own_name(&self) -> &str {
        &self.name
    }

    /// That node's counter host, as this client's session reaches it.
    pub fn host(&self) -> Option<ActorRef<HostMessage>> {
        self.host.clone()
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self
            .server
            .stop_and_wait(None, Some(Duration::from_secs(1)))
            .await;
    }
}

/// This client's own node server (a client is a node of its own, under a name no
/// member may have), subscribed to its session events.
async fn client_server(
    cookie: &str,
) -> Result<
    (
        ActorRef<NodeServerMessage>,
        String,
        mpsc::UnboundedReceiver<SessionEvent>,
    ),
    Attempt,
> {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{CLIENT_NAME_PREFIX}-{}-{}",
        std::process::id(),
        CONNECTIONS.fetch_add(1, Ordering::Relaxed)
    );
    let server = NodeServer::new(
        0,
        cookie.to_string(),
        name.clone(),
        "127.0.0.1".to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (server, _) = Actor::spawn(None, server, ()).await.map_err(|e| {
        Attempt::Failed(CommandError::Local(format!("cannot start the client: {e}")))
    })?;
    let (tx, events) = mpsc::unbounded_channel();
    let subscribed = server.cast(NodeServerMessage::SubscribeToEvents {
        id: "client".to_string(),
        subscription: Box::new(Events(tx)),
    });
    if subscribed.is_err() {
        server.stop(None);
        return Err(Attempt::Failed(CommandError::Local(
            "client node stopped".into(),
        )));
    }
    Ok((server, name, events))
}

/// One attempt at reaching the member at `addr`, step by step.
struct Dialing<'a> {
    addr: &'a str,
    timeout: Duration,
    deadline: Instant,
    began: Instant,
}

impl Dialing<'_> {
    fn timed_out(&self) -> Attempt {
        Attempt::Failed(CommandError::ConnectTimeout {
            addr: self.addr.to_string(),
            within: self.timeout,
        })
    }

    /// TCP (and TLS) to the member; what its first bytes say is in the probe.
    async fn connect(
        &self,
        server: &ActorRef<NodeServerMessage>,
        tls: Option<&Tls>,
    ) -> Result<std::sync::Arc<crate::net::probe::DialProbe>, Attempt> {
        let addr = self.addr.to_string();
        let (_, probe) = tokio::time::timeout_at(
            self.deadline,
            transport::dial(server, self.addr, None, tls, None),
        )
        .await
        .map_err(|_| self.timed_out())?
        .map_err(|e| match e {
            DialError::Busy => Attempt::Busy,
            DialError::Resolve(reason) => Attempt::Failed(CommandError::Resolve { addr, reason }),
            DialError::Connect(e) => Attempt::Failed(CommandError::Unreachable {
                addr,
                reason: e.to_string(),
            }),
            DialError::Tls(reason) => Attempt::Failed(CommandError::Tls { addr, reason }),
            DialError::TimedOut(_) => self.timed_out(),
        })?;
        tracing::debug!(elapsed = ?self.began.elapsed(), "connected (TCP)");
        Ok(probe)
    }

    /// Waits for the session to authenticate and be ready: the session, and the name
    /// of the node at its other end. A session that closes first says why, as far as
    /// it can be told: busy, silent, the cookie, or closed.
    async fn ready(
        &self,
        events: &mut mpsc::UnboundedReceiver<SessionEvent>,
        probe: &crate::net::probe::DialProbe,
    ) -> Result<(ActorRef<NodeSessionMessage>, String), Attempt> {
        let addr = || self.addr.to_string();
        let mut authenticated = false;
        loop {
            match tokio::time::timeout_at(self.deadline, events.recv()).await {
                Err(_) => return Err(self.timed_out()),
                Ok(None) => {
                    return Err(Attempt::Failed(CommandError::Local(
                        "client node stopped".into(),
                    )))
                }
                Ok(Some(SessionEvent::Authenticated)) => {
                    tracing::debug!(elapsed = ?self.began.elapsed(), "authenticated");
                    authenticated = true
                }
                Ok(Some(SessionEvent::Ready(session, node))) => {
                    tracing::debug!(elapsed = ?self.began.elapsed(), "ready");
                    return Ok((session, node));
                }
                Ok(Some(SessionEvent::Closed)) if probe.refused_busy() => {
                    return Err(Attempt::Busy)
                }
                Ok(Some(SessionEvent::Closed)) if !probe.answered() => {
                    return Err(Attempt::NoAnswer)
                }
                // The node hangs up during the handshake when the cookies differ.
                Ok(Some(SessionEvent::Closed)) if !authenticated => {
                    return Err(Attempt::Failed(CommandError::AuthFailed { addr: addr() }))
                }
                Ok(Some(SessionEvent::Closed)) => {
                    return Err(Attempt::Failed(CommandError::Unreachable {
                        addr: addr(),
                        reason: "the node closed the connection".into(),
                    }))
                }
            }
        }
    }

    /// The node's agent and counter host, as remote actors of the session. The peer
    /// announces its actors before it reports ready, so its agent is one by now; a peer
    /// without one is not a node.
    fn agents(
        &self,
        session: &ActorRef<NodeSessionMessage>,
        node: &str,
    ) -> Result<(ActorRef<AgentMessage>, Option<ActorRef<HostMessage>>), Attempt> {
        let remote = |name: String| {
            session
                .get_cell()
                .get_children()
                .into_iter()
                .find(|cell| cell.get_name().as_deref() == Some(name.as_str()))
        };
        let agent = remote(agent_name(node)).ok_or_else(|| {
            Attempt::Failed(CommandError::NotANode {
                addr: self.addr.to_string(),
            })
        })?;
        let host = remote(host_name(node)).map(Into::into);
        Ok((agent.into(), host))
    }
}
