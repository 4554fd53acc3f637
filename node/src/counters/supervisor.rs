//! The counter supervisor: starts the node's counters linked to itself, records each in
//! the [`CounterTable`], and restarts one that fails, under the same name, from its
//! checkpoint.
//!
//! What a restart keeps: value, operation and rejection counts and start time (the
//! checkpoint in the table, committed after every message). What it loses: the message
//! being handled when the counter failed (a caller waiting on it times out), messages
//! still queued in its mailbox, and the recent-rate window. Restarts are counted in the
//! table and reported in `node stats`.
//!
//! A counter that stops without failing is restarted too, unless the supervisor has been
//! told to [`SupervisorMessage::Drain`]: the node is stopping and its counters with it.
//! If the supervisor itself fails, ractor stops every counter with it; the node's root
//! starts a new supervisor, which resumes every counter from the same table.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use ractor_cluster::RactorMessage;
use tracing::{error, info};

use super::counter::{Counter, CounterArgs};
use super::table::CounterTable;

/// How long a new supervisor waits for a counter of its failed predecessor to stop.
const OLD_COUNTER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The supervisor behaviour.
#[derive(Debug, Default)]
pub(crate) struct CounterSupervisor;

/// What the supervisor starts with.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorArgs {
    /// The node's counters: names, checkpoints, and where running actors are recorded.
    pub(crate) table: Arc<CounterTable>,
    /// Whether counters honour crash requests (`--enable-fault-injection`).
    pub(crate) fault_injection: bool,
}

/// The supervisor's state: which child runs which counter.
#[derive(Debug)]
pub(crate) struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, u32>,
    draining: bool,
}

/// Messages to the supervisor (local only).
#[derive(RactorMessage)]
pub(crate) enum SupervisorMessage {
    /// The node is stopping: counters that stop from now on stay stopped. Answered
    /// once recorded, so the caller can then stop the counters.
    Drain(RpcReplyPort<()>),
}

impl SupervisorState {
    async fn spawn(&mut self, index: u32, myself: ActorCell) -> Result<(), ActorProcessingErr> {
        let table = Arc::clone(&self.args.table);
        let (Some(name), Some(checkpoint)) = (table.name(index), table.checkpoint(index)) else {
            return Ok(());
        };
        // After this supervisor's predecessor failed, its counters are being stopped
        // with it; one may still be finishing a message, and would commit to the
        // checkpoint after the new counter read it. Only once it has stopped is the
        // checkpoint final.
        if let Some(old) = table.actor(index) {
            let old = old.get_cell();
            if old.wait(Some(OLD_COUNTER_WAIT)).await.is_err() {
                old.kill();
                let _ = old.wait(Some(OLD_COUNTER_WAIT)).await;
            }
        }
        let args = CounterArgs {
            name: name.to_string(),
            checkpoint,
            fault_injection: self.args.fault_injection,
        };
        // Unnamed: the table is how counters are found, and a restarted supervisor must
        // not wait for the names of counters that are still dying.
        let (counter, _) = Actor::spawn_linked(None, Counter, args, myself).await?;
        self.children.insert(counter.get_id(), index);
        table.set_actor(index, Some(counter));
        Ok(())
    }

    /// A counter stopped or failed: restart it (unless draining). A counter that
    /// cannot be restarted is not left down: the supervisor fails, and the node's root
    /// restarts it with every counter (or stops the node if that keeps happening).
    async fn lost(
        &mut self,
        id: ActorId,
        reason: &str,
        myself: ActorCell,
    ) -> Result<(), ActorProcessingErr> {
        let Some(index) = self.children.remove(&id) else {
            return Ok(());
        };
        let table = Arc::clone(&self.args.table);
        table.set_actor(index, None);
        if self.draining {
            return Ok(());
        }
        let name = table.name(index).unwrap_or("?").to_string();
        error!(counter = %name, %reason, "counter failed; restarting it from its last checkpoint");
        self.spawn(index, myself)
            .await
            .map_err(|e| format!("cannot restart counter {name}: {e}"))?;
        let restarts = table.restarted();
        info!(counter = %name, restarts, "counter restarted");
        Ok(())
    }
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
        let counters = args.table.len();
        let mut state = SupervisorState {
            args,
            children: HashMap::new(),
            draining: false,
        };
        for index in 0..counters {
            state.spawn(index, myself.get_cell()).await?;
        }
        info!(counters, "counters started");
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Drain(reply) => {
                state.draining = true;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Failed or stopped unasked: restarted either way (unless draining).
        match crate::root::exit_of(event) {
            Some((id, reason, _)) => state.lost(id, &reason, myself.get_cell()).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::CounterMessage;
    use shared::counter::{StatsOutcome, ValueOutcome};
    use std::time::Duration;

    /// Waits (with a deadline) for counter `index` to be run by an actor other than
    /// `old`.
    async fn replaced(
        table: &CounterTable,
        index: u32,
        old: &ActorRef<CounterMessage>,
    ) -> ActorRef<CounterMessage> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match table.actor(index) {
                Some(c) if c.get_id() != old.get_id() => return c,
                _ if tokio::time::Instant::now() > deadline => panic!("no restart within 5 s"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    #[tokio::test]
    async fn a_failed_or_killed_counter_is_restarted_with_its_state() {
        let table = Arc::new(CounterTable::new("sup-test", 2));
        let (supervisor, handle) = Actor::spawn(
            None,
            CounterSupervisor,
            SupervisorArgs {
                table: Arc::clone(&table),
                fault_injection: true,
            },
        )
        .await
        .unwrap();
        let first = table.actor(1).unwrap();
        first
            .cast(CounterMessage::Increment { amount: 40 })
            .unwrap();
        first.cast(CounterMessage::Decrement { amount: 2 }).unwrap();
        first.cast(CounterMessage::Crash).unwrap();

        let restarted = replaced(&table, 1, &first).await;
        let StatsOutcome(stats) = ractor::call!(restarted, CounterMessage::GetStats).unwrap();
        let stats = stats.unwrap();
        assert_eq!((stats.value, stats.operations), (38, 2));
        assert_eq!(table.restarts(), 1);

        // Killed rather than failed: restarted all the same.
        restarted.get_cell().kill();
        let again = replaced(&table, 1, &restarted).await;
        assert_eq!(
            ractor::call!(again, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(38))
        );
        assert_eq!(table.restarts(), 2);
        // The other counter was not disturbed.
        let other = table.actor(0).unwrap();
        assert_eq!(
            ractor::call!(other, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(0))
        );

        // Once draining, counters that stop stay stopped.
        ractor::call!(supervisor, SupervisorMessage::Drain).unwrap();
        supervisor
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        assert!(table.actor(0).is_none() && table.actor(1).is_none());
        assert_eq!(table.restarts(), 2);
        supervisor.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn a_new_supervisor_resumes_every_counter_from_the_table() {
        let table = Arc::new(CounterTable::new("sup-resume", 1));
        let args = SupervisorArgs {
            table: Arc::clone(&table),
            fault_injection: false,
        };
        let (first, handle) = Actor::spawn(None, CounterSupervisor, args.clone())
            .await
            .unwrap();
        let counter = table.actor(0).unwrap();
        let applied = ractor::call!(counter, |reply| CounterMessage::Apply {
            delta: shared::counter::Delta::Increment(7),
            reply
        })
        .unwrap();
        assert_eq!(applied, ValueOutcome(Ok(7)));
        // The supervisor dies, and its counters with it.
        first.get_cell().kill();
        let _ = handle.await;
        let (second, handle) = Actor::spawn(None, CounterSupervisor, args).await.unwrap();
        let counter = table.actor(0).unwrap();
        assert_eq!(
            ractor::call!(counter, CounterMessage::GetValue).unwrap(),
            ValueOutcome(Ok(7))
        );
        second.stop(None);
        handle.await.unwrap();
    }
}
