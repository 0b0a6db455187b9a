//! W7, latency-bound senders (`--workload latency`): N concurrent senders, each waiting for its
//! acknowledgement before it sends the next record — an application that produces one record per
//! request it handles, not a pipeline. For each N of `--senders`, in one run, one after the other:
//!
//! 1. Once, one librdkafka producer shared by the N senders (`linger.ms=0`, acks=all);
//! 2. Once, N librdkafka producers, one per sender (the same settings);
//! 3. Once, N connections of the benchmark's own wire producer (`wire_producer`), one request
//!    outstanding on each: the same client shape as the peers' drivers below, without librdkafka's
//!    CPU on the 2 vCPUs the broker shares with it;
//! 4. the raw baseline: one thread doing `write` + `fdatasync` of `--record-bytes` in `--data-dir`;
//! 5. Redis with `appendfsync always` (XADD), N connections, one request outstanding on each;
//! 6. PostgreSQL with `synchronous_commit = on` (one-row INSERT … ON CONFLICT DO NOTHING per
//!    transaction), N sessions, one statement outstanding on each.
//!
//! The peers are servers the benchmark starts itself on loopback with their data under `--data-dir`
//! (Redis from `redis-server` on the PATH, PostgreSQL from /usr/lib/postgresql/*/bin, as the sink
//! workload does); a peer whose server is not installed is skipped with a note. Runs repeat the whole
//! sequence, so every cell feels the same drift of the machine; each figure is a median over runs,
//! and each N has its own raw baseline from the same minutes.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::peers::{self, Protocol};
use crate::rows::{Measurement, Row};
use crate::summary::{percentile, Spread};
use crate::throwaway_postgres::ThrowawayPostgres;
use crate::throwaway_redis::ThrowawayRedis;
use crate::wire_producer::WireProducer;
use crate::{produce, raw, Plan};

/// Flags of `--workload latency`.
#[derive(clap::Args, Debug, Clone)]
pub struct LatencyArgs {
    /// `--workload latency`: numbers of concurrent senders, each waiting for its ack before the next
    /// send, comma-separated.
    #[arg(long, env = "ONCE_BENCH_SENDERS", value_delimiter = ',', default_value = "1,8,32,128")]
    pub senders: Vec<usize>,
    /// `--workload latency`: records each sender sends per cell.
    #[arg(long, env = "ONCE_BENCH_RECORDS_PER_SENDER", default_value_t = 300)]
    pub records_per_sender: u64,
    /// `--workload latency`: skip the peers (Redis, PostgreSQL), measure Once and the raw baseline only.
    #[arg(long, env = "ONCE_BENCH_NO_PEERS")]
    pub no_peers: bool,
}

/// The systems of one N, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    OnceShared,
    OnceProducers,
    OnceWire,
    Raw,
    Redis,
    Postgres,
}

const CELLS: [Cell; 6] =
    [Cell::OnceShared, Cell::OnceProducers, Cell::OnceWire, Cell::Raw, Cell::Redis, Cell::Postgres];

/// Each peer's server, or why it is missing.
struct Peers {
    redis: Result<(ThrowawayRedis, Arc<dyn Protocol>), String>,
    postgres: Result<(ThrowawayPostgres, Arc<dyn Protocol>), String>,
}

fn start_peers(plan: &Plan, data_dir: &Path, run_id: u128) -> Peers {
    if plan.args.latency.no_peers {
        let skipped = "skipped (--no-peers)".to_string();
        return Peers { redis: Err(skipped.clone()), postgres: Err(skipped) };
    }
    let redis = ThrowawayRedis::start(data_dir)
        .and_then(|server| {
            let protocol: Arc<dyn Protocol> = Arc::new(peers::Redis::new(&server.address(), run_id)?);
            Ok((server, protocol))
        })
        .map_err(|error| format!("{error:#}"));
    let connections = plan.args.latency.senders.iter().copied().max().unwrap_or(1) + 10;
    let postgres = ThrowawayPostgres::start_with_connections(connections)
        .and_then(|server| {
            let protocol: Arc<dyn Protocol> = Arc::new(peers::Postgres::new(&server.address(), run_id, 1)?);
            Ok((server, protocol))
        })
        .map_err(|error| format!("{error:#}"));
    for (name, error) in [("Redis", redis.as_ref().err()), ("PostgreSQL", postgres.as_ref().err())] {
        if let Some(error) = error {
            eprintln!("once-bench: W7 without {name}: {error}");
        }
    }
    Peers { redis, postgres }
}

/// Runs W7: the table of every cell, then the summary against the goal.
pub fn run(plan: &Plan, data_dir: &Path, run_id: u128) -> anyhow::Result<String> {
    let senders = &plan.args.latency.senders;
    anyhow::ensure!(senders.iter().all(|&n| n > 0), "--senders must all be at least 1");
    anyhow::ensure!(plan.args.latency.records_per_sender > 0, "--records-per-sender must be at least 1");
    let peers = start_peers(plan, data_dir, run_id);
    // measured[n][cell]: one measurement per run.
    let mut measured: Vec<Vec<Vec<Measurement>>> = vec![vec![Vec::new(); CELLS.len()]; senders.len()];
    for run in 0..plan.runs {
        let topic = format!("{}-{run_id}-{run}", plan.args.topic_prefix);
        produce::create_topic(plan, &topic)?;
        for (index, &n) in senders.iter().enumerate() {
            for (position, cell) in CELLS.iter().enumerate() {
                let label = run * senders.len() + index;
                let measurement = run_cell(plan, data_dir, &peers, *cell, n, &topic, label)
                    .with_context(|| format!("run {}: {cell:?} with {n} senders", run + 1))?;
                if let Some(measurement) = measurement {
                    eprintln!(
                        "run {}/{}: {cell:?}, N={n}: {} records in {:.2} s, p99 {:.2} ms",
                        run + 1,
                        plan.runs,
                        measurement.records,
                        measurement.elapsed.as_secs_f64(),
                        f64::from(percentile(&measurement.latencies_us, 0.99)) / 1000.0
                    );
                    measured[index][position].push(measurement);
                }
            }
        }
        if let Err(error) = produce::delete_topic(plan, &topic) {
            eprintln!("once-bench: could not delete topic {topic}: {error:#}");
        }
    }
    let rows = rows(plan, &peers, measured);
    let command = crate::rows::this_command();
    let mut text = crate::rows::markdown("W7: latency-bound senders", &rows, &command);
    text.push_str(&summary(plan, &rows));
    for (name, missing) in [("Redis", peers.redis.as_ref().err()), ("PostgreSQL", peers.postgres.as_ref().err())] {
        if let Some(reason) = missing {
            let _ = writeln!(text, "\n{name} not measured: {reason}");
        }
    }
    if let Some(path) = &plan.args.tsv {
        crate::rows::append_tsv(path, &rows, &command)?;
    }
    Ok(text)
}

/// One cell; `None` for a peer that is not running.
fn run_cell(
    plan: &Plan,
    data_dir: &Path,
    peers: &Peers,
    cell: Cell,
    n: usize,
    topic: &str,
    label: usize,
) -> anyhow::Result<Option<Measurement>> {
    let per_sender = records_per_sender(plan);
    // The server's CPU and memory during the cell: the broker's with `--broker-pid`, the peers' always.
    let once_pids = &plan.args.broker_pid;
    let measured = |pids: &[u32], work: &dyn Fn() -> anyhow::Result<Measurement>| {
        let (mut measurement, cost) = crate::process::measure(pids, work)?;
        measurement.cost = cost;
        anyhow::Ok(measurement)
    };
    let measurement = match cell {
        Cell::OnceShared => measured(once_pids, &|| once_senders(plan, topic, n, per_sender, true))?,
        Cell::OnceProducers => measured(once_pids, &|| once_senders(plan, topic, n, per_sender, false))?,
        Cell::OnceWire => measured(once_pids, &|| wire_senders(plan, topic, n, per_sender))?,
        Cell::Raw => {
            let bytes = plan.args.record_bytes;
            // As many writes as the run's records, bounded in time like the other raw baselines.
            let writes = (n as u64 * per_sender).clamp(200, 5_000);
            let outcome =
                raw::run(data_dir, bytes, writes * bytes as u64, plan.raw_time_max.min(Duration::from_secs(3)))?;
            Measurement {
                records: outcome.writes,
                value_bytes: outcome.bytes,
                elapsed: outcome.elapsed,
                latencies_us: outcome.fdatasync_latencies_us,
                cost: None,
            }
        }
        Cell::Redis | Cell::Postgres => {
            let (pid, protocol) = match (cell, &peers.redis, &peers.postgres) {
                (Cell::Redis, Ok((server, protocol)), _) => (server.id(), protocol),
                (Cell::Postgres, _, Ok((server, protocol))) => (server.postmaster_pid()?, protocol),
                _ => return Ok(None),
            };
            let mut peer_plan = plan.clone();
            peer_plan.args.producers = n;
            peer_plan.args.in_flight = 1;
            peer_plan.records = n as u64 * per_sender;
            protocol.setup(label)?;
            let measured = measured(&[pid], &|| peers::run_once(&peer_plan, protocol, label));
            if let Err(error) = protocol.teardown(label) {
                eprintln!("once-bench: teardown: {error:#}");
            }
            measured?
        }
    };
    Ok(Some(measurement))
}

/// `--records-per-sender`, at most 20 with `--smoke`.
fn records_per_sender(plan: &Plan) -> u64 {
    let per_sender = plan.args.latency.records_per_sender;
    if plan.args.smoke {
        per_sender.min(20)
    } else {
        per_sender
    }
}

/// What a delivery callback sends back to the sender waiting for it.
type Ack = Result<u32, String>;

/// The context of the W7 producers: each record's opaque is its send time and its sender's channel.
struct SenderContext;

impl ClientContext for SenderContext {}

impl ProducerContext for SenderContext {
    type DeliveryOpaque = Box<(Instant, SyncSender<Ack>)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (sent_at, sender) = *opaque;
        let latency_us = u32::try_from(sent_at.elapsed().as_micros()).unwrap_or(u32::MAX);
        let ack = match result {
            Ok(_) => Ok(latency_us),
            Err((error, _)) => Err(error.to_string()),
        };
        // The sender waits for exactly this answer; it is gone only if it already failed.
        let _ = sender.send(ack);
    }
}

fn producer(plan: &Plan) -> anyhow::Result<ThreadedProducer<SenderContext>> {
    let mut config = crate::client_config(&plan.args.bootstrap);
    config
        .set("client.id", "once-bench-w7")
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "0")
        .set("compression.type", "none")
        .set("message.timeout.ms", plan.delivery_timeout.as_millis().to_string());
    config.create_with_context(SenderContext).context("creating a producer")
}

/// N sender threads, each sending `per_sender` records one at a time; with `shared`, through one
/// producer, else each through its own. Producers connect and fetch metadata before the clock starts.
fn once_senders(plan: &Plan, topic: &str, n: usize, per_sender: u64, shared: bool) -> anyhow::Result<Measurement> {
    let shared_producer = if shared { Some(Arc::new(warm(producer(plan)?, topic)?)) } else { None };
    let start_line = Arc::new(Barrier::new(n + 1));
    let payload: Arc<Vec<u8>> = Arc::new((0..plan.args.record_bytes).map(|index| (index % 251) as u8).collect());
    let mut handles = Vec::with_capacity(n);
    for index in 0..n {
        let (plan, topic, start_line, payload) =
            (plan.clone(), topic.to_string(), Arc::clone(&start_line), Arc::clone(&payload));
        let shared_producer = shared_producer.clone();
        let handle = thread::Builder::new().name(format!("bench-w7-sender-{index}")).spawn(move || {
            let own = match shared_producer {
                Some(producer) => Ok(producer),
                None => producer(&plan).and_then(|producer| warm(producer, &topic)).map(Arc::new),
            };
            // Wait at the start line even after a failure, or the others would wait forever.
            start_line.wait();
            send_one_at_a_time(&*own?, &topic, &payload, per_sender)
        })?;
        handles.push(handle);
    }
    collect(plan, &start_line, handles)
}

/// N sender threads, each with its own wire producer connection, one request outstanding.
fn wire_senders(plan: &Plan, topic: &str, n: usize, per_sender: u64) -> anyhow::Result<Measurement> {
    let start_line = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::with_capacity(n);
    for index in 0..n {
        let (bootstrap, topic, start_line) = (plan.args.bootstrap.clone(), topic.to_string(), Arc::clone(&start_line));
        let payload: Vec<u8> = (0..plan.args.record_bytes).map(|index| (index % 251) as u8).collect();
        let handle = thread::Builder::new().name(format!("bench-w7-wire-{index}")).spawn(move || {
            let producer = WireProducer::connect(&bootstrap, &topic, 0, false, 1);
            start_line.wait();
            let mut producer = producer?;
            let mut latencies = Vec::with_capacity(per_sender as usize);
            for _ in 0..per_sender {
                let sent_at = Instant::now();
                producer.send(&[&payload])?;
                producer.receive()?;
                latencies.push(u32::try_from(sent_at.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            anyhow::Ok((latencies, Instant::now()))
        })?;
        handles.push(handle);
    }
    collect(plan, &start_line, handles)
}

/// What a sender thread returns: its latencies in µs and when its last ack came.
type SenderResult = anyhow::Result<(Vec<u32>, Instant)>;

/// Starts the senders waiting at `start_line` and gathers their latencies into one measurement.
fn collect(
    plan: &Plan,
    start_line: &Barrier,
    handles: Vec<thread::JoinHandle<SenderResult>>,
) -> anyhow::Result<Measurement> {
    start_line.wait();
    let started = Instant::now();
    let mut measurement =
        Measurement { records: 0, value_bytes: 0, elapsed: Duration::ZERO, latencies_us: Vec::new(), cost: None };
    for handle in handles {
        let (latencies, finished) = handle.join().map_err(|_| anyhow::anyhow!("a sender thread panicked"))??;
        measurement.elapsed = measurement.elapsed.max(finished.saturating_duration_since(started));
        measurement.records += latencies.len() as u64;
        measurement.latencies_us.extend(latencies);
    }
    measurement.value_bytes = measurement.records * plan.args.record_bytes as u64;
    measurement.latencies_us.sort_unstable();
    Ok(measurement)
}

fn warm(producer: ThreadedProducer<SenderContext>, topic: &str) -> anyhow::Result<ThreadedProducer<SenderContext>> {
    producer.client().fetch_metadata(Some(topic), Duration::from_secs(10)).context("fetching metadata")?;
    Ok(producer)
}

/// One sender: send, wait for the ack, send the next. Its latencies and when its last ack came.
fn send_one_at_a_time(
    producer: &ThreadedProducer<SenderContext>,
    topic: &str,
    payload: &[u8],
    records: u64,
) -> anyhow::Result<(Vec<u32>, Instant)> {
    let (sender, acks) = mpsc::sync_channel::<Ack>(1);
    let mut latencies = Vec::with_capacity(records as usize);
    for _ in 0..records {
        let opaque = Box::new((Instant::now(), sender.clone()));
        let record = BaseRecord::<(), [u8], _>::with_opaque_to(topic, opaque).payload(payload);
        producer.send(record).map_err(|(error, _)| error).context("enqueueing a record")?;
        let latency = acks.recv().context("the producer dropped a record without a delivery report")?;
        latencies.push(latency.map_err(|error| anyhow::anyhow!("a record failed: {error}"))?);
    }
    Ok((latencies, Instant::now()))
}

fn rows(plan: &Plan, peers: &Peers, measured: Vec<Vec<Vec<Measurement>>>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (&n, cells) in plan.args.latency.senders.iter().zip(measured) {
        for (cell, runs) in CELLS.iter().zip(cells) {
            if runs.is_empty() {
                continue;
            }
            let (system, durability, setting) = match cell {
                Cell::OnceShared => (
                    plan.args.system.clone(),
                    plan.args.durability.clone(),
                    format!("N={n} senders, 1 shared librdkafka producer, linger.ms=0"),
                ),
                Cell::OnceProducers => (
                    plan.args.system.clone(),
                    plan.args.durability.clone(),
                    format!("N={n} senders, {n} librdkafka producers, linger.ms=0"),
                ),
                Cell::OnceWire => (
                    plan.args.system.clone(),
                    plan.args.durability.clone(),
                    format!("N={n} connections of the wire producer, 1 request outstanding each"),
                ),
                Cell::Raw => (
                    "raw write+fdatasync".to_string(),
                    "fdatasync latency (1 thread; not concurrent)".to_string(),
                    format!("N={n} (baseline of these minutes)"),
                ),
                Cell::Redis | Cell::Postgres => {
                    let protocol = match cell {
                        Cell::Redis => peers.redis.as_ref().map(|(_, protocol)| protocol),
                        _ => peers.postgres.as_ref().map(|(_, protocol)| protocol),
                    };
                    let Ok(protocol) = protocol else { continue };
                    let durability = protocol.durability().unwrap_or_else(|error| format!("unknown: {error:#}"));
                    (protocol.system(), durability, format!("N={n} connections, 1 request outstanding each"))
                }
            };
            rows.push(Row {
                workload: "W7 latency-bound".to_string(),
                system,
                durability,
                record_bytes: plan.args.record_bytes,
                setting,
                runs,
            });
        }
    }
    rows
}

fn median_of(row: &Row, figure: impl Fn(&Measurement) -> f64) -> f64 {
    Spread::of(row.runs.iter().map(figure)).median
}

fn p99_ms(run: &Measurement) -> f64 {
    f64::from(percentile(&run.latencies_us, 0.99)) / 1000.0
}

fn records_per_second(run: &Measurement) -> f64 {
    run.records as f64 / run.elapsed.as_secs_f64().max(1e-9)
}

/// Per N: Once's records/s and ack p99 beside the bound 3 × raw p99 + 0.5 ms and the best peer.
fn summary(plan: &Plan, rows: &[Row]) -> String {
    let mut text = String::from(
        "\n| N | Once shared records/s | Once N producers records/s | Once wire records/s | \
         best durable peer records/s | Once shared / N-producer / wire ack p99 ms | raw fdatasync p99 ms | \
         3 × raw p99 + 0.5 ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &n in &plan.args.latency.senders {
        let of_n: Vec<&Row> = rows.iter().filter(|row| row.setting.starts_with(&format!("N={n} "))).collect();
        let find = |prefix: &str| of_n.iter().copied().find(|row| row.setting.contains(prefix));
        let (Some(shared), Some(producers), Some(wire), Some(raw)) =
            (find("shared librdkafka"), find("librdkafka producers"), find("wire producer"), find("baseline"))
        else {
            continue;
        };
        let best_peer = of_n
            .iter()
            .filter(|row| row.setting.contains("connections, 1 request"))
            .filter(|row| !row.setting.contains("wire producer"))
            .map(|row| (median_of(row, records_per_second), row.system.split(' ').next().unwrap_or("?")))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let best_peer = best_peer.map_or_else(|| "—".to_string(), |(rate, name)| format!("{rate:.0} ({name})"));
        let raw_p99 = median_of(raw, p99_ms);
        let _ = writeln!(
            text,
            "| {n} | {:.0} | {:.0} | {:.0} | {best_peer} | {:.2} / {:.2} / {:.2} | {raw_p99:.2} | {:.2} |",
            median_of(shared, records_per_second),
            median_of(producers, records_per_second),
            median_of(wire, records_per_second),
            median_of(shared, p99_ms),
            median_of(producers, p99_ms),
            median_of(wire, p99_ms),
            3.0 * raw_p99 + 0.5,
        );
    }
    text.push_str(
        "\nMedians over runs of each figure; the raw baseline of each N ran between its Once and peer cells.\n",
    );
    text
}
