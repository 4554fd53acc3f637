//! The live dashboard (`GET /`) in a real browser: headless Chromium, driven over the
//! DevTools protocol, loads the coordinator's dashboard of a 3-node cluster under load;
//! the test reads the rendered page (3 nodes, throughput above zero), freezes a worker
//! (SIGSTOP) and requires the page to show it unreachable within 3 s, then back after
//! SIGCONT. A second test loads the dashboard of 900 counters, more than it lists: it
//! must show the totals, list no counter and say why. A third has a worker leave for a
//! while and requires the page to show it departed with its count. Screenshots are
//! saved under
//! `target/tmp/` for people to look at. Chromium comes from Debian's `chromium` package
//! (`.ci/run` installs it).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::metrics::{loaded_http_cluster, tool_or_skip};
use crate::util::{free_port, wait_for, Cluster};

/// A headless Chromium with one page, and its DevTools connection.
struct Browser {
    child: Child,
    page: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium on `url`.
    fn open(url: &str) -> Browser {
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1400,1050",
                "--no-first-run",
            ])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromium");
        let devtools = format!("127.0.0.1:{port}");
        let target = wait_for("Chromium's page target", Duration::from_secs(30), || {
            let list: Value =
                serde_json::from_str(&crate::metrics::http_get(&devtools, "/json/list")?)
                    .map_err(|e| e.to_string())?;
            list.as_array()
                .and_then(|targets| {
                    targets
                        .iter()
                        .find(|t| t["type"] == "page")
                        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                        .map(str::to_string)
                })
                .ok_or(list.to_string())
        });
        let (page, _) = tungstenite::connect(&target).expect("cannot reach Chromium's DevTools");
        Browser {
            child,
            page,
            next_id: 1,
            _profile: profile,
        }
    }

    /// Calls a DevTools method and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "id": id, "method": method, "params": params });
        self.page
            .send(Message::text(request.to_string()))
            .expect("DevTools connection lost");
        loop {
            let message = self.page.read().expect("DevTools connection lost");
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).unwrap();
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value (as JSON).
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Saves a PNG of the page under `target/tmp/NAME`; returns the path.
    fn screenshot(&mut self, name: &str) -> String {
        let result = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().unwrap())
            .unwrap();
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        path.display().to_string()
    }
}

/// What the page shows: every node on the map with its status, and the throughput.
const READ_PAGE: &str = r#"JSON.stringify({
  nodes: [...document.querySelectorAll('#map .node')].map(n => [n.dataset.node, n.dataset.status]),
  throughput: Number(document.getElementById('throughput').textContent.replace(/,/g, '')),
  complete: document.getElementById('complete').textContent,
  updated: document.getElementById('updated').textContent
})"#;

fn page(browser: &mut Browser) -> Value {
    let text = browser.eval(READ_PAGE);
    serde_json::from_str(text.as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

fn status_of(page: &Value, node: &str) -> Option<String> {
    page["nodes"]
        .as_array()?
        .iter()
        .find_map(|n| (n[0] == node).then(|| n[1].as_str().unwrap_or("").to_string()))
}

#[test]
fn the_dashboard_shows_the_cluster_live_and_a_frozen_worker_within_3_s() {
    let test = "the_dashboard_shows_the_cluster_live_and_a_frozen_worker_within_3_s";
    if !tool_or_skip("chromium", test) {
        return;
    }
    let (cluster, http) = loaded_http_cluster();
    let mut browser = Browser::open(&format!("http://{}/", http[0]));

    let shown = wait_for(
        "the dashboard to show 3 nodes and throughput",
        Duration::from_secs(30),
        || {
            let page = page(&mut browser);
            let nodes = page["nodes"].as_array().map_or(0, Vec::len);
            let flowing = page["throughput"].as_f64().is_some_and(|t| t > 0.0);
            (nodes == 3 && flowing && page["complete"] == "complete")
                .then(|| page.clone())
                .ok_or(page.to_string())
        },
    );
    assert_eq!(status_of(&shown, "coordinator").as_deref(), Some("self"));
    assert_eq!(status_of(&shown, "worker-2").as_deref(), Some("up"));
    println!(
        "dashboard under load: {}",
        browser.screenshot("dashboard-under-load.png")
    );

    // Freeze worker-2: the page must show it unreachable within 3 s.
    let worker = &cluster.nodes[2];
    worker.signal("STOP");
    let frozen = Instant::now();
    let seen = wait_for(
        "worker-2 shown unreachable",
        Duration::from_secs(10),
        || {
            let page = page(&mut browser);
            (status_of(&page, "worker-2").as_deref() == Some("unreachable"))
                .then(|| frozen.elapsed())
                .ok_or(page.to_string())
        },
    );
    let shot = browser.screenshot("dashboard-frozen-worker.png");
    worker.signal("CONT");
    println!("worker-2 shown unreachable {seen:?} after SIGSTOP; screenshot: {shot}");
    assert!(
        seen <= Duration::from_secs(3),
        "the dashboard took {seen:?}"
    );

    wait_for("worker-2 shown up again", Duration::from_secs(20), || {
        let page = page(&mut browser);
        (status_of(&page, "worker-2").as_deref() == Some("up"))
            .then_some(())
            .ok_or(page.to_string())
    });
}

/// What the page shows of the counters: the note above their table, its rows, and the
/// totals.
const READ_COUNTERS: &str = r#"JSON.stringify({
  note: document.getElementById('counters-note').textContent,
  rows: document.querySelectorAll('#counters tbody tr').length,
  complete: document.getElementById('complete').textContent,
  operations: Number(document.getElementById('total-ops').textContent.replace(/,/g, ''))
})"#;

fn counters_shown(browser: &mut Browser) -> Value {
    let text = browser.eval(READ_COUNTERS);
    serde_json::from_str(text.as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

/// More counters than the page lists (its `MAX_LISTED`, 500): it asks for the totals
/// alone, says why no counter is listed, lists none, and its totals go on moving.
#[test]
fn the_dashboard_of_many_counters_shows_totals_and_lists_none() {
    let test = "the_dashboard_of_many_counters_shows_totals_and_lists_none";
    if !tool_or_skip("chromium", test) {
        return;
    }
    let (cluster, http) = Cluster::start_with_http(
        &["coordinator", "worker-1", "worker-2"],
        &["--counters", "300", "--load", "1000"],
    );
    cluster.wait_mesh(900);
    let mut browser = Browser::open(&format!("http://{}/", http[0]));
    let shown = wait_for(
        "the page to show complete totals and say 900 counters are too many to list",
        Duration::from_secs(30),
        || {
            let page = counters_shown(&mut browser);
            let note = page["note"].as_str().unwrap_or("");
            let moving = page["operations"].as_f64().is_some_and(|n| n > 0.0);
            (note.starts_with("900 counters: too many to list")
                && page["rows"] == 0
                && page["complete"] == "complete"
                && moving)
                .then(|| page.clone())
                .ok_or(page.to_string())
        },
    );
    let before = shown["operations"].as_f64().unwrap_or(0.0);
    wait_for("the totals to move on", Duration::from_secs(30), || {
        let page = counters_shown(&mut browser);
        (page["operations"].as_f64().is_some_and(|n| n > before) && page["rows"] == 0)
            .then_some(())
            .ok_or(page.to_string())
    });
    println!(
        "dashboard of 900 counters: {}",
        browser.screenshot("dashboard-many-counters.png")
    );
}

/// A worker that leaves for a while is shown departed, with the count it took; the
/// collection stays complete.
#[test]
fn the_dashboard_shows_a_departed_worker_with_its_count() {
    let test = "the_dashboard_shows_a_departed_worker_with_its_count";
    if !tool_or_skip("chromium", test) {
        return;
    }
    let (mut cluster, http) = Cluster::start_with_http(
        &["coordinator", "worker-1", "worker-2"],
        &["--counters", "2"],
    );
    cluster.wait_mesh(6);
    let via = cluster.nodes[0].addr.clone();
    crate::util::client_ok(&["incr", "worker-2/1", "--by", "1234", "--join", &via]);
    let mut browser = Browser::open(&format!("http://{}/", http[0]));
    let read = r#"JSON.stringify({
  departed: document.getElementById('departed').textContent,
  complete: document.getElementById('complete').textContent
})"#;
    wait_for(
        "the page to show nobody departed",
        Duration::from_secs(30),
        || {
            let page = browser.eval(read);
            let page: Value =
                serde_json::from_str(page.as_str().unwrap_or("null")).unwrap_or_default();
            (page["departed"] == "none")
                .then_some(())
                .ok_or(page.to_string())
        },
    );
    let worker_2 = cluster.nodes[2].addr.clone();
    crate::util::client_ok(&["leave", "--join", &worker_2]);
    assert_eq!(cluster.nodes[2].wait_exit(Duration::from_secs(20)), Some(0));
    wait_for(
        "the page to show worker-2 departed with 1,234",
        Duration::from_secs(30),
        || {
            let page = browser.eval(read);
            let page: Value =
                serde_json::from_str(page.as_str().unwrap_or("null")).unwrap_or_default();
            (page["departed"] == "worker-2: 1,234" && page["complete"] == "complete")
                .then_some(())
                .ok_or(page.to_string())
        },
    );
    println!(
        "dashboard with a departed worker: {}",
        browser.screenshot("dashboard-departed.png")
    );
}
