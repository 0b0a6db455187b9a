//! The outcome of a `queue` run: the summary table and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use crate::history::History;
use crate::queue::checker::{Anomaly, CLASSES};
use crate::report::{
    anomalies_per_second, anomaly_table, capped_details, class_counts, send_counts, FaultCounts, Summary,
};
use crate::timeline;

/// Everything a report says, gathered once.
pub struct Outcome<'a> {
    pub workload: &'a str,
    pub seed: u64,
    pub duration_secs: u64,
    pub topic: &'a str,
    /// Where clients connected (the proxy if there was one).
    pub client_bootstrap: &'a str,
    pub history: &'a History,
    pub anomalies: &'a [Anomaly],
    pub final_read_complete: bool,
    pub faults: FaultCounts,
    /// Why the run could not complete, if it could not: the report then holds what was recorded
    /// until then, and no final read.
    pub incomplete: Option<&'a str>,
}

impl Outcome<'_> {
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        class_counts(&CLASSES, self.anomalies.iter().map(Anomaly::class))
    }

    fn sends(&self) -> (usize, usize, usize) {
        send_counts(&self.history.sends)
    }
}

impl Summary for Outcome<'_> {
    fn json(&self) -> Value {
        let (acked, failed, unknown) = self.sends();
        let details = capped_details(self.anomalies, Anomaly::class);
        let faults = &self.faults;
        json!({
            "workload": self.workload,
            "seed": self.seed,
            "duration_secs": self.duration_secs,
            "topic": self.topic,
            "partitions": self.history.partitions,
            "bootstrap": self.client_bootstrap,
            "complete": self.incomplete.is_none(),
            "incomplete_reason": self.incomplete,
            // An incomplete run is not judged valid or invalid: only its anomalies so far are listed.
            "valid": if self.incomplete.is_none() { Value::from(self.anomalies.is_empty()) } else { Value::Null },
            "sent": self.history.sends.len(),
            "acked": acked,
            "failed": failed,
            "unknown": unknown,
            "ack_latency_ms": timeline::ack_latency_json(&self.history.sends),
            "per_second": timeline::per_second_json(&self.history.sends),
            "polled": self.history.polls.len(),
            "consumers": self.history.consumers,
            "final_read_records": self.history.final_read.len(),
            "final_read_complete": self.final_read_complete,
            "partitions_at_final_read": self.history.partitions_at_final_read,
            "faults": faults.json(),
            "fault_events": self.history.faults,
            "anomalies": self.counts(),
            "anomalies_per_second": anomalies_per_second(self.anomalies, Anomaly::class),
            "anomaly_details": details,
        })
    }

    fn table(&self) -> String {
        let (acked, failed, unknown) = self.sends();
        let faults = &self.faults;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "once check: workload {}, seed {}, {} s, topic {}",
            self.workload, self.seed, self.duration_secs, self.topic
        );
        let _ = writeln!(out, "  sends       {} acked, {failed} failed, {unknown} unknown", acked);
        let _ = writeln!(
            out,
            "  reads       {} polled by {} consumers; final read {} records{}",
            self.history.polls.len(),
            self.history.consumers.len(),
            self.history.final_read.len(),
            if self.final_read_complete { "" } else { " (INCOMPLETE: not every partition read to its end)" }
        );
        if let Some(found) = self.history.partitions_at_final_read.filter(|found| *found < self.history.partitions) {
            let _ = writeln!(
                out,
                "  partitions  the broker had {found} of {} at the final read: the rest were lost",
                self.history.partitions
            );
        }
        let _ = writeln!(out, "  faults      {}", faults.summary());
        anomaly_table(&mut out, &CLASSES, &self.counts(), 22, self.seed);
        if let Some(reason) = self.incomplete {
            let _ = writeln!(out, "  INCOMPLETE  {reason}");
        }
        out
    }
}
