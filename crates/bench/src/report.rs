//! The results as a markdown table for people and as JSON for scripts. The JSON is written by hand:
//! it is numbers and a few strings, not worth a serializer dependency.

use std::fmt::Write;
use std::path::Path;

use crate::summary::{percentile, Spread};
use crate::{Plan, ProduceOutcome, RunSet};

const MEGABYTE: f64 = 1_000_000.0;

/// One figure measured in every run.
struct Row {
    /// Name in the JSON.
    key: String,
    /// Name in the table.
    label: String,
    /// One value per run, in run order.
    values: Vec<f64>,
    /// Digits after the decimal point in the table.
    decimals: usize,
}

/// Everything the report shows, computed once from the runs.
pub struct Results {
    settings: Vec<(&'static str, String)>,
    rows: Vec<Row>,
}

fn milliseconds(microseconds: u32) -> f64 {
    f64::from(microseconds) / 1000.0
}

impl Results {
    /// Summarizes `runs`, the runs of `plan`, whose raw baseline wrote to `data_dir`.
    pub fn new(plan: &Plan, data_dir: &Path, runs: &[RunSet]) -> Results {
        assert!(!runs.is_empty(), "a report needs at least one run");
        let idempotent = runs.iter().all(|run| run.idempotent.is_some());
        assert!(
            idempotent || runs.iter().all(|run| run.idempotent.is_none()),
            "every run measures the idempotent workload or none does"
        );
        let settings = vec![
            ("bootstrap", plan.args.bootstrap.clone()),
            ("records", plan.records.to_string()),
            ("record_bytes", plan.args.record_bytes.to_string()),
            ("producers", plan.args.producers.to_string()),
            ("partitions", plan.args.partitions.to_string()),
            ("in_flight_per_producer", plan.args.in_flight.to_string()),
            ("linger_ms", plan.args.linger_ms.to_string()),
            ("runs", plan.runs.to_string()),
            ("raw_data_dir", data_dir.display().to_string()),
            ("smoke", plan.args.smoke.to_string()),
            ("idempotent", idempotent.to_string()),
            // librdkafka's values, not set by the benchmark: its default, and its cap with
            // enable.idempotence=true.
            ("plain_max_in_flight_requests_per_connection", "1000000".to_string()),
            ("idempotent_max_in_flight_requests_per_connection", "5".to_string()),
        ];
        Results { settings, rows: rows(plan, runs) }
    }

    /// The table and a few lines on how to read it.
    pub fn markdown(&self) -> String {
        let setting = |key: &str| {
            self.settings.iter().find(|(name, _)| *name == key).map(|(_, value)| value.as_str()).unwrap_or("")
        };
        let mut text = String::new();
        let _ = writeln!(text, "## once bench: acks=all produce, plain and idempotent, beside raw append+fdatasync\n");
        let _ = writeln!(
            text,
            "{} · {} records × {} B · {} producers, {} in flight each · {} partition(s) · linger.ms={}, \
             compression none · idempotent workload: {} · raw baseline in {} · {} run(s), interleaved\n",
            setting("bootstrap"),
            setting("records"),
            setting("record_bytes"),
            setting("producers"),
            setting("in_flight_per_producer"),
            setting("partitions"),
            setting("linger_ms"),
            if setting("idempotent") == "true" { "yes" } else { "skipped (--no-idempotent)" },
            setting("raw_data_dir"),
            setting("runs"),
        );
        let _ = writeln!(text, "| figure | median | min | max |");
        let _ = writeln!(text, "|---|---:|---:|---:|");
        for row in &self.rows {
            let spread = Spread::of(row.values.iter().copied());
            let digits = row.decimals;
            let _ = writeln!(
                text,
                "| {} | {:.digits$} | {:.digits$} | {:.digits$} |",
                row.label, spread.median, spread.min, spread.max
            );
        }
        let _ = writeln!(
            text,
            "\nMB is 10^6 bytes of record values. The raw baseline appends buffers of the batch size librdkafka \
             sent in the same run, with one fdatasync per write: the ceiling of one fsync per batch. Group commit \
             lets several batches share one fsync, so a ratio above 1 is possible. Plain is enable.idempotence=false \
             with librdkafka's default of 1,000,000 requests in flight per connection; idempotent is \
             enable.idempotence=true, where librdkafka caps that at 5. Runs go plain, idempotent, raw. Ratios are \
             taken per run, then summarized."
        );
        text
    }

    /// The settings, each run's figures and their spread, as a JSON object.
    pub fn json(&self) -> String {
        let mut text = String::from("{\n  \"settings\": {");
        for (index, (key, value)) in self.settings.iter().enumerate() {
            let separator = if index == 0 { "" } else { "," };
            let _ = write!(text, "{separator}\n    \"{key}\": \"{}\"", escape(value));
        }
        text.push_str("\n  },\n  \"figures\": {");
        for (index, row) in self.rows.iter().enumerate() {
            let spread = Spread::of(row.values.iter().copied());
            let runs: Vec<String> = row.values.iter().map(|value| number(*value)).collect();
            let separator = if index == 0 { "" } else { "," };
            let _ = write!(
                text,
                "{separator}\n    \"{}\": {{\"median\": {}, \"min\": {}, \"max\": {}, \"runs\": [{}]}}",
                row.key,
                number(spread.median),
                number(spread.min),
                number(spread.max),
                runs.join(", ")
            );
        }
        text.push_str("\n  }\n}\n");
        text
    }
}

fn rows(plan: &Plan, runs: &[RunSet]) -> Vec<Row> {
    let record_bytes = plan.args.record_bytes as f64;
    let row = |key: &str, label: &str, decimals, value: &dyn Fn(&RunSet) -> f64| Row {
        key: key.to_string(),
        label: label.to_string(),
        values: runs.iter().map(value).collect(),
        decimals,
    };
    let produce_mb = |outcome: &ProduceOutcome| megabytes_per_second(outcome, record_bytes);
    let raw_mb = |run: &RunSet| run.raw.bytes as f64 / MEGABYTE / run.raw.elapsed.as_secs_f64();
    // The plain rows keep the `once_` keys they had before the idempotent workload existed.
    let plain: Vec<&ProduceOutcome> = runs.iter().map(|run| &run.plain).collect();
    let mut rows = produce_rows(&plain, "once", "Once plain produce", record_bytes);
    // `None` unless every run measured it (`--no-idempotent` skips it in all of them).
    let idempotent: Option<Vec<&ProduceOutcome>> = runs.iter().map(|run| run.idempotent.as_ref()).collect();
    if let Some(idempotent) = &idempotent {
        rows.extend(produce_rows(idempotent, "idempotent", "Once idempotent produce", record_bytes));
    }
    rows.extend([
        row("raw_writes_per_second", "Raw write+fdatasync, writes/s", 0, &|run| {
            run.raw.writes as f64 / run.raw.elapsed.as_secs_f64()
        }),
        row("raw_megabytes_per_second", "Raw write+fdatasync, MB/s", 1, &raw_mb),
        row("raw_fdatasync_p50_ms", "Raw fdatasync p50, ms", 2, &|run| {
            milliseconds(percentile(&run.raw.fdatasync_latencies_us, 0.50))
        }),
        row("raw_fdatasync_p99_ms", "Raw fdatasync p99, ms", 2, &|run| {
            milliseconds(percentile(&run.raw.fdatasync_latencies_us, 0.99))
        }),
        row("ratio_once_to_raw_megabytes", "**Once plain MB/s ÷ raw MB/s**", 2, &|run| {
            produce_mb(&run.plain) / raw_mb(run)
        }),
    ]);
    if let Some(idempotent) = &idempotent {
        rows.push(Row {
            key: "ratio_idempotent_to_plain_megabytes".to_string(),
            label: "**Once idempotent MB/s ÷ plain MB/s**".to_string(),
            values: idempotent
                .iter()
                .zip(&plain)
                .map(|(idempotent, plain)| produce_mb(idempotent) / produce_mb(plain))
                .collect(),
            decimals: 2,
        });
    }
    rows
}

/// The rows of one produce workload, one value per run: `key` prefixes the JSON names, `label` the table names.
fn produce_rows(outcomes: &[&ProduceOutcome], key: &str, label: &str, record_bytes: f64) -> Vec<Row> {
    let row = |name: &str, what: &str, decimals, value: &dyn Fn(&ProduceOutcome) -> f64| Row {
        key: format!("{key}_{name}"),
        label: format!("{label}, {what}"),
        values: outcomes.iter().map(|outcome| value(outcome)).collect(),
        decimals,
    };
    let seconds = |outcome: &ProduceOutcome| outcome.elapsed.as_secs_f64();
    vec![
        row("records_per_second", "records/s", 0, &|outcome| outcome.records as f64 / seconds(outcome)),
        row("megabytes_per_second", "MB/s", 1, &|outcome| megabytes_per_second(outcome, record_bytes)),
        row("ack_p50_ms", "ack latency p50, ms", 2, &|outcome| {
            milliseconds(percentile(&outcome.ack_latencies_us, 0.50))
        }),
        row("ack_p99_ms", "ack latency p99, ms", 2, &|outcome| {
            milliseconds(percentile(&outcome.ack_latencies_us, 0.99))
        }),
        row("ack_max_ms", "ack latency max, ms", 2, &|outcome| {
            milliseconds(percentile(&outcome.ack_latencies_us, 1.0))
        }),
        row("batch_bytes_average", "batch size (librdkafka), bytes", 0, &|outcome| outcome.batch_bytes_average),
        row("batches_per_second", "batches/s", 0, &|outcome| outcome.batches as f64 / seconds(outcome)),
    ]
}

/// Record values acknowledged per second, in MB (10^6 bytes).
fn megabytes_per_second(outcome: &ProduceOutcome, record_bytes: f64) -> f64 {
    outcome.records as f64 * record_bytes / MEGABYTE / outcome.elapsed.as_secs_f64()
}

/// A JSON number; JSON has no NaN or infinity, so those become null.
fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".to_string()
    }
}

fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            control if (control as u32) < 0x20 => {
                let _ = write!(escaped, "\\u{:04x}", control as u32);
            }
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::{BenchArgs, RawOutcome};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn outcome(records: u64, elapsed_ms: u64) -> ProduceOutcome {
        ProduceOutcome {
            records,
            elapsed: Duration::from_millis(elapsed_ms),
            ack_latencies_us: vec![1_000, 2_000],
            batch_bytes_average: 1_000.0,
            batches: 10,
            produce_requests: 10,
        }
    }

    fn run_set(idempotent_ms: Option<u64>) -> RunSet {
        let raw = RawOutcome {
            batch_bytes: 1_000,
            writes: 1_000,
            bytes: 1_000_000,
            elapsed: Duration::from_secs(1),
            fdatasync_latencies_us: vec![500],
        };
        RunSet { plain: outcome(1_000, 1_000), idempotent: idempotent_ms.map(|ms| outcome(1_000, ms)), raw }
    }

    fn results(runs: &[RunSet]) -> Results {
        let args = Cli::parse_from(["once-bench", "--bootstrap", "127.0.0.1:9092", "--record-bytes", "1000"]).bench;
        Results::new(&Plan::new(args).expect("valid flags"), Path::new("/tmp"), runs)
    }

    #[test]
    fn idempotent_to_plain_ratio_is_taken_per_run() {
        // Plain does 1 MB/s in every run; idempotent takes 2 s, 4 s, then 1 s for the same records.
        let results = results(&[run_set(Some(2_000)), run_set(Some(4_000)), run_set(Some(1_000))]);
        let ratio = results.rows.iter().find(|row| row.key == "ratio_idempotent_to_plain_megabytes");
        assert_eq!(ratio.expect("the ratio row is present").values, vec![0.5, 0.25, 1.0]);
        assert!(results.rows.iter().any(|row| row.key == "idempotent_megabytes_per_second"));
        assert!(results.rows.iter().any(|row| row.key == "once_megabytes_per_second"), "plain keeps its keys");
        assert!(results.json().contains("\"ratio_idempotent_to_plain_megabytes\": {\"median\": 0.5"));
        assert!(results.markdown().contains("| **Once idempotent MB/s ÷ plain MB/s** | 0.50 | 0.25 | 1.00 |"));
    }

    #[test]
    fn without_the_idempotent_workload_its_rows_are_absent() {
        let results = results(&[run_set(None), run_set(None)]);
        assert!(results.rows.iter().all(|row| !row.key.starts_with("idempotent_")));
        assert!(results.rows.iter().all(|row| row.key != "ratio_idempotent_to_plain_megabytes"));
        assert!(results.rows.iter().any(|row| row.key == "ratio_once_to_raw_megabytes"));
    }
}
