//! The PostgreSQL source, by polling: each poll is one `SELECT` (one snapshot) of every visible
//! unsent row in the order of an insertion-order column, and rows are retired only after their
//! records are acknowledged. A row of a transaction still open is not visible and is read by a
//! later poll; no cursor moves past it, so nothing is skipped however transactions interleave. (A
//! relay that remembers "the highest id sent" skips exactly those rows.)
//!
//! The insertion-order column is `id` when `id` is an integer column, else the one named by
//! `--order-column` (e.g. `seq BIGSERIAL` beside a uuid `id`).
//!
//! The driver is async and the relay's loop is not, so the source owns a current-thread runtime
//! and blocks on each call (the connection task runs while it does).

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use crate::{AfterSend, Columns, Error, OutboxRow, Source, SourceOptions};

pub struct PostgresSource {
    runtime: Runtime,
    client: Client,
    select_sql: String,
    retire_sql: String,
}

pub(crate) fn database(error: tokio_postgres::Error) -> Error {
    // The driver's Display of a server error is only "db error": name the server's message.
    match error.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_string();
            for extra in [db.detail(), db.hint()].into_iter().flatten() {
                text = format!("{text}; {extra}");
            }
            Error::Database(format!("{text} (SQLSTATE {})", db.code().code()))
        }
        None => Error::Database(error.to_string()),
    }
}

const INTEGER_TYPES: &[&str] = &["smallint", "integer", "bigint"];

impl PostgresSource {
    pub fn open(url: &str, options: &SourceOptions) -> Result<PostgresSource, Error> {
        let runtime = runtime()?;
        let client = connect(&runtime, url)?;
        let columns = runtime.block_on(table_columns(&client, &options.table))?;
        let (select_sql, retire_sql) = statements(&columns, options)?;
        Ok(PostgresSource { runtime, client, select_sql, retire_sql })
    }
}

/// The runtime a source blocks on: the relay's loop is synchronous.
pub(crate) fn runtime() -> Result<Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Database(format!("starting the driver's runtime: {error}")))
}

/// How often a relay's session, while it runs a statement, checks that the relay is still
/// connected (PostgreSQL 14 and later; ms).
pub(crate) const CLIENT_CHECK_MS: u32 = 1000;

/// A connection whose task runs on `runtime` (while the source blocks on it).
///
/// A relay killed while its session runs a statement (a peek, or a `DELETE` waiting for a row
/// lock) leaves the session running until the statement ends, holding what it holds (the slot's
/// advisory lock, row locks). The session checks for its client every [`CLIENT_CHECK_MS`] instead,
/// where the server has `client_connection_check_interval` and it is 0 (its default). An older
/// server has no such setting, and one that cannot watch sockets (Windows) refuses a value: the
/// relay then runs as before, with a warning.
pub(crate) fn connect(runtime: &Runtime, url: &str) -> Result<Client, Error> {
    let (client, connection) = runtime.block_on(tokio_postgres::connect(url, NoTls)).map_err(database)?;
    runtime.spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection ended");
        }
    });
    let check = format!(
        "SELECT set_config('client_connection_check_interval', '{CLIENT_CHECK_MS}', false) \
         WHERE current_setting('client_connection_check_interval', true) = '0'"
    );
    if let Err(error) = runtime.block_on(client.batch_execute(&check)) {
        tracing::warn!(error = %database(error), "cannot set client_connection_check_interval: a relay killed inside a statement holds its session's locks until the statement ends");
    }
    Ok(client)
}

/// (name, type) of each column of `table`; empty when there is no such table.
pub(crate) async fn table_columns(client: &Client, table: &str) -> Result<Vec<(String, String)>, Error> {
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .await
        .map_err(database)?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Checks `table` exists and has the columns every mode reads (and `sent_at` for `--after-send mark`).
pub(crate) fn check_columns(columns: &[(String, String)], options: &SourceOptions) -> Result<(), Error> {
    let table = &options.table;
    if columns.is_empty() {
        return Err(Error::Config(format!("no table '{table}' (or no permission to see it)")));
    }
    for column in options.columns.needed(options.after_send) {
        if type_of(columns, column).is_none() {
            return Err(Error::Config(format!("table '{table}' has no column '{column}'")));
        }
    }
    if let Some(column) = &options.columns.timestamp {
        let kind = type_of(columns, column).unwrap_or_default();
        if !kind.starts_with("timestamp") && !INTEGER_TYPES.contains(&kind) {
            return Err(Error::Config(format!(
                "timestamp column '{column}' of '{table}' is {kind}: expected a timestamp or an integer of \
                 milliseconds since the epoch"
            )));
        }
    }
    Ok(())
}

/// The type of column `name`, as `format_type` prints it.
pub(crate) fn column_type<'a>(columns: &'a [(String, String)], name: &str) -> Option<&'a str> {
    type_of(columns, name)
}

fn type_of<'a>(columns: &'a [(String, String)], name: &str) -> Option<&'a str> {
    columns.iter().find(|(column, _)| column == name).map(|(_, kind)| kind.as_str())
}

/// The insertion-order column: `--order-column`, else `id`; it must be an integer column.
pub(crate) fn order_column(columns: &[(String, String)], options: &SourceOptions) -> Result<String, Error> {
    let table = &options.table;
    let order = options.order_column.as_deref().unwrap_or(&options.columns.id);
    match type_of(columns, order) {
        Some(kind) if INTEGER_TYPES.contains(&kind) => Ok(order.to_string()),
        Some(kind) => Err(Error::Config(format!(
            "column '{order}' of '{table}' is {kind}: PostgreSQL polling needs an integer insertion-order \
             column (an integer id, or --order-column NAME, e.g. seq BIGSERIAL)"
        ))),
        None => Err(Error::Config(format!("table '{table}' has no column '{order}'"))),
    }
}

/// Every unsent row in `order`, as (order, id, aggregatetype, aggregateid, type, payload bytes);
/// no LIMIT (the poll adds one, the logical source's catch-up reads it through a cursor).
pub(crate) fn select_sql(columns: &[(String, String)], options: &SourceOptions, order: &str) -> String {
    let table = &options.table;
    let Columns { id, aggregate_type, aggregate_id, event_type, payload, sent_at, .. } = &options.columns;
    let payload = if type_of(columns, payload) == Some("bytea") {
        payload.clone()
    } else {
        format!("convert_to({payload}::text, 'UTF8')")
    };
    let timestamp = match &options.columns.timestamp {
        Some(column) if INTEGER_TYPES.contains(&type_of(columns, column).unwrap_or_default()) => {
            format!("{column}::bigint")
        }
        Some(column) if type_of(columns, column).unwrap_or_default().ends_with(" with time zone") => {
            format!("round(extract(epoch from {column}) * 1000)::bigint")
        }
        // A timestamp without time zone is taken as UTC.
        Some(column) => format!("round(extract(epoch from {column} AT TIME ZONE 'UTC') * 1000)::bigint"),
        None => "NULL::bigint".to_string(),
    };
    let unsent = match options.after_send {
        AfterSend::Delete => String::new(),
        AfterSend::Mark => format!("WHERE {sent_at} IS NULL"),
    };
    format!(
        "SELECT {order}::bigint, {id}::text, {aggregate_type}::text, {aggregate_id}::text, {event_type}::text, \
         {payload}, {timestamp} FROM {table} {unsent} ORDER BY {order}"
    )
}

/// The poll's `SELECT` and the retiring statement, from the table's columns.
fn statements(columns: &[(String, String)], options: &SourceOptions) -> Result<(String, String), Error> {
    check_columns(columns, options)?;
    let order = order_column(columns, options)?;
    let (table, id, sent_at) = (&options.table, &options.columns.id, &options.columns.sent_at);
    let retire = match options.after_send {
        AfterSend::Delete => {
            format!(
                "DELETE FROM {table} WHERE ({order}, {id}::text) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))"
            )
        }
        AfterSend::Mark => format!(
            "UPDATE {table} SET {sent_at} = now() \
             WHERE ({order}, {id}::text) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))"
        ),
    };
    Ok((select_sql(columns, options, &order) + " LIMIT $1", retire))
}

/// One row of [`select_sql`]'s result.
pub(crate) fn outbox_row(row: &tokio_postgres::Row) -> Result<OutboxRow, tokio_postgres::Error> {
    let text = |index: usize| row.try_get::<_, Option<String>>(index).map(Option::unwrap_or_default);
    Ok(OutboxRow {
        position: row.try_get(0)?,
        id: text(1)?,
        aggregate_type: text(2)?,
        aggregate_id: text(3)?,
        event_type: text(4)?,
        payload: row.try_get(5)?,
        timestamp_ms: row.try_get(6)?,
    })
}

impl Source for PostgresSource {
    fn unsent(&mut self, limit: usize) -> Result<Vec<OutboxRow>, Error> {
        let limit = limit as i64;
        let rows = self.runtime.block_on(self.client.query(&self.select_sql, &[&limit])).map_err(database)?;
        rows.iter().map(outbox_row).collect::<Result<Vec<_>, tokio_postgres::Error>>().map_err(database)
    }

    /// One statement outside any explicit transaction: its own transaction. Rows are named by the
    /// order column *and* the id, so a non-unique order column cannot retire an unsent row.
    fn retire(&mut self, rows: &[&OutboxRow]) -> Result<(), Error> {
        let positions: Vec<i64> = rows.iter().map(|row| row.position).collect();
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        self.runtime.block_on(self.client.execute(&self.retire_sql, &[&positions, &ids])).map_err(database)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(order_type: &str) -> Vec<(String, String)> {
        [("id", "uuid"), ("seq", order_type), ("aggregatetype", "text"), ("aggregateid", "text")]
            .into_iter()
            .chain([("type", "text"), ("payload", "jsonb")])
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect()
    }

    fn options(order_column: Option<&str>) -> SourceOptions {
        SourceOptions {
            table: "outbox".into(),
            after_send: AfterSend::Delete,
            order_column: order_column.map(str::to_string),
            mode: crate::Mode::Poll,
            slot: None,
            columns: Columns::default(),
        }
    }

    #[test]
    fn a_uuid_id_needs_an_order_column() {
        let error = statements(&columns("bigint"), &options(None)).unwrap_err().to_string();
        assert!(error.contains("--order-column"), "{error}");
        let (select, retire) = statements(&columns("bigint"), &options(Some("seq"))).expect("seq orders");
        assert!(select.contains("ORDER BY seq"), "{select}");
        assert!(retire.starts_with("DELETE FROM outbox WHERE (seq, id::text)"), "{retire}");
    }

    #[test]
    fn missing_tables_and_columns_are_named() {
        let error = statements(&[], &options(Some("seq"))).unwrap_err().to_string();
        assert!(error.contains("no table 'outbox'"), "{error}");
        let mark = SourceOptions { after_send: AfterSend::Mark, ..options(Some("seq")) };
        let error = statements(&columns("bigint"), &mark).unwrap_err().to_string();
        assert!(error.contains("sent_at"), "{error}");
    }
}
