//! The ordered send window: the bounded, in-order queue of one stream's
//! records that librdkafka holds.
//!
//! Records enter at the back in stream order, each with the future that
//! resolves when Kafka acknowledges it, and leave from the front in the same
//! order, like `FuturesOrdered`: a record that Kafka acknowledged early waits
//! for every record before it. The window counts what it holds in records and
//! bytes; the stream driver asks [`Window::has_room`] before handing the next
//! record to librdkafka, and stops reading the stream while it is full.
//!
//! The window never polls a delivery future before its turn and never drops
//! one: deliveries complete inside librdkafka whether or not anyone is
//! waiting, and [`Window::next_done`] reads them in order.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

/// How much one stream may have in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Records handed to librdkafka whose acks have not been released yet.
    pub max_records: usize,
    /// Payload bytes (key, value and headers) of those records.
    pub max_bytes: usize,
}

/// One record in flight.
struct InFlight<T, D> {
    /// Says which record this is, for whoever reads the result.
    tag: T,
    /// Counted against [`Limits::max_bytes`] until the record leaves.
    bytes: usize,
    /// Resolves when Kafka acknowledges or fails the record.
    delivery: D,
}

/// A FIFO of in-flight records bounded by [`Limits`].
pub struct Window<T, D> {
    /// Oldest first.
    queue: VecDeque<InFlight<T, D>>,
    /// Sum of `bytes` over `queue`, kept so `has_room` is O(1).
    bytes: usize,
    limits: Limits,
}

impl<T, D> Window<T, D>
where
    D: Future + Unpin,
{
    pub fn new(limits: Limits) -> Self {
        Self {
            queue: VecDeque::new(),
            bytes: 0,
            limits,
        }
    }

    /// Whether a record of `bytes` may enter now. An empty window always
    /// admits one record, so a record larger than the byte bound still goes
    /// through on its own instead of blocking the stream forever.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.queue.is_empty()
            || (self.queue.len() < self.limits.max_records
                && self.bytes.saturating_add(bytes) <= self.limits.max_bytes)
    }

    /// Adds a record that was just handed to librdkafka. The caller checks
    /// [`Window::has_room`] first; the bounds are not enforced here so that a
    /// record that librdkafka already holds is never lost track of.
    pub fn push(&mut self, tag: T, bytes: usize, delivery: D) {
        self.bytes += bytes;
        self.queue.push_back(InFlight {
            tag,
            bytes,
            delivery,
        });
    }

    /// Waits for the oldest record's outcome and removes it from the window.
    /// Returns `None` at once when the window is empty.
    ///
    /// Cancel-safe: dropping the returned future before it completes leaves
    /// the window unchanged, so it can sit in a `select!` beside the read of
    /// the next batch.
    pub async fn next_done(&mut self) -> Option<(T, D::Output)> {
        poll_fn(|cx| {
            let Some(front) = self.queue.front_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut front.delivery).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(output) => {
                    let done = self.queue.pop_front().expect("front exists");
                    self.bytes -= done.bytes;
                    Poll::Ready(Some((done.tag, output)))
                }
            }
        })
        .await
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records in flight.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Payload bytes in flight.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::ready;
    use tokio::sync::oneshot;

    fn limits(max_records: usize, max_bytes: usize) -> Limits {
        Limits {
            max_records,
            max_bytes,
        }
    }

    #[test]
    fn room_is_bounded_by_records_and_bytes() {
        let mut window = Window::new(limits(2, 100));
        assert!(window.has_room(1_000), "an empty window admits any record");
        window.push(0, 60, ready(()));
        assert!(window.has_room(40));
        assert!(!window.has_room(41), "would exceed the byte bound");
        window.push(1, 40, ready(()));
        assert!(!window.has_room(0), "would exceed the record bound");
        assert_eq!((window.len(), window.bytes()), (2, 100));
    }

    #[tokio::test]
    async fn releases_in_order_whatever_the_completion_order() {
        let mut window = Window::new(limits(10, 1_000));
        let mut senders = Vec::new();
        for tag in 0..5u32 {
            let (tx, rx) = oneshot::channel::<u32>();
            senders.push(tx);
            window.push(tag, 10, rx);
        }
        // Complete back to front: nothing may come out until the front is done.
        for (tag, tx) in senders.into_iter().enumerate().rev() {
            tx.send(tag as u32 * 100).unwrap();
        }
        let mut out = Vec::new();
        while let Some((tag, result)) = window.next_done().await {
            out.push((tag, result.unwrap()));
        }
        assert_eq!(out, vec![(0, 0), (1, 100), (2, 200), (3, 300), (4, 400)]);
        assert_eq!((window.len(), window.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn next_done_is_cancel_safe() {
        let mut window = Window::new(limits(10, 1_000));
        let (tx0, rx0) = oneshot::channel::<&str>();
        let (tx1, rx1) = oneshot::channel::<&str>();
        window.push("first", 1, rx0);
        window.push("second", 1, rx1);
        tx1.send("late").unwrap();
        // The front is not done: a cancelled wait must leave both in place.
        let timed_out =
            tokio::time::timeout(std::time::Duration::from_millis(10), window.next_done()).await;
        assert!(timed_out.is_err());
        assert_eq!(window.len(), 2);
        tx0.send("early").unwrap();
        assert_eq!(
            window.next_done().await.map(|(t, r)| (t, r.unwrap())),
            Some(("first", "early"))
        );
        assert_eq!(
            window.next_done().await.map(|(t, r)| (t, r.unwrap())),
            Some(("second", "late"))
        );
        assert!(window.next_done().await.is_none());
    }
}
