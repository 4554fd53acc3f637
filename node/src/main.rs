//! The `node` binary: set up the allocator, parse the command line and run it.
//! Everything else lives in the library ([`node::main`]).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: every message allocates, and a profile of a
/// collection put a third of its CPU in glibc's malloc and free (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc v3's
/// `include/mimalloc.h`; the Rust bindings name no constant for it). The test below
/// checks the place by the option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system at once rather than a second later.
///
/// mimalloc v3 keeps memory a thread has freed for `purge_delay` (1,000 ms) before it
/// returns it, and a thread returns it only when it next allocates: a node's blocking
/// threads and idle workers held what they had freed for as long as they slept. Under
/// the unbatched soak each node's resident memory drifted from 41-49 MiB to 56-65 MiB
/// over two minutes, without settling; returned at once, it stayed at 25-33 MiB, and
/// `node-bench` (throughput, call and durable latency, light-load CPU) measured no
/// difference (BENCHMARKS.md). A default only: mimalloc's own environment variable
/// (`MIMALLOC_PURGE_DELAY`, in any spelling it takes) still wins.
fn return_freed_memory_at_once() {
    // SAFETY: `mi_option_set_default` stores a number in mimalloc's option table unless
    // the environment set that option. It is not synchronised, and this runs first in
    // `main`, before the program starts any thread.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 0)
    };
}

fn main() -> ExitCode {
    return_freed_memory_at_once();
    node::main(node::Cli::parse())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option at `MI_OPTION_PURGE_DELAY` has purge_delay's default, 1,000 ms (no
    /// other option of mimalloc v3 has it), and setting the default sets that option.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        let set = std::env::vars_os().any(|(name, _)| {
            let name = name.to_string_lossy().to_ascii_uppercase();
            name == "MIMALLOC_PURGE_DELAY" || name == "MIMALLOC_RESET_DELAY"
        });
        assert!(
            !set,
            "run without mimalloc's purge delay in the environment"
        );
        #[allow(unsafe_code)]
        // SAFETY: reads and writes one number in mimalloc's option table. The test
        // harness's other threads may read it meanwhile (a word-sized store; this test
        // is the only writer).
        let (default, after) = unsafe {
            let default = libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
            return_freed_memory_at_once();
            (
                default,
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            )
        };
        assert_eq!(default, 1000, "not mimalloc v3's purge_delay");
        assert_eq!(after, 0);
    }
}
