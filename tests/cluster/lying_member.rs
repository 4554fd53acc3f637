//! A member that lies, built from the libraries in this test process: it holds the
//! cookie and joins as a member named `liar`, and then speaks for others. Every honest
//! node keeps serving, believes nothing it says about anyone but itself, keeps its
//! memory bounded, and its stats stay honest.

use std::time::Duration;

use ractor::{pg, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use shared::agent::{AgentMessage, Beat, Departure, NodeInfo, PeerAddr, View};
use shared::counter::{ApplyOutcome, CounterError, Delta};
use shared::host::{Batch, Change, CollectReply, HostMessage, LocalReport, StreamId};
use shared::protocol::{Role, HOSTS_GROUP, NODES_GROUP, PROTOCOL_VERSION};

use crate::metrics::{sample, scrape};
use crate::util::{client_ok, lines_with, peak_rss_mib, wait_for, Cluster, COOKIE};

/// The liar's description of itself: as many counters as a u32 holds, and a known
/// member, worker-1, at an address that is not its own.
fn lie() -> NodeInfo {
    NodeInfo {
        name: "liar".into(),
        role: Role::Worker,
        advertise: "127.0.0.1:1".into(),
        protocol_version: PROTOCOL_VERSION,
        incarnation: 1,
        counters: u32::MAX,
        counter_restarts: 0,
        issued_value: 0,
        issued_operations: 0,
        in_flight_operations: 0,
        in_flight_to: Vec::new(),
        unvouched_value: 0,
        unvouched_operations: 0,
        received: Vec::new(),
        store_commits: 0,
        copy: Default::default(),
        known_peers: vec![PeerAddr {
            name: "worker-1".into(),
            addr: "127.0.0.1:1".into(),
            incarnation: 99,
        }],
    }
}

/// What the liar says it takes with it when it leaves.
fn farewell() -> Departure {
    Departure {
        for_good: true,
        counters: 0,
        known: true,
        value: 0,
        operations: 0,
        issued_value: 0,
        issued_operations: 0,
        in_flight_operations: 0,
        store_id: 0,
    }
}

/// An actor that answers what it is asked with lies (but heartbeats truly), and holds
/// everything else.
struct Liar;

impl Actor for Liar {
    type Msg = AgentMessage;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMessage>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        pg::join(NODES_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<AgentMessage>,
        message: AgentMessage,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMessage::GetInfo(reply) => {
                let _ = reply.send(lie());
            }
            AgentMessage::Gossip(_, reply) => {
                let lie = lie();
                let _ = reply.send(View {
                    node: PeerAddr {
                        name: lie.name,
                        addr: lie.advertise,
                        incarnation: lie.incarnation,
                    },
                    role: lie.role,
                    counters: lie.counters,
                    peers: Some(lie.known_peers),
                });
            }
            // It stays up: it answers heartbeats, in its own name.
            AgentMessage::Heartbeat(_, reply) => {
                let _ = reply.send(Beat {
                    from: "liar".into(),
                    incarnation: 1,
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// A counter host that answers collections for counters that are not its own, and a
/// forged host for another node, both held here.
struct LyingHost;

impl Actor for LyingHost {
    type Msg = HostMessage;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<HostMessage>,
        _: (),
    ) -> Result<u64, ActorProcessingErr> {
        pg::join(HOSTS_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<HostMessage>,
        message: HostMessage,
        received: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *received += 1;
        if let HostMessage::Collect { first, reply, .. } = message {
            let _ = reply.send(CollectReply(Some(LocalReport {
                info: lie(),
                first,
                counters: vec![None],
                next: None,
            })));
        }
        Ok(())
    }
}

/// Sends `message` to `actor` and waits up to 300 ms for an answer: `None` if none came
/// (the node dropped it).
async fn ask<M: ractor::Message, R: ractor::Message>(
    actor: &ActorRef<M>,
    message: impl FnOnce(RpcReplyPort<R>) -> M,
) -> Option<R> {
    match actor.call(message, Some(Duration::from_millis(300))).await {
        Ok(ractor::rpc::CallResult::Success(answer)) => Some(answer),
        _ => None,
    }
}

/// A liar joins: speaks for worker-1 (leaves in its name, beats for it, streams in its
/// name, registers a host in its name, moves its address), claims a count of counters
/// that would size allocations, floods stream origins of its own, sends sums that
/// overflow and an id far beyond the bound. Nothing of it takes: worker-1 stays, every
/// counter holds what honest changes made it, the coordinator's memory stays flat.
/// When the liar leaves (in its own name, which it may), the collection is complete
/// and exact.
#[test]
fn a_lying_member_speaks_only_for_itself() {
    let _one_in_process_client = crate::util::in_process_client_lock();
    let (cluster, https) =
        Cluster::start_with_http(&["coordinator", "worker-1"], &["--counters", "2"]);
    cluster.wait_mesh(4);
    let addr = cluster.nodes[0].addr.clone();
    // Honest changes: coordinator/0 is 10, worker-1/0 is 20.
    client_ok(&["incr", "coordinator/0", "--by", "10", "--join", &addr]);
    client_ok(&["incr", "worker-1/0", "--by", "20", "--join", &addr]);
    let coordinator_pid = cluster.nodes[0].child.id();
    let peak_before = peak_rss_mib(coordinator_pid);
    let worker_1_addr = cluster.nodes[1].addr.clone();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = ractor_cluster::NodeServer::new(
            0,
            COOKIE.to_string(),
            "liar".to_string(),
            "127.0.0.1".to_string(),
            None,
            None,
        )
        .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
        let (server, server_handle) = Actor::spawn(None, server, ()).await.unwrap();
        let (agent, agent_handle) = Actor::spawn(Some("liar/agent".into()), Liar, ())
            .await
            .unwrap();
        let (host, host_handle) = Actor::spawn(Some("liar/host".into()), LyingHost, ())
            .await
            .unwrap();
        let (forged, forged_handle) = Actor::spawn(Some("worker-1/host".into()), LyingHost, ())
            .await
            .unwrap();
        ractor_cluster::client_connect(&server, addr.as_str())
            .await
            .unwrap();
        let coordinator_host = wait_for("the coordinator's host", Duration::from_secs(10), || {
            node::find_host("coordinator").ok_or("not yet".to_string())
        });
        let coordinator_agent =
            wait_for("the coordinator's agent", Duration::from_secs(10), || {
                node::remote_agents()
                    .into_iter()
                    .find(|(name, _)| name == "coordinator")
                    .map(|(_, agent)| agent)
                    .ok_or("not yet".to_string())
            });

        // Leaves, and beats, in worker-1's name: not answered, not believed.
        let leaving = |from: &str| Beat {
            from: from.into(),
            incarnation: u64::MAX,
        };
        let left = ask(&coordinator_agent, |r| {
            AgentMessage::Leaving(leaving("worker-1"), farewell(), r)
        })
        .await;
        assert_eq!(left, None, "a leave notice in another's name was taken");
        let beat = ask(&coordinator_agent, |r| {
            AgentMessage::Heartbeat(leaving("worker-1"), r)
        })
        .await;
        assert_eq!(beat, None, "a heartbeat in another's name was answered");
        // Word that worker-1 went silent: in worker-1's own name (refused), and in
        // the liar's (which it may say: the coordinator checks it, and worker-1
        // answers).
        let worker_1_at = PeerAddr {
            name: "worker-1".into(),
            addr: worker_1_addr.clone(),
            incarnation: 0,
        };
        for from in ["worker-1", "liar"] {
            coordinator_agent
                .cast(AgentMessage::Suspect(leaving(from), worker_1_at.clone()))
                .unwrap();
        }
        let checked = |outcome: &str| {
            format!(
                "counter_cluster_suspicions_checked_total{{node=\"coordinator\",outcome=\"{outcome}\"}}"
            )
        };
        wait_for(
            "the coordinator to check the liar's word against worker-1 itself",
            Duration::from_secs(10),
            || {
                let metrics = scrape(&https[0])?;
                match sample(&metrics, &checked("refuted")) {
                    Some(n) if n >= 1.0 => Ok(()),
                    _ => Err(format!("no refuted check in\n{metrics}")),
                }
            },
        );
        let metrics = scrape(&https[0]).unwrap();
        assert_eq!(sample(&metrics, &checked("confirmed")), None, "{metrics}");

        // Batches in worker-1's name, and a flood of streams of its own.
        let batch = |sender: &str, origin: u64, delta: i128| Batch {
            stream: StreamId {
                sender: sender.into(),
                origin,
            },
            seq: 1,
            base: 0,
            changes: vec![Change {
                counter: 0,
                delta,
                operations: 1,
            }],
        };
        coordinator_host
            .cast(HostMessage::Batch(batch("worker-1", 1, 1_000_000)))
            .unwrap();
        let synced = ask(&coordinator_host, |r| {
            HostMessage::Sync(
                StreamId {
                    sender: "worker-1".into(),
                    origin: 1,
                },
                r,
            )
        })
        .await;
        assert_eq!(synced, None, "a sync of another's stream was answered");
        let synced_batch = ask(&coordinator_host, |r| {
            HostMessage::SyncedBatch(batch("worker-1", 1, 1_000_000), r)
        })
        .await;
        assert_eq!(
            synced_batch, None,
            "a batch of another's stream, with its fence, was answered"
        );
        for origin in 0..1_000 {
            coordinator_host
                .cast(HostMessage::Batch(batch("liar", origin, 1)))
                .unwrap();
        }
        // Sums that overflow, in its own name.
        let mut overflowing = batch("liar", 5_000, i128::MAX);
        overflowing.changes.push(overflowing.changes[0]);
        coordinator_host
            .cast(HostMessage::Batch(overflowing))
            .unwrap();
        // A change whose id is far beyond the bound, straight to the host.
        let refused = ask(&coordinator_host, |reply| HostMessage::Apply {
            counter: 1,
            delta: Delta::Increment(1),
            id: "x".repeat(10_000),
            reply,
        })
        .await;
        assert!(
            matches!(
                refused,
                Some(ApplyOutcome(Err(CounterError::Unavailable(_))))
            ),
            "{refused:?}"
        );

        // Every honest view stays: worker-1 is up, in full, at its own address, and
        // no counter moved beyond what the liar's own 64 streams carried.
        let stats = wait_for("a collection", Duration::from_secs(10), || {
            crate::util::stats(&addr)
        });
        let worker_1 = crate::util::node_entry(&stats, "worker-1").expect("worker-1 is hidden");
        assert_eq!(worker_1["reachable"], true, "{stats}");
        assert_eq!(worker_1["answered"], true, "{stats}");
        let value = |name: &str| counter(&stats, name);
        assert_eq!(value("worker-1/0"), Some(20), "{stats}");
        let coordinator_0 = value("coordinator/0").unwrap();
        assert!(
            (10..=10 + 64).contains(&coordinator_0),
            "coordinator/0 is {coordinator_0}: more than the liar's bounded streams: {stats}"
        );
        let liar = crate::util::node_entry(&stats, "liar").expect("the liar is a member");
        assert_eq!(
            liar["answered"], false,
            "the liar's description was believed: {stats}"
        );
        let members = crate::http::get(&https[0], "/cluster/members");
        let listed = members.body["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "worker-1"))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            listed["address"],
            worker_1_addr.as_str(),
            "{}",
            members.text
        );
        // The forged host was never mirrored: a change to worker-1 through the
        // coordinator reaches worker-1 (the forged host would never answer it).
        let changed = client_ok(&["incr", "worker-1/0", "--by", "1", "--join", &addr]);
        assert_eq!(changed, "21");

        // The liar leaves, in its own name: that it may.
        let left = ask(&coordinator_agent, |r| {
            AgentMessage::Leaving(leaving("liar"), farewell(), r)
        })
        .await;
        assert_eq!(left, Some(true));
        server.stop(None);
        server_handle.await.unwrap();
        agent.stop(None);
        host.stop(None);
        forged.stop(None);
        for handle in [agent_handle, host_handle, forged_handle] {
            handle.await.unwrap();
        }
    });

    let stats = cluster.wait_complete(0, 2, 4);
    assert_eq!(counter(&stats, "worker-1/0"), Some(21), "{stats}");
    // The coordinator counted what it refused: what the liar said for worker-1, the
    // streams beyond the bounds, the batch whose sums overflow.
    let refused = [
        ("peer_refusals_total", "another_stream"),
        ("peer_refusals_total", "another_heartbeat"),
        ("peer_refusals_total", "another_nodes_actor"),
        // The flood of streams was bounded.
        ("batches_refused_total", "too_many_streams"),
        ("batches_refused_total", "sums_overflow"),
    ]
    .map(|(name, why)| format!("counter_cluster_{name}{{node=\"coordinator\",reason=\"{why}\"}}"));
    wait_for(
        "the coordinator to count what it refused",
        Duration::from_secs(10),
        || {
            let metrics = scrape(&https[0])?;
            match refused
                .iter()
                .find(|s| sample(&metrics, s).is_none_or(|n| n < 1.0))
            {
                None => Ok(()),
                Some(series) => Err(format!("{series} is not above 0 in\n{metrics}")),
            }
        },
    );
    let log = cluster.nodes[0].log();
    assert_eq!(lines_with(&log, "panicked"), 0, "{log}");
    let peak_after = peak_rss_mib(coordinator_pid);
    println!("  the coordinator's peak memory: {peak_before:.1} -> {peak_after:.1} MiB");
    assert!(
        peak_after < peak_before + 64.0,
        "the coordinator's peak memory grew from {peak_before:.1} to {peak_after:.1} MiB"
    );
}

/// Counter `name`'s value in a collection.
fn counter(stats: &Value, name: &str) -> Option<i64> {
    stats["nodes"]
        .as_array()?
        .iter()
        .flat_map(|n| n["counters"].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)?["value"]
        .as_i64()
}
