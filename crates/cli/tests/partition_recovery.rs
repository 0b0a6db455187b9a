//! Recovery of a partition's producer state against a real `once serve`: a producer-state snapshot
//! that the recovered log no longer reaches (the segment cut on disk between two runs, as a lying
//! disk, a corrupt tail or a restored backup leaves it) must not come back after a later kill -9 and
//! hide an open transaction from read_committed consumers.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use support::txn::{end_offsets, Isolation};
use support::{once, BrokerProcess, Deliveries};

const TOPIC: &str = "recovery";
const TRANSACTIONAL_ID: &str = "recovery-txn";

type Client = ThreadedProducer<Deliveries>;

/// Producer settings every client of these tests shares: one record per batch (each send is flushed
/// before the next), and no re-bootstrap after the broker restarts (librdkafka >= 2.10 otherwise
/// decommissions the only broker it knows: librdkafka issues 5456, 5511).
fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("metadata.recovery.strategy", "none")
        .set("linger.ms", "0")
        .set("acks", "all");
    config
}

fn create(config: &ClientConfig) -> Client {
    config.create_with_context(Deliveries::default()).expect("producer")
}

/// Sends `value` to partition 0 and waits for its acknowledgement: returns its offset.
fn send_one(producer: &Client, value: &str) -> i64 {
    let number = producer.context().0.lock().expect("deliveries").len();
    producer
        .send::<(), _>(BaseRecord::with_opaque_to(TOPIC, Box::new(number)).partition(0).payload(value))
        .map_err(|(error, _)| error)
        .expect("queue the record");
    producer.flush(Duration::from_secs(30)).expect("the record is acknowledged");
    let deliveries = producer.context().0.lock().expect("deliveries");
    match deliveries.last() {
        Some((delivered, 0, Ok(offset))) if *delivered == number => *offset,
        other => panic!("{value}: no acknowledgement but {other:?}"),
    }
}

/// Every value a read_committed consumer reads from the start to the end (the last stable offset).
fn read_committed(bootstrap: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("metadata.recovery.strategy", "none")
        .set("group.id", "partition-recovery-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(TOPIC, 0, Offset::Beginning).expect("assign");
    consumer.assign(&assignment).expect("assign");
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "not read to the end; read so far: {values:?}");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                values.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string())
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return values,
            Some(Err(_)) | None => {}
        }
    }
}

fn partition_dir(broker: &BrokerProcess) -> PathBuf {
    broker.data_dir().join("topics").join(TOPIC).join("0")
}

/// Cuts the first segment back to its first `batches` batches and removes the clean-shutdown marker.
fn cut_segment(dir: &Path, batches: usize) {
    let path = dir.join("00000000000000000000.log");
    let bytes = std::fs::read(&path).expect("read the segment");
    let mut length = 0;
    for _ in 0..batches {
        length += once_log::BatchHeader::parse(&bytes[length..]).expect("a whole batch").total_len();
    }
    assert!(length < bytes.len(), "the cut removes batches");
    std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(length as u64).expect("cut");
    std::fs::remove_file(dir.join("clean-shutdown")).expect("the clean stop left its marker");
}

/// The reproduction of issue 13, item 2: offsets 0..9 from an idempotent producer, a clean stop
/// (producer-state snapshot at 10), the segment cut back to 4 batches; a transaction writes offsets
/// 4..11 and stays open; kill -9 and restart. read_committed must stop at 4 while the transaction is
/// open, and after its abort must still see none of it.
#[test]
fn a_snapshot_beyond_the_cut_log_does_not_hide_an_open_transaction_after_kill_9() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", TOPIC, "--partitions", "1", "--bootstrap", &bootstrap]);
    {
        let producer = create(producer_config(&bootstrap).set("enable.idempotence", "true"));
        for number in 0..10 {
            assert_eq!(send_one(&producer, &format!("idempotent-{number}")), number);
        }
    }
    assert!(broker.terminate(), "clean stop");
    assert!(partition_dir(&broker).join("producer-state.snapshot").exists(), "the clean stop wrote a snapshot");
    cut_segment(&partition_dir(&broker), 4);

    broker.restart();
    let transactional = create(
        producer_config(&bootstrap).set("transactional.id", TRANSACTIONAL_ID).set("transaction.timeout.ms", "60000"),
    );
    transactional.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    transactional.begin_transaction().expect("begin");
    for number in 0..8 {
        assert_eq!(send_one(&transactional, &format!("uncommitted-{number}")), 4 + number);
    }
    broker.kill9();
    broker.restart();

    let committed = ["idempotent-0", "idempotent-1", "idempotent-2", "idempotent-3"];
    assert_eq!(
        end_offsets(&bootstrap, TOPIC, 1, Isolation::ReadCommitted),
        vec![4],
        "the open transaction starts at 4"
    );
    assert_eq!(end_offsets(&bootstrap, TOPIC, 1, Isolation::ReadUncommitted), vec![12]);
    assert_eq!(read_committed(&bootstrap), committed, "read_committed while the transaction is open");

    once(&["txn", "abort", "--transactional-id", TRANSACTIONAL_ID, "--bootstrap", &bootstrap]);
    support::txn::eventually(Duration::from_secs(30), "the abort marker is durable", || {
        end_offsets(&bootstrap, TOPIC, 1, Isolation::ReadCommitted) == vec![13]
    });
    assert_eq!(read_committed(&bootstrap), committed, "read_committed after the abort");
    drop(transactional);
    assert!(broker.terminate(), "clean stop at the end");
}
