//! One stream's flow control and delivery bookkeeping (this node → one destination):
//! plain numbers, no I/O, tested on its own. The [`Pusher`](super::push::Pusher) keeps
//! one per destination node.
//!
//! Batches are numbered from 1 as they are made. Each number passes through four marks,
//! in order, and never goes back on any of them except `sent`:
//!
//! ```text
//!   acked  ≤  sent  ≤  issued  ≤  last
//!   the destination   handed to its   committed to    made
//!   committed it      current host    this node's
//!                                     outbox
//! ```
//!
//! The window is full once `limit` batches are made and not acknowledged: the sender
//! waits. Every `fence_every` batches sent, the sender asks the destination where the
//! stream stands (a *fence*, answered after everything sent before it). The answer is
//! the last batch the destination committed: everything up to it is acknowledged. If
//! it is short of what the fence covered, batches were lost on the way (a session torn
//! down, a host or journal restarted), so `sent` goes back to `acked` and everything
//! after it is sent again; so it does when a fence gets no answer in time, and when the
//! destination's host changes (a new session, or a new run of the node). Sending again
//! is safe: the destination takes each batch once. An answer to a fence made before the
//! last such rewind still acknowledges, but cannot cause another rewind.

/// A request for acknowledgement: its id, and the last batch it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// Fences of a stream are numbered from 1.
    pub id: u64,
    /// The last batch sent before it.
    pub upto: u64,
}

/// What to do after a fence's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Nothing more.
    Fine,
    /// Batches were lost: send everything after `acked` again.
    Resend,
}

/// One stream's marks; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    limit: u64,
    fence_every: u64,
    last: u64,
    issued: u64,
    sent: u64,
    acked: u64,
    unfenced: u64,
    fences: u64,
    rewound_at: u64,
}

impl Window {
    /// A new stream: at most `limit` batches unacknowledged, fenced every
    /// `fence_every` sent.
    pub(crate) fn new(limit: u64, fence_every: u64) -> Self {
        Self::resume(limit, fence_every, 0, 0)
    }

    /// A stream taken up again from an outbox: batches up to `last` made and issued,
    /// up to `acked` acknowledged, none sent in this run.
    pub(crate) fn resume(limit: u64, fence_every: u64, last: u64, acked: u64) -> Self {
        let acked = acked.min(last);
        Self {
            limit: limit.max(1),
            fence_every: fence_every.max(1),
            last,
            issued: last,
            sent: acked,
            acked,
            unfenced: 0,
            fences: 0,
            rewound_at: 0,
        }
    }

    /// Whether the sender must wait for an acknowledgement before making more.
    pub(crate) fn is_full(&self) -> bool {
        self.in_flight() >= self.limit
    }

    /// Batches made and not acknowledged.
    pub(crate) fn in_flight(&self) -> u64 {
        self.last - self.acked
    }

    /// Whether every batch made has been acknowledged.
    pub(crate) fn is_settled(&self) -> bool {
        self.acked >= self.last
    }

    /// The last batch acknowledged.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// The last batch issued.
    pub(crate) fn issued(&self) -> u64 {
        self.issued
    }

    /// Makes the next batch; returns its number. (The caller checks [`Window::is_full`]
    /// first.)
    pub(crate) fn make(&mut self) -> u64 {
        self.last = self.last.saturating_add(1);
        self.last
    }

    /// Batches up to `upto` are committed to the outbox; returns the range newly issued.
    pub(crate) fn on_issued(&mut self, upto: u64) -> std::ops::RangeInclusive<u64> {
        let before = self.issued;
        self.issued = self.issued.max(upto.min(self.last));
        before + 1..=self.issued
    }

    /// The batches to send now (issued, not yet sent to the current host).
    pub(crate) fn sendable(&self) -> std::ops::RangeInclusive<u64> {
        self.sent + 1..=self.issued
    }

    /// Batch `seq` went to the host; returns a fence if one is due.
    pub(crate) fn on_sent(&mut self, seq: u64) -> Option<Fence> {
        self.sent = self.sent.max(seq);
        self.unfenced += 1;
        (self.unfenced >= self.fence_every).then(|| self.fence())
    }

    /// A fence over everything sent, if anything sent is not covered by one yet.
    pub(crate) fn fence_rest(&mut self) -> Option<Fence> {
        (self.unfenced > 0).then(|| self.fence())
    }

    /// A fence over everything sent, even if that is nothing new: to learn where the
    /// stream stands at the destination.
    pub(crate) fn fence_now(&mut self) -> Fence {
        self.fence()
    }

    fn fence(&mut self) -> Fence {
        self.fences += 1;
        self.unfenced = 0;
        Fence {
            id: self.fences,
            upto: self.sent,
        }
    }

    /// The destination answered `fence` with the last batch it committed (`None`: no
    /// answer in time).
    pub(crate) fn on_answer(&mut self, fence: Fence, committed: Option<u64>) -> Answer {
        if let Some(committed) = committed {
            self.acked = self.acked.max(committed.min(self.issued));
            self.sent = self.sent.max(self.acked);
        }
        if fence.id <= self.rewound_at {
            return Answer::Fine;
        }
        match committed {
            Some(committed) if committed >= fence.upto => Answer::Fine,
            _ => {
                self.rewind();
                Answer::Resend
            }
        }
    }

    /// Everything after `acked` is to be sent again (the destination's host changed,
    /// or batches were lost); answers to fences made before now cause no further
    /// rewind.
    pub(crate) fn rewind(&mut self) {
        self.sent = self.acked;
        self.unfenced = 0;
        self.rewound_at = self.fences;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes, issues and sends `n` batches; returns the fences that fell due.
    fn send(w: &mut Window, n: u64) -> Vec<Fence> {
        let mut fences = Vec::new();
        for _ in 0..n {
            let seq = w.make();
            w.on_issued(seq);
            fences.extend(w.on_sent(seq));
        }
        fences
    }

    #[test]
    fn fences_go_every_few_batches_and_answers_free_the_window() {
        let mut w = Window::new(8, 4);
        let fences = send(&mut w, 8);
        assert_eq!(fences, [Fence { id: 1, upto: 4 }, Fence { id: 2, upto: 8 }]);
        assert!(w.is_full() && !w.is_settled());
        assert_eq!(w.on_answer(fences[0], Some(4)), Answer::Fine);
        assert_eq!(w.in_flight(), 4);
        assert!(!w.is_full());
        assert_eq!(w.on_answer(fences[1], Some(8)), Answer::Fine);
        assert!(w.is_settled());
    }

    #[test]
    fn a_short_answer_sends_again_from_what_was_committed_once() {
        let mut w = Window::new(100, 4);
        let fences = send(&mut w, 8);
        // Batches 6 to 8 were lost: the answer to the second fence says 5.
        assert_eq!(w.on_answer(fences[0], Some(4)), Answer::Fine);
        assert_eq!(w.on_answer(fences[1], Some(5)), Answer::Resend);
        assert_eq!(w.sendable(), 6..=8);
        // A late answer to a fence from before the rewind acknowledges, no more.
        assert_eq!(w.on_answer(fences[1], Some(5)), Answer::Fine);
        for seq in 6..=8 {
            assert_eq!(w.on_sent(seq), None);
        }
        let fence = w.fence_rest().unwrap();
        assert_eq!(fence, Fence { id: 3, upto: 8 });
        assert_eq!(w.on_answer(fence, Some(8)), Answer::Fine);
        assert!(w.is_settled());
    }

    #[test]
    fn no_answer_or_a_new_host_sends_everything_unacknowledged_again() {
        let mut w = Window::new(100, 2);
        let fences = send(&mut w, 4);
        assert_eq!(w.on_answer(fences[0], None), Answer::Resend);
        assert_eq!(w.sendable(), 1..=4);
        assert_eq!(w.on_sent(1), None);
        assert_eq!(w.on_sent(2), Some(Fence { id: 3, upto: 2 }));
        w.rewind();
        assert_eq!(w.sendable(), 1..=4);
        // The destination had all four after all.
        assert_eq!(w.on_answer(Fence { id: 3, upto: 2 }, Some(4)), Answer::Fine);
        assert!(w.is_settled());
        assert_eq!(w.sendable().count(), 0);
    }

    #[test]
    fn only_issued_batches_are_sent_and_a_resumed_stream_starts_after_its_acknowledged() {
        let mut w = Window::new(4, 1);
        let (a, b) = (w.make(), w.make());
        assert_eq!(w.sendable().count(), 0, "nothing issued yet");
        assert_eq!(w.on_issued(a), 1..=1);
        assert_eq!(w.sendable(), 1..=1);
        assert_eq!(w.on_issued(b), 2..=2);
        assert_eq!(w.on_issued(b).count(), 0, "issued twice: nothing new");

        let mut r = Window::resume(4, 1, 9, 6);
        assert_eq!((r.acked(), r.issued(), r.in_flight()), (6, 9, 3));
        assert_eq!(r.sendable(), 7..=9);
        assert_eq!(r.make(), 10);
        // A destination claiming more than was issued acknowledges only what was.
        let fence = r.on_sent(7).unwrap();
        assert_eq!(r.on_answer(fence, Some(99)), Answer::Fine);
        assert_eq!(r.acked(), 9);
    }
}
