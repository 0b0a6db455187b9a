//! Errors of the group coordinator, and the one place they become Kafka error codes.

use kafka_protocol::error::ResponseError;
use once_partition::PartitionError;

/// Why a group request failed. Each variant is one Kafka error code (see [`error_code`]).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("invalid group id")]
    InvalidGroupId,
    #[error("session timeout {0} ms outside the allowed range")]
    InvalidSessionTimeout(i32),
    #[error("unknown member id")]
    UnknownMemberId,
    /// JoinGroup v4+ without a member id: the client must rejoin with this one (KIP-394).
    #[error("a member id is required: rejoin as {0}")]
    MemberIdRequired(String),
    #[error("generation {given} is not the group's generation {current}")]
    IllegalGeneration { given: i32, current: i32 },
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("group instance id is in use by another member")]
    FencedInstanceId,
    #[error("no protocol all members support, or a different protocol type")]
    InconsistentGroupProtocol,
    #[error("group has reached its maximum size ({0} members)")]
    GroupMaxSizeReached(usize),
    #[error("too many groups ({0}) or offsets ({1}) in the coordinator")]
    CoordinatorFull(usize, usize),
    #[error("group is not empty")]
    NonEmptyGroup,
    #[error("group not found")]
    GroupIdNotFound,
    #[error("group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("offset metadata of {0} bytes is too large")]
    OffsetMetadataTooLarge(usize),
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("offsets of a transaction are pending")]
    UnstableOffsetCommit,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the coordinator is shutting down")]
    CoordinatorNotAvailable,
    /// The offsets log refused a transactional batch: its producer epoch is older than the current one.
    #[error("producer fenced: epoch is older than the current epoch {current_epoch}")]
    ProducerFenced { current_epoch: i16 },
    /// The offsets log refused a transactional write or marker the producer's state does not allow.
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// The offsets log refused a marker from an older transaction coordinator epoch.
    #[error("transaction coordinator fenced: marker coordinator epoch {marker} is older than {current}")]
    TransactionCoordinatorFenced { marker: i32, current: i32 },
    #[error("offsets log: {0}")]
    Storage(String),
}

impl From<PartitionError> for GroupError {
    fn from(error: PartitionError) -> GroupError {
        match error {
            PartitionError::Closed(_) => GroupError::CoordinatorNotAvailable,
            PartitionError::ProducerFenced { current_epoch } => GroupError::ProducerFenced { current_epoch },
            PartitionError::InvalidTxnState(reason) => GroupError::InvalidTxnState(reason),
            PartitionError::CoordinatorFenced { marker, current } => {
                GroupError::TransactionCoordinatorFenced { marker, current }
            }
            other => GroupError::Storage(other.to_string()),
        }
    }
}

impl From<once_log::LogError> for GroupError {
    fn from(error: once_log::LogError) -> GroupError {
        GroupError::Storage(error.to_string())
    }
}

/// The Kafka error code of a group error. Storage failures are logged: they are the unexpected ones.
pub fn error_code(error: &GroupError) -> ResponseError {
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

/// The code of an outcome: 0 for success.
pub fn code_of<T>(outcome: &Result<T, GroupError>) -> i16 {
    outcome.as_ref().err().map(|error| error_code(error).code()).unwrap_or(0)
}
