//! How each record's outcome becomes its answer: a delivery report settled
//! into its batch (or its failure queued for the dead-letter topic), and a
//! record refused before it reached librdkafka.

use crate::metrics::Metrics;
use crate::proto::RecordError;

use super::super::batches::{Batches, Tag};
use super::super::dead_letter::DeadLetters;
use super::super::summary::Summary;
use super::super::{DeliveryResult, OutboundRecord, error_result};
use super::accept::StreamState;

/// What [`settle`] updates.
pub(super) struct Settle<'a> {
    pub summary: &'a mut Summary,
    pub batches: &'a mut Batches,
    pub dead: Option<&'a mut DeadLetters>,
}

/// Puts one record's outcome into its batch's response, or, for a failed
/// record kept for the dead-letter topic, queues it to be parked there
/// first. Called in stream order.
pub(super) fn settle(
    mut tag: Tag,
    result: DeliveryResult,
    state: &mut Settle<'_>,
    metrics: &Metrics,
) {
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

impl StreamState<'_> {
    /// A record refused before it reached librdkafka: answered now, or, when
    /// it is `parked`, queued in its turn with its failure, to be written to
    /// the dead-letter topic in stream order. Returns the payload bytes the
    /// dead-letter topic is to get, which the caller's quota is charged for
    /// like a record sent.
    pub(super) fn refuse(
        &mut self,
        tag: Tag,
        error: RecordError,
        parked: Option<OutboundRecord>,
        metrics: &Metrics,
    ) -> Option<u64> {
        match parked {
            Some(record) => {
                let tag = Tag {
                    failed: Some(Box::new(error)),
                    ..tag
                };
                let size = record.size as u64;
                self.pending.push_back((tag, record));
                Some(size)
            }
            None => {
                self.summary.records_failed += 1;
                self.batches.resolve(&tag, error_result(error), metrics);
                None
            }
        }
    }
}
