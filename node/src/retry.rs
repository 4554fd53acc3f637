//! A client change tried until its fate is known: one attempt after another, each
//! with the same id (which is what makes trying again safe), until the change is
//! applied or refused, or the deadline passes with its fate unknown ("in doubt").
//! Shared by `node incr`/`decr` ([`crate::client`]) and the HTTP side ([`crate::http`]).

use std::future::Future;
use std::time::Duration;

use shared::agent::ClientAnswer;
use shared::counter::Applied;
use tokio::time::Instant;

use crate::error::CommandError;

/// Classifies one attempt's result; `sent` says whether the request was handed over.
/// `InDoubt` and `NotThrough` here are about this attempt only: try again.
fn attempt_outcome(result: Result<ClientAnswer, CommandError>, sent: bool) -> ChangeOutcome {
    use shared::agent::ClientError as E;
    use shared::counter::CounterError as C;
    match result {
        Ok(ClientAnswer::Applied(applied)) => ChangeOutcome::Applied(applied),
        Ok(_) => ChangeOutcome::Refused(CommandError::Local("unexpected answer".into())),
        Err(e) => match &e {
            CommandError::RequestTimeout { .. } if sent => ChangeOutcome::InDoubt(e),
            CommandError::Rejected(E::InDoubt { .. }) => ChangeOutcome::InDoubt(e),
            CommandError::Rejected(E::Refused {
                error: C::Unavailable(_),
                ..
            })
            | CommandError::Rejected(E::NodeUnreachable { .. })
            | CommandError::Rejected(E::Busy(_))
            | CommandError::Rejected(E::Internal(_))
            | CommandError::Unreachable { .. }
            | CommandError::ConnectTimeout { .. }
            | CommandError::Busy { .. }
            | CommandError::NoAnswer { .. }
            | CommandError::RequestTimeout { .. } => ChangeOutcome::NotThrough(e),
            _ => ChangeOutcome::Refused(e),
        },
    }
}

/// First pause between attempts at a change; it doubles up to [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between attempts at a change.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How a change tried by [`try_change`] ended.
#[derive(Debug)]
pub(crate) enum ChangeOutcome {
    /// Applied (now, or before with its id).
    Applied(Applied),
    /// Refused: it was not applied and will not be.
    Refused(CommandError),
    /// Handed over at least once and never answered: applied or not, unknown.
    InDoubt(CommandError),
    /// Never got through (the last reason).
    NotThrough(CommandError),
}

/// Tries a change (one call of `attempt`: its result, and whether the request was
/// handed over) until it is applied or refused, or `deadline` passes; between
/// attempts it waits [`RETRY_PAUSE`], doubling up to [`MAX_RETRY_PAUSE`]. Each attempt
/// must carry the same id, which is what makes trying again safe. Shared by `node
/// incr`/`decr` and the HTTP side.
pub(crate) async fn try_change<F, Fut>(deadline: Instant, mut attempt: F) -> ChangeOutcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Result<ClientAnswer, CommandError>, bool)>,
{
    let mut doubt: Option<CommandError> = None;
    let mut pause = RETRY_PAUSE;
    loop {
        let (result, sent) = attempt().await;
        let not_through = match attempt_outcome(result, sent) {
            ChangeOutcome::InDoubt(e) => {
                doubt = Some(e);
                None
            }
            ChangeOutcome::NotThrough(e) => Some(e),
            // Once an attempt may have been applied, only the counter's own answer to
            // this id settles it: "no such counter" from a node that has since lost
            // sight of the owner says nothing about what the owner did.
            ChangeOutcome::Refused(e) if doubt.is_some() && !is_counters_verdict(&e) => Some(e),
            done => return done,
        };
        if Instant::now() + pause >= deadline {
            // Once handed over without an answer, the change stays in doubt whatever
            // later attempts say; else the last attempt's reason.
            return match (doubt, not_through) {
                (Some(why), _) => ChangeOutcome::InDoubt(why),
                (None, Some(why)) => ChangeOutcome::NotThrough(why),
                (None, None) => unreachable!(
                    "an attempt that was neither in doubt nor not through returned above"
                ),
            };
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

/// Whether `error` is the counter's own refusal of a change (given its id, so it holds
/// for every earlier attempt with that id too).
fn is_counters_verdict(error: &CommandError) -> bool {
    matches!(
        error,
        CommandError::Rejected(shared::agent::ClientError::Refused { .. })
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use shared::agent::ClientError;
    use shared::counter::{CounterError, Delta};

    use super::*;

    /// Runs [`try_change`] over `script`, one attempt per entry (the last one repeats),
    /// each handed over; its outcome and how many attempts it made.
    async fn outcome_of(script: Vec<ClientError>) -> (ChangeOutcome, usize) {
        let mut left: VecDeque<ClientError> = script.into();
        let mut attempts = 0;
        let deadline = Instant::now() + Duration::from_millis(300);
        let outcome = try_change(deadline, || {
            attempts += 1;
            let error = if left.len() > 1 {
                left.pop_front()
            } else {
                left.front().cloned()
            }
            .expect("a script of at least one");
            async move { (Err(CommandError::Rejected(error)), true) }
        })
        .await;
        (outcome, attempts)
    }

    fn unknown() -> ClientError {
        ClientError::UnknownCounter {
            name: "worker-1/0".into(),
            example: "coordinator/0".into(),
        }
    }

    #[tokio::test]
    async fn a_change_in_doubt_stays_in_doubt_when_its_counter_is_no_longer_known() {
        let (outcome, _) = outcome_of(vec![
            ClientError::InDoubt {
                counter: "worker-1/0".into(),
            },
            unknown(),
        ])
        .await;
        assert!(matches!(outcome, ChangeOutcome::InDoubt(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn the_counters_own_refusal_settles_a_change_in_doubt() {
        let refusal = ClientError::Refused {
            counter: "worker-1/0".into(),
            error: CounterError::Overflow {
                value: i64::MAX,
                delta: Delta::Increment(1),
            },
        };
        let (outcome, _) = outcome_of(vec![
            ClientError::InDoubt {
                counter: "worker-1/0".into(),
            },
            refusal,
        ])
        .await;
        assert!(matches!(outcome, ChangeOutcome::Refused(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn an_unknown_counter_is_refused_at_once_when_nothing_was_in_doubt() {
        let (outcome, attempts) = outcome_of(vec![unknown()]).await;
        assert!(matches!(outcome, ChangeOutcome::Refused(_)), "{outcome:?}");
        assert_eq!(attempts, 1, "it was retried");
    }
}
