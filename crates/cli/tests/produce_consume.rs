//! librdkafka writes 100k records with keys and headers across 3 partitions with acks=all, under every
//! compression type, and reads them back in order per partition, byte-identical: with librdkafka's
//! default fetch sizes (1 MiB per partition) and, uncompressed, with catch-up sizes (16 MiB per
//! partition, 50 MiB per fetch), whose record sets the broker writes from its read buffers
//! (`once_wire::encode_response_parts`).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{once, BrokerProcess, Deliveries};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 3;

fn key_of(number: usize) -> String {
    format!("key-{number}")
}

fn value_of(number: usize) -> Vec<u8> {
    // Varied sizes and a binary byte or two, so byte-identity means something.
    let mut value = format!("value-{number}-").into_bytes();
    value.extend((0..(number % 200)).map(|index| (index * 7 + number) as u8));
    value
}

fn roundtrip(compression: &str) {
    roundtrip_fetching(compression, &[]);
}

fn roundtrip_fetching(compression: &str, consumer_settings: &[(&str, &str)]) {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let topic = format!("roundtrip-{compression}");
    once(&["topic", "create", &topic, "--partitions", &PARTITIONS.to_string(), "--bootstrap", &bootstrap]);

    let deliveries = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(&bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(deliveries.clone())
        .expect("producer");
    for number in 0..RECORDS {
        let partition = (number % PARTITIONS as usize) as i32;
        let key = key_of(number);
        let value = value_of(number);
        let headers = OwnedHeaders::new()
            .insert(Header { key: "number", value: Some(number.to_string().as_bytes()) })
            .insert(Header { key: "empty", value: None::<&[u8]> });
        let record = BaseRecord::with_opaque_to(&topic, Box::new(number))
            .partition(partition)
            .key(&key)
            .payload(&value)
            .headers(headers);
        producer.send(record).map_err(|(error, _)| error).expect("enqueue");
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let reports = deliveries.0.lock().expect("lock").clone();
    assert_eq!(reports.len(), RECORDS, "every record gets a delivery report");
    let failures: Vec<_> = reports.iter().filter(|(_, _, outcome)| outcome.is_err()).take(5).collect();
    assert!(failures.is_empty(), "deliveries failed: {failures:?}");

    let mut config = once_cli::clients::client_config(&bootstrap);
    config.set("enable.auto.commit", "false").set("group.id", "once-tests");
    for (key, value) in consumer_settings {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(&topic, partition, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut next_per_partition: HashMap<i32, usize> =
        (0..PARTITIONS).map(|partition| (partition, partition as usize)).collect();
    let mut expected_offset: HashMap<i32, i64> = HashMap::new();
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received < RECORDS {
        assert!(Instant::now() < deadline, "only {received} of {RECORDS} records read back");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.expect("consume");
        let partition = message.partition();
        let number = *next_per_partition.get(&partition).expect("known partition");
        assert_eq!(message.key(), Some(key_of(number).as_bytes()), "key of record {number} in partition {partition}");
        assert_eq!(message.payload(), Some(value_of(number).as_slice()), "value of record {number}");
        let headers = message.headers().expect("headers present");
        assert_eq!(headers.count(), 2, "two headers");
        assert_eq!(headers.get(0).value, Some(number.to_string().as_bytes()), "header value of record {number}");
        assert_eq!(headers.get(1).key, "empty");
        assert_eq!(headers.get(1).value, None, "null header value survives");
        let offset = expected_offset.entry(partition).or_insert(0);
        assert_eq!(message.offset(), *offset, "offsets are dense and in order in partition {partition}");
        *offset += 1;
        next_per_partition.insert(partition, number + PARTITIONS as usize);
        received += 1;
    }
    // The acknowledged offsets are where the records were found.
    for (number, partition, outcome) in reports {
        let offset = outcome.expect("delivered");
        assert_eq!(
            offset,
            (number / PARTITIONS as usize) as i64,
            "record {number} acknowledged at the offset it was read from in partition {partition}"
        );
    }
}

#[test]
fn roundtrip_uncompressed() {
    roundtrip("none");
}

#[test]
fn roundtrip_uncompressed_with_catch_up_fetch_sizes() {
    roundtrip_fetching(
        "none",
        &[
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "16777216"),
            ("receive.message.max.bytes", "53000000"),
        ],
    );
}

#[test]
fn roundtrip_gzip() {
    roundtrip("gzip");
}

#[test]
fn roundtrip_snappy() {
    roundtrip("snappy");
}

#[test]
fn roundtrip_lz4() {
    roundtrip("lz4");
}

#[test]
fn roundtrip_zstd() {
    roundtrip("zstd");
}
