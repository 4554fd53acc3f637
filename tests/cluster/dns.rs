//! DNS discovery: `--join NAME`, a name whose every address is a member, resolved again
//! and again. The nodes run in a network namespace of their own, whose `/etc/hosts`
//! gives the name `nodes` one address per node on the namespace's loopback
//! (`ip netns exec` mounts `/etc/netns/NS/hosts` over `/etc/hosts`): the system's real
//! resolver answering with several addresses, as Docker's DNS does for a scaled
//! service and Kubernetes' for a headless one.
//!
//! Needs root and `ip` (iproute2), as the partition tests do; skipped loudly without
//! them, and failing instead where `REQUIRE_NETNS` is set (CI).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::run;
use crate::util::{lines_with, node_bin, wait_for, Certs, NodeProc, COOKIE};

/// A network namespace with its loopback up and its own hosts file.
struct Names {
    ns: String,
    dir: PathBuf,
}

impl Names {
    fn create(tag: &str) -> Result<Names, String> {
        let ns = format!("ccd{tag}-{}", std::process::id() % 16_000);
        run(&["ip", "netns", "add", &ns])?;
        let names = Names {
            dir: PathBuf::from("/etc/netns").join(&ns),
            ns,
        };
        // From here on, Drop cleans up whatever was made.
        std::fs::create_dir_all(&names.dir).map_err(|e| format!("/etc/netns: {e}"))?;
        names.set(&[])?;
        run(&["ip", "-n", &names.ns, "link", "set", "lo", "up"])?;
        Ok(names)
    }

    /// `nodes` now names these addresses, and `n1`..`n3` name 127.0.10.1..3 (the
    /// host names nodes advertise, as containers do). The file is rewritten in place:
    /// the mount each node's `ip netns exec` made shows the same file.
    fn set(&self, addrs: &[&str]) -> Result<(), String> {
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for n in 1..=3 {
            hosts.push_str(&format!("127.0.10.{n} n{n}\n"));
        }
        for addr in addrs {
            hosts.push_str(&format!("{addr} nodes\n"));
        }
        std::fs::write(self.dir.join("hosts"), hosts).map_err(|e| format!("hosts: {e}"))
    }

    fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", self.ns.as_str()]
    }

    /// A node named `name` listening on `ip`'s port 4697 in the namespace.
    fn node(&self, name: &str, ip: &str, extra: &[&str]) -> NodeProc {
        let extra = [&["--counters", "2"], extra].concat();
        NodeProc::start_at(name, &format!("{ip}:4697"), &extra, &self.prefix())
    }

    /// `node stats --json` through `addr`, from inside the namespace.
    fn stats(&self, addr: &str) -> Result<Value, String> {
        self.stats_with(addr, &[])
    }

    /// `node stats --json` through `addr` with `extra` arguments, from inside the
    /// namespace.
    fn stats_with(&self, addr: &str, extra: &[String]) -> Result<Value, String> {
        let bin = node_bin();
        let mut args: Vec<&str> = self.prefix().to_vec();
        args.extend([
            bin.to_str().unwrap(),
            "stats",
            "--json",
            "--join",
            addr,
            "--cookie",
            COOKIE,
        ]);
        args.extend(extra.iter().map(String::as_str));
        let out = Command::new(args[0])
            .args(&args[1..])
            .env_remove("RUST_LOG")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("invalid JSON: {e}"))
    }

    /// Waits until a collection through `addr` sees `nodes` nodes, complete.
    fn wait_nodes(&self, addr: &str, nodes: u64, within: Duration) {
        wait_for(
            &format!("{nodes} nodes, complete, through {addr}"),
            within,
            || {
                let s = self.stats(addr)?;
                let seen = (s["num_nodes"].as_u64(), s["complete"].as_bool());
                if seen == (Some(nodes), Some(true)) {
                    Ok(())
                } else {
                    Err(format!("saw (nodes, complete) = {seen:?}"))
                }
            },
        );
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The namespace, or `None` after saying loudly why the test is skipped (a failure
/// where `REQUIRE_NETNS` is set).
fn names_or_skip(test: &str, tag: &str) -> Option<Names> {
    match Names::create(tag) {
        Ok(names) => Some(names),
        Err(why) if std::env::var_os("REQUIRE_NETNS").is_some() => {
            panic!("{test}: cannot make a network namespace ({why}) and REQUIRE_NETNS is set")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: cannot make a network namespace ({why}); run as root");
            None
        }
    }
}

const RESOLVED: &str = "seed: the name resolves to these addresses";

/// How long a node leaves an address that sorts before its own to dial it first (the
/// node's `seeds::DEFER_DIAL`).
const DEFER_DIAL: Duration = Duration::from_secs(1);

/// Three nodes, each told only `--join nodes` (no port: the default one) and
/// advertising a host name of its own (as in containers), find each other through the
/// name's three addresses; none dials itself, no pair dials each other twice (the
/// node whose address sorts first dials; the other sees the session come from the
/// address it deferred), and forming the cluster logs nothing at WARN.
#[test]
fn every_address_of_a_name_is_joined_and_a_nodes_own_is_left_out() {
    let test = "every_address_of_a_name_is_joined_and_a_nodes_own_is_left_out";
    let Some(names) = names_or_skip(test, "a") else {
        return;
    };
    let ips = ["127.0.10.1", "127.0.10.2", "127.0.10.3"];
    names.set(&ips).unwrap();
    // Highest address first, each listening before the next starts: the node that
    // dials a pair finds the other up (a refused first dial would be logged).
    let mut nodes = Vec::new();
    for (i, ip) in ips.iter().enumerate().rev() {
        let name = format!("n{}", i + 1);
        let role = if i == 0 { "coordinator" } else { "worker" };
        let args = [
            "--role",
            role,
            "--join",
            "nodes",
            "--advertise",
            name.as_str(),
        ];
        let node = names.node(&name, ip, &args);
        node.wait_for_log("the node started", "node started", Duration::from_secs(10));
        nodes.push(node);
    }
    for ip in ips {
        names.wait_nodes(&format!("{ip}:4697"), 3, Duration::from_secs(20));
    }
    // A deferred address is dialed after a second if nothing came from it: watch for
    // twice that, the cluster whole all along.
    let watch = Instant::now() + DEFER_DIAL * 2;
    while Instant::now() < watch {
        for ip in ips {
            let s = names.stats(&format!("{ip}:4697")).unwrap();
            let seen = (s["num_nodes"].as_u64(), s["complete"].as_bool());
            assert_eq!(seen, (Some(3), Some(true)), "through {ip}");
        }
    }
    for node in &nodes {
        let log = node.log();
        let resolved = log.lines().find(|l| l.contains(RESOLVED));
        let resolved = resolved.unwrap_or_else(|| panic!("{}: no seed line:\n{log}", node.name));
        for ip in ips {
            assert!(resolved.contains(ip), "{}: {resolved}", node.name);
        }
        let name = &node.name;
        assert_eq!(
            lines_with(&log, "own name"),
            0,
            "{name} dialed itself:\n{log}"
        );
        assert_eq!(lines_with(&log, " WARN "), 0, "{name} warned:\n{log}");
        assert_eq!(lines_with(&log, " ERROR "), 0, "{name} erred:\n{log}");
        // Each session was opened once: two peers connected, never lost.
        assert_eq!(lines_with(&log, "peer connected"), 2, "{name}:\n{log}");
    }
}

/// A node whose name gives only itself waits alone; once the name also gives a second
/// node (one that dials nobody), the next resolution finds it and the two form a
/// cluster.
#[test]
fn a_replica_added_later_is_found_when_the_name_is_resolved_again() {
    let test = "a_replica_added_later_is_found_when_the_name_is_resolved_again";
    let Some(names) = names_or_skip(test, "b") else {
        return;
    };
    names.set(&["127.0.10.1"]).unwrap();
    let seeker = names.node(
        "seeker",
        "127.0.10.1",
        &["--role", "worker", "--join", "nodes"],
    );
    seeker.wait_for_log("the name resolved", RESOLVED, Duration::from_secs(10));
    // A coordinator with no --join: it never dials, so only the seeker can join them.
    let found = names.node("found", "127.0.10.2", &["--role", "coordinator"]);
    names.wait_nodes("127.0.10.2:4697", 1, Duration::from_secs(10));
    names.set(&["127.0.10.1", "127.0.10.2"]).unwrap();
    names.wait_nodes("127.0.10.2:4697", 2, Duration::from_secs(15));
    names.wait_nodes("127.0.10.1:4697", 2, Duration::from_secs(5));
    let log = seeker.log();
    assert_eq!(lines_with(&log, RESOLVED), 2, "{log}");
    drop(found);
}

/// With mutual TLS, a node found through a name is checked against that name: the
/// certificates name their node and `nodes` (`SAN=DNS:nodes`), not the addresses the
/// name gives, so the cluster forms only if the dial asks for `nodes`.
#[test]
fn with_tls_an_address_a_name_gave_is_checked_against_the_name() {
    let test = "with_tls_an_address_a_name_gave_is_checked_against_the_name";
    let Some(names) = names_or_skip(test, "c") else {
        return;
    };
    names.set(&["127.0.10.1", "127.0.10.2"]).unwrap();
    let certs = Certs::make_with_san(&["n1", "n2", "client"], "DNS:nodes");
    let tls = |name: &str| certs.args(name);
    let mut nodes = Vec::new();
    for (name, ip) in [("n2", "127.0.10.2"), ("n1", "127.0.10.1")] {
        let mut args = vec!["--join".to_string(), "nodes".to_string()];
        args.extend(tls(name));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = names.node(name, ip, &args);
        node.wait_for_log("the node started", "node started", Duration::from_secs(10));
        nodes.push(node);
    }
    let client = tls("client");
    wait_for(
        "2 nodes, complete, over TLS",
        Duration::from_secs(20),
        || {
            let s = names.stats_with("nodes", &client)?;
            let seen = (s["num_nodes"].as_u64(), s["complete"].as_bool());
            if seen == (Some(2), Some(true)) {
                Ok(())
            } else {
                Err(format!("saw (nodes, complete) = {seen:?}"))
            }
        },
    );
    for node in &nodes {
        let log = node.log();
        assert_eq!(lines_with(&log, " WARN "), 0, "{}:\n{log}", node.name);
    }
}
