//! A collection's per-counter lines: kept while one answer can carry them all, summed
//! either way.
//!
//! A client decodes at most [`ANSWER_LIMIT`] of an answer, counting each value at its
//! size in memory ([`decode_budget`]): about 260,000 counters' lines. Lines past that
//! could never be answered, and a million of them held about 100 MB on the collecting
//! node while they came in, and 80 MB more once summed. So every node's reading charges
//! what it takes to one [`LineBudget`] shared by the whole collection; once the budget
//! is spent, every node's part drops its lines and keeps its sums and the first
//! [`MISSING_NAMES`] names of its missing counters (their number stays exact). A node's
//! pages then pass through the collecting node one at a time, whatever its size.

use std::sync::atomic::{AtomicUsize, Ordering};

use shared::agent::MISSING_NAMES;
use shared::codec::{decode_budget, MAX_MESSAGE_BYTES};
use shared::counter::CounterStats;
use shared::protocol::counter_name;
use shared::stats::CounterReport;

/// Room left in a message for what wraps an answer (the reply, the actor's address).
const ENVELOPE_BYTES: usize = 64 * 1024;

/// The most a client's answer may take to decode.
pub(crate) const ANSWER_LIMIT: usize = MAX_MESSAGE_BYTES - ENVELOPE_BYTES;

/// What a collection's lines take to decode so far, over every node; shared by the
/// nodes' readings, which run at once.
#[derive(Debug)]
pub(crate) struct LineBudget {
    limit: usize,
    used: AtomicUsize,
    /// What a line takes besides its name's bytes.
    line_fixed: usize,
    /// What a name takes besides its bytes.
    name_fixed: usize,
}

impl LineBudget {
    /// A budget of `limit` bytes ([`ANSWER_LIMIT`] for a collection).
    pub(crate) fn new(limit: usize) -> Self {
        let empty = CounterReport {
            name: String::new(),
            value: 0,
            operations: 0,
            rejected: 0,
            ops_per_sec: 0.0,
            recent_ops_per_sec: 0.0,
        };
        Self {
            limit,
            used: AtomicUsize::new(0),
            // Plain structs of numbers and a string always encode.
            line_fixed: decode_budget(&empty).unwrap_or(48),
            name_fixed: decode_budget(&String::new()).unwrap_or(8),
        }
    }

    /// What the line of a counter named `name_len` bytes takes.
    fn line(&self, name_len: usize) -> usize {
        self.line_fixed + name_len
    }

    /// What a missing counter's name takes: it is listed under its node and overall.
    fn missing(&self, name_len: usize) -> usize {
        2 * (self.name_fixed + name_len)
    }

    /// Charges `bytes`; whether the lines are still kept.
    fn charge(&self, bytes: usize) -> bool {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        used <= self.limit
    }

    /// Whether the lines charged so far fit in one answer.
    pub(crate) fn kept(&self) -> bool {
        self.used.load(Ordering::Relaxed) <= self.limit
    }

    /// What the lines charged so far take to decode.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What the counters that answered add up to.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct CounterTotals {
    pub(crate) value: i128,
    pub(crate) operations: u128,
    pub(crate) lifetime_rates: f64,
    pub(crate) recent_ops_per_sec: f64,
    pub(crate) answered: usize,
}

impl CounterTotals {
    fn add(&mut self, stats: &CounterStats) {
        self.answered += 1;
        self.value += i128::from(stats.value);
        self.operations += u128::from(stats.operations);
        self.lifetime_rates += stats.ops_per_sec;
        self.recent_ops_per_sec += stats.recent_ops_per_sec;
    }

    /// Both sums together.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.answered += other.answered;
        self.value += other.value;
        self.operations += other.operations;
        self.lifetime_rates += other.lifetime_rates;
        self.recent_ops_per_sec += other.recent_ops_per_sec;
    }
}

/// What a collection holds of one node's counters: its first `read` counters, each
/// answered or missing, in order.
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    /// Sums over the counters that answered.
    pub(crate) totals: CounterTotals,
    /// Their lines, in order, while the collection's lines are kept.
    pub(crate) lines: Vec<CounterReport>,
    /// Counters that did not answer, in order: all of them while the lines are kept,
    /// else the first [`MISSING_NAMES`].
    pub(crate) missing: Vec<String>,
    /// How many did not answer.
    pub(crate) missing_count: usize,
    /// Counters read: indices below it are answered or missing.
    pub(crate) read: u32,
}

impl NodeCounters {
    /// Takes node `node`'s counters from `first` on, in order (`None`: did not answer).
    pub(crate) fn add_page(
        &mut self,
        node: &str,
        first: u32,
        page: Vec<Option<CounterStats>>,
        budget: &LineBudget,
    ) {
        let keep = budget.kept();
        let mut bytes = 0;
        for (stats, index) in page.into_iter().zip(first..) {
            match stats {
                Some(stats) => {
                    self.totals.add(&stats);
                    bytes += budget.line(stats.name.len());
                    if keep {
                        self.lines.push(report(stats));
                    }
                }
                None => {
                    bytes += budget.missing(name_len(node, index));
                    self.add_missing(node, index, keep);
                }
            }
            self.read = index + 1;
        }
        if !budget.charge(bytes) {
            self.drop_lines();
        }
    }

    /// Takes counters `self.read..count` of node `node` as missing: they were never
    /// read (the node did not answer them, or at all). Names are made only for those
    /// kept.
    pub(crate) fn add_unread(&mut self, node: &str, count: u32, budget: &LineBudget) {
        let unread = self.read..count.max(self.read);
        let bytes: usize = unread
            .clone()
            .map(|index| budget.missing(name_len(node, index)))
            .sum();
        let keep = budget.charge(bytes);
        for index in unread {
            if !keep && self.missing.len() >= MISSING_NAMES {
                self.missing_count += (count - index) as usize;
                break;
            }
            self.add_missing(node, index, keep);
        }
        self.read = self.read.max(count);
        if !keep {
            self.drop_lines();
        }
    }

    fn add_missing(&mut self, node: &str, index: u32, keep: bool) {
        self.missing_count += 1;
        if keep || self.missing.len() < MISSING_NAMES {
            self.missing.push(counter_name(node, index));
        }
    }

    /// Keeps the sums and the first missing names only: the collection's lines would
    /// not fit in an answer.
    pub(crate) fn drop_lines(&mut self) {
        self.lines = Vec::new();
        self.missing.truncate(MISSING_NAMES);
        self.missing.shrink_to_fit();
    }
}

/// The length of [`counter_name`]`(node, index)`, without making it.
fn name_len(node: &str, index: u32) -> usize {
    let digits = index.checked_ilog10().map_or(1, |log| log as usize + 1);
    node.len() + 1 + digits
}

/// A counter's line, its name moved from its answer.
fn report(stats: CounterStats) -> CounterReport {
    CounterReport {
        name: stats.name,
        value: stats.value,
        operations: stats.operations,
        rejected: stats.rejected,
        ops_per_sec: stats.ops_per_sec,
        recent_ops_per_sec: stats.recent_ops_per_sec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(name: &str, value: i64) -> CounterStats {
        CounterStats {
            name: name.to_string(),
            value,
            operations: 1,
            rejected: 0,
            ops_per_sec: 1.0,
            recent_ops_per_sec: 2.0,
            uptime_ms: 1,
        }
    }

    /// What a line and a missing name are charged is what they take in an answer.
    #[test]
    fn the_charge_is_the_decode_budget() {
        let budget = LineBudget::new(ANSWER_LIMIT);
        let line = report(stats("worker-1/12345", 3));
        assert_eq!(budget.line(line.name.len()), decode_budget(&line).unwrap());
        let name = counter_name("worker-1", 12345);
        assert_eq!(
            budget.missing(name.len()),
            2 * decode_budget(&name).unwrap()
        );
        for index in [0, 9, 10, 99, 100, 999_999, u32::MAX] {
            assert_eq!(name_len("n", index), counter_name("n", index).len());
        }
    }

    /// Within the budget every line and missing name is kept, in order, beside the
    /// sums.
    #[test]
    fn within_the_budget_lines_are_kept() {
        let budget = LineBudget::new(ANSWER_LIMIT);
        let mut node = NodeCounters::default();
        node.add_page(
            "w",
            0,
            vec![Some(stats("w/0", 5)), None, Some(stats("w/2", -2))],
            &budget,
        );
        node.add_unread("w", 5, &budget);
        let names: Vec<_> = node.lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["w/0", "w/2"]);
        assert_eq!(node.missing, ["w/1", "w/3", "w/4"]);
        assert_eq!((node.missing_count, node.read), (3, 5));
        assert_eq!((node.totals.value, node.totals.answered), (3, 2));
        assert!(budget.kept());
        let expected = 2 * budget.line(3) + 3 * budget.missing(3);
        assert_eq!(budget.used(), expected);
    }

    /// Past the budget the lines go, from every node, and the numbers stay exact.
    #[test]
    fn past_the_budget_only_sums_and_the_first_names_stay() {
        // Room for exactly two lines.
        let budget = LineBudget::new(2 * LineBudget::new(0).line(3));
        let (mut a, mut b) = (NodeCounters::default(), NodeCounters::default());
        a.add_page("a", 0, vec![Some(stats("a/0", 1))], &budget);
        b.add_page("b", 0, vec![Some(stats("b/0", 1))], &budget);
        assert!(budget.kept());
        assert_eq!((a.lines.len(), b.lines.len()), (1, 1));
        a.add_page("a", 1, vec![Some(stats("a/1", 1))], &budget);
        assert!(!budget.kept());
        assert!(a.lines.is_empty());
        // Another node's next page finds the budget spent.
        b.add_page("b", 1, vec![Some(stats("b/1", 4)), None], &budget);
        assert!(b.lines.is_empty());
        assert_eq!((b.totals.value, b.totals.answered), (5, 2));
        assert_eq!(
            (b.missing.as_slice(), b.missing_count),
            (&["b/2".to_string()][..], 1)
        );
        // A node of a million unread counters: a thousand names, all of them counted.
        b.add_unread("b", 1_000_000, &budget);
        assert_eq!(b.missing.len(), MISSING_NAMES);
        assert_eq!(b.missing[1], "b/3");
        assert_eq!((b.missing_count, b.read), (1_000_000 - 2, 1_000_000));
    }
}
