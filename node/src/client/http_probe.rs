//! A `GET` of a node's HTTP side (plain HTTP, the open paths: no token): `node health
//! --http`, a node's readiness (`/health/ready`) for a container's healthcheck where
//! the orchestrator runs a command rather than an HTTP probe (Compose, Swarm); and
//! `node-bench`'s reads of a node's `/metrics`.

use std::time::Duration;

use axum::body::Body;
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::CommandError;

/// The most of an answer read: a readiness answer is a line of JSON, a node's metrics
/// a few hundred lines.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Whether the node whose HTTP side listens at `addr` is ready: its own words if so
/// (`ready: NODE, N peer(s) up`), else why not.
pub(crate) async fn ready(addr: &str, timeout: Duration) -> Result<String, CommandError> {
    let (status, body) = get(addr, "/health/ready", timeout).await?;
    verdict(addr, status, &body)
}

/// `GET path` of the HTTP side at `addr`, within `timeout`: the status code and the
/// body.
pub async fn http_get(
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), CommandError> {
    let (status, body) = get(addr, path, timeout).await?;
    Ok((status.as_u16(), body))
}

async fn get(
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Vec<u8>), CommandError> {
    tokio::time::timeout(timeout, ask(addr, path))
        .await
        .map_err(|_| CommandError::RequestTimeout {
            addr: addr.to_string(),
            within: timeout,
        })?
}

async fn ask(addr: &str, path: &str) -> Result<(StatusCode, Vec<u8>), CommandError> {
    let unreachable = |reason: String| CommandError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let not_http = |e: hyper::Error| {
        unreachable(format!(
            "no HTTP answer ({e}): is that the node's --http address, and plain HTTP (not HTTPS)?"
        ))
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(not_http)?;
    // The connection is driven beside the request, and ends with it.
    let driven = tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, addr)
        .body(Body::empty())
        .map_err(|e| CommandError::Local(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(not_http)?;
    let status = response.status();
    let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER)
        .await
        .map_err(|e| unreachable(format!("the answer broke off: {e}")))?;
    driven.abort();
    Ok((status, body.to_vec()))
}

/// What an answer of `GET /health/ready` says.
fn verdict(addr: &str, status: StatusCode, body: &[u8]) -> Result<String, CommandError> {
    let said: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let node = said["node"].as_str().unwrap_or("?");
    match status {
        StatusCode::OK if said["status"] == "ready" => Ok(format!(
            "ready: {node}, {} peer(s) up",
            said["peers_up"].as_u64().unwrap_or(0)
        )),
        _ => Err(CommandError::NotReady {
            addr: addr.to_string(),
            reason: said["reason"]
                .as_str()
                .map_or_else(|| format!("HTTP {status}"), str::to_string),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_on_200_and_otherwise_the_nodes_reason() {
        let ok = verdict(
            "h:1",
            StatusCode::OK,
            br#"{"status":"ready","node":"worker-2","peers_up":3}"#,
        );
        assert_eq!(ok.unwrap(), "ready: worker-2, 3 peer(s) up");
        let starting = verdict(
            "h:1",
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"not ready","node":"w","reason":"not joined yet"}"#,
        )
        .unwrap_err();
        assert_eq!(starting.to_string(), "h:1 is not ready: not joined yet");
        let other = verdict("h:1", StatusCode::NOT_FOUND, b"nope").unwrap_err();
        assert_eq!(other.to_string(), "h:1 is not ready: HTTP 404 Not Found");
        // A 200 that is not a node's readiness (another server on that port) fails.
        let stranger = verdict("h:1", StatusCode::OK, b"<html>hello</html>").unwrap_err();
        assert_eq!(stranger.to_string(), "h:1 is not ready: HTTP 200 OK");
    }
}
