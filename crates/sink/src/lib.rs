//! `once-sink`: apply each Kafka record's effect to PostgreSQL or SQLite exactly once, with the
//! partition's position in the same database transaction. docs/design/sink.md argues why it is
//! exactly once under crashes, rebalances and zombies.
//!
//! # Layout
//! - [`params`]: the `:name` parameters of `--sql` statements, translated to `$n` / `?n`.
//! - [`record`]: a record, what each parameter binds to, message ids and idempotency keys.
//! - [`batch`]: the [`Backend`](batch::Backend) trait and [`apply_batch`](batch::apply_batch),
//!   the fenced one-transaction-per-batch protocol.
//! - [`sqlite`]: the SQLite backend (`sqlite://PATH`).

pub mod batch;
pub mod params;
pub mod record;
pub mod sqlite;

pub use batch::{apply_batch, Backend, Batch, BatchError, DbError, Outcome, PartitionKey};
pub use record::{Dedup, Record};
