//! How connections reach the `NodeServer`: this node accepts and dials them itself,
//! plain or over mutual TLS, and hands each finished stream to ractor_cluster, which
//! then runs the cookie handshake and the session.
//!
//! Why not ractor_cluster's own listener and `client_connect_enc`? Its listener runs
//! the TLS handshake inside the accept loop with no deadline, so one client that
//! connects and says nothing stops every other node from joining; and its transitive
//! dialing is plain TCP only. Here:
//!
//! - the accept loop only accepts: each TLS handshake runs in its own task with a
//!   [`HANDSHAKE_TIMEOUT`], so a silent or stalled client holds nothing but its own
//!   socket;
//! - at most [`MAX_HANDSHAKES`] handshakes run at once, [`MAX_HANDSHAKES_PER_IP`] from one
//!   address; connections beyond that are closed at once (a flood costs a socket each,
//!   briefly, and never memory that grows);
//! - a refused connection is logged once per source address per minute, not once per
//!   connection;
//! - dialing ([`dial`]) does the same handshake, checking that the peer's certificate
//!   names the host that was dialed.
//!
//! The `NodeServer` itself is told to listen on an ephemeral loopback port that nothing
//! uses (it always listens somewhere); with TLS on, that port demands TLS too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use crate::log_limit::PerSource;
use crate::tls::{server_name, Tls};

/// Connections that have not authenticated yet, at once, from everyone: each may hold
/// up to one 16 MiB frame in memory until the mesh closes it (2 s after it opened), so
/// this bounds what unauthenticated peers can make a node hold.
pub const MAX_UNAUTHENTICATED: usize = 32;
/// The same, from one address.
pub const MAX_UNAUTHENTICATED_PER_IP: usize = 8;
/// A place for an unauthenticated connection that the mesh never gives back lapses
/// after this: a backstop only (the mesh settles every session within its 2 s
/// authentication deadline; this covers a session ractor_cluster failed to start,
/// which the mesh never hears of).
const UNAUTHENTICATED_TTL: Duration = Duration::from_secs(30);
/// How long a connecting peer has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// TLS handshakes in progress at once, from everyone.
pub const MAX_HANDSHAKES: usize = 256;
/// TLS handshakes in progress at once from one address.
pub const MAX_HANDSHAKES_PER_IP: usize = 32;
/// At most one log line per source address in this time (whatever the reason).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Places for connections: at most `total` taken at once, `per_ip` from one address.
/// A place not given back lapses after `ttl`.
#[derive(Debug)]
struct Places {
    total: usize,
    per_ip: usize,
    ttl: Duration,
    taken: Mutex<Vec<(SocketAddr, Instant)>>,
}

impl Places {
    fn new(total: usize, per_ip: usize, ttl: Duration) -> Self {
        Self {
            total,
            per_ip,
            ttl,
            taken: Mutex::new(Vec::new()),
        }
    }

    /// Takes a place for the connection from `peer`, if the bounds allow.
    fn take(&self, peer: SocketAddr) -> bool {
        let now = Instant::now();
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.retain(|(_, at)| now.saturating_duration_since(*at) < self.ttl);
        let from_ip = taken
            .iter()
            .filter(|(from, _)| from.ip() == peer.ip())
            .count();
        if taken.len() >= self.total || from_ip >= self.per_ip {
            return false;
        }
        taken.push((peer, now));
        true
    }

    /// Gives back the place of the connection from `peer` (that very connection).
    fn give_back(&self, peer: SocketAddr) {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = taken.iter().position(|(from, _)| *from == peer) {
            taken.swap_remove(i);
        }
    }
}

/// A TLS handshake's place, given back when its task ends however it ends.
struct HandshakePlace {
    places: Arc<Places>,
    peer: SocketAddr,
}

impl HandshakePlace {
    fn take(places: &Arc<Places>, peer: SocketAddr) -> Option<Self> {
        places.take(peer).then(|| Self {
            places: Arc::clone(places),
            peer,
        })
    }
}

impl Drop for HandshakePlace {
    fn drop(&mut self) {
        self.places.give_back(self.peer);
    }
}

/// What the accept loop and the mesh share about inbound connections: which ones are
/// waiting to authenticate (the accept loop admits them, the mesh settles each once it
/// authenticates or closes), and the log of refusals, at most one line per source
/// address a minute whoever refuses and why.
#[derive(Debug)]
pub struct Inbound {
    unauthenticated: Places,
    refusals: Mutex<PerSource>,
}

impl Default for Inbound {
    fn default() -> Self {
        Self {
            unauthenticated: Places::new(
                MAX_UNAUTHENTICATED,
                MAX_UNAUTHENTICATED_PER_IP,
                UNAUTHENTICATED_TTL,
            ),
            refusals: Mutex::new(PerSource::new(LOG_EVERY)),
        }
    }
}

impl Inbound {
    /// The connection from `peer_addr` (as ractor_cluster prints the accepted socket's
    /// peer address) authenticated or closed.
    pub fn settled(&self, peer_addr: &str) {
        if let Ok(peer) = peer_addr.parse() {
            self.unauthenticated.give_back(peer);
        }
    }

    /// Logs that the connection from `peer` was refused, unless its source was logged
    /// less than a minute ago.
    pub fn refused(&self, peer: SocketAddr, why: &str) {
        let due = self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .due(peer.ip(), Instant::now());
        if due {
            warn!(
                peer_addr = %peer,
                "refused a connection: {why}; further ones from {} are logged at most once a minute",
                peer.ip()
            );
        }
    }

    /// Admits the connection from `peer` to the authentication handshake, or refuses
    /// it (and says so) when too many are waiting.
    fn admit(&self, peer: SocketAddr) -> bool {
        let admitted = self.unauthenticated.take(peer);
        if !admitted {
            self.refused(peer, "too many connections waiting to authenticate");
        }
        admitted
    }
}

/// Accepts connections on `listener` until the returned task is aborted, and hands
/// each one (after its TLS handshake, with `tls`) to `server`, as far as `inbound`
/// admits it.
pub fn accept_loop(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    tls: Option<Tls>,
    inbound: Arc<Inbound>,
) -> JoinHandle<()> {
    let handshakes = Arc::new(Places::new(
        MAX_HANDSHAKES,
        MAX_HANDSHAKES_PER_IP,
        HANDSHAKE_TIMEOUT * 2,
    ));
    tokio::spawn(async move {
        loop {
            let (stream, peer_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: give the others a moment
                    // to close instead of spinning.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local_addr = stream.local_addr().unwrap_or(peer_addr);
            let Some(tls) = tls.clone() else {
                // Plain TCP: nothing to wait for here; the cookie handshake runs in
                // the session, under the mesh's authentication deadline.
                if inbound.admit(peer_addr) {
                    let opened = NetworkStream::Raw {
                        peer_addr,
                        local_addr,
                        stream,
                    };
                    hand_over(&server, opened, true);
                }
                continue;
            };
            let Some(place) = HandshakePlace::take(&handshakes, peer_addr) else {
                inbound.refused(peer_addr, "too many TLS handshakes in progress");
                continue;
            };
            let server = server.clone();
            let inbound = Arc::clone(&inbound);
            tokio::spawn(async move {
                let _place = place;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => {
                        if inbound.admit(peer_addr) {
                            let opened = NetworkStream::TlsServer {
                                peer_addr,
                                local_addr,
                                stream,
                            };
                            hand_over(&server, opened, true);
                        }
                    }
                    Ok(Err(error)) => {
                        inbound.refused(peer_addr, &format!("TLS handshake failed: {error}"))
                    }
                    Err(_) => inbound.refused(
                        peer_addr,
                        &format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                    ),
                }
            });
        }
    })
}

fn hand_over(server: &ActorRef<NodeServerMessage>, stream: NetworkStream, is_server: bool) {
    let _ = server.cast(NodeServerMessage::ConnectionOpened {
        stream: Box::new(stream),
        is_server,
    });
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The name did not resolve.
    #[error("cannot resolve: {0}")]
    Resolve(String),
    /// Nothing accepted the TCP connection.
    #[error("{0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (the peer does not speak TLS, or its certificate is not
    /// signed by our CA or does not name the host dialed, or it refused ours).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// Resolves `addr`, connects (over mutual TLS with `tls`, checking that the peer's
/// certificate names the host of `addr`) and hands the connection to `server`, which
/// then authenticates it with the cookie. Returns the address connected to. The caller
/// bounds the time this takes.
pub async fn dial(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<&Tls>,
) -> Result<SocketAddr, DialError> {
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| DialError::Resolve(e.to_string()))?
        .next()
        .ok_or_else(|| DialError::Resolve("the name has no address".into()))?;
    let stream = TcpStream::connect(target)
        .await
        .map_err(DialError::Connect)?;
    let _ = stream.set_nodelay(true);
    let local_addr = stream.local_addr().map_err(DialError::Connect)?;
    let opened = match tls {
        None => NetworkStream::Raw {
            peer_addr: target,
            local_addr,
            stream,
        },
        Some(tls) => {
            let name = server_name(addr).map_err(DialError::Tls)?;
            let stream = tls
                .connector()
                .connect(name, stream)
                .await
                .map_err(|e| DialError::Tls(e.to_string()))?;
            NetworkStream::TlsClient {
                peer_addr: target,
                local_addr,
                stream,
            }
        }
    };
    hand_over(server, opened, false);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_source_and_in_total() {
        let places = Places::new(8, 3, Duration::from_secs(30));
        let from = |port: u16| SocketAddr::from(([10, 0, 0, 1], port));
        for port in 0..3 {
            assert!(places.take(from(port)));
        }
        assert!(!places.take(from(99)), "per-source bound");
        places.give_back(from(5555));
        assert!(
            !places.take(from(99)),
            "only that very connection gives back"
        );
        places.give_back(from(1));
        assert!(places.take(from(99)), "giving back frees a place");
        let mut ip = 0u32;
        while places.take(SocketAddr::from((ip.to_be_bytes(), 1))) {
            ip += 1;
        }
        assert_eq!(places.taken.lock().unwrap().len(), 8, "total bound");
    }

    #[test]
    fn a_handshake_place_comes_back_when_dropped() {
        let places = Arc::new(Places::new(1, 1, Duration::from_secs(30)));
        let peer = SocketAddr::from(([10, 0, 0, 1], 1));
        let held = HandshakePlace::take(&places, peer).unwrap();
        assert!(HandshakePlace::take(&places, peer).is_none());
        drop(held);
        assert!(HandshakePlace::take(&places, peer).is_some());
    }

    #[test]
    fn unauthenticated_connections_are_bounded_and_settled() {
        let inbound = Inbound::default();
        let from = |port: u16| SocketAddr::from(([10, 0, 0, 1], port));
        for port in 0..MAX_UNAUTHENTICATED_PER_IP as u16 {
            assert!(inbound.admit(from(port)));
        }
        assert!(!inbound.admit(from(999)), "per-source bound");
        inbound.settled("10.0.0.1:3");
        assert!(inbound.admit(from(999)), "settling frees a place");
    }
}
