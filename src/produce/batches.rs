//! The answers of one stream: the batches read and not yet answered, oldest
//! first, each collecting its records' results in any order and released in
//! stream order.
//!
//! What they hold is counted ([`Batches::held_records`],
//! [`Batches::held_bytes`]) so that the driver stops reading when a stream
//! holds too much, whether its records wait in the window or not: an empty
//! batch counts as one record, and a batch whose records all failed
//! validation counts until its response is read, so a client cannot pile up
//! answers behind a stuck record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::error::is_the_records_own;
use crate::limits::Reservation;
use crate::metrics::{self, BatchLabels, Metrics, RecordLabels};
use crate::proto::{ErrorCode, ProduceResponse, RecordError, RecordResult, record_result};

use super::{Delivered, OutboundRecord, error_result, ok_result};
use crate::telemetry::BatchTrace;

/// A resolved record's topic, payload bytes and whether it was sent to
/// Kafka, for the metrics.
type Resolved = (Arc<str>, usize, bool);

/// Identifies one record of a stream.
pub(super) struct Tag {
    /// Its batch's sequence number in this stream.
    pub seq: u64,
    /// Its index in the batch.
    pub index: usize,
    /// For the ack.
    pub topic: Arc<str>,
    /// Payload bytes, for the metrics.
    pub size: usize,
    /// librdkafka took it: it counts as sent to Kafka, whatever its outcome
    /// (else it was refused before).
    pub sent: bool,
    /// Set when the record was refused before it reached librdkafka and is
    /// kept for the dead-letter topic: its failure.
    pub failed: Option<Box<RecordError>>,
    /// The record itself, kept while its outcome is unknown when its batch
    /// uses the dead-letter topic.
    pub kept: Option<Box<OutboundRecord>>,
}

/// The batches of one stream whose responses have not been handed to the
/// client yet, oldest first.
#[derive(Default)]
pub(super) struct Batches {
    /// Sequence number of the front batch.
    front_seq: u64,
    queue: VecDeque<PendingBatch>,
    /// Records of the batches in `queue`, an empty batch counting as one.
    held_records: usize,
    /// Payload bytes of the records of the batches in `queue`.
    held_bytes: usize,
    /// On a transactional stream: batches below this sequence number may be
    /// answered (their transaction ended). `None`: any finished batch may.
    released: Option<u64>,
    /// The topic last told to the metrics as acked, so that a run of acks
    /// of one topic tells them once.
    acked_topic: Option<Arc<str>>,
}

struct PendingBatch {
    batch_id: u64,
    /// One slot per record, filled as results arrive in any order; an empty
    /// slot is a `RecordResult` without a result.
    results: Vec<RecordResult>,
    /// Slots still empty.
    outstanding: usize,
    /// What this batch adds to [`Batches::held_records`] and `held_bytes`.
    held: (usize, usize),
    /// Its share of the gateway's memory budget, given back with the
    /// response; on a transactional stream, as soon as every record is
    /// delivered or failed (its bytes are then librdkafka's or gone, and
    /// the open transaction must never wait for budget that only its
    /// commit would free).
    _reservation: Option<Reservation>,
    /// With compact acks: the batch's topic, named once in the response and
    /// left out of the acks of records stored in it.
    compact: Option<Arc<str>>,
    /// Its failed records go to the dead-letter topic.
    dead_letter: bool,
    /// When the batch entered the window.
    started: Instant,
    trace: BatchTrace,
    /// Records and bytes per metric label set and whether they were sent to
    /// Kafka, counted when the batch ends.
    tally: Vec<(RecordLabels, bool, u64, u64)>,
    /// On a transactional stream: each record's topic, size and whether it
    /// was sent, once resolved. Its span and its metrics wait for the
    /// transaction's verdict, so that they count what the client is told
    /// (an aborted record as aborted, not as delivered).
    awaiting_verdict: Option<Vec<Option<Resolved>>>,
    /// The span ended and the metrics counted.
    finished: bool,
}

impl PendingBatch {
    /// Every record has a result: the batch ends now, or, awaiting its
    /// transaction's verdict, gives its share of the budget back.
    fn all_resolved(&mut self, metrics: &Metrics) {
        if self.awaiting_verdict.is_some() {
            self._reservation = None;
        } else {
            self.finish(metrics);
        }
    }

    /// Every record's result is known: the span ends, the metrics count.
    fn finish(&mut self, metrics: &Metrics) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if let Some(records) = self.awaiting_verdict.take() {
            // The verdict: each record counted and traced as answered.
            for (index, (result, record)) in self.results.iter().zip(records).enumerate() {
                let (topic, size, sent) = record.unwrap_or_else(|| (Arc::from(""), 0, false));
                tally(&mut self.tally, &topic, size, sent, result);
                self.trace.record(index, &topic, result);
            }
        }
        self.trace.finish(&self.results);
        // The batch's topic label: the one its records' labels share.
        let topic = match self.tally.split_first() {
            Some(((first, ..), rest)) if rest.iter().all(|(l, ..)| l.topic == first.topic) => {
                first.topic.clone()
            }
            _ => String::new(),
        };
        let labels = BatchLabels {
            topic,
            error_type: metrics::batch_error_type(&self.results),
        };
        metrics.batch_done(&labels, self.started.elapsed());
        for (labels, sent, records, bytes) in self.tally.drain(..) {
            metrics.records(&labels, sent, records, bytes);
        }
    }
}

impl Batches {
    /// Opens a batch of `records` records and returns its sequence number.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        batch_id: u64,
        records: usize,
        trace: BatchTrace,
        reservation: Option<Reservation>,
        compact: Option<Arc<str>>,
        dead_letter: bool,
        metrics: &Metrics,
    ) -> u64 {
        let seq = self.front_seq + self.queue.len() as u64;
        let held_records = records.max(1);
        self.held_records += held_records;
        let verdict = self.released.is_some();
        let mut batch = PendingBatch {
            batch_id,
            results: vec![RecordResult::default(); records],
            outstanding: records,
            held: (held_records, 0),
            _reservation: reservation,
            compact,
            dead_letter,
            started: Instant::now(),
            trace,
            tally: Vec::new(),
            awaiting_verdict: verdict.then(|| vec![None; records]),
            finished: false,
        };
        if records == 0 {
            batch.all_resolved(metrics);
        }
        self.queue.push_back(batch);
        seq
    }

    /// Whether batch `seq` parks its failed records.
    pub fn dead_letter(&self, seq: u64) -> bool {
        self.queue[(seq - self.front_seq) as usize].dead_letter
    }

    /// Counts `bytes` more payload bytes held by batch `seq`.
    pub fn hold_bytes(&mut self, seq: u64, bytes: usize) {
        let batch = &mut self.queue[(seq - self.front_seq) as usize];
        batch.held.1 += bytes;
        self.held_bytes += bytes;
    }

    /// Puts the ack of a stored record in its slot: without its topic when
    /// the batch asked for compact acks and the record went to the batch's
    /// topic.
    pub fn resolve_delivered(&mut self, tag: &Tag, delivered: Delivered, metrics: &Metrics) {
        if self.acked_topic.as_deref() != Some(&*tag.topic) {
            metrics.topic_acked(&tag.topic);
            self.acked_topic = Some(tag.topic.clone());
        }
        let compact = &self.queue[(tag.seq - self.front_seq) as usize].compact;
        let topic = match compact {
            Some(topic) if Arc::ptr_eq(topic, &tag.topic) || **topic == *tag.topic => "",
            _ => &tag.topic,
        };
        let result = ok_result(topic, delivered);
        self.resolve(tag, result, metrics);
    }

    /// Puts a record's result in its slot.
    pub fn resolve(&mut self, tag: &Tag, result: RecordResult, metrics: &Metrics) {
        let batch = &mut self.queue[(tag.seq - self.front_seq) as usize];
        match &mut batch.awaiting_verdict {
            Some(records) => records[tag.index] = Some((tag.topic.clone(), tag.size, tag.sent)),
            None => {
                tally(&mut batch.tally, &tag.topic, tag.size, tag.sent, &result);
                batch.trace.record(tag.index, &tag.topic, &result);
            }
        }
        let slot = &mut batch.results[tag.index];
        debug_assert!(
            slot.result.is_none(),
            "record {}/{} resolved twice",
            tag.seq,
            tag.index
        );
        if std::mem::replace(slot, result).result.is_none() {
            batch.outstanding -= 1;
            if batch.outstanding == 0 {
                batch.all_resolved(metrics);
            }
        }
    }

    /// Whether the front batch has every result and can be answered.
    pub fn front_is_ready(&self) -> bool {
        self.queue.front().is_some_and(|b| b.outstanding == 0)
            && self
                .released
                .is_none_or(|released| self.front_seq < released)
    }

    /// Holds every batch's response until [`Batches::release_through`]: for
    /// a transactional stream, whose acks wait for the commit.
    pub fn hold_until_released(&mut self) {
        self.released = Some(self.front_seq);
    }

    /// The sequence number the next batch opened gets.
    pub fn next_seq(&self) -> u64 {
        self.front_seq + self.queue.len() as u64
    }

    /// The sequence number of the last batch opened, if any is unanswered.
    pub fn last_seq(&self) -> Option<u64> {
        (!self.queue.is_empty()).then(|| self.front_seq + self.queue.len() as u64 - 1)
    }

    /// Whether a batch opened is held back, not yet released.
    pub fn has_unreleased(&self) -> bool {
        match (self.released, self.last_seq()) {
            (Some(released), Some(last)) => last >= released,
            _ => false,
        }
    }

    /// The first batch not yet released.
    pub fn first_unreleased(&self) -> u64 {
        self.released.unwrap_or(self.front_seq).max(self.front_seq)
    }

    /// Lets the responses of the batches up to `seq` go: their transaction
    /// was committed (or aborted and marked). Their spans end and their
    /// records are counted.
    pub fn release_through(&mut self, seq: u64, metrics: &Metrics) {
        let from = self.first_unreleased();
        let skip = (from - self.front_seq) as usize;
        let take = (seq + 1).saturating_sub(from) as usize;
        for batch in self.queue.iter_mut().skip(skip).take(take) {
            batch.finish(metrics);
        }
        self.released = Some(seq + 1);
    }

    /// Records and payload bytes of the batches not yet released: what the
    /// open transactions of a transactional stream hold.
    pub fn unreleased_held(&self) -> (usize, usize) {
        let skip = (self.first_unreleased() - self.front_seq) as usize;
        self.queue
            .iter()
            .skip(skip)
            .fold((0, 0), |(records, bytes), batch| {
                (records + batch.held.0, bytes + batch.held.1)
            })
    }

    /// The first failed record of the unreleased batches up to `seq`:
    /// (its batch id, its index, its error).
    pub fn first_failure_through(&self, seq: u64) -> Option<(u64, usize, RecordError)> {
        let from = self.first_unreleased();
        self.queue
            .iter()
            .skip((from - self.front_seq) as usize)
            .take((seq + 1).saturating_sub(from) as usize)
            .find_map(|batch| {
                batch
                    .results
                    .iter()
                    .enumerate()
                    .find_map(|(index, result)| match &result.result {
                        Some(record_result::Result::Error(error)) => {
                            Some((batch.batch_id, index, error.clone()))
                        }
                        _ => None,
                    })
            })
    }

    /// Gives every record of the unreleased batches up to `seq` the error
    /// of their transaction's verdict (aborted, or its outcome unknown), but
    /// those that failed for a reason of their own (the record, its topic or
    /// partition, its caller), and releases them. The caller makes sure none
    /// of them is in librdkafka any more.
    pub fn fail_through(&mut self, seq: u64, error: &RecordError, metrics: &Metrics) {
        let from = self.first_unreleased();
        let skip = (from - self.front_seq) as usize;
        let take = (seq + 1).saturating_sub(from) as usize;
        for batch in self.queue.iter_mut().skip(skip).take(take) {
            for result in &mut batch.results {
                let own = match &result.result {
                    Some(record_result::Result::Error(failure)) => {
                        ErrorCode::try_from(failure.code).is_ok_and(is_the_records_own)
                    }
                    _ => false,
                };
                if !own {
                    *result = error_result(error.clone());
                }
            }
            batch.outstanding = 0;
        }
        self.release_through(seq, metrics);
    }

    /// The front batch's response, once all its records are resolved; what
    /// it held is released.
    pub fn pop_ready(&mut self) -> Option<ProduceResponse> {
        if !self.front_is_ready() {
            return None;
        }
        let batch = self.queue.pop_front()?;
        self.front_seq += 1;
        self.held_records -= batch.held.0;
        self.held_bytes -= batch.held.1;
        Some(ProduceResponse {
            batch_id: batch.batch_id,
            topic: batch
                .compact
                .as_deref()
                .map(str::to_owned)
                .unwrap_or_default(),
            results: batch.results,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records of the unanswered batches, an empty batch counting as one.
    pub fn held_records(&self) -> usize {
        self.held_records
    }

    /// Payload bytes of the unanswered batches' records.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

/// Counts one record's result in a batch's tally: most records of a batch
/// share their topic and result, so the last entry is tried first.
fn tally(
    tally: &mut Vec<(RecordLabels, bool, u64, u64)>,
    topic: &str,
    size: usize,
    sent: bool,
    result: &RecordResult,
) {
    let label = metrics::result_label(result);
    let topic = if metrics::topic_is_known(label) {
        topic
    } else {
        ""
    };
    let same = |(labels, was_sent, _, _): &&mut (RecordLabels, bool, u64, u64)| {
        labels.result == label && labels.topic == topic && *was_sent == sent
    };
    let entry = match tally.last_mut() {
        Some(last) if same(&last) => Some(last),
        _ => tally.iter_mut().find(same),
    };
    match entry {
        Some((_, _, records, bytes)) => {
            *records += 1;
            *bytes += size as u64;
        }
        None => tally.push((
            RecordLabels {
                topic: topic.to_owned(),
                result: label,
            },
            sent,
            1,
            size as u64,
        )),
    }
}
