//! The transaction steps of a transactional stream: which transaction ends
//! next and how, each librdkafka call a transition that succeeds, times
//! out, fails abortably or fails fatally, and what the client is told.
//!
//! The state machine, one transaction at a time per stream ("the client
//! sees" is the answer of every record of the transaction; a record that
//! failed on its own, e.g. invalid, keeps its own error):
//!
//! | state      | event                                   | next       | the client sees |
//! |------------|-----------------------------------------|------------|-----------------|
//! | Idle       | a record to send                        | Beginning  | nothing yet |
//! | Beginning  | begin ok                                | Open       | nothing yet |
//! | Beginning  | begin fails (any way)                   | Dead       | `ABORTED`, retriable; the stream ends `ABORTED` |
//! | Open       | records delivered, commit asked (or half-close) | Committing | nothing yet |
//! | Open       | a record refused before Kafka           | Aborting   | at the verdict: `ABORTED` naming the record, retriable as that record |
//! | Open       | stream stopped (shutdown, too large, connection age) | Aborting | `ABORTED`, retriable; then the stream's status |
//! | Open, or a commit not yet started | client gone, or fenced by a newer stream | Aborting | `ABORTED` (nobody, if gone); fenced: the stream ends `ABORTED` |
//! | Committing | commit ok                               | Idle       | `ok` for each record: committed |
//! | Committing | commit times out, attempts left         | Committing | nothing yet: the commit is resumed |
//! | Committing | commit times out [`CALL_ATTEMPTS`] times, or at the shutdown bound | Dead | `UNAVAILABLE`, `may_be_stored`, retriable: **outcome unknown**; the stream ends `UNAVAILABLE` |
//! | Committing | commit fails abortably                  | Aborting   | at the verdict: `ABORTED` naming the cause, retriable |
//! | Committing | commit fails fatally (fenced, ...)      | Dead       | `ABORTED`, retriable; the stream ends `ABORTED` |
//! | Aborting   | abort ok                                | Idle       | `ABORTED` |
//! | Aborting   | abort times out (after the attempts) or fails | Dead  | `ABORTED` (never committed: Kafka aborts it at `transaction.timeout.ms`, or when the id's next producer starts); the stream ends `ABORTED` |
//!
//! Dead: the stream's producer is retired (the next stream with the id
//! gets a new one, whose `init_transactions` ends whatever this one left)
//! and every transaction still unanswered is aborted without a call.
//!
//! A verdict is applied only once nothing of the transaction is left in
//! librdkafka (an abort purges what was not delivered, and each purged
//! record reports first), so no answer races a delivery report. No call is
//! waited for past the shutdown bound ([`super::TxnTimeouts::at_shutdown`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;

use crate::error::{StreamError, record_error};
use crate::metrics::Metrics;
use crate::proto::{ErrorCode, RecordError};
use crate::telemetry::TxnTrace;

use super::super::{Sender, TxnError, TxnErrorKind};
use super::accept::StreamState;
use super::{Intake, TxnTimeouts};

/// Calls of one kind (a commit, an abort) made for one transaction at
/// most: a call that times out is resumed until then.
pub const CALL_ATTEMPTS: u32 = 3;

/// The transactions of a transactional stream.
pub(super) struct TxnState<'a> {
    timeouts: TxnTimeouts,
    /// A transaction was begun in the producer and not ended yet.
    open: bool,
    /// The producer failed for good or was retired: no call is made any
    /// more, and every transaction left is aborted.
    dead: Option<String>,
    /// The batches with a record refused before it reached librdkafka
    /// (validation, the policy, the producer's own checks): their
    /// transaction cannot commit whole, and librdkafka does not know.
    refused: VecDeque<u64>,
    /// The batches whose request asked for a commit, oldest first.
    pub(super) commits: VecDeque<u64>,
    /// The transaction being ended: its last batch, and how.
    target: Option<(u64, Ending)>,
    /// The call under way.
    call: Option<(Call, TxnCall<'a>)>,
    /// Its result, applied once nothing of the transaction is in librdkafka.
    result: Option<(Call, Result<(), TxnError>)>,
    /// Calls made to end the target, of its current kind.
    attempts: u32,
    /// Set once the gateway shuts down: no call is waited for past it.
    cap: Option<Instant>,
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

/// A transactional call under way.
type TxnCall<'a> = Pin<Box<dyn Future<Output = Result<(), TxnError>> + Send + 'a>>;

/// The kinds of transactional call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Begin,
    Commit,
    Abort,
}

/// How a transaction ends.
enum Ending {
    Commit,
    /// Every record of it that did not fail on its own gets this error.
    Abort(RecordError),
}

impl<'a> TxnState<'a> {
    pub(super) fn new(timeouts: TxnTimeouts) -> Self {
        Self {
            timeouts,
            open: false,
            dead: None,
            refused: VecDeque::new(),
            commits: VecDeque::new(),
            target: None,
            call: None,
            result: None,
            attempts: 0,
            cap: None,
            traces: VecDeque::new(),
        }
    }

    /// Whether a record of batch `seq` may be handed over now: not while a
    /// call is under way, nor past the last batch of the transaction being
    /// committed, nor once the producer is dead.
    pub(super) fn may_send(&self, seq: u64) -> bool {
        self.call.is_none()
            && self.result.is_none()
            && self.dead.is_none()
            && match &self.target {
                None => true,
                Some((last, Ending::Commit)) => seq <= *last,
                Some((_, Ending::Abort(_))) => false,
            }
    }

    /// Whether a transaction is open, so that records may go in.
    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// Starts a transaction for the records waiting to be handed over.
    pub(super) fn begin<S: Sender>(&mut self, sender: &'a S) {
        if self.call.is_none() && self.result.is_none() && !self.open && self.dead.is_none() {
            self.call = Some((Call::Begin, Box::pin(sender.begin())));
        }
    }

    /// Whether a call is under way.
    pub(super) fn is_calling(&self) -> bool {
        self.call.is_some()
    }

    /// The call under way has finished with `result`.
    pub(super) async fn next_result(&mut self) {
        let (kind, call) = self.call.as_mut().expect("a call is under way");
        let kind = *kind;
        let result = call.await;
        self.call = None;
        self.result = Some((kind, result));
    }

    /// The gateway shuts down: no call is waited for past `cap`.
    pub(super) fn cap_at(&mut self, cap: Instant) {
        self.cap.get_or_insert(cap);
    }

    /// Until when the call under way is waited for.
    pub(super) fn call_deadline(&self) -> Option<Instant> {
        self.cap.filter(|_| self.call.is_some())
    }

    /// The call under way reached the shutdown bound: it is not waited for
    /// any longer (its thread finishes on its own) and counts as timed out
    /// for the last time.
    pub(super) fn expire(&mut self) {
        if let Some((kind, _)) = self.call.take() {
            self.attempts = CALL_ATTEMPTS;
            self.result = Some((
                kind,
                Err(TxnError::new(
                    TxnErrorKind::Retriable,
                    "the gateway is shutting down and could not wait for it any longer \
                     (--shutdown-timeout)",
                )),
            ));
        }
    }

    /// The trace of the transaction batch `seq` belongs to, started with
    /// `start` when the batch is its first.
    pub(super) fn trace_for(&mut self, seq: u64, start: impl FnOnce() -> TxnTrace) -> &TxnTrace {
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
    pub(super) fn refused(&mut self, seq: u64) {
        if !self.refused.contains(&seq) {
            self.refused.push_back(seq);
        }
    }

    /// The batch just read asked for the commit of its transaction.
    pub(super) fn close_trace(&mut self) {
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

    /// No transaction being ended, no call under way.
    pub(super) fn is_idle(&self) -> bool {
        self.target.is_none() && self.call.is_none() && self.result.is_none()
    }

    /// Moves the transactions on: applies a call's outcome (a begun
    /// transaction, an ended one's verdict once nothing of it is in
    /// librdkafka (`window_empty`), a call to resume), picks the next
    /// transaction to end and starts ending it once its records are all
    /// delivered or failed. Stops the stream when the producer is dead or
    /// a commit's outcome is unknown.
    pub(super) fn step<S: Sender>(
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
            let before = (self.result.is_some(), self.target.is_some(), self.open);
            if let Some(error) = self.advance(sender, intake, &mut stream, window_empty, metrics)
                && !intake.is_abandoned()
                && !matches!(intake, Intake::Stopped { .. })
            {
                *intake = Intake::Stopped {
                    error,
                    since: Instant::now(),
                };
                continue;
            }
            let after = (self.result.is_some(), self.target.is_some(), self.open);
            if before == after || self.call.is_some() {
                return;
            }
        }
    }

    /// One step of [`TxnState::step`]; returns why the stream must stop.
    fn advance<S: Sender>(
        &mut self,
        sender: &'a S,
        intake: &Intake,
        stream: &mut StreamState<'_>,
        window_empty: bool,
        metrics: &Metrics,
    ) -> Option<StreamError> {
        let mut stop = None;
        if let Some((Call::Begin, _)) = &self.result {
            let Some((_, result)) = self.result.take() else {
                unreachable!("checked")
            };
            match result {
                Ok(()) => self.open = true,
                Err(error) => {
                    let cause = format!("cannot begin a transaction: {}", error.message);
                    self.retire(sender, &cause);
                    stop = Some(StreamError::TransactionFailed(cause));
                }
            }
        }
        if window_empty && self.result.is_some() {
            stop = stop.or(self.verdict(sender, stream, metrics));
        }
        self.pick_target(intake, stream);
        if self.call.is_some() || self.result.is_some() {
            return stop;
        }
        let Some((last, ending)) = &mut self.target else {
            return stop;
        };
        let last = *last;
        if let Ending::Commit = ending {
            let delivered =
                window_empty && stream.pending.front().is_none_or(|(tag, _)| tag.seq > last);
            if !delivered {
                return stop;
            }
            // A record refused before librdkafka had it: abort. A record
            // librdkafka failed has already doomed the transaction there,
            // and the commit fails abortably.
            if self.refused.iter().any(|&seq| seq <= last)
                && let Some((batch_id, index, error)) = stream.batches.first_failure_through(last)
            {
                *ending = Ending::Abort(aborted(
                    format!(
                        "records[{index}] of the request with batch_id {batch_id} failed: {}",
                        error.message
                    ),
                    error.retriable,
                ));
            }
        }
        match ending {
            Ending::Commit if self.open => self.start(Call::Commit, sender),
            Ending::Abort(error) => {
                // What of it was not handed over is never sent: each record
                // is answered with the abort.
                let error = error.clone();
                let mut kept = VecDeque::new();
                for (tag, record) in stream.pending.drain(..) {
                    if tag.seq > last {
                        kept.push_back((tag, record));
                    } else {
                        stream.summary.records_failed += 1;
                        stream.batches.resolve(
                            &tag,
                            super::super::error_result(error.clone()),
                            metrics,
                        );
                    }
                }
                *stream.pending = kept;
                if self.open && self.dead.is_none() {
                    self.start(Call::Abort, sender);
                } else {
                    self.result = Some((Call::Abort, Ok(())));
                }
            }
            // Nothing was sent: nothing to commit.
            Ending::Commit => self.result = Some((Call::Commit, Ok(()))),
        }
        stop
    }

    /// Picks the transaction to end next, if none is being ended: the next
    /// commit asked for; at half-close, a commit of what is open; when the
    /// stream is stopped, an abort. When the client is gone, the stream is
    /// fenced or the producer is dead, every commit not yet under way
    /// becomes an abort: nobody will read its acks, another stream owns the
    /// id, or it cannot commit.
    fn pick_target(&mut self, intake: &Intake, stream: &StreamState<'_>) {
        let under_way = self.call.is_some() || self.result.is_some() || self.attempts > 0;
        let abort_all = match (&self.dead, intake) {
            (Some(cause), _) => Some(aborted(
                format!("the transactional producer failed: {cause}"),
                true,
            )),
            (None, Intake::Abandoned(_)) => Some(aborted(
                "the client went away before the commit".into(),
                true,
            )),
            (None, Intake::Stopped { error, .. }) if error.aborts_every_transaction() => Some(
                aborted(format!("the stream ended before a commit: {error}"), true),
            ),
            _ => None,
        };
        let Some(last) = stream
            .batches
            .last_seq()
            .filter(|_| stream.batches.has_unreleased())
        else {
            return;
        };
        if let Some(error) = abort_all {
            if matches!(self.target, Some((_, Ending::Commit))) && !under_way {
                self.target = None;
            }
            if self.target.is_none() {
                self.commits.clear();
                self.target = Some((last, Ending::Abort(error)));
            }
            return;
        }
        if self.target.is_none() {
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
                (None, Intake::Abandoned(_) | Intake::Open) => None,
            };
        }
    }

    /// Starts a call of `kind` to end the target.
    fn start<S: Sender>(&mut self, kind: Call, sender: &'a S) {
        self.attempts += 1;
        let mut timeout = self.timeouts.call;
        if let Some(cap) = self.cap {
            timeout = timeout.min(cap.saturating_duration_since(Instant::now()));
        }
        let call: TxnCall<'a> = match kind {
            Call::Begin => unreachable!("begun by TxnState::begin"),
            Call::Commit => Box::pin(sender.commit(timeout)),
            Call::Abort => Box::pin(sender.abort(timeout)),
        };
        self.call = Some((kind, call));
    }

    /// Whether a call that timed out may be made again.
    fn may_resume(&self) -> bool {
        self.attempts < CALL_ATTEMPTS && self.cap.is_none_or(|cap| Instant::now() < cap)
    }

    /// The producer can run no more transactions: retired, so that the
    /// id's next stream gets a new one.
    fn retire<S: Sender>(&mut self, sender: &S, cause: &str) {
        sender.retire(cause);
        self.open = false;
        self.dead = Some(cause.to_owned());
    }

    /// Applies the result of the commit or abort of the target, once
    /// nothing of its transaction is in librdkafka: answers its batches,
    /// or makes the next call (a commit resumed, an abort after an
    /// abortable commit). Returns why the stream must stop.
    fn verdict<S: Sender>(
        &mut self,
        sender: &'a S,
        stream: &mut StreamState<'_>,
        metrics: &Metrics,
    ) -> Option<StreamError> {
        let (kind, result) = self.result.take().expect("a result to apply");
        let (last, ending) = self.target.take().expect("a call ends a target");
        let (outcome, record_error, stop) = match (kind, ending, result) {
            (Call::Commit, Ending::Commit, Ok(())) => ("committed", None, None),
            (Call::Commit, Ending::Commit, Err(error)) => match error.kind {
                TxnErrorKind::Retriable if self.may_resume() => {
                    // The commit goes on in the background: resume it.
                    self.target = Some((last, Ending::Commit));
                    self.start(Call::Commit, sender);
                    return None;
                }
                TxnErrorKind::Retriable => {
                    let record_error = outcome_unknown(&error.message, self.attempts);
                    let cause = format!("a commit's outcome is unknown: {}", error.message);
                    self.retire(sender, &cause);
                    let stop = StreamError::CommitOutcomeUnknown(error.message);
                    ("outcome_unknown", Some(record_error), Some(stop))
                }
                TxnErrorKind::Abortable => {
                    // Not committed: abort, and the producer goes on.
                    let cause = aborted(format!("the commit failed: {}", error.message), true);
                    self.target = Some((last, Ending::Abort(cause)));
                    self.attempts = 0;
                    self.start(Call::Abort, sender);
                    return None;
                }
                _ => {
                    let cause = format!("the commit failed: {}", error.message);
                    self.retire(sender, &cause);
                    let record_error = aborted(cause.clone(), true);
                    let stop = StreamError::TransactionFailed(cause);
                    ("aborted", Some(record_error), Some(stop))
                }
            },
            (_, Ending::Abort(record_error), Ok(())) => ("aborted", Some(record_error), None),
            (_, Ending::Abort(record_error), Err(error)) => {
                if error.kind == TxnErrorKind::Retriable && self.may_resume() {
                    self.target = Some((last, Ending::Abort(record_error)));
                    self.start(Call::Abort, sender);
                    return None;
                }
                // Never committed: Kafka aborts it once its
                // transaction.timeout.ms has passed, or when the id's next
                // producer starts.
                let cause = format!("aborting a transaction failed: {}", error.message);
                self.retire(sender, &cause);
                let stop = StreamError::TransactionFailed(cause);
                ("aborted", Some(record_error), Some(stop))
            }
            (Call::Begin | Call::Abort, Ending::Commit, _) => {
                unreachable!("a commit target is ended by a commit call")
            }
        };
        self.attempts = 0;
        self.open = false;
        self.refused.retain(|&seq| seq > last);
        while self.commits.front().is_some_and(|&seq| seq <= last) {
            self.commits.pop_front();
        }
        match &record_error {
            None => {
                stream.batches.release_through(last, metrics);
                self.finish_traces(last, None);
            }
            Some(record_error) => {
                stream.batches.fail_through(last, record_error, metrics);
                self.finish_traces(last, Some(&record_error.message));
            }
        }
        metrics.transaction(outcome);
        stop
    }
}

/// The result of a record whose transaction was aborted.
pub(super) fn aborted(cause: String, retriable: bool) -> RecordError {
    record_error(
        ErrorCode::Aborted,
        format!("transaction aborted: {cause}"),
        retriable,
    )
}

/// The result of a record whose transaction's commit did not finish: it may
/// have committed.
fn outcome_unknown(cause: &str, attempts: u32) -> RecordError {
    RecordError {
        may_be_stored: true,
        ..record_error(
            ErrorCode::Unavailable,
            format!(
                "the commit's outcome is unknown: it did not finish after {attempts} \
                 attempt(s) ({cause}), and the transaction may have committed. Read the \
                 topic with a read_committed consumer to see whether these records are \
                 there before sending them again; the stream ends and the transactional \
                 id gets a new producer"
            ),
            true,
        )
    }
}
