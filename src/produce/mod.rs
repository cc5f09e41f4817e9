//! The data path of one record: validation, the ordered send window, and the
//! hand-off to librdkafka.
//!
//! - [`validate`] turns a wire [`proto::Record`] into an [`OutboundRecord`] or
//!   a per-record error;
//! - [`stream`] drives one gRPC stream: it reads batches, hands their records
//!   to a [`Sender`] strictly in order through the [`window`], and releases one
//!   response per batch, in order, through [`respond`]; on a transactional
//!   stream its transaction steps (`stream/txn.rs`, the state machine written
//!   down) begin, commit and abort through the same [`Sender`];
//! - [`transactions`] hands each transactional id's producer to one stream
//!   at a time;
//! - [`kafka`] is the [`Sender`] that owns the shared librdkafka producer.
//!
//! The driver only knows the [`Sender`] trait, so its ordering and
//! backpressure are unit-tested without Kafka.

mod batches;
pub mod caller;
pub mod classify;
pub mod completions;
pub mod dead_letter;
pub mod kafka;
pub mod respond;
pub mod stream;
mod summary;
pub mod transactions;
pub mod validate;
pub mod window;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use completions::Completions;
pub use dead_letter::DeadLetter;

use bytes::Bytes;

use crate::proto;
use crate::telemetry::TraceHeaders;

pub use caller::{Caller, Callers, Stamp};
pub use respond::{Responder, ResponseStream};
pub use stream::{Observers, Stop, StreamLimits, drive};
pub use summary::Summary;
pub use window::Limits;

/// A record that passed validation, ready for librdkafka.
#[derive(Debug, Clone)]
pub struct OutboundRecord {
    /// The record's own topic, or its batch's default.
    pub topic: Arc<str>,
    pub key: Option<Bytes>,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
    /// In the client's order, duplicates kept.
    pub headers: Vec<proto::Header>,
    /// `None` lets the partitioner choose.
    pub partition: Option<i32>,
    pub timestamp_ms: Option<i64>,
    /// Key, value and header bytes: what the window and the record limit
    /// count.
    pub size: usize,
    /// The batch's trace context, sent as headers after the client's own
    /// (unless the client set a `traceparent` of its own). Shared by every
    /// record of the batch.
    pub trace_headers: Option<TraceHeaders>,
    /// `--principal-header` and the caller's principal: replaces any
    /// client header of that name. Shared by every record of the stream.
    pub stamp: Option<Stamp>,
}

/// Where Kafka stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, or -1 when Kafka reported none.
    pub timestamp_ms: i64,
}

/// The outcome of one record handed to a [`Sender`].
pub type DeliveryResult = Result<Delivered, proto::RecordError>;

/// Why a [`Sender`] did not take a record.
#[derive(Debug)]
pub enum TrySendError {
    /// The producer's queue is full: librdkafka's backpressure. The record
    /// stays with the caller, to be sent again once something was delivered.
    QueueFull,
    /// The record can never be sent as it is.
    Rejected(proto::RecordError),
}

/// Hands records to Kafka one at a time, without waiting.
///
/// `try_send` must either take the record now (it is then in the producer's
/// queue, ahead of every record taken after it, and librdkafka has its own
/// copy) or refuse it. Never an
/// `async fn` that enqueues on first poll: that is what reorders records
/// pushed into `FuturesOrdered` (rust-rdkafka issue 468). The outcome of a
/// record taken is reported later, from any thread, to `completions` under
/// `seq`: exactly once, whatever happens to the record.
pub trait Sender: Send + Sync + 'static {
    fn try_send(
        &self,
        record: &OutboundRecord,
        completions: &Arc<Completions>,
        seq: u64,
    ) -> Result<(), TrySendError>;

    /// Makes sure a topic exists before the first record to it is sent: the
    /// embedded broker creates it with the configured partition count; a real
    /// cluster is left to its own rules.
    fn ensure_topic(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<(), proto::RecordError>> + Send;

    /// The transactional id, when records go through Kafka transactions:
    /// [`Sender::begin`] before the first record of each, then
    /// [`Sender::commit`] or [`Sender::abort`] once its records are all
    /// delivered or failed. Each call is one librdkafka call, run off the
    /// async runtime: it succeeds, or fails with a [`TxnErrorKind`] that
    /// says what the caller does next (the driver's transaction steps, in
    /// `stream/txn.rs`, decide; the sender never retries or aborts on its
    /// own).
    fn transactional_id(&self) -> Option<&str> {
        None
    }

    /// Opens a transaction: records taken from now on belong to it.
    fn begin(&self) -> impl Future<Output = Result<(), TxnError>> + Send {
        async { Err(TxnError::not_transactional()) }
    }

    /// Commits the open transaction, blocking for at most `timeout`. A
    /// [`TxnErrorKind::Retriable`] error means the commit goes on in the
    /// background and its outcome is unknown: calling `commit` again
    /// resumes it.
    fn commit(&self, timeout: Duration) -> impl Future<Output = Result<(), TxnError>> + Send {
        let _ = timeout;
        async { Err(TxnError::not_transactional()) }
    }

    /// Aborts the open transaction, blocking for at most `timeout`: records
    /// not yet delivered are purged (each reported as failed). A
    /// [`TxnErrorKind::Retriable`] error: calling `abort` again resumes it.
    fn abort(&self, timeout: Duration) -> impl Future<Output = Result<(), TxnError>> + Send {
        let _ = timeout;
        async { Err(TxnError::not_transactional()) }
    }

    /// The producer is left where no transaction can follow (a commit whose
    /// outcome is unknown, a call that failed for good): the next stream
    /// with its transactional id gets a new one.
    fn retire(&self, cause: &str) {
        let _ = cause;
    }
}

/// What a failed transactional call leaves the caller to do, in
/// librdkafka's terms (`rd_kafka_error_is_retriable`,
/// `rd_kafka_error_txn_requires_abort`, `rd_kafka_error_is_fatal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnErrorKind {
    /// The call did not finish in time, or met a passing failure; it goes
    /// on in the background, and calling it again resumes it. For a commit,
    /// whether the transaction committed is unknown until then.
    Retriable,
    /// The transaction cannot commit (a record of it failed, the producer
    /// lost its sequence): abort it; the producer goes on.
    Abortable,
    /// The producer cannot go on (fenced by a newer one with the same
    /// transactional id, or failed): a new one must be built.
    Fatal,
    /// Kafka does not allow the gateway this transactional id (ACLs).
    NotAuthorized,
    /// Kafka or the gateway is set up so that transactions cannot work (a
    /// cluster without transactions, a transaction timeout the brokers
    /// refuse, a producer setting librdkafka rejects).
    Misconfigured,
}

/// Why a transaction could not be begun, committed or aborted, or a
/// transactional producer not built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnError {
    pub message: String,
    pub kind: TxnErrorKind,
}

impl TxnError {
    pub fn new(kind: TxnErrorKind, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind,
        }
    }

    fn not_transactional() -> Self {
        Self::new(TxnErrorKind::Fatal, "not a transactional producer")
    }
}

/// The ack of a stored record.
pub fn ok_result(topic: &str, delivered: Delivered) -> proto::RecordResult {
    proto::RecordResult {
        result: Some(proto::record_result::Result::Ok(proto::RecordMetadata {
            topic: topic.to_owned(),
            partition: delivered.partition,
            offset: delivered.offset,
            timestamp_ms: delivered.timestamp_ms,
        })),
    }
}

/// The ack of a failed record.
pub fn error_result(error: proto::RecordError) -> proto::RecordResult {
    proto::RecordResult {
        result: Some(proto::record_result::Result::Error(error)),
    }
}
