//! The outcome of a `group` run: the summary table and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use crate::group::checker::{GroupAnomaly, Reprocessing, GROUP_CLASSES};
use crate::group::history::GroupHistory;
use crate::report::{
    anomalies_per_second, anomaly_table, capped_details, class_counts, send_counts, FaultCounts, Summary,
};
use crate::timeline;

/// Everything a `group` report says, gathered once.
pub struct GroupOutcome<'a> {
    pub seed: u64,
    pub duration_secs: u64,
    pub topic: &'a str,
    /// Where clients connected (the proxy if there was one).
    pub client_bootstrap: &'a str,
    pub history: &'a GroupHistory,
    pub anomalies: &'a [GroupAnomaly],
    pub reprocessing: Reprocessing,
    pub faults: FaultCounts,
    /// Connections the proxy closed because their client had crashed.
    pub crashed_client_cutoffs: u64,
}

impl GroupOutcome<'_> {
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        class_counts(&GROUP_CLASSES, self.anomalies.iter().map(GroupAnomaly::class))
    }

    fn crashes(&self) -> usize {
        self.history.incarnations.iter().filter(|incarnation| incarnation.crashed).count()
    }

    fn commits(&self) -> (usize, usize) {
        let acked = self.history.commits.iter().filter(|commit| commit.acked).count();
        (acked, self.history.commits.len() - acked)
    }
}

impl Summary for GroupOutcome<'_> {
    fn json(&self) -> Value {
        let (acked, failed, unknown) = send_counts(&self.history.sends);
        let (commits_acked, commits_failed) = self.commits();
        let faults = &self.faults;
        let fault_map = {
            let mut faults = faults.json();
            faults.insert("crash".into(), self.crashes().into());
            faults.insert("crashed_client_cutoff".into(), self.crashed_client_cutoffs.into());
            faults
        };
        json!({
            "workload": "group",
            "seed": self.seed,
            "duration_secs": self.duration_secs,
            "topic": self.topic,
            "partitions": self.history.partitions,
            "bootstrap": self.client_bootstrap,
            "valid": self.anomalies.is_empty(),
            "sent": self.history.sends.len(),
            "acked": acked,
            "failed": failed,
            "unknown": unknown,
            "ack_latency_ms": timeline::ack_latency_json(&self.history.sends),
            "per_second": timeline::per_second_json(&self.history.sends),
            "processed": self.history.processed.len(),
            "incarnations": self.history.incarnations.len(),
            "crashes": self.crashes(),
            "commits": { "acked": commits_acked, "failed": commits_failed },
            "committed_reads": self.history.committed_reads.len(),
            "resume": self.history.resume,
            "final_read_complete": self.history.final_read_complete,
            "partitions_at_final_read": self.history.partitions_found,
            "reprocessing": self.reprocessing,
            "faults": fault_map,
            "fault_events": self.history.faults,
            "anomalies": self.counts(),
            "anomalies_per_second": anomalies_per_second(self.anomalies, GroupAnomaly::class),
            "anomaly_details": capped_details(self.anomalies, GroupAnomaly::class),
        })
    }

    fn table(&self) -> String {
        let (acked, failed, unknown) = send_counts(&self.history.sends);
        let (commits_acked, commits_failed) = self.commits();
        let (faults, history, reprocessing) = (&self.faults, self.history, &self.reprocessing);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "once check: workload group, seed {}, {} s, topic {}",
            self.seed, self.duration_secs, self.topic
        );
        let _ = writeln!(out, "  sends       {acked} acked, {failed} failed, {unknown} unknown");
        let _ = writeln!(
            out,
            "  group       {} incarnations ({} crashed), {} records processed, {commits_acked} commits acked, \
             {commits_failed} failed",
            history.incarnations.len(),
            self.crashes(),
            history.processed.len()
        );
        let _ = writeln!(
            out,
            "  reprocessed {} records ({} extra processings, {} below an acknowledged commit; allowed)",
            reprocessing.records, reprocessing.extra_processings, reprocessing.below_acked_commit
        );
        let complete = if history.final_read_complete { "complete" } else { "INCOMPLETE" };
        let _ = writeln!(out, "  resume      {} partitions, final read {complete}", history.resume.len());
        if let Some(found) = history.partitions_found.filter(|found| *found < history.partitions) {
            let _ = writeln!(
                out,
                "  partitions  the broker had {found} of {} at the final resume: the rest were lost",
                history.partitions
            );
        }
        let _ = writeln!(out, "  faults      {}, {} consumer crashes", faults.summary(), self.crashes());
        anomaly_table(&mut out, &GROUP_CLASSES, &self.counts(), 28, self.seed);
        out
    }
}
