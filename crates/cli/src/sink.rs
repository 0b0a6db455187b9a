//! `once sink`: apply each record's effect to PostgreSQL or SQLite exactly once (crate
//! `once-sink`; docs/design/sink.md). The command parses flags, opens the database, turns SIGTERM
//! and SIGINT into a stop request — the batch in hand is finished, then it exits 0 — and runs
//! the sink's loop. A fatal error (a database that cannot be reached, a position the broker cannot
//! serve) ends it non-zero with the message on stderr; a poison record stops its partition only
//! (or goes to the dead-letter table with `--dead-letter`). `--status` prints where a sink stands.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;

use crate::clients::client_config_with;

#[derive(Args)]
pub struct SinkArgs {
    /// Broker to talk to, HOST:PORT (any Kafka-compatible cluster).
    #[arg(long, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: crate::client_settings::ClientSettingsArgs,
    /// Consumer group: assigns partitions, and names this sink's rows in the position table.
    #[arg(long, value_name = "NAME")]
    group: String,
    /// Topic to read (repeatable).
    #[arg(long = "topic", value_name = "T", required_unless_present = "status")]
    topics: Vec<String>,
    /// sqlite://PATH or postgres://user:pass@host:port/db.
    #[arg(long, value_name = "URL")]
    database: String,
    /// Statement run per record, in order (repeatable); parameters :key :value :value_text :topic
    /// :partition :offset :timestamp :header.NAME.
    #[arg(long = "sql", value_name = "STATEMENT", required_unless_present = "status")]
    sql: Vec<String>,
    /// Inbox: skip a record whose message id (header:NAME, or key) was already applied.
    #[arg(long, value_name = "header:NAME|key", value_parser = once_sink::Dedup::parse)]
    dedup: Option<once_sink::Dedup>,
    /// Most records polled into one round (one database transaction per partition in it).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_records: u32,
    /// Longest a round waits for more records after its first before it is applied (its
    /// transactions committed), when fewer than --batch-records arrive.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=600_000))]
    commit_interval_ms: u32,
    /// Consumer group session timeout: how long a member killed with SIGKILL (or paused) keeps its
    /// partitions before the group moves them. The fence keeps effects exactly once whatever it is.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1000..=3_600_000))]
    session_timeout_ms: u32,
    /// A poison record (a statement error that retrying will not fix) goes to the table
    /// once_sink_dead_letters in its batch's transaction, and its partition goes on. Without it,
    /// the partition stops at the record.
    #[arg(long)]
    dead_letter: bool,
    /// Print where the sink --group stands (positions from --database, partition ends from
    /// --bootstrap, lag, rate over 2 s) and exit.
    #[arg(long)]
    status: bool,
    /// A baseline for `once bench` and `once check`, never for data: positions in the group's
    /// committed offsets, committed after (or before) each batch's database commit. Applies
    /// records twice (or loses them) on a crash or a zombie.
    #[arg(long, value_name = "after|before", hide = true, value_parser = parse_order)]
    at_least_once: Option<once_sink::CommitOrder>,
}

fn parse_order(text: &str) -> Result<once_sink::CommitOrder, String> {
    match text {
        "after" => Ok(once_sink::CommitOrder::AfterDb),
        "before" => Ok(once_sink::CommitOrder::BeforeDb),
        _ => Err(format!("'{text}': expected 'after' or 'before'")),
    }
}

pub fn run(args: SinkArgs) -> anyhow::Result<()> {
    crate::worker::init_logging()?;
    if args.status {
        return status(&args);
    }
    let stop = crate::worker::stop_on_signals()?;
    let backend = once_sink::open_backend(&args.database, &args.sql).context("opening the database")?;
    let options = once_sink::SinkOptions {
        batch_records: args.batch_records as usize,
        commit_interval: Duration::from_millis(u64::from(args.commit_interval_ms)),
        dedup: args.dedup,
        dead_letter: args.dead_letter,
        delivery: args.at_least_once.map_or(once_sink::Delivery::ExactlyOnce, once_sink::Delivery::AtLeastOnce),
        ..once_sink::SinkOptions::new(args.group, args.topics)
    };
    let mut config = client_config_with(&args.bootstrap, &args.client_settings)?;
    config.set("session.timeout.ms", args.session_timeout_ms.to_string());
    // librdkafka requires heartbeats well inside the session.
    config.set("heartbeat.interval.ms", (args.session_timeout_ms / 3).min(3000).to_string());
    let summary = once_sink::run(config, backend, options, stop)?;
    crate::report!(
        "once sink: stopped; applied {} records, skipped {} duplicates, {} batches refused, {} dead letters",
        summary.applied,
        summary.duplicates,
        summary.refused_batches,
        summary.dead_lettered
    );
    for stopped in &summary.stopped {
        crate::report!("once sink: partition stopped at a poison record: {stopped}");
    }
    Ok(())
}

fn status(args: &SinkArgs) -> anyhow::Result<()> {
    // Read-only: a mistyped path is an error, not a new empty database; nothing is created.
    let mut backend = once_sink::open_reader(&args.database).context("opening the database")?;
    let config = client_config_with(&args.bootstrap, &args.client_settings)?;
    let partitions = once_sink::status::status(backend.as_mut(), &args.group, Some(&config), Duration::from_secs(2))?;
    if partitions.is_empty() {
        println!("sink {}: no positions stored yet in {}", args.group, args.database);
        return Ok(());
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64);
    print!("{}", once_sink::status::render(&args.group, &partitions, now_ms));
    Ok(())
}
