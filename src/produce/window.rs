//! The ordered send window: the bounded, in-order queue of one stream's
//! records that librdkafka holds.
//!
//! Records enter at the back in stream order, each under the next sequence
//! number, and leave from the front in the same order: a record that Kafka
//! acknowledged early waits for every record before it. Their outcomes
//! arrive in any order through the stream's [`Completions`] (librdkafka's
//! delivery callback pushes them there) and are put in their slots; the
//! front leaves once its outcome is in. The window counts what it holds in
//! records and bytes; the stream driver asks [`Window::has_room`] before
//! handing the next record to librdkafka, and stops reading the stream
//! while it is full.
//!
//! Nothing is lost track of: a record handed over always gets its slot, and
//! its outcome always comes (librdkafka reports every record, delivered,
//! failed or purged), whether or not anyone is waiting.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::DeliveryResult;
use super::completions::Completions;

/// How much one stream may have in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Records handed to librdkafka whose acks have not been released yet.
    pub max_records: usize,
    /// Payload bytes (key, value and headers) of those records.
    pub max_bytes: usize,
}

/// One record in flight.
struct Slot<T> {
    /// Says which record this is, for whoever reads the result.
    tag: T,
    /// Counted against [`Limits::max_bytes`] until the record leaves.
    bytes: usize,
    /// Set once Kafka acknowledged or failed the record.
    outcome: Option<DeliveryResult>,
}

/// A FIFO of in-flight records bounded by [`Limits`].
pub struct Window<T> {
    /// Oldest first; slot `i` holds record `front_seq + i`.
    slots: VecDeque<Slot<T>>,
    front_seq: u64,
    /// Sum of `bytes` over `slots`, kept so `has_room` is O(1).
    bytes: usize,
    limits: Limits,
    /// Where this stream's outcomes arrive.
    completions: Arc<Completions>,
    /// Outcomes just taken from `completions`, reused between turns.
    arrived: Vec<(u64, DeliveryResult)>,
}

impl<T> Window<T> {
    pub fn new(limits: Limits) -> Self {
        Self {
            slots: VecDeque::new(),
            front_seq: 0,
            bytes: 0,
            limits,
            completions: Arc::new(Completions::new()),
            arrived: Vec::new(),
        }
    }

    /// Where the outcomes of this window's records must be reported.
    pub fn completions(&self) -> &Arc<Completions> {
        &self.completions
    }

    /// The sequence number the next record handed over gets: report its
    /// outcome under it.
    pub fn next_seq(&self) -> u64 {
        self.front_seq + self.slots.len() as u64
    }

    /// Whether a record of `bytes` may enter now. An empty window always
    /// admits one record, so a record larger than the byte bound still goes
    /// through on its own instead of blocking the stream forever.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.slots.is_empty()
            || (self.slots.len() < self.limits.max_records
                && self.bytes.saturating_add(bytes) <= self.limits.max_bytes)
    }

    /// Adds the record just handed to librdkafka under [`Window::next_seq`].
    /// The caller checks [`Window::has_room`] first; the bounds are not
    /// enforced here so that a record librdkafka already holds is never lost
    /// track of.
    pub fn push(&mut self, tag: T, bytes: usize) {
        self.bytes += bytes;
        self.slots.push_back(Slot {
            tag,
            bytes,
            outcome: None,
        });
    }

    /// Adds, under [`Window::next_seq`], a record whose outcome is already
    /// known (refused before librdkafka took it): it leaves in its turn,
    /// after every record before it.
    pub fn push_done(&mut self, tag: T, bytes: usize, outcome: DeliveryResult) {
        self.bytes += bytes;
        self.slots.push_back(Slot {
            tag,
            bytes,
            outcome: Some(outcome),
        });
    }

    /// Puts every outcome reported so far in its slot.
    fn file(&mut self) {
        for (seq, outcome) in self.arrived.drain(..) {
            let index = seq
                .checked_sub(self.front_seq)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < self.slots.len());
            match index {
                Some(i) => {
                    debug_assert!(
                        self.slots[i].outcome.is_none(),
                        "record {seq} reported twice"
                    );
                    self.slots[i].outcome = Some(outcome);
                }
                None => debug_assert!(false, "an outcome for record {seq}, not in the window"),
            }
        }
    }

    /// The front record and its outcome, if its outcome is in.
    fn pop_done(&mut self) -> Option<(T, DeliveryResult)> {
        self.slots.front()?.outcome.as_ref()?;
        let slot = self.slots.pop_front().expect("front exists");
        self.front_seq += 1;
        self.bytes -= slot.bytes;
        Some((slot.tag, slot.outcome.expect("checked above")))
    }

    /// The oldest record's outcome once it is known, removing it from the
    /// window; `None` at once when the window is empty.
    pub fn poll_next_done(&mut self, cx: &mut Context<'_>) -> Poll<Option<(T, DeliveryResult)>> {
        if self.slots.is_empty() {
            return Poll::Ready(None);
        }
        if let Some(done) = self.pop_done() {
            return Poll::Ready(Some(done));
        }
        let mut arrived = std::mem::take(&mut self.arrived);
        let polled = self.completions.poll_drain(cx, &mut arrived);
        self.arrived = arrived;
        if polled.is_pending() {
            return Poll::Pending;
        }
        self.file();
        match self.pop_done() {
            Some(done) => Poll::Ready(Some(done)),
            // Later records finished first; the front is still out. The
            // waker stays registered for the next report.
            None => Poll::Pending,
        }
    }

    /// Waits for the oldest record's outcome; see [`Window::poll_next_done`].
    /// Cancel-safe: outcomes taken are kept in their slots.
    pub async fn next_done(&mut self) -> Option<(T, DeliveryResult)> {
        poll_fn(|cx| self.poll_next_done(cx)).await
    }

    /// The oldest record's outcome if it is known now.
    pub fn try_next_done(&mut self) -> Option<(T, DeliveryResult)> {
        if let Some(done) = self.pop_done() {
            return Some(done);
        }
        let mut arrived = std::mem::take(&mut self.arrived);
        self.completions.drain(&mut arrived);
        self.arrived = arrived;
        self.file();
        self.pop_done()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Records in flight.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Payload bytes in flight.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::Delivered;
    use std::time::Duration;

    fn limits(max_records: usize, max_bytes: usize) -> Limits {
        Limits {
            max_records,
            max_bytes,
        }
    }

    fn delivered(offset: i64) -> DeliveryResult {
        Ok(Delivered {
            partition: 0,
            offset,
            timestamp_ms: -1,
        })
    }

    #[test]
    fn room_is_bounded_by_records_and_bytes() {
        let mut window = Window::new(limits(2, 100));
        assert!(window.has_room(1_000), "an empty window admits any record");
        window.push(0, 60);
        assert!(window.has_room(40));
        assert!(!window.has_room(41), "would exceed the byte bound");
        window.push(1, 40);
        assert!(!window.has_room(0), "would exceed the record bound");
        assert_eq!((window.len(), window.bytes()), (2, 100));
    }

    #[tokio::test]
    async fn releases_in_order_whatever_the_completion_order() {
        let mut window = Window::new(limits(10, 1_000));
        for tag in 0..5u32 {
            assert_eq!(window.next_seq(), u64::from(tag));
            window.push(tag, 10);
        }
        // Complete back to front, from another thread as librdkafka does:
        // nothing may come out until the front is done.
        let completions = window.completions().clone();
        std::thread::spawn(move || {
            for seq in (0..5u64).rev() {
                completions.push(seq, delivered(seq as i64 * 100));
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let mut out = Vec::new();
        while let Some((tag, result)) = window.next_done().await {
            out.push((tag, result.unwrap().offset));
        }
        assert_eq!(out, vec![(0, 0), (1, 100), (2, 200), (3, 300), (4, 400)]);
        assert_eq!((window.len(), window.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn next_done_is_cancel_safe() {
        let mut window = Window::new(limits(10, 1_000));
        window.push("first", 1);
        window.push("second", 1);
        window.completions().push(1, delivered(1));
        // The front is not done: a cancelled wait keeps what arrived.
        let timed_out = tokio::time::timeout(Duration::from_millis(10), window.next_done()).await;
        assert!(timed_out.is_err());
        assert_eq!(window.len(), 2);
        assert!(window.try_next_done().is_none());
        window.completions().push(0, delivered(0));
        assert_eq!(
            window
                .next_done()
                .await
                .map(|(t, r)| (t, r.unwrap().offset)),
            Some(("first", 0))
        );
        assert_eq!(
            window.try_next_done().map(|(t, r)| (t, r.unwrap().offset)),
            Some(("second", 1))
        );
        assert!(window.next_done().await.is_none());
    }
}
