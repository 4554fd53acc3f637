//! The counter host: the one actor through which other nodes and clients reach this
//! node's counters (one per node, in [`HOSTS_GROUP`], named `NODE/host`).
//!
//! Counters are node-local actors (see [`crate::counter`]), so the host forwards each
//! [`HostMessage`] to the counter it names, in arrival order, handing over the
//! caller's reply port: the counter answers the caller itself. Because the host is one
//! actor, answering `Sync(n)` proves every earlier message from that sender has been
//! handed to its counter, which is the acknowledgement behind the senders' windows
//! ([`crate::push`]).
//!
//! Counter references are looked up by name in ractor's registry and cached; a counter
//! that was restarted by its supervisor is looked up again on the first failed send.

use ractor::{pg, Actor, ActorProcessingErr, ActorRef, MessagingErr};
use shared::counter::{CounterError, StatsOutcome, ValueOutcome};
use shared::host::{Change, HostMessage};
use shared::protocol::{counter_name, HOSTS_GROUP};
use tracing::warn;

use crate::counter::CounterMessage;

/// The counter host behaviour.
#[derive(Debug, Default)]
pub struct CounterHost;

/// What the host serves: the node's name and how many counters it runs.
#[derive(Debug, Clone)]
pub struct HostArgs {
    /// Node name (the prefix of every counter name).
    pub node_name: String,
    /// Counters on this node (indices `0..counters`).
    pub counters: u32,
}

/// The host's state: a cache of counter references by index.
pub struct HostState {
    args: HostArgs,
    cache: Vec<Option<ActorRef<CounterMessage>>>,
    /// Changes that named no counter of this node (logged once per batch).
    unknown: u64,
}

impl HostState {
    fn name(&self, index: u32) -> String {
        counter_name(&self.args.node_name, index)
    }

    fn lookup(&mut self, index: u32) -> Option<&ActorRef<CounterMessage>> {
        let slot = self.cache.get_mut(index as usize)?;
        if slot.is_none() {
            *slot = ActorRef::where_is(counter_name(&self.args.node_name, index));
        }
        slot.as_ref()
    }

    /// Hands `message` to counter `index`; on failure gives the message back with the
    /// reason, so a reply port inside can still be answered.
    fn forward(
        &mut self,
        index: u32,
        message: CounterMessage,
    ) -> Result<(), (Option<CounterMessage>, CounterError)> {
        if index >= self.args.counters {
            return Err((Some(message), CounterError::NoSuchCounter(self.name(index))));
        }
        let mut message = message;
        // Twice: a cached reference may belong to a counter that was restarted since.
        for _ in 0..2 {
            let Some(counter) = self.lookup(index) else {
                break;
            };
            match counter.send_message(message) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(back)) => message = back,
                Err(_) => return Err((None, self.not_running(index))),
            }
            self.cache[index as usize] = None;
        }
        Err((Some(message), self.not_running(index)))
    }

    fn not_running(&self, index: u32) -> CounterError {
        CounterError::NotRunning(self.name(index))
    }

    fn apply_changes(&mut self, changes: Vec<Change>) {
        let mut lost = 0u64;
        for Change {
            counter,
            delta,
            operations,
        } in changes
        {
            if let Err((_, error)) =
                self.forward(counter, CounterMessage::Add { delta, operations })
            {
                lost += operations;
                if matches!(error, CounterError::NoSuchCounter(_)) {
                    self.unknown += operations;
                }
            }
        }
        if lost > 0 {
            warn!(
                operations = lost,
                unknown_total = self.unknown,
                "dropped changes for counters that are not running or do not exist"
            );
        }
    }
}

impl Actor for CounterHost {
    type Msg = HostMessage;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: HostArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(HOSTS_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(HostState {
            cache: vec![None; args.counters as usize],
            args,
            unknown: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that gave up has dropped its reply port: failing to answer it is not
        // the host's problem, so send errors on reply ports are ignored.
        match message {
            HostMessage::Changes(changes) => state.apply_changes(changes.0),
            HostMessage::Increment { counter, amount } => {
                let _ = state.forward(counter, CounterMessage::Increment { amount });
            }
            HostMessage::Decrement { counter, amount } => {
                let _ = state.forward(counter, CounterMessage::Decrement { amount });
            }
            HostMessage::Sync(n, reply) => {
                let _ = reply.send(n);
            }
            HostMessage::Apply {
                counter,
                delta,
                reply,
            } => {
                if let Err((Some(CounterMessage::Apply { reply, .. }), error)) =
                    state.forward(counter, CounterMessage::Apply { delta, reply })
                {
                    let _ = reply.send(ValueOutcome(Err(error)));
                }
            }
            HostMessage::GetValue(counter, reply) => {
                if let Err((Some(CounterMessage::GetValue(reply)), error)) =
                    state.forward(counter, CounterMessage::GetValue(reply))
                {
                    let _ = reply.send(ValueOutcome(Err(error)));
                }
            }
            HostMessage::GetStats(counter, reply) => {
                if let Err((Some(CounterMessage::GetStats(reply)), error)) =
                    state.forward(counter, CounterMessage::GetStats(reply))
                {
                    let _ = reply.send(StatsOutcome(Err(error)));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::{Counter, CounterArgs};
    use shared::counter::Delta;
    use shared::host::Changes;

    #[tokio::test]
    async fn forwards_in_order_and_answers_for_missing_counters() {
        let node = "host-test";
        let (counter, counter_handle) = Actor::spawn(
            Some(counter_name(node, 0)),
            Counter,
            CounterArgs::new(counter_name(node, 0)),
        )
        .await
        .unwrap();
        let (host, host_handle) = Actor::spawn(
            None,
            CounterHost,
            HostArgs {
                node_name: node.into(),
                counters: 2,
            },
        )
        .await
        .unwrap();

        host.cast(HostMessage::Changes(Changes(vec![Change {
            counter: 0,
            delta: 40,
            operations: 8,
        }])))
        .unwrap();
        host.cast(HostMessage::Decrement {
            counter: 0,
            amount: 2,
        })
        .unwrap();
        let applied = ractor::call!(host, |reply| HostMessage::Apply {
            counter: 0,
            delta: Delta::Increment(1),
            reply
        })
        .unwrap();
        assert_eq!(applied, ValueOutcome(Ok(39)));
        let StatsOutcome(stats) = ractor::call!(host, |r| HostMessage::GetStats(0, r)).unwrap();
        assert_eq!(stats.unwrap().operations, 10);
        assert_eq!(ractor::call!(host, |r| HostMessage::Sync(7, r)).unwrap(), 7);

        // Index 1 is in range but not running; index 5 does not exist.
        assert_eq!(
            ractor::call!(host, |r| HostMessage::GetValue(1, r)).unwrap(),
            ValueOutcome(Err(CounterError::NotRunning("host-test/1".into())))
        );
        assert_eq!(
            ractor::call!(host, |r| HostMessage::GetValue(5, r)).unwrap(),
            ValueOutcome(Err(CounterError::NoSuchCounter("host-test/5".into())))
        );

        // A counter restarted under the same name is found again.
        counter.stop(None);
        counter_handle.await.unwrap();
        let (again, again_handle) = Actor::spawn(
            Some(counter_name(node, 0)),
            Counter,
            CounterArgs::new(counter_name(node, 0)),
        )
        .await
        .unwrap();
        assert_eq!(
            ractor::call!(host, |r| HostMessage::GetValue(0, r)).unwrap(),
            ValueOutcome(Ok(0))
        );
        again.stop(None);
        again_handle.await.unwrap();
        host.stop(None);
        host_handle.await.unwrap();
    }
}
