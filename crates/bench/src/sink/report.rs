//! The sink workload's markdown table: one row per batch size and delivery mode, records/s as the
//! median over rounds with min–max, and exactly-once ÷ at-least-once as the median of the ratios
//! of runs in the same round (so both saw the same minutes of a noisy machine).

use std::fmt::Write as _;

use super::database::Database;
use super::{Delivery, SinkOutcome};
use crate::summary::Spread;
use crate::Plan;

/// What the table's heading says about the setup.
pub struct About {
    records: u64,
    partitions: i32,
    value_bytes: usize,
    rounds: usize,
    /// PostgreSQL's version and its durability settings, read back from the server.
    database: String,
    throwaway: bool,
    command: String,
}

impl About {
    pub fn read(database: &Database, plan: &Plan, value_bytes: usize, throwaway: bool) -> anyhow::Result<About> {
        let version = database.text("SHOW server_version")?;
        let fsync = database.text("SHOW fsync")?;
        let synchronous_commit = database.text("SHOW synchronous_commit")?;
        Ok(About {
            records: plan.records,
            partitions: plan.args.partitions,
            value_bytes,
            rounds: plan.runs,
            database: format!("PostgreSQL {version}, fsync={fsync}, synchronous_commit={synchronous_commit}"),
            throwaway,
            command: crate::rows::this_command(),
        })
    }
}

fn per_record_micros(seconds: impl Iterator<Item = Option<f64>>, records: u64) -> String {
    let values: Vec<f64> = seconds.flatten().map(|seconds| seconds * 1e6 / records.max(1) as f64).collect();
    if values.is_empty() {
        "—".to_string()
    } else {
        format!("{:.0}", Spread::of(values).median)
    }
}

/// One row: `delivery` at `batch_records`.
fn row(about: &About, outcomes: &[SinkOutcome], batch_records: usize, delivery: Delivery) -> Option<String> {
    let runs: Vec<&SinkOutcome> =
        outcomes.iter().filter(|run| run.batch_records == batch_records && run.delivery == delivery).collect();
    if runs.is_empty() {
        return None;
    }
    let rate = Spread::of(runs.iter().map(|run| run.records_per_second()));
    let ratios: Vec<f64> = runs
        .iter()
        .filter_map(|run| {
            let baseline = outcomes.iter().find(|other| {
                other.delivery == Delivery::AtLeastOnce
                    && other.batch_records == batch_records
                    && other.round == run.round
            })?;
            Some(run.records_per_second() / baseline.records_per_second())
        })
        .collect();
    let ratio = if ratios.is_empty() {
        "—".to_string()
    } else {
        let spread = Spread::of(ratios);
        format!("{:.2} ({:.2}–{:.2})", spread.median, spread.min, spread.max)
    };
    let from_start = Spread::of(runs.iter().map(|run| run.from_start.as_secs_f64())).median;
    let per_transaction = Spread::of(runs.iter().map(|run| run.applied as f64 / run.transactions.max(1) as f64)).median;
    // The fewest rows any run left, against its records: the check fails a run below them.
    let applied = runs.iter().map(|run| (run.applied, run.records)).min().unwrap_or_default();
    Some(format!(
        "| {batch_records} | {} | {per_transaction:.0} | {:.0} | {:.0}–{:.0} | {ratio} | {from_start:.2} | {} | {} | {} / {} |",
        delivery.label(),
        rate.median,
        rate.min,
        rate.max,
        per_record_micros(runs.iter().map(|run| Some(run.sink_cpu_seconds)), about.records),
        per_record_micros(runs.iter().map(|run| run.database_cpu_seconds), about.records),
        applied.0,
        applied.1,
    ))
}

/// The table, its heading and the command.
pub fn markdown(about: &About, outcomes: &[SinkOutcome]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "## once bench --workload sink: records applied into PostgreSQL, exactly-once beside at-least-once\n"
    );
    let _ = writeln!(
        text,
        "{} charges per round ({} B JSON values, an `id` header, {} partition(s)), preloaded into a fresh \
         topic of a Once broker the benchmark started; `once sink` inserts each into a fresh table of {}{}. \
         records/s: from the first look (every 10 ms) that finds rows to the last record applied; median \
         over {} rounds (min–max), the two modes interleaved. Ratio: exactly-once ÷ at-least-once of the \
         same round and batch size, median (min–max). CPU columns: whole runs, start included. Each run \
         is checked after it is timed: one row per record, the amounts' sum, and (exactly-once) the \
         stored positions. Records per transaction: rows ÷ the distinct transactions (`xmin`) that inserted \
         them, median over rounds — the batches the sink really made.\n",
        about.records,
        about.value_bytes,
        about.partitions,
        about.database,
        if about.throwaway { " (a throw-away cluster the benchmark started)" } else { "" },
        about.rounds,
    );
    let _ = writeln!(
        text,
        "| batch records | delivery | records per transaction | records/s | min–max | ÷ at-least-once | start to last record, s | \
         sink CPU µs/record | PostgreSQL CPU µs/record | rows applied / records |"
    );
    let _ = writeln!(text, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut sizes: Vec<usize> = outcomes.iter().map(|run| run.batch_records).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for batch_records in sizes {
        for delivery in [Delivery::AtLeastOnce, Delivery::ExactlyOnce] {
            if let Some(line) = row(about, outcomes, batch_records, delivery) {
                let _ = writeln!(text, "{line}");
            }
        }
    }
    let _ = writeln!(text, "\nCommand: `{}`", about.command);
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outcome(delivery: Delivery, round: usize, seconds: u64) -> SinkOutcome {
        SinkOutcome {
            delivery,
            batch_records: 500,
            round,
            applied: 10_000,
            records: 10_000,
            transactions: 25,
            steady_records: 10_000,
            steady: Duration::from_secs(seconds),
            from_start: Duration::from_secs(seconds + 1),
            sink_cpu_seconds: 0.5,
            database_cpu_seconds: None,
        }
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        let about = About {
            records: 10_000,
            partitions: 1,
            value_bytes: 90,
            rounds: 2,
            database: "PostgreSQL".into(),
            throwaway: true,
            command: "once bench".into(),
        };
        let outcomes = [
            outcome(Delivery::ExactlyOnce, 0, 2),
            outcome(Delivery::AtLeastOnce, 0, 1),
            outcome(Delivery::AtLeastOnce, 1, 4),
            outcome(Delivery::ExactlyOnce, 1, 4),
        ];
        let text = markdown(&about, &outcomes);
        // 5,000 and 2,500 records/s; ratios 0.5 (round 0) and 1.0 (round 1).
        assert!(
            text.contains(
                "| 500 | exactly-once | 400 | 3750 | 2500–5000 | 0.75 (0.50–1.00) | 4.00 | 50 | — | 10000 / 10000 |"
            ),
            "{text}"
        );
        assert!(text.contains("| 500 | at-least-once | 400 | 6250 | 2500–10000 | 1.00 (1.00–1.00) |"), "{text}");
    }
}
