//! The `dedup-processor` checker: anomalies of a message-id deduplicating stream processor, computed
//! from a [`ProcessorHistory`]. Pure functions, unit-tested on hand-made histories
//! (`checker_tests.rs`).
//!
//! The contract (`once dedup`, crates/cli/src/dedup_processor): once the processors have drained the
//! input, the output holds each id of the input exactly once — none lost, none twice — and the
//! record that carries it is one the producers sent for that id, its first record in its input
//! partition (later ones are dropped). Output records are matched to sends by their payload, the
//! send's own value (producer, index), and to ids by their `once-check-id` header.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::dedup::checker::Ack;
use crate::dedup_processor::history::{ProcessorHistory, Record};
use crate::history::{value_of, Send, TimeMs, Value};

/// Anomaly class names of the `dedup-processor` workload, in report order.
pub const PROCESSOR_CLASSES: [&str; 4] = ["lost", "duplicate", "unexpected", "not-first"];

/// One output record as evidence: where it is, its payload, and the send that payload names (its
/// producer process, its index in that process's sends, when it was sent), if there was one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Passed {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Value>,
    pub producer: Option<u32>,
    pub index: Option<u64>,
    pub sent_ms: Option<TimeMs>,
}

/// One anomaly of the `dedup-processor` workload with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum ProcessorAnomaly {
    /// An id no output record carries although a producer saw a send of it acknowledged (`acks`,
    /// the first at `acked_ms`) or the final read of the input holds it (`in_input`, at
    /// `input_place`, its first record there). Acknowledged and not in the input: the broker lost
    /// the input record.
    Lost { id: Value, in_input: bool, input_place: Option<(i32, i64)>, acked_ms: Option<TimeMs>, acks: Vec<Ack> },
    /// An id more than one output record carries: every such record, and how many times the id was
    /// sent. `sent_ms`: when the latest of the sends passed on was sent.
    Duplicate { id: Value, records: Vec<Passed>, sends: usize, sent_ms: Option<TimeMs> },
    /// An output record that is no send of its id: without an id or a payload, a payload no send
    /// had, or the payload of a send of another id (`sent_id`).
    Unexpected { partition: i32, offset: i64, id: Option<Value>, payload: Option<Value>, sent_id: Option<Value> },
    /// The one output record of an id is not the id's first record in the input partition it came
    /// from: the processor passed on a later record (`payload`, at `input_offset` in the input if
    /// found) in place of the first (`first_payload` at `first_input_offset`).
    NotFirst {
        id: Value,
        partition: i32,
        offset: i64,
        payload: Value,
        input_offset: Option<i64>,
        first_payload: Value,
        first_input_offset: i64,
        sent_ms: TimeMs,
    },
}

impl ProcessorAnomaly {
    /// The class name, one of [`PROCESSOR_CLASSES`].
    pub fn class(&self) -> &'static str {
        match self {
            ProcessorAnomaly::Lost { .. } => PROCESSOR_CLASSES[0],
            ProcessorAnomaly::Duplicate { .. } => PROCESSOR_CLASSES[1],
            ProcessorAnomaly::Unexpected { .. } => PROCESSOR_CLASSES[2],
            ProcessorAnomaly::NotFirst { .. } => PROCESSOR_CLASSES[3],
        }
    }
}

/// Every anomaly in `history`, class by class.
pub fn check_processor(history: &ProcessorHistory) -> Vec<ProcessorAnomaly> {
    let sends = sends_by_payload(&history.sends);
    let mut anomalies = lost(history);
    anomalies.extend(duplicates(history, &sends));
    anomalies.extend(unexpected(history, &sends));
    anomalies.extend(not_first(history, &sends));
    anomalies
}

/// Every send by its payload, `value_of(producer, index)`.
fn sends_by_payload(sends: &[Send]) -> HashMap<Value, &Send> {
    sends.iter().map(|send| (value_of(send.producer, send.index), send)).collect()
}

/// Output records by the id they carry, in read order.
fn output_by_id(history: &ProcessorHistory) -> BTreeMap<Value, Vec<&Record>> {
    let mut by_id: BTreeMap<Value, Vec<&Record>> = BTreeMap::new();
    for record in &history.output.records {
        if let Some(id) = record.id {
            by_id.entry(id).or_default().push(record);
        }
    }
    by_id
}

/// Ids acknowledged to a producer or held by the input that no output record carries.
pub fn lost(history: &ProcessorHistory) -> Vec<ProcessorAnomaly> {
    /// What says an id is owed to the output: its first place in the input, its acknowledgements.
    #[derive(Default)]
    struct Owed {
        input_place: Option<(i32, i64)>,
        acks: Vec<Ack>,
    }
    let passed = output_by_id(history);
    let mut owed: BTreeMap<Value, Owed> = BTreeMap::new();
    for record in &history.input.records {
        let Some(id) = record.id.filter(|id| !passed.contains_key(id)) else { continue };
        owed.entry(id).or_default().input_place.get_or_insert((record.partition, record.offset));
    }
    for send in history.sends.iter().filter(|send| !passed.contains_key(&send.value)) {
        if let Some(offset) = send.acked_offset() {
            let ack = Ack { producer: send.producer, partition: send.partition, offset, acked_ms: send.done_ms };
            owed.entry(send.value).or_default().acks.push(ack);
        }
    }
    owed.into_iter()
        .map(|(id, Owed { input_place, acks })| ProcessorAnomaly::Lost {
            id,
            in_input: input_place.is_some(),
            input_place,
            acked_ms: acks.iter().map(|ack| ack.acked_ms).min(),
            acks,
        })
        .collect()
}

/// Ids carried by more than one output record.
pub fn duplicates(history: &ProcessorHistory, sends: &HashMap<Value, &Send>) -> Vec<ProcessorAnomaly> {
    let mut sent: HashMap<Value, usize> = HashMap::new();
    for send in &history.sends {
        *sent.entry(send.value).or_default() += 1;
    }
    output_by_id(history)
        .into_iter()
        .filter(|(_, records)| records.len() > 1)
        .map(|(id, records)| {
            let records: Vec<Passed> = records
                .iter()
                .map(|record| {
                    let send = record.payload.and_then(|payload| sends.get(&payload));
                    Passed {
                        partition: record.partition,
                        offset: record.offset,
                        payload: record.payload,
                        producer: send.map(|send| send.producer),
                        index: send.map(|send| send.index),
                        sent_ms: send.map(|send| send.sent_ms),
                    }
                })
                .collect();
            let sent_ms = records.iter().filter_map(|record| record.sent_ms).max();
            ProcessorAnomaly::Duplicate { id, records, sends: sent.get(&id).copied().unwrap_or(0), sent_ms }
        })
        .collect()
}

/// Output records that are no send of the id they carry.
pub fn unexpected(history: &ProcessorHistory, sends: &HashMap<Value, &Send>) -> Vec<ProcessorAnomaly> {
    history
        .output
        .records
        .iter()
        .filter_map(|record| {
            let sent_id = record.payload.and_then(|payload| sends.get(&payload)).map(|send| send.value);
            let explained = record.id.is_some() && sent_id == record.id;
            (!explained).then_some(ProcessorAnomaly::Unexpected {
                partition: record.partition,
                offset: record.offset,
                id: record.id,
                payload: record.payload,
                sent_id,
            })
        })
        .collect()
}

/// Ids whose one output record is a send of the id but not its first record in the input partition
/// it came from. Ids with more records are [`duplicates`]; records that are no send of their id are
/// [`unexpected`]; an id the input read does not hold in that partition is not judged.
pub fn not_first(history: &ProcessorHistory, sends: &HashMap<Value, &Send>) -> Vec<ProcessorAnomaly> {
    // The input read goes through each partition in offset order: the first record seen is the first.
    let mut first: HashMap<(i32, Value), (i64, Value)> = HashMap::new();
    let mut input_offsets: HashMap<(i32, Value), i64> = HashMap::new();
    for record in &history.input.records {
        let (Some(id), Some(payload)) = (record.id, record.payload) else { continue };
        first.entry((record.partition, id)).or_insert((record.offset, payload));
        input_offsets.entry((record.partition, payload)).or_insert(record.offset);
    }
    output_by_id(history)
        .into_iter()
        .filter_map(|(id, records)| {
            let [record] = records.as_slice() else { return None };
            let payload = record.payload?;
            let send = sends.get(&payload).filter(|send| send.value == id)?;
            let &(first_input_offset, first_payload) = first.get(&(record.partition, id))?;
            (first_payload != payload).then_some(ProcessorAnomaly::NotFirst {
                id,
                partition: record.partition,
                offset: record.offset,
                payload,
                input_offset: input_offsets.get(&(record.partition, payload)).copied(),
                first_payload,
                first_input_offset,
                sent_ms: send.sent_ms,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
