//! Fencing of transactional producers, end to end against a real `once serve`, with a raw-protocol
//! client playing each incarnation of an application (issue 13 item 1): after a new incarnation's
//! InitProducerId (no producer id and epoch named), a zombie of the earlier incarnation asking for a
//! KIP-360 epoch bump is fenced, never handed the new incarnation's epoch; the same after
//! `once txn abort --transactional-id` on an idle id. And markers naming a coordinator epoch above
//! Once's own (issue 13 review, item 1) are refused, so they cannot fence the coordinator's markers.

mod support;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, BrokerId, EndTxnRequest, FetchRequest, InitProducerIdRequest, ProduceRequest,
    ProducerId, TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use once_cli::admin::AdminClient;
use support::{once, BrokerProcess};

const TOPIC: &str = "ledger";
const PRODUCER_FENCED: i16 = 90;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
/// Attributes of a transactional batch.
const TRANSACTIONAL: i16 = 0x10;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// InitProducerId for `transactional_id`, naming `expected` (KIP-360) or nothing (a new incarnation).
/// Returns (error code, producer id, epoch).
fn init_producer_id(
    client: &mut AdminClient,
    transactional_id: &str,
    expected: Option<(i64, i16)>,
    version: i16,
) -> (i16, i64, i16) {
    let (producer_id, epoch) = expected.unwrap_or((-1, -1));
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(text(transactional_id))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch);
    let response = client.call(&request, version).expect("InitProducerId");
    (response.error_code, response.producer_id.0, response.producer_epoch)
}

/// One incarnation's whole transaction on partition 0: AddPartitionsToTxn, a transactional Produce of
/// `value` at sequence 0, EndTxn(commit). Returns the three error codes.
fn commit_one(client: &mut AdminClient, transactional_id: &str, producer: (i64, i16), value: &str) -> [i16; 3] {
    let (producer_id, epoch) = producer;
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(text(transactional_id)))
        .with_v3_and_below_producer_id(ProducerId(producer_id))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partitions(vec![0])]);
    let added = client.call(&add, 3).expect("AddPartitionsToTxn");
    let add_error = added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;

    let batch = once_log::testing::make_keyed_batch(
        producer_id,
        epoch,
        0,
        TRANSACTIONAL,
        &[value.as_bytes()],
        1_700_000_000_000,
    );
    let data = TopicProduceData::default()
        .with_name(TopicName(text(TOPIC)))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.into()))]);
    let produce = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(text(transactional_id))))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![data]);
    let produced = client.call(&produce, 9).expect("Produce");
    let produce_error = produced.responses[0].partition_responses[0].error_code;

    let end = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(text(transactional_id)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_committed(true);
    let end_error = client.call(&end, 3).expect("EndTxn").error_code;
    [add_error, produce_error, end_error]
}

/// The values a read_committed consumer sees in partition 0: data records below the last stable
/// offset, without control records and without the batches of aborted transactions.
fn read_committed(client: &mut AdminClient) -> Vec<String> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(text(TOPIC))).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
        ])]);
    let response = client.call(&request, 11).expect("Fetch");
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "Fetch read_committed");
    let aborted: Vec<i64> =
        partition.aborted_transactions.iter().flatten().map(|aborted| aborted.producer_id.0).collect();
    let mut bytes: Bytes = partition.records.clone().unwrap_or_default();
    let mut values = Vec::new();
    while bytes.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut bytes).expect("a valid batch");
        for record in set.records {
            if record.control || (record.transactional && aborted.contains(&record.producer_id)) {
                continue;
            }
            let value = record.value.map(|value| String::from_utf8_lossy(&value).to_string()).unwrap_or_default();
            values.push(value);
        }
    }
    values
}

/// The scenario of issue 13 item 1, step by step.
#[test]
fn a_zombie_bump_after_a_new_incarnation_is_fenced_and_the_new_incarnation_keeps_its_record() {
    let broker = BrokerProcess::start(&[]);
    once(&["topic", "create", TOPIC, "--partitions", "1", "--bootstrap", &broker.bootstrap()]);
    let mut zombie = AdminClient::connect(&broker.bootstrap()).expect("connect A");
    let mut incarnation = AdminClient::connect(&broker.bootstrap()).expect("connect B");

    // 1. Incarnation A starts; no transaction is opened.
    let (error, producer_id, epoch_a) = init_producer_id(&mut zombie, "payments", None, 4);
    assert_eq!((error, epoch_a), (0, 0), "incarnation A");
    // 2. The restarted application, incarnation B, names no producer id and epoch.
    let (error, producer_id_b, epoch_b) = init_producer_id(&mut incarnation, "payments", None, 4);
    assert_eq!((error, producer_id_b, epoch_b), (0, producer_id, 1), "incarnation B");
    // 3. Zombie A asks for a KIP-360 bump naming the pair it holds.
    let (bump_error, _, bumped_epoch) = init_producer_id(&mut zombie, "payments", Some((producer_id, epoch_a)), 4);
    // 5. A carries on with whatever it was given (as a client would); B does its transaction.
    let zombie_epoch = if bump_error == 0 { bumped_epoch } else { epoch_a };
    let zombie_errors = commit_one(&mut zombie, "payments", (producer_id, zombie_epoch), "zombie-A");
    let incarnation_errors = commit_one(&mut incarnation, "payments", (producer_id, epoch_b), "legit-B");

    let values = read_committed(&mut incarnation);
    assert_eq!(values, vec!["legit-B".to_string()], "read_committed sees B's record and nothing of the zombie");
    assert_eq!(incarnation_errors, [0, 0, 0], "B's transaction is accepted");
    assert_eq!(
        (bump_error, bumped_epoch),
        (PRODUCER_FENCED, -1),
        "the zombie's bump is answered PRODUCER_FENCED (InitProducerId v4)"
    );
    assert!(zombie_errors.iter().all(|&error| error != 0), "every step of the zombie is refused: {zombie_errors:?}");
}

/// `once txn abort --transactional-id` on an idle id is a new incarnation too: the pair it replaced
/// is fenced, with INVALID_PRODUCER_EPOCH for InitProducerId versions before PRODUCER_FENCED (v3).
#[test]
fn a_zombie_bump_after_txn_abort_by_id_is_fenced() {
    let broker = BrokerProcess::start(&[]);
    once(&["topic", "create", TOPIC, "--partitions", "1", "--bootstrap", &broker.bootstrap()]);
    let mut zombie = AdminClient::connect(&broker.bootstrap()).expect("connect");
    let (error, producer_id, epoch) = init_producer_id(&mut zombie, "copier", None, 3);
    assert_eq!((error, epoch), (0, 0));
    let aborted = once(&["txn", "abort", "--transactional-id", "copier", "--bootstrap", &broker.bootstrap()]);
    assert!(aborted.contains("epoch 1 now holds it"), "{aborted}");
    let (error, _, _) = init_producer_id(&mut zombie, "copier", Some((producer_id, epoch)), 3);
    assert_eq!(error, INVALID_PRODUCER_EPOCH, "fenced, in the code InitProducerId v3 knows");
    let (error, _, _) = init_producer_id(&mut zombie, "copier", Some((producer_id, epoch)), 4);
    assert_eq!(error, PRODUCER_FENCED, "fenced, in the code InitProducerId v4 knows");
    assert_eq!(
        commit_one(&mut zombie, "copier", (producer_id, epoch), "zombie")[0],
        PRODUCER_FENCED,
        "the zombie cannot add partitions"
    );
    assert!(read_committed(&mut zombie).is_empty(), "nothing of the zombie is visible");
}

/// WriteTxnMarkers v1 with one abort marker for `producer` on partition 0, naming `coordinator_epoch`.
/// Returns the partition's error code.
fn write_abort_marker(client: &mut AdminClient, producer: (i64, i16), coordinator_epoch: i32) -> i16 {
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_transaction_result(false)
        .with_coordinator_epoch(coordinator_epoch)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partition_indexes(vec![0])]);
    let response =
        client.call(&WriteTxnMarkersRequest::default().with_markers(vec![marker]), 1).expect("WriteTxnMarkers");
    response.markers[0].topics[0].partitions[0].error_code
}

/// A marker naming a coordinator epoch above the one Once's coordinator writes (`once txn abort
/// --coordinator-epoch`, kafka-transactions.sh, Admin.abortTransaction) is refused at every partition.
/// Stored, it would fence every later marker of Once's coordinator for that producer: the producer's
/// next commit would be answered NONE while its marker was refused and its records held the last
/// stable offset forever.
#[test]
fn a_marker_above_the_coordinator_epoch_is_refused_and_the_coordinator_markers_still_land() {
    let broker = BrokerProcess::start(&[]);
    once(&["topic", "create", TOPIC, "--partitions", "1", "--bootstrap", &broker.bootstrap()]);
    let mut client = AdminClient::connect(&broker.bootstrap()).expect("connect");
    let (error, producer_id, epoch) = init_producer_id(&mut client, "payments", None, 4);
    assert_eq!(error, 0, "InitProducerId");

    let (producer_id_arg, epoch_arg) = (producer_id.to_string(), epoch.to_string());
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["txn", "abort", "--topic", TOPIC, "--partition", "0", "--producer-id", &producer_id_arg])
        .args(["--producer-epoch", &epoch_arg, "--coordinator-epoch", "7", "--bootstrap", &broker.bootstrap()])
        .output()
        .expect("run once txn abort");
    let raw = write_abort_marker(&mut client, (producer_id, epoch), 9);
    let errors = commit_one(&mut client, "payments", (producer_id, epoch), "after");

    assert_eq!(
        read_committed(&mut client),
        vec!["after".to_string()],
        "the coordinator's commit marker landed: the record is visible and the last stable offset moved"
    );
    assert_eq!(errors, [0, 0, 0], "the transaction is accepted");
    assert_eq!(raw, TRANSACTION_COORDINATOR_FENCED, "a raw WriteTxnMarkers with coordinator epoch 9 is refused");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success(), "once txn abort --coordinator-epoch 7 fails: {stderr}");
    assert!(
        stderr.contains("coordinator epoch 7") && stderr.contains("uses coordinator epoch 0"),
        "once txn abort says why: {stderr}"
    );
}
