//! The write path's start: synthetic load, coalesced and windowed on its way to the
//! counter hosts. Also what `node-bench` pushes with.
//!
//! | module | owns |
//! | --- | --- |
//! | [`client`] | the load client actor: a token bucket at `--load` ops/s over all nodes' counters |
//! | [`push`] | the pusher: coalescing per counter, one numbered stream of batches per node |
//! | [`window`] | one stream's marks (made, issued, sent, acknowledged) and fences |
//! | [`outbox`] | where issued batches are kept until acknowledged (the node's store) |
//! | [`tally`] | what this node has issued: the other side of the exactness check |

pub(crate) mod client;
pub(crate) mod outbox;
pub(crate) mod push;
pub(crate) mod tally;
pub(crate) mod window;
