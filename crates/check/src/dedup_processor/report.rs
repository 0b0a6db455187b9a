//! The outcome of a `dedup-processor` run: the summary table and the JSON report.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use serde_json::{json, Value};

use crate::dedup::checker::resends;
use crate::dedup_processor::checker::{ProcessorAnomaly, PROCESSOR_CLASSES};
use crate::dedup_processor::history::{ProcessorEnd, ProcessorHistory, TopicRecords};
use crate::dedup_processor::Drained;
use crate::producer_process::producer_counts;
use crate::report::{
    anomalies_per_second, anomaly_table, capped_details, class_counts, send_counts, FaultCounts, Summary,
};
use crate::timeline;

/// Everything a `dedup-processor` report says, gathered once.
pub struct ProcessorOutcome<'a> {
    pub seed: u64,
    pub duration_secs: u64,
    pub input_topic: &'a str,
    pub output_topic: &'a str,
    pub group: &'a str,
    /// The processors' `--source`.
    pub source: &'a str,
    /// Where clients connected (the proxy if there was one).
    pub client_bootstrap: &'a str,
    pub history: &'a ProcessorHistory,
    pub anomalies: &'a [ProcessorAnomaly],
    pub drained: &'a Drained,
    pub faults: FaultCounts,
    /// Why the run could not complete, if it could not: the report then holds what was recorded
    /// until then (`complete: false`).
    pub incomplete: Option<&'a str>,
}

/// What became of the processors.
#[derive(Debug, Default)]
struct ProcessorCounts {
    started: usize,
    killed: usize,
    paused: usize,
    /// Exited by themselves with 0: final processors once idle.
    exited_idle: usize,
    /// Exited by themselves fenced: zombies the broker fenced.
    fenced: usize,
    /// Exited by themselves otherwise (another fatal error).
    failed: usize,
    /// Killed by the checker (to leave the input to the final processors).
    stopped: usize,
    restores: u64,
    aborts: u64,
}

/// Distinct ids: in a set of records.
fn ids_in(read: &TopicRecords) -> usize {
    read.records.iter().filter_map(|record| record.id).collect::<HashSet<_>>().len()
}

impl ProcessorOutcome<'_> {
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        class_counts(&PROCESSOR_CLASSES, self.anomalies.iter().map(ProcessorAnomaly::class))
    }

    fn processors(&self) -> ProcessorCounts {
        let runs = &self.history.processors;
        let count = |wanted: &dyn Fn(&ProcessorEnd) -> bool| runs.iter().filter(|run| wanted(&run.end)).count();
        ProcessorCounts {
            started: runs.len(),
            killed: count(&|end| *end == ProcessorEnd::Killed),
            paused: runs.iter().map(|run| run.pauses.len()).sum(),
            exited_idle: count(&|end| matches!(end, ProcessorEnd::Exited { code: Some(0), .. })),
            fenced: count(&|end| matches!(end, ProcessorEnd::Exited { code, fenced: true, .. } if *code != Some(0))),
            failed: count(&|end| matches!(end, ProcessorEnd::Exited { code, fenced: false, .. } if *code != Some(0))),
            stopped: count(&|end| *end == ProcessorEnd::Stopped),
            restores: runs.iter().map(|run| run.restores).sum(),
            aborts: runs.iter().map(|run| run.aborts).sum(),
        }
    }

    /// Distinct ids sent, acknowledged (to some send), in the input, in the output.
    fn ids(&self) -> Value {
        let sends = &self.history.sends;
        let distinct = |ids: &mut dyn Iterator<Item = u64>| ids.collect::<HashSet<_>>().len();
        json!({
            "sent": distinct(&mut sends.iter().map(|send| send.value)),
            "acked": distinct(&mut sends.iter().filter(|send| send.acked_offset().is_some()).map(|send| send.value)),
            "input": ids_in(&self.history.input),
            "output": ids_in(&self.history.output),
        })
    }
}

impl Summary for ProcessorOutcome<'_> {
    fn json(&self) -> Value {
        let history = self.history;
        let (acked, failed, unknown) = send_counts(&history.sends);
        let processors = self.processors();
        let (producers_started, producers_killed, _, _) = producer_counts(&history.producers);
        let mut faults = self.faults.json();
        faults.insert("client_kill".into(), processors.killed.into());
        faults.insert("client_pause".into(), processors.paused.into());
        faults.insert("producer_kill".into(), producers_killed.into());
        let drained = self.drained;
        json!({
            "workload": "dedup-processor",
            "seed": self.seed,
            "duration_secs": self.duration_secs,
            "input_topic": self.input_topic,
            "output_topic": self.output_topic,
            "group": self.group,
            "source": self.source,
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
            "ids": self.ids(),
            "resends": resends(&history.sends),
            "input_records": history.input.records.len(),
            "input_read_complete": history.input.complete,
            "input_read_to": history.input.read_to,
            "output_records": history.output.records.len(),
            "output_read_complete": history.output.complete,
            "output_read_to": history.output.read_to,
            "drain": {
                "complete": drained.complete,
                "ends": drained.ends,
                "committed": drained.committed,
                "final_processors": drained.final_processors,
                "took_ms": drained.took_ms,
            },
            "processors": {
                "started": processors.started,
                "killed": processors.killed,
                "paused": processors.paused,
                "exited_idle": processors.exited_idle,
                "exited_fenced": processors.fenced,
                "failed": processors.failed,
                "stopped": processors.stopped,
                "restores": processors.restores,
                "aborted_transactions": processors.aborts,
            },
            "processor_runs": history.processors,
            "producers": { "started": producers_started, "killed": producers_killed },
            "producer_runs": history.producers,
            "faults": faults,
            "fault_events": history.faults,
            "anomalies": self.counts(),
            "anomalies_per_second": anomalies_per_second(self.anomalies, ProcessorAnomaly::class),
            "anomaly_details": capped_details(self.anomalies, ProcessorAnomaly::class),
        })
    }

    fn table(&self) -> String {
        let history = self.history;
        let (acked, failed, unknown) = send_counts(&history.sends);
        let processors = self.processors();
        let (_, producers_killed, _, _) = producer_counts(&history.producers);
        let resends = resends(&history.sends);
        let ids = self.ids();
        let complete = |complete: bool| if complete { "complete" } else { "INCOMPLETE" };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "once check: workload dedup-processor, seed {}, {} s, {} -> {} (group {}, --source {})",
            self.seed, self.duration_secs, self.input_topic, self.output_topic, self.group, self.source
        );
        let _ = writeln!(out, "  sends       {acked} acked, {failed} failed, {unknown} unknown");
        let _ = writeln!(
            out,
            "  resends     {}: of acknowledged ids {}, of failed sends {}, of unanswered sends {}, while in flight {}",
            resends.total, resends.of_acked, resends.of_failed, resends.of_unanswered, resends.in_flight
        );
        let _ = writeln!(
            out,
            "  ids         {} sent, {} acknowledged, {} in the input, {} in the output",
            ids["sent"], ids["acked"], ids["input"], ids["output"]
        );
        let _ = writeln!(
            out,
            "  final read  input {} records ({}), output {} committed records ({})",
            history.input.records.len(),
            complete(history.input.complete),
            history.output.records.len(),
            complete(history.output.complete)
        );
        let drain = if self.drained.complete { "drained" } else { "DID NOT DRAIN" };
        let _ = writeln!(
            out,
            "  processors  {} started: {} killed, {} pauses, {} exited fenced, {} failed; {} restores, {} aborted \
             transactions; {drain} by {} final processors in {} ms",
            processors.started,
            processors.killed,
            processors.paused,
            processors.fenced,
            processors.failed,
            processors.restores,
            processors.aborts,
            self.drained.final_processors,
            self.drained.took_ms
        );
        let _ = writeln!(out, "  faults      {}, {producers_killed} producer kills", self.faults.summary());
        anomaly_table(&mut out, &PROCESSOR_CLASSES, &self.counts(), 22, self.seed);
        if let Some(reason) = self.incomplete {
            let _ = writeln!(out, "  INCOMPLETE  {reason}");
        }
        out
    }
}
