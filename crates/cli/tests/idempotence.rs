//! The idempotent producer end to end: a retried batch is answered with its original offset (also
//! after kill -9), zombies are fenced, and librdkafka with enable.idempotence=true writes every record
//! exactly once, in order, through lost acknowledgements, connection resets and a broker kill -9.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{once, BrokerProcess, Deliveries};

/// Sends one batch and returns (error code, base offset).
fn produce(client: &mut AdminClient, topic: &str, batch: Vec<u8>) -> (i16, i64) {
    let data = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.into()))]);
    let response = client
        .call(&ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![data]), 9)
        .expect("produce");
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn batch(producer_id: i64, epoch: i16, first_sequence: i32, records: u32) -> Vec<u8> {
    once_log::testing::make_batch_with(producer_id, epoch, first_sequence, 0, records, 16, 1_700_000_000_000)
}

#[test]
fn retries_are_answered_with_the_original_offset_even_after_kill_9() {
    let mut broker = BrokerProcess::start(&[]);
    once(&["topic", "create", "pay", "--partitions", "1", "--bootstrap", &broker.bootstrap()]);
    let mut client = AdminClient::connect(&broker.bootstrap()).expect("connect");
    let init = client
        .call(&InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000), 4)
        .expect("InitProducerId");
    assert_eq!(init.error_code, 0);
    let (producer_id, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(producer_id >= 0 && epoch == 0);
    assert_eq!(produce(&mut client, "pay", batch(producer_id, 0, 0, 3)), (0, 0));
    assert_eq!(produce(&mut client, "pay", batch(producer_id, 0, 3, 2)), (0, 3));
    assert_eq!(
        produce(&mut client, "pay", batch(producer_id, 0, 0, 3)),
        (0, 0),
        "a retry gets NONE and the original offset"
    );

    broker.kill9();
    broker.restart();
    let mut client = AdminClient::connect(&broker.bootstrap()).expect("reconnect");
    assert_eq!(
        produce(&mut client, "pay", batch(producer_id, 0, 3, 2)),
        (0, 3),
        "after kill -9 the retry is still recognised"
    );
    assert_eq!(produce(&mut client, "pay", batch(producer_id, 0, 5, 1)), (0, 5), "and the producer continues");
    assert_eq!(produce(&mut client, "pay", batch(producer_id, 0, 9, 1)).0, 45, "a gap is OUT_OF_ORDER_SEQUENCE_NUMBER");
    // A second incarnation of the same producer id with a bumped epoch fences the first.
    assert_eq!(produce(&mut client, "pay", batch(producer_id, 1, 0, 1)), (0, 6));
    assert_eq!(
        produce(&mut client, "pay", batch(producer_id, 0, 6, 1)).0,
        47,
        "the old epoch gets INVALID_PRODUCER_EPOCH"
    );
    let second = client
        .call(&InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000), 4)
        .expect("InitProducerId");
    assert!(second.producer_id.0 > producer_id, "producer ids are never reused, also across restarts");
    let described = once(&["topic", "describe", "pay", "--bootstrap", &broker.bootstrap()]);
    assert!(described.contains("high-watermark=7\n"), "seven records, none twice: {described}");
}

/// Sends `records` records per partition with an idempotent producer; returns the acknowledged count.
fn send_idempotently(bootstrap: &str, topic: &str, partitions: i32, records: usize, deliveries: Deliveries) -> usize {
    let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "2")
        // Small batches: many produce requests, so many acknowledgements for the proxy to lose.
        .set("batch.num.messages", "250")
        .set("message.timeout.ms", "120000")
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.ms", "10")
        .set("retry.backoff.ms", "10")
        .create_with_context(deliveries.clone())
        .expect("idempotent producer");
    for number in 0..records {
        for partition in 0..partitions {
            let value = format!("{partition}-{number}");
            let mut record = BaseRecord::with_opaque_to(topic, Box::new(number)).partition(partition).payload(&value);
            loop {
                match producer.send::<(), _>(record) {
                    Ok(()) => break,
                    Err((_, returned)) => {
                        record = returned;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(180)).expect("every record acknowledged");
    let reports = deliveries.0.lock().expect("lock").clone();
    let failed: Vec<_> = reports.iter().filter(|(_, _, outcome)| outcome.is_err()).take(3).collect();
    assert!(failed.is_empty(), "deliveries failed: {failed:?}");
    reports.len()
}

/// Reads every partition from the start and checks each holds `0..records` exactly once, in order.
fn assert_exactly_once_in_order(bootstrap: &str, topic: &str, partitions: i32, records: usize) {
    let consumer: BaseConsumer = once_cli::clients::client_config(bootstrap)
        .set("group.id", "once-tests")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut next: HashMap<i32, usize> = HashMap::new();
    let total = records * partitions as usize;
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < total {
        assert!(Instant::now() < deadline, "read {seen} of {total}");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.expect("consume");
        let expected = next.entry(message.partition()).or_insert(0);
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        assert_eq!(
            value,
            format!("{}-{}", message.partition(), expected),
            "partition {} offset {}: no duplicate, no gap, send order",
            message.partition(),
            message.offset()
        );
        *expected += 1;
        seen += 1;
    }
    // Nothing beyond: the high watermark of each partition is exactly the record count.
    for partition in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks");
        assert_eq!(high, records as i64, "partition {partition} holds no extra records");
    }
}

#[test]
fn idempotent_librdkafka_through_lost_acks_and_resets_writes_exactly_once() {
    let seed = 0x0dd_5eed;
    let (listener, proxy_port) = support::proxy::bind();
    let bootstrap = format!("127.0.0.1:{proxy_port}");
    let broker = BrokerProcess::start(&["--advertised-listener", &bootstrap]);
    let proxy = support::proxy::start(listener, broker.bootstrap(), 40, seed);
    once(&["topic", "create", "lossy", "--partitions", "3", "--bootstrap", &broker.bootstrap()]);
    let records = 34_000;
    let acknowledged = send_idempotently(&bootstrap, "lossy", 3, records, Deliveries::default());
    assert_eq!(acknowledged, records * 3);
    assert!(proxy.dropped.load(Ordering::Relaxed) >= 5, "the proxy really dropped acknowledgements (seed {seed:#x})");
    proxy.faults.store(false, Ordering::Relaxed);
    assert_exactly_once_in_order(&bootstrap, "lossy", 3, records);
}

#[test]
fn idempotent_librdkafka_across_broker_kill_9_writes_exactly_once() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "crashy", "--partitions", "3", "--bootstrap", &bootstrap]);
    let records = 40_000;
    let deliveries = Deliveries::default();
    let sender = {
        let (bootstrap, deliveries) = (bootstrap.clone(), deliveries.clone());
        std::thread::spawn(move || send_idempotently(&bootstrap, "crashy", 3, records, deliveries))
    };
    // Kill once some, but not all, records are acknowledged: the crash lands mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while deliveries.0.lock().expect("lock").len() < records / 4 {
        assert!(Instant::now() < deadline, "the producer made no progress before the kill");
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill9();
    let acknowledged_before_kill = deliveries.0.lock().expect("lock").len();
    assert!(
        acknowledged_before_kill < records * 3,
        "the kill must land mid-stream ({acknowledged_before_kill} acknowledged)"
    );
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    let acknowledged = sender.join().expect("sender");
    assert_eq!(acknowledged, records * 3);
    assert_exactly_once_in_order(&bootstrap, "crashy", 3, records);
}
