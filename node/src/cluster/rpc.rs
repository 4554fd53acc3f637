//! Calls with a deadline, and fan-outs.
//!
//! A handler must not wait on another actor, so the fan-outs here are for tasks (a
//! collection, gossip, a leave notice) and clients: [`ask`] sends one call and returns
//! the receiver of its answer, [`gather`] waits for many receivers until one shared
//! deadline without a task per call. [`gather_timed`] (gossip, to time each peer's
//! round trip) waits for all at once, with a task per peer: as many as there are
//! members, each gone by the shared deadline. Every failure (timeout, dropped reply, a peer that went away) is simply
//! "no answer": callers report it, they do not retry blindly.

use std::time::Duration;

use ractor::concurrency::{oneshot, OneshotReceiver};
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use tokio::time::Instant;

/// Calls `actor` and waits at most until `until`. Any failure is `None`: the caller
/// only needs to know it has no answer.
pub async fn call_until<M, R>(
    actor: ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<R>) -> M,
    until: Instant,
) -> Option<R>
where
    M: Message,
    R: Send + 'static,
{
    let remaining = until.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return None;
    }
    match tokio::time::timeout_at(until, actor.call(build, Some(remaining))).await {
        Ok(Ok(CallResult::Success(reply))) => Some(reply),
        _ => None,
    }
}

/// Sends a call to `actor` without waiting; the answer arrives on the returned
/// receiver (within `timeout`, or never). `None` if the message could not be sent.
pub(crate) fn ask<M, R>(
    actor: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<R>) -> M,
    timeout: Duration,
) -> Option<OneshotReceiver<R>>
where
    M: Message,
    R: Send + 'static,
{
    let (tx, rx) = oneshot();
    actor.cast(build((tx, timeout).into())).ok().map(|()| rx)
}

/// Waits for every pending answer until `until`, and pairs each key with its answer
/// (`None` for a call that was not answered in time).
pub(crate) async fn gather<K, R>(
    pending: Vec<(K, Option<OneshotReceiver<R>>)>,
    until: Instant,
) -> Vec<(K, Option<R>)> {
    let mut answers = Vec::with_capacity(pending.len());
    // All calls are already in flight: waiting for them in turn costs no more than the
    // slowest, and never more than the deadline.
    for (key, rx) in pending {
        let answer = match rx {
            Some(rx) => tokio::time::timeout_at(until, rx)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        answers.push((key, answer));
    }
    answers
}

/// [`gather`], waiting for every answer at once, so that each comes with its round
/// trip: the time from `sent` (when the calls went out) to its arrival.
pub(crate) async fn gather_timed<K, R>(
    pending: Vec<(K, Option<OneshotReceiver<R>>)>,
    sent: Instant,
    until: Instant,
) -> Vec<(K, Option<(R, Duration)>)>
where
    K: Send + 'static,
    R: Send + 'static,
{
    let mut waiting = tokio::task::JoinSet::new();
    for (key, rx) in pending {
        waiting.spawn(async move {
            let answer = match rx {
                Some(rx) => tokio::time::timeout_at(until, rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|answer| (answer, sent.elapsed())),
                None => None,
            };
            (key, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = waiting.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};
    use ractor_cluster::RactorMessage;

    /// Answers `Echo(n)` with `n`, except 0, which it never answers.
    struct Echo;

    #[derive(RactorMessage)]
    enum EchoMessage {
        Echo(u32, RpcReplyPort<u32>),
    }

    impl Actor for Echo {
        type Msg = EchoMessage;
        type State = Vec<RpcReplyPort<u32>>;
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _args: (),
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(Vec::new())
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            EchoMessage::Echo(n, reply): Self::Msg,
            held: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if n == 0 {
                held.push(reply);
            } else {
                let _ = reply.send(n);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn answers_are_paired_and_silence_ends_at_the_deadline() {
        let (echo, handle) = Actor::spawn(None, Echo, ()).await.unwrap();
        let until = Instant::now() + Duration::from_millis(200);
        let pending = [3, 0, 7]
            .into_iter()
            .map(|n| {
                let rx = ask(&echo, |r| EchoMessage::Echo(n, r), Duration::from_secs(1));
                (n, rx)
            })
            .collect();
        let answers = gather(pending, until).await;
        assert_eq!(answers, [(3, Some(3)), (0, None), (7, Some(7))]);
        assert!(Instant::now() < until + Duration::from_millis(100));
        assert_eq!(
            call_until(
                echo.clone(),
                |r| EchoMessage::Echo(5, r),
                Instant::now() + Duration::from_secs(1)
            )
            .await,
            Some(5)
        );
        assert_eq!(
            call_until(echo.clone(), |r| EchoMessage::Echo(5, r), Instant::now()).await,
            None
        );
        echo.stop(None);
        handle.await.unwrap();
        // A stopped actor: nothing is sent.
        assert!(ask(&echo, |r| EchoMessage::Echo(1, r), Duration::from_secs(1)).is_none());
    }
}
