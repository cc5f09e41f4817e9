//! Every librdkafka error code, sorted three ways, explicitly:
//! - [`Class::Retriable`]: this record failed, the producer goes on, and
//!   sending the same record again can succeed (a broker away, a leader
//!   moving, a timeout);
//! - [`Class::Permanent`]: the record can never succeed as it is (too large,
//!   no such topic or partition, not authorized, invalid);
//! - [`Class::Fatal`]: the producer instance cannot go on (the idempotent
//!   producer lost its sequence, was fenced, ...). The gateway replaces the
//!   producer ([`super::kafka`]); the record's outcome is unknown, so it
//!   is reported retriable with a message that says it may be stored.
//!
//! `QueueFull` never reaches a record: the driver treats it as
//! backpressure. Codes only a consumer or the admin API meet are listed too,
//! as permanent, so that no code falls through unseen; a code added by a
//! later librdkafka is permanent `INTERNAL` until it is sorted here.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::record_error;
use crate::proto::{self, ErrorCode};

/// How a librdkafka error affects a record and the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Retriable(ErrorCode),
    Permanent(ErrorCode),
    Fatal,
}

/// The class of `code`.
pub fn classify(code: RDKafkaErrorCode) -> Class {
    sort(code).unwrap_or(Class::Permanent(ErrorCode::Internal))
}

/// Whether the producer that reported `code` must be replaced.
pub fn is_fatal(code: RDKafkaErrorCode) -> bool {
    classify(code) == Class::Fatal
}

/// The explicit table; `None` only for codes this librdkafka binding did not
/// know when the table was written.
fn sort(code: RDKafkaErrorCode) -> Option<Class> {
    use Class::{Fatal, Permanent, Retriable};
    use ErrorCode as E;
    use RDKafkaErrorCode as K;
    Some(match code {
        // Brokers away, leaders moving, replicas short: try again later.
        K::BrokerDestroy
        | K::BrokerTransportFailure
        | K::Resolve
        | K::AllBrokersDown
        | K::ISRInsufficient
        | K::NodeUpdate
        | K::SSL
        | K::WaitingForCoordinator
        | K::QueueFull
        | K::WaitCache
        | K::Retry
        | K::PurgeQueue
        | K::PurgeInflight
        | K::UnknownBroker
        | K::DestroyBroker
        | K::LeaderNotAvailable
        | K::NotLeaderForPartition
        | K::BrokerNotAvailable
        | K::ReplicaNotAvailable
        | K::NetworkException
        | K::CoordinatorLoadInProgress
        | K::CoordinatorNotAvailable
        | K::NotCoordinator
        | K::NotEnoughReplicas
        | K::NotEnoughReplicasAfterAppend
        | K::NotController
        | K::KafkaStorageError
        | K::LogDirNotFound
        | K::ReassignmentInProgress
        | K::FencedLeaderEpoch
        | K::UnknownLeaderEpoch
        | K::PreferredLeaderNotAvailable
        | K::EligibleLeadersNotAvailable
        | K::ThrottlingQuotaExceeded
        | K::ConcurrentTransactions
        | K::RebootstrapRequired
        | K::StaleControllerEpoch
        | K::InvalidMessage => Retriable(E::Unavailable),
        K::MessageTimedOut | K::RequestTimedOut | K::OperationTimedOut | K::TimedOutQueue => {
            Retriable(E::TimedOut)
        }

        // The record itself.
        K::MessageSizeTooLarge | K::InvalidMessageSize | K::MessageBatchTooLarge => {
            Permanent(E::RecordTooLarge)
        }
        K::UnknownTopicOrPartition | K::UnknownTopic | K::UnknownTopicId => {
            Permanent(E::UnknownTopic)
        }
        K::UnknownPartition | K::InvalidPartitions => Permanent(E::UnknownPartition),
        K::BadMessage
        | K::BadCompression
        | K::InvalidTopic
        | K::InvalidTimestamp
        | K::InvalidRecord
        | K::PolicyViolation
        | K::UnsupportedForMessageFormat
        | K::UnsupportedCompressionType
        | K::InvalidArgument
        | K::InvalidType
        | K::InvalidDifferentRecord
        | K::KeySerialization
        | K::ValueSerialization => Permanent(E::InvalidRecord),

        // Not allowed.
        K::TopicAuthorizationFailed
        | K::GroupAuthorizationFailed
        | K::ClusterAuthorizationFailed
        | K::TransactionalIdAuthorizationFailed
        | K::Authentication
        | K::SaslAuthenticationFailed
        | K::UnsupportedSASLMechanism
        | K::IllegalSASLState
        | K::SecurityDisabled
        | K::InvalidPrincipalType
        | K::UnacceptableCredential
        | K::PrincipalDeserializationFailure
        | K::DelegationTokenAuthDisabled
        | K::DelegationTokenNotFound
        | K::DelegationTokenOwnerMismatch
        | K::DelegationTokenRequestNotAllowed
        | K::DelegationTokenAuthorizationFailed
        | K::DelegationTokenExpired => Permanent(E::NotAuthorized),

        // The producer instance cannot go on.
        K::Fatal
        | K::Fenced
        | K::GaplessGuarantee
        | K::Inconsistent
        | K::OutOfOrderSequenceNumber
        | K::InvalidProducerEpoch
        | K::InvalidTransactionalState
        | K::InvalidProducerIdMapping
        | K::InvalidTransactionTimeout
        | K::TransactionCoordinatorFenced
        | K::UnknownProducerId
        | K::ProducerFenced => Fatal,

        // Anything else a producer should never see (local misuse, codes of
        // consumers, groups and the admin API): permanent and unexpected.
        K::Begin
        | K::End
        | K::Unknown
        | K::NoError
        | K::Fail
        | K::CriticalSystemResource
        | K::PartitionEOF
        | K::FileSystem
        | K::UnknownGroup
        | K::InProgress
        | K::PreviousInProgress
        | K::ExistingSubscription
        | K::AssignPartitions
        | K::RevokePartitions
        | K::Conflict
        | K::State
        | K::UnknownProtocol
        | K::NotImplemented
        | K::NoOffset
        | K::Outdated
        | K::UnsupportedFeature
        | K::Interrupted
        | K::KeyDeserialization
        | K::ValueDeserialization
        | K::Partial
        | K::ReadOnly
        | K::NoEnt
        | K::Underflow
        | K::PollExceeded
        | K::NotConfigured
        | K::Application
        | K::AssignmentLost
        | K::Noop
        | K::AutoOffsetReset
        | K::LogTruncation
        | K::OffsetOutOfRange
        | K::OffsetMetadataTooLarge
        | K::InvalidRequiredAcks
        | K::IllegalGeneration
        | K::InconsistentGroupProtocol
        | K::InvalidGroupId
        | K::UnknownMemberId
        | K::InvalidSessionTimeout
        | K::RebalanceInProgress
        | K::InvalidCommitOffsetSize
        | K::UnsupportedVersion
        | K::TopicAlreadyExists
        | K::InvalidReplicationFactor
        | K::InvalidReplicaAssignment
        | K::InvalidConfig
        | K::InvalidRequest
        | K::DuplicateSequenceNumber
        | K::OperationNotAttempted
        | K::NonEmptyGroup
        | K::GroupIdNotFound
        | K::FetchSessionIdNotFound
        | K::InvalidFetchSessionEpoch
        | K::ListenerNotFound
        | K::TopicDeletionDisabled
        | K::StaleBrokerEpoch
        | K::OffsetNotAvailable
        | K::MemberIdRequired
        | K::GroupMaxSizeReached
        | K::FencedInstanceId
        | K::ElectionNotNeeded
        | K::NoReassignmentInProgress
        | K::GroupSubscribedToTopic
        | K::UnstableOffsetCommit
        | K::ResourceNotFound
        | K::DuplicateResource
        | K::InconsistentVoterSet
        | K::InvalidUpdateVersion
        | K::FeatureUpdateFailed
        | K::FencedMemberEpoch
        | K::UnreleasedInstanceId
        | K::UnsupportedAssignor
        | K::StaleMemberEpoch
        | K::UnknownSubscriptionId
        | K::TelemetryTooLarge
        | K::EndAll => Permanent(E::Internal),
        _ => return None,
    })
}

/// Maps a librdkafka failure of one record (at enqueue or at delivery) to the
/// error in its ack.
pub fn record_error_from_kafka(err: &KafkaError) -> proto::RecordError {
    let Some(code) = err.rdkafka_error_code() else {
        return record_error(ErrorCode::Internal, err.to_string(), false);
    };
    let named = named(code);
    match classify(code) {
        Class::Retriable(kind) => record_error(kind, named, true),
        Class::Permanent(kind) => record_error(kind, named, false),
        Class::Fatal => fatal_record_error(&named, true),
    }
}

/// librdkafka's description and name of an error, e.g. "Broker: Message
/// size too large (MSG_SIZE_TOO_LARGE)".
pub fn named(code: RDKafkaErrorCode) -> String {
    format!("{} ({})", description(code), error_name(code))
}

/// The error of a record whose producer failed fatally before Kafka
/// confirmed it; `may_be_stored` when the record was in flight.
pub fn fatal_record_error(cause: &str, may_be_stored: bool) -> proto::RecordError {
    let stored = if may_be_stored {
        "it may already be stored, so a consumer may see it twice"
    } else {
        "it was not stored"
    };
    let mut error = record_error(
        ErrorCode::Unavailable,
        format!(
            "the producer hit a fatal error ({cause}) before Kafka confirmed this record; \
             the gateway replaced the producer: send the record again ({stored})"
        ),
        true,
    );
    error.may_be_stored = may_be_stored;
    error
}

/// librdkafka's description of an error (`rd_kafka_err2str`), e.g.
/// "Broker: Message size too large".
fn description(code: RDKafkaErrorCode) -> String {
    // The Display form is "VariantName (description)".
    let display = code.to_string();
    display
        .strip_prefix(&format!("{code:?} ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .map_or_else(|| display.clone(), str::to_owned)
}

/// librdkafka's name for an error (`rd_kafka_err2name`), for the codes the
/// gateway meets; others fall back to the Rust variant's name.
pub fn error_name(code: RDKafkaErrorCode) -> String {
    use RDKafkaErrorCode as K;
    let name = match code {
        K::MessageSizeTooLarge => "MSG_SIZE_TOO_LARGE",
        K::InvalidMessageSize => "INVALID_MSG_SIZE",
        K::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PART",
        K::UnknownTopic => "_UNKNOWN_TOPIC",
        K::UnknownPartition => "_UNKNOWN_PARTITION",
        K::InvalidPartitions => "INVALID_PARTITIONS",
        K::TopicAuthorizationFailed => "TOPIC_AUTHORIZATION_FAILED",
        K::ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
        K::TransactionalIdAuthorizationFailed => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
        K::SaslAuthenticationFailed => "SASL_AUTHENTICATION_FAILED",
        K::Authentication => "_AUTHENTICATION",
        K::MessageTimedOut => "_MSG_TIMED_OUT",
        K::RequestTimedOut => "REQUEST_TIMED_OUT",
        K::InvalidTopic => "TOPIC_EXCEPTION",
        K::InvalidRecord => "INVALID_RECORD",
        K::PolicyViolation => "POLICY_VIOLATION",
        K::AllBrokersDown => "_ALL_BROKERS_DOWN",
        K::BrokerTransportFailure => "_TRANSPORT",
        K::LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
        K::NotLeaderForPartition => "NOT_LEADER_FOR_PARTITION",
        K::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
        K::NotEnoughReplicasAfterAppend => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        K::NetworkException => "NETWORK_EXCEPTION",
        K::KafkaStorageError => "KAFKA_STORAGE_ERROR",
        K::PreferredLeaderNotAvailable => "PREFERRED_LEADER_NOT_AVAILABLE",
        K::QueueFull => "_QUEUE_FULL",
        K::PurgeQueue => "_PURGE_QUEUE",
        K::PurgeInflight => "_PURGE_INFLIGHT",
        K::Retry => "_RETRY",
        K::Fatal => "_FATAL",
        K::OutOfOrderSequenceNumber => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        K::DuplicateSequenceNumber => "DUPLICATE_SEQUENCE_NUMBER",
        K::InvalidRequiredAcks => "INVALID_REQUIRED_ACKS",
        other => return format!("{other:?}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaRespErr;

    #[test]
    fn every_known_code_is_sorted_explicitly() {
        let mut seen = 0;
        for raw in -300..300 {
            let Ok(err) = RDKafkaRespErr::try_from(raw) else {
                continue;
            };
            let code = RDKafkaErrorCode::from(err);
            assert!(sort(code).is_some(), "{code:?} ({raw}) is not sorted");
            seen += 1;
        }
        assert!(seen > 170, "only {seen} codes enumerated");
    }

    fn error(code: RDKafkaErrorCode) -> proto::RecordError {
        record_error_from_kafka(&KafkaError::MessageProduction(code))
    }

    #[test]
    fn permanent_failures_are_not_retriable() {
        use RDKafkaErrorCode as K;
        for (code, expected) in [
            (K::MessageSizeTooLarge, ErrorCode::RecordTooLarge),
            (K::UnknownTopicOrPartition, ErrorCode::UnknownTopic),
            (K::TopicAuthorizationFailed, ErrorCode::NotAuthorized),
            (K::UnknownPartition, ErrorCode::UnknownPartition),
            (K::InvalidTimestamp, ErrorCode::InvalidRecord),
            (K::OffsetOutOfRange, ErrorCode::Internal),
        ] {
            assert!(matches!(classify(code), Class::Permanent(_)), "{code:?}");
            let err = error(code);
            assert_eq!(err.code, expected as i32, "{code:?}");
            assert!(!err.retriable, "{code:?} must not be retriable");
        }
    }

    #[test]
    fn transient_failures_are_retriable_and_named() {
        let err = error(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(err.code, ErrorCode::TimedOut as i32);
        assert!(err.retriable);
        assert_eq!(err.message, "Local: Message timed out (_MSG_TIMED_OUT)");
        for code in [
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::PurgeInflight,
        ] {
            assert!(matches!(classify(code), Class::Retriable(_)), "{code:?}");
            let err = error(code);
            assert_eq!(err.code, ErrorCode::Unavailable as i32, "{code:?}");
            assert!(err.retriable, "{code:?}");
        }
    }

    #[test]
    fn fatal_errors_replace_the_producer_and_say_the_record_may_be_stored() {
        for code in [
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::UnknownProducerId,
        ] {
            assert!(is_fatal(code), "{code:?}");
            let err = error(code);
            assert_eq!(err.code, ErrorCode::Unavailable as i32);
            assert!(err.retriable);
            assert!(
                err.message.contains("may already be stored"),
                "{}",
                err.message
            );
        }
        assert!(
            error(RDKafkaErrorCode::OutOfOrderSequenceNumber)
                .message
                .contains("OUT_OF_ORDER_SEQUENCE_NUMBER")
        );
    }
}
