//! The queue checker: Jepsen's Kafka anomaly classes (`jepsen/src/jepsen/tests/kafka.clj`) computed
//! from a [`History`]. Pure functions, so every class is unit-tested on hand-made histories.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::history::{History, Poll, TimeMs, Value};

/// Offsets listed in a poll-skip report at most; the count is always complete.
const SKIPPED_OFFSETS_SHOWN: usize = 10;

/// Anomaly class names as Jepsen spells them, in report order.
pub const CLASSES: [&str; 8] = [
    "lost-write",
    "unseen",
    "duplicate",
    "inconsistent-offsets",
    "nonmonotonic-send",
    "nonmonotonic-poll",
    "poll-skip",
    "unparseable-value",
];

/// One anomaly with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum Anomaly {
    /// Acknowledged at `offset`, and gone: never read by anyone though a later offset of the partition
    /// was, or on a partition the broker no longer has.
    LostWrite {
        value: Value,
        partition: i32,
        offset: i64,
        acked_ms: TimeMs,
        #[serde(flatten)]
        evidence: LostEvidence,
    },
    /// Acknowledged, absent from the final read.
    Unseen { value: Value, partition: i32, offset: i64, acked_ms: TimeMs },
    /// One value at several (partition, offset) places, from reads and acknowledgements.
    Duplicate { value: Value, places: Vec<(i32, i64)> },
    /// One offset holding several values, from reads and acknowledgements.
    InconsistentOffsets { partition: i32, offset: i64, values: Vec<Value> },
    /// A producer's later send acknowledged at an offset not after an earlier send's.
    #[serde(rename = "nonmonotonic-send")]
    NonMonotonicSend {
        producer: u32,
        partition: i32,
        earlier: (Value, i64),
        later: (Value, i64),
        later_acked_ms: TimeMs,
    },
    /// A consumer read an offset not after the one it read before, with no rebalance between.
    #[serde(rename = "nonmonotonic-poll")]
    NonMonotonicPoll { consumer: String, partition: i32, previous_offset: i64, offset: i64, time_ms: TimeMs },
    /// A consumer jumped over offsets that hold records, with no rebalance between.
    PollSkip {
        consumer: String,
        partition: i32,
        previous_offset: i64,
        offset: i64,
        skipped_count: usize,
        skipped: Vec<i64>,
        time_ms: TimeMs,
    },
    /// A record on the run's topic that the run cannot have written.
    UnparseableValue { partition: i32, offset: i64 },
}

/// Why an acknowledged record counts as lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "evidence", rename_all = "kebab-case")]
pub enum LostEvidence {
    /// A later offset of its partition was read, it never was.
    LaterOffsetRead { highest_read_offset: i64 },
    /// The broker's metadata at the final read listed only `partitions_at_final_read` partitions of
    /// the topic (0: not the topic at all), so not this record's.
    PartitionGone { partitions_at_final_read: i32 },
}

impl Anomaly {
    /// The Jepsen class name, one of [`CLASSES`].
    pub fn class(&self) -> &'static str {
        match self {
            Anomaly::LostWrite { .. } => CLASSES[0],
            Anomaly::Unseen { .. } => CLASSES[1],
            Anomaly::Duplicate { .. } => CLASSES[2],
            Anomaly::InconsistentOffsets { .. } => CLASSES[3],
            Anomaly::NonMonotonicSend { .. } => CLASSES[4],
            Anomaly::NonMonotonicPoll { .. } => CLASSES[5],
            Anomaly::PollSkip { .. } => CLASSES[6],
            Anomaly::UnparseableValue { .. } => CLASSES[7],
        }
    }
}

/// Every anomaly in `history`, class by class.
pub fn check(history: &History) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    anomalies.extend(lost_writes(history));
    anomalies.extend(unseen(history));
    anomalies.extend(duplicates(history));
    anomalies.extend(inconsistent_offsets(history));
    anomalies.extend(nonmonotonic_sends(history));
    anomalies.extend(poll_order(history));
    anomalies
        .extend(history.unparseable.iter().map(|&(partition, offset)| Anomaly::UnparseableValue { partition, offset }));
    anomalies
}

fn all_reads(history: &History) -> impl Iterator<Item = &Poll> {
    history.polls.iter().chain(history.final_read.iter())
}

/// Acknowledged sends as (value, partition, offset, acknowledged at).
fn acked(history: &History) -> impl Iterator<Item = (Value, i32, i64, TimeMs)> + '_ {
    history
        .sends
        .iter()
        .filter_map(|send| send.acked_offset().map(|offset| (send.value, send.partition, offset, send.done_ms)))
}

/// Acknowledged values never read by any consumer although a higher offset of their partition was,
/// and every acknowledged value of a partition the broker no longer had at the final read (read
/// before it vanished or not: the broker no longer holds it).
pub fn lost_writes(history: &History) -> Vec<Anomaly> {
    let read: BTreeSet<Value> = all_reads(history).map(|poll| poll.value).collect();
    let mut highest: HashMap<i32, i64> = HashMap::new();
    for poll in all_reads(history) {
        let entry = highest.entry(poll.partition).or_insert(poll.offset);
        *entry = (*entry).max(poll.offset);
    }
    acked(history)
        .filter_map(|(value, partition, offset, acked_ms)| {
            let evidence = match history.partitions_at_final_read {
                Some(partitions_at_final_read) if history.partition_gone(partition) => {
                    LostEvidence::PartitionGone { partitions_at_final_read }
                }
                _ if read.contains(&value) => return None,
                _ => {
                    let highest_read_offset = *highest.get(&partition)?;
                    if highest_read_offset <= offset {
                        return None;
                    }
                    LostEvidence::LaterOffsetRead { highest_read_offset }
                }
            };
            Some(Anomaly::LostWrite { value, partition, offset, acked_ms, evidence })
        })
        .collect()
}

/// Acknowledged values missing from the final read.
pub fn unseen(history: &History) -> Vec<Anomaly> {
    let finally_read: BTreeSet<Value> = history.final_read.iter().map(|poll| poll.value).collect();
    acked(history)
        .filter(|(value, ..)| !finally_read.contains(value))
        .map(|(value, partition, offset, acked_ms)| Anomaly::Unseen { value, partition, offset, acked_ms })
        .collect()
}

/// Every (partition, offset) → value observation, from reads and from acknowledgements.
fn observations(history: &History) -> impl Iterator<Item = (Value, i32, i64)> + '_ {
    let reads = all_reads(history).map(|poll| (poll.value, poll.partition, poll.offset));
    reads.chain(acked(history).map(|(value, partition, offset, _)| (value, partition, offset)))
}

/// Values seen at more than one place.
pub fn duplicates(history: &History) -> Vec<Anomaly> {
    let mut places: BTreeMap<Value, BTreeSet<(i32, i64)>> = BTreeMap::new();
    for (value, partition, offset) in observations(history) {
        places.entry(value).or_default().insert((partition, offset));
    }
    places
        .into_iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(value, places)| Anomaly::Duplicate { value, places: places.into_iter().collect() })
        .collect()
}

/// Offsets seen holding more than one value.
pub fn inconsistent_offsets(history: &History) -> Vec<Anomaly> {
    let mut values: BTreeMap<(i32, i64), BTreeSet<Value>> = BTreeMap::new();
    for (value, partition, offset) in observations(history) {
        values.entry((partition, offset)).or_default().insert(value);
    }
    values
        .into_iter()
        .filter(|(_, values)| values.len() > 1)
        .map(|((partition, offset), values)| Anomaly::InconsistentOffsets {
            partition,
            offset,
            values: values.into_iter().collect(),
        })
        .collect()
}

/// Per producer and partition, in send order: each acknowledged offset must exceed every earlier one.
pub fn nonmonotonic_sends(history: &History) -> Vec<Anomaly> {
    let mut sends: Vec<_> = history.sends.iter().filter(|send| send.acked_offset().is_some()).collect();
    sends.sort_by_key(|send| (send.producer, send.partition, send.index));
    let mut anomalies = Vec::new();
    for pair in sends.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        if (earlier.producer, earlier.partition) != (later.producer, later.partition) {
            continue;
        }
        let (Some(earlier_offset), Some(later_offset)) = (earlier.acked_offset(), later.acked_offset()) else {
            continue;
        };
        if later_offset <= earlier_offset {
            anomalies.push(Anomaly::NonMonotonicSend {
                producer: later.producer,
                partition: later.partition,
                earlier: (earlier.value, earlier_offset),
                later: (later.value, later_offset),
                later_acked_ms: later.done_ms,
            });
        }
    }
    anomalies
}

/// Each poll after the first of its consumer, partition and epoch, with the offset that consumer read
/// just before in that partition: the steps a consumer took, rebalances excluded.
pub(crate) fn poll_steps(polls: &[Poll]) -> Vec<(&Poll, i64)> {
    let mut last: HashMap<(u16, i32), (u32, i64)> = HashMap::new();
    let mut steps = Vec::new();
    for poll in polls {
        let previous = last.insert((poll.consumer, poll.partition), (poll.epoch, poll.offset));
        match previous {
            Some((epoch, previous_offset)) if epoch == poll.epoch => steps.push((poll, previous_offset)),
            _ => {}
        }
    }
    steps
}

/// Per consumer and partition, within one epoch: offsets must rise, and must not jump over offsets
/// that any read saw holding a record (offsets without records, e.g. control records, may be skipped).
pub fn poll_order(history: &History) -> Vec<Anomaly> {
    let mut known: HashMap<i32, BTreeSet<i64>> = HashMap::new();
    for poll in all_reads(history) {
        known.entry(poll.partition).or_default().insert(poll.offset);
    }
    let name = |consumer: u16| history.consumers.get(usize::from(consumer)).cloned().unwrap_or_default();
    let mut anomalies = Vec::new();
    for (poll, previous_offset) in poll_steps(&history.polls) {
        let (partition, offset, time_ms) = (poll.partition, poll.offset, poll.time_ms);
        if offset <= previous_offset {
            let consumer = name(poll.consumer);
            anomalies.push(Anomaly::NonMonotonicPoll { consumer, partition, previous_offset, offset, time_ms });
            continue;
        }
        let skipped: Vec<i64> = known
            .get(&partition)
            .map(|offsets| offsets.range(previous_offset + 1..offset).copied().collect())
            .unwrap_or_default();
        if !skipped.is_empty() {
            anomalies.push(Anomaly::PollSkip {
                consumer: name(poll.consumer),
                partition,
                previous_offset,
                offset,
                skipped_count: skipped.len(),
                skipped: skipped.into_iter().take(SKIPPED_OFFSETS_SHOWN).collect(),
                time_ms,
            });
        }
    }
    anomalies
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
