//! Partition state for Once: the single writer of a partition's log, group commit, the high watermark
//! and the waiters of long-polling fetches.
//!
//! A partition's log has exactly one writer: a loop that takes every append request queued since its
//! last round, writes them, and covers them all with one fdatasync before any of them is answered
//! (group commit). The high watermark is the end of what is durable: consumers never see a record
//! that a crash could take back. Beside the log live the producer state (idempotence), the open and
//! aborted transactions, and the last stable offset below which read_committed consumers read
//! (`docs/design/producer-state.md`), and for topics that deduplicate, the topic's message-id index
//! (`docs/design/dedup.md`).
//!
//! # Layout
//! - [`partition`] — [`Partition`], the handle the broker holds; reads, offsets, retention, config.
//! - [`read`] — a fetch's read: planned under the log lock, done after it; records, end offsets and
//!   aborted transactions that agree.
//! - [`writer`] — the writer loop and its group commit.
//! - [`producer_state`] — producer state, the pure checks of batches and markers, and the one
//!   function by which every stored batch changes the state.
//! - `replay`: what a stored batch means to producer state, and rebuilding it at open (snapshot,
//!   then the log after it).
//! - `snapshot`: producer-state snapshot files, so restarts replay only the log's tail.
//! - [`dedup`] — [`TopicDedup`], a topic's message-id index shared by its partitions' writers:
//!   the writer's reserve / filter / confirm steps, the rebuild from snapshot and logs (`dedup::replay`), expiry and
//!   snapshots (`docs/design/dedup.md`).
//! - [`txn`] — transaction markers (their control batch), open and aborted transactions, producer
//!   summaries.
//! - [`error`] — the partition errors, [`PartitionError`].

#![forbid(unsafe_code)]

pub mod dedup;
pub mod error;
pub mod partition;
pub mod producer_state;
pub mod read;
mod replay;
mod snapshot;
pub mod txn;
mod writer;

pub use dedup::{DedupStats, TopicDedup, DEDUP_MEMORY_BYTES_DEFAULT};
pub use error::PartitionError;
pub use once_dedup::{DedupSource, DedupWindow};
pub use once_log::{AppendInfo, LogConfig};
pub use partition::{Appended, OffsetAnswer, Partition, PartitionId};
pub use read::{EndOffsets, FetchRead, Isolation};
pub use txn::{AbortedTxn, ProducerSummary, TxnMarker};
pub use writer::GROUP_COMMIT;
