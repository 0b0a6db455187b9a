//! kill -9 of the broker while producers run: after a restart every record the client saw acknowledged
//! is at the offset the acknowledgement gave, and new writes are accepted.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use support::{once, BrokerProcess, Deliveries};

const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 4;

fn value_of(producer: usize, number: usize) -> String {
    format!("producer-{producer}-record-{number}")
}

fn read_all(bootstrap: &str, topic: &str) -> HashMap<(i32, i64), Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("group.id", "once-tests")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assign");
        let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30)).expect("watermarks");
        ends.insert(partition, high);
    }
    consumer.assign(&assignment).expect("assign");
    let total: i64 = ends.values().sum();
    let mut found = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (found.len() as i64) < total {
        assert!(Instant::now() < deadline, "read {} of {total} records", found.len());
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.expect("consume");
        found.insert((message.partition(), message.offset()), message.payload().unwrap_or_default().to_vec());
    }
    found
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let topic = "crash";
    once(&["topic", "create", topic, "--partitions", &PARTITIONS.to_string(), "--bootstrap", &bootstrap]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for producer_number in 0..PRODUCERS {
        let bootstrap = bootstrap.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let deliveries = Deliveries::default();
            let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("acks", "all")
                .set("enable.idempotence", "false")
                .set("linger.ms", "1")
                .set("message.timeout.ms", "5000")
                .create_with_context(deliveries.clone())
                .expect("producer");
            let mut number = 0;
            while !stop.load(Ordering::Relaxed) {
                let value = value_of(producer_number, number);
                let record = BaseRecord::with_opaque_to(topic, Box::new(number))
                    .partition((number % PARTITIONS as usize) as i32)
                    .payload(&value);
                match producer.send::<(), _>(record) {
                    Ok(()) => number += 1,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
                if number % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let _ = producer.flush(Duration::from_secs(15));
            let reports = deliveries.0.lock().expect("lock").clone();
            (producer_number, reports)
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill9();
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);

    let mut acknowledged = Vec::new();
    for thread in threads {
        let (producer_number, reports) = thread.join().expect("producer thread");
        for (number, partition, outcome) in reports {
            if let Ok(offset) = outcome {
                acknowledged.push((partition, offset, value_of(producer_number, number)));
            }
        }
    }
    assert!(
        acknowledged.len() > 100,
        "the test must see acknowledged writes before the kill (saw {})",
        acknowledged.len()
    );

    let found = read_all(&bootstrap, topic);
    for (partition, offset, value) in &acknowledged {
        let stored = found
            .get(&(*partition, *offset))
            .unwrap_or_else(|| panic!("acknowledged {value} at {partition}/{offset} is missing"));
        assert_eq!(stored.as_slice(), value.as_bytes(), "acknowledged record at {partition}/{offset}");
    }

    // New writes are accepted after recovery.
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .create_with_context(Deliveries::default())
        .expect("producer");
    for number in 0..100 {
        producer
            .send::<(), _>(BaseRecord::with_opaque_to(topic, Box::new(number)).partition(0).payload("after-restart"))
            .map_err(|(error, _)| error)
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush after restart");
    let reports = producer.context().0.lock().expect("lock").clone();
    assert_eq!(reports.len(), 100);
    assert!(
        reports.iter().all(|(_, _, outcome)| outcome.is_ok()),
        "writes after restart are acknowledged: {reports:?}"
    );
}
