//! The `node` program: logging, the runtime, then a node or a client command, and the
//! exit code its outcome maps to.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::Cli;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::runtime::{BusyPoll, RuntimeOptions};

/// Runs what the command line asks for and says how it ended: the node until it is
/// stopped, or one client command. Errors go to stderr as one `node: error:` line.
pub fn main(cli: Cli) -> ExitCode {
    crate::logging::init(cli.command.is_some());
    // Undecodable frames from peers are counted, not printed one backtrace each.
    crate::net::panic_hook::install();
    let result = runtime_options(&cli)
        .map_err(|error| Failure::said(1, error))
        .and_then(|options| {
            crate::runtime::run(options, work(cli))
                .unwrap_or_else(|error| Err(Failure::said(1, format!("cannot run: {error}"))))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(message) = failure.message {
                eprintln!("node: error: {message}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// How the program failed: its exit code, and what to print (nothing if the node
/// logged it already as its last error line).
struct Failure {
    code: u8,
    message: Option<String>,
}

impl Failure {
    fn said(code: u8, message: String) -> Self {
        Self {
            code,
            message: Some(message),
        }
    }
}

/// A client command lives for a few round trips: measuring whether to spin (about
/// 25 ms) would cost more than spinning could save, so it never spins.
fn runtime_options(cli: &Cli) -> Result<RuntimeOptions, String> {
    match cli.command {
        Some(_) => RuntimeOptions::from_env(BusyPoll::Window(Duration::ZERO)),
        None => Ok(RuntimeOptions {
            worker_threads: cli.serve.worker_threads,
            busy_poll: cli.serve.busy_poll_us,
        }),
    }
}

/// The command, or the node. Tasks still running at the end (a client's unfinished
/// sessions) are not waited for.
async fn work(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Some(command) => crate::client::commands::run(command)
            .await
            .map_err(|e| Failure::said(e.exit_code(), e.to_string())),
        None => {
            let config =
                NodeConfig::from_args(cli.serve).map_err(|e| Failure::said(1, e.to_string()))?;
            crate::server::run(config, crate::shutdown::shutdown_signal())
                .await
                .map_err(|e| match e {
                    // Logged when it happened, as the node's last error line.
                    NodeError::Failed { .. } => Failure {
                        code: 1,
                        message: None,
                    },
                    other => Failure::said(1, other.to_string()),
                })
        }
    }
}
