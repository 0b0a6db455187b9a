//! The SQLite backend: `sqlite://PATH`.
//!
//! `BEGIN IMMEDIATE` takes the database's write lock when the batch starts, so "lock the
//! partition's row" is implied: no other writer (another sink process, a zombie) can read the
//! position and write between this one's compare and commit. Journal mode WAL with
//! `synchronous=FULL`: a committed batch survives power loss, and a process killed mid-batch leaves
//! a WAL whose uncommitted frames the next opener ignores.
//!
//! Effects are the `--sql` statements ([`SqliteBackend::open`]) or a library user's handler
//! ([`SqliteBackend::with_effects`]), which gets the connection inside the batch's transaction.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode};

use crate::batch::{positions_sql, Backend, DbError, Effect, EffectError, PartitionKey, PositionRow};
use crate::params::{translate, Dialect, Translated};
use crate::record::{Bound, Record};

/// How long a writer waits for another's write lock before the batch is retried.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS once_sink_offsets (
    sink TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (sink, topic, "partition")
);
CREATE TABLE IF NOT EXISTS once_sink_inbox (
    sink TEXT NOT NULL,
    message_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY (sink, message_id)
);
CREATE TABLE IF NOT EXISTS once_sink_dead_letters (
    sink TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    timestamp_ms INTEGER,
    key BLOB,
    value BLOB,
    headers TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (sink, topic, "partition", "offset")
);
"#;

/// A library user's effects: called once per batch, inside its transaction, with the records to
/// apply. Must not commit or roll back; report a record that cannot be applied as
/// [`EffectError::Poison`] with its offset.
pub type SqliteEffects = Box<dyn FnMut(&Connection, &[Effect<'_>]) -> Result<(), EffectError> + Send>;

enum Effects {
    Sql(Vec<Translated>),
    Handler(SqliteEffects),
}

pub struct SqliteBackend {
    connection: Connection,
    effects: Effects,
}

/// Lock contention and I/O trouble pass; anything else will fail again.
pub fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure | ErrorCode::DiskFull)
    )
}

/// Whether `error` is about one record's data — a constraint (CHECK, NOT NULL, UNIQUE, foreign
/// key), a type mismatch, a value too big or out of range, or a value that could not be bound —
/// rather than something every record would meet (a missing table, a read-only database).
pub fn is_data_error(error: &rusqlite::Error) -> bool {
    match error.sqlite_error_code() {
        Some(code) => matches!(code, ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig),
        None => {
            matches!(error, rusqlite::Error::ToSqlConversionFailure(_) | rusqlite::Error::IntegralValueOutOfRange(..))
        }
    }
}

/// A protocol step's error: transient, or fatal.
fn step(error: rusqlite::Error) -> DbError {
    if is_transient(&error) {
        DbError::Transient(error.to_string())
    } else {
        DbError::Fatal(error.to_string())
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn to_sql(bound: Bound<'_>) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match bound {
        Bound::Null => ValueRef::Null,
        Bound::Bytes(bytes) => ValueRef::Blob(bytes),
        Bound::Text(text) => ValueRef::Text(text.as_bytes()),
        Bound::Int(value) => ValueRef::Integer(value),
    })
}

impl SqliteBackend {
    /// Opens (creating) the database at `path`, creates the sink's tables, and checks that every
    /// statement translates and prepares, so a typo stops the sink before it reads anything.
    pub fn open(path: &Path, sql: &[String]) -> Result<SqliteBackend, DbError> {
        let connection = Self::connect(path)?;
        let mut statements = Vec::with_capacity(sql.len());
        for text in sql {
            let translated =
                translate(text, Dialect::Sqlite).map_err(|error| DbError::Fatal(format!("--sql '{text}': {error}")))?;
            connection.prepare(&translated.sql).map_err(|error| DbError::Fatal(format!("--sql '{text}': {error}")))?;
            statements.push(translated);
        }
        connection.set_prepared_statement_cache_capacity(statements.len() + 8);
        Ok(SqliteBackend { connection, effects: Effects::Sql(statements) })
    }

    /// Opens (creating) the database at `path` and creates the sink's tables; `effects` applies
    /// each batch's records inside its transaction.
    pub fn with_effects(path: &Path, effects: SqliteEffects) -> Result<SqliteBackend, DbError> {
        Ok(SqliteBackend { connection: Self::connect(path)?, effects: Effects::Handler(effects) })
    }

    /// Opens an existing database read-only, creating nothing (`once sink --status`).
    pub fn open_read_only(path: &Path) -> Result<SqliteBackend, DbError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).map_err(step)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(step)?;
        Ok(SqliteBackend { connection, effects: Effects::Sql(Vec::new()) })
    }

    fn connect(path: &Path) -> Result<Connection, DbError> {
        let connection = Connection::open(path).map_err(step)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(step)?;
        // Switching to WAL, and creating tables while another process does, can answer
        // SQLITE_BUSY at once, without the busy handler: sinks starting together retry.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match Self::set_up(&connection) {
                Err(DbError::Transient(message)) if std::time::Instant::now() < deadline => {
                    tracing::debug!(%message, "setting up the database; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other?,
            }
        }
        Ok(connection)
    }

    fn set_up(connection: &Connection) -> Result<(), DbError> {
        connection.pragma_update(None, "journal_mode", "WAL").map_err(step)?;
        connection.pragma_update(None, "synchronous", "FULL").map_err(step)?;
        connection.execute_batch(SCHEMA).map_err(step)
    }

    /// The connection, for tests and for library users who read their own tables.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Backend for SqliteBackend {
    fn begin(&mut self) -> Result<(), DbError> {
        self.connection.execute_batch("BEGIN IMMEDIATE").map_err(step)
    }

    fn lock_position(&mut self, key: &PartitionKey, from: i64) -> Result<i64, DbError> {
        self.connection
            .prepare_cached(r#"INSERT INTO once_sink_offsets VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING"#)
            .and_then(|mut insert| insert.execute((&key.sink, &key.topic, key.partition, from, now_ms())))
            .map_err(step)?;
        self.stored_position(key)?
            .ok_or_else(|| DbError::Fatal("the position row vanished inside its transaction".into()))
    }

    fn remember(&mut self, sink: &str, message_id: &str, record: &Record) -> Result<bool, DbError> {
        let inserted = self
            .connection
            .prepare_cached("INSERT INTO once_sink_inbox VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING")
            .and_then(|mut insert| insert.execute((sink, message_id, &record.topic, record.partition, record.offset)))
            .map_err(step)?;
        Ok(inserted == 1)
    }

    fn apply(&mut self, effects: &[Effect<'_>]) -> Result<(), EffectError> {
        let statements = match &mut self.effects {
            Effects::Handler(handler) => return handler(&self.connection, effects),
            Effects::Sql(statements) => statements,
        };
        for effect in effects {
            let poison = |message: String| EffectError::Poison { offset: effect.record.offset, message };
            for statement in statements.iter() {
                let mut values = Vec::with_capacity(statement.params.len());
                for param in &statement.params {
                    values.push(to_sql(effect.record.bind(param).map_err(poison)?));
                }
                let mut prepared = self.connection.prepare_cached(&statement.sql).map_err(step)?;
                prepared.execute(rusqlite::params_from_iter(values)).map_err(|error| {
                    if is_transient(&error) {
                        EffectError::Transient(error.to_string())
                    } else if is_data_error(&error) {
                        poison(error.to_string())
                    } else {
                        EffectError::Fatal(error.to_string())
                    }
                })?;
            }
        }
        Ok(())
    }

    fn dead_letter(&mut self, sink: &str, record: &Record, error: &str) -> Result<(), DbError> {
        self.connection
            .prepare_cached("INSERT INTO once_sink_dead_letters VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
            .and_then(|mut insert| {
                insert.execute((
                    sink,
                    &record.topic,
                    record.partition,
                    record.offset,
                    record.timestamp_ms,
                    record.key.as_deref(),
                    record.value.as_deref(),
                    record.headers_json(),
                    error,
                    now_ms(),
                ))
            })
            .map_err(step)?;
        Ok(())
    }

    fn advance(&mut self, key: &PartitionKey, from: i64, to: i64) -> Result<u64, DbError> {
        let changed = self
            .connection
            .prepare_cached(
                r#"UPDATE once_sink_offsets SET next_offset = ?4, updated_at = ?6
                   WHERE sink = ?1 AND topic = ?2 AND "partition" = ?3 AND next_offset = ?5"#,
            )
            .and_then(|mut update| update.execute((&key.sink, &key.topic, key.partition, to, from, now_ms())))
            .map_err(step)?;
        Ok(changed as u64)
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.connection.execute_batch("COMMIT").map_err(step)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if self.connection.is_autocommit() {
            return Ok(()); // SQLite already rolled back (it does on some errors), or never began.
        }
        self.connection.execute_batch("ROLLBACK").map_err(step)
    }

    fn stored_position(&mut self, key: &PartitionKey) -> Result<Option<i64>, DbError> {
        let mut select = self
            .connection
            .prepare_cached(
                r#"SELECT next_offset FROM once_sink_offsets WHERE sink = ?1 AND topic = ?2 AND "partition" = ?3"#,
            )
            .map_err(step)?;
        let mut rows = select.query((&key.sink, &key.topic, key.partition)).map_err(step)?;
        match rows.next().map_err(step)? {
            None => Ok(None),
            Some(row) => Ok(Some(row.get(0).map_err(step)?)),
        }
    }

    fn positions(&mut self, sink: &str) -> Result<Vec<PositionRow>, DbError> {
        let mut select = self.connection.prepare_cached(&positions_sql("?1")).map_err(step)?;
        let rows = select
            .query_map([sink], |row| {
                Ok(PositionRow {
                    topic: row.get(0)?,
                    partition: row.get(1)?,
                    next_offset: row.get(2)?,
                    updated_at_ms: row.get(3)?,
                    dead_letters: row.get(4)?,
                })
            })
            .map_err(step)?;
        rows.collect::<Result<_, _>>().map_err(step)
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
