//! Reading one batch: its transaction fields checked, its response and span
//! opened, each record validated, authorized and its topic made sure of,
//! and its valid records queued for the window in stream order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::error::StreamError;
use crate::proto::{ProduceRequest, RecordError};

use super::super::batches::{Batches, Tag};
use super::super::caller::Caller;
use super::super::summary::Summary;
use super::super::validate::{self, DefaultTopic};
use super::super::{OutboundRecord, Sender};
use super::{Observers, StreamLimits};

/// What [`accept`] adds to.
pub(super) struct StreamState<'a> {
    pub batches: &'a mut Batches,
    pub pending: &'a mut VecDeque<(Tag, OutboundRecord)>,
    pub summary: &'a mut Summary,
    /// The stream's transactional id, if it is transactional.
    pub transactional_id: Option<&'a str>,
}

/// Validates a batch, opens its response and its span, and queues its
/// valid records; returns how many records and payload bytes it queued,
/// those queued for the dead-letter topic included: the caller's quota is
/// charged for all of them before any is handed over.
pub(super) async fn accept<S: Sender>(
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
    // Room for the whole batch at once: growing the queue record by record
    // copied each batch's records about twice over (some 250 instructions a
    // record, in the profile).
    stream.pending.reserve(request.records.len());
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
                    if let Some(bytes) = stream.refuse(tag, error, parked, metrics) {
                        queued += 1;
                        queued_bytes += bytes;
                    }
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
                if let Some(bytes) = stream.refuse(tag, error, parked, metrics) {
                    queued += 1;
                    queued_bytes += bytes;
                }
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
