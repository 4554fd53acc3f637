//! The figures recorded as things happen: operations applied and rejected by this
//! node's commits, each commit's duration and operations, failed commits and whether
//! the store takes writes, each collection's duration, connections refused by reason,
//! what peers said that the member policy refused, batches refused whole, parts
//! restarted and parts waiting for the store by part, each member link's traffic.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Why an inbound connection was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConnectionRefusal {
    /// Every place for connections waiting to authenticate was taken.
    Full,
    /// Dropped to make room for a newer connection.
    Evicted,
    /// It said nothing (or closed) before its handshake deadline.
    Silent,
    /// It broke the limits on what may be sent before authenticating.
    PreauthLimit,
    /// Its TLS handshake failed or took too long.
    Tls,
    /// It did not authenticate (a wrong cookie, or not a cluster node).
    Auth,
}

impl ConnectionRefusal {
    fn as_str(self) -> &'static str {
        match self {
            ConnectionRefusal::Full => "full",
            ConnectionRefusal::Evicted => "evicted",
            ConnectionRefusal::Silent => "silent",
            ConnectionRefusal::PreauthLimit => "preauth_limit",
            ConnectionRefusal::Tls => "tls",
            ConnectionRefusal::Auth => "auth",
        }
    }
}

/// Why the member policy refused what a peer said (the `reason` label): members speak
/// only for themselves (see `cluster::policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PolicyRefusal {
    /// A member's name that is not a node name.
    NotANodeName,
    /// This node's own name.
    OwnName,
    /// With TLS, a member's name without a node certificate that names it.
    NoNodeCertificate,
    /// An actor of a client's.
    ClientActor,
    /// More actors than a node has.
    TooManyActors,
    /// An actor named for another node.
    AnotherNodesActor,
    /// A batch or a sync of another's stream.
    AnotherStream,
    /// A heartbeat or a leave notice for another, or from a client.
    AnotherHeartbeat,
}

impl PolicyRefusal {
    fn as_str(self) -> &'static str {
        match self {
            PolicyRefusal::NotANodeName => "not_a_node_name",
            PolicyRefusal::OwnName => "own_name",
            PolicyRefusal::NoNodeCertificate => "no_node_certificate",
            PolicyRefusal::ClientActor => "client_actor",
            PolicyRefusal::TooManyActors => "too_many_actors",
            PolicyRefusal::AnotherNodesActor => "another_nodes_actor",
            PolicyRefusal::AnotherStream => "another_stream",
            PolicyRefusal::AnotherHeartbeat => "another_heartbeat",
        }
    }
}

/// Why a batch from a peer was refused whole (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BatchRefusal {
    /// Its changes' sums overflow (only a sender that lies makes one).
    SumsOverflow,
    /// It would start an incoming stream beyond the store's bounds.
    TooManyStreams,
}

impl BatchRefusal {
    fn as_str(self) -> &'static str {
        match self {
            BatchRefusal::SumsOverflow => "sums_overflow",
            BatchRefusal::TooManyStreams => "too_many_streams",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// How a check of a suspect ended (the `outcome` label): `confirmed` (it did not
/// answer: declared unreachable here too) or `refuted` (it answered).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Which part of the node (the `part` label): one of the root's children.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabel {
    part: String,
}

/// Bytes and frames through one session's link, both ways.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    bytes_in: AtomicU64,
    frames_in: AtomicU64,
    bytes_out: AtomicU64,
    frames_out: AtomicU64,
}

impl LinkCounters {
    /// `bytes` arrived, in which `frames` began.
    pub(crate) fn received(&self, bytes: u64, frames: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.frames_in.fetch_add(frames, Ordering::Relaxed);
    }

    /// `bytes` went out, in which `frames` began.
    pub(crate) fn sent(&self, bytes: u64, frames: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        self.frames_out.fetch_add(frames, Ordering::Relaxed);
    }

    /// `[bytes in, frames in, bytes out, frames out]`.
    pub(crate) fn totals(&self) -> [u64; 4] {
        [
            self.bytes_in.load(Ordering::Relaxed),
            self.frames_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.frames_out.load(Ordering::Relaxed),
        ]
    }
}

/// Every session's link, by the peer's socket address until the session says which
/// member it is; a closed link's totals are kept under the member's name, so each
/// member's series only grow. (Clients' links are counted while open and dropped
/// when they close: they are not members.)
#[derive(Debug, Default)]
pub(crate) struct Traffic(Mutex<TrafficTable>);

#[derive(Debug, Default)]
struct TrafficTable {
    /// Open links: peer socket address → (member name once known, counters).
    links: HashMap<String, (Option<String>, Arc<LinkCounters>)>,
    /// Closed links' totals, per member.
    closed: HashMap<String, [u64; 4]>,
}

impl TrafficTable {
    fn fold(&mut self, (name, link): (Option<String>, Arc<LinkCounters>)) {
        if let Some(name) = name {
            add(self.closed.entry(name).or_default(), link.totals());
        }
    }
}

impl Traffic {
    fn table(&self) -> std::sync::MutexGuard<'_, TrafficTable> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new link to the peer at `peer_addr`: its counters. (A link still open at the
    /// same address is folded away first.)
    pub(crate) fn open(&self, peer_addr: &str) -> Arc<LinkCounters> {
        let link = Arc::new(LinkCounters::default());
        let mut table = self.table();
        if let Some(old) = table
            .links
            .insert(peer_addr.to_string(), (None, Arc::clone(&link)))
        {
            table.fold(old);
        }
        link
    }

    /// The link at `peer_addr` is the session with member `name`.
    pub(crate) fn named(&self, peer_addr: &str, name: &str) {
        if let Some(link) = self.table().links.get_mut(peer_addr) {
            link.0 = Some(name.to_string());
        }
    }

    /// The link at `peer_addr` closed.
    pub(crate) fn closed(&self, peer_addr: &str) {
        let mut table = self.table();
        if let Some(old) = table.links.remove(peer_addr) {
            table.fold(old);
        }
    }

    /// Per member, `[bytes in, frames in, bytes out, frames out]`, sorted by name.
    pub(crate) fn by_member(&self) -> BTreeMap<String, [u64; 4]> {
        let table = self.table();
        let mut by: BTreeMap<String, [u64; 4]> = table
            .closed
            .iter()
            .map(|(name, totals)| (name.clone(), *totals))
            .collect();
        for (name, link) in table.links.values() {
            if let Some(name) = name {
                add(by.entry(name.clone()).or_default(), link.totals());
            }
        }
        by
    }
}

/// Adds one link's totals to a member's.
fn add(into: &mut [u64; 4], totals: [u64; 4]) {
    for (sum, value) in into.iter_mut().zip(totals) {
        *sum = sum.saturating_add(value);
    }
}

/// What the node records as it goes; see the module documentation.
#[derive(Debug)]
pub(crate) struct NodeMetrics {
    applied: Counter,
    rejected: Counter,
    commit_seconds: Histogram,
    commit_operations: Histogram,
    commits_failed: Counter,
    /// 1 while the store takes writes, 0 from a failed commit until one succeeds.
    writable: Gauge,
    collection_seconds: Histogram,
    refused: Family<ReasonLabel, Counter>,
    policy_refused: Family<ReasonLabel, Counter>,
    batches_refused: Family<ReasonLabel, Counter>,
    part_restarts: Family<PartLabel, Counter>,
    part_waiting: Family<PartLabel, Gauge>,
    suspicions: Family<OutcomeLabel, Counter>,
    /// Bytes and frames per session link.
    pub(crate) traffic: Traffic,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            applied: Counter::default(),
            rejected: Counter::default(),
            // 50 µs to about 3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 17)),
            // 1 to about 4 million operations.
            commit_operations: Histogram::new(exponential_buckets(1.0, 4.0, 12)),
            commits_failed: Counter::default(),
            writable: {
                let writable = Gauge::default();
                writable.set(1);
                writable
            },
            // 1 ms to about 65 s.
            collection_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            refused: Family::default(),
            policy_refused: Family::default(),
            batches_refused: Family::default(),
            part_restarts: Family::default(),
            part_waiting: Family::default(),
            suspicions: Family::default(),
            traffic: Traffic::default(),
        }
    }
}

impl NodeMetrics {
    /// Registers every recorded metric in `registry` (a scrape's).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "operations_applied",
            "Operations this node's commits applied to its counters",
            self.applied.clone(),
        );
        registry.register(
            "operations_rejected",
            "Operations this node's commits refused because they would overflow a counter",
            self.rejected.clone(),
        );
        registry.register_with_unit(
            "commit_duration",
            "Time of each store commit, its fsync included",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register(
            "commit_operations",
            "Operations in each store commit (group commit: many batches per fsync)",
            self.commit_operations.clone(),
        );
        registry.register(
            "store_commits_failed",
            "Store commits that failed (a full or failing disk), each retry counted",
            self.commits_failed.clone(),
        );
        registry.register(
            "store_writable",
            "Whether the store takes writes (1), or its commits fail (0: from a failed \
             commit until one succeeds; client changes are refused meanwhile)",
            self.writable.clone(),
        );
        registry.register_with_unit(
            "collection_duration",
            "Time of each collection this node ran (stats over the whole cluster)",
            Unit::Seconds,
            self.collection_seconds.clone(),
        );
        registry.register(
            "connections_refused",
            "Inbound cluster connections refused, by reason",
            self.refused.clone(),
        );
        registry.register(
            "peer_refusals",
            "What peers said that this node's member policy refused (members speak only \
             for themselves), by reason",
            self.policy_refused.clone(),
        );
        registry.register(
            "batches_refused",
            "Batches from peers dropped whole, by reason: their sums overflow, or they \
             would start an incoming stream beyond the store's bounds",
            self.batches_refused.clone(),
        );
        registry.register(
            "part_restarts",
            "Parts of the node (the root's children) restarted after they failed, by part",
            self.part_restarts.clone(),
        );
        registry.register(
            "part_waiting_for_store",
            "Whether a failed part of the node waits for the store to be readable before it \
             can start again (1) or not (0), by part",
            self.part_waiting.clone(),
        );
        registry.register(
            "suspicions_checked",
            "Members another member found silent that this node checked with a heartbeat \
             of its own, by outcome: confirmed (no answer: declared unreachable here too) \
             or refuted (it answered)",
            self.suspicions.clone(),
        );
    }

    /// A check of a member another found silent ended: `confirmed` or `refuted`.
    pub(crate) fn suspicion_checked(&self, confirmed: bool) {
        let outcome = if confirmed { "confirmed" } else { "refuted" };
        self.suspicions
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// A commit took `seconds` and applied `applied` operations to counters, refusing
    /// `rejected` (they would have overflowed).
    pub(crate) fn committed(&self, seconds: f64, applied: u64, rejected: u64) {
        self.applied.inc_by(applied);
        self.rejected.inc_by(rejected);
        self.commit_seconds.observe(seconds);
        self.commit_operations.observe((applied + rejected) as f64);
        self.writable.set(1);
    }

    /// A commit failed: the store takes no writes until one succeeds.
    pub(crate) fn commit_failed(&self) {
        self.commits_failed.inc();
        self.writable.set(0);
    }

    /// A collection took `seconds`.
    pub(crate) fn collected(&self, seconds: f64) {
        self.collection_seconds.observe(seconds);
    }

    /// An inbound connection was refused.
    pub(crate) fn refused(&self, why: ConnectionRefusal) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    /// The member policy refused what a peer said.
    pub(crate) fn policy_refused(&self, why: PolicyRefusal) {
        self.policy_refused
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    /// A batch from a peer was dropped whole.
    pub(crate) fn batch_refused(&self, why: BatchRefusal) {
        self.batches_refused
            .get_or_create(&ReasonLabel {
                reason: why.as_str(),
            })
            .inc();
    }

    /// The root restarted the part it calls `what` ("counter host", "journal", ...):
    /// labelled with its words joined by `_` (`counter_host`). It waits for the store
    /// no more.
    pub(crate) fn part_restarted(&self, what: &str) {
        self.part_restarts.get_or_create(&part_label(what)).inc();
        self.part_waiting.get_or_create(&part_label(what)).set(0);
    }

    /// The root cannot start the part it calls `what` until the store can be read: it
    /// tries again until it can.
    pub(crate) fn part_waits_for_store(&self, what: &str) {
        self.part_waiting.get_or_create(&part_label(what)).set(1);
    }
}

/// The `part` label of the part the root calls `what`: its words joined by `_`.
fn part_label(what: &str) -> PartLabel {
    PartLabel {
        part: what.replace(' ', "_"),
    }
}
