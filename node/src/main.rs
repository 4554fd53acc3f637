//! The `node` binary: parse the command line, set up logging, run, map errors to an exit
//! code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use node::cli::Cli;
use node::config::NodeConfig;
use node::error::NodeError;

/// mimalloc rather than glibc's malloc: every message allocates, and a profile of a
/// collection put a third of its CPU in glibc's malloc and free (BENCHMARKS, issue 14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    node::logging::init(cli.command.is_some());
    // Undecodable frames from peers are counted, not printed one backtrace each.
    node::net::panic_hook::install();

    let options = match cli.command {
        // A client command lives for a few round trips: measuring whether to spin (about
        // 25 ms) would cost more than spinning could save.
        Some(_) => node::runtime::RuntimeOptions::from_env(node::runtime::BusyPoll::Window(
            std::time::Duration::ZERO,
        )),
        None => Ok(node::runtime::RuntimeOptions {
            worker_threads: cli.serve.worker_threads,
            busy_poll: cli.serve.busy_poll_us,
        }),
    };
    let options = match options {
        Ok(options) => options,
        Err(error) => {
            eprintln!("node: error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let work = async move {
        match cli.command {
            Some(command) => node::client::commands::run(command)
                .await
                .map_err(|e| (e.exit_code(), Some(e.to_string()))),
            None => {
                let config =
                    NodeConfig::from_args(cli.serve).map_err(|e| (1, Some(e.to_string())))?;
                node::server::run(config, node::shutdown::shutdown_signal())
                    .await
                    .map_err(|e| match e {
                        // Logged when it happened, as the node's last error line.
                        NodeError::Failed(_) => (1, None),
                        other => (1, Some(other.to_string())),
                    })
            }
        }
    };
    // Tasks still running at the end (a client's unfinished sessions) are not waited for.
    let result = match node::runtime::run(options, work) {
        Ok(result) => result,
        Err(error) => Err((1, Some(format!("cannot run: {error}")))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            if let Some(message) = message {
                eprintln!("node: error: {message}");
            }
            ExitCode::from(code)
        }
    }
}
