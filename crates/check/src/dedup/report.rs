//! The outcome of a `dedup` run: the summary table and the JSON report.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use serde_json::{json, Value};

use crate::dedup::checker::{resends, DedupAnomaly, DedupHistory, DEDUP_CLASSES};
use crate::history::Send;
use crate::producer_process::producer_counts;
use crate::report::{
    anomalies_per_second, anomaly_table, capped_details, class_counts, send_counts, FaultCounts, Summary,
};
use crate::timeline;

/// Everything a `dedup` report says, gathered once.
pub struct DedupOutcome<'a> {
    pub seed: u64,
    pub duration_secs: u64,
    pub topic: &'a str,
    /// The topic's `dedup.source`, if it has one.
    pub dedup_source: Option<&'a str>,
    /// Where clients connected (the proxy if there was one).
    pub client_bootstrap: &'a str,
    pub history: &'a DedupHistory,
    pub anomalies: &'a [DedupAnomaly],
    pub faults: FaultCounts,
    /// Why the run could not complete (no final read), if it could not: the report then holds what
    /// was recorded until then (`complete: false`).
    pub incomplete: Option<&'a str>,
}

/// Distinct ids: sent, acknowledged (to some send), stored (in the final read).
fn id_counts(history: &DedupHistory) -> (usize, usize, usize) {
    let distinct = |ids: &mut dyn Iterator<Item = u64>| ids.collect::<HashSet<_>>().len();
    let sends: &[Send] = &history.sends;
    (
        distinct(&mut sends.iter().map(|send| send.value)),
        distinct(&mut sends.iter().filter(|send| send.acked_offset().is_some()).map(|send| send.value)),
        distinct(&mut history.final_read.records.iter().map(|record| record.value)),
    )
}

impl DedupOutcome<'_> {
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        class_counts(&DEDUP_CLASSES, self.anomalies.iter().map(DedupAnomaly::class))
    }

    /// Acknowledgements naming an offset, and those saying it is unknown (negative).
    fn answers(&self) -> (usize, usize) {
        let offsets = self.history.sends.iter().filter_map(Send::acked_offset);
        offsets.fold(
            (0, 0),
            |(known, unknown), offset| if offset >= 0 { (known + 1, unknown) } else { (known, unknown + 1) },
        )
    }
}

impl Summary for DedupOutcome<'_> {
    fn json(&self) -> Value {
        let history = self.history;
        let (acked, failed, unknown) = send_counts(&history.sends);
        let (ids_sent, ids_acked, ids_stored) = id_counts(history);
        let (started, killed, exited, stopped) = producer_counts(&history.producers);
        let (offset_answers, unknown_offset_answers) = self.answers();
        let mut faults = self.faults.json();
        faults.insert("client_kill".into(), killed.into());
        json!({
            "workload": "dedup",
            "seed": self.seed,
            "duration_secs": self.duration_secs,
            "topic": self.topic,
            "dedup_source": self.dedup_source,
            "partitions": history.partitions,
            "bootstrap": self.client_bootstrap,
            "complete": self.incomplete.is_none(),
            "incomplete_reason": self.incomplete,
            // An incomplete run is not judged valid or invalid: only its anomalies so far are listed.
            "valid": if self.incomplete.is_none() { Value::from(self.anomalies.is_empty()) } else { Value::Null },
            "sent": history.sends.len(),
            "acked": acked,
            "failed": failed,
            "unknown": unknown,
            "ack_latency_ms": timeline::ack_latency_json(&history.sends),
            "per_second": timeline::per_second_json(&history.sends),
            "answers": { "offset": offset_answers, "unknown_offset": unknown_offset_answers },
            "ids": { "sent": ids_sent, "acked": ids_acked, "stored": ids_stored },
            "resends": resends(&history.sends),
            "producers": { "started": started, "killed": killed, "exited": exited, "stopped": stopped },
            "producer_runs": history.producers,
            "polled": history.polls.len(),
            "final_read_records": history.final_read.records.len(),
            "final_read_complete": history.final_read.complete,
            "final_read_to": history.final_read.read_to,
            "partitions_at_final_read": history.final_read.partitions_found,
            "faults": faults,
            "fault_events": history.faults,
            "anomalies": self.counts(),
            "anomalies_per_second": anomalies_per_second(self.anomalies, DedupAnomaly::class),
            "anomaly_details": capped_details(self.anomalies, DedupAnomaly::class),
        })
    }

    fn table(&self) -> String {
        let history = self.history;
        let (acked, failed, unknown) = send_counts(&history.sends);
        let (ids_sent, ids_acked, ids_stored) = id_counts(history);
        let (started, killed, exited, stopped) = producer_counts(&history.producers);
        let (offset_answers, unknown_offset_answers) = self.answers();
        let resends = resends(&history.sends);
        let mut out = String::new();
        let source = self.dedup_source.unwrap_or("none (the broker does not deduplicate this topic)");
        let _ = writeln!(
            out,
            "once check: workload dedup, seed {}, {} s, topic {} (dedup.source {source})",
            self.seed, self.duration_secs, self.topic
        );
        let _ = writeln!(
            out,
            "  sends       {acked} acked ({offset_answers} with an offset, {unknown_offset_answers} unknown), {failed} failed, {unknown} unknown"
        );
        let _ = writeln!(
            out,
            "  resends     {}: of acknowledged ids {}, of failed sends {}, of unanswered sends {}, while in flight {}",
            resends.total, resends.of_acked, resends.of_failed, resends.of_unanswered, resends.in_flight
        );
        let _ = writeln!(out, "  ids         {ids_sent} sent, {ids_acked} acknowledged, {ids_stored} stored");
        let _ = writeln!(
            out,
            "  producers   {started} processes: {killed} killed, {exited} exited, {stopped} stopped by the checker"
        );
        let _ = writeln!(
            out,
            "  reads       {} polled live; final read {} records{}",
            history.polls.len(),
            history.final_read.records.len(),
            if history.final_read.complete { "" } else { " (INCOMPLETE: not every partition read to its end)" }
        );
        if let Some(found) = history.final_read.partitions_found.filter(|found| *found < history.partitions) {
            let _ = writeln!(
                out,
                "  partitions  the broker had {found} of {} at the final read: the rest were lost",
                history.partitions
            );
        }
        let _ = writeln!(out, "  faults      {}, {killed} producer kills", self.faults.summary());
        anomaly_table(&mut out, &DEDUP_CLASSES, &self.counts(), 22, self.seed);
        if let Some(reason) = self.incomplete {
            let _ = writeln!(out, "  INCOMPLETE  {reason}");
        }
        out
    }
}
