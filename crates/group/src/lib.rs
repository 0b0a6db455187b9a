//! The Once group coordinator: the classic Kafka consumer-group protocol (join, sync, heartbeat,
//! leave, static membership) and committed offsets made durable in an internal log, including offsets
//! committed inside transactions (TxnOffsetCommit, pending until the transaction's marker).
//!
//! Assignment stays with the clients: the coordinator picks a protocol every member supports, hands
//! the leader every member's metadata, and distributes the leader's assignment. Offsets are
//! acknowledged only after the internal log has fsynced them, and replayed from it on start.
//!
//! # Layout
//! - [`coordinator`] — [`GroupCoordinator`], the entry point: the lock, the offsets writes, the timer.
//! - [`group`] — one group's state and the transitions shared by handlers and timer.
//! - [`membership`] — the join/sync/heartbeat/leave state machine.
//! - [`api_membership`], [`api_offsets`], [`api_admin`], [`api_transactions`]: the coordinator's
//!   operations (join, sync, heartbeat, leave; commit, fetch and delete offsets; list, describe and
//!   delete groups; TxnOffsetCommit and transaction completion) on plain types of this crate, each
//!   returning its own result type or [`GroupError`]. No Kafka message types: the Kafka edge
//!   (`once-broker`) translates requests and responses, and reads the consumer protocol's embedded
//!   subscription format.
//! - [`transactions`] — pending transactional offsets and the log-order rules of their commit or abort.
//! - [`store`] — the offsets log (an internal partition), its streaming replay and its compaction.
//! - [`compaction`] — the compaction decision, the crash-safe swap of a rewritten log, and its repair.
//! - `load`: the coordinator's state at open: replay into memory, then compact if mostly dead.
//! - [`records`] — the key and value layout of offsets-log records.
//! - [`config`] — [`GroupConfig`], limits and timeouts.
//! - [`error`] — [`GroupError`]; the edge maps it to Kafka error codes.
//!
//! The offsets log is compacted by rewrite at open when it is large and mostly dead records
//! (`docs/design/offsets-log.md`); between starts it grows with every commit.

#![forbid(unsafe_code)]

pub mod api_admin;
pub mod api_membership;
pub mod api_offsets;
pub mod api_transactions;
pub mod compaction;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod group;
mod load;
pub mod membership;
pub mod records;
pub mod store;
pub mod transactions;

pub use api_admin::{GroupDescription, ListedGroup, MemberDescription};
pub use api_offsets::{
    CommitMember, FetchedOffset, GroupOffsets, OffsetCommit, PartitionOffset, SubscriptionTopics, TopicOffsets,
    TopicOutcomes, WantedOffsets,
};
pub use api_transactions::TxnOffsetCommit;
pub use config::{CoordinatorNode, GroupConfig};
pub use coordinator::{GroupCoordinator, RequestContext};
pub use error::GroupError;
pub use group::{GroupState, JoinSuccess, JoinedMember, SyncSuccess};
pub use membership::{JoinRequest, SyncRequest};
