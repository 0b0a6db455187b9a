//! `once check` without the `once` binary: `cargo run --release -p once-check --example check -- --help`.
//! `check check-producer …` is the producer process the `dedup` and `txn` workloads start (the default
//! `--producer-cmd` is this executable's).

use clap::Parser;

#[derive(Parser)]
#[command(about = "Fault-injection checker for exactly-once queues on Kafka-compatible brokers")]
struct Cli {
    #[command(flatten)]
    check: once_check::CheckArgs,
}

#[derive(Parser)]
struct ProducerCli {
    #[command(flatten)]
    producer: once_check::ProducerArgs,
}

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("check-producer") {
        let args = std::env::args().enumerate().filter(|(index, _)| *index != 1).map(|(_, arg)| arg);
        return match once_check::run_producer(ProducerCli::parse_from(args).producer) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("check-producer: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match once_check::run(Cli::parse().check) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("once check: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
