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
//! takes no change from the moment the node closes ([`Departing::close`]), what it took
//! before is committed ([`quiesce`]), and only then are the store's totals read.
//!
//! [`Departing::close`]: super::departure::Departing::close

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use shared::agent::{ClientAnswer, ClientError, Departure};
use shared::host::HostMessage;
use shared::protocol::host_name;
use tokio::time::Instant;
use tracing::{info, warn};

use super::rpc::call_until;
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
    match ActorRef::<JournalMessage>::where_is(journal_name(node)) {
        Some(journal) => call_until(journal, JournalMessage::Drain, until)
            .await
            .is_some(),
        None => true,
    }
}

/// What the node takes with it: its counters' totals in `store` (read off the async
/// threads) and what its load clients issued. Call it once the node is closed and
/// quiesced.
pub(crate) async fn departure(facts: &NodeFacts, store: &Arc<Store>, for_good: bool) -> Departure {
    let counters = facts.table.len();
    let reading = Arc::clone(store);
    let records =
        crate::runtime::busy_poll::spawn_blocking(move || reading.records(0..counters)).await;
    let issued = facts.issued.read();
    let mut departure = Departure {
        for_good,
        counters,
        known: false,
        value: 0,
        operations: 0,
        issued_value: issued.value,
        issued_operations: issued.operations,
    };
    match records {
        Ok(Ok(records)) => {
            departure.known = true;
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

/// `node leave --for-good`: closes the node, and either leaves (marks its data dir and
/// asks the node to stop, telling its peers it left for good) or opens it again and
/// says why it cannot.
pub(crate) async fn leave_for_good(
    facts: &NodeFacts,
    store: &Arc<Store>,
) -> Result<ClientAnswer, ClientError> {
    let refuse = |why: String| {
        facts.departing.close(false);
        Err(ClientError::CannotLeave {
            node: facts.name.clone(),
            why,
        })
    };
    facts.departing.close(true);
    if !quiesce(&facts.name).await {
        return refuse(format!(
            "its changes could not be committed within {QUIESCE_TIMEOUT:?} (its store is \
             busy or failing); try again"
        ));
    }
    let departure = departure(facts, store, true).await;
    if let Some(why) = why_it_stays(&departure, facts.issued.in_flight()) {
        return refuse(why);
    }
    let mark = format!(
        "{} left the cluster for good at {} ms since the Unix epoch (node leave --for-good)\n",
        facts.name,
        crate::clock::unix_millis()
    );
    if let Err(error) = facts.departing.mark(&mark) {
        return refuse(format!("cannot mark its data dir: {error}"));
    }
    info!("leaving the cluster for good: it holds no counts and has nothing in flight");
    facts.departing.ask(true);
    Ok(ClientAnswer::Leaving {
        node: facts.name.clone(),
        for_good: true,
    })
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
    if in_flight > 0 {
        return Some(format!(
            "{in_flight} operations it issued are not acknowledged by their destinations \
             yet; stop its load (or let its --load-ops finish) and try again once \
             node stats shows none in flight"
        ));
    }
    None
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

    /// A node asked to leave for good that holds counts stays open: it takes changes
    /// again, and nothing was marked or asked.
    #[tokio::test]
    async fn a_refused_departure_opens_the_node_again() {
        let (store, _) = Store::memory(2);
        let store = Arc::new(store);
        let facts = NodeFacts::for_tests("leave-test", 2);
        facts.issued.set_in_flight(4);
        let refused = leave_for_good(&facts, &store).await;
        assert!(
            matches!(&refused, Err(ClientError::CannotLeave { why, .. }) if why.starts_with("4 operations")),
            "{refused:?}"
        );
        assert!(!facts.departing.closing());
        assert!(!facts.departing.for_good());
        facts.issued.set_in_flight(0);
        let left = leave_for_good(&facts, &store).await;
        assert_eq!(
            left,
            Ok(ClientAnswer::Leaving {
                node: "leave-test".into(),
                for_good: true
            })
        );
        assert!(facts.departing.for_good());
        assert!(facts.departing.closing(), "it takes no change any more");
    }
}
