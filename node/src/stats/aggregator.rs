//! The coordinator's aggregator: collects the cluster-wide totals every
//! `--stats-interval`, logs a one-line summary, and keeps the most recent collection
//! (its own, or a fresh one a client ran through this node) for `node stats --last`.
//!
//! Its collection runs in a task that reports back with a message, one at a time, so
//! the aggregator's mailbox never waits on the network: `GetTotalStats` is answered at
//! once even while a collection is waiting for a slow peer. A restarted aggregator
//! starts without a last collection and has one again after its next tick.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use tracing::{info, warn};

use super::collect::{collect, Collection};
use super::output::summary_line;
use crate::clock::Ticker;
use crate::facts::NodeFacts;

/// The aggregator behaviour.
#[derive(Debug, Default)]
pub(crate) struct Aggregator;

/// The aggregator's fixed configuration.
#[derive(Debug, Clone)]
pub(crate) struct AggregatorArgs {
    /// This node (who collects, and the membership it expects).
    pub(crate) facts: Arc<NodeFacts>,
    /// Time between periodic collections.
    pub(crate) interval: Duration,
    /// Deadline of each periodic collection.
    pub(crate) deadline: Duration,
}

/// The aggregator's state.
pub(crate) struct AggregatorState {
    args: AggregatorArgs,
    /// Shared with whoever asks for it, never copied here: with a line per counter it
    /// may take as much as an answer may (16 MiB to decode, about 25 MB here).
    last: Option<Arc<Collection>>,
    periodic_in_flight: bool,
    _ticker: Ticker,
}

/// Messages to the aggregator (local only).
#[derive(RactorMessage)]
pub(crate) enum AggregatorMessage {
    /// Time for a periodic collection.
    Tick,
    /// Answer with the most recent collection (`None` before the first one finishes).
    GetTotalStats(RpcReplyPort<Option<Arc<Collection>>>),
    /// A collection finished.
    Collected {
        /// Its result.
        stats: Arc<Collection>,
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
        Ok(AggregatorState {
            _ticker: Ticker::every(&myself, args.interval, || AggregatorMessage::Tick),
            args,
            last: None,
            periodic_in_flight: false,
        })
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
                    let myself = myself.clone();
                    let facts = Arc::clone(&state.args.facts);
                    let deadline = state.args.deadline;
                    tokio::spawn(async move {
                        let stats = collect(&facts, deadline).await;
                        // The aggregator may be stopping; then nobody needs the result.
                        let _ = myself.cast(AggregatorMessage::Collected {
                            stats: Arc::new(stats),
                            periodic: true,
                        });
                    });
                }
            }
            AggregatorMessage::GetTotalStats(reply) => {
                let _ = reply.send(state.last.clone());
            }
            AggregatorMessage::Collected { stats, periodic } => {
                if periodic {
                    state.periodic_in_flight = false;
                    if stats.stats.complete {
                        info!("{}", summary_line(&stats.stats));
                    } else {
                        warn!("{}", summary_line(&stats.stats));
                    }
                }
                let newer = state
                    .last
                    .as_ref()
                    .is_none_or(|last| last.stats.collected_at_ms <= stats.stats.collected_at_ms);
                if newer {
                    state.last = Some(stats);
                }
            }
        }
        Ok(())
    }
}
