//! `once outbox`: relay a transactional outbox table (PostgreSQL or SQLite) into topics, each row
//! once (crate `once-outbox`; docs/design/outbox.md). The command parses flags, opens the
//! database, turns SIGTERM and SIGINT into a stop request — the batch in hand is finished, then it
//! exits 0 — and runs the relay. A fatal error (a bad URL, a missing table or column, a record the
//! broker refused) ends it non-zero with the message on stderr; its unretired rows are resent by
//! the next run.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::clients::client_config_with;

#[derive(Args)]
pub struct OutboxArgs {
    /// Broker to talk to, HOST:PORT (any Kafka-compatible cluster).
    #[arg(long, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: crate::client_settings::ClientSettingsArgs,
    /// sqlite://PATH or postgres://user:pass@host:port/db.
    #[arg(long, env = "ONCE_OUTBOX_DATABASE", value_name = "URL")]
    database: String,
    /// The outbox table: columns id, aggregatetype, aggregateid, type, payload (Debezium's shape).
    #[arg(long, env = "ONCE_OUTBOX_TABLE", value_name = "NAME", default_value = "outbox")]
    table: String,
    /// Topic of each row; {aggregatetype} is replaced by the row's.
    #[arg(
        long,
        env = "ONCE_OUTBOX_TOPIC_TEMPLATE",
        value_name = "TEMPLATE",
        default_value = "outbox.event.{aggregatetype}"
    )]
    topic_template: String,
    /// What to do with a row once its record is acknowledged: delete it, or mark it (set its
    /// sent_at column, which must exist; rows with sent_at NULL are unsent).
    #[arg(long, env = "ONCE_OUTBOX_AFTER_SEND", value_name = "delete|mark", default_value = "delete")]
    after_send: once_outbox::AfterSend,
    /// PostgreSQL: the insertion-order column (default id, which must then be an integer; with a
    /// uuid id add e.g. seq BIGSERIAL and name it here). SQLite always uses rowid.
    #[arg(long, env = "ONCE_OUTBOX_ORDER_COLUMN", value_name = "NAME")]
    order_column: Option<String>,
    /// PostgreSQL: how rows are read. logical: committed inserts in commit order from a
    /// replication slot (needs wal_level=logical and a role with REPLICATION); poll: every
    /// unsent row by the order column; auto: logical where the server allows it, else poll.
    #[arg(long, env = "ONCE_OUTBOX_MODE", value_name = "auto|logical|poll", default_value = "auto")]
    mode: once_outbox::Mode,
    /// PostgreSQL logical decoding: the replication slot's and the publication's name (both
    /// created if missing; default once_outbox_TABLE).
    #[arg(long, env = "ONCE_OUTBOX_SLOT", value_name = "NAME")]
    slot: Option<String>,
    /// A column's name where it is not Debezium's: FIELD=COLUMN, FIELD one of id, aggregatetype,
    /// aggregateid, type, payload, timestamp (the record timestamp: a timestamp column or ms since
    /// the epoch; default the produce time), sent_at. Repeatable.
    #[arg(long = "column", value_name = "FIELD=COLUMN")]
    columns: Vec<String>,
    /// Most rows read, produced and retired as one batch.
    #[arg(long, env = "ONCE_OUTBOX_BATCH_ROWS", value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_rows: u32,
    /// Pause after a poll that found no unsent row, in ms.
    #[arg(long, env = "ONCE_OUTBOX_POLL_MS", value_name = "MS", default_value_t = 200)]
    poll_ms: u64,
    /// Partitions of a topic the relay creates (an existing topic is used as it is).
    #[arg(long, env = "ONCE_OUTBOX_PARTITIONS", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
}

pub fn run(args: OutboxArgs) -> anyhow::Result<()> {
    crate::worker::init_logging()?;
    let stop = crate::worker::stop_on_signals()?;
    let mut columns = once_outbox::Columns::default();
    for assignment in &args.columns {
        columns.set(assignment).map_err(|error| anyhow::anyhow!("--column {error}"))?;
    }
    let source_options = once_outbox::SourceOptions {
        table: args.table,
        after_send: args.after_send,
        order_column: args.order_column,
        mode: args.mode,
        slot: args.slot,
        columns,
    };
    let mut source = once_outbox::open_source(&args.database, &source_options).context("opening the outbox")?;
    // From here a SIGTERM or SIGINT is a stop request (the handler was installed above).
    tracing::info!(
        batch_rows = args.batch_rows,
        "relaying the outbox; SIGTERM or SIGINT stops it after the batch in hand"
    );
    let options = once_outbox::RelayOptions {
        topic_template: args.topic_template,
        batch_rows: args.batch_rows as usize,
        poll_interval: Duration::from_millis(args.poll_ms),
        partitions: args.partitions,
    };
    let summary = once_outbox::run(
        client_config_with(&args.bootstrap, &args.client_settings)?,
        source.as_mut(),
        &options,
        &stop,
    )?;
    crate::report!(
        "once outbox: stopped; relayed {} rows in {} batches, created {} topics",
        summary.retired,
        summary.batches,
        summary.topics_created
    );
    Ok(())
}
