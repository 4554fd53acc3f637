//! Clear, one-line errors and non-zero exits, quickly: never a hang or a panic.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{client, free_port, node_bin, Cluster, NodeProc};

fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "expected one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn unreachable_address_fails_fast() {
    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = client(&["stats", "--join", &addr]);
    let err = one_line_error(&out);
    assert!(err.contains("cannot reach") && err.contains(&addr), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn wrong_cookie_is_an_authentication_error() {
    let cluster = Cluster::start(0, &[]);
    cluster.wait_complete(0, 1, 4);
    let started = Instant::now();
    let out = Command::new(node_bin())
        .args([
            "get",
            "coordinator/0",
            "--join",
            &cluster.nodes[0].addr,
            "--cookie",
            "not-the-cookie",
        ])
        .output()
        .unwrap();
    let err = one_line_error(&out);
    assert!(
        err.contains("authentication") && err.contains("failed"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_arguments_get_clap_errors() {
    for args in [
        vec!["--role", "leader"],
        vec!["--listen", "not-an-address"],
        vec!["--counters", "many"],
        vec!["incr", "w/1", "--by", "-5"],
        vec!["stats", "--join", "host:0"],
        vec!["--load", "100", "--load-mode", "bursty"],
        vec!["--listen", "127.0.0.1"],
        vec!["--listen", "127.0.0.1:99999"],
        vec!["--join", ":4697"],
        vec!["--join", "bad host:4697"],
        vec!["--counters", "1000001"],
        vec!["--counters", "-1"],
        vec!["--load", "-5"],
        vec!["--failure-timeout", "0.01"],
        vec!["--stats-interval", "NaN"],
        vec!["incr", "w/1", "--by", "18446744073709551616"],
        vec!["decr", "w/1", "--by", "ten"],
        vec!["incr"],
        vec!["get", "w/1", "--timeout", "-1"],
        vec!["--tls-cert", "a.pem"],
        vec!["stats", "--tls-ca", "ca.pem"],
        vec!["debug", "crash", "meteor"],
    ] {
        let out = Command::new(node_bin())
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("error:")
                && !stderr.contains("panicked")
                && !stderr.contains("stack backtrace"),
            "{args:?}: {stderr}"
        );
    }
    let help = Command::new(node_bin()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--role",
        "--join",
        "--listen",
        "--advertise",
        "--cookie",
        "--cookie-file",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--load",
        "--stats-interval",
        "--load-mode",
        "stats",
        "incr",
        "health",
    ] {
        assert!(text.contains(flag), "--help does not explain {flag}");
    }
}

#[test]
fn node_refuses_unsafe_or_impossible_starts() {
    // Listening beyond loopback without a cookie.
    let out = Command::new(node_bin())
        .args(["--listen", &format!("0.0.0.0:{}", free_port())])
        .env_remove("NODE_COOKIE")
        .output()
        .unwrap();
    let err = one_line_error(&out);
    assert!(err.contains("without a cookie"), "{err}");

    // A port that is already taken.
    let first = NodeProc::start("first", &[]);
    crate::util::wait_for("the first node to serve", Duration::from_secs(10), || {
        crate::util::stats(&first.addr).map(|_| ())
    });
    let out = Command::new(node_bin())
        .args(["--listen", &first.addr, "--cookie", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("cannot listen on {}", first.addr)),
        "{stderr}"
    );
}
