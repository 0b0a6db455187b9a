//! The PostgreSQL source by logical decoding: committed outbox inserts in **commit order**, read
//! from a logical replication slot (plugin `pgoutput`, a publication of the table's inserts only),
//! through the SQL interface (`pg_logical_slot_peek_binary_changes`). Peeking does not move the
//! slot; it is moved (`pg_replication_slot_advance`) only after every record of the batch is
//! acknowledged by the broker and the batch's rows are retired. A crash anywhere before that
//! decodes the same transactions again, and the topic's `dedup.source=header:id` stores each id
//! once. docs/design/outbox.md has the argument.
//!
//! - **Heartbeat.** A peek that finds nothing of the table's still moves the slot to the position
//!   it decoded up to, so a slot on an idle outbox never holds back WAL that other tables or other
//!   databases of the cluster write.
//! - **Catch-up.** Rows committed before the slot existed are not in its stream. When the table
//!   has an insertion-order column, each start first sends every unsent row in the table, in that
//!   order, from one snapshot taken after the slot exists (a `REPEATABLE READ` cursor on a second
//!   connection), then follows the stream; rows in both are sent twice and stored once. Without
//!   such a column (Debezium's uuid `id`), rows written before the slot was created cannot be put
//!   in order: the first start shows there are none (the unsent rows of a snapshot taken after
//!   the slot exists, less those the slot decodes) or refuses (dropping a slot it just created);
//!   a comment on the publication records that it was shown, so a crash before that repeats it.
//! - **One relay per slot**: a session advisory lock, held for the relay's life; a second relay
//!   on the slot waits a few seconds (the holder may be a killed relay's session, which PostgreSQL
//!   ends) and then stops with an error naming the holder.

use std::collections::HashMap;

use tokio::runtime::Runtime;
use tokio_postgres::Client;

use crate::pgoutput::{self, Message, Value};
use crate::postgres::{check_columns, connect, database, outbox_row, runtime, select_sql, table_columns};
use crate::{AfterSend, Columns, Error, OutboxRow, Source, SourceOptions};

/// The cursor the catch-up reads through.
const CATCH_UP_CURSOR: &str = "once_outbox_catch_up";

/// How long a starting relay waits for another session to release the slot's lock (a relay
/// killed a moment ago, whose session PostgreSQL has not ended yet) before it stops.
const SLOT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct LogicalSource {
    runtime: Runtime,
    client: Client,
    slot: String,
    publication: String,
    /// The outbox table's oid: inserts into other tables (a publication made by hand) are skipped.
    table_oid: u32,
    /// Column names of the table by relation id, from the stream's Relation messages.
    relations: HashMap<u32, Vec<(String, u32)>>,
    retire_sql: String,
    columns: Columns,
    /// The unsent rows that predate the stream, while they are being sent.
    catch_up: Option<Client>,
    /// Where the slot moves once the batch in hand is retired: the end of its last transaction,
    /// or the position the peek decoded up to.
    pending_advance: Option<u64>,
    /// Stream rows handed out so far: their `position` (commit order within this run).
    streamed: i64,
}

/// The slot and publication a table's relay uses by default.
pub fn default_slot(table: &str) -> String {
    format!("once_outbox_{table}")
}

/// What PostgreSQL's decoding stream may not hold (whole transactions, in commit order, one value
/// per column): checked, and a stream that breaks it stops the relay — the slot unmoved — instead
/// of panicking on input from the server.
fn stream_error(what: String) -> Error {
    Error::Database(format!("unexpected logical decoding stream: {what}"))
}

/// SQLSTATE of the errors the relay explains.
fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|code| code.code())
}

impl LogicalSource {
    /// Connects, checks the server can decode (`wal_level`, the role's REPLICATION), and creates
    /// the publication and the slot if they are missing. [`Error::Unavailable`] says why logical
    /// decoding cannot be used here (the caller may poll instead).
    pub fn open(url: &str, options: &SourceOptions) -> Result<LogicalSource, Error> {
        let runtime = runtime()?;
        let client = connect(&runtime, url)?;
        let table = &options.table;
        let columns = runtime.block_on(table_columns(&client, table))?;
        check_columns(&columns, options)?;
        let order = match &options.order_column {
            Some(column) => Some(crate::postgres::order_column(&columns, options).map(|_| column.clone())?),
            None => crate::postgres::order_column(&columns, options).ok(),
        };
        let slot = options.slot.clone().unwrap_or_else(|| default_slot(table));
        crate::check_identifier(&slot)?;
        let query_one = |sql: &str| runtime.block_on(client.query_one(sql, &[])).map_err(database);

        let wal_level: String = query_one("SHOW wal_level")?.get(0);
        if wal_level != "logical" {
            return Err(Error::Unavailable(format!(
                "wal_level is '{wal_level}'; logical decoding needs wal_level = logical \
                 (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
            )));
        }
        let role = query_one(
            "SELECT current_user::text, rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user",
        )?;
        let (user, may_replicate): (String, bool) = (role.get(0), role.get(1));
        if !may_replicate {
            return Err(Error::Unavailable(format!(
                "role '{user}' may not use replication slots (ALTER ROLE {user} REPLICATION)"
            )));
        }
        let (id, sent_at) = (&options.columns.id, &options.columns.sent_at);
        // Retired, and compared with decoded ids, in the id column's own type (its index serves; a
        // char(n) id's padding and a uuid's spelling do not matter).
        let id_type = crate::postgres::column_type(&columns, id).unwrap_or("text").to_string();
        let unsent_ids = match options.after_send {
            AfterSend::Delete => format!("SELECT count(*) FROM {table} WHERE {id} <> ALL($1::text[]::{id_type}[])"),
            AfterSend::Mark => {
                format!("SELECT count(*) FROM {table} WHERE {sent_at} IS NULL AND {id} <> ALL($1::text[]::{id_type}[])")
            }
        };
        // Values decode as text in this session's style: timestamps ISO in UTC, bytea as hex.
        runtime
            .block_on(client.batch_execute("SET DateStyle = ISO; SET TimeZone = 'UTC'; SET bytea_output = hex"))
            .map_err(database)?;
        let table_oid: u32 =
            runtime.block_on(client.query_one("SELECT to_regclass($1)::oid", &[table])).map_err(database)?.get(0);

        let source = LogicalSource {
            retire_sql: match options.after_send {
                AfterSend::Delete => format!("DELETE FROM {table} WHERE {id} = ANY($1::text[]::{id_type}[])"),
                AfterSend::Mark => format!(
                    "UPDATE {table} SET {sent_at} = now() WHERE {id} = ANY($1::text[]::{id_type}[]) AND {sent_at} IS NULL"
                ),
            },
            columns: options.columns.clone(),
            runtime,
            client,
            publication: slot.clone(),
            slot,
            table_oid,
            relations: HashMap::new(),
            catch_up: None,
            pending_advance: None,
            streamed: 0,
        };
        source.lock_slot()?;
        source.ensure_publication(table)?;
        let created = source.ensure_slot()?;
        let mut source = source;
        match order {
            Some(order) => source.start_catch_up(url, &select_sql(&columns, options, &order))?,
            // A slot created now has never been checked, whatever an old marker says (its slot
            // may have been dropped since: retired, invalidated, lost in a failover).
            None if !created && source.checked_marker()? => {}
            None => {
                // Not yet shown (a first start, one that ended before showing it, or a slot made by
                // hand) that every unsent row is in the slot's stream.
                let older = source.rows_older_than_slot(url, &unsent_ids, &id_type)?;
                if older > 0 {
                    if created {
                        source.drop_slot()?;
                    }
                    return Err(Error::Config(format!(
                        "'{table}' holds {older} unsent rows committed before the slot '{}' can decode, and no \
                         integer insertion-order column to send them in order: add one (e.g. ALTER TABLE {table} \
                         ADD COLUMN seq BIGSERIAL) and pass --order-column, or remove those rows",
                        source.slot
                    )));
                }
                source.set_checked_marker();
            }
        }
        tracing::info!(slot = %source.slot, publication = %source.publication, created, "decoding the outbox's inserts");
        Ok(source)
    }

    /// One relay per slot: a session advisory lock held for the relay's life. (The SQL interface
    /// holds the slot only during each call, so two relays would otherwise both run.) A lock held
    /// by a relay killed a moment ago is released once PostgreSQL ends its session (within about
    /// [`CLIENT_CHECK_MS`](crate::postgres::CLIENT_CHECK_MS) where the server checks for gone
    /// clients), so a restarted relay waits up to [`SLOT_LOCK_WAIT`] before it gives up.
    fn lock_slot(&self) -> Result<(), Error> {
        let key = format!("once_outbox:{}", self.slot);
        let started = std::time::Instant::now();
        let mut holder_named = false;
        loop {
            let locked: bool = self
                .runtime
                .block_on(self.client.query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key]))
                .map_err(database)?
                .get(0);
            if locked {
                return Ok(());
            }
            // The lock's key is the int4 hash widened to int8: classid holds its high half.
            let holder: Option<i32> = self
                .runtime
                .block_on(self.client.query_opt(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                     AND ((classid::int8 << 32) | objid::int8) = hashtext($1)::int8 LIMIT 1",
                    &[&key],
                ))
                .map_err(database)?
                .map(|row| row.get(0));
            let holder = holder.map_or_else(|| "a session that has just ended".to_string(), |pid| format!("pid {pid}"));
            if started.elapsed() >= SLOT_LOCK_WAIT {
                return Err(Error::Config(format!(
                    "another once outbox is relaying with slot '{}' ({holder} holds advisory lock \
                     hashtext('{key}'); if that relay is gone but its session lingers, end it with \
                     pg_terminate_backend(pid)); run one relay per slot",
                    self.slot
                )));
            }
            if !holder_named {
                holder_named = true;
                tracing::info!(slot = %self.slot, %holder, wait_s = SLOT_LOCK_WAIT.as_secs(), "another session holds the slot's lock; waiting for it to end");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The publication's comment that says this slot was shown to have no older rows left.
    fn marker(&self) -> String {
        format!("once outbox: no row older than slot {} was left unsent", self.slot)
    }

    fn checked_marker(&self) -> Result<bool, Error> {
        let comment: Option<String> = self
            .runtime
            .block_on(self.client.query_one(
                "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1",
                &[&self.publication],
            ))
            .map_err(database)?
            .get(0);
        Ok(comment.as_deref() == Some(self.marker().as_str()))
    }

    /// Records the check; a role that does not own the publication cannot, and then the check
    /// runs at every start (correct, only slower).
    fn set_checked_marker(&self) {
        let sql = format!("COMMENT ON PUBLICATION {} IS '{}'", self.publication, self.marker());
        if let Err(error) = self.runtime.block_on(self.client.batch_execute(&sql)) {
            tracing::warn!(error = %database(error), publication = %self.publication, "cannot record the check in the publication's comment; it runs at every start");
        }
    }

    /// Clears the check before a slot is created: the new slot has not been checked.
    fn clear_checked_marker(&self) {
        let sql = format!("COMMENT ON PUBLICATION {} IS NULL", self.publication);
        if let Err(error) = self.runtime.block_on(self.client.batch_execute(&sql)) {
            tracing::debug!(error = %database(error), "cannot clear the publication's comment");
        }
    }

    /// How many unsent rows the slot will never decode (committed before its position): those
    /// visible in a snapshot taken now, less those the slot decodes up to a position past it,
    /// counted in the snapshot and compared in the id column's type. (Counting the table alone
    /// would count rows committed since, which the slot has.) The slot is only peeked, never moved.
    fn rows_older_than_slot(&self, url: &str, count_sql: &str, id_type: &str) -> Result<i64, Error> {
        let reader = connect(&self.runtime, url)?;
        // The snapshot is taken by the transaction's first statement, before the position is read.
        self.runtime
            .block_on(reader.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1"))
            .map_err(database)?;
        // Every row the snapshot sees committed before this position; a peek needs it flushed.
        let past = self.lsn("SELECT pg_current_wal_insert_lsn()::text")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.lsn("SELECT pg_current_wal_flush_lsn()::text")? < past {
            if std::time::Instant::now() > deadline {
                return Err(Error::Database("the WAL was not flushed within 30 s".into()));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let decoded = self.decoded_ids(past)?;
        tracing::debug!(decoded = decoded.len(), id_type, "ids the slot decodes");
        let count: i64 = self.runtime.block_on(reader.query_one(count_sql, &[&decoded])).map_err(database)?.get(0);
        self.runtime.block_on(reader.batch_execute("COMMIT")).map_err(database)?;
        Ok(count)
    }

    /// The ids of the outbox inserts the slot decodes up to `upto`, as text.
    fn decoded_ids(&self, upto: u64) -> Result<Vec<String>, Error> {
        let messages = self
            .runtime
            .block_on(self.client.query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, NULL, \
                 'proto_version', '1', 'publication_names', $3)",
                &[&self.slot, &pgoutput::lsn_text(upto), &self.publication],
            ))
            .map_err(|error| self.slot_error(error))?;
        let mut relations = HashMap::new();
        let mut decoded = Vec::new();
        for message in &messages {
            match pgoutput::decode(message.get(0)).map_err(|error| Error::Database(error.to_string()))? {
                Message::Relation(relation) => {
                    relations.insert(relation.id, relation.columns);
                }
                Message::Insert { relation, values } if relation == self.table_oid => {
                    let columns = relations.get(&relation).ok_or_else(|| {
                        Error::Database(format!("an insert into relation {relation} before its description"))
                    })?;
                    let index = columns.iter().position(|(name, _)| *name == self.columns.id);
                    if let Some(Value::Text(id)) = index.map(|index| &values[index]) {
                        decoded.push(String::from_utf8_lossy(id).into_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(decoded)
    }

    fn lsn(&self, sql: &str) -> Result<u64, Error> {
        let text: String = self.runtime.block_on(self.client.query_one(sql, &[])).map_err(database)?.get(0);
        pgoutput::parse_lsn(&text).ok_or_else(|| Error::Database(format!("an LSN '{text}'")))
    }

    fn ensure_publication(&self, table: &str) -> Result<(), Error> {
        // pg_publication_tables lists a table however it is published (FOR TABLE, FOR TABLES IN
        // SCHEMA, FOR ALL TABLES), under its partition root when the publication publishes so.
        let existing = self
            .runtime
            .block_on(self.client.query_opt(
                "SELECT pubinsert, pubviaroot, EXISTS (SELECT 1 FROM pg_publication_tables t \
                 JOIN pg_namespace n ON n.nspname = t.schemaname \
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename \
                 WHERE t.pubname = p.pubname AND c.oid = $2) \
                 FROM pg_publication p WHERE pubname = $1",
                &[&self.publication, &self.table_oid],
            ))
            .map_err(|error| match sqlstate(&error) {
                // pubviaroot and publish_via_partition_root came with PostgreSQL 13.
                Some("42703") => Error::Unavailable("logical decoding needs PostgreSQL 13 or later".into()),
                _ => database(error),
            })?;
        let partitioned: bool = self
            .runtime
            .block_on(self.client.query_one("SELECT relkind = 'p' FROM pg_class WHERE oid = $1", &[&self.table_oid]))
            .map_err(database)?
            .get(0);
        match existing.map(|row| (row.get::<_, bool>(0), row.get::<_, bool>(1), row.get::<_, bool>(2))) {
            Some((true, via_root, true)) if via_root || !partitioned => self.check_publication_filters(table),
            Some(_) => Err(Error::Config(format!(
                "publication '{}' exists but does not publish inserts into '{table}' as that table{}: \
                 drop it (and the slot '{}') to let the relay create both",
                self.publication,
                if partitioned { " (a partitioned table needs publish_via_partition_root = true)" } else { "" },
                self.slot
            ))),
            None => {
                // Inserts only; a partitioned table's rows under the table's own id.
                let create = format!(
                    "CREATE PUBLICATION {} FOR TABLE {table} WITH (publish = 'insert', publish_via_partition_root = true)",
                    self.publication
                );
                match self.runtime.block_on(self.client.batch_execute(&create)) {
                    Ok(()) => Ok(()),
                    // Another relay created it meanwhile.
                    Err(error) if sqlstate(&error) == Some("42710") => Ok(()),
                    Err(error) if sqlstate(&error) == Some("42501") => Err(Error::Unavailable(format!(
                        "creating publication '{}' needs CREATE on the database and ownership of '{table}' ({}); \
                         or have a role with both run once: {create}",
                        self.publication,
                        database(error)
                    ))),
                    Err(error) => Err(database(error)),
                }
            }
        }
    }

    /// A row filter or a column list on the publication would hide rows or columns from the
    /// relay, and the slot would move past them (PostgreSQL 15 and later have them).
    fn check_publication_filters(&self, table: &str) -> Result<(), Error> {
        let filtered = self.runtime.block_on(self.client.query_opt(
            "SELECT prqual IS NOT NULL OR prattrs IS NOT NULL FROM pg_publication_rel r \
             JOIN pg_publication p ON p.oid = r.prpubid WHERE p.pubname = $1 AND r.prrelid = $2",
            &[&self.publication, &self.table_oid],
        ));
        match filtered {
            Ok(Some(row)) if row.get::<_, bool>(0) => Err(Error::Config(format!(
                "publication '{}' has a row filter or a column list on '{table}': the relay must see every row whole",
                self.publication
            ))),
            // Before PostgreSQL 15 there are no such columns, and no filters.
            Err(error) if sqlstate(&error) == Some("42703") => Ok(()),
            Err(error) => Err(database(error)),
            Ok(_) => Ok(()),
        }
    }

    /// Creates the slot if it is missing; whether it did.
    fn ensure_slot(&self) -> Result<bool, Error> {
        let existing = self
            .runtime
            .block_on(self.client.query_opt(
                "SELECT plugin::text, database::text, current_database()::text FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&self.slot],
            ))
            .map_err(database)?;
        if let Some(row) = existing {
            let (plugin, slot_database, here): (Option<String>, Option<String>, String) =
                (row.get(0), row.get(1), row.get(2));
            if plugin.as_deref() != Some("pgoutput") || slot_database.as_deref() != Some(here.as_str()) {
                return Err(Error::Config(format!(
                    "replication slot '{}' exists but is not a pgoutput slot of database '{here}' \
                     (plugin {plugin:?}, database {slot_database:?}): name another with --slot",
                    self.slot
                )));
            }
            return Ok(false);
        }
        self.clear_checked_marker();
        let created = self.runtime.block_on(
            self.client
                .query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&self.slot]),
        );
        match created {
            Ok(row) => {
                tracing::info!(slot = %self.slot, at = %row.get::<_, String>(0), "created the replication slot");
                Ok(true)
            }
            // 53400: every slot taken; 55000: max_replication_slots = 0.
            Err(error) if matches!(sqlstate(&error), Some("53400" | "55000")) => Err(Error::Unavailable(format!(
                "cannot create replication slot '{}': {}; raise max_replication_slots",
                self.slot,
                database(error)
            ))),
            Err(error) => Err(database(error)),
        }
    }

    fn drop_slot(&self) -> Result<(), Error> {
        self.runtime
            .block_on(self.client.execute("SELECT pg_drop_replication_slot($1)", &[&self.slot]))
            .map_err(database)?;
        Ok(())
    }

    /// Opens the catch-up cursor: one snapshot, taken now that the slot exists, so every row
    /// committed before the slot's start is in it, in insertion order.
    fn start_catch_up(&mut self, url: &str, select: &str) -> Result<(), Error> {
        let reader = connect(&self.runtime, url)?;
        let open = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; DECLARE {CATCH_UP_CURSOR} NO SCROLL CURSOR FOR {select}"
        );
        self.runtime.block_on(reader.batch_execute(&open)).map_err(database)?;
        self.catch_up = Some(reader);
        Ok(())
    }

    fn catch_up_rows(&mut self, reader: &Client, limit: usize) -> Result<Vec<OutboxRow>, Error> {
        let rows = self
            .runtime
            .block_on(reader.query(&format!("FETCH {limit} FROM {CATCH_UP_CURSOR}"), &[]))
            .map_err(database)?;
        rows.iter().map(outbox_row).collect::<Result<Vec<_>, _>>().map_err(database)
    }

    /// Moves the slot to `lsn` (never back: a position it already passed is left alone).
    fn advance(&self, lsn: u64) -> Result<(), Error> {
        let target = pgoutput::lsn_text(lsn);
        self.runtime
            .block_on(self.client.query_one(
                "SELECT pg_replication_slot_advance(slot_name, GREATEST($2::text::pg_lsn, confirmed_flush_lsn))::text \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot, &target],
            ))
            .map_err(|error| self.slot_error(error))?;
        Ok(())
    }

    fn slot_error(&self, error: tokio_postgres::Error) -> Error {
        let detail = database(error);
        let message = detail.to_string();
        if message.contains("SQLSTATE 55006") {
            return Error::Config(format!("replication slot '{}' is in use by another session: {message}", self.slot));
        }
        if message.contains("can no longer get changes") || message.contains("has been invalidated") {
            return Error::Config(format!(
                "replication slot '{}' was invalidated and has lost WAL ({message}): rows committed meanwhile may \
                 never be decoded. Drop the slot (SELECT pg_drop_replication_slot('{}')) and restart the relay with \
                 --order-column, which sends every unsent row of the table first",
                self.slot, self.slot
            ));
        }
        if message.contains("SQLSTATE 42704") && message.contains("publication") {
            return Error::Config(format!(
                "the slot '{}' cannot see publication '{}' ({message}); it was created after the slot started: \
                 drop the slot and restart the relay",
                self.slot, self.publication
            ));
        }
        detail
    }

    /// Decodes committed transactions from the slot's position on, up to `limit` messages (whole
    /// transactions), and returns the outbox rows they inserted, in commit order.
    fn stream_rows(&mut self, limit: usize) -> Result<Vec<OutboxRow>, Error> {
        loop {
            let upto: String = self
                .runtime
                .block_on(self.client.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]))
                .map_err(database)?
                .get(0);
            let upto = pgoutput::parse_lsn(&upto).ok_or_else(|| Error::Database(format!("an LSN '{upto}'")))?;
            let messages = self
                .runtime
                .block_on(self.client.query(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3, \
                     'proto_version', '1', 'publication_names', $4)",
                    &[&self.slot, &pgoutput::lsn_text(upto), &(limit as i32), &self.publication],
                ))
                .map_err(|error| self.slot_error(error))?;
            let mut rows = Vec::new();
            let mut open: Option<u32> = None;
            let mut last_commit = None;
            for message in &messages {
                let data: &[u8] = message.get(0);
                match pgoutput::decode(data).map_err(|error| Error::Database(error.to_string()))? {
                    Message::Begin { xid } => {
                        if open.is_some() {
                            return Err(stream_error(format!("a Begin inside transaction {open:?}")));
                        }
                        open = Some(xid);
                    }
                    Message::Commit { end_lsn } => {
                        if open.take().is_none() {
                            return Err(stream_error("a Commit without its Begin".into()));
                        }
                        if last_commit >= Some(end_lsn) {
                            return Err(stream_error("commits out of commit order".into()));
                        }
                        last_commit = Some(end_lsn);
                    }
                    Message::Relation(relation) => {
                        self.relations.insert(relation.id, relation.columns);
                    }
                    Message::Insert { relation, values } if relation == self.table_oid => {
                        if open.is_none() {
                            return Err(stream_error("an Insert outside a transaction".into()));
                        }
                        rows.push(self.row(relation, values)?);
                    }
                    Message::Insert { .. } | Message::Other(_) => {}
                }
            }
            // The SQL interface returns whole transactions.
            if open.is_some() {
                return Err(stream_error(format!("a peek ended inside transaction {open:?}")));
            }
            // Fewer messages than asked for: the peek decoded everything committed before `upto`.
            let decoded_to = if messages.len() < limit {
                upto
            } else {
                last_commit.ok_or_else(|| stream_error("a full peek without a commit".into()))?
            };
            if rows.is_empty() {
                // Nothing of the outbox's: the heartbeat, so an idle outbox's slot holds no WAL back.
                self.advance(decoded_to)?;
                if messages.len() < limit {
                    return Ok(rows);
                }
                continue;
            }
            self.pending_advance = Some(decoded_to);
            return Ok(rows);
        }
    }

    fn row(&mut self, relation: u32, values: Vec<Value>) -> Result<OutboxRow, Error> {
        let columns = self
            .relations
            .get(&relation)
            .ok_or_else(|| Error::Database(format!("an insert into relation {relation} before its description")))?;
        if columns.len() != values.len() {
            return Err(stream_error(format!(
                "an insert of {} values into a relation of {} columns",
                values.len(),
                columns.len()
            )));
        }
        let text = |name: &str| -> Result<(Option<Vec<u8>>, u32), Error> {
            let index = columns
                .iter()
                .position(|(column, _)| column == name)
                .ok_or_else(|| Error::Config(format!("the decoded outbox table has no column '{name}'")))?;
            match &values[index] {
                Value::Null => Ok((None, columns[index].1)),
                Value::Text(bytes) => Ok((Some(bytes.clone()), columns[index].1)),
                Value::Unchanged => Err(Error::Database(format!("an insert without the value of '{name}'"))),
            }
        };
        let string = |value: Option<Vec<u8>>| String::from_utf8_lossy(&value.unwrap_or_default()).into_owned();
        const BYTEA: u32 = 17;
        let names = &self.columns;
        let payload = match text(&names.payload)? {
            (Some(bytes), BYTEA) => Some(
                pgoutput::bytea_from_text(&bytes)
                    .ok_or_else(|| Error::Database("a bytea payload not in hex form".to_string()))?,
            ),
            (value, _) => value,
        };
        let timestamp_ms = match &names.timestamp {
            Some(column) => match text(column)? {
                (Some(value), _) => {
                    let stamp = pgoutput::timestamp_ms(&value);
                    if stamp.is_none() {
                        tracing::warn!(value = %String::from_utf8_lossy(&value), "an unreadable timestamp: the record gets the produce time");
                    }
                    stamp
                }
                (None, _) => None,
            },
            None => None,
        };
        let row = OutboxRow {
            position: self.streamed + 1,
            id: string(text(&names.id)?.0),
            aggregate_type: string(text(&names.aggregate_type)?.0),
            aggregate_id: string(text(&names.aggregate_id)?.0),
            event_type: string(text(&names.event_type)?.0),
            payload,
            timestamp_ms,
        };
        self.streamed += 1;
        Ok(row)
    }
}

impl Source for LogicalSource {
    fn unsent(&mut self, limit: usize) -> Result<Vec<OutboxRow>, Error> {
        // A batch not wholly retired (the relay stopped with records unacknowledged) leaves the
        // slot where it was: its transactions decode again.
        self.pending_advance = None;
        if let Some(reader) = self.catch_up.take() {
            let rows = self.catch_up_rows(&reader, limit)?;
            if rows.len() == limit {
                self.catch_up = Some(reader);
            } else {
                self.runtime.block_on(reader.batch_execute("COMMIT")).map_err(database)?;
                tracing::info!("caught up with the rows written before decoding; following the slot");
            }
            if !rows.is_empty() {
                return Ok(rows);
            }
        }
        self.stream_rows(limit)
    }

    /// Retires by id (the stream has no order column value); one statement, its own transaction.
    fn retire(&mut self, rows: &[&OutboxRow]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        self.runtime.block_on(self.client.execute(&self.retire_sql, &[&ids])).map_err(database)?;
        Ok(())
    }

    /// Only now does the slot move past the batch: its records are stored and its rows retired.
    fn batch_done(&mut self) -> Result<(), Error> {
        match self.pending_advance.take() {
            Some(lsn) => self.advance(lsn),
            None => Ok(()),
        }
    }
}
