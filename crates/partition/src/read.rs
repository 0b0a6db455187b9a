//! A fetch's read of a partition: the records, the end offsets as of the read, and for
//! read_committed the aborted transactions of the range, all under one hold of the log lock.
//!
//! One hold, because each half alone can disagree with the other: a high watermark read before the
//! records may be passed by them if taken separately; retention deletes segments and prunes their
//! aborted transactions under the same lock, so aborted entries taken after the read could be missing
//! for batches already read (the consumer would take aborted records for committed ones).

use std::sync::atomic::Ordering;

use crate::error::PartitionError;
use crate::partition::Partition;
use crate::txn::AbortedTxn;

/// Which records a fetch may see (Kafka's isolation_level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything below the high watermark (isolation_level 0).
    ReadUncommitted,
    /// Everything below the last stable offset, with the aborted transactions of the range, so the
    /// client drops their batches (isolation_level 1).
    ReadCommitted,
}

/// A partition's offsets at one moment, as a fetch reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOffsets {
    pub log_start_offset: u64,
    /// At most the high watermark.
    pub last_stable_offset: u64,
    pub high_watermark: u64,
}

impl EndOffsets {
    /// The offset reads of `isolation` stop below.
    pub fn upper_bound(&self, isolation: Isolation) -> u64 {
        match isolation {
            Isolation::ReadUncommitted => self.high_watermark,
            Isolation::ReadCommitted => self.last_stable_offset,
        }
    }
}

/// What [`Partition::read_fetch`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRead {
    /// Whole batches, as stored, every one below `end_offsets.upper_bound(isolation)`.
    pub records: Vec<u8>,
    /// The offsets the read was bounded by.
    pub end_offsets: EndOffsets,
    /// read_committed: the aborted transactions overlapping `records`, in first-offset order;
    /// `None` for read_uncommitted, which does not ask.
    pub aborted: Option<Vec<AbortedTxn>>,
}

impl Partition {
    /// The end offsets now. The last stable offset is read first: it never passes the high watermark
    /// read after it (the writer publishes it before raising the high watermark).
    pub fn end_offsets(&self) -> EndOffsets {
        let last_stable_offset = self.last_stable_offset();
        let high_watermark = self.high_watermark();
        assert!(
            last_stable_offset <= high_watermark,
            "the last stable offset {last_stable_offset} is at most the high watermark {high_watermark}"
        );
        EndOffsets {
            log_start_offset: self.shared.log_start_offset.load(Ordering::Acquire),
            last_stable_offset,
            high_watermark,
        }
    }

    /// A fetch's read: whole batches from `offset`, at most `max_bytes` (but at least one batch),
    /// below the high watermark or, for read_committed, the last stable offset, with the end offsets
    /// that bounded it and, for read_committed, the aborted transactions overlapping the batches; all
    /// under one hold of the log lock (see the module documentation). Blocking (file reads): call
    /// from a blocking context.
    pub fn read_fetch(&self, offset: u64, max_bytes: usize, isolation: Isolation) -> Result<FetchRead, PartitionError> {
        self.shared.with_log(|log| {
            // Under the lock, so the log start offset is the one the read sees (retention moves it
            // under the lock too).
            let end_offsets = self.end_offsets();
            let upper_bound = end_offsets.upper_bound(isolation);
            let (records, aborted) = match isolation {
                Isolation::ReadUncommitted => (log.read(offset, max_bytes, upper_bound)?, None),
                Isolation::ReadCommitted => {
                    let (records, aborted) = self.read_committed_held(log, offset, max_bytes, upper_bound)?;
                    (records, Some(aborted))
                }
            };
            Ok(FetchRead { records, end_offsets, aborted })
        })
    }
}
