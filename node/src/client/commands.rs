//! The client commands: connect to a member, send one request, print the answer on
//! stdout. `incr` and `decr` carry an id and try again (same id) until their timeout
//! while a change's fate is unknown; one whose fate is still unknown then exits with
//! [`EXIT_IN_DOUBT`](crate::error::EXIT_IN_DOUBT).

use std::time::Duration;

use shared::agent::{ClientAnswer, ClientRequest};
use shared::counter::Delta;
use shared::protocol::new_change_id;
use tokio::time::Instant;

use super::connection::ClusterClient;
use crate::cli::{ClientArgs, Command, DebugCommand};
use crate::error::CommandError;
use crate::net::tls::Tls;
use crate::retry::{try_change, ChangeOutcome};

/// Extra time a client waits beyond a collection's deadline for the answer to travel.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// Runs one client command.
pub(crate) async fn run(command: Command) -> Result<(), CommandError> {
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
        Command::Health {
            http: Some(addr),
            conn,
        } => println!("{}", super::http_probe::ready(&addr, conn.timeout).await?),
        Command::Health { http: None, conn } => {
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
        Command::Leave { for_good, conn } => {
            let request = ClientRequest::Leave { for_good };
            // Leaving for good first commits what the node took: more than a round trip.
            let timeout = conn.timeout.max(Duration::from_secs(15));
            match request_once(&conn, request, timeout).await? {
                ClientAnswer::Leaving { node, for_good } => {
                    let how = if for_good { "for good" } else { "for a while" };
                    println!("{node} is leaving the cluster {how}: it stops now");
                }
                _ => return Err(CommandError::Local("unexpected answer to leave".into())),
            }
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
    let id = id.unwrap_or_else(new_change_id);
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
