//! Errors of the group coordinator. The Kafka edge maps each to one Kafka error code
//! (`once_broker::errors::group_error_code`).

use once_partition::PartitionError;

/// Why a group request failed. Each variant is one Kafka error code at the edge.
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
            // The offsets log could not take the write: its storage failed, its queue is full, or
            // the write is one the offsets log never makes (sequences, dedup). Retriable for clients
            // (COORDINATOR_NOT_AVAILABLE); named one by one so a new variant needs a decision.
            other @ (PartitionError::Log(_)
            | PartitionError::Storage(_)
            | PartitionError::Busy(_)
            | PartitionError::MarkerQueueTimeout { .. }
            | PartitionError::OutOfOrderSequence { .. }
            | PartitionError::DedupPending(_)
            | PartitionError::DedupIndexFull(_)) => GroupError::Storage(other.to_string()),
        }
    }
}

impl From<once_log::LogError> for GroupError {
    fn from(error: once_log::LogError) -> GroupError {
        GroupError::Storage(error.to_string())
    }
}
