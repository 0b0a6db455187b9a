//! The SQLite source: unsent rows in `rowid` order (insertion order; SQLite has one writer at a
//! time, so insertion order is commit order). A busy database is waited on (`busy_timeout`), so
//! the application's writes and the relay's deletes take turns.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::{AfterSend, Error, OutboxRow, Source, SourceOptions, MARK_COLUMN};

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SqliteSource {
    connection: Connection,
    table: String,
    after_send: AfterSend,
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
        let mut needed = vec!["id", "aggregatetype", "aggregateid", "type", "payload"];
        if options.after_send == AfterSend::Mark {
            needed.push(MARK_COLUMN);
        }
        for column in needed {
            if !columns.iter().any(|name| name.eq_ignore_ascii_case(column)) {
                return Err(Error::Config(format!("table '{}' has no column '{column}'", options.table)));
            }
        }
        refuse_reused_ids(&connection, &options.table, options.after_send)?;
        Ok(SqliteSource { connection, table: options.table.clone(), after_send: options.after_send })
    }
}

/// An `id INTEGER PRIMARY KEY` without AUTOINCREMENT is the rowid, and SQLite hands a deleted
/// highest rowid out again: with `--after-send delete` the next event would get the id of one
/// already sent, and the topic (deduplicating on `id`) would drop it as a repeat — the event lost.
fn refuse_reused_ids(connection: &Connection, table: &str, after_send: AfterSend) -> Result<(), Error> {
    if after_send != AfterSend::Delete {
        return Ok(());
    }
    let mut statement = connection
        .prepare("SELECT type, pk FROM pragma_table_info(?1) WHERE name = 'id' COLLATE NOCASE")
        .map_err(database)?;
    let (declared, primary): (String, i64) =
        statement.query_row([table], |row| Ok((row.get(0)?, row.get(1)?))).map_err(database)?;
    let schema: String = connection
        .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |row| row.get(0))
        .map_err(database)?;
    let rowid_alias = declared.eq_ignore_ascii_case("INTEGER") && primary == 1;
    if rowid_alias && !schema.to_ascii_uppercase().contains("AUTOINCREMENT") {
        return Err(Error::Config(format!(
            "table '{table}': id INTEGER PRIMARY KEY without AUTOINCREMENT reuses the id of a deleted row, and a \
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
        let unsent = match self.after_send {
            AfterSend::Delete => String::new(),
            AfterSend::Mark => format!("WHERE {MARK_COLUMN} IS NULL"),
        };
        let sql = format!(
            "SELECT rowid, id, aggregatetype, aggregateid, type, payload FROM {} {unsent} ORDER BY rowid LIMIT ?1",
            self.table
        );
        let mut statement = self.connection.prepare_cached(&sql).map_err(database)?;
        let rows = statement
            .query_map([limit as i64], |row| {
                Ok(OutboxRow {
                    position: row.get(0)?,
                    id: text(row.get(1)?),
                    aggregate_type: text(row.get(2)?),
                    aggregate_id: text(row.get(3)?),
                    event_type: text(row.get(4)?),
                    payload: bytes(row.get(5)?),
                })
            })
            .map_err(database)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(database)
    }

    /// Rows are named by rowid *and* id: without AUTOINCREMENT SQLite hands the highest rowid out
    /// again once its row is deleted, so a rowid alone could name a newer, unsent row (were a
    /// second relay, or anyone else, deleting rows meanwhile).
    fn retire(&mut self, rows: &[&OutboxRow]) -> Result<(), Error> {
        let sql = match self.after_send {
            AfterSend::Delete => format!("DELETE FROM {} WHERE rowid = ?1 AND id = ?2", self.table),
            AfterSend::Mark => format!(
                "UPDATE {} SET {MARK_COLUMN} = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE rowid = ?1 AND id = ?2",
                self.table
            ),
        };
        let transaction = self.connection.transaction().map_err(database)?;
        {
            let mut statement = transaction.prepare_cached(&sql).map_err(database)?;
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
