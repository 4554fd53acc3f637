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
