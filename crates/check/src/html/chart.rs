//! The timeline's SVG: acknowledgements per second as bars, the ack latency of the sends made then
//! below them (p50, p99, max, log scale), then the anomaly lane and one lane per kind of fault, all
//! on one time axis, with a legend. Every position comes from [`Layout`] and [`TimeAxis`], so that
//! the tests can check that nothing is drawn over the bars.

use std::fmt::Write;

use super::escape;
use super::lanes::{Lane, Span, ANOMALY_COLOR};
use crate::timeline::Quantiles;

pub const WIDTH: f64 = 1100.0;
/// Left of the plots: the gutter holds the lanes' names and the plots' tick labels.
pub const PLOT_LEFT: f64 = 180.0;
pub const PLOT_RIGHT: f64 = WIDTH - 24.0;
const THROUGHPUT_HEIGHT: f64 = 170.0;
const LATENCY_HEIGHT: f64 = 150.0;
const PANEL_GAP: f64 = 24.0;
const ANOMALY_LANE_HEIGHT: f64 = 22.0;
const LANE_HEIGHT: f64 = 16.0;
const LANE_GAP: f64 = 4.0;
/// The narrowest mark or span drawn, so that a one-millisecond fault still shows.
const MARK_WIDTH_MIN: f64 = 2.0;

/// How a lane draws its marks.
struct MarkStyle {
    /// What its events are called in a tooltip: "3 events: …".
    nouns: &'static str,
    width_min: f64,
    /// Opacity of a mark with the fewest events (the most get 1).
    opacity_min: f64,
}

const EVENT_MARKS: MarkStyle = MarkStyle { nouns: "events", width_min: MARK_WIDTH_MIN, opacity_min: 0.6 };
/// Anomalies are what a reader looks for: even one in a long run gets a solid mark that catches the eye.
const ANOMALY_MARKS: MarkStyle = MarkStyle { nouns: "anomalies", width_min: 5.0, opacity_min: 1.0 };

const BAR_COLOR: &str = "#1f77b4";
/// p50, p99 and max: shades of one color, darker for the worse, apart from the lanes' reds.
const LATENCY_COLORS: [&str; 3] = ["#6baed6", "#08519c", "#636363"];
/// The max dashed, drawn last: it is often the p99 too, and would hide under it.
const LATENCY_DASHES: [&str; 3] = ["", "", r#" stroke-dasharray="4 3""#];
const GRID_COLOR: &str = "#e6e6e6";

/// A horizontal band of the SVG, from `top` down to `bottom`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub top: f64,
    pub bottom: f64,
}

impl Band {
    fn starting(top: f64, height: f64) -> Band {
        Band { top, bottom: top + height }
    }

    pub fn height(self) -> f64 {
        self.bottom - self.top
    }
}

/// Where everything goes, top to bottom: legend, throughput, latency, anomaly lane, fault lanes, axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub throughput: Band,
    pub latency: Band,
    pub anomalies: Band,
    /// One per fault lane, in order.
    pub lanes: Vec<Band>,
    /// The time axis line, under the last lane.
    pub axis_y: f64,
    pub height: f64,
}

impl Layout {
    pub fn new(fault_lanes: usize) -> Layout {
        let throughput = Band::starting(40.0, THROUGHPUT_HEIGHT);
        let latency = Band::starting(throughput.bottom + PANEL_GAP, LATENCY_HEIGHT);
        let anomalies = Band::starting(latency.bottom + PANEL_GAP, ANOMALY_LANE_HEIGHT);
        let lanes: Vec<Band> = (0..fault_lanes)
            .map(|lane| {
                Band::starting(anomalies.bottom + LANE_GAP + lane as f64 * (LANE_HEIGHT + LANE_GAP), LANE_HEIGHT)
            })
            .collect();
        let axis_y = lanes.last().unwrap_or(&anomalies).bottom + LANE_GAP;
        Layout { throughput, latency, anomalies, lanes, axis_y, height: axis_y + 42.0 }
    }
}

/// The time axis: `end_ms` milliseconds since the start of the run, cut into buckets of `bucket_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeAxis {
    pub end_ms: u64,
    pub bucket_ms: u64,
}

impl TimeAxis {
    pub fn new(end_ms: u64, bucket_ms: u64) -> TimeAxis {
        assert!(bucket_ms > 0, "buckets have a width");
        assert!(end_ms > 0, "the axis has a length");
        assert!(end_ms.is_multiple_of(bucket_ms), "the axis ends on a bucket's edge: {end_ms} / {bucket_ms}");
        TimeAxis { end_ms, bucket_ms }
    }

    pub fn buckets(self) -> u64 {
        self.end_ms / self.bucket_ms
    }

    pub fn x(self, time_ms: u64) -> f64 {
        PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * time_ms.min(self.end_ms) as f64 / self.end_ms as f64
    }

    /// Left edge and width of bucket `bucket`.
    fn column(self, bucket: u64) -> (f64, f64) {
        let left = self.x(bucket * self.bucket_ms);
        (left, self.x((bucket + 1) * self.bucket_ms) - left)
    }

    /// `12–13 s`: the seconds bucket `bucket` covers.
    fn bucket_label(self, bucket: u64) -> String {
        let seconds = self.bucket_ms / 1000;
        format!("{}–{} s", bucket * seconds, (bucket + 1) * seconds)
    }
}

/// Everything the SVG shows, bucketed on the axis.
pub struct Chart<'a> {
    pub axis: TimeAxis,
    /// Acknowledgements that arrived in each bucket.
    pub acked: &'a [u64],
    /// Ack latency of the sends made in each bucket (of a bucket of several seconds: each value
    /// the highest of its seconds').
    pub latency: &'a [Option<Quantiles>],
    pub anomalies: &'a Lane,
    /// Anomalies found but not in the lane (without a time; in an older report, also those beyond the
    /// details): counted in the lane's name.
    pub anomalies_not_drawn: u64,
    pub lanes: &'a [Lane],
    /// When the fault schedule stopped (`--duration`): healing and the final reads come after.
    pub faults_end_ms: Option<u64>,
}

/// The step between ticks (1, 2 or 5 times a power of ten) that cuts `0..max` into at most `ticks`.
pub fn nice_step(max: f64, ticks: u32) -> f64 {
    let raw = (max / f64::from(ticks.max(1))).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|factor| factor * magnitude).find(|step| *step >= raw).unwrap_or(raw)
}

/// Seconds between the time axis's labelled ticks: at most about ten of them.
pub fn time_step_s(end_s: u64) -> u64 {
    const STEPS: [u64; 16] = [1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600];
    STEPS.iter().copied().find(|step| end_s / step <= 10).unwrap_or_else(|| end_s.div_ceil(10).next_multiple_of(3600))
}

/// The latency axis, in milliseconds: from the power of ten at or below the lowest p50 (1 ms at
/// least) to the one at or above the highest max, at least one decade apart.
pub fn latency_range(latency: &[Option<Quantiles>]) -> (u64, u64) {
    let lowest = latency.iter().flatten().map(|quantiles| quantiles.p50_ms).min().unwrap_or(1).max(1);
    let highest = latency.iter().flatten().map(|quantiles| quantiles.max_ms).max().unwrap_or(1).max(1);
    let mut low = 1u64;
    while low.saturating_mul(10) <= lowest {
        low *= 10;
    }
    let mut high = 1u64;
    while high < highest {
        high = high.saturating_mul(10);
    }
    let range = (low, high.max(low.saturating_mul(10)));
    assert!(range.0 < range.1, "the latency axis is not empty: {range:?}");
    range
}

/// Labelled ticks of the latency axis: every power of ten, and 2 and 5 times them when the axis
/// spans two decades or fewer.
pub fn latency_ticks(low: u64, high: u64) -> Vec<u64> {
    let factors: &[u64] = if high / low <= 100 { &[1, 2, 5] } else { &[1] };
    let mut ticks = Vec::new();
    let mut decade = low;
    while decade <= high {
        ticks.extend(factors.iter().map(|factor| decade * factor).filter(|tick| *tick <= high));
        decade = decade.saturating_mul(10);
    }
    ticks
}

/// `250 ms`, `2 s`, `1.5 s`.
pub fn format_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        _ if ms.is_multiple_of(1000) => format!("{} s", ms / 1000),
        _ => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

/// The SVG of `chart`, `layout` giving its places.
pub fn svg(chart: &Chart, layout: &Layout) -> String {
    assert_eq!(layout.lanes.len(), chart.lanes.len(), "one band per fault lane");
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fff"/>"##,
        height = layout.height
    );
    grid_and_axis(&mut out, chart.axis, layout);
    if let Some(faults_end_ms) = chart.faults_end_ms.filter(|end_ms| *end_ms <= chart.axis.end_ms) {
        faults_end(&mut out, chart.axis.x(faults_end_ms), layout);
    }
    legend(&mut out);
    throughput(&mut out, chart, layout.throughput);
    latency(&mut out, chart, layout.latency);
    hover_columns(&mut out, chart, Band { top: layout.throughput.top, bottom: layout.latency.bottom });
    out.push_str(r#"<g id="lanes">"#);
    anomaly_lane(&mut out, chart, layout.anomalies);
    for (lane, band) in chart.lanes.iter().zip(&layout.lanes) {
        fault_lane(&mut out, chart.axis, lane, *band);
    }
    out.push_str("</g></svg>");
    out
}

/// Vertical grid lines at the time ticks through every plot and lane (drawn first, so under
/// everything), the time axis with its labels and its title.
fn grid_and_axis(out: &mut String, axis: TimeAxis, layout: &Layout) {
    let end_s = axis.end_ms / 1000;
    let step = time_step_s(end_s);
    let (top, bottom) = (layout.throughput.top, layout.axis_y);
    out.push_str(r#"<g id="time-axis">"#);
    for second in (0..=end_s).step_by(step as usize) {
        let x = axis.x(second * 1000);
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="{GRID_COLOR}"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{second} s</text>"#,
            bottom + 14.0
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{PLOT_LEFT}" y1="{bottom:.1}" x2="{PLOT_RIGHT}" y2="{bottom:.1}" stroke="#000"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">time since the start of the run (s){}</text></g>"##,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        bottom + 32.0,
        if axis.bucket_ms > 1000 { format!("; {} s per bucket", axis.bucket_ms / 1000) } else { String::new() }
    );
}

/// A dashed line where the fault schedule stopped, under everything like the grid.
fn faults_end(out: &mut String, x: f64, layout: &Layout) {
    let _ = write!(
        out,
        r##"<g id="faults-end"><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="5 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#666">faults stop</text></g>"##,
        layout.throughput.top - 10.0,
        layout.axis_y,
        x - 3.0,
        layout.throughput.top - 3.0
    );
}

/// What the marks mean, along the top.
fn legend(out: &mut String) {
    out.push_str(r#"<g id="legend">"#);
    let _ = write!(
        out,
        r#"<rect x="{PLOT_LEFT}" y="8" width="12" height="10" fill="{BAR_COLOR}" fill-opacity="0.7"/><text x="{}" y="17">acknowledgements per second (when they arrived)</text><text x="{}" y="17">ack latency of the sends made then:</text>"#,
        PLOT_LEFT + 16.0,
        PLOT_LEFT + 300.0
    );
    let mut x = PLOT_LEFT + 500.0;
    for ((name, color), dash) in ["p50", "p99", "max"].iter().zip(LATENCY_COLORS).zip(LATENCY_DASHES) {
        let _ = write!(
            out,
            r#"<line x1="{x}" y1="13" x2="{}" y2="13" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="17">{name}</text>"#,
            x + 20.0,
            x + 24.0
        );
        x += 58.0;
    }
    let _ = write!(
        out,
        r#"<rect x="{}" y="8" width="6" height="10" fill="{ANOMALY_COLOR}"/><text x="{}" y="17">anomaly</text></g>"#,
        x + 20.0,
        x + 30.0
    );
}

/// A plot's name in the gutter, on two lines.
fn plot_name(out: &mut String, band: Band, name: &str, unit: &str) {
    let _ = write!(
        out,
        r##"<text x="8" y="{:.1}" font-weight="bold">{name}</text><text x="8" y="{:.1}" fill="#444">{unit}</text>"##,
        band.top + 12.0,
        band.top + 26.0
    );
}

/// A horizontal grid line across a plot with its label in the gutter.
fn y_tick(out: &mut String, y: f64, label: &str) {
    let _ = write!(
        out,
        r#"<line x1="{PLOT_LEFT}" y1="{y:.1}" x2="{PLOT_RIGHT}" y2="{y:.1}" stroke="{GRID_COLOR}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
        PLOT_LEFT - 6.0,
        y + 4.0
    );
}

/// A plot with no data says so in its middle.
fn empty_note(out: &mut String, band: Band, text: &str) {
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">{text}</text>"##,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        (band.top + band.bottom) / 2.0
    );
}

/// Acknowledgements per second as one bar per bucket (a bucket of several seconds: their mean).
fn throughput(out: &mut String, chart: &Chart, band: Band) {
    out.push_str(r#"<g id="throughput">"#);
    plot_name(out, band, "throughput", "acks per second");
    let seconds_per_bucket = chart.axis.bucket_ms as f64 / 1000.0;
    let peak = chart.acked.iter().copied().max().unwrap_or(0) as f64 / seconds_per_bucket;
    let step = nice_step(peak, 4);
    let top = ((peak / step).ceil() * step).max(step);
    let y = |rate: f64| band.bottom - band.height() * rate / top;
    let mut tick = 0.0;
    while tick <= top {
        y_tick(out, y(tick), &format!("{tick}"));
        tick += step;
    }
    if peak == 0.0 {
        empty_note(out, band, "no acknowledged send");
    }
    for (bucket, count) in chart.acked.iter().enumerate().filter(|(_, count)| **count > 0) {
        let (left, width) = chart.axis.column(bucket as u64);
        // A gap between bars while they are wide enough to keep one.
        let width = if width >= 4.0 { width - 1.0 } else { width.max(1.0) };
        let bar_top = y(*count as f64 / seconds_per_bucket);
        let _ = write!(
            out,
            r#"<rect x="{left:.1}" y="{bar_top:.1}" width="{width:.1}" height="{:.1}" fill="{BAR_COLOR}" fill-opacity="0.7"/>"#,
            band.bottom - bar_top
        );
    }
    frame(out, band);
    out.push_str("</g>");
}

/// A plot's border.
fn frame(out: &mut String, band: Band) {
    let _ = write!(
        out,
        r##"<rect x="{PLOT_LEFT}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#999"/>"##,
        band.top,
        PLOT_RIGHT - PLOT_LEFT,
        band.height()
    );
}

/// p50, p99 and max ack latency per bucket as three lines on a log scale, broken where no send of a
/// bucket was acknowledged.
fn latency(out: &mut String, chart: &Chart, band: Band) {
    out.push_str(r#"<g id="latency">"#);
    plot_name(out, band, "ack latency", "send → ack, log scale");
    let (low, high) = latency_range(chart.latency);
    let span = (high as f64).ln() - (low as f64).ln();
    let y = |ms: u64| band.bottom - band.height() * ((ms.clamp(low, high) as f64).ln() - (low as f64).ln()) / span;
    for tick in latency_ticks(low, high) {
        y_tick(out, y(tick), &format_ms(tick));
    }
    if chart.latency.iter().all(Option::is_none) {
        empty_note(out, band, "no acknowledged send");
    }
    let picks: [fn(&Quantiles) -> u64; 3] = [|q| q.p50_ms, |q| q.p99_ms, |q| q.max_ms];
    for ((pick, color), dash) in picks.iter().zip(LATENCY_COLORS).zip(LATENCY_DASHES) {
        let points: Vec<Option<(f64, f64)>> = (0..chart.latency.len())
            .map(|bucket| {
                let (left, width) = chart.axis.column(bucket as u64);
                chart.latency[bucket].as_ref().map(|quantiles| (left + width / 2.0, y(pick(quantiles))))
            })
            .collect();
        let _ = write!(
            out,
            r#"<path d="{}" fill="none" stroke="{color}" stroke-width="1.5" stroke-linejoin="round"{dash}/>"#,
            polyline(&points)
        );
    }
    frame(out, band);
    out.push_str("</g>");
}

/// Path data through `points`, lifting the pen at a `None`; a point alone gets a short dash, since
/// a path of one point draws nothing.
pub fn polyline(points: &[Option<(f64, f64)>]) -> String {
    let mut data = String::new();
    for (index, point) in points.iter().enumerate() {
        let Some((x, y)) = point else { continue };
        let after_gap = index == 0 || points[index - 1].is_none();
        let before_gap = points.get(index + 1).is_none_or(Option::is_none);
        match (after_gap, before_gap) {
            (true, true) => _ = write!(data, "M{:.1} {y:.1}h3", x - 1.5),
            (true, false) => _ = write!(data, "M{x:.1} {y:.1}"),
            (false, _) => _ = write!(data, "L{x:.1} {y:.1}"),
        }
    }
    data
}

/// An invisible column over both plots per bucket, whose tooltip gives the bucket's numbers.
fn hover_columns(out: &mut String, chart: &Chart, band: Band) {
    out.push_str(r#"<g id="hover">"#);
    let seconds_per_bucket = chart.axis.bucket_ms as f64 / 1000.0;
    for bucket in 0..chart.axis.buckets() as usize {
        let acked = chart.acked.get(bucket).copied().unwrap_or(0);
        let latency = chart.latency.get(bucket).copied().flatten();
        if acked == 0 && latency.is_none() {
            continue;
        }
        let latency = match latency {
            Some(q) if seconds_per_bucket > 1.0 => format!(
                "worst second's p50 {}, p99 {}, max {}",
                format_ms(q.p50_ms),
                format_ms(q.p99_ms),
                format_ms(q.max_ms)
            ),
            Some(q) => format!("p50 {}, p99 {}, max {}", format_ms(q.p50_ms), format_ms(q.p99_ms), format_ms(q.max_ms)),
            None => "none acknowledged".to_string(),
        };
        let (left, width) = chart.axis.column(bucket as u64);
        let _ = write!(
            out,
            r##"<rect x="{left:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="#000" fill-opacity="0"><title>{}: acknowledgements {acked} ({:.0}/s); ack latency of the sends made then: {latency}</title></rect>"##,
            band.top,
            band.height(),
            chart.axis.bucket_label(bucket as u64),
            acked as f64 / seconds_per_bucket
        );
    }
    out.push_str("</g>");
}

/// A lane's name (with its count) in the gutter and its background across the plot.
fn lane_row(out: &mut String, band: Band, name: &str, color: &str, background: &str, bold: bool) {
    let weight = if bold { r#" font-weight="bold""# } else { "" };
    let _ = write!(
        out,
        r#"<rect x="{PLOT_LEFT}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{background}"/><rect x="8" y="{:.1}" width="8" height="8" fill="{color}"/><text x="20" y="{:.1}" fill="{}"{weight}>{}</text>"#,
        band.top,
        PLOT_RIGHT - PLOT_LEFT,
        band.height(),
        (band.top + band.bottom) / 2.0 - 4.0,
        (band.top + band.bottom) / 2.0 + 4.0,
        if bold { color } else { "#000" },
        escape(name)
    );
}

/// The anomaly lane: red bars per bucket, taller for more, on a pink row whenever there is one.
fn anomaly_lane(out: &mut String, chart: &Chart, band: Band) {
    let found = chart.anomalies.events() + chart.anomalies_not_drawn;
    let name = match (found, chart.anomalies_not_drawn) {
        (0, _) => "anomalies: none".to_string(),
        (_, 0) => format!("anomalies ({found})"),
        (_, not_drawn) => format!("anomalies ({found}, {not_drawn} not drawn)"),
    };
    let background = if found > 0 { "#fde2e2" } else { "#f4f4f4" };
    lane_row(out, band, &name, ANOMALY_COLOR, background, found > 0);
    marks(out, chart.axis, chart.anomalies, band, &ANOMALY_MARKS);
}

/// One fault lane: its row, its spans, its marks.
fn fault_lane(out: &mut String, axis: TimeAxis, lane: &Lane, band: Band) {
    lane_row(out, band, &format!("{} ({})", lane.label, lane.events()), lane.color, "#f4f4f4", false);
    for span in &lane.spans {
        span_rect(out, axis, lane, *span, band);
    }
    marks(out, axis, lane, band, &EVENT_MARKS);
}

/// A lane's marks: one per bucket, taller and darker for more events, its tooltip saying what.
fn marks(out: &mut String, axis: TimeAxis, lane: &Lane, band: Band, style: &MarkStyle) {
    let peak = lane.marks.iter().map(|mark| mark.count).max().unwrap_or(1) as f64;
    for mark in &lane.marks {
        let (left, width) = axis.column(mark.bucket);
        let share = mark.count as f64 / peak;
        let height = band.height() * (0.4 + 0.6 * share);
        let kinds: Vec<String> = mark.kinds.iter().map(|(kind, count)| format!("{} × {count}", escape(kind))).collect();
        let what = if mark.kinds.len() == 1 {
            kinds.join("")
        } else {
            format!("{} {}: {}", mark.count, style.nouns, kinds.join(", "))
        };
        let _ = write!(
            out,
            r#"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="{}" fill-opacity="{:.2}"><title>{}: {what}</title></rect>"#,
            band.bottom - height,
            width.max(style.width_min),
            lane.color,
            style.opacity_min + (1.0 - style.opacity_min) * share,
            axis.bucket_label(mark.bucket)
        );
    }
}

/// A window of a lane, dashed when its end was not recorded.
fn span_rect(out: &mut String, axis: TimeAxis, lane: &Lane, span: Span, band: Band) {
    let (left, right) = (axis.x(span.start_ms), axis.x(span.end_ms));
    let seconds = |ms: u64| ms as f64 / 1000.0;
    let length = seconds(span.end_ms - span.start_ms);
    let what = match (span.count, span.ended) {
        (1, true) => format!("{} {length:.1} s", lane.span_text),
        (1, false) => format!("{}, no end recorded", lane.label),
        (count, _) => format!("{count} × {}, {length:.1} s in all from the first start to the last end", lane.label),
    };
    let outline =
        if span.ended { String::new() } else { format!(r#" stroke="{}" stroke-dasharray="3 2""#, lane.color) };
    let _ = write!(
        out,
        r#"<rect x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.5"{outline}><title>{:.1}–{:.1} s: {}</title></rect>"#,
        band.top + 1.0,
        (right - left).max(MARK_WIDTH_MIN),
        band.height() - 2.0,
        lane.color,
        seconds(span.start_ms),
        seconds(span.end_ms),
        escape(&what)
    );
}
