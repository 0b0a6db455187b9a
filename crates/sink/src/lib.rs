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
//! - [`postgres`]: the PostgreSQL backend (`postgres://user:pass@host:port/db`).
//! - [`status`]: `once sink --status`, positions and lag per partition.
//! - [`hooks`]: test-only hooks (feature `test-hooks`).
//! - [`consumer`]: the group member that seeks from the database and applies batches ([`run`]).

pub mod batch;
pub mod consumer;
pub mod hooks;
pub mod params;
pub mod postgres;
pub mod record;
pub mod sqlite;
pub mod status;

pub use batch::{
    apply_batch, apply_batch_dead_lettering, apply_unfenced, Backend, Batch, BatchError, DbError, Effect, EffectError,
    Outcome, PartitionKey, PositionRow,
};
pub use consumer::{run, CommitOrder, Delivery, SinkError, SinkOptions, StoppedPartition, Summary};
pub use record::{Dedup, Record};

/// A database URL as `once sink` and `once outbox` take it: `sqlite://PATH` or `postgres://…`
/// (also `postgresql://…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseUrl<'a> {
    Sqlite(&'a std::path::Path),
    /// The whole URL, as the driver takes it.
    Postgres(&'a str),
}

impl<'a> DatabaseUrl<'a> {
    /// Parses `url`; the error says what is expected.
    pub fn parse(url: &'a str) -> Result<DatabaseUrl<'a>, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a path: sqlite://PATH".into());
            }
            Ok(DatabaseUrl::Sqlite(std::path::Path::new(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url))
        } else {
            Err(format!("database URL '{url}': expected sqlite://PATH or postgres://user:pass@host:port/db"))
        }
    }
}

/// Opens the database a URL names to read positions only, creating nothing (`--status`).
pub fn open_reader(url: &str) -> Result<Box<dyn Backend + Send>, DbError> {
    match DatabaseUrl::parse(url).map_err(DbError::Fatal)? {
        DatabaseUrl::Sqlite(path) if !path.exists() => {
            Err(DbError::Fatal(format!("no database at {}", path.display())))
        }
        DatabaseUrl::Sqlite(path) => Ok(Box::new(sqlite::SqliteBackend::open_read_only(path)?)),
        DatabaseUrl::Postgres(url) => Ok(Box::new(postgres::PostgresBackend::open_read_only(url)?)),
    }
}

/// Opens the backend a database URL names, with the `--sql` statements it will run per record.
pub fn open_backend(url: &str, sql: &[String]) -> Result<Box<dyn Backend + Send>, DbError> {
    match DatabaseUrl::parse(url).map_err(DbError::Fatal)? {
        DatabaseUrl::Sqlite(path) => Ok(Box::new(sqlite::SqliteBackend::open(path, sql)?)),
        DatabaseUrl::Postgres(url) => Ok(Box::new(postgres::PostgresBackend::open(url, sql)?)),
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/a.db"),
            Ok(DatabaseUrl::Sqlite(std::path::Path::new("/tmp/a.db")))
        );
        assert_eq!(DatabaseUrl::parse("postgres://u@h/db"), Ok(DatabaseUrl::Postgres("postgres://u@h/db")));
        assert_eq!(DatabaseUrl::parse("postgresql://u@h/db"), Ok(DatabaseUrl::Postgres("postgresql://u@h/db")));
        assert!(DatabaseUrl::parse("sqlite://").is_err(), "a path is needed");
        assert!(DatabaseUrl::parse("mysql://h/db").is_err());
    }
}
