//! The `node` binary: parse the command line and run it. Everything else lives in the
//! library ([`node::main`]).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: every message allocates, and a profile of a
/// collection put a third of its CPU in glibc's malloc and free (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    node::main(node::Cli::parse())
}
