//! Bytes and frames through one session's link, counted for the metrics: the plaintext
//! reader and writer ractor_cluster is handed are wrapped, and each read or write adds
//! its bytes, and the frames whose length prefix went by, to the link's
//! [`LinkCounters`]. Per call that is two atomic additions and a walk over the frame
//! boundaries in the bytes (a frame's payload is skipped whole).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::FrameCursor;
use crate::metrics::LinkCounters;

/// One direction of a link, counted.
pub(crate) struct Metered<S> {
    inner: S,
    link: Arc<LinkCounters>,
    cursor: FrameCursor,
}

impl<S> Metered<S> {
    /// Counts what goes through `inner` into `link`.
    pub(crate) fn new(inner: S, link: Arc<LinkCounters>) -> Self {
        Self {
            inner,
            link,
            cursor: FrameCursor::default(),
        }
    }

    /// The frames that began in `bytes`.
    fn frames_in(&mut self, bytes: &[u8]) -> u64 {
        let before = self.cursor.frames();
        let _ = self.cursor.feed::<()>(bytes, |_| Ok(()), |_| Ok(()));
        self.cursor.frames() - before
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let bytes = &buf.filled()[before..];
            if !bytes.is_empty() {
                let n = bytes.len() as u64;
                let frames = this.frames_in(bytes);
                this.link.received(n, frames);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            let frames = this.frames_in(&buf[..n]);
            this.link.sent(n as u64, frames);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u64).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn bytes_and_frames_are_counted_in_any_split() {
        let link = Arc::new(LinkCounters::default());
        let (a, b) = tokio::io::duplex(1024);
        let mut writer = Metered::new(a, Arc::clone(&link));
        let mut reader = Metered::new(b, Arc::clone(&link));
        let mut bytes = frame(b"hello");
        bytes.extend(frame(&[7u8; 300]));
        bytes.extend(frame(b""));
        // Written in odd pieces, read in others.
        for piece in bytes.chunks(7) {
            writer.write_all(piece).await.unwrap();
        }
        let mut got = vec![0u8; bytes.len()];
        let mut read = 0;
        while read < got.len() {
            let end = (read + 5).min(got.len());
            read += reader.read(&mut got[read..end]).await.unwrap();
        }
        assert_eq!(got, bytes);
        let n = bytes.len() as u64;
        assert_eq!(link.totals(), [n, 3, n, 3]);
    }
}
