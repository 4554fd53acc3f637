//! The `node` command line (clap). Parsing only: [`crate::config`] turns the server
//! arguments into a checked [`crate::config::NodeConfig`], [`crate::server`] runs a
//! node and [`crate::client`] runs a client command.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use shared::protocol::{validate_node_name, Role};

use shared::agent::CrashTarget;

use crate::error::CommandError;
use crate::load::push::Mode;
use crate::net::cookie::CookieArgs;
use crate::net::tls::TlsArgs;
use shared::protocol::parse_change_id;

/// A node of the distributed counter cluster, or a client of one.
///
/// Without a subcommand, runs a node: a ractor_cluster NodeServer hosting counter actors.
/// The coordinator also runs the aggregator, which collects every counter's stats across
/// the cluster and logs the totals every --stats-interval. Nodes find each other through
/// --join (any member will do: the cluster forms a full mesh). Ctrl-C or SIGTERM stops a
/// node cleanly.
///
/// With a subcommand, connects to a member as a short-lived client (never counted as a
/// cluster node) and runs one command.
#[derive(Debug, Parser)]
#[command(
    name = "node",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples (the cookie from the environment, so it stays out of `ps`):\n  \
                  export NODE_COOKIE=s3cret\n  \
                  node --role coordinator --name coordinator --listen 127.0.0.1:4697\n  \
                  node --name worker-1 --listen 127.0.0.1:4698 --join 127.0.0.1:4697 --load 500\n  \
                  node stats --join 127.0.0.1:4697\n  \
                  node incr worker-1/0 --by 5 --join 127.0.0.1:4698"
)]
pub struct Cli {
    /// A client command; without one, run a node.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Node options.
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

/// Options of a running node.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// coordinator (runs the aggregator) or worker. Default: worker when --join is given,
    /// coordinator otherwise.
    #[arg(long, value_parser = role_parser())]
    pub role: Option<Role>,

    /// This node's name, unique in the cluster (letters, digits, '.', '_', '-'). Counters
    /// are named NAME/0, NAME/1, ... Default: ROLE-PORT, e.g. worker-4698.
    #[arg(long, env = "NODE_NAME", value_parser = parse_node_name)]
    pub name: Option<String>,

    /// Address the cluster port listens on.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:4697", value_parser = parse_socket_addr)]
    pub listen: SocketAddr,

    /// Host (name or IP) other nodes use to dial this one, with the --listen port.
    /// Default: the --listen IP, or this machine's hostname when listening on all
    /// interfaces.
    #[arg(long, value_name = "HOST", value_parser = parse_host)]
    pub advertise: Option<String>,

    /// A cluster member to join, or a DNS name whose every address is one (repeatable;
    /// retried until reached). A name is resolved again every 5 s and each address it
    /// gives is joined, this node's own left out: a Compose service, a Swarm
    /// `tasks.SERVICE` or a Kubernetes headless service forms the cluster with no
    /// address typed by hand. PORT defaults to 4697.
    #[arg(long = "join", value_name = "HOST[:PORT]", value_parser = parse_seed)]
    pub join: Vec<String>,

    /// Number of counters this node hosts (at most 1,000,000). A counter runs as an
    /// actor only while it is used (see --counter-idle-secs); an idle one is a record
    /// in the store.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=i64::from(shared::protocol::MAX_COUNTERS)))]
    pub counters: u32,

    /// The cluster's shared secret.
    #[command(flatten)]
    pub cookie: CookieArgs,

    /// Mutual TLS.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// Serve HTTP on this address: health probes, stats, members, counters (see the
    /// docs/operations.md, "The HTTP API"). HTTPS with the node's certificate where it has TLS. Off
    /// unless given; beyond loopback it needs an HTTP token.
    #[arg(long, env = "NODE_HTTP", value_name = "HOST:PORT", value_parser = parse_socket_addr)]
    pub http: Option<SocketAddr>,

    /// The HTTP side's token.
    #[command(flatten)]
    pub http_token: crate::http::access::HttpTokenArgs,

    /// Run synthetic load clients on this node at this many operations per second,
    /// spread over the counters of all nodes.
    /// 0 means no load (handy where the flag is always present, as in the compose file).
    #[arg(long, value_name = "OPS_PER_SEC", value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub load: Option<u32>,

    /// Stop the load clients once this node has issued this many operations (counting
    /// what it issued before a restart).
    #[arg(long, env = "NODE_LOAD_OPS", value_name = "N", requires = "load", value_parser = clap::value_parser!(u64).range(1..))]
    pub load_ops: Option<u64>,

    /// How the load clients send: `coalesced` sums changes per counter and sends one
    /// batch per node every few milliseconds; `unbatched` sends one message per
    /// operation (slower; for comparison).
    #[arg(long, value_name = "MODE", requires = "load", value_enum, default_value_t = Mode::Coalesced)]
    pub load_mode: Mode,

    /// Seconds between the coordinator's logged cluster summaries.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    pub stats_interval: Duration,

    /// Deadline of each collection, in seconds: a counter that has not answered by then
    /// is reported missing.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub collect_timeout: Duration,

    /// Seconds within which a dead, frozen or cut-off peer is declared unreachable (its
    /// session closed, its counters reported missing). Heartbeats go every fifth of it
    /// (silence is checked every tenth); the peer is declared after 0.6 of it in
    /// silence. Every node should use the same.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_failure_timeout)]
    pub failure_timeout: Duration,

    /// Copies of this node's store, its own included: 2 keeps a second one on the next
    /// member up on the ring of names, and a change is acknowledged only once it is on
    /// both disks (while the copy is not in step, changes wait: at most the failure
    /// timeout and a state transfer; with no other member up, on this disk alone). A
    /// node started on a lost (blank) data dir, or one older than its copy, starts from
    /// its copy, fetched through a member it joins (--join). 1 keeps no copy. Needs a
    /// data dir.
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u32).range(1..=2))]
    pub copies: u32,

    /// Directory of this node's store: every counter's value, operations and rejections,
    /// committed before a change is acknowledged, so they survive a crash or restart.
    /// It holds one node's data (another --name on it is refused). Default:
    /// data/NAME under the working directory.
    #[arg(
        long,
        env = "NODE_DATA_DIR",
        value_name = "DIR",
        conflicts_with = "memory_only"
    )]
    pub data_dir: Option<std::path::PathBuf>,

    /// A directory shared by the replicas of one service (a Compose service scaled with
    /// --scale, all mounting one volume): this node takes the first slot ROLE-1,
    /// ROLE-2, ... in it that no running node holds, is named after it and keeps its
    /// store in DIR/ROLE-N. A replica that replaces one that stopped takes the free
    /// slot: that node's name and counts. Instead of --name and --data-dir.
    #[arg(
        long,
        env = "NODE_DATA_SLOTS",
        value_name = "DIR",
        conflicts_with_all = ["memory_only", "data_dir", "name"]
    )]
    pub data_slots: Option<std::path::PathBuf>,

    /// Seconds a counter's actor runs without being used (a change, a read) before it
    /// is retired. A counter is an actor only while it is used: started from its
    /// record in the store on its first message (tens of microseconds), retired once
    /// idle this long, its figures always in the store, where a collection reads an
    /// idle counter without starting it. So memory follows the counters in use, not
    /// the counters hosted.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub counter_idle_secs: Duration,

    /// Least milliseconds between two of the store's commits (each one fsync) that carry
    /// only traffic between nodes (load batches, the outbox, acknowledgements): such
    /// traffic gathers for it, so a trickle costs at most 1000/MS fsyncs per second
    /// however many nodes send. A client's change (`node incr`, HTTP) is committed at
    /// once, and so is a clean stop's last commit and a queue of 256 changes or 4,096
    /// operations. 0 commits whenever anything is queued.
    #[arg(long, value_name = "MS", default_value_t = 40,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub group_commit_ms: u64,

    /// Keep counters in memory only, for comparison: changes are acknowledged as fast as
    /// the memory store takes them, and nothing survives the process.
    #[arg(long)]
    pub memory_only: bool,

    /// Threads that run the node's actors. One (the default) is fastest per message on
    /// small machines: no hand-off between actors wakes another thread. The disk has
    /// threads of its own either way.
    #[arg(long, env = crate::runtime::WORKER_THREADS_ENV, value_name = "N", default_value = "1",
          value_parser = crate::runtime::parse_worker_threads)]
    pub worker_threads: usize,

    /// After a read from a cluster connection, keep polling for more up to this many
    /// microseconds before the worker sleeps: a request or answer arriving meanwhile
    /// is taken without waking a sleeping thread (on some VMs, tens of microseconds
    /// each). The spin adapts: it halves (down to none) while reads come further
    /// apart than this, and doubles back while they follow closely, so a trickle of
    /// traffic costs no spinning. `auto` (the default) measures at start whether it
    /// pays on this machine (a wake-up across two CPUs of 30 µs or more, which
    /// spinning clearly shortens) and then spins 100 µs or not at all. Either way, while clients keep the node busy
    /// (a commit holding a client's change starts less than 1 ms after the last one
    /// ended) the worker spins for 100 µs after each such commit, so the client's next
    /// change wakes no thread. 0 turns all spinning off.
    #[arg(long, env = crate::runtime::BUSY_POLL_ENV, value_name = "MICROS|auto", default_value = "auto",
          value_parser = crate::runtime::parse_busy_poll)]
    pub busy_poll_us: crate::runtime::BusyPoll,

    /// Let `node debug crash` make this node's actors fail (for supervision tests and
    /// drills).
    #[arg(long, hide = true)]
    pub enable_fault_injection: bool,
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a fresh collection over the whole cluster and print it.
    Stats {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the coordinator aggregator's last periodic collection instead of
        /// running a fresh one (only a coordinator can answer).
        #[arg(long)]
        last: bool,
        /// Leave out the per-counter lines: totals, nodes and missing counters only
        /// (for clusters with very many counters).
        #[arg(long)]
        totals: bool,
        /// Deadline of the collection, in seconds.
        #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
        deadline: Duration,
        /// The member to connect to, and how.
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Increment a counter and print its new value, once it is on disk. Applied at most
    /// once per --id, retried within --timeout; exit code 3 if its fate is unknown.
    Incr {
        /// Counter name, NODE/INDEX (e.g. worker-1/0).
        counter: String,
        /// Amount to add.
        #[arg(long, default_value_t = 1)]
        by: u64,
        /// The change's id (letters, digits, '.', '_', ':', '-'; up to 128). The node
        /// applies one id once: a retry with the same id (within a day) reports the
        /// first result and changes nothing. Default: a new random id.
        #[arg(long, value_parser = parse_change_id)]
        id: Option<String>,
        /// The member to connect to, and how.
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Decrement a counter and print its new value (as `incr`).
    Decr {
        /// Counter name, NODE/INDEX (e.g. worker-1/0).
        counter: String,
        /// Amount to subtract.
        #[arg(long, default_value_t = 1)]
        by: u64,
        /// The change's id, as for `incr`.
        #[arg(long, value_parser = parse_change_id)]
        id: Option<String>,
        /// The member to connect to, and how.
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Print a counter's value.
    Get {
        /// Counter name, NODE/INDEX (e.g. worker-1/0).
        counter: String,
        /// The member to connect to, and how.
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Check that one node is up and serving: connect, authenticate, ask it to describe
    /// itself. Exits 0 and prints one line if so (a container healthcheck).
    Health {
        /// Ask the node's HTTP side at HOST:PORT instead (its --http address, plain
        /// HTTP): GET /health/ready, healthy only once the node has recovered its store
        /// and joined. No cookie or certificate is used; --timeout applies.
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "join")]
        http: Option<String>,
        /// The member to connect to, and how.
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Make the node --join names leave the cluster and stop. Without --for-good it
    /// leaves for a while, as on SIGTERM: it may come back with its data, and until it
    /// does, collections list it as departed with what its counters held. With
    /// --for-good it leaves for good, only if its counters hold no count and nothing
    /// it issued is in flight (else it says why and stays); it then never starts again
    /// on its data dir.
    Leave {
        /// Leave for good (an operator's decision), not for a while.
        #[arg(long)]
        for_good: bool,
        /// The member to connect to (the one that leaves), and how.
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Fault injection for tests and drills.
    #[command(subcommand, hide = true)]
    Debug(DebugCommand),
}

/// Fault injection, honoured only by nodes started with --enable-fault-injection.
#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// Make one of the node's actors fail, so that its supervisor deals with it (see
    /// the supervision tree in docs/architecture.md). Always about the node --join names.
    Crash {
        /// Which actor.
        #[arg(value_enum)]
        target: CrashKind,
        /// With `counter`: the counter's name, NODE/INDEX (on the node --join names).
        counter: Option<String>,
        /// The member to connect to, and how.
        #[command(flatten)]
        conn: ClientArgs,
    },
    /// Make the node's disk report I/O errors: after --pass more syncs, --fail commits
    /// fail, in turn: the sync ran and reports an error (the data is on disk), the sync
    /// did not run and reports one, a write fails (nothing of the commit lands).
    DiskErrors {
        /// Syncs that go through first.
        #[arg(long, default_value_t = 0)]
        pass: u64,
        /// Commits made to fail.
        #[arg(long, default_value_t = 1)]
        fail: u64,
        /// The member to connect to, and how.
        #[command(flatten)]
        conn: ClientArgs,
    },
}

/// The kinds of actor `node debug crash` can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CrashKind {
    /// One counter (give its name).
    Counter,
    /// The supervisor of the node's counters.
    CounterSupervisor,
    /// The counter host.
    Host,
    /// The journal (commits changes to the store).
    Journal,
    /// The node agent.
    Agent,
    /// The mesh.
    Mesh,
    /// The aggregator (coordinator only).
    Aggregator,
    /// The load clients (with --load only).
    LoadClient,
    /// The accept loop of the cluster port.
    Listener,
    /// ractor_cluster's NodeServer.
    ClusterServer,
}

impl CrashKind {
    /// The wire form, with the counter's name for `counter` (required there, refused
    /// elsewhere).
    pub(crate) fn with_counter(self, counter: Option<String>) -> Result<CrashTarget, CommandError> {
        let target = match (self, counter) {
            (CrashKind::Counter, Some(name)) => return Ok(CrashTarget::Counter(name)),
            (CrashKind::Counter, None) => {
                return Err(CommandError::Local(
                    "crash counter: name the counter".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(CommandError::Local(
                    "only `crash counter` takes a counter name".into(),
                ))
            }
            (CrashKind::CounterSupervisor, None) => CrashTarget::CounterSupervisor,
            (CrashKind::Host, None) => CrashTarget::Host,
            (CrashKind::Journal, None) => CrashTarget::Journal,
            (CrashKind::Agent, None) => CrashTarget::Agent,
            (CrashKind::Mesh, None) => CrashTarget::Mesh,
            (CrashKind::Aggregator, None) => CrashTarget::Aggregator,
            (CrashKind::LoadClient, None) => CrashTarget::LoadClient,
            (CrashKind::Listener, None) => CrashTarget::Listener,
            (CrashKind::ClusterServer, None) => CrashTarget::ClusterServer,
        };
        Ok(target)
    }
}

/// How a client reaches the cluster.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Any cluster member (PORT defaults to 4697).
    #[arg(long = "join", value_name = "HOST[:PORT]", default_value = "127.0.0.1:4697", value_parser = parse_seed)]
    pub join: String,
    /// The cluster's shared secret.
    #[command(flatten)]
    pub cookie: CookieArgs,
    /// Mutual TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Seconds to wait for the connection (and authentication); for `incr` and `decr`,
    /// for the answer, retries included.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub timeout: Duration,
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(["coordinator", "worker"]).try_map(|s| s.parse::<Role>())
}

fn parse_node_name(s: &str) -> Result<String, String> {
    validate_node_name(s).map(|()| s.to_string())
}

/// `HOST:PORT` resolved now: the address to bind.
fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    parse_host_port(s)?;
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{s}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

/// The cluster port a `--join` without one means.
pub(crate) const DEFAULT_CLUSTER_PORT: u16 = 4697;

/// A `--join`: `HOST:PORT`, or a host alone (an IPv6 address in brackets, or bare),
/// which means [`DEFAULT_CLUSTER_PORT`]. Given back as `HOST:PORT`.
fn parse_seed(s: &str) -> Result<String, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, DEFAULT_CLUSTER_PORT).to_string());
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("'{s}' is not an IPv6 address in brackets"))?;
        return Ok(std::net::SocketAddr::from((ip, DEFAULT_CLUSTER_PORT)).to_string());
    }
    if !s.contains(':') {
        parse_host(s)?;
        return Ok(format!("{s}:{DEFAULT_CLUSTER_PORT}"));
    }
    parse_host_port(s)
}

/// `HOST:PORT` checked for shape only (resolved when dialed, so a peer that is not up
/// yet, or a name that appears later in DNS, is fine).
fn parse_host_port(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    parse_host(host)?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{port}' in '{s}' is not a port (1-65535)")),
        Ok(_) => Ok(s.to_string()),
    }
}

fn parse_host(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not a host name or IP address"))
    }
}

fn parse_failure_timeout(s: &str) -> Result<Duration, String> {
    let timeout = parse_secs(s)?;
    if timeout < Duration::from_millis(200) {
        return Err("the failure timeout must be at least 0.2 s".into());
    }
    Ok(timeout)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(0.01..=86_400.0).contains(&secs) {
        return Err(format!("{secs} s is out of range (0.01 to 86400)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_defaults() {
        let cli = Cli::try_parse_from(["node"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen, "0.0.0.0:4697".parse().unwrap());
        assert_eq!(cli.serve.counters, 4);
        assert_eq!(cli.serve.stats_interval, Duration::from_secs(2));
        assert_eq!(cli.serve.role, None);
        assert_eq!(cli.serve.failure_timeout, Duration::from_secs(2));
        assert!(!cli.serve.enable_fault_injection);
        assert_eq!(cli.serve.worker_threads, 1);
        assert_eq!(cli.serve.busy_poll_us, crate::runtime::BusyPoll::Auto);
    }

    #[test]
    fn runtime_options_are_checked() {
        let cli =
            Cli::try_parse_from(["node", "--worker-threads", "4", "--busy-poll-us", "0"]).unwrap();
        assert_eq!(cli.serve.worker_threads, 4);
        assert_eq!(
            cli.serve.busy_poll_us,
            crate::runtime::BusyPoll::Window(Duration::ZERO)
        );
        let cli = Cli::try_parse_from(["node", "--busy-poll-us", " AUTO "]).unwrap();
        assert_eq!(cli.serve.busy_poll_us, crate::runtime::BusyPoll::Auto);
        let cli = Cli::try_parse_from(["node", "--busy-poll-us", "250"]).unwrap();
        assert_eq!(
            cli.serve.busy_poll_us,
            crate::runtime::BusyPoll::Window(Duration::from_micros(250))
        );
        for bad in [
            ["--worker-threads", "0"],
            ["--worker-threads", "many"],
            ["--busy-poll-us", "10001"],
            ["--busy-poll-us", "-1"],
        ] {
            let error = Cli::try_parse_from(["node", bad[0], bad[1]]).unwrap_err();
            assert!(
                error.to_string().contains(bad[1]),
                "{bad:?} refused naming the value: {error}"
            );
        }
    }

    #[test]
    fn client_commands_parse() {
        let cli =
            Cli::try_parse_from(["node", "incr", "w/1", "--by", "5", "--join", "h:1"]).unwrap();
        match cli.command {
            Some(Command::Incr {
                counter, by, conn, ..
            }) => {
                assert_eq!(
                    (counter.as_str(), by, conn.join.as_str()),
                    ("w/1", 5, "h:1")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_join_without_a_port_means_the_default_one() {
        let joins = |args: &[&str]| {
            let args = [&["node"], args].concat();
            Cli::try_parse_from(args).unwrap().serve.join
        };
        assert_eq!(
            joins(&["--join", "nodes", "--join", "10.0.0.5", "--join", "h:99"]),
            ["nodes:4697", "10.0.0.5:4697", "h:99"]
        );
        assert_eq!(
            joins(&["--join", "::1", "--join", "[::1]", "--join", "[::1]:5"]),
            ["[::1]:4697", "[::1]:4697", "[::1]:5"]
        );
        let cli = Cli::try_parse_from(["node", "stats", "--join", "worker-2"]).unwrap();
        let Some(Command::Stats { conn, .. }) = cli.command else {
            panic!("not stats");
        };
        assert_eq!(conn.join, "worker-2:4697");
    }

    #[test]
    fn bad_input_is_refused() {
        for args in [
            vec!["node", "--role", "leader"],
            vec!["node", "--listen", "nowhere"],
            vec!["node", "--join", "host:99999"],
            vec!["node", "--join", "bad host"],
            vec!["node", "--join", "[nodes"],
            vec!["node", "--join", "[nodes]"],
            vec!["node", "--counters", "-1"],
            vec!["node", "--name", "a/b"],
            vec!["node", "--load-ops", "5"],
            vec!["node", "--stats-interval", "0"],
            vec!["node", "--failure-timeout", "0.1"],
            vec!["node", "incr", "w/1", "--by", "-3"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?} was accepted");
        }
    }
}
