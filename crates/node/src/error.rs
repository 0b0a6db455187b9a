//! Errors of the node's own operations. They say what was refused, in the node's terms; the edges
//! turn them into their protocol's codes (the Kafka edge in `once-broker`'s `errors` module).

use once_txn::TxnError;

/// Why a transactional batch was not queued (see [`crate::Node::append_transactional`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnAppendError {
    /// The request carried a transactional batch without a transactional id.
    #[error("a transactional batch needs the request's transactional id")]
    MissingTransactionalId,
    /// The producer owns the ongoing transaction, but did not add this partition to it.
    #[error("partition {topic}-{partition} was not added to the transaction (AddPartitionsToTxn)")]
    PartitionNotInTransaction { topic: String, partition: i32 },
    /// The transaction coordinator refused the producer (fenced, unknown id, not ongoing, closing).
    #[error(transparent)]
    Txn(#[from] TxnError),
}

/// Why transactional offsets may not be committed (see [`crate::Node::txn_offset_commit`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnOffsetCommitError {
    /// The producer owns the ongoing transaction, but did not add the group to it (AddOffsetsToTxn).
    #[error("group '{0}' was not added to the transaction (AddOffsetsToTxn)")]
    GroupNotInTransaction(String),
    /// The transaction coordinator refused the producer.
    #[error(transparent)]
    Txn(#[from] TxnError),
}
