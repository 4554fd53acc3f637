//! The counter supervisor: activates the node's counters when they are used, retires
//! them when idle, and restarts one that fails, under the same name, from its record in
//! the store. Counters run linked to it; the [`CounterTable`] says which runs now.
//!
//! **Activation.** A message for a counter that is not running reaches the supervisor
//! ([`SupervisorMessage::Deliver`], through the activator it installs in the table). It
//! reads the counter's record, starts the actor from it, hands it the message, and
//! installs it in the table ([`CounterTable::install`]): under the counter's slot lock,
//! it reads the record again and hands it over ([`CounterMessage::Resume`]) before the
//! slot holds the actor. So every commit that landed before the install is in the
//! actor's state before any message sent to it directly, and a commit that lands after
//! it is handed on to the actor (its delivery waits for the lock). Messages that reached
//! the supervisor meanwhile follow, to the actor. An activation costs two store reads
//! and an actor's start (44 µs in `node-bench`).
//!
//! **Retirement.** Every quarter of the idle period (`--counter-idle-secs`) the
//! supervisor retires the counters not used for that long ([`CounterTable::retire_if_idle`]):
//! their actors stop after the messages before the retirement, and the store keeps their
//! figures. A retired counter's end is no failure and is not restarted.
//!
//! A restart is exact: the store holds every committed change, and a change reaches a
//! counter only after its commit, in the counter's record as of that commit, which a
//! counter started from that record or a later one skips. What a restart loses is the
//! recent-rate window.
//! Restarts are counted in the table and reported in `node stats`.
//!
//! A counter that stops without failing (and without being retired) is restarted too,
//! unless the supervisor has been told to [`SupervisorMessage::Drain`]: the node is
//! stopping and its counters with it. The journal has committed its last changes by
//! then (the supervisor also waits for any commit still running), so the store holds
//! every counter's last word, running or not (a running one holds nothing the store has
//! not): the supervisor logs each counter's final value from there, once, whatever its
//! actor is doing (stopping, retiring, or none). If the
//! supervisor itself fails, ractor stops every counter with it; the node's root starts
//! a new supervisor, with no counter running.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort,
    SupervisionEvent,
};
use ractor_cluster::RactorMessage;
use shared::counter::{CounterError, StatsOutcome, ValueOutcome};
use tracing::{error, info};

use super::counter::{Counter, CounterArgs, CounterMessage};
use super::table::CounterTable;
use crate::clock::Ticker;
use crate::store::Store;

/// Counters whose final value a clean stop logs one line each (the rest in one).
const FINAL_LINES: usize = 1000;

/// The shortest time between two sweeps for idle counters.
const SHORTEST_SWEEP: Duration = Duration::from_millis(100);

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
    /// How long a counter stays running without being used (`--counter-idle-secs`).
    pub(crate) idle: Duration,
}

/// The supervisor's state: which child runs which counter.
#[derive(Debug)]
pub(crate) struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, u32>,
    /// Children retired for being idle, until their end arrives.
    retiring: HashSet<ActorId>,
    draining: bool,
    _sweeps: Ticker,
}

/// Messages to the supervisor (local only).
#[derive(RactorMessage)]
pub(crate) enum SupervisorMessage {
    /// The node is stopping: counters that stop from now on stay stopped, and none is
    /// activated. Answered once recorded (and the counters' final values logged), so the
    /// caller can then stop the counters.
    Drain(RpcReplyPort<()>),
    /// A message for counter `index`, which was not running: activate it and deliver.
    Deliver(u32, CounterMessage),
    /// Time to retire the counters idle for the idle period.
    Sweep,
}

impl SupervisorState {
    /// Starts counter `index` from `record`, linked to the supervisor (not yet in the
    /// table).
    async fn spawn(
        &mut self,
        index: u32,
        record: super::record::CounterRecord,
        myself: ActorCell,
    ) -> Result<ActorRef<CounterMessage>, ActorProcessingErr> {
        let table = &self.args.table;
        let name = table.name(index).ok_or("no such counter")?;
        let args = CounterArgs {
            name,
            started: table.started(),
            record,
            fault_injection: self.args.fault_injection,
        };
        // Unnamed: the table is how counters are found, and a restarted supervisor must
        // not wait for the names of counters that are still dying.
        let (counter, _) = Actor::spawn_linked(None, Counter, args, myself).await?;
        self.children.insert(counter.get_id(), index);
        Ok(counter)
    }

    /// Starts counter `index` from `record` (the store's), hands it `first` (if any),
    /// and puts it in the table; see the module documentation.
    async fn activate(
        &mut self,
        index: u32,
        record: super::record::CounterRecord,
        first: Option<CounterMessage>,
        myself: ActorCell,
    ) -> Result<(), ActorProcessingErr> {
        let table = Arc::clone(&self.args.table);
        let counter = self.spawn(index, record, myself).await?;
        if let Some(message) = first {
            let _ = counter.send_message(message);
        }
        let store = Arc::clone(&self.args.store);
        if let Err(e) = table.install(index, counter.clone(), || store.record(index)) {
            // Not in the table: it goes, and is not restarted (its next use starts it).
            self.children.remove(&counter.get_id());
            counter.stop(None);
            return Err(e.into());
        }
        Ok(())
    }

    /// Delivers `message` to counter `index`, activating it if it is not running; a
    /// message that cannot be delivered (the node is stopping, or the store cannot be
    /// read) is answered with the reason.
    async fn deliver(&mut self, index: u32, message: CounterMessage, myself: ActorCell) {
        if self.draining {
            let name = self.args.table.name(index).unwrap_or_default();
            refuse(message, CounterError::NotRunning(name));
            return;
        }
        let mut message = message;
        if let Some(counter) = self.args.table.actor(index) {
            match counter.send_message(message) {
                Ok(()) => return,
                Err(MessagingErr::SendErr(back)) => message = back,
                Err(_) => return,
            }
        }
        let name = self.args.table.name(index).unwrap_or_default();
        let record = match self.args.store.record(index) {
            Ok(record) => record,
            Err(e) => {
                let why = format!("counter {name} cannot be read from the store: {e}");
                refuse(message, CounterError::Unavailable(why));
                return;
            }
        };
        // Should the actor not start, the message is dropped with it: a caller in this
        // process hears an error at once, a remote one when its deadline runs out.
        if let Err(e) = self.activate(index, record, Some(message), myself).await {
            error!(counter = %name, error = %e, "cannot start the counter");
        }
    }

    /// Retires the counters that have not been used for the idle period.
    fn sweep(&mut self) {
        let table = &self.args.table;
        for &index in self.children.values() {
            if let Some(retired) = table.retire_if_idle(index, self.args.idle) {
                self.retiring.insert(retired.get_id());
            }
        }
    }

    /// A counter stopped or failed: restart it from the store (unless it was retired,
    /// the node is draining, or it has been activated again since). A counter that
    /// cannot be restarted is not left down: the supervisor fails, and the node's root
    /// restarts it (or stops the node if that keeps happening).
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
        table.clear_if(index, id);
        if self.retiring.remove(&id) || self.draining || table.actor(index).is_some() {
            return Ok(());
        }
        let name = table.name(index).unwrap_or_default();
        error!(counter = %name, %reason, "counter failed; restarting it from the store");
        let restart = async {
            let record = self.args.store.record(index)?;
            self.activate(index, record, None, myself).await
        };
        restart
            .await
            .map_err(|e| format!("cannot restart counter {name}: {e}"))?;
        let restarts = table.restarted();
        info!(counter = %name, restarts, "counter restarted");
        Ok(())
    }
}

/// Answers whoever waits on `message` with `error`.
fn refuse(message: CounterMessage, error: CounterError) {
    match message {
        CounterMessage::GetValue(reply) => {
            let _ = reply.send(ValueOutcome(Err(error)));
        }
        CounterMessage::GetStats(reply) => {
            let _ = reply.send(StatsOutcome(Err(error)));
        }
        _ => {}
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
        let table = &args.table;
        // A predecessor's counters stopped with it.
        table.clear_all();
        let activator = myself.clone();
        table.set_activator(Some(Box::new(move |index, message| {
            activator
                .cast(SupervisorMessage::Deliver(index, message))
                .map_err(|e| match e {
                    MessagingErr::SendErr(SupervisorMessage::Deliver(_, back)) => Some(back),
                    _ => None,
                })
        })));
        let sweep_every = (args.idle / 4).max(SHORTEST_SWEEP);
        info!(
            counters = table.len(),
            idle_secs = args.idle.as_secs_f64(),
            "counters ready: each runs while used, from the store"
        );
        Ok(SupervisorState {
            args,
            children: HashMap::new(),
            retiring: HashSet::new(),
            draining: false,
            _sweeps: Ticker::every(&myself, sweep_every, || SupervisorMessage::Sweep),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Drain(reply) => {
                state.draining = true;
                // Off the actors' thread: a node of a million counters reads them all.
                let table = Arc::clone(&state.args.table);
                let store = Arc::clone(&state.args.store);
                let logged = crate::runtime::busy_poll::spawn_blocking(move || {
                    log_final_values(&table, &store)
                });
                if logged.await.is_err() {
                    error!("logging the counters' final values panicked");
                }
                let _ = reply.send(());
            }
            SupervisorMessage::Deliver(index, message) => {
                state.deliver(index, message, myself.get_cell()).await;
            }
            SupervisorMessage::Sweep if !state.draining => state.sweep(),
            SupervisorMessage::Sweep => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Failed or stopped unasked: restarted either way (unless retired or draining).
        match crate::supervision::exit_of(event) {
            Some(exit) => state.lost(exit.id, &exit.reason, myself.get_cell()).await,
            None => Ok(()),
        }
    }
}

/// Logs every counter's final value, from the store (a clean stop, after the journal's
/// last commit): one line each for the first [`FINAL_LINES`], then one line for the
/// rest.
fn log_final_values(table: &CounterTable, store: &Store) {
    // After every commit handed off has returned, even one that outlived the
    // journal's drain.
    let records = match store.settled(table.len()) {
        Ok(settled) => settled.records,
        Err(e) => {
            error!(error = %e, "cannot read the counters' final values from the store");
            return;
        }
    };
    let (mut rest, mut rest_value, mut rest_operations) = (0u64, 0i128, 0u64);
    let mut lines = 0;
    for (index, record) in (0..table.len()).zip(records) {
        if lines < FINAL_LINES {
            lines += 1;
            let name = table.name(index).unwrap_or_default();
            info!(
                counter = %name,
                value = record.value,
                operations = record.operations,
                rejected = record.rejected,
                "counter stopped with final value {}",
                record.value
            );
        } else {
            rest += 1;
            rest_value += i128::from(record.value);
            rest_operations = rest_operations.saturating_add(record.operations);
        }
    }
    if rest > 0 {
        info!(
            counters = rest,
            value = %rest_value,
            operations = rest_operations,
            "{rest} more counters stopped, their final values in the store"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::counter::CounterMessage;
    use crate::store::Entry;
    use shared::counter::{StatsOutcome, ValueOutcome};
    use shared::host::Change;

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

    /// Counter `index`'s value, asked through the table (activating it if need be).
    async fn value_of(table: &CounterTable, index: u32) -> ValueOutcome {
        let (tx, rx) = ractor::concurrency::oneshot();
        table
            .deliver(index, CounterMessage::GetValue(tx.into()))
            .map_err(|(_, e)| e)
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("an answer within 5 s")
            .unwrap()
    }

    /// Commits a change to counter `index` as the journal would, and hands it on.
    fn commit(store: &Store, table: &CounterTable, number: u64, index: u32, delta: i128) {
        let outcome = commit_only(store, number, index, delta);
        for (_, record) in outcome.counters.into_iter().filter(|(i, _)| *i == index) {
            let _ = table.deliver(index, CounterMessage::Committed(record));
        }
    }

    /// Commits a change to counter `index`, handing nothing on.
    fn commit_only(
        store: &Store,
        number: u64,
        index: u32,
        delta: i128,
    ) -> crate::store::CommitOutcome {
        let change = Change {
            counter: index,
            delta,
            operations: 1,
        };
        store
            .commit(
                number,
                &[Entry::Batch {
                    stream: "test#1".into(),
                    seq: number,
                    changes: vec![change],
                }],
            )
            .unwrap()
    }

    fn setup(node: &str, counters: u32, idle: Duration) -> SupervisorArgs {
        let (store, _) = Store::memory(counters);
        SupervisorArgs {
            table: Arc::new(CounterTable::new(node, counters)),
            store: Arc::new(store),
            fault_injection: true,
            idle,
        }
    }

    #[tokio::test]
    async fn a_failed_or_killed_counter_is_restarted_from_the_store() {
        let args = setup("sup-test", 2, Duration::from_secs(3600));
        let (table, store) = (Arc::clone(&args.table), Arc::clone(&args.store));
        let (supervisor, handle) = Actor::spawn(None, CounterSupervisor, args).await.unwrap();
        assert_eq!(table.active(), 0, "no counter runs before it is used");
        assert_eq!(value_of(&table, 1).await, ValueOutcome(Ok(0)));
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
        assert_eq!(value_of(&table, 0).await, ValueOutcome(Ok(0)));

        // Once draining, counters that stop stay stopped, and none is activated.
        ractor::call!(supervisor, SupervisorMessage::Drain).unwrap();
        supervisor
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        assert!(table.actor(0).is_none() && table.actor(1).is_none());
        assert!(matches!(
            value_of(&table, 0).await,
            ValueOutcome(Err(shared::counter::CounterError::NotRunning(_)))
        ));
        assert_eq!(table.restarts(), 2);
        supervisor.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn a_new_supervisor_resumes_every_counter_from_the_store() {
        let args = setup("sup-resume", 1, Duration::from_secs(3600));
        let (table, store) = (Arc::clone(&args.table), Arc::clone(&args.store));
        let (first, handle) = Actor::spawn(None, CounterSupervisor, args.clone())
            .await
            .unwrap();
        assert_eq!(value_of(&table, 0).await, ValueOutcome(Ok(0)));
        commit(&store, &table, 1, 0, 7);
        // The supervisor dies, and its counters with it.
        first.get_cell().kill();
        let _ = handle.await;
        let (second, handle) = Actor::spawn(None, CounterSupervisor, args).await.unwrap();
        assert_eq!(value_of(&table, 0).await, ValueOutcome(Ok(7)));
        second.stop(None);
        handle.await.unwrap();
    }

    /// A counter idle for the idle period is retired (not restarted, not counted as a
    /// restart), its figures kept in the store; its next use starts it again from there,
    /// exact.
    #[tokio::test]
    async fn an_idle_counter_is_retired_and_its_next_use_resumes_it_exactly() {
        let args = setup("sup-idle", 2, Duration::from_millis(200));
        let (table, store) = (Arc::clone(&args.table), Arc::clone(&args.store));
        let (supervisor, handle) = Actor::spawn(None, CounterSupervisor, args).await.unwrap();
        assert_eq!(value_of(&table, 0).await, ValueOutcome(Ok(0)));
        commit(&store, &table, 1, 0, 5);
        let first = table.actor(0).expect("running while used");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while table.active() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "an idle counter retired within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Committed while it is not running (its record handed to nobody): the store
        // has it, and the counter starts from there.
        commit_only(&store, 2, 0, 3);
        assert_eq!(table.active(), 0);
        assert_eq!(value_of(&table, 0).await, ValueOutcome(Ok(8)));
        let second = table.actor(0).expect("running again");
        assert_ne!(first.get_id(), second.get_id());
        assert_eq!(table.restarts(), 0, "a retirement is not a restart");
        supervisor.stop(None);
        handle.await.unwrap();
    }
}
