//! The dead-letter topic (`--dead-letter-topic`): where a stream's records
//! that failed for good are parked, so that a client with nowhere to keep a
//! failed record does not lose it.
//!
//! A stream whose batch did not opt out keeps each of that batch's records
//! until its outcome is known (the window would otherwise let go of it once
//! librdkafka has its copy). Refused records, whether by validation, by the
//! policy or by librdkafka at once, take their turn in the window like sent
//! ones, so that every outcome leaves the window in stream order. A failure
//! that [`DeadLetter::parks`] is then written to the dead-letter topic: the
//! record's key, value and headers unchanged, plus headers naming the cause
//! ([`HEADERS`]). The dead-letter writes of a stream go through a window of
//! their own, handed to librdkafka in stream order, so they keep the
//! stream's order in each partition of the dead-letter topic. The record's
//! result waits for its dead-letter write: the client gets the original
//! error, with `dead_letter` saying where the record was parked, or with a
//! message saying why parking failed. Never silence.
//!
//! Records the policy refused (`NOT_AUTHORIZED`) are parked only with
//! `--dead-letter-not-authorized`: the caller may not write their topic,
//! and parking writes them with the gateway's own credentials. Whatever is
//! parked was charged to the caller's quota before it was handed over, like
//! any record the stream sends.
//!
//! The cause headers are always the gateway's: headers the client sent
//! under the reserved prefix [`HEADER_PREFIX`] (in any case) are left out of
//! the parked copy, so that a consumer of the dead-letter topic cannot be
//! handed a forged cause or principal. The record itself, in its own topic,
//! keeps them: a record replayed from the dead-letter topic is written as
//! it comes.
//!
//! Each dead-letter write is traced: a PRODUCER `send` span under the span
//! of the record's batch, whose W3C context the parked copy carries as its
//! `traceparent`, so a consumer of the dead-letter topic continues the
//! trace. The context the record itself carried (its own `traceparent`,
//! else its batch's) is kept in [`HEADER_TRACEPARENT`].
//!
//! What a stream holds for this stays within its window's bounds: the
//! letters come from batches not yet answered, which the driver already
//! counts before it reads more.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::is_the_records_own;
use crate::metrics::{self, Metrics};
use crate::proto::{self, ErrorCode, RecordError, RecordMetadata};
use crate::telemetry::{ParkTrace, TRACEPARENT, TRACESTATE, Tracing};

use super::batches::{Batches, Tag};
use super::summary::Summary;
use super::window::{Limits, Window};
use super::{DeliveryResult, OutboundRecord, Sender, TrySendError, error_result};

/// The prefix of every cause header: reserved for the gateway in the
/// dead-letter topic.
pub const HEADER_PREFIX: &str = "kafka_gateway.dead_letter.";
/// The error code of the failure, as its proto name (`ERROR_CODE_...`).
pub const HEADER_CODE: &str = "kafka_gateway.dead_letter.code";
/// The error message the client got.
pub const HEADER_MESSAGE: &str = "kafka_gateway.dead_letter.message";
/// The topic the record was for (empty when it named none).
pub const HEADER_TOPIC: &str = "kafka_gateway.dead_letter.topic";
/// The partition the record asked for, when it asked for one.
pub const HEADER_PARTITION: &str = "kafka_gateway.dead_letter.partition";
/// The caller's principal, when authenticated.
pub const HEADER_PRINCIPAL: &str = "kafka_gateway.dead_letter.principal";
/// The W3C `traceparent` the record carried: its own, else its batch
/// span's; the copy's own `traceparent` is the dead-letter write's.
pub const HEADER_TRACEPARENT: &str = "kafka_gateway.dead_letter.traceparent";

/// Every header the gateway adds to a parked record, in the order added.
pub const HEADERS: [&str; 6] = [
    HEADER_CODE,
    HEADER_MESSAGE,
    HEADER_TOPIC,
    HEADER_PARTITION,
    HEADER_PRINCIPAL,
    HEADER_TRACEPARENT,
];

/// The gateway's dead-letter settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where failed records are parked.
    pub topic: Arc<str>,
    /// Park records that timed out too (`--dead-letter-retriable`).
    pub retriable: bool,
    /// Park records the policy refused too
    /// (`--dead-letter-not-authorized`).
    pub not_authorized: bool,
}

impl DeadLetter {
    /// Whether a record that failed with `error` is parked: every permanent
    /// failure (one that sending the record again as it is cannot cure,
    /// and the codes that name the record or its destination as the
    /// problem), and with `retriable`, a record that ran out of librdkafka's
    /// retries. Not a gateway or cluster condition that passes (shutdown,
    /// brokers unreachable, a producer being replaced). A record the policy
    /// refused only with `not_authorized`.
    pub fn parks(&self, error: &RecordError) -> bool {
        let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
        if code == ErrorCode::NotAuthorized {
            return self.not_authorized;
        }
        if is_the_records_own(code) {
            return true;
        }
        match code {
            ErrorCode::TimedOut => self.retriable || !error.retriable,
            // A transaction's fate, not the record's.
            ErrorCode::Aborted => false,
            // Unspecified, unavailable, internal: parked when it says it
            // lasts.
            _ => !error.retriable,
        }
    }

    /// The copy of `record`, which failed with `error`, that goes to the
    /// dead-letter topic: its key, value, headers (but those under
    /// [`HEADER_PREFIX`]) and (valid) timestamp, then the cause headers; the
    /// partitioner places it by its key. It carries `trace`, the context of
    /// its dead-letter write (when that is recorded, instead of a
    /// `traceparent` and `tracestate` of the record's own, which the cause
    /// headers keep).
    fn letter(
        &self,
        mut record: OutboundRecord,
        error: &RecordError,
        principal: Option<&str>,
        trace: &ParkTrace,
    ) -> OutboundRecord {
        let topic = std::mem::replace(&mut record.topic, self.topic.clone());
        let reserved = |key: &str| {
            key.len() >= HEADER_PREFIX.len()
                && key.as_bytes()[..HEADER_PREFIX.len()]
                    .eq_ignore_ascii_case(HEADER_PREFIX.as_bytes())
        };
        record.headers.retain(|h| {
            let keep = !reserved(&h.key);
            if !keep {
                record.size -= h.key.len() + h.value.len();
            }
            keep
        });
        let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
        let header = |key: &str, value: Bytes| proto::Header {
            key: key.to_owned(),
            value,
        };
        let mut cause = Vec::with_capacity(HEADERS.len());
        cause.push(header(
            HEADER_CODE,
            Bytes::from_static(code.as_str_name().as_bytes()),
        ));
        cause.push(header(HEADER_MESSAGE, Bytes::from(error.message.clone())));
        cause.push(header(HEADER_TOPIC, Bytes::from(topic.to_string())));
        if let Some(partition) = record.partition {
            cause.push(header(HEADER_PARTITION, Bytes::from(partition.to_string())));
        }
        if let Some(principal) = principal {
            cause.push(header(HEADER_PRINCIPAL, Bytes::from(principal.to_owned())));
        }
        let own = record.headers.iter().rev().find(|h| h.key == TRACEPARENT);
        let carried = match own {
            Some(own) => Some(own.value.clone()),
            None => record
                .trace_headers
                .as_deref()
                .and_then(|headers| headers.iter().find(|(key, _)| key == TRACEPARENT))
                .map(|(_, value)| value.clone()),
        };
        if let Some(traceparent) = carried {
            cause.push(header(HEADER_TRACEPARENT, traceparent));
        }
        if trace.is_recorded() {
            // One context on the copy, the write's: a consumer's
            // instrumentation reads one traceparent.
            let before: usize = record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.len())
                .sum();
            record
                .headers
                .retain(|h| h.key != TRACEPARENT && h.key != TRACESTATE);
            let after: usize = record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.len())
                .sum();
            record.size -= before - after;
        }
        record.size += cause
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>();
        record.headers.extend(cause);
        record.partition = None;
        record.timestamp_ms = record.timestamp_ms.filter(|t| *t >= 0);
        // The write's context (without a recorded span: the one the record
        // carried, so a consumer still continues the caller's trace).
        record.trace_headers = trace.headers.clone();
        record
    }
}

/// A failed record on its way to the dead-letter topic.
pub(super) struct Letter {
    /// The record's place in its batch.
    tag: Tag,
    /// Its failure, the result its client gets.
    error: RecordError,
    /// The span of its dead-letter write.
    trace: ParkTrace,
}

/// One stream's dead-letter writes, in stream order.
pub(super) struct DeadLetters {
    config: DeadLetter,
    /// The caller's principal, for the cause headers.
    principal: Option<String>,
    /// Letters not yet handed to librdkafka, oldest first.
    pending: VecDeque<(Letter, OutboundRecord)>,
    /// Letters librdkafka holds.
    window: Window<Letter>,
    /// Where the writes' spans go.
    tracing: Arc<Tracing>,
}

impl DeadLetters {
    pub fn new(
        config: DeadLetter,
        principal: Option<&str>,
        limits: Limits,
        tracing: Arc<Tracing>,
    ) -> Self {
        Self {
            config,
            principal: principal.map(str::to_owned),
            pending: VecDeque::new(),
            window: Window::new(limits),
            tracing,
        }
    }

    pub fn config(&self) -> &DeadLetter {
        &self.config
    }

    /// Queues `record`, which failed with `error`, for the dead-letter topic.
    /// Call in stream order.
    pub fn park(&mut self, tag: Tag, record: OutboundRecord, error: RecordError) {
        let trace = self.tracing.start_parking(
            record.trace_headers.as_ref(),
            &self.config.topic,
            metrics::code_label(error.code),
        );
        let letter = self
            .config
            .letter(record, &error, self.principal.as_deref(), &trace);
        self.pending
            .push_back((Letter { tag, error, trace }, letter));
    }

    /// Hands the queued letters to librdkafka, in order, while their window
    /// has room. Returns true when librdkafka's queue was full.
    pub fn hand_over<S: Sender>(
        &mut self,
        sender: &S,
        batches: &mut Batches,
        summary: &mut Summary,
        metrics: &Metrics,
    ) -> bool {
        while self
            .pending
            .front()
            .is_some_and(|(_, record)| self.window.has_room(record.size))
        {
            let (letter, record) = self.pending.pop_front().expect("checked above");
            match sender.try_send(&record, self.window.completions(), self.window.next_seq()) {
                Ok(()) => self.window.push(letter, record.size),
                Err(TrySendError::QueueFull) => {
                    self.pending.push_front((letter, record));
                    return true;
                }
                Err(TrySendError::Rejected(error)) => {
                    self.settle(letter, Err(error), batches, summary, metrics);
                }
            }
        }
        false
    }

    /// Nothing queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.window.is_empty()
    }

    /// Letters librdkafka holds.
    pub fn in_flight(&self) -> bool {
        !self.window.is_empty()
    }

    /// Waits for the oldest letter's outcome and puts every outcome known
    /// by then in its record's result, in order. Cancel-safe.
    pub async fn settle_next(
        &mut self,
        batches: &mut Batches,
        summary: &mut Summary,
        metrics: &Metrics,
    ) {
        let Some((letter, result)) = self.window.next_done().await else {
            return;
        };
        self.settle(letter, result, batches, summary, metrics);
        while let Some((letter, result)) = self.window.try_next_done() {
            self.settle(letter, result, batches, summary, metrics);
        }
    }

    /// The record's result: its error, saying where it was parked, or why
    /// parking failed.
    fn settle(
        &self,
        letter: Letter,
        result: DeliveryResult,
        batches: &mut Batches,
        summary: &mut Summary,
        metrics: &Metrics,
    ) {
        let Letter {
            tag,
            mut error,
            mut trace,
        } = letter;
        let code = metrics::code_label(error.code);
        trace.finish(match &result {
            Ok(delivered) => Ok((delivered.partition, delivered.offset)),
            Err(failed) => Err(failed),
        });
        match result {
            Ok(delivered) => {
                summary.records_dead_lettered += 1;
                metrics.dead_letter(&tag.topic, code, true);
                error.dead_letter = Some(RecordMetadata {
                    topic: self.config.topic.to_string(),
                    partition: delivered.partition,
                    offset: delivered.offset,
                    timestamp_ms: delivered.timestamp_ms,
                });
            }
            Err(failed) => {
                metrics.dead_letter(&tag.topic, code, false);
                tracing::warn!(
                    dead_letter_topic = &*self.config.topic,
                    error = failed.message,
                    "a failed record could not be parked in the dead-letter topic"
                );
                error.message = format!(
                    "{}; parking the record in the dead-letter topic {:?} failed too: {}",
                    error.message, self.config.topic, failed.message
                );
            }
        }
        summary.records_failed += 1;
        batches.resolve(&tag, error_result(error), metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::record_error;

    fn config(retriable: bool) -> DeadLetter {
        DeadLetter {
            topic: Arc::from("dlq"),
            retriable,
            not_authorized: false,
        }
    }

    #[test]
    fn permanent_failures_are_parked_passing_conditions_are_not() {
        let plain = config(false);
        let with_retriable = config(true);
        for (code, retriable, parked, parked_with_retriable) in [
            (ErrorCode::InvalidRecord, false, true, true),
            (ErrorCode::RecordTooLarge, false, true, true),
            (ErrorCode::UnknownTopic, true, true, true),
            (ErrorCode::UnknownPartition, false, true, true),
            (ErrorCode::NotAuthorized, false, false, false),
            (ErrorCode::TimedOut, true, false, true),
            (ErrorCode::Unavailable, true, false, false),
            (ErrorCode::Internal, true, false, false),
            (ErrorCode::Internal, false, true, true),
        ] {
            let error = record_error(code, "x", retriable);
            assert_eq!(
                plain.parks(&error),
                parked,
                "{code:?} retriable={retriable}"
            );
            assert_eq!(
                with_retriable.parks(&error),
                parked_with_retriable,
                "{code:?} retriable={retriable} with --dead-letter-retriable"
            );
        }
    }

    #[test]
    fn records_the_policy_refused_are_parked_only_when_asked() {
        let denied = record_error(ErrorCode::NotAuthorized, "no grant", false);
        assert!(!config(false).parks(&denied));
        assert!(!config(true).parks(&denied));
        let opted_in = DeadLetter {
            not_authorized: true,
            ..config(false)
        };
        assert!(opted_in.parks(&denied));
    }

    #[test]
    fn client_headers_under_the_reserved_prefix_never_reach_the_parked_copy() {
        let forged = |key: &str, value: &'static [u8]| proto::Header {
            key: key.into(),
            value: Bytes::from_static(value),
        };
        let record = OutboundRecord {
            topic: Arc::from("orders"),
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                forged("kafka_gateway.dead_letter.code", b"FORGED"),
                forged("h", b"1"),
                forged("KAFKA_GATEWAY.Dead_Letter.principal", b"admin"),
                forged("kafka_gateway.dead_letter.anything", b"x"),
                forged("kafka_gateway.dead_letterx", b"kept"),
            ],
            partition: None,
            timestamp_ms: None,
            size: 1 + 30 + 6 + 2 + 35 + 5 + 34 + 1 + 26 + 4,
            trace_headers: None,
            stamp: None,
        };
        let error = record_error(ErrorCode::InvalidRecord, "bad", false);
        let trace = Tracing::disabled().start_parking(record.trace_headers.as_ref(), "dlq", "x");
        let letter = config(false).letter(record, &error, Some("alice"), &trace);
        let headers: Vec<(&str, &[u8])> = letter
            .headers
            .iter()
            .map(|h| (h.key.as_str(), &h.value[..]))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("h", &b"1"[..]),
                ("kafka_gateway.dead_letterx", b"kept"),
                (HEADER_CODE, b"ERROR_CODE_INVALID_RECORD"),
                (HEADER_MESSAGE, b"bad"),
                (HEADER_TOPIC, b"orders"),
                (HEADER_PRINCIPAL, b"alice"),
            ]
        );
        let payload: usize = 1 + letter
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>();
        assert_eq!(letter.size, payload);
    }

    #[test]
    fn a_letter_keeps_the_record_and_names_the_cause() {
        let record = OutboundRecord {
            topic: Arc::from("orders"),
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![proto::Header {
                key: "h".into(),
                value: Bytes::from_static(b"1"),
            }],
            partition: Some(7),
            timestamp_ms: Some(-5),
            size: 4,
            trace_headers: Some(Arc::new(vec![(
                TRACEPARENT.to_owned(),
                Bytes::from_static(b"00-abc-def-01"),
            )])),
            stamp: None,
        };
        let error = record_error(ErrorCode::UnknownPartition, "no partition 7", false);
        let trace = Tracing::disabled().start_parking(record.trace_headers.as_ref(), "dlq", "x");
        let letter = config(false).letter(record, &error, Some("alice"), &trace);
        assert_eq!(&*letter.topic, "dlq");
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(letter.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(letter.partition, None, "placed by its key");
        assert_eq!(letter.timestamp_ms, None, "an invalid timestamp is dropped");
        assert_eq!(
            letter.trace_headers.as_deref().map(Vec::as_slice),
            Some(&[(TRACEPARENT.to_owned(), Bytes::from_static(b"00-abc-def-01"))][..]),
            "unrecorded, the copy carries the context the record carried"
        );
        let headers: Vec<(&str, &[u8])> = letter
            .headers
            .iter()
            .map(|h| (h.key.as_str(), &h.value[..]))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("h", &b"1"[..]),
                (HEADER_CODE, b"ERROR_CODE_UNKNOWN_PARTITION"),
                (HEADER_MESSAGE, b"no partition 7"),
                (HEADER_TOPIC, b"orders"),
                (HEADER_PARTITION, b"7"),
                (HEADER_PRINCIPAL, b"alice"),
                (HEADER_TRACEPARENT, b"00-abc-def-01"),
            ]
        );
        let added: usize = letter.headers[1..]
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum();
        assert_eq!(letter.size, 4 + added);
    }
}
