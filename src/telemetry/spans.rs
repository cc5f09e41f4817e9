//! The spans of a call and of what it sends: what each records, and how
//! each ends. [`super::Tracing`] starts them; the gRPC layer, the stream
//! driver and the dead-letter writes end them.
//!
//! Every span ends once: explicitly with its outcome, or, when what holds
//! it is dropped before the outcome is known, in `Drop` with an ERROR
//! status saying so.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Span;

use super::{
    MAX_ERROR_EVENTS, MAX_LINKS, MAX_OFFSET_RANGES, MAX_RECORD_EVENTS, RecordExtractor,
    TRACEPARENT, TraceHeaders,
};
use crate::metrics::{batch_error_type, code_label};
use crate::proto::{self, RecordResult, record_result};

/// The SERVER span of one gRPC call, if recorded, in the context its other
/// spans start under.
pub struct CallTrace {
    /// The caller's context, with the call's span in it when recorded.
    pub context: Context,
    pub(super) recorded: bool,
}

impl CallTrace {
    /// Ends the span with the call's gRPC status: `rpc.grpc.status_code`;
    /// for any code but OK, `error.type` (the code in snake case) and the
    /// status message; an ERROR status for the codes the RPC conventions
    /// count as the server's failure (UNKNOWN, DEADLINE_EXCEEDED,
    /// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), not for a refused
    /// or misused call, which is the client's.
    pub fn finish(&self, code: tonic::Code, message: &str) {
        if !self.recorded {
            return;
        }
        let span = self.context.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
        if code != tonic::Code::Ok {
            span.set_attribute(KeyValue::new("error.type", status_label(code)));
            if !message.is_empty() {
                span.set_attribute(KeyValue::new(
                    "kafka_gateway.grpc.message",
                    message.to_owned(),
                ));
            }
            if is_server_error(code) {
                span.set_status(Status::error(message.to_owned()));
            }
        }
        span.end();
    }
}

/// A gRPC status code in snake case: the `error.type` of a call.
pub fn status_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The codes a gRPC server's span reports as its own failure.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The span of authenticating one call.
pub struct AuthTrace {
    pub(super) span: Option<Span>,
    /// The call's context, whose span learns the principal.
    pub(super) call: Context,
}

impl AuthTrace {
    /// Ends the span: the call is `principal`'s (or anonymous), or was
    /// refused for `reason` (the `kafka_gateway_auth_failures_total`
    /// label: `expired`, `bad_signature`, ...).
    pub fn finish(mut self, outcome: Result<Option<&str>, &'static str>) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        match outcome {
            Ok(Some(principal)) => {
                let who = KeyValue::new("enduser.id", principal.to_owned());
                span.set_attribute(who.clone());
                self.call.span().set_attribute(who);
            }
            Ok(None) => {}
            Err(reason) => {
                span.set_attribute(KeyValue::new("error.type", "unauthenticated"));
                span.set_attribute(KeyValue::new("kafka_gateway.auth.failure", reason));
            }
        }
        span.end();
    }
}

/// The trace of one batch: its span, if recorded, and the headers its records
/// carry.
pub struct BatchTrace {
    pub(super) span: Option<Span>,
    /// W3C headers for each record of the batch; `None` when there is no
    /// context to pass on.
    pub headers: Option<TraceHeaders>,
    /// `--trace-records`.
    pub(super) record_events: bool,
    /// `record failed` events added.
    pub(super) error_events: u32,
    pub(super) partition: Partition,
    /// Per topic-partition stored to: the first and last offset.
    pub(super) offsets: Vec<OffsetRange>,
    /// Links added to the contexts records carry.
    pub(super) links: u32,
    /// `record stored` events added.
    pub(super) events: u32,
}

/// The offsets a batch's records got in one partition.
pub(super) struct OffsetRange {
    topic: Box<str>,
    partition: i32,
    first: i64,
    last: i64,
}

/// The trace of one transaction: its span, if recorded, and the context its
/// batches' spans start under.
pub struct TxnTrace {
    pub(super) span: Option<Span>,
    pub context: Context,
}

impl TxnTrace {
    /// Ends the span: `committed`, or aborted because of `cause`.
    pub fn finish(mut self, batches: u64, aborted: Option<&str>) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        span.set_attribute(KeyValue::new(
            "kafka_gateway.transaction.batch_count",
            batches as i64,
        ));
        span.set_attribute(KeyValue::new(
            "kafka_gateway.transaction.outcome",
            if aborted.is_some() {
                "aborted"
            } else {
                "committed"
            },
        ));
        if let Some(cause) = aborted {
            span.set_attribute(KeyValue::new("error.type", "aborted"));
            span.set_status(Status::error(cause.to_owned()));
        }
        span.end();
    }
}

impl Drop for TxnTrace {
    /// A transaction whose stream ended without a verdict still ends its
    /// span.
    fn drop(&mut self) {
        if let Some(span) = &mut self.span {
            span.set_status(Status::error("the stream ended before the transaction did"));
            span.end();
        }
    }
}

/// The trace of one dead-letter write: its span, if recorded, and the
/// headers the parked copy carries.
pub struct ParkTrace {
    pub(super) span: Option<Span>,
    /// The W3C headers of the parking span (or, unrecorded, those the
    /// record carried).
    pub headers: Option<TraceHeaders>,
}

impl ParkTrace {
    /// Whether the write's span is recorded (and not ended yet).
    pub fn is_recorded(&self) -> bool {
        self.span.is_some()
    }

    /// Ends the span: the copy is stored at `partition` and `offset`, or
    /// its write failed with `error`.
    pub fn finish(&mut self, outcome: Result<(i32, i64), &proto::RecordError>) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        match outcome {
            Ok((partition, offset)) => {
                span.set_attribute(KeyValue::new(
                    "messaging.destination.partition.id",
                    partition.to_string(),
                ));
                span.set_attribute(KeyValue::new("messaging.kafka.offset", offset));
            }
            Err(error) => {
                span.set_attribute(KeyValue::new("error.type", code_label(error.code)));
                span.set_status(Status::error(error.message.clone()));
            }
        }
        span.end();
    }
}

impl Drop for ParkTrace {
    fn drop(&mut self) {
        if let Some(span) = &mut self.span {
            span.set_status(Status::error(
                "the stream ended before the record was parked",
            ));
            span.end();
        }
    }
}

/// The partitions a batch's stored records went to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Partition {
    None,
    One(i32),
    Several,
}

impl BatchTrace {
    /// Links the span to the context the record at `index` carries in its
    /// own `traceparent` header, if any, up to [`MAX_LINKS`] a batch.
    pub fn link(&mut self, index: usize, headers: &[proto::Header]) {
        let Some(span) = &mut self.span else {
            return;
        };
        if self.links >= MAX_LINKS || !headers.iter().any(|h| h.key == TRACEPARENT) {
            return;
        }
        let context = TraceContextPropagator::new().extract(&RecordExtractor(headers));
        let linked = context.span().span_context().clone();
        if linked.is_valid() {
            self.links += 1;
            span.add_link(
                linked,
                vec![KeyValue::new("kafka_gateway.record.index", index as i64)],
            );
        }
    }

    /// Notes the payload bytes (keys, values, headers) of the batch's
    /// records.
    pub fn bytes(&mut self, bytes: usize) {
        if let Some(span) = &mut self.span {
            span.set_attribute(KeyValue::new("kafka_gateway.batch.bytes", bytes as i64));
        }
    }

    /// Notes the result of the record at `index`, whose topic is `topic`.
    pub fn record(&mut self, index: usize, topic: &str, result: &RecordResult) {
        match &result.result {
            Some(record_result::Result::Ok(metadata)) => {
                let partition = metadata.partition;
                self.partition = match self.partition {
                    Partition::None => Partition::One(partition),
                    Partition::One(p) if p == partition => Partition::One(p),
                    _ => Partition::Several,
                };
                if self.span.is_none() {
                    return;
                }
                let room = self.offsets.len() < MAX_OFFSET_RANGES;
                match self
                    .offsets
                    .iter_mut()
                    .find(|range| range.partition == partition && *range.topic == *topic)
                {
                    Some(range) => {
                        range.first = range.first.min(metadata.offset);
                        range.last = range.last.max(metadata.offset);
                    }
                    None if room => self.offsets.push(OffsetRange {
                        topic: topic.into(),
                        partition,
                        first: metadata.offset,
                        last: metadata.offset,
                    }),
                    None => {}
                }
                if self.record_events
                    && self.events < MAX_RECORD_EVENTS
                    && let Some(span) = &mut self.span
                {
                    self.events += 1;
                    span.add_event(
                        "record stored",
                        vec![
                            KeyValue::new("kafka_gateway.record.index", index as i64),
                            KeyValue::new("messaging.destination.name", topic.to_owned()),
                            KeyValue::new(
                                "messaging.destination.partition.id",
                                partition.to_string(),
                            ),
                            KeyValue::new("messaging.kafka.offset", metadata.offset),
                            // One tag to search for: `orders/3@12345`.
                            KeyValue::new(
                                "kafka_gateway.record.position",
                                format!("{topic}/{partition}@{}", metadata.offset),
                            ),
                        ],
                    );
                }
            }
            Some(record_result::Result::Error(error)) => {
                if let Some(span) = &mut self.span
                    && self.error_events < MAX_ERROR_EVENTS
                {
                    self.error_events += 1;
                    let mut attributes = vec![
                        KeyValue::new("kafka_gateway.record.index", index as i64),
                        KeyValue::new("error.type", code_label(error.code)),
                        KeyValue::new("kafka_gateway.error.message", error.message.clone()),
                        KeyValue::new("kafka_gateway.error.retriable", error.retriable),
                    ];
                    if let Some(parked) = &error.dead_letter {
                        attributes.extend([
                            KeyValue::new("kafka_gateway.dead_letter.topic", parked.topic.clone()),
                            KeyValue::new(
                                "kafka_gateway.dead_letter.partition",
                                i64::from(parked.partition),
                            ),
                            KeyValue::new("kafka_gateway.dead_letter.offset", parked.offset),
                        ]);
                    }
                    span.add_event("record failed", attributes);
                }
            }
            None => {}
        }
    }

    /// Ends the span: every record's result is known (`results`, in the
    /// batch's order).
    pub fn finish(&mut self, results: &[RecordResult]) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        let (mut errors, mut dead_lettered) = (0, 0);
        for result in results {
            if let Some(record_result::Result::Error(error)) = &result.result {
                errors += 1;
                dead_lettered += i64::from(error.dead_letter.is_some());
            }
        }
        span.set_attribute(KeyValue::new("kafka_gateway.batch.error_count", errors));
        if dead_lettered > 0 {
            span.set_attribute(KeyValue::new(
                "kafka_gateway.batch.dead_letter_count",
                dead_lettered,
            ));
        }
        if let Partition::One(partition) = self.partition {
            span.set_attribute(KeyValue::new(
                "messaging.destination.partition.id",
                partition.to_string(),
            ));
        }
        if !self.offsets.is_empty() {
            span.set_attribute(KeyValue::new(
                "kafka_gateway.batch.offsets",
                offsets_attribute(&self.offsets),
            ));
        }
        if errors > 0 {
            span.set_attribute(KeyValue::new("error.type", batch_error_type(results)));
            span.set_status(Status::error(format!(
                "{errors} of {} records failed",
                results.len()
            )));
        }
        span.end();
    }
}

/// Each topic-partition's offsets, `TOPIC/PARTITION:FIRST-LAST`, comma
/// separated (neither `/`, `:` nor `,` can be in a topic name).
fn offsets_attribute(ranges: &[OffsetRange]) -> String {
    use std::fmt::Write as _;
    // Written in place: a batch spread over 32 partitions formatted 32
    // strings and copied each, some 300 instructions per record of it.
    let mut text =
        String::with_capacity(ranges.len() * (ranges.first().map_or(0, |r| r.topic.len()) + 20));
    for (i, range) in ranges.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(&range.topic);
        text.push('/');
        let _ = write!(text, "{}:{}-{}", range.partition, range.first, range.last);
    }
    text
}

impl Drop for BatchTrace {
    /// A batch dropped unanswered (its client left) still ends its span.
    fn drop(&mut self) {
        if let Some(span) = &mut self.span {
            span.set_status(Status::error(
                "the stream ended before every record's result was known",
            ));
            span.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_name_each_topic_partition_and_its_range() {
        let ranges = [
            OffsetRange {
                topic: "orders".into(),
                partition: 3,
                first: 12340,
                last: 12345,
            },
            OffsetRange {
                topic: "orders.eu".into(),
                partition: 0,
                first: 7,
                last: 7,
            },
        ];
        assert_eq!(
            offsets_attribute(&ranges),
            "orders/3:12340-12345, orders.eu/0:7-7"
        );
    }

    #[test]
    fn call_errors_are_snake_case_and_only_the_servers_are_errors() {
        use tonic::Code;
        assert_eq!(status_label(Code::Unauthenticated), "unauthenticated");
        assert_eq!(status_label(Code::ResourceExhausted), "resource_exhausted");
        assert_eq!(status_label(Code::PermissionDenied), "permission_denied");
        for code in [
            Code::Unauthenticated,
            Code::ResourceExhausted,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::Cancelled,
        ] {
            assert!(!is_server_error(code), "{code:?} is the client's");
        }
        for code in [Code::Unavailable, Code::Internal, Code::Unknown] {
            assert!(is_server_error(code), "{code:?} is the server's");
        }
    }
}
