//! The `node` binary: parse the command line, set up logging, run, map errors to an exit
//! code. Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use node::cli::Cli;
use node::config::NodeConfig;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Nodes log their life at info; clients keep stderr for errors unless RUST_LOG says.
    let default_filter = if cli.command.is_some() {
        "warn,ractor_cluster=error"
    } else {
        // ractor_cluster warns about routine session teardown; our mesh logs peers
        // joining and leaving itself.
        "info,ractor_cluster=error"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .init();

    // Undecodable frames from peers are counted, not printed one backtrace each.
    node::panic_hook::install();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("node: error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(command) => node::commands::run(command)
                .await
                .map_err(|e| e.to_string()),
            None => {
                let config = NodeConfig::from_args(cli.serve).map_err(|e| e.to_string())?;
                node::server::run(config, node::shutdown::shutdown_signal())
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    });
    // Do not wait for stray tasks (a client's unfinished sessions) at exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("node: error: {message}");
            ExitCode::FAILURE
        }
    }
}
