//! kill -9 of the broker, and simulated power loss (unsynced appends thrown away, via the storage's
//! test hook), while producers run: after a restart every record the client saw acknowledged is at
//! the offset the acknowledgement gave, and new writes are accepted.

mod support;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{once, BrokerProcess, Deliveries};

const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 4;

fn value_of(producer: usize, number: usize) -> String {
    format!("producer-{producer}-record-{number}")
}

fn read_all(bootstrap: &str, topic: &str) -> HashMap<(i32, i64), Vec<u8>> {
    let consumer: BaseConsumer = once_cli::clients::client_config(bootstrap)
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

/// Runs `PRODUCERS` producers against `topic` while `crash` runs (it must leave the broker serving
/// again); returns every acknowledged (partition, offset, value).
fn produce_through(bootstrap: &str, topic: &str, crash: impl FnOnce()) -> Vec<(i32, i64, String)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for producer_number in 0..PRODUCERS {
        let bootstrap = bootstrap.to_string();
        let topic = topic.to_string();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let deliveries = Deliveries::default();
            let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(&bootstrap)
                .set("acks", "all")
                .set("enable.idempotence", "false")
                .set("linger.ms", "1")
                .set("message.timeout.ms", "5000")
                .create_with_context(deliveries.clone())
                .expect("producer");
            let mut number = 0;
            while !stop.load(Ordering::Relaxed) {
                let value = value_of(producer_number, number);
                let record = BaseRecord::with_opaque_to(&topic, Box::new(number))
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
    crash();
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
        "the test must see acknowledged writes before the crash (saw {})",
        acknowledged.len()
    );
    acknowledged
}

/// Every acknowledged record is at the offset its acknowledgement gave.
fn check_acknowledged(bootstrap: &str, topic: &str, acknowledged: &[(i32, i64, String)]) {
    let found = read_all(bootstrap, topic);
    for (partition, offset, value) in acknowledged {
        let stored = found
            .get(&(*partition, *offset))
            .unwrap_or_else(|| panic!("acknowledged {value} at {partition}/{offset} is missing"));
        assert_eq!(stored.as_slice(), value.as_bytes(), "acknowledged record at {partition}/{offset}");
    }
}

/// Simulated power loss (the storage's test hook throws away every unsynced append), three times
/// under load. Fails if anything acknowledged was not fsynced first: with `--unsafe-skip-fsync` it
/// does (checked). Recovery checkpoints are written every second (`--recovery-checkpoint-bytes 1`),
/// so the restarts check only what follows them: the records before a checkpoint survive on its word.
#[test]
fn acknowledged_records_survive_power_loss() {
    let mut broker = BrokerProcess::start(&["--recovery-checkpoint-bytes", "1"]);
    let bootstrap = broker.bootstrap();
    let topic = "power";
    once(&["topic", "create", topic, "--partitions", &PARTITIONS.to_string(), "--bootstrap", &bootstrap]);
    assert!(broker.terminate(), "clean stop before the restart with the power-loss hook");
    let manifest = broker.data_dir().join("power-loss.manifest");
    let mut lost_bytes = 0;
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let mut hooked = support::txn::OnceProcess::broker(
            &broker,
            &[("ONCE_TEST_POWER_LOSS_MANIFEST", manifest.to_str().expect("utf-8"))],
        );
        acknowledged.extend(produce_through(&bootstrap, topic, || {
            hooked.signal("USR2");
            let status = hooked.wait(Duration::from_secs(30));
            assert_eq!(status.signal(), Some(9), "round {round}: the hook kills the broker; log:\n{}", hooked.log());
            // The unsynced tails cut off, then zeros again (zeros written ahead, synced, then
            // overwritten by appends that never reached the disk), then cut off again.
            let image = match round % 2 {
                0 => once_check::power_loss::Image::Cut,
                _ => once_check::power_loss::Image::Zeroed,
            };
            let applied = once_check::power_loss::apply(&manifest, image).expect("apply the power loss");
            assert!(applied.files >= 1, "round {round}: the manifest names the synced segments");
            lost_bytes += applied.bytes_lost;
            broker.restart();
        }));
        check_acknowledged(&bootstrap, topic, &acknowledged);
        assert!(broker.terminate(), "clean stop after round {round}");
    }
    // Under this load a sync is nearly always in flight: unsynced bytes really are thrown away.
    assert!(lost_bytes > 0, "three power losses under load lost no unsynced byte at all");
    let log = broker.log();
    let walked = log
        .lines()
        .filter(|line| line.contains("opened log") && line.contains("topics/power/"))
        .filter(|line| line.contains("walked_bytes=") && !line.contains("walked_bytes=0 "))
        .count();
    assert!(walked > 0, "no restart started from a recovery checkpoint; log:\n{log}");
    // Every checkpoint written is true: none is found not to describe its segment.
    assert!(!log.contains("recovery checkpoint does not match"), "a false checkpoint; log:\n{log}");
}

#[test]
fn acknowledged_records_survive_kill_9() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let topic = "crash";
    once(&["topic", "create", topic, "--partitions", &PARTITIONS.to_string(), "--bootstrap", &bootstrap]);
    let acknowledged = produce_through(&bootstrap, topic, || {
        broker.kill9();
        std::thread::sleep(Duration::from_millis(500));
        broker.restart();
    });
    check_acknowledged(&bootstrap, topic, &acknowledged);

    // New writes are accepted after recovery.
    let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(&bootstrap)
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
