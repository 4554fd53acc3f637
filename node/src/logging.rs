//! Logs: `tracing` to stderr (results go to stdout). A node logs its life at INFO, a
//! client only errors, unless `RUST_LOG` says otherwise.
//!
//! ractor_cluster is held at ERROR whatever `RUST_LOG` says, unless `RUST_LOG` names it:
//! it logs routine events at WARN (every client that disconnects leaves a `Node session
//! ... exited` line), and the mesh already logs what matters about peers, once each.
//! So a node polled by a healthcheck or a dashboard keeps a quiet log.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sets up logging for a node (`client == false`) or a client command.
pub fn init(client: bool) {
    let given = std::env::var("RUST_LOG").ok();
    let default = if client { "warn" } else { "info" };
    let mut filter = given
        .as_deref()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    if !given.is_some_and(|spec| spec.contains("ractor_cluster")) {
        if let Ok(quiet) = "ractor_cluster=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
}
