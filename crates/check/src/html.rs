//! `--report PATH.html`: one self-contained page (inline SVG, no scripts, no network) with a timeline
//! of acknowledged sends per second, every injected fault, and every anomaly that carries a time,
//! followed by the fault and anomaly counts. Built from the same JSON the `--json` report holds.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 260.0;
const MARGIN: f64 = 40.0;

/// Keys of an anomaly's evidence that say when it happened, in order of preference.
const TIME_KEYS: [&str; 5] = ["time_ms", "acked_ms", "sent_ms", "seen_ms", "first_ms"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The color of a fault event, by the first word of its kind.
fn fault_color(kind: &str) -> Option<&'static str> {
    match kind.split([' ', '(']).next().unwrap_or_default() {
        "kill" => Some("#d62728"),
        "power-loss" => Some("#8c564b"),
        "pause" => Some("#ff7f0e"),
        "restart" | "resume" => Some("#2ca02c"),
        "proxy-on" => Some("#9467bd"),
        "proxy-off" => None,
        _ => Some("#7f7f7f"),
    }
}

/// Acknowledged sends per second, from their acknowledgement times.
pub fn per_second(acked_ms: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut buckets: Vec<u64> = Vec::new();
    for time in acked_ms {
        let second = (time / 1000) as usize;
        if buckets.len() <= second {
            buckets.resize(second + 1, 0);
        }
        buckets[second] += 1;
    }
    buckets
}

/// The page for `report` (a workload's JSON report) with `acked_per_second`.
pub fn page(report: &Value, acked_per_second: &[u64]) -> String {
    let workload = report["workload"].as_str().unwrap_or("?");
    let seed = report["seed"].as_u64().unwrap_or(0);
    let events: Vec<(u64, String)> = report["fault_events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|event| Some((event["time_ms"].as_u64()?, event["kind"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let anomalies: Vec<(Option<u64>, String)> = report["anomaly_details"]
        .as_array()
        .map(|details| {
            details
                .iter()
                .map(|detail| {
                    let time = TIME_KEYS.iter().find_map(|key| detail[*key].as_u64());
                    (time, detail["class"].as_str().unwrap_or("?").to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let end_ms = events
        .iter()
        .map(|(time, _)| *time)
        .chain(anomalies.iter().filter_map(|(time, _)| *time))
        .chain(std::iter::once(acked_per_second.len() as u64 * 1000))
        .max()
        .unwrap_or(1000)
        .max(1000);
    let peak = acked_per_second.iter().copied().max().unwrap_or(0).max(1);
    let x = |time_ms: u64| MARGIN + (WIDTH - 2.0 * MARGIN) * time_ms as f64 / end_ms as f64;
    let y = |count: u64| HEIGHT - MARGIN - (HEIGHT - 2.0 * MARGIN) * count as f64 / peak as f64;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(svg, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    // Throughput as bars, one per second.
    for (second, count) in acked_per_second.iter().enumerate() {
        let left = x(second as u64 * 1000);
        let width = (x((second as u64 + 1) * 1000) - left - 1.0).max(1.0);
        let top = y(*count);
        let _ = write!(
            svg,
            r##"<g><title>{second} s: {count} acked</title><rect x="{left:.1}" y="{top:.1}" width="{width:.1}" height="{:.1}" fill="#1f77b4" fill-opacity="0.5"/></g>"##,
            HEIGHT - MARGIN - top
        );
    }
    // Windows (proxy faults on, broker paused) as shaded bands; crashes as full-height lines.
    let mut open: BTreeMap<&str, u64> = BTreeMap::new();
    for (time, kind) in &events {
        let word = kind.split([' ', '(']).next().unwrap_or_default();
        match word {
            "proxy-on" | "pause" => {
                open.insert(word, *time);
            }
            "proxy-off" | "resume" => {
                let opener = if word == "proxy-off" { "proxy-on" } else { "pause" };
                if let Some(began) = open.remove(opener) {
                    let (color, top) =
                        if opener == "pause" { ("#ff7f0e", MARGIN) } else { ("#9467bd", HEIGHT - MARGIN - 12.0) };
                    let height = if opener == "pause" { HEIGHT - 2.0 * MARGIN } else { 12.0 };
                    let _ = write!(
                        svg,
                        r#"<g><title>{:.1}–{:.1} s: {}</title><rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{height:.1}" fill="{color}" fill-opacity="0.25"/></g>"#,
                        began as f64 / 1000.0,
                        *time as f64 / 1000.0,
                        if opener == "pause" { "broker paused" } else { "proxy faults on" },
                        x(began),
                        (x(*time) - x(began)).max(1.0)
                    );
                }
            }
            _ => {
                let Some(color) = fault_color(kind) else { continue };
                if word == "restart" {
                    continue;
                }
                let at = x(*time);
                let _ = write!(
                    svg,
                    r#"<g><title>{:.1} s: {}</title><line x1="{at:.1}" y1="{MARGIN}" x2="{at:.1}" y2="{:.1}" stroke="{color}" stroke-width="1.5"/></g>"#,
                    *time as f64 / 1000.0,
                    escape(kind),
                    HEIGHT - MARGIN
                );
            }
        }
    }
    // Anomalies as red crosses along the top; untimed ones at the right edge.
    for (time, class) in &anomalies {
        let at = time.map_or(WIDTH - MARGIN + 10.0, x);
        let when = time.map_or("untimed".to_string(), |time| format!("{:.1} s", time as f64 / 1000.0));
        let _ = write!(
            svg,
            r##"<g><title>{when}: {}</title><text x="{at:.1}" y="{:.1}" fill="#d62728" text-anchor="middle" font-weight="bold">×</text></g>"##,
            escape(class),
            MARGIN - 8.0
        );
    }
    // Axes.
    let _ = write!(
        svg,
        r##"<line x1="{MARGIN}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#000"/><line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{0:.1}" stroke="#000"/>"##,
        HEIGHT - MARGIN,
        WIDTH - MARGIN
    );
    let _ = write!(svg, r#"<text x="{MARGIN}" y="{:.1}">0 s</text>"#, HEIGHT - MARGIN + 14.0);
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0} s</text>"#,
        WIDTH - MARGIN,
        HEIGHT - MARGIN + 14.0,
        end_ms as f64 / 1000.0
    );
    let _ = write!(svg, r#"<text x="2" y="{MARGIN}">{peak}/s</text>"#);
    svg.push_str("</svg>");

    let mut counts_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for (_, kind) in &events {
        *counts_by_kind.entry(kind.split([' ', '(']).next().unwrap_or_default().to_string()).or_default() += 1;
    }
    let mut html = String::new();
    let verdict = if report["valid"].as_bool().unwrap_or(anomalies.is_empty()) { "no anomaly" } else { "ANOMALIES" };
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>once check: {workload}, seed {seed}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style>\
         </head><body><h1>once check: {workload}, seed {seed} — {verdict}</h1>\
         <p>{} acknowledged sends. Bars: acknowledged sends per second. Lines: \
         <span style=\"color:#d62728\">kill -9</span>, <span style=\"color:#8c564b\">power loss</span>, \
         <span style=\"color:#ff7f0e\">broker paused</span> (band), \
         <span style=\"color:#9467bd\">proxy faults on</span> (band along the axis). <span style=\"color:#d62728\">×</span>: an anomaly \
         (hover for details).</p>{svg}",
        report["acked"].as_u64().unwrap_or(0)
    );
    html.push_str("<h2>Faults</h2><table><tr><th>fault</th><th>count</th></tr>");
    if let Some(faults) = report["faults"].as_object() {
        for (name, count) in faults {
            let _ = write!(html, "<tr><td>{}</td><td>{count}</td></tr>", escape(name));
        }
    }
    html.push_str("</table><h2>Anomalies</h2><table><tr><th>class</th><th>count</th></tr>");
    if let Some(classes) = report["anomalies"].as_object() {
        for (class, count) in classes {
            let _ = write!(html, "<tr><td>{}</td><td>{count}</td></tr>", escape(class));
        }
    }
    html.push_str("</table><h2>Fault events</h2><p>");
    let listed: Vec<String> =
        counts_by_kind.iter().map(|(kind, count)| format!("{} × {count}", escape(kind))).collect();
    html.push_str(&listed.join(", "));
    html.push_str("</p></body></html>\n");
    html
}

/// Writes the page to `path`.
pub fn write(path: &Path, report: &Value, acked_per_second: &[u64]) -> anyhow::Result<()> {
    std::fs::write(path, page(report, acked_per_second))
        .with_context(|| format!("writing the HTML report {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_throughput_faults_and_anomalies() {
        let report = serde_json::json!({
            "workload": "queue", "seed": 7, "acked": 3, "valid": false,
            "fault_events": [{"time_ms": 1500, "kind": "kill"}, {"time_ms": 2000, "kind": "power-loss (10 unsynced bytes lost)"}],
            "anomaly_details": [
                {"class": "lost-write", "acked_ms": 1200},
                {"class": "duplicate"},
                {"class": "precommitted-read", "time_ms": 1700, "commit_ms": 1790},
            ],
            "faults": {"kill": 1, "power_loss": 1},
            "anomalies": {"lost-write": 1, "duplicate": 1},
        });
        let page = page(&report, &per_second([100, 900, 1100].into_iter()));
        assert!(page.contains("ANOMALIES"));
        assert!(page.contains("1.5 s: kill"));
        assert!(page.contains("2.0 s: power-loss (10 unsynced bytes lost)"));
        assert!(page.contains("1.2 s: lost-write"));
        assert!(page.contains("untimed: duplicate"));
        assert!(page.contains("1.7 s: precommitted-read"), "drawn at the poll, not the commit");
        assert!(page.contains("0 s: 2 acked") && page.contains("1 s: 1 acked"));
        assert_eq!(page.matches("<svg").count(), 1);
    }

    #[test]
    fn sends_are_counted_per_second() {
        assert_eq!(per_second([0, 999, 1000, 3500].into_iter()), vec![2, 1, 0, 1]);
    }
}
