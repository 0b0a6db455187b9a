//! `--report PATH.html`: one self-contained page (inline SVG and CSS, no script, no font or anything
//! else fetched) drawn from the workload's JSON report alone (the `--json` one). On one time axis:
//! acknowledgements per second, the ack latency of the sends made then (p50, p99, max; log scale),
//! the timed anomalies in a lane of their own, and one lane per kind of fault; then the fault and
//! anomaly counts.
//!
//! - `mod.rs`: reading the report ([`Timeline`]), bucketing it onto the axis, the page around the SVG.
//! - `lanes`: the anomaly and fault lanes, pure (events in, lanes out).
//! - `chart`: the SVG and where everything in it goes.
//!
//! The page stays small for long runs: a plot or lane has at most one element per bucket, and
//! buckets are a second, or more seconds when a run has more seconds than the axis has room for.

mod chart;
mod lanes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::history::TimeMs;
use crate::report::anomaly_time_ms;
use crate::timeline::Quantiles;
use chart::{Chart, Layout, TimeAxis, PLOT_LEFT, PLOT_RIGHT};

/// Buckets on the time axis at most: two pixels each at least, so each one can be seen.
const COLUMNS_MAX: u64 = ((PLOT_RIGHT - PLOT_LEFT) / 2.0) as u64;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// What the page draws over time, read from a JSON report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Acknowledgements that arrived in each second of the run (`per_second.acked`).
    pub acked: Vec<u64>,
    /// Ack latency of the sends made in each second (`per_second.ack_latency_*_ms`).
    pub latency: Vec<Option<Quantiles>>,
    /// Fault events: time and kind (`fault_events`).
    pub events: Vec<(TimeMs, String)>,
    /// Anomalies with a time: when, class, how many (`anomalies_per_second`, or from the capped
    /// `anomaly_details` of a report without it).
    pub anomalies: Vec<(TimeMs, String, u64)>,
    /// Anomalies found, drawn or not (the `anomalies` counts).
    pub anomalies_found: u64,
    /// When the faults stopped (`duration_secs`).
    pub faults_end_ms: Option<TimeMs>,
}

/// The timeline of `report`. A report without some part (one written before the report had
/// `per_second`, or of a run that stopped early) gives that part empty.
pub fn timeline(report: &Value) -> Timeline {
    let array = |pointer: &str| report.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let acked = array("/per_second/acked").iter().map(|count| count.as_u64().unwrap_or(0)).collect();
    let (p50, p99, max) = (
        array("/per_second/ack_latency_p50_ms"),
        array("/per_second/ack_latency_p99_ms"),
        array("/per_second/ack_latency_max_ms"),
    );
    let latency = (0..p50.len().min(p99.len()).min(max.len()))
        .map(|second| {
            Some(Quantiles {
                p50_ms: p50[second].as_u64()?,
                p99_ms: p99[second].as_u64()?,
                max_ms: max[second].as_u64()?,
            })
        })
        .collect();
    let events = array("/fault_events")
        .iter()
        .filter_map(|event| Some((event["time_ms"].as_u64()?, event["kind"].as_str()?.to_string())))
        .collect();
    let (anomalies, anomalies_found) = timed_anomalies(report);
    let faults_end_ms = report["duration_secs"].as_u64().map(|seconds| seconds.saturating_mul(1000));
    Timeline { acked, latency, events, anomalies, anomalies_found, faults_end_ms }
}

/// The timed anomalies of `report` (time, class, how many) and how many anomalies it found: from
/// `anomalies_per_second`, which counts them all, or else from the details, at most 200 per class.
fn timed_anomalies(report: &Value) -> (Vec<(TimeMs, String, u64)>, u64) {
    let details = report["anomaly_details"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let counted: Option<u64> =
        report["anomalies"].as_object().map(|counts| counts.values().filter_map(Value::as_u64).sum());
    let timed: Vec<(TimeMs, String, u64)> = match report["anomalies_per_second"].as_object() {
        Some(classes) => classes
            .iter()
            .flat_map(|(class, seconds)| {
                let seconds = seconds.as_array().map(Vec::as_slice).unwrap_or(&[]);
                seconds.iter().enumerate().filter_map(move |(second, count)| {
                    Some((second as u64 * 1000, class.clone(), count.as_u64().filter(|count| *count > 0)?))
                })
            })
            .collect(),
        None => details
            .iter()
            .filter_map(|detail| {
                Some((anomaly_time_ms(detail)?, detail["class"].as_str().unwrap_or("?").to_string(), 1))
            })
            .collect(),
    };
    (timed, counted.unwrap_or(details.len() as u64))
}

/// Where the time axis must reach: past every acknowledgement, send, fault and timed anomaly, and a
/// second at least (a run of no length still gets an axis).
pub fn end_ms(timeline: &Timeline) -> TimeMs {
    let seconds = timeline.acked.len().max(timeline.latency.len()) as u64;
    let events = timeline.events.iter().map(|(time_ms, _)| time_ms.saturating_add(1));
    let anomalies = timeline.anomalies.iter().map(|(time_ms, _, _)| time_ms.saturating_add(1));
    events.chain(anomalies).chain([seconds * 1000, 1000]).max().unwrap_or(1000)
}

/// `per_second` summed over buckets of `seconds` seconds.
pub fn sum_buckets(per_second: &[u64], seconds: usize) -> Vec<u64> {
    assert!(seconds > 0, "a bucket holds a second at least");
    let buckets: Vec<u64> = per_second.chunks(seconds).map(|chunk| chunk.iter().sum()).collect();
    assert_eq!(buckets.iter().sum::<u64>(), per_second.iter().sum::<u64>(), "bucketing keeps every count");
    buckets
}

/// `per_second` over buckets of `seconds` seconds: each percentile the highest of the bucket's
/// seconds' (percentiles cannot be merged; the worst second is what a reader looks for).
pub fn max_buckets(per_second: &[Option<Quantiles>], seconds: usize) -> Vec<Option<Quantiles>> {
    assert!(seconds > 0, "a bucket holds a second at least");
    per_second
        .chunks(seconds)
        .map(|chunk| {
            chunk.iter().flatten().copied().reduce(|worst, second| Quantiles {
                p50_ms: worst.p50_ms.max(second.p50_ms),
                p99_ms: worst.p99_ms.max(second.p99_ms),
                max_ms: worst.max_ms.max(second.max_ms),
            })
        })
        .collect()
}

/// The SVG of `timeline` and the layout it was drawn with.
fn timeline_svg(timeline: &Timeline) -> (String, Layout) {
    let raw_end_ms = end_ms(timeline);
    let bucket_ms = lanes::bucket_ms(raw_end_ms, COLUMNS_MAX);
    let axis = TimeAxis::new(raw_end_ms.div_ceil(bucket_ms) * bucket_ms, bucket_ms);
    let seconds = (bucket_ms / 1000) as usize;
    // Windows less than a pixel apart cannot be told apart: one span.
    let gap_ms = axis.end_ms / (PLOT_RIGHT - PLOT_LEFT) as u64;
    let fault_lanes = lanes::fault_lanes(&timeline.events, bucket_ms, gap_ms, axis.end_ms);
    let (anomalies, anomalies_not_drawn) =
        lanes::anomaly_lane(&timeline.anomalies, timeline.anomalies_found, bucket_ms);
    let layout = Layout::new(fault_lanes.len());
    let chart = Chart {
        axis,
        acked: &sum_buckets(&timeline.acked, seconds),
        latency: &max_buckets(&timeline.latency, seconds),
        anomalies: &anomalies,
        anomalies_not_drawn,
        lanes: &fault_lanes,
        faults_end_ms: timeline.faults_end_ms,
    };
    (chart::svg(&chart, &layout), layout)
}

/// The headline's verdict and its CSS class.
fn verdict(report: &Value) -> (&'static str, &'static str) {
    match report["valid"].as_bool() {
        Some(true) => ("no anomaly", "ok"),
        Some(false) => ("ANOMALIES", "bad"),
        None => ("INCOMPLETE: not judged", "bad"),
    }
}

/// The sentence under the headline: sends, their outcomes, the run's ack latency.
fn summary(report: &Value) -> String {
    let number = |pointer: &str| report.pointer(pointer).and_then(Value::as_u64);
    let latency = match (number("/ack_latency_ms/p50"), number("/ack_latency_ms/p99"), number("/ack_latency_ms/max")) {
        (Some(p50), Some(p99), Some(max)) => format!(
            " Ack latency over the run: p50 {}, p99 {}, max {}.",
            chart::format_ms(p50),
            chart::format_ms(p99),
            chart::format_ms(max)
        ),
        _ => String::new(),
    };
    let incomplete = report["incomplete_reason"]
        .as_str()
        .map_or(String::new(), |reason| format!(" <b class=\"bad\">The run did not complete: {}</b>", escape(reason)));
    format!(
        "<p>{} s of faults. Sends: {} acknowledged, {} failed, {} unknown.{latency}{incomplete}</p>",
        number("/duration_secs").unwrap_or(0),
        number("/acked").unwrap_or(0),
        number("/failed").unwrap_or(0),
        number("/unknown").unwrap_or(0)
    )
}

/// A two-column table of `counts` (name → count) under `heading`, non-zero rows in `class` if any.
fn count_table(
    html: &mut String,
    heading: &str,
    column: &str,
    counts: Option<&serde_json::Map<String, Value>>,
    class: Option<&str>,
) {
    let _ = write!(html, "<h2>{heading}</h2><table><tr><th>{column}</th><th>count</th></tr>");
    for (name, count) in counts.into_iter().flatten() {
        let marked = match class {
            Some(class) if count.as_u64().unwrap_or(0) > 0 => format!(" class=\"{class}\""),
            _ => String::new(),
        };
        let _ = write!(html, "<tr{marked}><td>{}</td><td>{count}</td></tr>", escape(name));
    }
    html.push_str("</table>");
}

/// The page for `report` (a workload's JSON report).
pub fn page(report: &Value) -> String {
    let workload = escape(report["workload"].as_str().unwrap_or("?"));
    let seed = report["seed"].as_u64().unwrap_or(0);
    let (verdict, verdict_class) = verdict(report);
    let timeline = timeline(report);
    let (svg, _) = timeline_svg(&timeline);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>once check: {workload}, seed {seed}</title>\
         <style>body{{font-family:sans-serif;margin:1.5em;color:#222}}h1{{font-size:1.4em}}h2{{font-size:1.1em}}\
         .ok{{color:#2a7a2a}}.bad{{color:#d00000}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}\
         p{{max-width:1100px}}</style></head><body>\
         <h1>once check: {workload}, seed {seed} — <span class=\"{verdict_class}\">{verdict}</span></h1>{}{svg}\
         <p>Top: acknowledgements per second, by when they arrived. Below: how long the sends made in each \
         second waited for their acknowledgement (p50, p99 and max; log scale): a pause or a crash shows as a \
         spike over the fault. Then the anomalies that carry a time, and one lane per kind of fault: a window \
         whose end is known (a broker killed until its restart, paused until resumed, proxy faults on until \
         off) is a band; other events are counted per second (per few seconds in a long run), taller and \
         darker for more. Hover over anything for its times and counts.</p>",
        summary(report)
    );
    count_table(&mut html, "Faults", "fault", report["faults"].as_object(), None);
    count_table(&mut html, "Anomalies", "class", report["anomalies"].as_object(), Some("bad"));
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, kind) in &timeline.events {
        *by_kind.entry(lanes::first_word(kind)).or_default() += 1;
    }
    let listed: Vec<String> = by_kind.iter().map(|(kind, count)| format!("{} × {count}", escape(kind))).collect();
    let _ = writeln!(html, "<h2>Fault events</h2><p>{}</p></body></html>", listed.join(", "));
    html
}

/// Writes the page to `path`.
pub fn write(path: &Path, report: &Value) -> anyhow::Result<()> {
    std::fs::write(path, page(report)).with_context(|| format!("writing the HTML report {}", path.display()))
}
