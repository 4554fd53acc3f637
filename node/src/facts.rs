//! What a node says about itself ([`NodeInfo`]): fixed facts (name, role, address,
//! incarnation) and live figures (counter restarts, what its load clients issued, whom
//! it knows). One value per node, shared by the agent (gossip, `node health`) and the
//! counter host (every collection report), and outliving both.

use std::sync::Arc;

use shared::agent::{Beat, NodeInfo, PeerAddr, View};
use shared::copies::CopyStatus;
use shared::protocol::{Role, PROTOCOL_VERSION};

use crate::cluster::departure::Departing;
use crate::cluster::membership::Membership;
use crate::copies::outgoing::Outgoing;
use crate::counters::table::CounterTable;
use crate::load::tally::IssuedTally;
use crate::metrics::NodeMetrics;
use crate::store::faults::DiskFaults;
use crate::store::ReceivedTotals;

/// The node as it describes itself; see the module documentation.
#[derive(Debug)]
pub(crate) struct NodeFacts {
    /// Node name.
    pub(crate) name: String,
    /// Node role.
    pub(crate) role: Role,
    /// This run of the node (see [`NodeInfo::incarnation`]).
    pub(crate) incarnation: u64,
    /// `host:port` peers dial.
    pub(crate) advertise: String,
    /// The node's counters (how many, and their restarts).
    pub(crate) table: Arc<CounterTable>,
    /// What this node's load clients have issued.
    pub(crate) issued: Arc<IssuedTally>,
    /// What this node has applied from each incoming stream.
    pub(crate) received: Arc<ReceivedTotals>,
    /// The cluster as this node sees it.
    pub(crate) membership: Membership,
    /// What the node records for `GET /metrics`.
    pub(crate) metrics: Arc<NodeMetrics>,
    /// The store's last commit when the node started (0: a new store, or memory-only).
    pub(crate) recovered_commit: u64,
    /// The store's disk fault hook, when fault injection is enabled (for the count of
    /// disk errors it injected).
    pub(crate) disk_faults: Option<Arc<DiskFaults>>,
    /// Whether the node is leaving the cluster, and whether it takes changes meanwhile.
    pub(crate) departing: Departing,
    /// The commits its store's copy does not hold yet (`None`: one copy).
    pub(crate) outgoing: Option<Arc<Outgoing>>,
}

impl NodeFacts {
    /// The node's description right now.
    pub(crate) fn info(&self) -> NodeInfo {
        let issued = self.issued.read();
        let unvouched = self.issued.unvouched();
        NodeInfo {
            name: self.name.clone(),
            role: self.role,
            advertise: self.advertise.clone(),
            protocol_version: PROTOCOL_VERSION,
            incarnation: self.incarnation,
            counters: self.table.len(),
            counter_restarts: self.table.restarts(),
            issued_value: issued.value,
            issued_operations: issued.operations,
            in_flight_operations: self.issued.in_flight(),
            in_flight_to: self.issued.in_flight_to(),
            unvouched_value: unvouched.value,
            unvouched_operations: unvouched.operations,
            received: self.received.by_sender(),
            store_commits: self.received.commits(),
            known_peers: self.membership.gossip(),
            copy: self.outgoing.as_ref().map_or(
                CopyStatus {
                    copies: 1,
                    ..CopyStatus::default()
                },
                |o| o.status(),
            ),
        }
    }

    /// This node's answer to gossip from a member whose view has digest `digest`: who
    /// it is, and whom it sees up unless the asker sees the same.
    pub(crate) fn view(&self, digest: u64) -> View {
        let same = self.membership.digest(&self.name, &self.advertise) == digest;
        View {
            node: PeerAddr {
                name: self.name.clone(),
                addr: self.advertise.clone(),
                incarnation: self.incarnation,
            },
            role: self.role,
            counters: self.table.len(),
            peers: (!same).then(|| self.membership.gossip()),
        }
    }

    /// This node's heartbeat: its name and run.
    pub(crate) fn beat(&self) -> Beat {
        Beat {
            from: self.name.clone(),
            incarnation: self.incarnation,
        }
    }

    /// A worker named `name` with `counters` counters, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, counters: u32) -> Self {
        Self {
            name: name.to_string(),
            role: Role::Worker,
            incarnation: 1,
            advertise: format!("{name}:4697"),
            table: Arc::new(CounterTable::new(name, counters)),
            issued: Arc::default(),
            received: Arc::default(),
            membership: Membership::default(),
            metrics: Arc::default(),
            recovered_commit: 0,
            disk_faults: None,
            departing: Departing::default(),
            outgoing: None,
        }
    }
}
