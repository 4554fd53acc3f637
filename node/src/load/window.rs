//! Flow control for one destination: how many messages are sent but not yet
//! acknowledged, and when to ask for an acknowledgement. Plain bookkeeping (the way
//! raft-rs keeps `Inflights`), tested on its own; the [`Pusher`](super::push::Pusher)
//! keeps one per destination node.
//!
//! Messages are numbered from 1 as they are sent. Every `fence_every` messages the
//! sender asks the destination to acknowledge everything up to the last one sent (a
//! *fence*); an acknowledgement of `upto` covers every message numbered `upto` or
//! less. The window is full once `limit` messages are unacknowledged: the sender
//! must wait.

/// One destination's window; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    limit: u64,
    fence_every: u64,
    sent: u64,
    acked: u64,
    fenced: u64,
}

impl Window {
    /// A window of `limit` unacknowledged messages, fenced every `fence_every`.
    pub fn new(limit: u64, fence_every: u64) -> Self {
        Self {
            limit,
            fence_every: fence_every.max(1),
            sent: 0,
            acked: 0,
            fenced: 0,
        }
    }

    /// Whether the sender must wait for an acknowledgement before sending more.
    pub fn is_full(&self) -> bool {
        self.in_flight() >= self.limit
    }

    /// Messages sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.sent - self.acked
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Records one more message sent; `Some(upto)` when a fence is due: ask the
    /// destination to acknowledge everything up to `upto`.
    pub fn on_sent(&mut self) -> Option<u64> {
        self.sent += 1;
        (self.sent - self.fenced >= self.fence_every).then(|| self.fence())
    }

    /// A fence over everything sent so far, if anything is not covered by one yet.
    pub fn fence_rest(&mut self) -> Option<u64> {
        (self.sent > self.fenced).then(|| self.fence())
    }

    fn fence(&mut self) -> u64 {
        self.fenced = self.sent;
        self.sent
    }

    /// The destination acknowledged everything up to `upto` (stale or repeated
    /// acknowledgements change nothing).
    pub fn ack(&mut self, upto: u64) {
        self.acked = self.acked.max(upto.min(self.sent));
    }

    /// Whether every message sent has been acknowledged.
    pub fn is_settled(&self) -> bool {
        self.acked >= self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_go_every_few_messages_and_acks_free_the_window() {
        let mut w = Window::new(8, 4);
        let fences: Vec<Option<u64>> = (0..8).map(|_| w.on_sent()).collect();
        assert_eq!(
            fences,
            [None, None, None, Some(4), None, None, None, Some(8)]
        );
        assert!(w.is_full() && !w.is_settled());
        w.ack(4);
        assert_eq!(w.in_flight(), 4);
        assert!(!w.is_full());
        // Acknowledgements out of order, repeated, or beyond what was sent.
        w.ack(2);
        assert_eq!(w.in_flight(), 4);
        w.ack(99);
        assert!(w.is_settled() && w.in_flight() == 0);
    }

    #[test]
    fn the_rest_is_fenced_once_when_draining() {
        let mut w = Window::new(100, 10);
        for _ in 0..3 {
            assert_eq!(w.on_sent(), None);
        }
        assert_eq!(w.fence_rest(), Some(3));
        assert_eq!(w.fence_rest(), None, "nothing new to fence");
        w.ack(3);
        assert!(w.is_settled());
        assert_eq!(w.sent(), 3);
    }

    #[test]
    fn a_window_of_one_waits_for_every_message() {
        let mut w = Window::new(1, 1);
        assert_eq!(w.on_sent(), Some(1));
        assert!(w.is_full());
        w.ack(1);
        assert!(!w.is_full());
    }
}
