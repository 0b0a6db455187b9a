//! The group checker: anomalies of consumer groups that commit offsets while members die, computed
//! from a [`GroupHistory`]. Pure functions, so every class is unit-tested on hand-made histories
//! (`checker_tests.rs`).
//!
//! At-least-once is the contract: a record may be processed again after a crash (counted, in
//! [`Reprocessing`], never an anomaly), but a committed offset must never pass a record nobody
//! processed, must never go back, and the group must resume exactly where it last committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::group::history::{Commit, GroupHistory};
use crate::history::{TimeMs, Value};
use crate::queue::checker::LostEvidence;

/// Offsets listed in a committed-beyond-processed report at most; the count is always complete.
const UNPROCESSED_OFFSETS_SHOWN: usize = 10;

/// Anomaly class names of the `group` workload, in report order.
pub const GROUP_CLASSES: [&str; 5] =
    ["committed-beyond-processed", "committed-offset-regression", "resume-mismatch", "lost", "unparseable-value"];

/// One anomaly of the `group` workload with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum GroupAnomaly {
    /// An acknowledged commit of `committed_offset` although records below it were never processed
    /// by any member: a restart from that commit skips them.
    CommittedBeyondProcessed {
        partition: i32,
        committed_offset: i64,
        committed_by: String,
        acked_ms: TimeMs,
        unprocessed_count: usize,
        unprocessed: Vec<i64>,
    },
    /// The group's committed offset went back: a commit sent, or a read-back issued, after an
    /// acknowledged commit of a higher offset carried or returned a lower one.
    CommittedOffsetRegression {
        partition: i32,
        acked_offset: i64,
        acked_by: String,
        acked_ms: TimeMs,
        /// `commit` (a later acknowledged commit) or `read-back` (OffsetFetch).
        seen_in: &'static str,
        later_offset: Option<i64>,
        seen_by: String,
        later_ms: TimeMs,
    },
    /// The fresh consumer at the end did not resume at the last acknowledged committed offset (or at
    /// a later commit whose answer was lost), or was not given that offset first.
    ResumeMismatch { partition: i32, expected: Option<i64>, committed: Option<i64>, first_polled: Option<i64> },
    /// Acknowledged to its producer, never processed by any member nor by the fresh consumer; with
    /// evidence `partition-gone` when its partition was no longer on the broker at the final resume.
    Lost {
        value: Value,
        partition: i32,
        offset: i64,
        acked_ms: TimeMs,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        evidence: Option<LostEvidence>,
    },
    /// A record on the run's topic that the run cannot have written.
    UnparseableValue { partition: i32, offset: i64 },
}

impl GroupAnomaly {
    /// The class name, one of [`GROUP_CLASSES`].
    pub fn class(&self) -> &'static str {
        match self {
            GroupAnomaly::CommittedBeyondProcessed { .. } => GROUP_CLASSES[0],
            GroupAnomaly::CommittedOffsetRegression { .. } => GROUP_CLASSES[1],
            GroupAnomaly::ResumeMismatch { .. } => GROUP_CLASSES[2],
            GroupAnomaly::Lost { .. } => GROUP_CLASSES[3],
            GroupAnomaly::UnparseableValue { .. } => GROUP_CLASSES[4],
        }
    }
}

/// Processing again what was processed before: allowed under at-least-once, reported for people.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reprocessing {
    /// Records processed more than once.
    pub records: usize,
    /// Processings beyond each record's first.
    pub extra_processings: usize,
    /// Re-processings of an offset below a commit of its partition that had already been
    /// acknowledged: outside the window a crash explains (a correct group resumes at the commit).
    pub below_acked_commit: usize,
}

/// Every anomaly in `history`, class by class.
pub fn check_group(history: &GroupHistory) -> Vec<GroupAnomaly> {
    let mut anomalies = committed_beyond_processed(history);
    anomalies.extend(committed_offset_regressions(history));
    anomalies.extend(resume_mismatches(history));
    anomalies.extend(lost(history));
    anomalies.extend(
        history.unparseable.iter().map(|&(partition, offset)| GroupAnomaly::UnparseableValue { partition, offset }),
    );
    anomalies
}

fn client_id(history: &GroupHistory, incarnation: u32) -> String {
    let incarnation = history.incarnations.get(incarnation as usize);
    incarnation.map(|incarnation| incarnation.client_id.clone()).unwrap_or_default()
}

/// Acknowledged commits per partition, in order of acknowledgement.
fn acked_commits(history: &GroupHistory) -> BTreeMap<i32, Vec<&Commit>> {
    let mut by_partition: BTreeMap<i32, Vec<&Commit>> = BTreeMap::new();
    for commit in history.commits.iter().filter(|commit| commit.acked) {
        by_partition.entry(commit.partition).or_default().push(commit);
    }
    for commits in by_partition.values_mut() {
        commits.sort_by_key(|commit| (commit.done_ms, commit.offset));
    }
    by_partition
}

/// The highest acknowledged commit among `commits` (sorted by acknowledgement) acknowledged
/// strictly before `time_ms`.
fn highest_acked_before<'a>(commits: &[&'a Commit], time_ms: TimeMs) -> Option<&'a Commit> {
    let acknowledged = commits.partition_point(|commit| commit.done_ms < time_ms);
    commits[..acknowledged].iter().copied().max_by_key(|commit| (commit.offset, std::cmp::Reverse(commit.done_ms)))
}

/// Acknowledged commits past offsets that hold records (acknowledged sends or anything processed)
/// never processed by anyone. Each unprocessed offset is reported once, with the lowest commit past it.
pub fn committed_beyond_processed(history: &GroupHistory) -> Vec<GroupAnomaly> {
    let mut known: HashMap<i32, BTreeSet<i64>> = HashMap::new();
    let mut processed: HashMap<i32, BTreeSet<i64>> = HashMap::new();
    for send in &history.sends {
        if let Some(offset) = send.acked_offset() {
            known.entry(send.partition).or_default().insert(offset);
        }
    }
    for record in &history.processed {
        known.entry(record.partition).or_default().insert(record.offset);
        processed.entry(record.partition).or_default().insert(record.offset);
    }
    let mut anomalies = Vec::new();
    for (partition, mut commits) in acked_commits(history) {
        commits.sort_by_key(|commit| (commit.offset, commit.done_ms));
        let (Some(known), empty) = (known.get(&partition), BTreeSet::new()) else { continue };
        let processed = processed.get(&partition).unwrap_or(&empty);
        let mut checked_up_to = i64::MIN;
        for commit in commits {
            let unprocessed: Vec<i64> = known
                .range(checked_up_to..commit.offset.max(checked_up_to))
                .filter(|offset| !processed.contains(offset))
                .copied()
                .collect();
            checked_up_to = checked_up_to.max(commit.offset);
            if unprocessed.is_empty() {
                continue;
            }
            anomalies.push(GroupAnomaly::CommittedBeyondProcessed {
                partition,
                committed_offset: commit.offset,
                committed_by: client_id(history, commit.incarnation),
                acked_ms: commit.done_ms,
                unprocessed_count: unprocessed.len(),
                unprocessed: unprocessed.into_iter().take(UNPROCESSED_OFFSETS_SHOWN).collect(),
            });
        }
    }
    anomalies
}

/// Committed offsets that went back: an acknowledged commit, or a read-back, issued after a higher
/// commit of the same partition was acknowledged, carrying or returning a lower offset.
pub fn committed_offset_regressions(history: &GroupHistory) -> Vec<GroupAnomaly> {
    let acked = acked_commits(history);
    // (partition, offset, sent, done, incarnation, kind) of every later observation of an offset.
    let commits = history.commits.iter().filter(|commit| commit.acked).map(|commit| {
        (commit.partition, Some(commit.offset), commit.sent_ms, commit.done_ms, commit.incarnation, "commit")
    });
    let reads = history
        .committed_reads
        .iter()
        .map(|read| (read.partition, read.offset, read.sent_ms, read.done_ms, read.incarnation, "read-back"));
    let mut anomalies = Vec::new();
    for (partition, later_offset, sent_ms, later_ms, incarnation, seen_in) in commits.chain(reads) {
        let Some(earlier) = acked.get(&partition).and_then(|commits| highest_acked_before(commits, sent_ms)) else {
            continue;
        };
        if later_offset.is_some_and(|offset| offset >= earlier.offset) {
            continue;
        }
        anomalies.push(GroupAnomaly::CommittedOffsetRegression {
            partition,
            acked_offset: earlier.offset,
            acked_by: client_id(history, earlier.incarnation),
            acked_ms: earlier.done_ms,
            seen_in,
            later_offset,
            seen_by: client_id(history, incarnation),
            later_ms,
        });
    }
    anomalies
}

/// The fresh consumer's committed offset must be the highest acknowledged commit, or the offset of
/// a higher commit whose answer was lost (it may have been applied); its first record must be there.
pub fn resume_mismatches(history: &GroupHistory) -> Vec<GroupAnomaly> {
    let acked = acked_commits(history);
    let mut anomalies = Vec::new();
    for resume in &history.resume {
        let partition = resume.partition;
        let expected = acked.get(&partition).and_then(|commits| commits.iter().map(|commit| commit.offset).max());
        let lost_answer = |offset: i64| {
            history.commits.iter().any(|commit| {
                !commit.acked && commit.partition == partition && commit.offset == offset && Some(offset) > expected
            })
        };
        let committed_ok = resume.committed == expected || resume.committed.is_some_and(lost_answer);
        let start_ok = match resume.committed {
            Some(committed) if committed < resume.high_watermark => resume.first_polled == Some(committed),
            _ => true,
        };
        if !committed_ok || !start_ok {
            anomalies.push(GroupAnomaly::ResumeMismatch {
                partition,
                expected,
                committed: resume.committed,
                first_polled: resume.first_polled,
            });
        }
    }
    anomalies
}

/// Acknowledged values that no incarnation processed, the fresh consumer at the end included (with
/// evidence `partition-gone` if the broker no longer had their partition at the final resume).
pub fn lost(history: &GroupHistory) -> Vec<GroupAnomaly> {
    let partition_gone = |partition: i32| {
        let partitions_at_final_read = history.partitions_found.filter(|found| partition >= *found)?;
        Some(LostEvidence::PartitionGone { partitions_at_final_read })
    };
    let processed: BTreeSet<Value> = history.processed.iter().map(|record| record.value).collect();
    history
        .sends
        .iter()
        .filter(|send| !processed.contains(&send.value))
        .filter_map(|send| {
            let offset = send.acked_offset()?;
            Some(GroupAnomaly::Lost {
                value: send.value,
                partition: send.partition,
                offset,
                acked_ms: send.done_ms,
                evidence: partition_gone(send.partition),
            })
        })
        .collect()
}

/// How much was processed more than once, and how much of that below an acknowledged commit.
pub fn reprocessing(history: &GroupHistory) -> Reprocessing {
    let acked = acked_commits(history);
    let mut times: HashMap<(i32, i64), usize> = HashMap::new();
    let mut result = Reprocessing::default();
    for record in &history.processed {
        let count = times.entry((record.partition, record.offset)).or_default();
        *count += 1;
        if *count == 1 {
            continue;
        }
        result.extra_processings += 1;
        if *count == 2 {
            result.records += 1;
        }
        let commits = acked.get(&record.partition).map(Vec::as_slice).unwrap_or_default();
        if highest_acked_before(commits, record.time_ms).is_some_and(|commit| commit.offset > record.offset) {
            result.below_acked_commit += 1;
        }
    }
    result
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
