//! Relay a transactional outbox table into Kafka topics: each committed row becomes one record
//! (key = `aggregateid`, headers `id` and `type`, value = `payload`) on the topic its
//! `aggregatetype` names, and the row is deleted (or marked) only after the broker acknowledged
//! its record. A crash in between resends the row; a topic with `dedup.source=header:id` stores
//! it once. docs/design/outbox.md has the crash argument and the ordering guarantee.
//!
//! # Layout
//! - [`relay`] — the loop: poll unsent rows, create missing topics, produce with an idempotent
//!   producer, wait for the delivery reports, then retire the acknowledged rows.
//! - [`sqlite`] — the SQLite source: unsent rows in `rowid` order.
//! - [`postgres`] — the PostgreSQL source by polling: every visible unsent row in an
//!   insertion-order column.
//! - [`logical`] — the PostgreSQL source by logical decoding: committed inserts in commit order
//!   from a replication slot, moved only after the records are acknowledged.
//! - [`pgoutput`] — the decoder of the messages the slot's `pgoutput` plugin sends.
//! - [`hooks`] — test-only crash points (feature `test-hooks`).

pub mod hooks;
pub mod logical;
pub mod pgoutput;
pub mod postgres;
pub mod relay;
pub mod sqlite;

pub use relay::{run, RelayOptions, Summary};

/// Everything that ends the relay. Each is fatal: the rows not yet retired are resent by the
/// next run, so stopping is always safe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or URL that cannot work (a bad URL, a missing table or column).
    #[error("{0}")]
    Config(String),
    /// The database refused or lost a statement.
    #[error("database: {0}")]
    Database(String),
    /// Logical decoding cannot be used on this server (`wal_level`, the role's REPLICATION, the
    /// table's owner); `--mode auto` polls instead.
    #[error("logical decoding unavailable: {0}")]
    Unavailable(String),
    /// The producer or admin client failed in a way retrying does not fix.
    #[error("kafka: {0}")]
    Kafka(String),
}

/// What happens to a row once its record is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSend {
    /// `DELETE` the row.
    Delete,
    /// Set its `sent_at` column (which must exist) to the current time; unsent rows are those
    /// whose `sent_at` is NULL.
    Mark,
}

impl std::str::FromStr for AfterSend {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "delete" => Ok(AfterSend::Delete),
            "mark" => Ok(AfterSend::Mark),
            other => Err(format!("'{other}': expected 'delete' or 'mark'")),
        }
    }
}

/// The column `--after-send mark` sets, unless renamed.
pub const MARK_COLUMN: &str = "sent_at";

/// The outbox table's column names: Debezium's outbox event router's by default, each renamable
/// with `--column FIELD=NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    /// The message id: header `id`.
    pub id: String,
    /// The topic, through the template.
    pub aggregate_type: String,
    /// The record key.
    pub aggregate_id: String,
    /// Header `type`.
    pub event_type: String,
    /// The record value.
    pub payload: String,
    /// The record timestamp (a timestamp, or an integer of milliseconds since the epoch); none
    /// means the time the record is produced.
    pub timestamp: Option<String>,
    /// The column `--after-send mark` sets.
    pub sent_at: String,
}

impl Default for Columns {
    fn default() -> Columns {
        Columns {
            id: "id".into(),
            aggregate_type: "aggregatetype".into(),
            aggregate_id: "aggregateid".into(),
            event_type: "type".into(),
            payload: "payload".into(),
            timestamp: None,
            sent_at: MARK_COLUMN.into(),
        }
    }
}

impl Columns {
    /// The fields `--column` names.
    pub const FIELDS: &'static str = "id, aggregatetype, aggregateid, type, payload, timestamp, sent_at";

    /// Applies one `FIELD=NAME`.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (field, name) =
            assignment.split_once('=').ok_or_else(|| format!("'{assignment}': expected FIELD=COLUMN"))?;
        check_identifier(name).map_err(|error| error.to_string())?;
        let name = name.to_string();
        match field {
            "id" => self.id = name,
            "aggregatetype" => self.aggregate_type = name,
            "aggregateid" => self.aggregate_id = name,
            "type" => self.event_type = name,
            "payload" => self.payload = name,
            "timestamp" => self.timestamp = Some(name),
            "sent_at" => self.sent_at = name,
            other => return Err(format!("'{other}' is not an outbox field (one of {})", Self::FIELDS)),
        }
        Ok(())
    }

    /// The columns a source reads (and `sent_at` with `--after-send mark`).
    pub fn needed(&self, after_send: AfterSend) -> Vec<&str> {
        let mut needed = vec![&*self.id, &self.aggregate_type, &self.aggregate_id, &self.event_type, &self.payload];
        needed.extend(self.timestamp.as_deref());
        if after_send == AfterSend::Mark {
            needed.push(&self.sent_at);
        }
        needed
    }
}

/// One unsent outbox row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// The row's place in insertion order (SQLite `rowid`, the PostgreSQL order column); names
    /// the row when it is retired.
    pub position: i64,
    /// The outbox id, the record's message id (header `id`).
    pub id: String,
    pub aggregate_type: String,
    /// The record key: one aggregate's records share a partition, hence an order.
    pub aggregate_id: String,
    /// Header `type`.
    pub event_type: String,
    pub payload: Option<Vec<u8>>,
    /// The record timestamp, ms since the epoch (the timestamp column's); `None`: produce time.
    pub timestamp_ms: Option<i64>,
}

/// Where outbox rows come from.
pub trait Source {
    /// Up to `limit` unsent rows, in insertion order, as one consistent read.
    fn unsent(&mut self, limit: usize) -> Result<Vec<OutboxRow>, Error>;
    /// Deletes or marks `rows` (read by [`Source::unsent`]), in one transaction of its own.
    fn retire(&mut self, rows: &[&OutboxRow]) -> Result<(), Error>;
    /// Called after [`Source::retire`] when every row of the batch was acknowledged and retired:
    /// a source that tracks a position (the logical slot) moves it past the batch now.
    fn batch_done(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// How a PostgreSQL outbox is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Logical decoding where the server allows it, else polling (with a log line saying why).
    Auto,
    /// Logical decoding only: a server that cannot decode is an error.
    Logical,
    /// Polling only.
    Poll,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Mode::Auto),
            "logical" => Ok(Mode::Logical),
            "poll" => Ok(Mode::Poll),
            other => Err(format!("'{other}': expected 'auto', 'logical' or 'poll'")),
        }
    }
}

/// Which table to relay and how.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub table: String,
    pub after_send: AfterSend,
    /// PostgreSQL only: the insertion-order column; `None` means `id`, which must then be an
    /// integer column to poll (logical decoding needs one only for rows older than its slot).
    pub order_column: Option<String>,
    /// PostgreSQL only: logical decoding or polling.
    pub mode: Mode,
    /// PostgreSQL logical decoding: the slot and publication name (default `once_outbox_TABLE`).
    pub slot: Option<String>,
    pub columns: Columns,
}

/// Opens `sqlite://PATH` or `postgres://…` and checks the table has the columns needed.
pub fn open_source(url: &str, options: &SourceOptions) -> Result<Box<dyn Source>, Error> {
    check_identifier(&options.table)?;
    if let Some(column) = &options.order_column {
        check_identifier(column)?;
    }
    match once_sink::DatabaseUrl::parse(url).map_err(Error::Config)? {
        once_sink::DatabaseUrl::Sqlite(_) if options.mode == Mode::Logical => {
            Err(Error::Config("--mode logical is PostgreSQL's; SQLite is polled in rowid order".into()))
        }
        once_sink::DatabaseUrl::Sqlite(path) => Ok(Box::new(sqlite::SqliteSource::open(path, options)?)),
        once_sink::DatabaseUrl::Postgres(url) => match options.mode {
            Mode::Poll => Ok(Box::new(postgres::PostgresSource::open(url, options)?)),
            Mode::Logical => Ok(Box::new(logical::LogicalSource::open(url, options)?)),
            Mode::Auto => match logical::LogicalSource::open(url, options) {
                Ok(source) => Ok(Box::new(source)),
                Err(Error::Unavailable(reason)) => {
                    tracing::warn!(%reason, "logical decoding unavailable: polling the outbox instead");
                    let polled = postgres::PostgresSource::open(url, options)
                        .map_err(|error| Error::Config(format!("{error} (logical decoding unavailable: {reason})")))?;
                    Ok(Box::new(polled))
                }
                Err(error) => Err(error),
            },
        },
    }
}

/// Table and column names go into SQL text, so only plain identifiers are accepted.
pub(crate) fn check_identifier(name: &str) -> Result<(), Error> {
    let plain = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        Ok(())
    } else {
        Err(Error::Config(format!("'{name}' is not a plain identifier (letters, digits, _)")))
    }
}

/// The topic for `row`: `template` with `{aggregatetype}` replaced.
pub fn topic_for(template: &str, row: &OutboxRow) -> String {
    template.replace("{aggregatetype}", &row.aggregate_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_template() {
        let row = OutboxRow {
            position: 1,
            id: "u1".into(),
            aggregate_type: "order".into(),
            aggregate_id: "o-7".into(),
            event_type: "Created".into(),
            payload: None,
            timestamp_ms: None,
        };
        assert_eq!(topic_for("outbox.event.{aggregatetype}", &row), "outbox.event.order");
        assert_eq!(topic_for("events", &row), "events");
    }

    #[test]
    fn identifiers_are_plain() {
        assert!(check_identifier("outbox").is_ok());
        assert!(check_identifier("my_outbox2").is_ok());
        assert!(check_identifier("outbox; DROP TABLE x").is_err());
        assert!(check_identifier("").is_err());
        assert!(check_identifier("1x").is_err());
    }

    #[test]
    fn columns_are_renamed_by_field() {
        let mut columns = Columns::default();
        assert_eq!(columns.needed(AfterSend::Delete), ["id", "aggregatetype", "aggregateid", "type", "payload"]);
        columns.set("payload=body").expect("a field");
        columns.set("timestamp=created_at").expect("a field");
        assert_eq!(
            columns.needed(AfterSend::Mark),
            ["id", "aggregatetype", "aggregateid", "type", "body", "created_at", "sent_at"]
        );
        assert!(columns.set("payload").is_err());
        assert!(columns.set("colour=x").unwrap_err().contains("not an outbox field"));
        assert!(columns.set("id=x; DROP TABLE y").is_err());
    }

    #[test]
    fn after_send_parses() {
        assert_eq!("delete".parse::<AfterSend>(), Ok(AfterSend::Delete));
        assert_eq!("mark".parse::<AfterSend>(), Ok(AfterSend::Mark));
        assert!("keep".parse::<AfterSend>().is_err());
    }
}
