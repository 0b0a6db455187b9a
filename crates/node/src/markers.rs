//! Marker delivery: where the transaction coordinator's markers go — topic partitions, and the offsets
//! log of groups — and what a refusal means to the coordinator (abandon or retry).
//!
//! [`Markers`] holds the topic registry and the group coordinator themselves, not the node: the
//! coordinator that calls it is part of the node, and a handle back up to its owner would be a cycle.

use std::sync::Arc;

use once_group::{GroupCoordinator, GroupError};
use once_partition::{PartitionError, TxnMarker};
use once_txn::{BoxFuture, MarkerError, MarkerWriter};

use crate::topics::TopicRegistry;

/// The [`MarkerWriter`] the node gives its transaction coordinator.
pub struct Markers {
    topics: Arc<TopicRegistry>,
    groups: Arc<GroupCoordinator>,
}

impl Markers {
    pub fn new(topics: Arc<TopicRegistry>, groups: Arc<GroupCoordinator>) -> Markers {
        Markers { topics, groups }
    }
}

impl MarkerWriter for Markers {
    fn write_partition_marker(
        &self,
        topic: &str,
        partition: i32,
        marker: TxnMarker,
    ) -> BoxFuture<Result<(), MarkerError>> {
        let target = self.topics.get(topic).and_then(|topic| topic.partition(partition));
        let name = format!("{topic}-{partition}");
        Box::pin(async move {
            // A deleted topic has nothing left to end.
            let Some(partition) = target else { return Ok(()) };
            let producer_id = marker.producer_id;
            partition.write_marker(marker).await.map(|_| ()).map_err(|error| {
                partition_marker_error(&name, error, || {
                    partition.producers().iter().any(|producer| {
                        producer.producer_id == producer_id && producer.current_txn_start_offset.is_some()
                    })
                })
            })
        })
    }

    fn write_group_marker(&self, group: &str, marker: TxnMarker) -> BoxFuture<Result<(), MarkerError>> {
        let groups = self.groups.clone();
        let group = group.to_string();
        Box::pin(async move {
            groups.complete_transaction(&group, marker).await.map_err(|error| group_marker_error(&group, error))
        })
    }
}

/// What a partition's refusal of one of the coordinator's markers means to the coordinator.
/// `open_transaction` asks the partition whether the marker's producer has a transaction open there.
///
/// Only a producer-fenced refusal with nothing of the producer open is abandoned
/// ([`MarkerError::Fenced`]): a higher producer epoch at the partition comes from a marker (which
/// closed the producer's transaction there) or from a verified batch at that epoch, impossible while
/// the coordinator holds the transactional id in Prepare*; so nothing is left for this marker to end.
/// With a transaction still open, abandoning would leave it holding the last stable offset forever:
/// retried instead, with a warning. A coordinator-fenced refusal means the partition holds a
/// coordinator epoch above Once's own, which WriteTxnMarkers no longer accepts (only data written
/// before that rule can hold one); abandoning would pin the last stable offset too: retried.
fn partition_marker_error(name: &str, error: PartitionError, open_transaction: impl FnOnce() -> bool) -> MarkerError {
    let reason = format!("{name}: {error}");
    match error {
        PartitionError::ProducerFenced { .. } if !open_transaction() => MarkerError::Fenced(reason),
        PartitionError::ProducerFenced { .. } => {
            tracing::warn!(partition = name, %error, "marker refused as fenced while the producer still has a \
                transaction open there; retrying it");
            MarkerError::Failed(format!("{reason} (the producer's transaction is still open there)"))
        }
        PartitionError::CoordinatorFenced { .. } => {
            tracing::warn!(partition = name, %error, "marker refused: the partition holds a coordinator epoch \
                above this coordinator's, written before such markers were refused; retrying it");
            MarkerError::Failed(reason)
        }
        PartitionError::Log(_)
        | PartitionError::Storage(_)
        | PartitionError::Closed(_)
        | PartitionError::Busy(_)
        | PartitionError::MarkerQueueTimeout { .. }
        | PartitionError::OutOfOrderSequence { .. }
        | PartitionError::InvalidTxnState(_)
        | PartitionError::DedupPending(_)
        | PartitionError::DedupIndexFull(_) => MarkerError::Failed(reason),
    }
}

/// What a group's refusal of one of the coordinator's markers means to the coordinator: always a
/// failure to retry, never abandoned. An abandoned abort would leave the producer's pending offsets
/// pending in the group, and the producer's next commit marker would commit them
/// (`once_group` applies every pending offset of the producer at a commit marker).
fn group_marker_error(group: &str, error: GroupError) -> MarkerError {
    MarkerError::Failed(format!("group {group}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fenced(error: &MarkerError) -> bool {
        matches!(error, MarkerError::Fenced(_))
    }

    /// Issue 13 review, items 1 and 3: a partition's refusal is abandoned (Fenced) only when the
    /// producer is fenced there and has no transaction open there; everything else is retried.
    #[test]
    fn a_partition_refusal_is_abandoned_only_when_nothing_is_left_open() {
        let producer_fenced = || PartitionError::ProducerFenced { current_epoch: 3 };
        let closed = partition_marker_error("t-0", producer_fenced(), || false);
        assert!(fenced(&closed), "a newer epoch and no open transaction: abandoned, got {closed:?}");
        let open = partition_marker_error("t-0", producer_fenced(), || true);
        assert!(!fenced(&open), "the producer still has a transaction open there: retried, got {open:?}");
        assert!(open.to_string().contains("t-0"), "the reason names the partition: {open}");
        let coordinator =
            partition_marker_error("t-0", PartitionError::CoordinatorFenced { marker: 0, current: 7 }, || false);
        assert!(!fenced(&coordinator), "a coordinator epoch above Once's own: retried, got {coordinator:?}");
        let busy = partition_marker_error("t-0", PartitionError::Busy("t-0".into()), || false);
        assert!(!fenced(&busy), "a full queue: retried, got {busy:?}");
    }

    /// Issue 13 review, item 4: a group's refusal is never abandoned. An abandoned abort marker
    /// leaves the producer's pending offsets pending, and a later commit marker would commit them.
    #[test]
    fn a_group_refusal_is_never_abandoned() {
        for error in [
            GroupError::ProducerFenced { current_epoch: 3 },
            GroupError::TransactionCoordinatorFenced { marker: 0, current: 7 },
            GroupError::CoordinatorNotAvailable,
            GroupError::Storage("disk".into()),
        ] {
            let mapped = group_marker_error("billing", error.clone());
            assert!(!fenced(&mapped), "{error:?} is retried, got {mapped:?}");
            assert!(mapped.to_string().contains("group billing"), "the reason names the group: {mapped}");
        }
    }
}
