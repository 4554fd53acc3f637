//! Free loopback ports for the processes a test or `node-bench` starts.
//!
//! The operating system picks a free port, and it is free again once the probe closes:
//! until the node it was picked for binds it, a second pick can return the same port,
//! and that node then fails with "address already in use" (a CI run of the slow suite
//! did). So a process hands each port out once.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// Picks of the operating system's tried before giving up.
const MAX_PICKS: usize = 1_000;

/// A loopback port nobody listens on now, and that this process has not handed out
/// before.
pub fn unused_loopback_port() -> std::io::Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    first_new(handed_out.get_or_insert_with(HashSet::new), || {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    })
}

/// The first port `pick` gives that is not in `handed_out`, now added to it.
fn first_new(
    handed_out: &mut HashSet<u16>,
    mut pick: impl FnMut() -> std::io::Result<u16>,
) -> std::io::Result<u16> {
    for _ in 0..MAX_PICKS {
        let port = pick()?;
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(format!(
        "no loopback port this process has not handed out already in {MAX_PICKS} picks"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_picked_again_is_skipped() {
        let mut picks = [5, 5, 5, 6].into_iter();
        let mut handed_out = HashSet::new();
        let mut pick = || Ok(picks.next().expect("enough picks"));
        assert_eq!(first_new(&mut handed_out, &mut pick).unwrap(), 5);
        assert_eq!(first_new(&mut handed_out, &mut pick).unwrap(), 6);
        let always_five = || Ok(5);
        assert!(first_new(&mut handed_out, always_five).is_err());
    }

    #[test]
    fn real_ports_are_distinct() {
        let a = unused_loopback_port().unwrap();
        let b = unused_loopback_port().unwrap();
        assert!(a != 0 && b != 0 && a != b);
    }
}
