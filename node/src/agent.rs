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
use shared::counter::{ApplyOutcome, CounterMessage};
use shared::protocol::{Role, NODES_GROUP, PROTOCOL_VERSION};
use tokio::time::Instant;
use tracing::info;

use crate::aggregator::AggregatorMessage;
use crate::collect::{call_until, collect, counter_names, find_counter, local_report};
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
        ClientRequest::Stats { deadline_ms } => {
            let deadline = Duration::from_millis(deadline_ms.max(1)).min(MAX_CLIENT_DEADLINE);
            let stats = match &args.aggregator {
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
            Ok(ClientAnswer::Stats(Box::new(stats)))
        }
        ClientRequest::LastStats => {
            let aggregator = args
                .aggregator
                .clone()
                .ok_or_else(|| ClientError::NoAggregator(args.name.clone()))?;
            let until = Instant::now() + Duration::from_secs(1);
            call_until(aggregator, AggregatorMessage::GetTotalStats, until)
                .await
                .ok_or_else(|| ClientError::Internal("aggregator did not answer".into()))?
                .map(|stats| ClientAnswer::Stats(Box::new(stats)))
                .ok_or(ClientError::NotCollectedYet)
        }
        ClientRequest::Apply { counter, delta } => {
            let actor = lookup(&counter)?;
            let until = Instant::now() + COUNTER_CALL_TIMEOUT;
            match call_until(actor, |reply| CounterMessage::Apply { delta, reply }, until).await {
                Some(ApplyOutcome(Ok(value))) => Ok(ClientAnswer::Value(value)),
                Some(ApplyOutcome(Err(error))) => Err(ClientError::Refused { counter, error }),
                None => Err(ClientError::CounterTimeout(counter)),
            }
        }
        ClientRequest::CrashCounter { counter } => {
            if !args.fault_injection {
                return Err(ClientError::FaultInjectionDisabled(args.name.clone()));
            }
            let actor = lookup(&counter)?;
            if !actor.get_id().is_local() {
                // The counter's own node decides whether it allows fault injection.
                return Err(ClientError::Internal(format!(
                    "ask the node that hosts '{counter}'"
                )));
            }
            actor
                .cast(CounterMessage::Crash)
                .map_err(|_| ClientError::CounterTimeout(counter))?;
            Ok(ClientAnswer::Done)
        }
        ClientRequest::Get { counter } => {
            let actor = lookup(&counter)?;
            let until = Instant::now() + COUNTER_CALL_TIMEOUT;
            call_until(actor, CounterMessage::GetValue, until)
                .await
                .map(ClientAnswer::Value)
                .ok_or(ClientError::CounterTimeout(counter))
        }
    }
}

fn lookup(counter: &str) -> Result<ActorRef<CounterMessage>, ClientError> {
    find_counter(counter).ok_or_else(|| ClientError::UnknownCounter {
        name: counter.to_string(),
        example: counter_names()
            .into_iter()
            .next()
            .unwrap_or_else(|| "coordinator/0".to_string()),
    })
}
