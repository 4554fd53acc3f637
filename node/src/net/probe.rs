//! The dialing side of a connection: a [`Dialed`] wrapper recognises the
//! [`BUSY_MARKER`] where a frame from the peer (or, under TLS, the stream) would begin
//! and records it in a [`DialProbe`], so the dialer can say "busy" rather than "wrong
//! cookie".

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::conn::{FrameCursor, BUSY_MARKER};

/// What a dialer learns about its connection from the peer's first bytes.
#[derive(Debug, Default)]
pub(crate) struct DialProbe {
    busy: AtomicBool,
    answered: AtomicBool,
}

impl DialProbe {
    /// Whether the peer refused the connection because it was busy.
    pub(crate) fn refused_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Whether the peer sent anything at all (a cookie can only be found wrong after
    /// the peer's challenge: a peer that closes before it said a word is busy, or not
    /// what was expected, but the cookie was never tested).
    pub(crate) fn answered(&self) -> bool {
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
