//! The client commands: connect to a member, send one request, print the answer on
//! stdout.

use std::time::Duration;

use shared::agent::{ClientAnswer, ClientRequest};
use shared::counter::Delta;

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
        Command::Incr { counter, by, conn } => {
            let request = ClientRequest::Apply {
                counter,
                delta: Delta::Increment(by),
            };
            print_value(request_once(&conn, request, conn.timeout).await?)?;
        }
        Command::Decr { counter, by, conn } => {
            let request = ClientRequest::Apply {
                counter,
                delta: Delta::Decrement(by),
            };
            print_value(request_once(&conn, request, conn.timeout).await?)?;
        }
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
        ClientAnswer::Stats(_) | ClientAnswer::Done => {
            Err(CommandError::Local("unexpected answer".into()))
        }
    }
}

/// Connects to the member `conn` names, with its cookie and TLS settings.
async fn connect(conn: &ClientArgs) -> Result<ClusterClient, CommandError> {
    let cookie = conn.cookie.or_development().map_err(CommandError::Local)?;
    let tls = Tls::from_args(&conn.tls).map_err(CommandError::Local)?;
    ClusterClient::connect(&conn.join, cookie.secret(), tls.as_ref(), conn.timeout).await
}
