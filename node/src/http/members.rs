//! `GET /cluster/members`: the cluster as the node asked sees it, in the spirit of Akka
//! Management's `/cluster/members`. A pure function of the node's membership table, so
//! it is tested on its own.
//!
//! Every member has its address, role, status as this node sees it (`self`, `up`,
//! `unreachable`, `joining`) and since when, and `unreachable_from`: the members that
//! do not see it up. That comes from gossip: each member that is up from here said
//! whom it sees up when it last described itself (every gossip round, about once a
//! second); a member unreachable from here has no fresh view, so it is left out of
//! everyone's `unreachable_from` but its own entry says it.

use serde::Serialize;

use crate::cluster::membership::{MemberEvent, PeerStatus, PeerView};

/// The answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Members {
    /// The node that answered.
    pub(crate) node: String,
    /// Every member, this node included, sorted by name.
    pub(crate) members: Vec<Member>,
    /// Members some member does not see up: `{node, unreachable_from}` for each.
    pub(crate) unreachable: Vec<Unreachable>,
    /// The latest membership events this node saw, oldest first.
    pub(crate) events: Vec<MemberEvent>,
}

/// One member.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Member {
    /// Node name.
    pub(crate) name: String,
    /// `host:port` its cluster port is dialed at.
    pub(crate) address: String,
    /// `coordinator` or `worker`, once it has described itself.
    pub(crate) role: Option<&'static str>,
    /// `self`, `up`, `unreachable` or `joining` (known, not connected yet), as this
    /// node sees it.
    pub(crate) status: &'static str,
    /// When that status began, in milliseconds since the Unix epoch.
    pub(crate) since_ms: u64,
    /// Counters it hosts, once it has described itself.
    pub(crate) counters: Option<u32>,
    /// Members that do not see it up (this node included), by name.
    pub(crate) unreachable_from: Vec<String>,
    /// The round trip of this node's last exchange with it (every gossip round), in
    /// milliseconds, while it is up.
    pub(crate) round_trip_ms: Option<f64>,
}

/// A member some member does not see up.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Unreachable {
    /// The member.
    pub(crate) node: String,
    /// Who does not see it up.
    pub(crate) unreachable_from: Vec<String>,
}

/// The node answering, as the table does not hold it.
#[derive(Debug, Clone)]
pub(crate) struct Me<'a> {
    pub(crate) name: &'a str,
    pub(crate) address: &'a str,
    pub(crate) role: &'static str,
    pub(crate) since_ms: u64,
    pub(crate) counters: u32,
}

/// The members view from this node (`me`), its table (`peers`, left ones excluded)
/// and its latest membership `events`.
pub(crate) fn members(me: &Me<'_>, peers: &[PeerView], events: Vec<MemberEvent>) -> Members {
    // Whose view of the others is known: this node's, and that of every member up
    // from here that has described itself.
    let mut views: Vec<(&str, Vec<&str>)> = vec![(
        me.name,
        peers
            .iter()
            .filter(|p| p.status == PeerStatus::Up)
            .map(|p| p.name.as_str())
            .collect(),
    )];
    for peer in peers.iter().filter(|p| p.status == PeerStatus::Up) {
        if let Some(sees) = &peer.sees_up {
            views.push((&peer.name, sees.iter().map(String::as_str).collect()));
        }
    }
    let not_seen_by = |name: &str| -> Vec<String> {
        let mut by: Vec<String> = views
            .iter()
            .filter(|(viewer, sees)| *viewer != name && !sees.contains(&name))
            .map(|(viewer, _)| viewer.to_string())
            .collect();
        by.sort();
        by
    };
    let mut list = vec![Member {
        name: me.name.to_string(),
        address: me.address.to_string(),
        role: Some(me.role),
        status: "self",
        since_ms: me.since_ms,
        counters: Some(me.counters),
        unreachable_from: not_seen_by(me.name),
        round_trip_ms: None,
    }];
    for peer in peers {
        list.push(Member {
            name: peer.name.clone(),
            address: peer.addr.clone(),
            role: peer.role.map(|r| r.as_str()),
            status: match peer.status {
                PeerStatus::Up => "up",
                PeerStatus::Unreachable => "unreachable",
                PeerStatus::Pending | PeerStatus::Left => "joining",
            },
            since_ms: peer.since_ms,
            counters: peer.counters,
            unreachable_from: not_seen_by(&peer.name),
            round_trip_ms: peer
                .round_trip
                .filter(|_| peer.status == PeerStatus::Up)
                .map(|d| d.as_secs_f64() * 1e3),
        });
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let unreachable = list
        .iter()
        .filter(|m| !m.unreachable_from.is_empty())
        .map(|m| Unreachable {
            node: m.name.clone(),
            unreachable_from: m.unreachable_from.clone(),
        })
        .collect();
    Members {
        node: me.name.to_string(),
        members: list,
        unreachable,
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::Role;

    fn peer(name: &str, status: PeerStatus, sees_up: Option<&[&str]>) -> PeerView {
        PeerView {
            name: name.into(),
            addr: format!("{name}:4697"),
            status,
            since_ms: 7,
            role: Some(Role::Worker),
            counters: Some(4),
            sees_up: sees_up
                .map(|s| std::sync::Arc::new(s.iter().map(|n| n.to_string()).collect())),
            round_trip: Some(std::time::Duration::from_micros(250)),
        }
    }

    fn me() -> Me<'static> {
        Me {
            name: "coordinator",
            address: "coordinator:4697",
            role: "coordinator",
            since_ms: 1,
            counters: 4,
        }
    }

    #[test]
    fn a_full_mesh_has_nobody_unreachable() {
        let peers = [
            peer("w1", PeerStatus::Up, Some(&["coordinator", "w2"])),
            peer("w2", PeerStatus::Up, Some(&["coordinator", "w1"])),
        ];
        let m = members(&me(), &peers, Vec::new());
        assert_eq!(m.members.len(), 3);
        assert_eq!(m.members[0].status, "self");
        assert_eq!(m.members[1].round_trip_ms, Some(0.25));
        assert!(m.unreachable.is_empty(), "{m:?}");
    }

    #[test]
    fn a_frozen_worker_is_unreachable_from_everyone_who_says_so() {
        // w2 is frozen: this node and w1 have lost it; w2's own last view is stale
        // and left out.
        let peers = [
            peer("w1", PeerStatus::Up, Some(&["coordinator"])),
            peer("w2", PeerStatus::Unreachable, Some(&["coordinator", "w1"])),
        ];
        let m = members(&me(), &peers, Vec::new());
        let w2 = m.members.iter().find(|p| p.name == "w2").unwrap();
        assert_eq!(w2.status, "unreachable");
        assert_eq!(
            w2.round_trip_ms, None,
            "an unreachable peer has no fresh round trip"
        );
        assert_eq!(w2.unreachable_from, vec!["coordinator", "w1"]);
        assert_eq!(
            m.unreachable,
            vec![Unreachable {
                node: "w2".into(),
                unreachable_from: vec!["coordinator".into(), "w1".into()]
            }]
        );
    }

    #[test]
    fn a_link_down_between_two_others_shows_from_gossip() {
        // Both workers are up from here, but w1 does not see w2.
        let peers = [
            peer("w1", PeerStatus::Up, Some(&["coordinator"])),
            peer("w2", PeerStatus::Up, Some(&["coordinator", "w1"])),
        ];
        let m = members(&me(), &peers, Vec::new());
        let w2 = m.members.iter().find(|p| p.name == "w2").unwrap();
        assert_eq!(w2.status, "up");
        assert_eq!(w2.unreachable_from, vec!["w1"]);
        let w1 = m.members.iter().find(|p| p.name == "w1").unwrap();
        assert!(w1.unreachable_from.is_empty());
    }
}
