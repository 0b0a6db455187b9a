//! Kafka request handlers, translation only: each turns a Kafka request into calls on the node
//! (`once_node`) or its coordinators and partitions, and their outcomes into the Kafka response. State
//! and decisions live below the edge; typed errors become Kafka codes in one place, [`crate::errors`].
//!
//! # Layout
//! - [`api_versions`] — ApiVersions, including the KIP-511 fallback.
//! - [`metadata`] — Metadata, with topic auto-creation.
//! - [`produce`] — Produce: validation, durable append, per-partition results.
//! - [`producer`] — InitProducerId for idempotent producers.
//! - [`fetch`] — Fetch with long polling.
//! - [`list_offsets`] — ListOffsets by earliest, latest, max timestamp and timestamp.
//! - [`acls`] — CreateAcls, DescribeAcls, DeleteAcls over the node's authorizer.
//! - [`admin`] — CreateTopics, DeleteTopics, CreatePartitions.
//! - [`configs`] — DescribeConfigs, AlterConfigs, IncrementalAlterConfigs.
//! - [`cluster`] — DescribeCluster.
//! - [`group`] — the group APIs: membership, offsets, group admin, TxnOffsetCommit's translation.
//! - [`users`] — Describe/AlterUserScramCredentials (KIP-554) over the node's credential store.

pub mod acls;
pub mod admin;
pub mod api_versions;
pub mod cluster;
pub mod configs;
pub mod fetch;
pub mod group;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod producer;
pub mod txn;
pub mod users;

use kafka_protocol::protocol::StrBytes;

pub(crate) fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}
