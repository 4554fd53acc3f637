//! The write path's start: synthetic load, coalesced and windowed on its way to the
//! counter hosts. Also what `node-bench` pushes with.
//!
//! | module | owns |
//! | --- | --- |
//! | [`client`] | the load client actor: a token bucket at `--load` ops/s over all nodes' counters |
//! | [`push`] | the pusher: coalescing per counter, one batch per node, windows per node |
//! | [`window`] | one destination's flow-control window (sent, acknowledged, fences) |
//! | [`tally`] | what this node has issued: the other side of the exactness check |

pub mod client;
pub mod push;
pub mod tally;
pub mod window;
