//! The benchmark's own wire producer (`once_bench::wire_producer`) against a real broker: records
//! produced idempotently with several Produce requests in flight come back from the log every one
//! once, in the order sent, with the producer id and sequences the producer numbered them with.

mod support;

use std::time::{Duration, Instant};

use once_bench::wire_producer::{WireProducer, IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{once, BrokerProcess};

const RECORDS: usize = 5_000;

/// Batch sizes cycle through 1..=BATCH_RECORDS_MAX, so batches of one and of many records share a
/// pipeline.
const BATCH_RECORDS_MAX: usize = 7;

fn value_of(number: usize) -> String {
    format!("record-{number:06}")
}

/// Every record of partition 0 of `topic`, in offset order.
fn read_all(bootstrap: &str, topic: &str, expected: usize) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = once_cli::clients::client_config(bootstrap)
        .set("enable.auto.commit", "false")
        .set("group.id", "once-tests-wire-producer")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).expect("assign");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = Vec::with_capacity(expected);
    while records.len() < expected {
        assert!(Instant::now() < deadline, "read {} of {expected} records", records.len());
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.expect("consume");
        let value = String::from_utf8(message.payload().unwrap_or_default().to_vec()).expect("utf-8 value");
        records.push((message.offset(), value));
    }
    // Nothing beyond what was produced.
    assert!(consumer.poll(Duration::from_millis(500)).is_none(), "no record after the {expected} produced");
    records
}

#[test]
fn idempotent_records_with_five_requests_in_flight_are_stored_once_in_order() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "wire", "--partitions", "1", "--bootstrap", &bootstrap]);
    let mut producer =
        WireProducer::connect(&bootstrap, "wire", 0, true, IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX).expect("connect");
    let identity = producer.identity().expect("an idempotent producer has a producer id");
    assert!(identity.producer_id >= 0, "InitProducerId assigned a producer id");
    assert_eq!(identity.next_sequence, 0, "sequences start at 0");

    let values: Vec<String> = (0..RECORDS).map(value_of).collect();
    let (mut sent, mut acknowledged, mut batch) = (0, 0, 0);
    let mut most_in_flight = 0;
    while acknowledged < RECORDS {
        while producer.can_send() && sent < RECORDS {
            let count = (batch % BATCH_RECORDS_MAX + 1).min(RECORDS - sent);
            let slices: Vec<&[u8]> = values[sent..sent + count].iter().map(|value| value.as_bytes()).collect();
            producer.send(&slices).expect("send");
            sent += count;
            batch += 1;
            most_in_flight = most_in_flight.max(producer.requests_in_flight());
        }
        let ack = producer.receive().expect("every batch is acknowledged");
        assert_eq!(ack.base_sequence, acknowledged as i32, "answers come in the order of the sequences");
        assert_eq!(ack.base_offset, acknowledged as i64, "one producer on a new topic: offsets follow sequences");
        acknowledged += ack.records;
    }
    assert_eq!(most_in_flight, IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX, "the pipeline was full at times");
    assert_eq!(producer.identity().expect("identity").next_sequence, RECORDS as i32, "one sequence per record");

    let stored = read_all(&bootstrap, "wire", RECORDS);
    for (position, (offset, value)) in stored.iter().enumerate() {
        assert_eq!(*offset, position as i64, "offsets without gaps");
        assert_eq!(value, &value_of(position), "record {position} once, in order");
    }
}

#[test]
fn plain_records_with_many_requests_in_flight_are_stored_in_order() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "plain", "--partitions", "1", "--bootstrap", &bootstrap]);
    let mut producer = WireProducer::connect(&bootstrap, "plain", 0, false, 16).expect("connect");
    assert!(producer.identity().is_none(), "a plain producer has no producer id");
    let records = 1_000;
    let values: Vec<String> = (0..records).map(value_of).collect();
    let (mut sent, mut acknowledged) = (0, 0);
    while acknowledged < records {
        while producer.can_send() && sent < records {
            producer.send(&[values[sent].as_bytes()]).expect("send");
            sent += 1;
        }
        let ack = producer.receive().expect("acknowledged");
        assert_eq!((ack.base_offset, ack.base_sequence), (acknowledged as i64, -1), "in order, no sequence");
        acknowledged += ack.records;
    }
    let stored = read_all(&bootstrap, "plain", records);
    assert!(stored.iter().enumerate().all(|(position, (_, value))| value == &value_of(position)), "in order");
}

#[test]
fn an_idempotent_producer_may_not_have_more_than_five_requests_in_flight() {
    let error = WireProducer::connect("127.0.0.1:1", "any", 0, true, IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX + 1)
        .err()
        .expect("refused before connecting");
    assert!(error.to_string().contains("at most 5"), "{error}");
}
