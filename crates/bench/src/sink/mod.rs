//! The sink workload (issue 15): records per second that `once sink` applies into PostgreSQL with
//! each partition's position in the same database transaction (exactly once), beside the
//! at-least-once baseline — the same statement per record, the same batch size, one transaction
//! per partition's share of a round, group offsets committed after the database commit
//! (`--at-least-once after`) instead of a position row locked, compared and advanced.
//!
//! The benchmark starts its own Once broker and, without `--database`, its own PostgreSQL. Each
//! round preloads `--records` charges into a fresh topic; then, for each `--sink-batch-records`,
//! both modes run one after the other (which goes first alternates by round), each a real
//! `once sink` process in its own group writing its own fresh table, timed until every record is
//! in the table and then checked: count, sum of amounts, and (exactly once) the stored positions.
//!
//! - `charges`: the records, the preload, the table and the statement.
//! - `database`: the benchmark's own PostgreSQL connection.
//! - `report`: the markdown table.

mod charges;
mod database;
mod report;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::broker::{free_loopback_address, Server};
use crate::throwaway_postgres::ThrowawayPostgres;
use crate::{process, produce, Plan};
use charges::Preloaded;
use database::Database;

/// How the sink under test keeps its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// `once sink` as it ships: the position row locked, compared and advanced in the transaction.
    ExactlyOnce,
    /// `once sink --at-least-once after`: group offsets committed after the database commit.
    AtLeastOnce,
}

impl Delivery {
    pub fn label(self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactly-once",
            Delivery::AtLeastOnce => "at-least-once",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Delivery::ExactlyOnce => &[],
            Delivery::AtLeastOnce => &["--at-least-once", "after"],
        }
    }

    /// Both, the first alternating by round so neither always runs on a warmer database.
    fn order(round: usize) -> [Delivery; 2] {
        if round.is_multiple_of(2) {
            [Delivery::ExactlyOnce, Delivery::AtLeastOnce]
        } else {
            [Delivery::AtLeastOnce, Delivery::ExactlyOnce]
        }
    }
}

/// One sink run.
#[derive(Debug, Clone)]
pub struct SinkOutcome {
    pub delivery: Delivery,
    pub batch_records: usize,
    pub round: usize,
    /// Rows in the table after the run, as counted by the check (which fails unless it is every
    /// record preloaded).
    pub applied: u64,
    /// Records preloaded.
    pub records: u64,
    /// Database transactions that inserted them (distinct `xmin` of the rows): the batches the
    /// sink actually made, which a round cut short makes more than records ÷ batch size.
    pub transactions: u64,
    /// Records applied between the first look that found rows and the last record applied.
    pub steady_records: u64,
    /// That interval.
    pub steady: Duration,
    /// From spawning the sink to the last record applied (connecting, joining the group included).
    pub from_start: Duration,
    /// CPU seconds of the sink process over its whole life.
    pub sink_cpu_seconds: f64,
    /// CPU seconds of the PostgreSQL server from spawn to the last record, when the benchmark
    /// started it (else unknown).
    pub database_cpu_seconds: Option<f64>,
}

impl SinkOutcome {
    /// Records/s over the steady interval.
    pub fn records_per_second(&self) -> f64 {
        self.steady_records as f64 / self.steady.as_secs_f64().max(1e-9)
    }
}

/// Everything a run needs that lives for the whole benchmark.
struct Setup<'a> {
    /// The plan with `--bootstrap` pointing at the broker the benchmark started.
    plan: Plan,
    database_url: String,
    database: Database,
    /// The throw-away server's postmaster, for its CPU time.
    database_pid: Option<u32>,
    work_dir: &'a Path,
}

/// Runs the workload and returns its markdown report.
pub fn run_all(plan: &Plan, data_dir: &Path, run_id: u128) -> anyhow::Result<String> {
    anyhow::ensure!(!plan.args.sink_batch_records.is_empty(), "--sink-batch-records needs at least one size");
    anyhow::ensure!(plan.args.sink_batch_records.iter().all(|&size| size > 0), "a batch has at least one record");
    let work = tempfile::Builder::new().prefix("once-bench-sink-").tempdir_in(data_dir)?;
    let listen = free_loopback_address()?;
    let mut broker = Server::start(plan, &listen, &work.path().join("broker"), &work.path().join("broker.log"))?;
    broker.wait_until_accepting(&listen)?;
    let throwaway = match &plan.args.database {
        Some(_) => None,
        None => Some(ThrowawayPostgres::start().context("starting a throw-away PostgreSQL (or give --database)")?),
    };
    let database_url = match (&plan.args.database, &throwaway) {
        (Some(url), _) => url.clone(),
        (None, Some(cluster)) => cluster.url(),
        (None, None) => unreachable!("a throw-away cluster is started when no --database is given"),
    };
    let mut broker_plan = plan.clone();
    broker_plan.args.bootstrap = listen;
    let setup = Setup {
        plan: broker_plan,
        database: Database::connect(&database_url)?,
        database_pid: throwaway.as_ref().map(ThrowawayPostgres::postmaster_pid).transpose()?,
        database_url,
        work_dir: work.path(),
    };
    let mut outcomes = Vec::new();
    let mut value_bytes = 0;
    for round in 0..plan.runs {
        let topic = format!("{}-{run_id}-sink-{round}", plan.args.topic_prefix);
        eprintln!("round {}/{}: preloading {} charges into {topic}", round + 1, plan.runs, plan.records);
        let preloaded = charges::preload(&setup.plan, &topic, round)?;
        value_bytes = preloaded.value_bytes;
        for &batch_records in &plan.args.sink_batch_records {
            for delivery in Delivery::order(round) {
                let outcome = run_one(&setup, &preloaded, delivery, batch_records, round).with_context(|| {
                    format!("round {}: {} sink, {batch_records}-record batches", round + 1, delivery.label())
                })?;
                eprintln!(
                    "round {}/{}: {} at {batch_records}: {:.0} records/s ({} records in {:.2} s; {:.2} s from start)",
                    round + 1,
                    plan.runs,
                    delivery.label(),
                    outcome.records_per_second(),
                    outcome.steady_records,
                    outcome.steady.as_secs_f64(),
                    outcome.from_start.as_secs_f64()
                );
                outcomes.push(outcome);
            }
        }
        if let Err(error) = produce::delete_topic(&setup.plan, &topic) {
            eprintln!("once-bench: could not delete topic {topic}: {error:#}");
        }
    }
    let about = report::About::read(&setup.database, plan, value_bytes, throwaway.is_some())?;
    drop(broker);
    Ok(report::markdown(&about, &outcomes))
}

/// Kills the sink when the run ends, however it ends.
struct SinkProcess(Child);

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sink command: `--sink-cmd` split on whitespace, or this executable's `sink`.
fn sink_command(plan: &Plan) -> anyhow::Result<Command> {
    match &plan.args.sink_cmd {
        Some(template) => {
            let mut words = template.split_whitespace();
            let mut command = Command::new(words.next().context("--sink-cmd is empty")?);
            command.args(words);
            Ok(command)
        }
        None => {
            let mut command = Command::new(std::env::current_exe().context("locating the once executable")?);
            command.arg("sink");
            Ok(command)
        }
    }
}

/// One sink process over the round's topic into a fresh table, timed until every record is in.
fn run_one(
    setup: &Setup<'_>,
    preloaded: &Preloaded,
    delivery: Delivery,
    batch_records: usize,
    round: usize,
) -> anyhow::Result<SinkOutcome> {
    let name = format!("{}-{}-{batch_records}", preloaded.topic, delivery.label());
    let table = format!("once_bench_charges_{round}_{batch_records}_{}", delivery.label().replace('-', "_"));
    setup.database.execute(&charges::create_table(&table))?;
    // No run pays for the dirty pages of the one before it. Needs a superuser; without, the runs
    // share the server's own checkpoint schedule.
    if let Err(error) = setup.database.execute("CHECKPOINT") {
        eprintln!("once-bench: CHECKPOINT before the run: {error:#}");
    }
    let log_path = setup.work_dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut command = sink_command(&setup.plan)?;
    command
        .args(["--bootstrap", &setup.plan.args.bootstrap, "--group", &name, "--topic", &preloaded.topic])
        .args(["--database", &setup.database_url, "--sql", &charges::insert_statement(&table)])
        .args(["--batch-records", &batch_records.to_string()])
        .args(delivery.flags())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let database_cpu_before = setup.database_pid.map(process::cpu_seconds).transpose()?;
    let started = Instant::now();
    let mut sink = SinkProcess(command.spawn().context("starting the sink")?);
    let watched = watch(setup, preloaded, &table, &mut sink, started)
        .with_context(|| format!("sink log {}", log_path.display()))?;
    let from_start = started.elapsed();
    let sink_cpu_seconds = process::cpu_seconds(sink.0.id())?;
    let database_cpu_seconds = match (setup.database_pid, database_cpu_before) {
        (Some(pid), Some(before)) => Some(process::cpu_seconds(pid)? - before),
        _ => None,
    };
    drop(sink);
    let applied = check_applied(setup, preloaded, &table, delivery, &name)?;
    let transactions = setup.database.number(&format!("SELECT count(DISTINCT xmin::text) FROM {table}"), &[])?;
    setup.database.execute(&format!("DROP TABLE {table}"))?;
    Ok(SinkOutcome {
        delivery,
        batch_records,
        round,
        applied,
        records: preloaded.records,
        transactions: u64::try_from(transactions)?,
        steady_records: watched.0,
        steady: watched.1,
        from_start,
        sink_cpu_seconds,
        database_cpu_seconds,
    })
}

/// How often the table is looked at while the sink runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Watches `table` until the last record of every partition is in it; returns the records applied
/// after the first look that found rows, and the time since that look. (If the first look found
/// them all, the whole time from the sink's start.)
fn watch(
    setup: &Setup<'_>,
    preloaded: &Preloaded,
    table: &str,
    sink: &mut SinkProcess,
    started: Instant,
) -> anyhow::Result<(u64, Duration)> {
    let deadline = started + Duration::from_secs(120) + Duration::from_millis(preloaded.records * 5);
    let count = format!("SELECT count(*) FROM {table}");
    let last_ids_in = format!("SELECT count(*) FROM {table} WHERE message_id = ANY($1)");
    let partitions = preloaded.last_ids.len() as i64;
    let mut first_seen: Option<(Instant, u64)> = None;
    loop {
        if let Some(status) = sink.0.try_wait()? {
            anyhow::bail!("the sink exited with {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "not every record was applied in time");
        if first_seen.is_none() {
            let rows = u64::try_from(setup.database.number(&count, &[])?)?;
            if rows > 0 {
                first_seen = Some((Instant::now(), rows));
            }
        }
        if let Some((seen_at, rows)) = first_seen {
            if rows == preloaded.records {
                return Ok((rows, started.elapsed()));
            }
            if setup.database.number(&last_ids_in, &[&preloaded.last_ids])? == partitions {
                return Ok((preloaded.records - rows, seen_at.elapsed()));
            }
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
}

/// Every record applied once: the count and the sum of amounts match the preload, and the
/// exactly-once sink's stored positions add up to the records read. Returns the rows counted.
fn check_applied(
    setup: &Setup<'_>,
    preloaded: &Preloaded,
    table: &str,
    delivery: Delivery,
    group: &str,
) -> anyhow::Result<u64> {
    let rows = setup.database.number(&format!("SELECT count(*) FROM {table}"), &[])?;
    anyhow::ensure!(rows == preloaded.records as i64, "{rows} rows applied for {} records", preloaded.records);
    let cents = setup.database.number(&format!("SELECT coalesce(sum(amount * 100), 0)::bigint FROM {table}"), &[])?;
    anyhow::ensure!(cents == preloaded.cents, "the amounts add up to {cents} cents, not {}", preloaded.cents);
    if delivery == Delivery::ExactlyOnce {
        let positions = setup
            .database
            .number("SELECT coalesce(sum(next_offset), 0)::bigint FROM once_sink_offsets WHERE sink = $1", &[&group])?;
        anyhow::ensure!(positions == rows, "the stored positions add up to {positions}, not {rows}");
    }
    Ok(u64::try_from(rows)?)
}
