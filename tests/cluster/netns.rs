//! A private network for partition tests: one network namespace joined to the host's
//! namespace by a veth pair with its own /30, and a switch that silently drops every
//! packet crossing that link (iptables `DROP` on input at both ends: nothing is
//! refused or reset, the packets just vanish, as in a real partition).
//!
//! Needs root, `ip` (iproute2) and `iptables`; `.ci/run` installs them. Where the
//! namespace cannot be created, [`NetLab::create`] says why and the test is skipped
//! loudly, unless `REQUIRE_NETNS` is set (as in CI), where it fails.
//! Everything is removed on drop, also when the test fails.

use std::process::Command;

/// The namespace, the veth pair and their addresses.
pub struct NetLab {
    /// Namespace name.
    pub ns: String,
    /// The host end of the veth pair.
    host_if: String,
    /// The namespace end.
    ns_if: String,
    /// The host end's address.
    pub host_ip: String,
    /// The namespace end's address.
    pub ns_ip: String,
    cut: bool,
}

/// Runs a command; its stderr in the error if it fails.
pub fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetLab {
    /// Creates the namespace and the link, or says why it cannot. The addresses are
    /// in 10.213.0.0/16, chosen by process id so that concurrent runs do not collide.
    pub fn create() -> Result<NetLab, String> {
        let id = std::process::id() % 16_000;
        let lab = NetLab {
            ns: format!("ccp-{id}"),
            host_if: format!("ccp{id}h"),
            ns_if: format!("ccp{id}n"),
            host_ip: format!("10.213.{}.{}", id / 64, (id % 64) * 4 + 1),
            ns_ip: format!("10.213.{}.{}", id / 64, (id % 64) * 4 + 2),
            cut: false,
        };
        let ns = lab.ns.as_str();
        run(&["ip", "netns", "add", ns])?;
        // From here on, Drop cleans up whatever was made.
        run(&[
            "ip",
            "link",
            "add",
            &lab.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &lab.ns_if,
        ])?;
        run(&["ip", "link", "set", &lab.ns_if, "netns", ns])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", lab.host_ip),
            "dev",
            &lab.host_if,
        ])?;
        run(&["ip", "link", "set", &lab.host_if, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", ns];
            full.extend_from_slice(args);
            run(&full)
        };
        in_ns(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", lab.ns_ip),
            "dev",
            &lab.ns_if,
        ])?;
        in_ns(&["ip", "link", "set", &lab.ns_if, "up"])?;
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        // Check that iptables works in both namespaces before a test relies on it.
        run(&["iptables", "-L", "INPUT", "-n"])?;
        in_ns(&["iptables", "-L", "INPUT", "-n"])?;
        Ok(lab)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", self.ns.as_str()]
    }

    fn rules(&self, action: &str) -> Result<(), String> {
        run(&[
            "iptables",
            action,
            "INPUT",
            "-i",
            &self.host_if,
            "-j",
            "DROP",
        ])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "iptables",
            action,
            "INPUT",
            "-i",
            &self.ns_if,
            "-j",
            "DROP",
        ])
    }

    /// Cuts the link silently, in both directions.
    pub fn cut(&mut self) {
        self.rules("-A").expect("cannot cut the link");
        self.cut = true;
    }

    /// Restores the link.
    pub fn heal(&mut self) {
        self.rules("-D").expect("cannot heal the link");
        self.cut = false;
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if self.cut {
            let _ = self.rules("-D");
        }
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

/// A lab, or `None` after saying loudly why the test is skipped. With
/// `REQUIRE_NETNS` set, failing to create one fails the test instead.
pub fn lab_or_skip(test: &str) -> Option<NetLab> {
    match NetLab::create() {
        Ok(lab) => Some(lab),
        Err(why) if std::env::var_os("REQUIRE_NETNS").is_some() => {
            panic!("{test}: cannot create a network namespace ({why}) and REQUIRE_NETNS is set")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: cannot create a network namespace ({why}); run as root with \
                 iproute2 and iptables installed, as .ci/run does"
            );
            None
        }
    }
}
