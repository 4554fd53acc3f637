//! What a node's agent answers: membership gossip and heartbeats for other nodes, and
//! requests from the short-lived clients (`node stats`, `node incr`, ...). Counters are
//! not reached through the agent: their one remote face is the node's counter host
//! ([`crate::host`]).

use ractor::RpcReplyPort;
use ractor_cluster_derive::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::counter::{CounterError, Delta};
use crate::protocol::Role;
use crate::stats::{ClusterStats, SenderTotals};

/// A message to a node agent (one per node, in [`crate::protocol::NODES_GROUP`]).
#[derive(RactorClusterMessage)]
pub enum AgentMessage {
    /// Describe this node: who it is, what its load clients issued, whom it knows.
    #[rpc]
    GetInfo(RpcReplyPort<NodeInfo>),
    /// Gossip: "here is the digest of the members I see up; who are you, and whom do
    /// you see?" Answered with a [`View`] that lists its members only if its digest
    /// differs, so a cluster that does not change exchanges digests, not views.
    #[rpc]
    Gossip(u64, RpcReplyPort<View>),
    /// Serve a client command.
    #[rpc]
    Client(ClientRequest, RpcReplyPort<ClientReply>),
    /// "Are you alive? I am": a watcher's mesh sends one to each member it watches
    /// every heartbeat interval, and to a suspect it is asked to check; the answer is
    /// the member's own beat. A watched member not heard from for long enough is
    /// declared unreachable.
    #[rpc]
    Heartbeat(Beat, RpcReplyPort<Beat>),
    /// "I found this member silent and declared it unreachable": sent by its watcher to
    /// every other member, each of which checks the suspect itself before it believes
    /// it (see `node/src/cluster/detector.rs`).
    Suspect(Beat, PeerAddr),
    /// "I am leaving the cluster": sent by a node that stops cleanly, so that its peers
    /// take it out of their collections instead of reporting it unreachable, and say
    /// what it took with it. Answered, so the leaving node knows the notice arrived
    /// before it closes its sessions.
    #[rpc]
    Leaving(Beat, Departure, RpcReplyPort<bool>),
}

/// Who sent a heartbeat or a leave notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// The sender's node name.
    pub from: String,
    /// The sender's incarnation (see [`NodeInfo::incarnation`]).
    pub incarnation: u64,
}

/// What a node that leaves takes with it, as it says in its leave notice: its counters'
/// totals once it has stopped taking changes and committed every one it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    /// Whether it left for good (an operator's decision, taken only by a node that holds
    /// no counts) or for a while (it stopped cleanly and may come back with its data).
    pub for_good: bool,
    /// How many counters it hosts.
    pub counters: u32,
    /// Whether its store could be read as it left (a failing disk): if not, what its
    /// counters hold is not known, and `value` and `operations` are 0.
    pub known: bool,
    /// The sum of its counters' values.
    pub value: i128,
    /// The sum of its counters' operations.
    pub operations: u128,
    /// Net value its load clients issued, over its life (the other side of what
    /// its destinations applied from it).
    pub issued_value: i64,
    /// Operations its load clients issued.
    pub issued_operations: u64,
    /// Of those, the ones their destinations had not acknowledged (kept in its outbox,
    /// sent when it comes back).
    pub in_flight_operations: u64,
    /// The id of the store it ran on (0: none on disk, or unreadable): a node that left
    /// for good has its copy removed, that store's and no later one's (a new node may
    /// take the name, with a new store).
    pub store_id: u64,
}

/// Operations a node issued that one destination has not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightTo {
    /// The destination node.
    pub node: String,
    /// Operations in flight to it.
    pub operations: u64,
}

/// A peer as other nodes should dial it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerAddr {
    /// The peer's node name.
    pub name: String,
    /// `host:port` the peer advertises.
    pub addr: String,
    /// The run of the peer this is about (see [`NodeInfo::incarnation`]; 0 if not known
    /// yet): a node that left and came back is told apart from the run that left.
    pub incarnation: u64,
}

/// A node's description of itself, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Coordinator or worker.
    pub role: Role,
    /// `host:port` other nodes dial to reach this node.
    pub advertise: String,
    /// The node's [`crate::protocol::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Identifies one run of the node process (its start time in microseconds since
    /// the Unix epoch): a node restarted under the same name has a new incarnation.
    pub incarnation: u64,
    /// How many counters the node hosts.
    pub counters: u32,
    /// Counter restarts performed by the node's supervisor.
    pub counter_restarts: u64,
    /// Net value the node's load clients have issued: committed to its outbox, from
    /// where it is delivered exactly once.
    pub issued_value: i64,
    /// Operations the node's load clients have issued.
    pub issued_operations: u64,
    /// Issued operations not yet acknowledged by their destination (committed there).
    pub in_flight_operations: u64,
    /// The same, per destination (those with any in flight only).
    pub in_flight_to: Vec<InFlightTo>,
    /// Net value that this node's streams and their receivers disagree on: what the
    /// receivers hold of them beyond (or, when negative, short of) what this node's store
    /// issued. Non-zero only after a store was restored from an older copy (or lost) on
    /// either side: the count nobody can vouch for, reported, never hidden.
    pub unvouched_value: i64,
    /// Operations that this node's streams and their receivers disagree on (see
    /// [`NodeInfo::unvouched_value`]).
    pub unvouched_operations: i64,
    /// What this node has applied from each sender's streams (every run of each).
    pub received: Vec<SenderTotals>,
    /// Commits (one fsync each) of the node's store since it started.
    pub store_commits: u64,
    /// Every cluster node this node knows how to reach (itself excluded), for gossip.
    pub known_peers: Vec<PeerAddr>,
    /// Where its store is copied, and how far the copy lags.
    pub copy: crate::copies::CopyStatus,
}

/// A node's answer to gossip ([`AgentMessage::Gossip`]): who it is, and the members it
/// sees up unless the asker sees the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The answering node: its name, advertised `host:port` and run.
    pub node: PeerAddr,
    /// Coordinator or worker.
    pub role: Role,
    /// How many counters it hosts.
    pub counters: u32,
    /// Every member it sees up (itself excluded), or `None` when the digest of those
    /// and itself equals the one the asker sent.
    pub peers: Option<Vec<PeerAddr>>,
}

/// A client command, served by whichever node the client connected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Run a fresh collection over the whole cluster, within `deadline_ms`.
    Stats {
        /// The collection's deadline in milliseconds.
        deadline_ms: u64,
        /// Include one line per counter (false: totals, nodes and at most
        /// [`MISSING_NAMES`] missing counters' names; what a cluster of 100,000s of
        /// counters needs to stay under the 16 MiB frame limit).
        per_counter: bool,
    },
    /// The coordinator aggregator's most recent periodic collection.
    LastStats {
        /// As for [`ClientRequest::Stats`].
        per_counter: bool,
    },
    /// Apply a change to the named counter, once per id, and answer with the new value
    /// (or, for an id applied before, that first result).
    Apply {
        /// Cluster-wide counter name.
        counter: String,
        /// The change.
        delta: Delta,
        /// The change's id, chosen by the client (see [`crate::host::HostMessage::Apply`]).
        id: String,
    },
    /// Read the named counter's value.
    Get {
        /// Cluster-wide counter name.
        counter: String,
    },
    /// Leave the cluster: for a while (stop cleanly, as SIGTERM does: the node may come
    /// back with its data), or for good. A node leaves for good only if it holds no
    /// counts and nothing it issued is in flight; it then stops, tells its peers, and
    /// never starts again on its data dir. Answered before it stops.
    Leave {
        /// For good, rather than for a while.
        for_good: bool,
    },
    /// Part `part` of the best copy of node `node`'s store the cluster keeps (the one
    /// furthest on, among the keepers on the ring after `node`), if it is further on
    /// than commit `after`: what a node whose own store is lost, or older, starts from.
    /// Asked by that node as it starts, before it is a member.
    FetchCopy {
        /// The node whose store it is.
        node: String,
        /// The part (0 first: its answer says how many there are).
        part: u32,
        /// Only a copy further on than this commit (`None`: any copy).
        after: Option<u64>,
        /// Only a copy of this store (`None`: of any store of the node's).
        store_id: Option<u64>,
        /// From this keeper (the one part 0 came from), rather than the best one.
        keeper: Option<String>,
    },
    /// Make one of the node's actors fail, so that its supervisor deals with it (see
    /// the supervision tree in docs/architecture.md). Fault injection for tests and drills:
    /// refused unless the node runs with `--enable-fault-injection`, and only ever
    /// about the node that receives it.
    Crash(CrashTarget),
    /// Make the node's disk report errors: let `pass` more syncs through, then make
    /// `fail` commits fail, in turn after the sync ran, instead of it, and at a write.
    /// Fault injection, as for [`ClientRequest::Crash`].
    DiskErrors {
        /// Syncs that go through first.
        pass: u64,
        /// Commits made to fail.
        fail: u64,
    },
}

/// Which actor a [`ClientRequest::Crash`] makes fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrashTarget {
    /// One counter, by its cluster-wide name (it must be on the receiving node).
    Counter(String),
    /// The supervisor of the node's counters.
    CounterSupervisor,
    /// The counter host.
    Host,
    /// The journal (the write path's commits to the store).
    Journal,
    /// The node agent.
    Agent,
    /// The mesh (dialing, heartbeats, failure detection).
    Mesh,
    /// The aggregator (coordinator only).
    Aggregator,
    /// The load clients (with `--load` only).
    LoadClient,
    /// The accept loop of the cluster port.
    Listener,
    /// ractor_cluster's `NodeServer`, which owns every session.
    ClusterServer,
}

/// What a served client command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientAnswer {
    /// Cluster statistics.
    Stats(Box<ClusterStats>),
    /// A counter's value.
    Value(i64),
    /// A change with an id was applied: the value after it, and whether it had been
    /// applied before (then nothing changed now).
    Applied(crate::counter::Applied),
    /// The request was carried out; there is nothing to report.
    Done,
    /// A part of a copy of a node's store, and the node that keeps it; `None` if no
    /// member asked keeps a whole copy.
    Copy(Option<(String, crate::copies::CopyPart)>),
    /// The node is leaving the cluster (for good or not): it stops now.
    Leaving {
        /// The node.
        node: String,
        /// For good, rather than for a while.
        for_good: bool,
    },
}

/// Why a client command failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClientError {
    /// No counter of that name is known to the node.
    #[error(
        "no counter named '{name}' in the cluster (counters are named NODE/INDEX, e.g. {example})"
    )]
    UnknownCounter {
        /// The name asked for.
        name: String,
        /// A name that does exist, to show the scheme.
        example: String,
    },
    /// The counter refused the change.
    #[error("counter '{counter}' refused the change: {error}")]
    Refused {
        /// The counter.
        counter: String,
        /// Why.
        error: CounterError,
    },
    /// The counter exists but did not answer in time.
    #[error("counter '{0}' did not answer in time")]
    CounterTimeout(String),
    /// The node has no aggregator (only the coordinator runs one).
    #[error("node '{0}' runs no aggregator: ask the coordinator, or use a fresh collection")]
    NoAggregator(String),
    /// The aggregator has not finished its first collection yet.
    #[error("the aggregator has not completed a collection yet")]
    NotCollectedYet,
    /// The node is serving as many requests as it allows at once; try again.
    #[error("node '{0}' is busy (too many requests at once); try again")]
    Busy(String),
    /// Fault injection was asked of a node that does not allow it.
    #[error("node '{0}' does not allow fault injection (start it with --enable-fault-injection)")]
    FaultInjectionDisabled(String),
    /// The change was handed to the counter's node, which did not answer in time: it may
    /// or may not have been applied. Retrying with the same id is safe.
    #[error("counter '{counter}': no answer from its node in time, so the change may or may not have been applied")]
    InDoubt {
        /// The counter.
        counter: String,
    },
    /// The counter's node is known but cannot be reached from the node asked.
    #[error(
        "node '{node}' is not reachable from '{from}' right now; try again, or ask another node"
    )]
    NodeUnreachable {
        /// The counter's node.
        node: String,
        /// The node that was asked.
        from: String,
    },
    /// The answer would not fit one message.
    #[error(
        "the answer takes {bytes} bytes to decode, more than one message may ({limit}): ask for totals only (node stats --totals, or GET /stats?totals=true)"
    )]
    TooLarge {
        /// What decoding it takes: its bytes, and the memory its lists are given.
        bytes: u64,
        /// The most a message carries.
        limit: u64,
    },
    /// The node refused to leave the cluster for good, and why.
    #[error("{node} cannot leave the cluster for good: {why}")]
    CannotLeave {
        /// The node.
        node: String,
        /// Why not.
        why: String,
    },
    /// The node could not serve the request for an internal reason.
    #[error("node failed to serve the request: {0}")]
    Internal(String),
}

/// Missing counters named, at most, in statistics without per-counter lines (overall,
/// and per node): their numbers stay exact.
pub const MISSING_NAMES: usize = 1_000;

/// The answer to [`AgentMessage::Client`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientReply(pub Result<ClientAnswer, ClientError>);

crate::wire_type!(
    Beat,
    Departure,
    PeerAddr,
    View,
    NodeInfo,
    ClientRequest,
    ClientReply
);
