//! The mesh's decisions, as a plain type: whom to dial and when, which session to
//! close, when a peer is declared unreachable, and what is worth a log line. Time and
//! events go in through [`Detector::step`]; [`Action`]s come out, the changes to the
//! membership table among them ([`Action::Member`]): the step reads the table and
//! changes only its own copy, and the mesh applies the changes, as raft-rs's `Ready`
//! hands its caller what to persist and send. No actor, socket or clock is involved, so
//! every rule is tested on a fake clock (`t0 + n ms`).
//!
//! The rules:
//! - **Dialing.** Every seed is dialed until a session to it is up, and again whenever
//!   it is lost. The seeds are addresses; a `--join` name's addresses are found by
//!   [`seeds`](super::seeds) and come in as [`Input::Seeds`], whenever they change. A
//!   seed address is reached once a session to it is up, or one to the member a dial
//!   to it reached before (whichever of the two dialed). A deferred seed (its node
//!   dials this one: see [`seeds`](super::seeds)) is dialed only by a node that has no
//!   member at all [`DEFER_DIAL`] after the seed came: a node in the cluster leaves it
//!   to that node's dial and to gossip. A peer gossip tells of waits while a seed
//!   whose node is not known yet is being dialed, or is deferred and within its
//!   [`DEFER_DIAL`]: it may be that very node, under the host name it advertises.
//!   A known peer that is not up is dialed by whichever of the two nodes has the
//!   smaller name, so a pair never opens two sessions. Failed attempts back off
//!   from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] with ±20% jitter; a session that becomes
//!   ready resets the backoff.
//! - **Handshake deadlines.** A session that has not authenticated [`AUTH_GRACE`] after
//!   it opened is closed. For a dialed one that counts as a failed attempt.
//! - **Watching.** The members up, this node among them, form a ring in name order;
//!   each node watches the next [`WATCHED`] on it (all of them in a smaller cluster),
//!   so heartbeats per node stay the same however large the cluster grows. The ring is
//!   worked out again at every tick: a member that comes up, or is lost, moves the
//!   watch, and a peer newly watched has the whole silence from then on.
//! - **Heartbeats and silence.** Every [`TICKS_PER_BEAT`]th tick sends each watched
//!   peer a heartbeat, which it answers with its own (three fit in the silence); every
//!   tick checks the silence, so a watched peer heard from neither way for the silence
//!   is declared unreachable (in the [`Membership`]) within a tick, its sessions are
//!   closed, and every other member is told ([`Action::Suspect`]). A closed session of
//!   a member is a loss at once, unless another session to the same node is still up:
//!   every node sees that itself, watcher or not.
//! - **Confirming a suspicion.** A member told that a watcher found a peer silent
//!   does not take its word: it sends the peer a heartbeat of its own, and declares it
//!   unreachable only if no heartbeat from it arrives within [`Detector::check_window`]
//!   (a third of the silence). Nothing one member says can cut another off anywhere
//!   else. Silence, the check and its report fit in `--failure-timeout` together.
//! - **A node held itself.** A tick that comes more than a third of the silence after
//!   the one before finds that this node itself was held (a sync that stalled its only
//!   worker, a SIGSTOP, a starved host): what peers sent meanwhile may still be unread
//!   when its tick is handled, so no silence is checked for a third of the silence
//!   after it.
//! - **Gossip.** At most every [`GOSSIP_EVERY`], and never two rounds at once, this node
//!   asks [`GOSSIP_FANOUT`] members (each in turn, so every member is asked within
//!   `members / GOSSIP_FANOUT` rounds) and any member whose session just came up; a
//!   round that taught it a member it did not know is followed by the next at once. It
//!   sends the digest of the members it sees up; a member that sees the same answers
//!   without its list, so a steady cluster exchanges digests, not views. Peers gone for
//!   [`FORGET_AFTER`] are forgotten then.
//!
//! A log line is a [`Report`]: the first failure of an address and then every
//! power-of-two attempt, so a peer that stays away does not fill the log.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use ractor::ActorId;
use shared::agent::View;
use tokio::time::Instant;

use super::membership::{MemberChange, Membership, PeerStatus, PeerView, FORGET_AFTER};
use super::seeds::DEFER_DIAL;

/// How often peers are asked whom they know.
pub(crate) const GOSSIP_EVERY: Duration = Duration::from_millis(500);
/// Members asked in each gossip round (besides those whose session just came up).
pub(crate) const GOSSIP_FANOUT: usize = 3;
/// Members each node watches: the next ones on the ring of names. Each is watched by
/// as many, so a frozen member is found by the first of its watchers' ticks past the
/// silence, and a group of cut-off members is found within one silence per this many
/// of them in a row on the ring (each found one moves its watchers' watch on).
pub(crate) const WATCHED: usize = 3;
/// First retry delay after a failed dial.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay (before jitter): a peer that comes back is redialed within
/// about a second.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a session may take from TCP connect to authenticated.
pub(crate) const AUTH_GRACE: Duration = Duration::from_secs(2);

/// Heartbeats go every this many ticks. Each costs the watched members a wake-up: an
/// idle node of three took 2.8-3.4 ms/s of CPU with one every tick, 2.0-2.7 with one
/// every second tick (BENCHMARKS.md). Three still fit in the silence.
pub(crate) const TICKS_PER_BEAT: u64 = 2;

/// The tick (where silence is checked) and the silence after which a peer is declared
/// unreachable, for a given `--failure-timeout`. The silence leaves room for the
/// detection tick and for a collection to report it, all within the timeout.
pub(crate) fn detector_timing(failure_timeout: Duration) -> (Duration, Duration) {
    let interval = (failure_timeout / 10).max(Duration::from_millis(10));
    (interval, failure_timeout.mul_f64(0.6))
}

/// Who is at the other end of a ready session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionPeer {
    /// The peer's node name; `None` for a short-lived client.
    pub(crate) member: Option<String>,
    /// The socket address the session runs over (as ractor_cluster reports it).
    pub(crate) peer_addr: String,
    /// The `HOST:PORT` the peer advertises.
    pub(crate) advertised: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    /// Time passed: the heartbeat tick.
    Tick,
    /// A per-session handshake timer fired: check the handshake deadlines only.
    Deadlines,
    /// A connection opened, inbound or dialed; authentication starts.
    Opened {
        /// The session.
        session: ActorId,
        /// Its socket address, as ractor_cluster reports it.
        peer_addr: String,
        /// Whether the peer dialed us.
        inbound: bool,
    },
    /// A session authenticated (it won its duplicate-connection election, if any).
    Authenticated {
        /// The session.
        session: ActorId,
        /// The peer's node name, if the session knows it already (`None` for a client).
        member: Option<String>,
    },
    /// A session finished its handshake and synchronised its process groups.
    Ready {
        /// The session.
        session: ActorId,
        /// Who is at the other end.
        peer: SessionPeer,
    },
    /// A session ended.
    Closed {
        /// The session.
        session: ActorId,
        /// How the peer treated it, for a dialed session still in its handshake.
        refusal: HandshakeEnd,
    },
    /// A dial attempt ended: the socket address reached, or why not.
    Dialed {
        /// The address as configured or gossiped.
        addr: String,
        /// The socket address reached, or the error.
        result: Result<SocketAddr, String>,
    },
    /// Peers answered gossip (a round ended).
    Gossip(Vec<View>),
    /// Member `by` found member `name` silent and declared it unreachable.
    Suspected {
        /// The suspect.
        name: String,
        /// Its watcher, who says so.
        by: String,
    },
    /// The seed addresses now (the `--join` addresses, and every address its names
    /// resolve to), each with whether it is deferred, in place of those before.
    Seeds(Vec<(String, bool)>),
}

/// How a dialed peer ended a handshake (see `net::conn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeEnd {
    /// It said it was busy.
    Busy,
    /// It closed before it said a word (too busy to check the name in time, or not
    /// what was expected): the cookie was never tested.
    Silent,
    /// It closed after its challenge: a failed authentication.
    Rejected,
}

/// What the mesh should do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Dial this address.
    Dial(String),
    /// Close this session.
    Close {
        /// The session.
        session: ActorId,
        /// Why (ractor's stop reason).
        reason: &'static str,
    },
    /// Change the membership table so.
    Member(MemberChange),
    /// Send each of these members a heartbeat; their answers are recorded in the
    /// [`Membership`] as they arrive.
    Heartbeat(Vec<String>),
    /// Tell every other member that this one was found silent and declared unreachable.
    Suspect(String),
    /// Ask these members whom they see, then report back with [`Input::Gossip`].
    AskGossip(Vec<String>),
    /// Step again ([`Input::Deadlines`]) after this long: a check of a suspect ends.
    Wake(Duration),
    /// Log this.
    Report(Report),
}

/// Something worth a log line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    /// A peer's session is up for the first time.
    Connected {
        /// Node name.
        peer: String,
        /// Its address.
        addr: String,
    },
    /// A peer that was unreachable is up again.
    Back {
        /// Node name.
        peer: String,
        /// Its address.
        addr: String,
    },
    /// A peer's session closed.
    Lost {
        /// Node name.
        peer: String,
        /// Its address.
        addr: String,
    },
    /// A member another found silent did not answer a heartbeat from here in time:
    /// declared unreachable, its sessions closed.
    Confirmed {
        /// Node name.
        peer: String,
        /// Its address.
        addr: String,
        /// The watcher that found it silent.
        by: String,
    },
    /// A member another found silent answered a heartbeat from here: it stays up.
    Refuted {
        /// Node name.
        peer: String,
        /// The member that found it silent.
        by: String,
        /// How many of that member's words have been refuted here so far.
        times: u32,
    },
    /// A peer went silent: declared unreachable, its sessions closed.
    Silent {
        /// Node name.
        peer: String,
        /// Its address.
        addr: String,
        /// How long it had been silent.
        silent: Duration,
    },
    /// A dial failed to connect.
    CannotReach {
        /// The address.
        addr: String,
        /// Why.
        error: String,
        /// Failures in a row.
        attempts: u32,
    },
    /// A dialed peer closed the connection during authentication.
    AuthFailed {
        /// The address.
        addr: String,
        /// Failures in a row.
        attempts: u32,
    },
    /// A dialed peer refused the connection because it was busy, or closed it before a
    /// word.
    Busy {
        /// The address.
        addr: String,
        /// Failures in a row.
        attempts: u32,
    },
    /// A dialed peer accepted the connection but did not authenticate in time.
    HandshakeTimeout {
        /// The address.
        addr: String,
        /// Failures in a row.
        attempts: u32,
    },
    /// A peer not reachable for [`FORGET_AFTER`] was forgotten.
    Forgotten {
        /// Node name.
        peer: String,
    },
    /// Gossip named a peer (or a new address) not known before.
    Learned {
        /// Node name.
        peer: String,
        /// Its address.
        addr: String,
    },
}

/// Retry bookkeeping for one address.
#[derive(Debug)]
struct DialState {
    dialing: bool,
    next_attempt: Instant,
    backoff: Duration,
    failures: u32,
    /// The socket address the last dial reached (to recognise its session).
    resolved: Option<SocketAddr>,
    /// The member a session this address's dial opened turned out to be: while a
    /// session to it is up (either side's), the address is reached.
    member: Option<String>,
}

impl DialState {
    /// No attempt yet; the first one not before `first`.
    fn new(first: Instant) -> Self {
        Self {
            dialing: false,
            next_attempt: first,
            backoff: BACKOFF_MIN,
            failures: 0,
            resolved: None,
            member: None,
        }
    }
}

/// A session that opened and has not authenticated yet.
#[derive(Debug)]
struct Handshake {
    opened: Instant,
    peer_addr: String,
    inbound: bool,
    /// The peer's node name, once the session has authenticated.
    member: Option<String>,
}

/// The mesh's bookkeeping; see the module documentation.
#[derive(Debug)]
pub(crate) struct Detector {
    name: String,
    seeds: Vec<String>,
    /// Deferred seeds (their node dials this one), with when each came: for
    /// [`DEFER_DIAL`] after, its node is expected to dial this one, and may be any
    /// peer gossip tells of; after it, only a node with no member dials it.
    deferred: HashMap<String, Instant>,
    silence: Duration,
    dials: HashMap<String, DialState>,
    handshakes: HashMap<ActorId, Handshake>,
    /// Sessions that authenticated and are not ready yet (syncing their groups).
    authenticated: HashMap<ActorId, Handshake>,
    /// Ready sessions of cluster members.
    sessions: HashMap<ActorId, SessionPeer>,
    /// Peers whose last ready session closed while a session this node dialed to the
    /// same address was still coming up: by name, the address and when. The loss is
    /// declared only if that session does not become ready (see [`Detector::closed`]).
    deferred_losses: HashMap<String, (String, Instant)>,
    gossip_in_flight: bool,
    /// A peer came up during the round in flight: another round follows it at once.
    gossip_again: bool,
    last_gossip: Option<Instant>,
    /// Ticks so far (heartbeats go on every [`TICKS_PER_BEAT`]th).
    ticks: u64,
    /// When the last tick came.
    last_tick: Option<Instant>,
    /// Until when no silence is checked: this node itself was held (see the module
    /// documentation).
    held_until: Option<Instant>,
    /// The members watched (see the module documentation), each with when its watch
    /// began.
    watching: HashMap<String, Instant>,
    /// Suspects being checked: since when, and who suspected each.
    checks: HashMap<String, (Instant, String)>,
    /// Members whose session just came up: asked in the next gossip round.
    gossip_first: Vec<String>,
    /// Members still to be asked in this turn of gossip rounds.
    gossip_turn: VecDeque<String>,
    /// Whom this node saw up (itself included) when the round in flight asked: what a
    /// member whose digest matched sees.
    gossip_seen: Vec<String>,
    /// Checks each member's word failed, by the member (for the log's pace).
    refuted: HashMap<String, u32>,
    rng: fastrand::Rng,
}

impl Detector {
    /// A detector for node `name` that joins `seeds` and declares a peer unreachable
    /// after `silence`. `seed` seeds the jitter (so restarted nodes differ).
    pub(crate) fn new(name: String, seeds: Vec<String>, silence: Duration, seed: u64) -> Self {
        Self {
            name,
            seeds,
            deferred: HashMap::new(),
            silence,
            dials: HashMap::new(),
            handshakes: HashMap::new(),
            authenticated: HashMap::new(),
            sessions: HashMap::new(),
            deferred_losses: HashMap::new(),
            gossip_in_flight: false,
            gossip_again: false,
            last_gossip: None,
            ticks: 0,
            last_tick: None,
            held_until: None,
            watching: HashMap::new(),
            checks: HashMap::new(),
            gossip_first: Vec::new(),
            gossip_turn: VecDeque::new(),
            gossip_seen: Vec::new(),
            refuted: HashMap::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Takes in what happened at `now`, and says what to do, the changes to
    /// `membership` among it ([`Action::Member`], in order). `membership` itself is not
    /// changed: the step works on a copy, so what it decides later in the step sees
    /// what it changed earlier.
    pub(crate) fn step(
        &mut self,
        now: Instant,
        input: Input,
        membership: &Membership,
    ) -> Vec<Action> {
        let membership = &membership.detached();
        let mut out = Vec::new();
        match input {
            Input::Tick => self.tick(now, membership, &mut out),
            Input::Deadlines => {
                self.expire_handshakes(now, &mut out);
                if !self.held(now) {
                    self.end_checks(now, membership, &mut out);
                }
            }
            Input::Opened {
                session,
                peer_addr,
                inbound,
            } => {
                self.handshakes.insert(
                    session,
                    Handshake {
                        opened: now,
                        peer_addr,
                        inbound,
                        member: None,
                    },
                );
            }
            Input::Authenticated { session, member } => {
                if let Some(h) = self.handshakes.remove(&session) {
                    self.authenticated
                        .insert(session, Handshake { member, ..h });
                }
            }
            Input::Ready { session, peer } => self.ready(now, session, peer, membership, &mut out),
            Input::Closed { session, refusal } => {
                self.closed(now, session, refusal, membership, &mut out)
            }
            Input::Dialed { addr, result } => self.dialed(now, addr, result, &mut out),
            Input::Gossip(views) => self.gossiped(now, views, membership, &mut out),
            Input::Suspected { name, by } => self.suspected(now, name, by, membership, &mut out),
            Input::Seeds(seeds) => {
                let was = std::mem::take(&mut self.deferred);
                for (addr, _) in seeds.iter().filter(|(_, deferred)| *deferred) {
                    let since = was.get(addr).copied().unwrap_or(now);
                    self.deferred.insert(addr.clone(), since);
                }
                self.seeds = seeds.into_iter().map(|(addr, _)| addr).collect();
                self.dial_wanted(now, membership, &mut out);
            }
        }
        if !self.deferred_losses.is_empty() {
            self.settle_deferred_losses(now, membership, &mut out);
        }
        out
    }

    /// Whether another session to peer `name` (at `addr`) is coming up: one this node
    /// dialed to `addr` (in its handshake, or authenticated and syncing), or one in
    /// either direction that authenticated as `name` (it won the election that closed
    /// the one that was ready here).
    fn coming_up(&self, name: &str, addr: &str) -> bool {
        // A dial to the peer: to its advertised address, or to a seed address that
        // led to it before (a `--join` name's).
        let to_peer = |dialed: &str| {
            dialed == addr
                || self
                    .dials
                    .get(dialed)
                    .is_some_and(|d| d.member.as_deref() == Some(name))
        };
        let dialed = self
            .handshakes
            .values()
            .chain(self.authenticated.values())
            .filter(|h| !h.inbound)
            .any(|h| self.dialed_as(&h.peer_addr).is_some_and(|d| to_peer(&d)));
        dialed
            || self
                .authenticated
                .values()
                .any(|h| h.member.as_deref() == Some(name))
    }

    /// Ends each deferred loss whose peer is up again (nothing to say) or whose dialed
    /// session will not come up (the loss is declared now), or that waited longer than
    /// a handshake may take.
    fn settle_deferred_losses(
        &mut self,
        now: Instant,
        membership: &Membership,
        out: &mut Vec<Action>,
    ) {
        let names: Vec<String> = self.deferred_losses.keys().cloned().collect();
        for name in names {
            let Some((addr, since)) = self.deferred_losses.get(&name).cloned() else {
                continue;
            };
            let back = self
                .sessions
                .values()
                .any(|p| p.member.as_deref() == Some(name.as_str()));
            let waited_out = now.saturating_duration_since(since) > AUTH_GRACE;
            if !back && self.coming_up(&name, &addr) && !waited_out {
                continue;
            }
            self.deferred_losses.remove(&name);
            if !back && membership.lost(&name, now) {
                let change = MemberChange::Lost { name: name.clone() };
                out.push(Action::Member(change));
                out.push(Action::Report(Report::Lost { peer: name, addr }));
            }
        }
    }

    /// How long a member told of a suspect waits for a heartbeat from it before it
    /// declares it too: a third of the silence, so that the watcher's silence, its
    /// tick, this check and a collection's report fit in the failure timeout.
    pub(crate) fn check_window(&self) -> Duration {
        self.silence / 3
    }

    /// Whether this node was held itself so recently that what peers sent meanwhile
    /// may still be unread (see the module documentation), or is being held now: its
    /// last tick is more than a third of the silence old (a timer that fired before
    /// that late tick is handled finds so).
    fn held(&self, now: Instant) -> bool {
        self.held_until.is_some_and(|until| now < until)
            || self
                .last_tick
                .is_some_and(|last| now.saturating_duration_since(last) > self.silence / 3)
    }

    fn tick(&mut self, now: Instant, membership: &Membership, out: &mut Vec<Action>) {
        self.watch(now, membership);
        if self.ticks.is_multiple_of(TICKS_PER_BEAT) {
            let mut beat: Vec<String> = self.watching.keys().cloned().collect();
            beat.extend(
                self.checks
                    .keys()
                    .filter(|n| !self.watching.contains_key(*n))
                    .cloned(),
            );
            beat.sort();
            if !beat.is_empty() {
                out.push(Action::Heartbeat(beat));
            }
        }
        self.ticks += 1;
        self.gossip(now, membership, out);
        self.expire_handshakes(now, out);
        if self
            .last_tick
            .is_some_and(|last| now.saturating_duration_since(last) > self.silence / 3)
        {
            self.held_until = Some(now + self.silence / 3);
        }
        self.last_tick = Some(now);
        if self.held(now) {
            self.dial_wanted(now, membership, out);
            return;
        }

        let mut silent = membership.expire_silent(&self.watching, self.silence, now);
        silent.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        for (peer, silent) in silent {
            self.declare(now, &peer.name, membership, out);
            out.push(Action::Suspect(peer.name.clone()));
            out.push(Action::Report(Report::Silent {
                peer: peer.name,
                addr: peer.addr,
                silent,
            }));
        }
        self.end_checks(now, membership, out);
        // Whom those declared leave unwatched is watched from now.
        self.watch(now, membership);

        self.dial_wanted(now, membership, out);
    }

    /// Moves the watch to the next [`WATCHED`] members up on the ring; a member newly
    /// watched is watched from `now`.
    fn watch(&mut self, now: Instant, membership: &Membership) {
        let next = membership.up_after(&self.name, WATCHED);
        self.watching.retain(|name, _| next.contains(name));
        for name in next {
            self.watching.entry(name).or_insert(now);
        }
    }

    /// `name` is unreachable: the change (made to `membership` too, this step's copy),
    /// and its sessions closed.
    fn declare(
        &mut self,
        now: Instant,
        name: &str,
        membership: &Membership,
        out: &mut Vec<Action>,
    ) {
        membership.lost(name, now);
        self.watching.remove(name);
        self.checks.remove(name);
        out.push(Action::Member(MemberChange::Lost {
            name: name.to_string(),
        }));
        for (session, _) in self.sessions_of(name) {
            out.push(Action::Close {
                session,
                reason: "peer unreachable",
            });
        }
    }

    /// A watcher says `name` went silent: check it with a heartbeat of this node's own,
    /// unless it is this node, or not up here, or being checked already.
    fn suspected(
        &mut self,
        now: Instant,
        name: String,
        by: String,
        membership: &Membership,
        out: &mut Vec<Action>,
    ) {
        if name == self.name
            || membership.last_heard(&name).is_none()
            || self.checks.contains_key(&name)
        {
            return;
        }
        out.push(Action::Heartbeat(vec![name.clone()]));
        out.push(Action::Wake(self.check_window() + Duration::from_millis(1)));
        self.checks.insert(name, (now, by));
    }

    /// Ends each check of a suspect that has been heard from since it began (it is
    /// alive), or is no longer up, or whose window has passed without a word (it is
    /// declared unreachable).
    fn end_checks(&mut self, now: Instant, membership: &Membership, out: &mut Vec<Action>) {
        let mut ended: Vec<(String, Instant, String)> = self
            .checks
            .iter()
            .map(|(name, (since, by))| (name.clone(), *since, by.clone()))
            .collect();
        ended.sort();
        for (name, since, by) in ended {
            match membership.last_heard(&name) {
                Some(heard) if heard >= since => {
                    self.checks.remove(&name);
                    let times = self.refuted.entry(by.clone()).or_default();
                    *times += 1;
                    let times = *times;
                    out.push(Action::Report(Report::Refuted {
                        peer: name,
                        by,
                        times,
                    }));
                }
                Some(_) if now >= since + self.check_window() => {
                    let addr = membership.addr(&name).unwrap_or_default();
                    self.declare(now, &name, membership, out);
                    out.push(Action::Report(Report::Confirmed {
                        peer: name,
                        addr,
                        by,
                    }));
                }
                Some(_) => {}
                None => {
                    self.checks.remove(&name);
                }
            }
        }
    }

    /// Dials every seed not connected, and every known peer not up whose name sorts
    /// after ours (so a pair never opens two sessions at once: ractor_cluster would
    /// close one, and a peer would see the other go down).
    fn dial_wanted(&mut self, now: Instant, membership: &Membership, out: &mut Vec<Action>) {
        let (names, addrs) = connected(&self.sessions);
        for seed in &self.seeds {
            let dial = self.dials.get(seed);
            let reached = dial
                .and_then(|d| d.resolved)
                .is_some_and(|sa| addrs.contains(sa.to_string().as_str()))
                || dial
                    .and_then(|d| d.member.as_deref())
                    .is_some_and(|m| names.contains(m))
                || addrs.contains(seed.as_str());
            if reached {
                continue;
            }
            if self.deferred.contains_key(seed) {
                // Its node dials this one. Once this node is in the cluster, gossip and
                // that node's own dial bring the two together; only a node with no
                // member at all dials it, after giving it the time to.
                if !names.is_empty() {
                    continue;
                }
                if dial.is_none() {
                    let first = DialState::new(now + DEFER_DIAL);
                    self.dials.insert(seed.clone(), first);
                }
            }
            dial_in(&mut self.dials, now, seed.clone(), out);
        }
        // A seed address whose node is not known yet may be any peer's: its dial
        // ends first, so that the peer is not dialed twice (once at the seed's
        // address, once at the one it advertises: a host name, say); and a deferred
        // seed's node, which dials this one, is given its time, so that a peer gossip
        // tells of is not dialed by its name while it dials this node by address.
        if self.seed_of_unknown_node_under_way(now) {
            return;
        }
        for (name, addr) in membership.down_after(&self.name) {
            if names.contains(name.as_str()) {
                continue;
            }
            // What others say of where it is now, beside its own address; not an
            // address whose dial led to another member.
            for told in membership.told(&name) {
                let elsewhere = self
                    .dials
                    .get(&told)
                    .and_then(|d| d.member.as_ref())
                    .is_some_and(|m| *m != name);
                if !elsewhere {
                    dial_in(&mut self.dials, now, told, out);
                }
            }
            dial_in(&mut self.dials, now, addr, out);
        }
    }

    /// Whether a dial to a seed address that has never led to a member is under way
    /// (connecting, or in its handshake), or a deferred seed's node, not known yet, is
    /// within its time to dial this one.
    fn seed_of_unknown_node_under_way(&self, now: Instant) -> bool {
        let unknown = |addr: &str| self.dials.get(addr).is_none_or(|d| d.member.is_none());
        let awaited = self
            .deferred
            .iter()
            .any(|(addr, since)| unknown(addr) && now < *since + DEFER_DIAL);
        if awaited {
            return true;
        }
        let handshaking: HashSet<SocketAddr> = self
            .handshakes
            .values()
            .chain(self.authenticated.values())
            .filter(|h| !h.inbound)
            .filter_map(|h| h.peer_addr.parse().ok())
            .collect();
        self.seeds.iter().any(|seed| {
            self.dials.get(seed).is_some_and(|d| {
                d.member.is_none()
                    && (d.dialing || d.resolved.is_some_and(|r| handshaking.contains(&r)))
            })
        })
    }

    fn gossip(&mut self, now: Instant, membership: &Membership, out: &mut Vec<Action>) {
        if self.gossip_in_flight || self.last_gossip.is_some_and(|t| now - t < GOSSIP_EVERY) {
            return;
        }
        self.ask_gossip(now, membership, out);
        for peer in membership.forget_stale(FORGET_AFTER, now) {
            let name = peer.clone();
            out.push(Action::Member(MemberChange::Forget { name }));
            out.push(Action::Report(Report::Forgotten { peer }));
        }
        // Bookkeeping for addresses nobody needs any more goes too, so the map does
        // not grow with every address ever gossiped.
        let wanted: HashSet<String> = self
            .seeds
            .iter()
            .cloned()
            .chain(membership.snapshot().into_iter().flat_map(|p: PeerView| {
                let mut addrs = membership.told(&p.name);
                addrs.push(p.addr);
                addrs
            }))
            .collect();
        self.dials
            .retain(|addr, dial| dial.dialing || wanted.contains(addr));
    }

    /// Schedules the next attempt at `addr` after a failure; `Some(attempts)` if it is
    /// worth a log line (the first failure, then every power of two).
    fn dial_failed(&mut self, addr: &str, now: Instant) -> Option<u32> {
        let factor = 0.8 + self.rng.f64() * 0.4;
        let dial = self.dials.get_mut(addr)?;
        dial.failures += 1;
        dial.next_attempt = now + dial.backoff.mul_f64(factor);
        dial.backoff = (dial.backoff * 2).min(BACKOFF_MAX);
        (dial.failures == 1 || dial.failures.is_power_of_two()).then_some(dial.failures)
    }

    /// The configured or gossiped address whose last dial reached `peer_addr`.
    fn dialed_as(&self, peer_addr: &str) -> Option<String> {
        let reached = peer_addr.parse::<SocketAddr>().ok();
        self.dials
            .iter()
            .find(|(_, d)| d.resolved.is_some_and(|r| Some(r) == reached))
            .map(|(addr, _)| addr.clone())
    }

    fn sessions_of(&self, name: &str) -> Vec<(ActorId, &SessionPeer)> {
        self.sessions
            .iter()
            .filter(|(_, p)| p.member.as_deref() == Some(name))
            .map(|(id, p)| (*id, p))
            .collect()
    }

    fn expire_handshakes(&mut self, now: Instant, out: &mut Vec<Action>) {
        let late: Vec<ActorId> = self
            .handshakes
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.opened) > AUTH_GRACE)
            .map(|(id, _)| *id)
            .collect();
        for session in late {
            let Some(h) = self.handshakes.remove(&session) else {
                continue;
            };
            out.push(Action::Close {
                session,
                reason: "handshake timed out",
            });
            if h.inbound {
                continue;
            }
            if let Some(addr) = self.dialed_as(&h.peer_addr) {
                if let Some(attempts) = self.dial_failed(&addr, now) {
                    out.push(Action::Report(Report::HandshakeTimeout { addr, attempts }));
                }
            }
        }
    }

    fn ready(
        &mut self,
        now: Instant,
        session: ActorId,
        peer: SessionPeer,
        membership: &Membership,
        out: &mut Vec<Action>,
    ) {
        self.handshakes.remove(&session);
        self.authenticated.remove(&session);
        let Some(name) = peer.member.clone() else {
            // A client: not a member, nothing to track.
            return;
        };
        let reached = peer.peer_addr.parse::<SocketAddr>().ok();
        for dial in self.dials.values_mut() {
            if dial.resolved.is_some_and(|r| Some(r) == reached) {
                dial.next_attempt = now;
                dial.failures = 0;
                dial.backoff = BACKOFF_MIN;
                dial.member = Some(name.clone());
            }
        }
        // A deferred seed's node dialed in: the session's socket address is the seed's
        // IP at an ephemeral port, and its advertised address may be a host name. (One
        // node per IP: a name's addresses share one port.)
        let ip = |addr: &str| addr.parse::<SocketAddr>().ok().map(|a| a.ip());
        if let Some(from) = ip(&peer.peer_addr) {
            for (addr, dial) in self.dials.iter_mut() {
                if self.deferred.contains_key(addr) && ip(addr) == Some(from) {
                    dial.member = Some(name.clone());
                }
            }
        }
        let addr = peer.advertised.clone();
        self.sessions.insert(session, peer);
        out.push(Action::Member(MemberChange::SessionUp {
            name: name.clone(),
            addr: addr.clone(),
        }));
        let report = match membership.session_up(&name, &addr, now) {
            Some(PeerStatus::Unreachable) => Some(Report::Back {
                peer: name.clone(),
                addr,
            }),
            Some(_) => Some(Report::Connected {
                peer: name.clone(),
                addr,
            }),
            None => None,
        };
        out.extend(report.map(Action::Report));
        self.watch(now, membership);
        // Learn whom the new peer knows at once, rather than at the next round: a node
        // that joins reaches every member in its first exchange.
        self.gossip_now(now, name, membership, out);
    }

    fn closed(
        &mut self,
        now: Instant,
        session: ActorId,
        refusal: HandshakeEnd,
        membership: &Membership,
        out: &mut Vec<Action>,
    ) {
        if let Some(h) = self.handshakes.remove(&session) {
            self.handshake_failed(now, h, refusal, out);
            return;
        }
        if self.authenticated.remove(&session).is_some() {
            return;
        }
        let Some(peer) = self.sessions.remove(&session) else {
            return;
        };
        let Some(name) = peer.member else {
            return;
        };
        // Another session to the same peer may still be up (an election loser closed).
        let still = self
            .sessions
            .values()
            .any(|p| p.member.as_deref() == Some(&name));
        if still {
            return;
        }
        // Both nodes dialed each other at once (a restarted node joining while this one
        // redials it): each keeps one session, and the one that was ready here can be
        // the one closed while the other is still coming up (ours, or the peer's that
        // won the election). The peer is not lost unless that one fails too.
        if self.coming_up(&name, &peer.advertised) {
            self.deferred_losses.insert(name, (peer.advertised, now));
            return;
        }
        if membership.lost(&name, now) {
            let change = MemberChange::Lost { name: name.clone() };
            out.push(Action::Member(change));
            out.push(Action::Report(Report::Lost {
                peer: name,
                addr: peer.advertised,
            }));
        }
    }

    /// A session closed before it authenticated. Inbound ones are the accept side's
    /// business (it logs refusals); a dialed one is a failed attempt.
    fn handshake_failed(
        &mut self,
        now: Instant,
        h: Handshake,
        refusal: HandshakeEnd,
        out: &mut Vec<Action>,
    ) {
        if h.inbound {
            return;
        }
        let Some(addr) = self.dialed_as(&h.peer_addr) else {
            return;
        };
        // Lost a duplicate-connection election: the peer is connected another way (by
        // its own dial, too: an inbound session's socket address is the peer's
        // ephemeral port, so its advertised address tells, or the member this address
        // led to before).
        let member = self.dials.get(&addr).and_then(|d| d.member.clone());
        if self.sessions.values().any(|p| {
            p.peer_addr == h.peer_addr
                || p.advertised == addr
                || (member.is_some() && p.member == member)
        }) {
            return;
        }
        if let Some(attempts) = self.dial_failed(&addr, now) {
            let report = match refusal {
                HandshakeEnd::Busy | HandshakeEnd::Silent => Report::Busy { addr, attempts },
                HandshakeEnd::Rejected => Report::AuthFailed { addr, attempts },
            };
            out.push(Action::Report(report));
        }
    }

    fn dialed(
        &mut self,
        now: Instant,
        addr: String,
        result: Result<SocketAddr, String>,
        out: &mut Vec<Action>,
    ) {
        let Some(dial) = self.dials.get_mut(&addr) else {
            return;
        };
        dial.dialing = false;
        match result {
            Ok(reached) => {
                dial.resolved = Some(reached);
                // Whether this dial worked is decided by the handshake: the session
                // becoming ready resets the backoff; a failed authentication or the
                // handshake deadline counts a failure.
                dial.next_attempt = now + AUTH_GRACE;
            }
            Err(error) => {
                if let Some(attempts) = self.dial_failed(&addr, now) {
                    out.push(Action::Report(Report::CannotReach {
                        addr,
                        error,
                        attempts,
                    }));
                }
            }
        }
    }

    /// Starts a gossip round that asks `first` now, or right after the one in flight.
    fn gossip_now(
        &mut self,
        now: Instant,
        first: String,
        membership: &Membership,
        out: &mut Vec<Action>,
    ) {
        self.gossip_first.push(first);
        if self.gossip_in_flight {
            self.gossip_again = true;
        } else {
            self.ask_gossip(now, membership, out);
        }
    }

    /// Starts a gossip round: whom it asks, and what this node sees as they are asked.
    fn ask_gossip(&mut self, now: Instant, membership: &Membership, out: &mut Vec<Action>) {
        self.gossip_in_flight = true;
        self.last_gossip = Some(now);
        let mut seen: Vec<String> = membership
            .up_names()
            .into_iter()
            .chain(std::iter::once(self.name.clone()))
            .collect();
        seen.sort();
        self.gossip_seen = seen;
        let asked = self.gossip_targets(membership);
        out.push(Action::AskGossip(asked));
    }

    /// Whom a gossip round asks: every member whose session just came up, and the next
    /// [`GOSSIP_FANOUT`] members up in this turn (a turn asks every member up once, in
    /// a random order).
    fn gossip_targets(&mut self, membership: &Membership) -> Vec<String> {
        let up: HashSet<String> = membership.up_names().into_iter().collect();
        let mut asked: Vec<String> = std::mem::take(&mut self.gossip_first)
            .into_iter()
            .filter(|name| up.contains(name))
            .collect();
        asked.sort();
        asked.dedup();
        let mut refilled = false;
        let mut taken = 0;
        while taken < GOSSIP_FANOUT && taken < up.len() {
            let Some(name) = self.gossip_turn.pop_front() else {
                if refilled {
                    break;
                }
                refilled = true;
                let mut turn: Vec<String> = up.iter().cloned().collect();
                turn.sort();
                self.rng.shuffle(&mut turn);
                self.gossip_turn = turn.into();
                continue;
            };
            if up.contains(&name) && !asked.contains(&name) {
                asked.push(name);
                taken += 1;
            }
        }
        asked
    }

    fn gossiped(
        &mut self,
        now: Instant,
        views: Vec<View>,
        membership: &Membership,
        out: &mut Vec<Action>,
    ) {
        self.gossip_in_flight = false;
        // What this node saw up, itself included, when it asked: what a member whose
        // digest matched sees too.
        let seen = std::mem::take(&mut self.gossip_seen);
        if std::mem::take(&mut self.gossip_again) {
            self.ask_gossip(now, membership, out);
        }
        let mut learned = false;
        for mut view in views.into_iter().filter(|v| v.node.name != self.name) {
            let teller = view.node.name.clone();
            let known_peers = view.peers.take();
            let sees: Vec<String> = match &known_peers {
                Some(peers) => peers.iter().map(|p| p.name.clone()).collect(),
                None => seen.iter().filter(|n| **n != teller).cloned().collect(),
            };
            membership.viewed(&view, sees.clone(), now);
            out.push(Action::Member(MemberChange::Viewed {
                view: Box::new(view),
                sees,
            }));
            for peer in known_peers.unwrap_or_default() {
                let run = Some(peer.incarnation).filter(|&run| run != 0);
                if peer.name == self.name {
                    continue;
                }
                if membership.learn(&peer.name, &peer.addr, run, now) {
                    learned = true;
                    out.push(Action::Member(MemberChange::Learn {
                        name: peer.name.clone(),
                        addr: peer.addr.clone(),
                        incarnation: run,
                    }));
                    out.push(Action::Report(Report::Learned {
                        peer: peer.name,
                        addr: peer.addr,
                    }));
                } else if membership.tell(&peer.name, &peer.addr, &teller) {
                    out.push(Action::Member(MemberChange::Told {
                        name: peer.name,
                        addr: peer.addr,
                        teller: teller.clone(),
                    }));
                }
            }
        }
        // Whom it just learned of is dialed now, not at the next tick; and while the
        // cluster is news (forming, growing), the next round follows at once.
        self.dial_wanted(now, membership, out);
        if learned && !self.gossip_in_flight {
            self.ask_gossip(now, membership, out);
        }
    }
}

/// Dials `addr` (one dial at a time per address, none before its backoff ends).
fn dial_in(
    dials: &mut HashMap<String, DialState>,
    now: Instant,
    addr: String,
    out: &mut Vec<Action>,
) {
    let state = dials
        .entry(addr.clone())
        .or_insert_with(|| DialState::new(now));
    if state.dialing || state.next_attempt > now {
        return;
    }
    state.dialing = true;
    out.push(Action::Dial(addr));
}

/// The members the `sessions` are with, and the addresses they are at (each peer's
/// socket address and the address it advertises).
fn connected(sessions: &HashMap<ActorId, SessionPeer>) -> (HashSet<&str>, HashSet<&str>) {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for peer in sessions.values() {
        if let Some(name) = &peer.member {
            names.insert(name.as_str());
        }
        addrs.insert(peer.peer_addr.as_str());
        addrs.insert(peer.advertised.as_str());
    }
    (names, addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step with its membership changes applied, as the mesh applies them.
    trait Run {
        fn run(&mut self, now: Instant, input: Input, m: &Membership) -> Vec<Action>;
    }

    impl Run for Detector {
        fn run(&mut self, now: Instant, input: Input, m: &Membership) -> Vec<Action> {
            let actions = self.step(now, input, m);
            for action in &actions {
                if let Action::Member(change) = action {
                    m.apply(change, now);
                }
            }
            actions
        }
    }

    /// The step leaves the table alone: what it changes comes out as actions, which,
    /// applied, give the table the step worked out for itself.
    #[test]
    fn a_step_changes_the_membership_only_through_its_actions() {
        let t0 = Instant::now();
        let m = Membership::default();
        let mut d = Detector::new("a".into(), vec![], Duration::from_secs(1), 7);
        let ready = Input::Ready {
            session: ActorId::Local(1),
            peer: SessionPeer {
                member: Some("b".into()),
                peer_addr: "127.0.0.1:50000".into(),
                advertised: "127.0.0.1:2".into(),
            },
        };
        let actions = d.step(t0, ready.clone(), &m);
        assert!(m.snapshot().is_empty(), "the step changed the table itself");
        let changes: Vec<&MemberChange> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Member(change) => Some(change),
                _ => None,
            })
            .collect();
        assert_eq!(
            changes,
            [&MemberChange::SessionUp {
                name: "b".into(),
                addr: "127.0.0.1:2".into()
            }]
        );
        let mut twin = Detector::new("a".into(), vec![], Duration::from_secs(1), 7);
        twin.run(t0, ready, &m);
        let peers = m.snapshot();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].status, PeerStatus::Up);
        // Silence: the peer is lost through an action too.
        let later = t0 + Duration::from_secs(2);
        let out = twin.step(later, Input::Tick, &m);
        assert_eq!(m.snapshot()[0].status, PeerStatus::Up, "not until applied");
        assert!(out.contains(&Action::Member(MemberChange::Lost { name: "b".into() })));
        for action in &out {
            if let Action::Member(change) = action {
                m.apply(change, later);
            }
        }
        assert_eq!(m.snapshot()[0].status, PeerStatus::Unreachable);
    }
    use shared::agent::PeerAddr;
    use shared::protocol::Role;

    const MS: Duration = Duration::from_millis(1);
    const SILENCE: Duration = Duration::from_millis(1200);

    fn id(n: u64) -> ActorId {
        ActorId::Local(n)
    }

    fn detector(name: &str, seeds: &[&str]) -> (Detector, Membership) {
        let seeds = seeds.iter().map(|s| s.to_string()).collect();
        (
            Detector::new(name.into(), seeds, SILENCE, 7),
            Membership::default(),
        )
    }

    /// Node "a" with a ready session (5) to member "b", as of the instant returned.
    fn with_b_up() -> (Detector, Membership, Instant) {
        let (mut d, m) = detector("a", &[]);
        let t0 = Instant::now();
        let ready = Input::Ready {
            session: id(5),
            peer: member("b", 2),
        };
        d.run(t0, ready, &m);
        (d, m, t0)
    }

    fn dials(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dial(addr) => Some(addr.as_str()),
                _ => None,
            })
            .collect()
    }

    fn reports(actions: &[Action]) -> Vec<&Report> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn closes(actions: &[Action]) -> Vec<ActorId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Close { session, .. } => Some(*session),
                _ => None,
            })
            .collect()
    }

    fn member(name: &str, port: u16) -> SessionPeer {
        SessionPeer {
            member: Some(name.into()),
            peer_addr: format!("127.0.0.1:{port}"),
            advertised: format!("127.0.0.1:{port}"),
        }
    }

    /// `name`'s answer to gossip, listing `peers`.
    fn info(name: &str, peers: &[(&str, &str)]) -> View {
        View {
            node: PeerAddr {
                name: name.into(),
                addr: format!("{name}:1"),
                incarnation: 1,
            },
            role: Role::Worker,
            counters: 2,
            peers: Some(
                peers
                    .iter()
                    .map(|(n, a)| PeerAddr {
                        name: n.to_string(),
                        addr: a.to_string(),
                        incarnation: 1,
                    })
                    .collect(),
            ),
        }
    }

    fn asked(actions: &[Action]) -> Option<&[String]> {
        actions.iter().find_map(|a| match a {
            Action::AskGossip(names) => Some(names.as_slice()),
            _ => None,
        })
    }

    fn beats(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Heartbeat(names) => Some(names),
                _ => None,
            })
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// A seed that refuses connections is redialed with growing, jittered, capped
    /// delays, and logged at the 1st, 2nd, 4th, 8th... failure.
    #[test]
    fn an_unreachable_seed_is_retried_with_backoff() {
        let (mut d, m) = detector("a", &["seed:1"]);
        let t0 = Instant::now();
        let mut now = t0;
        let mut attempts = Vec::new();
        let mut logged = Vec::new();
        while now < t0 + Duration::from_secs(10) {
            let out = d.run(now, Input::Tick, &m);
            if dials(&out) == ["seed:1"] {
                attempts.push(now - t0);
                let out = d.run(
                    now,
                    Input::Dialed {
                        addr: "seed:1".into(),
                        result: Err("connection refused".into()),
                    },
                    &m,
                );
                for r in reports(&out) {
                    if let Report::CannotReach { attempts, .. } = r {
                        logged.push(*attempts);
                    }
                }
            }
            now += 10 * MS;
        }
        assert_eq!(attempts[0], Duration::ZERO, "the first dial is immediate");
        let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] >= 80 * MS && gaps[0] <= 130 * MS, "{gaps:?}");
        assert!(gaps[1] >= 160 * MS && gaps[1] <= 250 * MS, "{gaps:?}");
        for gap in &gaps {
            assert!(*gap <= 1210 * MS, "capped at 1 s + 20%: {gaps:?}");
        }
        assert!(
            gaps.iter().rev().take(3).all(|g| *g >= 790 * MS),
            "{gaps:?}"
        );
        assert_eq!(&logged[..4], [1, 2, 4, 8]);
        // While a dial is in flight, no second one starts.
        let (mut d, m) = detector("a", &["seed:1"]);
        assert_eq!(dials(&d.run(t0, Input::Tick, &m)), ["seed:1"]);
        assert!(dials(&d.run(t0 + 500 * MS, Input::Tick, &m)).is_empty());
    }

    /// A connected seed is not dialed again; a lost one is, and a ready session
    /// resets the backoff.
    #[test]
    fn a_seed_is_dialed_until_its_session_is_up_and_again_when_lost() {
        let (mut d, m) = detector("b", &["127.0.0.1:1"]);
        let t0 = Instant::now();
        assert_eq!(dials(&d.run(t0, Input::Tick, &m)), ["127.0.0.1:1"]);
        d.run(
            t0,
            Input::Dialed {
                addr: "127.0.0.1:1".into(),
                result: Ok("127.0.0.1:1".parse().unwrap()),
            },
            &m,
        );
        let opened = Input::Opened {
            session: id(1),
            peer_addr: "127.0.0.1:1".into(),
            inbound: false,
        };
        d.run(t0, opened, &m);
        d.run(t0 + MS, authenticated(1, "a"), &m);
        let out = d.run(
            t0 + 2 * MS,
            Input::Ready {
                session: id(1),
                peer: member("a", 1),
            },
            &m,
        );
        assert_eq!(
            reports(&out),
            [&Report::Connected {
                peer: "a".into(),
                addr: "127.0.0.1:1".into()
            }]
        );
        assert!(dials(&d.run(t0 + 1000 * MS, Input::Tick, &m)).is_empty());
        let out = d.run(
            t0 + 1001 * MS,
            Input::Closed {
                session: id(1),
                refusal: HandshakeEnd::Rejected,
            },
            &m,
        );
        assert_eq!(
            reports(&out),
            [&Report::Lost {
                peer: "a".into(),
                addr: "127.0.0.1:1".into()
            }]
        );
        assert_eq!(m.status("a"), Some(PeerStatus::Unreachable));
        assert_eq!(
            dials(&d.run(t0 + 1002 * MS, Input::Tick, &m)),
            ["127.0.0.1:1"]
        );
    }

    /// New seed addresses (a name's answer changed) are dialed at once; one no
    /// longer among them is not dialed again.
    #[test]
    fn seeds_from_a_name_replace_the_ones_before() {
        let (mut d, m) = detector("a", &[]);
        let t0 = Instant::now();
        assert!(dials(&d.run(t0, Input::Tick, &m)).is_empty());
        let seeds = vec![
            ("10.0.0.2:4697".into(), false),
            ("10.0.0.3:4697".into(), false),
        ];
        assert_eq!(
            dials(&d.run(t0, Input::Seeds(seeds), &m)),
            ["10.0.0.2:4697", "10.0.0.3:4697"]
        );
        for addr in ["10.0.0.2:4697", "10.0.0.3:4697"] {
            let failed = Input::Dialed {
                addr: addr.into(),
                result: Err("connection refused".into()),
            };
            d.run(t0 + MS, failed, &m);
        }
        d.run(
            t0 + 2 * MS,
            Input::Seeds(vec![("10.0.0.3:4697".into(), false)]),
            &m,
        );
        assert_eq!(
            dials(&d.run(t0 + 2000 * MS, Input::Tick, &m)),
            ["10.0.0.3:4697"]
        );
    }

    /// A deferred seed is left to its node to dial: dialed only by a node with no
    /// member at all once the deferral is over; not once that node's session is up,
    /// nor while any other member is.
    #[test]
    fn a_deferred_seed_is_dialed_only_if_its_node_has_not_dialed_in_time() {
        let (mut d, m) = detector("b", &[]);
        let t0 = Instant::now();
        let seeds = vec![
            ("10.0.0.1:4697".into(), true),
            ("10.0.0.3:4697".into(), false),
        ];
        assert_eq!(
            dials(&d.run(t0, Input::Seeds(seeds.clone()), &m)),
            ["10.0.0.3:4697"]
        );
        assert!(dials(&d.run(t0 + DEFER_DIAL - MS, Input::Tick, &m)).is_empty());
        assert_eq!(
            dials(&d.run(t0 + DEFER_DIAL, Input::Tick, &m)),
            ["10.0.0.1:4697"]
        );
        // Another node: the deferred seed's node dials in time, and is never dialed.
        let (mut d, m) = detector("b", &[]);
        d.run(t0, Input::Seeds(seeds), &m);
        let opened = Input::Opened {
            session: id(1),
            peer_addr: "10.0.0.1:40000".into(),
            inbound: true,
        };
        d.run(t0 + MS, opened, &m);
        d.run(t0 + MS, authenticated(1, "a"), &m);
        // It advertises a host name (a container's), not the seed's address.
        let a = SessionPeer {
            member: Some("a".into()),
            peer_addr: "10.0.0.1:40000".into(),
            advertised: "a-host:4697".into(),
        };
        d.run(
            t0 + 2 * MS,
            Input::Ready {
                session: id(1),
                peer: a,
            },
            &m,
        );
        assert!(dials(&d.run(t0 + DEFER_DIAL * 2, Input::Tick, &m)).is_empty());
        // A third node: another member is up, so the deferred seed is left to
        // gossip and to its node.
        let (mut d, m) = detector("b", &[]);
        let seeds = vec![
            ("10.0.0.1:4697".into(), true),
            ("10.0.0.3:4697".into(), false),
        ];
        d.run(t0, Input::Seeds(seeds), &m);
        dial_opened(&mut d, &m, t0, 2, "10.0.0.3:4697");
        d.run(t0, authenticated(2, "c"), &m);
        let c = SessionPeer {
            member: Some("c".into()),
            peer_addr: "10.0.0.3:4697".into(),
            advertised: "c-host:4697".into(),
        };
        d.run(
            t0 + MS,
            Input::Ready {
                session: id(2),
                peer: c,
            },
            &m,
        );
        assert!(dials(&d.run(t0 + DEFER_DIAL * 2, Input::Tick, &m)).is_empty());
    }

    /// A seed address found through a name is reached once the member it led to is
    /// connected, also by the member's own dial (whose socket address is an ephemeral
    /// port and whose advertised address is its host name, neither of them the seed).
    #[test]
    fn a_seed_is_reached_while_the_member_it_led_to_is_connected_either_way() {
        let (mut d, m) = detector("a", &["10.0.0.2:4697"]);
        let t0 = Instant::now();
        assert_eq!(dials(&d.run(t0, Input::Tick, &m)), ["10.0.0.2:4697"]);
        dial_opened(&mut d, &m, t0, 1, "10.0.0.2:4697");
        d.run(t0, authenticated(1, "b"), &m);
        let b = SessionPeer {
            member: Some("b".into()),
            peer_addr: "10.0.0.2:4697".into(),
            advertised: "b-host:4697".into(),
        };
        d.run(
            t0 + MS,
            Input::Ready {
                session: id(1),
                peer: b,
            },
            &m,
        );
        // The session goes; b dials back before this node's redial is due.
        d.run(
            t0 + 10 * MS,
            Input::Closed {
                session: id(1),
                refusal: HandshakeEnd::Rejected,
            },
            &m,
        );
        let b_again = SessionPeer {
            member: Some("b".into()),
            peer_addr: "10.0.0.2:51234".into(),
            advertised: "b-host:4697".into(),
        };
        let opened = Input::Opened {
            session: id(2),
            peer_addr: "10.0.0.2:51234".into(),
            inbound: true,
        };
        d.run(t0 + 11 * MS, opened, &m);
        d.run(t0 + 11 * MS, authenticated(2, "b"), &m);
        d.run(
            t0 + 12 * MS,
            Input::Ready {
                session: id(2),
                peer: b_again,
            },
            &m,
        );
        assert!(
            dials(&d.run(t0 + 2000 * MS, Input::Tick, &m)).is_empty(),
            "redialed a seed whose member is connected"
        );
    }

    /// Session `session` authenticated as node `name`.
    fn authenticated(session: u64, name: &str) -> Input {
        Input::Authenticated {
            session: id(session),
            member: Some(name.into()),
        }
    }

    /// This node's dial to `addr` connected, and its session `session` authenticated.
    fn dial_authenticated(d: &mut Detector, m: &Membership, at: Instant, session: u64, addr: &str) {
        dial_opened(d, m, at, session, addr);
        d.run(at, authenticated(session, "b"), m);
    }

    /// This node's dial to `addr` connected: its session `session` is in its handshake.
    fn dial_opened(d: &mut Detector, m: &Membership, at: Instant, session: u64, addr: &str) {
        let reached = Ok(addr.parse().unwrap());
        d.run(
            at,
            Input::Dialed {
                addr: addr.into(),
                result: reached,
            },
            m,
        );
        let opened = Input::Opened {
            session: id(session),
            peer_addr: addr.into(),
            inbound: false,
        };
        d.run(at, opened, m);
    }

    /// Session `session` closed.
    fn close(d: &mut Detector, m: &Membership, at: Instant, session: u64) -> Vec<Action> {
        let refusal = HandshakeEnd::Rejected;
        d.run(
            at,
            Input::Closed {
                session: id(session),
                refusal,
            },
            m,
        )
    }

    /// b's session `session`, which b dialed (from port 50000), is ready.
    fn b_inbound_ready(session: u64) -> Input {
        Input::Ready {
            session: id(session),
            peer: SessionPeer {
                peer_addr: "127.0.0.1:50000".into(),
                ..member("b", 2)
            },
        }
    }

    /// The report that `b` (at 127.0.0.1:2) was lost.
    fn lost_b() -> Report {
        Report::Lost {
            peer: "b".into(),
            addr: "127.0.0.1:2".into(),
        }
    }

    /// Both nodes dial each other at once: the session that was ready here closes (the
    /// peer kept the other) while this node's own dial is still coming up. That is not
    /// a loss; it becomes one only if the dialed session fails too.
    #[test]
    fn a_duplicate_session_closing_while_our_dial_comes_up_is_not_a_loss() {
        for dial_fails in [false, true] {
            // b is a seed: this node dials it.
            let (mut d, m) = detector("a", &["127.0.0.1:2"]);
            let t0 = Instant::now();
            assert_eq!(dials(&d.run(t0, Input::Tick, &m)), ["127.0.0.1:2"]);
            // b's inbound session is ready.
            d.run(
                t0,
                Input::Opened {
                    session: id(1),
                    peer_addr: "127.0.0.1:50000".into(),
                    inbound: true,
                },
                &m,
            );
            d.run(t0, authenticated(1, "b"), &m);
            let out = d.run(t0, b_inbound_ready(1), &m);
            assert_eq!(reports(&out).len(), 1, "{out:?}");
            // Meanwhile this node dialed b's address: connected and authenticated.
            dial_authenticated(&mut d, &m, t0 + MS, 2, "127.0.0.1:2");
            // b closes the inbound one: the dialed one is still coming up.
            let out = close(&mut d, &m, t0 + 2 * MS, 1);
            assert!(reports(&out).is_empty(), "no loss yet: {out:?}");
            assert_eq!(m.status("b"), Some(PeerStatus::Up));
            if dial_fails {
                let out = close(&mut d, &m, t0 + 3 * MS, 2);
                assert_eq!(
                    reports(&out),
                    [&lost_b()],
                    "the dialed session failed too: now b is lost"
                );
                assert_eq!(m.status("b"), Some(PeerStatus::Unreachable));
            } else {
                let out = d.run(
                    t0 + 3 * MS,
                    Input::Ready {
                        session: id(2),
                        peer: member("b", 2),
                    },
                    &m,
                );
                assert!(reports(&out).is_empty(), "b never left: {out:?}");
                assert_eq!(m.status("b"), Some(PeerStatus::Up));
                // Its last session closing later is a loss, reported once.
                let out = close(&mut d, &m, t0 + 4 * MS, 2);
                assert_eq!(reports(&out), [&lost_b()]);
            }
        }
    }

    /// The mirror case: the session this node dialed was ready, and the peer's own
    /// dial won the election (it authenticated here as that peer) and closed it. That
    /// is not a loss either; it becomes one only if the winner fails too.
    #[test]
    fn our_session_closing_after_the_peers_dial_won_the_election_is_not_a_loss() {
        for winner_fails in [false, true] {
            let (mut d, m) = detector("a", &["127.0.0.1:2"]);
            let t0 = Instant::now();
            assert_eq!(dials(&d.run(t0, Input::Tick, &m)), ["127.0.0.1:2"]);
            dial_authenticated(&mut d, &m, t0, 2, "127.0.0.1:2");
            let ready = Input::Ready {
                session: id(2),
                peer: member("b", 2),
            };
            assert_eq!(reports(&d.run(t0, ready, &m)).len(), 1);
            // b dials this node too; its session wins the election here.
            let opened = Input::Opened {
                session: id(1),
                peer_addr: "127.0.0.1:50000".into(),
                inbound: true,
            };
            d.run(t0 + MS, opened, &m);
            d.run(t0 + MS, authenticated(1, "b"), &m);
            let out = close(&mut d, &m, t0 + 2 * MS, 2);
            assert!(reports(&out).is_empty(), "no loss yet: {out:?}");
            assert_eq!(m.status("b"), Some(PeerStatus::Up));
            if !winner_fails {
                let out = d.run(t0 + 3 * MS, b_inbound_ready(1), &m);
                assert!(reports(&out).is_empty(), "b never left: {out:?}");
            }
            // The winner closing is a loss, reported once.
            let out = close(&mut d, &m, t0 + 4 * MS, 1);
            assert_eq!(reports(&out), [&lost_b()]);
            assert_eq!(m.status("b"), Some(PeerStatus::Unreachable));
        }
    }

    /// Our dial refused during its handshake because the peer's own dial to us won the
    /// election is not a failed attempt to join.
    #[test]
    fn a_dial_that_lost_the_election_to_the_peers_dial_is_not_a_failure() {
        let (mut d, m) = detector("a", &["127.0.0.1:2"]);
        let t0 = Instant::now();
        assert_eq!(dials(&d.run(t0, Input::Tick, &m)), ["127.0.0.1:2"]);
        dial_opened(&mut d, &m, t0, 2, "127.0.0.1:2");
        // b's own dial came up first.
        assert_eq!(reports(&d.run(t0, b_inbound_ready(1), &m)).len(), 1);
        let out = close(&mut d, &m, t0 + MS, 2);
        assert!(reports(&out).is_empty(), "not a failure: {out:?}");
    }

    /// Our own dial to the peer's address, still in its handshake (whom it reached is not
    /// known yet), defers the loss of the peer's session that was ready too.
    #[test]
    fn a_session_closing_while_our_dial_is_in_its_handshake_is_not_a_loss_yet() {
        let (mut d, m) = detector("a", &["127.0.0.1:2"]);
        let t0 = Instant::now();
        assert_eq!(dials(&d.run(t0, Input::Tick, &m)), ["127.0.0.1:2"]);
        assert_eq!(reports(&d.run(t0, b_inbound_ready(1), &m)).len(), 1);
        dial_opened(&mut d, &m, t0, 2, "127.0.0.1:2");
        let out = close(&mut d, &m, t0 + MS, 1);
        assert!(reports(&out).is_empty(), "no loss yet: {out:?}");
        assert_eq!(m.status("b"), Some(PeerStatus::Up));
        d.run(t0 + 2 * MS, authenticated(2, "b"), &m);
        let ready = Input::Ready {
            session: id(2),
            peer: member("b", 2),
        };
        let out = d.run(t0 + 3 * MS, ready, &m);
        assert!(reports(&out).is_empty(), "b never left: {out:?}");
    }

    /// A deferred loss is declared after a handshake's grace at the latest, even if the
    /// dialed session neither fails nor becomes ready.
    #[test]
    fn a_deferred_loss_is_declared_once_the_handshake_grace_is_over() {
        let (mut d, m) = detector("a", &["127.0.0.1:2"]);
        let t0 = Instant::now();
        assert_eq!(dials(&d.run(t0, Input::Tick, &m)), ["127.0.0.1:2"]);
        d.run(
            t0,
            Input::Ready {
                session: id(1),
                peer: member("b", 2),
            },
            &m,
        );
        dial_authenticated(&mut d, &m, t0, 2, "127.0.0.1:2");
        let out = close(&mut d, &m, t0 + MS, 1);
        assert!(reports(&out).is_empty(), "{out:?}");
        let out = d.run(t0 + AUTH_GRACE / 2, Input::Deadlines, &m);
        assert!(reports(&out).is_empty(), "{out:?}");
        let out = d.run(t0 + AUTH_GRACE + 2 * MS, Input::Deadlines, &m);
        assert_eq!(reports(&out), [&lost_b()]);
    }

    /// Heartbeats go every second tick; a peer silent for longer than the silence is
    /// declared once, and its sessions are closed.
    #[test]
    fn a_silent_peer_is_declared_once_and_its_session_closed() {
        let (mut d, m, t0) = with_b_up();
        let mut now = t0;
        let mut declared = Vec::new();
        while now <= t0 + 3 * SILENCE {
            // b's heartbeats stop after 1 s.
            if now <= t0 + Duration::from_secs(1) {
                m.heard("b", 1, now);
            }
            let watched = m.status("b") == Some(PeerStatus::Up);
            let out = d.run(now, Input::Tick, &m);
            assert_eq!(
                beats(&out) == ["b"],
                watched && (now - t0).as_millis().is_multiple_of(400),
                "heartbeats every second tick, while b is up"
            );
            for r in reports(&out) {
                if let Report::Silent { peer, silent, .. } = r {
                    declared.push((now - t0, peer.clone(), *silent));
                    assert_eq!(closes(&out), [id(5)]);
                    assert!(out.contains(&Action::Suspect("b".into())), "others told");
                }
            }
            now += 200 * MS;
        }
        assert_eq!(declared.len(), 1, "{declared:?}");
        let (at, peer, silent) = &declared[0];
        assert_eq!(peer, "b");
        assert!(*silent > SILENCE && *at <= Duration::from_secs(1) + SILENCE + 200 * MS);
        assert_eq!(m.status("b"), Some(PeerStatus::Unreachable));
    }

    /// A handshake that does not finish in time is closed; for a dialed one that is a
    /// failed attempt. A dialed session closed during authentication is a failed
    /// authentication, or "busy" when the peer said so; an inbound one is not logged
    /// here.
    #[test]
    fn handshakes_have_a_deadline_and_failed_ones_are_told_apart() {
        let (mut d, m) = detector("a", &["s:1"]);
        let t0 = Instant::now();
        d.run(t0, Input::Tick, &m);
        d.run(
            t0,
            Input::Dialed {
                addr: "s:1".into(),
                result: Ok("10.0.0.1:1".parse().unwrap()),
            },
            &m,
        );
        d.run(
            t0,
            Input::Opened {
                session: id(1),
                peer_addr: "10.0.0.1:1".into(),
                inbound: false,
            },
            &m,
        );
        d.run(
            t0,
            Input::Opened {
                session: id(2),
                peer_addr: "10.9.9.9:5".into(),
                inbound: true,
            },
            &m,
        );
        assert!(closes(&d.run(t0 + AUTH_GRACE, Input::Deadlines, &m)).is_empty());
        let out = d.run(t0 + AUTH_GRACE + MS, Input::Deadlines, &m);
        let mut closed = closes(&out);
        closed.sort_by_key(|id| id.pid());
        assert_eq!(closed, [id(1), id(2)]);
        assert_eq!(
            reports(&out),
            [&Report::HandshakeTimeout {
                addr: "s:1".into(),
                attempts: 1
            }]
        );

        // A dial whose handshake the peer closes: a wrong cookie, or a busy peer; each
        // the first failure of a fresh detector, so each is logged, and told apart.
        for refusal in [
            HandshakeEnd::Rejected,
            HandshakeEnd::Busy,
            HandshakeEnd::Silent,
        ] {
            let (mut d, m) = detector("a", &["s:1"]);
            d.run(t0, Input::Tick, &m);
            d.run(
                t0,
                Input::Dialed {
                    addr: "s:1".into(),
                    result: Ok("10.0.0.1:1".parse().unwrap()),
                },
                &m,
            );
            d.run(
                t0,
                Input::Opened {
                    session: id(3),
                    peer_addr: "10.0.0.1:1".into(),
                    inbound: false,
                },
                &m,
            );
            let out = d.run(
                t0,
                Input::Closed {
                    session: id(3),
                    refusal,
                },
                &m,
            );
            let addr = "s:1".to_string();
            let want = if refusal == HandshakeEnd::Rejected {
                Report::AuthFailed { addr, attempts: 1 }
            } else {
                Report::Busy { addr, attempts: 1 }
            };
            assert_eq!(reports(&out), [&want]);
        }
        // An inbound handshake that fails is not the mesh's to log.
        d.run(
            t0,
            Input::Opened {
                session: id(9),
                peer_addr: "10.9.9.9:6".into(),
                inbound: true,
            },
            &m,
        );
        assert!(d
            .run(
                t0,
                Input::Closed {
                    session: id(9),
                    refusal: HandshakeEnd::Rejected
                },
                &m
            )
            .is_empty());
    }

    /// Gossip runs at most every 500 ms and one round at a time; what it names is
    /// learned, and the lower name of a pair dials the other.
    /// A peer learned of by gossip while a seed address whose node is unknown is
    /// being dialed waits for that dial: the seed may be that very peer (an address a
    /// name gave, where the peer advertises a host name), and one dial is enough.
    #[test]
    fn a_gossiped_peer_is_dialed_once_a_seed_of_an_unknown_node_is_settled() {
        let (mut d, m) = detector("b", &[]);
        let t0 = Instant::now();
        d.run(t0, Input::Tick, &m);
        let seeds = vec![("10.0.0.3:4697".into(), false)];
        assert_eq!(
            dials(&d.run(t0, Input::Seeds(seeds), &m)),
            ["10.0.0.3:4697"]
        );
        let gossip = Input::Gossip(vec![info("x", &[("c", "c:1")])]);
        assert!(dials(&d.run(t0 + 600 * MS, gossip, &m)).is_empty());
        // The seed's dial fails: c is dialed at its own address.
        let failed = Input::Dialed {
            addr: "10.0.0.3:4697".into(),
            result: Err("connection refused".into()),
        };
        d.run(t0 + 700 * MS, failed, &m);
        let out = d.run(t0 + 800 * MS, Input::Tick, &m);
        let mut dialed = dials(&out);
        dialed.sort();
        assert_eq!(dialed, ["c:1", "x:1"]);
    }

    /// A deferred seed's node dials this one; while it has the time to, a peer
    /// gossip tells of (which may be that node, under a host name) is not dialed by
    /// its name, so that the pair does not open two sessions.
    #[test]
    fn a_gossiped_peer_waits_while_a_deferred_seeds_node_may_be_dialing() {
        let (mut d, m) = detector("b", &[]);
        let t0 = Instant::now();
        d.run(t0, Input::Tick, &m);
        // A member already: the deferred seed itself is never dialed.
        let ready = Input::Ready {
            session: id(5),
            peer: member("x", 2),
        };
        d.run(t0, ready, &m);
        let seeds = vec![("10.0.0.1:4697".into(), true)];
        assert!(dials(&d.run(t0, Input::Seeds(seeds), &m)).is_empty());
        let gossip = Input::Gossip(vec![info("x", &[("c", "c:1")])]);
        assert!(dials(&d.run(t0 + 600 * MS, gossip, &m)).is_empty());
        assert_eq!(dials(&d.run(t0 + DEFER_DIAL, Input::Tick, &m)), ["c:1"]);
    }

    #[test]
    fn gossip_is_paced_and_the_lower_name_dials() {
        let (mut d, m) = detector("b", &[]);
        let t0 = Instant::now();
        let asked = |out: &[Action]| asked(out).is_some();
        assert!(asked(&d.run(t0, Input::Tick, &m)));
        assert!(
            !asked(&d.run(t0 + 600 * MS, Input::Tick, &m)),
            "one round at a time"
        );
        let out = d.run(
            t0 + 700 * MS,
            Input::Gossip(vec![info("x", &[("a", "a:1"), ("c", "c:1"), ("b", "b:1")])]),
            &m,
        );
        let learned: Vec<_> = reports(&out)
            .into_iter()
            .map(|r| match r {
                Report::Learned { peer, .. } => peer.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        // x described itself (learned without a line); b does not learn itself.
        assert_eq!(learned, ["a", "c"]);
        // Dialed at once, not at the next tick: c and x (b < c, b < x), not a (a dials b).
        let mut dialed = dials(&out);
        dialed.sort();
        assert_eq!(dialed, ["c:1", "x:1"]);
        // News: the next round follows at once.
        assert!(asked(&out), "{out:?}");
        // Nothing new in it: the next round comes 500 ms after that one started.
        d.run(t0 + 750 * MS, Input::Gossip(vec![]), &m);
        assert!(!asked(&d.run(t0 + 1100 * MS, Input::Tick, &m)), "paced");
        assert!(asked(&d.run(t0 + 1200 * MS, Input::Tick, &m)));
    }

    /// A peer that was up and is lost is redialed by the side whose name sorts first
    /// only, so the two never race to reconnect.
    #[test]
    fn a_lost_peer_is_redialed_by_the_lower_name() {
        let (mut d, m) = detector("b", &[]);
        let t0 = Instant::now();
        for (n, name, port) in [(1, "a", 1), (2, "c", 3)] {
            d.run(
                t0,
                Input::Ready {
                    session: id(n),
                    peer: member(name, port),
                },
                &m,
            );
            d.run(
                t0,
                Input::Closed {
                    session: id(n),
                    refusal: HandshakeEnd::Rejected,
                },
                &m,
            );
        }
        let out = d.run(t0 + MS, Input::Tick, &m);
        assert_eq!(dials(&out), ["127.0.0.1:3"], "b dials c, and a dials b");
    }

    /// A peer restarted elsewhere under its name (a replacement container): what
    /// others' gossip says of its new address is dialed beside its own (a liar's word
    /// would only add a dial: see `Membership::tell`), and a session there brings it
    /// back at that address.
    #[test]
    fn a_lost_peer_others_place_elsewhere_is_dialed_there_too() {
        let (mut d, m) = detector("b", &[]);
        let t0 = Instant::now();
        for (n, name, port) in [(1, "c", 3), (2, "x", 7)] {
            d.run(
                t0,
                Input::Ready {
                    session: id(n),
                    peer: member(name, port),
                },
                &m,
            );
        }
        close(&mut d, &m, t0, 1);
        // b redials c at its own address; then x's gossip: c runs at 127.0.0.1:9 now.
        let out = d.run(t0 + MS, Input::Tick, &m);
        assert_eq!(dials(&out), ["127.0.0.1:3"]);
        let out = d.run(
            t0 + 2 * MS,
            Input::Gossip(vec![info("x", &[("c", "127.0.0.1:9")])]),
            &m,
        );
        assert_eq!(
            dials(&out),
            ["127.0.0.1:9"],
            "the told address, beside its own"
        );
        assert_eq!(
            m.addr("c").as_deref(),
            Some("127.0.0.1:3"),
            "its own address is kept"
        );
        // The dial to 9 comes up as c: c is up at its new address, told no more.
        d.run(
            t0 + 3 * MS,
            Input::Dialed {
                addr: "127.0.0.1:9".into(),
                result: Ok("127.0.0.1:9".parse().unwrap()),
            },
            &m,
        );
        d.run(
            t0 + 4 * MS,
            Input::Ready {
                session: id(3),
                peer: member("c", 9),
            },
            &m,
        );
        assert_eq!(m.status("c"), Some(PeerStatus::Up));
        assert!(m.told("c").is_empty());
        assert_eq!(m.addr("c").as_deref(), Some("127.0.0.1:9"));
    }

    /// A join reaches everyone in its first exchange: a ready session starts a gossip
    /// round at once, or right after the one in flight.
    #[test]
    fn a_new_session_is_asked_whom_it_knows_at_once() {
        let (mut d, m) = detector("b", &[]);
        let t0 = Instant::now();
        d.run(t0, Input::Tick, &m);
        d.run(t0, Input::Gossip(vec![]), &m);
        let ready = |n: u64, name: &str| Input::Ready {
            session: id(n),
            peer: member(name, n as u16),
        };
        let out = d.run(t0 + 10 * MS, ready(1, "a"), &m);
        assert_eq!(asked(&out), Some(&["a".to_string()][..]), "{out:?}");
        // Another peer comes up while that round is out: asked as soon as it is back
        // (with a as well: the only other member up, this turn's next).
        let out = d.run(t0 + 11 * MS, ready(2, "c"), &m);
        assert_eq!(asked(&out), None, "{out:?}");
        let out = d.run(t0 + 12 * MS, Input::Gossip(vec![]), &m);
        assert_eq!(asked(&out).map(|a| a[0].as_str()), Some("c"), "{out:?}");
    }

    /// A closed duplicate session does not make a connected peer unreachable.
    #[test]
    fn a_second_session_keeps_the_peer_up() {
        let (mut d, m) = detector("a", &[]);
        let t0 = Instant::now();
        for n in [1, 2] {
            d.run(
                t0,
                Input::Ready {
                    session: id(n),
                    peer: member("b", 2),
                },
                &m,
            );
        }
        assert!(reports(&d.run(
            t0,
            Input::Closed {
                session: id(1),
                refusal: HandshakeEnd::Rejected
            },
            &m
        ))
        .is_empty());
        assert_eq!(m.status("b"), Some(PeerStatus::Up));
        let out = d.run(
            t0,
            Input::Closed {
                session: id(2),
                refusal: HandshakeEnd::Rejected,
            },
            &m,
        );
        assert_eq!(reports(&out).len(), 1);
        assert_eq!(m.status("b"), Some(PeerStatus::Unreachable));
    }

    /// A node held past its peers' heartbeats (its own ticks late, the missed ones all
    /// at once) checks no silence until it has read what they sent meanwhile; one that
    /// stays silent after that is declared.
    #[test]
    fn a_node_held_itself_does_not_declare_its_peers_for_what_it_had_not_read() {
        let (mut d, m, t0) = with_b_up();
        m.heard("b", 1, t0);
        for n in 0..=1 {
            d.run(t0 + n * 200 * MS, Input::Tick, &m);
        }
        // Held for 1.1 s: past the silence since b was last heard.
        let back = t0 + 1_300 * MS;
        for burst in 0..6 {
            let out = d.run(back + burst * MS, Input::Tick, &m);
            assert!(reports(&out).is_empty(), "declared while held: {out:?}");
        }
        // Its heartbeats, queued meanwhile, are read; the next ticks find it heard.
        m.heard("b", 1, back + 10 * MS);
        for n in 1..=3 {
            let out = d.run(back + n * 200 * MS, Input::Tick, &m);
            assert!(reports(&out).is_empty(), "{out:?}");
        }
        // b then stays silent: declared once the silence has passed, as ever.
        let mut declared = None;
        for n in 4..=12 {
            let out = d.run(back + n * 200 * MS, Input::Tick, &m);
            if !reports(&out).is_empty() {
                declared = Some(n * 200);
                break;
            }
        }
        assert_eq!(
            declared,
            Some(1_400),
            "declared at the first tick past 1.2 s of silence"
        );
    }

    /// Node `me` with a ready session to each of `peers` (session `n + 1` for the `n`th,
    /// at port `n + 2`), as of the instant returned.
    fn with_up(me: &str, peers: &[&str]) -> (Detector, Membership, Instant) {
        let (mut d, m) = detector(me, &[]);
        let t0 = Instant::now();
        for (n, name) in peers.iter().enumerate() {
            let ready = Input::Ready {
                session: id(n as u64 + 1),
                peer: member(name, n as u16 + 2),
            };
            d.run(t0, ready, &m);
        }
        (d, m, t0)
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i:02}")).collect()
    }

    /// However many members are up, a node sends heartbeats to the next [`WATCHED`] on
    /// the ring only, and declares no other for its silence: that is its watchers'
    /// business.
    #[test]
    fn a_node_beats_and_watches_only_the_next_members_on_the_ring() {
        let all = names(40);
        let peers: Vec<&str> = all.iter().skip(1).map(String::as_str).collect();
        let (mut d, m, t0) = with_up("n00", &peers);
        let mut now = t0;
        let mut sent = Vec::new();
        while now <= t0 + 5 * SILENCE {
            // Only the watched answer: the rest are never heard from.
            for name in ["n01", "n02", "n03"] {
                m.heard(name, 1, now);
            }
            let out = d.run(now, Input::Tick, &m);
            assert!(reports(&out).is_empty(), "{out:?}");
            sent.extend(beats(&out).into_iter().map(str::to_string));
            now += 200 * MS;
        }
        sent.sort();
        sent.dedup();
        assert_eq!(sent, ["n01", "n02", "n03"]);
        assert!(m.snapshot().iter().all(|p| p.status == PeerStatus::Up));
        // The last node on the ring watches the first ones.
        let others: Vec<&str> = all.iter().take(39).map(String::as_str).collect();
        let (mut d, m, t0) = with_up("n39", &others);
        assert_eq!(beats(&d.run(t0, Input::Tick, &m)), ["n00", "n01", "n02"]);
    }

    /// A peer that begins to be watched (its watcher's watch moved on) has a whole
    /// silence from then, however long it had not been heard from here.
    #[test]
    fn a_newly_watched_member_has_the_whole_silence() {
        let (mut d, m, t0) = with_up("a", &["b", "c", "d", "e"]);
        let mut now = t0;
        // a watches b, c and d; e is heard from by its own watchers only.
        while m.status("b") == Some(PeerStatus::Up) {
            assert!(now < t0 + 3 * SILENCE, "b never declared");
            for name in ["c", "d"] {
                m.heard(name, 1, now);
            }
            m.heard("b", 1, now.min(t0 + SILENCE));
            let out = d.run(now, Input::Tick, &m);
            for r in reports(&out) {
                assert!(
                    matches!(r, Report::Silent { peer, .. } if peer == "b"),
                    "{r:?}"
                );
            }
            now += 200 * MS;
        }
        let moved = now - 200 * MS;
        assert_eq!(m.status("b"), Some(PeerStatus::Unreachable));
        // e is watched since b was declared: declared a silence after that, not before.
        let mut declared = None;
        while now < moved + 2 * SILENCE && declared.is_none() {
            for name in ["c", "d"] {
                m.heard(name, 1, now);
            }
            let out = d.run(now, Input::Tick, &m);
            if reports(&out)
                .iter()
                .any(|r| matches!(r, Report::Silent { peer, .. } if peer == "e"))
            {
                declared = Some(now - moved);
            }
            now += 200 * MS;
        }
        let after = declared.expect("e never declared");
        assert!(after > SILENCE && after <= SILENCE + 200 * MS, "{after:?}");
    }

    /// Word that a member is silent is checked with a heartbeat from here: a suspect
    /// that answers stays up whoever said otherwise; one that does not is declared when
    /// the check's window ends. Word about this node itself, or about a member not up
    /// here, is not acted on.
    #[test]
    fn a_suspicion_is_checked_before_it_is_believed() {
        let (mut d, m, t0) = with_up("a", &["b", "c"]);
        let window = d.check_window();
        let suspect = |name: &str| Input::Suspected {
            name: name.into(),
            by: "b".into(),
        };
        let out = d.run(t0, suspect("c"), &m);
        assert_eq!(beats(&out), ["c"]);
        assert!(out.contains(&Action::Wake(window + MS)), "{out:?}");
        assert!(beats(&d.run(t0 + MS, suspect("c"), &m)).is_empty(), "once");
        // c answers: the word was wrong (a lying or cut-off watcher).
        m.heard("c", 1, t0 + 50 * MS);
        let out = d.run(t0 + window + MS, Input::Deadlines, &m);
        assert_eq!(
            reports(&out),
            [&Report::Refuted {
                peer: "c".into(),
                by: "b".into(),
                times: 1
            }]
        );
        assert_eq!(m.status("c"), Some(PeerStatus::Up));

        // Suspected again, and silent this time.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(beats(&d.run(t1, suspect("c"), &m)), ["c"]);
        let out = d.run(t1 + window - MS, Input::Deadlines, &m);
        assert!(reports(&out).is_empty(), "before the window ends: {out:?}");
        let out = d.run(t1 + window + MS, Input::Deadlines, &m);
        assert_eq!(
            reports(&out),
            [&Report::Confirmed {
                peer: "c".into(),
                addr: "127.0.0.1:3".into(),
                by: "b".into()
            }]
        );
        assert_eq!(closes(&out), [id(2)]);
        assert_eq!(m.status("c"), Some(PeerStatus::Unreachable));

        // About this node, or a member not up here: nothing to check.
        assert!(d.run(t1, suspect("a"), &m).is_empty());
        assert!(d.run(t1, suspect("c"), &m).is_empty());
        assert!(d.run(t1, suspect("zz"), &m).is_empty());
    }

    /// A check whose window ends while this node is held itself (its tick late: the
    /// suspect's answer may be unread) confirms nothing until the node has caught up.
    #[test]
    fn a_check_that_ends_while_this_node_is_held_waits() {
        let (mut d, m, t0) = with_up("a", &["b", "c"]);
        m.heard("b", 1, t0);
        m.heard("c", 1, t0);
        d.run(t0, Input::Tick, &m);
        let suspect = Input::Suspected {
            name: "c".into(),
            by: "b".into(),
        };
        d.run(t0 + 10 * MS, suspect, &m);
        // Held: no tick for a second; the window's timer fires first.
        let late = t0 + Duration::from_secs(1);
        let out = d.run(late, Input::Deadlines, &m);
        assert!(reports(&out).is_empty(), "confirmed while held: {out:?}");
        // The late tick comes, then c's answer, read at last.
        d.run(late + MS, Input::Tick, &m);
        m.heard("c", 1, late + 2 * MS);
        m.heard("b", 1, late + 2 * MS);
        let out = d.run(late + 3 * MS, Input::Deadlines, &m);
        assert!(
            !reports(&out)
                .iter()
                .any(|r| matches!(r, Report::Confirmed { .. })),
            "{out:?}"
        );
        assert_eq!(m.status("c"), Some(PeerStatus::Up));
    }

    /// A gossip round asks [`GOSSIP_FANOUT`] members, each in turn: every member is
    /// asked within a turn of rounds, and no round asks more.
    #[test]
    fn gossip_asks_a_few_members_and_every_one_within_a_turn() {
        let all = names(11);
        let peers: Vec<&str> = all.iter().skip(1).map(String::as_str).collect();
        let (mut d, m, t0) = with_up("n00", &peers);
        // The rounds the sessions started (each new member asked first) end.
        while asked(&d.run(t0, Input::Gossip(vec![]), &m)).is_some() {}
        let mut now = t0 + Duration::from_secs(1);
        let mut asked_in_turn = Vec::new();
        for _ in 0..4 {
            let out = d.run(now, Input::Tick, &m);
            let round = asked(&out).expect("a round").to_vec();
            assert!(round.len() <= GOSSIP_FANOUT, "{round:?}");
            asked_in_turn.extend(round);
            d.run(now + 10 * MS, Input::Gossip(vec![]), &m);
            now += GOSSIP_EVERY;
        }
        asked_in_turn.sort();
        asked_in_turn.dedup();
        assert_eq!(asked_in_turn, &all[1..], "each member once a turn");
    }

    /// A member whose digest matched answers without its list: it sees what this node
    /// sees, this node included.
    #[test]
    fn a_matching_digest_means_the_peer_sees_what_this_node_sees() {
        let (mut d, m, t0) = with_up("a", &["b", "c"]);
        // The rounds the sessions started end; the next asks what a sees then.
        while asked(&d.run(t0, Input::Gossip(vec![]), &m)).is_some() {}
        assert!(asked(&d.run(t0 + Duration::from_secs(1), Input::Tick, &m)).is_some());
        // c is lost while the round is out: b's matching digest was of what a saw
        // when it asked.
        d.run(
            t0 + Duration::from_secs(1),
            Input::Closed {
                session: id(2),
                refusal: HandshakeEnd::Rejected,
            },
            &m,
        );
        let mut view = info("b", &[]);
        view.peers = None;
        d.run(t0 + Duration::from_secs(1), Input::Gossip(vec![view]), &m);
        let b = m.snapshot().into_iter().find(|p| p.name == "b").unwrap();
        assert_eq!(
            b.sees_up.as_deref(),
            Some(&vec!["a".to_string(), "c".to_string()])
        );
        assert_eq!(b.counters, Some(2));
    }

    #[test]
    fn detection_fits_in_the_failure_timeout() {
        let timeout = Duration::from_secs(2);
        let (tick, silence) = detector_timing(timeout);
        assert_eq!(tick, Duration::from_millis(200));
        // Declared at most one tick after the silence, with room left to report it.
        assert!(silence + tick <= timeout.mul_f64(0.75));
        // Told of it at once, the others check it within a window: all within the
        // timeout, with a tick to spare.
        let d = Detector::new("a".into(), vec![], silence, 7);
        assert!(silence + tick + d.check_window() + tick <= timeout);
        // Several heartbeats must be lost before a healthy peer is declared down.
        assert!(silence >= tick * TICKS_PER_BEAT as u32 * 3);
    }
}
