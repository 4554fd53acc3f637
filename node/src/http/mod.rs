//! The node's HTTP side (`--http HOST:PORT`): health probes, stats, members and
//! counters over HTTP/1.1 (HTTPS where the node has TLS), for anything that does not
//! speak ractor_cluster. Off unless `--http` is given.
//!
//! | module | owns |
//! | --- | --- |
//! | [`access`] | the token and the rule of what needs it |
//! | [`routes`] | the routes and their handlers (through the node's own agent) |
//! | [`members`] | the `/cluster/members` view, a pure function of the membership table |
//! | [`places`] | places for connections: per address, the oldest idle one evicted for a newcomer |
//! | [`serve`] | the accept loop: bounded connections, deadlines, graceful stop |
//!
//! The HTTP side is not an actor of the supervision tree: it holds no state of its own
//! (every request goes to the agent, which is supervised). It serves from the moment
//! its port is bound, before the store is recovered (`/health/alive` answers, the rest
//! say the node is starting), until the node stops, when it stops first: it closes its
//! port, and the requests being served finish.

pub(crate) mod access;
pub(crate) mod members;
pub(crate) mod places;
pub(crate) mod routes;
pub(crate) mod serve;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::access::{Access, Token};
use self::routes::{router, HttpState, Node};
use crate::error::NodeError;
use crate::facts::NodeFacts;
use crate::net::tls::Tls;

/// The HTTP side's settings.
#[derive(Debug, Clone)]
pub(crate) struct HttpConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The bearer token (required beyond loopback).
    pub token: Option<Token>,
}

/// A bound, not yet serving HTTP side (bound early, so a taken port fails the start
/// before the node's parts start).
pub(crate) struct BoundHttp {
    listener: TcpListener,
    config: HttpConfig,
}

/// A running HTTP side.
pub(crate) struct HttpSide {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    node: Arc<OnceLock<Node>>,
}

/// Binds the HTTP port.
pub(crate) async fn bind(config: &HttpConfig) -> Result<BoundHttp, NodeError> {
    let listener = crate::net::listener::bind(config.listen).map_err(|e| NodeError::Listen {
        addr: format!("{} (--http)", config.listen),
        reason: e.to_string(),
    })?;
    Ok(BoundHttp {
        listener,
        config: config.clone(),
    })
}

impl BoundHttp {
    /// Starts serving for node `name` (which joins others if `joins`), over TLS if the
    /// node has it. Until [`HttpSide::started`], only `/health/alive` answers 200; the
    /// rest say the node is starting (503).
    pub(crate) fn start(self, name: &str, joins: bool, tls: Option<&Tls>) -> HttpSide {
        let (stop, stopping) = watch::channel(false);
        let node = Arc::new(OnceLock::new());
        let state = HttpState {
            name: name.to_string(),
            node: Arc::clone(&node),
            access: Access::new(self.config.token, self.config.listen.ip().is_loopback()),
            joins,
            stopping: stopping.clone(),
        };
        let tls = tls.map(|t| t.https_acceptor().clone());
        let task = tokio::spawn(serve::serve(self.listener, tls, router(state), stopping));
        HttpSide { stop, task, node }
    }
}

impl HttpSide {
    /// The node has recovered its store and started its parts: everything answers.
    pub(crate) fn started(&self, facts: Arc<NodeFacts>) {
        let metrics = crate::metrics::registry(Arc::clone(&facts));
        let _ = self.node.set(Node { facts, metrics });
    }

    /// Stops accepting, lets the requests being served finish (a few seconds at
    /// most), and returns once the HTTP side is gone.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
