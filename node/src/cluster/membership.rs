//! The cluster as this node sees it: every peer it knows of, how to dial it, whether it
//! is reachable right now, since when, and when it was last heard from.
//!
//! The [`mesh`](super::mesh) writes it (through its [`detector`](super::detector):
//! sessions opening and closing, heartbeats going silent, gossip; and its heartbeat
//! tasks, as the answers arrive); the [`agent`](super::agent) records the heartbeats
//! and leave notices peers send; collections read it to
//! say which nodes they cover. It is plain data behind a mutex that outlives every
//! actor of the node (a restarted mesh finds it as it was), and every rule here is
//! tested without a network.
//!
//! A peer is in one of four states:
//! - `Pending`: known (a seed's gossip named it) but no session has been up yet;
//! - `Up`: a session is up and heartbeats arrive;
//! - `Unreachable`: it was up, then its session closed or it went silent;
//! - `Left`: it said it was leaving, for a while or for good, and what its counters held
//!   as it left. It is hidden from everything but the collections' list of departed
//!   members, and kept, so that stale gossip cannot bring it back (only a new session
//!   can) and what it took with it is never forgotten.
//!
//! A peer that stays pending or unreachable for [`FORGET_AFTER`] is forgotten, so a
//! node that is gone without a word stops making every collection incomplete.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shared::agent::{Beat, Departure, NodeInfo, PeerAddr, View};
use shared::protocol::Role;
use tokio::time::Instant;

use crate::clock::unix_millis as now_ms;

/// How long a peer may stay pending or unreachable before it is forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Whether a peer can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerStatus {
    /// Known, never connected yet.
    Pending,
    /// Connected and heard from.
    Up,
    /// Was connected; lost.
    Unreachable,
    /// Left cleanly (hidden).
    Left,
}

/// One peer as the rest of the node reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerView {
    /// Node name.
    pub(crate) name: String,
    /// `host:port` to dial.
    pub(crate) addr: String,
    /// Reachability.
    pub(crate) status: PeerStatus,
    /// When `status` last changed, milliseconds since the Unix epoch.
    pub(crate) since_ms: u64,
    /// Its role, once it has described itself.
    pub(crate) role: Option<Role>,
    /// How many counters it hosts, once it has described itself.
    pub(crate) counters: Option<u32>,
    /// The peers it said it sees up, the last time it described itself (shared: the
    /// table is copied at every step of the detector).
    pub(crate) sees_up: Option<Arc<Vec<String>>>,
    /// The round trip of the last exchange with its agent (a gossip round).
    pub(crate) round_trip: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Peer {
    addr: String,
    /// Whether `addr` came from the peer itself (its session, or its own description):
    /// gossip from others never replaces such an address.
    addr_own: bool,
    status: PeerStatus,
    since_ms: u64,
    changed: Instant,
    last_heard: Instant,
    incarnation: Option<u64>,
    /// The run that said it was leaving, while `Left`.
    left_incarnation: Option<u64>,
    /// What it said it took with it, while `Left`.
    departure: Option<Departure>,
    role: Option<Role>,
    counters: Option<u32>,
    sees_up: Option<Arc<Vec<String>>>,
    round_trip: Option<Duration>,
    /// Addresses other members' gossip gives for it while it is not up and its own
    /// address differs, one per member that told: see [`Membership::tell`].
    told: BTreeMap<String, String>,
}

/// What [`Membership::learn_from`] changes.
#[derive(Debug, Clone, Copy)]
enum Learned {
    /// A peer that left is back (a later run of it).
    Back,
    /// The peer itself confirmed the address it had.
    Own,
    /// The peer is at another address.
    Moved,
    /// A peer not known before.
    New,
}

/// What recording a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// From a peer that is up: its deadline moves on.
    Alive,
    /// From a peer that is up under a new incarnation: it restarted.
    Restarted,
    /// From a peer that is not up (yet): ignored until its session is ready.
    Ignored,
}

/// One membership event, for the dashboard.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct MemberEvent {
    /// When, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// The member.
    pub(crate) peer: String,
    /// `joined`, `unreachable`, `back`, `left` or `restarted`.
    pub(crate) kind: &'static str,
}

/// Membership events kept (the oldest go first).
pub(crate) const EVENTS_KEPT: usize = 64;

/// The peers by name. A copy ([`Membership::detached`]) shares the map and every peer
/// until one side changes: the change copies the map's nodes (its keys and peers are
/// reference counts) and the one peer it touches, so the failure detector's copy at
/// every step costs next to nothing however many members there are.
type Table = BTreeMap<Arc<str>, Arc<Peer>>;

/// The shared membership table. Cloning shares it.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    peers: Arc<Mutex<Arc<Table>>>,
    /// The latest membership events, oldest first.
    events: Arc<Mutex<std::collections::VecDeque<MemberEvent>>>,
    /// When this node started (ms since the Unix epoch): its own "since".
    started_ms: u64,
}

impl Default for Membership {
    fn default() -> Self {
        Self {
            peers: Arc::default(),
            events: Arc::default(),
            started_ms: now_ms(),
        }
    }
}

/// A change to the membership table, as the failure detector decides it (see
/// [`super::detector::Action::Member`]); the mesh applies it with
/// [`Membership::apply`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MemberChange {
    /// Gossip named `name` at `addr` (run `incarnation`, if known): see
    /// [`Membership::learn`].
    Learn {
        /// The peer.
        name: String,
        /// Its address.
        addr: String,
        /// Its run, if known.
        incarnation: Option<u64>,
    },
    /// Member `teller`'s gossip gives `name`, not up, the address `addr`: see
    /// [`Membership::tell`].
    Told {
        /// The peer.
        name: String,
        /// The address gossip gives.
        addr: String,
        /// Who said so.
        teller: String,
    },
    /// A peer answered gossip: see [`Membership::viewed`].
    Viewed {
        /// What it said of itself.
        view: Box<View>,
        /// The members it sees up.
        sees: Vec<String>,
    },
    /// A session to `name` at `addr` is ready: see [`Membership::session_up`].
    SessionUp {
        /// The peer.
        name: String,
        /// The address it advertises.
        addr: String,
    },
    /// `name`'s last session closed, or it went silent: see [`Membership::lost`].
    Lost {
        /// The peer.
        name: String,
    },
    /// `name` has been pending or unreachable too long: it is forgotten.
    Forget {
        /// The peer.
        name: String,
    },
}

impl Membership {
    /// Applies `change` at `now`.
    pub(crate) fn apply(&self, change: &MemberChange, now: Instant) {
        match change {
            MemberChange::Learn {
                name,
                addr,
                incarnation,
            } => {
                self.learn(name, addr, *incarnation, now);
            }
            MemberChange::Told { name, addr, teller } => {
                self.tell(name, addr, teller);
            }
            MemberChange::Viewed { view, sees } => self.viewed(view, sees.clone(), now),
            MemberChange::SessionUp { name, addr } => {
                self.session_up(name, addr, now);
            }
            MemberChange::Lost { name } => {
                self.lost(name, now);
            }
            MemberChange::Forget { name } => {
                self.change(|peers| peers.remove(name.as_str()));
            }
        }
    }

    /// A copy of the table that no change to either affects (and keeps no events):
    /// what the failure detector works on within one step. It shares the table until
    /// one of them changes ([`Table`]).
    pub(crate) fn detached(&self) -> Membership {
        Membership {
            peers: Arc::new(Mutex::new(Arc::clone(&self.lock()))),
            events: Arc::default(),
            started_ms: self.started_ms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Table>> {
        // A panic while holding the lock cannot leave the map half-updated in a way
        // that matters: every method changes one entry.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the table to change it (a copy of its own if a detached copy shares
    /// it).
    fn change<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        f(Arc::make_mut(&mut self.lock()))
    }

    /// Records that `name` (run `incarnation`, if known) can be dialed at `addr`, as
    /// another peer's gossip says. A new peer starts pending; so does a peer that left,
    /// if this is a later run of it (it came back). An address the peer gave itself is
    /// never replaced by another's word (see [`Membership::tell`] for what such a word
    /// does). True if that is news.
    pub(crate) fn learn(
        &self,
        name: &str,
        addr: &str,
        incarnation: Option<u64>,
        now: Instant,
    ) -> bool {
        self.learn_from(name, addr, incarnation, now, false)
    }

    /// [`Membership::learn`], from the peer itself (`own`) or from another.
    fn learn_from(
        &self,
        name: &str,
        addr: &str,
        incarnation: Option<u64>,
        now: Instant,
        own: bool,
    ) -> bool {
        let mut guard = self.lock();
        // What to do, decided on the table as it is: most words change nothing, and
        // only a change copies what a detached table shares.
        let change = match guard.get(name) {
            Some(peer) if peer.status == PeerStatus::Left => incarnation
                .is_some_and(|run| peer.left_incarnation.is_none_or(|gone| run > gone))
                .then_some(Learned::Back),
            Some(peer) if peer.addr == addr => (own && !peer.addr_own).then_some(Learned::Own),
            Some(peer) if peer.addr_own && !own => None,
            Some(_) => Some(Learned::Moved),
            None => Some(Learned::New),
        };
        let Some(change) = change else {
            return false;
        };
        let peers = Arc::make_mut(&mut guard);
        match (change, peers.get_mut(name).map(Arc::make_mut)) {
            (Learned::Back, Some(peer)) => {
                peer.addr = addr.to_string();
                peer.addr_own = own;
                peer.incarnation = incarnation;
                peer.left_incarnation = None;
                peer.departure = None;
                set_status(peer, PeerStatus::Pending, now);
                true
            }
            (Learned::Own, Some(peer)) => {
                peer.addr_own = true;
                false
            }
            (Learned::Moved, Some(peer)) => {
                peer.addr = addr.to_string();
                peer.addr_own = own;
                true
            }
            (Learned::New, _) | (_, None) => {
                peers.insert(
                    Arc::from(name),
                    Arc::new(Peer {
                        addr: addr.to_string(),
                        addr_own: own,
                        status: PeerStatus::Pending,
                        since_ms: now_ms(),
                        changed: now,
                        last_heard: now,
                        incarnation: incarnation.filter(|&run| run != 0),
                        left_incarnation: None,
                        departure: None,
                        role: None,
                        counters: None,
                        sees_up: None,
                        round_trip: None,
                        told: BTreeMap::new(),
                    }),
                );
                true
            }
        }
    }

    /// Records what a peer said about itself (its agent's `GetInfo`, or its part of a
    /// collection). The caller checks that it came from that peer ([`crate::cluster::policy::of_itself`]).
    pub(crate) fn describe(&self, info: &NodeInfo, now: Instant) {
        let sees = info.known_peers.iter().map(|p| p.name.clone()).collect();
        let node = PeerAddr {
            name: info.name.clone(),
            addr: info.advertise.clone(),
            incarnation: info.incarnation,
        };
        self.described(&node, info.role, info.counters, sees, now);
    }

    /// Records what a peer's answer to gossip said about itself, and that it sees
    /// `sees` up (what it listed, or, when its digest matched this node's, what this
    /// node sees). The caller checks that it came from that peer.
    pub(crate) fn viewed(&self, view: &View, sees: Vec<String>, now: Instant) {
        self.described(&view.node, view.role, view.counters, sees, now);
    }

    fn described(
        &self,
        node: &PeerAddr,
        role: Role,
        counters: u32,
        sees: Vec<String>,
        now: Instant,
    ) {
        self.learn_from(&node.name, &node.addr, Some(node.incarnation), now, true);
        self.change(|peers| {
            if let Some(peer) = peer_mut(peers, &node.name) {
                peer.role = Some(role);
                peer.counters = Some(counters);
                peer.sees_up = Some(Arc::new(sees));
            }
        });
    }

    /// When `name` was last heard from (a heartbeat either way, or its session coming
    /// up), if it is up.
    pub(crate) fn last_heard(&self, name: &str) -> Option<Instant> {
        let peers = self.lock();
        let peer = peers.get(name).filter(|p| p.status == PeerStatus::Up)?;
        Some(peer.last_heard)
    }

    /// A digest of the members this node (`me`, at `addr`) sees up, itself included:
    /// their names and addresses, sorted. Two nodes with the same digest see the same
    /// cluster. (The std hasher is the same within one build; nodes of two builds at
    /// worst send each other whole views.)
    pub(crate) fn digest(&self, me: &str, addr: &str) -> u64 {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let peers = self.lock();
        let mut hasher = DefaultHasher::new();
        // As a sorted `Vec` of the pairs hashes (its length, then each pair), so nodes
        // that built the digest from such a `Vec` agree; the table is in name order
        // already, and this node goes in its place.
        let up = peers
            .values()
            .filter(|p| p.status == PeerStatus::Up)
            .count();
        hasher.write_usize(up + 1);
        let mut me_hashed = false;
        for (name, peer) in peers.iter().filter(|(_, p)| p.status == PeerStatus::Up) {
            if !me_hashed && me < &**name {
                (me, addr).hash(&mut hasher);
                me_hashed = true;
            }
            (&**name, peer.addr.as_str()).hash(&mut hasher);
        }
        if !me_hashed {
            (me, addr).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The last exchange with `name`'s agent took `round_trip`.
    pub(crate) fn round_trip(&self, name: &str, round_trip: Duration) {
        self.change(|peers| {
            if let Some(peer) = peer_mut(peers, name) {
                peer.round_trip = Some(round_trip);
            }
        });
    }

    /// Member `teller` says `name` can be dialed at `addr`, where `name` gave itself
    /// another address and is not up: a node restarted elsewhere under its name (a
    /// replacement container, a rescheduled pod) is found there. The word is kept
    /// beside the peer's own address, one per member that tells, and both are dialed
    /// ([`Membership::told`]); it never replaces the peer's own, so a member that lies
    /// can add a dial but not cut a link. A session to the peer, wherever it comes up,
    /// clears it. True if that is news.
    pub(crate) fn tell(&self, name: &str, addr: &str, teller: &str) -> bool {
        let mut guard = self.lock();
        let news = guard.get(name).is_some_and(|peer| {
            peer.status != PeerStatus::Up
                && peer.addr_own
                && peer.addr != addr
                && peer.told.get(teller).map(String::as_str) != Some(addr)
        });
        if news {
            if let Some(peer) = peer_mut(Arc::make_mut(&mut guard), name) {
                peer.told.insert(teller.to_string(), addr.to_string());
            }
        }
        news
    }

    /// The addresses others' gossip gives `name` beside its own (see
    /// [`Membership::tell`]), each once.
    pub(crate) fn told(&self, name: &str) -> Vec<String> {
        let peers = self.lock();
        let mut told: Vec<String> = peers
            .get(name)
            .map(|peer| peer.told.values().cloned().collect())
            .unwrap_or_default();
        told.sort();
        told.dedup();
        told
    }

    /// A session to `name` is ready: the peer is up, and its heartbeat deadline starts
    /// now. Returns the previous status if this is a change.
    pub(crate) fn session_up(&self, name: &str, addr: &str, now: Instant) -> Option<PeerStatus> {
        self.learn_from(name, addr, None, now, true);
        self.change(|peers| {
            let peer = peer_mut(peers, name)?;
            peer.last_heard = now;
            peer.told.clear();
            peer.departure = None;
            (peer.status != PeerStatus::Up).then(|| set_status(peer, PeerStatus::Up, now))
        })
    }

    /// A heartbeat from `name` (incarnation `incarnation`) arrived.
    pub(crate) fn heard(&self, name: &str, incarnation: u64, now: Instant) -> Heard {
        self.change(|peers| {
            let Some(peer) = peers.get_mut(name) else {
                return Heard::Ignored;
            };
            if peer.status != PeerStatus::Up {
                return Heard::Ignored;
            }
            let peer = Arc::make_mut(peer);
            peer.last_heard = now;
            match peer.incarnation.replace(incarnation) {
                Some(old) if old != incarnation => Heard::Restarted,
                _ => Heard::Alive,
            }
        })
    }

    /// A heartbeat `beat` arrived (a watcher's, or a watched member's answer): records
    /// it, and a restart it reveals as an event and a log line.
    pub(crate) fn beat(&self, beat: &Beat, now: Instant) {
        if self.heard(&beat.from, beat.incarnation, now) == Heard::Restarted {
            self.event(&beat.from, "restarted");
            tracing::info!(peer = %beat.from, "peer restarted (new incarnation)");
        }
    }

    /// `name` is lost (its session closed, or it went silent). True if it was up.
    pub(crate) fn lost(&self, name: &str, now: Instant) -> bool {
        self.change(|peers| match peers.get_mut(name) {
            Some(peer) if peer.status == PeerStatus::Up => {
                set_status(Arc::make_mut(peer), PeerStatus::Unreachable, now);
                true
            }
            _ => false,
        })
    }

    /// Watched peers that are up and have not been heard from for longer than
    /// `silence`, marked unreachable; with how long each was silent. `watched` gives
    /// each watched peer with when it began to be watched: its silence counts from
    /// then at the earliest.
    pub(crate) fn expire_silent(
        &self,
        watched: &HashMap<String, Instant>,
        silence: Duration,
        now: Instant,
    ) -> Vec<(PeerView, Duration)> {
        let mut guard = self.lock();
        // Found on the table as it is: only an expiry copies what a detached table shares.
        let due: Vec<(&String, Duration)> = watched
            .iter()
            .filter_map(|(name, since)| {
                let peer = guard.get(name.as_str())?;
                let quiet = now.saturating_duration_since(peer.last_heard.max(*since));
                (peer.status == PeerStatus::Up && quiet > silence).then_some((name, quiet))
            })
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let peers = Arc::make_mut(&mut guard);
        due.into_iter()
            .filter_map(|(name, quiet)| {
                let peer = peer_mut(peers, name)?;
                set_status(peer, PeerStatus::Unreachable, now);
                Some((view(name, peer), quiet))
            })
            .collect()
    }

    /// Run `incarnation` of `name` left the cluster cleanly: hide it (until a later run
    /// of it is heard of). True if it was known and not left.
    pub(crate) fn left(
        &self,
        name: &str,
        incarnation: u64,
        departure: Departure,
        now: Instant,
    ) -> bool {
        self.change(|peers| match peers.get_mut(name).map(Arc::make_mut) {
            Some(peer) if peer.status != PeerStatus::Left => {
                set_status(peer, PeerStatus::Left, now);
                peer.left_incarnation = Some(incarnation);
                peer.departure = Some(departure);
                true
            }
            // A later run left too (it came back and left before a session here): what
            // it took is what counts now.
            Some(peer) if peer.left_incarnation.is_some_and(|run| incarnation > run) => {
                peer.left_incarnation = Some(incarnation);
                peer.departure = Some(departure);
                peer.since_ms = now_ms();
                false
            }
            _ => false,
        })
    }

    /// The members that left, each with when (ms since the Unix epoch) and what it took
    /// with it, sorted by name.
    pub(crate) fn departed(&self) -> Vec<(String, u64, Departure)> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.status == PeerStatus::Left)
            .filter_map(|(name, p)| Some((name.to_string(), p.since_ms, p.departure?)))
            .collect()
    }

    /// Forgets peers that have been pending or unreachable for longer than `after`.
    pub(crate) fn forget_stale(&self, after: Duration, now: Instant) -> Vec<String> {
        let mut guard = self.lock();
        let stale: Vec<String> = guard
            .iter()
            .filter(|(_, p)| {
                matches!(p.status, PeerStatus::Pending | PeerStatus::Unreachable)
                    && now.saturating_duration_since(p.changed) > after
            })
            .map(|(name, _)| name.to_string())
            .collect();
        if !stale.is_empty() {
            let peers = Arc::make_mut(&mut guard);
            for name in &stale {
                peers.remove(name.as_str());
            }
        }
        stale
    }

    /// Records that `kind` happened to `peer` (see [`MemberEvent`]).
    pub(crate) fn event(&self, peer: &str, kind: &'static str) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(MemberEvent {
            at_ms: now_ms(),
            peer: peer.to_string(),
            kind,
        });
    }

    /// The latest membership events, oldest first.
    pub(crate) fn events(&self) -> Vec<MemberEvent> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().cloned().collect()
    }

    /// When this node started, in milliseconds since the Unix epoch.
    pub(crate) fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// The status of `name`, if known.
    #[cfg(test)]
    pub(crate) fn status(&self, name: &str) -> Option<PeerStatus> {
        self.lock().get(name).map(|p| p.status)
    }

    /// The address `name` is dialed at, if known.
    pub(crate) fn addr(&self, name: &str) -> Option<String> {
        self.lock().get(name).map(|p| p.addr.clone())
    }

    /// Every known peer that has not left, sorted by name.
    pub(crate) fn snapshot(&self) -> Vec<PeerView> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.status != PeerStatus::Left)
            .map(|(n, p)| view(n, p))
            .collect()
    }

    /// The next `k` peers up after `me` on the ring of names (`me` and every peer up,
    /// in name order, the last followed by the first), `me` left out.
    pub(crate) fn up_after(&self, me: &str, k: usize) -> Vec<String> {
        let peers = self.lock();
        let after = peers.range::<str, _>((Bound::Excluded(me), Bound::Unbounded));
        let before = peers.range::<str, _>((Bound::Unbounded, Bound::Excluded(me)));
        after
            .chain(before)
            .filter(|(_, p)| p.status == PeerStatus::Up)
            .take(k)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The peers whose names sort after `me` that are pending or unreachable, each with
    /// its address: those this node dials.
    pub(crate) fn down_after(&self, me: &str) -> Vec<(String, String)> {
        self.lock()
            .range::<str, _>((Bound::Excluded(me), Bound::Unbounded))
            .filter(|(_, p)| matches!(p.status, PeerStatus::Pending | PeerStatus::Unreachable))
            .map(|(name, p)| (name.to_string(), p.addr.clone()))
            .collect()
    }

    /// The names of the peers that are up, sorted.
    pub(crate) fn up_names(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.status == PeerStatus::Up)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The peers worth telling others about: those that are up.
    pub(crate) fn gossip(&self) -> Vec<PeerAddr> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.status == PeerStatus::Up)
            .map(|(name, p)| PeerAddr {
                name: name.to_string(),
                addr: p.addr.clone(),
                incarnation: p.incarnation.unwrap_or(0),
            })
            .collect()
    }
}

/// `name`'s entry to change (a copy of its own if a detached table shares it).
fn peer_mut<'a>(peers: &'a mut Table, name: &str) -> Option<&'a mut Peer> {
    peers.get_mut(name).map(Arc::make_mut)
}

fn set_status(peer: &mut Peer, status: PeerStatus, now: Instant) -> PeerStatus {
    let old = std::mem::replace(&mut peer.status, status);
    peer.since_ms = now_ms();
    peer.changed = now;
    old
}

fn view(name: &str, peer: &Peer) -> PeerView {
    PeerView {
        name: name.to_string(),
        addr: peer.addr.clone(),
        status: peer.status,
        since_ms: peer.since_ms,
        role: peer.role,
        counters: peer.counters,
        sees_up: peer.sees_up.clone(),
        round_trip: peer.round_trip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// The ring: the members up after a node, in name order, wrapping round, never the
    /// node itself nor a member that is not up; those this node dials: the members
    /// after it that are not up.
    #[test]
    fn the_ring_gives_each_node_the_members_after_it() {
        let t0 = Instant::now();
        let m = Membership::default();
        for name in ["a", "b", "d", "e", "f", "g"] {
            m.session_up(name, &format!("{name}:1"), t0);
        }
        m.learn("c", "c:1", None, t0);
        m.lost("g", t0);
        assert_eq!(m.up_after("c", 3), ["d", "e", "f"]);
        assert_eq!(m.up_after("e", 3), ["f", "a", "b"]);
        assert_eq!(m.up_after("f", 3), ["a", "b", "d"]);
        assert_eq!(m.up_after("a", 3), ["b", "d", "e"], "not itself");
        assert_eq!(m.up_after("a", 9), ["b", "d", "e", "f"]);
        assert!(Membership::default().up_after("a", 3).is_empty());
        let down = |me| {
            m.down_after(me)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(down("a"), ["c", "g"]);
        assert_eq!(down("d"), ["g"]);
        assert!(down("g").is_empty());
        assert_eq!(
            m.down_after("b"),
            [("c".into(), "c:1".into()), ("g".into(), "g:1".into())]
        );
    }

    #[test]
    fn a_peer_goes_pending_up_unreachable_up() {
        let m = Membership::default();
        let t0 = Instant::now();
        assert!(m.learn("b", "h:2", None, t0));
        assert!(!m.learn("b", "h:2", None, t0));
        assert_eq!(m.status("b"), Some(PeerStatus::Pending));
        // Heartbeats before the session is ready do not count.
        assert_eq!(m.heard("b", 7, t0), Heard::Ignored);
        assert_eq!(m.session_up("b", "h:2", t0), Some(PeerStatus::Pending));
        assert_eq!(m.session_up("b", "h:2", t0), None);
        assert_eq!(m.heard("b", 7, t0 + S), Heard::Alive);
        assert!(m.lost("b", t0 + 2 * S));
        assert!(!m.lost("b", t0 + 2 * S), "reported once");
        assert_eq!(m.status("b"), Some(PeerStatus::Unreachable));
        assert_eq!(
            m.session_up("b", "h:2", t0 + 3 * S),
            Some(PeerStatus::Unreachable)
        );
        assert_eq!(m.heard("b", 8, t0 + 3 * S), Heard::Restarted);
    }

    /// Silence expires a watched peer that is up, once, counted from when it was last
    /// heard or began to be watched, whichever is later; a peer not watched is left
    /// alone however long it has been quiet.
    #[test]
    fn silence_expires_only_watched_up_peers_once() {
        let m = Membership::default();
        let t0 = Instant::now();
        for (name, addr) in [("a", "h:1"), ("b", "h:2"), ("d", "h:4"), ("e", "h:5")] {
            m.session_up(name, addr, t0);
        }
        m.learn("c", "h:3", None, t0);
        m.heard("b", 1, t0 + S);
        let watched: HashMap<String, Instant> = [("a", t0), ("b", t0), ("c", t0), ("d", t0 + S)]
            .into_iter()
            .map(|(name, since)| (name.to_string(), since))
            .collect();
        let silence = Duration::from_millis(1500);
        let expired = m.expire_silent(&watched, silence, t0 + 2 * S);
        let names: Vec<_> = expired.iter().map(|(v, _)| v.name.as_str()).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(expired[0].1, 2 * S);
        assert!(m.expire_silent(&watched, silence, t0 + 2 * S).is_empty());
        assert_eq!(m.status("b"), Some(PeerStatus::Up));
        assert_eq!(m.status("c"), Some(PeerStatus::Pending));
        assert_eq!(m.status("d"), Some(PeerStatus::Up), "watched for 1 s only");
        assert_eq!(m.status("e"), Some(PeerStatus::Up), "not watched");
        assert_eq!(m.last_heard("b"), Some(t0 + S));
        assert_eq!(m.last_heard("a"), None, "not up");
    }

    /// Nodes that see the same members up, each counting itself, share a digest; a
    /// member more, a member down or at another address changes it.
    #[test]
    fn the_digest_is_of_the_members_up_whoever_counts_them() {
        let t0 = Instant::now();
        let from_a = Membership::default();
        from_a.session_up("b", "h:2", t0);
        from_a.session_up("c", "h:3", t0);
        let from_b = Membership::default();
        from_b.session_up("c", "h:3", t0);
        from_b.session_up("a", "h:1", t0);
        let digest = from_a.digest("a", "h:1");
        assert_eq!(digest, from_b.digest("b", "h:2"));
        from_b.learn("d", "h:4", None, t0);
        assert_eq!(
            digest,
            from_b.digest("b", "h:2"),
            "a pending peer is not up"
        );
        from_b.session_up("d", "h:4", t0);
        assert_ne!(digest, from_b.digest("b", "h:2"));
        from_a.lost("c", t0);
        assert_ne!(digest, from_a.digest("a", "h:1"));
        assert_ne!(digest, from_b.digest("b", "h:9"));
        // The same as the hash of the sorted pairs in a `Vec`, wherever this node sorts.
        use std::hash::{DefaultHasher, Hash, Hasher};
        let of_vec = |pairs: &[(&str, &str)]| {
            let mut hasher = DefaultHasher::new();
            pairs.to_vec().hash(&mut hasher);
            hasher.finish()
        };
        assert_eq!(digest, of_vec(&[("a", "h:1"), ("b", "h:2"), ("c", "h:3")]));
        let up = [("a", "h:1"), ("b", "h:2"), ("c", "h:3"), ("d", "h:4")];
        assert_eq!(from_b.digest("b", "h:2"), of_vec(&up));
        let last = [("a", "h:1"), ("c", "h:3"), ("d", "h:4"), ("e", "h:5")];
        assert_eq!(from_b.digest("e", "h:5"), of_vec(&last));
    }

    fn departure(value: i128) -> Departure {
        Departure {
            for_good: false,
            counters: 2,
            known: true,
            value,
            operations: 1,
            issued_value: 0,
            issued_operations: 0,
            in_flight_operations: 0,
            store_id: 0,
        }
    }

    /// A peer that leaves is hidden, and listed as departed with what it took, until a
    /// later run of it comes back; a peer that stays pending is forgotten, one that left
    /// never is.
    #[test]
    fn a_peer_that_left_is_kept_with_what_it_took_until_it_comes_back() {
        let m = Membership::default();
        let t0 = Instant::now();
        m.session_up("a", "h:1", t0);
        m.learn("b", "h:2", None, t0);
        m.session_up("c", "h:3", t0);
        assert!(m.left("c", 1, departure(5), t0));
        assert!(!m.left("c", 1, departure(6), t0));
        let departed = m.departed();
        assert_eq!(departed.len(), 1);
        assert_eq!((departed[0].0.as_str(), departed[0].2), ("c", departure(5)));
        // Gossip about the run that left (or an unknown run) does not bring it back...
        assert!(!m.learn("c", "h:9", None, t0));
        assert!(!m.learn("c", "h:9", Some(1), t0));
        let names: Vec<_> = m.snapshot().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a", "b"]);
        // ...a later run does, at its new address, to be dialed again.
        assert!(m.learn("c", "h:9", Some(2), t0));
        assert_eq!(m.status("c"), Some(PeerStatus::Pending));
        let c = m.snapshot().into_iter().find(|p| p.name == "c").unwrap();
        assert_eq!(c.addr, "h:9");
        assert!(m.departed().is_empty(), "back: no longer departed");
        // A session brings it back too.
        m.left("c", 2, departure(7), t0);
        m.session_up("c", "h:3", t0);
        assert_eq!(m.status("c"), Some(PeerStatus::Up));
        assert!(m.departed().is_empty());
        m.left("c", 3, departure(8), t0);
        assert_eq!(m.forget_stale(10 * S, t0 + 11 * S), ["b"]);
        let names: Vec<_> = m.snapshot().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(
            m.departed()[0].2,
            departure(8),
            "what left is never forgotten"
        );
    }

    /// Another peer's gossip never replaces the address a peer gave itself, but gives
    /// one where only gossip had.
    #[test]
    fn gossip_never_moves_a_peer_from_its_own_address() {
        let m = Membership::default();
        let t0 = Instant::now();
        m.session_up("a", "h:1", t0);
        assert!(!m.learn("a", "evil:1", None, t0));
        assert!(m.learn("b", "h:2", None, t0));
        assert!(m.learn("b", "h:3", None, t0), "gossip may correct gossip");
        assert_eq!(m.addr("a").as_deref(), Some("h:1"));
        assert_eq!(m.addr("b").as_deref(), Some("h:3"));
        m.session_up("b", "h:2", t0);
        assert!(!m.learn("b", "h:3", None, t0));
        assert_eq!(m.addr("b").as_deref(), Some("h:2"));
    }

    /// A node restarted elsewhere under its name (a replacement container takes the
    /// name and the data of one that died): others' word of its new address is kept
    /// beside its own while it is not up, one per teller, and cleared by a session.
    #[test]
    fn others_word_of_a_new_address_is_dialed_beside_the_peers_own() {
        let m = Membership::default();
        let t0 = Instant::now();
        m.session_up("a", "h:1", t0);
        assert!(!m.tell("a", "h:9", "b"), "told while up");
        m.lost("a", t0);
        assert!(!m.tell("a", "h:1", "b"), "its own address is no news");
        assert!(m.tell("a", "h:9", "b"));
        assert!(!m.tell("a", "h:9", "b"), "the same word twice");
        assert!(m.tell("a", "evil:1", "liar"));
        assert_eq!(m.told("a"), ["evil:1", "h:9"]);
        // A liar's word adds a dial; it never replaces the peer's own address.
        assert_eq!(m.addr("a").as_deref(), Some("h:1"));
        // A teller's newer word replaces its older one.
        assert!(m.tell("a", "h:8", "b"));
        assert_eq!(m.told("a"), ["evil:1", "h:8"]);
        // Its session, wherever it came up, is what counts.
        m.session_up("a", "h:8", t0);
        assert!(m.told("a").is_empty());
        assert_eq!(m.addr("a").as_deref(), Some("h:8"));
        // Only a peer whose address came from itself is told of: gossip's own word
        // about one that never spoke is corrected by `learn`.
        assert!(m.learn("c", "h:3", None, t0));
        assert!(!m.tell("c", "h:4", "b"));
    }

    #[test]
    fn gossip_tells_only_of_peers_that_are_up() {
        let m = Membership::default();
        let t0 = Instant::now();
        m.session_up("a", "h:1", t0);
        m.learn("b", "h:2", None, t0);
        m.session_up("c", "h:3", t0);
        m.lost("c", t0);
        let told: Vec<_> = m.gossip().into_iter().map(|p| p.name).collect();
        assert_eq!(told, ["a"]);
    }
}
