//! The `once` command's pieces, as a library so integration tests can reuse the admin client.
//!
//! # Layout
//! - [`serve`] — `once serve`, with configuration from flags, `ONCE_*` variables and `once.toml`.
//! - [`admin`] — a small blocking Kafka client over `kafka-protocol`, and `once topic …`.
//! - [`admin_transport`] — the admin client's connection: TCP, TLS (rustls), its certificate checks.
//! - [`client_settings`] — `--command-config FILE` and `-X KEY=VALUE`, the Kafka client settings
//!   every client command takes; all of them for librdkafka, the security ones for the admin client.
//! - [`users`] — `once user …`: SCRAM users over KIP-554, salted passwords made on the client.
//! - [`clients`] — `once produce` and `once consume`, on librdkafka.
//! - [`groups`] — `once group …`: list, describe with lag, reset offsets, delete.
//! - [`copy`] — `once copy`: a transactional consume-transform-produce copier, on librdkafka.
//! - [`dedup_processor`] — `once dedup`: message-id dedup as a stream processor over any cluster.
//! - [`sink`] — `once sink`: records' effects into PostgreSQL or SQLite exactly once (`once-sink`).
//! - [`outbox`] — `once outbox`: a database's outbox table into topics, each row once (`once-outbox`).
//! - [`logging`] — logs on stderr that never stop the process: unwritable lines dropped and counted.
//! - [`worker`] — logging and SIGTERM handling shared by `once sink` and `once outbox`.
//! - [`txn`] — `once txn …`: list, describe and abort transactions.
//! - `alloc` (in the binary, `src/main.rs`, not this library) — the process allocator: huge
//!   allocations reserved lazily, so a forged array count in a request fails its decode.

pub mod acls;
pub mod admin;
pub mod admin_transport;
pub mod client_settings;
pub mod clients;
pub mod copy;
pub mod dedup_processor;
pub mod groups;
pub mod logging;
pub mod outbox;
pub mod serve;
pub mod sink;
pub mod txn;
pub mod users;
pub mod worker;
