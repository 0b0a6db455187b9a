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
//! - `limits` (W0): loopback TCP throughput and raw append+fdatasync at given batch sizes.
//! - `matrix` (W1, W2): acks=all produce over record sizes × partition counts, plain and idempotent.
//! - `backlog` (W5, W6): consumer catch-up from a multi-GB backlog; time to serve after `kill -9`.
//! - [`peers`]: the produce workload in Redis', PostgreSQL's and NATS JetStream's own protocols.
//! - `sink` (issue 15): records/s that `once sink` applies into PostgreSQL exactly once, beside its
//!   at-least-once baseline, against a broker (`broker`) and, without `--database`, a PostgreSQL
//!   (`throwaway_postgres`) the benchmark starts itself.
//! - `http`: HTTP produce (`--http`) with and without Idempotency-Key beside Kafka produce at the
//!   same concurrency.
//! - `reader_latency` (W8): a synchronous producer's ack latency alone and beside a cold catch-up
//!   reader of the same partition.
//! - `broker`: a broker process the benchmark starts (the restart and sink workloads).
//! - `process`: the server's CPU seconds and peak RSS from `/proc` (`--broker-pid`).
//! - `rows`: the common table (markdown, TSV) of the workloads above.
//! - `latency` (W7): latency-bound senders (each waits for its ack) beside raw fdatasync, Redis and
//!   PostgreSQL (`throwaway_redis`, `throwaway_postgres`) at the same concurrency.
//! - [`wire_producer`]: a Kafka producer of our own on `once-wire`, several requests in flight also
//!   when idempotent; `wire_produce` measures idempotent ÷ plain with it beside librdkafka.

mod backlog;
mod broker;
pub mod copier;
mod http;
mod latency;
mod limits;
mod matrix;
pub mod peers;
mod process;
mod produce;
mod raw;
mod reader_latency;
mod report;
mod rows;
mod sink;
mod summary;
mod throwaway_postgres;
mod throwaway_redis;
mod wire_produce;
pub mod wire_producer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use produce::{ProduceOutcome, Workload};
pub use raw::RawOutcome;

/// A librdkafka config for `bootstrap` with the settings every client of the benchmark shares: no
/// re-bootstrap, since librdkafka >= 2.10's default (`metadata.recovery.strategy=rebootstrap`) can
/// leave a client waiting forever for a coordinator after the only broker restarts (librdkafka issues
/// 5456 and 5511; docs/clients.md), and the backlog workload restarts the broker on purpose.
pub(crate) fn client_config(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("metadata.recovery.strategy", "none");
    config
}

/// Which workload `once bench` runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchWorkload {
    /// acks=all produce, plain and idempotent, beside raw append+fdatasync (the first benchmark).
    Produce,
    /// W3: the transactional copier beside the non-transactional one (same as `--copier`).
    Copier,
    /// W0: loopback TCP throughput and raw append+fdatasync at `--raw-batch-bytes`; no broker.
    Limits,
    /// W1 (and W2): acks=all produce over `--record-sizes` × `--partition-counts`.
    Matrix,
    /// W5: fill `--backlog-bytes`, then read it all from the beginning with one consumer.
    CatchUp,
    /// W6: start a broker (`--serve-cmd`), fill `--backlog-bytes`, kill -9 it mid-write, time the restart.
    Restart,
    /// W8: a synchronous acks=all producer alone and beside a cold catch-up reader of the same
    /// partition (`--backlog-bytes`, `--latency-seconds`; needs root to empty the page cache).
    ReaderLatency,
    /// The produce workload against Redis streams at `--bootstrap` (XADD).
    Redis,
    /// The produce workload against PostgreSQL at `--bootstrap` (INSERT … ON CONFLICT DO NOTHING).
    Postgres,
    /// The produce workload against NATS JetStream at `--bootstrap` (publish with Nats-Msg-Id).
    Nats,
    /// HTTP produce to `--http` (the broker's --http-listen) with and without Idempotency-Key,
    /// beside Kafka produce at the same concurrency (`--producers` clients, one request in flight).
    Http,
    /// `once sink` into PostgreSQL (`--database`, or one it starts), exactly-once beside the
    /// at-least-once baseline at each `--sink-batch-records`, against a broker it starts itself.
    Sink,
    /// W7: `--senders` concurrent senders each waiting for its ack, Once beside raw fdatasync, Redis
    /// and PostgreSQL, which it starts itself.
    Latency,
    /// Idempotent ÷ plain with one producer and `--in-flight` records outstanding, librdkafka beside
    /// the benchmark's own wire producer (several requests in flight when idempotent).
    WireProduce,
}

/// Flags of `once bench` (and of `cargo bench -p once-bench -- …`).
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server to benchmark, HOST:PORT: an already running broker, Once or any Kafka-compatible one,
    /// or the peer named by `--workload`.
    #[arg(long, env = "ONCE_BOOTSTRAP", value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// What to measure.
    #[arg(long, env = "ONCE_BENCH_WORKLOAD", value_enum, default_value = "produce")]
    pub workload: BenchWorkload,
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
    /// librdkafka's max.in.flight.requests.per.connection for every producer [default: librdkafka's,
    /// 1,000,000 for plain producers; idempotent ones are capped at 5 and refuse more].
    #[arg(long, env = "ONCE_BENCH_MAX_IN_FLIGHT_REQUESTS")]
    pub max_in_flight_requests: Option<u32>,
    /// Runs of each workload, interleaved; the report shows the median and the min/max.
    #[arg(long, env = "ONCE_BENCH_RUNS", default_value_t = 3)]
    pub runs: usize,
    /// Prefix of the topics the benchmark creates (one per run, deleted afterwards).
    #[arg(long, env = "ONCE_BENCH_TOPIC_PREFIX", default_value = "once-bench")]
    pub topic_prefix: String,
    /// `--workload http`: the broker's HTTP listener, HOST:PORT (`once serve --http-listen`).
    #[arg(long, env = "ONCE_BENCH_HTTP", value_name = "HOST:PORT")]
    pub http: Option<String>,
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
    /// A few-second run for CI: 5,000 records, one run, a 1 s raw baseline, a 5 MB backlog.
    #[arg(long, env = "ONCE_BENCH_SMOKE")]
    pub smoke: bool,
    /// The server's process ids, comma-separated: their CPU seconds and peak RSS (with their child
    /// processes) are reported, added up (e.g. a broker and the database it stores into).
    #[arg(long, env = "ONCE_BENCH_BROKER_PID", value_name = "PID", value_delimiter = ',')]
    pub broker_pid: Vec<u32>,
    /// Record sizes of the matrix workload, in bytes, comma-separated.
    #[arg(long, env = "ONCE_BENCH_RECORD_SIZES", value_delimiter = ',', default_value = "1024,100")]
    pub record_sizes: Vec<usize>,
    /// Partition counts of the matrix workload, comma-separated.
    #[arg(long, env = "ONCE_BENCH_PARTITION_COUNTS", value_delimiter = ',', default_value = "1,8")]
    pub partition_counts: Vec<i32>,
    /// Write sizes of the raw append+fdatasync limit, in bytes, comma-separated.
    #[arg(long, env = "ONCE_BENCH_RAW_BATCH_BYTES", value_delimiter = ',', default_value = "16384,600000")]
    pub raw_batch_bytes: Vec<usize>,
    /// Bytes of record values in the backlog of the catch-up and restart workloads.
    #[arg(long, env = "ONCE_BENCH_BACKLOG_BYTES", default_value_t = 2_000_000_000)]
    pub backlog_bytes: u64,
    /// Empty the page cache before each catch-up read (needs root), so the backlog is read from disk.
    #[arg(long, env = "ONCE_BENCH_DROP_CACHES")]
    pub drop_caches: bool,
    /// How long the reader-latency workload's producer runs alone in each run, in seconds.
    #[arg(long, env = "ONCE_BENCH_LATENCY_SECONDS", value_parser = parse_seconds, default_value = "10")]
    pub latency_seconds: Duration,
    /// The broker command of the restart workload, split on whitespace; `{data_dir}` and `{listen}`
    /// are replaced [default: this executable's `serve --listen BOOTSTRAP --data-dir {data_dir}`].
    #[arg(long, env = "ONCE_BENCH_SERVE_CMD", value_name = "CMD")]
    pub serve_cmd: Option<String>,
    /// Rows per INSERT of the postgres workload (each statement is one transaction).
    #[arg(long, env = "ONCE_BENCH_ROWS_PER_REQUEST", default_value_t = 1)]
    pub rows_per_request: usize,
    /// Name of the system in the rows of the Kafka-protocol workloads.
    #[arg(long, env = "ONCE_BENCH_SYSTEM", default_value = "Once")]
    pub system: String,
    /// When the system acknowledges, for the rows of the Kafka-protocol workloads.
    #[arg(long, env = "ONCE_BENCH_DURABILITY", default_value = "acks=all; Once: fdatasync before ack")]
    pub durability: String,
    /// PostgreSQL the sink workload writes into, postgres://user:pass@host:port/db (the user creates
    /// and drops tables, and should be allowed CHECKPOINT) [default: a throw-away cluster the
    /// benchmark starts from /usr/lib/postgresql/*/bin].
    #[arg(long, env = "ONCE_BENCH_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// Batch sizes of the sink workload (`once sink --batch-records`), comma-separated.
    #[arg(long, env = "ONCE_BENCH_SINK_BATCH_RECORDS", value_delimiter = ',', default_value = "100,500,2000")]
    pub sink_batch_records: Vec<usize>,
    /// The sink command of the sink workload, split on whitespace [default: this executable's `sink`].
    #[arg(long, env = "ONCE_BENCH_SINK_CMD", value_name = "CMD")]
    pub sink_cmd: Option<String>,
    /// Append the rows of the limits, matrix, catch-up, restart and peer workloads to this TSV file.
    #[arg(long, env = "ONCE_BENCH_TSV", value_name = "PATH")]
    pub tsv: Option<PathBuf>,
    /// W7's flags (`--senders`, `--records-per-sender`, `--no-peers`).
    #[command(flatten)]
    pub latency: latency::LatencyArgs,
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
    /// Bytes of the catch-up and restart backlogs.
    pub backlog_bytes: u64,
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
                backlog_bytes: args.backlog_bytes.min(5_000_000),
                args,
            }
        } else {
            Plan {
                records: args.records,
                runs: args.runs,
                raw_time_max: Duration::from_secs(10),
                delivery_timeout: Duration::from_secs(60),
                statistics_interval: Duration::from_millis(500),
                backlog_bytes: args.backlog_bytes,
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

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|error| format!("{text:?} is not a number of seconds: {error}"))?;
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("{text:?}: the duration must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Milliseconds since the epoch: names this invocation's topics, streams and tables.
fn new_run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or_default()
}

/// Runs the benchmark against `--bootstrap` and prints a markdown table to stdout.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args)?;
    let run_id = new_run_id();
    let workload = if plan.args.copier { BenchWorkload::Copier } else { plan.args.workload };
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
    let (title, rows) = match workload {
        BenchWorkload::Produce => return run_produce(&plan, &data_dir),
        BenchWorkload::Copier => {
            print!("{}", copier::run_all(&plan, run_id)?);
            return Ok(());
        }
        BenchWorkload::Sink => {
            print!("{}", sink::run_all(&plan, &data_dir, run_id)?);
            return Ok(());
        }
        BenchWorkload::ReaderLatency => {
            print!("{}", reader_latency::run(&plan, run_id)?);
            return Ok(());
        }
        BenchWorkload::Latency => {
            print!("{}", latency::run(&plan, &data_dir, run_id)?);
            return Ok(());
        }
        BenchWorkload::WireProduce => {
            let (rows, ratios) = wire_produce::run(&plan, run_id)?;
            let command = rows::this_command();
            print!(
                "{}{ratios}",
                rows::markdown("Idempotent at low concurrency: librdkafka and the wire producer", &rows, &command)
            );
            if let Some(path) = &plan.args.tsv {
                rows::append_tsv(path, &rows, &command)?;
            }
            return Ok(());
        }
        BenchWorkload::Limits => ("W0: limits of this machine", limits::run(&plan, &data_dir)?),
        BenchWorkload::Matrix => ("W1/W2: acks=all produce", matrix::run(&plan, run_id)?),
        BenchWorkload::CatchUp => ("W5: consumer catch-up", backlog::catch_up(&plan, run_id)?),
        BenchWorkload::Restart => ("W6: restart after kill -9", backlog::restart(&plan, &data_dir, run_id)?),
        BenchWorkload::Redis => {
            ("peer: Redis", peers::run(&plan, Arc::new(peers::Redis::new(&plan.args.bootstrap, run_id)?))?)
        }
        BenchWorkload::Postgres => {
            let postgres = peers::Postgres::new(&plan.args.bootstrap, run_id, plan.args.rows_per_request)?;
            ("peer: PostgreSQL", peers::run(&plan, Arc::new(postgres))?)
        }
        BenchWorkload::Http => ("HTTP produce", http::run(&plan, run_id)?),
        BenchWorkload::Nats => {
            ("peer: NATS JetStream", peers::run(&plan, Arc::new(peers::Nats::new(&plan.args.bootstrap, run_id)?))?)
        }
    };
    let command = rows::this_command();
    print!("{}", rows::markdown(title, &rows, &command));
    if let Some(path) = &plan.args.tsv {
        rows::append_tsv(path, &rows, &command)?;
    }
    Ok(())
}

/// The first benchmark: plain, idempotent and raw, interleaved, as a table of figures.
fn run_produce(plan: &Plan, data_dir: &Path) -> anyhow::Result<()> {
    let runs = run_interleaved(plan, data_dir)?;
    let results = report::Results::new(plan, data_dir, &runs);
    print!("{}", results.markdown());
    if let Some(path) = &plan.args.json {
        std::fs::write(path, results.json()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs plain, idempotent, then raw, `plan.runs` times, so that all three see the same drift of a
/// noisy machine.
fn run_interleaved(plan: &Plan, data_dir: &Path) -> anyhow::Result<Vec<RunSet>> {
    let run_id = new_run_id();
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

#[cfg(test)]
mod client_tests {
    #[test]
    fn every_benchmark_client_turns_re_bootstrap_off() {
        let config = super::client_config("127.0.0.1:9092");
        assert_eq!(config.get("metadata.recovery.strategy"), Some("none"), "librdkafka 5456/5511: docs/clients.md");
    }
}
