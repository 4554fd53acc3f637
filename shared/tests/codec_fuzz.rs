//! Fuzzing the wire codec with proptest (runs in `cargo test`, so in CI): whatever bytes
//! a peer sends, decoding answers `Ok` or `Err` and never panics, allocates without
//! bound, or accepts trailing garbage; and whole messages with random variant tags and
//! arguments never get past `deserialize` as anything but `Ok` or `Err`.
//!
//! `PROPTEST_CASES` raises the number of cases for a longer run.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use ractor::message::SerializedMessage;
use ractor::Message;
use serde::de::DeserializeOwned;
use shared::agent::{AgentMessage, Beat, ClientReply, ClientRequest, NodeInfo, PeerAddr};
use shared::codec::{decode, encode};
use shared::counter::{CounterError, CounterStats, Delta, StatsOutcome, ValueOutcome};
use shared::host::{Batch, Change, CollectReply, HostMessage, LocalReport, StreamId};
use shared::ClusterStats;

/// Decodes `bytes` as `T`; if that succeeds, the value must survive the codec again
/// unchanged (bincode accepts non-minimal integer encodings, so the bytes themselves
/// may differ; the value may not).
fn decode_checked<T: DeserializeOwned + serde::Serialize>(bytes: &[u8]) {
    if let Ok(value) = decode::<T>(bytes) {
        let again = encode(&value).unwrap();
        let twice = encode(&decode::<T>(&again).unwrap()).unwrap();
        assert_eq!(again, twice, "{}", std::any::type_name::<T>());
    }
}

/// A call's reply port is wired up in a task, so deserializing one needs a runtime.
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});

/// Every wire type, from the same bytes.
fn decode_every_type(bytes: &[u8]) {
    decode_checked::<Delta>(bytes);
    decode_checked::<CounterStats>(bytes);
    decode_checked::<ValueOutcome>(bytes);
    decode_checked::<StatsOutcome>(bytes);
    decode_checked::<Change>(bytes);
    decode_checked::<Batch>(bytes);
    decode_checked::<StreamId>(bytes);
    decode_checked::<Beat>(bytes);
    decode_checked::<PeerAddr>(bytes);
    decode_checked::<NodeInfo>(bytes);
    decode_checked::<LocalReport>(bytes);
    decode_checked::<CollectReply>(bytes);
    decode_checked::<ClientRequest>(bytes);
    decode_checked::<ClientReply>(bytes);
    decode_checked::<ClusterStats>(bytes);
}

/// Valid encodings to mutate: a fuzzer that starts from real frames reaches far deeper
/// than one that starts from noise.
fn seeds() -> Vec<Vec<u8>> {
    let stats = CounterStats {
        name: "worker-1/0".into(),
        value: -5,
        operations: 9,
        rejected: 1,
        ops_per_sec: 2.5,
        recent_ops_per_sec: 1.0,
        uptime_ms: 1_700_000,
    };
    vec![
        encode(&Delta::Increment(5)).unwrap(),
        encode(&Delta::Decrement(u64::MAX)).unwrap(),
        encode(&stats).unwrap(),
        encode(&ValueOutcome(Err(CounterError::Overflow {
            value: i64::MAX,
            delta: Delta::Increment(1),
        })))
        .unwrap(),
        encode(&StatsOutcome(Ok(stats.clone()))).unwrap(),
        encode(&Batch {
            stream: StreamId {
                sender: "worker-2".into(),
                origin: u64::MAX,
            },
            seq: 12,
            base: 11,
            changes: vec![
                Change {
                    counter: 1,
                    delta: -7,
                    operations: 3,
                },
                Change {
                    counter: 99_999,
                    delta: i128::MAX,
                    operations: u64::MAX,
                },
            ],
        })
        .unwrap(),
        encode(&Beat {
            from: "worker-1".into(),
            incarnation: 7,
        })
        .unwrap(),
        encode(&ClientRequest::Apply {
            counter: "worker-1/0".into(),
            delta: Delta::Increment(3),
            id: "0123abcd".into(),
        })
        .unwrap(),
        encode(&ClientRequest::Stats {
            deadline_ms: 1000,
            per_counter: true,
        })
        .unwrap(),
    ]
}

/// Message variant names, real and not.
const VARIANTS: &[&str] = &[
    "Batch",
    "Changes",
    "Increment",
    "Sync",
    "SyncedBatch",
    "Apply",
    "GetValue",
    "GetStats",
    "Heartbeat",
    "GetInfo",
    "Collect",
    "Client",
    "Leaving",
    "",
    "Explode",
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5000),
        // A failure prints its input; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        decode_every_type(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        seed in 0..9usize,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut bytes = seeds()[seed].clone();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend(tail);
        decode_every_type(&bytes);
    }

    #[test]
    fn huge_length_prefixes_are_refused_without_allocating(
        prefix in prop::collection::vec(0xf0u8..=0xff, 1..3),
        len_bytes in prop::collection::vec(any::<u8>(), 8),
    ) {
        // bincode's varint: 0xfd then a little-endian u64, claiming up to 2^64 items.
        let mut bytes = prefix;
        bytes.push(0xfd);
        bytes.extend(len_bytes);
        decode_every_type(&bytes);
    }

    #[test]
    fn random_messages_are_ok_or_err_never_a_panic(
        variant in prop::sample::select(VARIANTS),
        args in prop::collection::vec(any::<u8>(), 0..64),
        call in any::<bool>(),
    ) {
        let make = || if call {
            SerializedMessage::Call {
                variant: variant.to_string(),
                args: args.clone(),
                reply: ractor::RpcReplyPort::from(ractor::concurrency::oneshot::<Vec<u8>>().0),
                metadata: None,
            }
        } else {
            SerializedMessage::Cast {
                variant: variant.to_string(),
                args: args.clone(),
                metadata: None,
            }
        };
        // A field that does not decode panics inside `from_bytes`; the generated
        // deserializer must catch that and answer `Err`.
        let _runtime = RUNTIME.enter();
        let _ = HostMessage::deserialize(make());
        let _ = AgentMessage::deserialize(make());
    }
}
