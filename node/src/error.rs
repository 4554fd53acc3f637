//! Typed errors at the edges of the node: starting a node, and running a client command.

use std::time::Duration;

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
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
    #[error("{0}")]
    Store(String),
    /// The node failed to start (the first part that failed says why).
    #[error("{0}")]
    Start(String),
    /// A part of the node failed and could not be restarted: the node stopped. Already
    /// logged when it happened.
    #[error("{0}; the node stopped")]
    Failed(String),
}

/// Why a client command failed. Each prints as one line for stderr.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The address did not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    /// Nothing accepted the connection.
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    /// Connecting (and authenticating) took longer than allowed.
    #[error("no answer from {0} within {1:?} (is a node listening there?)")]
    ConnectTimeout(String, Duration),
    /// The node kept refusing the connection because it was busy (too many connections
    /// waiting to authenticate), until the timeout.
    #[error("{0} is busy (too many connections waiting to authenticate) and refused the connection until the timeout; try again")]
    Busy(String),
    /// The node closed the connection, again and again, before it said a word.
    #[error("{0} closed the connection before answering: it may be busy (try again), or it requires TLS (--tls-cert, --tls-key, --tls-ca), or it is not a counter-cluster node")]
    NoAnswer(String),
    /// The node closed the session during the handshake: the cookies differ.
    #[error("authentication with {0} failed: the cookie does not match (set NODE_COOKIE, --cookie-file or --cookie to the cluster's), or {0} requires TLS (--tls-cert, --tls-key, --tls-ca) or rejected our certificate, or is not a counter-cluster node")]
    AuthFailed(String),
    /// The TLS handshake failed.
    #[error("TLS with {0} failed: {1} (does {0} use TLS, with a certificate from the same CA that names the host you dialed?)")]
    Tls(String, String),
    /// The peer authenticated but runs no node agent.
    #[error("{0} is not a counter-cluster node")]
    NotANode(String),
    /// The node did not answer the command in time.
    #[error("{0} did not answer within {1:?}")]
    RequestTimeout(String, Duration),
    /// The node answered with an error.
    #[error("{0}")]
    Rejected(shared::agent::ClientError),
    /// The client itself failed.
    #[error("{0}")]
    Local(String),
    /// A change was handed to the cluster and no answer came back before the timeout:
    /// it may or may not have been applied. Retrying with the same id is safe.
    #[error("in doubt: the change to {counter} may or may not have been applied ({why}); retry with --id {id}")]
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
pub const EXIT_IN_DOUBT: u8 = 3;

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
