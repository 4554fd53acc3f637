//! The HTTP side (`--http`): every endpoint's answers and refusals, against real node
//! processes, over real sockets (a small HTTP/1.1 client below, so that slow and
//! malformed requests can be made too).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{client, free_port, is_closed, wait_for, Cluster, NodeProc};

pub const TOKEN: &str = "http-test-token";

/// One answer: status, headers (lowercased names), body as JSON (Null if not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    try_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// [`request`], or why it could not be sent.
fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    let mut stream =
        TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    // A node may answer (413) before reading a large body, and close.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    if !text.contains("\r\n\r\n") {
        return Err(format!("not an HTTP answer: {text:?}"));
    }
    Ok(parse(&raw))
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        text: body.to_string(),
    }
}

/// Every membership event the node at `addr` holds (fewer than it keeps, so none was
/// dropped), and the whole answer for failure messages.
pub fn member_events(addr: &str) -> (Vec<Value>, String) {
    let members = get(addr, "/cluster/members");
    let events = members.body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events: {}", members.text))
        .clone();
    assert!(
        events.len() < 64,
        "some events were dropped: {}",
        members.text
    );
    (events, members.text)
}

pub fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

pub fn post(addr: &str, path: &str, key: Option<&str>, body: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    headers.push(("Content-Type", "application/json"));
    request(addr, "POST", path, &headers, body.as_bytes())
}

/// A coordinator and one worker, both with an HTTP side on loopback and the token.
fn http_cluster() -> (Cluster, Vec<String>) {
    let (cluster, https) = Cluster::start_with_http(
        &["coordinator", "worker-1"],
        &["--http-token", TOKEN, "--counters", "2"],
    );
    cluster.wait_mesh(4);
    (cluster, https)
}

fn wait_status(addr: &str, path: &str, status: u16) -> Reply {
    wait_for(
        &format!("GET {path} on {addr} to answer {status}"),
        Duration::from_secs(20),
        || {
            let reply = try_request(addr, "GET", path, &[], b"")?;
            if reply.status == status {
                Ok(reply)
            } else {
                Err(format!("{} {}", reply.status, reply.text))
            }
        },
    )
}

#[test]
fn probes_stats_members_and_counters_answer_over_http() {
    let (cluster, http) = http_cluster();
    let (coordinator, worker) = (&http[0], &http[1]);

    let alive = get(worker, "/health/alive");
    assert_eq!(
        (alive.status, &alive.body["node"]),
        (200, &Value::from("worker-1"))
    );
    let ready = wait_status(worker, "/health/ready", 200);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["peers_up"], 1);

    // The same JSON as `node stats --json`, fresh, through either node.
    let stats = wait_for(
        "a complete collection over HTTP",
        Duration::from_secs(20),
        || {
            let reply = get(worker, "/stats");
            (reply.status == 200 && reply.body["complete"] == true)
                .then(|| reply.body.clone())
                .ok_or(reply.text)
        },
    );
    assert_eq!(stats["num_nodes"], 2, "{stats}");
    assert_eq!(stats["num_counters"], 4, "{stats}");
    let nodes = stats["nodes"].as_array().unwrap();
    assert!(nodes
        .iter()
        .all(|n| n["counters"].as_array().unwrap().len() == 2));
    let totals = get(coordinator, "/stats?totals=true&deadline=2");
    assert_eq!(totals.status, 200, "{}", totals.text);
    let nodes = totals.body["nodes"].as_array().unwrap();
    assert!(nodes
        .iter()
        .all(|n| n["counters"].as_array().unwrap().is_empty()));
    // Only the coordinator keeps the last collection.
    let last = get(worker, "/stats?last=true");
    assert_eq!(last.status, 400, "{}", last.text);
    let last = wait_status(coordinator, "/stats?last=true", 200);
    assert_eq!(last.body["collected_by"], "coordinator");
    assert_eq!(get(coordinator, "/stats?deadline=-1").status, 400);

    let members = get(coordinator, "/cluster/members");
    assert_eq!(members.status, 200, "{}", members.text);
    let list = members.body["members"].as_array().unwrap();
    let shown: Vec<(&str, &str)> = list
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(shown, [("coordinator", "self"), ("worker-1", "up")]);
    assert_eq!(list[1]["address"], cluster.nodes[1].addr.as_str());
    assert_eq!(list[1]["role"], "worker");
    wait_for("a round trip to worker-1", Duration::from_secs(10), || {
        let members = get(coordinator, "/cluster/members");
        let rtt = members.body["members"][1]["round_trip_ms"].as_f64();
        rtt.filter(|ms| *ms > 0.0 && *ms < 1000.0)
            .ok_or(members.text)
    });
    // Nobody misses anybody, once every member's gossip has been heard.
    wait_for("nobody unreachable", Duration::from_secs(10), || {
        let members = get(coordinator, "/cluster/members");
        let empty = members.body["unreachable"]
            .as_array()
            .is_some_and(|u| u.is_empty());
        empty.then_some(()).ok_or(members.text)
    });

    // A change with a key is applied once; its repeat reports the first result.
    let first = post(
        worker,
        "/counters/coordinator/0/increment",
        Some("key-1"),
        r#"{"by": 5}"#,
    );
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["value"], 5);
    assert_eq!(first.body["repeated"], false);
    assert_eq!(first.header("idempotency-key"), Some("key-1"));
    let again = post(
        worker,
        "/counters/coordinator/0/increment",
        Some("key-1"),
        r#"{"by": 5}"#,
    );
    assert_eq!((again.status, &again.body["value"]), (200, &Value::from(5)));
    assert_eq!(again.body["repeated"], true);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let down = post(
        coordinator,
        "/counters/coordinator%2F0/decrement",
        Some("key-2"),
        r#"{"by": 2}"#,
    );
    assert_eq!(
        (down.status, &down.body["value"]),
        (200, &Value::from(3)),
        "{}",
        down.text
    );
    // Without a key the node makes one up and says which.
    let fresh = post(coordinator, "/counters/worker-1/1/increment", None, "");
    assert_eq!((fresh.status, &fresh.body["value"]), (200, &Value::from(1)));
    assert_eq!(fresh.body["idempotency_key"].as_str().unwrap().len(), 32);
    // The same key for another change is refused.
    let reused = post(
        worker,
        "/counters/coordinator/0/decrement",
        Some("key-1"),
        r#"{"by": 5}"#,
    );
    assert_eq!(reused.status, 422, "{}", reused.text);

    for (via, path) in [
        (worker, "/counters/coordinator/0"),
        (coordinator, "/counters/coordinator%2F0"),
    ] {
        let read = get(via, path);
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(
            (&read.body["counter"], &read.body["value"]),
            (&Value::from("coordinator/0"), &Value::from(3))
        );
    }
    // And the cluster's own client agrees.
    let value = crate::util::client_ok(&["get", "coordinator/0", "--join", &cluster.nodes[0].addr]);
    assert_eq!(value.trim(), "3");
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let (_cluster, http) = http_cluster();
    let addr = &http[1];
    let path = "/counters/worker-1/0/increment";

    let none = request(addr, "POST", path, &[], b"{\"by\": 1}");
    assert_eq!(none.status, 401, "{}", none.text);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = request(
        addr,
        "POST",
        path,
        &[("Authorization", "Bearer nope")],
        b"{}",
    );
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    assert!(wrong.body["error"]
        .as_str()
        .unwrap()
        .contains("does not match"));

    for body in [
        r#"{"by": -1}"#,
        r#"{"by": "x"}"#,
        "{",
        r#"{"by": 1, "extra": 2}"#,
    ] {
        let bad = post(addr, path, Some("bad-body"), body);
        assert_eq!(bad.status, 400, "{body}: {}", bad.text);
    }
    let bad_key = post(addr, path, Some("has space"), "{}");
    assert_eq!(bad_key.status, 400, "{}", bad_key.text);
    let unknown = post(addr, "/counters/nobody/0/increment", Some("u-1"), "{}");
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(
        unknown.body["error"]
            .as_str()
            .unwrap()
            .contains("no counter"),
        "{}",
        unknown.text
    );
    let unknown_op = post(addr, "/counters/worker-1/0/multiply", Some("u-2"), "{}");
    assert_eq!(unknown_op.status, 404, "{}", unknown_op.text);
    assert_eq!(get(addr, "/counters/nobody/7").status, 404);
    assert_eq!(get(addr, "/no/such/route").status, 404);
    let wrong_method = get(addr, "/counters/worker-1/0/increment");
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.text);
    assert!(
        wrong_method.body["error"].is_string(),
        "{}",
        wrong_method.text
    );
    // A deadline beyond any Duration is held to the longest one, not a crash.
    let far = get(addr, "/stats?deadline=1e300&totals=true");
    assert_eq!(far.status, 200, "{}", far.text);

    // A huge body is refused without being read whole.
    let huge = vec![b' '; 4 << 20];
    let refused = post(
        addr,
        path,
        Some("huge"),
        std::str::from_utf8(&huge).unwrap(),
    );
    assert_eq!(refused.status, 413, "{}", refused.text);

    // None of that changed the counter.
    assert_eq!(get(addr, "/counters/worker-1/0").body["value"], 0);
}

#[test]
fn a_slow_client_is_cut_off_and_does_not_hold_up_others() {
    let (_cluster, http) = http_cluster();
    let addr = &http[0];
    // Headers that never end, and a body that never comes.
    let mut stalled_head = TcpStream::connect(addr).unwrap();
    stalled_head
        .write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut stalled_body = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /counters/worker-1/0/increment HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"by\""
    );
    stalled_body.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    // Meanwhile the node answers everyone else at once.
    for _ in 0..5 {
        let reply = get(addr, "/health/alive");
        assert_eq!(reply.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The stalled ones are ended within the node's deadlines (10 s each).
    wait_for(
        "the stalled headers to be cut off",
        Duration::from_secs(15),
        || {
            is_closed(&stalled_head)
                .then_some(())
                .ok_or("open".to_string())
        },
    );
    stalled_body
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = stalled_body.read_to_end(&mut raw);
    let reply = parse(&raw);
    assert_eq!(reply.status, 408, "{}", reply.text);
    assert_eq!(get(addr, "/counters/worker-1/0").body["value"], 0);
}

#[test]
fn a_change_in_doubt_says_so_and_its_retry_applies_once() {
    let (cluster, http) = http_cluster();
    let addr = &http[0];
    let before = post(
        addr,
        "/counters/worker-1/0/increment",
        Some("warm-up"),
        r#"{"by": 1}"#,
    );
    assert_eq!(before.status, 200, "{}", before.text);
    // The counter's node is frozen: the change is handed over and never answered.
    cluster.nodes[1].signal("STOP");
    let doubt = post(
        addr,
        "/counters/worker-1/0/increment",
        Some("frozen-1"),
        r#"{"by": 10}"#,
    );
    cluster.nodes[1].signal("CONT");
    // Handed over and never answered: in doubt, never "not applied".
    assert_eq!(doubt.status, 504, "{}", doubt.text);
    assert_eq!(doubt.body["idempotency_key"], "frozen-1", "{}", doubt.text);
    assert_eq!(doubt.body["in_doubt"], true);
    assert!(
        doubt.body["error"].as_str().unwrap().contains("in doubt"),
        "{}",
        doubt.text
    );
    // Retried with its key until it goes through: applied exactly once.
    let done = wait_for("the retry to go through", Duration::from_secs(30), || {
        let reply = post(
            addr,
            "/counters/worker-1/0/increment",
            Some("frozen-1"),
            r#"{"by": 10}"#,
        );
        (reply.status == 200)
            .then_some(reply)
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!(done.body["value"], 11, "{}", done.text);
    assert_eq!(get(addr, "/counters/worker-1/0").body["value"], 11);
}

#[test]
fn beyond_loopback_reads_need_the_token_and_none_means_no_start() {
    // Without a token a node refuses to serve HTTP beyond loopback.
    let http = format!("0.0.0.0:{}", free_port());
    let mut refused = NodeProc::start("http-open", &["--http", &http]);
    assert_eq!(refused.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        refused.log().contains("without a token"),
        "{}",
        refused.log()
    );

    let port = free_port();
    let http = format!("0.0.0.0:{port}");
    let node = NodeProc::start("http-wide", &["--http", &http, "--http-token", TOKEN]);
    let local = format!("127.0.0.1:{port}");
    // Alive from the moment its port is bound; ready once its store is recovered.
    wait_status(&local, "/health/alive", 200);
    wait_status(&local, "/health/ready", 200);
    let anonymous = get(&local, "/stats");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    let auth = format!("Bearer {TOKEN}");
    let allowed = request(
        &local,
        "GET",
        "/counters/http-wide/0",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    assert!(!node.log().contains(TOKEN), "the token reached the log");
}

#[test]
fn a_node_that_has_not_joined_is_alive_but_not_ready() {
    let http = format!("127.0.0.1:{}", free_port());
    let nobody = format!("127.0.0.1:{}", free_port());
    let _node = NodeProc::start("lonely", &["--http", &http, "--join", &nobody]);
    let alive = wait_status(&http, "/health/alive", 200);
    assert_eq!(alive.body["node"], "lonely");
    // Not ready while its store is recovered ("starting"), then not ready because it
    // has not reached anyone.
    let ready = wait_for("the reason to be the join", Duration::from_secs(20), || {
        let ready = get(&http, "/health/ready");
        let joining = ready.body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not joined"));
        joining
            .then_some(ready)
            .ok_or_else(|| "still starting".to_string())
    });
    assert_eq!(ready.status, 503, "{}", ready.text);
    // `node health --http` (a healthcheck without curl) says the same, and fails.
    let out = client(&["health", "--http", &http, "--timeout", "2"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("is not ready: not joined yet"), "{said}");
    // Once a member is there to join, it is ready.
    let member = NodeProc::start_at("member", &nobody, &["--role", "coordinator"], &[]);
    let said = wait_for("health --http to pass", Duration::from_secs(20), || {
        let out = client(&["health", "--http", &http, "--timeout", "2"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
    });
    assert!(said.starts_with("ready: lonely, 1 peer(s) up"), "{said}");
    // Its cluster port speaks no HTTP: the probe says so rather than passing.
    let out = client(&["health", "--http", &member.addr, "--timeout", "2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no HTTP answer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_client_that_never_reads_its_answers_is_cut_off() {
    let (_cluster, http) = http_cluster();
    let addr = http[0].clone();
    // Pipelined requests, written as long as the node takes them, never read.
    let mut greedy = TcpStream::connect(&addr).unwrap();
    // A write blocked for 30 s means the node kept the connection: the test fails
    // rather than hangs.
    greedy
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        let request = b"GET /health/alive HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        let started = Instant::now();
        loop {
            match greedy.write_all(&request) {
                Ok(()) if started.elapsed() > Duration::from_secs(60) => return None,
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                // Closed (reset, broken pipe): cut off.
                Err(_) => return Some(started.elapsed()),
            }
        }
    });
    // Meanwhile everyone else is answered.
    for _ in 0..5 {
        assert_eq!(get(&addr, "/health/alive").status, 200);
    }
    let cut_off = writer.join().unwrap();
    assert!(
        cut_off.is_some(),
        "a client that never read its answers kept its connection for 60 s"
    );
}

/// `GET path` on `addr`, addressed to `host` (its `Host` header), with `auth` if given.
fn get_as(addr: &str, host: &str, path: &str, auth: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&raw)
}

/// Without the token, reads are answered only to requests that name the node by a
/// loopback name: a page in a browser on the same machine whose own name was made to
/// resolve to 127.0.0.1 (DNS rebinding) sends that name, and is refused.
#[test]
fn token_less_reads_answer_only_loopback_names() {
    let (_cluster, http) = http_cluster();
    let addr = &http[0];
    let port = addr.rsplit_once(':').unwrap().1;
    for host in [
        addr.clone(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        for path in ["/stats", "/cluster/members", "/counters/worker-1/0"] {
            let reply = get_as(addr, &host, path, None);
            assert_eq!(reply.status, 200, "{host} {path}: {}", reply.text);
        }
    }
    let rebound = format!("attacker.example:{port}");
    for path in ["/stats", "/cluster/members", "/counters/worker-1/0"] {
        let reply = get_as(addr, &rebound, path, None);
        assert_eq!(reply.status, 403, "{path}: {}", reply.text);
        assert!(reply.text.contains("loopback name"), "{}", reply.text);
    }
    // With the token, any name; and the probes and the dashboard page for anyone.
    let auth = format!("Bearer {TOKEN}");
    let reply = get_as(addr, &rebound, "/stats", Some(&auth));
    assert_eq!(reply.status, 200, "{}", reply.text);
    for path in ["/health/alive", "/health/ready", "/metrics"] {
        assert_eq!(get_as(addr, &rebound, path, None).status, 200, "{path}");
    }
}

/// Connections that hold the HTTP side's places without asking anything (headers
/// that never end), 256 of them from one address and reopened as they are closed, do
/// not keep the health probes or a read from being answered: each newcomer takes the
/// place of the oldest one that is serving nothing. Every probe answers within 1 s.
#[test]
fn a_slow_header_flood_from_one_address_does_not_starve_the_probes() {
    let (_cluster, http) = http_cluster();
    let addr = http[0].clone();
    let flood = crate::util::Flood::start(&addr, 256, |addr| {
        let mut stream = TcpStream::connect(addr).ok()?;
        stream
            .write_all(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .ok()?;
        Some(stream)
    });
    // As a prober does, a connection the node closes is tried again, within the
    // probe's one second.
    let (mut slowest, mut attempts) = (Duration::ZERO, 0u32);
    for round in 0..20 {
        for path in ["/health/alive", "/health/ready", "/stats"] {
            let started = Instant::now();
            let reply = loop {
                attempts += 1;
                match try_request(&addr, "GET", path, &[], b"") {
                    Ok(reply) => break reply,
                    Err(e) => assert!(
                        started.elapsed() < Duration::from_secs(1),
                        "round {round}, {path}: no answer within 1 s: {e}"
                    ),
                }
            };
            assert_eq!(reply.status, 200, "round {round}, {path}: {}", reply.text);
            slowest = slowest.max(started.elapsed());
        }
    }
    let reopened = flood.stop();
    println!(
        "  slowest answer under the flood: {slowest:?}, {attempts} connections for 60 \
         requests ({reopened} flooding connections reopened)"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a probe took {slowest:?} under the flood"
    );
    assert!(reopened > 0, "the node never evicted a flooding connection");
}
