//! The results as a markdown table for people and as JSON for scripts. The JSON is written by hand:
//! it is numbers and a few strings, not worth a serializer dependency.

use std::fmt::Write;
use std::path::Path;

use crate::summary::{percentile, Spread};
use crate::{Plan, RunPair};

const MEGABYTE: f64 = 1_000_000.0;

/// One figure measured in every run.
struct Row {
    /// Name in the JSON.
    key: &'static str,
    /// Name in the table.
    label: &'static str,
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
    /// Summarizes `pairs`, the runs of `plan`, whose raw baseline wrote to `data_dir`.
    pub fn new(plan: &Plan, data_dir: &Path, pairs: &[RunPair]) -> Results {
        assert!(!pairs.is_empty(), "a report needs at least one run");
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
        ];
        Results { settings, rows: rows(plan, pairs) }
    }

    /// The table and a few lines on how to read it.
    pub fn markdown(&self) -> String {
        let setting = |key: &str| {
            self.settings.iter().find(|(name, _)| *name == key).map(|(_, value)| value.as_str()).unwrap_or("")
        };
        let mut text = String::new();
        let _ = writeln!(text, "## once bench: acks=all produce beside raw append+fdatasync\n");
        let _ = writeln!(
            text,
            "{} · {} records × {} B · {} producers, {} in flight each · {} partition(s) · linger.ms={}, \
             compression none · raw baseline in {} · {} run(s), interleaved\n",
            setting("bootstrap"),
            setting("records"),
            setting("record_bytes"),
            setting("producers"),
            setting("in_flight_per_producer"),
            setting("partitions"),
            setting("linger_ms"),
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
             lets several batches share one fsync, so a ratio above 1 is possible. The ratio is taken per run, \
             then summarized."
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

fn rows(plan: &Plan, pairs: &[RunPair]) -> Vec<Row> {
    let record_bytes = plan.args.record_bytes as f64;
    let row = |key, label, decimals, value: &dyn Fn(&RunPair) -> f64| Row {
        key,
        label,
        values: pairs.iter().map(value).collect(),
        decimals,
    };
    let once_mb = |pair: &RunPair| pair.once.records as f64 * record_bytes / MEGABYTE / pair.once.elapsed.as_secs_f64();
    let raw_mb = |pair: &RunPair| pair.raw.bytes as f64 / MEGABYTE / pair.raw.elapsed.as_secs_f64();
    vec![
        row("once_records_per_second", "Once produce, records/s", 0, &|pair| {
            pair.once.records as f64 / pair.once.elapsed.as_secs_f64()
        }),
        row("once_megabytes_per_second", "Once produce, MB/s", 1, &once_mb),
        row("once_ack_p50_ms", "Once ack latency p50, ms", 2, &|pair| {
            milliseconds(percentile(&pair.once.ack_latencies_us, 0.50))
        }),
        row("once_ack_p99_ms", "Once ack latency p99, ms", 2, &|pair| {
            milliseconds(percentile(&pair.once.ack_latencies_us, 0.99))
        }),
        row("once_ack_max_ms", "Once ack latency max, ms", 2, &|pair| {
            milliseconds(percentile(&pair.once.ack_latencies_us, 1.0))
        }),
        row("once_batch_bytes_average", "Once batch size (librdkafka), bytes", 0, &|pair| {
            pair.once.batch_bytes_average
        }),
        row("once_batches_per_second", "Once batches/s", 0, &|pair| {
            pair.once.batches as f64 / pair.once.elapsed.as_secs_f64()
        }),
        row("raw_writes_per_second", "Raw write+fdatasync, writes/s", 0, &|pair| {
            pair.raw.writes as f64 / pair.raw.elapsed.as_secs_f64()
        }),
        row("raw_megabytes_per_second", "Raw write+fdatasync, MB/s", 1, &raw_mb),
        row("raw_fdatasync_p50_ms", "Raw fdatasync p50, ms", 2, &|pair| {
            milliseconds(percentile(&pair.raw.fdatasync_latencies_us, 0.50))
        }),
        row("raw_fdatasync_p99_ms", "Raw fdatasync p99, ms", 2, &|pair| {
            milliseconds(percentile(&pair.raw.fdatasync_latencies_us, 0.99))
        }),
        row("ratio_once_to_raw_megabytes", "**Once MB/s ÷ raw MB/s**", 2, &|pair| once_mb(pair) / raw_mb(pair)),
    ]
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
