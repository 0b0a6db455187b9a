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
    /// Too many append requests are queued; the client should retry.
    #[error("partition {0} has too many queued appends")]
    Busy(String),
}
