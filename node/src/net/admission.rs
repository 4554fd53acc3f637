//! Places for connections that have not authenticated yet: at most [`Limits::total`]
//! at once and [`Limits::per_ip`] from one address. A plain type (the accept loop keeps
//! one behind a mutex), tested without sockets.
//!
//! When the places are full, the newcomer does not simply lose: another connection is
//! dropped instead, from the newcomer's own address if that address is at its bound,
//! chosen in this order: one that is stuck (older than the authentication deadline);
//! one with no handshake under way, oldest first; one whose handshake has gone on for
//! longer than [`Limits::grace`] after the connection was accepted (a handshake takes
//! a round trip or two), oldest first. A handshake is under way once the peer's whole
//! first frame is in and of a size a handshake may have, or once the node has written
//! to it (under TLS, its first answer comes before any frame): a legitimate client's
//! connection, which sends its first frame at once, is not dropped for a silent one
//! while the node has yet to answer it. So neither a flood of silent or garbage
//! connections nor one of stalled handshakes, even from a legitimate client's own
//! address, keeps that client out for long. Only when every place holds a young
//! handshake under way is the newcomer refused (and told the node is busy).
//! Each place costs little: before it authenticates, a connection may make the node
//! hold one frame of at most 16 KiB ([`conn`](super::conn)).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::screen::Pending;

/// The bounds on connections waiting to authenticate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// From everyone.
    pub(crate) total: usize,
    /// From one address.
    pub(crate) per_ip: usize,
    /// A connection older than this should have authenticated (or been closed) by now.
    pub(crate) deadline: Duration,
    /// A handshake under way is left alone this long after its connection was accepted.
    pub(crate) grace: Duration,
}

/// What became of a newcomer.
#[derive(Debug)]
pub(crate) enum Admit {
    /// It has a place.
    Admitted,
    /// It has a place, made by dropping this connection (which must be closed).
    Evicting(Arc<Pending>),
    /// No place can be made: every one holds a handshake in progress.
    Refused,
}

/// The places; see the module documentation.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    entries: Vec<Arc<Pending>>,
}

impl Admission {
    /// No places taken.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: Vec::new(),
        }
    }

    /// Finds a place for `conn` at `now`.
    pub(crate) fn admit(&mut self, conn: Arc<Pending>, now: Instant) -> Admit {
        let ip = conn.peer.ip();
        let from_ip = self.from(ip).count();
        let outcome = if from_ip >= self.limits.per_ip {
            match self.victim(now, Some(ip)) {
                Some(victim) => Admit::Evicting(victim),
                None => return Admit::Refused,
            }
        } else if self.entries.len() >= self.limits.total {
            match self.victim(now, None) {
                Some(victim) => Admit::Evicting(victim),
                None => return Admit::Refused,
            }
        } else {
            Admit::Admitted
        };
        if let Admit::Evicting(victim) = &outcome {
            self.remove(victim.id);
        }
        self.entries.push(conn);
        outcome
    }

    /// Gives back the place of connection `id`; false if it held none (any more).
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.entries.iter().position(|e| e.id == id) {
            Some(i) => {
                self.entries.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// The connection holding a place for the peer at `addr`.
    pub(crate) fn find(&self, addr: std::net::SocketAddr) -> Option<Arc<Pending>> {
        self.entries.iter().find(|e| e.peer == addr).cloned()
    }

    /// Places taken.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn from(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<Pending>> {
        self.entries.iter().filter(move |e| e.peer.ip() == ip)
    }

    /// The connection to drop for a newcomer (from `ip` only, if given): the oldest
    /// stuck one, else the oldest with no handshake under way, else the oldest
    /// handshake past its grace.
    fn victim(&self, now: Instant, ip: Option<IpAddr>) -> Option<Arc<Pending>> {
        let age = |e: &&Arc<Pending>| now.saturating_duration_since(e.opened);
        let oldest = |keep: &dyn Fn(&&Arc<Pending>) -> bool| {
            self.entries
                .iter()
                .filter(|e| ip.is_none_or(|ip| e.peer.ip() == ip))
                .filter(|e| keep(e))
                .min_by_key(|e| e.opened)
                .cloned()
        };
        oldest(&|e| age(e) > self.limits.deadline)
            .or_else(|| oldest(&|e| !e.is_in_progress()))
            .or_else(|| oldest(&|e| age(e) > self.limits.grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    const LIMITS: Limits = Limits {
        total: 6,
        per_ip: 3,
        deadline: Duration::from_secs(2),
        grace: Duration::from_millis(250),
    };

    fn conn(id: u64, ip: u8, opened: Instant) -> Arc<Pending> {
        let peer = SocketAddr::from(([10, 0, 0, ip], 1000 + id as u16));
        Arc::new(Pending::new(id, peer, opened))
    }

    /// Silent connections from the client's own address are dropped, oldest first,
    /// to make room for it; never another address's.
    #[test]
    fn the_oldest_silent_connection_from_the_same_address_makes_room() {
        let mut a = Admission::new(LIMITS);
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        for id in 0..3 {
            assert!(matches!(
                a.admit(conn(id, 1, t0 + id as u32 * ms), t0),
                Admit::Admitted
            ));
        }
        let other = conn(10, 2, t0);
        assert!(matches!(a.admit(Arc::clone(&other), t0), Admit::Admitted));
        match a.admit(conn(3, 1, t0 + 5 * ms), t0 + 5 * ms) {
            Admit::Evicting(victim) => assert_eq!(victim.id, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.len(), 4);
        assert!(!a.remove(0), "the victim's place is gone already");
        assert!(a.find(other.peer).is_some());
    }

    /// A handshake the node is answering keeps its place for its grace; when every
    /// place from that address is such a young handshake, the newcomer is refused.
    /// Past the grace, the oldest handshake makes room; a silent one goes first.
    #[test]
    fn young_handshakes_in_progress_are_kept() {
        let mut a = Admission::new(LIMITS);
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        for id in 0..3 {
            let c = conn(id, 1, t0 + id as u32 * ms);
            a.admit(Arc::clone(&c), t0);
            // The node has written to it: a handshake in progress.
            c.record_written_for_tests(100);
        }
        let soon = t0 + 100 * ms;
        assert!(matches!(a.admit(conn(3, 1, soon), soon), Admit::Refused));
        let later = t0 + LIMITS.grace + 2 * ms;
        match a.admit(conn(4, 1, later), later) {
            Admit::Evicting(victim) => assert_eq!(victim.id, 0),
            other => panic!("{other:?}"),
        }
        let mut a = Admission::new(LIMITS);
        let silent = conn(7, 1, t0 + 5 * ms);
        a.admit(Arc::clone(&silent), t0);
        for id in 0..2 {
            let c = conn(id, 1, t0);
            a.admit(Arc::clone(&c), t0);
            c.record_written_for_tests(1);
        }
        match a.admit(conn(9, 1, later), later) {
            Admit::Evicting(victim) => assert_eq!(victim.id, 7),
            other => panic!("{other:?}"),
        }
    }

    /// A connection whose first frame passed the screening has a handshake under way
    /// even before the node answers it: silent ones go first, and while every place
    /// holds a young handshake so begun, the newcomer is refused.
    #[test]
    fn a_handshake_the_node_has_not_answered_yet_is_kept_too() {
        let mut a = Admission::new(LIMITS);
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let begun = conn(0, 1, t0);
        a.admit(Arc::clone(&begun), t0);
        begun.start();
        for id in 1..3 {
            a.admit(conn(id, 1, t0 + id as u32 * ms), t0 + id as u32 * ms);
        }
        let soon = t0 + 10 * ms;
        match a.admit(conn(3, 1, soon), soon) {
            Admit::Evicting(victim) => assert_eq!(victim.id, 1, "the oldest silent one"),
            other => panic!("{other:?}"),
        }
        let mut a = Admission::new(LIMITS);
        for id in 0..3 {
            let c = conn(id, 1, t0);
            a.admit(Arc::clone(&c), t0);
            c.start();
        }
        assert!(matches!(a.admit(conn(3, 1, soon), soon), Admit::Refused));
        let later = t0 + LIMITS.grace + ms;
        assert!(matches!(
            a.admit(conn(4, 1, later), later),
            Admit::Evicting(_)
        ));
    }

    #[test]
    fn the_total_bound_holds_across_addresses() {
        let mut a = Admission::new(LIMITS);
        let t0 = Instant::now();
        for id in 0..6u64 {
            let c = conn(id, id as u8 % 3, t0);
            assert!(matches!(a.admit(Arc::clone(&c), t0), Admit::Admitted));
            c.record_written_for_tests(1);
        }
        assert!(matches!(a.admit(conn(9, 7, t0), t0), Admit::Refused));
        assert!(a.remove(2));
        assert!(matches!(a.admit(conn(9, 7, t0), t0), Admit::Admitted));
        assert_eq!(a.len(), 6);
    }
}
