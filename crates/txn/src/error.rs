//! Errors of the transaction coordinator, and their one mapping to Kafka error codes.

use kafka_protocol::error::ResponseError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// The producer id is not the one this transactional id maps to (or the id is unknown).
    #[error("the producer id does not match the transactional id")]
    InvalidProducerIdMapping,
    /// The producer epoch is not the current one: a newer incarnation has fenced this producer.
    #[error("producer fenced: a newer producer with the same transactional id exists")]
    ProducerFenced,
    /// Markers of the previous transaction are still being written; the client retries.
    #[error("the previous transaction is still completing")]
    ConcurrentTransactions,
    /// The request does not fit the transaction's state (e.g. commit after abort).
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// transaction.timeout.ms is not positive or exceeds transaction.max.timeout.ms.
    #[error("transaction timeout {requested_ms} ms is outside 1..={max_ms} ms")]
    InvalidTransactionTimeout { requested_ms: i32, max_ms: i32 },
    /// The transaction log could not be written (the request may be retried).
    #[error("transaction log: {0}")]
    Storage(String),
    /// The coordinator is shutting down.
    #[error("the transaction coordinator is not available")]
    NotAvailable,
}

impl From<once_partition::PartitionError> for TxnError {
    fn from(error: once_partition::PartitionError) -> Self {
        match error {
            once_partition::PartitionError::Closed(_) => TxnError::NotAvailable,
            other => TxnError::Storage(other.to_string()),
        }
    }
}

impl From<once_log::LogError> for TxnError {
    fn from(error: once_log::LogError) -> Self {
        TxnError::Storage(error.to_string())
    }
}

/// The Kafka error code of `error`. `fenced_known` says whether the request's version knows
/// PRODUCER_FENCED (KIP-588); older ones get INVALID_PRODUCER_EPOCH, which their clients treat alike.
pub fn error_code(error: &TxnError, fenced_known: bool) -> ResponseError {
    match error {
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::ProducerFenced if fenced_known => ResponseError::ProducerFenced,
        TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        TxnError::InvalidTransactionTimeout { .. } => ResponseError::InvalidTransactionTimeout,
        // Retriable: the client tries again (Kafka answers a failed log append the same way).
        TxnError::Storage(_) => ResponseError::CoordinatorNotAvailable,
        TxnError::NotAvailable => ResponseError::CoordinatorNotAvailable,
    }
}
