//! `once check` without the `once` binary: `cargo run --release -p once-check --example check -- --help`.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Fault-injection checker for exactly-once queues on Kafka-compatible brokers")]
struct Cli {
    #[command(flatten)]
    check: once_check::CheckArgs,
}

fn main() -> std::process::ExitCode {
    match once_check::run(Cli::parse().check) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("once check: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
