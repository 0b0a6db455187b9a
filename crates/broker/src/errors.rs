//! The one place where typed errors become Kafka error codes, keyed by the error and, where the code
//! depends on it, by the API ([`TxnApi`], a closed set of [`ApiKey`](kafka_protocol::messages::ApiKey)s) and its version.
//!
//! Precise codes matter: clients decide on retries from them, and a vague UNKNOWN_SERVER_ERROR has
//! made Java clients duplicate data elsewhere (Redpanda issue 5355). Every match here names every
//! variant, so a new variant cannot become a code without a decision; failures of storage are logged.

use once_log::LogError;
use once_node::{TopicError, TxnAppendError, TxnOffsetCommitError};
use once_partition::PartitionError;
use once_txn::TxnError;
use once_wire::ResponseError;

pub fn log_error_code(error: &LogError) -> ResponseError {
    match error {
        LogError::CorruptBatch(_) => ResponseError::CorruptMessage,
        LogError::InvalidBatch(_) => ResponseError::InvalidRecord,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Failed | LogError::Io { .. } => ResponseError::KafkaStorageError,
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
        TopicError::TooManyPartitions(_) => ResponseError::PolicyViolation,
        // A metadata file that cannot be written or read is a storage failure, as for the logs.
        TopicError::Io { .. } => {
            tracing::error!(%error, "topic metadata I/O failed");
            ResponseError::KafkaStorageError
        }
        TopicError::Partition(error) => partition_error_code(error),
    }
}

/// The code of an authentication or credential error, as the SASL APIs and the KIP-554 user APIs
/// answer it. The store's failures are logged here and answered as UNKNOWN_SERVER_ERROR.
pub fn auth_error_code(error: &once_auth::AuthError) -> ResponseError {
    use once_auth::AuthError;
    match error {
        AuthError::AuthenticationFailed
        | AuthError::Malformed(_)
        | AuthError::AuthorizationIdMismatch
        | AuthError::UnsupportedExtension(_)
        | AuthError::ServerNotVerified => ResponseError::SaslAuthenticationFailed,
        AuthError::IllegalState(_) => ResponseError::IllegalSaslState,
        AuthError::UnsupportedMechanism => ResponseError::UnsupportedSaslMechanism,
        AuthError::InvalidCredential(_) | AuthError::InvalidUser(_) => ResponseError::UnacceptableCredential,
        AuthError::Randomness(_)
        | AuthError::Io { .. }
        | AuthError::CorruptStore { .. }
        | AuthError::StoreInUse { .. }
        | AuthError::StoreLatched { .. } => {
            tracing::error!(%error, "credential store failed");
            ResponseError::UnknownServerError
        }
        // `AuthError` is non-exhaustive (another crate's): a variant added there is unexpected here.
        _ => {
            tracing::error!(%error, "unexpected authentication error");
            ResponseError::UnknownServerError
        }
    }
}

/// The APIs that answer with the transaction coordinator's errors ([`TxnError`]), named as their
/// [`ApiKey`](kafka_protocol::messages::ApiKey)s: the code of a refusal depends on the API and its version, and a closed set keeps the
/// choice exhaustive (an API that starts answering with them must be added here, and decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnApi {
    InitProducerId,
    AddPartitionsToTxn,
    AddOffsetsToTxn,
    EndTxn,
    TxnOffsetCommit,
}

impl TxnApi {
    /// Whether the API at `version` knows PRODUCER_FENCED (KIP-588); older versions get
    /// INVALID_PRODUCER_EPOCH, which their clients treat alike.
    fn producer_fenced_known(self, version: i16) -> bool {
        match self {
            TxnApi::InitProducerId => version >= 4,
            TxnApi::TxnOffsetCommit => version >= 3,
            TxnApi::AddPartitionsToTxn | TxnApi::AddOffsetsToTxn | TxnApi::EndTxn => version >= 2,
        }
    }
}

/// The code of the transaction coordinator's refusal of a request of `api` at `version`.
pub fn txn_error_code(error: &TxnError, api: TxnApi, version: i16) -> ResponseError {
    match error {
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::ProducerFenced if api.producer_fenced_known(version) => ResponseError::ProducerFenced,
        TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        TxnError::InvalidTransactionTimeout { .. } => ResponseError::InvalidTransactionTimeout,
        // Retriable: the client tries again (Kafka answers a failed log append the same way).
        TxnError::Storage(_) => ResponseError::CoordinatorNotAvailable,
        TxnError::NotAvailable => ResponseError::CoordinatorNotAvailable,
    }
}

/// The code of a transactional batch refused by the node (Produce, every version).
pub fn txn_append_error_code(error: &TxnAppendError) -> ResponseError {
    match error {
        TxnAppendError::MissingTransactionalId | TxnAppendError::PartitionNotInTransaction { .. } => {
            ResponseError::InvalidTxnState
        }
        TxnAppendError::Txn(TxnError::ProducerFenced) => ResponseError::InvalidProducerEpoch,
        TxnAppendError::Txn(TxnError::InvalidProducerIdMapping) => ResponseError::InvalidProducerIdMapping,
        // Retriable for a producer: it looks the coordinator up again and retries.
        TxnAppendError::Txn(TxnError::NotAvailable) => ResponseError::NotLeaderOrFollower,
        TxnAppendError::Txn(
            TxnError::ConcurrentTransactions
            | TxnError::InvalidTxnState(_)
            | TxnError::InvalidTransactionTimeout { .. }
            | TxnError::Storage(_),
        ) => ResponseError::InvalidTxnState,
    }
}

/// The code of a TxnOffsetCommit refused by the node's verification, at `version`.
pub fn txn_offset_commit_error_code(error: &TxnOffsetCommitError, version: i16) -> ResponseError {
    match error {
        TxnOffsetCommitError::GroupNotInTransaction(_) => ResponseError::InvalidTxnState,
        TxnOffsetCommitError::Txn(error) => txn_error_code(error, TxnApi::TxnOffsetCommit, version),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// KIP-588: PRODUCER_FENCED only to the versions that know it, INVALID_PRODUCER_EPOCH before.
    #[test]
    fn producer_fenced_by_api_and_version() {
        let fenced = |api, version| txn_error_code(&TxnError::ProducerFenced, api, version);
        for (api, first) in [
            (TxnApi::InitProducerId, 4),
            (TxnApi::TxnOffsetCommit, 3),
            (TxnApi::AddPartitionsToTxn, 2),
            (TxnApi::AddOffsetsToTxn, 2),
            (TxnApi::EndTxn, 2),
        ] {
            assert_eq!(fenced(api, first - 1), ResponseError::InvalidProducerEpoch, "{api:?} v{}", first - 1);
            assert_eq!(fenced(api, first), ResponseError::ProducerFenced, "{api:?} v{first}");
        }
        let produce = txn_append_error_code(&TxnAppendError::Txn(TxnError::ProducerFenced));
        assert_eq!(produce, ResponseError::InvalidProducerEpoch, "Produce answers a fenced producer so");
    }
}
