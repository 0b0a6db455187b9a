//! The one error type of this crate.

use std::io;

/// Everything that can go wrong in the log.
///
/// `Failed` is latched: once a write or fsync has failed, the log refuses every later write until
/// it is reopened (and recovered), because the state of the file after a failed write or fsync is
/// unknown (PostgreSQL's fsyncgate: a retried fsync can "succeed" after the data is gone).
#[derive(thiserror::Error, Debug)]
pub enum LogError {
    /// An I/O error, with what we were doing when it happened.
    #[error("{context}: {source}")]
    Io {
        /// What the log was doing, naming the file.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A batch whose bytes do not match its checksum or its own length field.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// A batch that is well formed but not acceptable (wrong magic, bad record count, ...).
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// A batch larger than a segment may hold.
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// Size of the rejected batch in bytes.
        size: usize,
        /// Largest batch the log accepts with the current configuration.
        max: u64,
    },
    /// A read or log-start-offset request outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: u64,
        /// First offset still in the log.
        log_start_offset: u64,
        /// Next offset to be assigned.
        log_end_offset: u64,
    },
    /// An earlier write or fsync failed; the log refuses writes until reopened.
    #[error("log failed after an I/O error and refuses writes until it is reopened")]
    Failed,
}

impl LogError {
    /// Wraps an I/O error with what we were doing.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> LogError {
        LogError::Io { context: context.into(), source }
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps the error to `LogError::Io` with a lazily built context string.
    fn context(self, context: impl FnOnce() -> String) -> Result<T, LogError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, LogError> {
        self.map_err(|source| LogError::io(context(), source))
    }
}
