//! The coordinator's aggregator: collects the cluster-wide totals every
//! `--stats-interval`, logs a one-line summary, and answers for the last collection
//! or runs a fresh one on demand.
//!
//! Collections run in spawned tasks and report back with a message, so the aggregator's
//! mailbox never waits on the network: `GetTotalStats` is answered at once even while a
//! collection is waiting for a slow peer.

use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use shared::stats::ClusterStats;
use tracing::{info, warn};

use crate::collect::collect;
use crate::membership::Membership;
use crate::output::summary_line;

/// The aggregator behaviour.
#[derive(Debug, Default)]
pub struct Aggregator;

/// The aggregator's fixed configuration.
#[derive(Debug, Clone)]
pub struct AggregatorArgs {
    /// This node's name (reported as `collected_by`).
    pub node_name: String,
    /// Time between periodic collections.
    pub interval: Duration,
    /// Deadline of each periodic collection.
    pub deadline: Duration,
    /// The cluster as this node sees it.
    pub membership: Membership,
}

/// The aggregator's state.
pub struct AggregatorState {
    args: AggregatorArgs,
    last: Option<ClusterStats>,
    periodic_in_flight: bool,
    ticker: Option<JoinHandle<()>>,
}

/// Messages to the aggregator (local only).
#[derive(RactorMessage)]
pub enum AggregatorMessage {
    /// Time for a periodic collection.
    Tick,
    /// Run a fresh collection with this deadline and answer with it.
    Collect {
        /// The collection's deadline.
        deadline: Duration,
        /// Where the result goes.
        reply: RpcReplyPort<ClusterStats>,
    },
    /// Answer with the most recent collection (`None` before the first one finishes).
    GetTotalStats(RpcReplyPort<Option<ClusterStats>>),
    /// A collection finished.
    Collected {
        /// Its result.
        stats: Box<ClusterStats>,
        /// Whether it was a periodic one (which is logged).
        periodic: bool,
    },
}

impl Actor for Aggregator {
    type Msg = AggregatorMessage;
    type State = AggregatorState;
    type Arguments = AggregatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AggregatorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ticker = myself.send_interval(args.interval, || AggregatorMessage::Tick);
        Ok(AggregatorState {
            args,
            last: None,
            periodic_in_flight: false,
            ticker: Some(ticker),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AggregatorMessage::Tick => {
                // A slow collection is not stacked up behind another one.
                if !state.periodic_in_flight {
                    state.periodic_in_flight = true;
                    spawn_collection(&myself, &state.args, state.args.deadline, None);
                }
            }
            AggregatorMessage::Collect { deadline, reply } => {
                spawn_collection(&myself, &state.args, deadline, Some(reply));
            }
            AggregatorMessage::GetTotalStats(reply) => {
                let _ = reply.send(state.last.clone());
            }
            AggregatorMessage::Collected { stats, periodic } => {
                if periodic {
                    state.periodic_in_flight = false;
                    if stats.complete {
                        info!("{}", summary_line(&stats));
                    } else {
                        warn!("{}", summary_line(&stats));
                    }
                }
                let newer = state
                    .last
                    .as_ref()
                    .is_none_or(|last| last.collected_at_ms <= stats.collected_at_ms);
                if newer {
                    state.last = Some(*stats);
                }
            }
        }
        Ok(())
    }
}

fn spawn_collection(
    myself: &ActorRef<AggregatorMessage>,
    args: &AggregatorArgs,
    deadline: Duration,
    reply: Option<RpcReplyPort<ClusterStats>>,
) {
    let myself = myself.clone();
    let node_name = args.node_name.clone();
    let membership = args.membership.clone();
    tokio::spawn(async move {
        let stats = collect(&node_name, &membership, deadline).await;
        let periodic = reply.is_none();
        if let Some(reply) = reply {
            let _ = reply.send(stats.clone());
        }
        // The aggregator may be stopping; then nobody needs the result.
        let _ = myself.cast(AggregatorMessage::Collected {
            stats: Box::new(stats),
            periodic,
        });
    });
}
