//! `GET /metrics` against the real tools: `promtool check metrics` on every node's
//! output, and a real Prometheus server scraping a live cluster, read back through its
//! HTTP API. Both tools come from Debian's `prometheus` package (`.ci/run` installs it);
//! where they are missing the tests say so and stop, and under `CI=true` they fail.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{free_port, wait_for, Cluster};

/// Whether `tool` can be run; if not, fails under `CI=true` and otherwise says loudly
/// that `test` is skipped.
pub fn tool_or_skip(tool: &str, test: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: `{tool}` is not installed, and CI must run this test (.ci/run installs it)"
        );
        eprintln!("SKIPPED {test}: `{tool}` is not installed (.ci/run installs it from Debian)");
    }
    found
}

/// `GET PATH` on `addr`: the body (the status must be 200).
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    body_of(&raw)
}

/// The body of `raw`, a whole HTTP/1.1 answer (its status must be 200).
pub fn body_of(raw: &str) -> Result<String, String> {
    let (head, body) = raw.split_once("\r\n\r\n").ok_or(raw.to_string())?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(raw.to_string());
    }
    // Prometheus's API may answer in chunks.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `GET /metrics` on the node whose HTTP side is `http`: the Prometheus text.
pub fn scrape(http: &str) -> Result<String, String> {
    http_get(http, "/metrics")
}

/// The value of counter `series` (name and labels exactly as printed) on the node whose
/// HTTP side is `http`; 0 while the series has not appeared (a labelled series appears
/// at its first increment).
pub fn counter_value(http: &str, series: &str) -> Result<f64, String> {
    let text = scrape(http)?;
    Ok(sample(&text, series).unwrap_or(0.0))
}

/// The value of the sample `series` (name and labels exactly as printed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Three nodes under load, each with an HTTP side on loopback.
pub fn loaded_http_cluster() -> (Cluster, Vec<String>) {
    let (cluster, https) = Cluster::start_with_http(
        &["coordinator", "worker-1", "worker-2"],
        &["--counters", "2", "--load", "2000"],
    );
    cluster.wait_mesh(6);
    (cluster, https)
}

#[test]
fn every_node_exports_its_metrics_and_promtool_accepts_them() {
    let (cluster, http) = loaded_http_cluster();
    // One refused connection: a frame no handshake needs, before authenticating.
    let mut stranger = TcpStream::connect(&cluster.nodes[1].addr).unwrap();
    let _ = stranger.write_all(&(1u64 << 40).to_be_bytes());
    let worker = &http[1];
    let refused =
        r#"counter_cluster_connections_refused_total{node="worker-1",reason="preauth_limit"}"#;
    // Every series that moves with the load and the mesh, once all have moved.
    let moving = [
        r#"counter_cluster_operations_applied_total{node="worker-1"}"#,
        r#"counter_cluster_operations_issued_total{node="worker-1"}"#,
        r#"counter_cluster_operations_received_total{node="worker-1",sender="coordinator"}"#,
        r#"counter_cluster_operations_received_total{node="worker-1",sender="worker-2"}"#,
        r#"counter_cluster_commit_duration_seconds_count{node="worker-1"}"#,
        r#"counter_cluster_commit_operations_count{node="worker-1"}"#,
        r#"counter_cluster_peer_round_trip_seconds{node="worker-1",peer="coordinator"}"#,
        r#"counter_cluster_peer_up{node="worker-1",peer="coordinator"}"#,
        r#"counter_cluster_peer_up{node="worker-1",peer="worker-2"}"#,
        r#"counter_cluster_peer_received_bytes_total{node="worker-1",peer="coordinator"}"#,
        r#"counter_cluster_peer_received_messages_total{node="worker-1",peer="coordinator"}"#,
        r#"counter_cluster_peer_sent_bytes_total{node="worker-1",peer="worker-2"}"#,
        r#"counter_cluster_peer_sent_messages_total{node="worker-1",peer="worker-2"}"#,
        refused,
    ];
    let text = wait_for(
        "worker-1's metrics to show the load, the mesh and the refusal",
        Duration::from_secs(20),
        || {
            let text = http_get(worker, "/metrics")?;
            match moving
                .iter()
                .find(|s| sample(&text, s).is_none_or(|v| v <= 0.0))
            {
                None => Ok(text),
                Some(series) => Err(format!("{series} is not above 0 in\n{text}")),
            }
        },
    );
    assert_eq!(sample(&text, refused), Some(1.0));
    for series in [
        r#"counter_cluster_operations_rejected_total{node="worker-1"}"#,
        r#"counter_cluster_actor_restarts_total{node="worker-1"}"#,
        r#"counter_cluster_counters{node="worker-1"}"#,
        r#"counter_cluster_operations_in_flight{node="worker-1"}"#,
    ] {
        assert!(sample(&text, series).is_some(), "no {series} in\n{text}");
    }
    // Nothing restored, nothing lost: nothing unvouched.
    assert_eq!(
        sample(
            &text,
            r#"counter_cluster_operations_unvouched{node="worker-1"}"#
        ),
        Some(0.0),
        "{text}"
    );
    // The coordinator's aggregator collects every 2 s.
    let coordinator = wait_for("a timed collection", Duration::from_secs(10), || {
        let text = http_get(&http[0], "/metrics")?;
        (sample(
            &text,
            r#"counter_cluster_collection_duration_seconds_count{node="coordinator"}"#,
        ) > Some(0.0))
        .then(|| text.clone())
        .ok_or(text)
    });
    assert!(coordinator.contains(r#"counter_cluster_counters{node="coordinator"} 2"#));
    // Applied operations move with the load.
    let applied = r#"counter_cluster_operations_applied_total{node="worker-1"}"#;
    let before = sample(&text, applied).unwrap();
    wait_for(
        "applied operations to grow",
        Duration::from_secs(10),
        || {
            let now = sample(&http_get(worker, "/metrics")?, applied).unwrap_or(0.0);
            (now > before)
                .then_some(())
                .ok_or(format!("{now} <= {before}"))
        },
    );

    if !tool_or_skip("promtool", "promtool check metrics") {
        return;
    }
    for addr in &http {
        let text = http_get(addr, "/metrics").unwrap();
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on {addr}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn prometheus_scrapes_the_cluster_and_sees_the_load() {
    let test = "prometheus_scrapes_the_cluster_and_sees_the_load";
    if !tool_or_skip("prometheus", test) {
        return;
    }
    let (_cluster, http) = loaded_http_cluster();
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = http.iter().map(|a| format!("'{a}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
         - job_name: counter-cluster\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cannot start prometheus");
    struct Stop<'a>(&'a mut std::process::Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(&mut prometheus);

    // Prometheus's query API: `query`'s answer.
    let ask = |query: &str| -> Result<Value, String> {
        serde_json::from_str(&http_get(&web, query)?).map_err(|e| e.to_string())
    };
    // Every node's series, through Prometheus's query API.
    let query = "/api/v1/query?query=counter_cluster_operations_applied_total";
    let first = wait_for(
        "Prometheus to have scraped all three nodes",
        Duration::from_secs(30),
        || {
            let answer = ask(query)?;
            let results = answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut nodes: Vec<String> = results
                .iter()
                .filter_map(|r| r["metric"]["node"].as_str().map(str::to_string))
                .collect();
            nodes.sort();
            (nodes == ["coordinator", "worker-1", "worker-2"])
                .then(|| answer.clone())
                .ok_or(answer.to_string())
        },
    );
    let total = |answer: &Value| -> f64 {
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .sum()
    };
    let before = total(&first);
    // The series moves with the load, as Prometheus records it.
    wait_for(
        "the scraped operations to grow",
        Duration::from_secs(30),
        || {
            let answer = ask(query)?;
            let now = total(&answer);
            (now > before)
                .then_some(())
                .ok_or(format!("{now} <= {before}"))
        },
    );
    let rate = "/api/v1/query?query=sum(rate(counter_cluster_operations_applied_total%5B5s%5D))";
    wait_for(
        "a positive rate over the scrapes",
        Duration::from_secs(30),
        || {
            let answer = ask(rate)?;
            let value = total(&answer);
            (value > 0.0).then_some(()).ok_or(answer.to_string())
        },
    );
}
