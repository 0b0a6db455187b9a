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
    /// Too many append requests are queued; the client should retry.
    #[error("partition {0} has too many queued appends")]
    Busy(String),
}
