//! A node's checked configuration, resolved from the command line with its defaults.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shared::protocol::Role;

use crate::cli::ServeArgs;
use crate::error::NodeError;
use crate::http::HttpConfig;
use crate::load::client::LoadSpec;
use crate::net::cookie::Cookie;
use crate::net::tls::Tls;
use crate::store::slots::{self, Slot};

/// Everything a node needs to run, checked.
#[derive(Clone)]
pub(crate) struct NodeConfig {
    /// Unique node name.
    pub name: String,
    /// Coordinator or worker.
    pub role: Role,
    /// Where the cluster port listens.
    pub listen: SocketAddr,
    /// Host other nodes dial (with the listen port).
    pub advertise_host: String,
    /// Members to join.
    pub seeds: Vec<String>,
    /// Counters to host.
    pub counters: u32,
    /// The cluster secret (its `Debug` does not show it).
    pub cookie: Cookie,
    /// Mutual TLS on every link, if configured.
    pub tls: Option<Tls>,
    /// Load clients, if any.
    pub load: Option<LoadSpec>,
    /// Time between the aggregator's collections.
    pub stats_interval: Duration,
    /// Deadline of a collection.
    pub collect_timeout: Duration,
    /// Bound on failure detection.
    pub failure_timeout: Duration,
    /// Copies of the node's store, its own included (`--copies`).
    pub copies: u32,
    /// The least time between two commits that hold only traffic between nodes.
    pub group_commit: Duration,
    /// How long a counter's actor runs without being used.
    pub counter_idle: Duration,
    /// Whether counters may be crashed on request.
    pub fault_injection: bool,
    /// Where the counters are kept.
    pub storage: Storage,
    /// The slot of `--data-slots` this node holds (its name and its data dir), held
    /// while the node runs.
    pub slot: Option<Slot>,
    /// The HTTP side, if `--http` was given.
    pub http: Option<HttpConfig>,
}

/// Where a node keeps its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Storage {
    /// In a store in this directory (`--data-dir`).
    Dir(std::path::PathBuf),
    /// In memory only (`--memory-only`): nothing survives the process.
    Memory,
}

impl std::fmt::Debug for NodeConfig {
    // By hand, so the cookie never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise())
            .field("seeds", &self.seeds)
            .field("counters", &self.counters)
            .field("load", &self.load)
            .field("tls", &self.tls.is_some())
            .field("storage", &self.storage)
            .field("slot", &self.slot.as_ref().map(|slot| slot.number))
            .finish_non_exhaustive()
    }
}

impl NodeConfig {
    /// Resolves defaults and checks the combination of arguments.
    pub(crate) fn from_args(args: ServeArgs) -> Result<Self, NodeError> {
        let port = args.listen.port();
        if port == 0 {
            return Err(NodeError::Config(
                "--listen needs a fixed port: other nodes dial it".into(),
            ));
        }
        let role = args.role.unwrap_or(if args.join.is_empty() {
            Role::Coordinator
        } else {
            Role::Worker
        });
        let slot = match &args.data_slots {
            Some(dir) => Some(
                slots::claim(dir, &role.to_string())
                    .map_err(|e| NodeError::Config(format!("--data-slots: {e}")))?,
            ),
            None => None,
        };
        let name = match (&slot, args.name) {
            (Some(slot), _) => slot.name.clone(),
            (None, Some(name)) => name,
            (None, None) => format!("{role}-{port}"),
        };
        let advertise_host = args
            .advertise
            .unwrap_or_else(|| default_advertise(args.listen.ip()));
        let cookie = match args.cookie.given().map_err(NodeError::Config)? {
            Some(cookie) => cookie,
            None if args.listen.ip().is_loopback() => Cookie::development(),
            None => {
                return Err(NodeError::Config(format!(
                    "refusing to listen on {} without a cookie: set NODE_COOKIE, \
                     --cookie-file or --cookie to the cluster's shared secret",
                    args.listen
                )))
            }
        };
        let tls = Tls::from_args(&args.tls).map_err(NodeError::Config)?;
        let http_token = args.http_token.given().map_err(NodeError::Config)?;
        let http = match (args.http, http_token) {
            (None, _) => None,
            (Some(listen), None) if !listen.ip().is_loopback() => {
                return Err(NodeError::Config(format!(
                    "refusing to serve HTTP on {listen} without a token: set NODE_HTTP_TOKEN, \
                     --http-token-file or --http-token"
                )))
            }
            (Some(listen), token) => Some(HttpConfig { listen, token }),
        };
        let storage = match (args.memory_only, args.data_dir, &slot) {
            (true, _, _) => Storage::Memory,
            (false, _, Some(slot)) => Storage::Dir(slot.dir.clone()),
            (false, Some(dir), None) => Storage::Dir(dir),
            (false, None, None) => Storage::Dir(default_data_dir(&name)?),
        };
        Ok(Self {
            http,
            storage,
            slot,
            tls,
            name,
            role,
            listen: args.listen,
            advertise_host,
            seeds: args.join,
            counters: args.counters,
            cookie,
            load: args.load.filter(|&rate| rate > 0).map(|rate| LoadSpec {
                rate,
                max_ops: args.load_ops,
                mode: args.load_mode,
            }),
            stats_interval: args.stats_interval,
            collect_timeout: args.collect_timeout,
            failure_timeout: args.failure_timeout,
            copies: args.copies,
            group_commit: Duration::from_millis(args.group_commit_ms),
            counter_idle: args.counter_idle_secs,
            fault_injection: args.enable_fault_injection,
        })
    }

    /// `host:port` other nodes dial.
    pub(crate) fn advertise(&self) -> String {
        host_port(&self.advertise_host, self.listen.port())
    }
}

/// Joins a host and a port, bracketing IPv6 literals.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `data/NAME`, the store of a node given neither --data-dir nor --data-slots; refused
/// while `data/` itself holds a store and `data/NAME` does not exist yet. That store
/// may be this node's (kept there with `--data-dir data`, or by an image that set
/// NODE_DATA_DIR=/data: in the image, `data/` is the volume `/data`), and a node never
/// starts an empty store beside its own counts.
fn default_data_dir(name: &str) -> Result<std::path::PathBuf, NodeError> {
    let top = std::path::Path::new("data");
    let dir = top.join(name);
    let left = top.join(crate::store::FILE_NAME);
    if !dir.exists() && left.exists() {
        return Err(NodeError::Config(format!(
            "{} holds a node's store and {} does not exist yet: rather than start an empty \
             store beside it, the node stops. If that store is this node's (kept there by an \
             older image, which set NODE_DATA_DIR=/data), start it with --data-dir data \
             (in the image: --data-dir /data); else give it --data-dir of its own",
            left.display(),
            dir.display()
        )));
    }
    Ok(dir)
}

fn default_advertise(ip: IpAddr) -> String {
    if ip.is_unspecified() {
        gethostname::gethostname().to_string_lossy().into_owned()
    } else {
        ip.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    /// Parses `args` as the command line, ignoring NODE_COOKIE, NODE_NAME and
    /// NODE_DATA_SLOTS in the environment of whoever runs the tests.
    fn config(args: &[&str]) -> Result<NodeConfig, NodeError> {
        let mut argv = vec!["node"];
        argv.extend_from_slice(args);
        let mut serve = Cli::try_parse_from(argv).unwrap().serve;
        if !args.contains(&"--cookie") {
            serve.cookie.cookie = None;
        }
        if !args.contains(&"--cookie-file") {
            serve.cookie.cookie_file = None;
        }
        if !args.contains(&"--name") {
            serve.name = None;
        }
        if !args.contains(&"--data-slots") {
            serve.data_slots = None;
        }
        if !args.contains(&"--http") {
            serve.http = None;
        }
        if !args.contains(&"--http-token") {
            serve.http_token.http_token = None;
        }
        serve.http_token.http_token_file = None;
        NodeConfig::from_args(serve)
    }

    #[test]
    fn http_beyond_loopback_needs_a_token() {
        let local = config(&["--listen", "127.0.0.1:5000", "--http", "127.0.0.1:8080"]).unwrap();
        let http = local.http.unwrap();
        assert_eq!((http.listen.port(), http.token), (8080, None));
        let err = config(&["--listen", "127.0.0.1:5000", "--http", "0.0.0.0:8080"]).unwrap_err();
        assert!(err.to_string().contains("without a token"), "{err}");
        let ok = config(&[
            "--listen",
            "127.0.0.1:5000",
            "--http",
            "0.0.0.0:8080",
            "--http-token",
            "t0ken",
        ])
        .unwrap();
        assert!(ok.http.unwrap().token.is_some());
        assert!(config(&["--listen", "127.0.0.1:5000"])
            .unwrap()
            .http
            .is_none());
    }

    #[test]
    fn role_follows_join() {
        let c = config(&["--listen", "127.0.0.1:5000"]).unwrap();
        assert_eq!(
            (c.role, c.name.as_str()),
            (Role::Coordinator, "coordinator-5000")
        );
        let w = config(&["--listen", "127.0.0.1:5001", "--join", "127.0.0.1:5000"]).unwrap();
        assert_eq!((w.role, w.name.as_str()), (Role::Worker, "worker-5001"));
        assert_eq!(w.advertise(), "127.0.0.1:5001");
    }

    #[test]
    fn cookie_required_off_loopback() {
        assert!(config(&["--listen", "127.0.0.1:5000"])
            .unwrap()
            .cookie
            .is_development());
        let err = config(&["--listen", "0.0.0.0:5000"]).err().unwrap();
        assert!(err.to_string().contains("NODE_COOKIE"), "{err}");
        let c = config(&[
            "--listen",
            "0.0.0.0:5000",
            "--cookie",
            "x",
            "--advertise",
            "h",
        ])
        .unwrap();
        assert_eq!((c.cookie.secret(), c.advertise().as_str()), ("x", "h:5000"));
        assert!(!format!("{c:?}").contains("\"x\""));
    }

    #[test]
    fn the_store_defaults_to_data_slash_name() {
        let c = config(&["--listen", "127.0.0.1:5000", "--name", "a"]).unwrap();
        assert_eq!(c.storage, Storage::Dir("data/a".into()));
        let c = config(&["--listen", "127.0.0.1:5000", "--data-dir", "/x"]).unwrap();
        assert_eq!(c.storage, Storage::Dir("/x".into()));
        let c = config(&["--listen", "127.0.0.1:5000", "--memory-only"]).unwrap();
        assert_eq!(c.storage, Storage::Memory);
    }

    #[test]
    fn data_slots_name_the_node_and_hold_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let slots = dir.path().to_str().unwrap();
        let join = ["--join", "127.0.0.1:5000", "--data-slots", slots];
        let first = config(&[&["--listen", "127.0.0.1:5001"][..], &join].concat()).unwrap();
        let second = config(&[&["--listen", "127.0.0.1:5002"][..], &join].concat()).unwrap();
        assert_eq!(
            (first.name.as_str(), second.name.as_str()),
            ("worker-1", "worker-2")
        );
        assert_eq!(second.storage, Storage::Dir(dir.path().join("worker-2")));
        // The slot is held while the node's configuration lives.
        drop(first);
        let third = config(&[&["--listen", "127.0.0.1:5003"][..], &join].concat()).unwrap();
        assert_eq!(third.name, "worker-1");
        // A slot names the node and holds its store: neither may also be given.
        for other in [
            &["--name", "x"][..],
            &["--data-dir", "/x"],
            &["--memory-only"],
        ] {
            let argv = [&["node", "--data-slots", slots][..], other].concat();
            assert!(Cli::try_parse_from(argv).is_err(), "{other:?} was taken");
        }
    }

    #[test]
    fn load_zero_means_no_load() {
        let c = config(&["--listen", "127.0.0.1:5000", "--load", "0"]).unwrap();
        assert_eq!(c.load, None);
        let c = config(&["--listen", "127.0.0.1:5000", "--load", "7"]).unwrap();
        assert_eq!(c.load.map(|l| l.rate), Some(7));
    }

    #[test]
    fn ipv6_is_bracketed() {
        assert_eq!(host_port("::1", 7), "[::1]:7");
        assert_eq!(host_port("node-a", 7), "node-a:7");
    }
}
