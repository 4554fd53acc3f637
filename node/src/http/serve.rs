//! The HTTP side's accept loop: plain or TLS, a bounded number of connections, a
//! deadline on each request's headers, and a graceful stop.
//!
//! Each accepted connection takes one of [`MAX_CONNECTIONS`] places, at most
//! [`MAX_PER_ADDRESS`] from one address ([`places`](super::places): a newcomer takes the
//! place of the oldest connection that is not serving a request, and is closed at once
//! only if every candidate is), and runs in its own task: the TLS handshake (within
//! [`HANDSHAKE_TIMEOUT`]), then HTTP/1.1 with keep-alive, where a request's headers must
//! arrive within [`HEADER_TIMEOUT`], its answers must be read within [`WRITE_TIMEOUT`]
//! (a client that pipelines requests and never reads is cut off), and at most 64 KiB of
//! its requests are buffered. On stop the loop closes the port, asks every connection to
//! finish the request it is serving, and waits at most [`DRAIN_TIMEOUT`] for them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::places::{Connection, Limits, Places, Serving};

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Connections from one address at once.
pub(crate) const MAX_PER_ADDRESS: usize = 128;
/// How long a client may take to send a request's headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake under way keeps its place against newcomers (a handshake
/// takes a round trip or two).
const HANDSHAKE_GRACE: Duration = Duration::from_millis(250);
/// How long a stop waits for the requests being served.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may wait for the client to read it.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection buffers of a client's requests.
const MAX_BUFFER: usize = 64 * 1024;

/// Serves `app` on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let places = Places::new(Limits {
        total: MAX_CONNECTIONS,
        per_ip: MAX_PER_ADDRESS,
        grace: HANDSHAKE_GRACE,
    });
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was
                // accepted: let the moment pass.
                debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Some(place) = places.admit(peer.ip(), tokio::time::Instant::now()) else {
            debug!(%peer, "HTTP connections at their bound, each serving: closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, tls, stop) = (app.clone(), tls.clone(), stop.clone());
        connections.spawn(async move {
            let conn = Arc::clone(&place.conn);
            let served = async {
                match tls {
                    None => connection(stream, app, stop, &conn).await,
                    Some(tls) => {
                        let (read, write) = stream.into_split();
                        let read = Heard {
                            inner: read,
                            conn: Arc::clone(&conn),
                        };
                        let stream = tokio::io::join(read, write);
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => connection(stream, app, stop, &conn).await,
                            Ok(Err(e)) => debug!(error = %e, "HTTPS handshake failed"),
                            Err(_) => debug!("HTTPS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = place.conn.evicted() => debug!(%peer, "HTTP connection evicted for a newcomer"),
            }
            drop(place);
        });
        // The connection just admitted gets to run (to read its first bytes) before
        // the next newcomer looks for a place.
        tokio::task::yield_now().await;
        while connections.try_join_next().is_some() {}
    }
    // No new connections from here on: they are refused, not left waiting.
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            left = connections.len(),
            "HTTP connections still open at the stop"
        );
    }
    connections.abort_all();
}

/// One connection: HTTP/1.1 until the client closes it, a header deadline passes, or
/// the stop (which lets the request being served finish). While a request is served,
/// `conn` says so (its place cannot be taken).
async fn connection<S>(
    stream: S,
    app: Router,
    mut stop: watch::Receiver<bool>,
    conn: &Arc<Connection>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tower = TowerToHyperService::new(app);
    let conn = Arc::clone(conn);
    let service = hyper::service::service_fn(move |request| {
        // The place is held from the request until its answer is written.
        let serving = conn.serving();
        let answer = serving
            .is_some()
            .then(|| hyper::service::Service::call(&tower, request));
        async move {
            let Some(answer) = answer else {
                return Ok(evicted_answer());
            };
            let answer = answer.await?;
            Ok::<_, std::convert::Infallible>(answer.map(|body| Held { body, serving }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUFFER);
    let stream = WriteDeadline {
        inner: stream,
        stalled: None,
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// The answer to a request that arrived on a connection just evicted for a newcomer:
/// not served (nothing of it happened), to be sent again.
fn evicted_answer() -> hyper::Response<Held> {
    let mut answer = hyper::Response::new(Held {
        body: axum::body::Body::from("the node is busy: send the request again"),
        serving: None,
    });
    *answer.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
    let headers = answer.headers_mut();
    headers.insert(
        axum::http::header::CONNECTION,
        "close".parse().expect("a header"),
    );
    headers.insert(
        axum::http::header::RETRY_AFTER,
        "1".parse().expect("a header"),
    );
    answer
}

/// An answer's body, holding its connection's place until it is written whole.
struct Held {
    body: axum::body::Body,
    serving: Option<Serving>,
}

impl http_body::Body for Held {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.serving = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's read half that tells its place once the client's first bytes are in
/// (its TLS handshake is under way).
struct Heard<S> {
    inner: S,
    conn: Arc<Connection>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.heard();
        }
        read
    }
}

/// A connection whose writes must make progress within [`WRITE_TIMEOUT`].
struct WriteDeadline<S> {
    inner: S,
    /// Armed while a write waits for the client to read.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    /// `Pending` from the inner stream: pending still, or an error once the deadline
    /// has passed.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.waiting(cx),
            ready => {
                this.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.waiting(cx),
            ready => {
                this.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
