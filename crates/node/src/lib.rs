//! The Once node: the broker's state and operations, with no protocol types in its API. Every edge
//! (today the Kafka edge, `once-broker`) translates its requests into calls on a [`Node`] and the
//! node's typed errors into its own codes.
//!
//! # Layout
//! - [`node`] — [`Node`]: opening the data directory (identity, topics, producer ids, coordinators),
//!   closing it cleanly, and the advertised endpoint.
//! - [`config`] — [`NodeConfig`], everything `once serve` can be told.
//! - [`topics`] — the topic registry, persisted beside the partition logs.
//! - [`topic_config`] — topic-level configuration keys, defaults and validation.
//! - [`producer_ids`] — producer ids unique across restarts, reserved in durable blocks.
//! - [`transactions`] — transactional appends and offset commits verified against the coordinator.
//! - [`markers`] — delivery of the transaction coordinator's markers to partitions and groups.
//! - [`upkeep`] — the background tasks the registry owns: retention and dedup index upkeep.
//! - [`stats`] — the dedup counters, for metrics and logs.
//! - [`acls`] — [`acls::Authorizer`], the one access policy every edge consults: on/off, super
//!   users, the ACLs durable in `<data>/acls.json`.
//! - [`error`] — the errors of the node's own operations.

#![forbid(unsafe_code)]

pub mod acls;
pub mod config;
pub mod error;
pub mod fetch_memory;
pub mod listeners;
pub mod markers;
pub mod node;
pub mod producer_ids;
pub mod stats;
pub mod storage;
pub mod topic_config;
pub mod topics;
pub mod transactions;
pub mod upkeep;

pub use acls::{Authorizer, Session};
pub use config::NodeConfig;
pub use error::{TxnAppendError, TxnOffsetCommitError};
pub use node::{BrokerIdentity, Endpoint, Node};
pub use topics::{Topic, TopicError, TopicRegistry};
