//! The checker on hand-made histories: a clean one passes, and each anomaly class is found, with
//! its evidence, in a history built to contain it.

use super::*;
use crate::history::{Send, SendOutcome};

fn acked(producer: u32, index: u64, value: Value, partition: i32, offset: i64) -> Send {
    let outcome = SendOutcome::Acked { offset };
    Send { producer, index, value, partition, outcome, sent_ms: index, done_ms: index + 1 }
}

fn poll(consumer: u16, epoch: u32, partition: i32, offset: i64, value: Value) -> Poll {
    Poll { consumer, epoch, partition, offset, value, time_ms: 100 + offset as u64 }
}

/// Producer 0 writes values 10, 11, 12 at offsets 0, 1, 2 of partition 0; consumer 0 and the final
/// read see all three in order.
fn clean() -> History {
    History {
        partitions: 1,
        consumers: vec!["assign-committed".into()],
        sends: vec![acked(0, 0, 10, 0, 0), acked(0, 1, 11, 0, 1), acked(0, 2, 12, 0, 2)],
        polls: vec![poll(0, 0, 0, 0, 10), poll(0, 0, 0, 1, 11), poll(0, 0, 0, 2, 12)],
        final_read: vec![poll(u16::MAX, 0, 0, 0, 10), poll(u16::MAX, 0, 0, 1, 11), poll(u16::MAX, 0, 0, 2, 12)],
        unparseable: vec![],
        faults: vec![],
        partitions_at_final_read: None,
    }
}

fn classes(history: &History) -> Vec<&'static str> {
    check(history).iter().map(Anomaly::class).collect()
}

#[test]
fn a_clean_history_has_no_anomaly() {
    assert_eq!(check(&clean()), vec![]);
}

#[test]
fn failed_and_unknown_sends_are_not_required_to_appear() {
    let mut history = clean();
    let mut failed = acked(0, 3, 13, 0, 0);
    failed.outcome = SendOutcome::Failed { error: "timed out".into() };
    let mut unknown = acked(0, 4, 14, 0, 0);
    unknown.outcome = SendOutcome::Unknown;
    history.sends.extend([failed, unknown]);
    assert_eq!(check(&history), vec![]);
}

#[test]
fn destroyed_data_is_a_lost_write_and_unseen() {
    let mut history = clean();
    // Offset 1 acknowledged, then gone: a consumer read 0 and 2 (skipping nothing it knew of) and
    // the final read only 0 and 2.
    history.polls.remove(1);
    history.final_read.remove(1);
    let anomalies = check(&history);
    assert_eq!(
        anomalies,
        vec![
            Anomaly::LostWrite {
                value: 11,
                partition: 0,
                offset: 1,
                acked_ms: 2,
                evidence: LostEvidence::LaterOffsetRead { highest_read_offset: 2 }
            },
            Anomaly::Unseen { value: 11, partition: 0, offset: 1, acked_ms: 2 },
        ]
    );
}

/// The broker lost partition 1 (its data wiped, the topic re-created with one partition): both
/// records acknowledged there are lost writes, the one a consumer read before the loss too, with the
/// partition count the broker reported as evidence; partition 0 is judged as before.
#[test]
fn every_acked_write_of_a_partition_the_broker_lost_is_a_lost_write() {
    let mut history = clean();
    history.partitions = 2;
    history.partitions_at_final_read = Some(1);
    history.sends.extend([acked(1, 0, 20, 1, 0), acked(1, 1, 21, 1, 1)]);
    history.polls.push(poll(0, 0, 1, 0, 20));
    let gone = |value, offset, acked_ms| Anomaly::LostWrite {
        value,
        partition: 1,
        offset,
        acked_ms,
        evidence: LostEvidence::PartitionGone { partitions_at_final_read: 1 },
    };
    assert_eq!(
        check(&history),
        vec![
            gone(20, 0, 1),
            gone(21, 1, 2),
            Anomaly::Unseen { value: 20, partition: 1, offset: 0, acked_ms: 1 },
            Anomaly::Unseen { value: 21, partition: 1, offset: 1, acked_ms: 2 },
        ]
    );
    let json = serde_json::to_value(gone(21, 1, 2)).expect("JSON");
    assert_eq!(json["class"], "lost-write");
    assert_eq!(json["evidence"], "partition-gone");
    assert_eq!(json["partitions_at_final_read"], 1);
    assert_eq!(json["offset"], 1);
}

/// A topic the broker no longer has at all: every acknowledged record is lost.
#[test]
fn a_topic_the_broker_lost_loses_every_acked_write() {
    let mut history = clean();
    history.final_read.clear();
    history.partitions_at_final_read = Some(0);
    assert_eq!(classes(&history), vec!["lost-write", "lost-write", "lost-write", "unseen", "unseen", "unseen"]);
}

#[test]
fn an_acked_write_past_everything_read_is_unseen_but_not_lost() {
    let mut history = clean();
    history.sends.push(acked(0, 3, 13, 0, 3));
    assert_eq!(classes(&history), vec!["unseen"]);
}

#[test]
fn a_value_at_two_offsets_is_a_duplicate() {
    let mut history = clean();
    // The broker appended a retried batch again: 11 also at offset 3.
    history.polls.push(poll(0, 0, 0, 3, 11));
    history.final_read.push(poll(u16::MAX, 0, 0, 3, 11));
    assert_eq!(check(&history), vec![Anomaly::Duplicate { value: 11, places: vec![(0, 1), (0, 3)] }]);
}

#[test]
fn two_values_at_one_offset_are_inconsistent_offsets() {
    let mut history = clean();
    // After a crash the broker reused offset 2 for another value, and the acknowledgement says 2 too.
    history.sends.push(acked(1, 0, 20, 0, 2));
    history.final_read[2] = poll(u16::MAX, 0, 0, 2, 20);
    let anomalies = check(&history);
    assert!(anomalies.contains(&Anomaly::InconsistentOffsets { partition: 0, offset: 2, values: vec![12, 20] }));
    assert!(anomalies.iter().all(|anomaly| matches!(anomaly.class(), "inconsistent-offsets" | "unseen")));
}

#[test]
fn a_later_send_at_an_earlier_offset_is_a_nonmonotonic_send() {
    let mut history = clean();
    history.sends[1].outcome = SendOutcome::Acked { offset: 2 };
    history.sends[2].outcome = SendOutcome::Acked { offset: 1 };
    history.polls = vec![poll(0, 0, 0, 0, 10), poll(0, 0, 0, 1, 12), poll(0, 0, 0, 2, 11)];
    history.final_read = vec![poll(u16::MAX, 0, 0, 0, 10), poll(u16::MAX, 0, 0, 1, 12), poll(u16::MAX, 0, 0, 2, 11)];
    assert_eq!(
        check(&history),
        vec![Anomaly::NonMonotonicSend {
            producer: 0,
            partition: 0,
            earlier: (11, 2),
            later: (12, 1),
            later_acked_ms: 3
        }]
    );
}

#[test]
fn sends_to_different_partitions_or_producers_are_not_ordered() {
    let mut history = clean();
    history.sends.push(acked(0, 3, 30, 1, 0));
    history.sends.push(acked(1, 0, 31, 0, 3));
    history.final_read.push(poll(u16::MAX, 0, 1, 0, 30));
    history.final_read.push(poll(u16::MAX, 0, 0, 3, 31));
    assert_eq!(check(&history), vec![]);
}

#[test]
fn going_back_without_a_rebalance_is_a_nonmonotonic_poll() {
    let mut history = clean();
    history.polls.push(poll(0, 0, 0, 1, 11));
    let anomalies = check(&history);
    let expected = Anomaly::NonMonotonicPoll {
        consumer: "assign-committed".into(),
        partition: 0,
        previous_offset: 2,
        offset: 1,
        time_ms: 101,
    };
    assert_eq!(anomalies, vec![expected]);
}

#[test]
fn going_back_after_a_rebalance_is_allowed() {
    let mut history = clean();
    history.polls.push(poll(0, 1, 0, 1, 11));
    assert_eq!(check(&history), vec![]);
}

#[test]
fn jumping_over_a_record_without_a_rebalance_is_a_poll_skip() {
    let mut history = clean();
    history.polls.remove(1);
    let expected = Anomaly::PollSkip {
        consumer: "assign-committed".into(),
        partition: 0,
        previous_offset: 0,
        offset: 2,
        skipped_count: 1,
        skipped: vec![1],
        time_ms: 102,
    };
    assert_eq!(check(&history), vec![expected]);
    history.polls[1].epoch = 1;
    assert_eq!(check(&history), vec![], "a skip across a rebalance is allowed");
}

#[test]
fn jumping_over_offsets_that_hold_no_record_is_not_a_skip() {
    let mut history = clean();
    // Offsets 3 and 4 are control records nobody can read; 5 follows 2 with no skip.
    history.sends.push(acked(0, 3, 13, 0, 5));
    history.polls.push(poll(0, 0, 0, 5, 13));
    history.final_read.push(poll(u16::MAX, 0, 0, 5, 13));
    assert_eq!(check(&history), vec![]);
}

#[test]
fn records_the_run_cannot_have_written_are_reported() {
    let mut history = clean();
    history.unparseable.push((0, 7));
    assert_eq!(check(&history), vec![Anomaly::UnparseableValue { partition: 0, offset: 7 }]);
}

#[test]
fn every_class_has_a_name_in_the_class_list() {
    let anomaly = Anomaly::UnparseableValue { partition: 0, offset: 0 };
    assert!(CLASSES.contains(&anomaly.class()));
    let json = serde_json::to_value(&anomaly).expect("serialize");
    assert_eq!(json["class"], "unparseable-value");
    let json = serde_json::to_value(Anomaly::NonMonotonicPoll {
        consumer: String::new(),
        partition: 0,
        previous_offset: 0,
        offset: 0,
        time_ms: 0,
    })
    .expect("serialize");
    assert_eq!(json["class"], "nonmonotonic-poll", "Jepsen's spelling");
}
