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
/// difference (BENCHMARKS.md). `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn return_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores a number in mimalloc's option table. It is
        // not synchronised, and this runs first in `main`, before any other thread.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0)
        };
    }
}

fn main() -> ExitCode {
    return_freed_memory_at_once();
    node::main(node::Cli::parse())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option at `MI_OPTION_PURGE_DELAY` has purge_delay's default, 1,000 ms (no
    /// other option of mimalloc v3 has it), and setting it sets that option.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            panic!("run without MIMALLOC_PURGE_DELAY in the environment");
        }
        #[allow(unsafe_code)]
        // SAFETY: reads and writes mimalloc's option table; this test's process sets
        // no other option.
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
