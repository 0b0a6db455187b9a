//! `cargo bench -p once-bench -- --bootstrap HOST:PORT [flags]`: the same benchmark as `once bench`,
//! against an already running broker. Without `--bootstrap` or `ONCE_BOOTSTRAP` it says so and
//! succeeds, so that a workspace-wide `cargo bench` does not fail for want of a broker.

use clap::Parser;
use once_bench::BenchArgs;

#[derive(Parser)]
#[command(
    name = "once-bench",
    about = "acks=all produce throughput and latency, plain and idempotent, beside a raw append+fdatasync baseline"
)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> std::process::ExitCode {
    // cargo passes `--bench` to benchmarks built with `harness = false`; it is not ours.
    let arguments: Vec<String> = std::env::args().filter(|argument| argument != "--bench").collect();
    let has_bootstrap = arguments.iter().any(|argument| argument.starts_with("--bootstrap"))
        || std::env::var_os("ONCE_BOOTSTRAP").is_some();
    let asks_help = arguments.iter().any(|argument| argument == "--help" || argument == "-h");
    if !has_bootstrap && !asks_help {
        eprintln!("once-bench: skipped; it needs a running broker: cargo bench -p once-bench -- --bootstrap HOST:PORT");
        return std::process::ExitCode::SUCCESS;
    }
    match once_bench::run(Cli::parse_from(arguments).bench) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("once-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
