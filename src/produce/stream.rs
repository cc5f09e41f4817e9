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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::error::{StreamError, record_error};
use crate::limits::{BATCH_OVERHEAD, Reservations};
use crate::metrics::Metrics;
use crate::proto::{ErrorCode, ProduceRequest, RecordError};
use crate::shutdown;
use crate::telemetry::{Tracing, TxnTrace};

use super::batches::{Batches, Tag};
use super::caller::Caller;
use super::dead_letter::{DeadLetter, DeadLetters};
use super::respond::{Blocked, Responder};
use super::transactions::Fence;
use super::validate::{self, DefaultTopic};
use super::window::{Limits, Window};
use super::{DeliveryResult, OutboundRecord, Sender, TrySendError, TxnError, error_result};

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
}

/// What happened on one stream, for logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Batches read from the client.
    pub batches: u64,
    /// Records Kafka acknowledged.
    pub records_ok: u64,
    /// Records that got an error result (validation, enqueue or delivery).
    pub records_failed: u64,
    /// Of those, records parked in the dead-letter topic.
    pub records_dead_lettered: u64,
    /// Records read but never handed to Kafka because nobody was left to
    /// answer.
    pub records_abandoned: u64,
    /// The client went away before the stream ended.
    pub client_gone: bool,
    /// The client stopped reading its responses and the stream was ended.
    pub stalled: bool,
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
    let stop = async move {
        let mut stop = stop;
        stop.requested().await
    };
    tokio::pin!(stop);
    let mut gone = Box::pin(responder.closed());
    // A transactional stream's transactions; responses wait for them.
    let transactional = sender.transactional_id().is_some();
    let mut txn = TxnState::default();
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
        if intake.is_abandoned() {
            summary.records_abandoned += pending.len() as u64;
            pending.clear();
        }
        advance_transactions!();
        while paused_until.is_none()
            && pending.front().is_some_and(|(tag, record)| {
                window.has_room(record.size) && (!transactional || txn.may_send(tag.seq))
            })
        {
            let (mut tag, record) = pending.pop_front().expect("checked above");
            let size = record.size;
            if transactional && !txn.open {
                if let Err(error) = sender.begin() {
                    // The transaction fails with this record.
                    summary.records_failed += 1;
                    txn.refused(tag.seq);
                    let record_error = aborted(
                        format!("cannot begin a transaction: {}", error.message),
                        error.retriable,
                    );
                    batches.resolve(&tag, error_result(record_error), metrics);
                    if error.fatal && intake.is_open() {
                        intake = Intake::Stopped {
                            error: StreamError::TransactionFailed(error.message),
                            since: Instant::now(),
                        };
                    }
                    continue;
                }
                txn.open = true;
            }
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
        let held_full = batches.held_records() >= limits.window.max_records
            || batches.held_bytes() >= limits.window.max_bytes;
        if transactional
            && intake.is_open()
            && held_full
            && txn.is_idle()
            && window.is_empty()
            && pending.is_empty()
        {
            // The open transaction fills the stream's bounds and no commit
            // came: reading on would wait forever.
            intake = Intake::Stopped {
                error: StreamError::TransactionTooLarge {
                    records: batches.held_records(),
                },
                since: Instant::now(),
            };
            continue;
        }
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
            result = async { txn.call.as_mut().expect("checked").await }, if txn.call.is_some() => {
                txn.call = None;
                txn.result = Some(result);
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

/// The transactions of a transactional stream.
#[derive(Default)]
struct TxnState<'a> {
    /// A transaction was begun and records went into it.
    open: bool,
    /// The batches with a record refused before it reached librdkafka
    /// (validation, the policy, the producer's own checks): their
    /// transaction cannot commit whole, and librdkafka does not know.
    refused: VecDeque<u64>,
    /// The batches whose request asked for a commit, oldest first.
    commits: VecDeque<u64>,
    /// The transaction being ended: its last batch, and how.
    target: Option<(u64, Ending)>,
    /// The commit or abort under way.
    call: Option<TxnCall<'a>>,
    /// Its result, applied once nothing of the transaction is in librdkafka.
    result: Option<Result<(), TxnError>>,
    /// The spans of the transactions whose batches were read, oldest first.
    traces: VecDeque<TxnSpan>,
}

/// The span of one transaction.
struct TxnSpan {
    /// Its first batch.
    first: u64,
    batches: u64,
    /// Its commit was asked for: later batches are the next transaction's.
    closed: bool,
    trace: TxnTrace,
}

/// A commit or abort under way.
type TxnCall<'a> = Pin<Box<dyn Future<Output = Result<(), TxnError>> + Send + 'a>>;

/// How a transaction ends.
enum Ending {
    Commit,
    /// Every record of it that did not fail on its own gets this error.
    Abort(RecordError),
}

impl<'a> TxnState<'a> {
    /// Whether a record of batch `seq` may be handed over now: not while a
    /// transaction ends, nor past the last batch of the one being
    /// committed.
    fn may_send(&self, seq: u64) -> bool {
        self.call.is_none()
            && self.result.is_none()
            && match &self.target {
                None => true,
                Some((last, Ending::Commit)) => seq <= *last,
                Some((_, Ending::Abort(_))) => false,
            }
    }

    /// The trace of the transaction batch `seq` belongs to, started with
    /// `start` when the batch is its first.
    fn trace_for(&mut self, seq: u64, start: impl FnOnce() -> TxnTrace) -> &TxnTrace {
        if self.traces.back().is_none_or(|span| span.closed) {
            self.traces.push_back(TxnSpan {
                first: seq,
                batches: 0,
                closed: false,
                trace: start(),
            });
        }
        let span = self.traces.back_mut().expect("just made sure");
        span.batches += 1;
        &span.trace
    }

    /// A record of batch `seq` was refused before it reached librdkafka.
    fn refused(&mut self, seq: u64) {
        if !self.refused.contains(&seq) {
            self.refused.push_back(seq);
        }
    }

    /// The batch just read asked for the commit of its transaction.
    fn close_trace(&mut self) {
        if let Some(span) = self.traces.back_mut() {
            span.closed = true;
        }
    }

    /// Ends the spans of the transactions up to batch `last`.
    fn finish_traces(&mut self, last: u64, aborted: Option<&str>) {
        while self.traces.front().is_some_and(|span| span.first <= last) {
            let span = self.traces.pop_front().expect("checked");
            span.trace.finish(span.batches, aborted);
        }
    }

    /// No transaction being ended.
    fn is_idle(&self) -> bool {
        self.target.is_none() && self.call.is_none() && self.result.is_none()
    }

    /// Moves the transactions on: applies an ended one's outcome to its
    /// batches once nothing of it is in librdkafka (`window_empty`), picks
    /// the next one to end (a commit asked for; at half-close, a commit of
    /// what is open; when the stream is stopped or abandoned, an abort), and
    /// starts ending it once its records are all delivered or failed. Stops
    /// the stream when the producer failed for good.
    fn step<S: Sender>(
        &mut self,
        sender: &'a S,
        intake: &mut Intake,
        mut stream: StreamState<'_>,
        window_empty: bool,
        metrics: &Metrics,
    ) {
        // A transaction with nothing to wait for ends at once, and the next
        // one may then be ready too.
        loop {
            let ended = window_empty && self.result.is_some();
            if let Some(error) = self.advance(sender, intake, &mut stream, window_empty, metrics) {
                if !intake.is_abandoned() {
                    *intake = Intake::Stopped {
                        error,
                        since: Instant::now(),
                    };
                }
                return;
            }
            if !(ended || window_empty && self.result.is_some()) {
                return;
            }
        }
    }

    /// One step of [`TxnState::step`]; returns why the stream must stop,
    /// when the producer failed for good.
    fn advance<S: Sender>(
        &mut self,
        sender: &'a S,
        intake: &Intake,
        stream: &mut StreamState<'_>,
        window_empty: bool,
        metrics: &Metrics,
    ) -> Option<StreamError> {
        if window_empty && let Some(result) = self.result.take() {
            let (last, ending) = self.target.take().expect("a call ends a target");
            self.open = false;
            self.refused.retain(|&seq| seq > last);
            while self.commits.front().is_some_and(|&seq| seq <= last) {
                self.commits.pop_front();
            }
            let (outcome, failed) = match (ending, result) {
                (Ending::Commit, Ok(())) => {
                    stream.batches.release_through(last);
                    self.finish_traces(last, None);
                    ("committed", None)
                }
                (Ending::Commit, Err(error)) => {
                    let record_error = aborted(
                        format!("the commit failed: {}", error.message),
                        error.retriable,
                    );
                    stream.batches.abort_through(last, &record_error, metrics);
                    self.finish_traces(last, Some(&record_error.message));
                    ("aborted", Some(error))
                }
                (Ending::Abort(record_error), result) => {
                    stream.batches.abort_through(last, &record_error, metrics);
                    self.finish_traces(last, Some(&record_error.message));
                    ("aborted", result.err())
                }
            };
            metrics.transaction(outcome);
            if let Some(error) = failed.filter(|error| error.fatal) {
                return Some(StreamError::TransactionFailed(error.message));
            }
        }
        if self.target.is_none() && stream.batches.has_unreleased() {
            let last = stream.batches.last_seq().expect("a batch is unreleased");
            self.target = match (self.commits.front(), intake) {
                (Some(&seq), _) => Some((seq, Ending::Commit)),
                (None, Intake::Finished) => Some((last, Ending::Commit)),
                (None, Intake::Stopped { error, .. }) => Some((
                    last,
                    Ending::Abort(aborted(
                        format!("the stream ended before a commit: {error}"),
                        true,
                    )),
                )),
                (None, Intake::Abandoned(_)) => Some((
                    last,
                    Ending::Abort(aborted("the client went away before a commit".into(), true)),
                )),
                (None, Intake::Open) => None,
            };
        }
        if self.call.is_some() || self.result.is_some() {
            return None;
        }
        let Some((last, ending)) = &mut self.target else {
            return None;
        };
        let last = *last;
        if let Ending::Commit = ending {
            let delivered =
                window_empty && stream.pending.front().is_none_or(|(tag, _)| tag.seq > last);
            if !delivered {
                return None;
            }
            // A record refused before librdkafka had it: abort. A record
            // librdkafka failed has already doomed the transaction there,
            // and the commit's error says why (then it is aborted).
            if self.refused.iter().any(|&seq| seq <= last)
                && let Some((batch_id, index, error)) = stream.batches.first_failure_through(last)
            {
                *ending = Ending::Abort(aborted(
                    format!(
                        "record {index} of batch {batch_id} failed: {}",
                        error.message
                    ),
                    error.retriable,
                ));
            }
        }
        match ending {
            Ending::Commit if self.open => self.call = Some(Box::pin(sender.commit())),
            Ending::Abort(_) => {
                // What of it was not handed over is never sent.
                stream.pending.retain(|(tag, _)| tag.seq > last);
                if self.open {
                    self.call = Some(Box::pin(sender.abort()));
                } else {
                    self.result = Some(Ok(()));
                }
            }
            // Nothing was sent: nothing to commit.
            Ending::Commit => self.result = Some(Ok(())),
        }
        None
    }
}

/// The result of a record whose transaction was aborted.
fn aborted(cause: String, retriable: bool) -> RecordError {
    record_error(
        ErrorCode::Aborted,
        format!("transaction aborted: {cause}"),
        retriable,
    )
}

/// What [`settle`] updates.
struct Settle<'a> {
    summary: &'a mut Summary,
    batches: &'a mut Batches,
    dead: Option<&'a mut DeadLetters>,
}

/// Puts one record's outcome into its batch's response, or, for a failed
/// record kept for the dead-letter topic, queues it to be parked there
/// first. Called in stream order.
fn settle(mut tag: Tag, result: DeliveryResult, state: &mut Settle<'_>, metrics: &Metrics) {
    match result {
        Ok(delivered) => {
            state.summary.records_ok += 1;
            state.batches.resolve_delivered(&tag, delivered, metrics);
        }
        Err(error) => match (tag.kept.take(), state.dead.as_deref_mut()) {
            (Some(record), Some(dead)) if dead.config().parks(&error) => {
                dead.park(tag, *record, error);
            }
            _ => {
                state.summary.records_failed += 1;
                state.batches.resolve(&tag, error_result(error), metrics);
            }
        },
    }
}

/// What [`accept`] adds to.
struct StreamState<'a> {
    batches: &'a mut Batches,
    pending: &'a mut VecDeque<(Tag, OutboundRecord)>,
    summary: &'a mut Summary,
    /// The stream's transactional id, if it is transactional.
    transactional_id: Option<&'a str>,
}

impl StreamState<'_> {
    /// A record refused before it reached librdkafka: answered now, or, when
    /// it is `parked`, queued in its turn with its failure, to be written to
    /// the dead-letter topic in stream order.
    fn refuse(
        &mut self,
        tag: Tag,
        error: RecordError,
        parked: Option<OutboundRecord>,
        metrics: &Metrics,
    ) {
        match parked {
            Some(record) => {
                let tag = Tag {
                    failed: Some(Box::new(error)),
                    ..tag
                };
                self.pending.push_back((tag, record));
            }
            None => {
                self.summary.records_failed += 1;
                self.batches.resolve(&tag, error_result(error), metrics);
            }
        }
    }
}

/// Validates a batch, opens its response and its span, and queues its
/// valid records; returns how many records and payload bytes it queued.
async fn accept<S: Sender>(
    sender: &S,
    limits: &StreamLimits,
    observers: &Observers,
    caller: &mut Caller,
    request: ProduceRequest,
    reservation: Option<crate::limits::Reservation>,
    mut stream: StreamState<'_>,
) -> Result<(u64, u64), StreamError> {
    match (stream.transactional_id, request.transactional_id.as_str()) {
        (Some(id), named) if !named.is_empty() && named != id => {
            return Err(StreamError::TransactionMisuse(format!(
                "batch {} names transactional id {named:?}, but the stream's is {id:?}: a \
                 stream keeps the transactional id of its first request",
                request.batch_id
            )));
        }
        (None, named) if !named.is_empty() || request.commit => {
            return Err(StreamError::TransactionMisuse(format!(
                "batch {} {}, but the stream is not transactional: name the transactional id \
                 in the stream's first request",
                request.batch_id,
                if named.is_empty() {
                    "asks for a commit".to_owned()
                } else {
                    format!("names transactional id {named:?}")
                }
            )));
        }
        _ => {}
    }
    if request.records.len() > limits.max_batch_records {
        return Err(StreamError::TooManyRecords {
            batch_id: request.batch_id,
            records: request.records.len(),
            limit: limits.max_batch_records,
        });
    }
    let mut trace = observers.tracing.start_batch(
        &observers.parent,
        if observers.tracing.is_enabled() {
            batch_topic(&request)
        } else {
            None
        },
        request.batch_id,
        request.records.len(),
        caller.principal.as_ref().map(|p| p.name()),
    );
    if observers.tracing.is_enabled() {
        // The span links to the contexts records carry of their own, and
        // counts the bytes it was sent.
        let mut bytes = 0;
        for (index, record) in request.records.iter().enumerate() {
            trace.link(index, &record.headers);
            bytes += validate::record_size(record);
        }
        trace.bytes(bytes);
    }
    let trace_headers = trace.headers.clone();
    let stamp = caller.stamp().cloned();
    let metrics = &*observers.metrics;
    let default_topic = DefaultTopic::new(request.topic);
    let compact = match (&default_topic, request.compact_acks) {
        (DefaultTopic::Valid(topic), true) => Some(topic.clone()),
        _ => None,
    };
    // Where this batch's failed records are parked, unless it opted out.
    let dead_letter = limits
        .dead_letter
        .as_ref()
        .filter(|_| !request.skip_dead_letter && stream.transactional_id.is_none());
    let seq = stream.batches.open(
        request.batch_id,
        request.records.len(),
        trace,
        reservation,
        compact,
        dead_letter.is_some(),
        metrics,
    );
    // Whether a refused record is parked, and the record as it is parked.
    let parks = |error: &RecordError| dead_letter.is_some_and(|dead| dead.parks(error));
    let keep = |mut record: OutboundRecord| {
        record.trace_headers = trace_headers.clone();
        record.stamp = stamp.clone();
        record
    };
    // Each topic of the batch is made sure of once, before its first record
    // is queued; a topic that cannot be had fails its records.
    let mut topics: HashMap<Arc<str>, Option<RecordError>> = HashMap::new();
    // The previous record's topic and its check: records of a batch mostly
    // share one topic (the same `Arc` when it is the batch's default), so
    // most skip hashing the name.
    let mut last: Option<(Arc<str>, Option<RecordError>)> = None;
    let mut held_bytes = 0;
    let (mut queued, mut queued_bytes) = (0u64, 0u64);
    for (index, record) in request.records.into_iter().enumerate() {
        let size = validate::record_size(&record);
        held_bytes += size;
        let mut record =
            match validate::prepare(record, size, &default_topic, limits.max_record_bytes) {
                Ok(record) => record,
                Err(refused) => {
                    let (error, record) = *refused;
                    let tag = Tag {
                        seq,
                        index,
                        topic: Arc::from(""),
                        size,
                        sent: false,
                        failed: None,
                        kept: None,
                    };
                    let parked = parks(&error)
                        .then(|| keep(validate::refused(record, size, &default_topic)));
                    stream.refuse(tag, error, parked, metrics);
                    continue;
                }
            };
        let failure = match &last {
            Some((topic, failure))
                if Arc::ptr_eq(topic, &record.topic) || **topic == *record.topic =>
            {
                failure.clone()
            }
            _ => {
                let failure = match topics.get(&record.topic) {
                    Some(failure) => failure.clone(),
                    None => {
                        // Authorized first: a denied topic is not even
                        // created.
                        let failure = match caller.authorize(&record.topic) {
                            Err(denied) => {
                                observers.metrics.denied(caller.label());
                                Some(denied)
                            }
                            Ok(()) => sender.ensure_topic(&record.topic).await.err(),
                        };
                        topics.insert(record.topic.clone(), failure.clone());
                        failure
                    }
                };
                last = Some((record.topic.clone(), failure.clone()));
                failure
            }
        };
        let tag = Tag {
            seq,
            index,
            topic: record.topic.clone(),
            size: record.size,
            sent: false,
            failed: None,
            kept: None,
        };
        match failure {
            Some(error) => {
                let parked = parks(&error).then(|| keep(record));
                stream.refuse(tag, error, parked, metrics);
            }
            None => {
                record.trace_headers = trace_headers.clone();
                record.stamp = stamp.clone();
                queued += 1;
                queued_bytes += record.size as u64;
                stream.pending.push_back((tag, record));
            }
        }
    }
    stream.batches.hold_bytes(seq, held_bytes);
    Ok((queued, queued_bytes))
}

/// The one topic every record of a batch goes to, if there is one: the span's
/// destination.
fn batch_topic(request: &ProduceRequest) -> Option<&str> {
    let mut topic = (!request.topic.is_empty()).then_some(request.topic.as_str());
    for record in &request.records {
        match (topic, record.topic.as_str()) {
            (_, "") if topic.is_some() => {}
            (None, own) if !own.is_empty() => topic = Some(own),
            (Some(t), own) if t == own => {}
            _ => return None,
        }
    }
    topic
}

#[cfg(test)]
mod tests {
    //! The driver against a fake Kafka whose deliveries complete in an order
    //! the test chooses, so order, bounds and backpressure are checked
    //! without a broker.

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::produce::respond::{self, ResponseStream};
    use crate::proto::{ProduceResponse, RecordResult};

    /// Responses the fake client's channel holds unread.
    const RESPONSES: usize = 128;
    use crate::error::record_error;
    use crate::produce::{Completions, Delivered};
    use crate::proto::{self, ErrorCode, Record, record_result};

    /// A tiny deterministic PRNG (xorshift64*), so failures replay.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        }
    }

    #[derive(Default)]
    struct FakeState {
        /// Values in the order the fake accepted them.
        accepted: Vec<Bytes>,
        /// Undelivered records: where to report, under which number, the
        /// outcome each will get, and its size.
        pending: Vec<(Arc<Completions>, u64, DeliveryResult, usize)>,
        /// Values whose delivery times out.
        time_out: Vec<Bytes>,
        /// Records accepted for the topic "dlq", in the order accepted.
        letters: Vec<OutboundRecord>,
        /// A transactional fake's calls and records, in order: `begin`,
        /// `commit`, `abort`, and each record's value.
        events: Vec<String>,
        /// Errors the next commits fail with.
        commit_errors: VecDeque<TxnError>,
        next_offset: HashMap<i32, i64>,
        /// Undelivered records the fake's queue holds at most; more is QueueFull.
        queue_capacity: usize,
        /// Answer QueueFull to this many calls regardless (other streams' load).
        forced_queue_full: usize,
        queue_full_answers: usize,
        /// Most records and bytes accepted and not yet reported at once.
        max_alive: usize,
        max_alive_bytes: usize,
    }

    /// A fake librdkafka: partition = first key byte % 3; offsets per partition
    /// in acceptance order; outcomes reported when the test says, in any order.
    #[derive(Clone)]
    struct FakeKafka {
        state: Arc<Mutex<FakeState>>,
        /// Set: a transactional producer with this id.
        txn_id: Option<&'static str>,
        /// Records and bytes accepted and not yet reported.
        alive: Arc<AtomicUsize>,
        alive_bytes: Arc<AtomicUsize>,
    }

    impl FakeKafka {
        fn new(queue_capacity: usize) -> Self {
            Self {
                state: Arc::new(Mutex::new(FakeState {
                    queue_capacity,
                    ..FakeState::default()
                })),
                alive: Arc::default(),
                alive_bytes: Arc::default(),
                txn_id: None,
            }
        }

        /// A transactional fake.
        fn transactional() -> Self {
            Self {
                txn_id: Some("tx"),
                ..Self::new(usize::MAX)
            }
        }

        fn events(&self) -> Vec<String> {
            self.state.lock().unwrap().events.clone()
        }

        /// Delivers one random pending record; false when none is pending.
        fn deliver_one(&self, rng: &mut Rng) -> bool {
            let mut state = self.state.lock().unwrap();
            if state.pending.is_empty() {
                return false;
            }
            let index = rng.below(state.pending.len());
            let (completions, seq, outcome, size) = state.pending.swap_remove(index);
            self.alive.fetch_sub(1, Ordering::SeqCst);
            self.alive_bytes.fetch_sub(size, Ordering::SeqCst);
            completions.push(seq, outcome);
            true
        }

        fn accepted(&self) -> Vec<Bytes> {
            self.state.lock().unwrap().accepted.clone()
        }
    }

    impl Sender for FakeKafka {
        fn try_send(
            &self,
            record: &OutboundRecord,
            completions: &Arc<Completions>,
            seq: u64,
        ) -> Result<(), TrySendError> {
            let mut state = self.state.lock().unwrap();
            if &*record.topic == "forbidden" {
                return Err(TrySendError::Rejected(record_error(
                    ErrorCode::NotAuthorized,
                    "TOPIC_AUTHORIZATION_FAILED",
                    false,
                )));
            }
            if state.forced_queue_full > 0 || state.pending.len() >= state.queue_capacity {
                state.forced_queue_full = state.forced_queue_full.saturating_sub(1);
                state.queue_full_answers += 1;
                return Err(TrySendError::QueueFull);
            }
            let partition = i32::from(record.key.as_ref().map_or(0, |k| k[0]) % 3);
            let value = record.value.clone().unwrap_or_default();
            let outcome = if &*record.topic != "dlq" && state.time_out.contains(&value) {
                Err(record_error(
                    ErrorCode::TimedOut,
                    "Local: Message timed out",
                    true,
                ))
            } else {
                let offset = state.next_offset.entry(partition).or_default();
                let delivered = Delivered {
                    partition,
                    offset: *offset,
                    timestamp_ms: 7,
                };
                *offset += 1;
                Ok(delivered)
            };
            state
                .pending
                .push((completions.clone(), seq, outcome, record.size));
            if &*record.topic == "dlq" {
                state.letters.push(record.clone());
            }
            if self.txn_id.is_some() {
                state
                    .events
                    .push(String::from_utf8_lossy(&value).into_owned());
            }
            state.accepted.push(value);
            let alive = self.alive.fetch_add(1, Ordering::SeqCst) + 1;
            let bytes = self.alive_bytes.fetch_add(record.size, Ordering::SeqCst) + record.size;
            state.max_alive = state.max_alive.max(alive);
            state.max_alive_bytes = state.max_alive_bytes.max(bytes);
            Ok(())
        }

        async fn ensure_topic(&self, _topic: &str) -> Result<(), proto::RecordError> {
            Ok(())
        }

        fn transactional_id(&self) -> Option<&str> {
            self.txn_id
        }

        fn begin(&self) -> Result<(), TxnError> {
            self.state.lock().unwrap().events.push("begin".into());
            Ok(())
        }

        async fn commit(&self) -> Result<(), TxnError> {
            let mut state = self.state.lock().unwrap();
            assert!(
                state.pending.is_empty(),
                "a commit only once every record is delivered"
            );
            state.events.push("commit".into());
            state.commit_errors.pop_front().map_or(Ok(()), Err)
        }

        async fn abort(&self) -> Result<(), TxnError> {
            // As librdkafka: what is not delivered yet is purged.
            let mut state = self.state.lock().unwrap();
            state.events.push("abort".into());
            for (completions, seq, _, size) in state.pending.drain(..) {
                self.alive.fetch_sub(1, Ordering::SeqCst);
                self.alive_bytes.fetch_sub(size, Ordering::SeqCst);
                completions.push(
                    seq,
                    Err(record_error(
                        ErrorCode::Unavailable,
                        "Local: Purged in queue",
                        true,
                    )),
                );
            }
            Ok(())
        }
    }

    /// Runs the driver in a task of its own, as the service does; returns
    /// the task and what the client receives.
    fn spawn_driver<In>(
        kafka: &FakeKafka,
        limits: StreamLimits,
        inbound: In,
        stop: Stop,
    ) -> (tokio::task::JoinHandle<Summary>, ResponseStream)
    where
        In: Stream<Item = Result<ProduceRequest, Status>> + Unpin + Send + 'static,
    {
        let kafka = kafka.clone();
        let (responder, responses) = respond::channel(RESPONSES);
        let task = tokio::spawn(async move {
            drive(
                &kafka,
                &limits,
                inbound,
                Reservations::default(),
                responder,
                stop,
                Caller::anonymous(),
                &Observers::none(),
            )
            .await
        });
        (task, responses)
    }

    /// The next item if one is there now.
    fn try_recv(responses: &mut ResponseStream) -> Option<Result<ProduceResponse, Status>> {
        futures_util::FutureExt::now_or_never(responses.recv()).flatten()
    }

    fn limits(max_records: usize, max_bytes: usize) -> StreamLimits {
        StreamLimits {
            window: Limits {
                max_records,
                max_bytes,
            },
            max_batch_records: 1_000,
            max_record_bytes: 1_000,
            stall_timeout: Duration::from_secs(60),
            dead_letter: None,
        }
    }

    fn record(n: usize) -> Record {
        Record {
            key: Some(Bytes::from(vec![n as u8])),
            value: Some(Bytes::from(format!("value-{n}"))),
            ..Record::default()
        }
    }

    /// `sizes.len()` batches; batch i holds `sizes[i]` records numbered
    /// consecutively across the stream.
    fn batches(sizes: &[usize]) -> Vec<ProduceRequest> {
        let mut n = 0;
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| ProduceRequest {
                batch_id: i as u64,
                topic: "t".into(),
                records: (0..size)
                    .map(|_| {
                        n += 1;
                        record(n - 1)
                    })
                    .collect(),
                compact_acks: false,
                skip_dead_letter: false,
                transactional_id: String::new(),
                commit: false,
            })
            .collect()
    }

    fn values(requests: &[ProduceRequest]) -> Vec<Bytes> {
        requests
            .iter()
            .flat_map(|r| r.records.iter().map(|rec| rec.value.clone().unwrap()))
            .collect()
    }

    /// Runs the driver over `requests` while a "broker" task delivers pending
    /// records in random order. Returns everything the client received.
    async fn run_stream(
        kafka: &FakeKafka,
        limits: StreamLimits,
        requests: Vec<ProduceRequest>,
        seed: u64,
    ) -> (Vec<Result<ProduceResponse, Status>>, Summary) {
        let (responder, mut responses) = respond::channel(4);
        let broker = {
            let kafka = kafka.clone();
            tokio::spawn(async move {
                let mut rng = Rng(seed);
                loop {
                    tokio::time::sleep(Duration::from_micros(1 + rng.below(300) as u64)).await;
                    kafka.deliver_one(&mut rng);
                }
            })
        };
        let inbound = tokio_stream::iter(requests.into_iter().map(Ok));
        let observers = Observers::none();
        let driver = drive(
            kafka,
            &limits,
            inbound,
            Reservations::default(),
            responder,
            Stop::never(),
            Caller::anonymous(),
            &observers,
        );
        let collect = async {
            let mut out = Vec::new();
            while let Some(item) = responses.recv().await {
                out.push(item);
            }
            out
        };
        let (summary, out) = tokio::join!(driver, collect);
        broker.abort();
        (out, summary)
    }

    fn ok_metadata(result: &RecordResult) -> &proto::RecordMetadata {
        match &result.result {
            Some(record_result::Result::Ok(meta)) => meta,
            other => panic!("expected an ok result, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acks_come_back_in_order_whatever_the_delivery_order() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed * 7919);
            let sizes: Vec<usize> = (0..30).map(|_| rng.below(12)).collect();
            let requests = batches(&sizes);
            let sent = values(&requests);
            let kafka = FakeKafka::new(usize::MAX);
            let (out, summary) = run_stream(&kafka, limits(7, 10_000), requests, seed).await;

            assert_eq!(
                kafka.accepted(),
                sent,
                "seed {seed}: handed over out of stream order"
            );
            assert_eq!(
                out.len(),
                sizes.len(),
                "seed {seed}: one response per batch"
            );
            let mut last_offset: HashMap<i32, i64> = HashMap::new();
            for (i, response) in out.iter().enumerate() {
                let response = response.as_ref().expect("no stream error");
                assert_eq!(
                    response.batch_id, i as u64,
                    "seed {seed}: responses out of order"
                );
                assert_eq!(response.results.len(), sizes[i]);
                for result in &response.results {
                    let meta = ok_metadata(result);
                    assert_eq!(meta.topic, "t");
                    let last = last_offset.insert(meta.partition, meta.offset);
                    assert!(
                        last.is_none_or(|last| last < meta.offset),
                        "seed {seed}: offsets must grow per partition"
                    );
                }
            }
            assert_eq!(summary.records_ok as usize, sent.len());
            assert_eq!(summary.records_failed, 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_bounds_records_and_bytes_in_flight() {
        let requests = batches(&[50, 50, 50]);
        let kafka = FakeKafka::new(usize::MAX);
        let (out, _) = run_stream(&kafka, limits(5, 1_000), requests, 3).await;
        assert_eq!(out.len(), 3);
        assert_eq!(
            kafka.state.lock().unwrap().max_alive,
            5,
            "the window must fill up to, and not past, 5 records"
        );

        // Each record is 1 key byte + 7 to 9 value bytes: at most 3 fit in 30 bytes.
        let requests = batches(&[40]);
        let kafka = FakeKafka::new(usize::MAX);
        let (out, _) = run_stream(&kafka, limits(100, 30), requests, 4).await;
        assert_eq!(out[0].as_ref().unwrap().results.len(), 40);
        let max_bytes = kafka.state.lock().unwrap().max_alive_bytes;
        assert!(
            (20..=30).contains(&max_bytes),
            "bytes in flight peaked at {max_bytes}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_stops_reading_the_stream() {
        let kafka = FakeKafka::new(usize::MAX);
        let read = Arc::new(AtomicUsize::new(0));
        let inbound = {
            let read = read.clone();
            tokio_stream::iter(batches(&[1; 100]).into_iter().map(Ok)).map(move |item| {
                read.fetch_add(1, Ordering::SeqCst);
                item
            })
        };
        let limits = limits(4, 10_000);
        let (driver, mut rx) = spawn_driver(&kafka, limits, inbound, Stop::never());
        // Nothing is delivered: the driver fills the window, then must stop.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(kafka.accepted().len(), 4);
        assert_eq!(
            read.load(Ordering::SeqCst),
            4,
            "4 batches in the window, no more: unanswered batches hold the window's worth"
        );
        assert!(try_recv(&mut rx).is_none(), "no ack before a delivery");

        let mut rng = Rng(9);
        let mut answered = 0;
        while answered < 100 {
            while kafka.deliver_one(&mut rng) {}
            tokio::time::sleep(Duration::from_millis(1)).await;
            while let Some(response) = try_recv(&mut rx) {
                assert_eq!(response.unwrap().batch_id, answered);
                answered += 1;
            }
        }
        assert_eq!(driver.await.unwrap().records_ok, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_full_retries_the_same_record_in_order() {
        let requests = batches(&[40, 3, 60]);
        let sent = values(&requests);
        // librdkafka's queue holds 3 records; the window would allow 100.
        let kafka = FakeKafka::new(3);
        let (out, summary) = run_stream(&kafka, limits(100, 100_000), requests, 11).await;
        assert!(
            kafka.state.lock().unwrap().queue_full_answers > 10,
            "the test must hit QueueFull"
        );
        assert_eq!(
            kafka.accepted(),
            sent,
            "no record lost, duplicated or reordered"
        );
        assert_eq!(out.len(), 3);
        assert_eq!(summary.records_ok as usize, sent.len());
    }

    #[tokio::test(start_paused = true)]
    async fn queue_full_with_nothing_in_flight_waits_and_retries() {
        let requests = batches(&[5]);
        let kafka = FakeKafka::new(usize::MAX);
        kafka.state.lock().unwrap().forced_queue_full = 25;
        let (out, summary) = run_stream(&kafka, limits(100, 100_000), requests, 5).await;
        assert_eq!(kafka.state.lock().unwrap().queue_full_answers, 25);
        assert_eq!(out[0].as_ref().unwrap().results.len(), 5);
        assert_eq!(summary.records_ok, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_records_fail_alone_and_the_stream_goes_on() {
        let mut requests = batches(&[4, 2]);
        requests[0].records[1].topic = "bad topic!".into();
        requests[0].records[2].topic = "forbidden".into();
        requests[0].records[3].partition = Some(-2);
        let kafka = FakeKafka::new(usize::MAX);
        let (out, summary) = run_stream(&kafka, limits(100, 100_000), requests, 2).await;
        let first = out[0].as_ref().unwrap();
        let codes: Vec<Option<i32>> = first
            .results
            .iter()
            .map(|r| match &r.result {
                Some(record_result::Result::Error(e)) => Some(e.code),
                _ => None,
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                None,
                Some(ErrorCode::InvalidRecord as i32),
                Some(ErrorCode::NotAuthorized as i32),
                Some(ErrorCode::InvalidRecord as i32)
            ]
        );
        assert_eq!(out[1].as_ref().unwrap().results.len(), 2);
        assert_eq!((summary.records_ok, summary.records_failed), (3, 3));
        assert_eq!(kafka.accepted().len(), 3, "bad records are never sent");
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_batch_ends_the_stream_after_earlier_batches() {
        let requests = batches(&[3, 1_001, 2]);
        let kafka = FakeKafka::new(usize::MAX);
        let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 8).await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap().results.len(), 3);
        let status = out[1].as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("--max-batch-records"),
            "{}",
            status.message()
        );
        assert_eq!(
            kafka.accepted().len(),
            3,
            "nothing of the oversized batch or after it is sent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_answers_what_was_read_then_ends_unavailable() {
        let kafka = FakeKafka::new(usize::MAX);
        let (trigger, signal) = shutdown::channel();
        let (in_tx, in_rx) = mpsc::channel(8);
        let limits = limits(100, 100_000);
        let stop = Stop::new(signal, None);
        let (driver, mut rx) = spawn_driver(&kafka, limits, ReceiverStream::new(in_rx), stop);
        for request in batches(&[3, 4]) {
            in_tx.send(Ok(request)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        trigger.trigger();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A batch sent after shutdown is never read.
        let _ = in_tx.send(Ok(batches(&[9]).remove(0))).await;
        let mut rng = Rng(1);
        while kafka.deliver_one(&mut rng) {}
        assert_eq!(rx.recv().await.unwrap().unwrap().results.len(), 3);
        assert_eq!(rx.recv().await.unwrap().unwrap().results.len(), 4);
        let status = rx.recv().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(rx.recv().await.is_none());
        assert_eq!(driver.await.unwrap().records_ok, 7);
        assert_eq!(kafka.accepted().len(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_still_has_its_in_flight_records_completed() {
        let kafka = FakeKafka::new(usize::MAX);
        let (in_tx, in_rx) = mpsc::channel(8);
        let limits = limits(10, 100_000);
        let (driver, rx) = spawn_driver(&kafka, limits, ReceiverStream::new(in_rx), Stop::never());
        // 25 records: 10 enter the window, 15 wait behind it.
        in_tx.send(Ok(batches(&[25]).remove(0))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(rx);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut rng = Rng(4);
        while kafka.deliver_one(&mut rng) {}
        let summary = tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("the driver ends")
            .unwrap();
        assert!(summary.client_gone);
        assert_eq!(
            summary.records_ok, 10,
            "every record handed to Kafka completes"
        );
        assert_eq!(
            summary.records_abandoned, 15,
            "records never handed over are dropped, not sent"
        );
        assert_eq!(kafka.accepted().len(), 10);
        assert_eq!(
            kafka.alive.load(Ordering::SeqCst),
            0,
            "no delivery is leaked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn compact_acks_name_the_batch_topic_once() {
        let mut requests = batches(&[3, 2]);
        requests[0].compact_acks = true;
        requests[0].records[1].topic = "elsewhere".into();
        let kafka = FakeKafka::new(usize::MAX);
        let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 6).await;
        let compact = out[0].as_ref().unwrap();
        assert_eq!(compact.topic, "t", "the response names the batch's topic");
        let topics: Vec<&str> = compact
            .results
            .iter()
            .map(|r| ok_metadata(r).topic.as_str())
            .collect();
        assert_eq!(
            topics,
            vec!["", "elsewhere", ""],
            "only other topics are named"
        );
        let full = out[1].as_ref().unwrap();
        assert_eq!(full.topic, "", "a batch that did not ask gets full acks");
        assert!(full.results.iter().all(|r| ok_metadata(r).topic == "t"));
    }

    fn dead_letter_limits(topic: &str, retriable: bool) -> StreamLimits {
        StreamLimits {
            dead_letter: Some(DeadLetter {
                topic: Arc::from(topic),
                retriable,
            }),
            ..limits(100, 100_000)
        }
    }

    fn error_of(result: &RecordResult) -> &proto::RecordError {
        match &result.result {
            Some(record_result::Result::Error(error)) => error,
            other => panic!("expected an error result, got {other:?}"),
        }
    }

    fn header<'a>(record: &'a OutboundRecord, key: &str) -> Option<&'a [u8]> {
        record
            .headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| &h.value[..])
    }

    #[tokio::test(start_paused = true)]
    async fn failed_records_are_parked_in_stream_order_and_say_where() {
        use super::super::dead_letter::{HEADER_CODE, HEADER_PARTITION, HEADER_TOPIC};
        for seed in 1..=10u64 {
            let mut requests = batches(&[6, 3]);
            // Stream order of the failures: 1 times out in flight (known
            // last), 2 is invalid, 3 is refused by the producer, 5 is
            // invalid, 7 times out.
            requests[0].records[2].topic = "bad topic!".into();
            requests[0].records[3].topic = "forbidden".into();
            requests[0].records[5].partition = Some(-2);
            let kafka = FakeKafka::new(usize::MAX);
            {
                let mut state = kafka.state.lock().unwrap();
                state
                    .time_out
                    .push(requests[0].records[1].value.clone().unwrap());
                state
                    .time_out
                    .push(requests[1].records[1].value.clone().unwrap());
            }
            let values = values(&requests);
            let (out, summary) =
                run_stream(&kafka, dead_letter_limits("dlq", true), requests, seed).await;
            let results: Vec<&RecordResult> = out
                .iter()
                .flat_map(|r| r.as_ref().unwrap().results.iter())
                .collect();
            let failed = [1, 2, 3, 5, 7];
            let letters = kafka.state.lock().unwrap().letters.clone();
            let parked: Vec<Bytes> = letters.iter().map(|l| l.value.clone().unwrap()).collect();
            let expected: Vec<Bytes> = failed.iter().map(|&i| values[i].clone()).collect();
            assert_eq!(parked, expected, "seed {seed}: parked in stream order");
            for (n, &i) in failed.iter().enumerate() {
                let error = error_of(results[i]);
                let at = error.dead_letter.as_ref().unwrap_or_else(|| {
                    panic!("seed {seed}: record {i} says where it was parked: {error:?}")
                });
                assert_eq!(at.topic, "dlq");
                let code = ErrorCode::try_from(error.code).unwrap();
                assert_eq!(
                    header(&letters[n], HEADER_CODE),
                    Some(code.as_str_name().as_bytes()),
                    "seed {seed}: record {i}"
                );
            }
            assert_eq!(header(&letters[1], HEADER_TOPIC), Some(&b"bad topic!"[..]));
            assert_eq!(header(&letters[2], HEADER_TOPIC), Some(&b"forbidden"[..]));
            assert_eq!(header(&letters[3], HEADER_PARTITION), Some(&b"-2"[..]));
            assert_eq!(header(&letters[0], HEADER_TOPIC), Some(&b"t"[..]));
            for i in [0, 4, 6, 8] {
                ok_metadata(results[i]);
            }
            assert_eq!(
                (
                    summary.records_ok,
                    summary.records_failed,
                    summary.records_dead_lettered
                ),
                (4, 5, 5)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timed_out_records_are_parked_only_when_asked() {
        let requests = batches(&[3]);
        let kafka = FakeKafka::new(usize::MAX);
        kafka
            .state
            .lock()
            .unwrap()
            .time_out
            .push(requests[0].records[1].value.clone().unwrap());
        let (out, summary) =
            run_stream(&kafka, dead_letter_limits("dlq", false), requests, 3).await;
        let error = error_of(&out[0].as_ref().unwrap().results[1]);
        assert_eq!(error.code, ErrorCode::TimedOut as i32);
        assert!(error.dead_letter.is_none());
        assert!(kafka.state.lock().unwrap().letters.is_empty());
        assert_eq!(summary.records_dead_lettered, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_opts_out_is_only_answered() {
        let mut requests = batches(&[2, 2]);
        requests[0].skip_dead_letter = true;
        requests[0].records[0].topic = "bad topic!".into();
        requests[1].records[0].topic = "bad topic!".into();
        let kafka = FakeKafka::new(usize::MAX);
        let (out, _) = run_stream(&kafka, dead_letter_limits("dlq", false), requests, 5).await;
        let skipped = error_of(&out[0].as_ref().unwrap().results[0]);
        assert!(skipped.dead_letter.is_none(), "{skipped:?}");
        let parked = error_of(&out[1].as_ref().unwrap().results[0]);
        assert!(parked.dead_letter.is_some(), "{parked:?}");
        assert_eq!(kafka.state.lock().unwrap().letters.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_topic_that_fails_too_is_said_so() {
        let mut requests = batches(&[2]);
        requests[0].records[0].topic = "bad topic!".into();
        let kafka = FakeKafka::new(usize::MAX);
        // The fake refuses every record to "forbidden".
        let (out, summary) =
            run_stream(&kafka, dead_letter_limits("forbidden", false), requests, 7).await;
        let error = error_of(&out[0].as_ref().unwrap().results[0]);
        assert_eq!(
            error.code,
            ErrorCode::InvalidRecord as i32,
            "the original failure"
        );
        assert!(error.dead_letter.is_none());
        assert!(
            error
                .message
                .contains("dead-letter topic \"forbidden\" failed too")
                && error.message.contains("TOPIC_AUTHORIZATION_FAILED"),
            "{}",
            error.message
        );
        ok_metadata(&out[0].as_ref().unwrap().results[1]);
        assert_eq!(summary.records_dead_lettered, 0);
        assert_eq!(summary.records_failed, 1);
    }

    fn txn_batch(batch_id: u64, values: &[&str], commit: bool) -> ProduceRequest {
        ProduceRequest {
            batch_id,
            topic: "t".into(),
            records: values
                .iter()
                .map(|v| Record {
                    key: Some(Bytes::from_static(b"k")),
                    value: Some(Bytes::copy_from_slice(v.as_bytes())),
                    ..Record::default()
                })
                .collect(),
            transactional_id: if batch_id == 0 {
                "tx".into()
            } else {
                String::new()
            },
            commit,
            ..ProduceRequest::default()
        }
    }

    fn codes(response: &ProduceResponse) -> Vec<i32> {
        response
            .results
            .iter()
            .map(|r| match &r.result {
                Some(record_result::Result::Ok(_)) => 0,
                Some(record_result::Result::Error(e)) => e.code,
                None => -1,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn acks_of_a_transaction_wait_for_its_commit() {
        let kafka = FakeKafka::transactional();
        let (in_tx, in_rx) = mpsc::channel(8);
        let (driver, mut rx) = spawn_driver(
            &kafka,
            limits(100, 100_000),
            ReceiverStream::new(in_rx),
            Stop::never(),
        );
        let mut rng = Rng(3);
        in_tx
            .send(Ok(txn_batch(0, &["a", "b"], false)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        while kafka.deliver_one(&mut rng) {}
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            try_recv(&mut rx).is_none(),
            "delivered, not committed: no ack yet"
        );

        in_tx.send(Ok(txn_batch(1, &["c"], true))).await.unwrap();
        in_tx.send(Ok(txn_batch(2, &["d"], false))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            kafka.events(),
            ["begin", "a", "b", "c"],
            "the next transaction's records wait for the commit"
        );
        while kafka.deliver_one(&mut rng) {}
        tokio::time::sleep(Duration::from_millis(10)).await;
        for batch_id in [0, 1] {
            let response = try_recv(&mut rx).expect("committed: answered").unwrap();
            assert_eq!(response.batch_id, batch_id);
            assert!(codes(&response).iter().all(|&c| c == 0));
        }
        assert!(
            try_recv(&mut rx).is_none(),
            "batch 2 is in the next transaction"
        );
        // Half-close commits what is open.
        drop(in_tx);
        tokio::time::sleep(Duration::from_millis(10)).await;
        while kafka.deliver_one(&mut rng) {}
        let summary = driver.await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().batch_id, 2);
        assert!(rx.recv().await.is_none(), "the stream ends OK");
        assert_eq!(
            kafka.events(),
            ["begin", "a", "b", "c", "commit", "begin", "d", "commit"]
        );
        assert_eq!(summary.records_ok, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_record_aborts_its_whole_transaction_and_the_next_one_commits() {
        let mut first = txn_batch(0, &["a", "b", "c"], true);
        first.records[1].topic = "bad topic!".into();
        let requests = vec![first, txn_batch(1, &["d"], true)];
        let kafka = FakeKafka::transactional();
        let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 9).await;
        let aborted = out[0].as_ref().unwrap();
        assert_eq!(
            codes(aborted),
            [
                ErrorCode::Aborted as i32,
                ErrorCode::InvalidRecord as i32,
                ErrorCode::Aborted as i32
            ]
        );
        let error = match &aborted.results[0].result {
            Some(record_result::Result::Error(e)) => e,
            _ => unreachable!(),
        };
        assert!(
            error.message.contains("record 1 of batch 0 failed") && !error.retriable,
            "{error:?}"
        );
        assert_eq!(codes(out[1].as_ref().unwrap()), [0]);
        assert_eq!(
            kafka.events(),
            ["begin", "a", "c", "abort", "begin", "d", "commit"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_commit_aborts_with_a_retriable_error() {
        let kafka = FakeKafka::transactional();
        kafka
            .state
            .lock()
            .unwrap()
            .commit_errors
            .push_back(TxnError {
                message: "Broker: Coordinator not available (COORDINATOR_NOT_AVAILABLE)".into(),
                retriable: true,
                fatal: false,
            });
        let requests = vec![txn_batch(0, &["a", "b"], true), txn_batch(1, &["c"], true)];
        let (out, _) = run_stream(&kafka, limits(100, 100_000), requests, 4).await;
        let first = out[0].as_ref().unwrap();
        assert_eq!(codes(first), [ErrorCode::Aborted as i32; 2]);
        match &first.results[0].result {
            Some(record_result::Result::Error(e)) => assert!(
                e.retriable
                    && e.message.contains("the commit failed")
                    && e.message.contains("COORDINATOR_NOT_AVAILABLE"),
                "{e:?}"
            ),
            _ => unreachable!(),
        }
        assert_eq!(codes(out[1].as_ref().unwrap()), [0], "the stream goes on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_mid_transaction_has_it_aborted() {
        let kafka = FakeKafka::transactional();
        let (in_tx, in_rx) = mpsc::channel(8);
        let (driver, rx) = spawn_driver(
            &kafka,
            limits(100, 100_000),
            ReceiverStream::new(in_rx),
            Stop::never(),
        );
        in_tx
            .send(Ok(txn_batch(0, &["a", "b"], false)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(rx);
        drop(in_tx);
        let summary = tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("the driver ends")
            .unwrap();
        assert!(summary.client_gone);
        assert_eq!(kafka.events(), ["begin", "a", "b", "abort"]);
        assert_eq!(
            kafka.alive.load(Ordering::SeqCst),
            0,
            "every record reported"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_transaction_that_fills_the_window_without_a_commit_is_aborted() {
        let requests = (0..10).map(|n| txn_batch(n, &["x"], false)).collect();
        let kafka = FakeKafka::transactional();
        let (out, _) = run_stream(&kafka, limits(4, 100_000), requests, 2).await;
        assert_eq!(out.len(), 5, "4 answered, then the status: {out:?}");
        for response in &out[..4] {
            assert_eq!(
                codes(response.as_ref().unwrap()),
                [ErrorCode::Aborted as i32]
            );
        }
        let status = out[4].as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("commit more often"), "{status:?}");
        assert_eq!(kafka.events().last().map(String::as_str), Some("abort"));
    }

    #[tokio::test(start_paused = true)]
    async fn transaction_fields_on_the_wrong_stream_end_it() {
        let kafka = FakeKafka::new(usize::MAX);
        let (out, _) = run_stream(
            &kafka,
            limits(100, 100_000),
            vec![txn_batch(0, &["a"], true)],
            1,
        )
        .await;
        let status = out[0].as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("not transactional"), "{status:?}");

        let kafka = FakeKafka::transactional();
        let mut other = txn_batch(1, &["b"], true);
        other.transactional_id = "other".into();
        let (out, _) = run_stream(
            &kafka,
            limits(100, 100_000),
            vec![txn_batch(0, &["a"], true), other],
            1,
        )
        .await;
        assert_eq!(codes(out[0].as_ref().unwrap()), [0]);
        let status = out[1].as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("\"other\""), "{status:?}");
    }
}
