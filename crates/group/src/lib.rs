//! The Once group coordinator: the classic Kafka consumer-group protocol (join, sync, heartbeat,
//! leave, static membership) and committed offsets made durable in an internal log, including offsets
//! committed inside transactions (TxnOffsetCommit, pending until the transaction's marker).
//!
//! Assignment stays with the clients: the coordinator picks a protocol every member supports, hands
//! the leader every member's metadata, and distributes the leader's assignment. Offsets are
//! acknowledged only after the internal log has fsynced them, and replayed from it on start.
//!
//! # Layout
//! - [`coordinator`] — [`GroupCoordinator`], the entry point: request routing, the lock, the timer.
//! - [`group`] — one group's state and the transitions shared by handlers and timer.
//! - [`membership`] — the join/sync/heartbeat/leave state machine.
//! - [`api_membership`], [`api_offsets`], [`api_admin`]: wire requests to state calls to wire responses.
//! - `api_transactions`: TxnOffsetCommit and transaction completion, called by the broker directly.
//! - [`transactions`] — pending transactional offsets and the log-order rules of their commit or abort.
//! - [`store`] — the offsets log (an internal partition), its streaming replay and its compaction.
//! - [`compaction`] — the compaction decision, the crash-safe swap of a rewritten log, and its repair.
//! - `load`: the coordinator's state at open: replay into memory, then compact if mostly dead.
//! - [`records`] — the key and value layout of offsets-log records.
//! - [`subscription`] — the consumer protocol's embedded subscription and assignment formats.
//! - [`config`] — [`GroupConfig`], limits and timeouts.
//! - [`error`] — [`GroupError`] and the one mapping to Kafka error codes.
//!
//! The offsets log is compacted by rewrite at open when it is large and mostly dead records
//! (`docs/design/offsets-log.md`); between starts it grows with every commit.

#![forbid(unsafe_code)]

pub mod api_admin;
pub mod api_membership;
pub mod api_offsets;
mod api_transactions;
pub mod compaction;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod group;
mod load;
pub mod membership;
pub mod records;
pub mod store;
pub mod subscription;
pub mod transactions;

pub use config::{CoordinatorNode, GroupConfig};
pub use coordinator::{GroupCoordinator, RequestContext};
pub use error::GroupError;
