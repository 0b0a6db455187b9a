//! Hand-made `dedup-processor` histories: each class found with its evidence, and the resends,
//! failed and unanswered sends a correct processor leaves out of its output left alone.

use super::*;
use crate::dedup_processor::history::TopicRecords;
use crate::history::SendOutcome;

/// Send `index` of producer `producer`: id `id` to `partition`, sent at `sent_ms`.
fn send(producer: u32, index: u64, id: Value, partition: i32, outcome: SendOutcome, sent_ms: TimeMs) -> Send {
    Send { producer, index, value: id, partition, outcome, sent_ms, done_ms: sent_ms + 5 }
}

fn acked(producer: u32, index: u64, id: Value, partition: i32, offset: i64, sent_ms: TimeMs) -> Send {
    send(producer, index, id, partition, SendOutcome::Acked { offset }, sent_ms)
}

/// A record carrying `id` whose payload is send `index` of producer `producer`.
fn record(partition: i32, offset: i64, id: Value, producer: u32, index: u64) -> Record {
    Record { partition, offset, id: Some(id), payload: Some(value_of(producer, index)) }
}

fn read(records: Vec<Record>, read_to: Vec<i64>) -> TopicRecords {
    TopicRecords { records, read_to, complete: true, partitions_found: Some(2) }
}

/// Ids 1 and 3 in partition 1, 2 in partition 0 (ids are partitioned by id). Producer 0 sends
/// 1, 2, 3; producer 1, a fresh process, resends 1 (acknowledged) and 3 (never answered); producer
/// 2 sends 4, which fails and is never written. The processors pass on 1, 2, 3 from producer 0.
fn history() -> ProcessorHistory {
    let sends = vec![
        acked(0, 0, 1, 1, 0, 0),
        acked(0, 1, 2, 0, 0, 1),
        acked(0, 2, 3, 1, 1, 2),
        acked(1, 0, 1, 1, 2, 10),
        send(1, 1, 3, 1, SendOutcome::Unknown, 11),
        send(2, 0, 4, 0, SendOutcome::Failed { error: "timed out".into() }, 20),
    ];
    // The unanswered resend of 3 was written all the same.
    let input = vec![
        record(1, 0, 1, 0, 0),
        record(0, 0, 2, 0, 1),
        record(1, 1, 3, 0, 2),
        record(1, 2, 1, 1, 0),
        record(1, 3, 3, 1, 1),
    ];
    let output = vec![record(1, 0, 1, 0, 0), record(0, 0, 2, 0, 1), record(1, 1, 3, 0, 2)];
    ProcessorHistory {
        partitions: 2,
        sends,
        input: read(input, vec![1, 4]),
        output: read(output, vec![1, 2]),
        ..Default::default()
    }
}

fn of_class<'a>(anomalies: &'a [ProcessorAnomaly], class: &str) -> Vec<&'a ProcessorAnomaly> {
    anomalies.iter().filter(|anomaly| anomaly.class() == class).collect()
}

#[test]
fn each_id_passed_on_once_as_its_first_record_passes_whatever_was_resent_failed_or_unanswered() {
    assert_eq!(check_processor(&history()), vec![]);
}

#[test]
fn an_acknowledged_id_missing_from_the_output_is_lost_with_its_acknowledgements_and_input_place() {
    let mut history = history();
    // Id 2's only record never reached the output.
    history.output.records.retain(|record| record.id != Some(2));
    let anomalies = check_processor(&history);
    assert_eq!(
        anomalies,
        vec![ProcessorAnomaly::Lost {
            id: 2,
            in_input: true,
            input_place: Some((0, 0)),
            acked_ms: Some(6),
            acks: vec![Ack { producer: 0, partition: 0, offset: 0, acked_ms: 6 }],
        }]
    );
    assert_eq!(anomalies[0].class(), "lost");
}

#[test]
fn an_acknowledged_id_the_broker_lost_from_the_input_is_lost_too_and_says_so() {
    let mut history = history();
    history.input.records.retain(|record| record.id != Some(2));
    history.output.records.retain(|record| record.id != Some(2));
    let anomalies = check_processor(&history);
    let [ProcessorAnomaly::Lost { id: 2, in_input: false, input_place: None, acks, .. }] = anomalies.as_slice() else {
        panic!("id 2 lost, not in the input: {anomalies:?}")
    };
    assert_eq!(acks.len(), 1);
}

#[test]
fn an_id_in_the_input_that_was_never_acknowledged_is_owed_to_the_output_all_the_same() {
    let mut history = history();
    // Id 4's failed send was written after all: the processors read it, so it must be passed on.
    history.input.records.push(record(0, 1, 4, 2, 0));
    history.input.read_to[0] = 2;
    let anomalies = check_processor(&history);
    assert_eq!(
        anomalies,
        vec![ProcessorAnomaly::Lost { id: 4, in_input: true, input_place: Some((0, 1)), acked_ms: None, acks: vec![] }]
    );
}

#[test]
fn an_id_passed_on_twice_is_a_duplicate_with_both_records_and_its_sends() {
    let mut history = history();
    // The resend of 1 at input 1/2 passed on too (say, by a processor that restored an old index).
    history.output.records.push(record(1, 2, 1, 1, 0));
    history.output.read_to[1] = 3;
    let anomalies = check_processor(&history);
    assert_eq!(
        anomalies,
        vec![ProcessorAnomaly::Duplicate {
            id: 1,
            records: vec![
                Passed {
                    partition: 1,
                    offset: 0,
                    payload: Some(value_of(0, 0)),
                    producer: Some(0),
                    index: Some(0),
                    sent_ms: Some(0),
                },
                Passed {
                    partition: 1,
                    offset: 2,
                    payload: Some(value_of(1, 0)),
                    producer: Some(1),
                    index: Some(0),
                    sent_ms: Some(10),
                },
            ],
            sends: 2,
            sent_ms: Some(10),
        }]
    );
    assert_eq!(anomalies[0].class(), "duplicate");
}

#[test]
fn output_records_that_are_no_send_of_their_id_are_unexpected() {
    let mut history = history();
    history.output.records.extend([
        // A payload no producer sent.
        Record { partition: 0, offset: 1, id: Some(9), payload: Some(value_of(7, 7)) },
        // Id 4 with the payload of a send of id 2.
        Record { partition: 0, offset: 2, id: Some(4), payload: Some(value_of(0, 1)) },
        // No id header at all.
        Record { partition: 0, offset: 3, id: None, payload: Some(value_of(2, 0)) },
    ]);
    history.output.read_to[0] = 4;
    let unexpected: Vec<ProcessorAnomaly> =
        of_class(&check_processor(&history), "unexpected").into_iter().cloned().collect();
    assert_eq!(
        unexpected,
        vec![
            ProcessorAnomaly::Unexpected {
                partition: 0,
                offset: 1,
                id: Some(9),
                payload: Some(value_of(7, 7)),
                sent_id: None
            },
            ProcessorAnomaly::Unexpected {
                partition: 0,
                offset: 2,
                id: Some(4),
                payload: Some(value_of(0, 1)),
                sent_id: Some(2),
            },
            ProcessorAnomaly::Unexpected {
                partition: 0,
                offset: 3,
                id: None,
                payload: Some(value_of(2, 0)),
                sent_id: Some(4)
            },
        ]
    );
}

#[test]
fn a_later_record_of_an_id_passed_on_in_place_of_its_first_is_not_first() {
    let mut history = history();
    // The processor skipped input 1/0 (say, a rebalance that sought past it) and passed the resend.
    history.output.records[0] = record(1, 0, 1, 1, 0);
    let anomalies = check_processor(&history);
    assert_eq!(
        anomalies,
        vec![ProcessorAnomaly::NotFirst {
            id: 1,
            partition: 1,
            offset: 0,
            payload: value_of(1, 0),
            input_offset: Some(2),
            first_payload: value_of(0, 0),
            first_input_offset: 0,
            sent_ms: 10,
        }]
    );
    assert_eq!(anomalies[0].class(), "not-first");
}

#[test]
fn ids_not_in_the_read_input_are_not_judged_first_or_not() {
    let mut history = history();
    history.output.records[0] = record(1, 0, 1, 1, 0);
    // The input read holds none of id 1's records in partition 1 (another partition's do not count).
    history.input.records.retain(|record| record.id != Some(1));
    history.input.records.push(record(0, 1, 1, 0, 0));
    assert_eq!(of_class(&check_processor(&history), "not-first"), Vec::<&ProcessorAnomaly>::new());
}

#[test]
fn every_class_is_named_and_serialized_with_its_evidence() {
    let anomaly = ProcessorAnomaly::Duplicate { id: 5, records: vec![], sends: 3, sent_ms: Some(42) };
    let json = serde_json::to_value(&anomaly).expect("JSON");
    assert_eq!(json["class"], "duplicate");
    assert_eq!(json["sent_ms"], 42, "the time the HTML lane draws it at");
    assert_eq!(PROCESSOR_CLASSES.len(), 4);
}
