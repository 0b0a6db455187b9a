//! The PostgreSQL backend: `postgres://user:pass@host:port/db`, on tokio-postgres without TLS.
//!
//! The row lock is `SELECT … FOR UPDATE` under READ COMMITTED: a second sink's lock waits for the
//! first's transaction to end and then reads the row as that transaction left it (PostgreSQL
//! follows the update chain), so its compare sees the new position. A partition's first row is
//! inserted with `ON CONFLICT DO NOTHING`: a concurrent insert of the same key waits for the first
//! to commit or abort, so exactly one row ever exists.
//!
//! The driver is async; the sink's loop is not, so the backend owns a current-thread runtime and
//! blocks on each call (the connection task runs while it does).
//!
//! Parameters are typed by the server (`$1::jsonb` makes `$1` a jsonb), and [`PgParam`] converts
//! each record field to whatever type was inferred: `:value` bytes into bytea, text, json or
//! jsonb; integers into int2/4/8 or text; text into numbers by parsing. A field that does not fit
//! its type is a poison record, named by the error.
//!
//! Effects are the `--sql` statements ([`PostgresBackend::open`]) or a library user's handler
//! ([`PostgresBackend::with_effects`]), which gets a [`PgTransaction`] on the batch's transaction.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio::runtime::Runtime;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Row, Statement};

use crate::batch::{positions_sql, Backend, DbError, Effect, EffectError, PartitionKey, PositionRow};
use crate::params::{translate, Dialect, Translated};
use crate::record::{Bound, Record};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS once_sink_offsets (
    sink TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (sink, topic, "partition")
);
CREATE TABLE IF NOT EXISTS once_sink_inbox (
    sink TEXT NOT NULL,
    message_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    PRIMARY KEY (sink, message_id)
);
CREATE TABLE IF NOT EXISTS once_sink_dead_letters (
    sink TEXT NOT NULL,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    timestamp_ms BIGINT,
    key BYTEA,
    value BYTEA,
    headers TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (sink, topic, "partition", "offset")
);
"#;

/// The advisory lock key that serialises creating the sink's tables ("oncesink" in ASCII).
const SCHEMA_LOCK: i64 = 0x6f6e_6365_7369_6e6b;

/// How long a transaction may sit idle (its sink paused) before the server aborts it, in ms.
pub const IDLE_IN_TRANSACTION_MS: u64 = 30_000;

const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The batch's open transaction, for a library user's effects: statements run in it and commit or
/// roll back with the batch's position. Do not run `COMMIT`, `ROLLBACK` or `BEGIN` through it.
pub struct PgTransaction<'a> {
    runtime: &'a Runtime,
    client: &'a Client,
}

impl PgTransaction<'_> {
    /// Runs one statement with `$n` parameters; the number of rows changed.
    pub fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error> {
        self.runtime.block_on(self.client.execute(sql, params))
    }

    /// Runs one query with `$n` parameters; its rows.
    pub fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.runtime.block_on(self.client.query(sql, params))
    }

    /// `error` as the sink treats it: transient (retry the batch), poison at `offset` (the record's
    /// data cannot be applied: [`is_data_error`]), or fatal (a missing privilege, a dropped column,
    /// a transaction already aborted: every record would fail, so the sink stops rather than stop
    /// or dead-letter them all).
    pub fn effect_error(error: tokio_postgres::Error, offset: i64) -> EffectError {
        let data = is_data_error(&error);
        match classify(error, DbError::Fatal) {
            DbError::Transient(message) => EffectError::Transient(message),
            DbError::Statement(message) | DbError::Fatal(message) if data => EffectError::Poison { offset, message },
            DbError::Statement(message) | DbError::Fatal(message) => EffectError::Fatal(message),
        }
    }
}

/// Whether `error` is about one record's data: a data exception (class 22: a bad cast, a value out
/// of range), an integrity violation (class 23: CHECK, NOT NULL, UNIQUE, foreign key), a `RAISE`
/// (P0001), or a field that could not be bound to its parameter's type (no SQLSTATE: the driver
/// refused it). Anything else would fail for every record.
pub fn is_data_error(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        Some(state) => {
            let code = state.code();
            code.starts_with("22") || code.starts_with("23") || code == "P0001"
        }
        None => !error.is_closed() && error.source().is_some_and(|source| !source.is::<std::io::Error>()),
    }
}

/// A library user's effects: called once per batch, inside its transaction, with the records to
/// apply; report a record that cannot be applied as [`EffectError::Poison`] with its offset
/// ([`PgTransaction::effect_error`] sorts a driver error).
pub type PgEffects = Box<dyn FnMut(&mut PgTransaction<'_>, &[Effect<'_>]) -> Result<(), EffectError> + Send>;

enum Effects {
    /// The `--sql` statements, and each prepared on the current connection.
    Sql(Vec<Translated>, Vec<Statement>),
    Handler(PgEffects),
}

pub struct PostgresBackend {
    runtime: Runtime,
    url: String,
    client: Client,
    effects: Effects,
}

/// Connection trouble, serialisation failures, deadlocks, lack of resources, shutdowns, lock and
/// statement timeouts: retry.
fn classify(error: tokio_postgres::Error, otherwise: fn(String) -> DbError) -> DbError {
    let transient = match error.code() {
        None => error.is_closed() || error.source().is_some_and(|source| source.is::<std::io::Error>()),
        Some(state) => {
            let code = state.code();
            // 57014: cancelled (statement_timeout, lock_timeout under load): the next try may pass.
            ["08", "40", "53", "57P"].iter().any(|class| code.starts_with(class)) || ["55P03", "57014"].contains(&code)
        }
    };
    let text = match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    };
    if transient {
        DbError::Transient(text)
    } else {
        otherwise(text)
    }
}

fn step(error: tokio_postgres::Error) -> DbError {
    classify(error, DbError::Fatal)
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "postgres connection ended");
        }
    });
    // A sink paused mid-batch (SIGSTOP, a long stall) holds its position rows locked, and the new
    // owner of those partitions waits on them. The server ends such a transaction after this long;
    // the paused sink's commit then fails, its retry is refused, and nothing of it is applied.
    client.batch_execute(&format!("SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")).await?;
    Ok(client)
}

impl PostgresBackend {
    /// Connects, creates the sink's tables, and prepares every statement (a typo stops the sink
    /// before it reads anything).
    pub fn open(url: &str, sql: &[String]) -> Result<PostgresBackend, DbError> {
        let mut translated = Vec::with_capacity(sql.len());
        for text in sql {
            translated.push(
                translate(text, Dialect::Postgres)
                    .map_err(|error| DbError::Fatal(format!("--sql '{text}': {error}")))?,
            );
        }
        let mut backend = Self::connect(url, Effects::Sql(translated, Vec::new()))?;
        backend.prepare().map_err(|error| match error {
            DbError::Fatal(message) | DbError::Statement(message) => {
                DbError::Fatal(format!("preparing --sql: {message}"))
            }
            transient => transient,
        })?;
        Ok(backend)
    }

    /// Connects and creates the sink's tables; `effects` applies each batch's records inside its
    /// transaction.
    pub fn with_effects(url: &str, effects: PgEffects) -> Result<PostgresBackend, DbError> {
        Self::connect(url, Effects::Handler(effects))
    }

    /// Connects without creating anything, to read positions (`once sink --status`: a monitoring
    /// role needs only SELECT on the sink's tables).
    pub fn open_read_only(url: &str) -> Result<PostgresBackend, DbError> {
        let runtime = Self::runtime()?;
        let client = runtime.block_on(connect(url)).map_err(step)?;
        Ok(PostgresBackend { runtime, url: url.to_string(), client, effects: Effects::Sql(Vec::new(), Vec::new()) })
    }

    fn runtime() -> Result<Runtime, DbError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| DbError::Fatal(format!("starting the runtime: {error}")))
    }

    fn connect(url: &str, effects: Effects) -> Result<PostgresBackend, DbError> {
        let runtime = Self::runtime()?;
        let client = runtime.block_on(connect(url)).map_err(step)?;
        // Concurrent `CREATE TABLE IF NOT EXISTS` can fail in PostgreSQL (a unique violation on
        // pg_type when two sessions create the same table at once): sinks starting together take
        // a transaction-scoped advisory lock around it.
        let create = format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;");
        runtime.block_on(client.batch_execute(&create)).map_err(step)?;
        Ok(PostgresBackend { runtime, url: url.to_string(), client, effects })
    }

    /// Prepares the `--sql` statements on the current connection.
    fn prepare(&mut self) -> Result<(), DbError> {
        let Effects::Sql(translated, statements) = &mut self.effects else { return Ok(()) };
        let mut prepared = Vec::with_capacity(translated.len());
        for translated in translated.iter() {
            prepared.push(self.runtime.block_on(self.client.prepare(&translated.sql)).map_err(step)?);
        }
        *statements = prepared;
        Ok(())
    }

    /// A closed connection (the server restarted, the network broke) is replaced at the next
    /// batch; the transaction it carried died with it.
    fn reconnect_if_closed(&mut self) -> Result<(), DbError> {
        if self.client.is_closed() {
            tracing::warn!("postgres connection closed; reconnecting");
            self.client = self.runtime.block_on(connect(&self.url)).map_err(step)?;
            self.prepare()?;
        }
        Ok(())
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, DbError> {
        self.runtime.block_on(self.client.execute(sql, params)).map_err(step)
    }

    /// The client, for tests and for library users who read their own tables.
    pub fn client(&self) -> (&Runtime, &Client) {
        (&self.runtime, &self.client)
    }
}

impl Backend for PostgresBackend {
    fn begin(&mut self) -> Result<(), DbError> {
        self.reconnect_if_closed()?;
        self.runtime.block_on(self.client.batch_execute("BEGIN")).map_err(step)
    }

    fn lock_position(&mut self, key: &PartitionKey, from: i64) -> Result<i64, DbError> {
        let insert =
            format!(r#"INSERT INTO once_sink_offsets VALUES ($1, $2, $3, $4, {NOW_MS}) ON CONFLICT DO NOTHING"#);
        self.execute(&insert, &[&key.sink, &key.topic, &key.partition, &from])?;
        let row = self
            .runtime
            .block_on(self.client.query_one(
                r#"SELECT next_offset FROM once_sink_offsets WHERE sink = $1 AND topic = $2 AND "partition" = $3 FOR UPDATE"#,
                &[&key.sink, &key.topic, &key.partition],
            ))
            .map_err(step)?;
        Ok(row.get(0))
    }

    fn remember(&mut self, sink: &str, message_id: &str, record: &Record) -> Result<bool, DbError> {
        let inserted = self.execute(
            "INSERT INTO once_sink_inbox VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&sink, &message_id, &record.topic, &record.partition, &record.offset],
        )?;
        Ok(inserted == 1)
    }

    fn apply(&mut self, effects: &[Effect<'_>]) -> Result<(), EffectError> {
        let (sql, statements) = match &mut self.effects {
            Effects::Handler(handler) => {
                return handler(&mut PgTransaction { runtime: &self.runtime, client: &self.client }, effects)
            }
            Effects::Sql(sql, statements) => (sql, statements),
        };
        for effect in effects {
            let poison = |message: String| EffectError::Poison { offset: effect.record.offset, message };
            for (translated, statement) in sql.iter().zip(statements.iter()) {
                let mut values = Vec::with_capacity(translated.params.len());
                for param in &translated.params {
                    values.push(PgParam(effect.record.bind(param).map_err(poison)?));
                }
                let params: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|value| value as &(dyn ToSql + Sync)).collect();
                self.runtime
                    .block_on(self.client.execute(statement, &params))
                    .map_err(|error| PgTransaction::effect_error(error, effect.record.offset))?;
            }
        }
        Ok(())
    }

    fn dead_letter(&mut self, sink: &str, record: &Record, error: &str) -> Result<(), DbError> {
        let insert =
            format!("INSERT INTO once_sink_dead_letters VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {NOW_MS})");
        self.execute(
            &insert,
            &[
                &sink,
                &record.topic,
                &record.partition,
                &record.offset,
                &record.timestamp_ms,
                &record.key.as_deref(),
                &record.value.as_deref(),
                &record.headers_json(),
                &error,
            ],
        )?;
        Ok(())
    }

    fn advance(&mut self, key: &PartitionKey, from: i64, to: i64) -> Result<u64, DbError> {
        let update = format!(
            r#"UPDATE once_sink_offsets SET next_offset = $4, updated_at = {NOW_MS}
               WHERE sink = $1 AND topic = $2 AND "partition" = $3 AND next_offset = $5"#
        );
        self.execute(&update, &[&key.sink, &key.topic, &key.partition, &to, &from])
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.runtime.block_on(self.client.batch_execute("COMMIT")).map_err(step)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if self.client.is_closed() {
            return Ok(()); // The server rolled back when the connection died.
        }
        self.runtime.block_on(self.client.batch_execute("ROLLBACK")).map_err(step)
    }

    fn stored_position(&mut self, key: &PartitionKey) -> Result<Option<i64>, DbError> {
        self.reconnect_if_closed()?;
        let row = self
            .runtime
            .block_on(self.client.query_opt(
                r#"SELECT next_offset FROM once_sink_offsets WHERE sink = $1 AND topic = $2 AND "partition" = $3"#,
                &[&key.sink, &key.topic, &key.partition],
            ))
            .map_err(step)?;
        Ok(row.map(|row| row.get(0)))
    }

    fn positions(&mut self, sink: &str) -> Result<Vec<PositionRow>, DbError> {
        self.reconnect_if_closed()?;
        let rows = self.runtime.block_on(self.client.query(&positions_sql("$1"), &[&sink])).map_err(step)?;
        Ok(rows
            .iter()
            .map(|row| PositionRow {
                topic: row.get(0),
                partition: row.get(1),
                next_offset: row.get(2),
                updated_at_ms: row.get(3),
                dead_letters: row.get(4),
            })
            .collect())
    }
}

/// A record field bound to whatever type the server inferred for its placeholder.
#[derive(Debug)]
struct PgParam<'a>(Bound<'a>);

type BoxError = Box<dyn Error + Sync + Send>;

fn utf8<'a>(bytes: &'a [u8], ty: &Type) -> Result<&'a str, BoxError> {
    std::str::from_utf8(bytes).map_err(|error| format!("bytes bound as {ty} are not UTF-8: {error}").into())
}

impl ToSql for PgParam<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let bytes: &[u8] = match &self.0 {
            Bound::Null => return Ok(IsNull::Yes),
            Bound::Int(value) => return int_to_sql(*value, ty, out),
            Bound::Bytes(bytes) => bytes,
            Bound::Text(text) => text.as_bytes(),
        };
        match *ty {
            Type::BYTEA => out.put_slice(bytes),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::UNKNOWN => {
                out.put_slice(utf8(bytes, ty)?.as_bytes())
            }
            Type::JSONB => {
                out.put_u8(1); // jsonb's binary format: a version byte, then the text
                out.put_slice(utf8(bytes, ty)?.as_bytes());
            }
            Type::INT2 | Type::INT4 | Type::INT8 => {
                let text = utf8(bytes, ty)?.trim();
                let value: i64 = text.parse().map_err(|error| format!("'{text}' bound as {ty}: {error}"))?;
                return int_to_sql(value, ty, out);
            }
            Type::FLOAT8 => {
                let text = utf8(bytes, ty)?.trim();
                let value: f64 = text.parse().map_err(|error| format!("'{text}' bound as {ty}: {error}"))?;
                return value.to_sql(ty, out);
            }
            _ => {
                return Err(format!(
                    "cannot bind a text or bytes field as {ty}; cast it in the statement (e.g. :value_text::{ty})"
                )
                .into())
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn int_to_sql(value: i64, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    match *ty {
        Type::INT8 => value.to_sql(ty, out),
        Type::INT4 => i32::try_from(value)?.to_sql(ty, out),
        Type::INT2 => i16::try_from(value)?.to_sql(ty, out),
        Type::FLOAT8 => (value as f64).to_sql(ty, out),
        Type::TEXT | Type::VARCHAR | Type::UNKNOWN => {
            out.put_slice(value.to_string().as_bytes());
            Ok(IsNull::No)
        }
        _ => Err(format!("cannot bind an integer field as {ty}; cast it in the statement (e.g. :offset::{ty})").into()),
    }
}
