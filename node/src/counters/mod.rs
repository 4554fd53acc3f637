//! The node's counters: where the write path ends and the read path begins.
//!
//! | module | owns |
//! | --- | --- |
//! | [`counter`] | the counter actor |
//! | [`record`] | a counter's figures and their arithmetic (shared with the store) |
//! | [`rate`] | the sliding-window ops/s behind a counter's recent rate |
//! | [`table`] | which actor runs counter `N`, since when, restarts; the stats fan-out |
//! | [`supervisor`] | starting counters and restarting one that fails, from the store |
//! | [`host`] | the one remote face of the counters: changes, reads, collections |

pub(crate) mod counter;
pub(crate) mod host;
pub(crate) mod rate;
pub(crate) mod record;
pub(crate) mod supervisor;
pub(crate) mod table;
