//! The per-node counter supervisor: spawns the node's counters linked to itself and
//! restarts one that fails, under the same name (and so the same group membership).
//!
//! Each counter commits its state to a [`Checkpoint`] the supervisor keeps after every
//! message, and a restart resumes from it: value, operation and rejection counts and
//! start time survive; the message being handled when it failed is lost (its caller
//! gets no answer), and so is the recent-rate window. Restarts are counted and reported
//! in `node stats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use shared::protocol::counter_name;
use tracing::{error, info};

use crate::counter::{Checkpoint, Counter, CounterArgs};

/// The supervisor behaviour.
#[derive(Debug, Default)]
pub struct CounterSupervisor;

/// What the supervisor starts with.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// The node's name, the prefix of every counter name.
    pub node_name: String,
    /// How many counters to run.
    pub counters: u32,
    /// Counter restarts so far, shared with the node agent that reports them.
    pub restarts: Arc<AtomicU64>,
    /// Whether counters honour crash requests (`--enable-fault-injection`).
    pub fault_injection: bool,
}

/// The supervisor's state: which child is which counter.
#[derive(Debug)]
pub struct SupervisorState {
    children: HashMap<ActorId, CounterArgs>,
    restarts: Arc<AtomicU64>,
}

/// The supervisor takes no requests: it only reacts to its counters' lifecycle.
#[derive(RactorMessage)]
pub enum SupervisorMessage {}

async fn spawn_counter(
    args: CounterArgs,
    supervisor: ActorCell,
) -> Result<ActorId, ActorProcessingErr> {
    let (counter, _) =
        Actor::spawn_linked(Some(args.name.clone()), Counter, args, supervisor).await?;
    Ok(counter.get_id())
}

impl Actor for CounterSupervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut children = HashMap::new();
        for index in 0..args.counters {
            let counter = CounterArgs {
                name: counter_name(&args.node_name, index),
                checkpoint: Arc::new(Checkpoint::new()),
                fault_injection: args.fault_injection,
            };
            let id = spawn_counter(counter.clone(), myself.get_cell()).await?;
            children.insert(id, counter);
        }
        info!(counters = args.counters, "counters started");
        Ok(SupervisorState {
            children,
            restarts: args.restarts,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {}
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                let Some(counter) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let name = counter.name.clone();
                error!(counter = %name, %reason, "counter failed; restarting it from its last checkpoint");
                // A failed restart leaves this one counter down; returning the error would
                // stop the supervisor and every other counter with it.
                match spawn_counter(counter.clone(), myself.get_cell()).await {
                    Ok(id) => {
                        state.children.insert(id, counter);
                        let restarts = state.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                        info!(counter = %name, restarts, "counter restarted");
                    }
                    Err(error) => error!(counter = %name, %error, "cannot restart counter"),
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.children.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::CounterMessage;
    use ractor::pg;
    use shared::counter::{StatsOutcome, ValueOutcome};
    use shared::protocol::COUNTERS_GROUP;
    use std::time::Duration;

    fn counter(name: &str) -> Option<ActorRef<CounterMessage>> {
        pg::get_members(&COUNTERS_GROUP.to_string())
            .into_iter()
            .find(|c| c.get_name().as_deref() == Some(name))
            .map(Into::into)
    }

    #[tokio::test]
    async fn a_failed_counter_is_restarted_with_its_state() {
        let restarts = Arc::new(AtomicU64::new(0));
        let (supervisor, handle) = Actor::spawn(
            None,
            CounterSupervisor,
            SupervisorArgs {
                node_name: "sup-test".into(),
                counters: 2,
                restarts: Arc::clone(&restarts),
                fault_injection: true,
            },
        )
        .await
        .unwrap();
        let first = counter("sup-test/1").unwrap();
        first
            .cast(CounterMessage::Increment { amount: 40 })
            .unwrap();
        first.cast(CounterMessage::Decrement { amount: 2 }).unwrap();
        first.cast(CounterMessage::Crash).unwrap();

        // Wait (with a deadline) for a new actor under the same name, in the group.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let restarted = loop {
            match counter("sup-test/1") {
                Some(c) if c.get_id() != first.get_id() => break c,
                _ if tokio::time::Instant::now() > deadline => panic!("no restart within 5 s"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let StatsOutcome(stats) = ractor::call!(restarted, CounterMessage::GetStats).unwrap();
        let stats = stats.unwrap();
        assert_eq!((stats.value, stats.operations), (38, 2));
        assert_eq!(restarts.load(Ordering::Relaxed), 1);
        // The other counter was not disturbed.
        let other = counter("sup-test/0").unwrap();
        assert_eq!(
            ractor::call!(other, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(0))
        );

        supervisor.stop(None);
        handle.await.unwrap();
    }
}
