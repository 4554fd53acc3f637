//! The client commands: connect to a member, send one request, print the answer on
//! stdout. `incr` and `decr` carry an id and try again (same id) until their timeout
//! while a change's fate is unknown; one whose fate is still unknown then exits with
//! [`EXIT_IN_DOUBT`](crate::error::EXIT_IN_DOUBT).

use std::future::Future;
use std::time::Duration;

use shared::agent::{ClientAnswer, ClientRequest};
use shared::counter::{Applied, Delta};
use tokio::time::Instant;

use super::connection::ClusterClient;
use crate::cli::{ClientArgs, Command, DebugCommand};
use crate::error::CommandError;
use crate::net::tls::Tls;

/// Extra time a client waits beyond a collection's deadline for the answer to travel.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// Runs one client command.
pub async fn run(command: Command) -> Result<(), CommandError> {
    match command {
        Command::Stats {
            json,
            last,
            totals,
            deadline,
            conn,
        } => {
            let per_counter = !totals;
            let request = if last {
                ClientRequest::LastStats { per_counter }
            } else {
                ClientRequest::Stats {
                    deadline_ms: deadline.as_millis() as u64,
                    per_counter,
                }
            };
            let answer = request_once(&conn, request, deadline + ANSWER_MARGIN).await?;
            let ClientAnswer::Stats(stats) = answer else {
                return Err(CommandError::Local("unexpected answer to stats".into()));
            };
            if json {
                let text = serde_json::to_string_pretty(&stats)
                    .map_err(|e| CommandError::Local(e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", crate::stats::output::stats_table(&stats));
            }
        }
        Command::Incr {
            counter,
            by,
            id,
            conn,
        } => apply(&conn, counter, Delta::Increment(by), id).await?,
        Command::Decr {
            counter,
            by,
            id,
            conn,
        } => apply(&conn, counter, Delta::Decrement(by), id).await?,
        Command::Get { counter, conn } => {
            let request = ClientRequest::Get { counter };
            print_value(request_once(&conn, request, conn.timeout).await?)?;
        }
        Command::Health { conn } => {
            let client = connect(&conn).await?;
            let info = client.info(conn.timeout).await;
            client.close().await;
            let info = info?;
            println!(
                "healthy: {} ({}) at {}, {} peer(s) up, {} counters",
                info.name,
                info.role,
                info.advertise,
                info.known_peers.len(),
                info.counters
            );
        }
        Command::Debug(DebugCommand::Crash {
            target,
            counter,
            conn,
        }) => {
            let target = target.with_counter(counter)?;
            let shown = format!("{target:?}");
            request_once(&conn, ClientRequest::Crash(target), conn.timeout).await?;
            println!("asked {} to fail: {shown}", conn.join);
        }
        Command::Debug(DebugCommand::DiskErrors { pass, fail, conn }) => {
            let request = ClientRequest::DiskErrors { pass, fail };
            request_once(&conn, request, conn.timeout).await?;
            println!(
                "armed {}'s disk: {fail} commit(s) fail after {pass} more sync(s)",
                conn.join
            );
        }
    }
    Ok(())
}

async fn request_once(
    conn: &ClientArgs,
    request: ClientRequest,
    answer_timeout: Duration,
) -> Result<ClientAnswer, CommandError> {
    let client = connect(conn).await?;
    let answer = client.request(request, answer_timeout).await;
    client.close().await;
    answer
}

fn print_value(answer: ClientAnswer) -> Result<(), CommandError> {
    match answer {
        ClientAnswer::Value(value) => {
            println!("{value}");
            Ok(())
        }
        _ => Err(CommandError::Local("unexpected answer".into())),
    }
}

/// Classifies one attempt's result; `sent` says whether the request was handed over.
/// `InDoubt` and `NotThrough` here are about this attempt only: try again.
fn attempt_outcome(result: Result<ClientAnswer, CommandError>, sent: bool) -> ChangeOutcome {
    use shared::agent::ClientError as E;
    use shared::counter::CounterError as C;
    match result {
        Ok(ClientAnswer::Applied(applied)) => ChangeOutcome::Applied(applied),
        Ok(_) => ChangeOutcome::Refused(CommandError::Local("unexpected answer".into())),
        Err(e) => match &e {
            CommandError::RequestTimeout(..) if sent => ChangeOutcome::InDoubt(e),
            CommandError::Rejected(E::InDoubt { .. }) => ChangeOutcome::InDoubt(e),
            CommandError::Rejected(E::Refused {
                error: C::Unavailable(_),
                ..
            })
            | CommandError::Rejected(E::NodeUnreachable { .. })
            | CommandError::Rejected(E::Busy(_))
            | CommandError::Rejected(E::Internal(_))
            | CommandError::Unreachable(..)
            | CommandError::ConnectTimeout(..)
            | CommandError::Busy(_)
            | CommandError::NoAnswer(_)
            | CommandError::RequestTimeout(..) => ChangeOutcome::NotThrough(e),
            _ => ChangeOutcome::Refused(e),
        },
    }
}

/// First pause between attempts at a change; it doubles up to [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between attempts at a change.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// `node incr` and `node decr`: applies `delta` to `counter` once, under `id` (a new one
/// if none is given), trying again until `--timeout` while its fate is unknown or it
/// did not get through. Prints the value after it; says so on stderr if the id had
/// been applied before.
async fn apply(
    conn: &ClientArgs,
    counter: String,
    delta: Delta,
    id: Option<String>,
) -> Result<(), CommandError> {
    let id = id.unwrap_or_else(crate::cli::new_change_id);
    let deadline = Instant::now() + conn.timeout;
    let outcome = try_change(deadline, || async {
        let request = ClientRequest::Apply {
            counter: counter.clone(),
            delta,
            id: id.clone(),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match connect_within(conn, remaining).await {
            Ok(client) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let answer = client.request(request, remaining).await;
                client.close().await;
                (answer, true)
            }
            Err(e) => (Err(e), false),
        }
    })
    .await;
    match outcome {
        ChangeOutcome::Applied(applied) => {
            println!("{}", applied.value);
            if applied.repeated {
                eprintln!(
                    "node: note: id {id} was applied before; this is that change's result \
                     (nothing changed now)"
                );
            }
            Ok(())
        }
        ChangeOutcome::Refused(e) => Err(e),
        ChangeOutcome::InDoubt(why) => Err(CommandError::InDoubt {
            counter,
            id,
            why: why.to_string(),
        }),
        ChangeOutcome::NotThrough(last) => Err(last),
    }
}

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

/// Connects to the member `conn` names, with its cookie and TLS settings.
async fn connect(conn: &ClientArgs) -> Result<ClusterClient, CommandError> {
    connect_within(conn, conn.timeout).await
}

/// [`connect`], within `timeout`.
async fn connect_within(
    conn: &ClientArgs,
    timeout: Duration,
) -> Result<ClusterClient, CommandError> {
    let cookie = conn.cookie.or_development().map_err(CommandError::Local)?;
    let tls = Tls::from_args(&conn.tls).map_err(CommandError::Local)?;
    ClusterClient::connect(&conn.join, cookie.secret(), tls.as_ref(), timeout).await
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use shared::agent::ClientError;
    use shared::counter::CounterError;

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
