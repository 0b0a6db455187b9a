//! The sink checker: anomalies of a database sink, computed from a [`SinkHistory`]. Pure functions,
//! so every class is unit-tested on hand-made histories (`checker_tests.rs`).
//!
//! Exactly once is the contract: once healthy sinks have drained the input, the effect table holds
//! one effect per input record — none lost, none twice — and each partition's stored position is
//! exactly the end of what was applied: every record below it has its effect, and no effect lies at
//! or above it. Effects are matched to records by the id each record carries in its
//! `once-check-id` header (the producer's value), positions by the `(partition, offset)` the sink
//! bound into each effect.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{TimeMs, Value};
use crate::sink::history::{Effect, SinkHistory};

/// Anomaly class names of the `sink` workload, in report order. The first three are issue 15's.
pub const SINK_CLASSES: [&str; 4] = ["lost-effect", "duplicate-effect", "position-mismatch", "unexpected-effect"];

/// Offsets listed in a `position-mismatch`'s evidence, at most, per kind; the counts are complete.
pub const EVIDENCE_OFFSETS_MAX: usize = 20;

/// A place in the input topic: (partition, offset).
pub type Place = (i32, i64);

/// Where one effect says its record was, and which sink process wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectPlace {
    pub partition: i32,
    pub offset: i64,
    pub sink: String,
}

/// One anomaly of the `sink` workload with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum SinkAnomaly {
    /// No effect carries the id of an input record: one the final read of the input holds
    /// (`in_input`), or one acknowledged to its producer that the final read does not hold (the
    /// broker lost it; `in_input: false`). `acked_ms`: when it was acknowledged, if it was.
    LostEffect { id: Value, partition: i32, offset: i64, acked_ms: Option<TimeMs>, in_input: bool },
    /// An id applied more often than the input holds it (once, unless its producer stored it twice):
    /// every effect with it, and its places in the input.
    DuplicateEffect { id: String, effects: Vec<EffectPlace>, input: Vec<Place> },
    /// A partition whose stored `next_offset` is not the end of what was applied: effects at offsets
    /// at or above it, input records below it without an effect at their place, or a position past
    /// the end of the partition (`log_end`, when the final read reached it). No row counts as
    /// position 0, "nothing applied".
    PositionMismatch {
        partition: i32,
        stored_position: Option<i64>,
        log_end: Option<i64>,
        applied_at_or_above: usize,
        applied_offsets: Vec<i64>,
        unapplied_below: usize,
        unapplied_offsets: Vec<i64>,
    },
    /// An effect no record of the run explains: its id was never sent (or is not a value), or the
    /// input holds another id at its place (`input_id`).
    UnexpectedEffect { id: Option<String>, partition: i32, offset: i64, sink: String, input_id: Option<Value> },
}

impl SinkAnomaly {
    /// The class name, one of [`SINK_CLASSES`].
    pub fn class(&self) -> &'static str {
        match self {
            SinkAnomaly::LostEffect { .. } => SINK_CLASSES[0],
            SinkAnomaly::DuplicateEffect { .. } => SINK_CLASSES[1],
            SinkAnomaly::PositionMismatch { .. } => SINK_CLASSES[2],
            SinkAnomaly::UnexpectedEffect { .. } => SINK_CLASSES[3],
        }
    }
}

/// Every anomaly in `history`, class by class.
pub fn check_sink(history: &SinkHistory) -> Vec<SinkAnomaly> {
    let mut anomalies = lost_effects(history);
    anomalies.extend(duplicate_effects(history));
    anomalies.extend(position_mismatches(history));
    anomalies.extend(unexpected_effects(history));
    anomalies
}

/// The id an effect carries, as a value of the run, if it is one.
fn effect_value(effect: &Effect) -> Option<Value> {
    effect.id.as_deref().and_then(|id| id.parse().ok())
}

/// Input records and acknowledged sends whose id no effect carries.
pub fn lost_effects(history: &SinkHistory) -> Vec<SinkAnomaly> {
    let applied: HashSet<Value> = history.effects.iter().filter_map(effect_value).collect();
    let acked: HashMap<Value, TimeMs> = history
        .sends
        .iter()
        .filter(|send| send.acked_offset().is_some())
        .map(|send| (send.value, send.done_ms))
        .collect();
    let mut seen = HashSet::new();
    let mut anomalies: Vec<SinkAnomaly> = history
        .input
        .records
        .iter()
        .filter(|record| !applied.contains(&record.value) && seen.insert(record.value))
        .map(|record| SinkAnomaly::LostEffect {
            id: record.value,
            partition: record.partition,
            offset: record.offset,
            acked_ms: acked.get(&record.value).copied(),
            in_input: true,
        })
        .collect();
    let input: HashSet<Value> = history.input.records.iter().map(|record| record.value).collect();
    let read_to = |partition: i32| usize::try_from(partition).ok().and_then(|p| history.input.read_to.get(p).copied());
    for send in &history.sends {
        let Some(offset) = send.acked_offset() else { continue };
        // Only where the final read got to: past it, the record may simply not have been read.
        let read = read_to(send.partition).is_some_and(|end| offset < end);
        if read && !input.contains(&send.value) && !applied.contains(&send.value) && seen.insert(send.value) {
            anomalies.push(SinkAnomaly::LostEffect {
                id: send.value,
                partition: send.partition,
                offset,
                acked_ms: Some(send.done_ms),
                in_input: false,
            });
        }
    }
    anomalies
}

/// Ids with more effects than the input holds records with them (at least one is allowed).
pub fn duplicate_effects(history: &SinkHistory) -> Vec<SinkAnomaly> {
    let mut input: HashMap<String, Vec<Place>> = HashMap::new();
    for record in &history.input.records {
        input.entry(record.value.to_string()).or_default().push((record.partition, record.offset));
    }
    let mut effects: BTreeMap<&str, Vec<EffectPlace>> = BTreeMap::new();
    for effect in &history.effects {
        let Some(id) = effect.id.as_deref() else { continue };
        let place = EffectPlace { partition: effect.partition, offset: effect.offset, sink: effect.sink.clone() };
        effects.entry(id).or_default().push(place);
    }
    effects
        .into_iter()
        .filter(|(id, effects)| effects.len() > input.get(*id).map_or(0, Vec::len).max(1))
        .map(|(id, effects)| SinkAnomaly::DuplicateEffect {
            id: id.to_string(),
            effects,
            input: input.get(id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Per partition, the stored position against the effects and the input.
pub fn position_mismatches(history: &SinkHistory) -> Vec<SinkAnomaly> {
    let mut applied: HashMap<i32, Vec<i64>> = HashMap::new();
    for effect in &history.effects {
        applied.entry(effect.partition).or_default().push(effect.offset);
    }
    let mut input: HashMap<i32, Vec<i64>> = HashMap::new();
    for record in &history.input.records {
        input.entry(record.partition).or_default().push(record.offset);
    }
    let mut anomalies = Vec::new();
    for partition in 0..history.partitions {
        let stored_position = history.position(partition);
        let position = stored_position.unwrap_or(0);
        let index = usize::try_from(partition).unwrap_or(usize::MAX);
        let read_to = history.input.read_to.get(index).copied().unwrap_or(0);
        let log_end = history.input.complete.then_some(read_to);
        let mut offsets = applied.remove(&partition).unwrap_or_default();
        offsets.sort_unstable();
        let places: HashSet<i64> = offsets.iter().copied().collect();
        let above: Vec<i64> = offsets.iter().copied().filter(|offset| *offset >= position).collect();
        let mut below: Vec<i64> = input
            .remove(&partition)
            .unwrap_or_default()
            .into_iter()
            .filter(|offset| *offset < position.min(read_to) && !places.contains(offset))
            .collect();
        below.sort_unstable();
        below.dedup();
        let beyond_end = log_end.is_some_and(|end| position > end);
        if above.is_empty() && below.is_empty() && !beyond_end {
            continue;
        }
        anomalies.push(SinkAnomaly::PositionMismatch {
            partition,
            stored_position,
            log_end,
            applied_at_or_above: above.len(),
            applied_offsets: above.into_iter().take(EVIDENCE_OFFSETS_MAX).collect(),
            unapplied_below: below.len(),
            unapplied_offsets: below.into_iter().take(EVIDENCE_OFFSETS_MAX).collect(),
        });
    }
    anomalies
}

/// Effects whose id was never sent, or whose place the input holds with another id.
pub fn unexpected_effects(history: &SinkHistory) -> Vec<SinkAnomaly> {
    let sent: HashSet<Value> = history.sends.iter().map(|send| send.value).collect();
    let at: HashMap<Place, Value> =
        history.input.records.iter().map(|record| ((record.partition, record.offset), record.value)).collect();
    history
        .effects
        .iter()
        .filter_map(|effect| {
            let value = effect_value(effect);
            let input_id = at.get(&(effect.partition, effect.offset)).copied();
            let explained = value.is_some_and(|value| sent.contains(&value) && input_id.is_none_or(|id| id == value));
            (!explained).then(|| SinkAnomaly::UnexpectedEffect {
                id: effect.id.clone(),
                partition: effect.partition,
                offset: effect.offset,
                sink: effect.sink.clone(),
                input_id,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
