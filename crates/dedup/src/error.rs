//! The one error type of this crate.

use std::io;

/// Everything that can go wrong in deduplication.
///
/// For snapshots, [`DedupError::SnapshotCorrupt`] and [`DedupError::SnapshotVersion`] mean the file
/// cannot be trusted: the caller discards it and rebuilds the index from the log
/// ([`DedupError::means_rebuild`] says so).
#[derive(thiserror::Error, Debug)]
pub enum DedupError {
    /// A `dedup.source` or `dedup.window.ms` value that is not one of the accepted forms.
    #[error("invalid {name} value {value:?}: {reason}")]
    InvalidConfig {
        /// The config name (`dedup.source`, `dedup.window.ms`).
        name: &'static str,
        /// The rejected value.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// The batch header is malformed, has a bad checksum, or is not magic v2.
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// The records inside a batch (after decompression) do not parse.
    #[error("invalid records in batch: {0}")]
    InvalidRecords(String),
    /// The batch names a compression codec this crate does not know (attribute bits 0-2 above 4).
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// Decompressing or compressing the records failed.
    #[error("{codec} {action} failed: {reason}")]
    Compression {
        /// Codec name.
        codec: &'static str,
        /// `compress` or `decompress`.
        action: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The records of one batch decompress to more than the bound, protecting the broker from
    /// decompression bombs.
    #[error("records decompress to more than {max} bytes")]
    DecompressedTooLarge {
        /// The bound, [`crate::RECORDS_BYTES_MAX`].
        max: usize,
    },
    /// `filter_batch` was given a mask whose length is not the batch's record count.
    #[error("keep mask has {mask} entries but the batch has {records} records")]
    KeepMaskLength {
        /// Entries in the mask.
        mask: usize,
        /// Records in the batch.
        records: usize,
    },
    /// The index holds as many ids as its configured bound allows.
    #[error("dedup index is full: {stored} ids stored or reserved, bound {max}")]
    IndexFull {
        /// Ids stored (live or awaiting reclamation) plus ids reserved.
        stored: u64,
        /// The configured bound, `IndexConfig::max_ids`.
        max: u64,
    },
    /// An I/O error, with what we were doing when it happened.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing, naming the file.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A chunk file of the index whose checksum, length, order or trailer is wrong, found at start
    /// or when a lookup read one of its pages: the file cannot be trusted.
    #[error("corrupt dedup chunk file {path}: {reason}")]
    ChunkCorrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What did not match.
        reason: String,
    },
    /// The index is past its memory budget and could not move chunks to disk (a full disk, say):
    /// new ids are refused until a spill succeeds, so memory stays bounded.
    #[error("dedup index is over its memory budget ({resident} of {budget} bytes) and cannot spill to disk: {reason}")]
    SpillFailed {
        /// Bytes the index holds in RAM.
        resident: usize,
        /// The budget (`--dedup-memory-bytes`).
        budget: usize,
        /// The last spill's error.
        reason: String,
    },
    /// A snapshot whose checksum, length or structure is wrong.
    #[error("corrupt dedup snapshot: {0}")]
    SnapshotCorrupt(String),
    /// A snapshot written by another format version.
    #[error("dedup snapshot version {found} is not the supported version {supported}")]
    SnapshotVersion {
        /// Version in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
}

impl DedupError {
    /// True for errors after which the snapshot must be ignored and the index rebuilt from the
    /// log: a corrupt or old-version snapshot, one that cannot be read at all, or a chunk file it refers
    /// to that is missing, torn or corrupt.
    pub fn means_rebuild(&self) -> bool {
        matches!(
            self,
            DedupError::SnapshotCorrupt(_)
                | DedupError::SnapshotVersion { .. }
                | DedupError::Io { .. }
                | DedupError::ChunkCorrupt { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> DedupError {
        DedupError::Io { context: context.into(), source }
    }
}
