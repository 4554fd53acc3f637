//! The node agent: a node's public face, one per node, in [`NODES_GROUP`].
//!
//! Other nodes ask it who this node is and whom it knows (membership gossip, and the
//! per-node part of a collection), and send it their heartbeats, which it records in
//! the [`Membership`]; short-lived clients send it their commands. A connection with no
//! agent (a client) is therefore never counted as a cluster member.
//!
//! Client commands wait on the network (a collection, a remote counter), so each is
//! served in its own task: the agent keeps answering `GetInfo` meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{pg, Actor, ActorProcessingErr, ActorRef};
use shared::agent::{
    AgentMessage, ClientAnswer, ClientError, ClientReply, ClientRequest, NodeInfo,
};
use shared::counter::{CounterError, ValueOutcome};
use shared::host::HostMessage;
use shared::protocol::{counter_name, parse_counter_name, Role, NODES_GROUP, PROTOCOL_VERSION};
use shared::stats::ClusterStats;
use tokio::time::Instant;
use tracing::info;

use crate::aggregator::AggregatorMessage;
use crate::collect::{call_until, collect, collect_sequential, find_host, hosts, local_report};
use crate::counter::CounterMessage;
use crate::load::IssuedTally;
use crate::membership::{Heard, Membership};

/// Longest collection deadline a client may ask for.
pub const MAX_CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// How long a single counter call made for a client may take.
const COUNTER_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The agent behaviour.
#[derive(Debug, Default)]
pub struct NodeAgent;

/// Everything the agent reports or uses; fixed for the node's lifetime.
#[derive(Clone)]
pub struct AgentArgs {
    /// Node name.
    pub name: String,
    /// Node role.
    pub role: Role,
    /// This run of the node.
    pub incarnation: u64,
    /// `host:port` peers dial.
    pub advertise: String,
    /// Counters on this node.
    pub counters: u32,
    /// Counter restarts, kept by the supervisor.
    pub restarts: Arc<AtomicU64>,
    /// What this node's load clients issued.
    pub issued: Arc<IssuedTally>,
    /// The cluster as this node sees it.
    pub membership: Membership,
    /// The local aggregator, on the coordinator.
    pub aggregator: Option<ActorRef<AggregatorMessage>>,
    /// Whether `CrashCounter` requests are honoured (`--enable-fault-injection`).
    pub fault_injection: bool,
}

impl AgentArgs {
    fn info(&self) -> NodeInfo {
        let (issued_value, issued_operations) = self.issued.read();
        NodeInfo {
            name: self.name.clone(),
            role: self.role,
            advertise: self.advertise.clone(),
            protocol_version: PROTOCOL_VERSION,
            incarnation: self.incarnation,
            counters: self.counters,
            counter_restarts: self.restarts.load(Ordering::Relaxed),
            issued_value,
            issued_operations,
            known_peers: self.membership.gossip(),
        }
    }
}

impl Actor for NodeAgent {
    type Msg = AgentMessage;
    type State = AgentArgs;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AgentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(NODES_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMessage::GetInfo(reply) => {
                let _ = reply.send(state.info());
            }
            AgentMessage::CollectLocal(deadline_ms, reply) => {
                let info = state.info();
                let until =
                    Instant::now() + Duration::from_millis(deadline_ms).min(MAX_CLIENT_DEADLINE);
                tokio::spawn(async move {
                    let _ = reply.send(local_report(info, until).await);
                });
            }
            AgentMessage::Heartbeat(beat) => {
                let heard = state
                    .membership
                    .heard(&beat.from, beat.incarnation, Instant::now());
                if heard == Heard::Restarted {
                    info!(peer = %beat.from, "peer restarted (new incarnation)");
                }
            }
            AgentMessage::Leaving(beat, reply) => {
                if state.membership.left(&beat.from, Instant::now()) {
                    info!(peer = %beat.from, "peer left the cluster");
                }
                let _ = reply.send(true);
            }
            AgentMessage::Client(request, reply) => {
                let args = state.clone();
                tokio::spawn(async move {
                    let answer = serve(&args, request).await;
                    let _ = reply.send(ClientReply(answer));
                });
            }
        }
        Ok(())
    }
}

/// Serves one client command.
async fn serve(args: &AgentArgs, request: ClientRequest) -> Result<ClientAnswer, ClientError> {
    match request {
        ClientRequest::Stats {
            deadline_ms,
            per_counter,
            sequential,
        } => {
            let deadline = Duration::from_millis(deadline_ms.max(1)).min(MAX_CLIENT_DEADLINE);
            let stats = match &args.aggregator {
                _ if sequential => collect_sequential(&args.name, &args.membership, deadline).await,
                // On the coordinator the aggregator runs it, so its view stays current.
                Some(aggregator) => call_until(
                    aggregator.clone(),
                    |reply| AggregatorMessage::Collect { deadline, reply },
                    Instant::now() + deadline + Duration::from_secs(1),
                )
                .await
                .ok_or_else(|| ClientError::Internal("aggregator did not answer".into()))?,
                None => collect(&args.name, &args.membership, deadline).await,
            };
            Ok(ClientAnswer::Stats(Box::new(detail(stats, per_counter))))
        }
        ClientRequest::LastStats { per_counter } => {
            let aggregator = args
                .aggregator
                .clone()
                .ok_or_else(|| ClientError::NoAggregator(args.name.clone()))?;
            let until = Instant::now() + Duration::from_secs(1);
            call_until(aggregator, AggregatorMessage::GetTotalStats, until)
                .await
                .ok_or_else(|| ClientError::Internal("aggregator did not answer".into()))?
                .map(|stats| ClientAnswer::Stats(Box::new(detail(stats, per_counter))))
                .ok_or(ClientError::NotCollectedYet)
        }
        ClientRequest::Apply { counter, delta } => {
            let (host, index) = lookup(args, &counter)?;
            let until = Instant::now() + COUNTER_CALL_TIMEOUT;
            let outcome = call_until(
                host,
                |reply| HostMessage::Apply {
                    counter: index,
                    delta,
                    reply,
                },
                until,
            )
            .await;
            value_answer(args, counter, outcome)
        }
        ClientRequest::CrashCounter { counter } => {
            if !args.fault_injection {
                return Err(ClientError::FaultInjectionDisabled(args.name.clone()));
            }
            lookup(args, &counter)?;
            if parse_counter_name(&counter).map(|(node, _)| node) != Some(args.name.as_str()) {
                // The counter's own node decides whether it allows fault injection.
                return Err(ClientError::Internal(format!(
                    "ask the node that hosts '{counter}'"
                )));
            }
            ActorRef::<CounterMessage>::where_is(counter.clone())
                .and_then(|actor| actor.cast(CounterMessage::Crash).ok())
                .ok_or(ClientError::CounterTimeout(counter))?;
            Ok(ClientAnswer::Done)
        }
        ClientRequest::Get { counter } => {
            let (host, index) = lookup(args, &counter)?;
            let until = Instant::now() + COUNTER_CALL_TIMEOUT;
            let outcome =
                call_until(host, |reply| HostMessage::GetValue(index, reply), until).await;
            value_answer(args, counter, outcome)
        }
    }
}

/// Drops the per-counter lines unless the client asked for them.
fn detail(mut stats: ClusterStats, per_counter: bool) -> ClusterStats {
    if !per_counter {
        for node in &mut stats.nodes {
            node.counters = Vec::new();
        }
    }
    stats
}

/// A counter's answer (or its absence) as the client's answer.
fn value_answer(
    args: &AgentArgs,
    counter: String,
    outcome: Option<ValueOutcome>,
) -> Result<ClientAnswer, ClientError> {
    match outcome {
        Some(ValueOutcome(Ok(value))) => Ok(ClientAnswer::Value(value)),
        Some(ValueOutcome(Err(CounterError::NoSuchCounter(_)))) => Err(unknown(args, &counter)),
        Some(ValueOutcome(Err(CounterError::NotRunning(_)))) | None => {
            Err(ClientError::CounterTimeout(counter))
        }
        Some(ValueOutcome(Err(error))) => Err(ClientError::Refused { counter, error }),
    }
}

/// The host of the node that owns `counter`, and the counter's index there.
fn lookup(args: &AgentArgs, counter: &str) -> Result<(ActorRef<HostMessage>, u32), ClientError> {
    let (node, index) = parse_counter_name(counter).ok_or_else(|| unknown(args, counter))?;
    let host = find_host(node).ok_or_else(|| unknown(args, counter))?;
    Ok((host, index))
}

fn unknown(args: &AgentArgs, counter: &str) -> ClientError {
    let example_node = hosts()
        .into_iter()
        .map(|(node, _)| node)
        .next()
        .unwrap_or_else(|| args.name.clone());
    ClientError::UnknownCounter {
        name: counter.to_string(),
        example: counter_name(&example_node, 0),
    }
}
