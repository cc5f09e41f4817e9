//! The way back to the client: one stream's responses, in order, then its
//! final status.
//!
//! Responses go through a small bounded channel, so a client that reads
//! slowly holds back its own stream and nothing else. The final status
//! travels apart from them, through a oneshot: ending a stream never waits
//! for room in the channel, so a client that stopped reading cannot keep
//! its stream's task from finishing.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::Status;

use crate::proto::ProduceResponse;

/// The driver's end.
pub struct Responder {
    /// Bounded: the client's reading paces what the driver may answer.
    responses: mpsc::Sender<ProduceResponse>,
    /// The status the stream ends with, if not OK.
    end: oneshot::Sender<Status>,
}

/// The client's end: what tonic sends back. Yields every response the
/// driver sent, then the final status, if any.
pub struct ResponseStream {
    responses: mpsc::Receiver<ProduceResponse>,
    /// `None` once read.
    end: Option<oneshot::Receiver<Status>>,
}

/// A channel for one stream holding at most `buffer` unread responses.
pub fn channel(buffer: usize) -> (Responder, ResponseStream) {
    let (tx, rx) = mpsc::channel(buffer);
    let (end_tx, end_rx) = oneshot::channel();
    (
        Responder {
            responses: tx,
            end: end_tx,
        },
        ResponseStream {
            responses: rx,
            end: Some(end_rx),
        },
    )
}

/// Why a response could not be sent now.
#[derive(Debug, PartialEq, Eq)]
pub enum Blocked {
    /// The client has not read the responses before it.
    Full,
    /// The client went away.
    Gone,
}

impl Responder {
    /// Room for one response now, or why not.
    pub fn try_reserve(&self) -> Result<mpsc::Permit<'_, ProduceResponse>, Blocked> {
        self.responses.try_reserve().map_err(|err| match err {
            mpsc::error::TrySendError::Full(()) => Blocked::Full,
            mpsc::error::TrySendError::Closed(()) => Blocked::Gone,
        })
    }

    /// Resolves when the channel has room again (`true`) or the client left
    /// (`false`). Cancel-safe.
    pub async fn ready(&self) -> bool {
        self.responses.reserve().await.is_ok()
    }

    /// Resolves when the client went away. Cancel-safe.
    pub async fn closed(&self) {
        self.responses.closed().await;
    }

    /// Ends the stream after the responses already sent: with `status`, or
    /// OK when `None`.
    pub fn end(self, status: Option<Status>) {
        if let Some(status) = status {
            let _ = self.end.send(status);
        }
    }
}

impl ResponseStream {
    /// The next item, for the unary call and for tests.
    pub async fn recv(&mut self) -> Option<Result<ProduceResponse, Status>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for ResponseStream {
    type Item = Result<ProduceResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(response) = std::task::ready!(this.responses.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(response)));
        }
        // Every response was read and the driver is done with the channel.
        let Some(end) = &mut this.end else {
            return Poll::Ready(None);
        };
        let status = std::task::ready!(Pin::new(end).poll(cx)).ok();
        this.end = None;
        Poll::Ready(status.map(Err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(batch_id: u64) -> ProduceResponse {
        ProduceResponse {
            batch_id,
            ..ProduceResponse::default()
        }
    }

    #[tokio::test]
    async fn responses_then_the_status_even_when_the_channel_is_full() {
        let (responder, mut stream) = channel(1);
        responder.try_reserve().unwrap().send(response(1));
        assert_eq!(responder.try_reserve().err(), Some(Blocked::Full));
        // Ending does not wait for the client to read.
        responder.end(Some(Status::unavailable("bye")));
        assert_eq!(stream.recv().await.unwrap().unwrap().batch_id, 1);
        assert_eq!(
            stream.recv().await.unwrap().unwrap_err().code(),
            tonic::Code::Unavailable
        );
        assert!(stream.recv().await.is_none());
    }

    #[tokio::test]
    async fn an_ok_end_has_no_status() {
        let (responder, mut stream) = channel(4);
        responder.try_reserve().unwrap().send(response(7));
        responder.end(None);
        assert_eq!(stream.recv().await.unwrap().unwrap().batch_id, 7);
        assert!(stream.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_stream_is_seen_as_gone() {
        let (responder, stream) = channel(4);
        drop(stream);
        responder.closed().await;
        assert_eq!(responder.try_reserve().err(), Some(Blocked::Gone));
        assert!(!responder.ready().await);
    }
}
