//! The one place where errors become Kafka error codes.
//!
//! Precise codes matter: clients decide on retries from them, and a vague UNKNOWN_SERVER_ERROR has
//! made Java clients duplicate data elsewhere (Redpanda issue 5355). Anything unexpected is logged.

use once_log::LogError;
use once_partition::PartitionError;
use once_wire::ResponseError;

use crate::topics::TopicError;

pub fn log_error_code(error: &LogError) -> ResponseError {
    match error {
        LogError::CorruptBatch(_) => ResponseError::CorruptMessage,
        LogError::InvalidBatch(_) => ResponseError::InvalidRecord,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Failed | LogError::Io { .. } => ResponseError::KafkaStorageError,
        #[allow(unreachable_patterns)]
        other => unexpected(other),
    }
}

pub fn partition_error_code(error: &PartitionError) -> ResponseError {
    match error {
        PartitionError::Log(error) => log_error_code(error),
        PartitionError::Storage(_) => ResponseError::KafkaStorageError,
        PartitionError::Closed(_) => ResponseError::NotLeaderOrFollower,
        PartitionError::Busy(_) | PartitionError::MarkerQueueTimeout { .. } => ResponseError::RequestTimedOut,
        PartitionError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        PartitionError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        PartitionError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        PartitionError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
        // Retriable in every client (librdkafka, Java): the id's holder ends, then the retry is
        // decided as a duplicate (it committed) or stored (it aborted).
        PartitionError::DedupPending(_) => ResponseError::NotEnoughReplicas,
        PartitionError::DedupIndexFull(_) => ResponseError::PolicyViolation,
    }
}

pub fn topic_error_code(error: &TopicError) -> ResponseError {
    match error {
        TopicError::DuplicateInRequest(_) => ResponseError::InvalidRequest,
        TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        // A metadata file that cannot be written or read is a storage failure, as for the logs.
        TopicError::Io { .. } => {
            tracing::error!(%error, "topic metadata I/O failed");
            ResponseError::KafkaStorageError
        }
        TopicError::Partition(error) => partition_error_code(error),
    }
}

fn unexpected(error: &dyn std::fmt::Display) -> ResponseError {
    tracing::error!(%error, "unexpected error");
    ResponseError::UnknownServerError
}

/// The error code of an optional error (0 for none).
pub fn code(error: Option<ResponseError>) -> i16 {
    error.map(|error| error.code()).unwrap_or(0)
}

/// The Kafka error code of a group coordinator error. Storage failures are logged: they are the
/// unexpected ones.
pub fn group_error_code(error: &once_group::GroupError) -> ResponseError {
    use once_group::GroupError;
    match error {
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::InvalidSessionTimeout(_) => ResponseError::InvalidSessionTimeout,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::MemberIdRequired(_) => ResponseError::MemberIdRequired,
        GroupError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::GroupMaxSizeReached(_) | GroupError::CoordinatorFull(..) => ResponseError::GroupMaxSizeReached,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        GroupError::OffsetMetadataTooLarge(_) => ResponseError::OffsetMetadataTooLarge,
        GroupError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        GroupError::UnstableOffsetCommit => ResponseError::UnstableOffsetCommit,
        GroupError::InvalidRequest(_) => ResponseError::InvalidRequest,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        // What the broker answers a fenced produce with; clients treat it as PRODUCER_FENCED.
        GroupError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        GroupError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        GroupError::TransactionCoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
        // Kafka answers a failed offsets-log write with COORDINATOR_NOT_AVAILABLE (the code clients
        // retry on); the write was not acknowledged, so retrying is safe.
        GroupError::Storage(_) => {
            tracing::error!(%error, "offsets log failed");
            ResponseError::CoordinatorNotAvailable
        }
    }
}
