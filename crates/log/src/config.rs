//! Tunables of one partition log.

/// Seven days in milliseconds: Kafka's default for `segment.ms` and `retention.ms`.
const SEVEN_DAYS_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Zeros written ahead of the active segment's end at a time, by default: one extension of the file
/// (and one fdatasync that journals its new size) per 256 KiB appended. A larger step journals less
/// often, but the sync that carries it to the disk is slower: with 1 MiB the ack p99 of 8 and 32
/// latency-bound senders was 0.3–0.6 ms higher, for no more records/s (docs/benchmarks.md, session 30).
pub const ZERO_AHEAD_BYTES_DEFAULT: u64 = 256 * 1024;

/// Configuration of one log. Defaults are Kafka's, and durable (fsync on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when appending would make the active one larger than this
    /// (Kafka `segment.bytes`). Also the largest batch accepted. Capped at `u32::MAX` because
    /// index positions are 32-bit.
    pub segment_bytes_max: u64,
    /// Roll when the active segment's first batch was appended longer ago than this
    /// (wall clock ms passed to `append`; Kafka `segment.ms`). `None` = never.
    pub segment_ms_max: Option<u64>,
    /// Delete old segments while the log would stay at least this large without them
    /// (Kafka `retention.bytes`). `None` = unlimited.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose largest timestamp is older than this (Kafka `retention.ms`).
    /// `None` = unlimited.
    pub retention_ms: Option<u64>,
    /// Add a sparse offset-index entry every this many bytes (Kafka `index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Skip every fsync. Benchmarks only: a crash can lose acknowledged data.
    pub unsafe_skip_fsync: bool,
    /// Zeros written ahead of the active segment's end, this many bytes at a time (0: none). An
    /// append then overwrites blocks the file already has, so its fdatasync writes the data and no
    /// metadata (no new size, no block allocation to journal). See `Segment::append`. None are
    /// written on file systems where they do not pay (`crate::file_system`), unless
    /// `zero_ahead_any_file_system`.
    pub zero_ahead_bytes: u64,
    /// Zeros ahead even on a file system where they do not pay (`crate::file_system`): they are
    /// correct anywhere, only slower there. For tests that check them wherever they run.
    pub zero_ahead_any_file_system: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes_max: 1024 * 1024 * 1024,
            segment_ms_max: Some(SEVEN_DAYS_MS),
            retention_bytes: None,
            retention_ms: Some(SEVEN_DAYS_MS),
            index_interval_bytes: 4096,
            unsafe_skip_fsync: false,
            zero_ahead_bytes: ZERO_AHEAD_BYTES_DEFAULT,
            zero_ahead_any_file_system: false,
        }
    }
}

impl LogConfig {
    /// The segment size limit actually enforced: positions in the index are `u32`.
    pub(crate) fn segment_bytes_effective(&self) -> u64 {
        self.segment_bytes_max.min(u64::from(u32::MAX))
    }
}
