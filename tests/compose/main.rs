//! Compose tests: the cluster of `docker-compose.yml` (a coordinator and the scaled
//! service `worker`, two replicas unless scaled), in real containers, with faults
//! injected through Compose and Docker. Each scenario runs under its own Compose
//! project name and host port and takes it down when it ends, also on failure.
//!
//! A scaled worker takes its name from the slot it holds in the shared volume, not
//! from its container, so a scenario finds the container of node `worker-2` by the
//! host name the node advertises ([`Project::container_of`]).
//!
//! They need Docker, Compose (`docker compose` or `docker-compose`) and the image
//! (`scripts/build-image.sh`), so they are `#[ignore]`d; `.ci/run` builds the image and
//! runs them with `cargo test --release --test compose -- --ignored --test-threads 1`.
//! Each prints its detection and recovery times (see BENCHMARKS.md).

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]
// Test helpers are `pub` for the test modules; the test binary has no public API.
#![allow(unreachable_pub)]

#[allow(dead_code)]
#[path = "../cluster/util.rs"]
mod util;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{
    client_ok, free_port, node_entry, run_program as run, stats_within, succeeded as ok,
    time_until, wait_for, COOKIE,
};

const DETECT: Duration = Duration::from_secs(2);
const REJOIN: Duration = Duration::from_secs(5);

fn compose_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docker-compose.yml")
}

fn compose_tool() -> Vec<String> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// One Compose project: the cluster under a name of its own.
struct Project {
    name: String,
    /// Workers it runs (the service's replicas; with TLS, the named workers).
    workers: usize,
    port: u16,
    /// The coordinator's HTTP port on the host.
    http_port: u16,
    tool: Vec<String>,
    load: &'static str,
    /// Copies of each node's store (`COPIES`).
    copies: &'static str,
    /// With mutual TLS: the certificates (`docker-compose.tls.yml`).
    certs: Option<tempfile::TempDir>,
}

impl Project {
    /// `up -d` with `LOAD` ops/s per node and 2 counters per node; waits until the
    /// coordinator sees the complete cluster.
    fn up(scenario: &str, load: &'static str) -> Project {
        Self::up_with(scenario, load, "1", None)
    }

    /// [`Project::up`] with `COPIES` copies of each node's store.
    fn up_copies(scenario: &str, load: &'static str, copies: &'static str) -> Project {
        Self::up_with(scenario, load, copies, None)
    }

    /// The same with mutual TLS, certificates made by `scripts/make-certs.sh` the way
    /// `TLS=1 scripts/compose.sh` makes them.
    fn up_tls(scenario: &str) -> Project {
        let certs = tempfile::tempdir().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-certs.sh");
        let dir = certs.path().to_str().unwrap();
        ok(
            run(
                "bash",
                &[
                    script.to_str().unwrap(),
                    dir,
                    "coordinator",
                    "worker-1",
                    "worker-2",
                    "client",
                ],
            ),
            "make-certs",
        );
        // As scripts/compose.sh does: the nodes' keys readable by the group.
        use std::os::unix::fs::PermissionsExt;
        for file in [
            "coordinator-key.pem",
            "worker-1-key.pem",
            "worker-2-key.pem",
        ] {
            std::fs::set_permissions(
                certs.path().join(file),
                std::fs::Permissions::from_mode(0o640),
            )
            .unwrap();
        }
        std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        Self::up_with(scenario, "0", "1", Some(certs))
    }

    fn up_with(
        scenario: &str,
        load: &'static str,
        copies: &'static str,
        certs: Option<tempfile::TempDir>,
    ) -> Project {
        let project = Project {
            name: format!("cctest{}{scenario}", std::process::id()),
            workers: 2,
            port: free_port(),
            http_port: free_port(),
            tool: compose_tool(),
            load,
            copies,
            certs,
        };
        ok(project.compose(&["up", "-d"]), "compose up");
        project.wait_complete(Duration::from_secs(30));
        project
    }

    fn compose(&self, args: &[&str]) -> Output {
        let file = compose_file();
        let mut command = Command::new(&self.tool[0]);
        command
            .args(&self.tool[1..])
            .args(["-p", &self.name, "-f"])
            .arg(&file);
        if let Some(certs) = &self.certs {
            command
                .arg("-f")
                .arg(file.with_file_name("docker-compose.tls.yml"))
                .env("CERTS_DIR", certs.path())
                .env("HOST_GID", gid());
        }
        command
            .args(args)
            .env("NODE_COOKIE", COOKIE)
            .env("CLUSTER_PORT", self.port.to_string())
            .env("HTTP_PORT", self.http_port.to_string())
            .env("NODE_HTTP_TOKEN", HTTP_TOKEN)
            .env("COUNTERS", "2")
            .env("LOAD", self.load)
            .env("COPIES", self.copies);
        command.output().expect("cannot run compose")
    }

    /// The coordinator's address on the host.
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn container(&self, service: &str) -> String {
        ok(self.compose(&["ps", "-q", service]), "compose ps")
    }

    /// The names of the nodes it runs: the coordinator and worker-1, worker-2, ...
    fn nodes(&self) -> Vec<String> {
        std::iter::once("coordinator".to_string())
            .chain((1..=self.workers).map(|n| format!("worker-{n}")))
            .collect()
    }

    /// The container of node `node`. With TLS each node is a service of its own; a
    /// scaled worker is the replica whose host name the node advertises.
    fn container_of(&self, node: &str) -> String {
        if node == "coordinator" || self.certs.is_some() {
            return self.container(node);
        }
        let advertised = wait_for(&format!("{node} to be in a collection"), REJOIN, || {
            let s = self.stats()?;
            let addr = node_entry(&s, node)
                .and_then(|n| n["advertise"].as_str())
                .ok_or_else(|| format!("no address for {node} in {s}"))?;
            Ok(addr
                .rsplit_once(':')
                .map_or(addr, |(host, _)| host)
                .to_string())
        });
        let replicas = self.container("worker");
        replicas
            .lines()
            .find(|id| {
                let host = ok(
                    run("docker", &["inspect", "-f", "{{.Config.Hostname}}", id]),
                    "docker inspect",
                );
                host == advertised
            })
            .unwrap_or_else(|| panic!("no replica of worker has host name {advertised} ({node})"))
            .to_string()
    }

    /// `up -d --scale worker=N` (a cluster of N + 1 nodes); waits until the
    /// coordinator sees all of them, complete.
    fn scale(&mut self, workers: usize) -> Duration {
        let scale = format!("worker={workers}");
        ok(
            self.compose(&["up", "-d", "--scale", &scale]),
            "compose up --scale",
        );
        self.workers = workers;
        self.wait_complete(Duration::from_secs(30))
    }

    fn network(&self) -> String {
        format!("{}_cluster", self.name)
    }

    /// A collection run inside node `node`'s container, through that node.
    fn stats_in(&self, node: &str) -> Result<Value, String> {
        let id = self.container_of(node);
        let out = run(
            "docker",
            &[
                "exec",
                &id,
                "/usr/local/bin/node",
                "stats",
                "--json",
                "--deadline",
                "0.3",
            ],
        );
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// `--tls-cert ... --tls-key ... --tls-ca ...` for a client on the host.
    fn client_tls(&self) -> Vec<String> {
        let Some(certs) = &self.certs else {
            return Vec::new();
        };
        let path = |f: &str| certs.path().join(f).to_str().unwrap().to_string();
        vec![
            "--tls-cert".into(),
            path("client.pem"),
            "--tls-key".into(),
            path("client-key.pem"),
            "--tls-ca".into(),
            path("ca.pem"),
        ]
    }

    /// `node stats --json` from the host through the coordinator.
    fn stats(&self) -> Result<Value, String> {
        if self.certs.is_none() {
            return stats_within(&self.addr(), "0.3");
        }
        let out = Command::new(util::node_bin())
            .args([
                "stats",
                "--json",
                "--deadline",
                "0.3",
                "--join",
                &self.addr(),
            ])
            .args(["--cookie", COOKIE])
            .args(self.client_tls())
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    fn complete(&self) -> Result<Value, String> {
        let s = self.stats()?;
        let nodes = self.workers as u64 + 1;
        if s["complete"] == true && s["num_nodes"] == nodes && s["num_counters"] == 2 * nodes {
            Ok(s)
        } else {
            Err(format!("not complete: {s}"))
        }
    }

    fn wait_complete(&self, timeout: Duration) -> Duration {
        time_until(
            "the complete cluster through the coordinator",
            timeout,
            || self.complete(),
        )
        .1
    }

    /// Every node's own view is complete: the full mesh.
    fn wait_mesh(&self) {
        let nodes = self.workers as u64 + 1;
        for node in self.nodes() {
            wait_for(&format!("{node}'s view to be complete"), REJOIN, || {
                let s = self.stats_in(&node)?;
                (s["complete"] == true && s["num_nodes"] == nodes)
                    .then_some(())
                    .ok_or_else(|| format!("{node} sees {s}"))
            });
        }
    }

    /// Every container reports healthy, and runs as `user` (never root).
    fn wait_healthy_as(&self, user: &str) {
        for service in self.nodes() {
            let id = self.container_of(&service);
            wait_for(
                &format!("{service} to be healthy"),
                Duration::from_secs(30),
                || {
                    let status = ok(
                        run(
                            "docker",
                            &["inspect", "-f", "{{.State.Health.Status}}", &id],
                        ),
                        "docker inspect",
                    );
                    (status == "healthy").then_some(()).ok_or(status)
                },
            );
            let runs_as = ok(
                run("docker", &["inspect", "-f", "{{.Config.User}}", &id]),
                "inspect",
            );
            assert_eq!(runs_as, user, "{service} runs as {runs_as}");
        }
    }

    fn wait_unreachable(&self, name: &str) -> Duration {
        time_until(&format!("{name} declared unreachable"), REJOIN, || {
            let s = self.stats()?;
            match node_entry(&s, name).map(|n| n["reachable"].clone()) {
                Some(Value::Bool(false)) => Ok(()),
                other => Err(format!("{name} reachable = {other:?}")),
            }
        })
        .1
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.compose(&["logs", "--no-color", "--tail", "30"]);
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
        }
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "10"]);
    }
}

/// This user's group id (`id -g`), for `HOST_GID`.
fn gid() -> String {
    ok(run("id", &["-g"]), "id -g")
}

fn report(what: &str, detected: Duration, recovered: Duration) {
    println!(
        "compose {what}: detected in {} ms, complete again {} ms after the fault ended",
        detected.as_millis(),
        recovered.as_millis()
    );
    assert!(detected <= DETECT, "{what}: detection took {detected:?}");
    assert!(recovered <= REJOIN, "{what}: recovery took {recovered:?}");
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn up_forms_the_cluster_with_exact_totals_and_healthy_containers() {
    let p = Project::up("up", "0");
    let addr = p.addr();
    client_ok(&["incr", "worker-1/0", "--by", "5", "--join", &addr]);
    client_ok(&["decr", "worker-2/1", "--by", "2", "--join", &addr]);
    client_ok(&["incr", "coordinator/0", "--by", "10", "--join", &addr]);
    let s = p.complete().unwrap();
    assert_eq!(
        (s["total_value"].as_i64(), s["total_operations"].as_u64()),
        (Some(13), Some(3))
    );
    p.wait_mesh();
    p.wait_healthy_as("10001:10001");

    // The coordinator's HTTP side, published on the host's loopback: probes are open,
    // reads need the token (the nodes listen beyond loopback in their containers).
    let http = format!("127.0.0.1:{}", p.http_port);
    let (status, body) = http_get(&http, "/health/ready", None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(&http, "/stats", None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = http_get(&http, "/stats", Some(HTTP_TOKEN));
    assert_eq!(status, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s["total_value"].as_i64(), s["num_nodes"].as_u64()),
        (Some(13), Some(3)),
        "{s}"
    );
}

/// The token the compose scenarios give the nodes' HTTP sides.
const HTTP_TOKEN: &str = "compose-test-http-token";

/// `GET PATH` on `addr` (with the bearer `token`, if any): the status and the body.
fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("cannot reach the HTTP port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    (status, body.to_string())
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn killed_worker_is_reported_and_comes_back() {
    let p = Project::up("kill", "20");
    // A step far beyond what the load moves a counter in this test (a few units per
    // operation): the value after the restart shows whether it was kept.
    let before: i64 = client_ok(&["incr", "worker-2/1", "--by", "1000000", "--join", &p.addr()])
        .parse()
        .unwrap();
    // The container is started again; it takes the slot its node freed (the only one
    // free), so it is worker-2 again, with worker-2's counts.
    let id = p.container_of("worker-2");
    ok(run("docker", &["kill", &id]), "docker kill");
    let detected = p.wait_unreachable("worker-2");
    ok(run("docker", &["start", &id]), "docker start");
    let recovered = p.wait_complete(2 * REJOIN);
    report("kill/start worker", detected, recovered);
    p.wait_mesh();
    let after: i64 = client_ok(&["get", "worker-2/1", "--join", &p.addr()])
        .parse()
        .unwrap();
    assert!(
        (after - before).abs() < 10_000,
        "worker-2/1 was {before} before the kill and is {after} after it"
    );
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn paused_worker_is_reported_while_stats_keep_answering() {
    let p = Project::up("pause", "20");
    let id = p.container_of("worker-2");
    ok(run("docker", &["pause", &id]), "docker pause");
    let paused = Instant::now();
    let started = Instant::now();
    let s = stats_within(&p.addr(), "0.5").unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "stats took {:?}",
        started.elapsed()
    );
    assert_eq!(s["complete"], false);
    p.wait_unreachable("worker-2");
    let detected = paused.elapsed();
    ok(run("docker", &["unpause", &id]), "docker unpause");
    let recovered = p.wait_complete(2 * REJOIN);
    report("pause/unpause worker", detected, recovered);
    p.wait_mesh();
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn disconnected_worker_is_reported_and_heals() {
    let p = Project::up("net", "20");
    let (net, id) = (p.network(), p.container_of("worker-2"));
    let host = ok(
        run("docker", &["inspect", "-f", "{{.Config.Hostname}}", &id]),
        "docker inspect",
    );
    ok(
        run("docker", &["network", "disconnect", &net, &id]),
        "network disconnect",
    );
    let detected = p.wait_unreachable("worker-2");
    // Reconnect under the service's DNS name and the host name the node advertises,
    // which the other nodes dial.
    ok(
        run(
            "docker",
            &[
                "network", "connect", "--alias", "worker", "--alias", &host, &net, &id,
            ],
        ),
        "network connect",
    );
    let recovered = p.wait_complete(2 * REJOIN);
    report("network disconnect/connect worker", detected, recovered);
    p.wait_mesh();
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn restarted_coordinator_gets_both_workers_back() {
    let p = Project::up("restart", "20");
    ok(p.compose(&["restart", "coordinator"]), "compose restart");
    let recovered = p.wait_complete(2 * REJOIN);
    println!(
        "compose restart coordinator: complete {} ms after the restart",
        recovered.as_millis()
    );
    assert!(recovered <= REJOIN, "took {recovered:?}");
    p.wait_mesh();
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn down_keeps_the_counters_and_down_v_wipes_them() {
    let p = Project::up("volumes", "0");
    let addr = p.addr();
    client_ok(&["incr", "worker-1/0", "--by", "41", "--join", &addr]);
    client_ok(&["decr", "coordinator/1", "--by", "7", "--join", &addr]);
    let get = |counter: &str| client_ok(&["get", counter, "--join", &addr]);
    for (down, kept) in [
        (&["down", "-t", "10"][..], true),
        (&["down", "-v", "-t", "10"][..], false),
    ] {
        ok(p.compose(down), "compose down");
        ok(p.compose(&["up", "-d"]), "compose up");
        p.wait_complete(Duration::from_secs(30));
        let values = (get("worker-1/0"), get("coordinator/1"));
        let expected = if kept { ("41", "-7") } else { ("0", "0") };
        assert_eq!(
            (values.0.as_str(), values.1.as_str()),
            expected,
            "after compose {down:?}"
        );
    }
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn scaled_workers_form_the_cluster_and_a_scaled_away_slot_comes_back_with_its_counts() {
    let mut p = Project::up("scale", "0");
    let grown = p.scale(5);
    println!(
        "compose --scale worker=5: 6 nodes complete {} ms after up returned",
        grown.as_millis()
    );
    p.wait_mesh();
    let addr = p.addr();
    let change = |verb: &str, counter: &str, by: &str| {
        client_ok(&[verb, counter, "--by", by, "--join", &addr])
    };
    assert_eq!(change("incr", "worker-4/0", "40"), "40");
    assert_eq!(change("decr", "worker-5/1", "5"), "-5");
    assert_eq!(change("incr", "worker-1/1", "1"), "1");

    // Scaled down to two: the three replicas removed stop cleanly, the cluster is
    // complete again with three nodes, and their counts have left the totals, to be
    // listed under `departed`, each with what it took, for a while.
    p.scale(2);
    let s = p.complete().unwrap();
    assert_eq!(
        (s["num_nodes"].as_u64(), s["total_value"].as_i64()),
        (Some(3), Some(1)),
        "{s}"
    );
    let departed = s["departed"].as_array().cloned().unwrap_or_default();
    assert_eq!(departed.len(), 3, "{s}");
    assert!(
        departed
            .iter()
            .all(|d| d["for_good"] == false && d["known"] == true),
        "{s}"
    );
    let took = |field: &str| {
        departed
            .iter()
            .filter_map(|d| d[field].as_i64())
            .sum::<i64>()
    };
    assert_eq!((took("value"), took("operations")), (35, 2), "{s}");
    // Scaled up again: the new replicas take the free slots, names and counts.
    p.scale(5);
    p.wait_mesh();
    let s = p.complete().unwrap();
    assert_eq!(s["departed"].as_array().map(Vec::len), Some(0), "{s}");
    assert_eq!(
        (s["total_value"].as_i64(), s["total_operations"].as_u64()),
        (Some(36), Some(3)),
        "{s}"
    );
    let get = |counter: &str| client_ok(&["get", counter, "--join", &addr]);
    assert_eq!(
        (get("worker-4/0"), get("worker-5/1")),
        ("40".into(), "-5".into())
    );
}

/// With two copies (`COPIES=2`), a worker whose container is removed with its data (its
/// slot in the shared volume) comes back, in the replica that takes the slot, from the
/// copy of its store on another node: every count it acknowledged, none twice.
#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn a_worker_removed_with_its_data_comes_back_from_its_copy() {
    let mut p = Project::up_copies("copies", "0", "2");
    p.wait_mesh();
    let addr = p.addr();
    // Each store is copied on the next node on the ring: worker-2's on the coordinator.
    wait_for("worker-2's copy on the coordinator", REJOIN, || {
        let s = p.stats()?;
        let copy = &node_entry(&s, "worker-2").ok_or("worker-2 not in the stats")?["copy"];
        (copy["kept_by"] == "coordinator" && copy["lag_commits"] == 0)
            .then_some(())
            .ok_or(format!("worker-2's copy: {copy}"))
    });
    let change = |verb: &str, counter: &str, by: &str| {
        client_ok(&[verb, counter, "--by", by, "--join", &addr])
    };
    assert_eq!(change("incr", "worker-2/0", "7"), "7");
    assert_eq!(change("decr", "worker-2/1", "3"), "-3");
    assert_eq!(change("incr", "worker-1/0", "1"), "1");

    // Its container removed (killed first) and its slot deleted from the volume.
    let gone = p.container_of("worker-2");
    ok(run("docker", &["rm", "-f", &gone]), "docker rm -f");
    let volume = format!("{}_worker-data", p.name);
    let on_host = ok(
        run(
            "docker",
            &["volume", "inspect", "-f", "{{.Mountpoint}}", &volume],
        ),
        "docker volume inspect",
    );
    let slot = PathBuf::from(on_host).join("worker-2");
    std::fs::remove_dir_all(&slot)
        .unwrap_or_else(|e| panic!("deleting {} (needs root): {e}", slot.display()));

    // The replica Compose starts in its place takes the free slot, blank, and starts
    // from the copy.
    let took = p.scale(2);
    let back = p.container_of("worker-2");
    assert_ne!(back, gone, "worker-2 runs in a new container");
    wait_for("worker-2 to say it started from its copy", REJOIN, || {
        let logs = run("docker", &["logs", &back]);
        let said = String::from_utf8_lossy(&logs.stderr).to_string();
        said.contains("started this node's store from its copy")
            .then_some(())
            .ok_or(said)
    });
    let get = |counter: &str| client_ok(&["get", counter, "--join", &addr]);
    assert_eq!(
        (get("worker-2/0"), get("worker-2/1"), get("worker-1/0")),
        ("7".into(), "-3".into(), "1".into())
    );
    let s = p.complete().unwrap();
    assert_eq!(
        (s["total_value"].as_i64(), s["total_operations"].as_u64()),
        (Some(5), Some(3)),
        "{s}"
    );
    println!(
        "compose, COPIES=2: worker-2 removed with its data, complete again from its copy {} ms after up returned",
        took.as_millis()
    );
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn down_is_graceful_and_logs_final_values() {
    let p = Project::up("down", "20");
    let ids: Vec<(String, String)> = p
        .nodes()
        .into_iter()
        .map(|node| {
            let id = p.container_of(&node);
            (node, id)
        })
        .collect();
    let started = Instant::now();
    ok(p.compose(&["stop", "-t", "10"]), "compose stop");
    let took = started.elapsed();
    println!(
        "compose stop: all {} nodes stopped in {} ms",
        p.workers + 1,
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(10),
        "stop took {took:?}: not graceful"
    );
    for (service, id) in ids {
        let code = ok(
            run("docker", &["inspect", "-f", "{{.State.ExitCode}}", &id]),
            "inspect",
        );
        assert_eq!(code, "0", "{service} exit code");
        let logs = run("docker", &["logs", &id]);
        let text = String::from_utf8_lossy(&logs.stderr);
        for i in 0..2 {
            assert!(
                text.contains(&format!("counter={service}/{i} ")) && text.contains("final value"),
                "{service}/{i} did not log its final value:\n{text}"
            );
        }
        assert!(text.contains("node stopped"), "{service}:\n{text}");
    }
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn tls_cluster_forms_serves_certified_clients_and_refuses_plain_ones() {
    let p = Project::up_tls("tls");
    // Every node's own view over TLS links, from inside its container (the nodes'
    // certificates come from the environment the override file sets).
    p.wait_mesh();
    let s = p.complete().unwrap();
    assert_eq!(s["num_nodes"], 3, "{s}");
    // A client without a certificate is refused; the node logs it once.
    let plain = stats_within(&p.addr(), "0.3");
    let err = plain.expect_err("a plain client was served by a TLS cluster");
    assert!(err.contains("requires TLS"), "{err}");
    let id = p.container("coordinator");
    wait_for(
        "the coordinator to log the refusal",
        Duration::from_secs(10),
        || {
            let logs = run("docker", &["logs", &id]);
            let text = String::from_utf8_lossy(&logs.stderr).to_string();
            (text.matches("refused a connection").count() == 1)
                .then_some(())
                .ok_or(text)
        },
    );
    // The nodes run as uid 10001 in the certificates' group.
    p.wait_healthy_as(&format!("10001:{}", gid()));
}
