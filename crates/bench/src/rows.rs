//! One table for every workload beyond the produce and copier ones (W0, W1, W5, W6 and the peers):
//! a row per system and setting, each figure the median over runs, the server's CPU and memory when
//! `--broker-pid` is given, and the exact command. `--tsv PATH` appends the rows to a file, from which
//! `scripts/bench/peers.sh` builds docs/benchmarks.md's tables and plot.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::process::ProcessCost;
use crate::summary::{percentile, Spread};

const MEGABYTE: f64 = 1_000_000.0;
const GIGABYTE: f64 = 1_000_000_000.0;

/// What one run of a workload measured.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Records (messages, rows) acknowledged or read.
    pub records: u64,
    /// Bytes of record values (payloads) in them.
    pub value_bytes: u64,
    /// The measured interval.
    pub elapsed: Duration,
    /// Per-record ack latencies in microseconds, sorted; empty where a workload has none (reads).
    pub latencies_us: Vec<u32>,
    /// The server's cost in the interval, with `--broker-pid`.
    pub cost: Option<ProcessCost>,
}

impl Measurement {
    /// `None` for workloads that count bytes, not records (loopback TCP, restart).
    fn records_per_second(&self) -> Option<f64> {
        (self.records > 0).then(|| self.records as f64 / self.elapsed.as_secs_f64().max(1e-9))
    }

    fn megabytes_per_second(&self) -> f64 {
        self.value_bytes as f64 / MEGABYTE / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_seconds_per_gigabyte(&self) -> Option<f64> {
        let cost = self.cost?;
        (self.value_bytes > 0).then(|| cost.cpu_seconds / (self.value_bytes as f64 / GIGABYTE))
    }

    fn client_cpu_seconds_per_gigabyte(&self) -> Option<f64> {
        let cost = self.cost?;
        (self.value_bytes > 0).then(|| cost.client_cpu_seconds / (self.value_bytes as f64 / GIGABYTE))
    }
}

/// A row: what was measured, on what, how durably, and the runs.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload name: `W0 tcp-loopback`, `W1 produce`, `W5 catch-up`, …
    pub workload: String,
    /// The system measured: `Once`, `Redis 7.0 streams`, …
    pub system: String,
    /// When the system acknowledges, e.g. "fdatasync before ack".
    pub durability: String,
    /// Bytes of each record's value.
    pub record_bytes: usize,
    /// Partitions, connections or whatever else distinguishes rows of one workload.
    pub setting: String,
    /// One measurement per run.
    pub runs: Vec<Measurement>,
}

/// The median (min–max) of one figure over a row's runs, `None` where no run has it.
fn spread(runs: &[Measurement], figure: impl Fn(&Measurement) -> Option<f64>) -> Option<Spread> {
    let values: Vec<f64> = runs.iter().filter_map(figure).collect();
    (!values.is_empty()).then(|| Spread::of(values))
}

fn latency_ms(run: &Measurement, quantile: f64) -> Option<f64> {
    (!run.latencies_us.is_empty()).then(|| f64::from(percentile(&run.latencies_us, quantile)) / 1000.0)
}

/// The figures of a row, medians over runs: records/s, MB/s (and its min, max), ack p50 and p99 in
/// ms, CPU-s/GB, peak RSS in MB.
struct Figures {
    records_per_second: Option<f64>,
    megabytes_per_second: Spread,
    ack_p50_ms: Option<f64>,
    ack_p99_ms: Option<f64>,
    cpu_seconds_per_gigabyte: Option<f64>,
    peak_resident_megabytes: Option<f64>,
    client_cpu_seconds_per_gigabyte: Option<f64>,
}

impl Row {
    fn figures(&self) -> Figures {
        assert!(!self.runs.is_empty(), "a row needs at least one run");
        let median = |figure: &dyn Fn(&Measurement) -> Option<f64>| spread(&self.runs, figure).map(|s| s.median);
        Figures {
            records_per_second: median(&|run| run.records_per_second()),
            megabytes_per_second: Spread::of(self.runs.iter().map(Measurement::megabytes_per_second)),
            ack_p50_ms: median(&|run| latency_ms(run, 0.50)),
            ack_p99_ms: median(&|run| latency_ms(run, 0.99)),
            cpu_seconds_per_gigabyte: median(&|run| run.cpu_seconds_per_gigabyte()),
            peak_resident_megabytes: median(&|run| run.cost.map(|cost| cost.peak_resident_bytes as f64 / MEGABYTE)),
            client_cpu_seconds_per_gigabyte: median(&|run| run.client_cpu_seconds_per_gigabyte()),
        }
    }
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "—".to_string(), |value| format!("{value:.decimals$}"))
}

/// A markdown table of `rows`, then the command that produced them.
pub fn markdown(title: &str, rows: &[Row], command: &str) -> String {
    let mut text = format!("## {title}\n\n");
    text.push_str(
        "| workload | system | durability | record B | setting | records/s | MB/s (min–max) | ack p50 ms | \
         ack p99 ms | server CPU-s/GB | server peak RSS MB | bench client CPU-s/GB | runs |\n",
    );
    text.push_str("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let figures = row.figures();
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {:.1} ({:.1}–{:.1}) | {} | {} | {} | {} | {} | {} |",
            row.workload,
            row.system,
            row.durability,
            row.record_bytes,
            row.setting,
            optional(figures.records_per_second, 0),
            figures.megabytes_per_second.median,
            figures.megabytes_per_second.min,
            figures.megabytes_per_second.max,
            optional(figures.ack_p50_ms, 2),
            optional(figures.ack_p99_ms, 2),
            optional(figures.cpu_seconds_per_gigabyte, 1),
            optional(figures.peak_resident_megabytes, 0),
            optional(figures.client_cpu_seconds_per_gigabyte, 1),
            row.runs.len(),
        );
    }
    let _ = writeln!(text, "\nMedians over runs. MB is 10^6 bytes of record values. Command: `{command}`");
    text
}

/// Column names of the TSV file, in order.
pub const TSV_HEADER: &str = "workload\tsystem\tdurability\trecord_bytes\tsetting\trecords_per_second\t\
megabytes_per_second\tmegabytes_per_second_min\tmegabytes_per_second_max\tack_p50_ms\tack_p99_ms\t\
cpu_seconds_per_gigabyte\tpeak_rss_megabytes\tclient_cpu_seconds_per_gigabyte\truns\tcommand";

/// The rows as TSV lines (no header), one per row; absent figures are empty fields.
pub fn tsv(rows: &[Row], command: &str) -> String {
    let clean = |text: &str| text.replace(['\t', '\n'], " ");
    let mut text = String::new();
    for row in rows {
        let figures = row.figures();
        let field = |value: Option<f64>| value.map_or_else(String::new, |value| format!("{value:.3}"));
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}\t{:.3}\t{:.3}\t{:.3}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            clean(&row.workload),
            clean(&row.system),
            clean(&row.durability),
            row.record_bytes,
            clean(&row.setting),
            figures.records_per_second.map_or_else(String::new, |value| format!("{value:.0}")),
            figures.megabytes_per_second.median,
            figures.megabytes_per_second.min,
            figures.megabytes_per_second.max,
            field(figures.ack_p50_ms),
            field(figures.ack_p99_ms),
            field(figures.cpu_seconds_per_gigabyte),
            field(figures.peak_resident_megabytes),
            field(figures.client_cpu_seconds_per_gigabyte),
            row.runs.len(),
            clean(command),
        );
    }
    text
}

/// Appends the rows to `path`, writing the header first if the file is new or empty.
pub fn append_tsv(path: &Path, rows: &[Row], command: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let empty = file.metadata().map(|metadata| metadata.len() == 0).unwrap_or(true);
    let mut text = String::new();
    if empty {
        text.push_str(TSV_HEADER);
        text.push('\n');
    }
    text.push_str(&tsv(rows, command));
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// This process's command line, as the "exact command" of its rows.
pub fn this_command() -> String {
    std::env::args()
        .map(|argument| {
            if argument.is_empty() || argument.contains([' ', '\'', '"', ',', '*']) {
                format!("'{}'", argument.replace('\'', r"'\''"))
            } else {
                argument
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(records: u64, millis: u64, cpu_seconds: Option<f64>) -> Measurement {
        Measurement {
            records,
            value_bytes: records * 1_000,
            elapsed: Duration::from_millis(millis),
            latencies_us: vec![1_000, 2_000, 3_000],
            cost: cpu_seconds.map(|cpu_seconds| ProcessCost {
                cpu_seconds,
                peak_resident_bytes: 50_000_000,
                client_cpu_seconds: 1.0,
            }),
        }
    }

    fn row(runs: Vec<Measurement>) -> Row {
        Row {
            workload: "W1 produce".to_string(),
            system: "Once".to_string(),
            durability: "fdatasync before ack".to_string(),
            record_bytes: 1_000,
            setting: "1 partition".to_string(),
            runs,
        }
    }

    #[test]
    fn figures_are_medians_over_runs() {
        // 1 GB in 1 s, 2 s and 4 s: 1000, 500, 250 MB/s.
        let rows = [row(vec![
            measurement(1_000_000, 1_000, Some(2.0)),
            measurement(1_000_000, 2_000, Some(4.0)),
            measurement(1_000_000, 4_000, Some(3.0)),
        ])];
        let table = markdown("t", &rows, "once bench");
        assert!(table.contains("| 500000 | 500.0 (250.0–1000.0) | 2.00 | 3.00 | 3.0 | 50 | 1.0 | 3 |"), "{table}");
        let line = tsv(&rows, "once bench --x");
        assert_eq!(line.split('\t').count(), TSV_HEADER.split('\t').count(), "{line}");
        assert!(line.trim_end().ends_with("\tonce bench --x"));
    }

    #[test]
    fn absent_figures_are_dashes_and_empty_fields() {
        let mut run = measurement(10, 1_000, None);
        run.latencies_us.clear();
        run.records = 0;
        let rows = [row(vec![run])];
        let table = markdown("t", &rows, "c");
        assert!(table.contains("| 1 partition | — | 0.0 (0.0–0.0) | — | — | — | — | — | 1 |"), "{table}");
        assert!(tsv(&rows, "c").contains("\t\t\t\t\t\t1\tc"));
    }
}
