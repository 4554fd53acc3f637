//! The Swarm test: `deploy/swarm/stack.yml` deployed on this machine's swarm (a
//! single-node one made for the test if the machine is in none, and left again after),
//! grown and shrunk with `docker service scale` while every node runs its load (3
//! workers, then 8, 3 and 8 again: each step formed and complete within 10 s), and
//! exact at the end, once every slot is back: every node issued its whole budget (a worker scaled away and back
//! counts what it issued before), `total == issued`, nothing in flight, nothing
//! unvouched, and what every node applied from each sender is what that sender issued.
//!
//! It needs Docker and the image (`scripts/build-image.sh`), so it is `#[ignore]`d;
//! `.ci/run` runs it with `cargo test --release --test swarm -- --ignored`. It leaves
//! the machine's Docker as it found it: the stack, its volumes and secrets removed, and
//! the swarm left if the test made it.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]
// Test helpers are `pub` for the test modules; the test binary has no public API.
#![allow(unreachable_pub)]

#[allow(dead_code)]
#[path = "../cluster/util.rs"]
mod util;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{
    applied_from, client_ok, figure, free_port, run_program as run, stats_within, succeeded as ok,
    wait_for, COOKIE,
};

/// Operations each node issues in all (at `LOAD` a second: about 40 s of load, so the
/// scaling happens while it runs).
const BUDGET: u64 = 4_000;
/// The longest a scaling step may take to be formed and complete (issue 25's goal).
const STEP: Duration = Duration::from_secs(10);
const LOAD: &str = "100";
const COUNTERS: u64 = 2;

fn swarm_state() -> String {
    ok(
        run("docker", &["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        "docker info",
    )
}

/// The stack under a name of its own, removed when dropped (with its volumes, and the
/// swarm if the test made it).
struct Stack {
    name: String,
    port: u16,
    /// The secrets' files and the override file.
    files: tempfile::TempDir,
    made_swarm: bool,
    workers: u64,
}

impl Stack {
    fn deploy(workers: u64) -> Stack {
        let made_swarm = match swarm_state().as_str() {
            "active" => false,
            "inactive" => {
                ok(
                    run(
                        "docker",
                        &["swarm", "init", "--advertise-addr", "127.0.0.1"],
                    ),
                    "docker swarm init",
                );
                true
            }
            other => panic!("this machine's swarm is '{other}': neither in one nor out"),
        };
        let files = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (file, secret) in [("cookie", COOKIE), ("http-token", "swarm-test-token")] {
            let path = files.path().join(file);
            std::fs::write(&path, secret).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // Each node stops its load once it has issued its budget: the one setting the
        // test adds to the stack file, through the environment.
        let budget = format!(
            "version: \"3.8\"\nservices:\n  coordinator:\n    environment:\n      NODE_LOAD_OPS: \"{BUDGET}\"\n  worker:\n    environment:\n      NODE_LOAD_OPS: \"{BUDGET}\"\n"
        );
        std::fs::write(files.path().join("budget.yml"), budget).unwrap();
        let stack = Stack {
            name: format!("swtest{}", std::process::id()),
            port: free_port(),
            files,
            made_swarm,
            workers,
        };
        let stack_file =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/swarm/stack.yml");
        let out = Command::new("docker")
            .args(["stack", "deploy", "-c"])
            .arg(&stack_file)
            .arg("-c")
            .arg(stack.files.path().join("budget.yml"))
            .arg(&stack.name)
            .env("COOKIE_FILE", stack.files.path().join("cookie"))
            .env("HTTP_TOKEN_FILE", stack.files.path().join("http-token"))
            .env("CLUSTER_PORT", stack.port.to_string())
            .env("HTTP_PORT", free_port().to_string())
            .env("WORKERS", workers.to_string())
            .env("COUNTERS", COUNTERS.to_string())
            .env("LOAD", LOAD)
            .output()
            .unwrap();
        ok(out, "docker stack deploy");
        stack
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker service scale STACK_worker=N`, then waits until the coordinator sees the
    /// N + 1 nodes, complete; how long that took from the command. (The command is
    /// detached: attached, it also waits out Swarm's own check that the tasks stay up,
    /// which is not the cluster's doing.)
    fn scale(&mut self, workers: u64) -> Duration {
        let service = format!("{}_worker={workers}", self.name);
        let started = Instant::now();
        ok(
            run("docker", &["service", "scale", "--detach", &service]),
            "docker service scale",
        );
        self.workers = workers;
        self.wait_complete();
        let took = started.elapsed();
        println!(
            "swarm: scaled to {workers} workers: formed and complete {} ms after the command",
            took.as_millis()
        );
        assert!(took <= STEP, "scaling to {workers} workers took {took:?}");
        took
    }

    /// Waits until a collection through the coordinator is complete with every node.
    fn wait_complete(&self) -> Value {
        let nodes = self.workers + 1;
        wait_for(
            &format!("a complete collection of {nodes} nodes"),
            Duration::from_secs(60),
            || {
                let s = stats_within(&self.addr(), "0.5")?;
                let seen = (s["complete"].as_bool(), s["num_nodes"].as_u64());
                (seen == (Some(true), Some(nodes)) && s["num_counters"] == nodes * COUNTERS)
                    .then_some(s.clone())
                    .ok_or_else(|| format!("saw (complete, nodes) = {seen:?}"))
            },
        )
    }

    /// The stack's volumes (a worker's is named after its service and slot).
    fn volumes(&self) -> Vec<String> {
        let listed = ok(
            run("docker", &["volume", "ls", "--format", "{{.Name}}"]),
            "docker volume ls",
        );
        listed
            .lines()
            .filter(|v| v.starts_with(&format!("{}_", self.name)))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in ["coordinator", "worker"] {
                let logs = run(
                    "docker",
                    &[
                        "service",
                        "logs",
                        "--raw",
                        "--tail",
                        "20",
                        &format!("{}_{service}", self.name),
                    ],
                );
                eprintln!(
                    "---- {service} ----\n{}",
                    String::from_utf8_lossy(&logs.stdout)
                );
            }
        }
        let _ = run("docker", &["stack", "rm", &self.name]);
        // The volumes can go once the tasks' containers have.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let volumes = self.volumes();
            let removed = volumes.is_empty()
                || run(
                    "docker",
                    &[
                        &["volume", "rm"][..],
                        &volumes.iter().map(String::as_str).collect::<Vec<_>>(),
                    ]
                    .concat(),
                )
                .status
                .success();
            if removed || Instant::now() > deadline {
                if !removed {
                    eprintln!("could not remove the volumes {volumes:?}");
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if self.made_swarm {
            let _ = run("docker", &["swarm", "leave", "--force"]);
        }
    }
}

/// The names of the nodes in collection `s`, in its order.
fn node_names(s: &Value) -> Vec<String> {
    s["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
#[ignore = "needs Docker and the image: run by .ci/run"]
fn service_scale_grows_and_shrinks_the_cluster_under_load_and_it_ends_exact() {
    let mut stack = Stack::deploy(3);
    let formed = Instant::now();
    stack.wait_complete();
    println!(
        "swarm: 4 nodes complete {} ms after deploy returned",
        formed.elapsed().as_millis()
    );
    stack.scale(8);
    // A change of our own on a worker that is scaled away and back.
    client_ok(&[
        "incr",
        "worker-5/0",
        "--by",
        "1000000",
        "--join",
        &stack.addr(),
    ]);
    let s = stack.wait_complete();
    let names = node_names(&s);
    let slots: Vec<String> = (1..=8).map(|n| format!("worker-{n}")).collect();
    assert_eq!(names[0], "coordinator", "{s}");
    assert_eq!(names[1..], slots, "a task slot names its node");
    stack.scale(3);
    let kept = node_names(&stack.wait_complete());
    println!("swarm: Swarm kept {kept:?}");
    // Every slot back, on its own volume: once the load ends, the counts can be
    // checked whole.
    stack.scale(8);
    assert_eq!(
        stack.volumes().len(),
        9,
        "one volume for the coordinator and one per worker slot: {:?}",
        stack.volumes()
    );

    // The load ends; then the invariant holds exactly.
    let nodes = stack.workers as i128 + 1;
    let settled = Instant::now();
    let s = wait_for(
        "every budget issued, nothing in flight",
        Duration::from_secs(120),
        || {
            let s = stats_within(&stack.addr(), "0.5")?;
            let done = s["complete"] == true
                && figure(&s["issued_operations"]).unwrap() == nodes * i128::from(BUDGET)
                && figure(&s["in_flight_operations"]).unwrap() == 0;
            done.then_some(s.clone()).ok_or_else(|| {
                format!(
                    "complete {}, issued {}, in flight {}",
                    s["complete"], s["issued_operations"], s["in_flight_operations"]
                )
            })
        },
    );
    println!(
        "swarm: the load done and settled {} ms later",
        settled.elapsed().as_millis()
    );
    let ours = 1_000_000i128;
    assert_eq!(
        (
            figure(&s["total_value"]).unwrap(),
            figure(&s["total_operations"]).unwrap()
        ),
        (
            figure(&s["issued_value"]).unwrap() + ours,
            figure(&s["issued_operations"]).unwrap() + 1
        ),
        "totals are not what was issued plus our one change: {s}"
    );
    assert_eq!(
        (
            figure(&s["unvouched_operations"]).unwrap(),
            figure(&s["unvouched_value"]).unwrap()
        ),
        (0, 0),
        "{s}"
    );
    // Per sender: what every node applied from it is what it issued.
    for sender in s["nodes"].as_array().unwrap() {
        let name = sender["name"].as_str().unwrap();
        let (value, operations) = applied_from(&s, name);
        assert_eq!(
            (value, operations),
            (
                figure(&sender["issued_value"]).unwrap(),
                figure(&sender["issued_operations"]).unwrap()
            ),
            "what the nodes applied from {name}: {s}"
        );
    }
    println!(
        "swarm: exact ({} operations, value {})",
        s["total_operations"], s["total_value"]
    );
}
