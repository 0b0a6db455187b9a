//! The group checker on hand-made histories: a clean one (with a crash and the re-processing it
//! allows) passes, and each anomaly class is found, with its evidence, in a history built for it.

use super::*;
use crate::group::history::{CommittedRead, Incarnation, Processed, Resume};
use crate::history::{Send, SendOutcome};
use crate::queue::checker::LostEvidence;

fn acked(index: u64, offset: i64) -> Send {
    let outcome = SendOutcome::Acked { offset };
    Send { producer: 0, index, value: 10 + index, partition: 0, outcome, sent_ms: index, done_ms: index + 1 }
}

fn incarnation(member: u16, client_id: &str, crashed: bool) -> Incarnation {
    Incarnation { member, client_id: client_id.into(), started_ms: 0, ended_ms: 0, crashed }
}

fn processed(incarnation: u32, offset: i64, time_ms: TimeMs) -> Processed {
    Processed { incarnation, partition: 0, offset, value: 10 + offset as u64, time_ms }
}

fn commit(incarnation: u32, offset: i64, sent_ms: TimeMs, acked: bool) -> Commit {
    Commit { incarnation, partition: 0, offset, sent_ms, done_ms: sent_ms + 5, acked }
}

fn read_back(incarnation: u32, offset: Option<i64>, sent_ms: TimeMs) -> CommittedRead {
    CommittedRead { incarnation, partition: 0, offset, sent_ms, done_ms: sent_ms + 5 }
}

/// Four records at offsets 0..4 of partition 0. Member `a` processes 0 and 1, commits 2, processes 2
/// and crashes before committing; `b` reads back 2, processes 2 and 3 (2 again: allowed), commits 4;
/// the fresh consumer finds 4 committed, at the high watermark.
fn clean() -> GroupHistory {
    GroupHistory {
        partitions: 1,
        sends: (0..4).map(|index| acked(index, index as i64)).collect(),
        incarnations: vec![incarnation(0, "a", true), incarnation(1, "b", false), incarnation(FINAL, "final", false)],
        processed: vec![processed(0, 0, 10), processed(0, 1, 11), processed(0, 2, 30), processed(1, 2, 60)]
            .into_iter()
            .chain([processed(1, 3, 61)])
            .collect(),
        commits: vec![commit(0, 2, 20, true), commit(1, 4, 70, true)],
        committed_reads: vec![read_back(1, Some(2), 50), read_back(2, Some(4), 100)],
        resume: vec![Resume { partition: 0, committed: Some(4), first_polled: None, high_watermark: 4 }],
        final_read_complete: true,
        partitions_found: Some(1),
        unparseable: vec![],
        faults: vec![],
    }
}

const FINAL: u16 = crate::group::history::FINAL_MEMBER;

fn classes(history: &GroupHistory) -> Vec<&'static str> {
    check_group(history).iter().map(GroupAnomaly::class).collect()
}

#[test]
fn a_clean_history_with_reprocessing_after_a_crash_has_no_anomaly() {
    let history = clean();
    assert_eq!(check_group(&history), vec![]);
    assert_eq!(reprocessing(&history), Reprocessing { records: 1, extra_processings: 1, below_acked_commit: 0 });
}

#[test]
fn a_commit_before_processing_then_a_crash_is_committed_beyond_processed_and_lost() {
    let mut history = clean();
    // `a` committed 2 before processing 0 and 1, then crashed: nobody ever processes them.
    history.processed.retain(|record| record.offset >= 2);
    let anomalies = check_group(&history);
    assert_eq!(
        anomalies[0],
        GroupAnomaly::CommittedBeyondProcessed {
            partition: 0,
            committed_offset: 2,
            committed_by: "a".into(),
            acked_ms: 25,
            unprocessed_count: 2,
            unprocessed: vec![0, 1],
        }
    );
    assert_eq!(classes(&history), vec!["committed-beyond-processed", "lost", "lost"]);
    assert_eq!(anomalies[1], GroupAnomaly::Lost { value: 10, partition: 0, offset: 0, acked_ms: 1, evidence: None });
}

#[test]
fn a_gap_is_reported_once_with_the_lowest_commit_past_it() {
    let mut history = clean();
    history.processed.retain(|record| record.offset != 1);
    let anomalies = committed_beyond_processed(&history);
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    let GroupAnomaly::CommittedBeyondProcessed { committed_offset, unprocessed, .. } = &anomalies[0] else {
        panic!("not committed-beyond-processed: {anomalies:?}")
    };
    assert_eq!((*committed_offset, unprocessed.clone()), (2, vec![1]), "commit 4 does not report offset 1 again");
}

#[test]
fn a_failed_commit_past_unprocessed_records_is_not_an_anomaly() {
    let mut history = clean();
    history.commits.push(commit(1, 9, 80, false));
    history.sends.extend((4..9).map(|index| acked(index, index as i64)));
    history.processed.extend((4..9).map(|offset| processed(2, offset, 110)));
    history.resume[0] = Resume { partition: 0, committed: Some(9), first_polled: None, high_watermark: 9 };
    // 9 was never acknowledged, but its answer may have been lost: resuming there is allowed.
    assert_eq!(check_group(&history), vec![]);
}

#[test]
fn a_lower_commit_after_an_acknowledged_higher_one_is_a_regression() {
    let mut history = clean();
    history.commits.push(commit(1, 3, 90, true));
    let anomalies = committed_offset_regressions(&history);
    assert_eq!(
        anomalies,
        vec![GroupAnomaly::CommittedOffsetRegression {
            partition: 0,
            acked_offset: 4,
            acked_by: "b".into(),
            acked_ms: 75,
            seen_in: "commit",
            later_offset: Some(3),
            seen_by: "b".into(),
            later_ms: 95,
        }]
    );
}

#[test]
fn a_read_back_below_an_acknowledged_commit_is_a_regression_and_the_resume_mismatches() {
    let mut history = clean();
    // Offsets reset: the fresh consumer finds no committed offset at all and starts from 0.
    history.committed_reads[1].offset = None;
    history.resume[0] = Resume { partition: 0, committed: None, first_polled: Some(0), high_watermark: 4 };
    let anomalies = check_group(&history);
    assert_eq!(classes(&history), vec!["committed-offset-regression", "resume-mismatch"]);
    let GroupAnomaly::CommittedOffsetRegression { seen_in, later_offset, acked_offset, seen_by, .. } = &anomalies[0]
    else {
        panic!("not a regression: {anomalies:?}")
    };
    assert_eq!((*seen_in, *later_offset, *acked_offset, seen_by.as_str()), ("read-back", None, 4, "final"));
    assert_eq!(
        anomalies[1],
        GroupAnomaly::ResumeMismatch { partition: 0, expected: Some(4), committed: None, first_polled: Some(0) }
    );
}

#[test]
fn a_read_back_racing_an_unacknowledged_commit_is_not_a_regression() {
    let mut history = clean();
    // The read was sent before the commit of 4 was acknowledged (at 75): 2 is a fine answer.
    history.committed_reads.push(read_back(1, Some(2), 72));
    assert_eq!(committed_offset_regressions(&history), vec![]);
}

#[test]
fn resuming_past_the_committed_offset_is_a_mismatch() {
    let mut history = clean();
    history.sends.push(acked(4, 4));
    history.sends.push(acked(5, 5));
    history.processed.extend([processed(2, 5, 120)]);
    history.resume[0] = Resume { partition: 0, committed: Some(4), first_polled: Some(5), high_watermark: 6 };
    assert_eq!(classes(&history), vec!["resume-mismatch", "lost"]);
}

#[test]
fn reprocessing_below_an_acknowledged_commit_is_counted_not_failed() {
    let mut history = clean();
    history.processed.push(processed(2, 0, 150));
    assert_eq!(check_group(&history), vec![]);
    assert_eq!(reprocessing(&history), Reprocessing { records: 2, extra_processings: 2, below_acked_commit: 1 });
}

#[test]
fn unparseable_records_are_reported() {
    let mut history = clean();
    history.unparseable.push((0, 7));
    assert_eq!(check_group(&history), vec![GroupAnomaly::UnparseableValue { partition: 0, offset: 7 }]);
}

#[test]
fn sends_acknowledged_on_a_partition_the_broker_lost_are_lost_with_evidence_partition_gone() {
    // The run had 2 partitions; the broker listed 1 at the final resume. Offsets 0 and 1 of partition
    // 1 were acknowledged and never processed: lost, partition gone. Offset 4 of partition 0 was
    // acknowledged and never processed although its partition is there: lost, no such evidence.
    let mut history = clean();
    history.partitions = 2;
    let on_lost_partition = |index: u64, offset: i64| Send { partition: 1, ..acked(index, offset) };
    history.sends.extend([on_lost_partition(4, 0), on_lost_partition(5, 1), acked(6, 4)]);
    let anomalies = check_group(&history);
    let gone = Some(LostEvidence::PartitionGone { partitions_at_final_read: 1 });
    assert_eq!(
        anomalies,
        vec![
            GroupAnomaly::Lost { value: 14, partition: 1, offset: 0, acked_ms: 5, evidence: gone.clone() },
            GroupAnomaly::Lost { value: 15, partition: 1, offset: 1, acked_ms: 6, evidence: gone },
            GroupAnomaly::Lost { value: 16, partition: 0, offset: 4, acked_ms: 7, evidence: None },
        ]
    );
    let json = serde_json::to_value(&anomalies[0]).expect("json");
    assert_eq!(json["class"], "lost");
    assert_eq!(json["evidence"], "partition-gone", "{json}");
    assert_eq!(json["partitions_at_final_read"], 1, "{json}");
    let json = serde_json::to_value(&anomalies[2]).expect("json");
    assert!(json.get("evidence").is_none(), "{json}");
}
