//! Finding the cluster's actors through ractor's process groups: each node's counter
//! host ([`HOSTS_GROUP`]), agent ([`NODES_GROUP`]) and keeper of copies
//! ([`COPIES_GROUP`]). A member's actor name, `NODE/host`, `NODE/agent` or
//! `NODE/copies`, says which node it belongs to.
//!
//! Groups are process-wide and hold this node's own actors as well as the `RemoteActor`
//! shims ractor_cluster creates for every connected peer's. That is sound in a node
//! (one `NodeServer`, so every remote actor id is unique); a process with several
//! client connections finds each node's actors through its own session instead
//! ([`ClusterClient`](crate::client::ClusterClient)).

use std::collections::HashSet;

use ractor::{pg, ActorCell, ActorRef};
use shared::agent::AgentMessage;
use shared::copies::{CopiesMessage, COPIES_GROUP};
use shared::host::HostMessage;
use shared::protocol::{owner_node, validate_node_name, HOSTS_GROUP, NODES_GROUP};

/// Members of `group` that follow the naming scheme (a valid node name, `NODE/…`), as
/// `(node, actor)`, one per node (a peer that is briefly connected twice shows its
/// actors twice), sorted by node.
fn by_node(group: &str) -> Vec<(String, ActorCell)> {
    let mut seen = HashSet::new();
    let mut members: Vec<(String, ActorCell)> = pg::get_members(&group.to_string())
        .into_iter()
        .filter_map(|cell| {
            let node = owner_node(&cell.get_name()?)?.to_string();
            validate_node_name(&node).ok()?;
            Some((node, cell))
        })
        .filter(|(node, _)| seen.insert(node.clone()))
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    members
}

/// Every counter host known (this node's and its peers'), by node name.
pub(crate) fn hosts() -> Vec<(String, ActorRef<HostMessage>)> {
    by_node(HOSTS_GROUP)
        .into_iter()
        .map(|(node, cell)| (node, cell.into()))
        .collect()
}

/// The counter host of `node`, if it is known.
pub fn find_host(node: &str) -> Option<ActorRef<HostMessage>> {
    hosts()
        .into_iter()
        .find(|(n, _)| n == node)
        .map(|(_, host)| host)
}

/// Every peer's agent (this node's own left out), by node name.
pub fn remote_agents() -> Vec<(String, ActorRef<AgentMessage>)> {
    by_node(NODES_GROUP)
        .into_iter()
        .filter(|(_, cell)| !cell.get_id().is_local())
        .map(|(node, cell)| (node, cell.into()))
        .collect()
}

/// Node `node`'s keeper of copies, if it is known (this node's own included).
pub(crate) fn keeper(node: &str) -> Option<ActorRef<CopiesMessage>> {
    keepers()
        .into_iter()
        .find(|(n, _)| n == node)
        .map(|(_, k)| k)
}

/// Every keeper of copies known (this node's and its peers'), by node name.
pub(crate) fn keepers() -> Vec<(String, ActorRef<CopiesMessage>)> {
    by_node(COPIES_GROUP)
        .into_iter()
        .map(|(node, cell)| (node, cell.into()))
        .collect()
}
