//! Every error kafka-gateway reports, and the one place that turns them into
//! gRPC statuses and per-record error codes.
//!
//! Three kinds of failure, three treatments:
//! - a record that cannot be sent, or that Kafka refused, becomes a
//!   [`proto::RecordError`] in that record's ack, and the stream goes on;
//! - a stream that is broken (a malformed or over-limit batch) or cut by a
//!   shutdown ends with a [`tonic::Status`] whose message says what to fix;
//! - a gateway that cannot start fails with [`Error`], and `main` maps it to
//!   an exit code.

use rdkafka::error::KafkaError;
use tonic::Status;

use crate::proto::{self, ErrorCode};

/// Why the gateway could not start or stopped unexpectedly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing, malformed or contradicts another.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// librdkafka refused the producer configuration.
    #[error("could not create the Kafka producer: {0}; check the -X/--librdkafka-option settings")]
    Producer(#[source] KafkaError),
    /// The embedded broker could not be started.
    #[error("could not start the embedded broker: {0}")]
    EmbeddedBroker(String),
    /// The gRPC server failed.
    #[error("gRPC server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a stream ended before the client closed it.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A batch holds more records than `--max-batch-records`.
    #[error(
        "batch {batch_id} has {records} records, over the gateway's limit of {limit} \
         (--max-batch-records); split it into smaller batches"
    )]
    TooManyRecords {
        batch_id: u64,
        records: usize,
        limit: usize,
    },
    /// A message exceeded the gRPC size limit (`--max-batch-bytes`).
    #[error(
        "a batch exceeds the gateway's size limit (--max-batch-bytes): {0}; \
         send smaller batches"
    )]
    BatchTooLarge(String),
    /// A message could not be decoded as a `ProduceRequest`.
    #[error(
        "malformed ProduceRequest: {0}; build the client from \
         proto/kafka_gateway/v1/producer.proto"
    )]
    Malformed(String),
    /// The gateway is draining for shutdown.
    #[error(
        "server shutting down: every batch read so far was answered; \
         reconnect and send the rest again"
    )]
    ShuttingDown,
    /// The stream's connection reached `--max-connection-age`.
    #[error(
        "connection age reached, reconnect: every batch read so far was answered; \
         send the rest again on a new connection (the gateway limits connection age \
         so that load spreads over its replicas)"
    )]
    ConnectionAgeReached,
    /// The client left a response unread for the stall timeout.
    #[error(
        "the client left a response unread for {timeout:?} (--stall-timeout): \
         records already handed to Kafka completed, later ones were not sent; \
         read responses as they arrive"
    )]
    Stalled { timeout: std::time::Duration },
    /// A newer stream claimed this stream's transactional id.
    #[error(
        "fenced by a newer stream with transactional id {id:?}: this stream's open \
         transaction was aborted; only one stream at a time may use a transactional id"
    )]
    Fenced { id: String },
    /// A transaction holds the stream's whole window and no commit came.
    #[error(
        "the open transaction holds {records} records, the stream's limit \
         (--max-in-flight-records and --max-in-flight-bytes), without a commit: it was \
         aborted; commit more often (ProduceRequest.commit)"
    )]
    TransactionTooLarge { records: usize },
    /// The transaction fields were misused.
    #[error("{0}")]
    TransactionMisuse(String),
    /// The transactional producer failed for good (fenced by another
    /// producer with the same id, or a fatal error).
    #[error(
        "the transactional producer failed: {0}; the open transaction was aborted; \
         open a new stream to go on"
    )]
    TransactionFailed(String),
    /// A commit did not finish within its bound: whether the transaction
    /// committed is unknown, and the producer was retired.
    #[error(
        "the outcome of a commit is unknown ({0}): the transaction's records got \
         UNAVAILABLE with may_be_stored; read them back with a read_committed consumer \
         before sending them again, and open a new stream to go on"
    )]
    CommitOutcomeUnknown(String),
    /// A reload revoked the stream's credential, or its token expired.
    #[error("{0}")]
    Unauthenticated(String),
    /// A reload took back a grant the stream relies on.
    #[error("{0}")]
    PermissionDenied(String),
}

impl From<StreamError> for Status {
    fn from(err: StreamError) -> Status {
        let message = err.to_string();
        match err {
            StreamError::TooManyRecords { .. } | StreamError::BatchTooLarge(_) => {
                Status::resource_exhausted(message)
            }
            StreamError::Malformed(_) => Status::invalid_argument(message),
            StreamError::ShuttingDown | StreamError::ConnectionAgeReached => {
                Status::unavailable(message)
            }
            StreamError::Stalled { .. } | StreamError::TransactionTooLarge { .. } => {
                Status::resource_exhausted(message)
            }
            StreamError::Fenced { .. } | StreamError::TransactionFailed(_) => {
                Status::aborted(message)
            }
            StreamError::TransactionMisuse(_) => Status::invalid_argument(message),
            StreamError::CommitOutcomeUnknown(_) => Status::unavailable(message),
            StreamError::Unauthenticated(_) => Status::unauthenticated(message),
            StreamError::PermissionDenied(_) => Status::permission_denied(message),
        }
    }
}

impl StreamError {
    /// A short name, for the metrics of why streams ended.
    pub fn label(&self) -> &'static str {
        match self {
            StreamError::TooManyRecords { .. } => "too_many_records",
            StreamError::BatchTooLarge(_) => "batch_too_large",
            StreamError::Malformed(_) => "malformed",
            StreamError::ShuttingDown => "shutdown",
            StreamError::ConnectionAgeReached => "connection_age",
            StreamError::Stalled { .. } => "stalled",
            StreamError::Fenced { .. } => "fenced",
            StreamError::TransactionTooLarge { .. } => "transaction_too_large",
            StreamError::TransactionMisuse(_) => "transaction_misuse",
            StreamError::TransactionFailed(_) => "transaction_failed",
            StreamError::CommitOutcomeUnknown(_) => "commit_outcome_unknown",
            StreamError::Unauthenticated(_) => "revoked",
            StreamError::PermissionDenied(_) => "not_authorized",
        }
    }

    /// A transactional stream ended this way aborts every transaction whose
    /// commit is not under way yet, even one its client asked to commit:
    /// another stream owns the id now, or the producer cannot commit.
    pub fn aborts_every_transaction(&self) -> bool {
        matches!(
            self,
            StreamError::Fenced { .. }
                | StreamError::TransactionFailed(_)
                | StreamError::CommitOutcomeUnknown(_)
        )
    }

    /// The gateway, not the client, ended the stream: the client may send
    /// the rest again elsewhere.
    pub fn is_stop(&self) -> bool {
        matches!(
            self,
            StreamError::ShuttingDown | StreamError::ConnectionAgeReached
        )
    }

    /// Sorts an error read from the inbound stream: a broken message ends the
    /// stream with a status, as does a credential or grant revoked while it
    /// was open (see `grpc::revocation`); anything else means the client
    /// went away, and there is nobody left to tell (`None`).
    pub fn from_inbound(status: &Status) -> Option<StreamError> {
        match status.code() {
            tonic::Code::Unauthenticated => {
                Some(StreamError::Unauthenticated(status.message().to_owned()))
            }
            tonic::Code::PermissionDenied => {
                Some(StreamError::PermissionDenied(status.message().to_owned()))
            }
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
                Some(StreamError::BatchTooLarge(status.message().to_owned()))
            }
            // Undecodable protobuf, a truncated message, a bad compression
            // flag or payload: the client sent something broken.
            tonic::Code::Internal
                if ["decod", "protocol error", "decompress"]
                    .iter()
                    .any(|needle| status.message().contains(needle)) =>
            {
                Some(StreamError::Malformed(status.message().to_owned()))
            }
            _ => None,
        }
    }
}

/// Whether `code` blames the record itself or where it was sent (invalid,
/// too large, unknown topic or partition, not authorized): sending it again
/// as it is cannot cure it, and it is the record's own failure, not its
/// stream's or its transaction's.
pub fn is_the_records_own(code: ErrorCode) -> bool {
    match code {
        ErrorCode::InvalidRecord
        | ErrorCode::RecordTooLarge
        | ErrorCode::UnknownTopic
        | ErrorCode::UnknownPartition
        | ErrorCode::NotAuthorized => true,
        ErrorCode::Unspecified
        | ErrorCode::TimedOut
        | ErrorCode::Unavailable
        | ErrorCode::Internal
        | ErrorCode::Aborted => false,
    }
}

/// Builds a per-record error.
pub fn record_error(
    code: ErrorCode,
    message: impl Into<String>,
    retriable: bool,
) -> proto::RecordError {
    proto::RecordError {
        code: code as i32,
        message: message.into(),
        retriable,
        may_be_stored: false,
        dead_letter: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_errors_are_sorted() {
        let too_large = Status::out_of_range("decoded message length too large: found 9 bytes");
        assert!(matches!(
            StreamError::from_inbound(&too_large),
            Some(StreamError::BatchTooLarge(_))
        ));
        let garbage = Status::internal("failed to decode Protobuf message: invalid wire type");
        let status: Status = StreamError::from_inbound(&garbage).unwrap().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(StreamError::from_inbound(&Status::cancelled("client went away")).is_none());
    }
}
