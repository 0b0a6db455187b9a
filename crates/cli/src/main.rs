//! `once`: a single-binary Kafka-compatible broker built for exactly-once processing.

use clap::{Parser, Subcommand};
use once_cli::{admin, clients, groups, serve};

#[global_allocator]
static ALLOCATOR: once_wire::alloc::LazyHugeAllocator = once_wire::alloc::LazyHugeAllocator;

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
    /// Measure acks=all produce throughput and latency of a running broker beside raw append+fdatasync.
    Bench(once_bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(args) => admin::run(args),
        Command::Produce(args) => clients::produce(args),
        Command::Consume(args) => clients::consume(args),
        Command::Group(args) => groups::run(args),
        Command::Bench(args) => once_bench::run(args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("once: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
