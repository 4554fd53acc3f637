//! The counter supervisor: starts the node's counters linked to itself, records each in
//! the [`CounterTable`], and restarts one that fails, under the same name, from its
//! record in the store.
//!
//! A restart is exact: the store holds every committed change, and a change reaches a
//! counter only after its commit, in the counter's record as of that commit, which a
//! counter started from that record or a later one skips. What a restart loses is the
//! recent-rate window.
//! Restarts are counted in the table and reported in `node stats`.
//!
//! A counter that stops without failing is restarted too, unless the supervisor has been
//! told to [`SupervisorMessage::Drain`]: the node is stopping and its counters with it.
//! If the supervisor itself fails, ractor stops every counter with it; the node's root
//! starts a new supervisor, which starts every counter from the store again.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use ractor_cluster::RactorMessage;
use tracing::{error, info};

use super::counter::{Counter, CounterArgs, CounterMessage};
use super::record::CounterRecord;
use super::table::CounterTable;
use crate::store::Store;

/// The supervisor behaviour.
#[derive(Debug, Default)]
pub(crate) struct CounterSupervisor;

/// What the supervisor starts with.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorArgs {
    /// The node's counters: names, and where running actors are recorded.
    pub(crate) table: Arc<CounterTable>,
    /// Where each counter's figures are.
    pub(crate) store: Arc<Store>,
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
    async fn spawn(
        &mut self,
        index: u32,
        record: CounterRecord,
        myself: ActorCell,
    ) -> Result<(), ActorProcessingErr> {
        let table = Arc::clone(&self.args.table);
        let (Some(name), Some(started)) = (table.name(index), table.started(index)) else {
            return Ok(());
        };
        let args = CounterArgs {
            name: name.to_string(),
            started,
            record,
            fault_injection: self.args.fault_injection,
        };
        // Unnamed: the table is how counters are found, and a restarted supervisor must
        // not wait for the names of counters that are still dying.
        let (counter, _) = Actor::spawn_linked(None, Counter, args, myself).await?;
        self.children.insert(counter.get_id(), index);
        table.set_actor(index, Some(counter));
        Ok(())
    }

    /// Hands every running counter its record as the store holds it now. A counter is
    /// started from a record read before it was in the table; a commit that became
    /// visible after that read and was handed on (by the journal) before the counter
    /// was in the table would otherwise never reach it.
    fn resume_all(&self) -> Result<(), ActorProcessingErr> {
        let table = &self.args.table;
        let records = self.args.store.records(table.len())?;
        for (index, record) in (0..table.len()).zip(records) {
            if let Some(counter) = table.actor(index) {
                let _ = counter.cast(CounterMessage::Resume(record));
            }
        }
        Ok(())
    }

    /// A counter stopped or failed: restart it from the store (unless draining). A
    /// counter that cannot be restarted is not left down: the supervisor fails, and the
    /// node's root restarts it with every counter (or stops the node if that keeps
    /// happening).
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
        error!(counter = %name, %reason, "counter failed; restarting it from the store");
        let record = self
            .args
            .store
            .record(index)
            .map_err(|e| format!("cannot restart counter {name}: {e}"))?;
        self.spawn(index, record, myself)
            .await
            .map_err(|e| format!("cannot restart counter {name}: {e}"))?;
        // As in `resume_all`, for this one.
        let record = self
            .args
            .store
            .record(index)
            .map_err(|e| format!("cannot restart counter {name}: {e}"))?;
        if let Some(counter) = table.actor(index) {
            let _ = counter.cast(CounterMessage::Resume(record));
        }
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
        let records = args.store.records(counters)?;
        let mut state = SupervisorState {
            args,
            children: HashMap::new(),
            draining: false,
        };
        for (index, record) in (0..counters).zip(records) {
            state.spawn(index, record, myself.get_cell()).await?;
        }
        // A commit that became visible after the first read, but was handed on before a
        // counter was in the table, is in this second one.
        state.resume_all()?;
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
        match crate::supervision::exit_of(event) {
            Some(exit) => state.lost(exit.id, &exit.reason, myself.get_cell()).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::CounterMessage;
    use crate::store::Entry;
    use shared::counter::{StatsOutcome, ValueOutcome};
    use shared::host::Change;
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

    /// Commits a change to counter `index` as the journal would, and hands it on.
    fn commit(store: &Store, table: &CounterTable, number: u64, index: u32, delta: i128) {
        let change = Change {
            counter: index,
            delta,
            operations: 1,
        };
        let outcome = store
            .commit(
                number,
                &[Entry::Batch {
                    stream: "test#1".into(),
                    seq: number,
                    changes: vec![change],
                }],
            )
            .unwrap();
        if let Some(counter) = table.actor(index) {
            for (_, record) in outcome.counters.into_iter().filter(|(i, _)| *i == index) {
                counter.cast(CounterMessage::Committed(record)).unwrap();
            }
        }
    }

    fn setup(node: &str, counters: u32) -> (Arc<CounterTable>, Arc<Store>) {
        let (store, _) = Store::memory(counters);
        (Arc::new(CounterTable::new(node, counters)), Arc::new(store))
    }

    #[tokio::test]
    async fn a_failed_or_killed_counter_is_restarted_from_the_store() {
        let (table, store) = setup("sup-test", 2);
        let (supervisor, handle) = Actor::spawn(
            None,
            CounterSupervisor,
            SupervisorArgs {
                table: Arc::clone(&table),
                store: Arc::clone(&store),
                fault_injection: true,
            },
        )
        .await
        .unwrap();
        let first = table.actor(1).unwrap();
        commit(&store, &table, 1, 1, 40);
        first.cast(CounterMessage::Crash).unwrap();
        // Committed while the counter fails: in the store, whatever its mailbox held.
        commit(&store, &table, 2, 1, -2);

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
    async fn a_new_supervisor_resumes_every_counter_from_the_store() {
        let (table, store) = setup("sup-resume", 1);
        let args = SupervisorArgs {
            table: Arc::clone(&table),
            store: Arc::clone(&store),
            fault_injection: false,
        };
        let (first, handle) = Actor::spawn(None, CounterSupervisor, args.clone())
            .await
            .unwrap();
        commit(&store, &table, 1, 0, 7);
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
