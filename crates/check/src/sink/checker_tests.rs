//! The sink checker on hand-made histories: a clean run passes, and each anomaly class is found,
//! with its evidence, in a history built to contain it — among them the two ways an at-least-once
//! sink goes wrong (a batch applied twice; positions that are the group's, not the database's).

use super::*;
use crate::history::{Poll, Send, SendOutcome};
use crate::txn::history::TopicRead;

fn send(value: Value, partition: i32, offset: i64) -> Send {
    let outcome = SendOutcome::Acked { offset };
    Send { producer: 0, index: value, value, partition, outcome, sent_ms: value, done_ms: value + 1 }
}

fn input(records: &[(i32, i64, Value)], read_to: Vec<i64>) -> TopicRead {
    let records = records
        .iter()
        .map(|&(partition, offset, value)| Poll { consumer: u16::MAX, epoch: 0, partition, offset, value, time_ms: 0 })
        .collect();
    TopicRead { records, read_to, complete: true, partitions_found: None }
}

fn effect(id: &str, partition: i32, offset: i64, sink: &str) -> Effect {
    Effect { id: Some(id.to_string()), partition, offset, sink: sink.to_string() }
}

/// Ids 10, 11, 12 at offsets 0–2 of partition 0 and 20, 21 at offsets 0–1 of partition 1, each
/// applied once (partition 0 by sink 0, then, after a rebalance, its last record by sink 2), and
/// the stored positions at the end of each partition.
fn clean() -> SinkHistory {
    let records = [(0, 0, 10), (0, 1, 11), (0, 2, 12), (1, 0, 20), (1, 1, 21)];
    SinkHistory {
        partitions: 2,
        sends: records.iter().map(|&(partition, offset, value)| send(value, partition, offset)).collect(),
        input: input(&records, vec![3, 2]),
        effects: vec![
            effect("10", 0, 0, "0"),
            effect("20", 1, 0, "1"),
            effect("11", 0, 1, "0"),
            effect("21", 1, 1, "1"),
            effect("12", 0, 2, "2"),
        ],
        positions: vec![Some(3), Some(2)],
        ..SinkHistory::default()
    }
}

fn classes(anomalies: &[SinkAnomaly]) -> Vec<&'static str> {
    anomalies.iter().map(SinkAnomaly::class).collect()
}

#[test]
fn a_clean_history_has_no_anomaly() {
    assert_eq!(check_sink(&clean()), vec![]);
}

#[test]
fn an_id_the_input_holds_twice_may_have_two_effects() {
    // librdkafka's idempotent producer may store a message twice (a re-send under a bumped epoch):
    // two records, so two effects, one per record.
    let mut history = clean();
    history.input = input(&[(0, 0, 10), (0, 1, 11), (0, 2, 12), (0, 3, 11), (1, 0, 20), (1, 1, 21)], vec![4, 2]);
    history.effects.push(effect("11", 0, 3, "2"));
    history.positions[0] = Some(4);
    assert_eq!(check_sink(&history), vec![]);
}

#[test]
fn records_past_the_stored_position_without_effects_are_lost_effects() {
    // A sink that stopped early: the position says "up to offset 1", and 11 and 12 never applied.
    let mut history = clean();
    history.effects.retain(|effect| !matches!(effect.id.as_deref(), Some("11" | "12")));
    history.positions[0] = Some(1);
    let anomalies = check_sink(&history);
    assert_eq!(classes(&anomalies), vec!["lost-effect", "lost-effect"], "{anomalies:?}");
    assert_eq!(
        anomalies[0],
        SinkAnomaly::LostEffect { id: 11, partition: 0, offset: 1, acked_ms: Some(12), in_input: true }
    );
}

#[test]
fn an_acknowledged_record_the_broker_lost_is_a_lost_effect_with_its_evidence() {
    let mut history = clean();
    // Acknowledged at offset 2 of partition 1, which the final read reached, and not there.
    history.sends.push(send(22, 1, 2));
    history.input.read_to[1] = 3;
    history.positions[1] = Some(3);
    let anomalies = check_sink(&history);
    assert_eq!(
        anomalies,
        vec![SinkAnomaly::LostEffect { id: 22, partition: 1, offset: 2, acked_ms: Some(23), in_input: false }]
    );
    // Past where the final read got to, it is not judged.
    history.input.read_to[1] = 2;
    history.positions[1] = Some(2);
    assert_eq!(check_sink(&history), vec![]);
}

#[test]
fn a_batch_applied_twice_by_a_zombie_and_its_successor_is_a_duplicate_effect() {
    // At least once: sink 0 applied 11 and 12, was paused before it committed the group offsets,
    // and sink 1, the partition's new owner, applied them again from the committed offset.
    let mut history = clean();
    history.effects.push(effect("11", 0, 1, "1"));
    history.effects.push(effect("12", 0, 2, "1"));
    let anomalies = check_sink(&history);
    assert_eq!(classes(&anomalies), vec!["duplicate-effect", "duplicate-effect"], "{anomalies:?}");
    let SinkAnomaly::DuplicateEffect { id, effects, input } = &anomalies[0] else { panic!("{anomalies:?}") };
    assert_eq!(id, "11");
    let sinks: Vec<&str> = effects.iter().map(|place| place.sink.as_str()).collect();
    assert_eq!(sinks, vec!["0", "1"], "the evidence names both sinks");
    assert_eq!(input, &vec![(0, 1)]);
}

#[test]
fn effects_at_or_above_the_stored_position_are_a_position_mismatch() {
    // The effects of offsets 1 and 2 committed without their position (or the position was moved
    // back): the next sink would apply them again.
    let mut history = clean();
    history.positions[0] = Some(1);
    let anomalies = check_sink(&history);
    assert_eq!(
        anomalies,
        vec![SinkAnomaly::PositionMismatch {
            partition: 0,
            stored_position: Some(1),
            log_end: Some(3),
            applied_at_or_above: 2,
            applied_offsets: vec![1, 2],
            unapplied_below: 0,
            unapplied_offsets: vec![],
        }]
    );
}

#[test]
fn records_below_the_stored_position_without_an_effect_are_a_position_mismatch_and_lost() {
    // The position moved past offset 1 without its effect (committed before the effects, say).
    let mut history = clean();
    history.effects.retain(|effect| effect.id.as_deref() != Some("11"));
    let anomalies = check_sink(&history);
    assert_eq!(classes(&anomalies), vec!["lost-effect", "position-mismatch"], "{anomalies:?}");
    let SinkAnomaly::PositionMismatch { unapplied_below, unapplied_offsets, applied_at_or_above, .. } = &anomalies[1]
    else {
        panic!("{anomalies:?}")
    };
    assert_eq!((*unapplied_below, unapplied_offsets.clone(), *applied_at_or_above), (1, vec![1], 0));
}

#[test]
fn effects_without_any_stored_position_are_a_position_mismatch_per_partition() {
    // An at-least-once sink keeps its positions in the group, not in the database: no row, so the
    // database says nothing was applied while both partitions hold effects.
    let mut history = clean();
    history.positions = vec![None, None];
    let anomalies = check_sink(&history);
    assert_eq!(classes(&anomalies), vec!["position-mismatch", "position-mismatch"], "{anomalies:?}");
    let SinkAnomaly::PositionMismatch { stored_position, applied_at_or_above, .. } = &anomalies[1] else {
        panic!("{anomalies:?}")
    };
    assert_eq!((*stored_position, *applied_at_or_above), (None, 2));
    // A partition with neither records nor a row is fine.
    history.effects.clear();
    history.input = input(&[], vec![0, 0]);
    history.sends.clear();
    assert_eq!(check_sink(&history), vec![]);
}

#[test]
fn a_position_past_the_end_of_the_partition_is_a_position_mismatch() {
    let mut history = clean();
    history.positions[1] = Some(5);
    let anomalies = check_sink(&history);
    assert_eq!(classes(&anomalies), vec!["position-mismatch"], "{anomalies:?}");
    let SinkAnomaly::PositionMismatch { partition, log_end, applied_at_or_above, unapplied_below, .. } = &anomalies[0]
    else {
        panic!("{anomalies:?}")
    };
    assert_eq!((*partition, *log_end, *applied_at_or_above, *unapplied_below), (1, Some(2), 0, 0));
    // Without a complete final read the end is unknown and not judged.
    history.input.complete = false;
    assert_eq!(check_sink(&history), vec![]);
}

#[test]
fn an_effect_of_no_record_or_at_another_records_place_is_unexpected() {
    let mut history = clean();
    history.effects.push(effect("999", 1, 1, "0"));
    history.effects.push(Effect { id: None, partition: 1, offset: 0, sink: "2".into() });
    let anomalies = check_sink(&history);
    // Both sit below partition 1's position and at places that have their own effects: only
    // `unexpected-effect`, and the wrong one says which id the input holds there.
    assert_eq!(classes(&anomalies), vec!["unexpected-effect", "unexpected-effect"], "{anomalies:?}");
    assert_eq!(
        anomalies[0],
        SinkAnomaly::UnexpectedEffect {
            id: Some("999".into()),
            partition: 1,
            offset: 1,
            sink: "0".into(),
            input_id: Some(21)
        }
    );
    assert_eq!(
        anomalies[1],
        SinkAnomaly::UnexpectedEffect { id: None, partition: 1, offset: 0, sink: "2".into(), input_id: Some(20) }
    );
}

#[test]
fn a_sent_id_bound_at_the_wrong_place_is_unexpected() {
    // The effect of 12 written with offset 1 (11's place) as well as its own.
    let mut history = clean();
    history.effects.push(effect("12", 0, 1, "2"));
    let anomalies = check_sink(&history);
    assert_eq!(classes(&anomalies), vec!["duplicate-effect", "unexpected-effect"], "{anomalies:?}");
    let SinkAnomaly::UnexpectedEffect { input_id, .. } = &anomalies[1] else { panic!("{anomalies:?}") };
    assert_eq!(*input_id, Some(11));
}
