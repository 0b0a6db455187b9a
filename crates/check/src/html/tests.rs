use serde_json::json;

use super::chart::{self, Layout};
use super::lanes::{self, Span};
use super::*;
use crate::history::{Send, SendOutcome};
use crate::rng::Rng;
use crate::timeline;

fn events(list: &[(u64, &str)]) -> Vec<(u64, String)> {
    list.iter().map(|(time_ms, kind)| (*time_ms, kind.to_string())).collect()
}

fn lane<'a>(lanes: &'a [lanes::Lane], label: &str) -> &'a lanes::Lane {
    lanes.iter().find(|lane| lane.label == label).unwrap_or_else(|| panic!("a lane {label} in {lanes:?}"))
}

/// The inside of `<g id="ID">…</g>` (groups do not nest).
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page.find(&format!(r#"<g id="{id}">"#)).unwrap_or_else(|| panic!("a group {id}"));
    let end = start + page[start..].find("</g>").expect("the group ends");
    &page[start..end]
}

/// The values of `attribute` of every `<element …>` in `text`.
fn attributes(text: &str, element: &str, attribute: &str) -> Vec<f64> {
    text.split(&format!("<{element} "))
        .skip(1)
        .filter_map(|tag| {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            let value = tag.split(&format!(" {attribute}=\"")).nth(1)?;
            value[..value.find('"')?].parse().ok()
        })
        .collect()
}

#[test]
fn the_page_shows_throughput_latency_faults_and_anomalies() {
    let report = json!({
        "workload": "queue", "seed": 7, "acked": 3, "valid": false,
        "per_second": {"acked": [2, 1], "ack_latency_p50_ms": [4, null], "ack_latency_p99_ms": [9, null],
                       "ack_latency_max_ms": [1800, null]},
        "ack_latency_ms": {"p50": 4, "p99": 9, "max": 1800},
        "fault_events": [{"time_ms": 1500, "kind": "kill"}, {"time_ms": 1900, "kind": "restart"},
                         {"time_ms": 2000, "kind": "power-loss (10 unsynced bytes lost)"}],
        "anomaly_details": [
            {"class": "lost-write", "acked_ms": 1200},
            {"class": "duplicate"},
            {"class": "precommitted-read", "time_ms": 1700, "commit_ms": 1790},
        ],
        "faults": {"kill": 1, "power_loss": 1},
        "anomalies": {"lost-write": 1, "duplicate": 1, "precommitted-read": 1},
    });
    let page = page(&report);
    assert!(page.contains("ANOMALIES"));
    assert!(page.contains("1.5–1.9 s: killed, restarted after 0.4 s"), "a kill is a span until its restart");
    assert!(page.contains("2.0–3.0 s: broker power loss, no end recorded"), "no restart: to the axis's end");
    assert!(
        page.contains("1–2 s: 2 anomalies: lost-write × 1, precommitted-read × 1"),
        "drawn at the poll, not the commit"
    );
    assert!(
        page.contains("anomalies (3, 1 not drawn)"),
        "drawn from the details of a report without anomalies_per_second"
    );
    assert!(page.contains(
        "0–1 s: acknowledgements 2 (2/s); ack latency of the sends made then: p50 4 ms, p99 9 ms, max 1.8 s"
    ));
    assert!(page.contains("1–2 s: acknowledgements 1 (1/s); ack latency of the sends made then: none acknowledged"));
    assert!(page.contains("p50 4 ms, p99 9 ms, max 1.8 s."), "the run's latency in the summary");
    assert_eq!(page.matches("<svg").count(), 1);
}

#[test]
fn the_page_is_self_contained() {
    let page = page(&json!({"workload": "txn", "seed": 1, "valid": true}));
    for fetched in ["<script", "http://", "https://", "url(", "@import", "<link", "<img"] {
        assert!(!page.contains(fetched), "nothing fetched or run: {fetched}");
    }
    assert!(page.contains("<svg") && page.contains("</html>"));
}

#[test]
fn a_run_of_no_length_still_gets_an_axis() {
    let timeline = Timeline::default();
    assert_eq!(end_ms(&timeline), 1000);
    let page = page(&json!({}));
    assert!(page.contains("no acknowledged send"), "both plots say why they are empty");
    assert!(page.contains("anomalies: none"));
    assert!(page.contains("INCOMPLETE"), "a report without a verdict is not called valid");
}

#[test]
fn the_axis_reaches_faults_and_anomalies_after_the_last_ack() {
    let timeline = Timeline {
        acked: vec![5, 5],
        events: events(&[(9500, "proxy-on")]),
        anomalies: vec![(12_000, "unseen".into(), 1)],
        anomalies_found: 2,
        ..Timeline::default()
    };
    assert_eq!(end_ms(&timeline), 12_001);
    let (svg, layout) = timeline_svg(&timeline);
    let marks = section(&svg, "lanes");
    let xs = attributes(marks, "rect", "x");
    assert!(
        xs.iter().all(|x| (chart::PLOT_LEFT..chart::PLOT_RIGHT).contains(x) || *x == 8.0),
        "inside the plot: {xs:?}"
    );
    assert!(svg.contains("9.5–13.0 s: proxy faults on, no end recorded"), "an open window runs to the end");
    assert!(svg.contains("12–13 s: unseen × 1"));
    assert_eq!(layout.lanes.len(), 1, "one fault lane");
}

#[test]
fn every_anomaly_is_drawn_from_the_per_second_counts() {
    // 500 of one class found, 200 detailed (the cap): the lane draws all 500 at their seconds.
    let details: Vec<serde_json::Value> =
        (0..200).map(|index| json!({"class": "aborted-read", "time_ms": index})).collect();
    let report = json!({
        "anomalies": {"aborted-read": 500, "duplicate": 2},
        "anomaly_details": details,
        "anomalies_per_second": {"aborted-read": [200, 0, 300]},
    });
    let timeline = timeline(&report);
    assert_eq!(timeline.anomalies, vec![(0, "aborted-read".to_string(), 200), (2000, "aborted-read".to_string(), 300)]);
    assert_eq!(timeline.anomalies_found, 502);
    let page = page(&report);
    assert!(page.contains("anomalies (502, 2 not drawn)"), "the duplicates carry no time");
    assert!(page.contains("2–3 s: aborted-read × 300"));
}

#[test]
fn windows_pair_start_and_end_per_process() {
    let list = events(&[
        (1000, "pause"),
        (1800, "resume"),
        (2000, "copier-pause 1"),
        (2100, "copier-pause 2"),
        (2500, "copier-kill 2"),
        (3000, "copier-resume 1"),
        (4000, "resume"),
        (5000, "proxy-on"),
        (5001, "copier-start 3"),
        (5002, "producer-start 0"),
        (6000, "surprise 1"),
        (7000, "copier-pause 4"),
        (7500, "copier-resume 4"),
    ]);
    let lanes = lanes::fault_lanes(&list, 1000, 0, 10_000);
    let paused = lane(&lanes, "broker paused");
    assert_eq!(
        paused.spans,
        vec![Span { start_ms: 1000, end_ms: 1800, count: 1, ended: true }],
        "a resume of nothing draws nothing"
    );
    assert!(paused.marks.is_empty());
    // Copier 2's kill ends its own pause, not copier 1's: both windows end, overlapping, so one span.
    let copiers = lane(&lanes, "copier paused");
    assert_eq!(
        copiers.spans,
        vec![
            Span { start_ms: 2000, end_ms: 3000, count: 2, ended: true },
            Span { start_ms: 7000, end_ms: 7500, count: 1, ended: true }
        ],
        "each copier's pause ends with its own resume or kill"
    );
    let merged = lanes::fault_lanes(&list, 1000, 4000, 10_000);
    assert_eq!(
        lane(&merged, "copier paused").spans,
        vec![Span { start_ms: 2000, end_ms: 7500, count: 3, ended: true }]
    );
    assert_eq!(lane(&lanes, "copier kill -9").marks.len(), 1, "the kill that ended a pause is a kill too");
    assert_eq!(
        lane(&lanes, "proxy faults on").spans,
        vec![Span { start_ms: 5000, end_ms: 10_000, count: 1, ended: false }]
    );
    let routine = lane(&lanes, "client start / exit");
    assert_eq!(routine.marks.len(), 1);
    assert_eq!(routine.marks[0].count, 2, "two starts in second 5");
    assert_eq!(lane(&lanes, "surprise").events(), 1, "an unknown kind gets a lane of its own");
    let order: Vec<&str> = lanes.iter().map(|lane| lane.label.as_str()).collect();
    assert_eq!(
        order,
        ["broker paused", "proxy faults on", "copier kill -9", "copier paused", "client start / exit", "surprise"]
    );
}

#[test]
fn instants_are_counted_per_bucket() {
    let marks =
        lanes::marks([(0, "kill", 1), (999, "kill", 1), (1000, "crash", 1), (3500, "kill", 1)].into_iter(), 1000);
    let counts: Vec<(u64, u64)> = marks.iter().map(|mark| (mark.bucket, mark.count)).collect();
    assert_eq!(counts, vec![(0, 2), (1, 1), (3, 1)], "empty buckets have no mark");
    assert!(lanes::marks(std::iter::empty(), 1000).is_empty());
    let (lane, not_drawn) = lanes::anomaly_lane(&[], 1, 1000);
    assert_eq!((lane.events(), not_drawn), (0, 1), "an anomaly without a time is counted, not drawn");
    let (lane, not_drawn) = lanes::anomaly_lane(&[(1500, "unseen".into(), 30), (1700, "lost".into(), 0)], 30, 1000);
    assert_eq!((lane.events(), not_drawn, lane.marks.len()), (30, 0, 1), "weighted; nothing of a zero count");
}

#[test]
fn buckets_grow_with_the_run_to_keep_the_page_small() {
    assert_eq!(lanes::bucket_ms(0, 455), 1000, "a run of no length: one second");
    assert_eq!(lanes::bucket_ms(150_000, 455), 1000);
    assert_eq!(lanes::bucket_ms(455_000, 455), 1000);
    assert_eq!(lanes::bucket_ms(455_001, 455), 2000);
    assert_eq!(lanes::bucket_ms(3_600_000, 455), 8000, "an hour: 450 buckets of 8 s");
    assert_eq!(sum_buckets(&[1, 2, 3, 4, 5], 2), vec![3, 7, 5]);
    assert_eq!(sum_buckets(&[], 3), Vec::<u64>::new());
    let q = |p50_ms, p99_ms, max_ms| Some(Quantiles { p50_ms, p99_ms, max_ms });
    assert_eq!(max_buckets(&[q(1, 5, 9), None, q(3, 4, 20), None, None], 2), vec![q(1, 5, 9), q(3, 4, 20), None]);
}

#[test]
fn spans_closer_than_the_gap_merge() {
    let span = |start_ms, end_ms, ended| Span { start_ms, end_ms, count: 1, ended };
    let merged = lanes::merge_spans(vec![span(50, 60, true), span(0, 10, true), span(12, 20, false)], 2);
    assert_eq!(merged, vec![Span { start_ms: 0, end_ms: 20, count: 2, ended: false }, span(50, 60, true)]);
    assert!(lanes::merge_spans(Vec::new(), 5).is_empty());
}

#[test]
fn axes_have_readable_ticks() {
    assert_eq!(chart::nice_step(0.0, 4), 1.0);
    assert_eq!(chart::nice_step(730.0, 4), 200.0);
    assert_eq!(chart::time_step_s(1), 1);
    assert_eq!(chart::time_step_s(150), 15);
    assert_eq!(chart::time_step_s(100_000), 10_800, "past an hour: whole hours");
    assert_eq!(chart::latency_range(&[]), (1, 10), "no latency: one decade from 1 ms");
    let q = |p50_ms, max_ms| Some(Quantiles { p50_ms, p99_ms: p50_ms, max_ms });
    assert_eq!(chart::latency_range(&[q(0, 0)]), (1, 10), "zero waits sit on the floor");
    assert_eq!(chart::latency_range(&[q(4, 35), None, q(12, 2400)]), (1, 10_000));
    assert_eq!(chart::latency_ticks(1, 100), vec![1, 2, 5, 10, 20, 50, 100]);
    assert_eq!(chart::latency_ticks(1, 10_000), vec![1, 10, 100, 1000, 10_000]);
    assert_eq!(chart::format_ms(250), "250 ms");
    assert_eq!(chart::format_ms(2000), "2 s");
    assert_eq!(chart::format_ms(1500), "1.5 s");
}

#[test]
fn lines_break_where_nothing_was_acknowledged() {
    assert_eq!(
        chart::polyline(&[Some((0.0, 1.0)), Some((2.0, 3.0)), None, Some((5.0, 5.0))]),
        "M0.0 1.0L2.0 3.0M3.5 5.0h3"
    );
    assert_eq!(chart::polyline(&[None, None]), "");
}

/// A run as long and busy as the issue's: 150 s, 700 faults of four kinds (and their ends), 100,000
/// acknowledged sends, anomalies.
fn long_run_report() -> serde_json::Value {
    let mut rng = Rng::new(150);
    let sends: Vec<Send> = (0..100_000u64)
        .map(|index| {
            let sent_ms = index * 150_000 / 100_000;
            let wait = if rng.chance(0.01) { rng.between(500, 3000) } else { rng.between(2, 40) };
            let outcome = SendOutcome::Acked { offset: index as i64 };
            Send { producer: 0, index, value: index, partition: 0, outcome, sent_ms, done_ms: sent_ms + wait }
        })
        .collect();
    let mut fault_events = Vec::new();
    for (start, end) in
        [("kill", Some("restart")), ("pause", Some("resume")), ("proxy-on", Some("proxy-off")), ("copier-kill 1", None)]
    {
        for _ in 0..175 {
            let time_ms = rng.between(0, 150_000);
            fault_events.push(json!({"time_ms": time_ms, "kind": start}));
            if let Some(end) = end {
                fault_events.push(json!({"time_ms": time_ms + rng.between(200, 2000), "kind": end}));
            }
        }
    }
    let anomaly_details: Vec<serde_json::Value> =
        (0..40).map(|index| json!({"class": "lost-write", "acked_ms": index * 3700})).collect();
    json!({
        "workload": "txn", "seed": 150, "duration_secs": 150, "valid": false, "acked": sends.len(),
        "ack_latency_ms": timeline::ack_latency_json(&sends),
        "per_second": timeline::per_second_json(&sends),
        "fault_events": fault_events,
        "anomaly_details": anomaly_details,
        "faults": {"kill": 175, "broker_pause": 175, "client_kill": 175},
        "anomalies": {"lost-write": 40},
    })
}

#[test]
fn a_long_run_keeps_its_lanes_off_the_bars_and_its_page_small() {
    let report = long_run_report();
    let page = page(&report);
    let layout = Layout::new(4);
    let (_, drawn) = timeline_svg(&timeline(&report));
    assert_eq!(drawn, layout, "four fault lanes: kill, pause, proxy, copier kill");
    assert!(layout.throughput.bottom <= layout.latency.top, "latency under throughput");
    assert!(layout.latency.bottom <= layout.anomalies.top, "lanes under the plots");
    assert!(layout.lanes.iter().all(|band| band.top >= layout.anomalies.bottom), "fault lanes under the anomaly lane");
    // Every lane element, read back from the page, lies below the throughput and latency plots.
    let lanes = section(&page, "lanes");
    let tops = attributes(lanes, "rect", "y");
    let heights = attributes(lanes, "rect", "height");
    assert!(tops.len() > 100, "the lanes are drawn: {}", tops.len());
    assert_eq!(tops.len(), heights.len());
    assert!(tops.iter().all(|top| *top >= layout.latency.bottom), "no lane reaches into the plots");
    assert!(tops.iter().zip(&heights).all(|(top, height)| top + height <= layout.axis_y), "nor below the axis");
    // The bars stay inside their plot.
    let bars = section(&page, "throughput");
    let bar_tops = attributes(bars, "rect", "y");
    assert!(bar_tops.iter().all(|top| (layout.throughput.top..=layout.throughput.bottom).contains(top)));
    assert!(bar_tops.len() >= 150, "a bar a second (and the frame): {}", bar_tops.len());
    // Light: the page is a few hundred kilobytes at most, with about a thousand elements.
    eprintln!("long run: {} bytes, {} elements", page.len(), page.matches('<').count());
    assert!(page.len() < 400_000, "the page stays small: {} bytes", page.len());
    assert!(page.matches("<rect").count() < 2000, "{} rects", page.matches("<rect").count());
    assert!(page.contains("anomalies (40)"));
}
