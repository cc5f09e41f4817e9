//! Drives one `Produce` stream: reads batches, hands their records to Kafka
//! strictly in stream order through the [`Window`], and writes one response
//! per batch, in batch order.
//!
//! One task per stream runs [`drive`], a single loop that, each turn:
//! 1. hands over the records already read, oldest first, while the window has
//!    room and librdkafka takes them (on `QueueFull` the record waits at the
//!    head of the line and is retried after the oldest delivery completes);
//! 2. hands every batch response whose records are all resolved to the
//!    client, in order, as long as the client reads them;
//! 3. waits for the next event: the oldest delivery, room for a response,
//!    the next batch, the client leaving or stalling, or a stop (shutdown,
//!    connection age).
//!
//! Everything the driver holds is bounded by what it has not answered yet:
//! it reads the next batch only when every record read so far was handed
//! over and the unanswered batches hold fewer than the window's records and
//! bytes ([`Batches`] counts them, an empty batch as one record). A stream
//! stuck on one record therefore stops reading, whatever its client sends,
//! and HTTP/2 flow control holds the client back.
//!
//! The loop is here; its steps are beside it: [`accept`] reads one batch
//! (checks, validation, the queue of records to hand over), [`answer`]
//! turns each record's outcome into its answer, and [`txn`] holds the
//! transaction steps of a transactional stream (its state machine is
//! written down there).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::error::StreamError;
use crate::limits::{BATCH_OVERHEAD, Reservations};
use crate::metrics::Metrics;
use crate::proto::ProduceRequest;
use crate::shutdown;
use crate::telemetry::Tracing;

use super::batches::{Batches, Tag};
use super::caller::Caller;
use super::dead_letter::{DeadLetter, DeadLetters};
use super::respond::{Blocked, Responder};
use super::summary::Summary;
use super::transactions::Fence;
use super::window::{Limits, Window};
use super::{OutboundRecord, Sender, TrySendError, error_result};

mod accept;
mod answer;
#[cfg(test)]
mod tests;
mod txn;

use accept::{StreamState, accept};
use answer::{Settle, settle};
use txn::TxnState;

/// How long to wait before retrying a record that met `QueueFull` while this
/// stream had nothing in flight (other streams filled the shared queue, so
/// there is no delivery of ours to wait for).
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(5);

/// Records a stream keeps room for once they are handed over: beyond this,
/// the queue of records waiting for the window is freed when it empties, so
/// that thousands of mostly idle streams do not each hold a batch's worth.
const PENDING_KEPT: usize = 16;

/// How long a stream ended by a stop keeps reading (and discarding) what its
/// client still sends, so that the client reads the final status before the
/// connection closes. Closing a socket with unread data resets it, and a
/// reset can destroy the status in the client's buffers.
const STOP_LINGER: Duration = Duration::from_secs(2);

/// Once a stream is told to stop, how long its client may leave a response
/// unread before the stream is ended without waiting for the stall timeout.
const STOP_STALL: Duration = Duration::from_secs(2);

/// The per-stream bounds and settings.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// The ordered send window's bounds; the batches a stream read and has
    /// not answered are held to the same bounds.
    pub window: Limits,
    /// Records one batch may hold; a larger batch ends the stream.
    pub max_batch_records: usize,
    /// Payload bytes one record may hold; a larger record gets an error.
    pub max_record_bytes: usize,
    /// How long a response may wait for the client to read it before the
    /// stream is ended (its records in flight still complete).
    pub stall_timeout: Duration,
    /// Where failed records are parked, if anywhere.
    pub dead_letter: Option<DeadLetter>,
    /// How long a transactional stream's calls to Kafka may take.
    pub transactions: TxnTimeouts,
}

/// The bounds of a transactional stream's commits and aborts.
#[derive(Debug, Clone, Copy)]
pub struct TxnTimeouts {
    /// How long one commit or abort call may block
    /// (`--transaction-timeout`). A call that times out is resumed, up to
    /// [`txn::CALL_ATTEMPTS`] calls in all; a commit still unfinished then
    /// has an unknown outcome.
    pub call: Duration,
    /// Once the gateway shuts down, how long a stream may still spend
    /// ending its transaction: no call is waited for past it, so that the
    /// answers and the flush fit within `--shutdown-timeout`.
    pub at_shutdown: Duration,
}

impl TxnTimeouts {
    /// The bounds a gateway with `--transaction-timeout` `call` and
    /// `--shutdown-timeout` `shutdown` gives its streams: half the shutdown
    /// timeout for ending transactions, the rest for answering and
    /// flushing.
    pub fn new(call: Duration, shutdown: Duration) -> Self {
        Self {
            call,
            at_shutdown: shutdown / 2,
        }
    }
}

/// Where a stream reports what it does: the process's metrics, and the
/// caller's trace.
#[derive(Clone)]
pub struct Observers {
    pub metrics: Arc<Metrics>,
    pub tracing: Arc<Tracing>,
    /// The caller's trace context, from the request metadata.
    pub parent: opentelemetry::Context,
}

impl Observers {
    /// Fresh metrics, no tracing: for tests and tools.
    pub fn none() -> Self {
        Self {
            metrics: Arc::default(),
            tracing: Arc::new(Tracing::disabled()),
            parent: opentelemetry::Context::new(),
        }
    }
}

/// What can stop a stream's reading before its client is done: the
/// gateway's shutdown, its connection reaching `--max-connection-age`, or,
/// for a transactional stream, a newer stream claiming its transactional id.
#[derive(Clone)]
pub struct Stop {
    shutdown: shutdown::Signal,
    connection_age: Option<Instant>,
    fence: Option<Fence>,
}

impl Stop {
    pub fn new(shutdown: shutdown::Signal, connection_age: Option<Instant>) -> Self {
        Self {
            shutdown,
            connection_age,
            fence: None,
        }
    }

    /// Also stops when `fence` says a newer stream claimed the stream's
    /// transactional id.
    pub fn with_fence(self, fence: Fence) -> Self {
        Self {
            fence: Some(fence),
            ..self
        }
    }

    /// Nothing stops the stream but its client.
    pub fn never() -> Self {
        Self::new(shutdown::Signal::never(), None)
    }

    /// Resolves with the reason once the stream must stop. Cancel-safe.
    async fn requested(&mut self) -> StreamError {
        let age = async {
            match self.connection_age {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let fenced = async {
            match &mut self.fence {
                Some(fence) => fence.fenced().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.shutdown.requested() => StreamError::ShuttingDown,
            () = age => StreamError::ConnectionAgeReached,
            id = fenced => StreamError::Fenced { id },
        }
    }
}

/// Where a stream's reading stands.
enum Intake {
    /// Reading, as room allows.
    Open,
    /// The client finished sending: answer everything, then end OK.
    Finished,
    /// Told to stop at `since`: answer what was read, then end with the error.
    Stopped { error: StreamError, since: Instant },
    /// Nobody reads the answers any more: complete what is in flight, answer
    /// nothing.
    Abandoned(Abandon),
}

enum Abandon {
    /// The client went away.
    Gone,
    /// The client left responses unread past the stall timeout (or past
    /// [`STOP_STALL`] after a stop). Ends with this status.
    Stalled(Status),
}

impl Intake {
    fn is_open(&self) -> bool {
        matches!(self, Intake::Open)
    }

    fn is_abandoned(&self) -> bool {
        matches!(self, Intake::Abandoned(_))
    }

    /// When a response blocked since `blocked_since` makes the stream stall.
    fn stall_deadline(&self, blocked_since: Instant, limits: &StreamLimits) -> Instant {
        let deadline = blocked_since + limits.stall_timeout;
        match self {
            Intake::Stopped { since, .. } => deadline.min(blocked_since.max(*since) + STOP_STALL),
            _ => deadline,
        }
    }
}

/// Runs one stream to its end. Returns when the client closed its side and
/// every batch was answered, when the stream broke or was stopped (after
/// answering every batch already read), or when nobody is left to answer
/// (after every record in flight completed).
///
/// `reservations` holds each batch's share of the gateway's memory budget,
/// in the order the batches arrive; the driver keeps each one until the
/// batch is answered.
#[allow(clippy::too_many_arguments)]
pub async fn drive<S, In>(
    sender: &S,
    limits: &StreamLimits,
    mut inbound: In,
    reservations: Reservations,
    responder: Responder,
    stop: Stop,
    mut caller: Caller,
    observers: &Observers,
) -> Summary
where
    S: Sender,
    In: Stream<Item = Result<ProduceRequest, Status>> + Unpin,
{
    let metrics = &*observers.metrics;
    let _open = observers.metrics.stream_opened();
    let mut window: Window<Tag> = Window::new(limits.window);
    // What this stream last added to the in-flight gauges.
    let mut in_flight = (0, 0);
    let mut batches = Batches::default();
    // Records read but not yet handed to librdkafka, in stream order.
    let mut pending: VecDeque<(Tag, OutboundRecord)> = VecDeque::new();
    let mut summary = Summary::default();
    let mut intake = Intake::Open;
    // Since when the front response waits for the client to read.
    let mut blocked_since: Option<Instant> = None;
    // Until when the caller is over its quota: nothing is handed over or
    // read meanwhile.
    let mut paused_until: Option<Instant> = None;
    // Built once, not on every turn: they wait as long as the stream lives.
    // A transactional stream bounds its calls once the gateway shuts down.
    let mut shutdown = stop.shutdown.clone();
    let mut shutting_down = false;
    let stop = async move {
        let mut stop = stop;
        stop.requested().await
    };
    tokio::pin!(stop);
    let mut gone = Box::pin(responder.closed());
    // A transactional stream's transactions; responses wait for them.
    let transactional = sender.transactional_id().is_some();
    let mut txn = TxnState::new(limits.transactions);
    if transactional {
        batches.hold_until_released();
    }
    // Where this stream's failed records are parked, if anywhere (never for
    // a transactional stream: its records are all or nothing).
    let dead_letter = limits.dead_letter.clone().filter(|_| !transactional);
    let mut dead = dead_letter.map(|config| {
        DeadLetters::new(
            config,
            caller.principal.as_ref().map(|p| p.name()),
            limits.window,
            observers.tracing.clone(),
        )
    });

    // Moves a transactional stream's transactions on: before the hand-over
    // (an ended transaction lets the next one's records go) and after it
    // (records refused at once may leave nothing to wait for).
    macro_rules! advance_transactions {
        () => {
            if transactional {
                let stream = StreamState {
                    batches: &mut batches,
                    pending: &mut pending,
                    summary: &mut summary,
                    transactional_id: None,
                };
                txn.step(sender, &mut intake, stream, window.is_empty(), metrics);
            }
        };
    }

    loop {
        // 1. Hand over, in order, what the window and librdkafka take.
        let mut queue_full = false;
        if intake.is_abandoned() && !transactional {
            // (A transactional stream's are answered by the abort of their
            // transaction.)
            summary.records_abandoned += pending.len() as u64;
            pending.clear();
        }
        advance_transactions!();
        while paused_until.is_none()
            && pending.front().is_some_and(|(tag, record)| {
                window.has_room(record.size) && (!transactional || txn.may_send(tag.seq))
            })
        {
            if transactional && !txn.is_open() {
                // The record waits for its transaction to be begun.
                txn.begin(sender);
                break;
            }
            let (mut tag, record) = pending.pop_front().expect("checked above");
            let size = record.size;
            if let Some(error) = tag.failed.take() {
                // Refused, and kept for the dead-letter topic: it takes its
                // turn in the window, so that it is parked in stream order.
                tag.kept = Some(Box::new(record));
                window.push_done(tag, size, Err(*error));
                continue;
            }
            match sender.try_send(&record, window.completions(), window.next_seq()) {
                Ok(()) => {
                    tag.sent = true;
                    if dead.is_some() && batches.dead_letter(tag.seq) {
                        tag.kept = Some(Box::new(record));
                    }
                    window.push(tag, size);
                }
                Err(TrySendError::QueueFull) => {
                    pending.push_front((tag, record));
                    queue_full = true;
                    break;
                }
                Err(TrySendError::Rejected(error)) => {
                    if dead
                        .as_ref()
                        .is_some_and(|dead| dead.config().parks(&error))
                        && batches.dead_letter(tag.seq)
                    {
                        tag.kept = Some(Box::new(record));
                        window.push_done(tag, size, Err(error));
                    } else {
                        summary.records_failed += 1;
                        if transactional {
                            txn.refused(tag.seq);
                        }
                        batches.resolve(&tag, error_result(error), metrics);
                    }
                }
            }
        }
        if let Some(dead) = &mut dead {
            queue_full |= dead.hand_over(sender, &mut batches, &mut summary, metrics);
        }
        advance_transactions!();
        if pending.is_empty() && pending.capacity() > PENDING_KEPT {
            // A whole batch's records (some 200 bytes each) no longer wait:
            // an idle stream should not keep room for them.
            pending = VecDeque::new();
        }
        let now = (window.len() as i64, window.bytes() as i64);
        metrics.in_flight(now.0 - in_flight.0, now.1 - in_flight.1);
        in_flight = now;

        // 2. Answer finished batches, in order, while the client reads.
        while batches.front_is_ready() {
            if intake.is_abandoned() {
                batches.pop_ready();
                continue;
            }
            match responder.try_reserve() {
                Ok(permit) => {
                    permit.send(batches.pop_ready().expect("the front is ready"));
                    blocked_since = None;
                }
                Err(Blocked::Full) => {
                    blocked_since.get_or_insert_with(Instant::now);
                    break;
                }
                Err(Blocked::Gone) => {
                    summary.client_gone = true;
                    intake = Intake::Abandoned(Abandon::Gone);
                }
            }
        }

        let parked = dead.as_ref().is_none_or(DeadLetters::is_idle)
            && (!transactional || (txn.is_idle() && !batches.has_unreleased()));
        let done = match intake {
            Intake::Open => false,
            // Nobody to answer: done once nothing of ours is in librdkafka.
            Intake::Abandoned(_) => pending.is_empty() && window.is_empty() && parked,
            Intake::Finished | Intake::Stopped { .. } => {
                pending.is_empty() && window.is_empty() && parked && batches.is_empty()
            }
        };
        if done {
            break;
        }

        // 3. Wait for something to happen.
        let blocked = blocked_since.filter(|_| !intake.is_abandoned());
        let stall_at = blocked.map(|since| intake.stall_deadline(since, limits));
        // The open transaction alone fills the stream's bounds and no
        // commit came: reading on would wait forever. (Answers of committed
        // transactions the client has not read yet do not count: reading
        // them makes room.)
        let (open_records, open_bytes) = batches.unreleased_held();
        if transactional
            && intake.is_open()
            && (open_records >= limits.window.max_records || open_bytes >= limits.window.max_bytes)
            && txn.is_idle()
            && window.is_empty()
            && pending.is_empty()
        {
            intake = Intake::Stopped {
                error: StreamError::TransactionTooLarge {
                    records: open_records,
                },
                since: Instant::now(),
            };
            continue;
        }
        let call_deadline = txn.call_deadline();
        let can_read = intake.is_open()
            && paused_until.is_none()
            && pending.is_empty()
            && batches.held_records() < limits.window.max_records
            && batches.held_bytes() < limits.window.max_bytes;
        tokio::select! {
            biased;
            done = window.next_done(), if !window.is_empty() => {
                let (tag, result) = done.expect("the window is not empty");
                let mut state = Settle { summary: &mut summary, batches: &mut batches, dead: dead.as_mut() };
                settle(tag, result, &mut state, metrics);
                // Every later delivery that is already done, in order, in
                // this same turn: one trip round the loop per wake-up
                // rather than per record.
                while let Some((tag, result)) = window.try_next_done() {
                    settle(tag, result, &mut state, metrics);
                }
            }
            () = async {
                dead.as_mut().expect("checked").settle_next(&mut batches, &mut summary, metrics).await;
            }, if dead.as_ref().is_some_and(DeadLetters::in_flight) => {}
            () = txn.next_result(), if txn.is_calling() => {}
            () = async { tokio::time::sleep_until(call_deadline.expect("set")).await }, if call_deadline.is_some() => {
                txn.expire();
            }
            () = shutdown.requested(), if transactional && !shutting_down => {
                shutting_down = true;
                txn.cap_at(Instant::now() + limits.transactions.at_shutdown);
            }
            // An async block, so the timer is only built (and the clock
            // read) when this branch is enabled, not on every turn.
            () = async { tokio::time::sleep(QUEUE_FULL_RETRY).await },
                if queue_full && window.is_empty() && !dead.as_ref().is_some_and(DeadLetters::in_flight) => {}
            () = async { tokio::time::sleep_until(paused_until.expect("paused")).await }, if paused_until.is_some() => {
                paused_until = None;
            }
            room = responder.ready(), if blocked.is_some() => {
                if !room {
                    summary.client_gone = true;
                    intake = Intake::Abandoned(Abandon::Gone);
                }
            }
            () = async { tokio::time::sleep_until(stall_at.expect("blocked")).await }, if stall_at.is_some() => {
                let waited = Instant::now() - blocked.expect("blocked");
                tracing::info!(?waited, "client left a response unread: ending its stream");
                summary.stalled = true;
                intake = Intake::Abandoned(Abandon::Stalled(StreamError::Stalled {
                    timeout: limits.stall_timeout,
                }.into()));
            }
            () = gone.as_mut(), if !intake.is_abandoned() => {
                summary.client_gone = true;
                intake = Intake::Abandoned(Abandon::Gone);
            }
            error = &mut stop, if intake.is_open() => {
                intake = Intake::Stopped { error, since: Instant::now() };
            }
            next = inbound.next(), if can_read => match next {
                None => intake = Intake::Finished,
                Some(Ok(request)) => {
                    summary.batches += 1;
                    let mut reservation = reservations.take();
                    if let Some(reservation) = &mut reservation
                        && reservation.is_for_compressed()
                    {
                        // Reserved at the worst case; now the size is known.
                        reservation.shrink_to(request.encoded_len() + BATCH_OVERHEAD);
                    }
                    let commit = request.commit;
                    let failed_before = summary.records_failed;
                    // A transaction's batches' spans go under its span.
                    let in_transaction;
                    let batch_observers = match sender.transactional_id() {
                        Some(id) => {
                            let principal = caller.principal.as_ref().map(|p| p.name());
                            let trace = txn.trace_for(batches.next_seq(), || {
                                observers.tracing.start_transaction(&observers.parent, id, principal)
                            });
                            in_transaction = Observers { parent: trace.context.clone(), ..observers.clone() };
                            &in_transaction
                        }
                        None => observers,
                    };
                    let stream = StreamState {
                        batches: &mut batches,
                        pending: &mut pending,
                        summary: &mut summary,
                        transactional_id: sender.transactional_id(),
                    };
                    match accept(sender, limits, batch_observers, &mut caller, request, reservation, stream).await {
                        Ok((records, bytes)) => {
                            if transactional && summary.records_failed > failed_before {
                                txn.refused(batches.last_seq().expect("just opened"));
                            }
                            if commit && transactional {
                                txn.close_trace();
                                txn.commits.push_back(batches.last_seq().expect("just opened"));
                            }
                            let wait = caller.charge(records, bytes);
                            if !wait.is_zero() {
                                metrics.throttled(caller.label(), wait);
                                paused_until = Some(Instant::now() + wait);
                            }
                        }
                        Err(error) => intake = Intake::Stopped { error, since: Instant::now() },
                    }
                }
                Some(Err(status)) => match StreamError::from_inbound(&status) {
                    Some(error) => intake = Intake::Stopped { error, since: Instant::now() },
                    None => {
                        tracing::debug!(%status, "client stream ended with an error");
                        summary.client_gone = true;
                        intake = Intake::Abandoned(Abandon::Gone);
                    }
                },
            },
        }
    }

    metrics.in_flight(-in_flight.0, -in_flight.1);
    let (label, status, linger) = match intake {
        Intake::Open => unreachable!("the loop ends only once reading stopped"),
        Intake::Finished => ("completed", None, false),
        Intake::Abandoned(Abandon::Gone) => ("client_gone", None, false),
        Intake::Abandoned(Abandon::Stalled(status)) => ("stalled", Some(status), false),
        Intake::Stopped { error, .. } => {
            tracing::debug!(%error, "ending stream");
            let (label, linger) = (error.label(), error.is_stop());
            (label, Some(Status::from(error)), linger)
        }
    };
    metrics.stream_ended(label);
    drop(gone);
    responder.end(status);
    if linger {
        // The response has ended; batches still arriving are never read
        // into the window, so never produced and never answered.
        let _ = tokio::time::timeout(STOP_LINGER, async {
            while let Some(Ok(_)) = inbound.next().await {}
        })
        .await;
    }
    summary
}
