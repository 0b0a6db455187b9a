//! `once sink`: apply each record's effect to PostgreSQL or SQLite exactly once (crate
//! `once-sink`; docs/design/sink.md). The command parses flags, opens the database, turns SIGTERM
//! and SIGINT into a stop request — the batch in hand is finished, then it exits 0 — and runs
//! the sink's loop. A fatal error (a poison record, a database that cannot be reached) ends it
//! non-zero with the message on stderr.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::clients::client_config;

#[derive(Args)]
pub struct SinkArgs {
    /// Broker to talk to, HOST:PORT (any Kafka-compatible cluster).
    #[arg(long, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Consumer group: assigns partitions, and names this sink's rows in the position table.
    #[arg(long, value_name = "NAME")]
    group: String,
    /// Topic to read (repeatable).
    #[arg(long = "topic", value_name = "T", required = true)]
    topics: Vec<String>,
    /// sqlite://PATH or postgres://user:pass@host:port/db.
    #[arg(long, value_name = "URL")]
    database: String,
    /// Statement run per record, in order (repeatable); parameters :key :value :value_text :topic
    /// :partition :offset :timestamp :header.NAME.
    #[arg(long = "sql", value_name = "STATEMENT", required = true)]
    sql: Vec<String>,
    /// Inbox: skip a record whose message id (header:NAME, or key) was already applied.
    #[arg(long, value_name = "header:NAME|key", value_parser = once_sink::Dedup::parse)]
    dedup: Option<once_sink::Dedup>,
    /// Most records polled into one round (one database transaction per partition in it).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_records: u32,
}

pub fn run(args: SinkArgs) -> anyhow::Result<()> {
    let filter = std::env::var("ONCE_LOG").unwrap_or_else(|_| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).context("invalid ONCE_LOG filter")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("listening for SIGTERM")?;
    }
    let backend = once_sink::open_backend(&args.database, &args.sql).context("opening the database")?;
    let options = once_sink::SinkOptions {
        group: args.group,
        topics: args.topics,
        batch_records: args.batch_records as usize,
        dedup: args.dedup,
    };
    let summary = once_sink::run(client_config(&args.bootstrap), backend, options, stop)?;
    eprintln!(
        "once sink: stopped; applied {} records, skipped {} duplicates, {} batches refused",
        summary.applied, summary.duplicates, summary.refused_batches
    );
    Ok(())
}
