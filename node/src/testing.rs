//! Test doubles shared by the unit tests.

use std::marker::PhantomData;

use ractor::{pg, Actor, ActorProcessingErr, ActorRef, Message};

/// An actor that takes every message of type `M` and answers none, holding each (and so
/// its reply port) until it stops: a peer that is alive but never answers. Joins
/// `group` if one is given.
pub(crate) struct Hoarder<M>(PhantomData<fn() -> M>);

impl<M: Message> Hoarder<M> {
    /// Starts one, in `group` if given.
    pub(crate) async fn start(
        name: Option<&str>,
        group: Option<&str>,
    ) -> (ActorRef<M>, ractor::concurrency::JoinHandle<()>) {
        Actor::spawn(
            name.map(str::to_string),
            Hoarder(PhantomData),
            group.map(str::to_string),
        )
        .await
        .expect("a hoarder starts")
    }
}

impl<M: Message> Actor for Hoarder<M> {
    type Msg = M;
    type State = Vec<M>;
    type Arguments = Option<String>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        group: Option<String>,
    ) -> Result<Self::State, ActorProcessingErr> {
        if let Some(group) = group {
            pg::join(group, vec![myself.get_cell()]);
        }
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        held: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        held.push(message);
        Ok(())
    }
}

/// A node's write path in one process, as the root starts it, over a memory store: a
/// journal (registered under the node's journal name, where the host finds it) and a
/// host, for the counters the test puts in `facts.table`.
pub(crate) struct WritePath {
    /// The host.
    pub(crate) host: ActorRef<shared::host::HostMessage>,
    /// The store the journal commits to.
    pub(crate) store: std::sync::Arc<crate::store::Store>,
    facts: std::sync::Arc<crate::facts::NodeFacts>,
    journal: ActorRef<crate::store::journal::JournalMessage>,
    journal_handle: ractor::concurrency::JoinHandle<()>,
    host_handle: ractor::concurrency::JoinHandle<()>,
}

impl WritePath {
    /// Starts the journal and the host for `facts`.
    pub(crate) async fn start(facts: &std::sync::Arc<crate::facts::NodeFacts>) -> Self {
        use std::sync::Arc;
        let (store, _) = crate::store::Store::memory(facts.table.len());
        let store = Arc::new(store);
        let (journal, journal_handle) = Self::journal(facts, &store).await;
        let args = crate::counters::host::HostArgs {
            facts: Arc::clone(facts),
            store: Arc::clone(&store),
        };
        let (host, host_handle) = Actor::spawn(None, crate::counters::host::CounterHost, args)
            .await
            .expect("the host starts");
        Self {
            host,
            store,
            facts: Arc::clone(facts),
            journal,
            journal_handle,
            host_handle,
        }
    }

    async fn journal(
        facts: &std::sync::Arc<crate::facts::NodeFacts>,
        store: &std::sync::Arc<crate::store::Store>,
    ) -> (
        ActorRef<crate::store::journal::JournalMessage>,
        ractor::concurrency::JoinHandle<()>,
    ) {
        use crate::store::journal::{journal_name, Journal, JournalArgs};
        use std::sync::Arc;
        Actor::spawn(
            Some(journal_name(&facts.name)),
            Journal,
            JournalArgs {
                store: Arc::clone(store),
                table: Arc::clone(&facts.table),
                received: Arc::clone(&facts.received),
                metrics: Arc::clone(&facts.metrics),
                group_commit: std::time::Duration::ZERO,
                covered: None,
            },
        )
        .await
        .expect("the journal starts")
    }

    /// Kills the journal (what it had not handled yet is lost with it, as in a crash)
    /// and starts another over the same store, as the root does.
    pub(crate) async fn crash_journal(&mut self) {
        self.journal.kill();
        let (journal, handle) = {
            // Its name is free once it is gone.
            let old = std::mem::replace(&mut self.journal_handle, tokio::spawn(async {}));
            old.await.expect("the journal was killed");
            Self::journal(&self.facts, &self.store).await
        };
        self.journal = journal;
        self.journal_handle = handle;
    }

    /// Stops both.
    pub(crate) async fn stop(self) {
        self.host.stop(None);
        self.journal.stop(None);
        for handle in [self.host_handle, self.journal_handle] {
            handle.await.expect("stopped");
        }
    }
}
