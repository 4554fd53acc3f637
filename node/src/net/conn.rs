//! What a connection may do before it authenticates, enforced on its bytes.
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
//!
//! A dialed connection gets a [`Dialed`] wrapper instead, which recognises the
//! [`BUSY_MARKER`] where a frame from the peer (or, under TLS, the stream) would begin
//! and records it in a [`DialProbe`], so the dialer can say "busy" rather than "wrong
//! cookie".

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::Refusal;

/// What a node writes on a connection it drops to make room, before anything else:
/// eight bytes that neither a ractor_cluster frame (a big-endian length far beyond any
/// frame limit) nor a TLS record can start with.
pub const BUSY_MARKER: [u8; 8] = *b"\xffBUSY\xff\r\n";

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
    refusal: Mutex<Option<(Refusal, String)>>,
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
    pub(crate) fn refuse(&self, kind: Refusal, why: String) {
        lock(&self.refusal).get_or_insert((kind, why));
    }

    /// Why it was refused, if it was.
    pub(crate) fn refusal(&self) -> Option<(Refusal, String)> {
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

/// Where ractor_cluster frames (an 8-byte big-endian length, then that many bytes)
/// begin in a byte stream, followed as the bytes go by, in any split.
#[derive(Debug, Default, Clone)]
pub(crate) struct FrameCursor {
    header: [u8; 8],
    have: usize,
    payload_left: u64,
    frames: u64,
}

impl FrameCursor {
    /// Takes in the next bytes. `on_start` sees the first byte of every frame as it
    /// arrives, `on_header` every frame's announced length; either may stop the walk
    /// with an error.
    pub(crate) fn feed<E>(
        &mut self,
        mut bytes: &[u8],
        mut on_start: impl FnMut(u8) -> Result<(), E>,
        mut on_header: impl FnMut(u64) -> Result<(), E>,
    ) -> Result<(), E> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= take;
                bytes = &bytes[take as usize..];
                continue;
            }
            if self.have == 0 {
                on_start(bytes[0])?;
            }
            let take = (8 - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == 8 {
                self.have = 0;
                self.frames += 1;
                let len = u64::from_be_bytes(self.header);
                on_header(len)?;
                self.payload_left = len;
            }
        }
        Ok(())
    }

    /// Whether the stream so far ends exactly at the end of a frame.
    pub(crate) fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// Frames whose header has gone by.
    pub(crate) fn frames(&self) -> u64 {
        self.frames
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
                    this.conn.refuse(Refusal::PreauthLimit, why.clone());
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// What a dialer learns about its connection from the peer's first bytes.
#[derive(Debug, Default)]
pub struct DialProbe {
    busy: AtomicBool,
    answered: AtomicBool,
}

impl DialProbe {
    /// Whether the peer refused the connection because it was busy.
    pub fn refused_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Whether the peer sent anything at all (a cookie can only be found wrong after
    /// the peer's challenge: a peer that closes before it said a word is busy, or not
    /// what was expected, but the cookie was never tested).
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }
}

/// The plaintext read half of a dialed connection: notes in the probe that the peer
/// said something.
pub(crate) struct NoteAnswer<R> {
    inner: R,
    probe: Arc<DialProbe>,
}

impl<R> NoteAnswer<R> {
    /// Notes in `probe` when `inner` yields its first byte.
    pub(crate) fn new(inner: R, probe: Arc<DialProbe>) -> Self {
        Self { inner, probe }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for NoteAnswer<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.probe.answered.store(true, Ordering::Relaxed);
        }
        polled
    }
}

/// Frames from the peer during which a dialed connection watches for the marker: the
/// handshake is over long before.
const WATCHED_FRAMES: u64 = 16;

/// The TCP socket of a dialed connection: passes everything through, except that the
/// [`BUSY_MARKER`] where a frame (or, under TLS, the stream) should begin becomes an
/// error, for good, and a mark in the probe. No frame can begin with the marker's
/// first byte (it would announce more than 2^56 bytes), nor can a TLS record.
pub(crate) struct Dialed {
    stream: TcpStream,
    probe: Arc<DialProbe>,
    /// Where the peer's frames begin (plain), or `None` under TLS (only the stream's
    /// first byte is looked at).
    frames: Option<FrameCursor>,
    /// Bytes received so far, up to the end of the watch.
    seen: u64,
}

impl Dialed {
    /// Watches the first bytes of `stream`, reporting to `probe`; `plain` if it will
    /// carry ractor_cluster frames directly (not TLS records).
    pub(crate) fn new(stream: TcpStream, probe: Arc<DialProbe>, plain: bool) -> Self {
        Self {
            stream,
            probe,
            frames: plain.then(FrameCursor::default),
            seen: 0,
        }
    }

    fn busy() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "the peer is busy: too many connections waiting to authenticate",
        )
    }

    /// Looks at bytes just received; `Err` if they hold the marker.
    fn check(&mut self, bytes: &[u8]) -> io::Result<()> {
        let marked = |first: u8| {
            if first == BUSY_MARKER[0] {
                Err(())
            } else {
                Ok(())
            }
        };
        let result = match &mut self.frames {
            Some(cursor) if cursor.frames() < WATCHED_FRAMES => {
                cursor.feed(bytes, marked, |_| Ok(()))
            }
            Some(_) => Ok(()),
            None if self.seen == 0 => bytes.first().map_or(Ok(()), |b| marked(*b)),
            None => Ok(()),
        };
        self.seen += bytes.len() as u64;
        result.map_err(|()| {
            self.probe.busy.store(true, Ordering::Relaxed);
            Self::busy()
        })
    }
}

impl AsyncRead for Dialed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.probe.refused_busy() {
            return Poll::Ready(Err(Self::busy()));
        }
        let watching = match &this.frames {
            Some(cursor) => cursor.frames() < WATCHED_FRAMES,
            None => this.seen == 0,
        };
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if watching {
            if let Poll::Ready(Ok(())) = &polled {
                this.check(&buf.filled()[before..])?;
            }
        }
        polled
    }
}

impl AsyncWrite for Dialed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A connected stream, split, in the form ractor_cluster takes from outside
/// (`ConnectionOpenedExternal`), labelled with the peer's socket address so sessions
/// report it as usual.
pub(crate) struct Split {
    /// The read half.
    pub(crate) reader: ractor_cluster::BoxRead,
    /// The write half.
    pub(crate) writer: ractor_cluster::BoxWrite,
    /// The peer's socket address.
    pub(crate) peer: SocketAddr,
    /// Our end's socket address.
    pub(crate) local: SocketAddr,
}

impl ractor_cluster::ClusterBidiStream for Split {
    fn split(self: Box<Self>) -> (ractor_cluster::BoxRead, ractor_cluster::BoxWrite) {
        (self.reader, self.writer)
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(len: u64) -> Vec<u8> {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.resize(8 + len as usize, 7);
        bytes
    }

    #[test]
    fn handshake_sized_frames_pass_in_any_split() {
        let stream: Vec<u8> = [frame(120), frame(0), frame(300)].concat();
        for chunk in [1, 3, 8, 9, 100, stream.len()] {
            let mut policy = FramePolicy::default();
            for piece in stream.chunks(chunk) {
                policy.feed(piece).unwrap();
            }
        }
    }

    #[test]
    fn the_cursor_finds_every_frame_start_and_boundary() {
        let stream: Vec<u8> = [frame(3), frame(0), frame(9)].concat();
        for chunk in [1, 2, 7, 8, 11, stream.len()] {
            let mut cursor = FrameCursor::default();
            let (mut starts, mut lens) = (0, Vec::new());
            for piece in stream.chunks(chunk) {
                cursor
                    .feed::<()>(
                        piece,
                        |_| {
                            starts += 1;
                            Ok(())
                        },
                        |len| {
                            lens.push(len);
                            Ok(())
                        },
                    )
                    .unwrap();
            }
            assert_eq!((starts, lens, cursor.frames()), (3, vec![3, 0, 9], 3));
            assert!(cursor.at_boundary());
        }
        let mut cursor = FrameCursor::default();
        cursor
            .feed::<()>(&frame(3)[..9], |_| Ok(()), |_| Ok(()))
            .unwrap();
        assert!(!cursor.at_boundary());
    }

    #[test]
    fn a_huge_length_prefix_is_refused_on_its_own() {
        let mut policy = FramePolicy::default();
        policy.feed(&frame(10)).unwrap();
        let err = policy.feed(&(16u64 << 20).to_be_bytes()[..8]).unwrap_err();
        assert!(err.contains("16777216"), "{err}");
        let mut policy = FramePolicy::default();
        assert!(policy.feed(&u64::MAX.to_be_bytes()).is_err());
        let mut policy = FramePolicy::default();
        assert!(policy.feed(&frame(PREAUTH_MAX_FRAME)).is_ok());
        let mut policy = FramePolicy::default();
        assert!(policy.feed(&(PREAUTH_MAX_FRAME + 1).to_be_bytes()).is_err());
    }

    #[test]
    fn many_small_frames_run_out_of_budget() {
        let mut policy = FramePolicy::default();
        let small = frame(1000);
        let mut sent = 0;
        let refused = loop {
            if let Err(e) = policy.feed(&small) {
                break e;
            }
            sent += small.len() as u64;
        };
        assert!(sent <= PREAUTH_MAX_BYTES && sent + small.len() as u64 > PREAUTH_MAX_BYTES);
        assert!(refused.contains("without authenticating"), "{refused}");
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// An evicted connection gets the marker where the node's next frame would begin,
    /// and the dialing side recognises it there: before anything was said, or after a
    /// frame of the handshake.
    #[tokio::test]
    async fn eviction_writes_the_marker_and_the_dialer_reads_busy() {
        for answered in [false, true] {
            let (client, server) = pair().await;
            let conn = Arc::new(Pending::new(1, server.peer_addr().unwrap(), Instant::now()));
            let mut watched = Watched::new(server, Arc::clone(&conn), true);
            let probe = Arc::new(DialProbe::default());
            let mut dialed = Dialed::new(client, Arc::clone(&probe), true);
            if answered {
                watched.write_all(&frame(5)).await.unwrap();
                let mut got = vec![0u8; 13];
                dialed.read_exact(&mut got).await.unwrap();
                assert_eq!(got, frame(5), "a frame passes through whole");
            }
            let reading = tokio::spawn(async move {
                let mut buf = [0u8; 16];
                watched.read(&mut buf).await
            });
            tokio::task::yield_now().await;
            conn.evict();
            let err = reading.await.unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
            let mut buf = [0u8; 16];
            let err = dialed.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
            assert!(probe.refused_busy());
            // And it stays refused.
            assert!(dialed.read(&mut buf).await.is_err());
        }
    }

    /// In the middle of a frame the node cannot write the marker without corrupting
    /// it: the connection just closes.
    #[tokio::test]
    async fn no_marker_in_the_middle_of_a_frame() {
        let (client, server) = pair().await;
        let conn = Arc::new(Pending::new(1, server.peer_addr().unwrap(), Instant::now()));
        let mut watched = Watched::new(server, Arc::clone(&conn), true);
        let probe = Arc::new(DialProbe::default());
        let mut dialed = Dialed::new(client, Arc::clone(&probe), true);
        let half = &frame(20)[..10];
        watched.write_all(half).await.unwrap();
        conn.evict();
        let mut buf = [0u8; 16];
        assert!(watched.read(&mut buf).await.is_err());
        drop(watched);
        let mut got = Vec::new();
        dialed.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, half);
        assert!(!probe.refused_busy());
    }

    /// Ordinary frames, in any split, pass through the dialer whole.
    #[tokio::test]
    async fn ordinary_frames_pass_through_the_dialer_whole() {
        let (client, mut server) = pair().await;
        let probe = Arc::new(DialProbe::default());
        let mut dialed = Dialed::new(client, Arc::clone(&probe), true);
        let sent: Vec<u8> = (0..40u64).flat_map(|n| frame(n % 7)).collect();
        let writer = tokio::spawn({
            let sent = sent.clone();
            async move {
                for piece in sent.chunks(3) {
                    server.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                server.shutdown().await.unwrap();
            }
        });
        let mut got = Vec::new();
        dialed.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, sent);
        assert!(!probe.refused_busy());
    }

    #[tokio::test]
    async fn the_gate_refuses_a_big_frame_before_authentication_only() {
        for authenticated in [false, true] {
            let (mut client, server) = pair().await;
            let conn = Arc::new(Pending::new(1, server.peer_addr().unwrap(), Instant::now()));
            if authenticated {
                conn.authenticate();
            }
            let mut gate = FrameGate::new(
                Watched::new(server, Arc::clone(&conn), true),
                Arc::clone(&conn),
                (),
                FramePolicy::default(),
                Vec::new(),
            );
            client
                .write_all(&frame(PREAUTH_MAX_FRAME + 1))
                .await
                .unwrap();
            let mut buf = vec![0u8; 64];
            let read = gate.read(&mut buf).await;
            if authenticated {
                assert!(read.unwrap() > 0);
                assert!(conn.refusal().is_none());
            } else {
                assert_eq!(read.unwrap_err().kind(), io::ErrorKind::InvalidData);
                let (kind, why) = conn.refusal().unwrap();
                assert_eq!(kind, Refusal::PreauthLimit);
                assert!(why.contains("before authenticating"), "{why}");
            }
        }
    }
}
