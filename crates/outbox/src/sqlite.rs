//! The SQLite source: unsent rows in `rowid` order (insertion order; SQLite has one writer at a
//! time, so insertion order is commit order). A busy database is waited on (`busy_timeout`), so
//! the application's writes and the relay's deletes take turns.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::{AfterSend, Columns, Error, OutboxRow, Source, SourceOptions};

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SqliteSource {
    connection: Connection,
    select_sql: String,
    retire_sql: String,
}

fn database(error: rusqlite::Error) -> Error {
    Error::Database(error.to_string())
}

impl SqliteSource {
    /// Opens an existing database (a mistyped path is an error, not a new empty file) and checks
    /// the table has the outbox columns.
    pub fn open(path: &Path, options: &SourceOptions) -> Result<SqliteSource, Error> {
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|error| Error::Config(format!("opening {}: {error}", path.display())))?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(database)?;
        let columns = table_columns(&connection, &options.table)?;
        if columns.is_empty() {
            return Err(Error::Config(format!("no table '{}' in {}", options.table, path.display())));
        }
        for column in options.columns.needed(options.after_send) {
            if !columns.iter().any(|name| name.eq_ignore_ascii_case(column)) {
                return Err(Error::Config(format!("table '{}' has no column '{column}'", options.table)));
            }
        }
        refuse_reused_ids(&connection, &options.table, &options.columns.id, options.after_send)?;
        let (select_sql, retire_sql) = statements(options);
        Ok(SqliteSource { connection, select_sql, retire_sql })
    }
}

/// The poll's `SELECT` and the retiring statement. Rows are retired by rowid *and* id: without
/// AUTOINCREMENT SQLite hands the highest rowid out again once its row is deleted, so a rowid
/// alone could name a newer, unsent row (were a second relay, or anyone else, deleting rows
/// meanwhile).
fn statements(options: &SourceOptions) -> (String, String) {
    let (table, columns) = (&options.table, &options.columns);
    let Columns { id, aggregate_type, aggregate_id, event_type, payload, sent_at, .. } = columns;
    // A timestamp column holds milliseconds since the epoch, or a date and time SQLite reads.
    let timestamp = match &columns.timestamp {
        Some(column) => format!(
            "CASE typeof({column}) WHEN 'integer' THEN {column} WHEN 'real' THEN CAST({column} AS INTEGER) \
             WHEN 'text' THEN CAST(round((julianday({column}) - 2440587.5) * 86400000.0) AS INTEGER) END"
        ),
        None => "NULL".to_string(),
    };
    let (unsent, retire) = match options.after_send {
        AfterSend::Delete => (String::new(), format!("DELETE FROM {table} WHERE rowid = ?1 AND {id} = ?2")),
        AfterSend::Mark => (
            format!("WHERE {sent_at} IS NULL"),
            format!(
                "UPDATE {table} SET {sent_at} = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE rowid = ?1 AND {id} = ?2"
            ),
        ),
    };
    let select = format!(
        "SELECT rowid, {id}, {aggregate_type}, {aggregate_id}, {event_type}, {payload}, {timestamp} \
         FROM {table} {unsent} ORDER BY rowid LIMIT ?1"
    );
    (select, retire)
}

/// An `id INTEGER PRIMARY KEY` without AUTOINCREMENT is the rowid, and SQLite hands a deleted
/// highest rowid out again: with `--after-send delete` the next event would get the id of one
/// already sent, and the topic (deduplicating on `id`) would drop it as a repeat — the event lost.
fn refuse_reused_ids(connection: &Connection, table: &str, id: &str, after_send: AfterSend) -> Result<(), Error> {
    if after_send != AfterSend::Delete {
        return Ok(());
    }
    let mut statement = connection
        .prepare("SELECT type, pk FROM pragma_table_info(?1) WHERE name = ?2 COLLATE NOCASE")
        .map_err(database)?;
    let (declared, primary): (String, i64) =
        statement.query_row([table, id], |row| Ok((row.get(0)?, row.get(1)?))).map_err(database)?;
    let schema: String = connection
        .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |row| row.get(0))
        .map_err(database)?;
    let rowid_alias = declared.eq_ignore_ascii_case("INTEGER") && primary == 1;
    if rowid_alias && !schema.to_ascii_uppercase().contains("AUTOINCREMENT") {
        return Err(Error::Config(format!(
            "table '{table}': {id} INTEGER PRIMARY KEY without AUTOINCREMENT reuses the id of a deleted row, and a \
             reused id is dropped as a repeat by the topic's deduplication (the event would be lost); declare it \
             INTEGER PRIMARY KEY AUTOINCREMENT, use a text/uuid id, or run with --after-send mark"
        )));
    }
    Ok(())
}

fn table_columns(connection: &Connection, table: &str) -> Result<Vec<String>, Error> {
    let mut statement = connection.prepare("SELECT name FROM pragma_table_info(?1)").map_err(database)?;
    let names = statement.query_map([table], |row| row.get::<_, String>(0)).map_err(database)?;
    names.collect::<Result<Vec<_>, _>>().map_err(database)
}

/// Any SQLite value as text (ids and keys may be integers or blobs too).
fn text(value: Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Integer(number) => number.to_string(),
        Value::Real(number) => number.to_string(),
        Value::Text(text) => text,
        Value::Blob(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::Blob(bytes) => Some(bytes),
        other => Some(text(other).into_bytes()),
    }
}

impl Source for SqliteSource {
    fn unsent(&mut self, limit: usize) -> Result<Vec<OutboxRow>, Error> {
        let mut statement = self.connection.prepare_cached(&self.select_sql).map_err(database)?;
        let rows = statement
            .query_map([limit as i64], |row| {
                Ok(OutboxRow {
                    position: row.get(0)?,
                    id: text(row.get(1)?),
                    aggregate_type: text(row.get(2)?),
                    aggregate_id: text(row.get(3)?),
                    event_type: text(row.get(4)?),
                    payload: bytes(row.get(5)?),
                    timestamp_ms: row.get(6)?,
                })
            })
            .map_err(database)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(database)
    }

    /// See [`statements`]: by rowid and id, in one transaction.
    fn retire(&mut self, rows: &[&OutboxRow]) -> Result<(), Error> {
        let transaction = self.connection.transaction().map_err(database)?;
        {
            let mut statement = transaction.prepare_cached(&self.retire_sql).map_err(database)?;
            for row in rows {
                statement.execute(rusqlite::params![row.position, row.id]).map_err(database)?;
            }
        }
        transaction.commit().map_err(database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(after_send: AfterSend) -> (tempfile::TempDir, SqliteSource, Connection) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app.db");
        let application = Connection::open(&path).expect("create");
        application
            .execute_batch(
                "CREATE TABLE outbox (id TEXT, aggregatetype TEXT, aggregateid TEXT, type TEXT, payload BLOB, sent_at TEXT)",
            )
            .expect("create the outbox");
        let options = SourceOptions {
            table: "outbox".into(),
            after_send,
            order_column: None,
            mode: crate::Mode::Auto,
            slot: None,
            columns: Columns::default(),
        };
        let source = SqliteSource::open(&path, &options).expect("open");
        (dir, source, application)
    }

    fn insert(application: &Connection, id: &str) {
        application
            .execute("INSERT INTO outbox VALUES (?1, 'order', 'o-1', 'Created', x'00ff', NULL)", [id])
            .expect("insert");
    }

    #[test]
    fn a_reused_rowid_does_not_retire_the_newer_row() {
        let (_dir, mut source, application) = database(AfterSend::Delete);
        insert(&application, "first");
        let read = source.unsent(10).expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].payload.as_deref(), Some(&[0x00, 0xff][..]), "a blob payload is relayed as is");
        application.execute("DELETE FROM outbox", []).expect("someone else deletes it");
        insert(&application, "second");
        let rowid: i64 = application.query_row("SELECT rowid FROM outbox", [], |row| row.get(0)).expect("rowid");
        assert_eq!(rowid, read[0].position, "SQLite handed the rowid out again");
        source.retire(&[&read[0]]).expect("retire");
        let left = source.unsent(10).expect("read again");
        assert_eq!(left.iter().map(|row| row.id.as_str()).collect::<Vec<_>>(), vec!["second"]);
    }

    #[test]
    fn marked_rows_are_not_read_again_and_order_is_insertion_order() {
        let (_dir, mut source, application) = database(AfterSend::Mark);
        for id in ["a", "b", "c"] {
            insert(&application, id);
        }
        let read = source.unsent(2).expect("read");
        assert_eq!(read.iter().map(|row| row.id.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        source.retire(&[&read[0], &read[1]]).expect("mark");
        let left = source.unsent(10).expect("read again");
        assert_eq!(left.iter().map(|row| row.id.as_str()).collect::<Vec<_>>(), vec!["c"]);
        let marked: i64 = application
            .query_row("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL", [], |row| row.get(0))
            .expect("count");
        assert_eq!(marked, 2);
    }

    /// Renamed columns are read, and the timestamp column becomes the record's timestamp whether
    /// it holds milliseconds or a date and time.
    #[test]
    fn renamed_columns_and_timestamps_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app.db");
        let application = Connection::open(&path).expect("create");
        application
            .execute_batch(
                "CREATE TABLE events (event_id TEXT, kind TEXT, entity TEXT, name TEXT, body TEXT, at);\
                 INSERT INTO events VALUES ('e1', 'order', 'o-1', 'Created', '{}', 1764892800123), \
                                           ('e2', 'order', 'o-1', 'Paid', '{}', '2025-12-05T00:00:00.123Z'), \
                                           ('e3', 'order', 'o-1', 'Shipped', '{}', NULL);",
            )
            .expect("create the outbox");
        let mut columns = Columns::default();
        for assignment in ["id=event_id", "aggregatetype=kind", "aggregateid=entity", "type=name", "payload=body"] {
            columns.set(assignment).expect("a field");
        }
        let mut options = SourceOptions {
            table: "events".into(),
            after_send: AfterSend::Delete,
            order_column: None,
            mode: crate::Mode::Auto,
            slot: None,
            columns: columns.clone(),
        };
        let read = SqliteSource::open(&path, &options).expect("open").unsent(10).expect("read");
        assert_eq!(read.iter().map(|row| row.timestamp_ms).collect::<Vec<_>>(), [None, None, None]);
        assert_eq!((read[1].id.as_str(), read[1].event_type.as_str()), ("e2", "Paid"));
        columns.set("timestamp=at").expect("a field");
        options.columns = columns;
        let read = SqliteSource::open(&path, &options).expect("open").unsent(10).expect("read");
        let stamps: Vec<Option<i64>> = read.iter().map(|row| row.timestamp_ms).collect();
        assert_eq!(stamps, [Some(1_764_892_800_123), Some(1_764_892_800_123), None]);
        options.columns.set("payload=missing").expect("a field");
        let error = SqliteSource::open(&path, &options).err().expect("a missing column").to_string();
        assert!(error.contains("no column 'missing'"), "{error}");
    }

    /// Review of issue 17: an `id INTEGER PRIMARY KEY` without AUTOINCREMENT hands a deleted id
    /// out again, and the topic would drop the new event as a repeat: refused with delete, allowed
    /// with AUTOINCREMENT or mark.
    #[test]
    fn an_id_sqlite_reuses_after_delete_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (table, after_send, refused) in [
            ("id INTEGER PRIMARY KEY", AfterSend::Delete, true),
            ("id INTEGER PRIMARY KEY AUTOINCREMENT", AfterSend::Delete, false),
            ("id INTEGER PRIMARY KEY", AfterSend::Mark, false),
            ("id TEXT PRIMARY KEY", AfterSend::Delete, false),
        ] {
            let path = dir.path().join(format!("{}-{after_send:?}.db", table.replace(' ', "_")));
            Connection::open(&path)
                .expect("create")
                .execute_batch(&format!(
                    "CREATE TABLE outbox ({table}, aggregatetype TEXT, aggregateid TEXT, type TEXT, payload BLOB, sent_at TEXT)"
                ))
                .expect("create the outbox");
            let options = SourceOptions {
                table: "outbox".into(),
                after_send,
                order_column: None,
                mode: crate::Mode::Auto,
                slot: None,
                columns: Columns::default(),
            };
            match SqliteSource::open(&path, &options) {
                Err(Error::Config(message)) if refused => assert!(message.contains("AUTOINCREMENT"), "{message}"),
                Ok(_) if !refused => {}
                Err(error) => panic!("{table} {after_send:?}: {error}"),
                Ok(_) => panic!("{table} {after_send:?}: opened"),
            }
        }
    }
}
