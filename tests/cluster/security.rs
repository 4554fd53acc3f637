//! The cluster secret: given by file or environment it never shows in `ps` or the logs,
//! and a cookie that cannot be used is a clear error.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{node_bin, wait_for, NodeProc};

/// `node stats --json` through `addr` with the cookie from `cookie_file`.
fn stats_with_file(addr: &str, cookie_file: &str) -> Result<Value, String> {
    let out = Command::new(node_bin())
        .args([
            "stats",
            "--json",
            "--join",
            addr,
            "--cookie-file",
            cookie_file,
        ])
        .env_remove("NODE_COOKIE")
        .env_remove("NODE_COOKIE_FILE")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// What `ps` shows for a process: its command line, NUL-separated.
fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn a_cookie_from_a_file_or_the_environment_stays_out_of_ps_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("secret-{}-{}", std::process::id(), line!());
    let path = dir.path().join("cookie");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = path.to_str().unwrap().to_string();
    let env_cookie = format!("NODE_COOKIE={secret}");

    // Everything logged, down to ractor_cluster's handshakes.
    let coordinator = NodeProc::start_at(
        "coordinator",
        &format!("127.0.0.1:{}", crate::util::free_port()),
        &["--role", "coordinator", "--cookie-file", &path],
        &["env", "RUST_LOG=trace"],
    );
    let worker = NodeProc::start_at(
        "worker-1",
        &format!("127.0.0.1:{}", crate::util::free_port()),
        &["--join", &coordinator.addr],
        &["env", "RUST_LOG=trace", &env_cookie],
    );
    wait_for(
        "both nodes to form a cluster with the file's cookie",
        Duration::from_secs(20),
        || {
            let s = stats_with_file(&worker.addr, &path)?;
            if s["complete"] == true && s["num_nodes"] == 2 {
                Ok(())
            } else {
                Err(format!("not yet: {s}"))
            }
        },
    );

    for node in [&coordinator, &worker] {
        let shown = command_line(node.child.id());
        assert!(
            !shown.is_empty() && !shown.contains(&secret),
            "{}: the secret is on the command line: {shown}",
            node.name
        );
        assert!(!node.log().is_empty(), "{}: empty log", node.name);
        assert!(
            !node.log().contains(&secret),
            "{}: the secret is in the log",
            node.name
        );
        assert!(
            !node.log().contains("development cookie"),
            "{}: fell back to the development cookie",
            node.name
        );
    }
}

#[test]
fn a_cookie_that_cannot_be_used_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", crate::util::free_port());
    let cases: [(&[&str], &str); 3] = [
        (
            &["--cookie-file", "/nonexistent/cookie"],
            "cannot read the cookie file /nonexistent/cookie",
        ),
        (&["--cookie-file", empty], "is empty"),
        (&["--cookie-file", empty, "--cookie", "x"], "given twice"),
    ];
    // A node, and a client command: both resolve the cookie the same way.
    let node: &[&str] = &["--listen", &listen];
    let client: &[&str] = &["stats", "--join", &listen];
    for (args, expected) in cases {
        for command in [node, client] {
            let out = Command::new(node_bin())
                .args(command)
                .args(args)
                .env_remove("NODE_COOKIE")
                .env_remove("NODE_COOKIE_FILE")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("{command:?} {args:?}");
            assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
            assert!(stderr.contains(expected), "{what}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        }
    }
}
