//! The `dedup` checker: anomalies of message-id deduplication, computed from a [`DedupHistory`].
//! Pure functions, unit-tested on hand-made histories (`checker_tests.rs`).
//!
//! The contract (`docs/design/dedup.md`): whatever fresh producers resend, the topic stores each
//! message id once; an id acknowledged to any sender is stored; and an answer that names an offset
//! names the offset that holds the id (a dropped duplicate is answered with the original's offset or
//! a negative "unknown" one, never a wrong one).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{FaultEvent, History, Poll, Send, TimeMs, Value};
use crate::producer_process::ProducerRun;
use crate::queue::checker::{self, Anomaly, LostEvidence};
use crate::txn::history::TopicRead;

/// Anomaly class names of the `dedup` workload, in report order.
pub const DEDUP_CLASSES: [&str; 8] = [
    "duplicate",
    "lost",
    "wrong-offset",
    "unexpected",
    "inconsistent-offsets",
    "nonmonotonic-poll",
    "poll-skip",
    "unparseable-value",
];

/// Everything a `dedup` run observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DedupHistory {
    pub partitions: i32,
    /// Names of the live consumers, indexed by [`Poll::consumer`].
    pub consumers: Vec<String>,
    /// Every send of every producer process: first sends and resends alike, the id as the value.
    pub sends: Vec<Send>,
    /// The live consumers' polls.
    pub polls: Vec<Poll>,
    /// The final read_committed read of the whole topic.
    pub final_read: TopicRead,
    pub producers: Vec<ProducerRun>,
    pub unparseable: Vec<(i32, i64)>,
    pub faults: Vec<FaultEvent>,
}

/// An acknowledgement of one send of an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ack {
    pub producer: u32,
    pub partition: i32,
    /// As answered: negative when the broker said the offset is unknown (records were dropped).
    pub offset: i64,
    pub acked_ms: TimeMs,
}

/// One anomaly of the `dedup` workload with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum DedupAnomaly {
    /// One message id at more than one (partition, offset), counting the final read and live reads.
    Duplicate { id: Value, places: Vec<(i32, i64)>, sends: usize },
    /// Acknowledged to some sender, absent from the final read; with evidence `partition-gone` when
    /// an acknowledgement was on a partition the broker no longer had at the final read.
    Lost {
        id: Value,
        acks: Vec<Ack>,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        evidence: Option<LostEvidence>,
    },
    /// A send acknowledged at offset ≥ 0 where the final read holds another id (`found`), or nothing
    /// although the read covers that offset.
    WrongOffset { id: Value, producer: u32, partition: i32, offset: i64, acked_ms: TimeMs, found: Option<Value> },
    /// An id in the topic that no producer sent.
    Unexpected { id: Value, partition: i32, offset: i64 },
    /// A read class shared with the `queue` workload (inconsistent offsets, poll order, unparseable).
    #[serde(untagged)]
    Read(Anomaly),
}

impl DedupAnomaly {
    /// The class name, one of [`DEDUP_CLASSES`].
    pub fn class(&self) -> &'static str {
        match self {
            DedupAnomaly::Duplicate { .. } => DEDUP_CLASSES[0],
            DedupAnomaly::Lost { .. } => DEDUP_CLASSES[1],
            DedupAnomaly::WrongOffset { .. } => DEDUP_CLASSES[2],
            DedupAnomaly::Unexpected { .. } => DEDUP_CLASSES[3],
            DedupAnomaly::Read(anomaly) => anomaly.class(),
        }
    }
}

/// Every anomaly in `history`, class by class.
pub fn check_dedup(history: &DedupHistory) -> Vec<DedupAnomaly> {
    let reads = reads_history(history);
    let mut anomalies = duplicates(history, &reads);
    anomalies.extend(lost(history));
    anomalies.extend(wrong_offsets(history));
    anomalies.extend(unexpected(history));
    // Reads only: acknowledgements of dropped resends may name the original's offset or none, so
    // the queue classes that count acknowledgements (and send order) do not apply here.
    let shared = checker::inconsistent_offsets(&reads).into_iter().chain(checker::poll_order(&reads));
    anomalies.extend(shared.map(DedupAnomaly::Read));
    anomalies.extend(
        history
            .unparseable
            .iter()
            .map(|&(partition, offset)| DedupAnomaly::Read(Anomaly::UnparseableValue { partition, offset })),
    );
    anomalies
}

/// The reads as a `queue` history without sends, for the read classes the workloads share.
fn reads_history(history: &DedupHistory) -> History {
    History {
        partitions: history.partitions,
        consumers: history.consumers.clone(),
        sends: Vec::new(),
        polls: history.polls.clone(),
        final_read: history.final_read.records.clone(),
        unparseable: Vec::new(),
        faults: Vec::new(),
        partitions_at_final_read: None,
    }
}

/// Ids read at more than one place.
pub fn duplicates(history: &DedupHistory, reads: &History) -> Vec<DedupAnomaly> {
    let mut sends: HashMap<Value, usize> = HashMap::new();
    for send in &history.sends {
        *sends.entry(send.value).or_default() += 1;
    }
    checker::duplicates(reads)
        .into_iter()
        .filter_map(|anomaly| match anomaly {
            Anomaly::Duplicate { value, places } => {
                Some(DedupAnomaly::Duplicate { id: value, places, sends: sends.get(&value).copied().unwrap_or(0) })
            }
            _ => None,
        })
        .collect()
}

/// Ids acknowledged to some sender and missing from the final read, with every acknowledgement (and
/// evidence `partition-gone` if one was on a partition the broker no longer had).
pub fn lost(history: &DedupHistory) -> Vec<DedupAnomaly> {
    let stored: HashSet<Value> = history.final_read.records.iter().map(|record| record.value).collect();
    let mut acks: BTreeMap<Value, Vec<Ack>> = BTreeMap::new();
    for send in history.sends.iter().filter(|send| !stored.contains(&send.value)) {
        if let Some(offset) = send.acked_offset() {
            let ack = Ack { producer: send.producer, partition: send.partition, offset, acked_ms: send.done_ms };
            acks.entry(send.value).or_default().push(ack);
        }
    }
    let read = &history.final_read;
    let evidence = |acks: &[Ack]| match read.partitions_found {
        Some(partitions_at_final_read) if acks.iter().any(|ack| read.partition_gone(ack.partition)) => {
            Some(LostEvidence::PartitionGone { partitions_at_final_read })
        }
        _ => None,
    };
    acks.into_iter().map(|(id, acks)| DedupAnomaly::Lost { id, evidence: evidence(&acks), acks }).collect()
}

/// Sends acknowledged at an offset ≥ 0 that does not hold their id in the final read. Offsets the
/// read did not cover are judged only if it was complete (then they lie past the end of the log).
/// Partitions the broker no longer had are left to [`lost`].
pub fn wrong_offsets(history: &DedupHistory) -> Vec<DedupAnomaly> {
    let read = &history.final_read;
    let stored: HashMap<(i32, i64), Value> =
        read.records.iter().map(|record| ((record.partition, record.offset), record.value)).collect();
    let read_to = |partition: i32| usize::try_from(partition).ok().and_then(|p| read.read_to.get(p).copied());
    history
        .sends
        .iter()
        .filter_map(|send| {
            let offset = send.acked_offset().filter(|offset| *offset >= 0 && !read.partition_gone(send.partition))?;
            let found = stored.get(&(send.partition, offset)).copied();
            let covered = read.complete || read_to(send.partition).is_some_and(|end| offset < end);
            (found != Some(send.value) && covered).then_some(DedupAnomaly::WrongOffset {
                id: send.value,
                producer: send.producer,
                partition: send.partition,
                offset,
                acked_ms: send.done_ms,
                found,
            })
        })
        .collect()
}

/// Ids in the final read that no producer sent.
pub fn unexpected(history: &DedupHistory) -> Vec<DedupAnomaly> {
    let sent: HashSet<Value> = history.sends.iter().map(|send| send.value).collect();
    history
        .final_read
        .records
        .iter()
        .filter(|record| !sent.contains(&record.value))
        .map(|record| DedupAnomaly::Unexpected { id: record.value, partition: record.partition, offset: record.offset })
        .collect()
}

/// What the resends of a run were resends of, judged when each was sent: the counts that show the
/// run exercised deduplication of acknowledged, failed and unanswered sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resends {
    /// Sends of an id sent before.
    pub total: usize,
    /// An earlier send of the id had been acknowledged.
    pub of_acked: usize,
    /// Earlier sends had all failed.
    pub of_failed: usize,
    /// Some earlier send never got an answer (its producer was killed, or stopped waiting), none was
    /// acknowledged.
    pub of_unanswered: usize,
    /// An earlier send was still waiting for its answer.
    pub in_flight: usize,
}

/// Counts the resends of `sends` by what their id's earlier sends had come to when they were sent.
pub fn resends(sends: &[Send]) -> Resends {
    use crate::history::SendOutcome;
    let mut earlier: HashMap<Value, Vec<&Send>> = HashMap::new();
    let mut counts = Resends::default();
    let mut ordered: Vec<&Send> = sends.iter().collect();
    ordered.sort_by_key(|send| send.sent_ms);
    for send in ordered {
        let before = earlier.entry(send.value).or_default();
        if !before.is_empty() {
            counts.total += 1;
            let answered_by = |other: &&Send| other.done_ms <= send.sent_ms;
            let acked = before.iter().any(|other| other.acked_offset().is_some() && answered_by(other));
            let waiting = before.iter().any(|other| !answered_by(other));
            let unanswered = before.iter().any(|other| other.outcome == SendOutcome::Unknown);
            if acked {
                counts.of_acked += 1;
            } else if unanswered {
                counts.of_unanswered += 1;
            } else if waiting {
                counts.in_flight += 1;
            } else {
                counts.of_failed += 1;
            }
        }
        before.push(send);
    }
    counts
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
