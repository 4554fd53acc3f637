//! The per-node counter supervisor: spawns the node's counters linked to itself and
//! restarts one that fails, under the same name (and so the same group membership).
//!
//! A restarted counter starts from zero: its state is private and lives only in the
//! actor, so a failure loses it. Restarts are counted and reported in `node stats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::RactorMessage;
use shared::protocol::counter_name;
use tracing::{error, info};

use crate::counter::Counter;

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
}

/// The supervisor's state: which child is which counter.
#[derive(Debug)]
pub struct SupervisorState {
    names: HashMap<ActorId, String>,
    restarts: Arc<AtomicU64>,
}

/// The supervisor takes no requests: it only reacts to its counters' lifecycle.
#[derive(RactorMessage)]
pub enum SupervisorMessage {}

async fn spawn_counter(name: String, supervisor: ActorCell) -> Result<ActorId, ActorProcessingErr> {
    let (counter, _) = Actor::spawn_linked(Some(name.clone()), Counter, name, supervisor).await?;
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
        let mut names = HashMap::new();
        for index in 0..args.counters {
            let name = counter_name(&args.node_name, index);
            let id = spawn_counter(name.clone(), myself.get_cell()).await?;
            names.insert(id, name);
        }
        info!(counters = args.counters, "counters started");
        Ok(SupervisorState {
            names,
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
                let Some(name) = state.names.remove(&cell.get_id()) else {
                    return Ok(());
                };
                error!(counter = %name, %reason, "counter failed; restarting it from zero");
                // A failed restart leaves this one counter down; returning the error would
                // stop the supervisor and every other counter with it.
                match spawn_counter(name.clone(), myself.get_cell()).await {
                    Ok(id) => {
                        state.names.insert(id, name);
                        state.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => error!(counter = %name, %error, "cannot restart counter"),
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.names.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
