//! `once`: a single-binary Kafka-compatible broker built for exactly-once processing.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use once_cli::{acls, admin, clients, copy, dedup_processor, groups, outbox, serve, sink, txn, users};

mod alloc;

/// The binary's allocator, not a library's: it is a process-wide choice, and the reason for it (the
/// codecs of every Kafka request the broker decodes) is the broker's; see [`alloc`].
#[global_allocator]
static ALLOCATOR: alloc::LazyHugeAllocator = alloc::LazyHugeAllocator;

#[derive(Parser)]
#[command(name = "once", version, about = "A Kafka-compatible broker built for exactly-once processing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// Create, list, describe, delete topics and alter their configs.
    Topic(admin::TopicArgs),
    /// Send lines from standard input as records, one record per line.
    Produce(clients::ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(clients::ConsumeArgs),
    /// List, describe (with lag), reset offsets of, and delete consumer groups.
    Group(groups::GroupArgs),
    /// Copy one topic to another exactly once: a transactional consume-transform-produce loop.
    Copy(copy::CopyArgs),
    /// Deduplicate a topic by message id into another, exactly once, over any Kafka-compatible
    /// cluster: a stream processor whose index lives in a changelog topic.
    Dedup(dedup_processor::DedupArgs),
    /// List, describe and abort transactions.
    Txn(txn::TxnArgs),
    /// Add, list and remove ACLs (with `once serve --authorization true`).
    Acl(acls::AclArgs),
    /// Create, list and delete SCRAM users (KIP-554).
    User(users::UserArgs),
    /// Apply each record's effect to PostgreSQL or SQLite exactly once, positions in the same
    /// database transaction.
    Sink(sink::SinkArgs),
    /// Relay a database's outbox table into topics, each row once, in order per aggregate.
    Outbox(outbox::OutboxArgs),
    /// Check a broker for lost, duplicated and reordered messages under injected faults; exit 1 on any
    /// anomaly.
    Check(once_check::CheckArgs),
    /// The `once check` producer process: sends the ids its stdin lists, reports deliveries on stdout.
    #[command(hide = true)]
    CheckProducer(once_check::ProducerArgs),
    /// Measure acks=all produce throughput and latency of a running broker beside raw append+fdatasync.
    Bench(once_bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(args) => admin::run(args),
        Command::Group(args) => groups::run(args),
        Command::Copy(args) => copy::run(args),
        Command::Dedup(args) => dedup_processor::run(args),
        Command::Txn(args) => txn::run(args),
        Command::Acl(args) => acls::run(args),
        Command::User(args) => users::run(args),
        Command::Sink(args) => sink::run(args),
        Command::Outbox(args) => outbox::run(args),
        Command::Produce(args) => clients::produce(args),
        Command::Consume(args) => clients::consume(args),
        Command::Bench(args) => once_bench::run(args),
        Command::CheckProducer(args) => once_check::run_producer(args),
        Command::Check(args) => return check(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            once_cli::logging::report(&format!("once: {error:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `once check` exits 0 when no anomaly was found, 1 when one was, 2 when the run could not complete.
fn check(args: once_check::CheckArgs) -> ExitCode {
    match once_check::run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            once_cli::logging::report(&format!("once check could not complete: {error:#}"));
            ExitCode::from(2)
        }
    }
}
