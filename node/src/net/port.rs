//! Free loopback ports for the processes a test or `node-bench` starts.
//!
//! A port is picked below the kernel's ephemeral range (`ip_local_port_range`) and
//! checked free by binding it: a port the kernel hands out by itself (to every outgoing
//! connection, and to each node's internal listener on port 0) could be taken by
//! another process between the pick and the node's own bind, which then fails with
//! "address already in use". Below that range only explicit binds take ports. A process
//! also hands each port out once, so two nodes it starts never get the same one.

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
    let below = ephemeral_start().filter(|&start| start > FIRST_PORT + 1_000);
    first_new(
        handed_out.get_or_insert_with(HashSet::new),
        || match below {
            Some(end) => loop {
                let port = fastrand::u16(FIRST_PORT..end);
                if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    break Ok(port);
                }
            },
            None => Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()),
        },
    )
}

/// The lowest port picked from.
const FIRST_PORT: u16 = 10_000;

/// The first port of the kernel's ephemeral range, if it can be read.
fn ephemeral_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
    fn real_ports_are_distinct_and_below_the_ephemeral_range() {
        let a = unused_loopback_port().unwrap();
        let b = unused_loopback_port().unwrap();
        assert!(a != 0 && b != 0 && a != b);
        if let Some(start) = ephemeral_start().filter(|&s| s > FIRST_PORT + 1_000) {
            assert!(a < start && b < start, "{a}, {b} not below {start}");
            assert!(a >= FIRST_PORT && b >= FIRST_PORT);
        }
        TcpListener::bind(("127.0.0.1", a)).expect("the port is free to bind");
    }
}
