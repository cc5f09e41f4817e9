//! The memory budget shared by every stream (`--max-total-in-flight-bytes`):
//! the bytes of batches read and not yet answered, over all streams.
//!
//! A batch is charged before the gateway buffers it, not after: the request
//! body of every `Producer` call passes through a [`BudgetBody`], which reads
//! the 5-byte gRPC length prefix of each message and reserves that many bytes
//! (plus [`BATCH_OVERHEAD`]) before letting the message's bytes through to
//! the decoder. When the budget is spent the reservation waits, the body
//! stops being read, and HTTP/2 flow control holds the client back. Waiters
//! are served first come, first served (a fair semaphore), so no stream
//! starves.
//!
//! Each reservation is queued on the call ([`Reservations`]); the stream's
//! driver takes one per decoded batch and keeps it until the batch's response
//! is handed to the client, which gives the bytes back.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

/// Charged per batch on top of its encoded size: the decoded batch's
/// bookkeeping (its response slots, span, tallies), so that a flood of empty
/// batches also spends the budget.
pub const BATCH_OVERHEAD: usize = 256;

/// The shared budget; cheap to clone.
#[derive(Clone)]
pub struct Budget {
    /// `None`: unlimited (tests and tools that drive streams directly).
    semaphore: Option<Arc<Semaphore>>,
    /// Bytes reserved now, for the metrics.
    current: Gauge,
    /// Reservations that had to wait for bytes to come back.
    waits: Counter,
}

impl Budget {
    /// A budget of `cap` bytes reporting into the given metrics.
    pub fn new(cap: usize, current: Gauge, waits: Counter) -> Self {
        Self {
            semaphore: Some(Arc::new(Semaphore::new(cap.min(Semaphore::MAX_PERMITS)))),
            current,
            waits,
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self {
            semaphore: None,
            current: Gauge::default(),
            waits: Counter::default(),
        }
    }

    /// A reservation of `bytes` if they are free now.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let permit = match &self.semaphore {
            None => None,
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .try_acquire_many_owned(u32::try_from(bytes).ok()?)
                    .ok()?,
            ),
        };
        Some(self.granted(permit, bytes))
    }

    fn granted(&self, permit: Option<OwnedSemaphorePermit>, bytes: usize) -> Reservation {
        self.current.inc_by(bytes as i64);
        Reservation {
            permit,
            bytes,
            current: self.current.clone(),
            compressed: false,
        }
    }
}

/// Bytes of the budget held for one batch; given back when dropped.
pub struct Reservation {
    /// `None` for an unlimited budget.
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
    current: Gauge,
    /// Reserved for a compressed message, whose decoded size was unknown:
    /// the driver trims it to the decoded size.
    compressed: bool,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether this was reserved for a compressed message at its worst case.
    pub fn is_for_compressed(&self) -> bool {
        self.compressed
    }

    /// Gives back everything above `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        let excess = self.bytes - bytes;
        if let Some(permit) = &mut self.permit {
            drop(permit.split(excess));
        }
        self.bytes = bytes;
        self.current.dec_by(excess as i64);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.current.dec_by(self.bytes as i64);
    }
}

/// The reservations of one call's messages, oldest first: filled by its
/// [`BudgetBody`], emptied by its stream driver, one per decoded message.
#[derive(Clone, Default)]
pub struct Reservations(Arc<Mutex<VecDeque<Reservation>>>);

impl Reservations {
    /// The reservation of the oldest message not yet taken.
    pub fn take(&self) -> Option<Reservation> {
        self.0.lock().expect("not poisoned").pop_front()
    }

    fn push(&self, reservation: Reservation) {
        self.0.lock().expect("not poisoned").push_back(reservation);
    }
}

/// Where the gRPC framing of a request body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Reading a message's 5-byte prefix: compression flag, then length.
    Prefix { read: usize, prefix: [u8; 5] },
    /// Skipping the rest of a message's bytes.
    Message { remaining: usize },
}

/// A message whose prefix was read: what to reserve for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Announced {
    len: usize,
    compressed: bool,
}

impl Framing {
    fn new() -> Self {
        Framing::Prefix {
            read: 0,
            prefix: [0; 5],
        }
    }

    /// Consumes the next piece of `data`: the rest of the current message,
    /// or one message's prefix and as much of the message as `data` holds.
    /// Returns the piece's length and the message whose prefix it completed,
    /// so that each piece begins at most one message.
    fn next_piece(&mut self, data: &[u8]) -> (usize, Option<Announced>) {
        let mut used = 0;
        while used < data.len() {
            match self {
                Framing::Message { remaining } => {
                    let take = (*remaining).min(data.len() - used);
                    *remaining -= take;
                    used += take;
                    if *remaining == 0 {
                        *self = Framing::new();
                    }
                    return (used, None);
                }
                Framing::Prefix { read, prefix } => {
                    let take = (5 - *read).min(data.len() - used);
                    prefix[*read..*read + take].copy_from_slice(&data[used..used + take]);
                    *read += take;
                    used += take;
                    if *read < 5 {
                        continue;
                    }
                    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                    let announced = Announced {
                        len: len as usize,
                        compressed: prefix[0] != 0,
                    };
                    if len == 0 {
                        *self = Framing::new();
                        return (used, Some(announced));
                    }
                    let mut body = Framing::Message {
                        remaining: len as usize,
                    };
                    let (more, _) = body.next_piece(&data[used..]);
                    *self = body;
                    return (used + more, Some(announced));
                }
            }
        }
        (used, None)
    }
}

/// A request body that reserves budget for each message before the decoder
/// sees its bytes.
pub struct BudgetBody<B> {
    inner: B,
    semaphore: Option<PollSemaphore>,
    budget: Budget,
    reservations: Reservations,
    /// Messages larger than this are refused by the decoder; nothing is
    /// reserved for them (they could exceed the whole budget).
    max_message: usize,
    framing: Framing,
    /// What is left of the last data frame, not yet passed on.
    rest: Option<Bytes>,
    /// A piece beginning a message, held back until the message's
    /// reservation is granted.
    held: Option<(Bytes, Announced)>,
    /// Whether the held piece already counted as a wait.
    counted_wait: bool,
}

impl<B> BudgetBody<B> {
    pub fn new(inner: B, budget: Budget, reservations: Reservations, max_message: usize) -> Self {
        Self {
            semaphore: budget.semaphore.clone().map(PollSemaphore::new),
            inner,
            budget,
            reservations,
            max_message,
            framing: Framing::new(),
            rest: None,
            held: None,
            counted_wait: false,
        }
    }

    /// What to reserve for a message.
    fn charge(&self, message: Announced) -> Option<usize> {
        if message.len > self.max_message {
            return None;
        }
        // A compressed message may decode to anything up to the limit.
        let len = if message.compressed {
            self.max_message
        } else {
            message.len
        };
        Some(len + BATCH_OVERHEAD)
    }

    /// Reserves for `message`.
    fn poll_reserve(&mut self, cx: &mut Context<'_>, message: Announced) -> Poll<()> {
        let Some(bytes) = self.charge(message) else {
            return Poll::Ready(());
        };
        let permit = match &mut self.semaphore {
            None => None,
            Some(semaphore) => {
                let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
                match semaphore.poll_acquire_many(cx, permits) {
                    Poll::Pending => {
                        if !self.counted_wait {
                            self.counted_wait = true;
                            self.budget.waits.inc();
                        }
                        return Poll::Pending;
                    }
                    // The semaphore is never closed.
                    Poll::Ready(permit) => permit,
                }
            }
        };
        self.counted_wait = false;
        let mut reservation = self.budget.granted(permit, bytes);
        reservation.compressed = message.compressed;
        self.reservations.push(reservation);
        Poll::Ready(())
    }
}

impl<B> Body for BudgetBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some((_, message)) = &this.held {
                let message = *message;
                ready!(this.poll_reserve(cx, message));
                let (piece, _) = this.held.take().expect("held");
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if let Some(mut data) = this.rest.take() {
                let (len, announced) = this.framing.next_piece(data.chunk());
                let piece = data.split_to(len);
                if !data.is_empty() {
                    this.rest = Some(data);
                }
                match announced {
                    Some(message) => this.held = Some((piece, message)),
                    None => return Poll::Ready(Some(Ok(Frame::data(piece)))),
                }
                continue;
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) => this.rest = Some(data),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn message(len: usize) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(7u8, len));
        out
    }

    #[test]
    fn framing_finds_every_prefix_however_the_bytes_are_split() {
        let mut wire = message(3);
        wire.extend(message(0));
        wire.extend(message(300));
        wire.extend(message(1));
        for chunk in [1, 2, 4, 5, 6, 7, 100, wire.len()] {
            let mut framing = Framing::new();
            let mut announced = Vec::new();
            let mut offsets = Vec::new();
            let mut at = 0;
            for mut data in wire.chunks(chunk) {
                while !data.is_empty() {
                    let (len, message) = framing.next_piece(data);
                    assert!(len > 0);
                    if let Some(message) = message {
                        announced.push(message.len);
                        offsets.push(at);
                    }
                    at += len;
                    data = &data[len..];
                }
            }
            assert_eq!(announced, vec![3, 0, 300, 1], "chunks of {chunk}");
            assert_eq!(framing, Framing::new());
            // A piece that announces a message holds no byte of the message
            // before it: each piece ends where its prefix completes or later,
            // never past the end of the message it begins.
            assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        }
    }

    fn budget(cap: usize) -> Budget {
        Budget::new(cap, Gauge::default(), Counter::default())
    }

    #[tokio::test]
    async fn messages_wait_for_the_budget_and_reservations_follow_them() {
        let budget = budget(2 * (100 + BATCH_OVERHEAD));
        let reservations = Reservations::default();
        let mut wire = message(100);
        wire.extend(message(100));
        wire.extend(message(100));
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = wire
            .chunks(64)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner = StreamBody::new(tokio_stream::iter(frames));
        let mut body = BudgetBody::new(inner, budget.clone(), reservations.clone(), 1 << 20);
        // Two messages fit; the third waits until one is given back.
        let mut read = 0;
        loop {
            let next =
                tokio::time::timeout(std::time::Duration::from_millis(50), body.frame()).await;
            match next {
                Ok(Some(Ok(frame))) => read += frame.into_data().unwrap().len(),
                Ok(None) => panic!("the third message must wait"),
                Ok(Some(Err(never))) => match never {},
                Err(_) => break,
            }
        }
        // Both messages that fit were passed on whole, the third's prefix not.
        assert_eq!(read, 2 * 105, "read {read}");
        assert_eq!(budget.current.get(), 2 * (100 + BATCH_OVERHEAD) as i64);
        assert_eq!(budget.waits.get(), 1);
        let first = reservations.take().unwrap();
        assert_eq!(first.bytes(), 100 + BATCH_OVERHEAD);
        drop(first);
        while let Some(frame) = body.frame().await {
            read += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(read, wire.len());
        assert!(reservations.take().is_some() && reservations.take().is_some());
        assert!(reservations.take().is_none());
    }

    #[test]
    fn a_reservation_can_be_trimmed_and_gives_everything_back() {
        let budget = budget(1_000);
        let mut reservation = budget.try_reserve(800).unwrap();
        assert!(budget.try_reserve(300).is_none());
        reservation.shrink_to(500);
        assert_eq!(budget.current.get(), 500);
        let other = budget.try_reserve(300).unwrap();
        drop(reservation);
        drop(other);
        assert_eq!(budget.current.get(), 0);
        assert!(budget.try_reserve(1_000).is_some());
    }
}
