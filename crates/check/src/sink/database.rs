//! The database the sinks write, from the checker's side: it creates the effect table, stalls the
//! database for a moment around a sink fault (so that the sink is caught inside its batch), and at
//! the end reads the effects and the stored positions back. Its own driver code, not once-sink's:
//! what judges the sink must not share its code.
//!
//! The effect table has no unique constraint, so an effect applied twice stays visible as two rows.
//! Each sink process writes its own id into the `sink` column (a literal in its statement), so a
//! duplicate names the sinks that applied it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::sink::history::{Effect, SinkId};
use crate::sink::ID_HEADER;

/// How long the checker waits for the lock that starts a stall; a database it cannot lock that soon
/// (a paused sink's transaction holds it) is not stalled this time.
const STALL_LOCK_WAIT: Duration = Duration::from_secs(1);

const SQLITE_EFFECTS: &str = r#"
CREATE TABLE IF NOT EXISTS once_check_effects (
    id TEXT,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    sink TEXT NOT NULL
);
"#;

/// `seq` orders the rows as they were inserted (SQLite has its rowid); it is no constraint.
const POSTGRES_EFFECTS: &str = r#"
CREATE TABLE IF NOT EXISTS once_check_effects (
    seq BIGSERIAL,
    id TEXT,
    topic TEXT NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset" BIGINT NOT NULL,
    sink TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS once_check_effects_by_topic ON once_check_effects (topic, seq);
"#;

/// The advisory lock key that serialises creating the table when runs start together ("oncechck").
const SCHEMA_LOCK: i64 = 0x6f6e_6365_6368_636b;

/// The `--sql` statement sink process `sink` runs per record.
pub fn effect_statement(sink: SinkId) -> String {
    format!(
        r#"INSERT INTO once_check_effects (id, topic, "partition", "offset", sink) VALUES (:header.{ID_HEADER}, :topic, :partition, :offset, '{sink}')"#
    )
}

/// `url` with any password replaced by `***`, for reports and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A connection to the sinks' database.
pub enum Database {
    Sqlite(rusqlite::Connection),
    /// tokio-postgres on a current-thread runtime: each call blocks on it, and the connection task
    /// runs while it does.
    Postgres {
        runtime: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
    },
}

impl Database {
    /// Connects to `sqlite://PATH` (creating the file) or `postgres://…`.
    pub fn open(url: &str) -> anyhow::Result<Database> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            anyhow::ensure!(!path.is_empty(), "--sink-database sqlite:// needs a path: sqlite://PATH");
            let connection = rusqlite::Connection::open(Path::new(path))
                .with_context(|| format!("opening the SQLite database {path}"))?;
            connection.busy_timeout(STALL_LOCK_WAIT)?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            return Ok(Database::Sqlite(connection));
        }
        anyhow::ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--sink-database {}: expected sqlite://PATH or postgres://user:pass@host:port/db",
            redacted(url)
        );
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    eprintln!("once check: the connection to PostgreSQL ended: {error}");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = client.with_context(|| format!("connecting to {}", redacted(url)))?;
        Ok(Database::Postgres { runtime, client })
    }

    /// Creates the effect table if it is not there.
    pub fn create_effect_table(&mut self) -> anyhow::Result<()> {
        match self {
            Database::Sqlite(connection) => connection.execute_batch(SQLITE_EFFECTS)?,
            Database::Postgres { runtime, client } => {
                let create = format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {POSTGRES_EFFECTS} COMMIT;");
                runtime.block_on(client.batch_execute(&create))?
            }
        }
        Ok(())
    }

    /// Starts a stall: takes the lock every sink's next effect needs (SQLite's write lock; a SHARE
    /// lock on PostgreSQL's effect table), so that each sink reaching its database transaction waits
    /// there, its batch in hand. False if the lock could not be had within [`STALL_LOCK_WAIT`].
    pub fn stall(&mut self) -> anyhow::Result<bool> {
        match self {
            Database::Sqlite(connection) => match connection.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => Ok(true),
                Err(error) if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(false),
                Err(error) => Err(error.into()),
            },
            Database::Postgres { runtime, client } => {
                let wait_ms = STALL_LOCK_WAIT.as_millis();
                let lock =
                    format!("BEGIN; SET LOCAL lock_timeout = {wait_ms}; LOCK TABLE once_check_effects IN SHARE MODE;");
                match runtime.block_on(client.batch_execute(&lock)) {
                    Ok(()) => Ok(true),
                    Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                        runtime.block_on(client.batch_execute("ROLLBACK"))?;
                        Ok(false)
                    }
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    /// Ends a stall ([`Database::stall`]).
    pub fn end_stall(&mut self) -> anyhow::Result<()> {
        match self {
            Database::Sqlite(connection) => connection.execute_batch("ROLLBACK")?,
            Database::Postgres { runtime, client } => runtime.block_on(client.batch_execute("ROLLBACK"))?,
        }
        Ok(())
    }

    /// The sink that wrote the newest effect of `topic`, if any: one that holds partitions and has
    /// been applying batches.
    pub fn newest_effect_sink(&mut self, topic: &str) -> anyhow::Result<Option<String>> {
        Ok(match self {
            Database::Sqlite(connection) => {
                let query = "SELECT sink FROM once_check_effects WHERE topic = ?1 ORDER BY rowid DESC LIMIT 1";
                let mut statement = connection.prepare_cached(query)?;
                let mut rows = statement.query([topic])?;
                rows.next()?.map(|row| row.get(0)).transpose()?
            }
            Database::Postgres { runtime, client } => {
                let query = "SELECT sink FROM once_check_effects WHERE topic = $1 ORDER BY seq DESC LIMIT 1";
                let row = runtime.block_on(client.query_opt(query, &[&topic]))?;
                row.map(|row| row.try_get(0)).transpose()?
            }
        })
    }

    /// Every effect of `topic`, in insertion order.
    pub fn effects(&mut self, topic: &str) -> anyhow::Result<Vec<Effect>> {
        match self {
            Database::Sqlite(connection) => {
                let query =
                    r#"SELECT id, "partition", "offset", sink FROM once_check_effects WHERE topic = ?1 ORDER BY rowid"#;
                let mut statement = connection.prepare(query)?;
                let rows = statement.query_map([topic], |row| {
                    Ok(Effect { id: row.get(0)?, partition: row.get(1)?, offset: row.get(2)?, sink: row.get(3)? })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Database::Postgres { runtime, client } => {
                let query =
                    r#"SELECT id, "partition", "offset", sink FROM once_check_effects WHERE topic = $1 ORDER BY seq"#;
                let rows = runtime.block_on(client.query(query, &[&topic]))?;
                let effect = |row: &tokio_postgres::Row| -> Result<Effect, tokio_postgres::Error> {
                    Ok(Effect {
                        id: row.try_get(0)?,
                        partition: row.try_get(1)?,
                        offset: row.try_get(2)?,
                        sink: row.try_get(3)?,
                    })
                };
                Ok(rows.iter().map(effect).collect::<Result<_, _>>()?)
            }
        }
    }

    /// The `next_offset` of each of `partitions` partitions that `once_sink_offsets` stores for sink
    /// `sink` and `topic` (none where there is no row, or no table at all).
    pub fn positions(&mut self, sink: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<Option<i64>>> {
        let rows: Vec<(i32, i64)> = match self {
            Database::Sqlite(connection) => {
                let exists = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'once_sink_offsets'";
                if connection.query_row(exists, [], |row| row.get::<_, i64>(0))? == 0 {
                    return Ok(vec![None; usize::try_from(partitions).unwrap_or(0)]);
                }
                let query = r#"SELECT "partition", next_offset FROM once_sink_offsets WHERE sink = ?1 AND topic = ?2"#;
                let mut statement = connection.prepare(query)?;
                let rows = statement.query_map([sink, topic], |row| Ok((row.get(0)?, row.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            }
            Database::Postgres { runtime, client } => {
                let exists =
                    runtime.block_on(client.query_one("SELECT to_regclass('once_sink_offsets') IS NOT NULL", &[]))?;
                if !exists.try_get::<_, bool>(0)? {
                    return Ok(vec![None; usize::try_from(partitions).unwrap_or(0)]);
                }
                let query = r#"SELECT "partition", next_offset FROM once_sink_offsets WHERE sink = $1 AND topic = $2"#;
                let rows = runtime.block_on(client.query(query, &[&sink, &topic]))?;
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                    .collect::<Result<_, tokio_postgres::Error>>()?
            }
        };
        let mut positions = vec![None; usize::try_from(partitions).unwrap_or(0)];
        for (partition, next_offset) in rows {
            if let Some(slot) = usize::try_from(partition).ok().and_then(|index| positions.get_mut(index)) {
                *slot = Some(next_offset);
            }
        }
        Ok(positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_report() {
        assert_eq!(redacted("postgres://check:secret@127.0.0.1:5432/db"), "postgres://check:***@127.0.0.1:5432/db");
        assert_eq!(redacted("postgres://check@127.0.0.1:5432/db"), "postgres://check@127.0.0.1:5432/db");
        assert_eq!(redacted("sqlite:///tmp/a.sqlite"), "sqlite:///tmp/a.sqlite");
    }

    #[test]
    fn sqlite_effects_are_kept_twice_and_positions_read_back() {
        let dir = std::env::temp_dir().join(format!("once-check-sink-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("effects.sqlite");
        let _ = std::fs::remove_file(&path);
        let mut database = Database::open(&format!("sqlite://{}", path.display())).expect("open");
        database.create_effect_table().expect("create");
        assert_eq!(database.positions("g", "t", 2).expect("no table yet"), vec![None, None]);
        let Database::Sqlite(connection) = &database else { panic!("sqlite") };
        let insert = r#"INSERT INTO once_check_effects VALUES ('7', 't', 1, 3, '0'), ('7', 't', 1, 3, '2'), ('8', 'u', 0, 0, '1')"#;
        connection.execute_batch(insert).expect("insert");
        connection
            .execute_batch(
                r#"CREATE TABLE once_sink_offsets (sink TEXT, topic TEXT, "partition" INTEGER, next_offset INTEGER, updated_at INTEGER);
                   INSERT INTO once_sink_offsets VALUES ('g', 't', 1, 4, 0), ('h', 't', 0, 9, 0)"#,
            )
            .expect("positions");
        let effects = database.effects("t").expect("effects");
        assert_eq!(effects.len(), 2, "no constraint folds a duplicate: {effects:?}");
        assert_eq!(effects[1], Effect { id: Some("7".into()), partition: 1, offset: 3, sink: "2".into() });
        assert_eq!(database.positions("g", "t", 2).expect("positions"), vec![None, Some(4)]);
        assert_eq!(database.newest_effect_sink("t").expect("newest"), Some("2".into()));
        assert!(database.stall().expect("stall"), "nobody else holds the lock");
        database.end_stall().expect("end the stall");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
