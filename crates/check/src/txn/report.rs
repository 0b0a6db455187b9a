//! The outcome of a `txn` run: the summary table and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use crate::producer_process::producer_counts;
use crate::report::{
    anomalies_per_second, anomaly_table, capped_details, class_counts, send_counts, FaultCounts, Summary,
};
use crate::timeline;
use crate::txn::checker::{uncommitted_reads, TxnAnomaly, TXN_CLASSES};
use crate::txn::history::{CopierEnd, TxnHistory, COMMITTED_CONSUMER, UNCOMMITTED_CONSUMER};

/// Everything a `txn` report says, gathered once.
pub struct TxnOutcome<'a> {
    pub seed: u64,
    pub duration_secs: u64,
    pub input_topic: &'a str,
    pub output_topic: &'a str,
    /// Where clients connected (the proxy if there was one).
    pub client_bootstrap: &'a str,
    pub history: &'a TxnHistory,
    pub anomalies: &'a [TxnAnomaly],
    /// The final copier exited by itself, caught up, in time.
    pub final_copy_finished: bool,
    pub faults: FaultCounts,
    /// Why the run could not complete (no final reads), if it could not: the report then holds what
    /// was recorded until then (`complete: false`).
    pub incomplete: Option<&'a str>,
}

/// What became of the copiers.
#[derive(Debug, Default)]
struct CopierCounts {
    started: usize,
    killed: usize,
    paused: usize,
    fenced: usize,
    /// Exits by themselves, not fenced, except the final copier's clean exit.
    other_exits: usize,
}

impl TxnOutcome<'_> {
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        class_counts(&TXN_CLASSES, self.anomalies.iter().map(TxnAnomaly::class))
    }

    fn copiers(&self) -> CopierCounts {
        let copiers = &self.history.copiers;
        let count =
            |wanted: &dyn Fn(&crate::txn::history::Copier) -> bool| copiers.iter().filter(|c| wanted(c)).count();
        CopierCounts {
            started: copiers.len(),
            killed: count(&|copier| copier.end == CopierEnd::Killed),
            paused: count(&|copier| copier.paused_ms.is_some()),
            fenced: count(&|copier| copier.fenced()),
            other_exits: count(&|copier| match &copier.end {
                CopierEnd::Exited { code, fenced: false, .. } => !(copier.last && *code == Some(0)),
                _ => false,
            }),
        }
    }

    /// Input producer processes killed by `client-kill`.
    fn producer_kills(&self) -> usize {
        producer_counts(&self.history.producers).1
    }

    /// Traced transactions that asked to commit: the writers the precommitted-read check can time.
    fn traced_commits(&self) -> usize {
        self.history.transactions.iter().filter(|transaction| transaction.commit_unix_ms.is_some()).count()
    }

    fn polled(&self, consumer: u16) -> usize {
        self.history.polls.iter().filter(|poll| poll.consumer == consumer).count()
    }
}

impl Summary for TxnOutcome<'_> {
    fn json(&self) -> Value {
        let history = self.history;
        let (acked, failed, unknown) = send_counts(&history.sends);
        let (copiers, faults) = (self.copiers(), &self.faults);
        let fault_map = {
            let mut faults = faults.json();
            faults.insert("client_kill".into(), copiers.killed.into());
            faults.insert("client_pause".into(), copiers.paused.into());
            faults.insert("fenced_zombie".into(), copiers.fenced.into());
            faults.insert("producer_kill".into(), self.producer_kills().into());
            faults
        };
        json!({
            "workload": "txn",
            "seed": self.seed,
            "duration_secs": self.duration_secs,
            "input_topic": self.input_topic,
            "output_topic": self.output_topic,
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
            "input_partitions_at_final_read": history.input.partitions_found,
            "output_records": history.output.records.len(),
            "output_read_complete": history.output.complete,
            "output_partitions_at_final_read": history.output.partitions_found,
            "output_read_to": history.output.read_to,
            "polled": {
                "read_committed": self.polled(COMMITTED_CONSUMER),
                "read_uncommitted": self.polled(UNCOMMITTED_CONSUMER),
            },
            "uncommitted_reads": uncommitted_reads(history),
            "copiers": {
                "started": copiers.started,
                "killed": copiers.killed,
                "paused": copiers.paused,
                "fenced": copiers.fenced,
                "other_exits": copiers.other_exits,
                "final_copy_finished": self.final_copy_finished,
            },
            "copier_runs": history.copiers,
            "traced_transactions": history.transactions.len(),
            "traced_commits": self.traced_commits(),
            "wall_clock_drift_ms": history.wall_clock_drift_ms,
            "producers": { "started": history.producers.len(), "killed": self.producer_kills() },
            "producer_runs": history.producers,
            "concurrent_copiers": history.concurrent_copiers,
            "faults": fault_map,
            "fault_events": history.faults,
            "anomalies": self.counts(),
            "anomalies_per_second": anomalies_per_second(self.anomalies, TxnAnomaly::class),
            "anomaly_details": capped_details(self.anomalies, TxnAnomaly::class),
        })
    }

    fn table(&self) -> String {
        let history = self.history;
        let (acked, failed, unknown) = send_counts(&history.sends);
        let (copiers, faults) = (self.copiers(), &self.faults);
        let complete = |complete: bool| if complete { "complete" } else { "INCOMPLETE" };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "once check: workload txn, seed {}, {} s, {} -> {}",
            self.seed, self.duration_secs, self.input_topic, self.output_topic
        );
        let _ = writeln!(out, "  sends       {acked} acked, {failed} failed, {unknown} unknown");
        let _ = writeln!(
            out,
            "  final read  input {} records ({}), output {} committed records ({})",
            history.input.records.len(),
            complete(history.input.complete),
            history.output.records.len(),
            complete(history.output.complete)
        );
        let _ = writeln!(
            out,
            "  live reads  {} read_committed, {} read_uncommitted ({} records of aborted transactions)",
            self.polled(COMMITTED_CONSUMER),
            self.polled(UNCOMMITTED_CONSUMER),
            uncommitted_reads(history)
        );
        let _ = writeln!(
            out,
            "  copiers     {} started: {} killed, {} paused, {} exited fenced, {} other exits; final copy {}",
            copiers.started,
            copiers.killed,
            copiers.paused,
            copiers.fenced,
            copiers.other_exits,
            if self.final_copy_finished { "finished" } else { "DID NOT FINISH" }
        );
        let _ = writeln!(
            out,
            "  traces      {} copier transactions traced, {} asked to commit",
            history.transactions.len(),
            self.traced_commits()
        );
        let _ = writeln!(
            out,
            "  producers   {} input producer processes, {} killed",
            history.producers.len(),
            self.producer_kills()
        );
        for (topic, read) in [("input", &history.input), ("output", &history.output)] {
            if let Some(found) = read.partitions_found.filter(|found| *found < history.partitions) {
                let _ = writeln!(
                    out,
                    "  partitions  the broker had {found} of the {topic}'s {} at the final read: the rest were lost",
                    history.partitions
                );
            }
        }
        let _ = writeln!(out, "  faults      {}", faults.summary());
        anomaly_table(&mut out, &TXN_CLASSES, &self.counts(), 22, self.seed);
        if let Some(reason) = self.incomplete {
            let _ = writeln!(out, "  INCOMPLETE  {reason}");
        }
        out
    }
}
