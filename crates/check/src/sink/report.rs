//! The outcome of a `sink` run: the summary table and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use crate::producer_process::producer_counts;
use crate::report::{
    anomalies_per_second, anomaly_table, capped_details, class_counts, send_counts, FaultCounts, Summary,
};
use crate::sink::checker::{SinkAnomaly, SINK_CLASSES};
use crate::sink::history::{SinkEnd, SinkHistory};
use crate::sink::Drained;
use crate::timeline;

/// Everything a `sink` report says, gathered once.
pub struct SinkOutcome<'a> {
    pub seed: u64,
    pub duration_secs: u64,
    pub topic: &'a str,
    pub group: &'a str,
    /// The database URL, password redacted.
    pub database: &'a str,
    /// `after` or `before` when the sinks ran `--at-least-once`.
    pub at_least_once: Option<&'a str>,
    /// Where clients connected (the proxy if there was one).
    pub client_bootstrap: &'a str,
    pub history: &'a SinkHistory,
    pub anomalies: &'a [SinkAnomaly],
    pub drained: &'a Drained,
    /// Database stalls around sink faults that got the database's lock.
    pub stalls: u64,
    pub faults: FaultCounts,
    /// Why the run could not complete, if it could not: the report then holds what was recorded
    /// until then (`complete: false`).
    pub incomplete: Option<&'a str>,
}

/// What became of the sinks.
#[derive(Debug, Default)]
struct SinkCounts {
    started: usize,
    killed: usize,
    paused: usize,
    refused_batches: u64,
    /// Exited with 0 after SIGTERM at the end.
    terminated_cleanly: usize,
    /// Exited by themselves, or not cleanly after SIGTERM, or killed because they did not exit.
    other_exits: usize,
}

impl SinkOutcome<'_> {
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        class_counts(&SINK_CLASSES, self.anomalies.iter().map(SinkAnomaly::class))
    }

    fn sinks(&self) -> SinkCounts {
        let sinks = &self.history.sinks;
        let count = |wanted: &dyn Fn(&SinkEnd) -> bool| sinks.iter().filter(|sink| wanted(&sink.end)).count();
        SinkCounts {
            started: sinks.len(),
            killed: count(&|end| *end == SinkEnd::Killed),
            paused: sinks.iter().map(|sink| sink.pauses.len()).sum(),
            refused_batches: sinks.iter().map(|sink| sink.refused_batches).sum(),
            terminated_cleanly: count(&|end| *end == SinkEnd::Terminated { code: Some(0) }),
            other_exits: count(&|end| match end {
                SinkEnd::Terminated { code } => *code != Some(0),
                SinkEnd::Exited { .. } | SinkEnd::Stopped => true,
                SinkEnd::Running | SinkEnd::Killed => false,
            }),
        }
    }

    /// Effects per sink process, by its id.
    fn effects_by_sink(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for effect in &self.history.effects {
            *counts.entry(effect.sink.as_str()).or_default() += 1;
        }
        counts
    }
}

impl Summary for SinkOutcome<'_> {
    fn json(&self) -> Value {
        let history = self.history;
        let (acked, failed, unknown) = send_counts(&history.sends);
        let sinks = self.sinks();
        let producers = producer_counts(&history.producers);
        let fault_map = {
            let mut faults = self.faults.json();
            faults.insert("client_kill".into(), sinks.killed.into());
            faults.insert("client_pause".into(), sinks.paused.into());
            faults.insert("database_stall".into(), self.stalls.into());
            faults
        };
        json!({
            "workload": "sink",
            "seed": self.seed,
            "duration_secs": self.duration_secs,
            "topic": self.topic,
            "group": self.group,
            "database": self.database,
            "at_least_once": self.at_least_once,
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
            "input_records": history.input.records.len(),
            "input_read_complete": history.input.complete,
            "input_read_to": history.input.read_to,
            "effects": history.effects.len(),
            "effects_by_sink": self.effects_by_sink(),
            "positions": history.positions,
            "drain": { "complete": self.drained.complete, "ends": self.drained.ends, "took_ms": self.drained.took_ms },
            "sinks": {
                "started": sinks.started,
                "killed": sinks.killed,
                "paused": sinks.paused,
                "refused_batches": sinks.refused_batches,
                "terminated_cleanly": sinks.terminated_cleanly,
                "other_exits": sinks.other_exits,
            },
            "sink_runs": history.sinks,
            "producers": { "started": producers.0, "killed": producers.1 },
            "faults": fault_map,
            "fault_events": history.faults,
            "anomalies": self.counts(),
            "anomalies_per_second": anomalies_per_second(self.anomalies, SinkAnomaly::class),
            "anomaly_details": capped_details(self.anomalies, SinkAnomaly::class),
        })
    }

    fn table(&self) -> String {
        let history = self.history;
        let (acked, failed, unknown) = send_counts(&history.sends);
        let sinks = self.sinks();
        let mut out = String::new();
        let mode = self.at_least_once.map_or(String::new(), |order| format!(", AT LEAST ONCE ({order})"));
        let _ = writeln!(
            out,
            "once check: workload sink, seed {}, {} s, {} -> {}{mode}",
            self.seed, self.duration_secs, self.topic, self.database
        );
        let _ = writeln!(out, "  sends       {acked} acked, {failed} failed, {unknown} unknown");
        let complete = if history.input.complete { "complete" } else { "INCOMPLETE" };
        let _ = writeln!(out, "  final read  input {} records ({complete})", history.input.records.len());
        let stored: i64 = history.positions.iter().flatten().sum();
        let rows = history.positions.iter().flatten().count();
        let _ = writeln!(
            out,
            "  database    {} effects; {rows} of {} partitions have a stored position (sum {stored})",
            history.effects.len(),
            history.partitions
        );
        let drain = if self.drained.complete { "drained" } else { "DID NOT DRAIN" };
        let _ = writeln!(
            out,
            "  sinks       {} started: {} killed, {} pauses, {} batches refused by the fence, {} other exits; {drain} in {} ms",
            sinks.started, sinks.killed, sinks.paused, sinks.refused_batches, sinks.other_exits, self.drained.took_ms
        );
        let _ = writeln!(out, "  faults      {}, {} database stalls", self.faults.summary(), self.stalls);
        anomaly_table(&mut out, &SINK_CLASSES, &self.counts(), 22, self.seed);
        if let Some(reason) = self.incomplete {
            let _ = writeln!(out, "  INCOMPLETE  {reason}");
        }
        out
    }
}
