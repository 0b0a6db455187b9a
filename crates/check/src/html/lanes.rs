//! The fault lanes under the plots: one row per kind of fault, so that hundreds of faults neither
//! hide the throughput bars nor each other. Instants (a kill -9, a consumer crash) are counted per
//! time bucket; windows whose end is recorded (a paused broker until its resume, proxy faults from
//! on to off, a broker down from its kill to its restart) are spans. Timed anomalies get their own
//! lane. Pure: events in, lanes out.

use std::collections::BTreeMap;

use crate::history::TimeMs;

/// One kind of lane: which events it draws and how.
#[derive(Debug)]
pub struct LaneSpec {
    pub label: &'static str,
    pub color: &'static str,
    /// First words of the events it draws: instants, or the starts of spans when `ends` is not empty.
    pub starts: &'static [&'static str],
    /// First words of the events that end a span begun by `starts`, for the same process (the number
    /// after the word; the broker's events have none).
    pub ends: &'static [&'static str],
    /// What a span of the lane means, before its length: "paused for" 1.2 s.
    pub span_text: &'static str,
}

/// Every lane, top to bottom: the broker's faults, the network's, then the clients'. A kind of event
/// missing here gets a grey lane of its own, after these.
pub const LANES: [LaneSpec; 13] = [
    LaneSpec {
        label: "broker kill -9",
        color: "#d62728",
        starts: &["kill"],
        ends: &["restart"],
        span_text: "killed, restarted after",
    },
    LaneSpec {
        label: "broker power loss",
        color: "#8c564b",
        starts: &["power-loss"],
        ends: &["restart"],
        span_text: "power lost, restarted after",
    },
    LaneSpec {
        label: "broker paused",
        color: "#ff7f0e",
        starts: &["pause"],
        ends: &["resume"],
        span_text: "paused for",
    },
    LaneSpec {
        label: "proxy faults on",
        color: "#9467bd",
        starts: &["proxy-on"],
        ends: &["proxy-off"],
        span_text: "proxy faults on for",
    },
    LaneSpec { label: "consumer crash", color: "#e377c2", starts: &["crash"], ends: &[], span_text: "" },
    LaneSpec { label: "copier kill -9", color: "#c0392b", starts: &["copier-kill"], ends: &[], span_text: "" },
    LaneSpec {
        label: "copier paused",
        color: "#e67e22",
        starts: &["copier-pause"],
        // A paused copier that is killed or stopped instead of resumed is no longer paused either.
        ends: &["copier-resume", "copier-kill", "copier-stop", "copier-exit"],
        span_text: "a copier paused for",
    },
    LaneSpec { label: "producer kill -9", color: "#a93226", starts: &["producer-kill"], ends: &[], span_text: "" },
    LaneSpec { label: "sink kill -9", color: "#922b21", starts: &["sink-kill"], ends: &[], span_text: "" },
    LaneSpec {
        label: "sink paused",
        color: "#d68910",
        starts: &["sink-pause"],
        ends: &["sink-resume", "sink-kill", "sink-stop", "sink-exit"],
        span_text: "a sink paused for",
    },
    LaneSpec { label: "processor kill -9", color: "#7b241c", starts: &["processor-kill"], ends: &[], span_text: "" },
    LaneSpec {
        label: "processor paused",
        color: "#b9770e",
        starts: &["processor-pause"],
        ends: &["processor-resume", "processor-kill", "processor-stop", "processor-exit"],
        span_text: "a processor paused for",
    },
    LaneSpec {
        // Routine, not faults, but they show when processes came and went.
        label: "client start / exit",
        color: "#7f7f7f",
        starts: &[
            "copier-start",
            "copier-exit",
            "copier-stop",
            "producer-start",
            "producer-exit",
            "producer-stop",
            "sink-start",
            "sink-exit",
            "sink-stop",
            "processor-start",
            "processor-exit",
            "processor-stop",
        ],
        ends: &[],
        span_text: "",
    },
];

/// The color of the anomaly lane and of everything that points at an anomaly.
pub const ANOMALY_COLOR: &str = "#d00000";
/// The color of lanes for kinds of events [`LANES`] does not know.
const OTHER_COLOR: &str = "#7f7f7f";

/// Events of one lane in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Index of the bucket: it covers `bucket * bucket_ms ..` `(bucket + 1) * bucket_ms`.
    pub bucket: u64,
    pub count: u64,
    /// How many of each kind (first word of the event, or anomaly class), for the tooltip.
    pub kinds: BTreeMap<String, u64>,
}

/// A window of a lane: from a start event to its end event, or several such windows too close to
/// tell apart at the page's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start_ms: TimeMs,
    pub end_ms: TimeMs,
    /// Windows merged into this one.
    pub count: u64,
    /// Whether every window's end was recorded; one still open at the end of the history runs to
    /// the end of the page's time axis.
    pub ended: bool,
}

/// One row of the fault lanes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub label: String,
    pub color: &'static str,
    /// [`LaneSpec::span_text`].
    pub span_text: &'static str,
    pub marks: Vec<Mark>,
    pub spans: Vec<Span>,
}

impl Lane {
    /// Events (instants and windows) the lane holds.
    pub fn events(&self) -> u64 {
        self.marks.iter().map(|mark| mark.count).sum::<u64>() + self.spans.iter().map(|span| span.count).sum::<u64>()
    }
}

/// The first word of a fault event's kind: what it is (`power-loss (12 bytes lost)` → `power-loss`).
pub fn first_word(kind: &str) -> &str {
    kind.split([' ', '(']).next().unwrap_or_default()
}

/// Which process an event is about: the number after its first word, if any (`copier-pause 3`).
fn process_of(kind: &str) -> Option<u64> {
    kind.split(' ').nth(1).and_then(|word| word.parse().ok())
}

/// The smallest bucket, in whole seconds, that cuts `end_ms` into at most `columns_max` buckets:
/// one second for runs that short, more for long ones, so a lane never has more elements than that.
pub fn bucket_ms(end_ms: TimeMs, columns_max: u64) -> u64 {
    assert!(columns_max > 0, "at least one column");
    let seconds = end_ms.div_ceil(1000).max(1);
    let bucket = seconds.div_ceil(columns_max).max(1) * 1000;
    assert!(end_ms.div_ceil(bucket) <= columns_max, "{end_ms} ms in buckets of {bucket} ms fits {columns_max}");
    bucket
}

/// `items` (time, kind and how many) counted per bucket of `bucket_ms`, in time order.
pub fn marks<'a>(items: impl Iterator<Item = (TimeMs, &'a str, u64)>, bucket_ms: u64) -> Vec<Mark> {
    assert!(bucket_ms > 0, "buckets have a width");
    let mut buckets: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for (time_ms, kind, count) in items.filter(|(_, _, count)| *count > 0) {
        *buckets.entry(time_ms / bucket_ms).or_default().entry(kind.to_string()).or_default() += count;
    }
    buckets.into_iter().map(|(bucket, kinds)| Mark { bucket, count: kinds.values().sum(), kinds }).collect()
}

/// `spans` in time order, those that overlap or are less than `gap_ms` apart merged into one.
pub fn merge_spans(mut spans: Vec<Span>, gap_ms: u64) -> Vec<Span> {
    spans.sort_by_key(|span| (span.start_ms, span.end_ms));
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        assert!(span.start_ms <= span.end_ms, "a span ends after it starts: {span:?}");
        match merged.last_mut() {
            Some(last) if span.start_ms <= last.end_ms.saturating_add(gap_ms) => {
                last.end_ms = last.end_ms.max(span.end_ms);
                last.count += span.count;
                last.ended &= span.ended;
            }
            _ => merged.push(span),
        }
    }
    merged
}

/// What [`fault_lanes`] gathers per lane before bucketing.
#[derive(Default)]
struct Gathered<'a> {
    instants: Vec<(TimeMs, &'a str, u64)>,
    spans: Vec<Span>,
}

/// The lanes of `events` (time and kind, any order), only those with an event: instants counted per
/// bucket of `bucket_ms`; windows as spans, merged when less than `gap_ms` apart, a window still open
/// at the end running to `end_ms`. An end without a start (a resume of nothing) draws nothing.
pub fn fault_lanes(events: &[(TimeMs, String)], bucket_ms: u64, gap_ms: u64, end_ms: TimeMs) -> Vec<Lane> {
    let mut events: Vec<&(TimeMs, String)> = events.iter().collect();
    events.sort_by_key(|(time_ms, _)| *time_ms);
    let mut gathered: Vec<Gathered> = LANES.iter().map(|_| Gathered::default()).collect();
    let mut others: BTreeMap<&str, Vec<(TimeMs, &str, u64)>> = BTreeMap::new();
    let mut open: BTreeMap<(usize, Option<u64>), TimeMs> = BTreeMap::new();
    for (time_ms, kind) in events {
        let (word, process) = (first_word(kind), process_of(kind));
        // Ends first: one event may end a window in one lane and be an instant in another (a copier
        // killed while paused).
        let mut is_end = false;
        for (lane, _) in LANES.iter().enumerate().filter(|(_, spec)| spec.ends.contains(&word)) {
            is_end = true;
            if let Some(start_ms) = open.remove(&(lane, process)) {
                gathered[lane].spans.push(Span { start_ms, end_ms: *time_ms, count: 1, ended: true });
            }
        }
        match LANES.iter().position(|spec| spec.starts.contains(&word)) {
            // A second start of a window already open (none is expected) keeps the first.
            Some(lane) if !LANES[lane].ends.is_empty() => {
                open.entry((lane, process)).or_insert(*time_ms);
            }
            Some(lane) => gathered[lane].instants.push((*time_ms, word, 1)),
            None if is_end => {}
            None => others.entry(word).or_default().push((*time_ms, word, 1)),
        }
    }
    for ((lane, _), start_ms) in open {
        gathered[lane].spans.push(Span { start_ms, end_ms: end_ms.max(start_ms), count: 1, ended: false });
    }
    let known = LANES.iter().zip(gathered).map(|(spec, gathered)| Lane {
        label: spec.label.to_string(),
        color: spec.color,
        span_text: spec.span_text,
        marks: marks(gathered.instants.into_iter(), bucket_ms),
        spans: merge_spans(gathered.spans, gap_ms),
    });
    let unknown = others.into_iter().map(|(word, instants)| Lane {
        label: word.to_string(),
        color: OTHER_COLOR,
        span_text: "",
        marks: marks(instants.into_iter(), bucket_ms),
        spans: Vec::new(),
    });
    known.chain(unknown).filter(|lane| lane.events() > 0).collect()
}

/// The anomaly lane: the timed `anomalies` (time, class, how many) counted per bucket of
/// `bucket_ms`, and how many of the `found` anomalies it does not draw (those without a time).
pub fn anomaly_lane(anomalies: &[(TimeMs, String, u64)], found: u64, bucket_ms: u64) -> (Lane, u64) {
    let lane = Lane {
        label: "anomalies".to_string(),
        color: ANOMALY_COLOR,
        span_text: "",
        marks: marks(anomalies.iter().map(|(time_ms, class, count)| (*time_ms, class.as_str(), *count)), bucket_ms),
        spans: Vec::new(),
    };
    // A report may count fewer than it details (hand-made, or cut short): never below zero.
    let not_drawn = found.saturating_sub(lane.events());
    assert!(lane.events() + not_drawn >= found, "every anomaly drawn or counted as not drawn");
    (lane, not_drawn)
}
