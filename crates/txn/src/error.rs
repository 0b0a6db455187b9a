//! Errors of the transaction coordinator. The Kafka edge maps them to error codes (`once-broker`'s
//! `errors` module), by API and version where the code depends on them.

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
        use once_partition::PartitionError;
        match error {
            PartitionError::Closed(_) => TxnError::NotAvailable,
            // The transaction log could not take the write (the request may be retried); the
            // variants the transaction log never produces land here too, named so that a new
            // variant needs a decision.
            other @ (PartitionError::Log(_)
            | PartitionError::Storage(_)
            | PartitionError::Busy(_)
            | PartitionError::MarkerQueueTimeout { .. }
            | PartitionError::OutOfOrderSequence { .. }
            | PartitionError::ProducerFenced { .. }
            | PartitionError::InvalidTxnState(_)
            | PartitionError::CoordinatorFenced { .. }
            | PartitionError::DedupPending(_)
            | PartitionError::DedupIndexFull(_)) => TxnError::Storage(other.to_string()),
        }
    }
}

impl From<once_log::LogError> for TxnError {
    fn from(error: once_log::LogError) -> Self {
        TxnError::Storage(error.to_string())
    }
}
