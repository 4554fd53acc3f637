//! Keeps undecodable network frames out of the log, one line a minute at most.
//!
//! `ractor::BytesConvertable::from_bytes` cannot return an error, so a message field
//! that does not decode panics: ours (`shared::wire_type!`, message `undecodable ...`)
//! and ractor's own for integers and booleans (an index out of range in its
//! `serialization.rs`). ractor's generated deserializer catches that panic and drops
//! the message, so nothing breaks, but Rust's default panic hook would print a
//! backtrace-sized message to stderr first, once per frame: a peer sending garbage
//! could flood the log. [`install`] puts a hook in front of the default one that counts
//! those panics instead and logs one summary line at most every [`REPORT_EVERY`]. Any
//! other panic is reported exactly as before.

use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time between two summary lines.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(60);

static DROPPED: AtomicU64 = AtomicU64::new(0);
static LAST_REPORT: Mutex<Option<Instant>> = Mutex::new(None);

/// Installs the hook (once per process; later calls stack harmlessly).
pub(crate) fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_undecodable_frame(info) {
            record();
        } else {
            default(info);
        }
    }));
}

/// Undecodable message fields dropped since the process started.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn record() {
    let total = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = Instant::now();
    // Never wait inside a panic hook: if another thread is reporting, this one is
    // counted and that is enough.
    let Ok(mut last) = LAST_REPORT.try_lock() else {
        return;
    };
    if last.is_none_or(|at| now.duration_since(at) >= REPORT_EVERY) {
        *last = Some(now);
        tracing::warn!(
            total,
            "dropped a message from a peer that did not decode (garbage or another \
             protocol version); further ones are counted and reported at most once a minute"
        );
    }
}

/// Whether a panic is a message field failing to decode.
fn is_undecodable_frame(info: &PanicHookInfo<'_>) -> bool {
    let message = info
        .payload()
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| info.payload().downcast_ref::<&str>().copied())
        .unwrap_or("");
    if message.starts_with(shared::codec::UNDECODABLE) {
        return true;
    }
    // ractor's built-in `from_bytes` for integers, floats, bools and chars (the only
    // code in that file that can panic, all of it on bytes from the network).
    info.location().is_some_and(|location| {
        let file = location.file().replace('\\', "/");
        file.contains("/ractor-") && file.ends_with("/src/serialization.rs")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::BytesConvertable;

    #[test]
    fn undecodable_fields_are_counted_not_printed() {
        install();
        let before = dropped();
        // Ours: a batch that is not one.
        let ours = std::panic::catch_unwind(|| shared::host::Batch::from_bytes(vec![0xff]));
        // ractor's: a u64 from three bytes.
        let theirs = std::panic::catch_unwind(|| u64::from_bytes(vec![1, 2, 3]));
        assert!(ours.is_err() && theirs.is_err());
        assert!(dropped() >= before + 2, "{} -> {}", before, dropped());
    }
}
