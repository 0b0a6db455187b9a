//! The outcome of a run: a summary table for people (stdout) and a JSON report for scripts — the
//! parts every workload shares (fault counts, anomaly tables, the [`Summary`] trait, the report of a
//! run that stopped early); each workload's outcome is in its folder's `report.rs`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use crate::history::{Send, SendOutcome};

/// Anomalies detailed in the JSON at most per class; the counts are always complete.
const DETAILS_PER_CLASS_MAX: usize = 200;

/// Sends (acknowledged, failed, unknown).
pub(crate) fn send_counts(sends: &[Send]) -> (usize, usize, usize) {
    let count = |wanted: fn(&SendOutcome) -> bool| sends.iter().filter(|send| wanted(&send.outcome)).count();
    (
        count(|outcome| matches!(outcome, SendOutcome::Acked { .. })),
        count(|outcome| matches!(outcome, SendOutcome::Failed { .. })),
        count(|outcome| matches!(outcome, SendOutcome::Unknown)),
    )
}

/// The anomalies as JSON, at most [`DETAILS_PER_CLASS_MAX`] of each class.
pub(crate) fn capped_details<T: serde::Serialize>(anomalies: &[T], class: fn(&T) -> &'static str) -> Vec<Value> {
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    anomalies
        .iter()
        .filter(|anomaly| {
            let shown = shown.entry(class(anomaly)).or_default();
            *shown += 1;
            *shown <= DETAILS_PER_CLASS_MAX
        })
        .filter_map(|anomaly| serde_json::to_value(anomaly).ok())
        .collect()
}

/// Keys of an anomaly's evidence that say when it happened, in order of preference.
pub(crate) const TIME_KEYS: [&str; 6] = ["time_ms", "acked_ms", "sent_ms", "seen_ms", "first_ms", "later_acked_ms"];

/// When the anomaly `detail` (as JSON) happened, if its evidence says.
pub(crate) fn anomaly_time_ms(detail: &Value) -> Option<u64> {
    TIME_KEYS.iter().find_map(|key| detail[*key].as_u64())
}

/// The JSON report's `anomalies_per_second`: per class, how many of all the anomalies (not only the
/// detailed ones, which are capped) happened in each second of the run, indexed by the second; a
/// class without a timed anomaly is left out. What the HTML page's anomaly lane draws.
pub(crate) fn anomalies_per_second<T: serde::Serialize>(anomalies: &[T], class: fn(&T) -> &'static str) -> Value {
    let mut per_class: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for anomaly in anomalies {
        let Some(second) = serde_json::to_value(anomaly).ok().as_ref().and_then(anomaly_time_ms).map(|ms| ms / 1000)
        else {
            continue;
        };
        let Ok(second) = usize::try_from(second) else { continue };
        let counts = per_class.entry(class(anomaly)).or_default();
        if counts.len() <= second {
            counts.resize(second + 1, 0);
        }
        counts[second] += 1;
    }
    json!(per_class)
}

/// Faults injected during a run, by kind.
#[derive(Debug, Clone, Default)]
pub struct FaultCounts {
    pub kills: u64,
    /// SIGSTOP … SIGCONT of the broker.
    pub broker_pauses: u64,
    /// Simulated power losses (unsynced appends thrown away, then a restart).
    pub power_losses: u64,
    pub resets: u64,
    pub delays: u64,
    pub dropped_responses: u64,
    pub duplicated_produces: u64,
}

impl FaultCounts {
    /// The JSON `faults` object's common entries; workloads add their own.
    pub fn json(&self) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        for (name, count) in [
            ("kill", self.kills),
            ("broker_pause", self.broker_pauses),
            ("power_loss", self.power_losses),
            ("reset", self.resets),
            ("delay", self.delays),
            ("lost_response", self.dropped_responses),
            ("duplicated_produce", self.duplicated_produces),
        ] {
            map.insert(name.to_string(), Value::from(count));
        }
        map
    }

    /// The summary table's fault line (after its label).
    pub fn summary(&self) -> String {
        format!(
            "{} kill -9, {} power losses, {} broker pauses, {} resets, {} delays, {} lost responses, {} duplicated produces",
            self.kills,
            self.power_losses,
            self.broker_pauses,
            self.resets,
            self.delays,
            self.dropped_responses,
            self.duplicated_produces
        )
    }
}

/// The summary table's anomaly rows (every class, zero included, in a column `width` wide) and the
/// verdict line, shared by every workload's table.
pub(crate) fn anomaly_table(
    out: &mut String,
    classes: &[&'static str],
    counts: &BTreeMap<&'static str, usize>,
    width: usize,
    seed: u64,
) {
    let _ = writeln!(out, "  {:<width$} {:>8}", "anomaly", "count");
    for class in classes {
        let _ = writeln!(out, "  {class:<width$} {:>8}", counts.get(class).copied().unwrap_or(0));
    }
    let found: usize = counts.values().sum();
    let verdict = if found == 0 {
        "no anomaly".to_string()
    } else {
        format!("{found} anomalies; replay the fault schedule with --seed {seed}")
    };
    let _ = writeln!(out, "  result      {verdict}");
}

/// How many anomalies of each class were found, every class listed (zero included).
pub(crate) fn class_counts(
    classes: &[&'static str],
    found: impl Iterator<Item = &'static str>,
) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> = classes.iter().map(|class| (*class, 0)).collect();
    for class in found {
        *counts.entry(class).or_default() += 1;
    }
    counts
}

/// What every workload's outcome gives: the JSON report and the summary table.
pub(crate) trait Summary {
    /// The JSON report (`--json`; the HTML page is drawn from it too).
    fn json(&self) -> Value;
    /// The summary table printed at the end of a run.
    fn table(&self) -> String;

    /// Writes the JSON report to `path`.
    fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.json())?;
        std::fs::write(path, text).with_context(|| format!("writing the JSON report {}", path.display()))
    }
}

/// The JSON report of a run that stopped before its workload could report anything: which run it
/// was, the faults injected so far, and why it stopped (`complete: false`).
pub fn incomplete_json(
    workload: &str,
    seed: u64,
    duration_secs: u64,
    topics: &[String],
    faults: &FaultCounts,
    reason: &str,
) -> Value {
    json!({
        "workload": workload,
        "seed": seed,
        "duration_secs": duration_secs,
        "topics": topics,
        "complete": false,
        "incomplete_reason": reason,
        "valid": Value::Null,
        "faults": faults.json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    #[serde(tag = "class", rename_all = "kebab-case")]
    enum Found {
        Lost { acked_ms: u64 },
        Skip { time_ms: u64, acked_ms: u64 },
        Duplicate { value: u64 },
    }

    fn class(found: &Found) -> &'static str {
        match found {
            Found::Lost { .. } => "lost",
            Found::Skip { .. } => "skip",
            Found::Duplicate { .. } => "duplicate",
        }
    }

    #[test]
    fn anomalies_are_counted_per_second_of_their_time() {
        let found = [
            Found::Lost { acked_ms: 2500 },
            Found::Lost { acked_ms: 2999 },
            Found::Lost { acked_ms: 0 },
            Found::Skip { time_ms: 1000, acked_ms: 9000 },
            Found::Duplicate { value: 5 },
        ];
        assert_eq!(
            anomalies_per_second(&found, class),
            json!({"lost": [1, 0, 2], "skip": [0, 1]}),
            "time_ms before acked_ms; a class without a time left out"
        );
        assert_eq!(anomalies_per_second::<Found>(&[], class), json!({}));
        assert_eq!(anomaly_time_ms(&json!({"later_acked_ms": 7})), Some(7));
        assert_eq!(anomaly_time_ms(&json!({"value": 7})), None);
    }
}
