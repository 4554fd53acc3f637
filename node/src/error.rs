//! Typed errors at the edges of the node: starting a node, and running a client command.

use std::time::Duration;

use crate::store::StoreError;

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    /// The configuration is unusable (checked before anything starts).
    #[error("{0}")]
    Config(String),
    /// The cluster port could not be opened.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// What the OS or ractor_cluster said.
        reason: String,
    },
    /// A part of the node failed to start.
    #[error("cannot start the {what}: {reason}")]
    Spawn {
        /// Which part.
        what: &'static str,
        /// Why.
        reason: String,
        /// Whether it failed reading the node's store (a disk fault): it may start once
        /// the store can be read again.
        store: bool,
    },
    /// The node's store cannot be used (it says why, and what to do).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The thread that opened or read the store failed.
    #[error("the thread reading the store failed: {0}")]
    StoreThread(#[from] tokio::task::JoinError),
    /// The node failed to start: `reason` is the most useful line of `source` (a
    /// part's own error if one reported it, else the innermost cause).
    #[error("{reason}")]
    Start {
        /// What to print.
        reason: String,
        /// What ractor reported.
        #[source]
        source: ractor::SpawnErr,
    },
    /// A part of the node failed and could not be restarted: the node stopped. Already
    /// logged when it happened.
    #[error("{why}; the node stopped")]
    Failed {
        /// What failed, and why.
        why: String,
    },
}

/// Why a client command failed. Each prints as one line for stderr; `addr` is the
/// member the client dialed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The address did not resolve.
    #[error("cannot resolve {addr}: {reason}")]
    Resolve {
        /// The address.
        addr: String,
        /// What the resolver said.
        reason: String,
    },
    /// Nothing accepted the connection, or the node closed it.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// Connecting (and authenticating) took longer than allowed.
    #[error("no answer from {addr} within {within:?} (is a node listening there?)")]
    ConnectTimeout {
        /// The address.
        addr: String,
        /// The time allowed.
        within: Duration,
    },
    /// The node kept refusing the connection because it was busy (too many connections
    /// waiting to authenticate), until the timeout.
    #[error(
        "{addr} is busy (too many connections waiting to authenticate) and refused the \
         connection until the timeout; try again"
    )]
    Busy {
        /// The address.
        addr: String,
    },
    /// The node closed the connection, again and again, before it said a word.
    #[error(
        "{addr} closed the connection before answering: it may be busy (try again), or it \
         requires TLS (--tls-cert, --tls-key, --tls-ca), or it is not a counter-cluster node"
    )]
    NoAnswer {
        /// The address.
        addr: String,
    },
    /// The node closed the session during the handshake: the cookies differ.
    #[error(
        "authentication with {addr} failed: the cookie does not match (set NODE_COOKIE, \
         --cookie-file or --cookie to the cluster's), or {addr} requires TLS (--tls-cert, \
         --tls-key, --tls-ca) or rejected our certificate, or is not a counter-cluster node"
    )]
    AuthFailed {
        /// The address.
        addr: String,
    },
    /// The TLS handshake failed.
    #[error(
        "TLS with {addr} failed: {reason} (does {addr} use TLS, with a certificate from the \
         same CA that names the host you dialed?)"
    )]
    Tls {
        /// The address.
        addr: String,
        /// What the handshake said.
        reason: String,
    },
    /// The peer authenticated but runs no node agent.
    #[error("{addr} is not a counter-cluster node")]
    NotANode {
        /// The address.
        addr: String,
    },
    /// The node did not answer the command in time.
    #[error("{addr} did not answer within {within:?}")]
    RequestTimeout {
        /// The address.
        addr: String,
        /// The time allowed.
        within: Duration,
    },
    /// The node's HTTP side says it is not ready (`GET /health/ready`).
    #[error("{addr} is not ready: {reason}")]
    NotReady {
        /// The HTTP address.
        addr: String,
        /// The node's reason.
        reason: String,
    },
    /// The node answered with an error.
    #[error(transparent)]
    Rejected(#[from] shared::agent::ClientError),
    /// The client itself failed.
    #[error("{0}")]
    Local(String),
    /// A change was handed to the cluster and no answer came back before the timeout:
    /// it may or may not have been applied. Retrying with the same id is safe.
    #[error(
        "in doubt: the change to {counter} may or may not have been applied ({why}); retry \
         with --id {id}"
    )]
    InDoubt {
        /// The counter.
        counter: String,
        /// The change's id.
        id: String,
        /// What was last seen.
        why: String,
    },
}

/// The exit code of a client whose change is in doubt (see [`CommandError::InDoubt`]).
pub(crate) const EXIT_IN_DOUBT: u8 = 3;

impl CommandError {
    /// The process's exit code for this error: [`EXIT_IN_DOUBT`] for a change in doubt,
    /// else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::InDoubt { .. } => EXIT_IN_DOUBT,
            _ => 1,
        }
    }
}
