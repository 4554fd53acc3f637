//! What an inbound connection may do before it authenticates, enforced on its bytes.
//!
//! Every inbound connection gets a [`Pending`] record when the accept loop admits it,
//! shared by two wrappers around its stream (the accept side reads and checks the whole
//! first frame itself before ractor_cluster sees the connection at all, so silent and
//! garbage connections never cost a session):
//! - [`Watched`], around the TCP socket itself (under TLS, if any): notes whether the
//!   node has answered yet, and closes the connection when it is evicted to make room
//!   for another, writing [`BUSY_MARKER`] first where that breaks nothing (between two of
//!   the node's frames on a plain connection; before the node's first byte under TLS);
//! - [`FrameGate`], around the plaintext read half ractor_cluster reads frames from:
//!   until the session authenticates, a frame may claim at most [`PREAUTH_MAX_FRAME`]
//!   bytes and the whole connection may send at most [`PREAUTH_MAX_BYTES`]
//!   ([`FramePolicy`]). A handshake is a few hundred bytes; a 16 MiB frame before
//!   authentication is never needed, so it is refused on its length prefix alone.
//!
//! Once the session authenticates (the mesh's session event calls
//! [`Inbound::authenticated`](super::transport::Inbound::authenticated)), both wrappers
//! pass bytes straight through: the limits cost one atomic load per read after that.
//! What can arrive between the peer's authentication and that event: the peer sends its
//! own actor list and groups (`Spawn`, `PgJoin`, `Ready`: a few hundred bytes) as soon as
//! it is authenticated, but nothing else, since it learns this node's actors only from
//! frames the session sends after the `NodeServer` has handled the authentication (and
//! so after the event). So the limits never meet a legitimate peer's traffic.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn::{FrameCursor, BUSY_MARKER};
use crate::metrics::ConnectionRefusal;

/// The longest frame accepted before authentication.
pub(crate) const PREAUTH_MAX_FRAME: u64 = 16 * 1024;

/// The most bytes a connection may send before it authenticates.
pub(crate) const PREAUTH_MAX_BYTES: u64 = 64 * 1024;

/// One inbound connection on its way to authentication; see the module documentation.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Unique per connection.
    pub(crate) id: u64,
    /// The peer's socket address.
    pub(crate) peer: SocketAddr,
    /// When it was accepted.
    pub(crate) opened: Instant,
    authenticated: AtomicBool,
    evicted: AtomicBool,
    started: AtomicBool,
    written: AtomicU64,
    refusal: Mutex<Option<(ConnectionRefusal, String)>>,
    waker: Mutex<Option<Waker>>,
}

impl Pending {
    /// A connection from `peer`, accepted now.
    pub(crate) fn new(id: u64, peer: SocketAddr, opened: Instant) -> Self {
        Self {
            id,
            peer,
            opened,
            authenticated: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            started: AtomicBool::new(false),
            written: AtomicU64::new(0),
            refusal: Mutex::new(None),
            waker: Mutex::new(None),
        }
    }

    /// Whether the session authenticated (the limits no longer apply).
    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    /// The session authenticated.
    pub(crate) fn authenticate(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    /// Whether the node has sent anything on this connection (it is answering a
    /// handshake in progress).
    pub(crate) fn is_answered(&self) -> bool {
        self.written.load(Ordering::Relaxed) > 0
    }

    /// The peer has begun a handshake: its whole first frame passed the screening.
    pub(crate) fn start(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Whether a handshake is under way: the peer has begun one, or the node has
    /// answered (under TLS, the node writes before any frame is read).
    pub(crate) fn is_in_progress(&self) -> bool {
        self.started.load(Ordering::Relaxed) || self.is_answered()
    }

    /// Records `n` bytes written (as if the node had answered), for tests.
    #[cfg(test)]
    pub(crate) fn record_written_for_tests(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether it was dropped to make room.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Drops the connection to make room: its next read fails (and wakes it now).
    pub(crate) fn evict(&self) {
        self.evicted.store(true, Ordering::Relaxed);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }

    /// Records why the connection is being refused (the first reason wins).
    pub(crate) fn refuse(&self, kind: ConnectionRefusal, why: String) {
        lock(&self.refusal).get_or_insert((kind, why));
    }

    /// Why it was refused, if it was.
    pub(crate) fn refusal(&self) -> Option<(ConnectionRefusal, String)> {
        lock(&self.refusal).clone()
    }

    fn register(&self, waker: &Waker) {
        let mut slot = lock(&self.waker);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The TCP socket of an inbound connection, watched until it authenticates.
pub(crate) struct Watched {
    stream: TcpStream,
    conn: Arc<Pending>,
    /// Where the node's own frames end, on a plain (not TLS) connection: the marker
    /// may go out between two of them.
    written: Option<FrameCursor>,
}

impl Watched {
    /// Watches `stream` on behalf of `conn`; `plain` if it carries ractor_cluster
    /// frames directly (not TLS records).
    pub(crate) fn new(stream: TcpStream, conn: Arc<Pending>, plain: bool) -> Self {
        Self {
            stream,
            conn,
            written: plain.then(FrameCursor::default),
        }
    }

    /// Whether the marker can go out now without breaking a frame (or a TLS record)
    /// the node has started.
    fn may_mark(&self) -> bool {
        match &self.written {
            Some(cursor) => cursor.at_boundary(),
            None => !self.conn.is_answered(),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.conn.is_authenticated() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        this.conn.register(cx.waker());
        if this.conn.is_evicted() {
            if this.may_mark() {
                // Best effort: a client that reads it reports "busy", not a bad cookie.
                let _ = this.stream.try_write(&BUSY_MARKER);
                this.written = None;
                this.conn.written.fetch_add(1, Ordering::Relaxed);
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "dropped to make room for other connections",
            )));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.is_authenticated() {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        }
        if this.conn.is_evicted() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.conn.written.fetch_add(*n as u64, Ordering::Relaxed);
            if let Some(cursor) = &mut this.written {
                let _ = cursor.feed::<()>(&buf[..*n], |_| Ok(()), |_| Ok(()));
            }
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The frames a connection sent before authenticating, checked as its bytes arrive.
#[derive(Debug, Default)]
pub(crate) struct FramePolicy {
    cursor: FrameCursor,
    total: u64,
}

impl FramePolicy {
    /// Takes in the next bytes of the stream; `Err` says why the connection must go.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.total += bytes.len() as u64;
        if self.total > PREAUTH_MAX_BYTES {
            return Err(format!(
                "it sent more than {PREAUTH_MAX_BYTES} bytes without authenticating"
            ));
        }
        self.cursor.feed(
            bytes,
            |_| Ok(()),
            |len| {
                if len > PREAUTH_MAX_FRAME {
                    Err(format!(
                        "it announced a frame of {len} bytes before authenticating \
                         (at most {PREAUTH_MAX_FRAME})"
                    ))
                } else {
                    Ok(())
                }
            },
        )
    }
}

/// The plaintext read half of an inbound connection, held to the pre-authentication
/// limits. It also holds the connection's admission place (`P`), given back when the
/// session's reader drops it. Bytes the accept side already read (and checked) to
/// screen the connection are served first.
pub(crate) struct FrameGate<R, P> {
    inner: R,
    conn: Arc<Pending>,
    policy: FramePolicy,
    head: Vec<u8>,
    served: usize,
    _place: P,
}

impl<R, P> FrameGate<R, P> {
    /// Gates `inner` for `conn`, holding `place` for as long as the reader lives;
    /// `head` is what was read from the stream already, and `policy` has seen it.
    pub(crate) fn new(
        inner: R,
        conn: Arc<Pending>,
        place: P,
        policy: FramePolicy,
        head: Vec<u8>,
    ) -> Self {
        Self {
            inner,
            conn,
            policy,
            head,
            served: 0,
            _place: place,
        }
    }
}

impl<R: AsyncRead + Unpin, P: Unpin> AsyncRead for FrameGate<R, P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.served < this.head.len() {
            let n = (this.head.len() - this.served).min(buf.remaining());
            buf.put_slice(&this.head[this.served..this.served + n]);
            this.served += n;
            return Poll::Ready(Ok(()));
        }
        if this.conn.is_authenticated() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Err(why) = this.policy.feed(&buf.filled()[before..]) {
                    this.conn
                        .refuse(ConnectionRefusal::PreauthLimit, why.clone());
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
