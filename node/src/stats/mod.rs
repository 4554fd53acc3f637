//! The read path: from every counter's own `GetStats` to the cluster-wide totals.
//!
//! | module | owns |
//! | --- | --- |
//! | [`aggregator`] | the coordinator's periodic collections, its summary line, the last collection |
//! | [`collect`] | one collection: one `Collect` call per node's host, one shared deadline |
//! | [`lines`] | what a collection keeps of each counter: its line while all fit in one answer, its sums |
//! | [`summarize`] | the answers summed up, with what is missing and whether it is complete |
//! | [`output`] | the summary line and `node stats`' table |

pub(crate) mod aggregator;
pub(crate) mod collect;
pub(crate) mod lines;
pub(crate) mod output;
pub(crate) mod summarize;
