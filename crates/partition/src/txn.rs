//! Transactions as a partition sees them: markers that end a producer's transaction, the aborted
//! transactions a read_committed consumer must skip, and what DescribeProducers reports.
//!
//! A transactional batch opens a transaction for its producer at its base offset (if none is open);
//! a marker (a control batch of one record) closes it. The last stable offset (LSO) is the first
//! offset of the earliest open transaction, capped at the high watermark.

/// A transaction marker: the control batch the coordinator writes to end a producer's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Markers from an older coordinator epoch than one already seen for the producer are refused.
    pub coordinator_epoch: i32,
    /// Commit (true) or abort (false).
    pub commit: bool,
}

/// An aborted transaction: read_committed consumers drop the producer's batches from
/// `first_offset` up to the abort marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    /// Offset of the abort marker.
    pub last_offset: u64,
}

/// One producer's state, as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 when no data batch is remembered.
    pub last_sequence: i32,
    /// -1 when unknown.
    pub last_timestamp: i64,
    /// -1 when no marker was seen.
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction.
    pub current_txn_start_offset: Option<u64>,
}
