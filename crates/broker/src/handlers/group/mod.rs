//! The group APIs at the Kafka edge, translation only: each handler turns a Kafka request into a call of the group
//! coordinator's protocol-free operations (`once_group`) and its outcome into the Kafka response. The
//! codec refuses fields a version lacks, so each response sets only what its version carries. The
//! handlers take the coordinator, not the node, so they can be tested without one.
//!
//! # Layout
//! - [`membership`] — FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
//! - [`offsets`] — OffsetCommit, OffsetFetch, OffsetDelete.
//! - [`admin`] — ListGroups, DescribeGroups, DeleteGroups.
//! - [`txn_offsets`] — TxnOffsetCommit's translation (the handler is `handlers::txn`'s; the node checks
//!   the transaction).
//! - [`subscription`] — the consumer protocol's embedded subscription format, read for OffsetDelete.

pub mod admin;
pub mod membership;
pub mod offsets;
pub mod txn_offsets;

use once_group::{GroupError, PartitionOffset, TopicOffsets};

use crate::errors::group_error_code;

/// The Kafka error code of an outcome: 0 for success.
pub(crate) fn code_of<T>(outcome: &Result<T, GroupError>) -> i16 {
    outcome.as_ref().err().map(|error| group_error_code(error).code()).unwrap_or(0)
}

/// The offsets of one request topic, as the coordinator takes them (OffsetCommit, TxnOffsetCommit).
pub(crate) fn topic_offsets(
    topic: String,
    partitions: impl IntoIterator<Item = (i32, i64, i32, Option<String>)>,
) -> TopicOffsets {
    let partitions = partitions
        .into_iter()
        .map(|(partition, offset, leader_epoch, metadata)| PartitionOffset {
            partition,
            offset,
            leader_epoch,
            metadata,
        })
        .collect();
    TopicOffsets { topic, partitions }
}
