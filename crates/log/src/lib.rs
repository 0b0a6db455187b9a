//! The durable segmented partition log of Once: Kafka v2 record batches stored back to back in
//! segment files, with sparse offset and time indexes, explicit fsync (group commit friendly),
//! crash recovery, and retention. Synchronous `std::fs` only; knows nothing of the network.
//!
//! The on-disk format and the crash-safety argument are in `docs/design/log-format.md`.
//!
//! # Layout
//!
//! - `batch`: the one module of the v2 batch format: header (`BatchHeader`), CRC32C, validation
//!   shared by append and recovery (`ValidBatch`), varints, records, control records, the encoder.
//! - `buffer_pool`: large buffers used again once what was read into them is dropped (fetch reads here,
//!   request frames in the broker).
//! - `config`: `LogConfig`, Kafka's segment/retention/index tunables.
//! - `error`: `LogError`, the crate's one error enum.
//! - `file_system`: the file systems on which zeros written ahead of the appends do not pay.
//! - `index`: per-segment sparse offset and time indexes, in memory and as checksummed files.
//! - `log`: `Log` itself: append, roll, sync (`SyncPlan` for fsync outside a lock), close, latch.
//! - `meta`: file names, small atomic metadata files (recovery point, log start offset,
//!   clean-shutdown marker), directory fsync.
//! - `read`: fetch by offset, ListOffsets by timestamp and max timestamp.
//! - `recovery`: `Log::open`: clean load or scan-and-truncate recovery.
//! - `retention`: deleting segments by time and size, advancing the log start offset.
//! - `segment`: one segment file: positional reads and writes, the validating recovery scan.
//! - `stats`: the process-wide fdatasync latency histogram (`once_fsync_seconds`).
//! - `testing`: builders of valid batches for tests (here and in other crates).

pub mod batch;
pub mod buffer_pool;
mod config;
mod error;
mod file_system;
pub mod give_way;
mod index;
mod log;
mod meta;
pub mod power_loss;
mod read;
mod recovery;
mod retention;
mod segment;
pub mod stats;
pub mod testing;

pub use crate::batch::{verify_crc, BatchHeader, ValidBatch, BATCH_HEADER_LEN, MAGIC_V2};
pub use crate::config::LogConfig;
pub use crate::error::LogError;
pub use crate::file_system::zeros_ahead_unsuited;
pub use crate::log::{AppendInfo, Log, RecoveryCheckpoint, RecoveryStats, SyncPlan};
pub use crate::read::{ReadPlan, TimestampPlan};
