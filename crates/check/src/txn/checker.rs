//! The txn checker: anomalies of transactional consume-transform-produce copiers, computed from a
//! [`TxnHistory`]. Pure functions, so every class is unit-tested on hand-made histories
//! (`checker_tests.rs`).
//!
//! Exactly once is the contract: once the final copier has caught up, the committed output holds
//! every value of the input exactly once, in the input's partition and order, and nothing else; a
//! read_committed consumer never sees a record that did not end up committed (Jepsen's G1a, aborted
//! read); a read_committed consumer never sees a record before its transaction has even asked to
//! commit (Jepsen's precommitted read); and a copier fenced by a successor never gets to write again.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Poll, TimeMs, Value};
use crate::queue::checker::{poll_steps, LostEvidence};
use crate::txn::history::{
    CopierId, TopicRead, TracedTransaction, TxnHistory, COMMITTED_CONSUMER, UNCOMMITTED_CONSUMER,
};

/// Anomaly class names of the `txn` workload, in report order.
pub const TXN_CLASSES: [&str; 10] = [
    "lost",
    "lost-input",
    "duplicate",
    "unexpected",
    "aborted-read",
    "precommitted-read",
    "reordered",
    "nonmonotonic-poll",
    "unfenced-zombie",
    "unparseable-value",
];

/// Slack of the precommitted-read check, in ms. Poll times and traced commit times are whole
/// milliseconds, truncated, on the run's monotonic clock and the host's wall clock, related by one
/// origin taken from both clocks at once: together under 3 ms of error. Twenty is far above that
/// and far below a 100-ms transaction, so the check never reports a correct broker and still catches
/// records seen early in a transaction.
pub const PRECOMMIT_TOLERANCE_MS: u64 = 20;

/// A place in a topic: (partition, offset).
pub type Place = (i32, i64);

/// One anomaly of the `txn` workload with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum TxnAnomaly {
    /// In the input at the end, absent from the committed output. Whether its send was acknowledged
    /// does not matter: the copier copies what the input holds. Evidence `partition-gone` when the
    /// output partition it is copied to (the input's partition) was gone at the final read.
    Lost {
        value: Value,
        input: Place,
        acked_ms: Option<TimeMs>,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        evidence: Option<LostEvidence>,
    },
    /// Acknowledged to its producer, absent from the final read of the input. Evidence
    /// `partition-gone` when its input partition was gone at the final read.
    LostInput {
        value: Value,
        partition: i32,
        offset: i64,
        acked_ms: TimeMs,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        evidence: Option<LostEvidence>,
    },
    /// One value at several places of the committed output (its places in the input alongside).
    Duplicate { value: Value, output: Vec<Place>, input: Vec<Place> },
    /// A value in the committed output that no producer sent.
    Unexpected { value: Value, partition: i32, offset: i64 },
    /// G1a: the live read_committed consumer read a record at a place where the committed output
    /// holds another value or none: it saw a write that was aborted (or never committed).
    AbortedRead {
        consumer: String,
        partition: i32,
        offset: i64,
        value: Value,
        time_ms: TimeMs,
        /// What the committed output holds at that place.
        committed_value: Option<Value>,
        /// Where the committed output holds the value, if anywhere.
        committed_places: Vec<Place>,
    },
    /// The live read_committed consumer read a record (one the committed output holds at that place)
    /// before the transaction that wrote it had even asked to commit: its poll returned at `time_ms`,
    /// and the copier's trace says it called `commit_transaction` only at `commit_ms` (both on the
    /// run's clock), `early_ms` later. The writer is the transaction of the copiers' traces that
    /// copied the value and asked to commit earliest (`copier`, its `transaction` number, its
    /// `producer` instance, its `outcome` if known).
    PrecommittedRead {
        consumer: String,
        partition: i32,
        offset: i64,
        value: Value,
        time_ms: TimeMs,
        commit_ms: TimeMs,
        early_ms: TimeMs,
        copier: CopierId,
        transaction: u64,
        producer: u32,
        outcome: Option<String>,
    },
    /// A committed output record out of its input order: input partition p is copied to output
    /// partition p in order, so output offsets must rise with input offsets. `after` is the record
    /// before it in the output that came later in the input.
    Reordered { value: Value, output: Place, input: Place, after_value: Value, after_output: Place, after_input: Place },
    /// A committed output record that came from another input partition.
    #[serde(rename = "reordered")]
    WrongPartition { value: Value, output: Place, input: Place },
    /// A live consumer read an offset not above the one it read before in that partition.
    #[serde(rename = "nonmonotonic-poll")]
    NonMonotonicPoll { consumer: String, partition: i32, previous_offset: i64, offset: i64, time_ms: TimeMs },
    /// Copiers with the one transactional id still running side by side after resumed zombies had
    /// been given time to exit: the older one was never fenced.
    UnfencedZombie { copiers: Vec<CopierId>, paused_ms: Vec<Option<TimeMs>>, resumed_ms: Vec<Option<TimeMs>> },
    /// A record the run cannot have written, in the `input` or `output` topic.
    UnparseableValue { topic: &'static str, partition: i32, offset: i64 },
}

impl TxnAnomaly {
    /// The class name, one of [`TXN_CLASSES`].
    pub fn class(&self) -> &'static str {
        match self {
            TxnAnomaly::Lost { .. } => TXN_CLASSES[0],
            TxnAnomaly::LostInput { .. } => TXN_CLASSES[1],
            TxnAnomaly::Duplicate { .. } => TXN_CLASSES[2],
            TxnAnomaly::Unexpected { .. } => TXN_CLASSES[3],
            TxnAnomaly::AbortedRead { .. } => TXN_CLASSES[4],
            TxnAnomaly::PrecommittedRead { .. } => TXN_CLASSES[5],
            TxnAnomaly::Reordered { .. } | TxnAnomaly::WrongPartition { .. } => TXN_CLASSES[6],
            TxnAnomaly::NonMonotonicPoll { .. } => TXN_CLASSES[7],
            TxnAnomaly::UnfencedZombie { .. } => TXN_CLASSES[8],
            TxnAnomaly::UnparseableValue { .. } => TXN_CLASSES[9],
        }
    }
}

/// Every anomaly in `history`, class by class.
pub fn check_txn(history: &TxnHistory) -> Vec<TxnAnomaly> {
    let mut anomalies = lost(history);
    anomalies.extend(lost_input(history));
    anomalies.extend(duplicates(history));
    anomalies.extend(unexpected(history));
    anomalies.extend(aborted_reads(history));
    anomalies.extend(precommitted_reads(history));
    anomalies.extend(reordered(history));
    anomalies.extend(nonmonotonic_polls(history));
    anomalies.extend(unfenced_zombies(history));
    anomalies.extend(history.unparseable.iter().map(|unparseable| TxnAnomaly::UnparseableValue {
        topic: unparseable.topic,
        partition: unparseable.partition,
        offset: unparseable.offset,
    }));
    anomalies
}

/// Every place of each value in `records`, in read order.
fn places(records: &[Poll]) -> HashMap<Value, Vec<Place>> {
    let mut places: HashMap<Value, Vec<Place>> = HashMap::new();
    for record in records {
        places.entry(record.value).or_default().push((record.partition, record.offset));
    }
    places
}

/// When each acknowledged value was acknowledged.
fn acked_at(history: &TxnHistory) -> HashMap<Value, TimeMs> {
    history.sends.iter().filter(|send| send.acked_offset().is_some()).map(|send| (send.value, send.done_ms)).collect()
}

/// Values of the input missing from the committed output.
pub fn lost(history: &TxnHistory) -> Vec<TxnAnomaly> {
    let output: HashSet<Value> = history.output.records.iter().map(|record| record.value).collect();
    let acked = acked_at(history);
    let mut seen = HashSet::new();
    history
        .input
        .records
        .iter()
        .filter(|record| !output.contains(&record.value) && seen.insert(record.value))
        .map(|record| TxnAnomaly::Lost {
            value: record.value,
            input: (record.partition, record.offset),
            acked_ms: acked.get(&record.value).copied(),
            evidence: partition_gone(&history.output, record.partition),
        })
        .collect()
}

/// Acknowledged values missing from the input.
pub fn lost_input(history: &TxnHistory) -> Vec<TxnAnomaly> {
    let input: HashSet<Value> = history.input.records.iter().map(|record| record.value).collect();
    history
        .sends
        .iter()
        .filter(|send| !input.contains(&send.value))
        .filter_map(|send| {
            let offset = send.acked_offset()?;
            Some(TxnAnomaly::LostInput {
                value: send.value,
                partition: send.partition,
                offset,
                acked_ms: send.done_ms,
                evidence: partition_gone(&history.input, send.partition),
            })
        })
        .collect()
}

/// Evidence `partition-gone` if `read` found the topic without `partition`.
fn partition_gone(read: &TopicRead, partition: i32) -> Option<LostEvidence> {
    let partitions_at_final_read = read.partitions_found.filter(|_| read.partition_gone(partition))?;
    Some(LostEvidence::PartitionGone { partitions_at_final_read })
}

/// Values at more places of the committed output than of the input. A value the input holds twice
/// was stored twice by its producer — librdkafka's idempotent producer re-sends messages that may
/// already be stored under a bumped epoch after a message timeout (librdkafka issue 4953), which
/// Kafka's rules append as new — and a copier that copies each input record once copies it twice:
/// that is the input's duplicate, not the copier's.
pub fn duplicates(history: &TxnHistory) -> Vec<TxnAnomaly> {
    let input = places(&history.input.records);
    let output: BTreeMap<Value, Vec<Place>> = places(&history.output.records).into_iter().collect();
    output
        .into_iter()
        .filter(|(value, places)| places.len() > input.get(value).map_or(0, Vec::len).max(1))
        .map(|(value, output)| TxnAnomaly::Duplicate {
            value,
            output,
            input: input.get(&value).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Committed output values that no producer sent.
pub fn unexpected(history: &TxnHistory) -> Vec<TxnAnomaly> {
    let sent: HashSet<Value> = history.sends.iter().map(|send| send.value).collect();
    history
        .output
        .records
        .iter()
        .filter(|record| !sent.contains(&record.value))
        .map(|record| TxnAnomaly::Unexpected {
            value: record.value,
            partition: record.partition,
            offset: record.offset,
        })
        .collect()
}

/// Records the live read_committed consumer saw that the committed output does not hold at that
/// place. Places at or past where the final read is known complete are not judged.
pub fn aborted_reads(history: &TxnHistory) -> Vec<TxnAnomaly> {
    let committed: HashMap<Place, Value> =
        history.output.records.iter().map(|record| ((record.partition, record.offset), record.value)).collect();
    let output_places = places(&history.output.records);
    let read_to = |partition: i32| usize::try_from(partition).ok().and_then(|p| history.output.read_to.get(p).copied());
    history
        .polls
        .iter()
        .filter(|poll| poll.consumer == COMMITTED_CONSUMER)
        .filter(|poll| read_to(poll.partition).is_some_and(|end| poll.offset < end))
        .filter(|poll| committed.get(&(poll.partition, poll.offset)) != Some(&poll.value))
        .map(|poll| TxnAnomaly::AbortedRead {
            consumer: consumer_name(history, poll.consumer),
            partition: poll.partition,
            offset: poll.offset,
            value: poll.value,
            time_ms: poll.time_ms,
            committed_value: committed.get(&(poll.partition, poll.offset)).copied(),
            committed_places: output_places.get(&poll.value).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Records the live read_committed consumer read, that the committed output holds at that place, in a
/// poll that returned more than [`PRECOMMIT_TOLERANCE_MS`] (plus the wall clock's drift) before the
/// writing transaction asked to commit. Sound: the broker served the record before the poll returned,
/// and the copier traced its commit time before calling `commit_transaction`, which sends `EndTxn`
/// only after that; so the record was served while its transaction had not asked to commit.
///
/// Reads of records the committed output does not hold there are `aborted-read`s, not judged here, so
/// no read counts twice. A value whose copying transactions never asked to commit (or were not
/// traced) has no writer to time and is not judged: if it is committed all the same, `duplicate`,
/// `unexpected` or the copier's own log tell. Of several transactions that copied a value and asked
/// to commit (an abort after a failed commit, a zombie and its successor), the earliest is taken: the
/// one that wrote the record asked no earlier, so the report stays sound.
pub fn precommitted_reads(history: &TxnHistory) -> Vec<TxnAnomaly> {
    let committed: HashMap<Place, Value> =
        history.output.records.iter().map(|record| ((record.partition, record.offset), record.value)).collect();
    let writers = writers(history);
    let tolerance_ms = PRECOMMIT_TOLERANCE_MS + history.wall_clock_drift_ms;
    history
        .polls
        .iter()
        .filter(|poll| poll.consumer == COMMITTED_CONSUMER)
        .filter(|poll| committed.get(&(poll.partition, poll.offset)) == Some(&poll.value))
        .filter_map(|poll| {
            let writer = writers.get(&poll.value)?;
            let commit_ms = writer.commit_unix_ms?.saturating_sub(history.wall_clock_start_ms);
            (commit_ms > poll.time_ms + tolerance_ms).then(|| TxnAnomaly::PrecommittedRead {
                consumer: consumer_name(history, poll.consumer),
                partition: poll.partition,
                offset: poll.offset,
                value: poll.value,
                time_ms: poll.time_ms,
                commit_ms,
                early_ms: commit_ms - poll.time_ms,
                copier: writer.copier,
                transaction: writer.transaction,
                producer: writer.producer,
                outcome: writer.outcome.clone(),
            })
        })
        .collect()
}

/// For each value, the traced transaction that copied it and asked to commit earliest.
fn writers(history: &TxnHistory) -> HashMap<Value, &TracedTransaction> {
    let mut input: HashMap<i32, BTreeMap<i64, Value>> = HashMap::new();
    for record in &history.input.records {
        input.entry(record.partition).or_default().insert(record.offset, record.value);
    }
    let mut writers: HashMap<Value, &TracedTransaction> = HashMap::new();
    for transaction in &history.transactions {
        let Some(commit) = transaction.commit_unix_ms else { continue };
        for &(partition, first, last) in &transaction.input {
            let Some(offsets) = input.get(&partition).filter(|_| first <= last) else { continue };
            for &value in offsets.range(first..=last).map(|(_, value)| value) {
                let writer = writers.entry(value).or_insert(transaction);
                if writer.commit_unix_ms.is_none_or(|earliest| commit < earliest) {
                    *writer = transaction;
                }
            }
        }
    }
    writers
}

/// Per output partition, in offset order, each value's first occurrence must come from the same input
/// partition at a higher input offset than every value before it (a value the input holds twice is
/// placed at its first occurrence, which is what its first copy copied).
pub fn reordered(history: &TxnHistory) -> Vec<TxnAnomaly> {
    let mut input: HashMap<Value, Place> = HashMap::new();
    for record in &history.input.records {
        input.entry(record.value).or_insert((record.partition, record.offset));
    }
    let mut by_partition: BTreeMap<i32, Vec<&Poll>> = BTreeMap::new();
    for record in &history.output.records {
        by_partition.entry(record.partition).or_default().push(record);
    }
    let mut anomalies = Vec::new();
    let mut seen = HashSet::new();
    for (partition, mut records) in by_partition {
        records.sort_by_key(|record| record.offset);
        // The record with the highest input offset so far: (value, output offset, input offset).
        let mut highest: Option<(Value, i64, i64)> = None;
        for record in records {
            let Some(&(input_partition, input_offset)) = input.get(&record.value) else { continue };
            if !seen.insert(record.value) {
                continue;
            }
            let output = (partition, record.offset);
            if input_partition != partition {
                let input = (input_partition, input_offset);
                anomalies.push(TxnAnomaly::WrongPartition { value: record.value, output, input });
                continue;
            }
            match highest {
                Some((after_value, after_offset, after_input)) if after_input > input_offset => {
                    anomalies.push(TxnAnomaly::Reordered {
                        value: record.value,
                        output,
                        input: (input_partition, input_offset),
                        after_value,
                        after_output: (partition, after_offset),
                        after_input: (partition, after_input),
                    });
                }
                _ => highest = Some((record.value, record.offset, input_offset)),
            }
        }
    }
    anomalies
}

/// Each live consumer's offsets must rise in every partition (they assign once and never rebalance).
pub fn nonmonotonic_polls(history: &TxnHistory) -> Vec<TxnAnomaly> {
    poll_steps(&history.polls)
        .into_iter()
        .filter(|(poll, previous_offset)| poll.offset <= *previous_offset)
        .map(|(poll, previous_offset)| TxnAnomaly::NonMonotonicPoll {
            consumer: consumer_name(history, poll.consumer),
            partition: poll.partition,
            previous_offset,
            offset: poll.offset,
            time_ms: poll.time_ms,
        })
        .collect()
}

/// More than one copier still running once resumed zombies had been given time to exit.
pub fn unfenced_zombies(history: &TxnHistory) -> Vec<TxnAnomaly> {
    if history.concurrent_copiers.len() < 2 {
        return Vec::new();
    }
    let copier = |id: &CopierId| history.copiers.iter().find(|copier| copier.id == *id);
    vec![TxnAnomaly::UnfencedZombie {
        copiers: history.concurrent_copiers.clone(),
        paused_ms: history.concurrent_copiers.iter().map(|id| copier(id).and_then(|copier| copier.paused_ms)).collect(),
        resumed_ms: history
            .concurrent_copiers
            .iter()
            .map(|id| copier(id).and_then(|copier| copier.resumed_ms))
            .collect(),
    }]
}

/// Distinct places the live read_uncommitted consumer read that the committed output does not hold
/// as it read them: aborted (or, at the end, still open) transactions' records. Not an anomaly; it
/// shows the run exercised aborts.
pub fn uncommitted_reads(history: &TxnHistory) -> usize {
    let committed: HashSet<(Place, Value)> =
        history.output.records.iter().map(|record| ((record.partition, record.offset), record.value)).collect();
    let seen: HashSet<(Place, Value)> = history
        .polls
        .iter()
        .filter(|poll| poll.consumer == UNCOMMITTED_CONSUMER)
        .map(|poll| ((poll.partition, poll.offset), poll.value))
        .filter(|read| !committed.contains(read))
        .collect();
    seen.len()
}

fn consumer_name(history: &TxnHistory, consumer: u16) -> String {
    history.consumers.get(usize::from(consumer)).cloned().unwrap_or_default()
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
