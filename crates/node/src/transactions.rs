//! The node's transactional operations: what needs both the transaction coordinator and the data it
//! guards, so that no edge orchestrates them itself.

use std::future::Future;

use once_group::{TopicOutcomes, TxnOffsetCommit};
use once_log::ValidBatch;
use once_partition::{Appended, Partition, PartitionError};
use once_txn::VerifiedTxn;

use crate::error::{TxnAppendError, TxnOffsetCommitError};
use crate::node::Node;

impl Node {
    /// Queues a transactional batch after verifying with the coordinator that its producer owns the
    /// ongoing transaction of `transactional_id` and added this partition to it (KIP-890 part 1). The
    /// append is queued while the transaction cannot change, so it reaches the partition before any
    /// marker ending the transaction; the future resolves once the batch is durable.
    pub fn append_transactional(
        &self,
        transactional_id: Option<&str>,
        partition: &Partition,
        batch: ValidBatch,
    ) -> Result<impl Future<Output = Result<Appended, PartitionError>> + Send + 'static, TxnAppendError> {
        let Some(transactional_id) = transactional_id.filter(|id| !id.is_empty()) else {
            return Err(TxnAppendError::MissingTransactionalId);
        };
        let id = partition.id();
        let (producer_id, producer_epoch) = (batch.header().producer_id, batch.header().producer_epoch);
        let queued = self.txns.with_verified(transactional_id, producer_id, producer_epoch, |txn| {
            // Under the transaction's lock: nothing done ahead (`Partition::append_valid_in_round`).
            txn.partitions.contains(&(id.topic.clone(), id.partition)).then(|| partition.append_valid_in_round(batch))
        })?;
        queued.ok_or_else(|| TxnAppendError::PartitionNotInTransaction {
            topic: id.topic.clone(),
            partition: id.partition,
        })
    }

    /// TxnOffsetCommit: commits `commit`'s offsets as part of the ongoing transaction of
    /// `transactional_id`, after verifying that the commit's producer owns that transaction and added
    /// the group to it (AddOffsetsToTxn). The group coordinator writes the offsets while the
    /// transaction stays locked, so they are in the offsets log before any marker of the transaction;
    /// they stay pending until the coordinator's marker commits or aborts them.
    ///
    /// A refused verification writes nothing and is the `Err`; past it, each partition has its own
    /// outcome from the group coordinator (member checks, metadata size, the offsets log's write).
    pub async fn txn_offset_commit(
        &self,
        transactional_id: &str,
        commit: TxnOffsetCommit,
    ) -> Result<TopicOutcomes, TxnOffsetCommitError> {
        let verified = self
            .verify_txn_offset_commit(transactional_id, commit.producer_id, commit.producer_epoch, &commit.group_id)
            .await?;
        let outcomes = self.groups.txn_offset_commit(commit).await;
        // Only now may the transaction end: its markers come after these offsets.
        drop(verified);
        Ok(outcomes)
    }

    /// Verifies that `producer_id`/`producer_epoch` own the ongoing transaction of `transactional_id`
    /// and added `group` to it, and returns the transaction locked.
    async fn verify_txn_offset_commit(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
    ) -> Result<VerifiedTxn, TxnOffsetCommitError> {
        let verified = self.txns.lock_verified(transactional_id, producer_id, producer_epoch).await?;
        if !verified.has_group(group) {
            return Err(TxnOffsetCommitError::GroupNotInTransaction(group.to_string()));
        }
        Ok(verified)
    }
}
