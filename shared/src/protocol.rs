//! Names and rules every node agrees on: protocol version, process groups, naming.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Bumped whenever a wire type or message variant changes incompatibly. Nodes report
/// it in [`crate::NodeInfo`] so a mixed-version cluster is visible in `node stats`.
pub const PROTOCOL_VERSION: u32 = 12;

/// The process group of counter hosts, one per node: the one remote entry point to a
/// node's counters, for changes and reads alike (see [`crate::host::HostMessage`]).
/// Counters themselves are node-local actors, so ractor never mirrors them to peers.
pub const HOSTS_GROUP: &str = "counter-cluster.hosts";

/// The process group of node agents, one per node. A connection that has no agent
/// here (a short-lived client) is not a cluster member.
pub const NODES_GROUP: &str = "counter-cluster.nodes";

/// Longest accepted node name.
pub const MAX_NODE_NAME_LEN: usize = 64;

/// The most counters a node may host: a node refuses to start with more, and a peer
/// that claims more is not believed (the claim would size allocations everywhere).
pub const MAX_COUNTERS: u32 = 1_000_000;

/// The longest id a client change may carry, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Checks a client change's id: 1 to [`MAX_ID_LEN`] bytes.
pub fn validate_change_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!(
            "a change's id must be 1 to {MAX_ID_LEN} bytes, got {}",
            id.len()
        ));
    }
    Ok(())
}

/// A client change's id: 1 to [`MAX_ID_LEN`] of letters, digits, '.', '_', ':', '-'.
pub fn parse_change_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "an id is 1 to {MAX_ID_LEN} of letters, digits, '.', '_', ':', '-'"
        ))
    }
}

/// A new random change id (when a client gives none): 128 random bits in hex.
pub fn new_change_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// What a node does besides hosting counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Runs the aggregator that collects and logs the cluster-wide totals.
    Coordinator,
    /// Hosts counters (and optionally load clients) only.
    Worker,
}

impl Role {
    /// The lowercase name used on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "coordinator" => Ok(Role::Coordinator),
            "worker" => Ok(Role::Worker),
            other => Err(format!(
                "unknown role '{other}' (expected coordinator or worker)"
            )),
        }
    }
}

/// Checks a node name: 1 to 64 of `A-Z a-z 0-9 . _ -`. The restriction keeps `/`
/// free to separate a node from its counters and keeps names safe in logs.
pub fn validate_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME_LEN {
        return Err(format!(
            "node name must be 1 to {MAX_NODE_NAME_LEN} characters, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "node name '{name}' contains '{bad}': use letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// The cluster-wide name of counter `index` on `node`, e.g. `worker-1/3`.
pub fn counter_name(node: &str, index: u32) -> String {
    format!("{node}/{index}")
}

/// The actor name of a node's agent, e.g. `worker-1/agent`.
pub fn agent_name(node: &str) -> String {
    format!("{node}/agent")
}

/// The actor name of a node's counter host, e.g. `worker-1/host`.
pub fn host_name(node: &str) -> String {
    format!("{node}/host")
}

/// Splits a counter name into its node and index (`None` unless it is `NODE/INDEX`
/// with a valid node name and a decimal index).
pub fn parse_counter_name(name: &str) -> Option<(&str, u32)> {
    let (node, index) = name.rsplit_once('/')?;
    validate_node_name(node).ok()?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((node, index.parse().ok()?))
}

/// The node that owns a counter or agent, from its actor name (`None` for a name that
/// does not follow the scheme).
pub fn owner_node(actor_name: &str) -> Option<&str> {
    actor_name
        .rsplit_once('/')
        .map(|(node, _)| node)
        .filter(|node| !node.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_to_their_node() {
        assert_eq!(counter_name("worker-1", 3), "worker-1/3");
        assert_eq!(owner_node(&counter_name("worker-1", 3)), Some("worker-1"));
        assert_eq!(owner_node(&agent_name("coordinator")), Some("coordinator"));
        assert_eq!(owner_node("no-slash"), None);
        assert_eq!(owner_node("/3"), None);
        assert_eq!(owner_node(&host_name("w")), Some("w"));
        assert_eq!(parse_counter_name("worker-1/3"), Some(("worker-1", 3)));
        assert_eq!(parse_counter_name("worker-1/+3"), None);
        assert_eq!(parse_counter_name("worker-1/"), None);
        assert_eq!(parse_counter_name("a b/1"), None);
        assert_eq!(parse_counter_name("w/99999999999"), None);
    }

    #[test]
    fn node_names_are_validated() {
        assert!(validate_node_name("worker-1.eu_west").is_ok());
        assert!(validate_node_name("").is_err());
        assert!(validate_node_name("a/b").is_err());
        assert!(validate_node_name("a@b").is_err());
        assert!(validate_node_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn roles_parse_and_print() {
        for role in [Role::Coordinator, Role::Worker] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("leader".parse::<Role>().is_err());
    }
}
