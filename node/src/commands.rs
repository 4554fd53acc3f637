//! The client commands: connect to a member, send one request, print the answer on
//! stdout.

use std::time::Duration;

use shared::agent::{ClientAnswer, ClientRequest};
use shared::counter::Delta;

use crate::bench::BenchOptions;
use crate::cli::{ClientArgs, Command, DebugCommand};
use crate::client::ClusterClient;
use crate::error::CommandError;
use crate::tls::Tls;

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
                    sequential: false,
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
                print!("{}", crate::output::stats_table(&stats));
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
        Command::Bench {
            json,
            scale,
            ops,
            unbatched_ops,
            calls,
            collections,
            counters,
            push_counters,
            scale_counters,
            raw_frames,
        } => {
            crate::bench::run(BenchOptions {
                json,
                scale,
                ops,
                unbatched_ops,
                calls,
                collections,
                counters,
                push_counters,
                scale_counters,
                raw_frames,
            })
            .await?;
        }
        Command::BenchSender {
            join,
            cookie,
            measure,
            mode,
            ops,
        } => {
            let cookie = cookie.or_development().map_err(CommandError::Local)?;
            crate::bench::sender::run(&join, cookie.secret(), measure, mode, ops).await?;
        }
        Command::Debug(DebugCommand::CrashCounter { counter, conn }) => {
            let request = ClientRequest::CrashCounter {
                counter: counter.clone(),
            };
            request_once(&conn, request, conn.timeout).await?;
            println!("asked {counter} to fail");
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
