//! The txn checker on hand-made histories: a clean copy through an aborted transaction passes, and
//! each anomaly class is found, with its evidence, in a history built to contain it.

use super::*;
use crate::history::{Send, SendOutcome};
use crate::txn::history::{Copier, CopierEnd, TopicRead, TracedTransaction, Unparseable};

/// The wall clock at the run's time 0 in the hand-made histories.
const WALL_CLOCK_START_MS: u64 = 1_700_000_000_000;

fn send(producer: u32, index: u64, value: Value, partition: i32, offset: i64) -> Send {
    let outcome = SendOutcome::Acked { offset };
    Send { producer, index, value, partition, outcome, sent_ms: index, done_ms: index + 1 }
}

fn record(consumer: u16, partition: i32, offset: i64, value: Value) -> Poll {
    Poll { consumer, epoch: 0, partition, offset, value, time_ms: 100 + offset as u64 }
}

fn read(records: &[(i32, i64, Value)], read_to: Vec<i64>) -> TopicRead {
    let records =
        records.iter().map(|&(partition, offset, value)| record(u16::MAX, partition, offset, value)).collect();
    TopicRead { records, read_to, complete: true, partitions_found: None }
}

fn copier(id: CopierId, paused_ms: Option<TimeMs>, resumed_ms: Option<TimeMs>) -> Copier {
    Copier {
        id,
        pid: 100 + id,
        seed: 7,
        started_ms: 10,
        paused_ms,
        resumed_ms,
        ended_ms: None,
        end: CopierEnd::Running,
        last: false,
        log: format!("copier-{id}.log"),
    }
}

/// Input: 10, 11, 12 at offsets 0–2 of partition 0 and 20 at offset 0 of partition 1. The copier's
/// first transaction on partition 0 wrote 10 (offset 0) and committed (marker at 1); the next wrote
/// 11 at 2 and aborted (marker at 3); the retry wrote 11 and 12 at 4 and 5 and committed (marker at
/// 6). The read_uncommitted consumer saw the aborted 11; the read_committed one did not. The trace
/// says the transactions asked to commit (or abort) at 50, 60 and 70 ms, before anything was polled
/// (at 100 ms + offset).
fn clean() -> TxnHistory {
    let committed = [(0, 0, 10), (0, 4, 11), (0, 5, 12), (1, 0, 20)];
    let mut polls: Vec<Poll> = committed.iter().map(|&(p, o, v)| record(COMMITTED_CONSUMER, p, o, v)).collect();
    let uncommitted = [(0, 0, 10), (0, 2, 11), (0, 4, 11), (0, 5, 12), (1, 0, 20)];
    polls.extend(uncommitted.iter().map(|&(p, o, v)| record(UNCOMMITTED_CONSUMER, p, o, v)));
    TxnHistory {
        partitions: 2,
        consumers: vec!["output-read-committed".into(), "output-read-uncommitted".into()],
        sends: vec![send(0, 0, 10, 0, 0), send(0, 1, 20, 1, 0), send(0, 2, 11, 0, 1), send(0, 3, 12, 0, 2)],
        polls,
        input: read(&[(0, 0, 10), (0, 1, 11), (0, 2, 12), (1, 0, 20)], vec![3, 1]),
        output: read(&committed, vec![7, 2]),
        copiers: vec![copier(0, None, None)],
        transactions: vec![
            traced(0, 0, (Some(50), None), "committed", vec![(0, 0, 0), (1, 0, 0)]),
            traced(0, 1, (None, Some(60)), "aborted", vec![(0, 1, 1)]),
            traced(0, 2, (Some(70), None), "committed", vec![(0, 1, 2)]),
        ],
        wall_clock_start_ms: WALL_CLOCK_START_MS,
        wall_clock_drift_ms: 0,
        producers: vec![],
        concurrent_copiers: vec![0],
        unparseable: vec![],
        faults: vec![],
    }
}

/// A traced transaction that asked to commit and/or abort at these times of the run (ms from time 0).
fn traced(
    copier: CopierId,
    transaction: u64,
    (commit_ms, abort_ms): (Option<u64>, Option<u64>),
    outcome: &str,
    input: Vec<(i32, i64, i64)>,
) -> TracedTransaction {
    TracedTransaction {
        copier,
        transaction,
        producer: 0,
        commit_unix_ms: commit_ms.map(|ms| WALL_CLOCK_START_MS + ms),
        abort_unix_ms: abort_ms.map(|ms| WALL_CLOCK_START_MS + ms),
        outcome: Some(outcome.to_string()),
        error: None,
        input,
    }
}

fn classes(history: &TxnHistory) -> Vec<&'static str> {
    check_txn(history).iter().map(TxnAnomaly::class).collect()
}

#[test]
fn a_clean_copy_through_an_abort_has_no_anomaly() {
    let history = clean();
    assert_eq!(check_txn(&history), vec![]);
    assert_eq!(uncommitted_reads(&history), 1, "the aborted 11 at offset 2, seen read_uncommitted");
}

#[test]
fn what_the_input_holds_must_be_copied_whatever_its_send_said() {
    let mut history = clean();
    // 13 timed out for its producer but was written: it must be copied. 14 failed and was not.
    let mut written = send(1, 0, 13, 0, 3);
    written.outcome = SendOutcome::Failed { error: "timed out".into() };
    let mut never_written = send(1, 1, 14, 0, 4);
    never_written.outcome = SendOutcome::Unknown;
    history.sends.extend([written, never_written]);
    history.input.records.push(record(u16::MAX, 0, 3, 13));
    assert_eq!(
        check_txn(&history),
        vec![TxnAnomaly::Lost { value: 13, input: (0, 3), acked_ms: None, evidence: None }]
    );
}

#[test]
fn an_input_producer_killed_mid_send_leaves_unanswered_values_that_may_be_absent_or_copied_once() {
    let mut history = clean();
    // Producer 1 was killed with 13 and 14 in flight: 13 reached the input (and was copied once), 14
    // did not. Neither was answered; neither is an anomaly.
    let mut in_flight = [send(1, 0, 13, 0, 3), send(1, 1, 14, 0, 4)];
    for send in &mut in_flight {
        send.outcome = SendOutcome::Unknown;
    }
    history.sends.extend(in_flight);
    history.input.records.push(record(u16::MAX, 0, 3, 13));
    history.output.records.push(record(u16::MAX, 0, 7, 13));
    history.output.read_to[0] = 8;
    assert_eq!(check_txn(&history), vec![]);
    // Copied twice, it is a duplicate, answered or not.
    history.output.records.push(record(u16::MAX, 0, 8, 13));
    history.output.read_to[0] = 9;
    assert_eq!(classes(&history), vec!["duplicate"]);
}

#[test]
fn an_input_value_missing_from_the_output_is_lost() {
    let mut history = clean();
    history.output.records.retain(|record| record.value != 12);
    history.polls.retain(|poll| poll.value != 12);
    assert_eq!(
        check_txn(&history),
        vec![TxnAnomaly::Lost { value: 12, input: (0, 2), acked_ms: Some(4), evidence: None }]
    );
}

#[test]
fn values_on_a_partition_the_broker_lost_are_lost_with_evidence_partition_gone() {
    let gone = Some(LostEvidence::PartitionGone { partitions_at_final_read: 1 });
    // The input's partition 1 is gone at the final read: 20, acknowledged there, is lost input.
    let mut history = clean();
    history.input.records.retain(|record| record.partition == 0);
    history.input.read_to[1] = 0;
    history.input.partitions_found = Some(1);
    let lost_input = TxnAnomaly::LostInput { value: 20, partition: 1, offset: 0, acked_ms: 2, evidence: gone.clone() };
    assert_eq!(check_txn(&history), vec![lost_input.clone()]);
    let json = serde_json::to_value(&lost_input).expect("json");
    assert_eq!((&json["class"], &json["evidence"]), (&"lost-input".into(), &"partition-gone".into()), "{json}");
    assert_eq!(json["partitions_at_final_read"], 1, "{json}");
    // The output's partition 1 is gone: 20, committed there, is lost, and the live read of it there
    // is no aborted read (nothing is known of that partition any more).
    let mut history = clean();
    history.output.records.retain(|record| record.partition == 0);
    history.output.read_to[1] = 0;
    history.output.partitions_found = Some(1);
    let lost = TxnAnomaly::Lost { value: 20, input: (1, 0), acked_ms: Some(2), evidence: gone };
    assert_eq!(check_txn(&history), vec![lost]);
}

#[test]
fn an_acknowledged_value_missing_from_the_input_is_lost_input_not_lost() {
    let mut history = clean();
    history.input.records.retain(|record| record.value != 12);
    history.output.records.retain(|record| record.value != 12);
    history.polls.retain(|poll| poll.value != 12);
    assert_eq!(
        check_txn(&history),
        vec![TxnAnomaly::LostInput { value: 12, partition: 0, offset: 2, acked_ms: 4, evidence: None }]
    );
}

#[test]
fn a_value_committed_twice_is_a_duplicate_with_its_places() {
    let mut history = clean();
    // A zombie's write of 11 became visible after its successor had copied 11.
    history.output.records.push(record(u16::MAX, 0, 7, 11));
    history.output.read_to[0] = 9;
    assert_eq!(
        check_txn(&history),
        vec![TxnAnomaly::Duplicate { value: 11, output: vec![(0, 4), (0, 7)], input: vec![(0, 1)] }]
    );
}

/// A value its producer stored twice in the input (a re-send under a bumped epoch) and the copier
/// copied twice is the input's duplicate: no copier anomaly, no reordering. A third copy is one.
#[test]
fn a_value_the_input_holds_twice_may_be_copied_twice_but_not_more() {
    let mut history = clean();
    history.input.records.push(record(u16::MAX, 0, 3, 11));
    history.input.read_to[0] = 4;
    history.output.records.push(record(u16::MAX, 0, 7, 11));
    history.output.read_to[0] = 8;
    assert_eq!(duplicates(&history), vec![], "copied as often as the input holds it");
    assert_eq!(reordered(&history), vec![], "placed at its first input occurrence");
    history.output.records.push(record(u16::MAX, 0, 8, 11));
    history.output.read_to[0] = 9;
    assert_eq!(
        duplicates(&history),
        vec![TxnAnomaly::Duplicate { value: 11, output: vec![(0, 4), (0, 7), (0, 8)], input: vec![(0, 1), (0, 3)] }]
    );
}

#[test]
fn a_value_nobody_sent_is_unexpected() {
    let mut history = clean();
    history.output.records.push(record(u16::MAX, 1, 2, 99));
    assert_eq!(check_txn(&history), vec![TxnAnomaly::Unexpected { value: 99, partition: 1, offset: 2 }]);
}

#[test]
fn a_committed_read_of_an_aborted_record_is_g1a() {
    let mut history = clean();
    let mut aborted = record(COMMITTED_CONSUMER, 0, 2, 11);
    aborted.time_ms = 42;
    history.polls.insert(1, aborted);
    // Past the end of the final read: not judged.
    history.polls.push(record(COMMITTED_CONSUMER, 1, 5, 20));
    assert_eq!(
        check_txn(&history),
        vec![TxnAnomaly::AbortedRead {
            consumer: "output-read-committed".into(),
            partition: 0,
            offset: 2,
            value: 11,
            time_ms: 42,
            committed_value: None,
            committed_places: vec![(0, 4)],
        }]
    );
    assert_eq!(classes(&history), vec!["aborted-read"]);
}

#[test]
fn a_committed_read_before_its_transaction_asked_to_commit_is_a_precommitted_read() {
    let mut history = clean();
    // The transaction that wrote 11 and 12 (offsets 4 and 5, polled at 104 and 105 ms) asked to commit
    // only at 200 ms.
    history.transactions[2].commit_unix_ms = Some(WALL_CLOCK_START_MS + 200);
    let anomalies = check_txn(&history);
    assert_eq!(
        anomalies[0],
        TxnAnomaly::PrecommittedRead {
            consumer: "output-read-committed".into(),
            partition: 0,
            offset: 4,
            value: 11,
            time_ms: 104,
            commit_ms: 200,
            early_ms: 96,
            copier: 0,
            transaction: 2,
            producer: 0,
            outcome: Some("committed".into()),
        }
    );
    assert_eq!(classes(&history), vec!["precommitted-read", "precommitted-read"], "11 and 12; not 10 nor 20");
}

#[test]
fn a_committed_read_after_its_transaction_asked_to_commit_is_no_precommitted_read() {
    let mut history = clean();
    // Asked at 100 ms, read at 104 and 105 ms: the commit may have completed in between.
    history.transactions[2].commit_unix_ms = Some(WALL_CLOCK_START_MS + 100);
    assert_eq!(check_txn(&history), vec![]);
    // Untraced transactions are not judged, however late.
    history.transactions.clear();
    assert_eq!(check_txn(&history), vec![]);
}

#[test]
fn a_precommitted_read_must_come_more_than_the_tolerance_before_the_commit_was_asked_for() {
    let mut history = clean();
    // 11 polled at 104 ms, 12 at 105; asked to commit at 125 ms: 21 ms and exactly 20 ms early.
    history.transactions[2].commit_unix_ms = Some(WALL_CLOCK_START_MS + 104 + PRECOMMIT_TOLERANCE_MS + 1);
    let early: Vec<Value> = check_txn(&history)
        .into_iter()
        .map(|anomaly| match anomaly {
            TxnAnomaly::PrecommittedRead { value, early_ms, .. } => {
                assert!(early_ms > PRECOMMIT_TOLERANCE_MS, "{early_ms}");
                value
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(early, vec![11], "12, exactly at the tolerance, is not reported");
    // A wall clock that moved during the run widens the tolerance by as much.
    history.wall_clock_drift_ms = 1;
    assert_eq!(check_txn(&history), vec![]);
}

#[test]
fn a_read_of_an_aborted_record_is_an_aborted_read_only_and_the_earliest_commit_request_is_the_writers() {
    let mut history = clean();
    history.transactions[2].commit_unix_ms = Some(WALL_CLOCK_START_MS + 200);
    // The aborted 11 at offset 2, read at 42 ms: its transaction never asked to commit, and the
    // committed output holds nothing there: aborted-read, and not a precommitted read as well.
    let mut aborted = record(COMMITTED_CONSUMER, 0, 2, 11);
    aborted.time_ms = 42;
    history.polls.insert(1, aborted);
    assert_eq!(classes(&history), vec!["aborted-read", "precommitted-read", "precommitted-read"]);
    // A zombie that copied 11 too and asked to commit it at 90 ms may have written it for all the
    // checker knows: 11, read at 104 ms, is then not judged early.
    history.transactions.push(traced(1, 0, (Some(90), None), "failed", vec![(0, 1, 1)]));
    let anomalies = check_txn(&history);
    assert!(matches!(anomalies[1], TxnAnomaly::PrecommittedRead { value: 12, .. }), "{anomalies:?}");
    assert_eq!(classes(&history), vec!["aborted-read", "precommitted-read"]);
}

#[test]
fn output_out_of_input_order_or_partition_is_reordered() {
    let mut history = clean();
    // 12 committed before 11 in partition 0.
    for record in &mut history.output.records {
        record.offset = match record.value {
            11 => 5,
            12 => 4,
            _ => record.offset,
        };
    }
    history.polls.retain(|poll| poll.partition != 0 || poll.value == 10);
    assert_eq!(
        check_txn(&history),
        vec![TxnAnomaly::Reordered {
            value: 11,
            output: (0, 5),
            input: (0, 1),
            after_value: 12,
            after_output: (0, 4),
            after_input: (0, 2),
        }]
    );
    let mut history = clean();
    history.output.records.retain(|record| record.value != 20);
    history.output.records.push(record(u16::MAX, 0, 6, 20));
    history.polls.retain(|poll| poll.value != 20);
    assert_eq!(check_txn(&history), vec![TxnAnomaly::WrongPartition { value: 20, output: (0, 6), input: (1, 0) }]);
    assert_eq!(classes(&history), vec!["reordered"]);
}

#[test]
fn a_live_consumer_going_back_is_a_nonmonotonic_poll() {
    let mut history = clean();
    history.polls.push(record(UNCOMMITTED_CONSUMER, 0, 2, 11));
    assert_eq!(
        check_txn(&history),
        vec![TxnAnomaly::NonMonotonicPoll {
            consumer: "output-read-uncommitted".into(),
            partition: 0,
            previous_offset: 5,
            offset: 2,
            time_ms: 102,
        }]
    );
}

#[test]
fn two_copiers_alive_after_the_zombie_was_resumed_is_an_unfenced_zombie() {
    let mut history = clean();
    history.copiers = vec![copier(0, Some(1_000), Some(3_000)), copier(1, None, None)];
    history.concurrent_copiers = vec![1];
    assert_eq!(check_txn(&history), vec![], "one copier left: the zombie exited");
    history.concurrent_copiers = vec![0, 1];
    assert_eq!(
        check_txn(&history),
        vec![TxnAnomaly::UnfencedZombie {
            copiers: vec![0, 1],
            paused_ms: vec![Some(1_000), None],
            resumed_ms: vec![Some(3_000), None],
        }]
    );
}

#[test]
fn a_record_the_run_did_not_write_is_unparseable() {
    let mut history = clean();
    history.unparseable.push(Unparseable { topic: "output", partition: 1, offset: 9 });
    assert_eq!(classes(&history), vec!["unparseable-value"]);
}

#[test]
fn every_class_serializes_under_its_name_in_the_class_list() {
    let anomalies = [
        TxnAnomaly::Lost { value: 1, input: (0, 0), acked_ms: None, evidence: None },
        TxnAnomaly::LostInput { value: 1, partition: 0, offset: 0, acked_ms: 0, evidence: None },
        TxnAnomaly::Duplicate { value: 1, output: vec![], input: vec![] },
        TxnAnomaly::Unexpected { value: 1, partition: 0, offset: 0 },
        TxnAnomaly::AbortedRead {
            consumer: String::new(),
            partition: 0,
            offset: 0,
            value: 1,
            time_ms: 0,
            committed_value: None,
            committed_places: vec![],
        },
        TxnAnomaly::PrecommittedRead {
            consumer: String::new(),
            partition: 0,
            offset: 0,
            value: 1,
            time_ms: 0,
            commit_ms: 30,
            early_ms: 30,
            copier: 0,
            transaction: 0,
            producer: 0,
            outcome: None,
        },
        TxnAnomaly::Reordered {
            value: 1,
            output: (0, 0),
            input: (0, 0),
            after_value: 2,
            after_output: (0, 0),
            after_input: (0, 0),
        },
        TxnAnomaly::WrongPartition { value: 1, output: (0, 0), input: (1, 0) },
        TxnAnomaly::NonMonotonicPoll {
            consumer: String::new(),
            partition: 0,
            previous_offset: 0,
            offset: 0,
            time_ms: 0,
        },
        TxnAnomaly::UnfencedZombie { copiers: vec![], paused_ms: vec![], resumed_ms: vec![] },
        TxnAnomaly::UnparseableValue { topic: "input", partition: 0, offset: 0 },
    ];
    for anomaly in anomalies {
        assert!(TXN_CLASSES.contains(&anomaly.class()), "{anomaly:?}");
        let json = serde_json::to_value(&anomaly).expect("serialize");
        assert_eq!(json["class"], anomaly.class(), "the JSON names the class as the counts do");
    }
}
