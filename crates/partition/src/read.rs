//! A fetch's read of a partition: the records, the end offsets as of the read, and for
//! read_committed the aborted transactions of the range.
//!
//! Readers never hold the log lock while they wait for the disk: the writer appends under that lock,
//! and a catch-up consumer's cold read of tens of megabytes would stall every producer of the
//! partition behind it. A read is planned under the lock (the end offsets, then which segments and
//! how far: `once_log::ReadPlan`, no file I/O) and done after releasing it. Why the halves still agree:
//! - The records are bounded by the end offsets taken in the same hold, so a response never holds
//!   records above the high watermark (or last stable offset) it reports.
//! - The planned bytes never change: the log only appends past a segment's planned size, and the plan's
//!   open file handles keep a segment readable even if retention deletes it meanwhile.
//! - read_committed's aborted transactions are taken after the read, under the producer-state lock
//!   only, and only if the log start offset is still at or below the read's offset: retention
//!   publishes the new log start and then, under that lock, prunes only aborted transactions that end
//!   below it, so none overlapping the records can be missing (a
//!   consumer would take their aborted records for committed ones). Every transaction that overlaps
//!   the records had ended when they were planned (they lie below the last stable offset), so the list
//!   cannot lack one either. If retention did pass the offset, the read is done again, and fails as
//!   out of range like any read below the log start.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::error::PartitionError;
use crate::partition::{end_of_batches, Partition};
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
    /// Whole batches, as stored, every one below `end_offsets.upper_bound(isolation)`; a read the plan
    /// bounded at 4 MiB or more is in a buffer that goes back to the log's pool when the last slice of it
    /// is dropped (`ReadPlan::execute_shared`).
    pub records: Bytes,
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
    /// that bounded it and, for read_committed, the aborted transactions overlapping the batches. The
    /// file reads are made without the log lock (see the module documentation). Blocking (file reads):
    /// call from a blocking context.
    pub fn read_fetch(&self, offset: u64, max_bytes: usize, isolation: Isolation) -> Result<FetchRead, PartitionError> {
        self.read_unlocked(offset, max_bytes, isolation, true, |end_offsets| end_offsets.upper_bound(isolation))
    }

    /// [`Partition::read_fetch`] with the upper bound chosen by `bound` from the end offsets under the
    /// lock (at most the high watermark); `pooled`: a large read's buffer comes from the log's pool
    /// (for records handed to a response, not kept).
    pub(crate) fn read_unlocked(
        &self,
        offset: u64,
        max_bytes: usize,
        isolation: Isolation,
        pooled: bool,
        bound: impl Fn(&EndOffsets) -> u64,
    ) -> Result<FetchRead, PartitionError> {
        // At most twice: a second time only if retention passed `offset` during the first, and then
        // the plan fails as out of range.
        for _attempt in 0..2 {
            let (plan, end_offsets) = self.shared.with_log(|log| {
                // Under the lock, so the log start offset is the one the plan sees (retention moves it
                // under the lock too).
                let end_offsets = self.end_offsets();
                let asked = bound(&end_offsets);
                debug_assert!(asked <= end_offsets.high_watermark, "reads stay below the high watermark");
                let upper_bound = asked.min(end_offsets.high_watermark);
                Ok((log.plan_read(offset, max_bytes, upper_bound)?, end_offsets))
            })?;
            let records = match pooled {
                true => plan.execute_shared()?,
                false => Bytes::from(plan.execute()?),
            };
            let aborted = match isolation {
                Isolation::ReadUncommitted => None,
                Isolation::ReadCommitted if records.is_empty() => Some(Vec::new()),
                Isolation::ReadCommitted => match self.aborted_for(offset, &records)? {
                    Some(aborted) => Some(aborted),
                    None => continue,
                },
            };
            return Ok(FetchRead { records, end_offsets, aborted });
        }
        unreachable!("a read retried after retention passed its offset fails as out of range")
    }

    /// The aborted transactions overlapping `records` (read from `offset`), or `None` if retention has
    /// moved the log start past `offset` since they were planned (some may have been pruned).
    fn aborted_for(&self, offset: u64, records: &[u8]) -> Result<Option<Vec<AbortedTxn>>, PartitionError> {
        let end = end_of_batches(offset, records)?;
        assert!(end > offset, "records end past their first offset");
        // Retention publishes the new log start before it prunes under the producer-state lock, so a
        // log start read under that lock at or below `offset` means nothing overlapping was pruned.
        let producers = self.shared.lock_producers();
        if self.shared.log_start_offset.load(Ordering::Acquire) > offset {
            return Ok(None);
        }
        Ok(Some(producers.transactions().aborted_overlapping(offset, end)))
    }
}
