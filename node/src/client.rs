//! The client side of `node stats|incr|decr|get`: a short-lived connection to one
//! cluster member, which serves the command.
//!
//! The client runs its own `NodeServer` (ractor_cluster needs one to own a session),
//! listening on an ephemeral loopback port, under a `~client-…` name. It joins no
//! process group, so no node counts it as a member, and nobody dials it back.
//!
//! `ractor_cluster::client_connect` returns as soon as TCP connects, before the cookie
//! is checked, so the client waits for the session's `ready` event and reports a
//! session that closes first as an authentication failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use shared::agent::{AgentMessage, ClientAnswer, ClientReply, ClientRequest, NodeInfo};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::collect::{call_until, remote_agents};
use crate::error::CommandError;
use crate::mesh::CLIENT_NAME_PREFIX;
use crate::tls::Tls;
use crate::transport::{self, DialError};

/// A connection to one cluster member, ready to serve commands.
pub struct ClusterClient {
    server: ActorRef<NodeServerMessage>,
    agent: ActorRef<AgentMessage>,
    addr: String,
}

enum SessionEvent {
    Authenticated,
    Ready,
    Closed,
}

struct Events(mpsc::UnboundedSender<SessionEvent>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, _ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Authenticated);
    }
    fn node_session_ready(&self, _ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Ready);
    }
    fn node_session_disconnected(&self, _ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Closed);
    }
}

impl ClusterClient {
    /// Connects to the member at `addr` with `cookie`, within `timeout`.
    pub async fn connect(
        addr: &str,
        cookie: &str,
        tls: Option<&Tls>,
        timeout: Duration,
    ) -> Result<Self, CommandError> {
        let deadline = Instant::now() + timeout;
        // Unique per connection, not just per process: a node refuses a second session
        // under a name that still has one open or closing (`auth_fail`),
        // and `node bench` opens one connection after another.
        static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{CLIENT_NAME_PREFIX}-{}-{}",
            std::process::id(),
            CONNECTIONS.fetch_add(1, Ordering::Relaxed)
        );
        let server = NodeServer::new(
            0,
            cookie.to_string(),
            name,
            "127.0.0.1".to_string(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| CommandError::Local(format!("cannot start the client: {e}")))?;

        let (tx, mut events) = mpsc::unbounded_channel();
        let subscribed = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "client".to_string(),
            subscription: Box::new(Events(tx)),
        });
        if subscribed.is_err() {
            return Err(CommandError::Local("client node stopped".into()));
        }

        let result = async {
            tokio::time::timeout_at(deadline, transport::dial(&server, addr, tls))
                .await
                .map_err(|_| CommandError::ConnectTimeout(addr.to_string(), timeout))?
                .map_err(|e| match e {
                    DialError::Resolve(e) => CommandError::Resolve(addr.to_string(), e),
                    DialError::Connect(e) => {
                        CommandError::Unreachable(addr.to_string(), e.to_string())
                    }
                    DialError::Tls(e) => CommandError::Tls(addr.to_string(), e),
                })?;
            let mut authenticated = false;
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) => return Err(CommandError::ConnectTimeout(addr.to_string(), timeout)),
                    Ok(None) => return Err(CommandError::Local("client node stopped".into())),
                    Ok(Some(SessionEvent::Authenticated)) => authenticated = true,
                    Ok(Some(SessionEvent::Ready)) => break,
                    // The node hangs up during the handshake when the cookies differ.
                    Ok(Some(SessionEvent::Closed)) if !authenticated => {
                        return Err(CommandError::AuthFailed(addr.to_string()))
                    }
                    Ok(Some(SessionEvent::Closed)) => {
                        return Err(CommandError::Unreachable(
                            addr.to_string(),
                            "the node closed the connection".into(),
                        ))
                    }
                }
            }
            // The peer synchronises its process groups before it reports ready, so its
            // agent is known by now; a peer without one is not a cluster node.
            remote_agents()
                .into_iter()
                .next()
                .map(|(_, agent)| agent)
                .ok_or_else(|| CommandError::NotANode(addr.to_string()))
        }
        .await;

        match result {
            Ok(agent) => Ok(ClusterClient {
                server,
                agent,
                addr: addr.to_string(),
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
        .ok_or_else(|| CommandError::RequestTimeout(self.addr.clone(), timeout))?;
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
        .ok_or_else(|| CommandError::RequestTimeout(self.addr.clone(), timeout))
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self
            .server
            .stop_and_wait(None, Some(Duration::from_secs(1)))
            .await;
    }
}
