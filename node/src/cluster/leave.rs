//! Leaving the cluster, for a while or for good.
//!
//! - **For a while** is a clean stop (Ctrl-C, SIGTERM, what an orchestrator's
//!   scale-down sends, or `node leave`): the node may come back with its data. Its
//!   counters' counts go away with it until it does, and every member that hears its
//!   leave notice lists it as departed, with them, in its collections.
//! - **For good** is an operator's decision (`node leave --for-good`, `POST
//!   /cluster/leave`). Until the cluster can move counters to other nodes, a node
//!   leaves for good only if its counters hold no count and nothing it issued is in
//!   flight; otherwise it refuses and says why, and goes on as before. A node that
//!   left for good leaves a mark in its data dir and never starts there again.
//!
//! Either way what the leave notice says the node took is exact: the counter host
//! takes no change from the moment the node closes (see
//! [`departure`](super::departure)), what it took before is committed ([`quiesce`]),
//! and only then are the store's totals read; if they cannot be settled, the notice
//! says the counts are not known.
//!
//! Leaving for good also needs nothing in flight either way: the node runs no load
//! client and has nothing of its own unacknowledged, every member up says it holds
//! nothing for this node's counters, and the closed host turned nothing away while
//! the node decided. A decision takes the node's departure state from `Deciding` to
//! leaving for good, or back to open (see [`departure`](super::departure)): one at a
//! time, and a clean stop meanwhile wins.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use shared::agent::{AgentMessage, ClientAnswer, ClientError, Departure};
use shared::host::HostMessage;
use shared::protocol::host_name;
use tokio::time::Instant;
use tracing::{info, warn};

use super::discovery::remote_agents;
use super::rpc::{ask, call_until, gather};
use crate::facts::NodeFacts;
use crate::store::journal::{journal_name, JournalMessage};
use crate::store::Store;

/// How long the host and the journal may take to settle before a departure.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Once the node is closed, waits until every change its host took before is
/// committed: two round trips through the host (whatever it was handling when the node
/// closed has then handed its batches on), then the journal drained. False if either
/// did not answer in time.
pub(crate) async fn quiesce(node: &str) -> bool {
    let until = Instant::now() + QUIESCE_TIMEOUT;
    if let Some(host) = ActorRef::<HostMessage>::where_is(host_name(node)) {
        for _ in 0..2 {
            let barrier = |reply| HostMessage::GetValue(0, reply);
            if call_until(host.clone(), barrier, until).await.is_none() {
                return false;
            }
        }
    }
    // No journal (it is restarting): a commit its predecessor handed off may still
    // land, so the store is not settled.
    match ActorRef::<JournalMessage>::where_is(journal_name(node)) {
        Some(journal) => call_until(journal, JournalMessage::Drain, until)
            .await
            .is_some(),
        None => false,
    }
}

/// What the node takes with it: its counters' totals in `store` (read off the async
/// threads) and what its load clients issued. Call it once the node is closed and
/// quiesced.
pub(crate) async fn departure(facts: &NodeFacts, store: &Arc<Store>, for_good: bool) -> Departure {
    let counters = facts.table.len();
    let reading = Arc::clone(store);
    let records = crate::runtime::busy_poll::spawn_blocking(move || {
        let id = reading.store_id().ok().flatten().map_or(0, |(id, _)| id);
        reading.records(0..counters).map(|records| (id, records))
    })
    .await;
    let issued = facts.issued.read();
    let mut departure = Departure {
        for_good,
        counters,
        known: false,
        value: 0,
        operations: 0,
        issued_value: issued.value,
        issued_operations: issued.operations,
        in_flight_operations: facts.issued.in_flight(),
        store_id: 0,
    };
    match records {
        Ok(Ok((store_id, records))) => {
            departure.known = true;
            departure.store_id = store_id;
            for record in records {
                departure.value += i128::from(record.value);
                departure.operations += u128::from(record.operations);
            }
        }
        Ok(Err(error)) => warn!(%error, "cannot read the counters' totals for the leave notice"),
        Err(error) => warn!(%error, "cannot read the counters' totals for the leave notice"),
    }
    departure
}

/// How long peers have to say what they hold for this node before it leaves for good.
const PEERS_TIMEOUT: Duration = Duration::from_secs(2);

/// `node leave --for-good`: closes the node, and either leaves (marks its data dir and
/// asks the node to stop, telling its peers it left for good) or opens it again and
/// says why it cannot.
pub(crate) async fn leave_for_good(
    facts: &NodeFacts,
    store: &Arc<Store>,
) -> Result<ClientAnswer, ClientError> {
    let refused = |why: String| ClientError::CannotLeave {
        node: facts.name.clone(),
        why,
    };
    facts
        .departing
        .decide()
        .map_err(|e| refused(e.to_string()))?;
    let decided = decide(facts, store).await;
    let why = match decided {
        Ok(()) => {
            let mark = format!(
                "{} left the cluster for good at {} ms since the Unix epoch (node leave \
                 --for-good)\n",
                facts.name,
                crate::clock::unix_millis()
            );
            match facts.departing.leave_for_good(&mark) {
                Ok(()) => {
                    info!("leaving the cluster for good: it holds no counts, and nothing is in flight to or from it");
                    return Ok(ClientAnswer::Leaving {
                        node: facts.name.clone(),
                        for_good: true,
                    });
                }
                Err(error) => error.to_string(),
            }
        }
        Err(why) => why,
    };
    facts.departing.reopen();
    Err(refused(why))
}

/// With the node closed: whether it can leave for good (`Err`: why not).
async fn decide(facts: &NodeFacts, store: &Arc<Store>) -> Result<(), String> {
    if facts.issued.running() {
        return Err(
            "its load clients are running (it was started with --load): start it \
                    without, or let its --load-ops finish, and try again"
                .into(),
        );
    }
    let in_flight = facts.issued.in_flight();
    if in_flight > 0 {
        return Err(in_flight_why(in_flight));
    }
    if !quiesce(&facts.name).await {
        return Err(format!(
            "its changes could not be committed within {QUIESCE_TIMEOUT:?} (its store is \
             busy or failing); try again"
        ));
    }
    let departure = departure(facts, store, true).await;
    if let Some(why) = why_it_stays(&departure, facts.issued.in_flight()) {
        return Err(why);
    }
    let held = held_for_me(facts).await?;
    let dropped = facts.departing.dropped();
    if held > 0 || dropped > 0 {
        return Err(format!(
            "its peers hold {held} operations for its counters not yet delivered (and it \
             turned away {dropped} batches while deciding): they would never be applied. \
             Stop the load on its counters, and try again once they are delivered"
        ));
    }
    Ok(())
}

/// What the members up hold for this node's counters, issued and not acknowledged;
/// `Err` if one of them does not say (it may hold some).
async fn held_for_me(facts: &NodeFacts) -> Result<u64, String> {
    let up = facts.membership.up_names();
    let pending = remote_agents()
        .into_iter()
        .filter(|(node, _)| up.contains(node))
        .map(|(node, agent)| (node, ask(&agent, AgentMessage::GetInfo, PEERS_TIMEOUT)))
        .collect();
    let answers = gather(pending, Instant::now() + PEERS_TIMEOUT).await;
    let mut held = 0;
    for node in &up {
        let info = answers
            .iter()
            .find(|(n, _)| n == node)
            .and_then(|(_, info)| info.as_ref())
            .ok_or_else(|| {
                format!("{node} did not say in time what it holds for this node; try again")
            })?;
        held += info
            .in_flight_to
            .iter()
            .filter(|to| to.node == facts.name)
            .map(|to| to.operations)
            .sum::<u64>();
    }
    Ok(held)
}

/// Why a node that would take `departure` with it, with `in_flight` operations it
/// issued not yet acknowledged, cannot leave for good; `None` if it can.
fn why_it_stays(departure: &Departure, in_flight: u64) -> Option<String> {
    if !departure.known {
        return Some("its store cannot be read, so what its counters hold is not known".into());
    }
    if departure.operations > 0 || departure.value != 0 {
        return Some(format!(
            "its {} counters hold counts (value {}, from {} operations), and the cluster \
             cannot move counters to other nodes yet: they would leave with it. Leave for a \
             while instead (node leave, or stop it), and the counts come back with it",
            departure.counters, departure.value, departure.operations
        ));
    }
    (in_flight > 0).then(|| in_flight_why(in_flight))
}

fn in_flight_why(in_flight: u64) -> String {
    format!(
        "{in_flight} operations it issued are not acknowledged by their destinations yet; \
         try again once node stats shows none in flight"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn departure(value: i128, operations: u128, known: bool) -> Departure {
        Departure {
            for_good: true,
            counters: 2,
            known,
            value,
            operations,
            issued_value: 0,
            issued_operations: 0,
            in_flight_operations: 0,
            store_id: 0,
        }
    }

    /// A node leaves for good only with nothing counted, nothing in flight, and a store
    /// that says so.
    #[test]
    fn a_node_stays_while_it_holds_counts_or_has_operations_in_flight() {
        assert_eq!(why_it_stays(&departure(0, 0, true), 0), None);
        let held = why_it_stays(&departure(5, 1, true), 0).unwrap();
        assert!(held.contains("value 5, from 1 operations"), "{held}");
        // Counts that cancel out are counts all the same.
        assert!(why_it_stays(&departure(0, 2, true), 0).is_some());
        let flying = why_it_stays(&departure(0, 0, true), 3).unwrap();
        assert!(flying.starts_with("3 operations"), "{flying}");
        assert!(why_it_stays(&departure(0, 0, false), 0).is_some());
    }

    /// A node asked to leave for good that cannot stays open: it takes changes again,
    /// nothing is marked, and the next ask is decided afresh.
    #[tokio::test]
    async fn a_refused_departure_opens_the_node_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::memory(2);
        let store = Arc::new(store);
        let mut facts = NodeFacts::for_tests("leave-test", 2);
        facts.departing = crate::cluster::departure::Departing::new(Some(dir.path().into()));
        facts.issued.set_in_flight(4);
        let refused = leave_for_good(&facts, &store).await;
        assert!(
            matches!(&refused, Err(ClientError::CannotLeave { why, .. }) if why.starts_with("4 operations")),
            "{refused:?}"
        );
        assert!(!facts.departing.closing());
        facts.issued.set_in_flight(0);
        facts.issued.set_running(true);
        let refused = leave_for_good(&facts, &store).await;
        assert!(
            matches!(&refused, Err(ClientError::CannotLeave { why, .. }) if why.contains("load clients")),
            "{refused:?}"
        );
        assert!(!facts.departing.closing());
        let mark = crate::store::left_mark::left_for_good(dir.path()).unwrap();
        assert_eq!(mark, None, "marked although it stays");
    }
}
