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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
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
/// An admission the mesh never settles lapses after this: a backstop only (the mesh
/// settles every session within its 2 s authentication deadline; this covers a session
/// ractor_cluster failed to start, which the mesh never hears of).
const ADMISSION_TTL: Duration = Duration::from_secs(30);
/// How long a connecting peer has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// TLS handshakes in progress at once, from everyone.
pub const MAX_HANDSHAKES: usize = 256;
/// TLS handshakes in progress at once from one address.
pub const MAX_HANDSHAKES_PER_IP: usize = 32;
/// At most one log line per source address in this time (whatever the reason).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Handshakes in progress, by source address.
#[derive(Default)]
struct InFlight {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A slot in [`InFlight`], given back when dropped.
struct Slot {
    in_flight: Arc<Mutex<InFlight>>,
    ip: IpAddr,
}

impl Slot {
    fn take(in_flight: &Arc<Mutex<InFlight>>, ip: IpAddr) -> Option<Slot> {
        let mut table = in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = table.by_ip.get(&ip).copied().unwrap_or(0);
        if table.total >= MAX_HANDSHAKES || from_ip >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        table.total += 1;
        *table.by_ip.entry(ip).or_default() += 1;
        Some(Slot {
            in_flight: Arc::clone(in_flight),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        table.total -= 1;
        if let Some(n) = table.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                table.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Connections handed to the `NodeServer` that have not authenticated yet. The accept
/// loop admits them; the mesh settles each once it authenticates or closes.
#[derive(Debug, Default)]
pub struct Admission {
    pending: Mutex<Vec<(SocketAddr, Instant)>>,
}

impl Admission {
    /// Admits the connection from `peer` if the bounds allow.
    fn admit(&self, peer: SocketAddr) -> bool {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|(_, at)| now.saturating_duration_since(*at) < ADMISSION_TTL);
        let from_ip = pending
            .iter()
            .filter(|(from, _)| from.ip() == peer.ip())
            .count();
        if pending.len() >= MAX_UNAUTHENTICATED || from_ip >= MAX_UNAUTHENTICATED_PER_IP {
            return false;
        }
        pending.push((peer, now));
        true
    }

    /// The connection from `peer_addr` (as ractor_cluster prints the accepted socket's
    /// peer address) authenticated or closed.
    pub fn settled(&self, peer_addr: &str) {
        let Ok(peer) = peer_addr.parse::<SocketAddr>() else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pending.iter().position(|(from, _)| *from == peer) {
            pending.swap_remove(i);
        }
    }
}

/// Logs a refused connection at most once per source per [`LOG_EVERY`].
#[derive(Clone)]
struct RefusalLog(Arc<Mutex<PerSource>>);

impl RefusalLog {
    fn refused(&self, peer: SocketAddr, why: &str) {
        let due = self
            .0
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
}

/// Accepts connections on `listener` until the returned task is aborted, and hands
/// each one (after its TLS handshake, with `tls`) to `server`, as far as `admission`
/// allows.
pub fn accept_loop(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    tls: Option<Tls>,
    admission: Arc<Admission>,
) -> JoinHandle<()> {
    let in_flight = Arc::new(Mutex::new(InFlight::default()));
    let log = RefusalLog(Arc::new(Mutex::new(PerSource::new(LOG_EVERY))));
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
                if !admission.admit(peer_addr) {
                    log.refused(peer_addr, "too many connections waiting to authenticate");
                    continue;
                }
                let opened = NetworkStream::Raw {
                    peer_addr,
                    local_addr,
                    stream,
                };
                hand_over(&server, opened, true);
                continue;
            };
            let Some(slot) = Slot::take(&in_flight, peer_addr.ip()) else {
                log.refused(peer_addr, "too many TLS handshakes in progress");
                continue;
            };
            let server = server.clone();
            let log = log.clone();
            let admission = Arc::clone(&admission);
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
                    Ok(Ok(_)) if !admission.admit(peer_addr) => {
                        log.refused(peer_addr, "too many connections waiting to authenticate");
                    }
                    Ok(Ok(stream)) => {
                        let opened = NetworkStream::TlsServer {
                            peer_addr,
                            local_addr,
                            stream,
                        };
                        hand_over(&server, opened, true);
                    }
                    Ok(Err(error)) => {
                        log.refused(peer_addr, &format!("TLS handshake failed: {error}"))
                    }
                    Err(_) => log.refused(
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
    fn handshake_slots_are_bounded_per_source_and_in_total() {
        let in_flight = Arc::new(Mutex::new(InFlight::default()));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut held: Vec<Slot> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|_| Slot::take(&in_flight, a).unwrap())
            .collect();
        assert!(Slot::take(&in_flight, a).is_none(), "per-source bound");
        held.pop();
        assert!(
            Slot::take(&in_flight, a).is_some(),
            "a slot comes back when dropped"
        );
        let mut others = Vec::new();
        let mut ip = 0u32;
        while let Some(slot) = Slot::take(&in_flight, IpAddr::from(ip.to_be_bytes())) {
            others.push(slot);
            ip += 1;
        }
        let table = in_flight.lock().unwrap();
        assert_eq!(table.total, MAX_HANDSHAKES, "total bound");
    }

    #[test]
    fn admissions_are_bounded_and_settled() {
        let admission = Admission::default();
        let from = |port: u16| SocketAddr::from(([10, 0, 0, 1], port));
        for port in 0..MAX_UNAUTHENTICATED_PER_IP as u16 {
            assert!(admission.admit(from(port)));
        }
        assert!(!admission.admit(from(999)), "per-source bound");
        admission.settled("10.0.0.1:5555");
        assert!(
            !admission.admit(from(999)),
            "only that very connection settles"
        );
        admission.settled("10.0.0.1:3");
        assert!(admission.admit(from(999)), "settling frees a place");
        let mut ip = 0u32;
        while admission.admit(SocketAddr::from((ip.to_be_bytes(), 1))) {
            ip += 1;
        }
        assert_eq!(
            admission.pending.lock().unwrap().len(),
            MAX_UNAUTHENTICATED,
            "total bound"
        );
    }
}
