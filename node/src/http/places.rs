//! Places for HTTP connections: at most [`Limits::total`] at once and
//! [`Limits::per_ip`] from one address. A plain type behind a mutex, tested without
//! sockets, like the cluster port's [admission](crate::net::admission).
//!
//! When a newcomer finds no place, it does not simply lose: a connection that is not
//! serving a request right now (one still sending its headers, slowly or not at all,
//! or idle between keep-alive requests, or silent before its TLS handshake) is evicted
//! instead, the oldest first, from the newcomer's own address if that address is at its
//! bound. A TLS handshake under way (its first bytes are in) is left alone for
//! [`Limits::grace`] after its connection was accepted, so that a client's handshake
//! is not cut short by a flood of silent connections. Only when every candidate is
//! serving a request, or is such a young handshake, is the newcomer refused. So
//! connections that hold places without asking anything (a slow-header flood, even
//! from a health checker's own address, reopened as fast as they are closed) never
//! keep a probe or a read from being answered.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The bounds on HTTP connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// From everyone.
    pub(crate) total: usize,
    /// From one address.
    pub(crate) per_ip: usize,
    /// How long a TLS handshake under way is left alone after its connection was
    /// accepted.
    pub(crate) grace: Duration,
}

/// One connection's state, shared by its task and the places: how many requests it is
/// serving, and whether it has been evicted, in one word, so that a connection is
/// evicted only while it serves nothing and a request never starts on an evicted one.
#[derive(Debug, Default)]
pub(crate) struct Connection {
    /// Requests being served, with [`EVICTED`] set once evicted.
    state: AtomicUsize,
    /// Its TLS handshake is under way (its first bytes are in).
    heard: AtomicBool,
    wake: Notify,
}

/// The bit of [`Connection::state`] that says it was evicted.
const EVICTED: usize = 1 << (usize::BITS - 1);

impl Connection {
    /// A request is being served until the returned guard is dropped; `None` if the
    /// connection has been evicted (the request must not start).
    pub(crate) fn serving(self: &Arc<Self>) -> Option<Serving> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & EVICTED != 0 {
                return None;
            }
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Serving(Arc::clone(self))),
                Err(now) => state = now,
            }
        }
    }

    /// Its TLS handshake is under way: the client's first bytes are in.
    pub(crate) fn heard(&self) {
        self.heard.store(true, Ordering::Release);
    }

    /// Returns once the connection has been evicted.
    pub(crate) async fn evicted(&self) {
        loop {
            let notified = self.wake.notified();
            if self.is_evicted() {
                return;
            }
            notified.await;
        }
    }

    fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) & EVICTED != 0
    }

    /// Evicts it if it serves nothing now; whether it did.
    fn try_evict(&self) -> bool {
        let evicted = self
            .state
            .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if evicted {
            self.wake.notify_waiters();
        }
        evicted
    }

    fn is_serving(&self) -> bool {
        self.state.load(Ordering::Acquire) & !EVICTED > 0
    }
}

/// A request being served (see [`Connection::serving`]).
#[derive(Debug)]
pub(crate) struct Serving(Arc<Connection>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.state.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Entry {
    id: u64,
    ip: IpAddr,
    opened: Instant,
    conn: Arc<Connection>,
}

/// The places; see the module documentation. Cloning shares them.
#[derive(Debug, Clone)]
pub(crate) struct Places {
    limits: Limits,
    inner: Arc<Mutex<(Vec<Entry>, u64)>>,
}

/// A connection's place, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    places: Places,
    id: u64,
    /// The connection's state.
    pub(crate) conn: Arc<Connection>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut inner = self.places.lock();
        inner.0.retain(|e| e.id != self.id);
    }
}

impl Places {
    /// No places taken.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Entry>, u64)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `ip` at `now`, evicting another if need be (see
    /// the module documentation), or `None` if every candidate is serving a request.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Option<Place> {
        let mut inner = self.lock();
        let (entries, next) = &mut *inner;
        let from_ip = entries.iter().filter(|e| e.ip == ip).count();
        let victim_from = if from_ip >= self.limits.per_ip {
            Some(Some(ip))
        } else if entries.len() >= self.limits.total {
            Some(None)
        } else {
            None
        };
        if let Some(from) = victim_from {
            // Silent ones first, then handshakes past their grace; the oldest first in
            // each; one that has just begun serving is passed over.
            let young = |e: &Entry| now.saturating_duration_since(e.opened) <= self.limits.grace;
            let mut candidates: Vec<&Entry> = entries
                .iter()
                .filter(|e| from.is_none_or(|ip| e.ip == ip) && !e.conn.is_serving())
                .filter(|e| !e.conn.heard.load(Ordering::Acquire) || !young(e))
                .collect();
            candidates.sort_by_key(|e| (e.conn.heard.load(Ordering::Acquire), e.opened));
            let victim = candidates.into_iter().find(|e| e.conn.try_evict())?.id;
            entries.retain(|e| e.id != victim);
        }
        *next += 1;
        let conn = Arc::new(Connection::default());
        entries.push(Entry {
            id: *next,
            ip,
            opened: now,
            conn: Arc::clone(&conn),
        });
        Some(Place {
            places: self.clone(),
            id: *next,
            conn,
        })
    }

    /// Places taken.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: Limits = Limits {
        total: 4,
        per_ip: 3,
        grace: Duration::from_millis(250),
    };

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// A newcomer from an address at its bound takes the place of that address's
    /// oldest connection that is not serving a request; never another address's.
    #[test]
    fn the_oldest_idle_connection_of_the_same_address_makes_room() {
        let places = Places::new(LIMITS);
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let first = places.admit(ip(1), t0).unwrap();
        let busy = places.admit(ip(1), t0 + ms).unwrap();
        let _serving = busy.conn.serving().unwrap();
        let third = places.admit(ip(1), t0 + 2 * ms).unwrap();
        let other = places.admit(ip(2), t0).unwrap();
        let newcomer = places.admit(ip(1), t0 + 3 * ms).unwrap();
        assert!(first.conn.is_evicted(), "the oldest idle one");
        assert!(!busy.conn.is_evicted(), "it is serving a request");
        assert!(!other.conn.is_evicted());
        assert_eq!(places.len(), 4);
        drop(first);
        assert_eq!(
            places.len(),
            4,
            "its place was given to the newcomer already"
        );
        drop((third, newcomer, other));
        assert_eq!(places.len(), 1);
    }

    /// When every candidate is serving a request, the newcomer is refused; once one is
    /// done, it may be evicted.
    #[test]
    fn a_newcomer_is_refused_only_when_every_place_is_serving() {
        let places = Places::new(LIMITS);
        let t0 = Instant::now();
        let held: Vec<Place> = (0..4).map(|n| places.admit(ip(n), t0).unwrap()).collect();
        let serving: Vec<Serving> = held.iter().map(|p| p.conn.serving().unwrap()).collect();
        assert!(places.admit(ip(9), t0).is_none());
        drop(serving);
        assert!(places.admit(ip(9), t0).is_some());
        assert!(held[0].conn.is_evicted());
        assert!(
            held[0].conn.serving().is_none(),
            "no request starts on an evicted connection"
        );
    }

    /// A TLS handshake under way keeps its place for its grace: silent connections go
    /// first, and while every candidate is such a young handshake, the newcomer is
    /// refused; past the grace, the oldest goes.
    #[test]
    fn a_young_handshake_under_way_is_kept() {
        let places = Places::new(LIMITS);
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let shaking = places.admit(ip(1), t0).unwrap();
        shaking.conn.heard();
        let silent = places.admit(ip(1), t0 + ms).unwrap();
        let _third = places.admit(ip(1), t0 + 2 * ms).unwrap();
        let _newcomer = places.admit(ip(1), t0 + 3 * ms).unwrap();
        assert!(silent.conn.is_evicted(), "the silent one went first");
        assert!(!shaking.conn.is_evicted());

        let places = Places::new(LIMITS);
        let held: Vec<Place> = (0..3).map(|_| places.admit(ip(1), t0).unwrap()).collect();
        for place in &held {
            place.conn.heard();
        }
        assert!(
            places.admit(ip(1), t0 + 10 * ms).is_none(),
            "every one is young"
        );
        let later = t0 + LIMITS.grace + ms;
        assert!(places.admit(ip(1), later).is_some());
        assert!(held[0].conn.is_evicted());
    }

    #[tokio::test]
    async fn an_evicted_connection_hears_of_it() {
        let places = Places::new(Limits {
            total: 1,
            per_ip: 1,
            grace: Duration::ZERO,
        });
        let first = places.admit(ip(1), Instant::now()).unwrap();
        let conn = Arc::clone(&first.conn);
        let waiting = tokio::spawn(async move { conn.evicted().await });
        let _second = places.admit(ip(1), Instant::now()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the evicted connection did not hear of it")
            .unwrap();
    }
}
