//! The Once broker: topics, Kafka request handlers and the TCP server.
//!
//! # Layout
//! - [`config`] — [`BrokerConfig`], everything `once serve` can be told.
//! - [`broker`] — [`Broker`], the state every connection shares, and request dispatch.
//! - [`topics`] — the topic registry, persisted beside the partition logs.
//! - [`topic_config`] — topic-level configuration keys, defaults and validation.
//! - [`handlers`] — one module per group of Kafka APIs, each turning a request into a response.
//! - [`producer_ids`] — producer ids unique across restarts, reserved in durable blocks.
//! - [`errors`] — the one place where errors become Kafka error codes.
//! - [`metrics`] — the Prometheus text endpoint and the dedup counters (also logged).
//! - [`server`] — the listener, one task per connection, in-order responses, graceful shutdown,
//!   and the background loops (retention, dedup index upkeep).

#![forbid(unsafe_code)]

pub mod broker;
pub mod config;
pub mod errors;
pub mod handlers;
pub mod metrics;
pub mod producer_ids;
pub mod server;
pub mod topic_config;
pub mod topics;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use server::Server;
