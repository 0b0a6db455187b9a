//! Errors of the partition layer. The broker maps them to Kafka error codes in one place.

use once_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The log refused or failed: storage errors latch the log, validation errors do not.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The writer has stopped (shutdown or partition deleted); nothing was appended.
    #[error("partition {0} is closed")]
    Closed(String),
    /// A write or fsync failed for a round this request was part of: not durable, log latched.
    #[error("storage error: {0}")]
    Storage(String),
    /// The batch does not continue the producer's sequence (and is no cached duplicate).
    #[error("out of order sequence: expected first sequence {expected_first_sequence}")]
    OutOfOrderSequence { expected_first_sequence: i32 },
    /// The batch's producer epoch is older than the producer's current one.
    #[error("producer fenced: epoch is older than the current epoch {current_epoch}")]
    ProducerFenced { current_epoch: i16 },
    /// A non-transactional batch from a producer with an open transaction, or a transactional batch
    /// the producer's state does not allow (INVALID_TXN_STATE).
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// A marker from an older coordinator epoch than one already seen (TRANSACTION_COORDINATOR_FENCED).
    #[error("transaction coordinator fenced: marker coordinator epoch {marker} is older than {current}")]
    CoordinatorFenced { marker: i32, current: i32 },
    /// Too many append requests are queued; the client should retry.
    #[error("partition {0} has too many queued appends")]
    Busy(String),
    /// A transaction marker waited this long for room in the partition's full append queue and was
    /// not written; its transaction stays open until the coordinator writes the marker again.
    #[error("partition {partition}: the append queue stayed full for {waited_ms} ms; the transaction marker was not written")]
    MarkerQueueTimeout { partition: String, waited_ms: u64 },
    /// A record's message id is held by another producer's open transaction or by a write not yet
    /// durable: storing it now could make a duplicate (if that commits) or a loss (if it aborts).
    /// Nothing was appended; the client should retry (NOT_ENOUGH_REPLICAS, which clients retry).
    #[error("{0}")]
    DedupPending(String),
    /// The topic's dedup index holds as many ids as it may (POLICY_VIOLATION).
    #[error("{0}")]
    DedupIndexFull(String),
}
