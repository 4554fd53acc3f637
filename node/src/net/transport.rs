//! How connections reach the `NodeServer`: this node accepts and dials them itself,
//! plain or over mutual TLS, and hands each one to ractor_cluster (as an external
//! stream), which then runs the cookie handshake and the session.
//!
//! Why not ractor_cluster's own listener and `client_connect_enc`? Its listener runs
//! the TLS handshake inside the accept loop with no deadline, so one client that
//! connects and says nothing stops every other node from joining; its transitive
//! dialing is plain TCP only; and it lets an unauthenticated peer send 16 MiB frames.
//! Here:
//!
//! - the [`Acceptor`]'s loop only accepts; each connection is then screened in its own
//!   task (the TLS handshake within [`HANDSHAKE_TIMEOUT`], then the whole first frame
//!   within the authentication deadline) before ractor_cluster sees it: a silent or
//!   garbage connection never costs a session;
//! - every connection needs a place among those waiting to authenticate
//!   ([`admission`](super::admission): [`MAX_UNAUTHENTICATED`] in all,
//!   [`MAX_UNAUTHENTICATED_PER_IP`] per address), and may make the node hold at most one
//!   frame of 16 KiB until it authenticates ([`conn`](super::conn)); when the places are
//!   full, a silent, stuck or slow one is dropped to make room;
//! - a refused connection is logged once per source address per minute, whatever the
//!   reason, not once per connection;
//! - dialing ([`dial`]) does the same handshake, checking that the peer's certificate
//!   names the host that was dialed, and tells a busy peer from a wrong cookie.
//!
//! The `NodeServer` itself is told to listen on an ephemeral loopback port that nothing
//! uses (it always listens somewhere); with TLS on, that port demands TLS too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::{NodeServerMessage, RactorMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::warn;

use super::admission::{Admission, Admit, Limits};
use super::conn::{Split, BUSY_MARKER};
use super::log_limit::PerSource;
use super::metered::Metered;
use super::probe::{DialProbe, Dialed, NoteAnswer};
use super::screen::{FrameGate, FramePolicy, Pending, Watched};
use super::tls::{server_name, Tls};
use crate::cluster::detector::AUTH_GRACE;
use crate::metrics::{ConnectionRefusal, NodeMetrics, Traffic};
use crate::runtime::busy_poll::Noted;

/// Connections waiting to authenticate (TLS handshake included), from everyone.
pub(crate) const MAX_UNAUTHENTICATED: usize = 256;
/// The same, from one address.
pub(crate) const MAX_UNAUTHENTICATED_PER_IP: usize = 64;
/// A handshake under way keeps its place this long after its connection was accepted,
/// even when the places are full (a handshake takes a round trip or two).
pub(crate) const HANDSHAKE_GRACE: Duration = Duration::from_millis(250);
/// How long a connecting peer has to complete the TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Each session's read buffer. A frame's length and a small payload come out of it
/// with no system call of their own; a large payload is copied through it, 8 KiB at a
/// time (ractor_cluster reads payloads in 8 KiB pieces).
const READ_BUFFER: usize = 16 * 1024;
/// At most one log line per source address in this time (whatever the reason).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Inbound connections that have not authenticated yet, and the log of refusals: what
/// the accept loop and the mesh's session events share.
#[derive(Debug)]
pub(crate) struct Inbound {
    places: Mutex<Admission>,
    refusals: Mutex<PerSource>,
    next_id: AtomicU64,
    /// Where refusals are counted, by reason.
    metrics: Arc<NodeMetrics>,
}

impl Default for Inbound {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Inbound {
    /// No connection waiting yet; refusals counted in `metrics`.
    pub(crate) fn new(metrics: Arc<NodeMetrics>) -> Self {
        Self {
            metrics,
            places: Mutex::new(Admission::new(Limits {
                total: MAX_UNAUTHENTICATED,
                per_ip: MAX_UNAUTHENTICATED_PER_IP,
                deadline: AUTH_GRACE,
                grace: HANDSHAKE_GRACE,
            })),
            refusals: Mutex::new(PerSource::new(LOG_EVERY)),
            next_id: AtomicU64::new(0),
        }
    }
}

/// A connection's place among those waiting to authenticate; given back when dropped.
pub(crate) struct Place {
    inbound: Arc<Inbound>,
    conn: Arc<Pending>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.inbound.release(&self.conn);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inbound {
    /// A place for the connection from `peer`, made by dropping a silent or stuck one if
    /// need be; `None` if no place can be made.
    fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Place> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let conn = Arc::new(Pending::new(id, peer, now));
        let outcome = lock(&self.places).admit(Arc::clone(&conn), now);
        match outcome {
            Admit::Admitted => {}
            Admit::Evicting(victim) => {
                victim.evict();
                self.refused(
                    victim.peer,
                    ConnectionRefusal::Evicted,
                    "too many connections waiting to authenticate; dropped one to make room",
                );
            }
            Admit::Refused => {
                self.refused(
                    peer,
                    ConnectionRefusal::Full,
                    "too many handshakes in progress",
                );
                return None;
            }
        }
        Some(Place {
            inbound: Arc::clone(self),
            conn,
        })
    }

    /// The session from `peer_addr` (as ractor_cluster reports it) authenticated: its
    /// limits are lifted and its place is free.
    pub(crate) fn authenticated(&self, peer_addr: &str) {
        let Ok(addr) = peer_addr.parse() else {
            return;
        };
        let mut places = lock(&self.places);
        if let Some(conn) = places.find(addr) {
            conn.authenticate();
            places.remove(conn.id);
        }
    }

    /// A connection's reader is gone: if it still held a place, it never authenticated,
    /// and that is logged (with the reason it was refused, if one was given).
    fn release(&self, conn: &Pending) {
        let held = lock(&self.places).remove(conn.id);
        if !held || conn.is_authenticated() {
            return;
        }
        let (kind, why) = conn.refusal().unwrap_or_else(|| {
            (
                ConnectionRefusal::Auth,
                "it failed to authenticate (wrong cookie, silent, or not a cluster node)".into(),
            )
        });
        self.refused(conn.peer, kind, &why);
    }

    /// Logs that the connection from `peer` was refused, unless its source was logged
    /// less than a minute ago.
    pub(crate) fn refused(&self, peer: SocketAddr, kind: ConnectionRefusal, why: &str) {
        self.metrics.refused(kind);
        let due = lock(&self.refusals).due(peer.ip(), Instant::now());
        if due {
            warn!(
                peer_addr = %peer,
                "refused a connection: {why}; further ones from {} are logged at most once a minute",
                peer.ip()
            );
        }
    }
}

/// An inbound connection's admission, and what it sent before it was handed over.
struct Screened {
    conn: Arc<Pending>,
    place: Place,
    policy: FramePolicy,
    head: Vec<u8>,
}

/// Which side of a connection this node is: the accepting side (with what the screening
/// found), or the dialing side (with the probe that watches the peer's answer).
enum Side {
    Accepted(Screened),
    Dialed(Arc<DialProbe>),
}

/// Hands a connected stream to `server` for its cookie handshake and session.
fn hand_over<S>(
    server: &ActorRef<NodeServerMessage>,
    stream: S,
    side: Side,
    peer: SocketAddr,
    local: SocketAddr,
    traffic: Option<&Traffic>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let is_server = matches!(side, Side::Accepted(_));
    let reader: ractor_cluster::BoxRead = match side {
        Side::Accepted(s) => Box::new(FrameGate::new(reader, s.conn, s.place, s.policy, s.head)),
        Side::Dialed(probe) => Box::new(NoteAnswer::new(reader, probe)),
    };
    let (reader, writer): (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) = match traffic {
        Some(traffic) => {
            // ractor_cluster names a session's peer by this address (as a string).
            let link = traffic.open(&peer.to_string());
            (
                Box::new(Metered::new(reader, Arc::clone(&link))),
                Box::new(Metered::new(writer, link)),
            )
        }
        None => (reader, Box::new(writer)),
    };
    // ractor_cluster reads each frame's 8-byte length and then its payload, each a read
    // of its own: through a buffer, one system call brings every frame that has arrived.
    // Reads that bring bytes start the busy poll (see `crate::runtime`).
    let reader: ractor_cluster::BoxRead =
        Box::new(Noted(BufReader::with_capacity(READ_BUFFER, reader)));
    let stream = Split {
        reader,
        writer,
        peer,
        local,
    };
    let _ = server.cast(NodeServerMessage::ConnectionOpenedExternal {
        stream: Box::new(stream),
        is_server,
    });
}

/// One accepted connection: admitted (or refused with the busy marker), then screened
/// in a task of its own (its TLS handshake, if TLS is on, and its whole first frame)
/// and only then handed to the `NodeServer`.
fn accepted(
    stream: TcpStream,
    peer: SocketAddr,
    server: &ActorRef<NodeServerMessage>,
    tls: Option<&Tls>,
    inbound: &Arc<Inbound>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let Some(place) = inbound.admit(peer) else {
        let _ = stream.try_write(&BUSY_MARKER);
        return;
    };
    let watched = Watched::new(stream, Arc::clone(&place.conn), tls.is_none());
    let server = server.clone();
    let tls = tls.cloned();
    tokio::spawn(async move {
        let conn = Arc::clone(&place.conn);
        let deadline = conn.opened + AUTH_GRACE;
        match tls {
            None => screen(&server, watched, place, deadline, peer, local).await,
            Some(tls) => {
                let accepting = tls.acceptor().accept(watched);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, accepting).await {
                    Ok(Ok(stream)) => {
                        // Whether it may be a member is decided once it names itself.
                        tls.presented(&peer.to_string(), stream.get_ref().1.peer_certificates());
                        screen(&server, stream, place, deadline, peer, local).await
                    }
                    Ok(Err(error)) => conn.refuse(
                        ConnectionRefusal::Tls,
                        format!("TLS handshake failed: {error}"),
                    ),
                    Err(_) => conn.refuse(
                        ConnectionRefusal::Tls,
                        format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                    ),
                }
            }
        }
    });
}

/// Waits (until `deadline`) for the whole first frame: a connection that says
/// nothing, sends garbage or announces a frame no handshake needs is closed here, and
/// never costs the `NodeServer` a session. The rest goes to the `NodeServer`.
async fn screen<S>(
    server: &ActorRef<NodeServerMessage>,
    mut stream: S,
    place: Place,
    deadline: Instant,
    peer: SocketAddr,
    local: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::clone(&place.conn);
    let Some((policy, head)) = first_frame(&mut stream, &conn, deadline).await else {
        return;
    };
    let screened = Screened {
        conn,
        place,
        policy,
        head,
    };
    let metrics = Arc::clone(&screened.place.inbound.metrics);
    hand_over(
        server,
        stream,
        Side::Accepted(screened),
        peer,
        local,
        Some(&metrics.traffic),
    );
}

/// Reads the connection's first frame whole (until `deadline`), held to the
/// pre-authentication limits: its bytes, and the policy that has seen them. Once it is
/// in, a handshake is under way ([`Pending::start`]). `None` (with the reason recorded
/// on `conn`) for a connection that says nothing, closes, sends garbage or announces a
/// frame no handshake needs.
async fn first_frame<S>(
    stream: &mut S,
    conn: &Pending,
    deadline: Instant,
) -> Option<(FramePolicy, Vec<u8>)>
where
    S: AsyncRead + Unpin,
{
    let mut policy = FramePolicy::default();
    let mut frame = vec![0u8; 8];
    let read = async {
        stream.read_exact(&mut frame[..8]).await?;
        if let Err(why) = policy.feed(&frame[..8]) {
            return Ok(Err(why));
        }
        let len = u64::from_be_bytes(frame[..8].try_into().unwrap_or_default());
        // At most PREAUTH_MAX_FRAME: the policy has just checked it.
        frame.resize(8 + len as usize, 0);
        stream.read_exact(&mut frame[8..]).await?;
        Ok::<_, std::io::Error>(policy.feed(&frame[8..]))
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(Ok(()))) => {
            conn.start();
            Some((policy, frame))
        }
        Ok(Ok(Err(why))) => {
            conn.refuse(ConnectionRefusal::PreauthLimit, why);
            None
        }
        Ok(Err(error)) => {
            if !conn.is_evicted() {
                conn.refuse(
                    ConnectionRefusal::Silent,
                    format!("it closed the connection without a handshake ({error})"),
                );
            }
            None
        }
        Err(_) => {
            conn.refuse(
                ConnectionRefusal::Silent,
                format!("it sent no complete first frame within {AUTH_GRACE:?}"),
            );
            None
        }
    }
}

/// Accepts connections until it is stopped, and hands each one to the `NodeServer`.
/// Its accept loop runs in a task (the actor never waits on the network); if the loop
/// dies, the actor fails, and the node's root decides what happens.
#[derive(Debug, Default)]
pub(crate) struct Acceptor;

/// What the acceptor works with.
#[derive(Clone)]
pub(crate) struct AcceptorArgs {
    /// The cluster port, bound once for the node's lifetime (a restarted acceptor
    /// accepts on the same socket).
    pub(crate) listener: Arc<TcpListener>,
    /// Where accepted connections go.
    pub(crate) server: ActorRef<NodeServerMessage>,
    /// Mutual TLS, if on.
    pub(crate) tls: Option<Tls>,
    /// The places of connections waiting to authenticate.
    pub(crate) inbound: Arc<Inbound>,
}

/// The acceptor's state: its loop, aborted when the state is dropped (however the
/// actor ends, even killed).
pub(crate) struct AcceptorState(AbortHandle);

impl Drop for AcceptorState {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Messages to the acceptor (local only).
#[derive(RactorMessage)]
pub(crate) enum AcceptorMessage {
    /// The accept loop ended: the acceptor fails with this reason.
    LoopEnded(String),
}

impl Actor for Acceptor {
    type Msg = AcceptorMessage;
    type State = AcceptorState;
    type Arguments = AcceptorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AcceptorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let task = tokio::spawn(async move {
            loop {
                match args.listener.accept().await {
                    Ok((stream, peer)) => {
                        accepted(stream, peer, &args.server, args.tls.as_ref(), &args.inbound);
                        // Under a flood, let the connections just admitted be screened
                        // before the next newcomer looks for a place: otherwise a burst
                        // of accepts on the node's one worker thread can drop a
                        // legitimate client whose first frame is waiting to be read.
                        tokio::task::yield_now().await;
                    }
                    Err(error) => {
                        // Out of file descriptors, most likely: give the others a moment
                        // to close instead of spinning.
                        warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        let abort = task.abort_handle();
        tokio::spawn(async move {
            let why = match task.await {
                Err(error) if error.is_cancelled() => return,
                Err(error) => format!("the accept loop panicked: {error}"),
                Ok(()) => "the accept loop ended".to_string(),
            };
            let _ = myself.cast(AcceptorMessage::LoopEnded(why));
        });
        Ok(AcceptorState(abort))
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AcceptorMessage::LoopEnded(why) => Err(why.into()),
        }
    }
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
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
    /// The peer refused the connection because it was busy.
    #[error("the peer is busy (too many connections waiting to authenticate)")]
    Busy,
    /// The dial took too long.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Resolves `addr`, connects (over mutual TLS with `tls`, checking that the peer's
/// certificate names `host`, or else the host of `addr`) and hands the connection to
/// `server`, which then authenticates it with the cookie. Returns the address
/// connected to, and the probe that says whether the peer turned the connection away
/// as busy. The caller bounds the time this takes.
pub(crate) async fn dial(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    host: Option<&str>,
    tls: Option<&Tls>,
    traffic: Option<&Traffic>,
) -> Result<(SocketAddr, Arc<DialProbe>), DialError> {
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| DialError::Resolve(e.to_string()))?
        .next()
        .ok_or_else(|| DialError::Resolve("the name has no address".into()))?;
    let stream = TcpStream::connect(target)
        .await
        .map_err(DialError::Connect)?;
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().map_err(DialError::Connect)?;
    let probe = Arc::new(DialProbe::default());
    let dialed = Dialed::new(stream, Arc::clone(&probe), tls.is_none());
    match tls {
        None => hand_over(
            server,
            dialed,
            Side::Dialed(Arc::clone(&probe)),
            target,
            local,
            traffic,
        ),
        Some(tls) => {
            let name = server_name(host.unwrap_or(addr)).map_err(DialError::Tls)?;
            let stream = tls.connector().connect(name, dialed).await.map_err(|e| {
                if probe.refused_busy() {
                    DialError::Busy
                } else {
                    DialError::Tls(e.to_string())
                }
            })?;
            tls.presented(&target.to_string(), stream.get_ref().1.peer_certificates());
            hand_over(
                server,
                stream,
                Side::Dialed(Arc::clone(&probe)),
                target,
                local,
                traffic,
            );
        }
    }
    Ok((target, probe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::screen::{PREAUTH_MAX_BYTES, PREAUTH_MAX_FRAME};
    use tokio::io::AsyncWriteExt;

    fn pending() -> Pending {
        Pending::new(0, SocketAddr::from(([127, 0, 0, 1], 1)), Instant::now())
    }

    /// A handshake is under way only once its whole first frame is in; silence, half
    /// a frame, or a length no handshake needs leave it a connection that may be
    /// dropped for another.
    #[tokio::test]
    async fn a_handshake_is_under_way_once_its_first_frame_is_in() {
        // Short: half a frame is waited for until this deadline.
        let deadline = || Instant::now() + Duration::from_millis(100);
        let mut frame = 5u64.to_be_bytes().to_vec();
        frame.extend_from_slice(b"hello");

        let (mut near, mut far) = tokio::io::duplex(64);
        near.write_all(&frame).await.unwrap();
        let conn = pending();
        let (_, head) = first_frame(&mut far, &conn, deadline()).await.unwrap();
        assert_eq!(head, frame);
        assert!(conn.is_in_progress());

        let (mut near, mut far) = tokio::io::duplex(64);
        near.write_all(&frame[..10]).await.unwrap();
        let conn = pending();
        assert!(first_frame(&mut far, &conn, deadline()).await.is_none());
        assert!(!conn.is_in_progress());
        assert_eq!(conn.refusal().map(|r| r.0), Some(ConnectionRefusal::Silent));

        let (mut near, mut far) = tokio::io::duplex(64);
        near.write_all(&u64::MAX.to_be_bytes()).await.unwrap();
        let conn = pending();
        assert!(first_frame(&mut far, &conn, deadline()).await.is_none());
        assert!(!conn.is_in_progress());
        assert_eq!(
            conn.refusal().map(|r| r.0),
            Some(ConnectionRefusal::PreauthLimit)
        );

        let (near, mut far) = tokio::io::duplex(64);
        drop(near);
        let conn = pending();
        assert!(first_frame(&mut far, &conn, deadline()).await.is_none());
        assert!(!conn.is_in_progress());
        assert_eq!(conn.refusal().map(|r| r.0), Some(ConnectionRefusal::Silent));
    }

    /// The bytes of the first frame count against the pre-authentication budget once:
    /// the policy returned has seen them, so the rest of the connection may send only
    /// what is left of it.
    #[tokio::test]
    async fn the_first_frame_counts_against_the_budget() {
        let len = PREAUTH_MAX_FRAME;
        let mut frame = len.to_be_bytes().to_vec();
        frame.resize(8 + len as usize, 1);
        let (mut near, mut far) = tokio::io::duplex(1 << 16);
        near.write_all(&frame).await.unwrap();
        let conn = pending();
        let deadline = Instant::now() + Duration::from_secs(2);
        let (mut policy, head) = first_frame(&mut far, &conn, deadline).await.unwrap();
        assert_eq!(head.len(), frame.len());
        let left = PREAUTH_MAX_BYTES - frame.len() as u64;
        let mut rest = Vec::new();
        while (rest.len() as u64) < left {
            rest.extend_from_slice(&frame);
        }
        rest.truncate(left as usize);
        // Whole frames of the same size, up to the budget: still allowed.
        policy
            .feed(&rest[..rest.len() - rest.len() % frame.len()])
            .unwrap();
        let mut fresh = FramePolicy::default();
        fresh
            .feed(&rest[..rest.len() - rest.len() % frame.len()])
            .unwrap();
        // One more frame goes over the budget only for the policy that saw the first.
        assert!(policy.feed(&frame).is_err());
        assert!(fresh.feed(&frame).is_ok());
    }
}
