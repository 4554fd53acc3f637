//! What a peer may say: members speak only for themselves.
//!
//! Any holder of the cookie (and, with TLS, of a certificate the CA signed) can open a
//! session. What it sends is then believed only where it concerns the peer itself, by
//! the name it authenticated with ([`MemberPolicy`], the node's
//! [`ractor_cluster::PeerPolicy`], consulted by every session before anything reaches
//! an actor):
//!
//! | what | believed when |
//! | --- | --- |
//! | its name | with TLS: a member's name only from a node certificate naming it ([`Tls::admits`]); a client certificate opens a client's session only |
//! | its actors (`NAME/host`, `NAME/agent`) | named after the peer itself: nobody else's host or agent can be mirrored here |
//! | a batch, a `Sync` or a `SyncedBatch`, of stream `S` | `S`'s sender is the peer (a client's streams carry its own session name) |
//! | a heartbeat, a leave notice or a suspicion | from a member, in its own name |
//!
//! and each peer has at most [`MAX_MIRRORED`] actors mirrored here. What a member says
//! of itself in its answers (its counters, whom it sees) is checked where it is read
//! ([`crate::stats::collect`], [`super::detector`]). What a member with a node
//! certificate can still do is in docs/operations.md (Security).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::ActorCell;
use shared::protocol::{agent_name, host_name, owner_node, validate_node_name};
use tracing::warn;

use super::names::{session_node_name, CLIENT_NAME_PREFIX};
use crate::metrics::{NodeMetrics, PolicyRefusal};
use crate::net::tls::Tls;

/// The most actors of one peer mirrored here (a node has two: its agent and its host).
pub(crate) const MAX_MIRRORED: usize = 16;

/// This node's policy; see the module documentation.
#[derive(Debug)]
pub(crate) struct MemberPolicy {
    /// This node's name: no peer may go by it.
    me: String,
    host: String,
    agent: String,
    tls: Option<Tls>,
    /// Things refused so far (logged at the first and then at each power of two).
    refused: AtomicU64,
    /// Where each refusal is counted, by reason.
    metrics: Arc<NodeMetrics>,
}

impl MemberPolicy {
    /// The policy of node `me`, whose links use `tls` (if on); refusals are counted
    /// in `metrics`.
    pub(crate) fn new(me: &str, tls: Option<Tls>, metrics: Arc<NodeMetrics>) -> Self {
        Self {
            me: me.to_string(),
            host: host_name(me),
            agent: agent_name(me),
            tls,
            refused: AtomicU64::new(0),
            metrics,
        }
    }

    /// Counts a refusal, and logs it a bounded number of times.
    fn refuse(&self, peer: &str, why: PolicyRefusal) -> bool {
        self.metrics.policy_refused(why);
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            let what = said(why);
            warn!(%peer, refused = n, "refused from a peer: {what} (members speak only for themselves)");
        }
        false
    }
}

/// What a peer said that was refused for `why`, in words.
fn said(why: PolicyRefusal) -> &'static str {
    match why {
        PolicyRefusal::NotANodeName => "a member's name that is not a node name",
        PolicyRefusal::OwnName => "this node's own name",
        PolicyRefusal::NoNodeCertificate => {
            "a member's name without a node certificate that names it"
        }
        PolicyRefusal::ClientActor => "a client's actor",
        PolicyRefusal::TooManyActors => "more actors than a node has",
        PolicyRefusal::AnotherNodesActor => "an actor named for another node",
        PolicyRefusal::AnotherStream => "a batch or sync of another's stream",
        PolicyRefusal::AnotherHeartbeat => {
            "a heartbeat, a leave notice or a suspicion in another's name"
        }
    }
}

/// Whether a session's node name is a client's.
fn is_client(node: &str) -> bool {
    node.starts_with(CLIENT_NAME_PREFIX)
}

/// The name a stream id or a beat starts with (its sender, or whom it is from): the
/// first field of each, a string.
#[derive(serde::Deserialize)]
struct FirstName<'a> {
    #[serde(borrow)]
    name: &'a str,
}

/// The name at the start of the first argument of a serialized cluster message (a
/// `StreamId` or a `Beat`). ractor_cluster's derive frames each argument as its length
/// (8 bytes, big-endian) followed by its bytes; only the name is decoded, in place.
fn first_name(args: &[u8]) -> Option<&str> {
    let (length, rest) = args.split_first_chunk::<8>()?;
    let length = usize::try_from(u64::from_be_bytes(*length)).ok()?;
    let first: FirstName<'_> = shared::codec::decode_prefix(rest.get(..length)?).ok()?;
    Some(first.name)
}

impl ractor_cluster::PeerPolicy for MemberPolicy {
    fn may_authenticate(&self, peer_name: &str, peer_addr: &str) -> bool {
        let node = session_node_name(peer_name);
        let client = is_client(node);
        if !client && validate_node_name(node).is_err() {
            return self.refuse(peer_name, PolicyRefusal::NotANodeName);
        }
        if node == self.me {
            return self.refuse(peer_name, PolicyRefusal::OwnName);
        }
        match &self.tls {
            Some(tls) if !tls.admits(peer_addr, node, client) => {
                self.refuse(peer_name, PolicyRefusal::NoNodeCertificate)
            }
            _ => true,
        }
    }

    fn may_advertise(&self, peer_name: &str, actor_name: Option<&str>, mirrored: usize) -> bool {
        let node = session_node_name(peer_name);
        if is_client(node) {
            // A client needs none of its actors known here, and a host or an agent of
            // one would pass for a member's.
            return self.refuse(peer_name, PolicyRefusal::ClientActor);
        }
        if mirrored >= MAX_MIRRORED {
            return self.refuse(peer_name, PolicyRefusal::TooManyActors);
        }
        match actor_name {
            Some(name) if owner_node(name) != Some(node) => {
                self.refuse(peer_name, PolicyRefusal::AnotherNodesActor)
            }
            _ => true,
        }
    }

    fn may_deliver(&self, peer_name: &str, target: &ActorCell, variant: &str, args: &[u8]) -> bool {
        // Only these say something about their sender; anything else goes through
        // (the variant is looked at first: it costs nothing).
        let (about, clients_may, refusal) = match variant {
            "Batch" | "Sync" | "SyncedBatch" => (&self.host, true, PolicyRefusal::AnotherStream),
            "Heartbeat" | "Leaving" | "Suspect" => {
                (&self.agent, false, PolicyRefusal::AnotherHeartbeat)
            }
            _ => return true,
        };
        if target.get_name().as_ref() != Some(about) {
            return true;
        }
        let node = session_node_name(peer_name);
        if (is_client(node) && !clients_may) || first_name(args) != Some(node) {
            return self.refuse(peer_name, refusal);
        }
        true
    }
}

/// Whether `info`, an answer from node `node`'s own agent or host, speaks for that node
/// (a node's, by its name) and stays within what any node may claim: what is believed
/// of a peer's description.
pub(crate) fn of_itself(node: &str, info: &shared::agent::NodeInfo) -> bool {
    info.name == node
        && validate_node_name(node).is_ok()
        && info.counters <= shared::protocol::MAX_COUNTERS
}

/// Whether `view`, an answer to gossip from node `node`'s own agent, speaks for that
/// node and stays within what any node may claim.
pub(crate) fn view_of_itself(node: &str, view: &shared::agent::View) -> bool {
    view.node.name == node
        && validate_node_name(node).is_ok()
        && view.counters <= shared::protocol::MAX_COUNTERS
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::message::SerializedMessage;
    use ractor::Message;
    use ractor_cluster::PeerPolicy;
    use shared::agent::{AgentMessage, Beat};
    use shared::host::{Batch, HostMessage, StreamId};

    fn cast_args<M: Message>(message: M) -> (String, Vec<u8>) {
        match message.serialize().unwrap() {
            SerializedMessage::Cast { variant, args, .. }
            | SerializedMessage::Call { variant, args, .. } => (variant, args),
            _ => panic!("not a cast or a call"),
        }
    }

    /// Each peer speaks for itself: its own streams, its own heartbeats, actors named
    /// after it; and a client for nobody but its own session.
    #[tokio::test]
    async fn a_peer_speaks_only_for_itself() {
        let facts = Arc::new(crate::facts::NodeFacts::for_tests("policy-me", 0));
        let policy = MemberPolicy::new("policy-me", None, Arc::clone(&facts.metrics));
        let (host, host_handle) =
            crate::testing::Hoarder::<HostMessage>::start(Some("policy-me/host"), None).await;
        let (agent, agent_handle) =
            crate::testing::Hoarder::<AgentMessage>::start(Some("policy-me/agent"), None).await;
        let stream_batch = |sender: &str| Batch {
            stream: StreamId {
                sender: sender.into(),
                origin: 9,
            },
            seq: 1,
            base: 0,
            changes: Vec::new(),
        };
        let batch = |sender: &str| cast_args(HostMessage::Batch(stream_batch(sender)));
        let synced = |sender: &str| {
            let (reply, _) = ractor::concurrency::oneshot();
            cast_args(HostMessage::SyncedBatch(stream_batch(sender), reply.into()))
        };
        let beat = |from: &str| {
            let (reply, _) = ractor::concurrency::oneshot();
            let beat = Beat {
                from: from.into(),
                incarnation: 1,
            };
            cast_args(AgentMessage::Heartbeat(beat, reply.into()))
        };
        let suspect = |from: &str| {
            let beat = Beat {
                from: from.into(),
                incarnation: 1,
            };
            let whom = shared::agent::PeerAddr {
                name: "w3".into(),
                addr: "h:3".into(),
                incarnation: 1,
            };
            cast_args(AgentMessage::Suspect(beat, whom))
        };
        let host_cell = host.get_cell();
        let agent_cell = agent.get_cell();
        let deliver = |peer: &str, cell: &ActorCell, (variant, args): (String, Vec<u8>)| {
            policy.may_deliver(peer, cell, &variant, &args)
        };
        assert!(deliver("w1@h:1", &host_cell, batch("w1")));
        assert!(
            !deliver("w1@h:1", &host_cell, batch("w2")),
            "another's stream"
        );
        assert!(deliver("w1@h:1", &host_cell, synced("w1")));
        assert!(
            !deliver("w1@h:1", &host_cell, synced("w2")),
            "another's stream, with its fence"
        );
        assert!(deliver("~client-7-0@h:1", &host_cell, batch("~client-7-0")));
        assert!(!deliver("~client-7-0@h:1", &host_cell, batch("w1")));
        assert!(deliver("w1@h:1", &agent_cell, beat("w1")));
        assert!(
            !deliver("w1@h:1", &agent_cell, beat("w2")),
            "another's heartbeat"
        );
        assert!(!deliver(
            "~client-7-0@h:1",
            &agent_cell,
            beat("~client-7-0")
        ));
        assert!(deliver("w1@h:1", &agent_cell, suspect("w1")));
        assert!(
            !deliver("w1@h:1", &agent_cell, suspect("w2")),
            "a suspicion in another's name"
        );
        assert!(!deliver("w1@h:1", &agent_cell, beat("")));
        assert!(deliver(
            "w1@h:1",
            &host_cell,
            (String::from("Flush"), Vec::new())
        ));
        // Garbage where a stream id should be is refused.
        assert!(!deliver(
            "w1@h:1",
            &host_cell,
            ("Batch".into(), vec![0, 0, 0])
        ));

        assert!(policy.may_advertise("w1@h:1", Some("w1/host"), 1));
        assert!(!policy.may_advertise("w1@h:1", Some("w2/host"), 1));
        assert!(
            !policy.may_advertise("~client-7-0@h:1", Some("~client-7-0/host"), 0),
            "a client's host would pass for a member's"
        );
        assert!(
            !policy.may_authenticate("policy-me@h:1", "127.0.0.1:9"),
            "my own name"
        );
        assert!(!policy.may_advertise("w1@h:1", Some("w1/x"), MAX_MIRRORED));
        assert!(policy.may_advertise("w1@h:1", None, 0));
        assert!(policy.may_authenticate("w1@h:1", "127.0.0.1:9"));
        assert!(policy.may_authenticate("~client-1-0@h:1", "127.0.0.1:9"));
        assert!(!policy.may_authenticate("a b@h:1", "127.0.0.1:9"));
        // Each refusal is counted by its reason.
        let text = crate::metrics::encode(&crate::metrics::registry(Arc::clone(&facts)));
        for (reason, n) in [
            ("another_stream", 4),
            ("another_heartbeat", 4),
            ("another_nodes_actor", 1),
            ("client_actor", 1),
            ("own_name", 1),
            ("too_many_actors", 1),
            ("not_a_node_name", 1),
        ] {
            let series = format!(
                "counter_cluster_peer_refusals_total{{node=\"policy-me\",reason=\"{reason}\"}} {n}\n"
            );
            assert!(text.contains(&series), "no {series} in\n{text}");
        }
        host.stop(None);
        agent.stop(None);
        host_handle.await.unwrap();
        agent_handle.await.unwrap();
    }
}
