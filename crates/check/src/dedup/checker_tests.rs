//! Hand-made `dedup` histories: each class found with its evidence, and the resends and answers a
//! correct deduplicating broker gives left alone.

use super::*;
use crate::history::SendOutcome;

fn send(producer: u32, id: Value, partition: i32, outcome: SendOutcome, sent_ms: TimeMs, done_ms: TimeMs) -> Send {
    Send { producer, index: 0, value: id, partition, outcome, sent_ms, done_ms }
}

fn acked(producer: u32, id: Value, partition: i32, offset: i64, sent_ms: TimeMs) -> Send {
    send(producer, id, partition, SendOutcome::Acked { offset }, sent_ms, sent_ms + 5)
}

fn record(partition: i32, offset: i64, id: Value) -> Poll {
    Poll { consumer: crate::queue::FINAL_READER, epoch: 0, partition, offset, value: id, time_ms: 1_000 }
}

fn live(offset: i64, id: Value, time_ms: TimeMs) -> Poll {
    Poll { consumer: 0, epoch: 0, partition: 0, offset, value: id, time_ms }
}

/// Ids 1, 2, 3 stored once in partitions 0 and 1 (with a gap at 0/1 where a resend was dropped).
fn history(sends: Vec<Send>) -> DedupHistory {
    DedupHistory {
        partitions: 2,
        consumers: vec!["assign-read-committed".into()],
        sends,
        polls: vec![live(0, 1, 10), live(2, 3, 20)],
        final_read: TopicRead {
            records: vec![record(0, 0, 1), record(0, 2, 3), record(1, 0, 2)],
            read_to: vec![3, 1],
            complete: true,
            partitions_found: Some(2),
        },
        ..Default::default()
    }
}

#[test]
fn resends_dropped_and_answered_with_the_original_or_an_unknown_offset_pass() {
    let sends = vec![
        acked(0, 1, 0, 0, 0),
        acked(0, 2, 1, 0, 1),
        // A fresh producer resends 1 to partition 1 (dropped: unknown offset) and to partition 0
        // alone in its batch (dropped: the original's offset), then sends 3.
        acked(1, 1, 1, -1, 10),
        acked(1, 1, 0, 0, 11),
        acked(1, 3, 0, 2, 12),
        // Never answered, then resent and not acknowledged: may be absent.
        send(2, 4, 0, SendOutcome::Unknown, 20, 20),
        send(3, 4, 1, SendOutcome::Failed { error: "timed out".into() }, 30, 40),
    ];
    assert_eq!(check_dedup(&history(sends)), vec![]);
}

#[test]
fn an_id_stored_twice_is_a_duplicate_with_both_places() {
    let mut history = history(vec![acked(0, 1, 0, 0, 0), acked(1, 1, 1, 1, 10), acked(0, 2, 1, 0, 1)]);
    history.final_read.records.push(record(1, 1, 1));
    history.final_read.read_to[1] = 2;
    history.sends.push(acked(0, 3, 0, 2, 2));
    let anomalies = check_dedup(&history);
    assert_eq!(anomalies, vec![DedupAnomaly::Duplicate { id: 1, places: vec![(0, 0), (1, 1)], sends: 2 }]);
    assert_eq!(anomalies[0].class(), "duplicate");
}

#[test]
fn an_acknowledged_id_missing_from_the_final_read_is_lost_with_every_acknowledgement() {
    let sends = vec![
        acked(0, 1, 0, 0, 0),
        acked(0, 2, 1, 0, 1),
        acked(0, 3, 0, 2, 2),
        acked(1, 5, 1, 1, 3),
        acked(2, 5, 0, -1, 4),
    ];
    let anomalies = check_dedup(&history(sends));
    let lost: Vec<_> = anomalies.iter().filter(|anomaly| anomaly.class() == "lost").collect();
    assert_eq!(lost.len(), 1, "{anomalies:?}");
    let DedupAnomaly::Lost { id, acks, evidence: None } = lost[0] else { panic!("a lost id") };
    assert_eq!(*id, 5);
    assert_eq!(acks.iter().map(|ack| (ack.partition, ack.offset)).collect::<Vec<_>>(), vec![(1, 1), (0, -1)]);
}

#[test]
fn an_answer_naming_an_offset_that_holds_another_id_or_nothing_is_a_wrong_offset() {
    let sends = vec![
        acked(0, 1, 0, 0, 0),
        acked(0, 2, 1, 0, 1),
        acked(0, 3, 0, 2, 2),
        // A dropped resend of 3 answered with the gap at 0/1, and one of 2 answered with 1's place.
        acked(1, 3, 0, 1, 10),
        acked(1, 2, 0, 0, 11),
    ];
    let wrong: Vec<_> =
        check_dedup(&history(sends)).into_iter().filter(|anomaly| anomaly.class() == "wrong-offset").collect();
    assert_eq!(
        wrong,
        vec![
            DedupAnomaly::WrongOffset { id: 3, producer: 1, partition: 0, offset: 1, acked_ms: 15, found: None },
            DedupAnomaly::WrongOffset { id: 2, producer: 1, partition: 0, offset: 0, acked_ms: 16, found: Some(1) },
        ]
    );
}

#[test]
fn offsets_an_incomplete_final_read_did_not_reach_are_not_judged() {
    let mut history = history(vec![acked(0, 1, 0, 0, 0), acked(0, 2, 1, 0, 1), acked(0, 3, 0, 2, 2)]);
    history.sends.push(acked(1, 1, 0, 7, 10));
    history.final_read.complete = false;
    assert!(check_dedup(&history).iter().all(|anomaly| anomaly.class() != "wrong-offset"));
    history.final_read.complete = true;
    assert_eq!(check_dedup(&history).iter().filter(|anomaly| anomaly.class() == "wrong-offset").count(), 1);
}

#[test]
fn ids_nobody_sent_places_read_differently_and_live_reads_going_back_are_reported() {
    let mut history = history(vec![acked(0, 1, 0, 0, 0), acked(0, 2, 1, 0, 1)]);
    // 3 was never sent; the live consumer read 2 where the final read has 3, then went back.
    history.polls = vec![live(2, 2, 10), live(0, 1, 20)];
    let anomalies = check_dedup(&history);
    let classes: Vec<&str> = anomalies.iter().map(DedupAnomaly::class).collect();
    assert!(classes.contains(&"unexpected"), "{anomalies:?}");
    assert!(classes.contains(&"inconsistent-offsets"), "{anomalies:?}");
    assert!(classes.contains(&"nonmonotonic-poll"), "{anomalies:?}");
    assert!(classes.contains(&"duplicate"), "2 read at 0/2 and 1/0: {anomalies:?}");
    let json = serde_json::to_value(&anomalies).expect("json");
    assert!(json.as_array().expect("array").iter().all(|anomaly| anomaly["class"].is_string()), "{json}");
}

#[test]
fn resends_are_counted_by_what_their_earlier_sends_had_come_to() {
    let sends = vec![
        acked(0, 1, 0, 0, 0),
        send(0, 2, 0, SendOutcome::Failed { error: "x".into() }, 1, 3),
        send(0, 3, 0, SendOutcome::Unknown, 2, 2),
        acked(0, 4, 0, 1, 50),
        acked(1, 1, 0, 0, 10),
        acked(1, 2, 0, 2, 10),
        acked(1, 3, 0, 3, 10),
        acked(1, 4, 0, 1, 51),
    ];
    let counts = resends(&sends);
    assert_eq!(counts, Resends { total: 4, of_acked: 1, of_failed: 1, of_unanswered: 1, in_flight: 1 });
}

#[test]
fn ids_acknowledged_on_a_partition_the_broker_lost_are_lost_with_evidence_partition_gone() {
    // Partition 1 is gone at the final read: 2 was acknowledged there only; 4 was acknowledged there
    // too but a resend stored it in partition 0, so it is not lost.
    let mut history = history(vec![
        acked(0, 1, 0, 0, 0),
        acked(0, 2, 1, 0, 1),
        acked(0, 3, 0, 2, 2),
        acked(1, 4, 1, 1, 3),
        acked(2, 4, 0, 3, 4),
    ]);
    history.final_read = TopicRead {
        records: vec![record(0, 0, 1), record(0, 2, 3), record(0, 3, 4)],
        read_to: vec![4, 0],
        complete: true,
        partitions_found: Some(1),
    };
    let anomalies = check_dedup(&history);
    let gone = LostEvidence::PartitionGone { partitions_at_final_read: 1 };
    let ack = Ack { producer: 0, partition: 1, offset: 0, acked_ms: 6 };
    assert_eq!(anomalies, vec![DedupAnomaly::Lost { id: 2, acks: vec![ack], evidence: Some(gone) }]);
    let json = serde_json::to_value(&anomalies[0]).expect("json");
    assert_eq!(json["class"], "lost");
    assert_eq!(json["evidence"], "partition-gone", "{json}");
    assert_eq!(json["partitions_at_final_read"], 1, "{json}");
}
