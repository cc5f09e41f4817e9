//! The transaction steps of a transactional stream: which transaction ends
//! next, and how (commit or abort), once its records are all delivered or
//! failed; the outcome applied to its batches' answers.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;

use crate::error::{StreamError, record_error};
use crate::metrics::Metrics;
use crate::proto::{ErrorCode, RecordError};
use crate::telemetry::TxnTrace;

use super::super::{Sender, TxnError};
use super::Intake;
use super::accept::StreamState;

/// The transactions of a transactional stream.
#[derive(Default)]
pub(super) struct TxnState<'a> {
    /// A transaction was begun and records went into it.
    pub(super) open: bool,
    /// The batches with a record refused before it reached librdkafka
    /// (validation, the policy, the producer's own checks): their
    /// transaction cannot commit whole, and librdkafka does not know.
    refused: VecDeque<u64>,
    /// The batches whose request asked for a commit, oldest first.
    pub(super) commits: VecDeque<u64>,
    /// The transaction being ended: its last batch, and how.
    target: Option<(u64, Ending)>,
    /// The commit or abort under way.
    pub(super) call: Option<TxnCall<'a>>,
    /// Its result, applied once nothing of the transaction is in librdkafka.
    pub(super) result: Option<Result<(), TxnError>>,
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
    pub(super) fn may_send(&self, seq: u64) -> bool {
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

    /// No transaction being ended.
    pub(super) fn is_idle(&self) -> bool {
        self.target.is_none() && self.call.is_none() && self.result.is_none()
    }

    /// Moves the transactions on: applies an ended one's outcome to its
    /// batches once nothing of it is in librdkafka (`window_empty`), picks
    /// the next one to end (a commit asked for; at half-close, a commit of
    /// what is open; when the stream is stopped or abandoned, an abort), and
    /// starts ending it once its records are all delivered or failed. Stops
    /// the stream when the producer failed for good.
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
pub(super) fn aborted(cause: String, retriable: bool) -> RecordError {
    record_error(
        ErrorCode::Aborted,
        format!("transaction aborted: {cause}"),
        retriable,
    )
}
