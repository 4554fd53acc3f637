//! Mutual TLS: a cluster with certificates from `scripts/make-certs.sh` forms and
//! serves clients; plain TCP, certificates from another CA and silent or stalled
//! handshakes are refused without keeping anyone else out.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{is_closed, lines_with, node_bin, wait_for, Certs, NodeProc, COOKIE};

fn start(name: &str, certs: &Certs, extra: &[&str]) -> NodeProc {
    let tls = certs.args(name);
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    NodeProc::start(name, &args)
}

/// A client command with `tls_args` (none: plain TCP).
fn client(args: &[&str], tls_args: &[String]) -> Output {
    Command::new(node_bin())
        .args(args)
        .args(tls_args)
        .args(["--cookie", COOKIE, "--timeout", "3"])
        .env_remove("RUST_LOG")
        .env_remove("NODE_COOKIE_FILE")
        .output()
        .unwrap()
}

fn tls_stats(addr: &str, certs: &Certs) -> Result<Value, String> {
    let out = client(&["stats", "--json", "--join", addr], &certs.args("client"));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn wait_complete(addr: &str, certs: &Certs, nodes: u64, counters: u64) -> Value {
    wait_for(
        &format!("{nodes} nodes and {counters} counters over TLS via {addr}"),
        Duration::from_secs(20),
        || {
            let s = tls_stats(addr, certs)?;
            let seen = (s["num_nodes"].as_u64(), s["num_counters"].as_u64());
            if s["complete"] == true && seen == (Some(nodes), Some(counters)) {
                Ok(s)
            } else {
                Err(format!(
                    "saw (nodes, counters) = {seen:?}, complete {}",
                    s["complete"]
                ))
            }
        },
    )
}

/// `GET PATH` over HTTPS on `addr` (a TLS node's HTTP side), as the client `certs`
/// made: the body (the status must be 200).
fn https_get(certs: &Certs, addr: &str, path: &str) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let raw = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = node::Tls::load(
            Path::new(&certs.path("client.pem")),
            Path::new(&certs.path("client-key.pem")),
            Path::new(&certs.path("ca.pem")),
        )
        .map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let name = node::server_name(addr)?;
        let mut stream = tls
            .connector()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
        Ok::<_, String>(String::from_utf8_lossy(&raw).to_string())
    })?;
    crate::metrics::body_of(&raw)
}

/// Connections node `http` (its HTTPS side) refused, over every reason.
fn connections_refused(certs: &Certs, http: &str) -> Result<f64, String> {
    let text = https_get(certs, http, "/metrics")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("counter_cluster_connections_refused_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

#[test]
fn a_tls_cluster_forms_and_serves_clients_with_certificates() {
    let certs = Certs::make(&["coordinator", "worker-1", "worker-2", "client"]);
    let https: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", crate::util::free_port()))
        .collect();
    let coordinator = start(
        "coordinator",
        &certs,
        &["--counters", "2", "--http", &https[0]],
    );
    let workers: Vec<NodeProc> = ["worker-1", "worker-2"]
        .iter()
        .zip(&https[1..])
        .map(|(name, http)| {
            start(
                name,
                &certs,
                &[
                    "--counters",
                    "2",
                    "--join",
                    &coordinator.addr,
                    "--http",
                    http,
                ],
            )
        })
        .collect();
    // The full mesh, every node's own view, every link over TLS.
    for node in std::iter::once(&coordinator).chain(&workers) {
        wait_complete(&node.addr, &certs, 3, 6);
    }
    let out = client(
        &[
            "incr",
            "worker-2/1",
            "--by",
            "5",
            "--join",
            &coordinator.addr,
        ],
        &certs.args("client"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    // Every node runs TLS (its cluster port answered a TLS client above, and its
    // HTTP side is HTTPS) and refused no connection.
    for (node, http) in std::iter::once(&coordinator).chain(&workers).zip(&https) {
        let refused = connections_refused(&certs, http)
            .unwrap_or_else(|e| panic!("{}: no metrics over HTTPS: {e}", node.name));
        assert_eq!(refused, 0.0, "{} refused connections", node.name);
    }
}

/// A node starts with certificate `cert` (another's, or a client's) under `name`.
fn start_as(name: &str, cert: &str, certs: &Certs, extra: &[&str]) -> NodeProc {
    let tls = certs.args(cert);
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    NodeProc::start(name, &args)
}

/// A client's certificate opens client sessions only, and a node's certificate speaks
/// for the node it names only: a "member" with either is refused as it names itself,
/// and the cluster never counts it; the real member then joins.
#[test]
fn a_client_certificate_cannot_join_and_a_node_certificate_names_its_node() {
    let certs = Certs::make(&["coordinator", "worker-1", "client"]);
    let http = format!("127.0.0.1:{}", crate::util::free_port());
    let coordinator = start("coordinator", &certs, &["--counters", "2", "--http", &http]);
    let join = ["--counters", "2", "--join", coordinator.addr.as_str()];
    let with_client_cert = start_as("worker-1", "client", &certs, &join);
    let impostor = start_as("worker-2", "worker-1", &certs, &join);
    let series =
        r#"counter_cluster_peer_refusals_total{node="coordinator",reason="no_node_certificate"}"#;
    wait_for(
        "the coordinator to refuse both",
        Duration::from_secs(20),
        || {
            let text = https_get(&certs, &http, "/metrics")?;
            let refused = crate::metrics::sample(&text, series).unwrap_or(0.0);
            (refused >= 2.0)
                .then_some(())
                .ok_or(format!("{series} is {refused}"))
        },
    );
    let s = tls_stats(&coordinator.addr, &certs).unwrap();
    assert_eq!(s["num_nodes"], 1, "a refused member was counted: {s}");
    drop(with_client_cert);
    drop(impostor);
    let worker = start("worker-1", &certs, &join);
    let s = wait_complete(&coordinator.addr, &certs, 2, 4);
    assert!(crate::util::node_entry(&s, "worker-2").is_none(), "{s}");
    drop(worker);
}

#[test]
fn links_without_a_certificate_from_the_cluster_ca_are_refused() {
    let certs = Certs::make(&["coordinator", "client"]);
    let strangers = Certs::make(&["worker-1", "client"]);
    let coordinator = start("coordinator", &certs, &["--counters", "2"]);
    wait_complete(&coordinator.addr, &certs, 1, 2);

    // A client speaking plain TCP.
    let out = client(&["stats", "--join", &coordinator.addr], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("requires TLS"), "{err}");
    // A client whose certificate another CA signed: it does not trust the node either.
    let out = client(
        &["stats", "--join", &coordinator.addr],
        &strangers.args("client"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("TLS with") && err.contains("failed"), "{err}");

    // Nodes: one without TLS, one with another CA's certificate. Neither gets in, and
    // each says why in its own log.
    let plain = NodeProc::start("plain", &["--counters", "1", "--join", &coordinator.addr]);
    let stranger = start(
        "worker-1",
        &strangers,
        &["--counters", "1", "--join", &coordinator.addr],
    );
    plain.wait_for_log(
        "the plain node to report that it cannot join",
        "cannot join",
        Duration::from_secs(10),
    );
    stranger.wait_for_log(
        "the stranger to report the TLS failure",
        "TLS handshake failed",
        Duration::from_secs(10),
    );
    let s = tls_stats(&coordinator.addr, &certs).unwrap();
    assert_eq!(
        s["num_nodes"], 1,
        "a node without a valid certificate joined: {s}"
    );
    // Four refused sources, all from 127.0.0.1: one line, not one per attempt.
    let log = coordinator.log();
    assert_eq!(lines_with(&log, "refused a connection"), 1, "{log}");
    assert_eq!(lines_with(&log, "panicked"), 0, "{log}");
}

#[test]
fn silent_and_stalled_handshakes_do_not_keep_a_node_from_joining() {
    let certs = Certs::make(&["coordinator", "worker-1", "client"]);
    let coordinator = start("coordinator", &certs, &["--counters", "2"]);
    wait_complete(&coordinator.addr, &certs, 1, 2);

    // 50 connections that say nothing, 20 that stop half-way through a TLS record
    // header, and 5 that send noise.
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..50 {
        held.extend(TcpStream::connect(&coordinator.addr).ok());
    }
    for _ in 0..20 {
        if let Ok(mut s) = TcpStream::connect(&coordinator.addr) {
            let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02]);
            held.push(s);
        }
    }
    for i in 0..5u8 {
        if let Ok(mut s) = TcpStream::connect(&coordinator.addr) {
            let _ = s.write_all(&[i.wrapping_mul(37); 4096]);
            held.push(s);
        }
    }
    assert!(held.len() >= 70, "only {} connections opened", held.len());

    // With all of those pending, a worker joins and clients are served, promptly.
    let started = Instant::now();
    let worker = start(
        "worker-1",
        &certs,
        &["--counters", "2", "--join", &coordinator.addr],
    );
    wait_complete(&coordinator.addr, &certs, 2, 4);
    wait_complete(&worker.addr, &certs, 2, 4);
    let joined = started.elapsed();
    assert!(joined < Duration::from_secs(5), "joining took {joined:?}");

    // Every stalled connection is closed by its handshake deadline.
    wait_for(
        "the node to close every stalled connection",
        Duration::from_secs(10),
        || {
            let open = held.iter().filter(|s| !is_closed(s)).count();
            (open == 0)
                .then_some(())
                .ok_or(format!("{open} of {} still open", held.len()))
        },
    );
    let log = coordinator.log();
    assert!(lines_with(&log, "refused a connection") <= 1, "{log}");
    assert_eq!(lines_with(&log, "panicked"), 0, "{log}");
}

/// A client completes the TLS handshake with a valid certificate, then sends garbage
/// instead of the cookie handshake: the node closes that connection and keeps serving.
#[test]
fn a_valid_tls_handshake_followed_by_garbage_is_dropped() {
    let certs = Certs::make(&["coordinator", "client"]);
    let coordinator = start("coordinator", &certs, &["--counters", "2"]);
    wait_complete(&coordinator.addr, &certs, 1, 2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = client_tls_stream(&certs, &coordinator.addr).await;
        let mut garbage = 300u64.to_be_bytes().to_vec();
        garbage.extend((0..300u32).map(|i| (i * 7 + 3) as u8));
        stream.write_all(&garbage).await.unwrap();
        stream.flush().await.unwrap();
        // The node hangs up (end of stream or reset): at once if the garbage does not
        // decode, at the latest at its 2 s authentication deadline.
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the node kept a TLS connection that sent garbage"
        );
    });
    wait_complete(&coordinator.addr, &certs, 1, 2);
    let log = coordinator.log();
    assert!(lines_with(&log, "refused a connection") <= 1, "{log}");
    assert_eq!(lines_with(&log, "panicked"), 0, "{log}");
}

/// A node with TLS serves its HTTP side as HTTPS with its own certificate; plain HTTP
/// there gets no answer.
#[test]
fn the_http_side_of_a_tls_node_is_https() {
    let certs = Certs::make(&["coordinator", "client"]);
    let http = format!("127.0.0.1:{}", crate::util::free_port());
    let coordinator = start("coordinator", &certs, &["--counters", "2", "--http", &http]);
    wait_complete(&coordinator.addr, &certs, 1, 2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = client_tls_stream(&certs, &http).await;
        stream
            .write_all(
                b"GET /counters/coordinator/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await;
        String::from_utf8_lossy(&raw).to_string()
    });
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""counter":"coordinator/1""#), "{answer}");

    let mut plain = TcpStream::connect(&http).unwrap();
    plain
        .write_all(b"GET /health/alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut raw);
    assert!(
        !String::from_utf8_lossy(&raw).contains("200 OK"),
        "plain HTTP was answered on an HTTPS port"
    );
}

/// 256 connections from one address that never begin their TLS handshake, reopened as
/// they are closed, do not keep the HTTPS side's probes from being answered: each
/// newcomer takes the place of the oldest one that is serving nothing. Every probe,
/// over TLS, answers within 1 s.
#[test]
fn silent_connections_do_not_starve_the_https_probes() {
    let certs = Certs::make(&["coordinator", "client"]);
    let http = format!("127.0.0.1:{}", crate::util::free_port());
    let coordinator = start("coordinator", &certs, &["--counters", "2", "--http", &http]);
    wait_complete(&coordinator.addr, &certs, 1, 2);
    let flood = crate::util::Flood::start(&http, 256, |addr| TcpStream::connect(addr).ok());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tls = node::Tls::load(
        Path::new(&certs.path("client.pem")),
        Path::new(&certs.path("client-key.pem")),
        Path::new(&certs.path("ca.pem")),
    )
    .unwrap();
    let (slowest, attempts) = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // One probe: connect, handshake, ask; as a prober does, a connection the node
        // closes is tried again, within the probe's one second.
        let probe = async || -> Result<String, String> {
            let tcp = tokio::net::TcpStream::connect(&http)
                .await
                .map_err(|e| e.to_string())?;
            let name = node::server_name(&http).unwrap();
            let mut stream = tls
                .connector()
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut raw = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut raw)).await;
            Ok(String::from_utf8_lossy(&raw).to_string())
        };
        let (mut slowest, mut attempts) = (Duration::ZERO, 0u32);
        for round in 0..10 {
            let started = Instant::now();
            let answer = loop {
                attempts += 1;
                match probe().await {
                    Ok(answer) if answer.starts_with("HTTP/1.1 200") => break answer,
                    other => assert!(
                        started.elapsed() < Duration::from_secs(1),
                        "round {round}: no answer within 1 s: {other:?}"
                    ),
                }
            };
            assert!(answer.contains("ready"), "{answer}");
            slowest = slowest.max(started.elapsed());
        }
        (slowest, attempts)
    });
    let reopened = flood.stop();
    println!(
        "  slowest HTTPS probe under the flood: {slowest:?}, {attempts} connections for 10 \
         probes ({reopened} flooding connections reopened)"
    );
    assert!(slowest < Duration::from_secs(1), "a probe took {slowest:?}");
}

/// A TLS connection to `addr` as the client `certs` made (trusting the cluster's CA,
/// offering the client certificate, which the HTTP side does not ask for).
async fn client_tls_stream(
    certs: &Certs,
    addr: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls = node::Tls::load(
        Path::new(&certs.path("client.pem")),
        Path::new(&certs.path("client-key.pem")),
        Path::new(&certs.path("ca.pem")),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = node::server_name(addr).unwrap();
    tls.connector().connect(name, tcp).await.unwrap()
}
