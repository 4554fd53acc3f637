//! Seeds: the addresses `--join` names, found again every [`RESOLVE_EVERY`].
//!
//! A `--join` is a member's address or a DNS name whose every address is a member: a
//! Compose service, a Swarm `tasks.SERVICE`, a Kubernetes headless service. So an
//! orchestrator forms the cluster with no address typed by hand, and a replica it adds
//! later is found at the next resolution (libcluster's `Kubernetes.DNS` strategy and
//! Akka's Cluster Bootstrap do the same). An IP address is a seed as given; a name is
//! resolved when the mesh starts and every [`RESOLVE_EVERY`] after, and each address
//! it gives is dialed like one given by hand (and sooner, [`RESOLVE_AGAIN_AFTER`], when a
//! dial to one of them fails: a recreated container may be back at another address).
//! This node's own address is left out: a
//! service's name also names the node that asks ([`is_own`]). A name that does not
//! resolve (yet: a service whose first replica is still starting) is tried again at
//! the next round.
//!
//! **Who dials whom.** Every replica of a service is given the same name, so each pair
//! of them finds the other at once; were both to dial, ractor_cluster would close one
//! of the two sessions, and a side that had counted on it would see its peer go. So
//! where a name's answer holds this node's own address, only the address that sorts
//! first of a pair dials: an address that sorts before this node's own is
//! [`Seed::defer`]red. Its node dials this one; and once this node is in the cluster,
//! gossip brings it every member anyway. So a deferred address is dialed only by a
//! node that has reached no member at all [`DEFER_DIAL`] after the address came (the
//! other node does not see this one in its answer yet, say). Addresses are compared as
//! socket addresses, which every node sorts alike.
//!
//! A seed found through a name keeps that name as the host its TLS certificate must
//! name, so with mutual TLS a node's certificate names the DNS name others join it by
//! (`scripts/make-certs.sh` adds names given in `SAN=`), as well as the node.
//!
//! What a name resolves to is logged when it changes ([`Seen`]); the addresses go to
//! the mesh whenever the set differs from the one before ([`keep_resolving`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tracing::info;

/// How often the seeds' names are resolved again.
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// The least time between two resolutions: a failed dial to an address a name gave
/// asks for one sooner than [`RESOLVE_EVERY`] (its node may have come back at
/// another address), but not more often than this.
pub(crate) const RESOLVE_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// How long one name's resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long this node leaves a [`Seed::defer`]red address to dial it first.
pub(crate) const DEFER_DIAL: Duration = Duration::from_secs(1);

/// A seed address to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seed {
    /// What its TLS certificate must name: the `--join` name it came from, or the
    /// address itself (its IP).
    pub(crate) host: String,
    /// Its node dials this one (both came from one name and its address sorts
    /// first): dialed only by a node with no member at all after [`DEFER_DIAL`].
    pub(crate) defer: bool,
}

/// The seeds to dial, by address (`IP:PORT`).
pub(crate) type SeedAddrs = BTreeMap<String, Seed>;

/// The seed given as an IP address and port, if it is one.
pub(crate) fn literal(seed: &str) -> Option<SocketAddr> {
    seed.parse().ok()
}

/// Whether any seed is a name that needs resolving.
pub(crate) fn any_names(seeds: &[String]) -> bool {
    seeds.iter().any(|seed| literal(seed).is_none())
}

/// The seeds given as addresses, ready to dial before any name is resolved.
pub(crate) fn literals(seeds: &[String], listen: SocketAddr) -> SeedAddrs {
    seeds
        .iter()
        .filter_map(|seed| literal(seed))
        .filter(|addr| !is_own(*addr, listen))
        .map(|addr| {
            let host = addr.to_string();
            (host.clone(), Seed { host, defer: false })
        })
        .collect()
}

/// Whether `addr` is this node's own cluster address, for a node listening on
/// `listen`: that address itself, or, listening on every interface, its port at an
/// address of this machine.
pub(crate) fn is_own(addr: SocketAddr, listen: SocketAddr) -> bool {
    addr == listen
        || (listen.ip().is_unspecified() && addr.port() == listen.port() && is_local(addr.ip()))
}

/// Whether `ip` belongs to this machine: a socket can be bound to it.
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The host part of a `HOST:PORT` seed, without an IPv6 address's brackets.
fn host_of(seed: &str) -> &str {
    let host = seed.rsplit_once(':').map_or(seed, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// One round's answer for each name: its addresses, or why it has none.
pub(crate) type Answers = BTreeMap<String, Result<BTreeSet<SocketAddr>, String>>;

/// The seeds to dial after a round: the literal ones and every address the names
/// gave, this node's own left out.
pub(crate) fn seed_addrs(seeds: &[String], answers: &Answers, listen: SocketAddr) -> SeedAddrs {
    let mut addrs = literals(seeds, listen);
    for (name, answer) in answers {
        let Ok(answer) = answer else {
            continue;
        };
        let answer = one_family(answer, listen);
        let own = answer.iter().find(|addr| is_own(**addr, listen));
        for addr in answer.iter().filter(|addr| !is_own(**addr, listen)) {
            let seed = Seed {
                host: host_of(name).to_string(),
                defer: own.is_some_and(|own| addr < own),
            };
            addrs.entry(addr.to_string()).or_insert(seed);
        }
    }
    addrs
}

/// A name's addresses of one family: the listen address's, where the answer has any
/// (a node with an IPv4 and an IPv6 address would otherwise be two seeds, and dialed
/// twice), else all of them.
fn one_family(answer: &BTreeSet<SocketAddr>, listen: SocketAddr) -> Vec<SocketAddr> {
    let same: Vec<SocketAddr> = answer
        .iter()
        .copied()
        .filter(|addr| addr.is_ipv4() == listen.is_ipv4())
        .collect();
    if same.is_empty() {
        answer.iter().copied().collect()
    } else {
        same
    }
}

/// Takes in a round's answers: each name's that resolved replaces the one before; one
/// that failed keeps its last addresses.
fn keep_good(good: &mut Answers, answers: Answers) {
    for (name, answer) in answers {
        if answer.is_ok() {
            good.insert(name, answer);
        }
    }
}

/// What was last said about each name, so that a log line comes only with a change.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    said: HashMap<String, Result<BTreeSet<SocketAddr>, String>>,
}

/// A change worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The name now resolves to these addresses.
    Resolved {
        name: String,
        addrs: Vec<SocketAddr>,
    },
    /// The name does not resolve, where it did (or at the first round).
    Unresolved { name: String, error: String },
}

impl Seen {
    /// The changes since the last round.
    pub(crate) fn changes(&mut self, answers: &Answers) -> Vec<Change> {
        let mut changes = Vec::new();
        for (name, answer) in answers {
            let was = self.said.get(name);
            let changed = match (was, answer) {
                (Some(Ok(before)), Ok(now)) => before != now,
                (Some(Err(_)), Err(_)) => false,
                _ => true,
            };
            if !changed {
                continue;
            }
            changes.push(match answer {
                Ok(addrs) => Change::Resolved {
                    name: name.clone(),
                    addrs: addrs.iter().copied().collect(),
                },
                Err(error) => Change::Unresolved {
                    name: name.clone(),
                    error: error.clone(),
                },
            });
            self.said.insert(name.clone(), answer.clone());
        }
        changes
    }
}

/// Resolves every seed that is a name, one after another, at most
/// [`RESOLVE_TIMEOUT`] each (a node has one or two).
pub(crate) async fn resolve(seeds: &[String]) -> Answers {
    let mut answers = Answers::new();
    for name in seeds.iter().filter(|s| literal(s).is_none()) {
        if answers.contains_key(name) {
            continue;
        }
        let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(name)).await;
        let answer = match lookup {
            Ok(Ok(addrs)) => {
                let addrs: BTreeSet<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    Err("the name has no address".to_string())
                } else {
                    Ok(addrs)
                }
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
        };
        answers.insert(name.clone(), answer);
    }
    answers
}

/// Waits for the next round of resolution: [`RESOLVE_AGAIN_AFTER`] after the last one
/// if `soon` (a name did not resolve) or once `asked` is notified (earlier or
/// meanwhile), else [`RESOLVE_EVERY`] after it.
pub(crate) async fn next_round(asked: &tokio::sync::Notify, soon: bool) {
    tokio::time::sleep(RESOLVE_AGAIN_AFTER).await;
    if soon {
        return;
    }
    let rest = RESOLVE_EVERY.saturating_sub(RESOLVE_AGAIN_AFTER);
    let _ = tokio::time::timeout(rest, asked.notified()).await;
}

/// Resolves the seeds' names now and at every `tick` ([`next_round`] in a node: told
/// whether a name failed, so that it comes sooner), logs what changed, and hands each
/// set of seed addresses that differs from the last one to `found`. A name that fails
/// keeps its last addresses: a lookup that fails while DNS restarts, or while the
/// name's only node restarts, does not make the node forget its seeds (an answer with
/// fewer addresses does). Ends when `found` says no one listens any more, or `tick`
/// says to stop. (The mesh also aborts the task when it stops: a set that never
/// changes would never ask `found`.)
pub(crate) async fn keep_resolving<T, F>(
    seeds: Vec<String>,
    listen: SocketAddr,
    mut tick: impl FnMut(bool) -> T,
    found: F,
) where
    T: Future<Output = bool>,
    F: Fn(SeedAddrs) -> bool,
{
    let mut seen = Seen::default();
    let mut last: Option<SeedAddrs> = None;
    let mut good = Answers::new();
    loop {
        let answers = resolve(&seeds).await;
        let failed = answers.values().any(Result::is_err);
        for change in seen.changes(&answers) {
            match change {
                Change::Resolved { name, addrs } => {
                    info!(seed = %name, ?addrs, "seed: the name resolves to these addresses")
                }
                Change::Unresolved { name, error } => info!(
                    seed = %name,
                    %error,
                    every = ?RESOLVE_AGAIN_AFTER,
                    "seed: the name does not resolve (yet); trying again, keeping its last addresses"
                ),
            }
        }
        keep_good(&mut good, answers);
        let addrs = seed_addrs(&seeds, &good, listen);
        if last.as_ref() != Some(&addrs) {
            if !found(addrs.clone()) {
                return;
            }
            last = Some(addrs);
        }
        if !tick(failed).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn set(addrs: &[&str]) -> Result<BTreeSet<SocketAddr>, String> {
        Ok(addrs.iter().map(|a| sa(a)).collect())
    }

    #[test]
    fn a_node_knows_its_own_address_and_no_other() {
        let listen = sa("127.0.10.1:4697");
        assert!(is_own(sa("127.0.10.1:4697"), listen));
        assert!(!is_own(sa("127.0.10.2:4697"), listen));
        assert!(!is_own(sa("127.0.10.1:4698"), listen));
        // Listening on every interface: its port at any address of this machine.
        let everywhere = sa("0.0.0.0:4697");
        assert!(is_own(sa("127.0.0.1:4697"), everywhere));
        assert!(!is_own(sa("127.0.0.1:4698"), everywhere));
        // TEST-NET-3 (RFC 5737): no machine has it.
        assert!(!is_own(sa("203.0.113.7:4697"), everywhere));
    }

    #[test]
    fn every_address_of_a_name_is_a_seed_but_this_nodes_own() {
        let seeds = vec!["nodes:4697".to_string(), "10.9.9.9:4000".to_string()];
        let mut answers = Answers::new();
        answers.insert(
            "nodes:4697".into(),
            set(&["127.0.10.1:4697", "127.0.10.2:4697", "127.0.10.3:4697"]),
        );
        let addrs = seed_addrs(&seeds, &answers, sa("127.0.10.2:4697"));
        let seed = |host: &str, defer| Seed {
            host: host.into(),
            defer,
        };
        let expected: SeedAddrs = [
            ("10.9.9.9:4000", seed("10.9.9.9:4000", false)),
            // Sorts before this node's own address: that node dials this one.
            ("127.0.10.1:4697", seed("nodes", true)),
            ("127.0.10.3:4697", seed("nodes", false)),
        ]
        .into_iter()
        .map(|(a, s)| (a.to_string(), s))
        .collect();
        assert_eq!(addrs, expected);
        // A node the name does not give (yet) dials every address at once.
        let outside = seed_addrs(&seeds, &answers, sa("127.0.10.9:4697"));
        assert!(outside.values().all(|s| !s.defer), "{outside:?}");
        // A name that does not resolve adds nothing; the literal seed stays.
        answers.insert("nodes:4697".into(), Err("no such host".into()));
        let addrs = seed_addrs(&seeds, &answers, sa("127.0.10.2:4697"));
        assert_eq!(addrs.keys().collect::<Vec<_>>(), ["10.9.9.9:4000"]);
        assert!(any_names(&seeds));
        assert!(!any_names(&seeds[1..]));
    }

    #[test]
    fn a_failed_lookup_keeps_a_names_last_addresses_and_a_smaller_answer_does_not() {
        let mut good = Answers::new();
        let round = |answer| Answers::from([("nodes:4697".to_string(), answer)]);
        keep_good(&mut good, round(Err("no such host".into())));
        assert!(good.is_empty());
        keep_good(&mut good, round(set(&["10.0.0.1:4697", "10.0.0.2:4697"])));
        keep_good(&mut good, round(Err("timed out".into())));
        assert_eq!(good["nodes:4697"], set(&["10.0.0.1:4697", "10.0.0.2:4697"]));
        // A replica scaled away: the answer shrinks, and so do the seeds.
        keep_good(&mut good, round(set(&["10.0.0.1:4697"])));
        assert_eq!(good["nodes:4697"], set(&["10.0.0.1:4697"]));
    }

    #[test]
    fn a_node_with_two_address_families_is_one_seed_of_the_listen_addresss_family() {
        let seeds = vec!["nodes:4697".to_string()];
        let answers = Answers::from([(
            "nodes:4697".to_string(),
            set(&[
                "10.0.0.1:4697",
                "[fd00::1]:4697",
                "10.0.0.3:4697",
                "[fd00::3]:4697",
            ]),
        )]);
        let v4: Vec<String> = seed_addrs(&seeds, &answers, sa("10.0.0.2:4697"))
            .into_keys()
            .collect();
        assert_eq!(v4, ["10.0.0.1:4697", "10.0.0.3:4697"]);
        let v6: Vec<String> = seed_addrs(&seeds, &answers, sa("[::]:4697"))
            .into_keys()
            .collect();
        assert_eq!(v6, ["[fd00::1]:4697", "[fd00::3]:4697"]);
        // Only the other family in the answer: taken as it is.
        let only_v6 = Answers::from([("nodes:4697".to_string(), set(&["[fd00::1]:4697"]))]);
        assert_eq!(seed_addrs(&seeds, &only_v6, sa("10.0.0.2:4697")).len(), 1);
    }

    #[test]
    fn a_line_is_logged_only_when_what_a_name_resolves_to_changes() {
        let mut seen = Seen::default();
        let mut answers = Answers::new();
        answers.insert("nodes:4697".into(), Err("no such host".into()));
        let first = seen.changes(&answers);
        assert!(matches!(&first[..], [Change::Unresolved { name, .. }] if name == "nodes:4697"));
        // Still failing (even with another error): nothing new to say.
        answers.insert("nodes:4697".into(), Err("timed out".into()));
        assert_eq!(seen.changes(&answers), []);
        answers.insert("nodes:4697".into(), set(&["10.0.0.1:4697"]));
        assert_eq!(
            seen.changes(&answers),
            [Change::Resolved {
                name: "nodes:4697".into(),
                addrs: vec![sa("10.0.0.1:4697")]
            }]
        );
        assert_eq!(seen.changes(&answers), []);
        answers.insert(
            "nodes:4697".into(),
            set(&["10.0.0.1:4697", "10.0.0.2:4697"]),
        );
        assert_eq!(seen.changes(&answers).len(), 1);
        answers.insert("nodes:4697".into(), Err("no such host".into()));
        assert_eq!(seen.changes(&answers).len(), 1);
    }

    /// The loop hands over the first set at once and then only sets that differ.
    /// Real resolution: `localhost` and an IP address, three rounds.
    #[tokio::test]
    async fn the_seeds_go_to_the_mesh_once_and_again_only_when_they_change() {
        let seeds = vec!["localhost:4801".to_string(), "127.0.0.9:4802".to_string()];
        let got: Arc<Mutex<Vec<SeedAddrs>>> = Arc::default();
        let sink = Arc::clone(&got);
        let mut rounds = 0;
        keep_resolving(
            seeds,
            sa("127.0.0.1:4697"),
            move |_| {
                rounds += 1;
                std::future::ready(rounds < 3)
            },
            move |addrs| {
                sink.lock().unwrap().push(addrs);
                true
            },
        )
        .await;
        let got = got.lock().unwrap();
        assert_eq!(
            got.len(),
            1,
            "an unchanged set was handed over again: {got:?}"
        );
        assert!(got[0].contains_key("127.0.0.9:4802"), "{got:?}");
        assert_eq!(
            got[0].get("127.0.0.1:4801").map(|s| s.host.as_str()),
            Some("localhost"),
            "{got:?}"
        );
    }

    /// Rounds come every RESOLVE_EVERY, or RESOLVE_AGAIN_AFTER after the last once
    /// asked or after a name failed (on tokio's paused clock).
    #[tokio::test(start_paused = true)]
    async fn a_round_comes_sooner_when_asked_but_never_within_a_second() {
        let asked = tokio::sync::Notify::new();
        let start = tokio::time::Instant::now();
        next_round(&asked, false).await;
        assert_eq!(start.elapsed(), RESOLVE_EVERY);
        // A name failed: the least gap.
        let start = tokio::time::Instant::now();
        next_round(&asked, true).await;
        assert_eq!(start.elapsed(), RESOLVE_AGAIN_AFTER);
        // Asked before the least gap is over: the round waits for it.
        let start = tokio::time::Instant::now();
        asked.notify_one();
        next_round(&asked, false).await;
        assert_eq!(start.elapsed(), RESOLVE_AGAIN_AFTER);
        // Asked meanwhile, after the least gap.
        let start = tokio::time::Instant::now();
        let round = next_round(&asked, false);
        let ask = async {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            asked.notify_one();
        };
        tokio::join!(round, ask);
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
    }

    /// Nobody listening ends the loop at once, whatever the ticks say.
    #[tokio::test]
    async fn the_loop_ends_when_nobody_listens() {
        let seeds = vec!["127.0.0.9:4802".to_string()];
        keep_resolving(
            seeds,
            sa("127.0.0.1:4697"),
            |_| async { panic!("ticked after nobody listened") },
            |_| false,
        )
        .await;
    }
}
