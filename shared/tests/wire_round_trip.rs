//! Every wire type survives the codec, and bad bytes are refused instead of guessed at.
#![allow(clippy::unwrap_used)]

use ractor::message::SerializedMessage;
use ractor::{BytesConvertable, Message, RpcReplyPort};
use serde::{de::DeserializeOwned, Serialize};
use shared::agent::{AgentMessage, Beat, PeerAddr, View};
use shared::codec::{decode, encode, CodecError};
use shared::protocol::{Role, PROTOCOL_VERSION};
use shared::stats::SenderTotals;
use shared::*;

fn round_trip<T>(value: T)
where
    T: Serialize + DeserializeOwned + BytesConvertable + Clone + PartialEq + std::fmt::Debug,
{
    let bytes = encode(&value).unwrap();
    assert_eq!(decode::<T>(&bytes).unwrap(), value);
    assert_eq!(T::from_bytes(value.clone().into_bytes()), value);
}

fn sample_stats() -> ClusterStats {
    ClusterStats {
        collected_by: "coordinator".into(),
        collected_at_ms: 1_700_000_000_000,
        duration_ms: 3,
        deadline_ms: 1000,
        total_value: -(1 << 70),
        total_operations: 1 << 66,
        num_counters: 1,
        known_counters: 2,
        num_nodes: 2,
        reachable_nodes: 1,
        complete: false,
        avg_ops_per_sec: 1.5,
        recent_ops_per_sec: 0.25,
        issued_value: 7,
        issued_operations: 9,
        in_flight_operations: 2,
        unvouched_value: -3,
        unvouched_operations: 5,
        missing_counters: vec!["w/1".into()],
        missing_links: vec!["w -> v".into()],
        nodes: vec![NodeStats {
            name: "w".into(),
            role: Some(Role::Worker),
            advertise: Some("h:1".into()),
            reachable: true,
            since_ms: 1_700_000_000_000,
            answered: false,
            issued_value: -3,
            issued_operations: 4,
            in_flight_operations: 2,
            unvouched_value: 0,
            unvouched_operations: -2,
            received: vec![SenderTotals {
                sender: "v".into(),
                value: -9,
                operations: 12,
            }],
            counter_restarts: 1,
            copy: shared::copies::CopyStatus {
                copies: 2,
                kept_by: Some("b".into()),
                lag_commits: 3,
            },
            counters: vec![CounterReport {
                name: "w/0".into(),
                value: i64::MIN,
                operations: u64::MAX,
                rejected: 2,
                ops_per_sec: 10.0,
                recent_ops_per_sec: 5.0,
            }],
            missing_counters: vec!["w/1".into()],
        }],
        departed: vec![shared::stats::DepartedNode {
            name: "v".into(),
            for_good: true,
            left_at_ms: 1_700_000_000_000,
            counters: 3,
            known: true,
            value: -(1 << 65),
            operations: 1 << 65,
            issued_value: -1,
            issued_operations: 2,
            in_flight_operations: 0,
            in_flight_to_it: 4,
        }],
    }
}

fn sample_counter() -> CounterStats {
    CounterStats {
        name: "n/0".into(),
        value: 42,
        operations: 7,
        rejected: 1,
        ops_per_sec: 3.5,
        recent_ops_per_sec: 2.0,
        uptime_ms: 2000,
    }
}

#[test]
fn data_types_round_trip() {
    round_trip(Delta::Increment(u64::MAX));
    round_trip(Delta::Decrement(0));
    round_trip(ValueOutcome(Ok(-5)));
    round_trip(ValueOutcome(Err(CounterError::Overflow {
        value: i64::MAX,
        delta: Delta::Increment(1),
    })));
    round_trip(ValueOutcome(Err(CounterError::NoSuchCounter("n/9".into()))));
    round_trip(StatsOutcome(Ok(sample_counter())));
    round_trip(StatsOutcome(Err(CounterError::NotRunning("n/1".into()))));
    round_trip(sample_counter());
    round_trip(Batch {
        stream: StreamId {
            sender: "n".into(),
            origin: 1,
        },
        seq: u64::MAX,
        base: 0,
        changes: vec![
            Change {
                counter: 0,
                delta: i128::from(i64::MIN) * 3,
                operations: u64::MAX,
            },
            Change {
                counter: u32::MAX,
                delta: 5,
                operations: 2,
            },
        ],
    });
    round_trip(PeerAddr {
        name: "n".into(),
        addr: "[::1]:4697".into(),
        incarnation: u64::MAX,
    });
    round_trip(NodeInfo {
        name: "n".into(),
        role: Role::Coordinator,
        advertise: "n:4697".into(),
        protocol_version: PROTOCOL_VERSION,
        incarnation: u64::MAX,
        counters: 4,
        counter_restarts: 0,
        issued_value: -1,
        issued_operations: 1,
        in_flight_operations: 1,
        in_flight_to: vec![shared::agent::InFlightTo {
            node: "w".into(),
            operations: 1,
        }],
        unvouched_value: 0,
        unvouched_operations: -2,
        store_commits: 3,
        received: vec![],
        copy: shared::copies::CopyStatus::default(),
        known_peers: vec![PeerAddr {
            name: "m".into(),
            addr: "m:4697".into(),
            incarnation: 3,
        }],
    });
    for request in [
        ClientRequest::Stats {
            deadline_ms: 500,
            per_counter: true,
        },
        ClientRequest::LastStats { per_counter: false },
        ClientRequest::Apply {
            counter: "n/1".into(),
            delta: Delta::Decrement(3),
            id: "id-1".into(),
        },
        ClientRequest::Get {
            counter: "n/1".into(),
        },
        ClientRequest::Crash(CrashTarget::Counter("n/2".into())),
        ClientRequest::Crash(CrashTarget::ClusterServer),
    ] {
        round_trip(request);
    }
    round_trip(ClientReply(Ok(ClientAnswer::Value(3))));
    round_trip(ClientReply(Ok(ClientAnswer::Done)));
    round_trip(ClientReply(Err(ClientError::FaultInjectionDisabled(
        "n".into(),
    ))));
    round_trip(ClientReply(Err(ClientError::Busy("n".into()))));
    round_trip(CollectReply(None));
    round_trip(LocalReport {
        info: NodeInfo {
            name: "n".into(),
            role: Role::Worker,
            advertise: "n:1".into(),
            protocol_version: PROTOCOL_VERSION,
            incarnation: 2,
            counters: 2,
            counter_restarts: 0,
            issued_value: 0,
            issued_operations: 0,
            in_flight_operations: 0,
            in_flight_to: Vec::new(),
            unvouched_value: 0,
            unvouched_operations: -2,
            received: vec![],
            store_commits: 0,
            copy: shared::copies::CopyStatus::default(),
            known_peers: vec![],
        },
        first: 50_000,
        counters: vec![None, Some(sample_counter())],
        next: Some(50_002),
    });
    round_trip(CollectReply(Some(LocalReport {
        info: sample_info(),
        first: 0,
        counters: vec![Some(sample_counter())],
        next: None,
    })));
    round_trip(Beat {
        from: "n".into(),
        incarnation: 9,
    });
    round_trip(ClientReply(Ok(ClientAnswer::Stats(Box::new(
        sample_stats(),
    )))));
    round_trip(ClientReply(Err(ClientError::UnknownCounter {
        name: "x".into(),
        example: "n/0".into(),
    })));
    round_trip(sample_stats());
}

#[test]
fn bad_bytes_are_errors() {
    let mut bytes = encode(&Delta::Increment(5)).unwrap();
    bytes.push(0);
    assert!(matches!(
        decode::<Delta>(&bytes),
        Err(CodecError::TrailingBytes { extra: 1 })
    ));
    assert!(decode::<Delta>(&[9]).is_err(), "unknown enum tag");
    assert!(decode::<CounterStats>(&[]).is_err(), "truncated");
    // A length prefix claiming ~2^62 bytes must not allocate it.
    assert!(decode::<PeerAddr>(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0x40]).is_err());
}

#[test]
fn cast_messages_round_trip_and_garbage_is_refused() {
    let batch = Batch {
        stream: StreamId {
            sender: "n".into(),
            origin: 9,
        },
        seq: 3,
        base: 2,
        changes: vec![Change {
            counter: 1,
            delta: -7,
            operations: 3,
        }],
    };
    let serialized = HostMessage::Batch(batch.clone()).serialize().unwrap();
    match HostMessage::deserialize(serialized).unwrap() {
        HostMessage::Batch(got) => assert_eq!(got, batch),
        _ => panic!("wrong variant"),
    }
    let beat = Beat {
        from: "n".into(),
        incarnation: 3,
    };
    let suspect = PeerAddr {
        name: "m".into(),
        addr: "h:1".into(),
        incarnation: 0,
    };
    let serialized = AgentMessage::Suspect(beat.clone(), suspect.clone())
        .serialize()
        .unwrap();
    match AgentMessage::deserialize(serialized).unwrap() {
        AgentMessage::Suspect(b, s) => assert_eq!((b, s), (beat, suspect)),
        _ => panic!("wrong variant"),
    }
    let unknown = SerializedMessage::Cast {
        variant: "Explode".into(),
        args: vec![],
        metadata: None,
    };
    assert!(HostMessage::deserialize(unknown).is_err());
    let garbage = SerializedMessage::Cast {
        variant: "Increment".into(),
        args: vec![1, 2, 3],
        metadata: None,
    };
    assert!(HostMessage::deserialize(garbage).is_err());
}

/// Serializes a call, deserializes it as the receiver would, answers through the
/// receiver's port, and checks that the caller gets the answer: an RPC through bytes.
async fn rpc_round_trip<M: Message, R: Send + 'static + std::fmt::Debug + PartialEq + Clone>(
    build: impl FnOnce(RpcReplyPort<R>) -> M,
    answer: impl FnOnce(M, R),
    reply: R,
) {
    let (tx, rx) = ractor::concurrency::oneshot();
    let message = build(RpcReplyPort::from((tx, std::time::Duration::from_secs(5))));
    let received = M::deserialize(message.serialize().unwrap()).unwrap();
    answer(received, reply.clone());
    assert_eq!(rx.await.unwrap(), reply);
}

#[tokio::test]
async fn rpc_messages_round_trip_through_bytes() {
    rpc_round_trip(
        |reply| HostMessage::Apply {
            counter: 2,
            delta: Delta::Decrement(9),
            id: "k".into(),
            reply,
        },
        |m, r| match m {
            HostMessage::Apply {
                counter,
                delta,
                id,
                reply,
            } => {
                assert_eq!((counter, delta, id.as_str()), (2, Delta::Decrement(9), "k"));
                reply.send(r).unwrap();
            }
            _ => panic!("wrong variant"),
        },
        ApplyOutcome(Ok(Applied {
            value: -9,
            repeated: true,
        })),
    )
    .await;
    rpc_round_trip(
        |reply| HostMessage::GetValue(7, reply),
        |m, r| match m {
            HostMessage::GetValue(7, reply) => reply.send(r).unwrap(),
            _ => panic!("wrong variant"),
        },
        ValueOutcome(Ok(-17)),
    )
    .await;
    rpc_round_trip(
        |reply| HostMessage::GetStats(0, reply),
        |m, r| match m {
            HostMessage::GetStats(0, reply) => reply.send(r).unwrap(),
            _ => panic!("wrong variant"),
        },
        StatsOutcome(Ok(sample_counter())),
    )
    .await;
    rpc_round_trip(
        |reply| {
            let stream = StreamId {
                sender: "n".into(),
                origin: 41,
            };
            HostMessage::Sync(stream, reply)
        },
        |m, r| match m {
            HostMessage::Sync(StreamId { origin: 41, .. }, reply) => reply.send(r).unwrap(),
            _ => panic!("wrong variant"),
        },
        StreamMark {
            seq: 41,
            value: -9,
            operations: 12,
        },
    )
    .await;
    let beat = Beat {
        from: "n".into(),
        incarnation: 3,
    };
    rpc_round_trip(
        |reply| AgentMessage::Heartbeat(beat.clone(), reply),
        |m, r| match m {
            AgentMessage::Heartbeat(b, reply) if b == beat => reply.send(r).unwrap(),
            _ => panic!("wrong variant"),
        },
        Beat {
            from: "m".into(),
            incarnation: 4,
        },
    )
    .await;
    let view = View {
        node: PeerAddr {
            name: "m".into(),
            addr: "h:1".into(),
            incarnation: 4,
        },
        role: shared::protocol::Role::Worker,
        counters: 3,
        peers: None,
    };
    rpc_round_trip(
        |reply| AgentMessage::Gossip(77, reply),
        |m, r| match m {
            AgentMessage::Gossip(77, reply) => reply.send(r).unwrap(),
            _ => panic!("wrong variant"),
        },
        view,
    )
    .await;
    rpc_round_trip(
        |reply| AgentMessage::Client(ClientRequest::LastStats { per_counter: true }, reply),
        |m, r| match m {
            AgentMessage::Client(ClientRequest::LastStats { per_counter: true }, reply) => {
                reply.send(r).unwrap()
            }
            _ => panic!("wrong variant"),
        },
        ClientReply(Ok(ClientAnswer::Stats(Box::new(sample_stats())))),
    )
    .await;
    rpc_round_trip(
        AgentMessage::GetInfo,
        |m, r| match m {
            AgentMessage::GetInfo(reply) => reply.send(r).unwrap(),
            _ => panic!("wrong variant"),
        },
        sample_info(),
    )
    .await;
    rpc_round_trip(
        |reply| HostMessage::Collect {
            deadline_ms: 250,
            first: 7,
            reply,
        },
        |m, r| match m {
            HostMessage::Collect {
                deadline_ms: 250,
                first: 7,
                reply,
            } => reply.send(r).unwrap(),
            _ => panic!("wrong variant"),
        },
        CollectReply(Some(LocalReport {
            info: sample_info(),
            first: 7,
            counters: vec![None],
            next: None,
        })),
    )
    .await;
}

fn sample_info() -> NodeInfo {
    NodeInfo {
        name: "n".into(),
        role: Role::Worker,
        advertise: "n:1".into(),
        protocol_version: PROTOCOL_VERSION,
        incarnation: 1,
        counters: 1,
        counter_restarts: 0,
        issued_value: 0,
        issued_operations: 0,
        in_flight_operations: 0,
        in_flight_to: Vec::new(),
        unvouched_value: 0,
        unvouched_operations: -2,
        received: vec![],
        store_commits: 0,
        copy: shared::copies::CopyStatus::default(),
        known_peers: vec![],
    }
}
