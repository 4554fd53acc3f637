//! The node agent: the node's face towards other nodes (who it is, whom it knows, that
//! it is alive or leaving) and towards clients (their commands). One per node, in
//! [`NODES_GROUP`], named `NODE/agent`. A connection with no agent (a client) is never
//! counted as a cluster member. Counters are not reached through the agent: their one
//! remote face is the [counter host](crate::counters::host).
//!
//! `GetInfo`, gossip, heartbeats and leave notices are answered in the handler at once;
//! word that a peer suspects another goes to the [mesh](super::mesh), which checks it. A
//! client command may wait on the network (a collection, a counter on another node),
//! so each runs in its own task: at most [`MAX_CLIENT_REQUESTS`] at once (a semaphore
//! whose permits free themselves when a task ends); beyond that the client is told the
//! node is busy. The agent never waits itself.

use std::sync::Arc;
use std::time::Duration;

use ractor::{pg, Actor, ActorProcessingErr, ActorRef};
use shared::agent::{
    AgentMessage, ClientAnswer, ClientError, ClientReply, ClientRequest, MISSING_NAMES,
};
use shared::codec::decode_budget;
use shared::counter::{ApplyOutcome, CounterError, ValueOutcome};
use shared::host::{HostMessage, COLLECT_PAGE};
use shared::protocol::{counter_name, parse_counter_name, validate_change_id, NODES_GROUP};
use shared::stats::{ClusterStats, NodeStats};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::info;

use super::discovery::{find_host, hosts};
use super::leave::leave_for_good;
use super::mesh::{mesh_name, MeshMessage};
use super::rpc::call_until;
use crate::facts::NodeFacts;
use crate::stats::aggregator::AggregatorMessage;
use crate::stats::collect::{collect, Collection};
use crate::stats::lines::ANSWER_LIMIT;
use crate::store::Store;
use crate::supervision::{Drill, DrillPort};

/// Client commands served at once.
pub(crate) const MAX_CLIENT_REQUESTS: usize = 64;

/// Longest collection deadline a client may ask for.
pub(crate) const MAX_CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// How long a single counter call made for a client may take.
const COUNTER_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The agent behaviour.
#[derive(Debug, Default)]
pub(crate) struct NodeAgent;

/// What the agent works with; shared by its client tasks.
#[derive(Clone)]
pub(crate) struct AgentArgs {
    /// This node.
    pub(crate) facts: Arc<NodeFacts>,
    /// The registry name of the local aggregator, on the coordinator (looked up at
    /// each use, so a restarted aggregator is found).
    pub(crate) aggregator: Option<String>,
    /// Where fault injection is carried out (the node's root); `None` unless the node
    /// runs with `--enable-fault-injection`.
    pub(crate) drills: Option<DrillPort>,
    /// The node's store (what its counters hold, for leaving for good).
    pub(crate) store: Arc<Store>,
}

/// The agent's state.
pub(crate) struct AgentState {
    args: AgentArgs,
    requests: Arc<Semaphore>,
}

impl Actor for NodeAgent {
    type Msg = AgentMessage;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AgentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(NODES_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(AgentState {
            args,
            requests: Arc::new(Semaphore::new(MAX_CLIENT_REQUESTS)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let facts = &state.args.facts;
        match message {
            AgentMessage::GetInfo(reply) => {
                let _ = reply.send(facts.info());
            }
            AgentMessage::Gossip(digest, reply) => {
                let _ = reply.send(facts.view(digest));
            }
            AgentMessage::Heartbeat(beat, reply) => {
                facts.membership.beat(&beat, Instant::now());
                let _ = reply.send(facts.beat());
            }
            AgentMessage::Suspect(by, suspect) => {
                // The mesh checks the suspect itself before it believes the word; word
                // about this node, or a member not up here, is nothing to check.
                let worth = suspect.name != facts.name
                    && facts.membership.last_heard(&suspect.name).is_some();
                let mesh = ActorRef::<MeshMessage>::where_is(mesh_name(&facts.name));
                if let Some(mesh) = mesh.filter(|_| worth) {
                    let _ = mesh.cast(MeshMessage::Suspected {
                        name: suspect.name,
                        by: by.from,
                    });
                }
            }
            AgentMessage::Leaving(beat, departure, reply) => {
                let now = Instant::now();
                if facts
                    .membership
                    .left(&beat.from, beat.incarnation, departure, now)
                {
                    facts.membership.event(&beat.from, "left");
                    let how = if departure.for_good {
                        "for good"
                    } else {
                        "for a while"
                    };
                    info!(
                        peer = %beat.from,
                        value = %departure.value,
                        operations = %departure.operations,
                        "peer left the cluster {how}"
                    );
                }
                let _ = reply.send(true);
            }
            AgentMessage::Client(request, reply) => {
                let Ok(permit) = Arc::clone(&state.requests).try_acquire_owned() else {
                    let _ = reply.send(ClientReply(Err(ClientError::Busy(facts.name.clone()))));
                    return Ok(());
                };
                let args = state.args.clone();
                tokio::spawn(async move {
                    let answer = serve(&args, request).await;
                    let _ = reply.send(ClientReply(answer));
                    drop(permit);
                });
            }
        }
        Ok(())
    }
}

/// Serves one client command.
async fn serve(args: &AgentArgs, request: ClientRequest) -> Result<ClientAnswer, ClientError> {
    let facts = &args.facts;
    match request {
        ClientRequest::Stats {
            deadline_ms,
            per_counter,
        } => {
            let deadline = Duration::from_millis(deadline_ms.max(1)).min(MAX_CLIENT_DEADLINE);
            let stats = Arc::new(collect(facts, deadline).await);
            if let Some(aggregator) = aggregator(args) {
                // The coordinator's view stays current with every fresh collection.
                let _ = aggregator.cast(AggregatorMessage::Collected {
                    stats: Arc::clone(&stats),
                    periodic: false,
                });
            }
            answer(stats, per_counter).await
        }
        ClientRequest::LastStats { per_counter } => {
            if args.aggregator.is_none() {
                return Err(ClientError::NoAggregator(facts.name.clone()));
            }
            let aggregator = aggregator(args)
                .ok_or_else(|| ClientError::Internal("the aggregator is restarting".into()))?;
            let until = Instant::now() + Duration::from_secs(1);
            let last = call_until(aggregator, AggregatorMessage::GetTotalStats, until)
                .await
                .ok_or_else(|| ClientError::Internal("aggregator did not answer".into()))?
                .ok_or(ClientError::NotCollectedYet)?;
            answer(last, per_counter).await
        }
        ClientRequest::Apply { counter, delta, id } => {
            validate_change_id(&id).map_err(ClientError::Internal)?;
            let (host, index) = lookup(facts, &counter)?;
            let until = Instant::now() + COUNTER_CALL_TIMEOUT;
            let outcome = call_until(
                host,
                |reply| HostMessage::Apply {
                    counter: index,
                    delta,
                    id,
                    reply,
                },
                until,
            )
            .await;
            match outcome {
                Some(ApplyOutcome(Ok(applied))) => Ok(ClientAnswer::Applied(applied)),
                Some(ApplyOutcome(Err(CounterError::NoSuchCounter(_)))) => {
                    Err(unknown(facts, &counter))
                }
                Some(ApplyOutcome(Err(error))) => Err(ClientError::Refused { counter, error }),
                // Handed over, and no answer: applied or not, nobody here knows.
                None => Err(ClientError::InDoubt { counter }),
            }
        }
        ClientRequest::Get { counter } => {
            let (host, index) = lookup(facts, &counter)?;
            let until = Instant::now() + COUNTER_CALL_TIMEOUT;
            let outcome =
                call_until(host, |reply| HostMessage::GetValue(index, reply), until).await;
            value_answer(facts, counter, outcome)
        }
        ClientRequest::FetchCopy {
            node,
            part,
            after,
            store_id,
            keeper,
        } => {
            let wanted = crate::copies::keeper::Wanted {
                after,
                store_id,
                keeper,
            };
            Ok(ClientAnswer::Copy(
                crate::copies::keeper::best_copy(facts, &node, part, wanted).await,
            ))
        }
        ClientRequest::Crash(target) => fault(args, Drill::Crash(target)).await,
        ClientRequest::DiskErrors { pass, fail } => {
            fault(args, Drill::DiskErrors { pass, fail }).await
        }
        ClientRequest::Leave { for_good: true } => leave_for_good(facts, &args.store).await,
        ClientRequest::Leave { for_good: false } => {
            let for_good = facts.departing.stop();
            Ok(ClientAnswer::Leaving {
                node: facts.name.clone(),
                for_good,
            })
        }
    }
}

/// Hands a fault injection request to the node's root, if the node allows them.
async fn fault(args: &AgentArgs, drill: Drill) -> Result<ClientAnswer, ClientError> {
    let drills = args
        .drills
        .as_ref()
        .ok_or_else(|| ClientError::FaultInjectionDisabled(args.facts.name.clone()))?;
    drills
        .ask(drill, COUNTER_CALL_TIMEOUT)
        .await
        .ok_or_else(|| ClientError::Internal("the node's root did not answer".into()))?
        .map(|()| ClientAnswer::Done)
}

/// The local aggregator, if this node runs one and it is up.
fn aggregator(args: &AgentArgs) -> Option<ActorRef<AggregatorMessage>> {
    ActorRef::where_is(args.aggregator.clone()?)
}

/// The answer's copy of `stats`: without the per-counter lines unless the client asked
/// for them, and then naming at most [`MISSING_NAMES`] missing counters (overall and
/// per node).
fn detail(stats: &ClusterStats, per_counter: bool) -> ClusterStats {
    if per_counter {
        return stats.clone();
    }
    let nodes = stats
        .nodes
        .iter()
        .map(|node| NodeStats {
            counters: Vec::new(),
            missing_counters: first_names(&node.missing_counters),
            received: node.received.clone(),
            name: node.name.clone(),
            role: node.role,
            advertise: node.advertise.clone(),
            copy: node.copy.clone(),
            ..*node
        })
        .collect();
    ClusterStats {
        collected_by: stats.collected_by.clone(),
        missing_counters: first_names(&stats.missing_counters),
        missing_links: stats.missing_links.clone(),
        departed: stats.departed.clone(),
        nodes,
        ..*stats
    }
}

fn first_names(names: &[String]) -> Vec<String> {
    names.iter().take(MISSING_NAMES).cloned().collect()
}

/// The answer with a collection: for more counters than a page, built on a blocking
/// thread, as sizing and copying a quarter of a million lines would hold up an async
/// worker (and with it heartbeats).
async fn answer(
    collection: Arc<Collection>,
    per_counter: bool,
) -> Result<ClientAnswer, ClientError> {
    if collection.stats.known_counters <= COLLECT_PAGE as usize {
        return answer_now(&collection, per_counter);
    }
    crate::runtime::busy_poll::spawn_blocking(move || answer_now(&collection, per_counter))
        .await
        .map_err(|e| ClientError::Internal(format!("building the answer failed: {e}")))?
}

/// The answer's copy of a collection's statistics (see [`detail`]), if the client can
/// take it: sized before anything is copied.
fn answer_now(collection: &Collection, per_counter: bool) -> Result<ClientAnswer, ClientError> {
    let stats = &collection.stats;
    if per_counter {
        let needs = match collection.lines_left_out {
            // Lines more than an answer carries were not kept.
            Some(lines) => budget(&detail(stats, false))? + lines,
            None => budget(stats)?,
        };
        fitting(needs)?;
        return Ok(ClientAnswer::Stats(Box::new(stats.clone())));
    }
    let totals = detail(stats, false);
    fitting(budget(&totals)?)?;
    Ok(ClientAnswer::Stats(Box::new(totals)))
}

/// What decoding `stats` takes.
fn budget(stats: &ClusterStats) -> Result<usize, ClientError> {
    decode_budget(stats).map_err(|e| ClientError::Internal(e.to_string()))
}

/// Whether the client can take an answer that takes `needs` bytes to decode;
/// otherwise why not, and what to ask instead. A decoder takes at most
/// [`ANSWER_LIMIT`], counting each value at its size in memory ([`decode_budget`]): a
/// counter's line is about 63 bytes there (its name's length, the name, five figures of
/// 8 bytes), so the bound is met at about 260,000 lines.
fn fitting(needs: usize) -> Result<(), ClientError> {
    if needs > ANSWER_LIMIT {
        return Err(ClientError::TooLarge {
            bytes: needs as u64,
            limit: ANSWER_LIMIT as u64,
        });
    }
    Ok(())
}

/// A counter's answer (or its absence) as the client's answer.
fn value_answer(
    facts: &NodeFacts,
    counter: String,
    outcome: Option<ValueOutcome>,
) -> Result<ClientAnswer, ClientError> {
    match outcome {
        Some(ValueOutcome(Ok(value))) => Ok(ClientAnswer::Value(value)),
        Some(ValueOutcome(Err(CounterError::NoSuchCounter(_)))) => Err(unknown(facts, &counter)),
        Some(ValueOutcome(Err(CounterError::NotRunning(_)))) | None => {
            Err(ClientError::CounterTimeout(counter))
        }
        Some(ValueOutcome(Err(error))) => Err(ClientError::Refused { counter, error }),
    }
}

/// The host of the node that owns `counter`, and the counter's index there.
fn lookup(facts: &NodeFacts, counter: &str) -> Result<(ActorRef<HostMessage>, u32), ClientError> {
    let (node, index) = parse_counter_name(counter).ok_or_else(|| unknown(facts, counter))?;
    let host = find_host(node).ok_or_else(|| {
        // A member this node knows of but has no session with is not reachable from
        // here: say so, rather than that the counter does not exist.
        let known = facts.membership.snapshot().iter().any(|p| p.name == node);
        if known {
            ClientError::NodeUnreachable {
                node: node.to_string(),
                from: facts.name.clone(),
            }
        } else {
            unknown(facts, counter)
        }
    })?;
    Ok((host, index))
}

fn unknown(facts: &NodeFacts, counter: &str) -> ClientError {
    let example_node = hosts()
        .into_iter()
        .map(|(node, _)| node)
        .next()
        .unwrap_or_else(|| facts.name.clone());
    ClientError::UnknownCounter {
        name: counter.to_string(),
        example: counter_name(&example_node, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::{PeerStatus, PeerView};
    use crate::testing::Hoarder;
    use shared::protocol::{Role, HOSTS_GROUP};

    /// A collection by `me` of nothing, where an unreachable peer `far` hosts `counters`
    /// counters (all missing, by name).
    fn far_away(counters: u32) -> Collection {
        let far = PeerView {
            name: "far".into(),
            addr: "far:4697".into(),
            status: PeerStatus::Unreachable,
            since_ms: 1,
            role: Some(Role::Worker),
            counters: Some(counters),
            sees_up: None,
            round_trip: None,
        };
        let budget = crate::stats::lines::LineBudget::new(ANSWER_LIMIT);
        let stats = crate::stats::summarize::summarize("me", vec![far], Vec::new(), &budget);
        Collection {
            stats,
            lines_left_out: (!budget.kept()).then(|| budget.used()),
        }
    }

    /// Without per-counter lines an answer names at most [`MISSING_NAMES`] missing
    /// counters, overall and per node, and keeps their numbers; an answer a client
    /// could not decode is refused with what to ask instead.
    #[test]
    fn an_answer_is_cut_to_what_a_message_carries() {
        // Each missing name is listed twice (overall and under its node): 1.2 million
        // names of about 18 bytes each to decode, more than a message carries, so the
        // collection kept only the first.
        let collection = far_away(600_000);
        let stats = &collection.stats;
        assert_eq!(stats.missing_counters.len(), MISSING_NAMES);
        assert!(collection.lines_left_out.unwrap() > ANSWER_LIMIT);
        let totals = detail(stats, false);
        assert_eq!(totals.missing_counters.len(), MISSING_NAMES);
        assert!(totals
            .nodes
            .iter()
            .all(|n| n.missing_counters.len() <= MISSING_NAMES));
        assert_eq!(totals.known_counters, 600_000);
        assert!(matches!(
            answer_now(&collection, false),
            Ok(ClientAnswer::Stats(_))
        ));
        let Err(refused) = answer_now(&collection, true) else {
            panic!("an answer too large for a message was accepted");
        };
        let ClientError::TooLarge { bytes, .. } = refused else {
            panic!("{refused}");
        };
        assert!(bytes > ANSWER_LIMIT as u64, "{bytes}");
        assert!(refused.to_string().contains("--totals"), "{refused}");
        // 600,000 names fit, and are all kept and answered.
        let fits = far_away(300_000);
        assert_eq!(fits.lines_left_out, None);
        assert_eq!(fits.stats.missing_counters.len(), 300_000);
        let Ok(ClientAnswer::Stats(all)) = answer_now(&fits, true) else {
            panic!("an answer that fits was refused");
        };
        let far = all.nodes.iter().find(|n| n.name == "far").unwrap();
        assert_eq!(far.missing_counters.len(), 300_000);
    }

    /// Client commands run in tasks, at most [`MAX_CLIENT_REQUESTS`] at once: one more
    /// is told the node is busy, and the agent itself goes on answering meanwhile.
    #[tokio::test]
    async fn client_requests_beyond_the_bound_are_told_busy() {
        // Every collection waits for this host until its deadline.
        let (silent, silent_handle) =
            Hoarder::<HostMessage>::start(Some("agent-busy-silent/host"), Some(HOSTS_GROUP)).await;
        let facts = Arc::new(NodeFacts::for_tests("agent-busy", 0));
        let args = AgentArgs {
            facts,
            aggregator: None,
            drills: None,
            store: Arc::new(crate::store::Store::memory(0).0),
        };
        let (agent, agent_handle) = Actor::spawn(None, NodeAgent, args).await.unwrap();
        let stats = || ClientRequest::Stats {
            deadline_ms: 60_000,
            per_counter: false,
        };
        let mut waiting = Vec::new();
        for _ in 0..MAX_CLIENT_REQUESTS {
            let (tx, rx) = ractor::concurrency::oneshot();
            agent
                .cast(AgentMessage::Client(stats(), tx.into()))
                .unwrap();
            waiting.push(rx);
        }
        let ClientReply(answer) =
            ractor::call_t!(agent, |r| AgentMessage::Client(stats(), r), 5000).unwrap();
        assert_eq!(answer, Err(ClientError::Busy("agent-busy".into())));
        let info = ractor::call_t!(agent, AgentMessage::GetInfo, 5000).unwrap();
        assert_eq!(info.name, "agent-busy");
        // Once the host goes, the waiting collections end (incomplete) and free their
        // places.
        silent.stop(None);
        silent_handle.await.unwrap();
        for rx in waiting {
            let ClientReply(answer) = rx.await.unwrap();
            assert!(matches!(answer, Ok(ClientAnswer::Stats(_))));
        }
        let ClientReply(answer) =
            ractor::call_t!(agent, |r| AgentMessage::Client(stats(), r), 5000).unwrap();
        assert!(answer.is_ok(), "{answer:?}");
        agent.stop(None);
        agent_handle.await.unwrap();
    }
}
