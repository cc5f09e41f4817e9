//! Where a stream's delivery reports land: librdkafka's delivery callback
//! (on its own thread) pushes each record's outcome here, tagged with the
//! record's sequence number in the stream, and wakes the stream's task once
//! for however many arrive before the task runs again.
//!
//! This replaces one future and one oneshot channel per record: a report
//! costs a push under an uncontended lock, and a burst of reports costs one
//! wake-up.

use std::sync::Mutex;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::DeliveryResult;

/// The outcomes reported and not yet taken, and the task to wake.
#[derive(Default)]
pub struct Completions {
    /// (sequence number, outcome), in the order reported.
    done: Mutex<Vec<(u64, DeliveryResult)>>,
    /// The stream's task, woken on each report until it runs again.
    waker: AtomicWaker,
}

impl Completions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports the outcome of record `seq`. Called from librdkafka's thread.
    pub fn push(&self, seq: u64, outcome: DeliveryResult) {
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((seq, outcome));
        self.waker.wake();
    }

    /// Moves every outcome reported so far into `into`; arranges for the
    /// task of `cx` to be woken by the next report when there was none.
    pub fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        into: &mut Vec<(u64, DeliveryResult)>,
    ) -> Poll<()> {
        // Register first, then look: a report between the two still wakes.
        self.waker.register(cx.waker());
        self.drain(into);
        if into.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Moves every outcome reported so far into `into`, without waiting.
    pub fn drain(&self, into: &mut Vec<(u64, DeliveryResult)>) {
        let mut done = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if into.is_empty() {
            // The usual case: take the whole vector, copy nothing, and leave
            // the taker's (empty, with its capacity) for the next reports.
            std::mem::swap(into, &mut *done);
        } else {
            into.append(&mut done);
        }
    }

    /// Waits for the next reports: for a caller that sends one record on its
    /// own (a warm-up, a test).
    pub async fn next(&self) -> Vec<(u64, DeliveryResult)> {
        let mut into = Vec::new();
        std::future::poll_fn(|cx| self.poll_drain(cx, &mut into)).await;
        into
    }
}
