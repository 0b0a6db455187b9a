//! Benchmarks for Once: acks=all produce throughput and ack latency over the network, plain and
//! idempotent, beside a raw append+fdatasync baseline of the same batch sizes on the same disk,
//! measured in the same run.
//!
//! Machines are shared and noisy, so a figure alone says little; the ratios (Once to the raw
//! baseline, idempotent to plain), measured interleaved (plain, idempotent, raw, plain, …) in one
//! process, are the numbers to compare across machines and commits. The benchmark talks to the
//! broker only over the network, so it measures any Kafka-compatible broker.
//!
//! # Layout
//! - `lib.rs`: [`BenchArgs`] (the `once bench` flags), [`run`], and the interleaving of runs.
//! - `produce`: the produce workload, plain or idempotent ([`Workload`]) — topic setup, N
//!   librdkafka producers with acks=all, per-record ack latency, and the batch sizes librdkafka
//!   actually sent (from its statistics).
//! - `raw`: the baseline — a single thread appending buffers of that batch size to a file in the
//!   data directory with `write` + `fdatasync` after each.
//! - `summary`: percentiles of sorted samples and median/min/max over runs.
//! - `report`: the markdown table and the optional JSON file.
//! - [`copier`]: `--copier`, the consume-transform-produce copier (`once copy`), transactional at
//!   several commit intervals beside the non-transactional baseline.

pub mod copier;
mod produce;
mod raw;
mod report;
mod summary;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

pub use produce::{ProduceOutcome, Workload};
pub use raw::RawOutcome;

/// Flags of `once bench` (and of `cargo bench -p once-bench -- …`).
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Broker to benchmark, HOST:PORT: an already running broker, Once or any Kafka-compatible one.
    #[arg(long, env = "ONCE_BOOTSTRAP", value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// Directory where the raw append+fdatasync baseline writes its file; put it on the broker's
    /// disk [default: a temporary directory under the current directory].
    #[arg(long, env = "ONCE_BENCH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Records to produce per run (over all producers).
    #[arg(long, env = "ONCE_BENCH_RECORDS", default_value_t = 200_000)]
    pub records: u64,
    /// Bytes of each record's value.
    #[arg(long, env = "ONCE_BENCH_RECORD_BYTES", default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, env = "ONCE_BENCH_PARTITIONS", default_value_t = 1)]
    pub partitions: i32,
    /// Concurrent producer clients, one connection each.
    #[arg(long, env = "ONCE_BENCH_PRODUCERS", default_value_t = 4)]
    pub producers: usize,
    /// Records each producer may have sent and not yet had acknowledged. Bounds the client queue so
    /// that ack latency measures the broker rather than how far ahead the benchmark ran.
    #[arg(long, env = "ONCE_BENCH_IN_FLIGHT", default_value_t = 1024)]
    pub in_flight: usize,
    /// librdkafka's linger.ms: how long a producer waits to fill a batch. With a small
    /// `--in-flight` window batches never fill, so every ack waits this long.
    #[arg(long, env = "ONCE_BENCH_LINGER_MS", default_value_t = 5)]
    pub linger_ms: u64,
    /// Runs of each workload, interleaved; the report shows the median and the min/max.
    #[arg(long, env = "ONCE_BENCH_RUNS", default_value_t = 3)]
    pub runs: usize,
    /// Prefix of the topics the benchmark creates (one per run, deleted afterwards).
    #[arg(long, env = "ONCE_BENCH_TOPIC_PREFIX", default_value = "once-bench")]
    pub topic_prefix: String,
    /// Also write the results as JSON to this file.
    #[arg(long, env = "ONCE_BENCH_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Skip the idempotent produce workload (`enable.idempotence=true`), e.g. for a broker that
    /// does not support it; by default every run measures it beside the plain one.
    #[arg(long, env = "ONCE_BENCH_NO_IDEMPOTENT")]
    pub no_idempotent: bool,
    /// Measure the copier instead of produce: `once copy` from a pre-filled topic, transactional at
    /// each `--commit-intervals-ms` beside a non-transactional copier committing every 100 ms.
    #[arg(long, env = "ONCE_BENCH_COPIER")]
    pub copier: bool,
    /// Commit intervals of the transactional copier runs, in ms, comma-separated.
    #[arg(long, env = "ONCE_BENCH_COMMIT_INTERVALS_MS", value_delimiter = ',', default_value = "10,100,1000")]
    pub commit_intervals_ms: Vec<u64>,
    /// The copier command [default: this executable's `copy`].
    #[arg(long, env = "ONCE_BENCH_COPIER_CMD", value_name = "CMD")]
    pub copier_cmd: Option<String>,
    /// A few-second run for CI: 5,000 records, one run, a 1 s raw baseline.
    #[arg(long, env = "ONCE_BENCH_SMOKE")]
    pub smoke: bool,
}

/// What one run of the benchmark does, after `--smoke` and the defaults are applied.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The flags as given.
    pub args: BenchArgs,
    /// Records per run.
    pub records: u64,
    /// Runs of each workload.
    pub runs: usize,
    /// Longest a raw baseline run may take; it stops early rather than exceed this.
    pub raw_time_max: Duration,
    /// How long a record may wait for its acknowledgement before the run fails.
    pub delivery_timeout: Duration,
    /// How often librdkafka reports statistics (the source of the batch sizes).
    pub statistics_interval: Duration,
}

impl Plan {
    /// Applies `--smoke` and checks the flags.
    pub fn new(args: BenchArgs) -> anyhow::Result<Plan> {
        anyhow::ensure!(args.records > 0, "--records must be at least 1");
        anyhow::ensure!(args.record_bytes > 0, "--record-bytes must be at least 1");
        anyhow::ensure!(args.partitions > 0, "--partitions must be at least 1");
        anyhow::ensure!(args.producers > 0, "--producers must be at least 1");
        anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
        anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
        let plan = if args.smoke {
            Plan {
                records: args.records.min(5_000),
                runs: 1,
                raw_time_max: Duration::from_secs(1),
                delivery_timeout: Duration::from_secs(5),
                statistics_interval: Duration::from_millis(100),
                args,
            }
        } else {
            Plan {
                records: args.records,
                runs: args.runs,
                raw_time_max: Duration::from_secs(10),
                delivery_timeout: Duration::from_secs(60),
                statistics_interval: Duration::from_millis(500),
                args,
            }
        };
        Ok(plan)
    }
}

/// One run: the plain produce workload, the idempotent one (unless `--no-idempotent`), and the raw
/// baseline that followed them.
#[derive(Debug, Clone)]
pub struct RunSet {
    /// The plain produce workload (`enable.idempotence=false`) against the broker.
    pub plain: ProduceOutcome,
    /// The same workload with `enable.idempotence=true`; `None` with `--no-idempotent`.
    pub idempotent: Option<ProduceOutcome>,
    /// The raw append+fdatasync baseline with the batch size `plain` produced.
    pub raw: RawOutcome,
}

/// Runs the benchmark against `--bootstrap` and prints a markdown table to stdout.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args)?;
    if plan.args.copier {
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_millis())
            .unwrap_or_default();
        print!("{}", copier::run_all(&plan, run_id)?);
        return Ok(());
    }
    // Held until the end so that a default data directory is removed afterwards.
    let temporary_dir;
    let data_dir = match &plan.args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temporary_dir = tempfile::Builder::new()
                .prefix(".once-bench-")
                .tempdir_in(".")
                .context("creating a temporary directory under the current directory")?;
            temporary_dir.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let runs = run_interleaved(&plan, &data_dir)?;
    let results = report::Results::new(&plan, &data_dir, &runs);
    print!("{}", results.markdown());
    if let Some(path) = &plan.args.json {
        std::fs::write(path, results.json()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs plain, idempotent, then raw, `plan.runs` times, so that all three see the same drift of a
/// noisy machine.
fn run_interleaved(plan: &Plan, data_dir: &std::path::Path) -> anyhow::Result<Vec<RunSet>> {
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or_default();
    let mut runs = Vec::with_capacity(plan.runs);
    for index in 0..plan.runs {
        let topic = format!("{}-{run_id}-{index}", plan.args.topic_prefix);
        let plain = produce_logged(plan, index, Workload::Plain, &topic)?;
        let idempotent = if plan.args.no_idempotent {
            None
        } else {
            Some(produce_logged(plan, index, Workload::Idempotent, &format!("{topic}-idempotent"))?)
        };
        // Sized from the plain run, as before idempotence was measured, so the raw figures stay
        // comparable with earlier ones.
        let batch_bytes = plain.batch_bytes_average.round().max(1.0) as usize;
        let total_bytes = plain.records * plan.args.record_bytes as u64;
        eprintln!("run {}/{}: raw append+fdatasync of {batch_bytes} B batches", index + 1, plan.runs);
        let raw = raw::run(data_dir, batch_bytes, total_bytes, plan.raw_time_max)
            .with_context(|| format!("run {}: raw baseline in {}", index + 1, data_dir.display()))?;
        runs.push(RunSet { plain, idempotent, raw });
    }
    Ok(runs)
}

/// One produce workload of run `index`, with a line of progress before and after.
fn produce_logged(plan: &Plan, index: usize, workload: Workload, topic: &str) -> anyhow::Result<ProduceOutcome> {
    let (number, runs, name) = (index + 1, plan.runs, workload.name());
    eprintln!("run {number}/{runs}: {name} producing to {topic}");
    let outcome = produce::run(plan, topic, workload).with_context(|| format!("run {number}: {name} produce"))?;
    eprintln!(
        "run {number}/{runs}: {name}: {} records acknowledged in {:.2} s, {} batches in {} produce requests",
        outcome.records,
        outcome.elapsed.as_secs_f64(),
        outcome.batches,
        outcome.produce_requests
    );
    Ok(outcome)
}
